//! The gadget API: [`Gadget`] (one raw gadget instance) → events and ep0 replies → typed
//! [`Endpoint`] handles.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rawgadget_uapi::{event_type, Errno, Speed};
use tracing::{debug, trace};

use crate::backend::{Backend, EpBuffer, EpHandle, EpInfo, IoFlags, RawEvent};
use crate::node::{DeviceNode, DEFAULT_NODE};
use crate::{
    CancelHandle, ControlRequest, Direction, EndpointDescriptor, Error, Result, TransferType,
};

/// What EVENT_FETCH reported (spec §1.2 `enum usb_raw_event_type`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Event {
    /// The gadget bound to the UDC, inside RUN (not when a host plugs in). Read
    /// [`Gadget::eps_info`] now and assign endpoint addresses.
    Connect,
    /// A SETUP packet. Answer it exactly once: [`Gadget::ep0_write`] for IN requests with a data
    /// stage, [`Gadget::ep0_read`] / [`Gadget::ep0_ack`] for everything else, or
    /// [`Gadget::ep0_stall`]. Until then further SETUPs are stalled by raw gadget.
    /// [`has_in_data_stage`] tells which.
    Control(ControlRequest),
    Suspend,
    Resume,
    /// Bus reset: stop endpoint threads and disable endpoints, then wait for
    /// SET_CONFIGURATION (spec Appendix step 6). On dummy_udc endpoints stay enabled and only
    /// their requests fail with ESHUTDOWN (contract D27); on most hardware UDCs they are
    /// disabled inside the UDC. Disabling them yourself covers both.
    Reset,
    Disconnect,
    /// An event type this crate does not know (a newer kernel), kept with its payload.
    Unknown {
        event_type: u32,
        data: Vec<u8>,
    },
}

impl Event {
    pub(crate) fn from_raw(raw: RawEvent) -> Result<Event> {
        Ok(match raw.event_type {
            event_type::USB_RAW_EVENT_CONNECT => Event::Connect,
            event_type::USB_RAW_EVENT_CONTROL => {
                let bytes: [u8; 8] = raw
                    .data
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        Error::Protocol(format!(
                            "CONTROL event with {} payload bytes",
                            raw.data.len()
                        ))
                    })?;
                Event::Control(ControlRequest::from_bytes(bytes))
            }
            event_type::USB_RAW_EVENT_SUSPEND => Event::Suspend,
            event_type::USB_RAW_EVENT_RESUME => Event::Resume,
            event_type::USB_RAW_EVENT_RESET => Event::Reset,
            event_type::USB_RAW_EVENT_DISCONNECT => Event::Disconnect,
            other => Event::Unknown {
                event_type: other,
                data: raw.data,
            },
        })
    }
}

/// Whether raw gadget expects EP0_WRITE for this request: IN *and* a data stage
/// (`wLength > 0`). Everything else, IN requests with `wLength == 0` included, is answered with
/// EP0_READ (spec §1.5 EP0_WRITE/EP0_READ, xairy issue #46).
pub fn has_in_data_stage(request: &ControlRequest) -> bool {
    request.direction() == Direction::In && request.length > 0
}

/// Opens and initializes a [`Gadget`]: UDC names and speed.
#[derive(Clone, Debug)]
pub struct GadgetBuilder {
    driver: String,
    device: String,
    speed: Speed,
}

impl Default for GadgetBuilder {
    fn default() -> Self {
        GadgetBuilder {
            driver: "dummy_udc".into(),
            device: "dummy_udc.0".into(),
            speed: Speed::High,
        }
    }
}

impl GadgetBuilder {
    /// UDC *driver* name (`/sys/class/udc/<dev>/uevent` has it as `USB_UDC_NAME`). Default
    /// `dummy_udc`; at most 127 bytes.
    pub fn driver(mut self, name: impl Into<String>) -> Self {
        self.driver = name.into();
        self
    }

    /// UDC *device* name (the directory name in `/sys/class/udc`). Default `dummy_udc.0`.
    pub fn device(mut self, name: impl Into<String>) -> Self {
        self.device = name.into();
        self
    }

    /// The gadget's maximum speed. Default HIGH. The UDC may run slower, and raw gadget does not
    /// tell (spec §2.7). INIT accepts LOW, FULL, HIGH, SUPER (and UNKNOWN, as HIGH).
    pub fn speed(mut self, speed: Speed) -> Self {
        self.speed = speed;
        self
    }

