//! The CUSE server through the fake kernel, one test per contract rule (C1–C13, udc-contract.md
//! §7) plus the bad-input cases. The real server loop runs in a thread on the fake
//! fuse device; a test host stands in for vhci (attach = the port reset vhci's attach causes).

mod fake_kernel;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fake_kernel::{Caller, FakeKernel, IoctlResult, TIMEOUT};
use rawgadget_cuse::host::{personality, AttachError, Host, HostDevice};
use rawgadget_cuse::proto::{opcode, CUSE_UNRESTRICTED_IOCTL, O_NONBLOCK};
use rawgadget_cuse::{serve, ServeConfig, ServeError, Server, Stats};
use rawgadget_loopback::{Bus, SharedBus};
use rawgadget_uapi::*;
use rawgadget_udc::Urb;
use rawgadget_usbip::wire::Direction;
use rawgadget_usbip::{CmdSubmit, CmdSubmitRepr};
use rawgadget_usbip_udc::fake_vhci::{FakeVhci, WireReply};
use rawgadget_usbip_udc::{Budget, ClientFlush, ConnectionHandle, UsbipConfig, UsbipDevice};
use std::os::unix::net::UnixStream;

// ---------------------------------------------------------------------------------------------
// The test host

#[derive(Debug, Default)]
struct HostLog {
    created: usize,
    attached: Vec<(u32, Arc<SharedBus>)>,
    detached: usize,
}

#[derive(Debug, Default)]
struct TestHost {
    log: Mutex<HostLog>,
    changed: Condvar,
}

#[derive(Debug)]
struct TestHostHandle(Arc<TestHost>);

#[derive(Debug)]
struct TestDevice {
    bus: Arc<SharedBus>,
    host: Arc<TestHost>,
    attached: bool,
}

impl Host for TestHostHandle {
    fn new_device(&self) -> Box<dyn HostDevice> {
        self.0.log.lock().unwrap().created += 1;
        Box::new(TestDevice {
            bus: SharedBus::new(Bus::with_personality(personality(Speed::High))),
            host: self.0.clone(),
            attached: false,
        })
    }
}

impl HostDevice for TestDevice {
    fn bus(&self) -> Arc<SharedBus> {
        self.bus.clone()
    }
    fn attach(&mut self, udc: u32) -> Result<String, AttachError> {
        // vhci's attach resets the port (contract U5); the reset takes no time here
        self.bus.with(|b| {
            b.port_reset();
            b.advance(Duration::from_millis(100));
        });
        self.attached = true;
        self.host
            .log
            .lock()
            .unwrap()
            .attached
            .push((udc, self.bus.clone()));
        self.host.changed.notify_all();
        Ok(format!("test host port for dummy_udc.{udc}"))
    }
    fn detach(&mut self) {
        if std::mem::take(&mut self.attached) {
            self.host.log.lock().unwrap().detached += 1;
            self.host.changed.notify_all();
        }
    }
}

impl TestHost {
    /// The bus of the `n`-th attach (0-based), waiting for it.
    fn attached(&self, n: usize) -> (u32, Arc<SharedBus>) {
        let deadline = Instant::now() + TIMEOUT;
        let mut log = self.log.lock().unwrap();
        while log.attached.len() <= n {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("the device was never attached");
            log = self.changed.wait_timeout(log, left).unwrap().0;
        }
        log.attached[n].clone()
    }

