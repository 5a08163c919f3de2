//! What a Gadget Zero process does per usbtest iteration (issue 4: why (b) is slower than
//! (b-C)), recorded beside the timed runs of the usbtest-dummy scenario:
//!
//! - around every timed run, each thread's counters from `/proc` (see [`cuse::profile`]):
//!   sleeps (voluntary switches), preemptions, CPU time and runnable-waiting time from
//!   `schedstat`, and the process's utime+stime from `stat`. Reading `/proc` between runs
//!   costs nothing inside usbtest's own timing. Gadget Zero restarts its endpoint threads at
//!   every run (usbtest sets altsetting 0 first), so a thread missing from the snapshot before
//!   a run counts from zero;
//! - when `strace` is in the guest, one more (untimed) run of the case under `strace -f`,
//!   counting system calls by name and ioctls by raw gadget request.
//!
//! Figures are divided by the number of usbtest iterations they cover.
//!
//! [`cuse::profile`]: crate::cuse::profile

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rawgadget_uapi as uapi;
use serde::{Deserialize, Serialize};

use crate::cuse::profile::{parse, read, Counters};

/// Where the guest's strace is, when the initramfs has it.
pub const STRACE: &str = "/usr/bin/strace";

/// One process's threads at one moment, by thread id.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    pid: u32,
    threads: BTreeMap<u32, Counters>,
    /// utime + stime of the whole process (dead threads included), in clock ticks.
    process_ticks: u64,
    /// utime alone.
    user_ticks: u64,
}

/// utime + stime (fields 14 and 15 of stat(5)) in clock ticks.
pub(crate) fn stat_ticks(stat: &str) -> Option<u64> {
    stat_user_sys(stat).map(|(u, s)| u + s)
}

/// utime and stime (fields 14 and 15 of stat(5)) in clock ticks: user space and kernel.
pub(crate) fn stat_user_sys(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

impl Tasks {
    pub fn take(pid: u32) -> Tasks {
        let mut threads = BTreeMap::new();
        if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) {
            for tid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
                let d = format!("/proc/{pid}/task/{tid}");
                let c = parse(
                    &read(&format!("{d}/status")),
                    &read(&format!("{d}/io")),
                    &read(&format!("{d}/schedstat")),
                );
                threads.insert(tid, c);
            }
        }
        let (user, sys) = stat_user_sys(&read(&format!("/proc/{pid}/stat"))).unwrap_or((0, 0));
        Tasks {
            pid,
            threads,
            process_ticks: user + sys,
            user_ticks: user,
        }
    }

    /// What the process did since `before`: per thread `now − before`, a new thread from zero.
    pub fn since(&self, before: &Tasks) -> Cost {
        let mut c = Cost {
            process_ticks: self.process_ticks.saturating_sub(before.process_ticks),
            user_ticks: self.user_ticks.saturating_sub(before.user_ticks),
            ..Cost::default()
        };
        for (tid, now) in &self.threads {
            let b = before.threads.get(tid).copied().unwrap_or_default();
            c.sleeps += now.voluntary.saturating_sub(b.voluntary);
            c.preempted += now.involuntary.saturating_sub(b.involuntary);
            c.reads += now.reads.saturating_sub(b.reads);
            c.writes += now.writes.saturating_sub(b.writes);
            c.cpu_ns += now.cpu_ns.saturating_sub(b.cpu_ns);
            c.wait_ns += now.wait_ns.saturating_sub(b.wait_ns);
            if !before.threads.contains_key(tid) {
                c.new_threads += 1;
            }
            if *tid == self.pid {
                c.main_sleeps += now.voluntary.saturating_sub(b.voluntary);
                c.main_cpu_ns += now.cpu_ns.saturating_sub(b.cpu_ns);
            }
        }
        c
    }
}

