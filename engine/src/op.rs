//! Inputs and outputs of an [`Instance`](crate::Instance): decoded client operations (the 16
//! ioctls), bus events, and operation results.

use alloc::boxed::Box;
use alloc::vec::Vec;
use rawgadget_uapi::{UsbRawEpIo, UsbRawEpsInfo, UsbRawEvent, UsbRawInit};

pub use rawgadget_uapi::Errno;

/// One client operation: an ioctl after its argument has been copied in.
///
/// Arguments that the kernel takes *by value* keep the raw `unsigned long` (`arg`), because the
/// engine applies the module's exact checks to it: `_IO` ioctls fail with EINVAL unless it is 0,
/// and the handle ioctls convert it with C's `int i = value` (spec §1.4).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ClientOp {
    /// USB_RAW_IOCTL_INIT.
    Init(Box<UsbRawInit>),
    /// USB_RAW_IOCTL_RUN.
    Run { arg: u64 },
    /// USB_RAW_IOCTL_EVENT_FETCH; `capacity` is the header's `length` (payload room).
    EventFetch { capacity: u32 },
    /// USB_RAW_IOCTL_EP0_WRITE; `data` holds `io.length` payload bytes.
    Ep0Write { io: UsbRawEpIo, data: Vec<u8> },
    /// USB_RAW_IOCTL_EP0_READ; `buf` is a buffer to reuse (any length; resized to `io.length`).
    Ep0Read { io: UsbRawEpIo, buf: Vec<u8> },
    /// USB_RAW_IOCTL_EP_ENABLE with the 9-byte `usb_endpoint_descriptor`.
    EpEnable { desc: [u8; 9] },
    /// USB_RAW_IOCTL_EP_DISABLE.
    EpDisable { arg: u64 },
    /// USB_RAW_IOCTL_EP_WRITE; `data` holds `io.length` payload bytes.
    EpWrite { io: UsbRawEpIo, data: Vec<u8> },
    /// USB_RAW_IOCTL_EP_READ; `buf` is a buffer to reuse (any length; resized to `io.length`).
    EpRead { io: UsbRawEpIo, buf: Vec<u8> },
    /// USB_RAW_IOCTL_CONFIGURE.
    Configure { arg: u64 },
    /// USB_RAW_IOCTL_VBUS_DRAW (2 mA units).
    VbusDraw { arg: u64 },
    /// USB_RAW_IOCTL_EPS_INFO.
    EpsInfo,
    /// USB_RAW_IOCTL_EP0_STALL.
    Ep0Stall { arg: u64 },
    /// USB_RAW_IOCTL_EP_SET_HALT.
    EpSetHalt { arg: u64 },
    /// USB_RAW_IOCTL_EP_CLEAR_HALT.
    EpClearHalt { arg: u64 },
    /// USB_RAW_IOCTL_EP_SET_WEDGE.
    EpSetWedge { arg: u64 },
}

impl ClientOp {
    /// The ioctl's name as in the header, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ClientOp::Init(_) => "USB_RAW_IOCTL_INIT",
            ClientOp::Run { .. } => "USB_RAW_IOCTL_RUN",
            ClientOp::EventFetch { .. } => "USB_RAW_IOCTL_EVENT_FETCH",
            ClientOp::Ep0Write { .. } => "USB_RAW_IOCTL_EP0_WRITE",
            ClientOp::Ep0Read { .. } => "USB_RAW_IOCTL_EP0_READ",
            ClientOp::EpEnable { .. } => "USB_RAW_IOCTL_EP_ENABLE",
            ClientOp::EpDisable { .. } => "USB_RAW_IOCTL_EP_DISABLE",
            ClientOp::EpWrite { .. } => "USB_RAW_IOCTL_EP_WRITE",
            ClientOp::EpRead { .. } => "USB_RAW_IOCTL_EP_READ",
            ClientOp::Configure { .. } => "USB_RAW_IOCTL_CONFIGURE",
            ClientOp::VbusDraw { .. } => "USB_RAW_IOCTL_VBUS_DRAW",
            ClientOp::EpsInfo => "USB_RAW_IOCTL_EPS_INFO",
            ClientOp::Ep0Stall { .. } => "USB_RAW_IOCTL_EP0_STALL",
            ClientOp::EpSetHalt { .. } => "USB_RAW_IOCTL_EP_SET_HALT",
            ClientOp::EpClearHalt { .. } => "USB_RAW_IOCTL_EP_CLEAR_HALT",
            ClientOp::EpSetWedge { .. } => "USB_RAW_IOCTL_EP_SET_WEDGE",
        }
    }
}

/// Bus events that the controller reports through the gadget driver's callbacks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BusEvent {
    /// `->reset` (contract D27).
    Reset,
    /// `->suspend` (contract D29).
    Suspend,
    /// `->resume` (contract D29).
    Resume,
    /// `->disconnect` (contract D30).
    Disconnect,
}

/// Identifies a client operation that did not finish at once.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// What [`Instance::handle_client`](crate::Instance::handle_client) did with an operation.
#[must_use]
#[derive(PartialEq, Eq, Debug)]
pub enum Outcome {
    /// Finished; this is the ioctl's result.
    Done(OpResult),
    /// Blocked (EVENT_FETCH with no event, an ep0 or endpoint transfer). Its result comes out of
    /// [`Instance::poll_completion`](crate::Instance::poll_completion) later, or EINTR after
    /// [`Instance::cancel`](crate::Instance::cancel).
    Pending(OpId),
}

/// The result of one ioctl.
#[derive(PartialEq, Eq, Debug)]
pub struct OpResult {
    /// The ioctl's return value, or its errno.
    pub ret: Result<u32, Errno>,
    /// What the kernel would copy back to the caller, plus buffers handed back for reuse.
    pub payload: Payload,
}

impl OpResult {
    pub(crate) fn err(e: Errno) -> OpResult {
        OpResult {
            ret: Err(e),
            payload: Payload::None,
        }
    }
    pub(crate) fn ok(v: u32) -> OpResult {
        OpResult {
            ret: Ok(v),
            payload: Payload::None,
        }
    }
}

/// Data that goes back to the client with a result.
#[derive(PartialEq, Eq, Debug)]
pub enum Payload {
    None,
    /// EVENT_FETCH: the header as written back (`length` = the event's full payload length) and
    /// the first `min(capacity, length)` payload bytes.
    Event {
        header: UsbRawEvent,
        data: Vec<u8>,
    },
    /// EP0_READ / EP_READ: the bytes read (`ret` of them). EP0_WRITE / EP_WRITE: the caller's
    /// buffer handed back for reuse (contents unspecified). Also on error, when a buffer had been
    /// handed over.
    Data(Vec<u8>),
    /// EPS_INFO.
    EpsInfo(Box<UsbRawEpsInfo>),
}

/// A finished blocked operation.
#[derive(PartialEq, Eq, Debug)]
pub struct OpCompletion {
    pub op: OpId,
    pub result: OpResult,
}