    fn wait_detached(&self, n: usize) {
        let deadline = Instant::now() + TIMEOUT;
        let mut log = self.log.lock().unwrap();
        while log.detached < n {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("the device was never detached");
            log = self.changed.wait_timeout(log, left).unwrap().0;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The rig

struct Rig {
    k: FakeKernel,
    server: Server,
    host: Arc<TestHost>,
    thread: Option<thread::JoinHandle<Result<(), ServeError>>>,
    next_pid: AtomicU64,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(ServeConfig::default())
    }

    /// A server on a fake kernel, CUSE_INIT answered.
    fn with(config: ServeConfig) -> Rig {
        let rig = Rig::uninit(config);
        rig.k.init_default();
        rig
    }

    /// A server started but CUSE_INIT not yet sent.
    fn uninit(config: ServeConfig) -> Rig {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let k = FakeKernel::new();
        let host = Arc::new(TestHost::default());
        let server = Server::new(
            Arc::new(k.clone()),
            k.memory.clone(),
            Arc::new(TestHostHandle(host.clone())),
            config,
        );
        let s = server.clone();
        let thread = Some(thread::spawn(move || serve(&s)));
        Rig {
            k,
            server,
            host,
            thread,
            next_pid: AtomicU64::new(100),
        }
    }

    fn client(&self) -> Client {
        self.client_with(|c| c)
    }

    fn client_with(&self, f: impl FnOnce(Caller) -> Caller) -> Client {
        let fh = self.k.open(2).expect("open");
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed) as u32;
        Client {
            k: self.k.clone(),
            fh,
            c: f(Caller::new(pid)),
        }
    }

    fn stats(&self) -> Stats {
        self.server.stats()
    }

    /// Waits until `n` ops are blocked in the server.
    fn wait_blocked(&self, n: u64) {
        let deadline = Instant::now() + TIMEOUT;
        while self.stats().in_flight < n {
            assert!(
                Instant::now() < deadline,
                "ops never blocked: {:?}",
                self.stats()
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops the server as a daemon death would (the fake device aborts).
    fn stop(&mut self) -> Result<(), ServeError> {
        self.k.abort();
        self.thread.take().map_or(Ok(()), |t| t.join().unwrap())
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let r = self.stop();
        if !thread::panicking() {
            r.expect("the server loop ended with an error");
            assert_eq!(self.k.violations(), Vec::<String>::new());
            assert!(
                !self.k.no_interrupt(),
                "an interrupt was answered ENOSYS (C8)"
            );
        }
    }
}

/// A raw gadget program's thread, over the fake kernel.
#[derive(Clone)]
struct Client {
    k: FakeKernel,
    fh: u64,
    c: Caller,
}

const BULK_OUT_EP2: [u8; 9] = [9, 5, 0x02, 0x02, 0x00, 0x02, 0, 0, 0];
const BULK_IN_EP1: [u8; 9] = [9, 5, 0x81, 0x02, 0x00, 0x02, 0, 0, 0];

impl Client {
    fn ioctl(&self, cmd: u32, arg: u64) -> IoctlResult {
        self.k.ioctl(self.fh, self.c, cmd, arg)
    }
    fn put(&self, bytes: &[u8]) -> u64 {
        self.k.memory.put(self.c.pid, bytes)
    }
    fn get(&self, addr: u64, len: usize) -> Vec<u8> {
        self.k.memory.copy_from(self.c.pid, addr, len).unwrap()
    }
    fn init(&self, device: &str) -> Result<i32, Errno> {
        let a = self.put(&UsbRawInit::new("dummy_udc", device, speed::USB_SPEED_HIGH).to_bytes());
        self.ioctl(USB_RAW_IOCTL_INIT, a).ret
    }
    fn run(&self) -> Result<i32, Errno> {
        self.ioctl(USB_RAW_IOCTL_RUN, 0).ret
    }
    /// EVENT_FETCH with `capacity` bytes of room: (result, header, payload).
    fn fetch(&self, capacity: u32) -> (Result<i32, Errno>, UsbRawEvent, Vec<u8>) {
        let room = (capacity as usize).min(64);
        let a = self.k.memory.alloc(self.c.pid, 8 + room);
        self.k
            .memory
            .copy_to(
                self.c.pid,
                a,
                &UsbRawEvent {
                    type_: 0,
                    length: capacity,
                }
                .to_bytes(),
            )
            .unwrap();
        let r = self.ioctl(USB_RAW_IOCTL_EVENT_FETCH, a).ret;
        let b = self.get(a, 8 + room);
        let h = UsbRawEvent::from_bytes(b[..8].try_into().unwrap());
        let n = (h.length as usize).min(room);
        (r, h, b[8..8 + n].to_vec())
    }
    fn io(&self, cmd: u32, ep: u16, length: u32, payload: &[u8]) -> (u64, IoctlResult) {
        let mut b = UsbRawEpIo {
            ep,
            flags: 0,
            length,
        }
        .to_bytes()
        .to_vec();
        b.extend_from_slice(payload);
        b.resize(8 + (length as usize).max(payload.len()), 0);
        let a = self.put(&b);
        (a, self.ioctl(cmd, a))
    }
    fn ep_enable(&self, desc: [u8; 9]) -> Result<i32, Errno> {
        let a = self.put(&desc);
        self.ioctl(USB_RAW_IOCTL_EP_ENABLE, a).ret
    }
    fn eps_info(&self) -> (Result<i32, Errno>, UsbRawEpsInfo) {
        let a = self.k.memory.alloc(self.c.pid, 960);
        let r = self.ioctl(USB_RAW_IOCTL_EPS_INFO, a).ret;
        let b = self.get(a, 960);
        (
            r,
            UsbRawEpsInfo::from_bytes(b.as_slice().try_into().unwrap()),
        )
    }
    fn release(&self) {
        self.k.release(self.fh);
    }
    /// INIT + RUN on dummy_udc.0, then EP_ENABLE of bulk OUT 0x02 once attached.
    fn running_with_bulk_out(&self, host: &TestHost, nth_attach: usize) -> (u16, Arc<SharedBus>) {
        self.init("dummy_udc.0").unwrap();
        self.run().unwrap();
        let (_, bus) = host.attached(nth_attach);
        let h = self.ep_enable(BULK_OUT_EP2).expect("EP_ENABLE");
        (h as u16, bus)
    }
    /// Starts an ioctl in its own thread; the unique of its current round is published.
    fn spawn(&self, cmd: u32, arg: u64) -> Blocked {
        let current = Arc::new(AtomicU64::new(0));
        let (me, cur) = (self.clone(), current.clone());
        let t = thread::spawn(move || me.k.ioctl_with(me.fh, me.c, cmd, arg, &cur, |_| {}));
        Blocked { current, t }
    }
}

struct Blocked {
    current: Arc<AtomicU64>,
    t: thread::JoinHandle<IoctlResult>,
}

impl Blocked {
    fn unique(&self) -> u64 {
        self.current.load(Ordering::SeqCst)
    }
    fn join(self) -> IoctlResult {
        self.t.join().unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// C1, C12: CUSE_INIT

/// contract C1, C12: CUSE_INIT accepts unrestricted ioctls, announces minor ≥ 16 (at most the
/// kernel's), and names the node.
#[test]
fn c1_cuse_init_accepts_unrestricted_ioctls() {
    let rig = Rig::uninit(ServeConfig::default());
    let (out, devinfo) = rig.k.cuse_init(41, CUSE_UNRESTRICTED_IOCTL).unwrap();
    assert_eq!(out.major, 7);
    assert_eq!(out.minor, 41);
    assert_eq!(out.flags & CUSE_UNRESTRICTED_IOCTL, CUSE_UNRESTRICTED_IOCTL);
    assert_eq!((out.dev_major, out.dev_minor), (0, 0));
    assert_eq!(devinfo, b"DEVNAME=raw-gadget\0");
    // the read buffer is at least header + fuse_ioctl_in + 128 KiB (contract C7)
    assert!(rig.k.read_buffer() >= 40 + 32 + 128 * 1024);
}

/// contract C12: with an older kernel we answer its minor; below 7.16 (32-bit ioctl iovecs)
/// and without CUSE_UNRESTRICTED_IOCTL (C1) the server refuses to start.
#[test]
fn c12_cuse_init_minor_and_refusals() {
    let rig = Rig::uninit(ServeConfig::default());
    let (out, _) = rig.k.cuse_init(31, CUSE_UNRESTRICTED_IOCTL).unwrap();
    assert_eq!(out.minor, 31);
    drop(rig);
    for (minor, flags) in [(15, CUSE_UNRESTRICTED_IOCTL), (41, 0)] {
        let mut rig = Rig::uninit(ServeConfig::default());
        assert!(rig.k.cuse_init(minor, flags).is_err());
        assert!(matches!(rig.stop(), Err(ServeError::InitRefused(_))));
        rig.thread = None;
    }
}

// ---------------------------------------------------------------------------------------------
// C1: value arguments

/// contract C1, spec §1.4: the by-value ioctls take the value; the `_IO` ones need 0.
#[test]
fn c1_value_arguments() {
    let rig = Rig::new();
    let c = rig.client();
    c.init("dummy_udc.0").unwrap();
    // RUN with a non-zero argument: EINVAL, one round
    assert_eq!(
        c.ioctl(USB_RAW_IOCTL_RUN, 1),
        IoctlResult {
            ret: Err(Errno::EINVAL),
            rounds: 1
        }
    );
    c.run().unwrap();
    rig.host.attached(0);
    assert_eq!(c.ioctl(USB_RAW_IOCTL_VBUS_DRAW, 50).ret, Ok(0));
    assert_eq!(c.ioctl(USB_RAW_IOCTL_CONFIGURE, 0).ret, Ok(0));
    assert_eq!(c.ioctl(USB_RAW_IOCTL_CONFIGURE, 8).ret, Err(Errno::EINVAL));
    assert_eq!(c.ioctl(USB_RAW_IOCTL_EP0_STALL, 3).ret, Err(Errno::EINVAL));
    let h = c.ep_enable(BULK_OUT_EP2).unwrap() as u64;
    assert_eq!(c.ioctl(USB_RAW_IOCTL_EP_SET_HALT, h).ret, Ok(0));
    assert_eq!(c.ioctl(USB_RAW_IOCTL_EP_CLEAR_HALT, h).ret, Ok(0));
    assert_eq!(c.ioctl(USB_RAW_IOCTL_EP_SET_WEDGE, h).ret, Ok(0));
    // a handle outside the list: EBUSY (spec §1.5 EP_DISABLE); a pointer-sized value too
    assert_eq!(c.ioctl(USB_RAW_IOCTL_EP_DISABLE, 24).ret, Err(Errno::EBUSY));
    assert_eq!(
        c.ioctl(USB_RAW_IOCTL_EP_DISABLE, 0x7fff_1234_5678).ret,
        Err(Errno::EBUSY)
    );
    assert_eq!(
        c.ioctl(USB_RAW_IOCTL_EP_DISABLE, h),
        IoctlResult {
            ret: Ok(0),
            rounds: 1
        }
    );
    assert_eq!(c.ioctl(USB_RAW_IOCTL_EP_DISABLE, h).ret, Err(Errno::EINVAL));
}

// ---------------------------------------------------------------------------------------------
// C2, C3, C4, C5: the retry protocol

fn retry_only() -> ServeConfig {
    ServeConfig {
        fast_path: false,
        ..ServeConfig::default()
    }
}

/// contract C4: rounds per ioctl through the retry protocol.
#[test]
fn c4_rounds_per_ioctl() {
    let rig = Rig::with(retry_only());
    let c = rig.client();
    let a = c.put(&UsbRawInit::new("dummy_udc", "dummy_udc.0", 3).to_bytes());
    assert_eq!(
        c.ioctl(USB_RAW_IOCTL_INIT, a),
        IoctlResult {
            ret: Ok(0),
            rounds: 2
        }
    );
    assert_eq!(
        c.ioctl(USB_RAW_IOCTL_RUN, 0),
        IoctlResult {
            ret: Ok(0),
            rounds: 1
        }
    );
    rig.host.attached(0);
    let ev = c.put(
        &UsbRawEvent {
            type_: 0,
            length: 8,
        }
        .to_bytes(),
    );
    assert_eq!(c.ioctl(USB_RAW_IOCTL_EVENT_FETCH, ev).rounds, 2);
    let info = c.k.memory.alloc(c.c.pid, 960);
    assert_eq!(
        c.ioctl(USB_RAW_IOCTL_EPS_INFO, info),
        IoctlResult {
            ret: Ok(24),
            rounds: 2
        }
    );
    let d = c.put(&BULK_OUT_EP2);
    assert_eq!(
        c.ioctl(USB_RAW_IOCTL_EP_ENABLE, d),
        IoctlResult {
            ret: Ok(1),
            rounds: 2
        }
    );
    // a transfer with data: 3 rounds (it fails: no SETUP pending, EBUSY)
    let (_, r) = c.io(USB_RAW_IOCTL_EP0_READ, 0, 16, &[]);
    assert_eq!(
        r,
        IoctlResult {
            ret: Err(Errno::EBUSY),
            rounds: 3
        }
    );
    let (_, r) = c.io(USB_RAW_IOCTL_EP0_WRITE, 0, 4, b"abcd");
    assert_eq!(
        r,
        IoctlResult {
            ret: Err(Errno::EBUSY),
            rounds: 3
        }
    );
    // zero-length: 2 rounds
    let (_, r) = c.io(USB_RAW_IOCTL_EP0_READ, 0, 0, &[]);
    assert_eq!(
        r,
        IoctlResult {
            ret: Err(Errno::EBUSY),
            rounds: 2
        }
    );
    assert_eq!(rig.stats().retry_rounds, 9);
    assert_eq!(rig.stats().fast_path, 0);
}

/// contract C2: through the retry protocol a transfer longer than 128 KiB gets ENOMEM, where
/// the module (and our fast path) check the state first (EINVAL in OPENED).
#[test]
fn c2_retry_caps_transfers_at_128k() {
    let rig = Rig::with(retry_only());
    let c = rig.client();
    let (_, r) = c.io(USB_RAW_IOCTL_EP0_WRITE, 0, 200 * 1024, &[]);
    assert_eq!(r.ret, Err(Errno::ENOMEM));
    let (_, r) = c.io(USB_RAW_IOCTL_EP0_READ, 0, 128 * 1024 + 1, &[]);
    assert_eq!(r.ret, Err(Errno::ENOMEM));
    // at the limit the request reaches the engine (contract C7: the read buffer holds it)
    let (_, r) = c.io(USB_RAW_IOCTL_EP0_WRITE, 0, 128 * 1024 - 8, &[]);
    assert_eq!(
        r,
        IoctlResult {
            ret: Err(Errno::EINVAL),
            rounds: 3
        }
    );
    let fast = Rig::new();
    let c = fast.client();
    let (_, r) = c.io(USB_RAW_IOCTL_EP0_WRITE, 0, 200 * 1024, &[]);
    assert_eq!(
        r,
        IoctlResult {
            ret: Err(Errno::EINVAL),
            rounds: 1
        }
    );
}

/// contract C3: EVENT_FETCH with a huge `length` works (the out iovec is 16 bytes), copies
/// `min(length, event)` bytes and writes back the event's full length.
#[test]
fn c3_event_fetch_with_a_huge_length() {
    for config in [retry_only(), ServeConfig::default()] {
        let rig = Rig::with(config);
        let c = rig.client();
        c.init("dummy_udc.0").unwrap();
        c.run().unwrap();
        let a = c.put(
            &UsbRawEvent {
                type_: 0,
                length: 1 << 30,
            }
            .to_bytes(),
        );
        let r = c.ioctl(USB_RAW_IOCTL_EVENT_FETCH, a);
        assert_eq!(r.ret, Ok(0));
        let h = UsbRawEvent::from_bytes(c.get(a, 8).as_slice().try_into().unwrap());
        assert_eq!(
            h,
            UsbRawEvent {
                type_: event_type::USB_RAW_EVENT_CONNECT,
                length: 0
            }
        );
    }
}

/// contract C5: a fault in any round leaves nothing started: an EVENT_FETCH whose header
/// faults loses no event, an EP0_WRITE whose payload faults sends nothing.
#[test]
fn c5_a_fault_before_the_final_round_starts_nothing() {
    for config in [retry_only(), ServeConfig::default()] {
        let rig = Rig::with(config);
        let c = rig.client();
        c.init("dummy_udc.0").unwrap();
        c.run().unwrap();
        // address 0x10 is never mapped
        assert_eq!(
            c.ioctl(USB_RAW_IOCTL_EVENT_FETCH, 0x10).ret,
            Err(Errno::EFAULT)
        );
        let (_, h, _) = c.fetch(8);
        assert_eq!(
            h.type_,
            event_type::USB_RAW_EVENT_CONNECT,
            "the event was not lost"
        );
        // a header that promises more payload than is mapped
        let a = c.put(
            &UsbRawEpIo {
                ep: 0,
                flags: 0,
                length: 4096,
            }
            .to_bytes(),
        );
        assert_eq!(c.ioctl(USB_RAW_IOCTL_EP0_WRITE, a).ret, Err(Errno::EFAULT));
    }
}

/// contract C5: another thread changes the header between rounds; the final round's copy is
/// re-validated: a longer length costs another round, a bad flag is EINVAL.
#[test]
fn c5_final_round_revalidates_the_header() {
    let rig = Rig::with(retry_only());
    let c = rig.client();
    let a = c.put(&[0u8; 8 + 64]);
    let write_header = |length: u32, flags: u16| {
        c.k.memory
            .copy_to(
                c.c.pid,
                a,
                &UsbRawEpIo {
                    ep: 0,
                    flags,
                    length,
                }
                .to_bytes(),
            )
            .unwrap()
    };
    write_header(8, 0);
    let r = c.k.ioctl_with(
        c.fh,
        c.c,
        USB_RAW_IOCTL_EP0_WRITE,
        a,
        &AtomicU64::new(0),
        |round| {
            if round == 2 {
                write_header(32, 0);
            }
        },
    );
    // OPENED: EINVAL from the engine, after one more round for the longer payload
    assert_eq!(
        r,
        IoctlResult {
            ret: Err(Errno::EINVAL),
            rounds: 4
        }
    );
    write_header(8, 0);
    let r = c.k.ioctl_with(
        c.fh,
        c.c,
        USB_RAW_IOCTL_EP0_READ,
        a,
        &AtomicU64::new(0),
        |round| {
            if round == 2 {
                write_header(8, 0x40);
            }
        },
    );
    assert_eq!(
        r,
        IoctlResult {
            ret: Err(Errno::EINVAL),
            rounds: 3
        }
    );
}

// ---------------------------------------------------------------------------------------------
// C8, C9, C10: interrupts

/// contract C8: an interrupt for a request the server has not registered (read by another
/// reader thread, not yet handled) is answered EAGAIN, never ENOSYS; the kernel queues it
/// again and it then cancels the blocked op, whose request is answered EINTR.
#[test]
fn c8_interrupt_before_registration_is_eagain() {
    let rig = Rig::new();
    let c = rig.client();
    c.init("dummy_udc.0").unwrap();
    c.run().unwrap();
    let (_, bus) = rig.host.attached(0);
    while bus.lock().instance().queued_events() > 0 {
        assert_eq!(c.fetch(8).0, Ok(0));
    }
    // the interrupt is queued before its request, which the kernel already counts as sent
    let a = c.put(
        &UsbRawEvent {
            type_: 0,
            length: 8,
        }
        .to_bytes(),
    );
    let mut body = Vec::new();
    rawgadget_cuse::proto::IoctlIn {
        fh: c.fh,
        flags: rawgadget_cuse::proto::ioctl_flags::FUSE_IOCTL_UNRESTRICTED,
        cmd: USB_RAW_IOCTL_EVENT_FETCH,
        arg: a,
        in_size: 0,
        out_size: 0,
    }
    .emit(&mut body);
    let u = 0x7000;
    rig.k.mark_processing(u);
    rig.k.interrupt(u);
    rig.k
        .send_with_unique(opcode::FUSE_IOCTL, u, c.c.pid, &body);
    let reply = rig.k.reply(u);
    let h = rawgadget_cuse::proto::OutHeader::parse(&reply).unwrap();
    assert_eq!(h.error, -Errno::EINTR.raw());
    assert!(rig.k.eagain_interrupts().contains(&u));
    assert!(rig.stats().interrupts_unknown >= 1);
}

/// contract C8, C9: a blocked EVENT_FETCH is interrupted: EINTR, and no event is lost.
#[test]
fn c9_interrupted_event_fetch_is_eintr_and_loses_no_event() {
    let rig = Rig::new();
    let c = rig.client();
    c.init("dummy_udc.0").unwrap();
    c.run().unwrap();
    let (_, bus) = rig.host.attached(0);
    while bus.lock().instance().queued_events() > 0 {
        assert_eq!(c.fetch(8).0, Ok(0));
    }
    let a = c.put(
        &UsbRawEvent {
            type_: 0,
            length: 8,
        }
        .to_bytes(),
    );
    let blocked = c.spawn(USB_RAW_IOCTL_EVENT_FETCH, a);
    rig.wait_blocked(1);
    rig.k.interrupt(blocked.unique());
    assert_eq!(blocked.join().ret, Err(Errno::EINTR));
    assert_eq!(rig.stats().in_flight, 0);
    // the next event reaches the next fetch
    bus.with(|b| b.port_suspend().unwrap());
    let (r, h, _) = c.fetch(8);
    assert_eq!((r, h.type_), (Ok(0), event_type::USB_RAW_EVENT_SUSPEND));
}

/// contract C9 (D31): an interrupted transfer still queued is EINTR; one the host completed
/// first returns its data, and the late interrupt is answered EAGAIN (unknown request).
#[test]
fn c9_interrupted_transfer_is_eintr_only_if_dequeued() {
    let rig = Rig::new();
    let c = rig.client();
    let (h, bus) = c.running_with_bulk_out(&rig.host, 0);
    let (a, _) = (
        c.put(
            &UsbRawEpIo {
                ep: h,
                flags: 0,
                length: 512,
            }
            .to_bytes(),
        ),
        (),
    );
    let b = c.k.memory.alloc(c.c.pid, 8 + 512);
    c.k.memory.copy_to(c.c.pid, b, &c.get(a, 8)).unwrap();
    let blocked = c.spawn(USB_RAW_IOCTL_EP_READ, b);
    rig.wait_blocked(1);
    rig.k.interrupt(blocked.unique());
    assert_eq!(blocked.join().ret, Err(Errno::EINTR));
    // completed before the interrupt: the data stands
    let blocked = c.spawn(USB_RAW_IOCTL_EP_READ, b);
    rig.wait_blocked(1);
    let u = blocked.unique();
    bus.with(|bus| bus.submit(Urb::bulk(0x02, b"sixteen bytes!!!".to_vec())));
    let r = blocked.join();
    assert_eq!(r.ret, Ok(16));
    assert_eq!(&c.get(b + 8, 16), b"sixteen bytes!!!");
    rig.k.interrupt(u);
    rig.k.wait_drained();
    let deadline = Instant::now() + TIMEOUT;
    while !rig.k.eagain_interrupts().contains(&u) {
        assert!(
            Instant::now() < deadline,
            "the late interrupt was not answered EAGAIN"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// contract C10: a client killed mid-transfer: the interrupt ends its blocked EP_READ at once
/// (EINTR), the release tears the instance down, detaches the device and frees dummy_udc.0
/// for the next program.
#[test]
fn c10_killed_client_mid_transfer_is_torn_down() {
    let rig = Rig::new();
    let c = rig.client();
    let (h, bus) = c.running_with_bulk_out(&rig.host, 0);
    let (a, _) = (
        c.put(
            &UsbRawEpIo {
                ep: h,
                flags: 0,
                length: 4096,
            }
            .to_bytes(),
        ),
        (),
    );
    let b = c.k.memory.alloc(c.c.pid, 8 + 4096);
    c.k.memory.copy_to(c.c.pid, b, &c.get(a, 8)).unwrap();
    while bus.lock().instance().queued_events() > 0 {
        assert_eq!(c.fetch(8).0, Ok(0));
    }
    let blocked = c.spawn(USB_RAW_IOCTL_EP_READ, b);
    let fetch = c.spawn(
        USB_RAW_IOCTL_EVENT_FETCH,
        c.put(
            &UsbRawEvent {
                type_: 0,
                length: 8,
            }
            .to_bytes(),
        ),
    );
    // SIGKILL: every blocked thread's request gets FUSE_INTERRUPT
    rig.wait_blocked(2);
    rig.k.interrupt(blocked.unique());
    rig.k.interrupt(fetch.unique());
    assert_eq!(blocked.join().ret, Err(Errno::EINTR));
    assert_eq!(fetch.join().ret, Err(Errno::EINTR));
    c.release();
    assert_eq!(
        bus.lock().instance().state(),
        rawgadget_engine::State::Closed
    );
    rig.host.wait_detached(1);
    assert_eq!(rig.stats().instances, 0);
    assert_eq!(rig.stats().in_flight, 0);
    // the name is free again
    let next = rig.client();
    next.init("dummy_udc.0").unwrap();
    assert_eq!(next.run(), Ok(0));
}

// ---------------------------------------------------------------------------------------------
// C11: the fast path

/// contract C11: with the caller's memory reachable, each ioctl is one round; results are
/// written into its memory.
#[test]
fn c11_fast_path_is_one_round() {
    let rig = Rig::new();
    let c = rig.client();
    let a = c.put(&UsbRawInit::new("dummy_udc", "dummy_udc.0", 3).to_bytes());
    assert_eq!(
        c.ioctl(USB_RAW_IOCTL_INIT, a),
        IoctlResult {
            ret: Ok(0),
            rounds: 1
        }
    );
    c.run().unwrap();
    rig.host.attached(0);
    let info = c.k.memory.alloc(c.c.pid, 960);
    assert_eq!(
        c.ioctl(USB_RAW_IOCTL_EPS_INFO, info),
        IoctlResult {
            ret: Ok(24),
            rounds: 1
        }
    );
    let (r, h, _) = c.fetch(8);
    assert_eq!((r, h.type_), (Ok(0), event_type::USB_RAW_EVENT_CONNECT));
    assert_eq!(rig.stats().retry_rounds, 0);
    assert!(rig.stats().fast_path >= 4);
}

/// contract C11: pid 0 (another pid namespace) and EPERM fall back to the retry protocol
/// with the same results.
#[test]
fn c11_fast_path_falls_back_on_pid_0_and_eperm() {
    let rig = Rig::new();
    let other_ns = rig.client_with(|c| Caller { header_pid: 0, ..c });
    let a = other_ns.put(&UsbRawInit::new("dummy_udc", "dummy_udc.0", 3).to_bytes());
    assert_eq!(
        other_ns.ioctl(USB_RAW_IOCTL_INIT, a),
        IoctlResult {
            ret: Ok(0),
            rounds: 2
        }
    );
    let private = rig.client();
    rig.k.memory.set_private(private.c.pid, true);
    let a = private.put(&UsbRawInit::new("dummy_udc", "dummy_udc.0", 9).to_bytes());
    assert_eq!(
        private.ioctl(USB_RAW_IOCTL_INIT, a),
        IoctlResult {
            ret: Err(Errno::EINVAL),
            rounds: 2
        }
    );
}

/// contract C11: a fault is EFAULT in the module's order (header, checks, payload; copy-out
/// after the op).
#[test]
fn c11_fast_path_faults_are_efault() {
    let rig = Rig::new();
    let c = rig.client();
    assert_eq!(
        c.ioctl(USB_RAW_IOCTL_INIT, 0x10),
        IoctlResult {
            ret: Err(Errno::EFAULT),
            rounds: 1
        }
    );
    // bad flags are found before the payload is touched: EINVAL, not EFAULT
    let a = c.put(
        &UsbRawEpIo {
            ep: 0,
            flags: 4,
            length: 1 << 20,
        }
        .to_bytes(),
    );
    assert_eq!(c.ioctl(USB_RAW_IOCTL_EP0_WRITE, a).ret, Err(Errno::EINVAL));
    c.init("dummy_udc.0").unwrap();
    c.run().unwrap();
    // EPS_INFO into 8 mapped bytes: the op runs, the copy-out faults
    let small = c.put(&[0u8; 8]);
    assert_eq!(
        c.ioctl(USB_RAW_IOCTL_EPS_INFO, small).ret,
        Err(Errno::EFAULT)
    );
}

/// contract C11: the fast path moves more than the retry protocol's 128 KiB in one ioctl.
#[test]
fn c11_fast_path_lifts_the_128k_cap() {
    let rig = Rig::new();
    let c = rig.client();
    let (h, bus) = c.running_with_bulk_out(&rig.host, 0);
    let len = 300 * 1024;
    let (b, _) = (c.k.memory.alloc(c.c.pid, 8 + len), ());
    c.k.memory
        .copy_to(
            c.c.pid,
            b,
            &UsbRawEpIo {
                ep: h,
                flags: 0,
                length: len as u32,
            }
            .to_bytes(),
        )
        .unwrap();
    let blocked = c.spawn(USB_RAW_IOCTL_EP_READ, b);
    rig.wait_blocked(1);
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    bus.with(|bus| bus.submit(Urb::bulk(0x02, data.clone())));
    let r = blocked.join();
    assert_eq!(
        r,
        IoctlResult {
            ret: Ok(len as i32),
            rounds: 1
        }
    );
    assert_eq!(c.get(b + 8, len), data);
}

// ---------------------------------------------------------------------------------------------
// C12: small differences and 32-bit callers

/// contract C12, spec §1.1: O_NONBLOCK opens fail with EINVAL; read and write give EINVAL;
/// poll gives ENOSYS (the kernel then answers DEFAULT_POLLMASK); unknown ioctls EINVAL.
#[test]
fn c12_nonblock_read_write_poll_unknown_ioctl() {
    let rig = Rig::new();
    assert_eq!(rig.k.open(2 | O_NONBLOCK), Err(Errno::EINVAL));
    let c = rig.client();
    let mut rw = vec![0u8; 40];
    rw[..8].copy_from_slice(&c.fh.to_ne_bytes());
    assert_eq!(rig.k.simple(opcode::FUSE_READ, &rw), Err(Errno::EINVAL));
    let mut w = rw.clone();
    w.extend_from_slice(b"data");
    assert_eq!(rig.k.simple(opcode::FUSE_WRITE, &w), Err(Errno::EINVAL));
    assert_eq!(
        rig.k.simple(opcode::FUSE_POLL, &[0u8; 24]),
        Err(Errno::ENOSYS)
    );
    assert_eq!(
        rig.k.simple(opcode::FUSE_FLUSH, &[0u8; 24]),
        Err(Errno::ENOSYS)
    );
    for cmd in [
        0x5510,
        0x8008_5510,
        USB_RAW_IOCTL_EP0_READ & 0x3fff_ffff,
        0xdead_beef,
    ] {
        assert_eq!(
            c.ioctl(cmd, 0),
            IoctlResult {
                ret: Err(Errno::EINVAL),
                rounds: 1
            }
        );
    }
}

/// contract C12: a 32-bit caller (FUSE_IOCTL_32BIT) is served through both paths.
#[test]
fn c12_32bit_callers() {
    for config in [retry_only(), ServeConfig::default()] {
        let rig = Rig::with(config);
        let c = rig.client_with(|c| Caller { compat: true, ..c });
        c.init("dummy_udc.0").unwrap();
        c.run().unwrap();
        rig.host.attached(0);
        let (r, info) = c.eps_info();
        assert_eq!(r, Ok(24));
        assert_eq!(info.eps[0].name_bytes(), b"ep1in-bulk");
        let (r, h, _) = c.fetch(8);
        assert_eq!((r, h.type_), (Ok(0), event_type::USB_RAW_EVENT_CONNECT));
    }
}

// ---------------------------------------------------------------------------------------------
// C13: the daemon's end, restart

/// contract C13: when the connection ends the reader returns cleanly; a new server (after a
/// restart) serves new opens; `shutdown` detaches every device.
#[test]
fn c13_connection_end_and_restart() {
    let mut rig = Rig::new();
    let c = rig.client();
    c.init("dummy_udc.0").unwrap();
    c.run().unwrap();
    rig.host.attached(0);
    rig.server.shutdown();
    rig.host.wait_detached(1);
    rig.stop().expect("a clean end");
    let rig2 = Rig::new();
    let c = rig2.client();
    c.init("dummy_udc.0").unwrap();
    assert_eq!(c.run(), Ok(0));
}

// ---------------------------------------------------------------------------------------------
// Instances, names, concurrency, bad input

/// contract D1, issue 6 item 2: EPS_INFO is dummy_udc's list.
#[test]
fn eps_info_is_dummy_udcs() {
    let rig = Rig::new();
    let c = rig.client();
    c.init("dummy_udc.0").unwrap();
    c.run().unwrap();
    let (r, info) = c.eps_info();
    assert_eq!(r, Ok(24));
    for (i, (name, caps)) in dummy_udc::ENDPOINTS.iter().enumerate() {
        assert_eq!(info.eps[i].name_bytes(), name.as_bytes());
        assert_eq!(info.eps[i].caps, *caps);
        assert_eq!(info.eps[i].limits.maxpacket_limit, 65535);
    }
    assert_eq!(info.eps[24], UsbRawEpInfo::default());
}

/// contract D2 across instances: dummy_udc.N exists for N < udcs; each is held by one
/// RUNning instance; a second RUN on it is EBUSY and FAILED; release frees it; other names
/// fail with EBUSY.
#[test]
fn d2_udc_names_are_held_by_one_instance() {
    let rig = Rig::with(ServeConfig {
        udcs: 4,
        ..ServeConfig::default()
    });
    let a = rig.client();
    a.init("dummy_udc.3").unwrap();
    assert_eq!(a.run(), Ok(0));
    assert_eq!(rig.host.attached(0).0, 3);
    let b = rig.client();
    b.init("dummy_udc.3").unwrap();
    assert_eq!(b.run(), Err(Errno::EBUSY));
    assert_eq!(b.run(), Err(Errno::EINVAL), "FAILED after a failed RUN");
    for bad in ["dummy_udc.4", "dummy_udc.03", "20980000.usb"] {
        let x = rig.client();
        x.init(bad).unwrap();
        assert_eq!(x.run(), Err(Errno::EBUSY), "{bad}");
    }
    let d = rig.client();
    d.init("dummy_udc.2").unwrap();
    assert_eq!(d.run(), Ok(0));
    a.release();
    let e = rig.client();
    e.init("dummy_udc.3").unwrap();
    assert_eq!(e.run(), Ok(0));
}

/// Issue 6 item 1: many blocked ioctls at once across threads and instances; the reader keeps
/// serving, and each is answered when its op completes.
#[test]
fn many_blocked_ioctls_across_threads_and_instances() {
    let rig = Rig::with(ServeConfig {
        udcs: 8,
        ..ServeConfig::default()
    });
    let mut all = Vec::new();
    for i in 0..6 {
        let c = rig.client();
        c.init(&format!("dummy_udc.{i}")).unwrap();
        c.run().unwrap();
        let (_, bus) = rig.host.attached(i);
        let h = c.ep_enable(BULK_OUT_EP2).unwrap() as u16;
        let h_in = c.ep_enable(BULK_IN_EP1).unwrap() as u16;
        while bus.lock().instance().queued_events() > 0 {
            assert_eq!(c.fetch(8).0, Ok(0));
        }
        let read = c.k.memory.put(c.c.pid, &{
            let mut v = UsbRawEpIo {
                ep: h,
                flags: 0,
                length: 64,
            }
            .to_bytes()
            .to_vec();
            v.resize(72, 0);
            v
        });
        // longer than dummy's 64-byte IN FIFO, so it waits for the host (contract D13)
        let write = c.k.memory.put(c.c.pid, &{
            let mut v = UsbRawEpIo {
                ep: h_in,
                flags: 0,
                length: 100,
            }
            .to_bytes()
            .to_vec();
            v.extend_from_slice(&[0xa5; 100]);
            v
        });
        let fetch = c.put(
            &UsbRawEvent {
                type_: 0,
                length: 8,
            }
            .to_bytes(),
        );
        all.push((
            c.clone(),
            bus,
            read,
            c.spawn(USB_RAW_IOCTL_EP_READ, read),
            c.spawn(USB_RAW_IOCTL_EP_WRITE, write),
            c.spawn(USB_RAW_IOCTL_EVENT_FETCH, fetch),
        ));
    }
    rig.wait_blocked(18);
    // the reader is free: a new open and its ioctls are served meanwhile
    let other = rig.client();
    assert_eq!(other.eps_info().0, Err(Errno::EINVAL));
    for (i, (c, bus, read, r, w, f)) in all.into_iter().enumerate() {
        bus.with(|b| b.submit(Urb::bulk(0x02, vec![i as u8; 64])));
        let got = bus.with(|b| b.submit(Urb::bulk(0x81, vec![0; 512])));
        assert_eq!(r.join().ret, Ok(64));
        assert_eq!(c.get(read + 8, 64), vec![i as u8; 64]);
        assert_eq!(w.join().ret, Ok(100));
        let done = bus
            .with(|b| b.take_urb_completion(got))
            .expect("bulk IN done");
        assert_eq!(&done.buffer[..done.actual_length as usize], &[0xa5; 100]);
        rig.k.interrupt(f.unique());
        assert_eq!(f.join().ret, Err(Errno::EINTR));
    }
    assert_eq!(rig.stats().in_flight, 0);
}

/// Issue 6 item 4: thousands of opens, each an independent instance; all released.
#[test]
fn thousands_of_opens() {
    let rig = Rig::new();
    let clients: Vec<Client> = (0..2000).map(|_| rig.client()).collect();
    assert_eq!(rig.stats().instances, 2000);
    for (i, c) in clients.iter().enumerate().step_by(97) {
        assert_eq!(c.init("dummy_udc.0"), Ok(0), "instance {i}");
        assert_eq!(
            c.init("dummy_udc.0"),
            Err(Errno::EINVAL),
            "INIT works once per open"
        );
    }
    for c in &clients {
        c.release();
    }
    assert_eq!(rig.stats().instances, 0);
    assert_eq!(rig.stats().opens, 2000);
}

/// Issue 6 item 4, spec §2.4: a client that never fetches events: the 17th event fails its
/// instance (EINVAL from then on); another instance keeps working.
#[test]
fn a_client_that_never_fetches_fails_only_itself() {
    let rig = Rig::with(ServeConfig {
        udcs: 2,
        ..ServeConfig::default()
    });
    let lazy = rig.client();
    lazy.init("dummy_udc.0").unwrap();
    lazy.run().unwrap();
    let (_, bus) = rig.host.attached(0);
    let good = rig.client();
    good.init("dummy_udc.1").unwrap();
    good.run().unwrap();
    for _ in 0..20 {
        let _ = bus.with(|b| {
            let r = b.port_suspend();
            let _ = b.port_resume();
            b.advance(Duration::from_millis(30));
            r
        });
    }
    assert_eq!(
        bus.lock().instance().state(),
        rawgadget_engine::State::Failed
    );
    assert_eq!(lazy.fetch(8).0, Err(Errno::EINVAL));
    let (r, h, _) = good.fetch(8);
    assert_eq!((r, h.type_), (Ok(0), event_type::USB_RAW_EVENT_CONNECT));
}

/// Issue 6 item 4: garbage on the channel never panics the server; requests with a readable
/// header get an answer.
#[test]
fn garbage_requests_are_answered_or_dropped() {
    let rig = Rig::new();
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..500u64 {
        let len = 40 + (next() % 200) as usize;
        let mut msg: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let unique = 0x10_0000 + i * 2;
        msg[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        let op = [
            opcode::FUSE_IOCTL,
            opcode::FUSE_OPEN,
            opcode::FUSE_RELEASE,
            opcode::FUSE_INTERRUPT,
            99,
        ][i as usize % 5];
        msg[4..8].copy_from_slice(&op.to_ne_bytes());
        msg[8..16].copy_from_slice(&unique.to_ne_bytes());
        msg[36..38].copy_from_slice(&0u16.to_ne_bytes());
        if op == opcode::FUSE_INTERRUPT {
            continue;
        }
        rig.k.send_raw(msg);
        let _ = rig.k.reply(unique);
    }
    // still serving
    let c = rig.client();
    assert_eq!(c.init("dummy_udc.0"), Ok(0));
}

// ---------------------------------------------------------------------------------------------
// Performance paths: several readers, answers from the completing thread

/// Issue 6 "Performance": a blocked transfer is answered by the thread whose change completes
/// it (a completion hook on the bus, no worker thread in between): the reply is in the fake
/// kernel before the host's `with` returns.
#[test]
fn blocked_transfer_is_answered_by_the_completing_thread() {
    for fast_path in [true, false] {
        let rig = Rig::with(ServeConfig {
            fast_path,
            ..ServeConfig::default()
        });
        let c = rig.client();
        let (h, bus) = c.running_with_bulk_out(&rig.host, 0);
        let mut hdr = UsbRawEpIo {
            ep: h,
            flags: 0,
            length: 64,
        }
        .to_bytes()
        .to_vec();
        hdr.resize(72, 0);
        let a = c.put(&hdr);
        let blocked = c.spawn(USB_RAW_IOCTL_EP_READ, a);
        rig.wait_blocked(1);
        bus.with(|b| b.submit(Urb::bulk(0x02, vec![0x3c; 64])));
        // synchronous: no other thread had to run for the reply to be written
        assert_eq!(rig.stats().in_flight, 0, "fast_path {fast_path}");
        assert_eq!(blocked.join().ret, Ok(64));
        assert_eq!(c.get(a + 8, 64), vec![0x3c; 64]);
    }
}

/// Issue 6 "Performance": with one reader or several, many callers issuing non-blocking
/// ioctls at once on several instances each get their own answer (results written into the
/// right caller's memory), while other calls stay blocked.
#[test]
fn concurrent_callers_on_several_readers_get_their_own_answers() {
    for readers in [1, 4] {
        let rig = Rig::with(ServeConfig {
            udcs: 4,
            readers,
            ..ServeConfig::default()
        });
        let mut threads = Vec::new();
        let mut blocked = Vec::new();
        for i in 0..4 {
            let c = rig.client();
            c.init(&format!("dummy_udc.{i}")).unwrap();
            c.run().unwrap();
            let (_, bus) = rig.host.attached(i);
            while bus.lock().instance().queued_events() > 0 {
                assert_eq!(c.fetch(8).0, Ok(0));
            }
            let fetch = c.put(
                &UsbRawEvent {
                    type_: 0,
                    length: 8,
                }
                .to_bytes(),
            );
            blocked.push(c.spawn(USB_RAW_IOCTL_EVENT_FETCH, fetch));
            for t in 0..2u32 {
                let c = Client {
                    c: Caller::new(1000 + 10 * i as u32 + t),
                    ..c.clone()
                };
                threads.push(thread::spawn(move || {
                    for n in 0..100u32 {
                        let (r, info) = c.eps_info();
                        assert_eq!(r, Ok(24));
                        assert_eq!(
                            info.eps[0].name_bytes(),
                            dummy_udc::ENDPOINTS[0].0.as_bytes()
                        );
                        assert_eq!(c.ioctl(USB_RAW_IOCTL_VBUS_DRAW, u64::from(n)).ret, Ok(0));
                        // EP0_READ with no SETUP pending: EBUSY after the header checks
                        let (_, r) = c.io(USB_RAW_IOCTL_EP0_READ, 0, 16, &[]);
                        assert_eq!(r.ret, Err(Errno::EBUSY));
                    }
                }));
            }
        }
        for t in threads {
            t.join().unwrap();
        }
        rig.wait_blocked(4);
        for b in blocked {
            rig.k.interrupt(b.unique());
            assert_eq!(b.join().ret, Err(Errno::EINTR));
        }
        assert_eq!(rig.stats().in_flight, 0);
    }
}

/// Issue 6 "Performance", both paths: a control IN request as enumeration does it (a blocked
/// EVENT_FETCH answered by the host's SETUP from the host's thread, then EP0_WRITE) gives the
/// host its data.
#[test]
fn control_in_through_a_blocked_fetch_on_both_paths() {
    for fast_path in [true, false] {
        let rig = Rig::with(ServeConfig {
            fast_path,
            ..ServeConfig::default()
        });
        let c = rig.client();
        c.init("dummy_udc.0").unwrap();
        c.run().unwrap();
        let (_, bus) = rig.host.attached(0);
        while bus.lock().instance().queued_events() > 0 {
            assert_eq!(c.fetch(8).0, Ok(0));
        }
        for round in 0..3u8 {
            let fetcher = {
                let c = c.clone();
                thread::spawn(move || c.fetch(8))
            };
            rig.wait_blocked(1);
            let setup = [0x80, 6, 0, 1, 0, 0, 18, 0];
            let urb = bus.with(|b| b.submit(Urb::control(setup, &[0; 18])));
            let (r, h, data) = fetcher.join().unwrap();
            assert_eq!(
                (r, h.type_, data),
                (Ok(0), event_type::USB_RAW_EVENT_CONTROL, setup.to_vec()),
                "fast_path {fast_path} round {round}"
            );
            let desc: Vec<u8> = (0..18).map(|i| i + round).collect();
            let (_, w) = c.io(USB_RAW_IOCTL_EP0_WRITE, 0, 18, &desc);
            assert_eq!(w.ret, Ok(18));
            let done = bus
                .with(|b| b.take_urb_completion(urb))
                .expect("the control URB is given back");
            assert_eq!(&done.buffer[..done.actual_length as usize], &desc[..]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// P4 over a real USB/IP link: the thread of the ioctl writes the host's reply

/// A host that attaches each device over a real USB/IP link (a socketpair, the local vhci's
/// kind of stream, which takes client-side writes) to a fake vhci.
#[derive(Default)]
struct UsbipHost {
    vhcis: Mutex<Vec<FakeVhci<UnixStream>>>,
    changed: Condvar,
}

impl std::fmt::Debug for UsbipHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsbipHost").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct UsbipHostHandle(Arc<UsbipHost>);

#[derive(Debug)]
struct UsbipTestDevice {
    device: UsbipDevice,
    host: Arc<UsbipHost>,
    conn: Option<ConnectionHandle>,
}

impl Host for UsbipHostHandle {
    fn new_device(&self) -> Box<dyn HostDevice> {
        Box::new(UsbipTestDevice {
            device: UsbipDevice::new(UsbipConfig {
                personality: personality(Speed::High),
                ..UsbipConfig::default()
            }),
            host: self.0.clone(),
            conn: None,
        })
    }
}

impl HostDevice for UsbipTestDevice {
    fn bus(&self) -> Arc<SharedBus> {
        self.device.bus().clone()
    }
    fn client_flush(&self) -> Option<ClientFlush> {
        Some(self.device.client_flush().clone())
    }
    fn attach(&mut self, _udc: u32) -> Result<String, AttachError> {
        let speed = self.device.wait_running(TIMEOUT)?;
        let (ours, theirs) = UnixStream::pair()?;
        let conn = self.device.connect(
            ours,
            Budget::LOCAL_VHCI,
            tracing::info_span!("cuse-test-usbip"),
        )?;
        self.conn = Some(conn);
        self.host
            .vhcis
            .lock()
            .unwrap()
            .push(FakeVhci::new(theirs, speed, 0x0001_0001));
        self.host.changed.notify_all();
        Ok("fake vhci over a socketpair".into())
    }
    fn detach(&mut self) {
        if let Some(c) = self.conn.take() {
            c.close();
        }
    }
}

/// contract P4 through CUSE: a vendor OUT control request with no data stage arrives over
/// USB/IP, the client sees it through EVENT_FETCH and acknowledges it with EP0_READ(0); the
/// ioctl's thread writes the RET_SUBMIT itself (the link's flush) and the host gets status 0,
/// 100 times in a row, with nothing left blocked in the server.
#[test]
fn p4_ep0_status_over_usbip_is_written_by_the_ioctl() {
    let k = FakeKernel::new();
    let host = Arc::new(UsbipHost::default());
    let server = Server::new(
        Arc::new(k.clone()),
        k.memory.clone(),
        Arc::new(UsbipHostHandle(host.clone())),
        ServeConfig::default(),
    );
    let s = server.clone();
    let serving = thread::spawn(move || serve(&s));
    k.init_default();
    let c = Client {
        k: k.clone(),
        fh: k.open(2).expect("open"),
        c: Caller::new(100),
    };
    c.init("dummy_udc.0").unwrap();
    c.run().unwrap();
    let mut vhci = {
        let deadline = Instant::now() + TIMEOUT;
        let mut v = host.vhcis.lock().unwrap();
        while v.is_empty() {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("never attached");
            v = host.changed.wait_timeout(v, left).unwrap().0;
        }
        v.pop().unwrap()
    };
    let (r, h, _) = c.fetch(8);
    assert_eq!((r, h.type_), (Ok(0), event_type::USB_RAW_EVENT_CONNECT));
    let setup = [0x40, 0x5b, 0, 0, 0, 0, 0, 0];
    for seqnum in 1..=100u32 {
        let submit = CmdSubmit {
            header: CmdSubmitRepr {
                seqnum,
                devid: 0x0001_0001,
                direction: Direction::Out,
                ep: 0,
                transfer_flags: 0,
                transfer_buffer_length: 0,
                start_frame: 0,
                number_of_packets: 0,
                interval: 0,
                setup,
            },
            data: Vec::new(),
            iso_packets: Vec::new(),
        };
        vhci.submit_raw(&submit, false).unwrap();
        // the port reset and resume of the attach (U5) come before the first SETUP
        let (r, h, ctrl) = loop {
            let (r, h, ctrl) = c.fetch(8);
            let bus_event = [
                event_type::USB_RAW_EVENT_RESET,
                event_type::USB_RAW_EVENT_RESUME,
            ]
            .contains(&h.type_);
            if !bus_event || seqnum > 1 {
                break (r, h, ctrl);
            }
        };
        assert_eq!((r, h.type_), (Ok(0), event_type::USB_RAW_EVENT_CONTROL));
        assert_eq!(ctrl, setup);
        let (_, r) = c.io(USB_RAW_IOCTL_EP0_READ, 0, 0, &[]);
        assert_eq!(r.ret, Ok(0));
        // written before the ioctl's own reply: already in the socket when the ioctl returns
        let unread = rustix::io::ioctl_fionread(vhci.stream()).unwrap();
        assert!(
            unread > 0,
            "RET_SUBMIT {seqnum} not written by the ioctl's thread"
        );
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(st) = vhci.replies.iter().find_map(|r| match r {
                WireReply::RetSubmit {
                    seqnum: s, status, ..
                } if *s == seqnum => Some(*status),
                _ => None,
            }) {
                break st;
            }
            assert!(Instant::now() < deadline, "no RET_SUBMIT {seqnum}");
            assert!(vhci.is_connected(), "link broken: {:?}", vhci.error());
            vhci.pump(Duration::from_millis(20));
        };
        assert_eq!(status, 0, "request {seqnum}");
    }
    assert_eq!(vhci.error(), None);
    let st = server.stats();
    assert_eq!(st.in_flight, 0, "{st:?}");
    c.release();
    k.abort();
    serving.join().unwrap().expect("serve");
    assert_eq!(k.violations(), Vec::<String>::new());
}
