//! Gadget Zero: the source/sink test device that Linux `usbtest` drives.
//!
//! It presents itself as `g_zero` does (VID 0x0525, PID 0xa4a0, which usbtest binds with
//! `autoconf`, `ctrl_out`, `intr` and `iso`), with one vendor-specific interface:
//! - altsetting 0: bulk OUT + bulk IN (sink and source) and interrupt OUT + IN (usbtest cases
//!   25/26, which the in-kernel g_zero lacks);
//! - altsetting 1: bulk OUT + IN and isochronous OUT + IN, declared only when EPS_INFO has
//!   iso-capable endpoints. Without them it is left out entirely, as `f_sourcesink.c` does
//!   (`no_iso`): usbtest then finds one altsetting and skips the iso cases (contract T9).
//!
//! The source writes the usbtest pattern, the sink checks it (contract T8) with the maxpacket
//! of the speed given to INIT (64 FS, 512 HS, 1024 SS for bulk). The vendor requests 0x5b (OUT)
//! and 0x5c (IN) store and return up to 4096 bytes, `g_zero`'s ep0 buffer
//! (`USB_COMP_EP0_BUFSIZ`); usbtest cases 14/21 write then read them back. One thread per
//! endpoint; a bus reset, SET_CONFIGURATION or SET_INTERFACE stops them (cancel, join,
//! disable) and starts them again as needed, acknowledging the request once the new threads are
//! about to queue their first transfer. Each thread keeps one [`EpBuffer`] for its life, so a
//! transfer on a device node is one ioctl.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rawgadget::usb::class::USB_CLASS_VENDOR_SPEC;
use rawgadget::usb::descriptor::attributes::{USB_CONFIG_ATT_ONE, USB_CONFIG_ATT_SELFPOWER};
use rawgadget::usb::setup::request::*;
use rawgadget::usb::speed::{bulk_max_packet, max_packet_limit};
use rawgadget::usb::{ConfigurationBuilder, DeviceDescriptor, RequestType};
use rawgadget::{
    ControlRequest, Direction, Endpoint, EndpointAddress, EndpointAllocator, EndpointDescriptor,
    EpBuffer, Gadget, Speed, TransferType,
};
use tracing::{debug, warn};

use crate::device::{
    add_endpoint, assign_endpoint, fixed_strings, interrupt_interval, ControlReply, Device,
    DeviceError, Function,
};
use crate::pattern::{round_to_packets, Pattern};

/// `g_zero`'s IDs (NetChip / Linux-USB "Gadget Zero"), which usbtest matches.
pub const VENDOR_ID: u16 = 0x0525;
pub const PRODUCT_ID: u16 = 0xa4a0;
/// Vendor request: control write into the buffer (usbtest `ctrl_out`).
pub const REQ_CONTROL_WRITE: u8 = 0x5b;
/// Vendor request: control read of the buffer.
pub const REQ_CONTROL_READ: u8 = 0x5c;
/// Size of the vendor request buffer: `USB_COMP_EP0_BUFSIZ` of the composite framework.
pub const VENDOR_BUF_SIZE: usize = 4096;
/// Interrupt endpoints use 64-byte packets at every speed (the FS maximum), one packet per
/// request, so that any usbtest length that is a multiple of 64 works.
pub const INT_MAXPACKET: u16 = 64;

/// Bytes per bulk request by default: 32 KiB, what the C Gadget Zero of tests/c uses on
/// raw_gadget.ko, so that the two compare on equal terms on a device node.
pub const DEFAULT_REQ_SIZE: usize = 32 * 1024;

/// Bytes per bulk request on the in-process engine (`--usbip-attach`/`--usbip-export`): 64 KiB,
/// the size of usbtest's throughput URBs (`testusb -s 65536`, usbfs USBDEVFS_BULK), so that
/// each such URB meets one request and wakes its endpoint thread once instead of twice. Any
/// size is correct for any URB length: URBs and requests are matched packet by packet
/// (contract D8) and the pattern restarts at every packet, so a request of whole packets may
/// span or split URBs freely.
pub const IN_PROCESS_REQ_SIZE: usize = 64 * 1024;

