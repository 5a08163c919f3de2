//! The controller: dummy_hcd's UDC half and HCD half in one sans-IO state machine.
//!
//! Read contract §2 (`udc-contract.md`) and `drivers/usb/gadget/udc/dummy_hcd.c` before editing;
//! every rule is cited where it is implemented.
//!
//! # Inputs and outputs
//!
//! Gadget side: the engine calls the [`Udc`] methods (bind, enable, queue, dequeue, halt ...).
//! Host side: [`Controller::submit_urb`], [`Controller::unlink_urb`], the `port_*` methods and
//! [`Controller::handle_timeout`], each with the current time.
//!
//! Outputs, drained by the driver that owns both sides:
//! - [`Controller::poll_gadget_event`]: SETUPs to present, bus events and request completions,
//!   in the order dummy would make the callbacks. One queue, because the order matters to the
//!   gadget driver (a RESET before the next SETUP; a stale request's completion before the
//!   SETUP that made it stale, contract D15). After a [`GadgetEvent::Setup`] the driver must
//!   give the gadget driver's answer to [`Controller::handle_setup_verdict`]; until then the
//!   scheduler is paused and `poll_gadget_event` returns `None`, as dummy's timer is blocked
//!   inside `->setup()`.
//! - [`Controller::poll_urb_completion`]: URBs given back, in giveback order.
//! - [`Controller::poll_timeout`]: when to call `handle_timeout` next.
//!
//! # Scheduling
//!
//! dummy moves data from a 125 µs timer. The model instead runs its scheduler (one
//! `dummy_timer` pass) after every input, with no bandwidth budget: the same moves happen in
//! the same order, only sooner. Per endpoint only the oldest URB is worked on
//! (`already_seen`), which keeps URBs in order (contract D14, U8).

mod control;
mod enable;
mod iso;
mod port;
mod transfer;

#[cfg(test)]
mod tests;

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use rawgadget_engine::{Binding, BusEvent, Completion, EpId, Request, RequestId, Udc};
use rawgadget_uapi::{Errno, Speed};

pub use port::PortStatus;

use crate::personality::{IsoRule, Personality};
use crate::time::Instant;
use crate::urb::{Unlink, Urb, UrbCompletion, UrbFlags, UrbId, UrbKind};
use control::Handled;
use port::Port;

/// `EIDRM` (not among the interface's errnos in `rawgadget_uapi`).
const EIDRM: Errno = Errno(43);

/// One gadget-driver callback, in the order dummy makes them.
#[derive(PartialEq, Eq, Debug)]
pub enum GadgetEvent {
    /// `->setup()`: present these 8 bytes (`Instance::handle_setup`), then give its result
    /// to [`Controller::handle_setup_verdict`].
    Setup([u8; 8]),
    /// `->reset`, `->suspend`, `->resume`, `->disconnect` (`Instance::handle_bus`).
    Bus(BusEvent),
    /// A request's `->complete` (`Instance::handle_completion`).
    Completion(Completion),
}

/// A request on an endpoint queue.
#[derive(Debug)]
struct QueuedReq {
    /// The gadget's request, or `None` for the FIFO's own copy (contract D13), whose
    /// completion nobody sees.
    id: Option<RequestId>,
    buf: Vec<u8>,
    /// `req->length`, never more than `buf.len()`.
    length: u32,
    /// `req->actual`.
    actual: u32,
    /// `req->zero`.
    zero: bool,
}

/// The gadget half of an endpoint (`struct dummy_ep`).
#[derive(Debug)]
struct Endpoint {
    id: EpId,
    /// `usb_ep.name`; dummy's enable checks look at it (contract D6).
    name: String,
    /// `ep->desc`: the enabled descriptor, `None` while disabled. Always `None` for ep0.
    desc: Option<[u8; 9]>,
    /// `ep->ep.maxpacket`.
    maxpacket: u32,
    halted: bool,
    wedged: bool,
    /// ep0 only: the oldest control URB still has its SETUP stage to do.
    setup_stage: bool,
    /// Iso only: the last packet slot took a request, so the client is streaming and the next
    /// slot may wait for it (`Personality::iso_grace`). Cleared at enable and disable.
    iso_streaming: bool,
    queue: VecDeque<QueuedReq>,
}

