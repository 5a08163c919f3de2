//! The CUSE server: the shell around the codec ([`crate::proto`], [`crate::ioctl`]) and the
//! engine. It decides nothing about raw gadget: every ioctl becomes a [`ClientOp`] on the
//! instance's bus, every result goes back as the module would copy it.
//!
//! Threads:
//!
//! - **the readers** ([`Server::run`], [`ServeConfig::readers`] of them) read `/dev/cuse`
//!   concurrently (the kernel hands each request to one reader), each with its own
//!   [`READ_BUFFER_SIZE`] buffer (contract C7), and handle each request inline: OPEN creates
//!   an instance, an ioctl round is decoded and either answered, retried or run on the
//!   engine. An ioctl that does not block is answered by the reader that read it, with no
//!   other thread involved. An op that blocks (EVENT_FETCH, transfers) is registered by its
//!   `unique` with a completion hook on the instance's bus and the reader moves on: it never
//!   waits for the host, so any number of calls can be blocked across threads and instances,
//!   and while one reader runs an op the others keep reading. FUSE_INTERRUPT cancels the
//!   registered op (contract C8, C9), or is answered EAGAIN when its request is unknown
//!   (never ENOSYS, which would switch interrupts off for good); an interrupt read by one
//!   reader before another has registered its op gets EAGAIN and comes back.
//! - **no thread per blocked op**: the hook answers a blocked op in the thread that
//!   completes it (the USB/IP reader that brought the host's URB, or a reader handling an
//!   interrupt or a release), writing results into the caller's memory on the fast path.
//! - **one worker per instance**, started by its RUN, only attaches the device to the host
//!   (slow: sysfs, sockets) and detaches it after release. It sleeps on its own mailbox, so
//!   ioctls never wake it.
//!
//! Per non-blocking ioctl that is one read and one write on `/dev/cuse` (plus one
//! `process_vm_readv` / `process_vm_writev` on the fast path when the ioctl has an argument
//! in memory), and the engine's lock; no thread wakes but the caller. A blocked transfer
//! adds the host's side only: its completion writes the reply directly. An ioctl that
//! completes a URB the host waits for (an ep0 data or status stage, an EP_WRITE for a
//! waiting IN URB) writes the host's USB/IP reply itself, first, where the host's
//! connection allows it ([`HostDevice::client_flush`], contract P4): the link's writer
//! thread is not woken for it, and the host does not wait for that thread to be scheduled.
//!
//! Replies are whole messages, written by whichever thread has the result; the kernel matches
//! them by `unique`. An op's reply is written by whoever removes it from the instance's
//! pending table, so it is answered exactly once.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use rawgadget_engine::{ClientOp, OpId, OpResult, Outcome, State};
use rawgadget_loopback::SharedBus;
use rawgadget_uapi::{Errno, UsbRawInit, UDC_NAME_LENGTH_MAX};
use rawgadget_usbip_udc::ClientFlush;

use crate::host::{Host, HostDevice};
use crate::ioctl::{self, Call, ClientMemory, Decision, MemError, Path, RawIoctl};
use crate::proto::{
    reply_cuse_init, reply_empty, reply_error, reply_ioctl, reply_ioctl_retry, reply_open,
    CuseInitOut, InHeader, IoctlIn, OpenIn, OpenOut, Operation, ReleaseIn, Request,
    CUSE_UNRESTRICTED_IOCTL, FUSE_KERNEL_MINOR_VERSION, FUSE_KERNEL_VERSION,
    FUSE_MIN_MINOR_VERSION, O_NONBLOCK, READ_BUFFER_SIZE,
};

/// The fuse device as the server uses it: `/dev/cuse` ([`crate::sys::CuseChannel`]) or a test
/// double.
pub trait Channel: Send + Sync + 'static {
    /// Reads one request into `buf` (at least [`READ_BUFFER_SIZE`] bytes); returns its length.
    ///
    /// # Errors
    /// ENODEV or ECONNABORTED once the connection is gone; EINTR, EAGAIN and ENOENT are
    /// retried.
    fn read_request(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one reply.
    ///
    /// # Errors
    /// ENOENT when the request is gone (its caller was killed before it was read, or the
    /// connection aborted); logged and otherwise ignored.
    fn write_reply(&self, msg: &[u8]) -> io::Result<()>;
}