/// Settings of a Gadget Zero.
#[derive(Clone, Debug)]
pub struct ZeroConfig {
    /// The speed given to INIT; selects the packet sizes. Default HIGH.
    pub speed: Speed,
    /// Bytes per bulk request, rounded up to whole packets. Default [`DEFAULT_REQ_SIZE`];
    /// [`IN_PROCESS_REQ_SIZE`] on the in-process engine.
    pub req_size: usize,
    /// usbtest's `pattern` module parameter (default 1, [`Pattern::Mod63`]).
    pub pattern: Pattern,
}

impl Default for ZeroConfig {
    fn default() -> Self {
        ZeroConfig {
            speed: Speed::High,
            req_size: DEFAULT_REQ_SIZE,
            pattern: Pattern::Mod63,
        }
    }
}

/// How long SET_CONFIGURATION / SET_INTERFACE waits for the new endpoint threads to reach
/// their first transfer before the request is acknowledged (a bound, not a delay: usually they
/// are ready in a few milliseconds).
const READY_TIMEOUT: Duration = Duration::from_millis(200);

/// Counters of a running Gadget Zero, shared with its endpoint threads.
#[derive(Debug, Default)]
pub struct ZeroStats {
    /// Bytes the host read from the source endpoints.
    pub bytes_in: AtomicU64,
    /// Bytes the sink endpoints received; updated after `pattern_errors` for the same data
    /// (load it with `Acquire` to see those errors).
    pub bytes_out: AtomicU64,
    /// Bytes received that did not match the pattern.
    pub pattern_errors: AtomicU64,
    /// Transfers that failed with an errno other than EINTR/ESHUTDOWN (for example EPIPE
    /// while halted).
    pub transfer_errors: AtomicU64,
}

impl ZeroStats {
    pub fn pattern_errors(&self) -> u64 {
        self.pattern_errors.load(Ordering::Relaxed)
    }
}

/// Bulk maxpacket at `speed` (fixed by USB 2.0/3.x for HS and SS; dummy_udc checks it, D6).
/// Low speed has no bulk endpoints (USB 2.0 §5.8.3): Gadget Zero then declares the full-speed
/// sizes anyway, for testing hosts against an illegal device.
fn bulk_maxpacket(speed: Speed) -> u16 {
    bulk_max_packet(speed).unwrap_or(64)
}

/// f_sourcesink's default `isoc_maxpacket`: the largest the speed allows (1023 at FS, 1024
/// above; the FS size at low speed, which has no iso endpoints either).
fn iso_maxpacket(speed: Speed) -> u16 {
    max_packet_limit(speed, TransferType::Isochronous).unwrap_or(1023)
}

/// Builds the Gadget Zero device and the handle to its counters.
pub fn gadget_zero(config: ZeroConfig) -> (Device, Arc<ZeroStats>) {
    let stats = Arc::new(ZeroStats::default());
    let (strings, [manufacturer, product, serial, config_string, interface_string]) =
        fixed_strings([
            "rawgadget",
            "Gadget Zero",
            "0123456789.0123456789.0123456789",
            "source/sink",
            "source and sink data",
        ]);
    let ss = SourceSink::new(0, interface_string, config, stats.clone());
    let device = Device {
        // Vendor specific, as g_zero.
        descriptor: DeviceDescriptor::builder(VENDOR_ID, PRODUCT_ID)
            .class(USB_CLASS_VENDOR_SPEC, 0, 0)
            .strings(manufacturer, product, serial)
            .build(),
        config_string,
        config_attributes: USB_CONFIG_ATT_ONE | USB_CONFIG_ATT_SELFPOWER,
        max_power_ma: 100,
        strings,
        functions: vec![Box::new(ss)],
    };
    (device, stats)
}

/// f_sourcesink's checks on its vendor requests (`sourcesink_setup`): `bmRequestType` exactly
/// `request_type` (vendor, to the device, in or out), `wValue` and `wIndex` 0, and no more than
/// the [`VENDOR_BUF_SIZE`] buffer.
fn vendor_request_ok(setup: &ControlRequest, request_type: u8) -> bool {
    setup.request_type == request_type
        && setup.value == 0
        && setup.index == 0
        && usize::from(setup.length) <= VENDOR_BUF_SIZE
}

