//! Bulk throughput and control round trips through usbfs, and the null-device floor (issue 5
//! "Performance"; contract P4, P5).
//!
//! [`measure`] claims interface 0 of an enumerated Gadget Zero through usbfs (usbtest is unbound
//! from it first with `USBDEVFS_DISCONNECT` and bound again afterwards) and times, per run:
//!
//! - bulk IN: [`TRANSFERS`] synchronous `USBDEVFS_BULK` reads of [`TRANSFER_BYTES`] (64 KiB) each;
//! - bulk OUT: as many 64 KiB writes carrying the usbtest `pattern=1` data (SourceSink checks it
//!   and halts its OUT endpoint on a mismatch; our Gadget Zero counts the errors);
//! - control: [`CONTROLS`] `USBDEVFS_CONTROL` GET_DESCRIPTOR(DEVICE, 18 bytes) round trips. Chosen
//!   because it reaches the gadget program on every substrate: raw gadget passes it to the client
//!   (SourceSink's composite layer answers it in the kernel), where GET_STATUS would be answered by
//!   dummy_udc itself (contract D20).
//!
//! Figures are medians of [`runs`] runs (at least 5, P5). Each substrate is measured in the boot
//! where its usbtest matrix runs, on a fresh instance of the same device: (a) and (b) in
//! `usbtest-dummy`, (c) and the floor (n) in `usbtest-usbip` ([`dummy_substrates`],
//! [`usbip_floor`]).
//!
//! The floor is `rawgadget null --usbip-attach`: the same descriptors as our Gadget Zero, every
//! URB answered inline by the daemon with no engine and no client (`rawgadget_usbip_udc::null`).
//! It gets the same usbtest matrix as (c), in the same boot, so that (c) can be reported as a
//! ratio of what vhci alone costs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::gadget::{self, GadgetProcess, SourceSink, GZERO_PID, GZERO_VID};
use crate::host::{errno_name, interface0_endpoints};
use crate::record::{substrate, Record, Reporter, SubstrateState};
use crate::scenario::{
    kill_gadget, note, start_our_gadget, substrate_state, usbtest_matrix, Matrix, Params,
    ENUM_TIMEOUT,
};
use crate::script::mod63;
use crate::sysfs::{self, UsbDevice};
use crate::usbfs::Device;

/// Bytes per bulk transfer (issue 5: 64 KiB transfers).
pub const TRANSFER_BYTES: usize = 64 << 10;
/// Bulk transfers per run and direction (4 MiB).
pub const TRANSFERS: usize = 64;
/// Control round trips per run.
pub const CONTROLS: usize = 200;
/// The control request: GET_DESCRIPTOR(DEVICE), wLength 18.
pub const CONTROL_SETUP: [u8; 8] = [0x80, 6, 0, 1, 0, 0, 18, 0];
/// What the report names the request sizes as.
pub const DESCRIPTION: &str = "bulk: 64 synchronous USBDEVFS_BULK transfers of 64 KiB per run \
     and direction; control: 200 USBDEVFS_CONTROL GET_DESCRIPTOR(DEVICE, 18 bytes) round trips per run";

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs per substrate: the scenario's, at least 5 (P5).
pub fn runs(p: &Params) -> u32 {
    p.runs.max(5)
}

/// The per-run figures of one substrate.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub bulk_in_mbps: Vec<f64>,
    pub bulk_out_mbps: Vec<f64>,
    pub control_per_s: Vec<f64>,
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9) / 1e6
}

/// Measures `dev` (see the module doc). usbtest is unbound from interface 0 meanwhile.
///
/// # Errors
/// The device has no bulk pair, or a transfer fails (the errno is in the message).
pub fn measure(dev: &UsbDevice, runs: u32) -> Result<Figures> {
    let config = dev.descriptors()?;
    let eps = interface0_endpoints(config.get(18..).unwrap_or(&[]));
    let bulk_in = eps
        .iter()
        .find(|e| e.kind == 2 && e.address & 0x80 != 0)
        .ok_or_else(|| anyhow!("no bulk IN endpoint in interface 0"))?;
    let bulk_out = eps
        .iter()
        .find(|e| e.kind == 2 && e.address & 0x80 == 0)
        .ok_or_else(|| anyhow!("no bulk OUT endpoint in interface 0"))?;
    let usb = Device::open(&dev.devnode())
        .with_context(|| format!("opening {}", dev.devnode().display()))?;
    let e = |what: &'static str| move |e| anyhow!("{what}: {}", errno_name(e));
    // usbtest must not hold the interface: USBDEVFS_DISCONNECT unbinds it
    match usb.disconnect_driver(0) {
        Ok(()) => {}
        Err(errno) if errno.raw() == libc::ENODATA => {} // no driver bound
        Err(errno) => return Err(e("unbinding usbtest")(errno)),
    }
    usb.claim_interface(0).map_err(e("claiming interface 0"))?;
    let r = measure_claimed(&usb, bulk_in.address, bulk_out, runs);
    let _ = usb.release_interface(0);
    let _ = usb.connect_driver(0);
    r
}

