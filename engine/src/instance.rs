//! One Raw Gadget instance: what `struct raw_dev` and the ioctl handlers of `raw_gadget.c` do.
//!
//! Read spec §1.5 (per-ioctl semantics and errno order) and §2 (states, ep0 flags, event
//! queue) before editing; every arm cites the rule it implements. The order of checks inside
//! each ioctl is part of the interface: the first failing check decides the errno.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use rawgadget_uapi::{
    driver::{RAW_EVENT_QUEUE_SIZE, USB_RAW_IO_LENGTH_MAX},
    event_type, usb_raw_io_flags_valid, usb_raw_io_flags_zero, Errno, Speed, UsbRawEpInfo,
    UsbRawEpIo, UsbRawEpLimits, UsbRawEpsInfo, UsbRawEvent, UsbRawInit, UDC_NAME_LENGTH_MAX,
    USB_RAW_EPS_NUM_MAX, USB_RAW_EP_ADDR_ANY, USB_RAW_EP_NAME_MAX,
};

use rawgadget_usb::TransferType;

use crate::ep_match::{ep_desc, ep_match_desc};
use crate::op::{BusEvent, ClientOp, OpCompletion, OpId, OpResult, Outcome, Payload};
use crate::udc::{Completion, EpId, Request, RequestId, Udc, UdcEndpoint};

/// Instance states (spec §2.1, `enum dev_state`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    /// After open. Only INIT is legal.
    Opened,
    /// After INIT. Only RUN is legal.
    Initialized,
    /// Inside RUN while binding; refuses a concurrent RUN. Not observable by a single-threaded
    /// driver of this engine, kept because the kernel has it.
    Registering,
    /// Bound to a controller; every other ioctl is legal.
    Running,
    /// After release.
    Closed,
    /// Terminal: RUN failed, or an event could not be queued. Everything gated on RUNNING
    /// returns EINVAL and new SETUPs are refused.
    Failed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Opened => "STATE_DEV_OPENED",
            State::Initialized => "STATE_DEV_INITIALIZED",
            State::Registering => "STATE_DEV_REGISTERING",
            State::Running => "STATE_DEV_RUNNING",
            State::Closed => "STATE_DEV_CLOSED",
            State::Failed => "STATE_DEV_FAILED",
        })
    }
}

/// Endpoint slot states (spec §2.2). The kernel's transient `disabling` flag is never
/// observable here: [`Udc::ep_disable`] is synchronous and the engine is not re-entered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EpState {
    Disabled,
    /// Enabled with this 9-byte descriptor (the kernel keeps its own copy).
    Enabled([u8; 9]),
}

/// Which direction the unanswered SETUP expects (spec §2.3 `ep0_in_pending` /
/// `ep0_out_pending`). An enum, so the kernel's "both set" WARN paths cannot happen.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ep0Pending {
    None,
    /// `bRequestType & USB_DIR_IN` and `wLength > 0`: answer with EP0_WRITE.
    In,
    /// Everything else, zero-length IN requests included: answer with EP0_READ.
    Out,
}

/// The one request an endpoint (or ep0) may have in flight.
#[derive(Debug)]
struct InFlight {
    op: OpId,
    req: RequestId,
    /// EP0_READ / EP_READ: the result copies data back.
    read: bool,
    /// `io.length` of the ioctl.
    length: u32,
    /// The caller was signalled: a ECONNRESET completion becomes EINTR (spec §1.5, 6.7).
    interrupted: bool,
    /// An EP_READ whose buffer the engine supplied (the caller handed over none): it may
    /// go back to [`Instance::read_spares`] once the data is copied out.
    spare: bool,
}

#[derive(Debug)]
struct EpSlot {
    udc: UdcEndpoint,
    /// `get_ep_addr(name)`: a fixed number or `USB_RAW_EP_ADDR_ANY`.
    addr: u8,
    state: EpState,
    in_flight: Option<InFlight>,
}

#[derive(Debug)]
struct QueuedEvent {
    type_: u32,
    /// Only CONTROL has a payload: the 8-byte SETUP.
    data: Option<[u8; 8]>,
}