/// Another process's memory by thread id (contract C11): `process_vm_readv/writev`
/// ([`crate::sys::ProcessVm`]) or a test double.
pub trait ProcessMemory: Send + Sync + 'static {
    /// # Errors
    /// [`MemError::Fault`] for an unmapped address, [`MemError::Unavailable`] when the
    /// process cannot be reached.
    fn read(&self, pid: u32, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;
    /// # Errors
    /// As [`ProcessMemory::read`].
    fn write(&self, pid: u32, addr: u64, data: &[u8]) -> Result<(), MemError>;
}

/// How the server behaves.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The node's name under /dev (CUSE's DEVNAME). Default `raw-gadget`.
    pub devname: String,
    /// How many `dummy_udc.N` names exist (N = 0..udcs), as `dummy_hcd.num` would make.
    /// Each RUNning instance holds one; a second RUN on a held name fails with EBUSY
    /// (contract D2). Default 1, dummy_hcd's default.
    pub udcs: u32,
    /// Use the fast path (contract C11) when the caller's memory can be reached. Default on.
    pub fast_path: bool,
    /// Threads reading `/dev/cuse` at once (at least 1). More than one lets requests of
    /// other callers go on while one is being handled. Default 4.
    pub readers: usize,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            devname: "raw-gadget".into(),
            udcs: 1,
            fast_path: true,
            readers: 4,
        }
    }
}

/// Why the server stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reading /dev/cuse: {0}")]
    Io(#[from] io::Error),
    #[error("the kernel's first message was not CUSE_INIT ({0})")]
    NotInit(String),
    #[error("CUSE_INIT: {0}")]
    InitRefused(String),
}

/// Counters, for logs, tests and the bench.
#[derive(Debug, Default)]
struct Counters {
    opens: AtomicU64,
    releases: AtomicU64,
    ops_run: AtomicU64,
    fast_path: AtomicU64,
    retry_rounds: AtomicU64,
    interrupts: AtomicU64,
    interrupts_unknown: AtomicU64,
    blocked: AtomicU64,
}

/// A snapshot of the server's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub opens: u64,
    pub releases: u64,
    /// Ioctls that reached the engine.
    pub ops_run: u64,
    /// Of those, how many took the fast path.
    pub fast_path: u64,
    /// FUSE_IOCTL_RETRY replies sent.
    pub retry_rounds: u64,
    pub interrupts: u64,
    /// Interrupts answered EAGAIN (request unknown, contract C8).
    pub interrupts_unknown: u64,
    /// Ops that blocked and were answered later.
    pub blocked: u64,
    /// Instances open now.
    pub instances: u64,
    /// Ops blocked now.
    pub in_flight: u64,
}

/// What the final reply of a blocked or finished op needs.
#[derive(Clone, Copy, Debug)]
struct Target {
    unique: u64,
    ioctl: RawIoctl,
    arg: u64,
    path: Path,
    pid: u32,
}

/// Commands for an instance's worker (guarded by `Slot::mailbox`, signalled by `Slot::mail`).
#[derive(Debug, Default)]
struct Mailbox {
    attach: Option<u32>,
    close: bool,
}

/// The UDC name bookkeeping of one instance (contract D2 across instances).
#[derive(Debug, Default)]
struct UdcName {
    /// `dummy_udc.N` asked for by a successful INIT.
    requested: Option<u32>,
    /// That INIT as the client gave it, to rebuild the instance if the name is taken at RUN.
    init: Option<Box<UsbRawInit>>,
}

