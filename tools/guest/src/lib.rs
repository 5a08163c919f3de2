//! Programs that run inside the bench VM (binary `bench-guest`), and the record types the host-side
//! runner (`rawgadget-bench`) parses.
//!
//! - [`usbfs`]: the host side of a device through `/dev/bus/usb` (the only ABI code; `sys` inside).
//! - [`usbtest`]: testusb's request to the usbtest driver, the case list and per-case parameters.
//! - [`script`] and [`host`]: the scripted usbfs host and its comparison of two recordings.
//! - [`gadget`]: the device side of each substrate (configfs SourceSink, our CLI on raw_gadget.ko,
//!   the usbip-vudc → vhci socketpair).
//! - [`sysfs`]: finding enumerated devices and what the kernel reports about them.
//! - [`input`]: reading key events from evdev and turning them back into text.
//! - [`scenario`]: what one boot runs, selected by `rgbench.*` words on the kernel command line.
//! - [`throughput`]: bulk MB/s and control round trips/s through usbfs, and the null-device floor.
//! - [`gzprof`]: what a Gadget Zero process does per usbtest iteration (/proc, strace).
//! - [`record`]: the JSON lines written to the result channel.
//! - [`usbip_proof`]: the scripted host on (c) against (b′), and the stock `usbip attach` of a
//!   device exported from outside the guest (issue 5 item 5).
#![deny(unsafe_code)]

pub mod cuse;
pub mod gadget;
pub mod gzprof;
pub mod host;
pub mod input;
pub mod record;
pub mod scenario;
pub mod script;
pub mod sysfs;
pub mod throughput;
pub mod usbfs;
pub mod usbip_proof;
pub mod usbtest;