fn measure_claimed(
    usb: &Device,
    bulk_in: u8,
    bulk_out: &crate::host::Endpoint,
    runs: u32,
) -> Result<Figures> {
    let e = |what: &'static str| move |e| anyhow!("{what}: {}", errno_name(e));
    let mut buf = vec![0u8; TRANSFER_BYTES];
    let out_data = mod63(TRANSFER_BYTES, usize::from(bulk_out.max_packet));
    let mut out = out_data.clone();
    let mut desc = [0u8; 18];
    // one of each first: endpoints started, caches warm
    usb.bulk(bulk_in, &mut buf, IO_TIMEOUT)
        .map_err(e("bulk IN"))?;
    usb.bulk(bulk_out.address, &mut out, IO_TIMEOUT)
        .map_err(e("bulk OUT"))?;
    usb.control(CONTROL_SETUP, &mut desc, IO_TIMEOUT)
        .map_err(e("GET_DESCRIPTOR"))?;
    let mut f = Figures::default();
    for _ in 0..runs {
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..TRANSFERS {
            bytes += usb
                .bulk(bulk_in, &mut buf, IO_TIMEOUT)
                .map_err(e("bulk IN"))?;
        }
        f.bulk_in_mbps.push(mbps(bytes, t.elapsed()));
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..TRANSFERS {
            out.copy_from_slice(&out_data);
            bytes += usb
                .bulk(bulk_out.address, &mut out, IO_TIMEOUT)
                .map_err(e("bulk OUT"))?;
        }
        f.bulk_out_mbps.push(mbps(bytes, t.elapsed()));
        let t = Instant::now();
        for _ in 0..CONTROLS {
            let n = usb
                .control(CONTROL_SETUP, &mut desc, IO_TIMEOUT)
                .map_err(e("GET_DESCRIPTOR"))?;
            if n != 18 {
                bail!("GET_DESCRIPTOR(DEVICE) returned {n} bytes, not 18");
            }
        }
        f.control_per_s
            .push(CONTROLS as f64 / t.elapsed().as_secs_f64().max(1e-9));
    }
    Ok(f)
}

/// Measures `dev` and reports the figures, or the error, as one record.
fn measure_and_report(rep: &Reporter, sub: &str, dev: &UsbDevice, runs: u32) {
    let r = measure(dev, runs);
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let (figures, error) = match r {
        Ok(f) => {
            note(
                rep,
                format!(
                    "throughput ({sub}): bulk IN {:.1} MB/s, bulk OUT {:.1} MB/s, {:.0} control round trips/s (medians of {runs})",
                    median(&f.bulk_in_mbps),
                    median(&f.bulk_out_mbps),
                    median(&f.control_per_s)
                ),
            );
            (f, None)
        }
        Err(e) => {
            note(rep, format!("throughput ({sub}) failed: {e:#}"));
            (Figures::default(), Some(format!("{e:#}")))
        }
    };
    rep.emit(&Record::Throughput {
        substrate: sub.into(),
        transfer_bytes: TRANSFER_BYTES as u32,
        transfers_per_run: TRANSFERS as u32,
        controls_per_run: CONTROLS as u32,
        bulk_in_mbps: figures.bulk_in_mbps,
        bulk_out_mbps: figures.bulk_out_mbps,
        control_per_s: figures.control_per_s,
        error,
    });
}

/// A Gadget Zero process of ours (or the floor) measured, then stopped.
fn measure_process(rep: &Reporter, sub: &str, runs: u32, g: GadgetProcess) -> Result<()> {
    let r = sysfs::wait_for(GZERO_VID, GZERO_PID, 0, Some("usbtest"), ENUM_TIMEOUT);
    if let Ok(dev) = &r {
        measure_and_report(rep, sub, dev, runs);
    }
    let st = g.stop(Duration::from_secs(5))?;
    note(
        rep,
        format!("{} (throughput, {sub}) exited: {st}", g_name(sub)),
    );
    sysfs::wait_gone(GZERO_VID, GZERO_PID, Duration::from_secs(10))?;
    r.map(drop)
}

