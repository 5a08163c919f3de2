//! The `cuse` scenario (issue 6 item 3): the project's C test clients (tests/c, written against
//! the UAPI header only) run unchanged on the reference raw_gadget.ko and on `rawgadget serve`.
//!
//! 1. The differential errno script on raw_gadget.ko (+ dummy_hcd), then on `rawgadget serve`
//!    (+ vhci-hcd), compared line by line; only the differences contract C12 lists, or that the
//!    contract explains by the controller (dummy_udc vs ours through vhci), are allowed.
//! 2. The C Gadget Zero under usbtest on three substrates in this one boot, with the same count
//!    and runs: (b-C) raw_gadget.ko + dummy_hcd (the reference), (d) `rawgadget serve` (fast
//!    path) and (d-slow) `rawgadget serve --no-fast-path` (retry protocol); the contract
//!    predicts for (d) and (d-slow) the same results as (c), our engine through vhci-hcd. On
//!    each, the ep0 round trip a host sees (a vendor OUT control with no data stage, answered by
//!    EVENT_FETCH + EP0_READ(0)).
//! 3. The ioctl latency probe on the module, serve and serve --no-fast-path, and the floor
//!    under any CUSE round (two processes waking each other over pipes).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::gadget::{self, GadgetProcess, GZERO_PID, GZERO_VID};
use crate::record::{substrate, Record, Reporter, SubstrateState};
use crate::scenario::{
    check, kill_gadget, note, substrate_state, usbtest_matrix, Matrix, Params, ENUM_TIMEOUT,
};
use crate::sysfs;

/// Where the runner puts the static C clients in the initramfs.
pub const C_CLIENTS: &str = "/bin/c";
const NODE: &str = "/dev/raw-gadget";

/// One line of the errno script: `<name> <return value> <errno name or ->`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLine {
    pub name: String,
    pub ret: String,
    pub errno: String,
}

impl CallLine {
    pub fn parse(line: &str) -> Option<CallLine> {
        let mut w = line.split_whitespace();
        let (name, ret, errno) = (w.next()?, w.next()?, w.next()?);
        if w.next().is_some() {
            return None;
        }
        Some(CallLine {
            name: name.into(),
            ret: ret.into(),
            errno: errno.into(),
        })
    }
}

/// How one line of the two outputs compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineVerdict {
    Same,
    /// Different, and the contract says why (the reason).
    Allowed(&'static str),
    /// Different without a reason: a conformance failure.
    Differs,
}

/// Differences the contract allows, as (call name prefix, module's errno, serve's errno, reason).
/// `*` matches any errno.
const ALLOWED: &[(&str, &str, &str, &str)] = &[(
    "known.",
    "*",
    "*",
    "contract C12: lseek is ESPIPE on the module (no llseek) and 0 on CUSE (noop_llseek)",
)];

/// Compares one line of the module's output with the same line of serve's.
pub fn compare_line(module: &str, serve: &str) -> LineVerdict {
    if module == serve {
        return LineVerdict::Same;
    }
    let (Some(m), Some(s)) = (CallLine::parse(module), CallLine::parse(serve)) else {
        return LineVerdict::Differs;
    };
    if m.name != s.name {
        return LineVerdict::Differs;
    }
    for &(prefix, me, se, why) in ALLOWED {
        if m.name.starts_with(prefix)
            && (me == "*" || me == m.errno)
            && (se == "*" || se == s.errno)
        {
            return LineVerdict::Allowed(why);
        }
    }
    LineVerdict::Differs
}

/// Compares the two outputs line by line: (line number, module line, serve line, verdict) for
/// every line that is not the same, and whether all of them are allowed.
pub fn compare(module: &str, serve: &str) -> (Vec<(usize, String, String, LineVerdict)>, bool) {
    let m: Vec<&str> = module.lines().collect();
    let s: Vec<&str> = serve.lines().collect();
    let mut out = Vec::new();
    for i in 0..m.len().max(s.len()) {
        let (ml, sl) = (m.get(i).copied(), s.get(i).copied());
        let v = match (ml, sl) {
            (Some(a), Some(b)) => compare_line(a, b),
            _ => LineVerdict::Differs,
        };
        if v != LineVerdict::Same {
            out.push((
                i + 1,
                ml.unwrap_or("(missing)").to_string(),
                sl.unwrap_or("(missing)").to_string(),
                v,
            ));
        }
    }
    let ok = out.iter().all(|d| d.3 != LineVerdict::Differs);
    (out, ok)
}

