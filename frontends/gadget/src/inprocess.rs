//! The in-process backend: the raw gadget engine, the dummy controller model and an in-process
//! host, all in this process. No root, no kernel module.
//!
//! [`InProcess`] implements [`Backend`] over a [`SharedBus`] (engine instance + controller
//! model behind one mutex). Its other handle, the `Arc<SharedBus>`, is the host's
//! side: give it to a [`rawgadget_loopback::Threaded`] port and drive a
//! [`rawgadget_loopback::Host`] from another thread.
//!
//! A blocking call submits its operation; if the engine reports it pending, the call waits for
//! that operation's result, which the thread completing it hands over
//! ([`SharedBus::wait_op`]). Cancelling it sets a flag and unparks the waiting thread, which
//! itself then cancels the operation in the engine; the engine returns EINTR only if the
//! transfer was really still queued (contract D31).
//!
//! Unlike a device node, the engine could keep several requests per endpoint in flight; this
//! backend keeps raw gadget's depth of one so programs behave the same on both.
//!
//! # Buffers handed over
//! [`Backend::ep_write_owned`] and [`Backend::ep_read_owned`] give the engine the caller's
//! buffer instead of a copy. When one packet-level move covers the gadget's request and the
//! host's URB whole, the controller model swaps the two buffers (a 64 KiB bulk transfer moves
//! no byte); the caller gets back a buffer of the same length whose contents are unspecified
//! (write) or hold the data (read). The slice methods copy in and out, as the ioctl does.
//!
//! # Same-thread dispatch
//! With a device program in one thread and the host in another, every control transfer costs
//! two thread handoffs (the SETUP to the program, its answer back), and every bulk transfer
//! at least one. On a loaded machine each handoff waits for the scheduler. Two step-shaped
//! alternatives remove them; the in-process host runs them in its own thread whenever it waits
//! ([`SharedBus::add_inline_step`]):
//! - [`InlineEvents`] keeps an EVENT_FETCH pending for the gadget, exactly as a program
//!   blocked in [`Gadget::next_event`](crate::Gadget::next_event) does, and calls the program's
//!   event handler with each event. Its ep0 answers complete at once (the host's URB is
//!   already there); a call that would have to wait for the host fails with EINTR instead of
//!   deadlocking.
//! - [`InlineTransfers`] keeps one EP_WRITE or EP_READ pending on an endpoint, with a buffer
//!   handed over, and calls a completion handler that returns the next buffer.
//!
//! The engine sees the same operations in the same order as from threads; only the thread
//! differs.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};

use rawgadget_engine::{ClientOp, Ep0Pending, EpId, OpId, OpResult, Outcome, Payload};
use rawgadget_loopback::{Bus, InlineStepId, SharedBus};
use rawgadget_uapi::{Errno, Speed, UsbRawEpIo, UsbRawInit, UDC_NAME_LENGTH_MAX};
use rawgadget_usbip_udc::ClientFlush;

use crate::backend::{Backend, EpHandle, EpInfo, IoFlags, RawEvent};
use crate::cancel::{CancelHandle, Wake};
use crate::gadget::{Endpoint, Event};
use crate::Direction;

/// See the module doc.
///
/// Dropping it is `close()` of the file: the instance unbinds and every blocked call ends.
#[derive(Debug)]
pub struct InProcess {
    shared: Arc<SharedBus>,
    /// After each client operation, under the bus lock: the USB/IP link's flush, so that this
    /// thread writes the replies its operation produced instead of waking the link's writer
    /// thread (contract P4; `rawgadget_usbip_udc::driver`, "Who writes").
    after_op: Option<ClientFlush>,
}

impl InProcess {
    /// A fresh bus with one `dummy_udc.0` controller (default `dummy_hcd` parameters) and an
    /// instance as after `open("/dev/raw-gadget")`. Returns the backend and the bus, whose
    /// host side the caller drives.
    pub fn new() -> (InProcess, Arc<SharedBus>) {
        let shared = SharedBus::new(Bus::new());
        (
            InProcess {
                shared: shared.clone(),
                after_op: None,
            },
            shared,
        )
    }

