//! Throughput of the in-process backend through the gadget API, driven by the in-process host
//! (`Threaded` port) in the main thread: control transfers per second and bulk MB/s, each bulk
//! figure beside a plain memcpy of the same buffer size measured right after it in the same
//! run. Figures, not assertions; the median of several runs.
//!
//! `cargo bench -p rawgadget --bench inprocess` (`-- --quick` for fewer, shorter runs;
//! `-- --only WORD` for the rows whose label contains WORD, e.g. `control` or `65536`).
//!
//! The device program is a small vendor device enumerated by the host. Its ep0 handler runs
//! either in an event thread blocked in `Gadget::next_event` or, same-thread, in the host's
//! waits (`InlineEvents`). Its bulk side runs in its own thread, through `write`/`read_into`
//! (copied in and out, as through the ioctl) or `write_owned`/`read_owned` (buffers handed
//! over), or same-thread through `InlineTransfers`. The host keeps 1 or 16 URBs queued; with
//! 16 it reaps completions in batches.

mod common;
use common::measure::{median, process_cpu_time};
use common::{config_descriptor, endpoint_descriptor, BULK_IN, BULK_OUT, DEVICE};

use std::hint::black_box;
use std::ops::ControlFlow;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use rawgadget::inprocess::{InlineEvents, InlineTransfers};
use rawgadget::{has_in_data_stage, Endpoint, Event, Gadget, InProcess, IoFlags, Speed};
use rawgadget_loopback::{Host, HostConfig, HostPort, Threaded};
use rawgadget_udc::Urb;

const VENDOR_IN: u8 = 0x5c;
const VENDOR_OUT: u8 = 0x5b;
const CONTROL_IN_LEN: u16 = 8;
const TIMEOUT: Duration = Duration::from_secs(10);

/// The device program's ep0 handler: descriptors, SET_CONFIGURATION (enables the two bulk
/// endpoints and hands them out), the vendor IN request (EP0_WRITE) and the vendor OUT request
/// without data (0-length EP0_READ).
struct Ep0 {
    gadget: Gadget,
    endpoints: std::sync::mpsc::Sender<(Endpoint, Endpoint)>,
    reply: Vec<u8>,
}

impl Ep0 {
    fn handle(&mut self, ev: Event) -> rawgadget::Result<()> {
        let Event::Control(setup) = ev else {
            return Ok(());
        };
        match (setup.request_type, setup.request) {
            (0x80, 6) => match setup.value >> 8 {
                1 => self.gadget.ep0_reply(&setup, &DEVICE).map(drop),
                2 => self
                    .gadget
                    .ep0_reply(&setup, &config_descriptor())
                    .map(drop),
                _ => self.gadget.ep0_stall(),
            },
            (0x00, 9) if setup.value == 1 => {
                let ep_in = self.gadget.enable(&endpoint_descriptor(&BULK_IN))?;
                let ep_out = self.gadget.enable(&endpoint_descriptor(&BULK_OUT))?;
                self.gadget.vbus_draw(50)?;
                self.gadget.configure()?;
                let _ = self.endpoints.send((ep_in, ep_out));
                self.gadget.ep0_ack()
            }
            (0xc0, VENDOR_IN) => self
                .gadget
                .ep0_write(&self.reply[..usize::from(setup.length)])
                .map(drop),
            (0x40, VENDOR_OUT) if !has_in_data_stage(&setup) && setup.length == 0 => {
                self.gadget.ep0_ack()
            }
            _ => self.gadget.ep0_stall(),
        }
    }
}

/// Where the device program's event loop runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dispatch {
    /// Its own thread, blocked in `Gadget::next_event`.
    Thread,
    /// The host's thread, while the host waits (`InlineEvents`).
    Inline,
}

enum EventLoop {
    Thread(thread::JoinHandle<()>),
    Inline(InlineEvents),
}

struct Rig {
    port: Threaded,
    gadget: Gadget,
    ep_in: Endpoint,
    ep_out: Endpoint,
    events: EventLoop,
}