/// Runs `program args`, stderr on the console, and returns (exit code, stdout); kills it after
/// `timeout`.
fn run_client(program: &str, args: &[&str], timeout: Duration) -> Result<(i32, String)> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{program} {} did not end within {timeout:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().unwrap_or_default();
    Ok((status.code().unwrap_or(-1), out))
}

pub(crate) fn client(name: &str) -> String {
    format!("{C_CLIENTS}/{name}")
}

/// Median ns per call of each kind in the latency probe's output (`<name> <n> <ns> <result>`).
fn latency_lines(out: &str) -> Vec<(String, f64)> {
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 4).then(|| w[2].parse().ok().map(|ns| (w[0].to_string(), ns)))?
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the latency probe `runs` times and reports the median per kind.
fn latency(rep: &Reporter, on: &str, runs: u32) {
    let mut per: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for _ in 0..runs {
        match run_client(
            &client("ioctl_latency"),
            &["-i", "2000"],
            Duration::from_secs(120),
        ) {
            Ok((_, out)) => {
                for (k, ns) in latency_lines(&out) {
                    per.entry(k).or_default().push(ns);
                }
            }
            Err(e) => {
                note(rep, format!("latency on {on}: {e:#}"));
                return;
            }
        }
    }
    for (k, mut v) in per {
        let n = v.len();
        let m = median(&mut v);
        check(
            rep,
            &format!("latency {on} {k}"),
            true,
            format!("median {m:.0} ns per call over {n} runs of 2000"),
        );
    }
}

/// Substrate (b-C): the C Gadget Zero of tests/c on raw_gadget.ko + dummy_hcd, the reference
/// for (d) (the same program, the same requests).
pub const B_C: &str = "b-C/cuse";
/// Substrate (d-slow): the C Gadget Zero on `rawgadget serve --no-fast-path` (the retry
/// protocol only, contract C4).
pub const D_SLOW: &str = "d-slow";

/// Requests per run of the ep0 round-trip probe.
const ROUND_TRIPS: usize = 500;

/// The ep0 round trip a host sees: a vendor OUT control request with no data stage
/// (bRequest 0x5b, wLength 0) that the C Gadget Zero answers with EVENT_FETCH then
/// EP0_READ(0), the status stage. Each request is timed on its own; reports the median and
/// the 90th percentile over `runs` runs of [`ROUND_TRIPS`].
fn control_round_trip(rep: &Reporter, on: &str, dev: &sysfs::UsbDevice, runs: u32) {
    let d = match crate::usbfs::Device::open(&dev.devnode()) {
        Ok(d) => d,
        Err(e) => {
            note(rep, format!("ep0 round trip on {on}: {e}"));
            return;
        }
    };
    let setup = [0x40, 0x5b, 0, 0, 0, 0, 0, 0];
    let mut times = Vec::with_capacity(ROUND_TRIPS * runs as usize);
    for run in 0..=runs {
        for _ in 0..ROUND_TRIPS {
            let t = Instant::now();
            if let Err(e) = d.control(setup, &mut [], Duration::from_secs(5)) {
                note(
                    rep,
                    format!("ep0 round trip on {on}: control failed: {e:?}"),
                );
                return;
            }
            // run 0 is a warm-up
            if run > 0 {
                times.push(t.elapsed().as_nanos() as f64);
            }
        }
    }
    let n = times.len();
    let med = median(&mut times);
    let p90 = times[n * 9 / 10];
    check(
        rep,
        &format!("latency {on} ep0_round_trip"),
        true,
        format!(
            "median {med:.0} ns per request (p90 {p90:.0}) over {runs} runs of {ROUND_TRIPS}: \
             vendor OUT wLength 0 via usbfs, answered by EVENT_FETCH + EP0_READ(0)"
        ),
    );
}