impl Endpoint {
    /// `bEndpointAddress` of the enabled descriptor.
    fn address(&self) -> Option<u8> {
        self.desc.map(|d| d[2])
    }
    fn is_in(&self) -> bool {
        self.address().is_some_and(|a| a & 0x80 != 0)
    }
}

/// A URB while the controller holds it.
#[derive(Debug)]
struct UrbState {
    id: UrbId,
    endpoint: u8,
    kind: UrbKind,
    buffer: Vec<u8>,
    /// `transfer_buffer_length`.
    length: u32,
    /// `actual_length`.
    actual: u32,
    flags: UrbFlags,
    /// A control URB whose SETUP stage has not started (dummy's `error_count = 1` mark).
    new_control: bool,
    /// `urb->unlinked`: the status it will be given back with (contract D26).
    unlinked: Option<Errno>,
    /// Iso URBs under [`IsoRule::Schedule`] (contract I5): when the next packet slot falls
    /// due, or the URB ends once every slot is served (`None` until the URB reaches the head
    /// of its endpoint); the next packet to serve; and while a slot waits for the client
    /// (`Personality::iso_grace`), how long at most.
    iso_due: Option<Instant>,
    iso_next: u32,
    iso_wait_until: Option<Instant>,
}

impl UrbState {
    fn is_in(&self) -> bool {
        self.endpoint & 0x80 != 0
    }
    fn length(&self) -> u32 {
        self.length
    }
}

/// Gadget-side outputs plus the FIFO flag, which a giveback clears (`dummy_giveback`).
#[derive(Debug, Default)]
struct GadgetOut {
    events: VecDeque<GadgetEvent>,
    /// `fifo_req_busy` (contract D13).
    fifo_busy: bool,
}

impl GadgetOut {
    /// `dummy_giveback`: the gadget's `->complete`, or a silent end of the FIFO copy.
    fn giveback(&mut self, ep: EpId, req: QueuedReq, status: Result<(), Errno>) {
        match req.id {
            None => self.fifo_busy = false,
            Some(id) => self.events.push_back(GadgetEvent::Completion(Completion {
                ep,
                id,
                status,
                actual: req.actual,
                buf: req.buf,
            })),
        }
    }
}

/// See the module doc.
#[derive(Debug)]
pub struct Controller {
    personality: Personality,
    /// `dummy_udc.N`.
    device_name: String,
    // -- gadget side --
    /// A gadget driver is bound (`dum->driver` with callbacks enabled).
    bound: bool,
    /// `dum->pullup`.
    pullup: bool,
    /// `gadget.speed`, fixed at bind (contract D3).
    speed: Speed,
    configured: bool,
    vbus_draw_ma: u32,
    /// `dum->address` (contract D19).
    address: u16,
    /// `dum->devstatus` (contract D21).
    devstatus: u16,
    /// `dum->ep[]`: ep0 first, then the personality's endpoints (handle i is index i + 1).
    eps: Vec<Endpoint>,
    gadget_out: GadgetOut,
    // -- host side --
    port: Port,
    /// Every URB not yet given back, in submission order (`urbp_list`).
    urbs: VecDeque<UrbState>,
    next_urb: u64,
    /// The control URB whose SETUP the gadget driver is looking at.
    awaiting_setup: Option<UrbId>,
    /// The SETUP event for `awaiting_setup` has been polled and its verdict not yet given.
    verdict_outstanding: bool,
    urbs_done: VecDeque<UrbCompletion>,
    now: Instant,
}

impl Controller {
    /// A controller `<driver_name>.<index>` with `personality`, its port already powered by
    /// the host and no gadget bound.
    pub fn new(personality: Personality, index: u32) -> Controller {
        let mut eps = Vec::with_capacity(personality.endpoints.len() + 1);
        eps.push(Endpoint::new(EpId::Ep0, String::from("ep0")));
        for (i, e) in personality.endpoints.iter().enumerate() {
            eps.push(Endpoint::new(EpId::Ep(i as u16), e.name.clone()));
        }
        eps[0].maxpacket = 64;
        Controller {
            device_name: format!("{}.{}", personality.driver_name, index),
            personality,
            bound: false,
            pullup: false,
            speed: Speed::Unknown,
            configured: false,
            vbus_draw_ma: 0,
            address: 0,
            devstatus: 0,
            eps,
            gadget_out: GadgetOut::default(),
            port: Port::powered(),
            urbs: VecDeque::new(),
            next_urb: 1,
            awaiting_setup: None,
            verdict_outstanding: false,
            urbs_done: VecDeque::new(),
            now: Instant::ZERO,
        }
    }