/// One open file: its device (bus and host connection) and its blocked ops.
#[derive(Debug)]
struct Slot {
    fh: u64,
    device: Mutex<Box<dyn HostDevice>>,
    /// The device's bus; replaced only while INITIALIZED (a taken UDC name), before any op
    /// can block.
    bus: Mutex<Arc<SharedBus>>,
    /// The device's [`HostDevice::client_flush`], replaced with `bus`.
    flush: Mutex<Option<ClientFlush>>,
    pending: Mutex<HashMap<OpId, Target>>,
    udc: Mutex<UdcName>,
    mailbox: Mutex<Mailbox>,
    mail: Condvar,
    worker: AtomicBool,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // our critical sections leave plain data consistent; a panic elsewhere must not stop us
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Slot {
    fn bus(&self) -> Arc<SharedBus> {
        lock(&self.bus).clone()
    }
}

/// The caller's memory for one request.
struct PidMemory<'a> {
    memory: &'a dyn ProcessMemory,
    pid: u32,
    unavailable: Option<Errno>,
}

impl ClientMemory for PidMemory<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let r = self.memory.read(self.pid, addr, buf);
        if let Err(MemError::Unavailable(e)) = r {
            self.unavailable = Some(e);
        }
        r
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.memory.write(self.pid, addr, data)
    }
}

struct Inner {
    channel: Arc<dyn Channel>,
    memory: Arc<dyn ProcessMemory>,
    host: Arc<dyn Host>,
    config: ServeConfig,
    instances: Mutex<HashMap<u64, Arc<Slot>>>,
    /// unique of a blocked request → (fh, op).
    inflight: Mutex<HashMap<u64, (u64, OpId)>>,
    /// `dummy_udc.N` → the fh of the instance RUNning on it.
    claims: Mutex<HashMap<u32, u64>>,
    next_fh: AtomicU64,
    counters: Counters,
    fast_path_notice: AtomicBool,
}