    /// Opens the device node at `path` and issues INIT.
    ///
    /// # Errors
    /// [`Error::Open`] if the node cannot be opened; INIT's errno otherwise.
    pub fn open(self, path: impl AsRef<Path>) -> Result<Gadget> {
        let node = DeviceNode::open(path)?;
        self.build(Arc::new(node))
    }

    /// [`open`](Self::open) on `/dev/raw-gadget`.
    pub fn open_default(self) -> Result<Gadget> {
        self.open(DEFAULT_NODE)
    }

    /// Issues INIT on any backend.
    pub fn build(self, backend: Arc<dyn Backend>) -> Result<Gadget> {
        // DEBUG, not INFO: every call enters this span, and an enabled span costs its enter and
        // exit in the subscriber on each ioctl (at the CLI's default `info` filter, measured
        // under TCG as a large part of the Rust Gadget Zero's user time per control request);
        // a disabled one costs a branch.
        let span = tracing::debug_span!("gadget", udc = %self.device);
        {
            let _e = span.enter();
            backend
                .init(&self.driver, &self.device, self.speed)
                .map_err(|e| Error::op("USB_RAW_IOCTL_INIT", e))?;
            debug!(driver = %self.driver, speed = ?self.speed, "initialized");
        }
        Ok(Gadget {
            inner: Arc::new(GadgetInner {
                backend,
                driver: self.driver,
                device: self.device,
                speed: self.speed,
                events: CancelHandle::new(),
                ep0: CancelHandle::new(),
                span,
            }),
        })
    }
}

struct GadgetInner {
    backend: Arc<dyn Backend>,
    driver: String,
    device: String,
    speed: Speed,
    /// Interrupts EVENT_FETCH.
    events: CancelHandle,
    /// Interrupts EP0_READ / EP0_WRITE.
    ep0: CancelHandle,
    /// `gadget{udc=…}`, the context of this instance's log lines at `debug` and below.
    span: tracing::Span,
}

/// One raw gadget instance, initialized. Cheap to clone (an `Arc`); `Send + Sync`, so an event
/// thread and endpoint threads can share it.
///
/// The usual program (spec Appendix): [`run`](Self::run), then loop on
/// [`next_event`](Self::next_event); at [`Event::Connect`] read [`eps_info`](Self::eps_info)
/// and assign addresses ([`EndpointAllocator`](crate::EndpointAllocator)); answer each
/// [`Event::Control`]; on SET_CONFIGURATION [`enable`](Self::enable) the endpoints, start one
/// thread per endpoint, [`vbus_draw`](Self::vbus_draw), [`configure`](Self::configure), then
/// [`ep0_ack`](Self::ep0_ack); on [`Event::Reset`] cancel and disable the endpoints.
#[derive(Clone)]
pub struct Gadget {
    inner: Arc<GadgetInner>,
}

impl fmt::Debug for Gadget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gadget")
            .field("driver", &self.inner.driver)
            .field("device", &self.inner.device)
            .field("speed", &self.inner.speed)
            .finish_non_exhaustive()
    }
}

impl Gadget {
    /// A builder with the defaults `dummy_udc` / `dummy_udc.0` / HIGH.
    pub fn builder() -> GadgetBuilder {
        GadgetBuilder::default()
    }

    fn call<T>(&self, op: &'static str, r: std::result::Result<T, Errno>) -> Result<T> {
        r.map_err(|e| {
            let e = Error::op(op, e);
            debug!(parent: &self.inner.span, error = %e, "rejected");
            e
        })
    }

    /// The speed given to INIT.
    pub fn speed(&self) -> Speed {
        self.inner.speed
    }

    /// The UDC driver name given to INIT.
    pub fn udc_driver(&self) -> &str {
        &self.inner.driver
    }

    /// The UDC device name given to INIT.
    pub fn udc_device(&self) -> &str {
        &self.inner.device
    }

    /// RUN: bind to the UDC. [`Event::Connect`] is the first event afterwards.
    ///
    /// # Errors
    /// On 6.12 kernels EBUSY when no free UDC has these names (contract D2; older kernels say
    /// ENODEV); the instance is then unusable.
    pub fn run(&self) -> Result<()> {
        let _e = self.inner.span.enter();
        self.call("USB_RAW_IOCTL_RUN", self.inner.backend.run())?;
        debug!("running");
        Ok(())
    }

