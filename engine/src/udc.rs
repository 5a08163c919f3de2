//! The narrow interface between the engine and a device controller (UDC).
//!
//! This is the slice of the Linux gadget API (`include/linux/usb/gadget.h`) that `raw_gadget.c`
//! calls: bind/unbind, `usb_ep_enable`/`disable`/`queue`/`dequeue`/`set_halt`/`set_wedge`,
//! `usb_gadget_vbus_draw` and `usb_gadget_set_state(CONFIGURED)`. The controller calls back into
//! the engine through [`Instance`](crate::Instance) inputs, fed by whoever owns both (the
//! driver): `handle_setup` (the gadget driver's `->setup`), `handle_bus` (`->reset`,
//! `->suspend`, `->resume`, `->disconnect`) and `handle_completion` (a request's `->complete`).
//!
//! Contract for implementors, in addition to each method's doc:
//! - every request accepted by [`Udc::queue`] completes exactly once: either returned by
//!   [`Udc::dequeue`], or handed later to [`Instance::handle_completion`](crate::Instance::handle_completion);
//! - no method calls back into the engine (completions are outputs of the controller that the
//!   driver shuttles), so the engine never re-enters itself.

use alloc::string::String;
use alloc::vec::Vec;
use rawgadget_uapi::{Errno, Speed, UsbRawEpCaps};

/// An endpoint of the controller, as raw gadget addresses it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub enum EpId {
    /// The control endpoint.
    Ep0,
    /// A non-control endpoint, by index in the controller's list (= the raw gadget handle and
    /// the EPS_INFO index).
    Ep(u16),
}

/// One non-control endpoint of the controller, as captured at bind (spec §1.5 EPS_INFO).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UdcEndpoint {
    /// `usb_ep.name`, e.g. `ep1in-bulk` or `ep-a`. The engine derives the fixed address from it
    /// exactly as `get_ep_addr` does.
    pub name: String,
    pub caps: UsbRawEpCaps,
    pub maxpacket_limit: u16,
    pub max_streams: u16,
}

/// What a successful bind tells the gadget driver.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Binding {
    /// The controller's endpoint list, in `gadget->ep_list` order (at most 30 are used).
    pub endpoints: Vec<UdcEndpoint>,
    /// `gadget->max_speed`: what the controller can do at best. `usb_gadget_ep_match_desc`
    /// uses it for its "dual speed" checks.
    pub max_speed: Speed,
}

/// Identifies one queued request, unique per instance.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A `usb_request` as raw gadget queues it.
///
/// The buffer is handed over, never copied by the engine: for IN it holds the `length` bytes to
/// send; for OUT it has `length` bytes of room that the controller fills from the front.
#[derive(PartialEq, Eq, Debug)]
pub struct Request {
    pub id: RequestId,
    pub buf: Vec<u8>,
    /// `req->length`; always equal to `buf.len()`.
    pub length: u32,
    /// `req->zero` (USB_RAW_IO_FLAGS_ZERO).
    pub zero: bool,
}

/// A request's `->complete` call.
#[derive(PartialEq, Eq, Debug)]
pub struct Completion {
    pub ep: EpId,
    pub id: RequestId,
    /// `req->status`: `Ok` or the errno (ESHUTDOWN, ECONNRESET, EOVERFLOW, EPIPE ...).
    pub status: Result<(), Errno>,
    /// `req->actual`: bytes moved, even when the status is an error.
    pub actual: u32,
    /// The request's buffer, handed back. For OUT, the first `actual` bytes are the data.
    pub buf: Vec<u8>,
}

/// A device controller as the engine sees it. See the module doc for the calling contract.
pub trait Udc {
    /// `usb_gadget_register_driver` with `match_existing_only`: find the free controller whose
    /// device name is `device_name` and whose gadget name is `driver_name` (both without their
    /// NUL), bind to it with `max_speed` as the driver's speed and connect the pull-up.
    ///
    /// # Errors
    /// EBUSY when no free controller matches (contract D2); any other bind error as is.
    fn bind(
        &mut self,
        driver_name: &[u8],
        device_name: &[u8],
        max_speed: Speed,
    ) -> Result<Binding, Errno>;

    /// `usb_gadget_unregister_driver`: pull-up off, then unbind. The controller may still report
    /// a disconnect through [`Instance::handle_bus`](crate::Instance::handle_bus) before this
    /// returns to the driver's loop (contract D30); nobody reads it after close.
    fn unbind(&mut self);

    /// `usb_ep_enable` with the 9-byte descriptor given to EP_ENABLE; its error is returned to
    /// the client as is (contract D5, D6).
    fn ep_enable(&mut self, ep: u16, desc: &[u8; 9]) -> Result<(), Errno>;

    /// `usb_ep_disable`: queued requests complete with ESHUTDOWN (delivered as completions).
    fn ep_disable(&mut self, ep: u16) -> Result<(), Errno>;

    /// `usb_ep_queue`. On error the request is handed back untouched and will not complete.
    fn queue(&mut self, ep: EpId, req: Request) -> Result<(), (Errno, Request)>;

    /// `usb_ep_dequeue`: if the request is still queued, remove it and return its completion
    /// (status ECONNRESET, with whatever `actual` it had reached). `None` when it already
    /// completed; its completion is then on its way through `handle_completion`.
    fn dequeue(&mut self, ep: EpId, id: RequestId) -> Option<Completion>;

    /// `usb_ep_set_halt` (`halt == true`) or `usb_ep_clear_halt`. For ep0 this is the protocol
    /// stall of EP0_STALL.
    ///
    /// # Errors
    /// As the controller gives them, e.g. EAGAIN while IN data is queued (contract D13).
    fn set_halt(&mut self, ep: EpId, halt: bool) -> Result<(), Errno>;

    /// `usb_ep_set_wedge`.
    fn set_wedge(&mut self, ep: u16) -> Result<(), Errno>;

    /// `usb_gadget_vbus_draw(gadget, mA)`; the result is ignored by raw gadget.
    fn vbus_draw(&mut self, ma: u32);

    /// `usb_gadget_set_state(gadget, USB_STATE_CONFIGURED)`.
    fn set_configured(&mut self);
}