/// One open of `/dev/raw-gadget` (`struct raw_dev`). See the crate doc for inputs and outputs.
///
/// Polling order for a driver: after every input, drain [`Instance::poll_completion`] until it
/// returns `None`; results are delivered in the order the operations finished.
#[derive(Debug)]
pub struct Instance {
    state: State,
    /// `dev->udc_name`: the UDC driver name from INIT, without its NUL.
    udc_driver_name: Vec<u8>,
    /// `dev->driver.udc_name`: the UDC device name from INIT, without its NUL.
    udc_device_name: Vec<u8>,
    /// `dev->driver.max_speed`.
    driver_speed: Speed,
    /// `dev->gadget != NULL`: bound at least once.
    bound: bool,
    /// `dev->gadget_registered`.
    registered: bool,
    /// `gadget->max_speed` of the bound controller.
    udc_max_speed: Speed,
    events: VecDeque<QueuedEvent>,
    /// EVENT_FETCH callers waiting for an event, in arrival order, with their payload room.
    fetchers: VecDeque<(OpId, u32)>,
    ep0_pending: Ep0Pending,
    ep0_in_flight: Option<InFlight>,
    eps: Vec<EpSlot>,
    completions: VecDeque<OpCompletion>,
    next_op: u64,
    next_req: u64,
    /// Buffers of finished EP_READs, for the next EP_READ whose caller hands over no buffer.
    /// A read needs `length` bytes of room, which a fresh buffer must zero first; a sink
    /// whose 32 KiB requests each receive one 1 KiB URB spent more on zeroing than on the
    /// transfer (usbtest case 24 under emulation). Their stale bytes never leave: a read
    /// returns only what it received.
    read_spares: Vec<Vec<u8>>,
}

/// Most buffers [`Instance::read_spares`] keeps, and the largest it keeps.
const READ_SPARES: usize = 4;
const READ_SPARE_MAX: usize = 1 << 20;

impl Default for Instance {
    fn default() -> Self {
        Self::new()
    }
}

impl Instance {
    /// `raw_open`: a fresh instance in [`State::Opened`].
    pub fn new() -> Instance {
        Instance {
            state: State::Opened,
            udc_driver_name: Vec::new(),
            udc_device_name: Vec::new(),
            driver_speed: Speed::High,
            bound: false,
            registered: false,
            udc_max_speed: Speed::Unknown,
            events: VecDeque::new(),
            fetchers: VecDeque::new(),
            ep0_pending: Ep0Pending::None,
            ep0_in_flight: None,
            eps: Vec::new(),
            completions: VecDeque::new(),
            next_op: 1,
            next_req: 1,
            read_spares: Vec::new(),
        }
    }

    // ----------------------------------------------------------------------------------------
    // Getters

    pub fn state(&self) -> State {
        self.state
    }
    /// The speed INIT asked for (UNKNOWN already replaced by HIGH).
    pub fn driver_speed(&self) -> Speed {
        self.driver_speed
    }
    /// The UDC driver and device names INIT gave.
    pub fn udc_names(&self) -> (&[u8], &[u8]) {
        (&self.udc_driver_name, &self.udc_device_name)
    }
    pub fn ep0_pending(&self) -> Ep0Pending {
        self.ep0_pending
    }
    /// Events queued and not yet fetched.
    pub fn queued_events(&self) -> usize {
        self.events.len()
    }
    /// Number of endpoint slots captured at bind.
    pub fn eps_num(&self) -> usize {
        self.eps.len()
    }
    pub fn ep_state(&self, handle: u16) -> Option<EpState> {
        self.eps.get(handle as usize).map(|e| e.state)
    }
    /// Whether a client operation is blocked in the engine.
    pub fn is_pending(&self, op: OpId) -> bool {
        self.fetchers.iter().any(|(o, _)| *o == op)
            || self.ep0_in_flight.as_ref().is_some_and(|f| f.op == op)
            || self
                .eps
                .iter()
                .any(|e| e.in_flight.as_ref().is_some_and(|f| f.op == op))
    }

    /// Checks the structural invariants; used by tests and fuzzing.
    ///
    /// # Panics
    /// When one does not hold: that is an engine bug.
    pub fn assert_invariants(&self) {
        assert!(
            self.events.len() <= RAW_EVENT_QUEUE_SIZE,
            "event queue over 16"
        );
        assert!(
            self.fetchers.is_empty() || self.events.is_empty(),
            "a fetcher waits while events are queued"
        );
        assert!(self.eps.len() <= USB_RAW_EPS_NUM_MAX);
        for ep in &self.eps {
            if ep.in_flight.is_some() {
                assert!(
                    matches!(ep.state, EpState::Enabled(_)),
                    "transfer on a disabled endpoint"
                );
            }
        }
        if self.ep0_in_flight.is_some() {
            assert!(
                self.ep0_pending != Ep0Pending::None,
                "ep0 request without a SETUP"
            );
        }
        if !matches!(self.state, State::Running | State::Failed | State::Closed) {
            assert!(self.eps.is_empty() && self.ep0_in_flight.is_none());
        }
    }

    // ----------------------------------------------------------------------------------------
    // Outputs

    /// The next result of a blocked operation, in completion order.
    #[must_use]
    pub fn poll_completion(&mut self) -> Option<OpCompletion> {
        self.completions.pop_front()
    }

