//! A fake kernel for the CUSE server: the fuse device's side of `/dev/cuse` and the client
//! side of a CUSE character device, in one test double.
//!
//! - [`FakeKernel`] implements the server's `Channel`: requests queue up for the server's
//!   reads; replies are checked as `fuse_dev_do_write` checks them (`len` equal to the write,
//!   no body after an error, `error` in (-512, 0], a known `unique`, interrupt replies header
//!   only) and matched to their callers. A reply the kernel would refuse fails the write and
//!   is recorded in [`FakeKernel::violations`]. An interrupt answered EAGAIN is queued again
//!   while its request is still being processed (`dev.c:2058`); ENOSYS sets `no_interrupt`,
//!   which the tests assert never happens.
//! - Its client calls play the syscalls: [`FakeKernel::open`] sends FUSE_OPEN,
//!   [`FakeKernel::ioctl`] runs `fuse_do_ioctl`'s loop (`fs/fuse/ioctl.c`): rounds with the
//!   input copied from the in iovecs, RETRY replies checked (at most 256 iovecs, 16 bytes
//!   each, 32-bit bounds for 32-bit callers, 128 KiB per direction), the final reply's bytes
//!   copied to the out iovecs, faults as EFAULT.
//! - [`FakeMemory`] is every fake process's memory, for the kernel's copies and for the
//!   server's fast path (its `ProcessMemory`): regions per pid, EPERM for pids marked private.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rawgadget_cuse::ioctl::MemError;
use rawgadget_cuse::proto::{
    ioctl_flags, opcode, CuseInitIn, CuseInitOut, InHeader, IoctlIn, IoctlIovec, IoctlOut, OpenIn,
    OpenOut, OutHeader, ReleaseIn, CUSE_UNRESTRICTED_IOCTL, FUSE_INT_REQ_BIT, FUSE_IOCTL_MAX_IOV,
    MAX_IOCTL_DIRECTION_BYTES,
};
use rawgadget_cuse::{Channel, ProcessMemory};
use rawgadget_uapi::Errno;

pub const TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Memory

#[derive(Debug, Default)]
struct Process {
    regions: Vec<(u64, Vec<u8>)>,
    next: u64,
}

/// Every fake process's memory. See the module doc.
#[derive(Debug, Default)]
pub struct FakeMemory {
    procs: Mutex<HashMap<u32, Process>>,
    /// pids whose memory the daemon may not read (Yama ptrace_scope=3, no CAP_SYS_PTRACE).
    private: Mutex<HashSet<u32>>,
    pub fast_reads: AtomicU64,
}

impl FakeMemory {
    pub fn new() -> Arc<FakeMemory> {
        Arc::new(FakeMemory::default())
    }

    /// Maps `len` zeroed bytes for `pid` and returns their address. Addresses stay below
    /// 4 GiB so that 32-bit callers can use them.
    pub fn alloc(&self, pid: u32, len: usize) -> u64 {
        let mut procs = self.procs.lock().unwrap();
        let p = procs.entry(pid).or_default();
        if p.next == 0 {
            p.next = 0x1000_0000 + u64::from(pid % 64) * 0x0200_0000;
        }
        let addr = p.next;
        // a gap after each mapping, so that running off its end faults
        p.next += (len as u64 + 0x1fff) & !0xfff;
        p.regions.push((addr, vec![0; len]));
        addr
    }

    /// Maps `bytes` and returns their address.
    pub fn put(&self, pid: u32, bytes: &[u8]) -> u64 {
        let a = self.alloc(pid, bytes.len());
        self.copy_to(pid, a, bytes).unwrap();
        a
    }

    pub fn set_private(&self, pid: u32, private: bool) {
        let mut p = self.private.lock().unwrap();
        if private {
            p.insert(pid);
        } else {
            p.remove(&pid);
        }
    }