    /// EVENT_FETCH: waits for the next event. Keep the queue drained: raw gadget fails the
    /// instance when 16 events are waiting (spec §2.4).
    ///
    /// # Errors
    /// [`Error::Interrupted`] after [`stop_events`](Self::stop_events).
    pub fn next_event(&self) -> Result<Event> {
        let _e = self.inner.span.enter();
        let raw = self.call(
            "USB_RAW_IOCTL_EVENT_FETCH",
            self.inner.backend.event_fetch(8, &self.inner.events),
        )?;
        let ev = Event::from_raw(raw)?;
        trace!(event = ?ev, "event");
        Ok(ev)
    }

    /// Interrupts [`next_event`](Self::next_event) and ep0 transfers, now and later (the
    /// handles are sticky, see [`CancelHandle`]). Used to shut an event loop down.
    pub fn stop_events(&self) {
        self.inner.events.cancel();
        self.inner.ep0.cancel();
    }

    /// The handle that interrupts [`next_event`](Self::next_event).
    pub fn events_cancel_handle(&self) -> CancelHandle {
        self.inner.events.clone()
    }

    /// EP0_WRITE: the IN data stage of the pending SETUP. Returns the bytes sent.
    pub fn ep0_write(&self, data: &[u8]) -> Result<usize> {
        self.ep0_write_with(data, IoFlags::NONE)
    }

    /// EP0_WRITE with flags.
    pub fn ep0_write_with(&self, data: &[u8], flags: IoFlags) -> Result<usize> {
        let _e = self.inner.span.enter();
        let n = self.call(
            "USB_RAW_IOCTL_EP0_WRITE",
            self.inner.backend.ep0_write(data, flags, &self.inner.ep0),
        )?;
        trace!(len = data.len(), sent = n, "ep0 in");
        Ok(n)
    }

    /// Answers an IN request with `data`, cut to `wLength`. When the reply is shorter than
    /// `wLength` it sets `USB_RAW_IO_FLAGS_ZERO`, so a reply that ends on a packet boundary is
    /// terminated by a zero-length packet whatever the UDC's ep0 maxpacket (contract D4).
    pub fn ep0_reply(&self, setup: &ControlRequest, data: &[u8]) -> Result<usize> {
        let n = data.len().min(usize::from(setup.length));
        let flags = if n < usize::from(setup.length) {
            IoFlags::ZERO
        } else {
            IoFlags::NONE
        };
        self.ep0_write_with(&data[..n], flags)
    }

    /// EP0_READ of `len` bytes: the OUT data stage of the pending SETUP. Returns the bytes
    /// received.
    pub fn ep0_read(&self, len: usize) -> Result<Vec<u8>> {
        let _e = self.inner.span.enter();
        let mut buf = vec![0u8; len];
        let n = self.call(
            "USB_RAW_IOCTL_EP0_READ",
            self.inner
                .backend
                .ep0_read(&mut buf, IoFlags::NONE, &self.inner.ep0),
        )?;
        buf.truncate(n);
        trace!(len, received = n, "ep0 out");
        Ok(buf)
    }

    /// A 0-length EP0_READ: accepts a request without data stage (the status stage). This is
    /// also how IN requests with `wLength == 0` are acknowledged (spec §1.5).
    pub fn ep0_ack(&self) -> Result<()> {
        self.ep0_read(0).map(drop)
    }

    /// EP0_STALL: rejects the pending SETUP.
    pub fn ep0_stall(&self) -> Result<()> {
        let _e = self.inner.span.enter();
        self.call("USB_RAW_IOCTL_EP0_STALL", self.inner.backend.ep0_stall())?;
        trace!("ep0 stall");
        Ok(())
    }

    /// EPS_INFO: the controller's non-control endpoints, in handle order.
    pub fn eps_info(&self) -> Result<Vec<EpInfo>> {
        let _e = self.inner.span.enter();
        self.call("USB_RAW_IOCTL_EPS_INFO", self.inner.backend.eps_info())
    }