    /// A backend on an existing bus (for example one with another controller personality).
    pub fn with_bus(shared: Arc<SharedBus>) -> InProcess {
        InProcess {
            shared,
            after_op: None,
        }
    }

    /// A backend on a USB/IP device's bus whose client threads write the replies their
    /// operations produce ([`ClientFlush`]).
    pub(crate) fn with_usbip_flush(shared: Arc<SharedBus>, flush: ClientFlush) -> InProcess {
        InProcess {
            shared,
            after_op: Some(flush),
        }
    }

    /// The bus this backend runs on.
    pub fn bus(&self) -> &Arc<SharedBus> {
        &self.shared
    }

    fn submit(&self, op: ClientOp) -> Result<OpResult, OpId> {
        let Some(flush) = &self.after_op else {
            return submit(&self.shared, op);
        };
        // what this thread is about to be handed at once, if the host queued it already
        let next = match &op {
            ClientOp::EventFetch { .. }
            | ClientOp::Ep0Write { .. }
            | ClientOp::Ep0Read { .. }
            | ClientOp::Ep0Stall { .. } => Next::Setup,
            ClientOp::EpRead { io, .. } => Next::OutUrb(EpId::Ep(io.ep)),
            _ => Next::Nothing,
        };
        let fetch = matches!(op, ClientOp::EventFetch { .. });
        let mut bus = self.shared.lock();
        let before = flush.watch(&bus);
        let results_before = bus.completions_queued();
        let r = match bus.client(op) {
            Outcome::Done(r) => Ok(r),
            Outcome::Pending(id) => bus.take_completion(id).ok_or(id),
        };
        // An EVENT_FETCH that found its event queued gave nothing back to the host, finished
        // no one's operation and changed nothing the waiters watch: there is nothing to
        // collect, write or wake (half of the ep0 thread's operations under usbtest case 10).
        // Replies left behind leave with the answer to this event, as `owing` would have it.
        if fetch
            && r.is_ok()
            && bus.completions_queued() == results_before
            && flush.watch(&bus) == before
        {
            return r;
        }
        // this thread has its next job already (the next SETUP to answer, contract D14, or
        // the next OUT URB to read): its replies leave together with the next ones
        // (`rawgadget_usbip_udc::driver`, "Write-behind"); never before blocking
        let owing = r.is_ok()
            && match next {
                Next::Setup => bus.instance().ep0_pending() != Ep0Pending::None,
                Next::OutUrb(ep) => bus.controller().urb_waiting_on(ep),
                Next::Nothing => false,
            };
        let flushed = if owing {
            flush.collect_owing(&mut bus, before)
        } else {
            flush.collect(&mut bus, before)
        };
        drop(bus);
        // outside the bus lock (the writing flag keeps replies in order), and before the
        // waiters are woken; the link's writer thread is woken only if it has something to
        // do besides these replies (`rawgadget_usbip_udc::Watch`)
        flushed.finish(&self.shared);
        r
    }

    fn immediate(&self, op: ClientOp) -> OpResult {
        match self.submit(op) {
            Ok(r) => r,
            // only the five I/O ioctls block, and they go through `blocking`
            Err(id) => self.wait(id, &|| false),
        }
    }

    fn blocking(&self, op: ClientOp, cancel: &CancelHandle) -> OpResult {
        let id = match self.submit(op) {
            Ok(r) => return r,
            Err(id) => id,
        };
        let flag = Arc::new(CancelFlag {
            requested: AtomicBool::new(false),
            waiter: thread::current(),
        });
        let guard = match cancel.enter(flag.clone()) {
            Ok(g) => Some(g),
            Err(_) => {
                flag.requested.store(true, Ordering::SeqCst);
                None
            }
        };
        let r = self.wait(id, &|| flag.requested.load(Ordering::SeqCst));
        drop(guard);
        r
    }

    fn wait(&self, id: OpId, interrupted: &dyn Fn() -> bool) -> OpResult {
        self.shared
            .wait_op(id, None, interrupted)
            // wait_op only gives up at a deadline, and there is none
            .unwrap_or(OpResult {
                ret: Err(Errno::EINTR),
                payload: Payload::None,
            })
    }
}