/// The C Gadget Zero on whatever serves /dev/raw-gadget now, under usbtest as substrate
/// `sub`, then the ep0 round-trip probe. Returns the cases run and whether each passed.
fn c_gadget_zero(p: &Params, rep: &Reporter, sub: &str, what: &str) -> Result<Vec<(u32, bool)>> {
    let mut gz = GadgetProcess::spawn(&client("gadget_zero"), &[])?;
    // vhci-hcd sometimes never enumerates a device attached soon after another left the same
    // port ("vhci_device speed not set", no URB at all; seen under TCG with the port idle for
    // over a second). That is the host's doing, not the daemon's: start the program again once.
    if sysfs::wait_for(GZERO_VID, GZERO_PID, 0, Some("usbtest"), ENUM_TIMEOUT).is_err() {
        let st = gz.stop(Duration::from_secs(5))?;
        note(
            rep,
            format!(
                "C gadget_zero on {what} was never enumerated (exited: {st}); starting it again"
            ),
        );
        let _ = sysfs::wait_gone(GZERO_VID, GZERO_PID, Duration::from_secs(10));
        wait_vhci_idle();
        gz = GadgetProcess::spawn(&client("gadget_zero"), &[])?;
    }
    // the same count and runs on every C Gadget Zero substrate, so ratios compare
    let m = Matrix {
        rep,
        sub,
        count: p.count.min(20),
        runs: p.runs.min(3),
        case_timeout: p.case_timeout,
    };
    let pid = gz.pid();
    let r =
        sysfs::wait_for(GZERO_VID, GZERO_PID, 0, Some("usbtest"), ENUM_TIMEOUT).and_then(|dev| {
            substrate_state(
                rep,
                sub,
                SubstrateState::Up,
                format!("C gadget_zero on {what}, {}", dev.sysfs.display()),
            );
            let passed = usbtest_matrix(&m, &dev, &p.cases, -1, &mut kill_gadget(pid))?;
            gz.check_alive()?;
            control_round_trip(rep, what, &dev, p.runs.min(3));
            Ok(passed)
        });
    let st = gz.stop(Duration::from_secs(5))?;
    note(rep, format!("C gadget_zero on {what} exited: {st}"));
    if let Err(e) = &r {
        substrate_state(rep, sub, SubstrateState::Failed, format!("{e:#}"));
    }
    sysfs::wait_gone(GZERO_VID, GZERO_PID, Duration::from_secs(10))?;
    r
}

/// Gates a serve substrate: every case passes, as on (c). Returns whether it did.
fn every_case_passes(rep: &Reporter, sub: &str, r: &Result<Vec<(u32, bool)>>) -> bool {
    let Ok(passed) = r else {
        return false;
    };
    let bad: Vec<String> = passed
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(c, _)| c.to_string())
        .collect();
    check(
        rep,
        &format!("usbtest on ({sub}): every case passes, as on (c)"),
        bad.is_empty(),
        if bad.is_empty() {
            format!("{} cases passed", passed.len())
        } else {
            format!("failed cases: {}", bad.join(","))
        },
    )
}

/// The cost of the two wakeups under every CUSE round, without FUSE (tests/c/wakeup_floor),
/// measured again right before each latency probe (`phase`): under TCG on a shared host it
/// moves with the host's load by 10× within one boot, so each probe is read against the
/// floor of its own phase.
fn wakeup_floor(rep: &Reporter, phase: &str) {
    match run_client(
        &client("wakeup_floor"),
        &["-i", "500"],
        Duration::from_secs(60),
    ) {
        Ok((_, out)) => {
            for (k, ns) in latency_lines(&out) {
                check(
                    rep,
                    &format!("latency floor before {phase}: {k}"),
                    true,
                    format!("{ns:.0} ns per round trip (500 round trips)"),
                );
            }
        }
        Err(e) => note(rep, format!("wakeup floor: {e:#}")),
    }
}

