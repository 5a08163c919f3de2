//! usbtest's queued cases over USB/IP with no kernel: (c) our Gadget Zero on
//! `InProcess::usbip` (what `rawgadget zero --usbip-attach` runs) against (n) the null device
//! (`rawgadget null --usbip-attach`), both behind the project's fake vhci on a UNIX socketpair,
//! driven the way usbtest drives them:
//!
//! - case 10 "control queued" (`test_ctrl_queue`, `usbtest.c`): 32 control URBs in flight, the
//!   16 subcases twice, each resubmitted from its completion until 32 × iterations are done;
//!   some stall (EPIPE), some are short;
//! - case 24 "queued unlink OUT" (`unlink_queued`): 32 bulk OUT URBs of 1024 bytes with
//!   URB_ZERO_PACKET submitted at once, the 28th and 30th unlinked (`usb_unlink_urb`), all
//!   waited for; once per iteration;
//! - case 1 "bulk OUT" and case 9-like synchronous control, as controls: one URB at a time;
//! - cases 1 and 2 with `size 65536` (what the guest throughput table runs, and what usbfs
//!   USBDEVFS_BULK does): one 64 KiB bulk OUT or IN URB at a time, with MB/s beside the rest.
//!
//! Beside the time per URB: the process's CPU time per URB (both sides and the fake host
//! included) and its context switches per URB (every thread, from `/proc/self/task`), which
//! count thread handoffs and vary less than time on a loaded machine. The host side is the
//! same for (c) and (n), so the difference is ours. Figures, not assertions; medians.
//!
//! `cargo bench -p rawgadget-cli --bench usbip_queue` (`-- --quick` for fewer runs; a case
//! name part such as `10` or `unlink` runs that case only; `--only-c` or `--only-n` one side).

#[path = "../../gadget/benches/common/measure.rs"]
mod measure;
use measure::{context_switches, median, process_cpu_time};

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rawgadget::usbip::{Budget, UsbipConfig};
use rawgadget::{dummy_udc_eps, Gadget, InProcess, Speed};
use rawgadget_devices::{gadget_zero, DeviceRunner, ZeroConfig};
use rawgadget_loopback::{Host, HostConfig, HostPort};
use rawgadget_uapi::Errno;
use rawgadget_udc::{Unlink, Urb, UrbFlags, UrbId};
use rawgadget_usbip_udc::fake_vhci::FakeVhci;
use rawgadget_usbip_udc::null::{serve, NullDescriptors, NullDevice};

const TIMEOUT: Duration = Duration::from_secs(10);
const SGLEN: usize = 32;
const LENGTH: usize = 1024;

/// What runs behind the fake vhci.
enum Device {
    /// (c): the gadget, its event loop thread and the connection.
    Ours {
        gadget: Gadget,
        runner: Option<thread::JoinHandle<()>>,
        _conn: rawgadget_usbip_udc::ConnectionHandle,
    },
    /// (n): the null device's serving thread.
    Null(Option<thread::JoinHandle<()>>),
}

struct Rig {
    vhci: FakeVhci<UnixStream>,
    host: Host,
    bulk_out: u8,
    bulk_in: u8,
    device: Device,
}

/// `rawgadget zero --usbip-attach`'s settings; `USBIP_QUEUE_REQ_SIZE` overrides the bulk
/// request size.
fn zero_config() -> ZeroConfig {
    let mut config = ZeroConfig {
        speed: Speed::High,
        req_size: rawgadget_devices::zero::IN_PROCESS_REQ_SIZE,
        ..ZeroConfig::default()
    };
    if let Some(n) = std::env::var("USBIP_QUEUE_REQ_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.req_size = n;
    }
    config
}

fn host() -> Host {
    Host::new(HostConfig {
        read_strings: false,
        ..HostConfig::default()
    })
}

/// (c): Gadget Zero on the in-process engine, exported over the socketpair.
fn start_ours() -> Rig {
    let (backend, usbip) = InProcess::usbip(UsbipConfig::default());
    let gadget = Gadget::builder()
        .speed(Speed::High)
        .build(Arc::new(backend))
        .expect("INIT");
    let (device, _stats) = gadget_zero(zero_config());
    let runner = {
        let g = gadget.clone();
        thread::spawn(move || {
            let _ = DeviceRunner::new(g, device).run();
        })
    };
    let speed = usbip.wait_running(TIMEOUT).expect("RUN");
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let conn = usbip
        .connect(ours, Budget::LOCAL_VHCI, tracing::info_span!("bench"))
        .expect("connect");
    finish(
        FakeVhci::new(theirs, speed, 0x0001_0002),
        Device::Ours {
            gadget,
            runner: Some(runner),
            _conn: conn,
        },
    )
}