/// The source/sink function of Gadget Zero (`f_sourcesink` with interrupt endpoints).
pub struct SourceSink {
    interface: u8,
    /// `iInterface` of both altsettings (0 = none).
    interface_string: u8,
    config: ZeroConfig,
    stats: Arc<ZeroStats>,
    /// Endpoint addresses once assigned: bulk OUT, bulk IN, int OUT, int IN.
    bulk_out: EndpointAddress,
    bulk_in: EndpointAddress,
    int_out: EndpointAddress,
    int_in: EndpointAddress,
    /// Iso OUT and IN addresses, when the controller has iso endpoints.
    iso: Option<(EndpointAddress, EndpointAddress)>,
    alt: u8,
    configured: bool,
    workers: Vec<Worker>,
    vendor_buf: Vec<u8>,
}

struct Worker {
    ep: Endpoint,
    thread: JoinHandle<()>,
}

impl SourceSink {
    /// The function on interface number `interface`, named by string `interface_string`.
    pub fn new(
        interface: u8,
        interface_string: u8,
        config: ZeroConfig,
        stats: Arc<ZeroStats>,
    ) -> SourceSink {
        let (out, inn) = (
            EndpointAddress::new(0, Direction::Out),
            EndpointAddress::new(0, Direction::In),
        );
        SourceSink {
            interface,
            interface_string,
            config,
            stats,
            bulk_out: out,
            bulk_in: inn,
            int_out: out,
            int_in: inn,
            iso: None,
            alt: 0,
            configured: false,
            workers: Vec::new(),
            vendor_buf: vec![0; VENDOR_BUF_SIZE],
        }
    }

    /// The endpoints of altsetting `alt` at `speed`, in descriptor order.
    fn endpoints(&self, alt: u8, speed: Speed) -> Vec<EndpointDescriptor> {
        use TransferType::{Bulk, Interrupt, Isochronous};
        let mp = bulk_maxpacket(speed);
        let mut v = vec![
            EndpointDescriptor::new(self.bulk_out, Bulk, mp, 0),
            EndpointDescriptor::new(self.bulk_in, Bulk, mp, 0),
        ];
        if alt == 0 {
            let interval = interrupt_interval(speed, 1);
            for address in [self.int_out, self.int_in] {
                v.push(EndpointDescriptor::new(
                    address,
                    Interrupt,
                    INT_MAXPACKET,
                    interval,
                ));
            }
        } else if let Some((out, inn)) = self.iso {
            // f_sourcesink's defaults: isoc_interval 4, isoc_maxpacket 1024 (1023 at FS).
            for address in [out, inn] {
                v.push(EndpointDescriptor::new(
                    address,
                    Isochronous,
                    iso_maxpacket(speed),
                    4,
                ));
            }
        }
        v
    }

    fn alt_count(&self) -> u8 {
        if self.iso.is_some() {
            2
        } else {
            1
        }
    }

    fn stop_workers(&mut self) {
        // Interrupt every worker first so they all return in parallel, then wait for each.
        for w in &self.workers {
            w.ep.request_cancel();
        }
        for w in self.workers.drain(..) {
            w.ep.cancel();
            if w.thread.join().is_err() {
                warn!("an endpoint thread panicked");
            }
            if let Err(e) = w.ep.disable() {
                // After a reset a hardware UDC may already have disabled it.
                debug!(ep = w.ep.address(), error = %e, "disable");
            }
        }
    }

    fn start_alt(&mut self, gadget: &Gadget, alt: u8) -> Result<(), DeviceError> {
        let speed = gadget.speed();
        let (ready_tx, ready_rx) = channel();
        for d in self.endpoints(alt, speed) {
            let ep = gadget.enable(&d)?;
            let thread = self.spawn_worker(ep.clone(), ready_tx.clone())?;
            self.workers.push(Worker { ep, thread });
        }
        drop(ready_tx);
        // The request is acknowledged once every endpoint thread is about to queue its first
        // transfer, as f_sourcesink queues its requests inside set_alt: the host's first
        // transfer after SET_INTERFACE then finds a request waiting rather than a thread still
        // starting (under emulation that start took milliseconds, inside usbtest's timing).
        let deadline = Instant::now() + READY_TIMEOUT;
        for _ in 0..self.workers.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if ready_rx.recv_timeout(left).is_err() {
                debug!("endpoint threads not all ready in time; acknowledging anyway");
                break;
            }
        }
        self.alt = alt;
        debug!(alt, endpoints = self.workers.len(), "altsetting started");
        Ok(())
    }

    /// Starts the endpoint's thread; it sends on `ready` just before its first transfer.
    fn spawn_worker(&self, ep: Endpoint, ready: Sender<()>) -> Result<JoinHandle<()>, DeviceError> {
        let mp = usize::from(ep.max_packet());
        let size = match ep.transfer_type() {
            TransferType::Bulk => round_to_packets(self.config.req_size, mp),
            // One packet per request (contract I7 for iso; see INT_MAXPACKET for interrupt).
            _ => mp,
        };
        let (pattern, stats) = (self.config.pattern, self.stats.clone());
        // f_sourcesink checks the data of its bulk OUT endpoint only (`source_sink_complete`:
        // `ep == ss->out_ep`); iso packets may legitimately arrive empty or partial.
        let check = ep.transfer_type() != TransferType::Isochronous;
        let name = format!("ep{:02x}", ep.address());
        std::thread::Builder::new()
            .name(name)
            .spawn(move || match ep.direction() {
                Direction::In => source_loop(&ep, size, mp, pattern, &stats, ready),
                Direction::Out => sink_loop(&ep, size, mp, check.then_some(pattern), &stats, ready),
            })
            .map_err(|e| DeviceError::Config(format!("cannot spawn an endpoint thread: {e}")))
    }
}