    /// EP_ENABLE: enables the endpoint `desc` describes (its address must already be
    /// assigned) and returns its handle.
    ///
    /// # Errors
    /// EINVAL when no UDC endpoint suits the descriptor, EBUSY when the suitable ones are all
    /// enabled (spec §1.5 EP_ENABLE), or the UDC's own error.
    pub fn enable(&self, desc: &EndpointDescriptor) -> Result<Endpoint> {
        let _e = self.inner.span.enter();
        let handle = self.call(
            "USB_RAW_IOCTL_EP_ENABLE",
            self.inner.backend.ep_enable(&desc.to_ioctl_bytes()),
        )?;
        let span = tracing::debug_span!(
            parent: &self.inner.span,
            "ep",
            handle = handle.0,
            addr = format_args!("{:#04x}", desc.address.0)
        );
        debug!(handle = handle.0, addr = desc.address.0, "enabled");
        Ok(Endpoint {
            inner: Arc::new(EndpointInner {
                gadget: self.inner.clone(),
                handle,
                desc: *desc,
                cancel: CancelHandle::new(),
                span,
            }),
        })
    }

    /// CONFIGURE: tells the UDC the gadget is configured (after enabling endpoints, before
    /// acknowledging SET_CONFIGURATION).
    pub fn configure(&self) -> Result<()> {
        let _e = self.inner.span.enter();
        self.call("USB_RAW_IOCTL_CONFIGURE", self.inner.backend.configure())
    }

    /// VBUS_DRAW in 2 mA units, so a USB 2.0 `bMaxPower` passes through unchanged.
    pub fn vbus_draw(&self, units_2ma: u32) -> Result<()> {
        let _e = self.inner.span.enter();
        self.call(
            "USB_RAW_IOCTL_VBUS_DRAW",
            self.inner.backend.vbus_draw(units_2ma),
        )
    }
}

struct EndpointInner {
    gadget: Arc<GadgetInner>,
    handle: EpHandle,
    desc: EndpointDescriptor,
    cancel: CancelHandle,
    span: tracing::Span,
}

