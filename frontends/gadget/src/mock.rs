//! A scriptable in-memory [`Backend`], for testing gadget programs without a kernel.
//!
//! The test plays the host through [`MockBackend`]'s host-side methods: [`control`] sends a
//! SETUP and waits for the gadget's reply, [`host_in`] takes what the gadget wrote on an IN
//! endpoint, [`host_out`] hands data to an OUT endpoint, [`bus_reset`] resets the bus. The
//! gadget side follows raw gadget's rules where a program can notice them: CONNECT after RUN,
//! the ep0 direction rule, one answer per SETUP, one transfer in flight per endpoint, EP_ENABLE
//! matching (spec §1.5), ESHUTDOWN for transfers cut by a reset, endpoints left enabled by a
//! reset as on dummy_udc (contract D27). It does not model packets, timing or the event limit:
//! that is the in-process engine's job.
//!
//! [`control`]: MockBackend::control
//! [`host_in`]: MockBackend::host_in
//! [`host_out`]: MockBackend::host_out
//! [`bus_reset`]: MockBackend::bus_reset

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rawgadget_uapi::{event_type, Errno, Speed};

use crate::backend::{Backend, EpHandle, EpInfo, IoFlags, RawEvent};
use crate::cancel::Wake;
use crate::endpoint::{dummy_udc_eps, ep_suits};
use crate::gadget::has_in_data_stage;
use crate::usb::types::USB_DT_ENDPOINT;
use crate::usb::EndpointView;
use crate::{CancelHandle, ControlRequest, Direction, EndpointDescriptor, TransferType};

/// How the gadget answered a SETUP.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Ep0Reply {
    /// EP0_WRITE with these bytes (already cut to what the host asked for).
    In(Vec<u8>),
    /// EP0_READ: the gadget accepted and took `len` bytes of the data stage (0 for an ack).
    Out(usize),
    /// EP0_STALL.
    Stall,
}

/// Host-side failures of the mock.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum MockError {
    #[error("timed out waiting for the gadget")]
    Timeout,
    #[error("no enabled endpoint with that address")]
    NoEndpoint,
    #[error("endpoint halted")]
    Stall,
}

/// One call the gadget made, for assertions on order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Call {
    Init {
        driver: String,
        device: String,
        speed: Speed,
    },
    Run,
    Enable {
        handle: EpHandle,
        desc: [u8; 9],
    },
    Disable(EpHandle),
    Configure,
    VbusDraw(u32),
    SetHalt(EpHandle),
    ClearHalt(EpHandle),
    SetWedge(EpHandle),
}

#[derive(Default)]
struct EpSlot {
    desc: Option<EndpointDescriptor>,
    in_flight: bool,
    halted: bool,
    wedged: bool,
    /// An EP_WRITE waiting for the host.
    to_host: Option<Vec<u8>>,
    /// Set when the host took `to_host`: the write's result.
    taken: Option<usize>,
    /// Host data waiting for EP_READ.
    from_host: VecDeque<Vec<u8>>,
    /// Bumped by a reset/disconnect: transfers in flight fail with ESHUTDOWN.
    shutdown_gen: u64,
}

#[derive(Default)]
struct State {
    running: bool,
    events: VecDeque<RawEvent>,
    /// The SETUP waiting for its answer, and the host's OUT data for it.
    ep0_pending: Option<(ControlRequest, Vec<u8>)>,
    ep0_reply: Option<Ep0Reply>,
    eps: Vec<EpInfo>,
    slots: Vec<EpSlot>,
    configured: bool,
    calls: Vec<Call>,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

/// The test double. See the module doc.
#[derive(Clone)]
pub struct MockBackend {
    shared: Arc<Shared>,
    timeout: Duration,
}

impl std::fmt::Debug for MockBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockBackend")
    }
}

impl Default for MockBackend {
    fn default() -> Self {
        MockBackend::new(dummy_udc_eps())
    }
}

struct CvWake(Arc<Shared>);

impl Wake for CvWake {
    fn wake(&self) {
        self.0.cv.notify_all();
    }
}

