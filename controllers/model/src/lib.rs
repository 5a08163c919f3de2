//! The device controller model: what a USB device controller (UDC) and the host controller in
//! front of it do, sans-IO.
//!
//! Every controller of rawgadget is built on this model: the loopback host in-process, the
//! USB/IP driver later. Its default personality is dummy_udc as `raw_gadget.ko` programs know
//! it; the rules are in `udc-contract.md` §2 (D1–D31) and each is cited where it is
//! implemented (`// contract D14`).
//!
//! - [`personality`]: what differs between controllers, as data (endpoint list, speeds, FIFO,
//!   enable rules, iso handling).
//! - [`Controller`]: the state machine. Its gadget side implements the engine's
//!   [`Udc`](rawgadget_engine::Udc) trait; its host side takes URBs, unlinks and port actions
//!   ([`urb`]), like a host controller driver.
//! - [`time`]: time is an input; the model never reads a clock.
//!
//! What this crate is not: it does no I/O, spawns no threads, reads no clock and takes no
//! locks. It is deterministic: the same inputs give the same outputs. The host core's own
//! rules (EREMOTEIO for `URB_SHORT_NOT_OK`, control transfer sanity checks, timeouts) and the
//! hub's enumeration sequence belong to the host that drives it (the loopback host).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod controller;
pub mod personality;
pub mod time;
pub mod urb;

pub use controller::{Controller, GadgetEvent, PortStatus};
pub use personality::{EnableRules, IsoRule, Personality, SsEp0Maxpacket};
pub use time::Instant;
pub use urb::{IsoPacket, Unlink, Urb, UrbCompletion, UrbFlags, UrbId, UrbKind};