/// Counters summed over a process's threads for a stretch of work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub sleeps: u64,
    pub preempted: u64,
    pub reads: u64,
    pub writes: u64,
    pub cpu_ns: u64,
    pub wait_ns: u64,
    pub process_ticks: u64,
    /// The user-space share of `process_ticks` (the rest is kernel time).
    pub user_ticks: u64,
    pub new_threads: u64,
    /// The main thread's share (the ep0 event loop in both Gadget Zeros).
    pub main_sleeps: u64,
    pub main_cpu_ns: u64,
}

impl Cost {
    pub fn add(&mut self, o: &Cost) {
        self.sleeps += o.sleeps;
        self.preempted += o.preempted;
        self.reads += o.reads;
        self.writes += o.writes;
        self.cpu_ns += o.cpu_ns;
        self.wait_ns += o.wait_ns;
        self.process_ticks += o.process_ticks;
        self.user_ticks += o.user_ticks;
        self.new_threads += o.new_threads;
        self.main_sleeps += o.main_sleeps;
        self.main_cpu_ns += o.main_cpu_ns;
    }
}

/// The record of one case on one substrate: [`Cost`] per iteration of the timed runs, and the
/// system calls per iteration of the traced run (empty without strace).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GadgetProfile {
    pub substrate: String,
    pub case: u32,
    /// Iterations the /proc figures cover (timed runs × count).
    pub iterations: u64,
    pub sleeps: f64,
    pub preempted: f64,
    pub cpu_us: f64,
    pub runnable_wait_us: f64,
    /// utime + stime from `/proc/PID/stat` (10 ms ticks: coarse, but counts exited threads).
    pub stat_cpu_us: f64,
    /// The utime share of `stat_cpu_us`: user space, where the two Gadget Zeros' own code
    /// runs (stime is the kernel's, the same driver for both).
    #[serde(default)]
    pub stat_user_us: f64,
    /// Threads started per iteration (endpoint threads restarted by SET_INTERFACE).
    pub new_threads: f64,
    /// The main (ep0) thread's share of `sleeps` and `cpu_us`.
    #[serde(default)]
    pub main_sleeps: f64,
    #[serde(default)]
    pub main_cpu_us: f64,
    /// CPU the process used while the other substrate's runs of the case went on (it should
    /// idle then), as a share of their wall time, in percent.
    #[serde(default)]
    pub idle_cpu_percent: f64,
    /// Iterations of the traced run (0 when there was none).
    #[serde(default)]
    pub traced_iterations: u64,
    /// System calls per iteration of the traced run: `ioctl EP_READ`, `futex`, ...; failed
    /// calls also under `= EINTR` etc.
    #[serde(default)]
    pub syscalls: BTreeMap<String, f64>,
    /// Why the traced run is missing or incomplete.
    #[serde(default)]
    pub trace_error: Option<String>,
}

impl GadgetProfile {
    pub fn new(substrate: &str, case: u32, iterations: u64, c: &Cost) -> GadgetProfile {
        let per = iterations.max(1) as f64;
        GadgetProfile {
            substrate: substrate.into(),
            case,
            iterations,
            sleeps: c.sleeps as f64 / per,
            preempted: c.preempted as f64 / per,
            cpu_us: c.cpu_ns as f64 / 1e3 / per,
            runnable_wait_us: c.wait_ns as f64 / 1e3 / per,
            // USER_HZ is 100 on x86.
            stat_cpu_us: c.process_ticks as f64 * 10_000.0 / per,
            stat_user_us: c.user_ticks as f64 * 10_000.0 / per,
            new_threads: c.new_threads as f64 / per,
            main_sleeps: c.main_sleeps as f64 / per,
            main_cpu_us: c.main_cpu_ns as f64 / 1e3 / per,
            idle_cpu_percent: 0.0,
            traced_iterations: 0,
            syscalls: BTreeMap::new(),
            trace_error: None,
        }
    }

