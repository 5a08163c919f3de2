//! The shell around a [`Link`]: a socket, two threads and the bus lock. It decides nothing.
//!
//! Like quinn's `ConnectionDriver::poll`, each thread only shuttles, inside one tracing span
//! per connection:
//!
//! - the **reader** (the thread that called [`serve`]) reads whatever the socket has, feeds it
//!   to [`Link::handle_input`] under the bus lock, and never stops reading (contract U25: the
//!   stream must be drained; budgets close the connection instead);
//! - the **writer** sleeps on the bus's condition variable; when woken it lets the link
//!   collect the controller's give-backs, takes the encoded replies and writes them outside
//!   the lock. It is what notices a gadget that closed, a connection that closed and the next
//!   controller timer (iso URBs served on time, contract I5), and it writes whatever no other
//!   thread wrote (give-backs from a client that does not flush, from an inline step, from a
//!   timer).
//!
//! # Who writes (contract P4)
//! Under emulation every thread handoff on a URB's path costs more than the URB, so replies
//! are written by the thread whose action produced them, right after it releases the bus
//! lock, instead of waking the writer for them:
//! - the reader writes the replies its input produced (a URB the controller answers itself or
//!   matches with a queued request);
//! - a client thread of the in-process backend (`rawgadget::InProcess::usbip`) writes the
//!   replies its ioctl produced (an EP_WRITE or EP_READ or ep0 answer that completes a URB the
//!   host waits for) through [`ClientFlush`], which the backend calls under the bus lock after
//!   every client operation. Only on a stream whose writes cannot be held up by the peer
//!   ([`Stream::writes_inline`]: the local vhci socketpair); on a TCP export the writer
//!   thread writes them.
//!
//! Only what no thread wrote and the controller's timers need the writer, so the reader and
//! a flushing client wake the bus's `wait_for` waiters (the writer, `wait_running`) only when
//! what those look at changed ([`Watch`]); results for the gadget's blocked calls are still
//! delivered at once ([`SharedBus::notify_keyed`]).
//!
//! One flag per connection says who is writing. Whoever takes replies from the link (under
//! the link lock) sets it and writes everything it took; before clearing it, it looks under
//! the link lock for replies that arrived meanwhile and writes those too. Since both the
//! check and the clear happen under the link lock, a reply is either taken by the writing
//! thread or finds the flag clear: none is stranded, and they leave in the order the link
//! made them.
//!
//! # Write-behind
//! With several control URBs queued (usbtest case 10 keeps 32 in flight), each ep0 answer
//! completes one URB and presents the next SETUP at once (contract D14), so the thread that
//! serves ep0 answers them back to back; with several bulk OUT URBs queued (case 24), each
//! EP_READ completes one and the next is already there. Writing each reply on its own costs a
//! `send` here and a wakeup and a `recv` on the host's side per URB; vhci's null floor
//! answers a batch in one write. So after a client operation that leaves its thread with its
//! next job already waiting (the answer to a SETUP already presented, the next OUT URB of the
//! endpoint it read; [`ClientFlush::collect_owing`]), its replies stay in the link, and
//! leave in one write with the next ones: when the client answers the last queued SETUP, does
//! any other operation, or when the reader or the writer writes; at the latest after
//! [`MAX_WRITE_BEHIND`]: the client's next operation writes them then, and the writer thread
//! sleeps no longer than their deadline (the client wakes it when the replies it leaves would
//! otherwise wait for the writer's slow poll, at most once per deadline). The order of replies
//! is unchanged.
//!
//! When the peer closes, the socket fails, the link refuses input, the gadget closes or the
//! owner calls [`ConnectionHandle::close`], both threads end and the link applies U20
//! (DISCONNECT, ESHUTDOWN) under the lock.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant as StdInstant};

use rawgadget_engine::State;
use rawgadget_loopback::{Bus, SharedBus};
use rawgadget_udc::PortStatus;

use rawgadget_udc::Instant;

use crate::link::{Link, LinkError};

/// A byte stream a USB/IP connection runs on: an AF_UNIX socketpair end (local vhci) or a TCP
/// connection (export).
pub trait Stream: Read + Write + Send + Sync + 'static {
    /// A second handle on the same socket, for the writer thread.
    ///
    /// # Errors
    /// As `try_clone` of the socket.
    fn try_clone_stream(&self) -> io::Result<Self>
    where
        Self: Sized;
    /// Shuts both directions down, which wakes a blocked reader with EOF.
    fn shutdown_both(&self);
    /// Sets or clears the read timeout.
    ///
    /// # Errors
    /// As the socket's `set_read_timeout`.
    fn set_read_timeout_to(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Whether a client thread may write replies itself ([`ClientFlush`]): only when the peer
    /// cannot hold a write up for long. Default: no, the writer thread writes them.
    fn writes_inline(&self) -> bool {
        false
    }
}

impl Stream for UnixStream {
    fn try_clone_stream(&self) -> io::Result<Self> {
        self.try_clone()
    }
    /// The local vhci socketpair: its peer is the kernel's vhci, whose rx thread reads without
    /// pause, so a write returns as soon as the reply is copied into the socket. A client
    /// thread writing its own replies then saves the switch to the writer thread.
    fn writes_inline(&self) -> bool {
        true
    }
    fn shutdown_both(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
    fn set_read_timeout_to(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)
    }
}

