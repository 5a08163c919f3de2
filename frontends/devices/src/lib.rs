//! Built-in devices on the rawgadget API: Gadget Zero (the device Linux `usbtest` tests) and a
//! HID boot keyboard.
//!
//! They use only the public API of the `rawgadget` crate, so they run on any backend: a raw
//! gadget device node today, the in-process engine later.
//!
//! - `device`: [`Device`] (standard requests, descriptors as data) built from [`Function`]s
//!   that answer their own control requests or say "not mine" (`None`), and [`DeviceRunner`],
//!   the ep0 event loop of spec Appendix steps 3-6.
//! - `zero`: Gadget Zero ([`gadget_zero`]); `pattern`: the usbtest data patterns.
//! - `keyboard`: the keyboard ([`keyboard()`]).
//!
//! Descriptors come from rawgadget-usb's builders (re-exported as `rawgadget::usb`); the bytes
//! each device produces at each speed are pinned by `tests/golden_descriptors.rs`.
#![deny(unsafe_code)]

pub mod device;
pub mod keyboard;
pub mod pattern;
pub mod zero;

pub use device::{
    add_endpoint, assign_endpoint, interrupt_interval, ControlReply, DescriptorSet, Device,
    DeviceError, DeviceRunner, Flow, Function,
};
pub use keyboard::{keyboard, KeyboardConfig, KeyboardState};
pub use pattern::Pattern;
pub use zero::{gadget_zero, ZeroConfig, ZeroStats};