    // ----------------------------------------------------------------------------------------
    // Inputs from the controller

    /// The gadget driver's `->setup` (`gadget_setup`). `Err` makes the controller stall the
    /// control transfer; the client never sees that SETUP (contract D16).
    pub fn handle_setup(&mut self, ctrl: [u8; 8]) -> Result<(), Errno> {
        // spec §2.3: refused unless RUNNING
        if self.state != State::Running {
            return Err(Errno::ENODEV);
        }
        // contract D16: a second SETUP while one is unanswered is refused
        if self.ep0_pending != Ep0Pending::None {
            return Err(Errno::EBUSY);
        }
        let w_length = u16::from_le_bytes([ctrl[6], ctrl[7]]);
        // spec §1.5 direction rule: IN pending only if DIR_IN and wLength > 0
        self.ep0_pending = if ctrl[0] & 0x80 != 0 && w_length != 0 {
            Ep0Pending::In
        } else {
            Ep0Pending::Out
        };
        // The pending flag stays set even if queueing fails, as in the kernel.
        self.queue_event(event_type::USB_RAW_EVENT_CONTROL, Some(ctrl))
    }

    /// `->reset`, `->suspend`, `->resume`, `->disconnect`: queue the event (spec §1.2, since
    /// 6.7). A full queue moves the instance to FAILED (spec §2.4).
    pub fn handle_bus(&mut self, ev: BusEvent) {
        if self.state == State::Closed {
            // After release nobody reads events (contract D30).
            return;
        }
        let t = match ev {
            BusEvent::Reset => event_type::USB_RAW_EVENT_RESET,
            BusEvent::Suspend => event_type::USB_RAW_EVENT_SUSPEND,
            BusEvent::Resume => event_type::USB_RAW_EVENT_RESUME,
            BusEvent::Disconnect => event_type::USB_RAW_EVENT_DISCONNECT,
        };
        let _ = self.queue_event(t, None);
    }