/// Where the time of a CUSE round goes: the latency probe again with the daemon's threads and
/// the probe on one CPU (busybox `taskset`), so that no wakeup crosses CPUs. A diagnostic:
/// nothing is pinned in normal use.
fn pinned_latency(rep: &Reporter, serve_pid: u32) {
    let pin = |tid: &str| {
        Command::new("taskset")
            .args(["-p", "1", tid])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let tids: Vec<String> = std::fs::read_dir(format!("/proc/{serve_pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if tids.is_empty() || !tids.iter().all(|t| pin(t)) {
        note(
            rep,
            "pinned latency: cannot pin the daemon's threads (taskset)",
        );
        return;
    }
    match run_client(
        "taskset",
        &["1", &client("ioctl_latency"), "-i", "2000"],
        Duration::from_secs(120),
    ) {
        Ok((_, out)) => {
            for (k, ns) in latency_lines(&out) {
                check(
                    rep,
                    &format!("latency rawgadget serve, all on CPU 0 {k}"),
                    true,
                    format!("{ns:.0} ns per call (one run of 2000; diagnostic)"),
                );
            }
        }
        Err(e) => note(rep, format!("pinned latency: {e:#}")),
    }
}

/// Waits until vhci-hcd has no device left (a stopped daemon's devices are gone), then a
/// moment more: a device attached to a port vhci's hub has not yet seen empty is never
/// enumerated ("vhci_device speed not set", no URB at all).
fn wait_vhci_idle() {
    let deadline = Instant::now() + Duration::from_secs(10);
    let busy = || {
        std::fs::read_dir("/sys/devices/platform/vhci_hcd.0")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("usb"))
            .any(|hub| {
                std::fs::read_dir(hub.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|d| {
                        let n = d.file_name().to_string_lossy().into_owned();
                        n.contains('-') && !n.contains(':')
                    })
            })
    };
    while busy() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
}

/// Starts `rawgadget serve` with `args` and waits for its node.
fn start_serve(p: &Params, args: &[&str]) -> Result<GadgetProcess> {
    let mut all = vec!["serve".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let mut serve = GadgetProcess::spawn(&p.gadget_cli, &all)?;
    gadget::wait_path(Path::new(NODE), Duration::from_secs(20))?;
    serve.check_alive()?;
    Ok(serve)
}

/// The scenario. Returns the number of failed parts.
pub fn cuse(p: &Params, rep: &Reporter) -> Result<i32> {
    for m in ["cuse", "usbip-core", "vhci-hcd", "dummy_hcd", "raw_gadget"] {
        gadget::modprobe(m, &[])?;
    }
    gadget::modprobe("usbtest", &["pattern=1"])?;
    gadget::wait_path(Path::new(NODE), Duration::from_secs(10))?;
    let mut failed = 0;

    // (1a) and (3a) on the reference module.
    let (rc, module_out) = run_client(&client("errno_script"), &[], Duration::from_secs(120))?;
    note(rep, format!("errno_script on raw_gadget.ko exited {rc}"));
    for l in module_out.lines() {
        println!("bench-guest: module: {l}");
    }
    wakeup_floor(rep, "raw_gadget.ko");
    latency(rep, "raw_gadget.ko", p.runs);
    // (b-C) the same C Gadget Zero on the module: the reference for (d), not gated
    if let Err(e) = c_gadget_zero(p, rep, B_C, "raw_gadget.ko") {
        note(rep, format!("(b-C) C gadget_zero on raw_gadget.ko: {e:#}"));
    }

    // Switch to `rawgadget serve`: it refuses while the module's node exists.
    gadget::rmmod("raw_gadget")?;
    if p.gadget_cli.is_empty() {
        for sub in [substrate::D, D_SLOW] {
            substrate_state(
                rep,
                sub,
                SubstrateState::NotRun,
                format!("our rawgadget CLI is not available: {}", p.gadget_missing),
            );
        }
        return Ok(1);
    }
    let mut serve = start_serve(p, &[])?;
    let r = (|| -> Result<i32> {
        let mut failed = 0;

        // (1b) the same script on serve, compared.
        let (rc2, serve_out) = run_client(&client("errno_script"), &[], Duration::from_secs(120))?;
        note(rep, format!("errno_script on rawgadget serve exited {rc2}"));
        let (diffs, ok) = compare(&module_out, &serve_out);
        let lines = module_out.lines().count();
        for (n, m, s, v) in &diffs {
            let (pass, why) = match v {
                LineVerdict::Allowed(why) => (true, why.to_string()),
                _ => (false, "not allowed by the contract".to_string()),
            };
            check(
                rep,
                &format!("errno diff line {n}"),
                pass,
                format!("module `{m}` / serve `{s}`: {why}"),
            );
        }
        if !check(
            rep,
            "errno script: module vs serve",
            ok && lines > 0 && rc == rc2,
            format!(
                "{lines} lines, {} differ ({} allowed); exit {rc} vs {rc2}",
                diffs.len(),
                diffs.iter().filter(|d| d.3 != LineVerdict::Differs).count()
            ),
        ) {
            failed += 1;
        }
        serve.check_alive()?;

        // (2) the C Gadget Zero on serve (fast path), under usbtest. Contract prediction: the
        // same as (c), our engine through vhci-hcd, which passes every case of this subset.
        let r = c_gadget_zero(p, rep, substrate::D, "rawgadget serve");
        if !every_case_passes(rep, substrate::D, &r) {
            failed += 1;
        }

        // (3b) latency on serve; then once with everything on one CPU (a diagnostic)
        wakeup_floor(rep, "rawgadget serve");
        latency(rep, "rawgadget serve", p.runs);
        serve.check_alive()?;
        pinned_latency(rep, serve.pid());
        serve.check_alive()?;
        Ok(failed)
    })();
    let st = serve.stop(Duration::from_secs(5))?;
    note(rep, format!("rawgadget serve exited: {st}"));
    match r {
        Ok(n) => failed += n,
        Err(e) => {
            check(rep, "rawgadget serve", false, format!("{e:#}"));
            failed += 1;
        }
    }

    // (d-slow) the retry protocol only: the same C Gadget Zero and latency probe.
    wait_vhci_idle();
    let r = start_serve(p, &["--no-fast-path"]).and_then(|mut serve| {
        let r = c_gadget_zero(p, rep, D_SLOW, "rawgadget serve --no-fast-path");
        let passes = every_case_passes(rep, D_SLOW, &r);
        wakeup_floor(rep, "rawgadget serve --no-fast-path");
        latency(rep, "rawgadget serve --no-fast-path", p.runs.min(3));
        serve.check_alive()?;
        let st = serve.stop(Duration::from_secs(5))?;
        note(rep, format!("rawgadget serve --no-fast-path exited: {st}"));
        Ok(passes)
    });
    match r {
        Ok(true) => {}
        Ok(false) => failed += 1,
        Err(e) => {
            check(
                rep,
                "rawgadget serve --no-fast-path",
                false,
                format!("{e:#}"),
            );
            failed += 1;
        }
    }
    // Each record is on the result channel already; a summary line for the console.
    rep.emit(&Record::Note {
        text: format!("cuse: {failed} part(s) failed"),
    });
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// contract C12: lseek differs (ESPIPE vs 0) and is allowed; any other errno change is not.
    #[test]
    fn c12_only_listed_differences_are_allowed() {
        let module = "open 3 -\nknown.lseek -1 ESPIPE\nep_enable -1 EINVAL\n";
        let serve = "open 3 -\nknown.lseek 0 -\nep_enable -1 EBUSY\n";
        let (d, ok) = compare(module, serve);
        assert!(!ok);
        assert_eq!(d.len(), 2);
        assert!(matches!(d[0].3, LineVerdict::Allowed(_)));
        assert_eq!(d[1].3, LineVerdict::Differs);
        let (d, ok) = compare("a 0 -\n", "a 0 -\nb 0 -\n");
        assert!(!ok, "a missing line is a difference: {d:?}");
        assert!(compare(module, module).1);
    }
}