/// What a client thread's next operation will find waiting, by the kind of its last one
/// ([`InProcess::submit`]).
#[derive(Clone, Copy)]
enum Next {
    /// An ep0 operation: the next SETUP, if the host queued several control URBs.
    Setup,
    /// EP_READ: the next OUT URB on the same endpoint.
    OutUrb(EpId),
    Nothing,
}

/// Runs `op`; a blocked operation that finished within the same call (its peer was already
/// waiting) is returned as done, saving a second trip through the lock.
fn submit(shared: &SharedBus, op: ClientOp) -> Result<OpResult, OpId> {
    shared.with(|b| match b.client(op) {
        Outcome::Done(r) => Ok(r),
        Outcome::Pending(id) => b.take_completion(id).ok_or(id),
    })
}

/// Set by a [`CancelHandle`]; the waiting thread acts on it under the bus lock.
struct CancelFlag {
    requested: AtomicBool,
    waiter: Thread,
}

impl Wake for CancelFlag {
    fn wake(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.waiter.unpark();
    }
}

/// The buffer an EP_READ / EP_WRITE handed to the engine, back from its result.
fn returned_buffer(payload: Payload) -> Vec<u8> {
    match payload {
        Payload::Data(buf) => buf,
        _ => Vec::new(),
    }
}

fn ret_u32(r: &OpResult) -> Result<u32, Errno> {
    r.ret
}

fn unit(r: OpResult) -> Result<(), Errno> {
    r.ret.map(|_| ())
}

fn io(ep: u16, flags: IoFlags, length: usize) -> Result<UsbRawEpIo, Errno> {
    // a length that does not fit `__u32` cannot be expressed through the ioctl either
    let length = u32::try_from(length).map_err(|_| Errno::EINVAL)?;
    Ok(UsbRawEpIo {
        ep,
        flags: flags.0,
        length,
    })
}

fn copy_read(r: OpResult, buf: &mut [u8]) -> Result<usize, Errno> {
    let n = r.ret? as usize;
    if let Payload::Data(data) = r.payload {
        let n = n.min(data.len()).min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        return Ok(n);
    }
    Ok(0)
}

impl Backend for InProcess {
    fn init(&self, driver_name: &str, device_name: &str, speed: Speed) -> Result<(), Errno> {
        // strscpy(.., 128) in the module: names of 128 bytes or more are E2BIG
        if driver_name.len() >= UDC_NAME_LENGTH_MAX || device_name.len() >= UDC_NAME_LENGTH_MAX {
            return Err(Errno::E2BIG);
        }
        let init = UsbRawInit::new(driver_name, device_name, speed as u8);
        unit(self.immediate(ClientOp::Init(Box::new(init))))
    }

