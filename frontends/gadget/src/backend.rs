//! The backend abstraction: the 16 raw gadget ioctls in blocking form, with typed arguments.
//!
//! Two kinds of backend implement [`Backend`]:
//! - a device node ([`DeviceNode`](crate::DeviceNode)): `/dev/raw-gadget` of the kernel module or
//!   of our CUSE server; the engine runs in the kernel (or in the server);
//! - an in-process engine ([`InProcess`](crate::InProcess)): a `rawgadget_engine::Instance`
//!   and a controller model behind a mutex. A blocking method submits the operation, and if it
//!   is pending waits for its completion; its [`Wake`](crate::Wake) cancels the operation in
//!   the engine (which completes it with EINTR, contract D31) and wakes the waiting thread.
//!
//! Methods return the ioctl's errno unchanged; the gadget API adds the operation's name. The
//! blocking ones take a [`CancelHandle`]: they must return EINTR at once if it is cancelled, and
//! register with [`CancelHandle::enter`] while they block.

use std::fmt;

use rawgadget_uapi::{Errno, Speed, UsbRawEpCaps, UsbRawEpInfo, UsbRawEpIo, USB_RAW_EP_ADDR_ANY};

use crate::CancelHandle;

/// An endpoint handle as EP_ENABLE returns it: the index of the endpoint in EPS_INFO (spec §1.5
/// EP_ENABLE). Stable for the instance's life.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct EpHandle(pub u16);

/// `usb_raw_ep_io.flags` (`USB_RAW_IO_FLAGS_*`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct IoFlags(pub u16);

impl IoFlags {
    /// No flags.
    pub const NONE: IoFlags = IoFlags(0);
    /// `USB_RAW_IO_FLAGS_ZERO`: end an IN transfer whose length is a multiple of maxpacket with a
    /// zero-length packet.
    pub const ZERO: IoFlags = IoFlags(rawgadget_uapi::USB_RAW_IO_FLAGS_ZERO);
}

/// A reusable transfer buffer laid out as the device node wants it: room for the 8-byte
/// `usb_raw_ep_io` header, then the payload (spec §1.3).
///
/// Kept by an endpoint thread across transfers, it makes each EP_READ / EP_WRITE on a
/// [`DeviceNode`](crate::DeviceNode) one ioctl on this memory: no allocation, no zero-fill, no
/// copy in or out, as C raw gadget programs do with one `usb_raw_ep_io` per thread. Other
/// backends see the payload as a plain slice. It dereferences to the payload.
#[derive(Clone, PartialEq, Eq)]
pub struct EpBuffer {
    /// The header room followed by the payload.
    bytes: Vec<u8>,
}

impl fmt::Debug for EpBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpBuffer")
            .field("len", &self.len())
            .finish()
    }
}

impl EpBuffer {
    /// Bytes in front of the payload: `sizeof(struct usb_raw_ep_io)`.
    const HEADER: usize = UsbRawEpIo::SIZE;

    /// A payload of `len` zero bytes. Reads fill up to `len` bytes; writes send all `len`.
    pub fn new(len: usize) -> EpBuffer {
        EpBuffer {
            bytes: vec![0; Self::HEADER + len],
        }
    }

    /// The payload length: the transfer length of the next read or write.
    pub fn len(&self) -> usize {
        self.bytes.len() - Self::HEADER
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes the payload length, keeping the first bytes; bytes added are zero.
    pub fn set_len(&mut self, len: usize) {
        self.bytes.resize(Self::HEADER + len, 0);
    }

    /// The payload.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[Self::HEADER..]
    }

    /// The payload, to fill before a write.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes[Self::HEADER..]
    }

    /// For the device node: writes the `usb_raw_ep_io` header for this payload and returns
    /// the header and payload together, exactly as the I/O ioctls take them.
    ///
    /// # Errors
    /// EINVAL when the payload is longer than `u32::MAX` (the header's `length`).
    pub(crate) fn ep_io_bytes(&mut self, ep: u16, flags: u16) -> Result<&mut [u8], Errno> {
        let length = u32::try_from(self.len()).map_err(|_| Errno::EINVAL)?;
        self.bytes[..Self::HEADER].copy_from_slice(&UsbRawEpIo { ep, flags, length }.to_bytes());
        Ok(&mut self.bytes)
    }
}

impl std::ops::Deref for EpBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::ops::DerefMut for EpBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