/// A TCP export keeps [`Stream::writes_inline`] off: its peer is remote, untrusted and may be
/// slow, and a full send buffer would block the gadget's ioctl (its event loop, its endpoint
/// threads) on the network. Non-blocking writes with a fallback would have to hand the rest
/// of a partly written PDU to the writer thread anyway; the writer thread alone writing keeps
/// that one blocking point off the client.
impl Stream for TcpStream {
    fn try_clone_stream(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_both(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
    fn set_read_timeout_to(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)
    }
}

/// The monotonic clock the controller's time comes from (contract I5: the USB/IP driver
/// supplies a monotonic clock). Its epoch is the bus's `Instant::ZERO`.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: StdInstant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            epoch: StdInstant::now(),
        }
    }
    pub fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
    /// Real time from now until `t`, zero if it has passed.
    pub fn until(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.now())
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionEnd {
    /// The peer closed its end (vhci detached the port, the importer went away).
    #[error("the peer closed the connection")]
    PeerClosed,
    /// The gadget closed (its program ended or dropped its backend).
    #[error("the gadget closed")]
    GadgetClosed,
    /// [`ConnectionHandle::close`] was called.
    #[error("closed by the owner")]
    ClosedByOwner,
    /// The peer broke the protocol or a budget (contract U25).
    #[error("{0}")]
    Protocol(#[from] LinkError),
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

/// How long [`ClientFlush::collect_owing`] may leave replies in the link before the next
/// client operation writes them anyway (module doc, "Write-behind").
pub const MAX_WRITE_BEHIND: Duration = Duration::from_millis(2);

/// What the writer thread is told to do next.
enum Next {
    Write(Vec<u8>),
    Stop(Option<ConnectionEnd>),
    /// Hand the controller the time (its timer may be due) and compute the next wait.
    Tick,
    /// Compute the next wait (replies left behind are due earlier).
    Again,
}

pub(crate) fn lock(link: &Mutex<Link>) -> MutexGuard<'_, Link> {
    link.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the gadget side is gone for good.
fn gadget_closed(bus: &Bus) -> bool {
    bus.instance().state() == State::Closed
}

/// The sending side of one connection, shared by every thread that may write to it (module
/// doc, "Who writes").
struct Tx<S: Stream> {
    link: Arc<Mutex<Link>>,
    /// The handle writes go through; only the thread holding `writing` locks it.
    stream: Mutex<S>,
    /// A second handle, to shut the socket down while a write may be blocked on `stream`.
    control: S,
    /// Someone is writing. Set and cleared only under the link lock.
    writing: AtomicBool,
    /// When replies were first left in the link by [`ClientFlush::collect_owing`]
    /// (nanoseconds after `epoch`, plus one; 0: none are). Cleared when replies are taken.
    deferred_since: AtomicU64,
    /// Until when the writer thread sleeps (same clock; 0: it is not sleeping), so that the
    /// client leaving replies behind wakes it only if it would sleep past their deadline.
    writer_until: AtomicU64,
    epoch: StdInstant,
}

/// What [`ClientOutput::take`] did.
struct Taken {
    bytes: Option<Vec<u8>>,
    /// Replies were left in the link and the writer thread must learn their deadline.
    wake_writer: bool,
}

impl<S: Stream> Tx<S> {
    fn new(link: Arc<Mutex<Link>>, stream: S, control: S) -> Tx<S> {
        Tx {
            link,
            stream: Mutex::new(stream),
            control,
            writing: AtomicBool::new(false),
            deferred_since: AtomicU64::new(0),
            writer_until: AtomicU64::new(0),
            epoch: StdInstant::now(),
        }
    }

    /// Under the bus and link locks: takes the link's replies if nobody is writing. The
    /// caller must then [`Tx::write_taken`] them.
    fn take(&self, l: &mut Link) -> Option<Vec<u8>> {
        (l.has_output() && !self.writing.swap(true, Ordering::SeqCst)).then(|| self.drain(l))
    }

    /// Under the link lock: all of the link's replies; none are left behind any more.
    fn drain(&self, l: &mut Link) -> Vec<u8> {
        self.deferred_since.store(0, Ordering::SeqCst);
        l.poll_transmit()
    }

    /// Under the bus and link locks: leaves the link's replies for later unless they have
    /// waited [`MAX_WRITE_BEHIND`] already; then takes them as [`Tx::take`] does.
    fn take_if_overdue(&self, l: &mut Link) -> Taken {
        let mut taken = Taken {
            bytes: None,
            wake_writer: false,
        };
        if !l.has_output() {
            return taken;
        }
        let now = self.stamp(StdInstant::now());
        let since = self.deferred_since.load(Ordering::SeqCst);
        if since == 0 {
            self.deferred_since.store(now, Ordering::SeqCst);
            // the writer sleeps past the deadline: it must wake to take them then
            let until = self.writer_until.load(Ordering::SeqCst);
            taken.wake_writer = until != 0 && until > now + MAX_WRITE_BEHIND.as_nanos() as u64;
        } else if now.saturating_sub(since) >= MAX_WRITE_BEHIND.as_nanos() as u64 {
            taken.bytes = self.take(l);
        }
        taken
    }

    /// Under the link lock, for the writer thread: takes the replies unless they are left
    /// behind and not overdue yet.
    fn take_unless_behind(&self, l: &mut Link) -> Option<Vec<u8>> {
        match self.behind_until(l) {
            Some(deadline) if StdInstant::now() < deadline => None,
            _ => self.take(l),
        }
    }

    /// Under the link lock: when the replies left behind are due, if some are.
    fn behind_until(&self, l: &Link) -> Option<StdInstant> {
        match self.deferred_since.load(Ordering::SeqCst) {
            0 => None,
            _ if !l.has_output() => None,
            since => Some(self.epoch + Duration::from_nanos(since - 1) + MAX_WRITE_BEHIND),
        }
    }

    /// `t` on this connection's clock: nanoseconds after `epoch`, plus one (0 means none).
    fn stamp(&self, t: StdInstant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// Writes what [`Tx::take`] gave, then whatever the link made meanwhile, and releases
    /// the flag (check and clear under the link lock). On an error the flag is released and
    /// the socket shut down, which ends the reader, and so the connection.
    fn write_taken(&self, mut bytes: Vec<u8>) -> io::Result<()> {
        loop {
            let written = self
                .stream
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_all(&bytes);
            let mut l = lock(&self.link);
            if let Err(e) = written {
                self.writing.store(false, Ordering::SeqCst);
                drop(l);
                self.control.shutdown_both();
                return Err(e);
            }
            if l.has_output() {
                let written = std::mem::replace(&mut bytes, self.drain(&mut l));
                l.recycle_transmit(written);
                continue;
            }
            l.recycle_transmit(bytes);
            self.writing.store(false, Ordering::SeqCst);
            return Ok(());
        }
    }
}

/// A connection's [`Tx`] without its stream type, for [`ClientFlush`].
trait ClientOutput: Send + Sync {
    /// `Err` when the writer thread must look (a budget overrun). With `owing`, the replies
    /// stay in the link unless they are overdue ([`ClientFlush::collect_owing`]).
    fn take(&self, bus: &mut Bus, owing: bool) -> Result<Taken, LinkError>;
    fn write_taken(&self, bytes: Vec<u8>);
}

impl<S: Stream> ClientOutput for Tx<S> {
    fn take(&self, bus: &mut Bus, owing: bool) -> Result<Taken, LinkError> {
        let mut l = lock(&self.link);
        // a budget overrun is the writer's to report: it collects again and closes
        l.collect(bus)?;
        Ok(if owing {
            Tx::take_if_overdue(self, &mut l)
        } else {
            Taken {
                bytes: Tx::take(self, &mut l),
                wake_writer: false,
            }
        })
    }
    fn write_taken(&self, bytes: Vec<u8>) {
        if let Err(e) = Tx::write_taken(self, bytes) {
            tracing::debug!(error = %e, "client-side write failed; closing");
        }
    }
}

/// Lets the thread of a client operation write the replies it produced (module doc, "Who
/// writes"): the in-process backend calls [`ClientFlush::collect`] under the bus lock after
/// every client operation and writes the result once the lock is released. One per device,
/// cheap to clone; it follows the device's current connection, if that one
/// [`Stream::writes_inline`].
#[derive(Clone, Default)]
pub struct ClientFlush {
    current: Arc<Mutex<Option<Arc<dyn ClientOutput>>>>,
}

impl std::fmt::Debug for ClientFlush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientFlush")
            .field("connected", &self.slot().is_some())
            .finish()
    }
}

impl ClientFlush {
    // lock order: bus, then this slot (a leaf: nothing is locked under it)
    fn slot(&self) -> MutexGuard<'_, Option<Arc<dyn ClientOutput>>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Call under the bus lock, before a client operation: what the bus's `wait_for` waiters
    /// look at now, for [`ClientFlush::collect`].
    pub fn watch(&self, bus: &Bus) -> Watch {
        Watch::of(bus)
    }

    /// Call under the bus lock, after a client operation (`before` from
    /// [`ClientFlush::watch`] under the same lock): collects the controller's give-backs and
    /// takes the encoded replies if no other thread is writing. The result must be finished
    /// after the bus lock is released ([`Flush::finish`]: the replies are written, then the
    /// waiters woken).
    pub fn collect(&self, bus: &mut Bus, before: Watch) -> Flush {
        self.collect_as(bus, before, false)
    }

    /// [`ClientFlush::collect`] after a client operation that leaves its thread with its next
    /// job already waiting (the answer to a SETUP already presented, contract D14; the next
    /// OUT URB of the endpoint it read): the replies stay in the link, to leave in one write
    /// with the ones the next operations make (module doc, "Write-behind").
    pub fn collect_owing(&self, bus: &mut Bus, before: Watch) -> Flush {
        self.collect_as(bus, before, true)
    }

    fn collect_as(&self, bus: &mut Bus, before: Watch, owing: bool) -> Flush {
        let Some(conn) = self.slot().clone() else {
            // nobody writes for us (no connection, or a TCP export): the writer thread must
            // look at every change
            return Flush {
                write: None,
                wake_all: true,
            };
        };
        match conn.take(bus, owing) {
            Ok(taken) => Flush {
                write: taken.bytes.map(|bytes| PendingWrite {
                    conn,
                    bytes: Some(bytes),
                }),
                wake_all: taken.wake_writer || Watch::of(bus) != before,
            },
            Err(e) => {
                tracing::debug!(error = %e, "client-side collect failed; the writer closes");
                Flush {
                    write: None,
                    wake_all: true,
                }
            }
        }
    }

    /// [`ClientFlush::collect`] for a caller that wakes the bus's waiters itself, from what
    /// the host can see before and after (the CUSE front-end's
    /// `SharedBus::client_quiet_then`): only the replies to write, if this thread is to
    /// write them. Call under the bus lock; write after releasing it.
    pub fn take_replies(&self, bus: &mut Bus) -> Option<PendingWrite> {
        let conn = self.slot().clone()?;
        match conn.take(bus, false) {
            Ok(taken) => taken.bytes.map(|bytes| PendingWrite {
                conn,
                bytes: Some(bytes),
            }),
            Err(e) => {
                // the writer thread sees the overrun when it next collects, and closes
                tracing::debug!(error = %e, "client-side collect failed; the writer closes");
                None
            }
        }
    }

    fn register(&self, conn: Arc<dyn ClientOutput>) {
        *self.slot() = Some(conn);
    }

    fn unregister(&self, conn: &Arc<dyn ClientOutput>) {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }
}

/// What the bus's `wait_for` waiters act on besides replies: the writer thread (give-backs
/// nobody collected, the gadget closing, an earlier controller timer) and
/// [`UsbipDevice::wait_running`](crate::UsbipDevice::wait_running) (the instance's state, the
/// UDC bound). A thread that changed the bus and collected and took the replies itself wakes
/// them only if this changed ([`SharedBus::notify_keyed`] otherwise): most URBs and most
/// client operations change none of it, and a wakeup that finds nothing costs a thread switch
/// (contract P4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Watch {
    urbs_done: usize,
    state: State,
    bound: bool,
    port: PortStatus,
    timeout: Option<Instant>,
}