/// A gadget on a fresh in-process bus, enumerated by the in-process host.
fn start(dispatch: Dispatch) -> Rig {
    let (backend, bus) = InProcess::new();
    let gadget = Gadget::builder()
        .speed(Speed::High)
        .build(Arc::new(backend))
        .expect("INIT");
    gadget.run().expect("RUN");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut ep0 = Ep0 {
        gadget: gadget.clone(),
        endpoints: tx,
        reply: (0..=255u8).collect(),
    };
    let events = match dispatch {
        Dispatch::Thread => EventLoop::Thread(thread::spawn(move || loop {
            match ep0.gadget.next_event() {
                Ok(ev) => {
                    if let Err(e) = ep0.handle(ev) {
                        if e.is_interrupted() {
                            return;
                        }
                    }
                }
                Err(_) => return,
            }
        })),
        Dispatch::Inline => EventLoop::Inline(InlineEvents::start(&bus, move |ev| {
            let _ = ep0.handle(ev);
            ControlFlow::Continue(())
        })),
    };
    let mut port = Threaded::new(bus);
    let mut host = Host::new(HostConfig {
        read_strings: false,
        ..HostConfig::default()
    });
    host.enumerate(&mut port).expect("enumeration");
    let (ep_in, ep_out) = rx.recv_timeout(TIMEOUT).expect("SET_CONFIGURATION");
    Rig {
        port,
        gadget,
        ep_in,
        ep_out,
        events,
    }
}

impl Rig {
    fn stop(self) {
        self.gadget.stop_events();
        match self.events {
            EventLoop::Thread(t) => {
                let _ = t.join();
            }
            EventLoop::Inline(events) => drop(events),
        }
    }
}

fn wait(port: &mut Threaded, id: rawgadget_udc::UrbId) -> rawgadget_udc::UrbCompletion {
    let c = port.wait(id, TIMEOUT).expect("URB given back in time");
    assert_eq!(c.status, Ok(()), "URB status");
    c
}

/// Control transfers per second: alternately a vendor IN request of 8 bytes answered with
/// EP0_WRITE and a vendor OUT request without data acknowledged with EP0_READ(0).
fn control_rate(rig: &mut Rig, n: usize) -> Figures {
    let setup_in = rawgadget_loopback::setup(0xc0, VENDOR_IN, 0, 0, CONTROL_IN_LEN);
    let setup_out = rawgadget_loopback::setup(0x40, VENDOR_OUT, 0, 0, 0);
    let clock = Clock::start();
    for i in 0..n {
        let setup = if i % 2 == 0 { setup_in } else { setup_out };
        let id = rig.port.submit(Urb::control(setup, &[]));
        let c = wait(&mut rig.port, id);
        let want = if i % 2 == 0 { CONTROL_IN_LEN } else { 0 };
        assert_eq!(c.actual_length, u32::from(want));
        black_box(c.data());
    }
    clock.figures(n, 1)
}

/// How the device program passes its data.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `write(&[u8])` / `read_into(&mut [u8])`: copied in and out, as through the ioctl.
    Slice,
    /// `write_owned(Vec)` / `read_owned(Vec)`: buffers handed over.
    Owned,
    /// `InlineTransfers`: buffers handed over, the endpoint loop run as a step by the host's
    /// waits, in the host's thread.
    Inline,
}

/// Which way the data goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    In,
    Out,
}

