//! Be a USB device from userspace: a safe, typed API over USB Raw Gadget.
//!
//! This is the mirror image of a USB host library such as nusb: instead of claiming a device's
//! interfaces, a program *is* the device. It answers control requests on ep0 and moves data on
//! endpoints it enabled.
//!
//! ```no_run
//! use rawgadget::{Event, Gadget};
//! let gadget = Gadget::builder().driver("dummy_udc").device("dummy_udc.0").open_default()?;
//! gadget.run()?;
//! loop {
//!     match gadget.next_event()? {
//!         Event::Control(setup) if rawgadget::has_in_data_stage(&setup) => {
//!             gadget.ep0_stall()?; // a real device answers with ep0_reply(&setup, bytes)
//!         }
//!         Event::Control(_) => gadget.ep0_ack()?,
//!         _ => {}
//!     }
//! }
//! # Ok::<(), rawgadget::Error>(())
//! ```
//!
//! # Where things live
//! - [`Gadget`] (`gadget`): one raw gadget instance; [`Event`]s; ep0 replies; [`Endpoint`]
//!   handles from [`Gadget::enable`]. Handles are cheap `Arc` clones and `Send + Sync`.
//! - [`ControlRequest`]: the SETUP packet of [`Event::Control`], from the chapter 9 model
//!   (crate `rawgadget-usb`, re-exported whole as [`usb`] for descriptors and builders);
//!   [`has_in_data_stage`] is raw gadget's rule for which ep0 call answers it.
//! - [`EndpointAllocator`] (`endpoint`): the choice of endpoint numbers from EPS_INFO for
//!   [`EndpointDescriptor`]s (rawgadget-usb's, as are [`Direction`] and [`TransferType`]).
//! - [`CancelHandle`] (`cancel`): interrupting a blocked call from another thread.
//! - [`Backend`] (`backend`): the 16 ioctls in blocking form. Implemented by [`DeviceNode`]
//!   (`node`, over `sys`, the only module with `unsafe`) and by [`mock::MockBackend`], a test
//!   double; an in-process engine backend comes from another crate.
//! - [`usbip`]: the in-process engine on a USB/IP transport ([`InProcess::usbip`]): attached to
//!   this machine's vhci-hcd or exported over TCP.
//!
//! # Blocking only
//! Every transfer blocks its thread, as raw gadget does: one thread for events, one per
//! endpoint. There is no async API: a device node has no readiness notification (no `poll`,
//! no `O_NONBLOCK`, spec §1.1), so an async version could only wrap these calls in blocking
//! threads, which a caller can do as well with its runtime's `spawn_blocking`.
//!
//! # Logs
//! Everything is traced with `tracing`: a span per gadget (`udc`) and per endpoint (`handle`,
//! `addr`); refused operations at `debug`, every transfer at `trace`. For a bug report, run
//! with `RUST_LOG=rawgadget=trace`.
#![deny(unsafe_code)]

pub mod backend;
pub mod cancel;
pub mod endpoint;
mod error;
mod gadget;
pub mod inprocess;
pub mod mock;
mod node;
pub mod sys;
pub mod usbip;

pub use backend::{Backend, EpBuffer, EpHandle, EpInfo, IoFlags, RawEvent};
pub use cancel::{CancelHandle, Wake};
pub use endpoint::{assign_ep_address, dummy_udc_eps, EndpointAllocator};
pub use error::{Error, Result};
pub use gadget::{has_in_data_stage, Endpoint, Event, Gadget, GadgetBuilder};
pub use inprocess::InProcess;
pub use node::{DeviceNode, DEFAULT_NODE};
pub use rawgadget_uapi::{Errno, Speed};
/// The USB chapter 9 model: requests, descriptors, builders, string tables.
pub use rawgadget_usb as usb;
pub use rawgadget_usb::{
    ControlRequest, Direction, EndpointAddress, EndpointDescriptor, TransferType,
};