impl Watch {
    fn of(bus: &Bus) -> Watch {
        Watch {
            urbs_done: bus.urb_completions_queued(),
            state: bus.instance().state(),
            bound: bus.controller().is_bound(),
            port: bus.port_status(),
            timeout: bus.poll_timeout(),
        }
    }
}

/// The outcome of [`ClientFlush::collect`]: replies to write and whether the bus's `wait_for`
/// waiters must look.
#[must_use = "finish it after releasing the bus lock: it writes the replies and wakes waiters"]
#[derive(Debug)]
pub struct Flush {
    write: Option<PendingWrite>,
    wake_all: bool,
}

impl Flush {
    /// Whether the operation produced replies this thread writes.
    pub fn has_replies(&self) -> bool {
        self.write.is_some()
    }

    /// Whether [`Flush::finish`] wakes the bus's `wait_for` waiters (the writer thread).
    pub fn wakes_waiters(&self) -> bool {
        self.wake_all
    }

    /// Outside the bus lock: writes the replies (the writing flag keeps them in order), then
    /// delivers results to their waiters, and wakes the `wait_for` waiters only if
    /// [`Watch`] says they have something to see. The write comes first: on a loaded machine
    /// the woken threads would otherwise run before it.
    pub fn finish(self, shared: &SharedBus) {
        if let Some(p) = self.write {
            p.write();
        }
        if self.wake_all {
            shared.notify();
        } else {
            shared.notify_keyed();
        }
    }
}