/// `n` bulk transfers of `size` bytes: the device program reads or writes them from its own
/// thread, the host keeps `depth` URBs of `size` bytes queued. Returns MB/s, timed from when
/// both sides have their buffers.
fn bulk(rig: &mut Rig, dir: Dir, api: Api, size: usize, n: usize, depth: usize) -> Figures {
    let ep = match dir {
        Dir::In => rig.ep_in.clone(),
        Dir::Out => rig.ep_out.clone(),
    };
    let endpoint = ep.address();
    let go = Arc::new(Barrier::new(2));
    let mut device_thread = None;
    let mut inline = None;
    if api == Api::Inline {
        let mut left = n;
        inline = Some(InlineTransfers::start(
            rig.port.shared(),
            &ep,
            IoFlags::NONE,
            vec![0x5au8; size],
            move |r, buf| {
                assert_eq!(r.expect("EP_WRITE / EP_READ"), size);
                black_box(&buf);
                left -= 1;
                (left > 0).then_some(buf)
            },
        ));
    } else {
        let go = go.clone();
        device_thread = Some(thread::spawn(move || {
            let mut buf = vec![0x5au8; size];
            go.wait();
            for _ in 0..n {
                let r = match (dir, api) {
                    (Dir::In, Api::Slice) => ep.write(&buf),
                    (Dir::Out, Api::Slice) => ep.read_into(&mut buf),
                    (Dir::In, _) => {
                        let (r, b) = ep.write_owned(buf);
                        buf = b;
                        r
                    }
                    (Dir::Out, _) => {
                        let (r, b) = ep.read_owned(buf);
                        buf = b;
                        r
                    }
                };
                assert_eq!(r.expect("EP_WRITE / EP_READ"), size);
                black_box(&buf);
            }
        }));
    }
    let buffers: Vec<Vec<u8>> = (0..depth.min(n)).map(|_| vec![0xa5u8; size]).collect();
    if device_thread.is_some() {
        go.wait();
    }
    let clock = Clock::start();
    host_loop(&mut rig.port, endpoint, size, n, buffers);
    if let Some(t) = device_thread {
        t.join().expect("device program");
    }
    let rate = clock.figures(n, size);
    if let Some(stream) = inline {
        // the last completion reaches the handler at the host's next wait, which never comes
        assert!(stream.completed() + 1 >= n as u64);
    }
    rate
}

/// The host's side of `n` bulk transfers of `size` bytes on `endpoint`, keeping one URB queued
/// per buffer in `buffers`; every URB's buffer is reused for the next one.
///
/// It reaps completions in batches, as a streaming host driver does when woken: when the
/// oldest URB is not done yet it sleeps until the middle one of its queue is (one endpoint
/// completes its URBs in order), then resubmits everything done. That is one wakeup per half
/// a queue instead of one per URB.
fn host_loop(port: &mut Threaded, endpoint: u8, size: usize, n: usize, buffers: Vec<Vec<u8>>) {
    let mut queued = std::collections::VecDeque::with_capacity(buffers.len());
    let mut done = std::collections::VecDeque::with_capacity(buffers.len());
    let mut submitted = 0;
    let mut completed = 0;
    for buf in buffers {
        queued.push_back(port.submit(Urb::bulk(endpoint, buf)));
        submitted += 1;
    }
    while completed < n {
        if done.is_empty() {
            // everything up to the middle of the queue, waiting for the middle one if needed
            let middle = queued.len() / 2;
            let last = port
                .wait(queued[middle], TIMEOUT)
                .expect("URB given back in time");
            for &id in queued.range(..middle) {
                done.push_back(port.wait(id, Duration::ZERO).expect("given back in order"));
            }
            done.push_back(last);
            queued.drain(..=middle);
        }
        while let Some(c) = done.pop_front() {
            assert_eq!(c.status, Ok(()), "URB status");
            assert_eq!(c.actual_length as usize, size);
            completed += 1;
            if submitted < n {
                let mut buf = c.buffer;
                // an OUT URB's buffer comes back with unspecified contents, an IN one's full
                buf.resize(size, 0);
                queued.push_back(port.submit(Urb::bulk(endpoint, buf)));
                submitted += 1;
            }
        }
    }
}

/// Wall time and the process's CPU time (all threads, spinning included) since `start`.
struct Clock {
    wall: Instant,
    cpu: Duration,
}

/// One run's figures.
#[derive(Clone, Copy)]
struct Figures {
    /// Transfers per second (control) or MB/s (bulk).
    rate: f64,
    /// CPU time per transfer, both sides together, in microseconds.
    cpu_us: f64,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: process_cpu_time(),
        }
    }

    /// Figures for `n` transfers of `size` bytes (`size` 1: a rate per second).
    fn figures(&self, n: usize, size: usize) -> Figures {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = (process_cpu_time() - self.cpu).as_secs_f64();
        let scale = if size == 1 { 1.0 } else { 1e6 };
        Figures {
            rate: (size * n) as f64 / wall / scale,
            cpu_us: cpu * 1e6 / n as f64,
        }
    }
}

fn median_figures(v: Vec<Figures>) -> Figures {
    Figures {
        rate: median(v.iter().map(|f| f.rate).collect()),
        cpu_us: median(v.iter().map(|f| f.cpu_us).collect()),
    }
}