/// (n): the null device with Gadget Zero's descriptors (as `rawgadget null` builds them).
fn start_null() -> Rig {
    let (mut zero, _stats) = gadget_zero(zero_config());
    zero.assign_endpoints(&dummy_udc_eps()).expect("endpoints");
    let set = zero.descriptor_set(Speed::High);
    let mut null = NullDevice::new(NullDescriptors {
        speed: Some(Speed::High),
        device: set.device,
        config: set.config,
        qualifier: set.qualifier,
        other_speed_config: set.other_speed_config,
        bos: set.bos,
        strings: set.strings,
    })
    .expect("null device");
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    let server = thread::spawn(move || {
        let _ = serve(&mut null, &mut ours);
    });
    finish(
        FakeVhci::new(theirs, Speed::High, 0x0001_0002),
        Device::Null(Some(server)),
    )
}

/// Enumerates and finds the bulk endpoints of the configuration.
fn finish(mut vhci: FakeVhci<UnixStream>, device: Device) -> Rig {
    let mut host = host();
    host.enumerate(&mut vhci).expect("enumeration over USB/IP");
    let config = host.recording().configs[0].clone();
    let bulk = |dir: u8| {
        endpoints(&config)
            .find(|&(addr, attr)| addr & 0x80 == dir && attr & 3 == 2)
            .map(|(addr, _)| addr)
            .expect("a bulk endpoint each way")
    };
    Rig {
        vhci,
        bulk_out: bulk(0),
        bulk_in: bulk(0x80),
        host,
        device,
    }
}

/// (address, bmAttributes) of every endpoint descriptor in a configuration.
fn endpoints(config: &[u8]) -> impl Iterator<Item = (u8, u8)> + '_ {
    let mut rest = config;
    std::iter::from_fn(move || loop {
        let len = usize::from(*rest.first()?);
        if len < 2 || len > rest.len() {
            return None;
        }
        let (d, tail) = rest.split_at(len);
        rest = tail;
        if d[1] == 5 && len >= 7 {
            return Some((d[2], d[3]));
        }
    })
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.vhci.detach();
        match &mut self.device {
            Device::Ours { gadget, runner, .. } => {
                gadget.stop_events();
                if let Some(t) = runner.take() {
                    let _ = t.join();
                }
            }
            Device::Null(t) => {
                if let Some(t) = t.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

/// usbtest `set_altsetting(dev, 0)` before every test (outside its timed part): Gadget Zero
/// restarts its endpoint threads.
fn set_alt0(rig: &mut Rig) {
    let setup = rawgadget_loopback::setup(0x01, 11, 0, 0, 0);
    let r = rig.host.control(&mut rig.vhci, setup, &[]);
    assert_eq!(r, Ok(Vec::new()), "SET_INTERFACE");
}

/// One of `test_ctrl_queue`'s subcases at high speed: its SETUP and whether a stall is an
/// accepted outcome (`expected` EPIPE, required or allowed).
fn subcase(i: usize, ep0_maxpacket: u16) -> [u8; 8] {
    use rawgadget_loopback::setup;
    const GET_DESCRIPTOR: u8 = 6;
    let desc = |ty: u16, len: u16| setup(0x80, GET_DESCRIPTOR, ty << 8, 0, len);
    match i % 16 {
        0 => desc(1, 18),
        1 => desc(2, 9),
        2 => setup(0x81, 10, 0, 0, 1),
        3 => setup(0x81, 0, 0, 0, 2),
        4 => setup(0x80, 0, 0, 0, 2),
        5 => desc(6, 10),
        6 => desc(2, 18),
        7 => desc(4, 9),
        8 => setup(0x02, 1, 0, 0, 0),
        9 => setup(0x82, 0, 0, 0, 2),
        10 => desc(2, 1024),
        11 => desc(5, 9),
        12 => desc(3, 9),
        13 => desc(2, 1024 - ep0_maxpacket),
        14 => desc(1, ep0_maxpacket),
        _ => desc(15, 5),
    }
}

/// One run's figures.
#[derive(Clone, Copy)]
struct Figures {
    /// Microseconds per URB, wall clock.
    us: f64,
    /// CPU time per URB, every thread of the process, in microseconds.
    cpu_us: f64,
    /// Context switches per URB, every thread of the process.
    switches: f64,
}

fn measure(urbs: usize, f: impl FnOnce()) -> Figures {
    let (cpu, switches) = (process_cpu_time(), context_switches());
    let start = Instant::now();
    f();
    let wall = start.elapsed().as_secs_f64();
    Figures {
        us: wall * 1e6 / urbs as f64,
        cpu_us: (process_cpu_time() - cpu).as_secs_f64() * 1e6 / urbs as f64,
        switches: context_switches().saturating_sub(switches) as f64 / urbs as f64,
    }
}

/// Waits for any of `ids` to be given back; returns its index.
fn wait_any(rig: &mut Rig, ids: &[Option<UrbId>]) -> (usize, Result<(), Errno>, u32) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        for (i, id) in ids.iter().enumerate() {
            if let Some(c) = id.and_then(|id| rig.vhci.take_done(id)) {
                return (i, c.status, c.actual_length);
            }
        }
        assert!(
            Instant::now() < deadline,
            "a queued URB was never given back"
        );
        assert_eq!(rig.vhci.error(), None);
        rig.vhci.pump(Duration::from_millis(100));
    }
}