/// Replies a client thread took under the bus lock ([`ClientFlush::collect`]); they hold the
/// connection's writing flag until written.
#[must_use = "the replies must be written (dropping writes them)"]
pub struct PendingWrite {
    conn: Arc<dyn ClientOutput>,
    bytes: Option<Vec<u8>>,
}

impl std::fmt::Debug for PendingWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingWrite")
            .field("bytes", &self.bytes.as_ref().map_or(0, Vec::len))
            .finish()
    }
}

impl PendingWrite {
    /// Writes the replies, and whatever the link made meanwhile, outside the bus lock.
    pub fn write(self) {
        drop(self);
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        if let Some(bytes) = self.bytes.take() {
            self.conn.write_taken(bytes);
        }
    }
}

/// Runs one connection to its end on the calling thread (the reader), with a writer thread
/// beside it. `link` must already be attached ([`Link::attach`]) or in handshake mode with its
/// request answered. `initial` is input read before (handshake leftovers), fed first.
pub(crate) fn serve<S: Stream>(
    shared: &Arc<SharedBus>,
    link: Arc<Mutex<Link>>,
    mut stream: S,
    clock: Clock,
    span: tracing::Span,
    flush: &ClientFlush,
) -> ConnectionEnd {
    let _entered = span.enter();
    let tx = match (stream.try_clone_stream(), stream.try_clone_stream()) {
        (Ok(w), Ok(control)) => Arc::new(Tx::new(link.clone(), w, control)),
        (Err(e), _) | (_, Err(e)) => {
            return end_connection(shared, &link, &stream, clock, e.into(), None)
        }
    };
    let writer_thread = {
        let (shared, span, tx) = (shared.clone(), span.clone(), tx.clone());
        thread::Builder::new()
            .name("usbip-tx".into())
            .spawn(move || {
                let _entered = span.enter();
                write_loop(&shared, &tx, clock)
            })
    };
    let writer_thread = match writer_thread {
        Ok(t) => t,
        Err(e) => return end_connection(shared, &link, &stream, clock, e.into(), None),
    };
    let output: Arc<dyn ClientOutput> = tx.clone();
    if stream.writes_inline() {
        flush.register(output.clone());
    }
    let end = read_loop(shared, &tx, &mut stream, clock);
    flush.unregister(&output);
    end_connection(shared, &link, &stream, clock, end, Some(writer_thread))
}