/// See the module doc. Cheap to clone; every clone is the same server.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Server {
    pub fn new(
        channel: Arc<dyn Channel>,
        memory: Arc<dyn ProcessMemory>,
        host: Arc<dyn Host>,
        config: ServeConfig,
    ) -> Server {
        Server {
            inner: Arc::new(Inner {
                channel,
                memory,
                host,
                config: ServeConfig {
                    udcs: config.udcs.max(1),
                    ..config
                },
                instances: Mutex::default(),
                inflight: Mutex::default(),
                claims: Mutex::default(),
                next_fh: AtomicU64::new(1),
                counters: Counters::default(),
                fast_path_notice: AtomicBool::new(false),
            }),
        }
    }

    pub fn config(&self) -> &ServeConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Answers the kernel's CUSE_INIT: protocol 7.x with x = min(kernel's, 41) and at least
    /// 16 (contract C12), unrestricted ioctls (C1), a dynamic device number, DEVNAME. The
    /// node appears after this returns.
    ///
    /// # Errors
    /// [`ServeError`] when the first message is not CUSE_INIT or the kernel lacks what we
    /// need; the caller should close the channel.
    pub fn init(&self) -> Result<CuseInitOut, ServeError> {
        let mut buf = vec![0u8; READ_BUFFER_SIZE];
        let n = loop {
            match self.inner.channel.read_request(&mut buf) {
                Ok(n) => break n,
                Err(e) if retryable(&e) => continue,
                Err(e) => return Err(ServeError::Io(e)),
            }
        };
        let req = Request::parse(&buf[..n]).map_err(|e| ServeError::NotInit(e.to_string()))?;
        let Operation::CuseInit(k) = req.op else {
            return Err(ServeError::NotInit(req.to_string()));
        };
        let unique = req.header.unique;
        let refuse = |why: String| {
            self.inner.send(reply_error(unique, Errno::EPROTO));
            Err(ServeError::InitRefused(why))
        };
        if k.major != FUSE_KERNEL_VERSION {
            return refuse(format!(
                "kernel speaks FUSE {}.{}, we need 7.x",
                k.major, k.minor
            ));
        }
        if k.minor < FUSE_MIN_MINOR_VERSION {
            return refuse(format!(
                "kernel speaks FUSE 7.{}, we need 7.{FUSE_MIN_MINOR_VERSION} (64-bit ioctl iovecs)",
                k.minor
            ));
        }
        if k.flags & CUSE_UNRESTRICTED_IOCTL == 0 {
            return refuse("the kernel does not offer CUSE_UNRESTRICTED_IOCTL".into());
        }
        let out = CuseInitOut {
            major: FUSE_KERNEL_VERSION,
            minor: k.minor.min(FUSE_KERNEL_MINOR_VERSION),
            flags: CUSE_UNRESTRICTED_IOCTL,
            // read() and write() are refused, so the smallest sizes do; they also keep the
            // kernel's minimum read buffer at 8 KiB (contract C7)
            max_read: 4096,
            max_write: 4096,
            dev_major: 0,
            dev_minor: 0,
        };
        let mut devinfo = format!("DEVNAME={}", self.inner.config.devname).into_bytes();
        devinfo.push(0);
        self.inner.send(reply_cuse_init(unique, &out, &devinfo));
        tracing::info!(
            minor = out.minor,
            devname = %self.inner.config.devname,
            "CUSE_INIT answered: FUSE 7.{}, unrestricted ioctls",
            out.minor
        );
        Ok(out)
    }

    /// The readers ([`ServeConfig::readers`], this thread one of them): handle requests until
    /// the connection ends (the channel reports ENODEV or ECONNABORTED, or reads 0 bytes),
    /// which returns `Ok` once every reader has stopped.
    ///
    /// # Errors
    /// Any other read error.
    pub fn run(&self) -> Result<(), ServeError> {
        let extra = self.inner.config.readers.max(1) - 1;
        let mut others = Vec::with_capacity(extra);
        for i in 0..extra {
            let me = self.clone();
            let spawned = thread::Builder::new()
                .name(format!("cuse-reader{}", i + 1))
                .spawn(move || me.read_loop());
            match spawned {
                Ok(t) => others.push(t),
                // one reader is enough to serve, only slower
                Err(e) => tracing::warn!("cannot start reader {}: {e}", i + 1),
            }
        }
        let mine = self.read_loop();
        for t in others {
            match t.join() {
                Ok(Err(e)) => tracing::warn!("a reader stopped: {e}"),
                Ok(Ok(())) => {}
                Err(_) => tracing::error!("a reader panicked"),
            }
        }
        mine
    }

    /// One reader: handles requests until the connection ends.
    fn read_loop(&self) -> Result<(), ServeError> {
        let mut buf = vec![0u8; READ_BUFFER_SIZE];
        loop {
            let n = match self.inner.channel.read_request(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if retryable(&e) => continue,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENODEV) | Some(libc::ECONNABORTED)
                    ) =>
                {
                    tracing::info!("the CUSE connection ended: {e}");
                    return Ok(());
                }
                Err(e) => return Err(ServeError::Io(e)),
            };
            let msg = &buf[..n];
            match Request::parse(msg) {
                Ok(req) => self.inner.handle(req),
                Err(e) => {
                    tracing::warn!("malformed request: {e}");
                    // answer what we can, so the caller is not left waiting
                    if let Ok(h) = InHeader::parse(msg) {
                        self.inner.send(reply_error(h.unique, Errno::EIO));
                    }
                }
            }
        }
    }

    /// Closes every instance (as release would) and detaches its device: for a clean exit.
    pub fn shutdown(&self) {
        let slots: Vec<Arc<Slot>> = lock(&self.inner.instances)
            .drain()
            .map(|(_, s)| s)
            .collect();
        for slot in slots {
            self.inner.close_slot(&slot);
        }
    }
}

fn retryable(e: &io::Error) -> bool {
    // EINTR: a signal; EAGAIN: nonblocking; ENOENT: the request vanished while being read
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::ENOENT)
    )
}