    // ----------------------------------------------------------------------------------------
    // Getters

    pub fn personality(&self) -> &Personality {
        &self.personality
    }
    /// The UDC device name, `dummy_udc.N` (contract D2).
    pub fn device_name(&self) -> &str {
        &self.device_name
    }
    pub fn is_bound(&self) -> bool {
        self.bound
    }
    /// The negotiated speed (`Unknown` before the first bind, contract D3).
    pub fn speed(&self) -> Speed {
        self.speed
    }
    /// ep0's current maxpacket (contract D4).
    pub fn ep0_maxpacket(&self) -> u32 {
        self.eps[0].maxpacket
    }
    /// The address the host set (contract D19); 0 after a reset.
    pub fn address(&self) -> u16 {
        self.address
    }
    /// The device-status word GET_STATUS(device) reports the low byte of (contract D21).
    pub fn device_status(&self) -> u16 {
        self.devstatus
    }
    /// Whether the gadget called `usb_gadget_set_state(CONFIGURED)`.
    pub fn is_configured(&self) -> bool {
        self.configured
    }
    /// The last VBUS_DRAW value in mA.
    pub fn vbus_draw_ma(&self) -> u32 {
        self.vbus_draw_ma
    }
    /// Halt and wedge flags of endpoint handle `ep` (contract D25).
    pub fn halt_state(&self, ep: EpId) -> Option<(bool, bool)> {
        let k = self.ep_index(ep)?;
        Some((self.eps[k].halted, self.eps[k].wedged))
    }
    /// The enabled descriptor of handle `ep`.
    pub fn enabled_descriptor(&self, ep: u16) -> Option<[u8; 9]> {
        self.eps.get(usize::from(ep) + 1)?.desc
    }
    /// The transfer type the host should use for URBs to `address`, from the descriptor of
    /// the endpoint the controller would route them to (USB/IP headers carry no transfer
    /// type, contract U12). `None` when no enabled endpoint has that address.
    pub fn endpoint_type(&self, address: u8) -> Option<u8> {
        if address & 0x7f == 0 {
            return Some(0);
        }
        self.eps[1..]
            .iter()
            .find(|e| e.address() == Some(address))
            .and_then(|e| e.desc)
            .map(|d| d[3] & 3)
    }
    /// Number of gadget requests queued on `ep` (the FIFO copy included).
    pub fn queued_requests(&self, ep: EpId) -> usize {
        self.ep_index(ep).map_or(0, |k| self.eps[k].queue.len())
    }
    /// Whether the FIFO holds IN data no URB has read yet (contract D13).
    pub fn fifo_busy(&self) -> bool {
        self.gadget_out.fifo_busy
    }
    /// URBs submitted and not yet given back.
    pub fn pending_urbs(&self) -> usize {
        self.urbs.len()
    }
    /// Whether a URB the host submitted to enabled endpoint `ep` is still there (not given
    /// back, not unlinked): the client's next transfer on `ep` finds it at once.
    pub fn urb_waiting_on(&self, ep: EpId) -> bool {
        let Some(address) = self.ep_index(ep).and_then(|k| self.eps[k].address()) else {
            return false;
        };
        self.urbs
            .iter()
            .any(|u| u.endpoint == address && u.unlinked.is_none())
    }
    /// `actual_length` so far of a URB not yet given back.
    pub fn urb_progress(&self, id: UrbId) -> Option<u32> {
        self.urbs.iter().find(|u| u.id == id).map(|u| u.actual)
    }
    /// The control URB whose SETUP waits for [`Controller::handle_setup_verdict`].
    pub fn awaiting_setup(&self) -> Option<UrbId> {
        self.awaiting_setup
    }
    /// The latest time seen in an input.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Checks structural invariants; for tests and fuzzing.
    ///
    /// # Panics
    /// When one does not hold: that is a model bug.
    pub fn assert_invariants(&self) {
        let fifo_copies: usize = self
            .eps
            .iter()
            .map(|e| e.queue.iter().filter(|r| r.id.is_none()).count())
            .sum();
        assert!(fifo_copies <= 1, "more than one FIFO request");
        assert_eq!(
            fifo_copies == 1,
            self.gadget_out.fifo_busy,
            "FIFO flag disagrees with the queues"
        );
        let mut ids: Vec<RequestId> = self
            .eps
            .iter()
            .flat_map(|e| e.queue.iter().filter_map(|r| r.id))
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(n, ids.len(), "a request is queued twice");
        for e in &self.eps {
            for r in &e.queue {
                assert!(r.actual <= r.length && r.length as usize <= r.buf.len());
            }
            if e.id != EpId::Ep0 && e.desc.is_none() {
                assert!(e.queue.is_empty(), "requests on a disabled endpoint");
            }
        }
        assert!(self.eps[0].desc.is_none());
        for u in &self.urbs {
            assert!(u.actual <= u.length && u.length as usize == u.buffer.len());
        }
        if let Some(id) = self.awaiting_setup {
            assert!(self.urbs.iter().any(|u| u.id == id), "awaited URB vanished");
        }
        if !self.bound {
            assert!(!self.pullup && !self.port.bits.connected);
        }
        if self.port.bits.enabled {
            assert!(self.port.bits.connected && !self.port.bits.resetting);
        }
        assert_eq!(
            self.port.reset_done_at.is_some(),
            self.port.bits.resetting,
            "a reset without its end, or an end without a reset"
        );
        if self.port.resume_done_at.is_some() {
            assert!(
                self.port.bits.suspended,
                "resume signalling on a port not suspended"
            );
        }
    }