/// Reads until the connection ends; never stops reading otherwise (contract U25). EOF reads
/// as the peer closing, unless our own side closed first (see `end_connection`).
fn read_loop<S: Stream>(
    shared: &Arc<SharedBus>,
    tx: &Tx<S>,
    stream: &mut S,
    clock: Clock,
) -> ConnectionEnd {
    let link = &*tx.link;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return ConnectionEnd::PeerClosed,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if lock(link).is_closed() => {
                tracing::trace!(error = %e, "read after close");
                return ConnectionEnd::PeerClosed;
            }
            Err(e) => return ConnectionEnd::Io(e),
        };
        let (r, wake_all) = {
            let mut bus = shared.lock();
            let before = Watch::of(&bus);
            let mut l = lock(link);
            let r = l
                .handle_input(&mut bus, clock.now(), &buf[..n])
                // replies due now go out from here unless another thread is writing
                .map(|()| tx.take(&mut l));
            (r, Watch::of(&bus) != before)
        };
        // the reply first, then the waiters (the gadget's threads; the writer only if it has
        // something to do, see `Watch`): on a loaded machine the woken threads would
        // otherwise run before the write (contract P4)
        let r = match r {
            Ok(Some(bytes)) => tx.write_taken(bytes).map_err(ConnectionEnd::Io),
            Ok(None) => Ok(()),
            Err(LinkError::Closed) => Err(ConnectionEnd::PeerClosed),
            Err(e) => Err(ConnectionEnd::Protocol(e)),
        };
        if wake_all || r.is_err() {
            shared.notify();
        } else {
            shared.notify_keyed();
        }
        if let Err(end) = r {
            return end;
        }
    }
}

/// Writes replies no other thread wrote and serves the controller's timers; returns why it
/// stopped, if it knows better than the reader (gadget closed, write error).
fn write_loop<S: Stream>(
    shared: &Arc<SharedBus>,
    tx: &Tx<S>,
    clock: Clock,
) -> Option<ConnectionEnd> {
    let link = &*tx.link;
    loop {
        // the next controller timer, or a slow poll that also catches a missed wakeup
        let (timer, behind) = {
            let bus = shared.lock();
            (bus.poll_timeout(), tx.behind_until(&lock(link)))
        };
        let timeout = timer.map_or(Duration::from_millis(500), |t| {
            clock.until(t).min(Duration::from_millis(500))
        });
        let now = StdInstant::now();
        let mut until = now + timeout;
        // replies a client left behind are due (module doc, "Write-behind"); once
        // due, the wait's first look takes them, or another thread is writing them
        if let Some(due) = behind.filter(|&due| due > now) {
            until = until.min(due);
        }
        let timeout = until - now;
        tx.writer_until.store(tx.stamp(until), Ordering::SeqCst);
        let next = shared
            .wait_for(timeout, |bus| {
                let mut l = lock(link);
                if let Err(e) = l.collect(bus) {
                    return Some(Next::Stop(Some(e.into())));
                }
                if let Some(bytes) = tx.take_unless_behind(&mut l) {
                    return Some(Next::Write(bytes));
                }
                // a client left replies behind that are due before this wait ends (once due,
                // `take_unless_behind` took them, or the thread writing will)
                if tx
                    .behind_until(&l)
                    .is_some_and(|due| due < until && StdInstant::now() < due)
                {
                    return Some(Next::Again);
                }
                if l.is_closed() {
                    return Some(Next::Stop(None));
                }
                if gadget_closed(bus) {
                    return Some(Next::Stop(Some(ConnectionEnd::GadgetClosed)));
                }
                // an input or a client ioctl set an earlier timer (an iso URB reached the head
                // of its endpoint, a slot waits for the client: contract I5): wait again for
                // that one instead of the one this wait started with
                if bus
                    .poll_timeout()
                    .is_some_and(|t| timer.map_or(true, |d| t < d))
                {
                    return Some(Next::Tick);
                }
                None
            })
            .unwrap_or(Next::Tick);
        tx.writer_until.store(0, Ordering::SeqCst);
        match next {
            Next::Write(bytes) => {
                if let Err(e) = tx.write_taken(bytes) {
                    return Some(ConnectionEnd::Io(e));
                }
            }
            Next::Stop(why) => {
                // the reader is woken by the shutdown and ends the connection
                tx.control.shutdown_both();
                return why;
            }
            Next::Again => {}
            Next::Tick => {
                let r = shared.with(|bus| lock(link).handle_timeout(bus, clock.now()));
                if let Err(e) = r {
                    tx.control.shutdown_both();
                    return Some(e.into());
                }
            }
        }
    }
}

