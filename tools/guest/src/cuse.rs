//! The `cuse` scenario (issue 6 item 3): the project's C test clients (tests/c, written against
//! the UAPI header only) run unchanged on the reference raw_gadget.ko and on `rawgadget serve`.
//!
//! 1. The differential errno script on raw_gadget.ko (+ dummy_hcd), then on `rawgadget serve`
//!    (+ vhci-hcd), compared line by line; only the differences contract C12 lists, or that the
//!    contract explains by the controller (dummy_udc vs ours through vhci), are allowed.
//! 2. The C Gadget Zero on `rawgadget serve` under usbtest, as substrate (d); the contract predicts
//!    the same results as (c), our engine through vhci-hcd.
//! 3. The ioctl latency probe on both.

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
    latency(rep, "raw_gadget.ko", p.runs);

    // Switch to `rawgadget serve`: it refuses while the module's node exists.
    gadget::rmmod("raw_gadget")?;
    if p.gadget_cli.is_empty() {
        substrate_state(
            rep,
            substrate::D,
            SubstrateState::NotRun,
            format!("our rawgadget CLI is not available: {}", p.gadget_missing),
        );
        return Ok(1);
    }
    let mut serve = GadgetProcess::spawn(&p.gadget_cli, &["serve".to_string()])?;
    let r = (|| -> Result<i32> {
        gadget::wait_path(Path::new(NODE), Duration::from_secs(20))?;
        serve.check_alive()?;
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

        // (2) the C Gadget Zero on serve, under usbtest.
        let sub = substrate::D;
        let mut gz = GadgetProcess::spawn(&client("gadget_zero"), &[])?;
        let m = Matrix {
            rep,
            sub,
            count: p.count.min(20),
            runs: p.runs.min(3),
            case_timeout: p.case_timeout,
        };
        let pid = gz.pid();
        let r = sysfs::wait_for(GZERO_VID, GZERO_PID, 0, Some("usbtest"), ENUM_TIMEOUT).and_then(
            |dev| {
                substrate_state(
                    rep,
                    sub,
                    SubstrateState::Up,
                    format!("C gadget_zero on rawgadget serve, {}", dev.sysfs.display()),
                );
                let passed = usbtest_matrix(&m, &dev, &p.cases, -1, &mut kill_gadget(pid))?;
                gz.check_alive()?;
                Ok(passed)
            },
        );
        let st = gz.stop(Duration::from_secs(5))?;
        note(rep, format!("C gadget_zero exited: {st}"));
        match r {
            // Contract prediction: the same as (c), our engine through vhci-hcd, which passes
            // every case of this subset (docs/bench-results.md).
            Ok(passed) => {
                let bad: Vec<String> = passed
                    .iter()
                    .filter(|(_, ok)| !ok)
                    .map(|(c, _)| c.to_string())
                    .collect();
                if !check(
                    rep,
                    "usbtest on (d): every case passes, as on (c)",
                    bad.is_empty(),
                    if bad.is_empty() {
                        format!("{} cases passed", passed.len())
                    } else {
                        format!("failed cases: {}", bad.join(","))
                    },
                ) {
                    failed += 1;
                }
            }
            Err(e) => {
                substrate_state(rep, sub, SubstrateState::Failed, format!("{e:#}"));
                failed += 1;
            }
        }
        sysfs::wait_gone(GZERO_VID, GZERO_PID, Duration::from_secs(10))?;

        // (3b) latency on serve.
        latency(rep, "rawgadget serve", p.runs);
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
