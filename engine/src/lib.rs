//! The USB Raw Gadget instance state machine, sans-IO.
//!
//! Read spec §1.5 and §2 (`../shared/spec/raw-gadget.md`) and contract §2 (`udc-contract.md`)
//! before editing. One [`Instance`] is one open of `/dev/raw-gadget`: it owns the instance state,
//! the 16-event queue, the ep0 pending flags, the endpoint table with one request in flight per
//! endpoint, and the blocked client operations. It does no I/O: no threads, sockets, clocks or
//! locks. Raw gadget itself has no timers, so no time input is needed here; the controller model
//! below it takes time as an input where it needs it.
//!
//! Inputs: [`Instance::handle_client`] (the 16 ioctls, decoded into [`ClientOp`]),
//! [`Instance::handle_setup`], [`Instance::handle_bus`], [`Instance::handle_completion`] (from the
//! controller), [`Instance::cancel`] (a signal to a blocked caller), [`Instance::close`].
//! Output: [`Instance::poll_completion`] (results of blocked operations). The controller is
//! reached through the [`Udc`] trait.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod ep_match;
mod instance;
pub mod mock;
pub mod op;
pub mod udc;

pub use instance::{ep_addr_from_name, validate_io_header, Ep0Pending, EpState, Instance, State};
pub use op::{BusEvent, ClientOp, Errno, OpCompletion, OpId, OpResult, Outcome, Payload};
pub use udc::{Binding, Completion, EpId, Request, RequestId, Udc, UdcEndpoint};