    fn with_range<R>(
        &self,
        pid: u32,
        addr: u64,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, Errno> {
        let mut procs = self.procs.lock().unwrap();
        let p = procs.get_mut(&pid).ok_or(Errno::ESRCH)?;
        for (base, bytes) in &mut p.regions {
            if addr >= *base {
                let off = (addr - *base) as usize;
                if let Some(s) = bytes.get_mut(off..off.checked_add(len).ok_or(Errno::EFAULT)?) {
                    return Ok(f(s));
                }
            }
        }
        if len == 0 {
            return Ok(f(&mut []));
        }
        Err(Errno::EFAULT)
    }

    /// `copy_from_user`.
    pub fn copy_from(&self, pid: u32, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
        self.with_range(pid, addr, len, |s| s.to_vec())
    }

    /// `copy_to_user`.
    pub fn copy_to(&self, pid: u32, addr: u64, data: &[u8]) -> Result<(), Errno> {
        self.with_range(pid, addr, data.len(), |s| s.copy_from_slice(data))
    }
}

impl ProcessMemory for FakeMemory {
    fn read(&self, pid: u32, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if pid == 0 {
            return Err(MemError::Unavailable(Errno::ESRCH));
        }
        if self.private.lock().unwrap().contains(&pid) {
            return Err(MemError::Unavailable(Errno::EPERM));
        }
        self.fast_reads.fetch_add(1, Ordering::Relaxed);
        match self.copy_from(pid, addr, buf.len()) {
            Ok(v) => {
                buf.copy_from_slice(&v);
                Ok(())
            }
            Err(Errno::ESRCH) => Err(MemError::Unavailable(Errno::ESRCH)),
            Err(_) => Err(MemError::Fault),
        }
    }

    fn write(&self, pid: u32, addr: u64, data: &[u8]) -> Result<(), MemError> {
        if self.private.lock().unwrap().contains(&pid) {
            return Err(MemError::Unavailable(Errno::EPERM));
        }
        match self.copy_to(pid, addr, data) {
            Ok(()) => Ok(()),
            Err(Errno::ESRCH) => Err(MemError::Unavailable(Errno::ESRCH)),
            Err(_) => Err(MemError::Fault),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fuse device

#[derive(Debug, Default)]
struct State {
    /// Requests not yet read by the server.
    pending: VecDeque<Vec<u8>>,
    /// Requests read and not yet answered (`fpq->processing`).
    processing: HashSet<u64>,
    replies: HashMap<u64, Vec<u8>>,
    /// Interrupts the server answered EAGAIN (each was queued again while its request was
    /// still being processed).
    eagain: Vec<u64>,
    /// `fc->no_interrupt`, set by an ENOSYS interrupt reply.
    no_interrupt: bool,
    violations: Vec<String>,
    closed: bool,
    /// Size of the server's last read buffer.
    read_buffer: usize,
}

/// See the module doc. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct FakeKernel {
    state: Arc<(Mutex<State>, Condvar)>,
    next_unique: Arc<AtomicU64>,
    pub memory: Arc<FakeMemory>,
}

/// How an ioctl went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoctlResult {
    pub ret: Result<i32, Errno>,
    /// FUSE_IOCTL requests sent.
    pub rounds: u32,
}

/// A fake thread of a fake process: the pid the kernel puts in `fuse_in_header.pid`, whether
/// it is a 32-bit caller, and its memory key.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// `fuse_in_header.pid`: 0 when the caller is in another pid namespace.
    pub header_pid: u32,
    /// Whose memory the kernel copies from.
    pub pid: u32,
    pub compat: bool,
}

impl Caller {
    pub fn new(pid: u32) -> Caller {
        Caller {
            header_pid: pid,
            pid,
            compat: false,
        }
    }
}

impl FakeKernel {
    pub fn new() -> FakeKernel {
        FakeKernel {
            next_unique: Arc::new(AtomicU64::new(2)),
            ..FakeKernel::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.0.lock().unwrap()
    }

    fn notify(&self) {
        self.state.1.notify_all();
    }

    /// Replies the kernel would have refused, with the reason.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    pub fn no_interrupt(&self) -> bool {
        self.lock().no_interrupt
    }

    /// Interrupt uniques answered EAGAIN so far.
    pub fn eagain_interrupts(&self) -> Vec<u64> {
        self.lock().eagain.clone()
    }

    pub fn read_buffer(&self) -> usize {
        self.lock().read_buffer
    }

    /// Whether request `unique` has been read and not answered (the server holds it).
    pub fn is_processing(&self, unique: u64) -> bool {
        self.lock().processing.contains(&unique)
    }

    /// Aborts the connection (the fuse device goes away): the server's reads fail with
    /// ENODEV, as when `/sys/class/cuse/NAME/abort` is written.
    pub fn abort(&self) {
        self.lock().closed = true;
        self.notify();
    }

    fn new_unique(&self) -> u64 {
        // the kernel steps by 2: the low bit marks interrupts (FUSE_REQ_ID_STEP)
        self.next_unique.fetch_add(2, Ordering::Relaxed)
    }

    /// Queues a request; returns its unique.
    pub fn send(&self, op: u32, pid: u32, body: &[u8]) -> u64 {
        let unique = self.new_unique();
        self.send_with_unique(op, unique, pid, body);
        unique
    }

