//! URB round trips per second over USB/IP, with no kernel: a Gadget Zero-like device program on
//! [`InProcess::usbip`], connected over a UNIX socketpair to the project's fake vhci
//! (`rawgadget_usbip_udc::fake_vhci`, vhci's checks included), driven by the loopback host.
//!
//! Each URB is synchronous, as usbtest's cases 1, 2 and 9 are: the host submits one URB and
//! waits for its RET_SUBMIT before the next. The device program runs in threads, as
//! `rawgadget gadget-zero` does (an event thread blocked in `Gadget::next_event`, one thread
//! per bulk endpoint), so every URB crosses the driver's reader, the device program's thread
//! and whichever thread writes the reply (contract P4). Figures, not assertions; the median of
//! several runs. Beside the rate: the process's CPU time per URB (all threads, spinning
//! included) and its context switches per URB (all threads, from `/proc/self/task`), which
//! count the thread handoffs and vary less than the rate on a loaded machine.
//!
//! `cargo bench -p rawgadget --bench usbip_loop` (`-- --quick` for fewer, shorter runs).

mod common;
use common::measure::{context_switches, median, process_cpu_time};
use common::{config_descriptor, endpoint_descriptor, BULK_IN, BULK_OUT, DEVICE};

use std::hint::black_box;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rawgadget::usbip::{Budget, UsbipConfig};
use rawgadget::{has_in_data_stage, Endpoint, Event, Gadget, InProcess, Speed};
use rawgadget_loopback::{Host, HostConfig, HostPort};
use rawgadget_udc::Urb;
use rawgadget_usbip_udc::fake_vhci::FakeVhci;

const VENDOR_IN: u8 = 0x5c;
const SIZE: usize = 1024;
const CONTROL_IN_LEN: u16 = 8;
const TIMEOUT: Duration = Duration::from_secs(10);

/// The event thread: descriptors, SET_CONFIGURATION (enables both bulk endpoints and starts a
/// thread on each, as Gadget Zero's source/sink does), the vendor IN request (EP0_WRITE).
fn event_loop(gadget: Gadget) {
    let reply: Vec<u8> = (0..=255u8).collect();
    while let Ok(ev) = gadget.next_event() {
        let Event::Control(setup) = ev else { continue };
        let r = match (setup.request_type, setup.request) {
            (0x80, 6) => match setup.value >> 8 {
                1 => gadget.ep0_reply(&setup, &DEVICE).map(drop),
                2 => gadget.ep0_reply(&setup, &config_descriptor()).map(drop),
                _ => gadget.ep0_stall(),
            },
            (0x00, 9) if setup.value == 1 => (|| {
                let ep_in = gadget.enable(&endpoint_descriptor(&BULK_IN))?;
                let ep_out = gadget.enable(&endpoint_descriptor(&BULK_OUT))?;
                gadget.vbus_draw(50)?;
                gadget.configure()?;
                spawn_source(ep_in);
                spawn_sink(ep_out);
                gadget.ep0_ack()
            })(),
            (0xc0, VENDOR_IN) if has_in_data_stage(&setup) => gadget
                .ep0_write(&reply[..usize::from(setup.length)])
                .map(drop),
            _ => gadget.ep0_stall(),
        };
        if matches!(r, Err(e) if e.is_interrupted()) {
            return;
        }
    }
}

/// Writes 1 KiB packets to bulk IN until the gadget stops.
fn spawn_source(ep: Endpoint) {
    thread::spawn(move || {
        let buf = vec![0x5au8; SIZE];
        while ep.write(&buf).is_ok() {}
    });
}

/// Reads bulk OUT until the gadget stops.
fn spawn_sink(ep: Endpoint) {
    thread::spawn(move || {
        let mut buf = vec![0u8; SIZE];
        while let Ok(n) = ep.read_into(&mut buf) {
            black_box(&buf[..n]);
        }
    });
}

struct Rig {
    gadget: Gadget,
    vhci: FakeVhci<UnixStream>,
    events: Option<thread::JoinHandle<()>>,
    _conn: rawgadget_usbip_udc::ConnectionHandle,
}

