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
//!
//! The three substrates run at once (the module keeps `/dev/raw-gadget`, the daemons serve
//! `/dev/raw-gadget-fast` and `/dev/raw-gadget-slow`) and every measurement takes them in turn,
//! run by run. Under TCG on a shared host the cost of a wakeup moves by 10× within one boot
//! with the host's load (the pipe floor of tests/c/wakeup_floor shows it); measured one after
//! the other, whichever substrate ran during a busy stretch looked slow, which once made the
//! fast path look 2–10× slower than the retry protocol, and in the next boot the reverse.
//! Each (case, substrate) also gets a profile of wakeups and system calls per iteration
//! ([`profile`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::gadget::{self, GadgetProcess, GZERO_PID, GZERO_VID};
use crate::record::{substrate, Record, Reporter, RunOutcome, SubstrateState};
use crate::scenario::{
    check, kill_gadget, note, run_case_watched, substrate_state, Params, ENUM_TIMEOUT,
};
use crate::{sysfs, usbtest};

pub mod profile;

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

/// Runs the latency probe on each node in turn, `runs` rounds (interleaved, so that a change
/// of the host's load hits every node alike), and reports the median per node and kind.
fn latency(rep: &Reporter, nodes: &[(&str, &str)], runs: u32) {
    let mut per: BTreeMap<(usize, String), Vec<f64>> = BTreeMap::new();
    let mut broken = vec![false; nodes.len()];
    for _ in 0..runs {
        for (i, (on, node)) in nodes.iter().enumerate() {
            if broken[i] {
                continue;
            }
            match run_client(
                &client("ioctl_latency"),
                &["-n", node, "-i", "2000"],
                Duration::from_secs(120),
            ) {
                Ok((_, out)) => {
                    for (k, ns) in latency_lines(&out) {
                        per.entry((i, k)).or_default().push(ns);
                    }
                }
                Err(e) => {
                    note(rep, format!("latency on {on}: {e:#}"));
                    broken[i] = true;
                }
            }
        }
    }
    for ((i, k), mut v) in per {
        let n = v.len();
        let m = median(&mut v);
        check(
            rep,
            &format!("latency {} {k}", nodes[i].0),
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

/// The null device over vhci measured beside them (`rawgadget null --usbip-attach`: every URB
/// answered inline, no engine, no CUSE): the floor of anything that reaches the host through
/// vhci-hcd in this boot. Where it is slower than (b-C/cuse), (d) cannot be as fast as the module.
pub const N_CUSE: &str = "n/cuse";

/// A computed lower bound for any CUSE daemon on each (d) run: the FUSE requests (d)'s daemon
/// took from /dev/cuse in that run, times the cheapest two-thread round trip through a pipe
/// measured just before the case (tests/c/wakeup_floor). Every FUSE request is at
/// least such a round trip (the client sleeps in the ioctl, a daemon thread wakes, answers, the
/// client wakes); the module pays none of it.
pub const FUSE_FLOOR: &str = "fuse-floor/cuse";

/// Requests per run of the ep0 round-trip probe.
const ROUND_TRIPS: usize = 500;

/// One C Gadget Zero under measurement: its substrate, its process, the daemon serving it (none
/// on the module) and the device the host enumerated.
struct Side {
    sub: &'static str,
    what: &'static str,
    gz: GadgetProcess,
    serve: Option<u32>,
    dev: sysfs::UsbDevice,
    /// Why it stopped being measured, once it did.
    failed: Option<String>,
    /// Each case and whether all its runs passed.
    passed: Vec<(u32, bool)>,
}

/// A program to start for a side, and its arguments.
type Program<'a> = (&'a str, Vec<String>);

/// Starts `program` (the C Gadget Zero on a node, or the null device) and waits for a Gadget
/// Zero bound to usbtest that is not one of `others` (the other substrates' devices, enumerated
/// at the same time).
fn start_side(
    rep: &Reporter,
    sub: &'static str,
    what: &'static str,
    (program, args): Program,
    serve: Option<u32>,
    others: &[PathBuf],
) -> Result<Side> {
    let wait = || -> Result<sysfs::UsbDevice> {
        let deadline = Instant::now() + ENUM_TIMEOUT;
        loop {
            let found = sysfs::find(GZERO_VID, GZERO_PID).into_iter().find(|d| {
                !others.contains(&d.sysfs)
                    && d.interface_driver(0).as_deref() == Some("usbtest")
                    && d.devnode().exists()
            });
            if let Some(d) = found {
                return Ok(d);
            }
            if Instant::now() >= deadline {
                bail!("{what}: no new Gadget Zero bound to usbtest within {ENUM_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut gz = GadgetProcess::spawn(program, &args)?;
    // vhci-hcd sometimes never enumerates a device attached soon after another left the same
    // port ("vhci_device speed not set", no URB at all; seen under TCG with the port idle for
    // over a second). That is the host's doing, not the daemon's: start the program again once.
    let dev = match wait() {
        Ok(d) => d,
        Err(_) => {
            let st = gz.stop(Duration::from_secs(5))?;
            note(
                rep,
                format!(
                    "{program} on {what} was never enumerated (exited: {st}); starting it again"
                ),
            );
            wait_vhci_idle();
            gz = GadgetProcess::spawn(program, &args)?;
            wait()?
        }
    };
    substrate_state(
        rep,
        sub,
        SubstrateState::Up,
        format!("{program} on {what}, {}", dev.sysfs.display()),
    );
    Ok(Side {
        sub,
        what,
        gz,
        serve,
        dev,
        failed: None,
        passed: Vec::new(),
    })
}

/// The usbtest cases on every side, interleaved run by run (case c: run 1 on each side, run 2
/// on each side, ...): under TCG on a shared host the cost of a wakeup moves by 10× within a
/// boot, and substrates measured one after the other would be compared across those moves.
/// Each (case, side) is profiled ([`profile`]) over its runs.
/// Each (d) run also yields its [`FUSE_FLOOR`] figure.
fn interleaved_matrix(p: &Params, rep: &Reporter, sides: &mut [Side]) {
    let count = p.count.min(20);
    let runs = p.runs.min(3);
    for &case in &p.cases {
        let params = usbtest::case_params(case, count);
        let round_trip_ns = cheapest_round_trip_ns();
        match round_trip_ns {
            Some(ns) => note(
                rep,
                format!("case {case}: cheapest pipe round trip {ns:.0} ns"),
            ),
            None => note(rep, format!("case {case}: the wakeup floor did not run")),
        }
        let mut fuse_floor: Vec<RunOutcome> = Vec::new();
        let mut outcomes: Vec<Vec<RunOutcome>> = sides.iter().map(|_| Vec::new()).collect();
        let mut profiles: Vec<profile::Snapshot> =
            sides.iter().map(|_| Default::default()).collect();
        let mut done = vec![false; sides.len()];
        for _ in 0..runs {
            for (i, s) in sides.iter_mut().enumerate() {
                if done[i] || s.failed.is_some() {
                    continue;
                }
                let before = profile::Snapshot::take(s.serve, Some(s.gz.pid()));
                let r = run_case_watched(&s.dev.devnode(), params, p.case_timeout);
                let run = profile::Snapshot::take(s.serve, Some(s.gz.pid())).delta(&before);
                profiles[i].accumulate(&run);
                match r {
                    Ok(Ok(d)) => {
                        outcomes[i].push(RunOutcome::Pass(d.as_secs_f64()));
                        if let (substrate::D, Some(rt)) = (s.sub, round_trip_ns) {
                            let requests = run.reads("cuse readers") as f64;
                            fuse_floor.push(RunOutcome::Pass(requests * rt * 1e-9));
                        }
                    }
                    Ok(Err(e)) => {
                        // a failing case fails the same way again
                        done[i] = true;
                        if !s.dev.present() {
                            s.failed = Some(format!("device lost during case {case} ({e})"));
                        }
                        outcomes[i].push(RunOutcome::Error(e));
                    }
                    Err(rx) => {
                        outcomes[i].push(RunOutcome::Error("timeout".into()));
                        let action = kill_gadget(s.gz.pid())();
                        let after = match rx.recv_timeout(Duration::from_secs(30)) {
                            Ok(r) => format!("the ioctl then returned {r:?}"),
                            Err(_) => "the ioctl is still stuck 30 s later".to_string(),
                        };
                        s.failed = Some(format!(
                            "case {case} hung for more than {:?}; {action}; {after}",
                            p.case_timeout
                        ));
                    }
                }
            }
        }
        for (i, s) in sides.iter_mut().enumerate() {
            if outcomes[i].is_empty() {
                continue;
            }
            let o = std::mem::take(&mut outcomes[i]);
            let summary: Vec<String> = o
                .iter()
                .map(|r| match r {
                    RunOutcome::Pass(d) => format!("{d:.3}"),
                    RunOutcome::Error(e) => e.clone(),
                })
                .collect();
            println!(
                "bench-guest: {} case {case:2} {:<22} {}",
                s.sub,
                usbtest::case_name(case),
                summary.join(" ")
            );
            let iterations = f64::from(params.iterations) * o.len() as f64;
            note(
                rep,
                profiles[i].line(
                    iterations,
                    &format!("profile ({}) case {case}, per usbtest iteration", s.sub),
                ),
            );
            s.passed
                .push((case, o.iter().all(|r| matches!(r, RunOutcome::Pass(_)))));
            rep.emit(&Record::Usbtest {
                substrate: s.sub.into(),
                params,
                alt: -1,
                runs: o,
            });
        }
        if !fuse_floor.is_empty() {
            rep.emit(&Record::Usbtest {
                substrate: FUSE_FLOOR.into(),
                params,
                alt: -1,
                runs: fuse_floor,
            });
        }
    }
    for s in sides.iter() {
        if let Some(why) = &s.failed {
            substrate_state(rep, s.sub, SubstrateState::Failed, why.clone());
        }
    }
}

/// The ep0 round trip a host sees, on every side in turn: a vendor OUT control request with no
/// data stage (bRequest 0x5b, wLength 0) that the C Gadget Zero answers with EVENT_FETCH then
/// EP0_READ(0), the status stage. Each request is timed on its own; per side, the median and
/// the 90th percentile over `runs` rounds of [`ROUND_TRIPS`] (after one warm-up round), and
/// the profile per request.
fn control_round_trips(rep: &Reporter, sides: &[Side], runs: u32) {
    let setup = [0x40, 0x5b, 0, 0, 0, 0, 0, 0];
    let mut times: Vec<Vec<f64>> = sides.iter().map(|_| Vec::new()).collect();
    let mut profiles: Vec<profile::Snapshot> = sides.iter().map(|_| Default::default()).collect();
    let mut devices: Vec<Option<crate::usbfs::Device>> = sides
        .iter()
        .map(|s| {
            if s.failed.is_some() {
                return None;
            }
            crate::usbfs::Device::open(&s.dev.devnode())
                .map_err(|e| note(rep, format!("ep0 round trip on {}: {e}", s.what)))
                .ok()
        })
        .collect();
    for run in 0..=runs {
        for (i, s) in sides.iter().enumerate() {
            let Some(d) = &devices[i] else { continue };
            let before = profile::Snapshot::take(s.serve, Some(s.gz.pid()));
            let mut ok = true;
            for _ in 0..ROUND_TRIPS {
                let t = Instant::now();
                if let Err(e) = d.control(setup, &mut [], Duration::from_secs(5)) {
                    note(
                        rep,
                        format!("ep0 round trip on {}: control failed: {e:?}", s.what),
                    );
                    ok = false;
                    break;
                }
                // run 0 is a warm-up
                if run > 0 {
                    times[i].push(t.elapsed().as_nanos() as f64);
                }
            }
            if run > 0 {
                profiles[i]
                    .accumulate(&profile::Snapshot::take(s.serve, Some(s.gz.pid())).delta(&before));
            }
            if !ok {
                devices[i] = None;
                times[i].clear();
            }
        }
    }
    for (i, s) in sides.iter().enumerate() {
        let n = times[i].len();
        if n == 0 {
            continue;
        }
        note(
            rep,
            profiles[i].line(
                n as f64,
                &format!("profile {} ep0 round trip, per request", s.what),
            ),
        );
        let med = median(&mut times[i]);
        let p90 = times[i][n * 9 / 10];
        check(
            rep,
            &format!("latency {} ep0_round_trip", s.what),
            true,
            format!(
                "median {med:.0} ns per request (p90 {p90:.0}) over {runs} runs of {ROUND_TRIPS}: \
                 vendor OUT wLength 0 via usbfs, answered {}",
                if s.sub == N_CUSE {
                    "inline by the null device (no client)"
                } else {
                    "by EVENT_FETCH + EP0_READ(0)"
                }
            ),
        );
    }
}

/// Gates a serve substrate: every case passes, as on (c). Returns whether it did.
fn every_case_passes(rep: &Reporter, s: &Side) -> bool {
    if let Some(why) = &s.failed {
        check(
            rep,
            &format!("usbtest on ({}): every case passes, as on (c)", s.sub),
            false,
            why.clone(),
        );
        return false;
    }
    let bad: Vec<String> = s
        .passed
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(c, _)| c.to_string())
        .collect();
    check(
        rep,
        &format!("usbtest on ({}): every case passes, as on (c)", s.sub),
        bad.is_empty(),
        if bad.is_empty() {
            format!("{} cases passed", s.passed.len())
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

/// The cheapest of the wakeup floor's pipe round trips (unpinned, one CPU, across CPUs) right
/// now, in ns: what [`FUSE_FLOOR`] charges per FUSE request, taken again before every case so
/// that it moves with the host's load as the case's runs do.
fn cheapest_round_trip_ns() -> Option<f64> {
    let (_, out) = run_client(
        &client("wakeup_floor"),
        &["-i", "200"],
        Duration::from_secs(60),
    )
    .ok()?;
    latency_lines(&out)
        .into_iter()
        .map(|(_, ns)| ns)
        .min_by(f64::total_cmp)
}

/// Where the time of a CUSE round goes: the latency probe again with the daemon's threads and
/// the probe on one CPU (busybox `taskset`), so that no wakeup crosses CPUs. A diagnostic:
/// nothing is pinned in normal use.
fn pinned_latency(rep: &Reporter, serve_pid: u32, node: &str) {
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
        &["1", &client("ioctl_latency"), "-n", node, "-i", "2000"],
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

/// The nodes of the two daemons, beside the module's `/dev/raw-gadget`.
const NODE_FAST: &str = "/dev/raw-gadget-fast";
const NODE_SLOW: &str = "/dev/raw-gadget-slow";

/// Starts `rawgadget serve --name` `node` with `args` and waits for its node.
fn start_serve(p: &Params, node: &str, args: &[&str]) -> Result<GadgetProcess> {
    let name = node.trim_start_matches("/dev/");
    let mut all = vec!["serve".to_string(), "--name".into(), name.into()];
    all.extend(args.iter().map(|a| a.to_string()));
    let mut serve = GadgetProcess::spawn(&p.gadget_cli, &all)?;
    gadget::wait_path(Path::new(node), Duration::from_secs(20))?;
    serve.check_alive()?;
    Ok(serve)
}

/// The scenario. Returns the number of failed parts.
///
/// The module stays loaded throughout and the two daemons serve other node names
/// (`/dev/raw-gadget-fast`, `/dev/raw-gadget-slow`), so that the three C Gadget Zeros are
/// enumerated at once (dummy_hcd, two vhci ports) and every measurement interleaves them.
pub fn cuse(p: &Params, rep: &Reporter) -> Result<i32> {
    for m in ["cuse", "usbip-core", "vhci-hcd", "dummy_hcd", "raw_gadget"] {
        gadget::modprobe(m, &[])?;
    }
    gadget::modprobe("usbtest", &["pattern=1"])?;
    gadget::wait_path(Path::new(NODE), Duration::from_secs(10))?;
    let mut failed = 0;

    // (1a) the errno script on the reference module.
    let (rc, module_out) = run_client(&client("errno_script"), &[], Duration::from_secs(120))?;
    note(rep, format!("errno_script on raw_gadget.ko exited {rc}"));
    for l in module_out.lines() {
        println!("bench-guest: module: {l}");
    }
    if p.gadget_cli.is_empty() {
        for sub in [substrate::D, D_SLOW] {
            substrate_state(
                rep,
                sub,
                SubstrateState::NotRun,
                format!("our rawgadget CLI is not available: {}", p.gadget_missing),
            );
        }
        wakeup_floor(rep, "raw_gadget.ko");
        latency(rep, &[("raw_gadget.ko", NODE)], p.runs);
        return Ok(1);
    }
    let serve_fast = start_serve(p, NODE_FAST, &[])?;
    let serve_slow = match start_serve(p, NODE_SLOW, &["--no-fast-path"]) {
        Ok(s) => s,
        Err(e) => {
            let _ = serve_fast.stop(Duration::from_secs(5));
            return Err(e);
        }
    };
    let (fast_pid, slow_pid) = (serve_fast.pid(), serve_slow.pid());
    let r = (|| -> Result<i32> {
        let mut failed = 0;
        // (1b) the same script on serve, compared.
        let (rc2, serve_out) = run_client(
            &client("errno_script"),
            &["-n", NODE_FAST],
            Duration::from_secs(120),
        )?;
        note(rep, format!("errno_script on rawgadget serve exited {rc2}"));
        // its header names the node
        let serve_out = serve_out.replace(NODE_FAST, NODE);
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

        // (2) the C Gadget Zero on (b-C) the module, (d) serve and (d-slow) serve
        // --no-fast-path, all enumerated at once, measured interleaved. Contract prediction
        // for (d) and (d-slow): the same as (c), our engine through vhci-hcd.
        let mut sides: Vec<Side> = Vec::new();
        let plan: [(&'static str, &'static str, &str, Option<u32>); 3] = [
            (B_C, "raw_gadget.ko", NODE, None),
            (substrate::D, "rawgadget serve", NODE_FAST, Some(fast_pid)),
            (
                D_SLOW,
                "rawgadget serve --no-fast-path",
                NODE_SLOW,
                Some(slow_pid),
            ),
        ];
        let gz = client("gadget_zero");
        let mut programs: Vec<(&'static str, &'static str, Program, Option<u32>)> = plan
            .iter()
            .map(|&(sub, what, node, serve)| {
                (
                    sub,
                    what,
                    (gz.as_str(), vec!["-n".into(), node.into()]),
                    serve,
                )
            })
            .collect();
        // and the floor, measured in the same interleaving (a reference: never a failure of ours)
        let null_args = vec!["null".to_string(), "--usbip-attach".to_string()];
        programs.push((
            N_CUSE,
            "the null device (vhci floor)",
            (&p.gadget_cli, null_args),
            None,
        ));
        for (sub, what, program, serve) in programs {
            let others: Vec<PathBuf> = sides.iter().map(|s| s.dev.sysfs.clone()).collect();
            match start_side(rep, sub, what, program, serve, &others) {
                Ok(s) => sides.push(s),
                Err(e) => {
                    substrate_state(rep, sub, SubstrateState::Failed, format!("{e:#}"));
                    if sub != B_C && sub != N_CUSE {
                        failed += 1;
                    }
                }
            }
        }
        interleaved_matrix(p, rep, &mut sides);
        control_round_trips(rep, &sides, p.runs.min(3));
        for mut s in sides {
            if s.sub != B_C && s.sub != N_CUSE && !every_case_passes(rep, &s) {
                failed += 1;
            }
            if s.failed.is_none() {
                if let Err(e) = s.gz.check_alive() {
                    note(rep, format!("({}) on {}: {e:#}", s.sub, s.what));
                }
            }
            let st = s.gz.stop(Duration::from_secs(5))?;
            note(rep, format!("({}) on {} exited: {st}", s.sub, s.what));
        }

        // (3) latency: the floor, then the probe on the three nodes interleaved; then once
        // with everything on one CPU (a diagnostic)
        wakeup_floor(rep, "the latency probes");
        latency(
            rep,
            &[
                ("raw_gadget.ko", NODE),
                ("rawgadget serve", NODE_FAST),
                ("rawgadget serve --no-fast-path", NODE_SLOW),
            ],
            p.runs.min(3),
        );
        pinned_latency(rep, fast_pid, NODE_FAST);
        Ok(failed)
    })();
    for (serve, what) in [
        (serve_fast, "rawgadget serve"),
        (serve_slow, "rawgadget serve --no-fast-path"),
    ] {
        let mut serve = serve;
        if let Err(e) = serve.check_alive() {
            check(rep, what, false, format!("{e:#}"));
            failed += 1;
        }
        let st = serve.stop(Duration::from_secs(5))?;
        note(rep, format!("{what} exited: {st}"));
    }
    match r {
        Ok(n) => failed += n,
        Err(e) => {
            check(rep, "rawgadget serve", false, format!("{e:#}"));
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