/// Ends a loop on EINTR (cancelled) or ESHUTDOWN (reset or disconnect: the event thread will
/// clean up); other errors are counted and retried after a pause.
fn keep_going(ep: &Endpoint, e: &rawgadget::Error, stats: &ZeroStats, failures: &mut u32) -> bool {
    if e.is_interrupted() || e.is_shutdown() {
        debug!(ep = ep.address(), error = %e, "endpoint thread stops");
        return false;
    }
    stats.transfer_errors.fetch_add(1, Ordering::Relaxed);
    *failures += 1;
    if *failures > 1000 {
        warn!(ep = ep.address(), error = %e, "too many failures, endpoint thread stops");
        return false;
    }
    debug!(ep = ep.address(), error = %e, "transfer failed, retrying");
    std::thread::sleep(std::time::Duration::from_millis(5));
    true
}

/// Writes the pattern forever. One buffer for the thread's life, filled once (a write leaves it
/// unchanged): each transfer is then one ioctl on a device node.
/// `ready` is told just before the first transfer.
fn source_loop(
    ep: &Endpoint,
    size: usize,
    mp: usize,
    pattern: Pattern,
    stats: &ZeroStats,
    ready: Sender<()>,
) {
    let mut buf = EpBuffer::new(size);
    pattern.fill(&mut buf, mp);
    // The starter may have given up waiting: nothing to do then.
    let _ = ready.send(());
    let mut failures = 0;
    loop {
        match ep.write_buf(&mut buf) {
            Ok(n) => {
                failures = 0;
                stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if keep_going(ep, &e, stats, &mut failures) => {}
            Err(_) => return,
        }
    }
}

/// Reads forever into one buffer; counts bytes, and pattern errors when `pattern` is given.
/// `ready` is told just before the first transfer.
fn sink_loop(
    ep: &Endpoint,
    size: usize,
    mp: usize,
    pattern: Option<Pattern>,
    stats: &ZeroStats,
    ready: Sender<()>,
) {
    let mut buf = EpBuffer::new(size);
    let _ = ready.send(());
    let mut failures = 0;
    let mut logged = 0;
    loop {
        match ep.read_buf(&mut buf) {
            Ok(n) => {
                failures = 0;
                let Some(pattern) = pattern else {
                    stats.bytes_out.fetch_add(n as u64, Ordering::Release);
                    continue;
                };
                let check = pattern.check(&buf[..n], mp);
                // Count the errors before the bytes (Release): whoever sees `bytes_out` cover
                // a transfer (Acquire) also sees its pattern errors.
                stats
                    .pattern_errors
                    .fetch_add(check.errors as u64, Ordering::Relaxed);
                stats.bytes_out.fetch_add(n as u64, Ordering::Release);
                if check.errors > 0 && logged < 10 {
                    logged += 1;
                    let at = check.first_error.unwrap_or(0);
                    warn!(
                        ep = ep.address(),
                        len = n,
                        errors = check.errors,
                        first_error = at,
                        got = buf[at],
                        want = pattern.byte(at, mp),
                        "sink: data does not match the pattern"
                    );
                }
            }
            Err(e) if keep_going(ep, &e, stats, &mut failures) => {}
            Err(_) => return,
        }
    }
}

impl Function for SourceSink {
    fn name(&self) -> &'static str {
        "source/sink"
    }

    fn assign_endpoints(&mut self, alloc: &mut EndpointAllocator) -> Result<(), DeviceError> {
        use Direction::{In, Out};
        use TransferType::{Bulk, Interrupt, Isochronous};
        let mp = bulk_maxpacket(self.config.speed);
        self.bulk_out = assign_endpoint(alloc, Out, Bulk, mp, "bulk OUT")?;
        self.bulk_in = assign_endpoint(alloc, In, Bulk, mp, "bulk IN")?;
        self.int_out = assign_endpoint(alloc, Out, Interrupt, INT_MAXPACKET, "interrupt OUT")?;
        self.int_in = assign_endpoint(alloc, In, Interrupt, INT_MAXPACKET, "interrupt IN")?;
        // Both iso endpoints or none (f_sourcesink's `no_iso`).
        let imp = iso_maxpacket(self.config.speed);
        let mut trial = alloc.clone();
        self.iso = match (
            assign_endpoint(&mut trial, Out, Isochronous, imp, "iso OUT"),
            assign_endpoint(&mut trial, In, Isochronous, imp, "iso IN"),
        ) {
            (Ok(out), Ok(inn)) => {
                *alloc = trial;
                Some((out, inn))
            }
            _ => None,
        };
        debug!(
            bulk_out = self.bulk_out.0,
            bulk_in = self.bulk_in.0,
            int_out = self.int_out.0,
            int_in = self.int_in.0,
            iso = ?self.iso,
            "endpoint addresses"
        );
        Ok(())
    }

    fn descriptors(&self, config: &mut ConfigurationBuilder, speed: Speed) {
        let mut interface = config.interface();
        debug_assert_eq!(interface.number(), self.interface);
        for alt in 0..self.alt_count() {
            let mut setting = interface.alt_setting(USB_CLASS_VENDOR_SPEC, 0, 0);
            setting.string(self.interface_string);
            for ep in self.endpoints(alt, speed) {
                add_endpoint(&mut setting, &ep, speed);
            }
        }
    }

    fn control(&mut self, gadget: &Gadget, setup: &ControlRequest) -> Option<ControlReply> {
        let mine = setup.index == u16::from(self.interface);
        match (setup.request_type, setup.request) {
            (0x01, USB_REQ_SET_INTERFACE) if mine => Some(
                if !self.configured || setup.value >= u16::from(self.alt_count()) {
                    ControlReply::Stall
                } else {
                    // Restart the endpoints even for the same altsetting: usbtest sets alt 0 before
                    // every test and expects fresh data (as f_sourcesink's set_alt does).
                    self.stop_workers();
                    match self.start_alt(gadget, setup.value as u8) {
                        Ok(()) => ControlReply::Accept,
                        Err(e) => {
                            warn!(error = %e, "SET_INTERFACE failed");
                            self.stop_workers();
                            ControlReply::Stall
                        }
                    }
                },
            ),
            (0x81, USB_REQ_GET_INTERFACE) if mine => Some(if self.configured {
                ControlReply::In(vec![self.alt])
            } else {
                ControlReply::Stall
            }),
            (_, REQ_CONTROL_WRITE) if setup.kind() == RequestType::Vendor => {
                Some(if vendor_request_ok(setup, 0x40) {
                    ControlReply::Accept
                } else {
                    ControlReply::Stall
                })
            }
            (_, REQ_CONTROL_READ) if setup.kind() == RequestType::Vendor => {
                Some(if vendor_request_ok(setup, 0xc0) {
                    ControlReply::In(self.vendor_buf[..usize::from(setup.length)].to_vec())
                } else {
                    ControlReply::Stall
                })
            }
            _ => None,
        }
    }

    fn control_out_data(&mut self, setup: &ControlRequest, data: &[u8]) {
        if setup.request == REQ_CONTROL_WRITE {
            let n = data.len().min(self.vendor_buf.len());
            self.vendor_buf[..n].copy_from_slice(&data[..n]);
        }
    }

    fn configure(&mut self, gadget: &Gadget) -> Result<(), DeviceError> {
        self.configured = true;
        self.start_alt(gadget, 0)
    }

    fn deconfigure(&mut self) {
        self.stop_workers();
        self.configured = false;
        self.alt = 0;
    }
}

impl Drop for SourceSink {
    fn drop(&mut self) {
        self.stop_workers();
    }
}