    /// The console form.
    pub fn line(&self) -> String {
        let calls: Vec<String> = self
            .syscalls
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        format!(
            "({}) case {} per iteration: {:.2} sleeps ({:.2} main), {:.2} preempted, cpu {:.0} µs \
             ({:.0} main, stat {:.0} of which user {:.0}), runnable-waiting {:.0} µs, {:.3} new threads; idle cpu \
             {:.1}%; traced: [{}]{}",
            self.substrate,
            self.case,
            self.sleeps,
            self.main_sleeps,
            self.preempted,
            self.cpu_us,
            self.main_cpu_us,
            self.stat_cpu_us,
            self.stat_user_us,
            self.runnable_wait_us,
            self.new_threads,
            self.idle_cpu_percent,
            calls.join(", "),
            self.trace_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )
    }
}

/// The raw gadget request of an ioctl number, or the number in hex.
pub fn ioctl_name(code: u32) -> String {
    let names = [
        (uapi::USB_RAW_IOCTL_INIT, "INIT"),
        (uapi::USB_RAW_IOCTL_RUN, "RUN"),
        (uapi::USB_RAW_IOCTL_EVENT_FETCH, "EVENT_FETCH"),
        (uapi::USB_RAW_IOCTL_EP0_WRITE, "EP0_WRITE"),
        (uapi::USB_RAW_IOCTL_EP0_READ, "EP0_READ"),
        (uapi::USB_RAW_IOCTL_EP_ENABLE, "EP_ENABLE"),
        (uapi::USB_RAW_IOCTL_EP_DISABLE, "EP_DISABLE"),
        (uapi::USB_RAW_IOCTL_EP_WRITE, "EP_WRITE"),
        (uapi::USB_RAW_IOCTL_EP_READ, "EP_READ"),
        (uapi::USB_RAW_IOCTL_CONFIGURE, "CONFIGURE"),
        (uapi::USB_RAW_IOCTL_VBUS_DRAW, "VBUS_DRAW"),
        (uapi::USB_RAW_IOCTL_EPS_INFO, "EPS_INFO"),
        (uapi::USB_RAW_IOCTL_EP0_STALL, "EP0_STALL"),
        (uapi::USB_RAW_IOCTL_EP_SET_HALT, "EP_SET_HALT"),
        (uapi::USB_RAW_IOCTL_EP_CLEAR_HALT, "EP_CLEAR_HALT"),
        (uapi::USB_RAW_IOCTL_EP_SET_WEDGE, "EP_SET_WEDGE"),
    ];
    names
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("{code:#x}"))
}

/// Tallies an `strace -f -e raw=ioctl -e signal=none -qq` log: calls by name (ioctls by
/// request), counted where they start (a complete line or `<unfinished ...>`), and failures by
/// errno where they end (`= -1 EINTR ...`).
pub fn tally_strace(log: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in log.lines() {
        // "<tid>  call(args) = result", "<tid>  call(args <unfinished ...>",
        // "<tid>  <... call resumed>) = result"
        let body = line
            .trim_start()
            .split_once(char::is_whitespace)
            .map(|(_, b)| b.trim_start())
            .unwrap_or(line);
        if body.starts_with("+++") || body.starts_with("---") {
            continue;
        }
        if !body.starts_with("<...") {
            let Some((name, args)) = body.split_once('(') else {
                continue;
            };
            let key = if name == "ioctl" {
                let code = args
                    .split(", ")
                    .nth(1)
                    .and_then(|a| {
                        let a = a.trim_end_matches(|c: char| !c.is_ascii_hexdigit());
                        u32::from_str_radix(a.trim_start_matches("0x"), 16).ok()
                    })
                    .map(ioctl_name)
                    .unwrap_or_else(|| "?".into());
                format!("ioctl {code}")
            } else {
                name.to_string()
            };
            *out.entry(key).or_insert(0) += 1;
        }
        if let Some((_, result)) = body.rsplit_once(" = -1 ") {
            if let Some(errno) = result.split_whitespace().next() {
                *out.entry(format!("= {errno}")).or_insert(0) += 1;
            }
        }
    }
    out
}

/// Whether every thread of `pid` is traced (strace has attached to all of them).
fn all_traced(pid: u32) -> bool {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    dir.filter_map(|e| e.ok()).all(|e| {
        read(&format!("{}/status", e.path().display()))
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .is_some_and(|v| v.trim() != "0")
    })
}