    fn run(&self) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::Run { arg: 0 }))
    }

    fn event_fetch(&self, capacity: u32, cancel: &CancelHandle) -> Result<RawEvent, Errno> {
        let r = self.blocking(ClientOp::EventFetch { capacity }, cancel);
        r.ret?;
        match r.payload {
            Payload::Event { header, data } => Ok(RawEvent {
                event_type: header.type_,
                length: header.length,
                data,
            }),
            _ => Err(Errno::EIO),
        }
    }

    fn ep0_write(
        &self,
        data: &[u8],
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        let io = io(0, flags, data.len())?;
        let r = self.blocking(
            ClientOp::Ep0Write {
                io,
                data: data.to_vec(),
            },
            cancel,
        );
        ret_u32(&r).map(|n| n as usize)
    }

    fn ep0_read(
        &self,
        buf: &mut [u8],
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        let io = io(0, flags, buf.len())?;
        copy_read(
            self.blocking(
                ClientOp::Ep0Read {
                    io,
                    buf: Vec::new(),
                },
                cancel,
            ),
            buf,
        )
    }

    fn ep_enable(&self, desc: &[u8; 9]) -> Result<EpHandle, Errno> {
        let r = self.immediate(ClientOp::EpEnable { desc: *desc });
        r.ret.map(|h| EpHandle(h as u16))
    }

    fn ep_disable(&self, ep: EpHandle) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::EpDisable {
            arg: u64::from(ep.0),
        }))
    }

    fn ep_write(
        &self,
        ep: EpHandle,
        data: &[u8],
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        let io = io(ep.0, flags, data.len())?;
        let r = self.blocking(
            ClientOp::EpWrite {
                io,
                data: data.to_vec(),
            },
            cancel,
        );
        ret_u32(&r).map(|n| n as usize)
    }

    fn ep_read(
        &self,
        ep: EpHandle,
        buf: &mut [u8],
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        let io = io(ep.0, flags, buf.len())?;
        copy_read(
            self.blocking(
                ClientOp::EpRead {
                    io,
                    buf: Vec::new(),
                },
                cancel,
            ),
            buf,
        )
    }

    fn ep_write_owned(
        &self,
        ep: EpHandle,
        data: Vec<u8>,
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> (Result<usize, Errno>, Vec<u8>) {
        let io = match io(ep.0, flags, data.len()) {
            Ok(io) => io,
            Err(e) => return (Err(e), data),
        };
        let r = self.blocking(ClientOp::EpWrite { io, data }, cancel);
        (r.ret.map(|n| n as usize), returned_buffer(r.payload))
    }

    fn ep_read_owned(
        &self,
        ep: EpHandle,
        buf: Vec<u8>,
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> (Result<usize, Errno>, Vec<u8>) {
        let io = match io(ep.0, flags, buf.len()) {
            Ok(io) => io,
            Err(e) => return (Err(e), buf),
        };
        let r = self.blocking(ClientOp::EpRead { io, buf }, cancel);
        let n = r.ret.map(|n| n as usize);
        let mut buf = returned_buffer(r.payload);
        // the engine truncates a read's buffer to what it received; keep that exact
        if let Ok(n) = n {
            buf.truncate(n);
        }
        (n, buf)
    }

    fn configure(&self) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::Configure { arg: 0 }))
    }

    fn vbus_draw(&self, units_2ma: u32) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::VbusDraw {
            arg: u64::from(units_2ma),
        }))
    }

    fn eps_info(&self) -> Result<Vec<EpInfo>, Errno> {
        let r = self.immediate(ClientOp::EpsInfo);
        let n = r.ret? as usize;
        match r.payload {
            Payload::EpsInfo(info) => Ok(info.eps.iter().take(n).map(EpInfo::from_raw).collect()),
            _ => Err(Errno::EIO),
        }
    }

    fn ep0_stall(&self) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::Ep0Stall { arg: 0 }))
    }

    fn set_halt(&self, ep: EpHandle) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::EpSetHalt {
            arg: u64::from(ep.0),
        }))
    }

    fn clear_halt(&self, ep: EpHandle) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::EpClearHalt {
            arg: u64::from(ep.0),
        }))
    }

    fn set_wedge(&self, ep: EpHandle) -> Result<(), Errno> {
        unit(self.immediate(ClientOp::EpSetWedge {
            arg: u64::from(ep.0),
        }))
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        // release(): the host keeps the bus, the instance goes away
        self.shared.with(|b| b.close());
    }
}

/// Same-thread dispatch of a gadget's events on an in-process bus (see the module doc).
///
/// Keeps one EVENT_FETCH pending, as [`Gadget::next_event`](crate::Gadget::next_event) in an
/// event thread does, and calls the handler with each event from the host's thread, while the
/// host waits. Dropping it (or the handler returning [`ControlFlow::Break`], or the
/// instance closing) stops the dispatch; a pending EVENT_FETCH is then cancelled.
/// [`Gadget::stop_events`](crate::Gadget::stop_events) does not stop it (it only interrupts
/// blocking calls). A handler that owns a [`Gadget`](crate::Gadget) handle keeps the instance
/// open until this is dropped.
///
/// ```no_run
/// use std::ops::ControlFlow;
/// use std::sync::Arc;
/// use rawgadget::{inprocess::InlineEvents, Event, Gadget, InProcess};
/// let (backend, bus) = InProcess::new();
/// let gadget = Gadget::builder().build(Arc::new(backend))?;
/// gadget.run()?;
/// let g = gadget.clone();
/// let _events = InlineEvents::start(&bus, move |ev| {
///     if let Event::Control(setup) = ev {
///         let _ = if rawgadget::has_in_data_stage(&setup) { g.ep0_stall() } else { g.ep0_ack() };
///     }
///     ControlFlow::Continue(())
/// });
/// // ... drive a rawgadget_loopback::Host through Threaded::new(bus) in this thread
/// # Ok::<(), rawgadget::Error>(())
/// ```
pub struct InlineEvents {
    shared: Arc<SharedBus>,
    step: InlineStepId,
    state: Arc<Mutex<InlineState>>,
}

