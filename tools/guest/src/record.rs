//! What the guest reports to the runner: one JSON object per line on the result channel (the VM's
//! second serial port, `/dev/ttyS1`), tagged by `kind`. The runner parses the same types.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::usbtest::CaseParams;

/// Substrate identifiers of the bench matrix (issue 4 §5).
pub mod substrate {
    /// In-kernel SourceSink through configfs on dummy_udc.0.
    pub const A: &str = "a";
    /// raw_gadget.ko on dummy_udc.0 driven by our Rust Gadget Zero.
    pub const B: &str = "b";
    /// SourceSink on usbip-vudc.0 attached to vhci-hcd through a socketpair.
    pub const A_PRIME: &str = "a'";
    /// raw_gadget.ko on usbip-vudc.0 driven by our Rust Gadget Zero.
    pub const B_PRIME: &str = "b'";
    /// Our engine over USB/IP (filled by a later issue).
    pub const C: &str = "c";
    /// The C Gadget Zero (tests/c) on `rawgadget serve` (CUSE), attached through vhci-hcd.
    pub const D: &str = "d";
    /// raw_gadget.ko on dummy_udc.0 driven by the C Gadget Zero (tests/c): the C raw-gadget
    /// program our Rust Gadget Zero (b) is measured against, in the same boot.
    pub const B_C: &str = "b-c";
    /// The null-device floor: `rawgadget null --usbip-attach`, every URB answered inline with no
    /// engine and no client (contract P5), in the same boot as (c).
    pub const N: &str = "n";
    /// A second instance of (c), attached beside the floor and measured with its runs
    /// interleaved with (n)'s: the numerator of the floor ratios (not a column of the table).
    pub const C_WITH_N: &str = "c+n";
}

/// The outcome of one usbtest run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// usbtest's own duration in seconds.
    Pass(f64),
    /// The errno name (`EOVERFLOW`) or `errno N`.
    Error(String),
}

/// One line on the result channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// First line of every scenario.
    Start {
        scenario: String,
        kernel: String,
        params: serde_json::Value,
    },
    /// A substrate came up, could not, or was skipped.
    Substrate {
        substrate: String,
        state: SubstrateState,
        detail: String,
    },
    /// All runs of one usbtest case on one substrate.
    Usbtest {
        substrate: String,
        params: CaseParams,
        alt: i32,
        runs: Vec<RunOutcome>,
    },
    /// One step of the scripted host.
    HostStep(HostStep),
    /// Bulk MB/s and control round trips/s of one substrate through usbfs
    /// (`throughput::measure`), one figure per run; `error` when the measurement failed.
    Throughput {
        substrate: String,
        transfer_bytes: u32,
        transfers_per_run: u32,
        controls_per_run: u32,
        bulk_in_mbps: Vec<f64>,
        bulk_out_mbps: Vec<f64>,
        control_per_s: Vec<f64>,
        /// usbtest's own bulk throughput per run, measured the way real-kernel-bench.md measured
        /// its reference figures (case 2 IN / case 1 OUT, size 65536, `USBTEST_THROUGHPUT_COUNT`
        /// URBs, in the kernel: no usbfs copy). Empty in records of older runs.
        #[serde(default)]
        usbtest_in_mbps: Vec<f64>,
        #[serde(default)]
        usbtest_out_mbps: Vec<f64>,
        #[serde(default)]
        error: Option<String>,
    },
    /// A named check with its verdict (keyboard text, sysfs descriptors, ...).
    Check {
        name: String,
        pass: bool,
        detail: String,
    },
    /// Free-form progress line.
    Note { text: String },
    /// What a gadget process did per usbtest iteration of one case (issue 4, usbtest-dummy).
    GadgetProfile(crate::gzprof::GadgetProfile),
    /// Last line: the scenario's exit status (0 = pass).
    End { status: i32, detail: String },
}

/// Whether a substrate ran.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SubstrateState {
    Up,
    NotRun,
    Failed,
}

/// What the scripted host saw for one script step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostStep {
    pub substrate: String,
    /// 1-based line number in the script.
    pub line: usize,
    /// The step as written.
    pub text: String,
    /// `ok` or the errno name.
    pub status: String,
    /// Bytes transferred (or the number the kernel returned).
    pub actual: usize,
    /// IN data in hex, at most 256 bytes; empty when there is none.
    pub data: String,
    /// What must be equal across substrates: `none`, `status` (status and length) or `data`.
    pub cmp: String,
}

/// Where records go: the result serial port in the VM, or a file/stdout elsewhere.
pub struct Reporter {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Reporter {
    /// Opens `path` for writing (a tty, a file, or `-` for stdout).
    pub fn open(path: &str) -> std::io::Result<Reporter> {
        let out: Box<dyn Write + Send> = if path == "-" {
            Box::new(std::io::stdout())
        } else {
            let f: File = OpenOptions::new().create(true).append(true).open(path)?;
            Box::new(f)
        };
        Ok(Reporter {
            out: Mutex::new(out),
        })
    }

    /// Writes one record as a JSON line and echoes a short form on stdout (the console).
    pub fn emit(&self, rec: &Record) {
        let line = serde_json::to_string(rec)
            .unwrap_or_else(|e| format!("{{\"kind\":\"note\",\"text\":\"{e}\"}}"));
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}