/// Both threads stop; the link applies U20 under the lock.
fn end_connection<S: Stream>(
    shared: &Arc<SharedBus>,
    link: &Arc<Mutex<Link>>,
    stream: &S,
    clock: Clock,
    reader_end: ConnectionEnd,
    writer: Option<thread::JoinHandle<Option<ConnectionEnd>>>,
) -> ConnectionEnd {
    let closed_by_owner = lock(link).is_closed();
    shared.with(|bus| lock(link).connection_lost(bus, clock.now()));
    stream.shutdown_both();
    let writer_end = writer.and_then(|t| t.join().ok().flatten());
    let end = match (writer_end, reader_end) {
        (Some(w), _) => w,
        (None, ConnectionEnd::PeerClosed) if closed_by_owner => ConnectionEnd::ClosedByOwner,
        (None, r) => r,
    };
    let stats = lock(link).stats();
    match &end {
        ConnectionEnd::Protocol(e) => {
            tracing::warn!(error = %e, ?stats, "closing the USB/IP connection")
        }
        e => tracing::info!(end = %e, ?stats, "USB/IP connection ended"),
    }
    end
}

/// Closes a running connection from outside ([`ConnectionHandle`]).
pub(crate) fn close<S: Stream>(shared: &Arc<SharedBus>, link: &Mutex<Link>, stream: &S) {
    shared.with(|bus| {
        let mut l = lock(link);
        if !l.is_closed() {
            l.connection_lost(bus, bus.now());
        }
    });
    stream.shutdown_both();
}

/// A connection served by its own thread.
pub struct ConnectionHandle {
    pub(crate) shared: Arc<SharedBus>,
    pub(crate) link: Arc<Mutex<Link>>,
    pub(crate) closer: Arc<dyn Fn() + Send + Sync>,
    pub(crate) thread: Option<thread::JoinHandle<ConnectionEnd>>,
}

impl std::fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("running", &self.is_running())
            .finish()
    }
}

impl ConnectionHandle {
    pub(crate) fn spawn<S: Stream>(
        shared: Arc<SharedBus>,
        link: Arc<Mutex<Link>>,
        stream: S,
        clock: Clock,
        span: tracing::Span,
        flush: ClientFlush,
        on_end: impl FnOnce() + Send + 'static,
    ) -> io::Result<ConnectionHandle> {
        let closer_stream = stream.try_clone_stream()?;
        let closer = {
            let (shared, link) = (shared.clone(), link.clone());
            Arc::new(move || close(&shared, &link, &closer_stream)) as Arc<dyn Fn() + Send + Sync>
        };
        let thread = {
            let (shared, link) = (shared.clone(), link.clone());
            thread::Builder::new()
                .name("usbip-rx".into())
                .spawn(move || {
                    let end = serve(&shared, link, stream, clock, span, &flush);
                    on_end();
                    end
                })?
        };
        Ok(ConnectionHandle {
            shared,
            link,
            closer,
            thread: Some(thread),
        })
    }

    /// Whether the connection still runs.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Counters of the connection so far.
    pub fn stats(&self) -> crate::link::LinkStats {
        let _bus = self.shared.lock();
        lock(&self.link).stats()
    }

    /// Ends the connection: the port loses power (DISCONNECT and ESHUTDOWN for the gadget,
    /// contract U20) and the socket is shut down, which detaches a local vhci port.
    pub fn close(&self) {
        (self.closer)();
    }

    /// A function that closes the connection from anywhere ([`ConnectionHandle::close`]).
    pub fn closer(&self) -> Arc<dyn Fn() + Send + Sync> {
        self.closer.clone()
    }

    /// Waits for the connection to end.
    pub fn join(mut self) -> ConnectionEnd {
        self.join_inner()
    }

    fn join_inner(&mut self) -> ConnectionEnd {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(end)) => end,
            Some(Err(_)) => {
                ConnectionEnd::Io(io::Error::other("the USB/IP connection thread panicked"))
            }
            None => ConnectionEnd::ClosedByOwner,
        }
    }
}

impl Drop for ConnectionHandle {
    /// Closes the connection and waits for its threads.
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.close();
            let _ = self.join_inner();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The writing-flag handoff (module doc, "Who writes") on a link without a gadget: every
    //! CMD_SUBMIT to a missing endpoint is answered at once (contract U12), which gives each
    //! input exactly one reply to write.
    use super::*;
    use crate::link::{Budget, LinkConfig};
    use rawgadget_uapi::Speed;
    use rawgadget_usbip::wire::Direction;
    use rawgadget_usbip::UrbShape;
    use rawgadget_usbip::{CmdSubmit, CmdSubmitRepr, DevicePdu, HostDecoder, HostPdu, HostStep};
    use std::sync::{Condvar, MutexGuard};

    /// A stream that records what is written; a write can be held at a gate.
    #[derive(Clone, Default)]
    struct Recorder {
        written: Arc<Mutex<Vec<u8>>>,
        gate: Arc<(Mutex<Gate>, Condvar)>,
    }

    #[derive(Default)]
    struct Gate {
        closed: bool,
        waiting: bool,
    }