/// Case 10: returns the figures and the number of URBs whose outcome usbtest would reject.
fn ctrl_queue(rig: &mut Rig, iterations: usize) -> (Figures, usize) {
    let mp = rig.host.recording().ep0_maxpacket;
    let count = SGLEN * iterations;
    let mut bad = 0;
    let figures = measure(count, || {
        let mut ids: Vec<Option<UrbId>> = (0..SGLEN)
            .map(|i| Some(rig.vhci.submit(Urb::control(subcase(i, mp), &[]))))
            .collect();
        let (mut submitted, mut done) = (SGLEN, 0);
        while done < count {
            let (i, status, _) = wait_any(rig, &ids);
            done += 1;
            // subcases 7 and 11 always stall; 2, 5, 8, 12 and 15 may
            if status.is_err() && status != Err(Errno::EPIPE) {
                bad += 1;
            }
            ids[i] = (submitted < count).then(|| {
                submitted += 1;
                rig.vhci.submit(Urb::control(subcase(i, mp), &[]))
            });
        }
    });
    (figures, bad)
}

/// Case 24: the figures (per URB, unlinked ones included) and the URBs usbtest would reject.
fn unlink_queued(rig: &mut Rig, iterations: usize) -> (Figures, usize) {
    let mut bad = 0;
    let ep = rig.bulk_out;
    let data: Vec<u8> = (0..LENGTH).map(|i| ((i % 512) % 63) as u8).collect();
    let figures = measure(SGLEN * iterations, || {
        for _ in 0..iterations {
            let mut ids: Vec<Option<UrbId>> = (0..SGLEN)
                .map(|_| {
                    let mut urb = Urb::bulk(ep, data.clone());
                    urb.flags = UrbFlags {
                        zero_packet: true,
                        short_not_ok: false,
                    };
                    Some(rig.vhci.submit(urb))
                })
                .collect();
            for k in [SGLEN - 4, SGLEN - 2] {
                let _ = rig.vhci.unlink(ids[k].expect("submitted"), Unlink::Async);
            }
            for _ in 0..SGLEN {
                let (i, status, _) = wait_any(rig, &ids);
                ids[i] = None;
                let unlinked = i == SGLEN - 4 || i == SGLEN - 2;
                if status.is_err() && !(unlinked && status == Err(Errno::ECONNRESET)) {
                    bad += 1;
                }
            }
        }
    });
    (figures, bad)
}

/// Case 1: `iterations` synchronous 1024-byte bulk OUT URBs.
fn bulk_out_sync(rig: &mut Rig, iterations: usize) -> (Figures, usize) {
    let mut bad = 0;
    let ep = rig.bulk_out;
    let data: Vec<u8> = (0..LENGTH).map(|i| ((i % 512) % 63) as u8).collect();
    let figures = measure(iterations, || {
        for _ in 0..iterations {
            let id = rig.vhci.submit(Urb::bulk(ep, data.clone()));
            let c = rig.vhci.wait(id, TIMEOUT).expect("given back");
            bad += usize::from(c.status.is_err());
        }
    });
    (figures, bad)
}

/// usbtest's `size 65536` for the throughput cases.
const BIG: usize = 64 * 1024;

