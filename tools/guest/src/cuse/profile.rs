//! Where the wakeups of a CUSE transfer go (issue 6): per-thread counters from `/proc`, read
//! before and after a stretch of work, summed by role. For each thread of the daemon, of the
//! C client and of vhci-hcd's kernel threads:
//!
//! - context switches (`status`: a voluntary one is a sleep, so one wakeup later; an
//!   involuntary one is a preemption),
//! - read and write system calls (`io`: `syscr`, `syscw`; on `/dev/cuse` one read is one
//!   request and one write one reply),
//! - CPU time and time spent runnable but waiting for a CPU (`schedstat`), the scheduler's
//!   share of every wakeup's latency.
//!
//! Reading `/proc` between cases costs nothing during them; the figures are divided by the
//! number of transfers to give a per-transfer cost.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;

/// One thread's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub voluntary: u64,
    pub involuntary: u64,
    pub reads: u64,
    pub writes: u64,
    pub cpu_ns: u64,
    pub wait_ns: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.voluntary += o.voluntary;
        self.involuntary += o.involuntary;
        self.reads += o.reads;
        self.writes += o.writes;
        self.cpu_ns += o.cpu_ns;
        self.wait_ns += o.wait_ns;
    }
    fn minus(&self, o: &Counters) -> Counters {
        Counters {
            voluntary: self.voluntary.saturating_sub(o.voluntary),
            involuntary: self.involuntary.saturating_sub(o.involuntary),
            reads: self.reads.saturating_sub(o.reads),
            writes: self.writes.saturating_sub(o.writes),
            cpu_ns: self.cpu_ns.saturating_sub(o.cpu_ns),
            wait_ns: self.wait_ns.saturating_sub(o.wait_ns),
        }
    }
}

/// Parses a thread's `status`, `io` and `schedstat` files (any may be missing).
pub fn parse(status: &str, io: &str, schedstat: &str) -> Counters {
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let mut s = schedstat.split_whitespace().map(|w| w.parse().unwrap_or(0));
    Counters {
        voluntary: field(status, "voluntary_ctxt_switches:"),
        involuntary: field(status, "nonvoluntary_ctxt_switches:"),
        reads: field(io, "syscr:"),
        writes: field(io, "syscw:"),
        cpu_ns: s.next().unwrap_or(0),
        wait_ns: s.next().unwrap_or(0),
    }
}

/// Which role a thread plays, from its name.
pub fn role(comm: &str, daemon_main: bool) -> &'static str {
    match comm {
        c if c.starts_with("cuse-reader") => "cuse readers",
        _ if daemon_main => "cuse readers",
        "usbip-rx" => "usbip-rx",
        "usbip-tx" => "usbip-tx",
        c if c.starts_with("cuse-fh") => "cuse worker",
        "vhci_rx" | "vhci_tx" => "vhci kthreads",
        _ => "daemon other",
    }
}

/// Counters per role at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    roles: BTreeMap<&'static str, Counters>,
}

/// A /proc file's text, empty when it is gone (the thread or process ended).
pub(crate) fn read(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

fn add_task(roles: &mut BTreeMap<&'static str, Counters>, dir: &str, role: &'static str) {
    let c = parse(
        &read(&format!("{dir}/status")),
        &read(&format!("{dir}/io")),
        &read(&format!("{dir}/schedstat")),
    );
    roles.entry(role).or_default().add(&c);
}

impl Snapshot {
    /// The threads of the daemon (`daemon`, by role), of the client (`client`, all its
    /// threads as one role) and vhci-hcd's kernel threads.
    pub fn take(daemon: Option<u32>, client: Option<u32>) -> Snapshot {
        let mut roles = BTreeMap::new();
        if let Some(pid) = daemon {
            for tid in tasks(pid) {
                let dir = format!("/proc/{pid}/task/{tid}");
                let comm = read(&format!("{dir}/comm"));
                add_task(&mut roles, &dir, role(comm.trim(), tid == pid));
            }
        }
        if let Some(pid) = client {
            for tid in tasks(pid) {
                add_task(&mut roles, &format!("/proc/{pid}/task/{tid}"), "C client");
            }
        }
        for pid in pids() {
            let dir = format!("/proc/{pid}");
            let comm = read(&format!("{dir}/comm"));
            if matches!(comm.trim(), "vhci_rx" | "vhci_tx") {
                add_task(&mut roles, &dir, "vhci kthreads");
            }
        }
        Snapshot { roles }
    }

    /// `self − before`, per role.
    pub fn delta(&self, before: &Snapshot) -> Snapshot {
        let roles = self
            .roles
            .iter()
            .map(|(role, now)| {
                let d = now.minus(before.roles.get(role).unwrap_or(&Counters::default()));
                (*role, d)
            })
            .collect();
        Snapshot { roles }
    }

    /// Read syscalls of `role`'s threads: for "cuse readers", the FUSE requests the daemon took
    /// from /dev/cuse.
    pub fn reads(&self, role: &str) -> u64 {
        self.roles.get(role).map_or(0, |c| c.reads)
    }

    /// Adds a [`Snapshot::delta`] to this sum.
    pub fn accumulate(&mut self, d: &Snapshot) {
        for (role, c) in &d.roles {
            self.roles.entry(role).or_default().add(c);
        }
    }

    /// `self − before`, per role, as one line: each role's counters divided by `per` (the
    /// units of work `label` names).
    pub fn since(&self, before: &Snapshot, per: f64, label: &str) -> String {
        self.delta(before).line(per, label)
    }

    /// This (a delta or a sum of deltas) as one line, divided by `per`.
    pub fn line(&self, per: f64, label: &str) -> String {
        let mut out = format!("{label}:");
        for (role, d) in &self.roles {
            if *d == Counters::default() {
                continue;
            }
            let _ = write!(
                out,
                " [{role}: {:.2} sleeps, {:.2} preempted, {:.2} reads, {:.2} writes, cpu {:.0} µs, \
                 runnable-waiting {:.0} µs]",
                d.voluntary as f64 / per,
                d.involuntary as f64 / per,
                d.reads as f64 / per,
                d.writes as f64 / per,
                d.cpu_ns as f64 / per / 1e3,
                d.wait_ns as f64 / per / 1e3,
            );
        }
        out
    }
}

fn tasks(pid: u32) -> Vec<u32> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n";
        let io = "rchar: 1\nwchar: 2\nsyscr: 40\nsyscw: 41\n";
        let c = parse(status, io, "1000 2000 7\n");
        assert_eq!(
            c,
            Counters {
                voluntary: 12,
                involuntary: 3,
                reads: 40,
                writes: 41,
                cpu_ns: 1000,
                wait_ns: 2000
            }
        );
        assert_eq!(parse("", "", ""), Counters::default());
    }

    #[test]
    fn roles_by_thread_name() {
        assert_eq!(role("cuse-reader2", false), "cuse readers");
        assert_eq!(role("rawgadget", true), "cuse readers");
        assert_eq!(role("usbip-rx", false), "usbip-rx");
        assert_eq!(role("cuse-fh1", false), "cuse worker");
        assert_eq!(role("rawgadget", false), "daemon other");
    }

    #[test]
    fn deltas_per_transfer() {
        let mut a = Snapshot::default();
        a.roles.insert(
            "usbip-rx",
            Counters {
                voluntary: 10,
                ..Counters::default()
            },
        );
        let mut b = a.clone();
        b.roles.get_mut("usbip-rx").unwrap().voluntary = 30;
        let line = b.since(&a, 10.0, "x");
        assert!(line.contains("usbip-rx: 2.00 sleeps"), "{line}");
    }
}