/// An enabled endpoint. Cheap to clone; `Send + Sync`.
///
/// Reads are for OUT endpoints, writes for IN endpoints; the other direction is refused with
/// [`Error::InvalidArgument`] before reaching the backend (raw gadget would say EINVAL).
///
/// A device node allows **one request in flight per endpoint** (queue depth one, spec §2.2): a
/// second concurrent read or write on the same endpoint fails with EBUSY. Each call submits one
/// request and waits for it.
///
/// Transfers return the byte count or an error with the errno: raw gadget reports a failed
/// transfer's status only, not its partial data (spec §1.5 EP_READ), so there is no partial
/// completion to return. The usual errors: ESHUTDOWN after a bus reset or disconnect, EINTR
/// ([`Error::Interrupted`]) after [`cancel`](Self::cancel), EBUSY while another transfer is in
/// flight.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<EndpointInner>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("handle", &self.inner.handle)
            .field("desc", &self.inner.desc)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The raw gadget handle (EPS_INFO index).
    pub fn handle(&self) -> EpHandle {
        self.inner.handle
    }

    /// The descriptor it was enabled with.
    pub fn descriptor(&self) -> &EndpointDescriptor {
        &self.inner.desc
    }

    /// `bEndpointAddress`.
    pub fn address(&self) -> u8 {
        self.inner.desc.address.0
    }

    pub fn direction(&self) -> Direction {
        self.inner.desc.direction()
    }

    pub fn transfer_type(&self) -> TransferType {
        self.inner.desc.transfer_type()
    }

    /// `wMaxPacketSize & 0x7ff`.
    pub fn max_packet(&self) -> u16 {
        self.inner.desc.max_packet()
    }

    fn call<T>(&self, op: &'static str, r: std::result::Result<T, Errno>) -> Result<T> {
        r.map_err(|e| {
            let e = Error::op(op, e);
            debug!(parent: &self.inner.span, error = %e, "rejected");
            e
        })
    }

    /// One EP_WRITE (`dir` IN) or EP_READ (OUT) of `len` bytes on a borrowed buffer: the
    /// direction check, the backend call `io` and the logs every such form shares.
    fn transfer(
        &self,
        dir: Direction,
        len: usize,
        io: impl FnOnce(&dyn Backend, EpHandle, &CancelHandle) -> std::result::Result<usize, Errno>,
    ) -> Result<usize> {
        let _e = self.inner.span.enter();
        let (what, op) = match dir {
            Direction::In => ("write", "USB_RAW_IOCTL_EP_WRITE"),
            Direction::Out => ("read", "USB_RAW_IOCTL_EP_READ"),
        };
        self.check_direction(dir, what)?;
        let backend = &*self.inner.gadget.backend;
        let n = self.call(op, io(backend, self.inner.handle, &self.inner.cancel))?;
        trace!(len, transferred = n, "{what}");
        Ok(n)
    }

    fn check_direction(&self, want: Direction, what: &str) -> Result<()> {
        if self.direction() != want {
            return Err(Error::InvalidArgument(format!(
                "{what} on endpoint {:#04x}, which is {:?}",
                self.address(),
                self.direction()
            )));
        }
        Ok(())
    }

    /// EP_WRITE: sends `data` to the host (IN endpoints). Returns the bytes sent.
    pub fn write(&self, data: &[u8]) -> Result<usize> {
        self.write_with(data, IoFlags::NONE)
    }

    /// EP_WRITE with flags ([`IoFlags::ZERO`] ends the transfer with a zero-length packet when
    /// its length is a multiple of maxpacket).
    pub fn write_with(&self, data: &[u8], flags: IoFlags) -> Result<usize> {
        self.transfer(Direction::In, data.len(), |b, ep, cancel| {
            b.ep_write(ep, data, flags, cancel)
        })
    }

    /// EP_WRITE of `buf`'s payload (IN endpoints), leaving the payload as it was. Returns
    /// the bytes sent. The form for endpoint loops: on a device node it is one ioctl on `buf`
    /// itself, without allocation or copy (see [`EpBuffer`]).
    pub fn write_buf(&self, buf: &mut EpBuffer) -> Result<usize> {
        self.write_buf_with(buf, IoFlags::NONE)
    }

    /// [`write_buf`](Self::write_buf) with flags.
    pub fn write_buf_with(&self, buf: &mut EpBuffer, flags: IoFlags) -> Result<usize> {
        self.transfer(Direction::In, buf.len(), |b, ep, cancel| {
            b.ep_write_buf(ep, buf, flags, cancel)
        })
    }

    /// EP_READ of up to `buf.len()` bytes into `buf`'s payload (OUT endpoints). Returns the
    /// bytes received: `buf[..n]`. On a device node it is one ioctl on `buf` itself, without
    /// allocation or copy (see [`EpBuffer`]).
    pub fn read_buf(&self, buf: &mut EpBuffer) -> Result<usize> {
        self.transfer(Direction::Out, buf.len(), |b, ep, cancel| {
            b.ep_read_buf(ep, buf, IoFlags::NONE, cancel)
        })
    }

    /// EP_WRITE of an owned buffer (IN endpoints): the backend may hand it to the controller
    /// instead of copying it (the in-process engine does). Returns the bytes sent and a buffer
    /// of the same length to reuse, whose contents are unspecified (it may be another one).
    pub fn write_owned(&self, data: Vec<u8>) -> (Result<usize>, Vec<u8>) {
        self.write_owned_with(data, IoFlags::NONE)
    }

    /// [`write_owned`](Self::write_owned) with flags.
    pub fn write_owned_with(&self, data: Vec<u8>, flags: IoFlags) -> (Result<usize>, Vec<u8>) {
        let _e = self.inner.span.enter();
        if let Err(e) = self.check_direction(Direction::In, "write") {
            return (Err(e), data);
        }
        let len = data.len();
        let g = &self.inner.gadget;
        let (r, buf) = g
            .backend
            .ep_write_owned(self.inner.handle, data, flags, &self.inner.cancel);
        let r = self.call("USB_RAW_IOCTL_EP_WRITE", r);
        trace!(len, sent = ?r.as_ref().ok(), "write");
        (r, buf)
    }

    /// EP_READ into an owned buffer of the transfer's length (OUT endpoints), handed to the
    /// controller instead of copied into. Returns the bytes received and the buffer, cut to
    /// them (possibly another buffer than the one given).
    pub fn read_owned(&self, buf: Vec<u8>) -> (Result<usize>, Vec<u8>) {
        let _e = self.inner.span.enter();
        if let Err(e) = self.check_direction(Direction::Out, "read") {
            return (Err(e), buf);
        }
        let len = buf.len();
        let g = &self.inner.gadget;
        let (r, buf) =
            g.backend
                .ep_read_owned(self.inner.handle, buf, IoFlags::NONE, &self.inner.cancel);
        let r = self.call("USB_RAW_IOCTL_EP_READ", r);
        trace!(len, received = ?r.as_ref().ok(), "read");
        (r, buf)
    }

    /// EP_READ of up to `len` bytes (OUT endpoints). A transfer ends when `len` bytes arrived
    /// or at a short packet.
    pub fn read(&self, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let n = self.read_into(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// EP_READ into `buf`; returns the bytes received.
    pub fn read_into(&self, buf: &mut [u8]) -> Result<usize> {
        self.transfer(Direction::Out, buf.len(), |b, ep, cancel| {
            b.ep_read(ep, buf, IoFlags::NONE, cancel)
        })
    }

    /// EP_SET_HALT. Fails with EINVAL while a transfer is in flight or on iso endpoints.
    pub fn set_halt(&self) -> Result<()> {
        let _e = self.inner.span.enter();
        self.call(
            "USB_RAW_IOCTL_EP_SET_HALT",
            self.inner.gadget.backend.set_halt(self.inner.handle),
        )
    }

    /// EP_CLEAR_HALT (also clears a wedge).
    pub fn clear_halt(&self) -> Result<()> {
        let _e = self.inner.span.enter();
        self.call(
            "USB_RAW_IOCTL_EP_CLEAR_HALT",
            self.inner.gadget.backend.clear_halt(self.inner.handle),
        )
    }

    /// EP_SET_WEDGE: halt that the host's CLEAR_FEATURE cannot clear.
    pub fn set_wedge(&self) -> Result<()> {
        let _e = self.inner.span.enter();
        self.call(
            "USB_RAW_IOCTL_EP_SET_WEDGE",
            self.inner.gadget.backend.set_wedge(self.inner.handle),
        )
    }

    /// The handle that interrupts this endpoint's transfers.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.inner.cancel.clone()
    }

    /// Interrupts the transfer in flight (it returns EINTR unless it had already finished) and
    /// makes later transfers on this handle fail with EINTR. Returns once no transfer is
    /// blocked.
    pub fn cancel(&self) {
        self.inner.cancel.cancel();
    }

    /// Starts [`cancel`](Self::cancel) without waiting for the transfer to return: to stop
    /// several endpoints, request all, then `cancel` each (see
    /// [`CancelHandle::request_cancel`]).
    pub fn request_cancel(&self) {
        self.inner.cancel.request_cancel();
    }

    /// Cancels any transfer in flight (raw gadget refuses to disable an endpoint with one, spec
    /// §1.5 EP_DISABLE), then EP_DISABLE.
    pub fn disable(&self) -> Result<()> {
        self.cancel();
        let _e = self.inner.span.enter();
        self.call(
            "USB_RAW_IOCTL_EP_DISABLE",
            self.inner.gadget.backend.ep_disable(self.inner.handle),
        )?;
        debug!("disabled");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    /// Handles are shareable across threads, as in nusb.
    #[test]
    fn handles_are_send_sync() {
        assert_send_sync::<Gadget>();
        assert_send_sync::<Endpoint>();
        assert_send_sync::<CancelHandle>();
        assert_send_sync::<Event>();
    }

    /// spec §1.5: an IN request without data stage is "OUT pending" and takes EP0_READ; only
    /// IN with `wLength > 0` takes EP0_WRITE.
    #[test]
    fn in_data_stage_needs_in_and_wlength() {
        let req = |request_type, length| ControlRequest {
            request_type,
            request: 0x5c,
            length,
            ..Default::default()
        };
        assert!(has_in_data_stage(&req(0xc0, 4)));
        assert!(!has_in_data_stage(&req(0xc0, 0)));
        assert!(!has_in_data_stage(&req(0x40, 4)));
        assert!(!has_in_data_stage(&req(0x40, 0)));
    }

    #[test]
    fn events_decode() {
        let raw = |t, data: &[u8]| RawEvent {
            event_type: t,
            length: data.len() as u32,
            data: data.to_vec(),
        };
        assert_eq!(Event::from_raw(raw(1, &[])).unwrap(), Event::Connect);
        assert_eq!(Event::from_raw(raw(5, &[])).unwrap(), Event::Reset);
        let setup = [0x80, 6, 0, 1, 0, 0, 18, 0];
        match Event::from_raw(raw(2, &setup)).unwrap() {
            Event::Control(s) => assert_eq!(s.to_bytes(), setup),
            e => panic!("{e:?}"),
        }
        let e = Event::from_raw(raw(2, &[1, 2])).unwrap_err();
        assert_eq!(e.errno(), Errno::EPROTO);
        assert_eq!(
            Event::from_raw(raw(9, &[7])).unwrap(),
            Event::Unknown {
                event_type: 9,
                data: vec![7]
            }
        );
    }
}