fn start() -> Rig {
    let (backend, device) = InProcess::usbip(UsbipConfig::default());
    let gadget = Gadget::builder()
        .speed(Speed::High)
        .build(Arc::new(backend))
        .expect("INIT");
    gadget.run().expect("RUN");
    let events = {
        let g = gadget.clone();
        thread::spawn(move || event_loop(g))
    };
    let speed = device.wait_running(TIMEOUT).expect("RUN");
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let conn = device
        .connect(ours, Budget::LOCAL_VHCI, tracing::info_span!("bench"))
        .expect("connect");
    let mut vhci = FakeVhci::new(theirs, speed, 0x0001_0002);
    let mut host = Host::new(HostConfig {
        read_strings: false,
        ..HostConfig::default()
    });
    host.enumerate(&mut vhci).expect("enumeration over USB/IP");
    Rig {
        gadget,
        vhci,
        events: Some(events),
        _conn: conn,
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.gadget.stop_events();
        if let Some(t) = self.events.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Case {
    BulkOut,
    BulkIn,
    Control,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::BulkOut => "bulk OUT 1 KiB",
            Case::BulkIn => "bulk IN 1 KiB",
            Case::Control => "control IN 8 B (EP0_WRITE)",
        }
    }

    fn urb(self) -> Urb {
        match self {
            Case::BulkOut => Urb::bulk(BULK_OUT[2], vec![0xa5; SIZE]),
            Case::BulkIn => Urb::bulk(BULK_IN[2], vec![0; SIZE]),
            Case::Control => Urb::control(
                rawgadget_loopback::setup(0xc0, VENDOR_IN, 0, 0, CONTROL_IN_LEN),
                &[],
            ),
        }
    }

    fn expected(self) -> u32 {
        match self {
            Case::Control => u32::from(CONTROL_IN_LEN),
            _ => SIZE as u32,
        }
    }
}

/// One run's figures.
#[derive(Clone, Copy)]
struct Figures {
    /// URB round trips per second.
    rate: f64,
    /// CPU time per URB, every thread of the process, in microseconds.
    cpu_us: f64,
    /// Context switches per URB, every thread of the process.
    switches: f64,
}

/// `n` synchronous URBs.
fn rate(rig: &mut Rig, case: Case, n: usize) -> Figures {
    let (cpu, switches) = (process_cpu_time(), context_switches());
    let start = Instant::now();
    for _ in 0..n {
        let id = rig.vhci.submit(case.urb());
        let c = rig.vhci.wait(id, TIMEOUT).expect("URB given back in time");
        assert_eq!(c.status, Ok(()), "{} status", case.label());
        assert_eq!(c.actual_length, case.expected());
    }
    let wall = start.elapsed().as_secs_f64();
    Figures {
        rate: n as f64 / wall,
        cpu_us: (process_cpu_time() - cpu).as_secs_f64() * 1e6 / n as f64,
        switches: context_switches().saturating_sub(switches) as f64 / n as f64,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (runs, n) = if quick { (5, 500) } else { (7, 3000) };
    let mut rig = start();
    assert_eq!(rig.vhci.error(), None);
    println!("usbip_loop: synchronous URBs over a socketpair, median of {runs} runs of {n}");
    for case in [Case::BulkOut, Case::BulkIn, Case::Control] {
        // warm-up
        rate(&mut rig, case, n / 10);
        let v: Vec<Figures> = (0..runs).map(|_| rate(&mut rig, case, n)).collect();
        let rates: Vec<f64> = v.iter().map(|f| f.rate).collect();
        let (lo, hi) = (
            rates.iter().copied().fold(f64::INFINITY, f64::min),
            rates.iter().copied().fold(0.0, f64::max),
        );
        println!(
            "{:<28} {:>7.0} URB/s (min {:.0}, max {:.0})  {:>5.1} us CPU/URB  {:>4.2} switches/URB",
            case.label(),
            median(rates),
            lo,
            hi,
            median(v.iter().map(|f| f.cpu_us).collect()),
            median(v.iter().map(|f| f.switches).collect()),
        );
    }
    assert_eq!(rig.vhci.error(), None);
}
