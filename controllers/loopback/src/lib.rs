//! The in-process USB bus of rawgadget: the engine, the controller model and a host in one
//! process, no kernel module and no privileges.
//!
//! - [`Bus`]: owns an engine [`Instance`](rawgadget_engine::Instance), a controller model
//!   ([`rawgadget_udc::Controller`], dummy personality by default) and a virtual clock, and
//!   shuttles between them. Its client side is what the in-process gadget backend wraps; its
//!   host side is what a host drives.
//! - [`SharedBus`]: a `Bus` behind a mutex, for a device program and a host in different
//!   threads: results handed to their waiters, targeted wakeups, and inline steps that let the
//!   host's waits run device code in the host's thread.
//! - [`HostPort`]: how a host reaches a bus, single-threaded ([`Stepped`], with a [`Device`]
//!   stepped while the host waits) or threaded ([`Threaded`]).
//! - [`Host`]: enumerates like Linux's hub driver and usbcore, runs control, bulk and
//!   interrupt transfers, unlinks, halts, resets, suspends; records everything and prints it
//!   like `lsusb -v` ([`Recording`]). [`hostile`] sends what a well-behaved host would not.
//! - [`scripted`]: a small scripted raw-gadget client for tests and fuzzing.
//!
//! Everything is deterministic in single-threaded use: time is virtual and jumps when both
//! sides are idle, as in quinn's test `Pair`.
#![deny(unsafe_code)]

mod bus;
mod host;
pub mod hostile;
mod port;
pub mod scripted;
mod shared;

pub use bus::Bus;
pub use host::{
    setup, Host, HostConfig, HostError, HostEvent, Recording, TransferRecord, UrbResult,
};
pub use port::{Device, HostPort, Idle, PortAction, Stepped, Threaded};
pub use shared::{BusGuard, InlineStep, InlineStepId, OpHook, SharedBus};