    // ----------------------------------------------------------------------------------------
    // Outputs

    /// The next gadget-driver callback; `None` while a SETUP verdict is outstanding. See the
    /// module doc.
    #[must_use]
    pub fn poll_gadget_event(&mut self) -> Option<GadgetEvent> {
        if self.verdict_outstanding {
            return None;
        }
        let ev = self.gadget_out.events.pop_front()?;
        if matches!(ev, GadgetEvent::Setup(_)) {
            self.verdict_outstanding = true;
        }
        Some(ev)
    }

    /// The next URB given back to the host.
    #[must_use]
    pub fn poll_urb_completion(&mut self) -> Option<UrbCompletion> {
        self.urbs_done.pop_front()
    }

    // ----------------------------------------------------------------------------------------
    // Host-side inputs

    /// `dummy_urb_enqueue`: queue a URB. It is worked on at once if it can be.
    pub fn submit_urb(&mut self, now: Instant, urb: Urb) -> UrbId {
        self.advance_clock(now);
        let id = UrbId(self.next_urb);
        self.next_urb += 1;
        let new_control = matches!(urb.kind, UrbKind::Control { .. });
        // transfer_buffer_length; a buffer longer than 4 GiB is cut (URBs are < INT_MAX)
        let mut buffer = urb.buffer;
        buffer.truncate(u32::MAX as usize);
        self.urbs.push_back(UrbState {
            id,
            endpoint: urb.endpoint,
            kind: urb.kind,
            length: buffer.len() as u32,
            buffer,
            actual: 0,
            flags: urb.flags,
            new_control,
            unlinked: None,
            iso_due: None,
            iso_next: 0,
            iso_wait_until: None,
        });
        self.run();
        id
    }