/// `dummy_udc.N` → N, written as the kernel names it (no sign, no leading zeros).
fn dummy_udc_index(name: &[u8]) -> Option<u32> {
    let digits = name.strip_prefix(b"dummy_udc.")?;
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn c_name(b: &[u8; UDC_NAME_LENGTH_MAX]) -> Option<&[u8]> {
    let end = b.iter().position(|&c| c == 0)?;
    Some(&b[..end])
}

impl Inner {
    fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            opens: c.opens.load(Ordering::Relaxed),
            releases: c.releases.load(Ordering::Relaxed),
            ops_run: c.ops_run.load(Ordering::Relaxed),
            fast_path: c.fast_path.load(Ordering::Relaxed),
            retry_rounds: c.retry_rounds.load(Ordering::Relaxed),
            interrupts: c.interrupts.load(Ordering::Relaxed),
            interrupts_unknown: c.interrupts_unknown.load(Ordering::Relaxed),
            blocked: c.blocked.load(Ordering::Relaxed),
            instances: lock(&self.instances).len() as u64,
            in_flight: lock(&self.inflight).len() as u64,
        }
    }

    fn send(&self, msg: Vec<u8>) {
        if let Err(e) = self.channel.write_reply(&msg) {
            if e.raw_os_error() == Some(libc::ENOENT) {
                tracing::debug!("reply for a request that is gone: {e}");
            } else {
                tracing::warn!("writing a reply to /dev/cuse: {e}");
            }
        }
    }

    fn handle(self: &Arc<Self>, req: Request<'_>) {
        let h = req.header;
        tracing::trace!(%req, "request");
        match req.op {
            Operation::Open(o) => self.open(&h, o),
            Operation::Release(r) => self.release(&h, r),
            Operation::Ioctl { arg, data } => self.ioctl(&h, &arg, data),
            Operation::Interrupt(i) => self.interrupt(&h, i.unique),
            // contract C12: the module has no read/write, so the VFS says EINVAL
            Operation::Read(_) | Operation::Write { .. } => {
                self.send(reply_error(h.unique, Errno::EINVAL))
            }
            // contract C12: ENOSYS once, then the kernel answers DEFAULT_POLLMASK itself
            Operation::Poll(_) => self.send(reply_error(h.unique, Errno::ENOSYS)),
            Operation::Forget => {}
            Operation::CuseInit(_) => self.send(reply_error(h.unique, Errno::EINVAL)),
            Operation::Other { opcode } => {
                tracing::debug!(opcode, "unexpected FUSE opcode: ENOSYS");
                self.send(reply_error(h.unique, Errno::ENOSYS));
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // open / release

    fn open(self: &Arc<Self>, h: &InHeader, o: OpenIn) {
        // spec §1.1: "Nonblocking I/O is not supported yet" (raw_gadget.c:432)
        if o.flags & O_NONBLOCK != 0 {
            self.send(reply_error(h.unique, Errno::EINVAL));
            return;
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let device = self.host.new_device();
        let bus = device.bus();
        let flush = device.client_flush();
        let slot = Arc::new(Slot {
            fh,
            device: Mutex::new(device),
            bus: Mutex::new(bus),
            flush: Mutex::new(flush),
            pending: Mutex::default(),
            udc: Mutex::default(),
            mailbox: Mutex::default(),
            mail: Condvar::new(),
            worker: AtomicBool::new(false),
        });
        lock(&self.instances).insert(fh, slot);
        self.counters.opens.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(fh, pid = h.pid, "open");
        self.send(reply_open(
            h.unique,
            &OpenOut {
                fh,
                open_flags: 0,
                backing_id: 0,
            },
        ));
    }

    /// `raw_release` (spec §2.6): the instance unbinds and its UDC name is free again before
    /// the close returns; the host connection goes in the background.
    fn release(self: &Arc<Self>, h: &InHeader, r: ReleaseIn) {
        let slot = lock(&self.instances).remove(&r.fh);
        if let Some(slot) = slot {
            self.close_slot(&slot);
            self.counters.releases.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(fh = r.fh, "release");
            tracing::info!(fh = r.fh, stats = ?self.stats(), "instance released");
        }
        self.send(reply_empty(h.unique));
    }

    fn close_slot(self: &Arc<Self>, slot: &Arc<Slot>) {
        // every op still blocked ends with ESHUTDOWN; its hook answers it, here
        slot.bus().with(|b| b.close());
        lock(&self.claims).retain(|_, fh| *fh != slot.fh);
        if slot.worker.load(Ordering::SeqCst) {
            lock(&slot.mailbox).close = true;
            slot.mail.notify_one();
        } else {
            lock(&slot.device).detach();
        }
    }

    // ----------------------------------------------------------------------------------------
    // ioctl

    fn ioctl(self: &Arc<Self>, h: &InHeader, arg: &IoctlIn, data: &[u8]) {
        let Some(slot) = lock(&self.instances).get(&arg.fh).cloned() else {
            tracing::warn!(fh = arg.fh, "FUSE_IOCTL for an unknown file handle");
            self.send(reply_error(h.unique, Errno::EBADF));
            return;
        };
        let fast = self.config.fast_path && h.pid != 0;
        let mut mem = PidMemory {
            memory: self.memory.as_ref(),
            pid: h.pid,
            unavailable: None,
        };
        let (decision, path) = ioctl::decode(
            arg,
            data,
            if fast {
                Some(&mut mem as &mut dyn ClientMemory)
            } else {
                None
            },
        );
        if let Some(e) = mem.unavailable {
            if !self.fast_path_notice.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    errno = %e,
                    "fast path unavailable for pid {} ({e}); using the retry protocol (128 KiB \
                     per transfer). Run as root with CAP_SYS_PTRACE and Yama ptrace_scope < 3 \
                     to lift it",
                    h.pid
                );
            }
        }
        match decision {
            Decision::Fail(e) => {
                tracing::debug!(cmd = format_args!("{:#x}", arg.cmd), %e, "ioctl refused");
                self.send(reply_error(h.unique, e));
            }
            Decision::Retry(iovs) => {
                self.counters.retry_rounds.fetch_add(1, Ordering::Relaxed);
                self.send(reply_ioctl_retry(h.unique, iovs.input(), iovs.output()));
            }
            Decision::Run(call) => {
                let target = Target {
                    unique: h.unique,
                    ioctl: call.ioctl,
                    arg: arg.arg,
                    path,
                    pid: h.pid,
                };
                self.run_call(&slot, target, call);
            }
        }
    }

    fn run_call(self: &Arc<Self>, slot: &Arc<Slot>, target: Target, call: Call) {
        let Call { ioctl, mut op } = call;
        self.counters.ops_run.fetch_add(1, Ordering::Relaxed);
        if target.path == Path::Fast {
            self.counters.fast_path.fetch_add(1, Ordering::Relaxed);
        }
        // contract D2 across instances: map dummy_udc.N onto the instance's own controller
        let mut init_copy = None;
        let mut requested = None;
        let mut claimed = None;
        match &mut op {
            ClientOp::Init(init) => {
                init_copy = Some(init.clone());
                requested = self.map_udc_name(init);
            }
            ClientOp::Run { arg: 0 } => claimed = self.prepare_run(slot),
            _ => {}
        }
        let bus = slot.bus();
        let flush = lock(&slot.flush).clone();
        // only what a host can see wakes the host's threads (SharedBus::client_quiet), and
        // what this thread takes in hand is not that
        let (outcome, (finished, replies)) = bus.client_quiet_then(
            op,
            |id| {
                // recorded under the bus lock, before anyone can complete or interrupt it
                lock(&slot.pending).insert(id, target);
                lock(&self.inflight).insert(target.unique, (slot.fh, id));
            },
            |b, out| {
                // an op that blocked and is already done (an EP0_READ or EP_WRITE the host's
                // URB was waiting for): answered here, no hook
                let finished = match out {
                    Outcome::Pending(id) => b.take_completion(*id),
                    Outcome::Done(_) => None,
                };
                // contract P4: the host's replies this op produced go out from this thread,
                // not through a wakeup of the link's writer
                (finished, flush.as_ref().and_then(|f| f.take_replies(b)))
            },
        );
        // the host's reply first: it is what the host waits for (P4)
        if let Some(w) = replies {
            w.write();
        }
        let r = match (outcome, finished) {
            (Outcome::Done(r), _) => r,
            (Outcome::Pending(id), Some(r)) => {
                lock(&slot.pending).remove(&id);
                lock(&self.inflight).remove(&target.unique);
                r
            }
            (Outcome::Pending(id), None) => {
                self.counters.blocked.fetch_add(1, Ordering::Relaxed);
                // answered by whichever thread completes it (at once if it already has)
                let (me, slot2) = (self.clone(), slot.clone());
                bus.on_op_complete(id, Box::new(move |r| me.finish_pending(&slot2, id, r)));
                return;
            }
        };
        match ioctl {
            RawIoctl::Init if r.ret.is_ok() => {
                let mut u = lock(&slot.udc);
                u.requested = requested;
                u.init = init_copy;
            }
            RawIoctl::Run => match (&r.ret, claimed) {
                (Ok(_), _) => {
                    let udc = claimed.or(lock(&slot.udc).requested).unwrap_or(0);
                    self.post(slot, |m| m.attach = Some(udc));
                }
                (Err(_), Some(n)) => {
                    lock(&self.claims).remove(&n);
                }
                (Err(_), None) => {}
            },
            _ => {}
        }
        self.reply_result(&target, r);
    }

    /// INIT: a `dummy_udc.N` device name with N below `udcs` is rewritten to the name of the
    /// instance's own controller, `dummy_udc.0`. Other names pass unchanged and fail at RUN
    /// with EBUSY as on the module (contract D2).
    fn map_udc_name(&self, init: &mut UsbRawInit) -> Option<u32> {
        let n = dummy_udc_index(c_name(&init.device_name)?)?;
        if n >= self.config.udcs {
            return None;
        }
        init.device_name = [0; UDC_NAME_LENGTH_MAX];
        init.device_name[..11].copy_from_slice(b"dummy_udc.0");
        Some(n)
    }

    /// RUN in INITIALIZED: claim the name; if another instance runs on it, rebuild this
    /// instance with a name no controller has, so that RUN fails with EBUSY and leaves it
    /// FAILED, as the UDC core does (contract D2, spec §1.5 RUN).
    fn prepare_run(self: &Arc<Self>, slot: &Arc<Slot>) -> Option<u32> {
        if slot.bus().lock().instance().state() != State::Initialized {
            return None;
        }
        let udc = lock(&slot.udc);
        let n = udc.requested?;
        {
            let mut claims = lock(&self.claims);
            match claims.get(&n) {
                None => {
                    claims.insert(n, slot.fh);
                    return Some(n);
                }
                Some(&holder) => tracing::debug!(fh = slot.fh, holder, "dummy_udc.{n} is taken"),
            }
        }
        let mut init = udc.init.clone()?;
        init.device_name = [0; UDC_NAME_LENGTH_MAX];
        let device = self.host.new_device();
        let bus = device.bus();
        let r = bus.with(|b| b.client(ClientOp::Init(init)));
        debug_assert!(matches!(r, Outcome::Done(ref r) if r.ret.is_ok()));
        *lock(&slot.flush) = device.client_flush();
        *lock(&slot.device) = device;
        *lock(&slot.bus) = bus;
        None
    }

    /// Writes `r` back as the module would copy it and answers the request.
    fn reply_result(self: &Arc<Self>, t: &Target, r: OpResult) {
        let msg = match r.ret {
            Err(e) => reply_error(t.unique, e),
            Ok(v) => {
                let result = i32::try_from(v).unwrap_or(i32::MAX);
                match (t.ioctl.write_back().bytes(&r), t.path) {
                    (None, _) => reply_ioctl(t.unique, result, &[]),
                    // into the out iovec the previous round asked for
                    (Some((_, bytes)), Path::Retry) => reply_ioctl(t.unique, result, &bytes),
                    (Some((off, bytes)), Path::Fast) => {
                        match self.memory.write(t.pid, t.arg.wrapping_add(off), &bytes) {
                            Ok(()) => reply_ioctl(t.unique, result, &[]),
                            // as copy_to_user failing in the module: the op happened
                            Err(e) => {
                                tracing::debug!(?e, "copy-out failed: EFAULT");
                                reply_error(t.unique, Errno::EFAULT)
                            }
                        }
                    }
                }
            }
        };
        self.send(msg);
    }

    /// Answers blocked op `id` with `r`, if nobody has.
    fn finish_pending(self: &Arc<Self>, slot: &Slot, id: OpId, r: OpResult) {
        let Some(t) = lock(&slot.pending).remove(&id) else {
            return;
        };
        // forgotten before the reply: an interrupt in between is answered EAGAIN and comes
        // back once the reply is in (or finds no request), so it never cancels a reused id
        lock(&self.inflight).remove(&t.unique);
        self.reply_result(&t, r);
    }

    // ----------------------------------------------------------------------------------------
    // interrupt

    /// FUSE_INTERRUPT (contract C8): cancel the blocked op like a signal (EINTR only if it
    /// really was still waiting, C9) and answer the original request; an unknown request is
    /// answered EAGAIN so the kernel queues the interrupt again.
    fn interrupt(self: &Arc<Self>, h: &InHeader, target: u64) {
        self.counters.interrupts.fetch_add(1, Ordering::Relaxed);
        let found = lock(&self.inflight).get(&target).copied();
        let slot = found.and_then(|(fh, _)| lock(&self.instances).get(&fh).cloned());
        let (Some((_, id)), Some(slot)) = (found, slot) else {
            self.counters
                .interrupts_unknown
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target, "interrupt for an unknown request: EAGAIN");
            self.send(reply_error(h.unique, Errno::EAGAIN));
            return;
        };
        // the op's hook answers it (here, once the lock is free) if the cancel ended it
        slot.bus().with(|b| b.cancel(id));
    }

    // ----------------------------------------------------------------------------------------
    // worker

    fn post(self: &Arc<Self>, slot: &Arc<Slot>, f: impl FnOnce(&mut Mailbox)) {
        self.ensure_worker(slot);
        f(&mut lock(&slot.mailbox));
        slot.mail.notify_one();
    }

    fn ensure_worker(self: &Arc<Self>, slot: &Arc<Slot>) {
        if slot.worker.swap(true, Ordering::SeqCst) {
            return;
        }
        let slot2 = slot.clone();
        let spawned = thread::Builder::new()
            .name(format!("cuse-fh{}", slot.fh))
            .stack_size(256 * 1024)
            .spawn(move || worker(slot2));
        if let Err(e) = spawned {
            tracing::error!("cannot start the worker of fh {}: {e}", slot.fh);
            slot.worker.store(false, Ordering::SeqCst);
        }
    }
}