    /// A request's `->complete` (`gadget_ep0_complete` / `gadget_ep_complete`). Completions that
    /// match no request in flight (after close, or stale) are dropped.
    pub fn handle_completion(&mut self, c: Completion) {
        if self.state == State::Closed {
            return;
        }
        match c.ep {
            EpId::Ep0 => {
                let Some(f) = self.ep0_in_flight.take_if(|f| f.req == c.id) else {
                    return;
                };
                // gadget_ep0_complete clears the pending flag whatever the status
                self.ep0_pending = Ep0Pending::None;
                self.finish_transfer(f, c);
            }
            EpId::Ep(i) => {
                let Some(slot) = self.eps.get_mut(i as usize) else {
                    return;
                };
                let Some(f) = slot.in_flight.take_if(|f| f.req == c.id) else {
                    return;
                };
                self.finish_transfer(f, c);
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Inputs from the client

    /// One ioctl (spec §1.5). Blocking ioctls return [`Outcome::Pending`]; their result comes
    /// out of [`Instance::poll_completion`].
    pub fn handle_client<U: Udc + ?Sized>(&mut self, udc: &mut U, op: ClientOp) -> Outcome {
        match op {
            ClientOp::Init(init) => Outcome::Done(self.ioctl_init(&init)),
            ClientOp::Run { arg } => Outcome::Done(self.ioctl_run(udc, arg)),
            ClientOp::EventFetch { capacity } => self.ioctl_event_fetch(capacity),
            ClientOp::Ep0Write { io, data } => self.ioctl_ep0_io(udc, io, data, true),
            ClientOp::Ep0Read { io, buf } => self.ioctl_ep0_io(udc, io, buf, false),
            ClientOp::EpEnable { desc } => Outcome::Done(self.ioctl_ep_enable(udc, desc)),
            ClientOp::EpDisable { arg } => Outcome::Done(self.ioctl_ep_disable(udc, arg)),
            ClientOp::EpWrite { io, data } => self.ioctl_ep_io(udc, io, data, true),
            ClientOp::EpRead { io, buf } => self.ioctl_ep_io(udc, io, buf, false),
            ClientOp::Configure { arg } => Outcome::Done(self.ioctl_configure(udc, arg)),
            ClientOp::VbusDraw { arg } => Outcome::Done(self.ioctl_vbus_draw(udc, arg)),
            ClientOp::EpsInfo => Outcome::Done(self.ioctl_eps_info()),
            ClientOp::Ep0Stall { arg } => Outcome::Done(self.ioctl_ep0_stall(udc, arg)),
            ClientOp::EpSetHalt { arg } => {
                Outcome::Done(self.ioctl_halt_wedge(udc, arg, HaltOp::SetHalt))
            }
            ClientOp::EpClearHalt { arg } => {
                Outcome::Done(self.ioctl_halt_wedge(udc, arg, HaltOp::ClearHalt))
            }
            ClientOp::EpSetWedge { arg } => {
                Outcome::Done(self.ioctl_halt_wedge(udc, arg, HaltOp::SetWedge))
            }
        }
    }

    /// A signal reached the thread blocked in `op` (spec §1.5, "properly handle interrupted
    /// requests", 6.7). EVENT_FETCH returns EINTR and loses no event. A transfer is dequeued:
    /// EINTR if it was still queued, its normal result if it had already completed (contract
    /// D31, C9). Unknown or finished operations are ignored.
    pub fn cancel<U: Udc + ?Sized>(&mut self, udc: &mut U, op: OpId) {
        if let Some(pos) = self.fetchers.iter().position(|(o, _)| *o == op) {
            self.fetchers.remove(pos);
            self.complete(op, OpResult::err(Errno::EINTR));
            return;
        }
        let target = if let Some(f) = self.ep0_in_flight.as_mut().filter(|f| f.op == op) {
            f.interrupted = true;
            Some((EpId::Ep0, f.req))
        } else {
            self.eps.iter_mut().enumerate().find_map(|(i, e)| {
                let f = e.in_flight.as_mut().filter(|f| f.op == op)?;
                f.interrupted = true;
                Some((EpId::Ep(i as u16), f.req))
            })
        };
        if let Some((ep, req)) = target {
            if let Some(c) = udc.dequeue(ep, req) {
                self.handle_completion(c);
            }
        }
    }

    /// `raw_release`: unbind from the controller and free everything (spec §2.6).
    ///
    /// The kernel cannot release while an ioctl runs; our front-ends can get here with callers
    /// still blocked (a daemon tearing down a killed client), so every blocked operation
    /// completes with ESHUTDOWN.
    pub fn close<U: Udc + ?Sized>(&mut self, udc: &mut U) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        if !self.bound {
            self.fail_blocked();
            return;
        }
        if self.registered {
            self.registered = false;
            udc.unbind();
        }
        // dev_free: dequeue ep0's request, disable every enabled endpoint
        if let Some(f) = &self.ep0_in_flight {
            let _ = udc.dequeue(EpId::Ep0, f.req);
        }
        for i in 0..self.eps.len() {
            if let Some(f) = &self.eps[i].in_flight {
                let _ = udc.dequeue(EpId::Ep(i as u16), f.req);
            }
            if matches!(self.eps[i].state, EpState::Enabled(_)) {
                let _ = udc.ep_disable(i as u16);
                self.eps[i].state = EpState::Disabled;
            }
        }
        self.events.clear();
        self.fail_blocked();
    }

    // ----------------------------------------------------------------------------------------
    // Internals

    fn fail_blocked(&mut self) {
        while let Some((op, _)) = self.fetchers.pop_front() {
            self.complete(op, OpResult::err(Errno::ESHUTDOWN));
        }
        if let Some(f) = self.ep0_in_flight.take() {
            self.complete(f.op, OpResult::err(Errno::ESHUTDOWN));
        }
        for i in 0..self.eps.len() {
            if let Some(f) = self.eps[i].in_flight.take() {
                self.complete(f.op, OpResult::err(Errno::ESHUTDOWN));
            }
        }
    }

    fn new_op(&mut self) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        id
    }

    fn new_req(&mut self) -> RequestId {
        let id = RequestId(self.next_req);
        self.next_req += 1;
        id
    }

    fn complete(&mut self, op: OpId, result: OpResult) {
        self.completions.push_back(OpCompletion { op, result });
    }

    /// `raw_queue_event`: on overflow the instance becomes FAILED (spec §2.4).
    fn queue_event(&mut self, type_: u32, data: Option<[u8; 8]>) -> Result<(), Errno> {
        if let Some((op, capacity)) = self.fetchers.pop_front() {
            // A waiter takes it at once: the queue never holds it.
            let result = event_result(type_, data, capacity);
            self.complete(op, result);
            return Ok(());
        }
        if self.events.len() >= RAW_EVENT_QUEUE_SIZE {
            self.state = State::Failed;
            return Err(Errno::ENOMEM);
        }
        self.events.push_back(QueuedEvent { type_, data });
        Ok(())
    }

    /// The checks every handler repeats (spec §1.5 "General preconditions").
    fn check_running(&self) -> Result<(), Errno> {
        if self.state != State::Running {
            return Err(Errno::EINVAL);
        }
        if !self.bound {
            return Err(Errno::EBUSY);
        }
        Ok(())
    }

    /// spec §1.5 INIT.
    fn ioctl_init(&mut self, init: &UsbRawInit) -> OpResult {
        use rawgadget_uapi::speed::*;
        let speed = match init.speed {
            // UNKNOWN is silently replaced by HIGH
            USB_SPEED_UNKNOWN => Speed::High,
            USB_SPEED_LOW | USB_SPEED_FULL | USB_SPEED_HIGH | USB_SPEED_SUPER => {
                Speed::from_u8(init.speed).unwrap_or(Speed::High)
            }
            // WIRELESS, SUPER_PLUS and anything else
            _ => return OpResult::err(Errno::EINVAL),
        };
        // strscpy(.., 128): E2BIG unless NUL-terminated within the array
        let Some(driver) = c_name(&init.driver_name) else {
            return OpResult::err(Errno::E2BIG);
        };
        let Some(device) = c_name(&init.device_name) else {
            return OpResult::err(Errno::E2BIG);
        };
        // INIT works once per fd
        if self.state != State::Opened {
            return OpResult::err(Errno::EINVAL);
        }
        self.udc_driver_name = driver.to_vec();
        self.udc_device_name = device.to_vec();
        self.driver_speed = speed;
        self.state = State::Initialized;
        OpResult::ok(0)
    }

    /// spec §1.5 RUN; contract D2 (EBUSY for wrong names), U4 (CONNECT at RUN).
    fn ioctl_run<U: Udc + ?Sized>(&mut self, udc: &mut U, arg: u64) -> OpResult {
        if arg != 0 {
            return OpResult::err(Errno::EINVAL);
        }
        if self.state != State::Initialized {
            return OpResult::err(Errno::EINVAL);
        }
        self.state = State::Registering;
        let binding = match udc.bind(
            &self.udc_driver_name,
            &self.udc_device_name,
            self.driver_speed,
        ) {
            Ok(b) => b,
            Err(e) => {
                self.state = State::Failed;
                return OpResult::err(e);
            }
        };
        // gadget_bind: snapshot the endpoint list (the kernel assumes at most 30)
        self.bound = true;
        self.udc_max_speed = binding.max_speed;
        self.eps = binding
            .endpoints
            .into_iter()
            .take(USB_RAW_EPS_NUM_MAX)
            .map(|udc| EpSlot {
                addr: ep_addr_from_name(udc.name.as_bytes()),
                udc,
                state: EpState::Disabled,
                in_flight: None,
            })
            .collect();
        if let Err(e) = self.queue_event(event_type::USB_RAW_EVENT_CONNECT, None) {
            // bind fails; registration fails with it
            udc.unbind();
            self.state = State::Failed;
            return OpResult::err(e);
        }
        self.registered = true;
        self.state = State::Running;
        OpResult::ok(0)
    }

    /// spec §1.5 EVENT_FETCH.
    fn ioctl_event_fetch(&mut self, capacity: u32) -> Outcome {
        if let Err(e) = self.check_running() {
            return Outcome::Done(OpResult::err(e));
        }
        if let Some(ev) = self.events.pop_front() {
            return Outcome::Done(event_result(ev.type_, ev.data, capacity));
        }
        let op = self.new_op();
        self.fetchers.push_back((op, capacity));
        Outcome::Pending(op)
    }

    /// spec §1.5 EP0_WRITE / EP0_READ (`raw_alloc_io_data` + `raw_process_ep0_io`).
    fn ioctl_ep0_io<U: Udc + ?Sized>(
        &mut self,
        udc: &mut U,
        io: UsbRawEpIo,
        buf: Vec<u8>,
        write: bool,
    ) -> Outcome {
        let buf = match io_buffer(&io, buf, write) {
            Ok(b) => b,
            Err((e, b)) => return Outcome::Done(err_with(e, b)),
        };
        let in_ = write;
        let check = self.check_running().and_then(|()| {
            if self.ep0_in_flight.is_some() {
                return Err(Errno::EBUSY); // urb already queued
            }
            let matches = match self.ep0_pending {
                Ep0Pending::In => in_,
                Ep0Pending::Out => !in_,
                Ep0Pending::None => false,
            };
            if !matches {
                return Err(Errno::EBUSY); // wrong direction, or no SETUP pending
            }
            Ok(())
        });
        if let Err(e) = check {
            return Outcome::Done(err_with(e, buf));
        }
        let req = Request {
            id: self.new_req(),
            length: io.length,
            buf,
            zero: usb_raw_io_flags_zero(io.flags),
        };
        let req_id = req.id;
        match udc.queue(EpId::Ep0, req) {
            // since 6.7 a queue error leaves the device usable and the SETUP pending
            Err((e, req)) => Outcome::Done(err_with(e, req.buf)),
            Ok(()) => {
                let op = self.new_op();
                self.ep0_in_flight = Some(InFlight {
                    op,
                    req: req_id,
                    read: !write,
                    length: io.length,
                    interrupted: false,
                    spare: false,
                });
                Outcome::Pending(op)
            }
        }
    }

    /// spec §1.5 EP0_STALL.
    fn ioctl_ep0_stall<U: Udc + ?Sized>(&mut self, udc: &mut U, arg: u64) -> OpResult {
        if arg != 0 {
            return OpResult::err(Errno::EINVAL);
        }
        if let Err(e) = self.check_running() {
            return OpResult::err(e);
        }
        if self.ep0_in_flight.is_some() {
            return OpResult::err(Errno::EBUSY);
        }
        if self.ep0_pending == Ep0Pending::None {
            return OpResult::err(Errno::EBUSY);
        }
        let ret = udc.set_halt(EpId::Ep0, true);
        // the pending flag is cleared either way
        self.ep0_pending = Ep0Pending::None;
        match ret {
            Ok(()) => OpResult::ok(0),
            Err(e) => OpResult::err(e),
        }
    }

    /// spec §1.5 EP_ENABLE; contract D5 (first match; EINVAL vs EBUSY; enable error as is).
    fn ioctl_ep_enable<U: Udc + ?Sized>(&mut self, udc: &mut U, desc: [u8; 9]) -> OpResult {
        let view = ep_desc(&desc);
        // zero maxpacket crashes some UDCs
        if view.max_packet() == 0 {
            return OpResult::err(Errno::EINVAL);
        }
        if let Err(e) = self.check_running() {
            return OpResult::err(e);
        }
        let number = view.address().number();
        let mut props_matched = false;
        for i in 0..self.eps.len() {
            let slot = &self.eps[i];
            if slot.addr != number && u32::from(slot.addr) != USB_RAW_EP_ADDR_ANY {
                continue;
            }
            if !ep_match_desc(self.udc_max_speed, &slot.udc, &view) {
                continue;
            }
            props_matched = true;
            if slot.state != EpState::Disabled {
                continue;
            }
            // the first candidate's own enable error is final: no next candidate
            return match udc.ep_enable(i as u16, &desc) {
                Err(e) => OpResult::err(e),
                Ok(()) => {
                    self.eps[i].state = EpState::Enabled(desc);
                    OpResult::ok(i as u32)
                }
            };
        }
        OpResult::err(if props_matched {
            Errno::EBUSY
        } else {
            Errno::EINVAL
        })
    }

    /// Shared checks of EP_DISABLE and the halt trio: `int i = value`, then slot checks.
    fn handle_slot(&self, arg: u64) -> Result<usize, Errno> {
        self.check_running()?;
        let i = arg as u32 as i32; // C: int i = value (unsigned long)
        if i < 0 || i as usize >= self.eps.len() {
            return Err(Errno::EBUSY); // invalid endpoint
        }
        let slot = &self.eps[i as usize];
        if slot.state == EpState::Disabled {
            return Err(Errno::EINVAL);
        }
        if slot.in_flight.is_some() {
            return Err(Errno::EINVAL); // waiting for urb completion
        }
        Ok(i as usize)
    }

    /// spec §1.5 EP_DISABLE.
    fn ioctl_ep_disable<U: Udc + ?Sized>(&mut self, udc: &mut U, arg: u64) -> OpResult {
        let i = match self.handle_slot(arg) {
            Ok(i) => i,
            Err(e) => return OpResult::err(e),
        };
        // raw gadget ignores usb_ep_disable's result
        let _ = udc.ep_disable(i as u16);
        self.eps[i].state = EpState::Disabled;
        OpResult::ok(0)
    }

    /// spec §1.5 EP_SET_HALT / EP_CLEAR_HALT / EP_SET_WEDGE.
    fn ioctl_halt_wedge<U: Udc + ?Sized>(
        &mut self,
        udc: &mut U,
        arg: u64,
        what: HaltOp,
    ) -> OpResult {
        let i = match self.handle_slot(arg) {
            Ok(i) => i,
            Err(e) => return OpResult::err(e),
        };
        if let EpState::Enabled(desc) = self.eps[i].state {
            if ep_desc(&desc).transfer_type() == TransferType::Isochronous {
                return OpResult::err(Errno::EINVAL); // can't halt/wedge ISO endpoint
            }
        }
        let ret = match what {
            HaltOp::SetHalt => udc.set_halt(EpId::Ep(i as u16), true),
            HaltOp::ClearHalt => udc.set_halt(EpId::Ep(i as u16), false),
            HaltOp::SetWedge => udc.set_wedge(i as u16),
        };
        match ret {
            Ok(()) => OpResult::ok(0),
            Err(e) => OpResult::err(e),
        }
    }

    /// spec §1.5 EP_WRITE / EP_READ (`raw_process_ep_io`).
    fn ioctl_ep_io<U: Udc + ?Sized>(
        &mut self,
        udc: &mut U,
        io: UsbRawEpIo,
        buf: Vec<u8>,
        write: bool,
    ) -> Outcome {
        let spare = !write && buf.capacity() == 0;
        let buf = match validate_io_header(&io) {
            Ok(()) if spare => self.spare_read_buffer(io.length as usize),
            _ => buf,
        };
        let buf = match io_buffer(&io, buf, write) {
            Ok(b) => b,
            Err((e, b)) => return Outcome::Done(err_with(e, b)),
        };
        let check = self.check_running().and_then(|()| {
            let slot = self.eps.get(io.ep as usize).ok_or(Errno::EINVAL)?; // invalid endpoint
            let EpState::Enabled(desc) = slot.state else {
                return Err(Errno::EBUSY); // endpoint is not enabled
            };
            if slot.in_flight.is_some() {
                return Err(Errno::EBUSY); // urb already queued
            }
            // the enabled descriptor's direction decides (Jann Horn's 2022 fix)
            if write != ep_desc(&desc).address().is_in() {
                return Err(Errno::EINVAL);
            }
            Ok(())
        });
        if let Err(e) = check {
            return Outcome::Done(err_with(e, self.keep_spare(spare, buf)));
        }
        let req = Request {
            id: self.new_req(),
            length: io.length,
            buf,
            zero: usb_raw_io_flags_zero(io.flags),
        };
        let req_id = req.id;
        match udc.queue(EpId::Ep(io.ep), req) {
            Err((e, req)) => Outcome::Done(err_with(e, self.keep_spare(spare, req.buf))),
            Ok(()) => {
                let op = self.new_op();
                self.eps[io.ep as usize].in_flight = Some(InFlight {
                    op,
                    req: req_id,
                    read: !write,
                    length: io.length,
                    interrupted: false,
                    spare,
                });
                Outcome::Pending(op)
            }
        }
    }

    /// spec §1.5 CONFIGURE.
    fn ioctl_configure<U: Udc + ?Sized>(&mut self, udc: &mut U, arg: u64) -> OpResult {
        if arg != 0 {
            return OpResult::err(Errno::EINVAL);
        }
        if let Err(e) = self.check_running() {
            return OpResult::err(e);
        }
        udc.set_configured();
        OpResult::ok(0)
    }

    /// spec §1.5 VBUS_DRAW: `usb_gadget_vbus_draw(gadget, 2 * value)`, no range check.
    fn ioctl_vbus_draw<U: Udc + ?Sized>(&mut self, udc: &mut U, arg: u64) -> OpResult {
        if let Err(e) = self.check_running() {
            return OpResult::err(e);
        }
        udc.vbus_draw(arg.wrapping_mul(2) as u32);
        OpResult::ok(0)
    }

    /// spec §1.5 EPS_INFO.
    fn ioctl_eps_info(&self) -> OpResult {
        if let Err(e) = self.check_running() {
            return OpResult::err(e);
        }
        let mut info = Box::<UsbRawEpsInfo>::default();
        for (slot, out) in self.eps.iter().zip(info.eps.iter_mut()) {
            // strscpy to 16 bytes: truncated to 15 characters plus NUL
            let name = slot.udc.name.as_bytes();
            let n = name.len().min(USB_RAW_EP_NAME_MAX - 1);
            out.name[..n].copy_from_slice(&name[..n]);
            *out = UsbRawEpInfo {
                name: out.name,
                addr: u32::from(slot.addr),
                caps: slot.udc.caps,
                limits: UsbRawEpLimits {
                    maxpacket_limit: slot.udc.maxpacket_limit,
                    max_streams: slot.udc.max_streams,
                    reserved: 0,
                },
            };
        }
        OpResult {
            ret: Ok(self.eps.len() as u32),
            payload: Payload::EpsInfo(info),
        }
    }

    /// Room for an EP_READ of `length` bytes whose caller handed over no buffer: a kept
    /// spare if one is large enough ([`Instance::read_spares`]), else a new one.
    fn spare_read_buffer(&mut self, length: usize) -> Vec<u8> {
        match self.read_spares.iter().position(|b| b.len() >= length) {
            Some(i) => {
                let mut buf = self.read_spares.swap_remove(i);
                buf.truncate(length);
                buf
            }
            None => Vec::new(),
        }
    }

    /// Keeps an engine-supplied read buffer (`spare`) for a later read and hands back an
    /// empty one: its stale bytes are never shown. Any other buffer goes back as it is.
    fn keep_spare(&mut self, spare: bool, buf: Vec<u8>) -> Vec<u8> {
        if !spare {
            return buf;
        }
        if buf.len() <= READ_SPARE_MAX && self.read_spares.len() < READ_SPARES {
            self.read_spares.push(buf);
        }
        Vec::new()
    }

    /// Turns a request completion into the ioctl's result (spec §1.5: status if non-zero, else
    /// `actual`; READ copies `min(length, actual)`; ECONNRESET after a signal is EINTR).
    fn finish_transfer(&mut self, f: InFlight, c: Completion) {
        let Completion {
            status,
            actual,
            mut buf,
            ..
        } = c;
        let ret = match status {
            Err(Errno::ECONNRESET) if f.interrupted => Err(Errno::EINTR),
            Err(e) => Err(e),
            Ok(()) if f.read => {
                let n = actual.min(f.length);
                // a spare much larger than the data: copy the data out and keep the spare
                // (copying n bytes costs less than zeroing the rest for the next read)
                if f.spare && (n as usize) <= buf.len() / 2 {
                    let data = buf[..n as usize].to_vec();
                    let _ = self.keep_spare(true, core::mem::replace(&mut buf, data));
                } else {
                    buf.truncate(n as usize);
                }
                Ok(n)
            }
            Ok(()) => Ok(actual),
        };
        if ret.is_err() && f.spare {
            // nothing is copied out of a failed read: the spare's stale bytes stay here
            buf = self.keep_spare(true, buf);
        }
        self.complete(
            f.op,
            OpResult {
                ret,
                payload: Payload::Data(buf),
            },
        );
    }
}

#[derive(Clone, Copy)]
enum HaltOp {
    SetHalt,
    ClearHalt,
    SetWedge,
}

/// EVENT_FETCH's copy-out: the full length in the header, `min(capacity, length)` bytes of data.
fn event_result(type_: u32, data: Option<[u8; 8]>, capacity: u32) -> OpResult {
    let payload: &[u8] = match &data {
        Some(d) => d,
        None => &[],
    };
    let n = payload.len().min(capacity as usize);
    OpResult {
        ret: Ok(0),
        payload: Payload::Event {
            header: UsbRawEvent {
                type_,
                length: payload.len() as u32,
            },
            data: payload[..n].to_vec(),
        },
    }
}

/// `raw_alloc_io_data`'s header checks, which come before the state checks, then the payload:
/// a WRITE needs `length` bytes (fewer means the copy faulted: EFAULT); a READ gets a buffer
/// of `length` bytes.
fn io_buffer(io: &UsbRawEpIo, mut buf: Vec<u8>, write: bool) -> Result<Vec<u8>, (Errno, Vec<u8>)> {
    if let Err(e) = validate_io_header(io) {
        return Err((e, buf));
    }
    let len = io.length as usize;
    if write {
        if buf.len() < len {
            return Err((Errno::EFAULT, buf));
        }
        buf.truncate(len);
    } else {
        buf.resize(len, 0);
    }
    Ok(buf)
}

/// The checks `raw_alloc_io_data` makes on a `usb_raw_ep_io` header before touching the
/// payload. Front-ends call it before copying `length` bytes from the caller, so that a lying
/// length never makes them allocate.
pub fn validate_io_header(io: &UsbRawEpIo) -> Result<(), Errno> {
    if io.ep as usize >= USB_RAW_EPS_NUM_MAX {
        return Err(Errno::EINVAL);
    }
    if !usb_raw_io_flags_valid(io.flags) {
        return Err(Errno::EINVAL);
    }
    if io.length > USB_RAW_IO_LENGTH_MAX {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

fn err_with(e: Errno, buf: Vec<u8>) -> OpResult {
    OpResult {
        ret: Err(e),
        payload: Payload::Data(buf),
    }
}

/// The bytes before the NUL, if the array has one (`strscpy` succeeds).
fn c_name(name: &[u8; UDC_NAME_LENGTH_MAX]) -> Option<&[u8]> {
    let end = name.iter().position(|&b| b == 0)?;
    Some(&name[..end])
}

/// `get_ep_addr` (`raw_gadget.c`): "ep12out-bulk" → 12 (decimal digits after "ep", as
/// `simple_strtoul` reads them, truncated to u8); "ep-a" → `USB_RAW_EP_ADDR_ANY`.
pub fn ep_addr_from_name(name: &[u8]) -> u8 {
    match name.get(2) {
        Some(c) if c.is_ascii_digit() => {
            let mut v: u64 = 0;
            for &c in name[2..].iter().take_while(|c| c.is_ascii_digit()) {
                v = v.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            }
            v as u8
        }
        _ => USB_RAW_EP_ADDR_ANY as u8,
    }
}

#[cfg(test)]
mod tests;