    /// `usb_hcd_unlink_urb`: the URB is given back at the next opportunity with ECONNRESET
    /// (async) or ENOENT (kill), keeping the `actual_length` it reached. The gadget's requests
    /// are not touched (contract D26).
    ///
    /// # Errors
    /// EIDRM when the URB is not pending (never submitted or already given back), EBUSY when
    /// it is already being unlinked (`usb_hcd_check_unlink_urb`).
    pub fn unlink_urb(&mut self, now: Instant, id: UrbId, how: Unlink) -> Result<(), Errno> {
        self.advance_clock(now);
        let urb = self.urbs.iter_mut().find(|u| u.id == id).ok_or(EIDRM)?;
        if urb.unlinked.is_some() {
            return Err(Errno::EBUSY);
        }
        urb.unlinked = Some(how.status());
        self.run();
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Gadget-side inputs besides the Udc trait

    /// The gadget driver's answer to the last [`GadgetEvent::Setup`]: `Ok` continues the
    /// control transfer like bulk (contract D18), `Err` stalls it (EPIPE, `actual_length` 0;
    /// contract D16). Ignored unless a SETUP was polled and not yet answered.
    pub fn handle_setup_verdict(&mut self, verdict: Result<(), Errno>) {
        if !self.verdict_outstanding {
            return;
        }
        self.verdict_outstanding = false;
        let Some(id) = self.awaiting_setup.take() else {
            return;
        };
        if let Err(e) = verdict {
            tracing::debug!(errno = ?e, "gadget refused SETUP: stall");
            if let Some(i) = self.urbs.iter().position(|u| u.id == id) {
                self.urbs[i].actual = 0;
                self.giveback_urb(i, Err(Errno::EPIPE));
            }
        }
        self.run();
    }

    // ----------------------------------------------------------------------------------------
    // Internals

    fn advance_clock(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    fn ep_index(&self, ep: EpId) -> Option<usize> {
        let k = match ep {
            EpId::Ep0 => 0,
            EpId::Ep(i) => usize::from(i) + 1,
        };
        (k < self.eps.len()).then_some(k)
    }

    /// `find_endpoint`: nothing while the port is not active or no driver is bound
    /// (contract D24); ep0 for both directions; otherwise the first enabled endpoint whose
    /// descriptor has this exact address, direction included (contract U6).
    fn find_endpoint(&self, address: u8) -> Option<usize> {
        let b = self.port.bits;
        let active = b.connected && b.enabled && !b.suspended;
        if !active || !self.bound {
            return None;
        }
        if address & 0x7f == 0 {
            return Some(0);
        }
        (1..self.eps.len()).find(|&k| self.eps[k].address() == Some(address))
    }

    /// `stop_activity`: address 0 and every request on every endpoint ended with ESHUTDOWN,
    /// FIFO data included (contract D27, D30).
    fn stop_activity(&mut self) {
        self.address = 0;
        for k in 0..self.eps.len() {
            self.nuke(k);
        }
    }

    /// `nuke`: every request of one endpoint ends with ESHUTDOWN.
    fn nuke(&mut self, k: usize) {
        let ep = &mut self.eps[k];
        while let Some(req) = ep.queue.pop_front() {
            self.gadget_out.giveback(ep.id, req, Err(Errno::ESHUTDOWN));
        }
    }

    /// Gives URB `i` back and forgets it. An unlink status overrides `status`
    /// (`usb_hcd_giveback_urb`).
    fn giveback_urb(&mut self, i: usize, status: Result<(), Errno>) {
        let Some(u) = self.urbs.remove(i) else {
            return;
        };
        let status = match u.unlinked {
            Some(e) => Err(e),
            None => status,
        };
        let iso_packets = match u.kind {
            UrbKind::Isochronous { packets } => packets,
            _ => Vec::new(),
        };
        tracing::trace!(
            urb = u.id.0,
            ep = u.endpoint,
            ?status,
            actual = u.actual,
            "giveback"
        );
        self.urbs_done.push_back(UrbCompletion {
            id: u.id,
            endpoint: u.endpoint,
            status,
            actual_length: u.actual,
            buffer: u.buffer,
            iso_packets,
        });
    }

    /// One `dummy_timer` pass: walk the URBs in submission order and work on each endpoint's
    /// oldest one. Paused while a SETUP verdict is outstanding.
    fn run(&mut self) {
        if self.awaiting_setup.is_some() {
            return;
        }
        // dummy's `already_seen`, kept by URB address: the URBs queued behind an endpoint's
        // head are passed over without resolving their endpoint again (usbtest case 10 keeps
        // 32 control URBs on ep0, and the walk runs on every submit and every ep0 request)
        let mut seen = SeenEndpoints::default();
        'restart: loop {
            let mut i = 0;
            while i < self.urbs.len() {
                let urb = &self.urbs[i];
                let (address, unlinked) = (urb.endpoint, urb.unlinked.is_some());
                // contract D26: an unlinked URB goes back with its unlink status
                if unlinked {
                    self.giveback_urb(i, Ok(()));
                    continue 'restart;
                }
                // one URB per endpoint at a time keeps them in order (contract D14, U8)
                if seen.contains(address) {
                    i += 1;
                    continue;
                }
                // contract D24: no endpoint (not enabled, port not active) is EPROTO
                let Some(k) = self.find_endpoint(address) else {
                    tracing::debug!(ep = address, "no endpoint for URB: EPROTO");
                    self.giveback_urb(i, Err(Errno::EPROTO));
                    continue 'restart;
                };
                seen.insert(address);
                if k == 0 && self.urbs[i].new_control {
                    self.eps[0].setup_stage = true;
                    self.urbs[i].new_control = false;
                }
                // contract D25, D17: a halted endpoint fails its URBs; a new SETUP is exempt
                if self.eps[k].halted && !self.eps[k].setup_stage {
                    self.giveback_urb(i, Err(Errno::EPIPE));
                    seen.remove(address);
                    self.eps[k].setup_stage = false;
                    continue 'restart;
                }
                if k == 0 && self.eps[0].setup_stage {
                    // contract D15: a request still queued on ep0 is stale
                    if let Some(stale) = self.eps[0].queue.pop_front() {
                        tracing::debug!("stale ep0 request: EOVERFLOW");
                        self.gadget_out
                            .giveback(EpId::Ep0, stale, Err(Errno::EOVERFLOW));
                        seen.remove(address);
                        continue 'restart;
                    }
                    self.eps[0].setup_stage = false;
                    // contract D17: the next SETUP clears the ep0 halt
                    self.eps[0].halted = false;
                    let UrbKind::Control { setup } = &self.urbs[i].kind else {
                        // a non-control URB to ep0: dummy would read a NULL setup packet;
                        // the model stalls it instead
                        self.giveback_urb(i, Err(Errno::EPIPE));
                        seen.remove(address);
                        continue 'restart;
                    };
                    let setup = *setup;
                    match self.handle_control_request(i, setup) {
                        Handled::Done(status) => {
                            if status.is_err() {
                                self.urbs[i].actual = 0;
                            }
                            self.giveback_urb(i, status);
                            seen.remove(address);
                            continue 'restart;
                        }
                        Handled::ToGadget => {
                            // contract D14, D23: the head URB's SETUP goes to the gadget
                            self.awaiting_setup = Some(self.urbs[i].id);
                            self.gadget_out.events.push_back(GadgetEvent::Setup(setup));
                            return;
                        }
                    }
                }
                let status = match &self.urbs[i].kind {
                    UrbKind::Isochronous { .. } => match self.personality.iso {
                        IsoRule::Reject => Some(Err(Errno::EINVAL)),
                        // contract I5, I6: packet slots on time, never a NAK
                        IsoRule::Schedule => {
                            let period = self.iso_period(k);
                            let grace = self.personality.iso_grace;
                            let (eps, urbs, out) =
                                (&mut self.eps, &mut self.urbs, &mut self.gadget_out);
                            iso::service(&mut eps[k], &mut urbs[i], out, self.now, period, grace)
                        }
                    },
                    // contract D12: interrupt is serviced like bulk; control data stages too
                    // (contract D18)
                    _ => {
                        let (eps, urbs, out) =
                            (&mut self.eps, &mut self.urbs, &mut self.gadget_out);
                        transfer::transfer(&mut eps[k], &mut urbs[i], out)
                    }
                };
                match status {
                    None => i += 1,
                    Some(s) => {
                        self.giveback_urb(i, s);
                        seen.remove(address);
                        self.eps[k].setup_stage = false;
                        continue 'restart;
                    }
                }
            }
            break;
        }
    }

    /// The service period of endpoint `k` (contract I5); ep0 and non-iso endpoints have none
    /// that matters, and get one frame.
    fn iso_period(&self, k: usize) -> core::time::Duration {
        match self.eps[k].desc {
            Some(desc) => iso::period(self.speed, &desc),
            None => core::time::Duration::from_millis(1),
        }
    }

    /// The earliest packet slot or end of an iso URB at the head of its endpoint
    /// (contract I5), for [`Controller::poll_timeout`].
    pub(super) fn iso_deadline(&self) -> Option<Instant> {
        if self.personality.iso != IsoRule::Schedule {
            return None;
        }
        self.urbs
            .iter()
            .filter(|u| u.unlinked.is_none() && self.find_endpoint(u.endpoint).is_some())
            .filter_map(iso::deadline)
            .min()
    }
}

/// The endpoints a scheduler walk has looked at, by the address of their URBs: an address
/// names at most one endpoint (`find_endpoint`), and ep0's two directions name ep0. Endpoints
/// do not change during a walk, so an address in the set was resolved earlier in it.
#[derive(Default)]
struct SeenEndpoints([u64; 4]);

impl SeenEndpoints {
    fn key(address: u8) -> (usize, u64) {
        let a = if address & 0x7f == 0 { 0 } else { address };
        (usize::from(a >> 6), 1 << (a & 63))
    }
    fn contains(&self, address: u8) -> bool {
        let (word, bit) = Self::key(address);
        self.0[word] & bit != 0
    }
    fn insert(&mut self, address: u8) {
        let (word, bit) = Self::key(address);
        self.0[word] |= bit;
    }
    fn remove(&mut self, address: u8) {
        let (word, bit) = Self::key(address);
        self.0[word] &= !bit;
    }
}

impl Endpoint {
    fn new(id: EpId, name: String) -> Endpoint {
        Endpoint {
            id,
            name,
            desc: None,
            maxpacket: 0,
            halted: false,
            wedged: false,
            setup_stage: false,
            iso_streaming: false,
            queue: VecDeque::new(),
        }
    }
}

impl Udc for Controller {
    /// `usb_gadget_register_driver` on this controller: name match (contract D2), speed
    /// negotiation (D3), ep0 maxpacket (D4), pull-up on.
    fn bind(
        &mut self,
        driver_name: &[u8],
        device_name: &[u8],
        max_speed: Speed,
    ) -> Result<Binding, Errno> {
        // contract D2: the UDC core finds no free UDC with that name: EBUSY
        if self.bound
            || driver_name != self.personality.driver_name.as_bytes()
            || device_name != self.device_name.as_bytes()
        {
            return Err(Errno::EBUSY);
        }
        // contract D3: usb_gadget_udc_set_speed
        let speed = if max_speed == Speed::Unknown {
            self.personality.max_speed
        } else {
            max_speed.min(self.personality.max_speed)
        };
        // dummy_udc_start accepts LS, FS, HS, SS only
        if !matches!(speed, Speed::Low | Speed::Full | Speed::High | Speed::Super) {
            return Err(Errno::EINVAL);
        }
        self.speed = speed;
        // contract D4: dummy_udc_update_ep0
        self.eps[0].maxpacket = if speed == Speed::Super {
            self.personality.ep0_maxpacket(Speed::Super)
        } else {
            64
        };
        self.devstatus = 0;
        self.configured = false;
        self.bound = true;
        self.pullup = true;
        tracing::debug!(device = %self.device_name, ?speed, "gadget bound, pull-up on");
        self.set_link_state();
        self.run();
        Ok(Binding {
            endpoints: self.personality.endpoints.clone(),
            max_speed: self.personality.max_speed,
        })
    }