impl MockBackend {
    /// A mock whose EPS_INFO is `eps` (the default is dummy_udc's list, contract D1).
    pub fn new(eps: Vec<EpInfo>) -> MockBackend {
        let slots = eps.iter().map(|_| EpSlot::default()).collect();
        MockBackend {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    eps,
                    slots,
                    ..State::default()
                }),
                cv: Condvar::new(),
            }),
            timeout: Duration::from_secs(5),
        }
    }

    /// How long host-side calls wait for the gadget (default 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn waker(&self) -> Arc<dyn Wake> {
        Arc::new(CvWake(self.shared.clone()))
    }

    /// Waits on the condvar until `ready` gives a value, the handle is cancelled (EINTR) or
    /// `deadline` passes (None).
    fn wait_gadget<T>(
        &self,
        cancel: &CancelHandle,
        ready: impl FnMut(&mut State) -> Option<Result<T, Errno>>,
    ) -> Result<T, Errno> {
        let _blocked = cancel.enter(self.waker()).map_err(|_| Errno::EINTR)?;
        self.wait_entered(cancel, ready)
    }

    /// [`wait_gadget`](Self::wait_gadget) for a caller already registered with `cancel`.
    fn wait_entered<T>(
        &self,
        cancel: &CancelHandle,
        mut ready: impl FnMut(&mut State) -> Option<Result<T, Errno>>,
    ) -> Result<T, Errno> {
        let mut st = self.lock();
        loop {
            if let Some(r) = ready(&mut st) {
                self.shared.cv.notify_all();
                return r;
            }
            if cancel.is_cancelled() {
                return Err(Errno::EINTR);
            }
            st = self
                .shared
                .cv
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn wait_host<T>(&self, mut ready: impl FnMut(&mut State) -> Option<T>) -> Result<T, MockError> {
        let deadline = Instant::now() + self.timeout;
        let mut st = self.lock();
        loop {
            if let Some(r) = ready(&mut st) {
                self.shared.cv.notify_all();
                return Ok(r);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(MockError::Timeout);
            }
            st = self
                .shared
                .cv
                .wait_timeout(st, (deadline - now).min(Duration::from_millis(50)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn push_event(&self, event_type: u32, data: Vec<u8>) {
        let mut st = self.lock();
        st.events.push_back(RawEvent {
            event_type,
            length: data.len() as u32,
            data,
        });
        self.shared.cv.notify_all();
    }

    // -- host side ------------------------------------------------------------------------

    /// Waits until the gadget has issued RUN (so CONNECT is queued before anything the host
    /// sends next, as with a real UDC).
    pub fn wait_running(&self) -> Result<(), MockError> {
        self.wait_host(|st| st.running.then_some(()))
    }

    /// Sends a SETUP (with `out_data` as the OUT data stage, if any) and waits for the reply.
    pub fn control(&self, setup: ControlRequest, out_data: &[u8]) -> Result<Ep0Reply, MockError> {
        {
            let mut st = self.lock();
            st.ep0_pending = Some((setup, out_data.to_vec()));
            st.ep0_reply = None;
        }
        self.push_event(event_type::USB_RAW_EVENT_CONTROL, setup.to_bytes().to_vec());
        self.wait_host(|st| st.ep0_reply.take())
    }

    /// Convenience: an IN control request; `Ok(bytes)` or `Err(Stall)`.
    pub fn control_in(&self, setup: ControlRequest) -> Result<Vec<u8>, MockError> {
        match self.control(setup, &[])? {
            Ep0Reply::In(d) => Ok(d),
            Ep0Reply::Out(0) if setup.length == 0 => Ok(Vec::new()),
            Ep0Reply::Stall => Err(MockError::Stall),
            Ep0Reply::Out(_) => Err(MockError::Stall),
        }
    }

    fn slot_by_address(st: &State, address: u8) -> Option<usize> {
        st.slots
            .iter()
            .position(|s| s.desc.is_some_and(|d| d.address.0 == address))
    }

    /// Takes the next EP_WRITE of the IN endpoint `address` (bit 7 set), completing it fully.
    pub fn host_in(&self, address: u8) -> Result<Vec<u8>, MockError> {
        self.wait_host(|st| {
            let i = match Self::slot_by_address(st, address) {
                Some(i) => i,
                None => return Some(Err(MockError::NoEndpoint)),
            };
            let slot = &mut st.slots[i];
            if slot.halted {
                return Some(Err(MockError::Stall));
            }
            let data = slot.to_host.take()?;
            slot.taken = Some(data.len());
            Some(Ok(data))
        })?
    }

    /// Queues `data` for the OUT endpoint `address`; an EP_READ takes up to its length.
    pub fn host_out(&self, address: u8, data: &[u8]) -> Result<(), MockError> {
        let mut st = self.lock();
        let i = Self::slot_by_address(&st, address).ok_or(MockError::NoEndpoint)?;
        if st.slots[i].halted {
            return Err(MockError::Stall);
        }
        st.slots[i].from_host.push_back(data.to_vec());
        self.shared.cv.notify_all();
        Ok(())
    }

    /// Waits until the OUT endpoint `address` has consumed everything queued for it.
    pub fn host_out_drained(&self, address: u8) -> Result<(), MockError> {
        self.wait_host(|st| {
            let i = Self::slot_by_address(st, address)?;
            st.slots[i].from_host.is_empty().then_some(())
        })
    }

    /// A bus reset as dummy_udc makes it (contract D27): transfers in flight end with
    /// ESHUTDOWN, endpoints stay enabled, the configuration is lost, RESET is queued.
    pub fn bus_reset(&self) {
        self.shutdown_all();
        self.push_event(event_type::USB_RAW_EVENT_RESET, Vec::new());
    }

    /// A disconnect (contract D30): like a reset, but DISCONNECT is queued.
    pub fn disconnect(&self) {
        self.shutdown_all();
        self.push_event(event_type::USB_RAW_EVENT_DISCONNECT, Vec::new());
    }

    fn shutdown_all(&self) {
        let mut st = self.lock();
        st.configured = false;
        for s in &mut st.slots {
            s.shutdown_gen += 1;
            s.to_host = None;
            s.from_host.clear();
        }
        self.shared.cv.notify_all();
    }

    /// Queues SUSPEND.
    pub fn suspend(&self) {
        self.push_event(event_type::USB_RAW_EVENT_SUSPEND, Vec::new());
    }

    /// Endpoints currently enabled: handle and descriptor.
    pub fn enabled(&self) -> Vec<(EpHandle, EndpointDescriptor)> {
        let st = self.lock();
        st.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.desc.map(|d| (EpHandle(i as u16), d)))
            .collect()
    }

    /// Waits until exactly `n` endpoints are enabled.
    pub fn wait_enabled(&self, n: usize) -> Result<Vec<(EpHandle, EndpointDescriptor)>, MockError> {
        self.wait_host(|st| {
            (st.slots.iter().filter(|s| s.desc.is_some()).count() == n).then_some(())
        })?;
        Ok(self.enabled())
    }

    /// Whether CONFIGURE was called since the last reset.
    pub fn is_configured(&self) -> bool {
        self.lock().configured
    }

    /// Whether the endpoint `address` is halted.
    pub fn is_halted(&self, address: u8) -> Option<bool> {
        let st = self.lock();
        Self::slot_by_address(&st, address).map(|i| st.slots[i].halted)
    }

    /// Host-side CLEAR_FEATURE(ENDPOINT_HALT), which the UDC answers itself (contract D22).
    pub fn host_clear_halt(&self, address: u8) {
        let mut st = self.lock();
        if let Some(i) = Self::slot_by_address(&st, address) {
            if !st.slots[i].wedged {
                st.slots[i].halted = false;
            }
        }
    }

    /// Every call the gadget made, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Number of events queued and not yet fetched.
    pub fn pending_events(&self) -> usize {
        self.lock().events.len()
    }

    fn slot_checked(st: &mut State, ep: EpHandle, missing: Errno) -> Result<&mut EpSlot, Errno> {
        let slot = st.slots.get_mut(usize::from(ep.0)).ok_or(missing)?;
        Ok(slot)
    }

    /// Puts a transfer in flight on `ep` after raw gadget's checks (spec §1.5 EP_WRITE/EP_READ:
    /// EINVAL when not running, for a bad handle or the wrong direction; EBUSY when disabled or
    /// busy), lets `publish` make it visible to the host, and returns the reset generation it
    /// started in. The caller has registered with `cancel` first: a real transfer is inside
    /// the kernel before the host can complete it.
    fn start_transfer(
        &self,
        ep: EpHandle,
        direction: Direction,
        cancel: &CancelHandle,
        publish: impl FnOnce(&mut EpSlot),
    ) -> Result<u64, Errno> {
        let mut st = self.lock();
        st.running.then_some(()).ok_or(Errno::EINVAL)?;
        let slot = Self::slot_checked(&mut st, ep, Errno::EINVAL)?;
        let d = slot.desc.ok_or(Errno::EBUSY)?;
        if slot.in_flight {
            return Err(Errno::EBUSY);
        }
        if d.direction() != direction {
            return Err(Errno::EINVAL);
        }
        if cancel.is_cancelled() {
            return Err(Errno::EINTR);
        }
        slot.in_flight = true;
        publish(slot);
        self.shared.cv.notify_all();
        Ok(slot.shutdown_gen)
    }

    fn halt_op(&self, ep: EpHandle, call: Call, f: impl FnOnce(&mut EpSlot)) -> Result<(), Errno> {
        let mut st = self.lock();
        st.running.then_some(()).ok_or(Errno::EINVAL)?;
        let slot = Self::slot_checked(&mut st, ep, Errno::EBUSY)?;
        let desc = slot.desc.ok_or(Errno::EINVAL)?;
        if slot.in_flight || desc.transfer_type() == TransferType::Isochronous {
            return Err(Errno::EINVAL);
        }
        f(slot);
        st.calls.push(call);
        Ok(())
    }
}

/// The descriptor in EP_ENABLE's 9 bytes, read as the UDC does: `bDescriptorType` must be
/// ENDPOINT (dummy_udc's `dummy_enable`), `bLength` is not looked at.
fn endpoint_from_ioctl(bytes: &[u8; 9]) -> Option<EndpointDescriptor> {
    let v = EndpointView::new_unchecked(&bytes[..]);
    (v.descriptor_type() == USB_DT_ENDPOINT).then(|| EndpointDescriptor {
        address: v.address(),
        attributes: v.attributes(),
        max_packet_size: v.max_packet_size(),
        interval: v.interval(),
        audio: None,
    })
}

impl Backend for MockBackend {
    fn init(&self, driver_name: &str, device_name: &str, speed: Speed) -> Result<(), Errno> {
        let mut st = self.lock();
        if st.calls.iter().any(|c| matches!(c, Call::Init { .. })) {
            return Err(Errno::EINVAL);
        }
        st.calls.push(Call::Init {
            driver: driver_name.into(),
            device: device_name.into(),
            speed,
        });
        Ok(())
    }

    fn run(&self) -> Result<(), Errno> {
        {
            let mut st = self.lock();
            if st.running || !st.calls.iter().any(|c| matches!(c, Call::Init { .. })) {
                return Err(Errno::EINVAL);
            }
            st.running = true;
            st.calls.push(Call::Run);
        }
        self.push_event(event_type::USB_RAW_EVENT_CONNECT, Vec::new());
        Ok(())
    }

    fn event_fetch(&self, capacity: u32, cancel: &CancelHandle) -> Result<RawEvent, Errno> {
        self.wait_gadget(cancel, |st| {
            if !st.running {
                return Some(Err(Errno::EINVAL));
            }
            let mut ev = st.events.pop_front()?;
            ev.data.truncate(capacity as usize);
            Some(Ok(ev))
        })
    }

    fn ep0_write(
        &self,
        data: &[u8],
        _flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        if cancel.is_cancelled() {
            return Err(Errno::EINTR);
        }
        let mut st = self.lock();
        match st.ep0_pending {
            Some((setup, _)) if has_in_data_stage(&setup) => {
                let n = data.len().min(usize::from(setup.length));
                st.ep0_pending = None;
                st.ep0_reply = Some(Ep0Reply::In(data[..n].to_vec()));
                self.shared.cv.notify_all();
                Ok(data.len())
            }
            _ => Err(Errno::EBUSY),
        }
    }

    fn ep0_read(
        &self,
        buf: &mut [u8],
        _flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        if cancel.is_cancelled() {
            return Err(Errno::EINTR);
        }
        let mut st = self.lock();
        match st.ep0_pending.take() {
            Some((setup, data)) if !has_in_data_stage(&setup) => {
                let n = buf.len().min(data.len());
                buf[..n].copy_from_slice(&data[..n]);
                st.ep0_reply = Some(Ep0Reply::Out(n));
                self.shared.cv.notify_all();
                Ok(n)
            }
            other => {
                st.ep0_pending = other;
                Err(Errno::EBUSY)
            }
        }
    }

    fn ep_enable(&self, desc: &[u8; 9]) -> Result<EpHandle, Errno> {
        let d = endpoint_from_ioctl(desc).ok_or(Errno::EINVAL)?;
        if d.max_packet() == 0 {
            return Err(Errno::EINVAL);
        }
        let mut st = self.lock();
        st.running.then_some(()).ok_or(Errno::EINVAL)?;
        let mut matched = false;
        for i in 0..st.eps.len() {
            let e = &st.eps[i];
            if (e.addr.is_none() || e.addr == Some(d.number())) && ep_suits(e, &d) {
                matched = true;
                if st.slots[i].desc.is_none() {
                    let slot = &mut st.slots[i];
                    *slot = EpSlot {
                        desc: Some(d),
                        shutdown_gen: slot.shutdown_gen,
                        ..EpSlot::default()
                    };
                    st.calls.push(Call::Enable {
                        handle: EpHandle(i as u16),
                        desc: *desc,
                    });
                    self.shared.cv.notify_all();
                    return Ok(EpHandle(i as u16));
                }
            }
        }
        Err(if matched { Errno::EBUSY } else { Errno::EINVAL })
    }

    fn ep_disable(&self, ep: EpHandle) -> Result<(), Errno> {
        let mut st = self.lock();
        st.running.then_some(()).ok_or(Errno::EINVAL)?;
        let slot = Self::slot_checked(&mut st, ep, Errno::EBUSY)?;
        if slot.desc.is_none() || slot.in_flight {
            return Err(Errno::EINVAL);
        }
        let gen = slot.shutdown_gen;
        *slot = EpSlot {
            shutdown_gen: gen,
            ..EpSlot::default()
        };
        st.calls.push(Call::Disable(ep));
        self.shared.cv.notify_all();
        Ok(())
    }

    fn ep_write(
        &self,
        ep: EpHandle,
        data: &[u8],
        _flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        let _blocked = cancel.enter(self.waker()).map_err(|_| Errno::EINTR)?;
        let gen = self.start_transfer(ep, Direction::In, cancel, |slot| {
            slot.to_host = Some(data.to_vec());
            slot.taken = None;
        })?;
        let r = self.wait_entered(cancel, |st| {
            let slot = &mut st.slots[usize::from(ep.0)];
            // A transfer that completed keeps its result even if a reset follows.
            if let Some(n) = slot.taken.take() {
                return Some(Ok(n));
            }
            (slot.shutdown_gen != gen).then_some(Err(Errno::ESHUTDOWN))
        });
        let mut st = self.lock();
        let slot = &mut st.slots[usize::from(ep.0)];
        slot.in_flight = false;
        if r.is_err() {
            slot.to_host = None;
        }
        self.shared.cv.notify_all();
        r
    }

    fn ep_read(
        &self,
        ep: EpHandle,
        buf: &mut [u8],
        _flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        let _blocked = cancel.enter(self.waker()).map_err(|_| Errno::EINTR)?;
        let gen = self.start_transfer(ep, Direction::Out, cancel, |_| {})?;
        let r = self.wait_entered(cancel, |st| {
            let slot = &mut st.slots[usize::from(ep.0)];
            if slot.shutdown_gen != gen {
                return Some(Err(Errno::ESHUTDOWN));
            }
            let mut chunk = slot.from_host.pop_front()?;
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                slot.from_host.push_front(chunk.split_off(n));
            }
            Some(Ok(n))
        });
        let mut st = self.lock();
        st.slots[usize::from(ep.0)].in_flight = false;
        self.shared.cv.notify_all();
        r
    }

    fn configure(&self) -> Result<(), Errno> {
        let mut st = self.lock();
        st.running.then_some(()).ok_or(Errno::EINVAL)?;
        st.configured = true;
        st.calls.push(Call::Configure);
        Ok(())
    }

    fn vbus_draw(&self, units_2ma: u32) -> Result<(), Errno> {
        let mut st = self.lock();
        st.running.then_some(()).ok_or(Errno::EINVAL)?;
        st.calls.push(Call::VbusDraw(units_2ma));
        Ok(())
    }

    fn eps_info(&self) -> Result<Vec<EpInfo>, Errno> {
        let st = self.lock();
        st.running.then_some(()).ok_or(Errno::EINVAL)?;
        Ok(st.eps.clone())
    }

    fn ep0_stall(&self) -> Result<(), Errno> {
        let mut st = self.lock();
        st.running.then_some(()).ok_or(Errno::EINVAL)?;
        if st.ep0_pending.take().is_none() {
            return Err(Errno::EBUSY);
        }
        st.ep0_reply = Some(Ep0Reply::Stall);
        self.shared.cv.notify_all();
        Ok(())
    }

    fn set_halt(&self, ep: EpHandle) -> Result<(), Errno> {
        self.halt_op(ep, Call::SetHalt(ep), |s| s.halted = true)
    }

    fn clear_halt(&self, ep: EpHandle) -> Result<(), Errno> {
        self.halt_op(ep, Call::ClearHalt(ep), |s| {
            s.halted = false;
            s.wedged = false;
        })
    }

    fn set_wedge(&self, ep: EpHandle) -> Result<(), Errno> {
        self.halt_op(ep, Call::SetWedge(ep), |s| {
            s.halted = true;
            s.wedged = true;
        })
    }
}