#[derive(Default)]
struct InlineState {
    /// The EVENT_FETCH the gadget is "blocked" in.
    pending: Option<OpId>,
    /// Why dispatch stopped: `Ok` for a handler's `Break`, else EVENT_FETCH's errno.
    ended: Option<Result<(), Errno>>,
}

impl std::fmt::Debug for InlineEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineEvents")
            .field("ended", &self.ended())
            .finish_non_exhaustive()
    }
}

impl InlineEvents {
    /// Installs `handler` as the bus's inline step (replacing any other). Its ep0 calls go
    /// through the gadget it captured; they must not wait for the host (see the module doc).
    pub fn start(
        bus: &Arc<SharedBus>,
        mut handler: impl FnMut(Event) -> ControlFlow<()> + Send + 'static,
    ) -> InlineEvents {
        let state = Arc::new(Mutex::new(InlineState::default()));
        let step = {
            let (shared, state) = (bus.clone(), state.clone());
            move || -> bool {
                let mut st = lock(&state);
                if st.ended.is_some() {
                    return false;
                }
                // the result of the pending fetch, or a new fetch (spec §1.5 EVENT_FETCH)
                let r = match st.pending {
                    Some(id) => match shared.lock().take_completion(id) {
                        Some(r) => r,
                        None => return false,
                    },
                    None => match submit(&shared, ClientOp::EventFetch { capacity: 8 }) {
                        Ok(r) => r,
                        Err(id) => {
                            st.pending = Some(id);
                            return false;
                        }
                    },
                };
                st.pending = None;
                let event = match (r.ret, r.payload) {
                    (Ok(_), Payload::Event { header, data }) => RawEvent {
                        event_type: header.type_,
                        length: header.length,
                        data,
                    },
                    (Err(e), _) => {
                        st.ended = Some(Err(e));
                        return false;
                    }
                    (Ok(_), _) => {
                        st.ended = Some(Err(Errno::EIO));
                        return false;
                    }
                };
                drop(st);
                let Ok(event) = Event::from_raw(event) else {
                    return true;
                };
                if handler(event).is_break() {
                    lock(&state).ended = Some(Ok(()));
                }
                true
            }
        };
        let step = bus.add_inline_step(Box::new(step));
        InlineEvents {
            shared: bus.clone(),
            step,
            state,
        }
    }

    /// `None` while dispatching; then `Ok` if the handler stopped it, or the errno that ended
    /// EVENT_FETCH (ESHUTDOWN once the instance is closed).
    pub fn ended(&self) -> Option<Result<(), Errno>> {
        lock(&self.state).ended
    }
}