    /// `usb_gadget_unregister_driver`: pull-up off (SUSPEND may be reported by the link
    /// logic), DISCONNECT, then `udc_stop` nukes every request (contract D30). Enabled
    /// endpoints stay enabled until the gadget disables them, as on dummy.
    fn unbind(&mut self) {
        if !self.bound {
            return;
        }
        self.pullup = false;
        self.set_link_state();
        // usb_gadget_disconnect: the UDC core calls ->disconnect
        self.gadget_out
            .events
            .push_back(GadgetEvent::Bus(BusEvent::Disconnect));
        self.stop_activity();
        self.bound = false;
        self.configured = false;
        self.run();
    }

    /// `dummy_enable` (contract D6): EINVAL checks on the descriptor, ESHUTDOWN without a
    /// driver or an enabled port, then the type/name/speed checks. Success clears halt and
    /// wedge.
    fn ep_enable(&mut self, ep: u16, desc: &[u8; 9]) -> Result<(), Errno> {
        let k = usize::from(ep) + 1;
        if k >= self.eps.len() || self.eps[k].desc.is_some() || desc[1] != enable::USB_DT_ENDPOINT {
            return Err(Errno::EINVAL);
        }
        if !self.bound || !self.port.bits.enabled {
            return Err(Errno::ESHUTDOWN);
        }
        let max = enable::check_descriptor(
            self.personality.enable_rules,
            &self.eps[k].name,
            self.speed,
            desc,
        )?;
        let e = &mut self.eps[k];
        e.maxpacket = max;
        e.desc = Some(*desc);
        e.halted = false;
        e.wedged = false;
        e.iso_streaming = false;
        self.run();
        Ok(())
    }

