//! What the benches measure besides wall time: CPU time and context switches of this process,
//! and the median of the runs. Shared by the benches of this crate (`mod common`) and by
//! rawgadget-cli's `usbip_queue` (through `#[path]`: benches cannot depend on each other).

#![allow(dead_code)] // each bench uses its own subset

use std::time::Duration;

/// CPU time (user + system) of every thread of this process so far.
pub fn process_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Voluntary and involuntary context switches of every live thread of this process.
pub fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// The median of the runs (the upper one for an even count); `v` must not be empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