    pub fn send_with_unique(&self, op: u32, unique: u64, pid: u32, body: &[u8]) {
        let mut msg = Vec::with_capacity(InHeader::SIZE + body.len());
        InHeader {
            len: (InHeader::SIZE + body.len()) as u32,
            opcode: op,
            unique,
            pid,
            ..InHeader::default()
        }
        .emit(&mut msg);
        msg.extend_from_slice(body);
        self.send_raw(msg);
    }

    /// Queues raw bytes as one request (for malformed ones).
    pub fn send_raw(&self, msg: Vec<u8>) {
        self.lock().pending.push_back(msg);
        self.notify();
    }

    /// Queues FUSE_INTERRUPT for `unique`.
    pub fn interrupt(&self, unique: u64) {
        self.send_with_unique(
            opcode::FUSE_INTERRUPT,
            unique | FUSE_INT_REQ_BIT,
            0,
            &unique.to_ne_bytes(),
        );
    }

    /// Waits for the reply to `unique`.
    ///
    /// # Panics
    /// After [`TIMEOUT`]: the server never answered.
    pub fn reply(&self, unique: u64) -> Vec<u8> {
        self.try_reply(unique, TIMEOUT)
            .unwrap_or_else(|| panic!("no reply to request {unique:#x} within {TIMEOUT:?}"))
    }

    pub fn try_reply(&self, unique: u64, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if let Some(r) = st.replies.remove(&unique) {
                return Some(r);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            st = self.state.1.wait_timeout(st, left).unwrap().0;
        }
    }

    /// Counts `unique` as read by the server already (as if another reader thread had it), so
    /// that an interrupt for it queued ahead of it plays an interrupt that overtook its
    /// request (contract C8).
    pub fn mark_processing(&self, unique: u64) {
        self.lock().processing.insert(unique);
    }