fn worker(slot: Arc<Slot>) {
    let span = tracing::debug_span!("instance", fh = slot.fh);
    let _g = span.enter();
    loop {
        let (attach, close) = {
            let mut m = lock(&slot.mailbox);
            while m.attach.is_none() && !m.close {
                m = slot.mail.wait(m).unwrap_or_else(|e| e.into_inner());
            }
            (m.attach.take(), m.close)
        };
        if let (Some(udc), false) = (attach, close) {
            match lock(&slot.device).attach(udc) {
                Ok(text) => tracing::info!(fh = slot.fh, "dummy_udc.{udc}: {text}"),
                Err(e) => tracing::error!(fh = slot.fh, "dummy_udc.{udc}: attach failed: {e}"),
            }
        }
        if close {
            lock(&slot.device).detach();
            return;
        }
    }
}

/// Answers the first CUSE_INIT and serves until the connection ends: [`Server::init`] then
/// [`Server::run`] on the calling thread.
///
/// # Errors
/// As those two.
pub fn serve(server: &Server) -> Result<(), ServeError> {
    server.init()?;
    server.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_udc_names() {
        assert_eq!(dummy_udc_index(b"dummy_udc.0"), Some(0));
        assert_eq!(dummy_udc_index(b"dummy_udc.31"), Some(31));
        for bad in [
            &b"dummy_udc"[..],
            b"dummy_udc.",
            b"dummy_udc.01",
            b"dummy_udc.-1",
            b"dummy_udc.1x",
            b"20980000.usb",
            b"dummy_udc.99999999999",
        ] {
            assert_eq!(
                dummy_udc_index(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