/// One event as EVENT_FETCH returns it (`struct usb_raw_event`), before interpretation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RawEvent {
    /// A `USB_RAW_EVENT_*` value.
    pub event_type: u32,
    /// The event's full payload length as the kernel wrote it back.
    pub length: u32,
    /// The payload bytes that fit in the buffer.
    pub data: Vec<u8>,
}

/// One non-control endpoint of the controller, as EPS_INFO describes it (spec §1.5 EPS_INFO).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EpInfo {
    /// The UDC's endpoint name, e.g. `ep1in-bulk` or `ep-a`.
    pub name: String,
    /// A fixed endpoint number, or `None` for endpoints that take any address
    /// (`USB_RAW_EP_ADDR_ANY`).
    pub addr: Option<u8>,
    pub caps: UsbRawEpCaps,
    pub maxpacket_limit: u16,
    pub max_streams: u16,
}

impl EpInfo {
    /// Decodes one `usb_raw_ep_info`.
    pub fn from_raw(raw: &UsbRawEpInfo) -> EpInfo {
        EpInfo {
            name: String::from_utf8_lossy(raw.name_bytes()).into_owned(),
            addr: if raw.addr == USB_RAW_EP_ADDR_ANY {
                None
            } else {
                u8::try_from(raw.addr).ok()
            },
            caps: raw.caps,
            maxpacket_limit: raw.limits.maxpacket_limit,
            max_streams: raw.limits.max_streams,
        }
    }

    /// Encodes back into `usb_raw_ep_info` (the name is truncated to 15 bytes).
    pub fn to_raw(&self) -> UsbRawEpInfo {
        let mut raw = UsbRawEpInfo::default();
        let n = self.name.len().min(raw.name.len() - 1);
        raw.name[..n].copy_from_slice(&self.name.as_bytes()[..n]);
        raw.addr = self.addr.map_or(USB_RAW_EP_ADDR_ANY, u32::from);
        raw.caps = self.caps;
        raw.limits.maxpacket_limit = self.maxpacket_limit;
        raw.limits.max_streams = self.max_streams;
        raw
    }
}