    /// `dummy_disable`: its requests end with ESHUTDOWN (FIFO data silently, contract D13);
    /// its pending URBs then fail with EPROTO (contract D24).
    fn ep_disable(&mut self, ep: u16) -> Result<(), Errno> {
        let k = usize::from(ep) + 1;
        if k >= self.eps.len() || self.eps[k].desc.is_none() {
            return Err(Errno::EINVAL);
        }
        self.eps[k].desc = None;
        self.eps[k].iso_streaming = false;
        self.nuke(k);
        self.run();
        Ok(())
    }

    /// `dummy_queue`: ESHUTDOWN before the port is enabled (contract D7); the IN FIFO
    /// completes small IN requests at once (contract D13).
    fn queue(&mut self, ep: EpId, req: Request) -> Result<(), (Errno, Request)> {
        let Some(k) = self.ep_index(ep) else {
            return Err((Errno::EINVAL, req));
        };
        if k != 0 && self.eps[k].desc.is_none() {
            return Err((Errno::EINVAL, req));
        }
        // contract D7
        if !self.bound || !self.port.bits.enabled {
            return Err((Errno::ESHUTDOWN, req));
        }
        let length = req.length.min(req.buf.len() as u32);
        let e = &mut self.eps[k];
        // contract D13: an emulated single-request FIFO for small IN requests
        let fifo_fits = self.personality.in_fifo.is_some_and(|n| length <= n);
        if k != 0 && e.is_in() && fifo_fits && !self.gadget_out.fifo_busy && e.queue.is_empty() {
            self.gadget_out.fifo_busy = true;
            e.queue.push_back(QueuedReq {
                id: None,
                buf: req.buf[..length as usize].to_vec(),
                length,
                actual: 0,
                zero: req.zero,
            });
            // the gadget's request completes at once, before the host reads the data
            self.gadget_out
                .events
                .push_back(GadgetEvent::Completion(Completion {
                    ep,
                    id: req.id,
                    status: Ok(()),
                    actual: length,
                    buf: req.buf,
                }));
        } else {
            e.queue.push_back(QueuedReq {
                id: Some(req.id),
                buf: req.buf,
                length,
                actual: 0,
                zero: req.zero,
            });
        }
        self.run();
        Ok(())
    }