    /// Waits until `f` holds on the state.
    fn wait_until(&self, what: &str, mut f: impl FnMut(&State) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        let mut st = self.lock();
        while !f(&st) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("timed out waiting for {what}"));
            st = self.state.1.wait_timeout(st, left).unwrap().0;
        }
    }

    /// Waits until the server holds request `unique` (read, not answered).
    pub fn wait_processing(&self, unique: u64) {
        self.wait_until("the request to be read", |st| {
            st.processing.contains(&unique)
        });
    }

    /// Waits until every queued request has been read.
    pub fn wait_drained(&self) {
        self.wait_until("the queue to drain", |st| st.pending.is_empty());
    }

    // ---- calls ----------------------------------------------------------------------------

    /// Sends CUSE_INIT as `cuse_send_init` does; returns the reply's `cuse_init_out` and
    /// devinfo, or the error.
    pub fn cuse_init(&self, minor: u32, flags: u32) -> Result<(CuseInitOut, Vec<u8>), Errno> {
        let mut body = Vec::new();
        CuseInitIn {
            major: 7,
            minor,
            unused: 0,
            flags,
        }
        .emit(&mut body);
        let u = self.send(opcode::CUSE_INIT, 0, &body);
        let r = self.reply(u);
        let h = OutHeader::parse(&r).unwrap();
        if h.error != 0 {
            return Err(Errno::from_raw(h.error));
        }
        let out = CuseInitOut::parse(&r[16..]).expect("cuse_init_out");
        Ok((out, r[16 + CuseInitOut::SIZE..].to_vec()))
    }

    /// The standard init: protocol 7.41, unrestricted ioctls offered.
    pub fn init_default(&self) -> CuseInitOut {
        self.cuse_init(41, CUSE_UNRESTRICTED_IOCTL)
            .expect("CUSE_INIT")
            .0
    }

    /// `open(2)` of the node: FUSE_OPEN with the file's flags; the file handle.
    pub fn open(&self, flags: u32) -> Result<u64, Errno> {
        let mut body = Vec::new();
        OpenIn {
            flags,
            open_flags: 0,
        }
        .emit(&mut body);
        let u = self.send(opcode::FUSE_OPEN, 1, &body);
        let r = self.reply(u);
        let h = OutHeader::parse(&r).unwrap();
        if h.error != 0 {
            return Err(Errno::from_raw(h.error));
        }
        Ok(OpenOut::parse(&r[16..]).expect("fuse_open_out").fh)
    }

    /// The last `close(2)`: FUSE_RELEASE, waited for (CUSE's release is synchronous).
    pub fn release(&self, fh: u64) {
        let mut body = Vec::new();
        ReleaseIn {
            fh,
            flags: 2,
            release_flags: 0,
            lock_owner: 0,
        }
        .emit(&mut body);
        let u = self.send(opcode::FUSE_RELEASE, 1, &body);
        let r = self.reply(u);
        assert_eq!(OutHeader::parse(&r).unwrap().error, 0, "release failed");
    }

    /// A request answered with an error only (read, write, poll ...); the errno.
    pub fn simple(&self, op: u32, body: &[u8]) -> Result<(), Errno> {
        let u = self.send(op, 1, body);
        let r = self.reply(u);
        let h = OutHeader::parse(&r).unwrap();
        if h.error != 0 {
            Err(Errno::from_raw(h.error))
        } else {
            Ok(())
        }
    }

    /// `ioctl(fd, cmd, arg)`: `fuse_do_ioctl` in unrestricted mode.
    pub fn ioctl(&self, fh: u64, caller: Caller, cmd: u32, arg: u64) -> IoctlResult {
        self.ioctl_with(fh, caller, cmd, arg, &AtomicU64::new(0), |_| {})
    }

    /// As [`FakeKernel::ioctl`], publishing each round's unique in `current` (so another
    /// thread can interrupt it) and calling `between(round)` before each round after the
    /// first (another thread of the caller changing its memory).
    pub fn ioctl_with(
        &self,
        fh: u64,
        caller: Caller,
        cmd: u32,
        arg: u64,
        current: &AtomicU64,
        mut between: impl FnMut(u32),
    ) -> IoctlResult {
        let mut flags = ioctl_flags::FUSE_IOCTL_UNRESTRICTED;
        if caller.compat {
            flags |= ioctl_flags::FUSE_IOCTL_COMPAT | ioctl_flags::FUSE_IOCTL_32BIT;
        }
        let mut in_iovs: Vec<IoctlIovec> = Vec::new();
        let mut out_iovs: Vec<IoctlIovec> = Vec::new();
        let mut rounds = 0;
        let done = |ret: Result<i32, Errno>, rounds| IoctlResult { ret, rounds };
        loop {
            if rounds > 0 {
                between(rounds);
            }
            let in_size: u64 = in_iovs.iter().map(|v| v.len).sum();
            let out_size: u64 = out_iovs.iter().map(|v| v.len).sum();
            // max_pages: the larger direction (out at least a page) in 32 pages
            let pages = in_size.max(out_size.max(4096)).div_ceil(4096);
            if pages > u64::from(MAX_IOCTL_DIRECTION_BYTES / 4096) {
                return done(Err(Errno::ENOMEM), rounds);
            }
            let mut body = Vec::new();
            IoctlIn {
                fh,
                flags,
                cmd,
                arg,
                in_size: in_size as u32,
                out_size: out_size as u32,
            }
            .emit(&mut body);
            for iov in &in_iovs {
                match self
                    .memory
                    .copy_from(caller.pid, iov.base, iov.len as usize)
                {
                    Ok(b) => body.extend_from_slice(&b),
                    Err(_) => return done(Err(Errno::EFAULT), rounds),
                }
            }
            let u = self.new_unique();
            current.store(u, Ordering::SeqCst);
            self.send_with_unique(opcode::FUSE_IOCTL, u, caller.header_pid, &body);
            rounds += 1;
            let r = self.reply(u);
            let h = OutHeader::parse(&r).unwrap();
            if h.error != 0 {
                let e = Errno::from_raw(h.error);
                return done(
                    Err(if e == Errno::ENOSYS { Errno::ENOTTY } else { e }),
                    rounds,
                );
            }
            let out = IoctlOut::parse(&r[16..]).expect("fuse_ioctl_out");
            let payload = &r[16 + IoctlOut::SIZE..];
            if out.flags & ioctl_flags::FUSE_IOCTL_RETRY != 0 {
                let (ni, no) = (out.in_iovs as usize, out.out_iovs as usize);
                if ni + no > FUSE_IOCTL_MAX_IOV {
                    return done(Err(Errno::ENOMEM), rounds);
                }
                if payload.len() != (ni + no) * IoctlIovec::SIZE {
                    self.lock().violations.push(format!(
                        "retry with {} bytes for {} iovecs",
                        payload.len(),
                        ni + no
                    ));
                    return done(Err(Errno::EIO), rounds);
                }
                let iovs: Vec<IoctlIovec> = payload
                    .chunks(IoctlIovec::SIZE)
                    .map(|c| IoctlIovec::parse(c).unwrap())
                    .collect();
                if caller.compat
                    && iovs
                        .iter()
                        .any(|v| v.base > u64::from(u32::MAX) || v.len > u64::from(u32::MAX))
                {
                    return done(Err(Errno::EIO), rounds);
                }
                in_iovs = iovs[..ni].to_vec();
                out_iovs = iovs[ni..].to_vec();
                for dir in [&in_iovs, &out_iovs] {
                    let total: u64 = dir.iter().map(|v| v.len).sum();
                    if total > u64::from(MAX_IOCTL_DIRECTION_BYTES) {
                        return done(Err(Errno::ENOMEM), rounds);
                    }
                }
                continue;
            }
            if payload.len() as u64 > out_size {
                self.lock().violations.push(format!(
                    "final reply with {} bytes for {out_size} of out iovecs",
                    payload.len()
                ));
                return done(Err(Errno::EIO), rounds);
            }
            let mut rest = payload;
            for iov in &out_iovs {
                if rest.is_empty() {
                    break;
                }
                let n = rest.len().min(iov.len as usize);
                if self
                    .memory
                    .copy_to(caller.pid, iov.base, &rest[..n])
                    .is_err()
                {
                    return done(Err(Errno::EFAULT), rounds);
                }
                rest = &rest[n..];
            }
            let ret = if out.result == -Errno::ENOSYS.raw() {
                -Errno::ENOTTY.raw()
            } else {
                out.result
            };
            return done(
                if ret < 0 {
                    Err(Errno::from_raw(ret))
                } else {
                    Ok(ret)
                },
                rounds,
            );
        }
    }
}