/// Runs `work` with strace attached to every thread of `pid` (and the threads it starts), and
/// returns the tally of the system calls it saw.
pub fn traced<T>(
    pid: u32,
    log: &Path,
    work: impl FnOnce() -> T,
) -> anyhow::Result<(T, BTreeMap<String, u64>)> {
    use anyhow::{bail, Context};
    let _ = fs::remove_file(log);
    let mut child = Command::new(STRACE)
        .args(["-f", "-qq", "-e", "raw=ioctl", "-e", "signal=none", "-o"])
        .arg(log)
        .arg("-p")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting strace")?;
    let t = Instant::now();
    while !all_traced(pid) {
        if t.elapsed() > Duration::from_secs(10) || child.try_wait()?.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("strace did not attach to every thread of {pid}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = work();
    // SIGINT: strace detaches from every thread and exits.
    crate::gadget::signal(child.id(), libc::SIGINT);
    let status = child.wait()?;
    let text = fs::read_to_string(log).context("reading the strace log")?;
    if text.is_empty() && !status.success() {
        bail!("strace exited with {status} and an empty log");
    }
    Ok((r, tally_strace(&text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The EP_READ number strace prints raw (`-e raw=ioctl`) maps back to its name.
    #[test]
    fn tally_counts_ioctls_by_request_and_failures_by_errno() {
        let read = format!("{:#x}", uapi::USB_RAW_IOCTL_EP_READ);
        let fetch = format!("{:#x}", uapi::USB_RAW_IOCTL_EVENT_FETCH);
        let log = format!(
            "101   ioctl(0x3, {read}, 0x7f00)  = 1024\n\
             102   ioctl(0x3, {fetch}, 0x7f10 <unfinished ...>\n\
             101   futex(0x55, FUTEX_WAKE_PRIVATE, 1) = 0\n\
             102   <... ioctl resumed>)  = -1 EINTR (Interrupted system call)\n\
             102   rt_sigreturn({{mask=[]}}) = -1 EINTR (Interrupted system call)\n\
             101   ioctl(0x3, {read}, 0x7f00) = 512\n\
             103   +++ exited with 0 +++\n\
             104   wait4(-1,  <detached ...>\n"
        );
        let t = tally_strace(&log);
        assert_eq!(t.get("ioctl EP_READ"), Some(&2));
        assert_eq!(t.get("ioctl EVENT_FETCH"), Some(&1));
        assert_eq!(t.get("futex"), Some(&1));
        assert_eq!(t.get("rt_sigreturn"), Some(&1));
        assert_eq!(t.get("= EINTR"), Some(&2));
        assert_eq!(t.get("wait4"), Some(&1));
        assert_eq!(t.len(), 6, "{t:?}");
    }

    /// A thread that is new since the earlier snapshot counts from zero; a known one by delta.
    #[test]
    fn cost_counts_new_threads_from_zero() {
        let c = |v: u64| Counters {
            voluntary: v,
            cpu_ns: v * 1000,
            ..Counters::default()
        };
        let before = Tasks {
            pid: 1,
            threads: [(1, c(10)), (2, c(5))].into_iter().collect(),
            process_ticks: 3,
            user_ticks: 1,
        };
        let after = Tasks {
            pid: 1,
            threads: [(1, c(12)), (3, c(7))].into_iter().collect(),
            process_ticks: 5,
            user_ticks: 2,
        };
        let d = after.since(&before);
        assert_eq!(
            (
                d.sleeps,
                d.cpu_ns,
                d.new_threads,
                d.process_ticks,
                d.user_ticks
            ),
            (9, 9000, 1, 2, 1)
        );
        assert_eq!((d.main_sleeps, d.main_cpu_ns), (2, 2000));
    }

    #[test]
    fn stat_ticks_skip_the_command_name() {
        let stat = "42 (ep 0x81) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 3 0";
        assert_eq!(stat_ticks(stat), Some(10));
        assert_eq!(stat_user_sys(stat), Some((7, 3)));
    }
}