    /// `dummy_dequeue`: a request still queued ends with ECONNRESET and what it had moved
    /// (contract D31).
    fn dequeue(&mut self, ep: EpId, id: RequestId) -> Option<Completion> {
        if !self.bound {
            return None; // ESHUTDOWN
        }
        let k = self.ep_index(ep)?;
        let pos = self.eps[k].queue.iter().position(|r| r.id == Some(id))?;
        let req = self.eps[k].queue.remove(pos)?;
        let c = Completion {
            ep,
            id,
            status: Err(Errno::ECONNRESET),
            actual: req.actual,
            buf: req.buf,
        };
        self.run();
        Some(c)
    }

    /// `dummy_set_halt`: clearing also clears the wedge (contract D25); halting an IN
    /// endpoint with queued data is EAGAIN (contract D13). On ep0 this is the protocol stall
    /// of EP0_STALL (contract D17).
    fn set_halt(&mut self, ep: EpId, halt: bool) -> Result<(), Errno> {
        self.set_halt_and_wedge(ep, halt, false)
    }

    /// `dummy_set_wedge`: halt, and CLEAR_FEATURE from the host will not clear it
    /// (contract D22).
    fn set_wedge(&mut self, ep: u16) -> Result<(), Errno> {
        self.set_halt_and_wedge(EpId::Ep(ep), true, true)
    }

    fn vbus_draw(&mut self, ma: u32) {
        self.vbus_draw_ma = ma;
    }

    fn set_configured(&mut self) {
        self.configured = true;
    }
}

impl Controller {
    /// `dummy_set_halt_and_wedge`.
    fn set_halt_and_wedge(&mut self, ep: EpId, halt: bool, wedge: bool) -> Result<(), Errno> {
        let k = self.ep_index(ep).ok_or(Errno::EINVAL)?;
        if !self.bound {
            return Err(Errno::ESHUTDOWN);
        }
        let e = &mut self.eps[k];
        if !halt {
            e.halted = false;
            e.wedged = false;
        } else if e.is_in() && !e.queue.is_empty() {
            // contract D13: IN data is still queued (under raw gadget: FIFO data)
            return Err(Errno::EAGAIN);
        } else {
            e.halted = true;
            if wedge {
                e.wedged = true;
            }
        }
        self.run();
        Ok(())
    }
}