fn g_name(sub: &str) -> &'static str {
    if sub == substrate::N {
        "the null device"
    } else {
        "our Gadget Zero"
    }
}

/// Throughput of (a) SourceSink and (b) raw_gadget.ko + our Gadget Zero on dummy_udc.0, each on
/// a fresh instance after the usbtest matrix (the `usbtest-dummy` boot). Failures are reported,
/// not counted: these figures are printed, not gated.
pub fn dummy_substrates(p: &Params, rep: &Reporter) {
    let runs = runs(p);
    if p.wants(substrate::A) {
        let r = SourceSink::bind("dummy_udc.0").and_then(|ss| {
            let r = sysfs::wait_for(GZERO_VID, GZERO_PID, 0, Some("usbtest"), ENUM_TIMEOUT)
                .map(|dev| measure_and_report(rep, substrate::A, &dev, runs));
            ss.unbind()?;
            sysfs::wait_gone(GZERO_VID, GZERO_PID, Duration::from_secs(10))?;
            r
        });
        if let Err(e) = r {
            note(rep, format!("throughput (a) failed: {e:#}"));
        }
    }
    if p.wants(substrate::B) {
        let args: Vec<String> = ["zero", "--driver", "dummy_udc", "--device", "dummy_udc.0"]
            .map(String::from)
            .to_vec();
        let r = gadget::modprobe("raw_gadget", &[]).and_then(|()| {
            match start_our_gadget(p, rep, substrate::B, args) {
                Some(g) => measure_process(rep, substrate::B, runs, g),
                None => Ok(()),
            }
        });
        if let Err(e) = r {
            note(rep, format!("throughput (b) failed: {e:#}"));
        }
    }
}

/// The `usbtest-usbip` boot's additions, run before (c)'s matrix: the floor (n) — the same usbtest
/// matrix as (c) on `rawgadget null --usbip-attach`, then its throughput — and (c)'s throughput on
/// a fresh `rawgadget zero --usbip-attach`. Failures are reported, not counted (the floor is a
/// reference, and the runner never resumes (n) in another boot).
pub fn usbip_floor(p: &Params, rep: &Reporter) {
    let runs = runs(p);
    if p.wants(substrate::N) {
        if let Err(e) = floor(p, rep) {
            substrate_state(rep, substrate::N, SubstrateState::Failed, format!("{e:#}"));
        }
    }
    if p.wants(substrate::C) {
        let args = vec!["zero".to_string(), "--usbip-attach".to_string()];
        if let Some(g) = start_our_gadget(p, rep, substrate::C, args) {
            if let Err(e) = measure_process(rep, substrate::C, runs, g) {
                note(rep, format!("throughput (c) failed: {e:#}"));
            }
        }
    }
}

fn floor(p: &Params, rep: &Reporter) -> Result<()> {
    let sub = substrate::N;
    gadget::wait_path(
        Path::new("/sys/devices/platform/vhci_hcd.0/attach"),
        Duration::from_secs(10),
    )?;
    let Some(mut g) = start_our_gadget(p, rep, sub, vec!["null".into(), "--usbip-attach".into()])
    else {
        return Ok(());
    };
    let pid = g.pid();
    let m = Matrix {
        rep,
        sub,
        count: p.count,
        runs: p.runs,
        case_timeout: p.case_timeout,
    };
    let r =
        sysfs::wait_for(GZERO_VID, GZERO_PID, 0, Some("usbtest"), ENUM_TIMEOUT).and_then(|dev| {
            substrate_state(
                rep,
                sub,
                SubstrateState::Up,
                format!("{} via vhci (null device)", dev.sysfs.display()),
            );
            usbtest_matrix(&m, &dev, &p.cases, -1, &mut kill_gadget(pid))?;
            g.check_alive()?;
            measure_and_report(rep, sub, &dev, runs(p));
            Ok(())
        });
    let st = g.stop(Duration::from_secs(5))?;
    note(rep, format!("the null device exited: {st}"));
    sysfs::wait_gone(GZERO_VID, GZERO_PID, Duration::from_secs(10))?;
    r
}