    impl Recorder {
        fn gate(&self) -> MutexGuard<'_, Gate> {
            self.gate.0.lock().unwrap()
        }
        fn close_gate(&self) {
            self.gate().closed = true;
        }
        fn open_gate(&self) {
            self.gate().closed = false;
            self.gate.1.notify_all();
        }
        /// Waits until a write is held at the gate.
        fn wait_held(&self) {
            let mut g = self.gate();
            while !g.waiting {
                g = self.gate.1.wait(g).unwrap();
            }
        }
    }

    impl Read for Recorder {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Ok(0)
        }
    }

    impl Write for Recorder {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut g = self.gate();
            while g.closed {
                g.waiting = true;
                self.gate.1.notify_all();
                g = self.gate.1.wait(g).unwrap();
            }
            g.waiting = false;
            drop(g);
            // a socket write takes time: widens the window in which other threads make replies
            thread::sleep(Duration::from_micros(20));
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Stream for Recorder {
        fn try_clone_stream(&self) -> io::Result<Self> {
            Ok(self.clone())
        }
        fn shutdown_both(&self) {}
        fn set_read_timeout_to(&self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
    }

    struct Fixture {
        bus: Arc<SharedBus>,
        tx: Arc<Tx<Recorder>>,
        recorder: Recorder,
        host: Mutex<HostDecoder>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let bus = SharedBus::new(Bus::with_personality(crate::usbip_personality(Speed::High)));
            let link = Arc::new(Mutex::new(Link::attached(LinkConfig {
                budget: Budget::LOCAL_VHCI,
                second_reset: false,
            })));
            bus.with(|b| lock(&link).attach(b, Instant::ZERO));
            let recorder = Recorder::default();
            let tx = Arc::new(Tx::new(link, recorder.clone(), recorder.clone()));
            Fixture {
                bus,
                tx,
                recorder,
                host: Mutex::new(HostDecoder::new()),
            }
        }

        /// A bulk IN CMD_SUBMIT on endpoint 1 (never enabled), as the reader feeds it; returns
        /// the replies this thread took.
        fn input(&self, seqnum: u32) -> Option<Vec<u8>> {
            self.input_with(|| seqnum)
        }

        /// As [`Fixture::input`], the seqnum chosen under the bus lock (inputs reach the link
        /// in seqnum order).
        fn input_with(&self, seqnum: impl FnOnce() -> u32) -> Option<Vec<u8>> {
            let mut bus = self.bus.lock();
            let mut l = lock(&self.tx.link);
            self.feed(&mut bus, &mut l, seqnum());
            self.tx.take(&mut l)
        }

        /// The CMD_SUBMIT of [`Fixture::input`], handled and left in the link.
        fn feed(&self, bus: &mut Bus, l: &mut Link, seqnum: u32) {
            let header = CmdSubmitRepr {
                seqnum,
                devid: 0x0001_0002,
                direction: Direction::In,
                ep: 1,
                transfer_flags: 0x200,
                transfer_buffer_length: 64,
                start_frame: 0,
                number_of_packets: 0,
                interval: 0,
                setup: [0; 8],
            };
            self.host
                .lock()
                .unwrap()
                .submitted(seqnum, UrbShape::of(&header, false));
            let bytes = DevicePdu::Submit(CmdSubmit {
                header,
                data: Vec::new(),
                iso_packets: Vec::new(),
            })
            .to_vec();
            l.handle_input(bus, Instant::ZERO, &bytes)
                .expect("input accepted");
        }

        /// A reply made (as [`Fixture::input`]) and left in the link by a thread that is not
        /// writing, then the flush of a client that still owes an ep0 answer
        /// ([`ClientFlush::collect_owing`]): the replies it takes.
        fn made_then_owing(&self, seqnum: u32) -> Option<Vec<u8>> {
            {
                let mut bus = self.bus.lock();
                self.feed(&mut bus, &mut lock(&self.tx.link), seqnum);
            }
            self.owing()
        }

        fn owing(&self) -> Option<Vec<u8>> {
            let mut bus = self.bus.lock();
            ClientOutput::take(&*self.tx, &mut bus, true).unwrap().bytes
        }

        /// The seqnums of the RET_SUBMITs written, in order, decoded as vhci would.
        fn written_seqnums(&self) -> Vec<u32> {
            let bytes = self.recorder.written.lock().unwrap().clone();
            let mut host = self.host.lock().unwrap();
            let mut rest = &bytes[..];
            let mut seqnums = Vec::new();
            while !rest.is_empty() {
                let (used, step) = host.decode(rest).expect("vhci accepts every reply");
                rest = &rest[used..];
                match step {
                    HostStep::Pdu(HostPdu::RetSubmit { header, .. }) => seqnums.push(header.seqnum),
                    HostStep::Pdu(p) => panic!("unexpected reply {p:?}"),
                    HostStep::NeedMore(n) => panic!("a reply cut short, {n} bytes missing"),
                }
            }
            seqnums
        }
    }

    /// contract P4 (module doc "Who writes"): a reply made while another thread writes is not
    /// taken by its maker; the writing thread finds it under the link lock before it clears
    /// the flag, and writes it after its own.
    #[test]
    fn p4_reply_made_during_a_write_is_written_by_the_writing_thread() {
        let f = Arc::new(Fixture::new());
        let first = f
            .input(1)
            .expect("nobody writes: the maker takes its reply");
        f.recorder.close_gate();
        let writer = {
            let f = f.clone();
            thread::spawn(move || f.tx.write_taken(first))
        };
        f.recorder.wait_held();
        assert_eq!(
            f.input(2),
            None,
            "the flag is held: the reply stays in the link"
        );
        assert!(f.tx.writing.load(Ordering::SeqCst));
        f.recorder.open_gate();
        writer.join().unwrap().unwrap();
        assert_eq!(f.written_seqnums(), [1, 2]);
        assert!(!f.tx.writing.load(Ordering::SeqCst), "flag released");
        assert!(!lock(&f.tx.link).has_output(), "nothing stranded");
    }

    /// contract P4, "Write-behind": a client that owes the answer to a presented
    /// SETUP leaves its replies in the link (no write of its own, nothing for the writer's
    /// wake), and the flush after its last answer takes them all for one write, in order.
    #[test]
    fn p4_owing_client_leaves_replies_for_one_write() {
        let f = Fixture::new();
        assert_eq!(f.made_then_owing(1), None, "owing: left in the link");
        assert_eq!(f.made_then_owing(2), None, "still owing: left in the link");
        assert!(lock(&f.tx.link).has_output());
        assert!(
            !f.tx.writing.load(Ordering::SeqCst),
            "nobody holds the flag"
        );
        let all = {
            let mut bus = f.bus.lock();
            ClientOutput::take(&*f.tx, &mut bus, false).unwrap().bytes
        }
        .expect("the last answer's flush takes everything");
        f.tx.write_taken(all).unwrap();
        assert_eq!(f.written_seqnums(), [1, 2], "one write, in order");
        assert!(!lock(&f.tx.link).has_output(), "nothing stranded");
    }

    /// contract P4, "Write-behind": replies left behind are written by whoever writes
    /// next (here the reader's take after an input), before that one's own.
    #[test]
    fn p4_replies_left_behind_go_with_the_next_write() {
        let f = Fixture::new();
        assert_eq!(f.made_then_owing(1), None);
        let taken = f.input(2).expect("the reader takes both");
        f.tx.write_taken(taken).unwrap();
        assert_eq!(f.written_seqnums(), [1, 2]);
    }

    /// contract P4, "Write-behind": a client that keeps owing (slow answers) writes
    /// what waited [`MAX_WRITE_BEHIND`] at its next operation.
    #[test]
    fn p4_owing_client_writes_overdue_replies() {
        let f = Fixture::new();
        assert_eq!(f.made_then_owing(1), None);
        thread::sleep(MAX_WRITE_BEHIND + Duration::from_millis(1));
        let taken = f.made_then_owing(2).expect("overdue: taken");
        f.tx.write_taken(taken).unwrap();
        assert_eq!(f.written_seqnums(), [1, 2]);
        // the clock starts again with the next reply left behind
        assert_eq!(f.made_then_owing(3), None);
    }

    /// contract P4, "Write-behind": replies left behind while the writer thread
    /// sleeps past their deadline wake it once (not for every reply left behind after them),
    /// and the writer, woken, takes them only once they are due.
    #[test]
    fn p4_replies_left_behind_wake_a_sleeping_writer_once() {
        let f = Fixture::new();
        let far = f.tx.stamp(StdInstant::now() + Duration::from_millis(500));
        f.tx.writer_until.store(far, Ordering::SeqCst);
        let first = {
            let mut bus = f.bus.lock();
            let mut l = lock(&f.tx.link);
            f.feed(&mut bus, &mut l, 1);
            f.tx.take_if_overdue(&mut l)
        };
        assert!(first.bytes.is_none());
        assert!(
            first.wake_writer,
            "the writer would sleep past the deadline"
        );
        assert!(
            f.tx.take_unless_behind(&mut lock(&f.tx.link)).is_none(),
            "the writer leaves them until due"
        );
        let second = {
            let mut bus = f.bus.lock();
            let mut l = lock(&f.tx.link);
            f.feed(&mut bus, &mut l, 2);
            f.tx.take_if_overdue(&mut l)
        };
        assert!(second.bytes.is_none());
        assert!(!second.wake_writer, "already told");
        thread::sleep(MAX_WRITE_BEHIND + Duration::from_millis(1));
        let taken =
            f.tx.take_unless_behind(&mut lock(&f.tx.link))
                .expect("due: the writer takes them");
        f.tx.write_taken(taken).unwrap();
        assert_eq!(f.written_seqnums(), [1, 2]);
    }

    /// contract P4: threads racing to make and write replies (the reader, client threads,
    /// the writer) write every reply exactly once, in the order the link made them (two
    /// threads writing at once would interleave them), and leave the flag clear.
    #[test]
    fn p4_racing_writers_strand_nothing_and_keep_the_order() {
        let f = Arc::new(Fixture::new());
        let next = Arc::new(std::sync::atomic::AtomicU32::new(1));
        const PER_THREAD: u32 = 500;
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (f, next) = (f.clone(), next.clone());
                thread::spawn(move || {
                    for _ in 0..PER_THREAD {
                        let taken = f.input_with(|| next.fetch_add(1, Ordering::SeqCst));
                        if let Some(bytes) = taken {
                            f.tx.write_taken(bytes).unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let written = f.written_seqnums();
        assert_eq!(
            written.len(),
            3 * PER_THREAD as usize,
            "every reply written once"
        );
        assert!(
            written.windows(2).all(|w| w[0] < w[1]),
            "replies leave in the order the link made them"
        );
        assert!(!f.tx.writing.load(Ordering::SeqCst));
        assert!(!lock(&f.tx.link).has_output());
    }
}