/// Case 1 with size 65536: synchronous 64 KiB bulk OUT URBs carrying the pattern.
fn bulk_out_64k(rig: &mut Rig, iterations: usize) -> (Figures, usize) {
    let mut bad = 0;
    let ep = rig.bulk_out;
    let data: Vec<u8> = (0..BIG).map(|i| ((i % 512) % 63) as u8).collect();
    let figures = measure(iterations, || {
        for _ in 0..iterations {
            let id = rig.vhci.submit(Urb::bulk(ep, data.clone()));
            let c = rig.vhci.wait(id, TIMEOUT).expect("given back");
            bad += usize::from(c.status.is_err() || c.actual_length as usize != BIG);
        }
    });
    (figures, bad)
}

/// Case 2 with size 65536: synchronous 64 KiB bulk IN URBs, all of it expected.
fn bulk_in_64k(rig: &mut Rig, iterations: usize) -> (Figures, usize) {
    let mut bad = 0;
    let ep = rig.bulk_in;
    let figures = measure(iterations, || {
        for _ in 0..iterations {
            let id = rig.vhci.submit(Urb::bulk(ep, vec![0; BIG]));
            let c = rig.vhci.wait(id, TIMEOUT).expect("given back");
            bad += usize::from(c.status.is_err() || c.actual_length as usize != BIG);
        }
    });
    (figures, bad)
}

/// Synchronous GET_DESCRIPTOR(DEVICE), as case 9's requests go one at a time.
fn control_sync(rig: &mut Rig, iterations: usize) -> (Figures, usize) {
    let mut bad = 0;
    let figures = measure(iterations, || {
        for _ in 0..iterations {
            let setup = rawgadget_loopback::setup(0x80, 6, 1 << 8, 0, 18);
            let id = rig.vhci.submit(Urb::control(setup, &[]));
            let c = rig.vhci.wait(id, TIMEOUT).expect("given back");
            bad += usize::from(c.status.is_err() || c.actual_length != 18);
        }
    });
    (figures, bad)
}

type Case = fn(&mut Rig, usize) -> (Figures, usize);

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (runs, iterations) = if quick { (3, 30) } else { (7, 100) };
    let cases: [(&str, Case, usize); 6] = [
        ("10 control queued", ctrl_queue, SGLEN * iterations),
        ("24 queued unlink OUT", unlink_queued, SGLEN * iterations),
        ("1 bulk OUT sync", bulk_out_sync, 10 * iterations),
        ("9~ control IN sync", control_sync, 10 * iterations),
        ("1 bulk OUT 64K sync", bulk_out_64k, 5 * iterations),
        ("2 bulk IN 64K sync", bulk_in_64k, 5 * iterations),
    ];
    println!(
        "usbip_queue: usbtest's queued cases over a socketpair, median of {runs} runs \
         ({iterations} iterations); per URB: time, CPU (all threads), context switches"
    );
    // `--only-c` / `--only-n`: one side, for a profiler
    let mut rigs: Vec<(&str, Rig)> = Vec::new();
    if !std::env::args().any(|a| a == "--only-n") {
        rigs.push(("(c)", start_ours()));
    }
    if !std::env::args().any(|a| a == "--only-c") {
        rigs.push(("(n)", start_null()));
    }
    for (name, case, urbs) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let mut us = Vec::new();
        for (label, rig) in &mut rigs {
            let per_urb_iterations = if name.starts_with("10") || name.starts_with("24") {
                iterations
            } else {
                urbs
            };
            set_alt0(rig);
            case(rig, per_urb_iterations / 10 + 1); // warm-up
            let mut v = Vec::new();
            let mut bad = 0;
            for _ in 0..runs {
                set_alt0(rig);
                let (f, b) = case(rig, per_urb_iterations);
                v.push(f);
                bad += b;
            }
            let t = median(v.iter().map(|f| f.us).collect());
            us.push(t);
            // MB/s (10^6 bytes, as usbtest and the guest table count) for the 64 KiB cases
            let rate = if name.contains("64K") {
                format!("  {:>6.0} MB/s", BIG as f64 / t)
            } else {
                String::new()
            };
            println!(
                "{name:<22} {label} {t:>7.1} us/URB  {:>6.1} us CPU/URB  {:>5.2} switches/URB{rate}{}",
                median(v.iter().map(|f| f.cpu_us).collect()),
                median(v.iter().map(|f| f.switches).collect()),
                if bad > 0 {
                    format!("  ({bad} outcomes usbtest would reject)")
                } else {
                    String::new()
                },
            );
            assert_eq!(rig.vhci.error(), None);
        }
        if let [c, n] = us[..] {
            println!("{name:<22} (c)/(n) {:.2}x", c / n);
        }
    }
}