/// A page-aligned `size`-byte window in a fresh allocation, so that source and destination of
/// the memcpy baseline have the same offset in their pages. Two `Vec`s from malloc sit 16 bytes
/// apart modulo 4096, which sends glibc's `rep movsb` on AMD Zen into its 4K-aliasing slow path
/// (about 20x slower at 4 KiB): that measures the allocator, not the copy.
struct Aligned {
    storage: Vec<u8>,
    start: usize,
    size: usize,
}

impl Aligned {
    fn new(size: usize, fill: u8) -> Aligned {
        let storage = vec![fill; size + 4096];
        let start = (4096 - storage.as_ptr() as usize % 4096) % 4096;
        Aligned {
            storage,
            start,
            size,
        }
    }
    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.size]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.size]
    }
}

/// memcpy of `size` bytes between two buffers, `n` times in 32 timed chunks. Returns the
/// median chunk's MB/s: a chunk during which the thread was preempted (the machine is shared)
/// does not drag the baseline down.
fn memcpy(size: usize, n: usize) -> f64 {
    const CHUNKS: usize = 32;
    let src = Aligned::new(size, 0x5a);
    let mut dst = Aligned::new(size, 0);
    let per_chunk = n.div_ceil(CHUNKS).max(1);
    let rates = (0..CHUNKS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_chunk {
                dst.bytes_mut().copy_from_slice(black_box(src.bytes()));
                black_box(dst.bytes_mut());
            }
            (size * per_chunk) as f64 / t.elapsed().as_secs_f64() / 1e6
        })
        .collect();
    median(rates)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only WORD`: run only the rows whose label contains WORD (e.g. `control`, `65536`)
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let wanted = |label: &str| only.as_deref().map_or(true, |w| label.contains(w));
    let runs = if quick { 3 } else { 7 };
    let scale = if quick { 4 } else { 1 };
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    println!("rawgadget in-process bench: gadget API, in-process host in the main thread");
    println!(
        "{cpus} CPUs, load average before: {}; median of {runs} runs; CPU: process CPU time \
         per transfer, both sides (spinning included)",
        load_average()
    );

    println!(
        "\n| control transfers (vendor IN 8 B / OUT 0 B, alternating) | per second | CPU µs |"
    );
    println!("|---|---|---|");
    for (name, dispatch) in [
        ("event loop in its own thread", Dispatch::Thread),
        (
            "event handler run by the host's wait (InlineEvents)",
            Dispatch::Inline,
        ),
    ] {
        if !wanted(&format!("control {name}")) {
            continue;
        }
        let mut rig = start(dispatch);
        let control_n = 40_000 / scale;
        let f = median_figures(
            (0..runs)
                .map(|_| control_rate(&mut rig, control_n))
                .collect(),
        );
        println!("| {name} | {:.0} | {:.2} |", f.rate, f.cpu_us);
        rig.stop();
    }

    let mut rig = start(Dispatch::Thread);
    println!(
        "\n| bulk | device side | URBs queued | size | MB/s | memcpy MB/s | % of memcpy | CPU µs |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for size in [512usize, 4096, 65536] {
        // about 0.1 s a run at a few GB/s
        let n = match size {
            512 => 50_000,
            4096 => 25_000,
            _ => 10_000,
        } / scale;
        for (dir_name, dir) in [("IN", Dir::In), ("OUT", Dir::Out)] {
            for (api_name, api, depth) in [
                ("thread, slice (copy)", Api::Slice, 1),
                ("thread, owned", Api::Owned, 1),
                ("thread, owned", Api::Owned, 16),
                ("inline, owned", Api::Inline, 1),
            ] {
                if !wanted(&format!("bulk {dir_name} {api_name} {depth} {size}")) {
                    continue;
                }
                let mut figures = Vec::new();
                let mut copies = Vec::new();
                for _ in 0..runs {
                    figures.push(bulk(&mut rig, dir, api, size, n, depth));
                    copies.push(memcpy(size, n));
                }
                let f = median_figures(figures);
                let copy = median(copies);
                println!(
                    "| {dir_name} | {api_name} | {depth} | {size} B | {:.0} | {copy:.0} | {:.1}% | {:.2} |",
                    f.rate,
                    100.0 * f.rate / copy,
                    f.cpu_us
                );
            }
        }
    }
    rig.stop();
    println!("\nload average after: {}", load_average());
}