impl Channel for FakeKernel {
    fn read_request(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.lock();
        st.read_buffer = buf.len();
        loop {
            if st.closed {
                return Err(io::Error::from_raw_os_error(libc::ENODEV));
            }
            if let Some(msg) = st.pending.pop_front() {
                let h = InHeader::parse(&msg).expect("the fake kernel sends whole headers");
                if msg.len() > buf.len() {
                    // dev.c:1343: the caller's request fails with EIO, the read goes on
                    let mut r = Vec::new();
                    OutHeader {
                        len: 16,
                        error: -Errno::EIO.raw(),
                        unique: h.unique,
                    }
                    .emit(&mut r);
                    st.replies.insert(h.unique, r);
                    self.notify();
                    continue;
                }
                if h.opcode != opcode::FUSE_INTERRUPT
                    && h.opcode != opcode::FUSE_FORGET
                    && h.opcode != opcode::FUSE_BATCH_FORGET
                {
                    st.processing.insert(h.unique);
                }
                buf[..msg.len()].copy_from_slice(&msg);
                drop(st);
                self.notify();
                return Ok(msg.len());
            }
            st = self.state.1.wait(st).unwrap();
        }
    }

    fn write_reply(&self, msg: &[u8]) -> io::Result<()> {
        let einval = || io::Error::from_raw_os_error(libc::EINVAL);
        let mut st = self.lock();
        let Ok(h) = OutHeader::parse(msg) else {
            st.violations.push(format!("reply of {} bytes", msg.len()));
            return Err(einval());
        };
        if h.len as usize != msg.len() {
            st.violations.push(format!(
                "reply len {} but {} bytes written",
                h.len,
                msg.len()
            ));
            return Err(einval());
        }
        if h.error <= -512 || h.error > 0 {
            st.violations.push(format!("reply error {}", h.error));
            return Err(einval());
        }
        if h.error != 0 && msg.len() != OutHeader::SIZE {
            st.violations
                .push(format!("error reply {} with a body", h.error));
            return Err(einval());
        }
        let orig = h.unique & !FUSE_INT_REQ_BIT;
        if h.unique & FUSE_INT_REQ_BIT != 0 {
            if msg.len() != OutHeader::SIZE {
                st.violations.push("interrupt reply with a body".into());
                return Err(einval());
            }
            if h.error == -Errno::ENOSYS.raw() {
                st.no_interrupt = true;
            }
            if h.error == -Errno::EAGAIN.raw() {
                st.eagain.push(orig);
            }
            // request_find: an interrupt reply for an answered request is ENOENT
            if !st.processing.contains(&orig) {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            if h.error == -Errno::EAGAIN.raw() {
                let mut again = Vec::new();
                InHeader {
                    len: 48,
                    opcode: opcode::FUSE_INTERRUPT,
                    unique: h.unique,
                    ..InHeader::default()
                }
                .emit(&mut again);
                again.extend_from_slice(&orig.to_ne_bytes());
                st.pending.push_back(again);
            }
            drop(st);
            self.notify();
            return Ok(());
        }
        if !st.processing.remove(&orig) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        st.replies.insert(orig, msg.to_vec());
        drop(st);
        self.notify();
        Ok(())
    }
}