impl Drop for InlineEvents {
    fn drop(&mut self) {
        // from inside a step the removal waits for the round's end
        let removed = self.shared.remove_inline_step(self.step);
        let pending = {
            let mut st = lock(&self.state);
            st.ended.get_or_insert(Ok(()));
            st.pending.take()
        };
        if let Some(id) = pending {
            // a signal to the program "blocked" in EVENT_FETCH (contract D31)
            cancel_op(&self.shared, id);
        }
        // last: the handler may own the last handle of the gadget, whose drop closes it
        drop(removed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A signal to a program blocked in `op`: EINTR unless it already finished (contract D31).
/// The result is dropped: nobody waits for it any more.
fn cancel_op(shared: &SharedBus, op: OpId) {
    shared.with(|b| {
        b.cancel(op);
        let _ = b.take_completion(op);
    });
}

/// What [`InlineTransfers`]' handler returns after each transfer.
pub type NextTransfer = Option<Vec<u8>>;

/// Same-thread transfers on one endpoint of an in-process gadget: an endpoint loop written as
/// a step (see the module doc).
///
/// Keeps one EP_WRITE (IN endpoint) or EP_READ (OUT endpoint) pending, raw gadget's queue
/// depth, with a buffer handed over as in [`Endpoint::write_owned`] /
/// [`Endpoint::read_owned`]. Each time it completes, in the host's thread while the host
/// waits, `handler` gets its result and buffer (a read's cut to the bytes received) and
/// returns the buffer of the next transfer, or `None` to stop. Dropping it stops the stream;
/// a pending transfer is then cancelled (EINTR unless it had finished, contract D31).
///
/// Like a thread blocked in the endpoint's call, a pending transfer makes another
/// concurrent call on the same endpoint fail with EBUSY.
pub struct InlineTransfers {
    shared: Arc<SharedBus>,
    step: InlineStepId,
    state: Arc<Mutex<TransferState>>,
}

struct TransferState {
    pending: Option<OpId>,
    next: Option<Vec<u8>>,
    ended: bool,
    count: u64,
}

impl std::fmt::Debug for InlineTransfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.state);
        f.debug_struct("InlineTransfers")
            .field("completed", &st.count)
            .field("ended", &st.ended)
            .finish_non_exhaustive()
    }
}

impl InlineTransfers {
    /// Starts the stream on `endpoint` (of a gadget on `bus`) with `first` as the first
    /// transfer's buffer; `flags` apply to every transfer.
    pub fn start(
        bus: &Arc<SharedBus>,
        endpoint: &Endpoint,
        flags: IoFlags,
        first: Vec<u8>,
        mut handler: impl FnMut(Result<usize, Errno>, Vec<u8>) -> NextTransfer + Send + 'static,
    ) -> InlineTransfers {
        let ep = endpoint.handle().0;
        let write = endpoint.direction() == Direction::In;
        let state = Arc::new(Mutex::new(TransferState {
            pending: None,
            next: Some(first),
            ended: false,
            count: 0,
        }));
        let step = {
            let (shared, state) = (bus.clone(), state.clone());
            move || -> bool {
                let mut st = lock(&state);
                if st.ended {
                    return false;
                }
                let r = if let Some(id) = st.pending {
                    match shared.lock().take_completion(id) {
                        Some(r) => r,
                        None => return false,
                    }
                } else {
                    let Some(buf) = st.next.take() else {
                        st.ended = true;
                        return false;
                    };
                    let submitted = match io(ep, flags, buf.len()) {
                        Err(e) => Ok(OpResult {
                            ret: Err(e),
                            payload: Payload::Data(buf),
                        }),
                        Ok(io) => {
                            let op = if write {
                                ClientOp::EpWrite { io, data: buf }
                            } else {
                                ClientOp::EpRead { io, buf }
                            };
                            submit(&shared, op)
                        }
                    };
                    match submitted {
                        Ok(r) => r,
                        Err(id) => {
                            st.pending = Some(id);
                            // moved: queued; its completion needs the host
                            return true;
                        }
                    }
                };
                st.pending = None;
                st.count += 1;
                let n = r.ret.map(|n| n as usize);
                let mut buf = returned_buffer(r.payload);
                if let (Ok(n), false) = (n, write) {
                    buf.truncate(n);
                }
                drop(st);
                let next = handler(n, buf);
                let mut st = lock(&state);
                match next {
                    Some(buf) => st.next = Some(buf),
                    None => st.ended = true,
                }
                true
            }
        };
        let step = bus.add_inline_step(Box::new(step));
        InlineTransfers {
            shared: bus.clone(),
            step,
            state,
        }
    }

    /// Transfers completed so far.
    pub fn completed(&self) -> u64 {
        lock(&self.state).count
    }

    /// Whether the handler stopped the stream.
    pub fn ended(&self) -> bool {
        lock(&self.state).ended
    }
}

impl Drop for InlineTransfers {
    fn drop(&mut self) {
        let removed = self.shared.remove_inline_step(self.step);
        let pending = {
            let mut st = lock(&self.state);
            st.ended = true;
            st.pending.take()
        };
        if let Some(id) = pending {
            cancel_op(&self.shared, id);
        }
        drop(removed);
    }
}