/// The 16 raw gadget ioctls, blocking, with typed arguments. See the module doc.
///
/// Every method returns the errno the ioctl would return. Implementations must be usable from
/// several threads at once (one event thread plus one thread per endpoint is the usual shape).
pub trait Backend: Send + Sync + fmt::Debug {
    /// USB_RAW_IOCTL_INIT: UDC driver and device names, speed (spec §1.5 INIT).
    fn init(&self, driver_name: &str, device_name: &str, speed: Speed) -> Result<(), Errno>;
    /// USB_RAW_IOCTL_RUN: bind to the UDC; CONNECT is queued on success.
    fn run(&self) -> Result<(), Errno>;
    /// USB_RAW_IOCTL_EVENT_FETCH with room for `capacity` payload bytes. Blocks.
    fn event_fetch(&self, capacity: u32, cancel: &CancelHandle) -> Result<RawEvent, Errno>;
    /// USB_RAW_IOCTL_EP0_WRITE: the IN data stage; returns the bytes sent. Blocks.
    fn ep0_write(&self, data: &[u8], flags: IoFlags, cancel: &CancelHandle)
        -> Result<usize, Errno>;
    /// USB_RAW_IOCTL_EP0_READ: the OUT data stage (or the status stage with an empty `buf`);
    /// returns the bytes received into `buf`. Blocks.
    fn ep0_read(
        &self,
        buf: &mut [u8],
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno>;
    /// USB_RAW_IOCTL_EP_ENABLE with the 9-byte `usb_endpoint_descriptor`.
    fn ep_enable(&self, desc: &[u8; 9]) -> Result<EpHandle, Errno>;
    /// USB_RAW_IOCTL_EP_DISABLE (handle passed by value).
    fn ep_disable(&self, ep: EpHandle) -> Result<(), Errno>;
    /// USB_RAW_IOCTL_EP_WRITE; returns the bytes sent. Blocks.
    fn ep_write(
        &self,
        ep: EpHandle,
        data: &[u8],
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno>;
    /// USB_RAW_IOCTL_EP_READ; returns the bytes received into `buf`. Blocks.
    fn ep_read(
        &self,
        ep: EpHandle,
        buf: &mut [u8],
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno>;
    /// USB_RAW_IOCTL_EP_WRITE of an owned buffer, which a backend may hand to the controller
    /// instead of copying it. Returns the result and a buffer to reuse, of the same length
    /// unless the call failed before taking it; its contents are unspecified. By default,
    /// [`Backend::ep_write`] and the same buffer back.
    fn ep_write_owned(
        &self,
        ep: EpHandle,
        data: Vec<u8>,
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> (Result<usize, Errno>, Vec<u8>) {
        let r = self.ep_write(ep, &data, flags, cancel);
        (r, data)
    }

    /// USB_RAW_IOCTL_EP_READ into an owned buffer (its length is the transfer's), which a
    /// backend may hand to the controller instead of copying into it. Returns the result and
    /// the buffer cut to the bytes received (on error its contents are unspecified). By
    /// default, [`Backend::ep_read`] into the same buffer.
    fn ep_read_owned(
        &self,
        ep: EpHandle,
        mut buf: Vec<u8>,
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> (Result<usize, Errno>, Vec<u8>) {
        let r = self.ep_read(ep, &mut buf, flags, cancel);
        if let Ok(n) = r {
            buf.truncate(n);
        }
        (r, buf)
    }

    /// USB_RAW_IOCTL_EP_WRITE of `buf`'s payload; returns the bytes sent. The payload is left
    /// as it was (a source can fill it once). A device node issues the ioctl on the buffer
    /// itself; by default, [`Backend::ep_write`] of the payload.
    fn ep_write_buf(
        &self,
        ep: EpHandle,
        buf: &mut EpBuffer,
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        self.ep_write(ep, buf.as_slice(), flags, cancel)
    }

    /// USB_RAW_IOCTL_EP_READ of up to `buf.len()` bytes into `buf`'s payload; returns the
    /// bytes received, which are the payload's first ones (the rest is unspecified). A device
    /// node issues the ioctl on the buffer itself; by default, [`Backend::ep_read`] into the
    /// payload.
    fn ep_read_buf(
        &self,
        ep: EpHandle,
        buf: &mut EpBuffer,
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        self.ep_read(ep, buf.as_mut_slice(), flags, cancel)
    }

    /// USB_RAW_IOCTL_CONFIGURE.
    fn configure(&self) -> Result<(), Errno>;
    /// USB_RAW_IOCTL_VBUS_DRAW, in 2 mA units (the unit of a USB 2.0 `bMaxPower`).
    fn vbus_draw(&self, units_2ma: u32) -> Result<(), Errno>;
    /// USB_RAW_IOCTL_EPS_INFO: the controller's non-control endpoints in handle order.
    fn eps_info(&self) -> Result<Vec<EpInfo>, Errno>;
    /// USB_RAW_IOCTL_EP0_STALL: reject the pending SETUP.
    fn ep0_stall(&self) -> Result<(), Errno>;
    /// USB_RAW_IOCTL_EP_SET_HALT.
    fn set_halt(&self, ep: EpHandle) -> Result<(), Errno>;
    /// USB_RAW_IOCTL_EP_CLEAR_HALT.
    fn clear_halt(&self, ep: EpHandle) -> Result<(), Errno>;
    /// USB_RAW_IOCTL_EP_SET_WEDGE.
    fn set_wedge(&self, ep: EpHandle) -> Result<(), Errno>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// spec §1.3 `struct usb_raw_ep_io`: the bytes an I/O ioctl gets are the header (`ep`,
    /// `flags`, `length`, little endian) and then the payload, untouched.
    #[test]
    fn ep_buffer_is_header_then_payload() {
        let mut buf = EpBuffer::new(5);
        buf.copy_from_slice(&[1, 2, 3, 4, 5]);
        let bytes = buf.ep_io_bytes(0x0102, 0x0001).unwrap().to_vec();
        assert_eq!(bytes, [2, 1, 1, 0, 5, 0, 0, 0, 1, 2, 3, 4, 5]);
        assert_eq!(&*buf, &[1, 2, 3, 4, 5]);
        // A shorter transfer announces the shorter length and keeps the first bytes.
        buf.set_len(2);
        assert_eq!(
            buf.ep_io_bytes(3, 0).unwrap(),
            &[3, 0, 0, 0, 2, 0, 0, 0, 1, 2]
        );
        buf.set_len(4);
        assert_eq!(buf.as_slice(), &[1, 2, 0, 0]);
        assert!(EpBuffer::new(0).is_empty());
    }
}
