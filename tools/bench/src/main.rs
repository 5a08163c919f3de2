//! `rawgadget-bench`: the real-kernel bench (issue 4). Boots Debian's 6.12 kernel in QEMU with an
//! initramfs of our own, runs a named scenario inside (usbtest matrix, scripted host, keyboard), and
//! prints one table comparing the in-kernel SourceSink, raw_gadget.ko driven by our Gadget Zero, and
//! their usbip-vudc counterparts.
//!
//! ```text
//! cargo run -p rawgadget-bench --release -- list
//! cargo run -p rawgadget-bench --release -- run usbtest-dummy
//! cargo run -p rawgadget-bench --release -- all
//! ```
//!
//! Phases: host tools (apt-get when root) → kernel packages (apt-get download, dpkg-deb -x, depmod)
//! → linux-source files → raw_gadget.ko → static guest binaries → initramfs → one boot per scenario.
//! Everything downloaded or built is cached in `<repo>/.bench-cache`.
#![deny(unsafe_code)]

mod bins;
mod host;
mod initramfs;
mod kernel;
mod remote;
mod report;
mod vm;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use rawgadget_bench_guest::record::{substrate, Record, RunOutcome, SubstrateState};
use rawgadget_bench_guest::scenario::escape;
use rawgadget_bench_guest::usbtest::MATRIX_CASES;

use crate::host::Phases;
use crate::report::Collected;
use crate::vm::Accel;

#[derive(Parser)]
#[command(
    name = "rawgadget-bench",
    about = "Real-kernel bench: Linux 6.12 in QEMU against our raw gadget"
)]
struct Cli {
    #[command(flatten)]
    opts: Opts,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Opts {
    /// Cache for downloads and builds [default: <repo>/.bench-cache].
    #[arg(long, global = true)]
    cache: Option<PathBuf>,
    /// Accelerator: auto (KVM when it works, else TCG), kvm or tcg.
    #[arg(long, global = true, default_value = "auto")]
    accel: String,
    /// Kernel version to use instead of the newest (e.g. 6.12.117+deb12).
    #[arg(long, global = true)]
    kernel: Option<String>,
    /// usbtest iterations per run on dummy_hcd substrates.
    #[arg(long, global = true, default_value_t = 100)]
    count: u32,
    /// usbtest iterations per run on usbip-vudc substrates (jiffies-bound, contract O4).
    #[arg(long, global = true, default_value_t = 10)]
    vudc_count: u32,
    /// Runs per case (contract P5: at least 5).
    #[arg(long, global = true, default_value_t = 5)]
    runs: u32,
    /// Only these usbtest cases (comma-separated).
    #[arg(long, global = true, value_delimiter = ',')]
    cases: Vec<u32>,
    /// Seconds one usbtest run may take before it counts as hung and its substrate is cut off.
    #[arg(long, global = true, default_value_t = 60)]
    case_timeout: u32,
    /// Only these substrates (a, b, a', b'), where a scenario runs several.
    #[arg(long, global = true, value_delimiter = ',')]
    substrates: Vec<String>,
    /// Extra words for the guest kernel command line (e.g. "loglevel=7").
    #[arg(long, global = true, default_value = "")]
    append: String,
    /// Multiply every scenario's hard timeout.
    #[arg(long, global = true, default_value_t = 1.0)]
    timeout_scale: f64,
    /// Load Debian's dummy_hcd.ko as shipped instead of the one rebuilt from linux-source-6.12 with
    /// the halt-lock fix (docs/bench.md: without it EP0_STALL races dummy_timer and case 10 hangs).
    #[arg(long, global = true)]
    stock_dummy_hcd: bool,
    /// Never run apt-get install; only say what is missing.
    #[arg(long, global = true)]
    no_install: bool,
    /// Do not echo the guest console.
    #[arg(long, global = true)]
    quiet: bool,
    /// Also write the JSON result here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Write docs/bench-results.md (done by `all` unless --no-docs).
    #[arg(long, global = true)]
    write_docs: bool,
    #[arg(long, global = true)]
    no_docs: bool,
    /// Extra arguments for `rawgadget keyboard`, comma-separated (e.g. a start delay).
    #[arg(long, global = true, default_value = "")]
    kb_args: String,
    /// Text the keyboard scenario types.
    #[arg(long, global = true, default_value = "Hello, rawgadget! 123")]
    text: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the scenarios.
    List,
    /// Download and build everything a boot needs, without booting.
    Prepare,
    /// Run one or more scenarios by name.
    Run { scenarios: Vec<String> },
    /// Run every scenario and write docs/bench-results.md.
    All,
    /// Print the table and the comparisons again from saved run directories
    /// (`<cache>/runs/<id>-<scenario>`, each with its results.jsonl), without booting: to read
    /// an older run with the current report, or several runs side by side.
    Report { run_dirs: Vec<PathBuf> },
}

/// A scenario as the runner knows it.
struct Scenario {
    name: &'static str,
    about: &'static str,
    /// Hard timeout at scale 1 (TCG on 2 shared cores).
    timeout_secs: u64,
    in_all: bool,
}

/// usbtest cases the `cuse` scenario runs on (d) unless `--cases` says otherwise.
const CUSE_CASES: &str = "1,2,9,10,13,14";

const SCENARIOS: &[Scenario] = &[
    Scenario { name: "probe", about: "boot and load every module the bench needs; checks UDCs, vhci, raw_gadget.ko", timeout_secs: 120, in_all: false },
    Scenario { name: "usbtest-dummy", about: "usbtest matrix on (a) SourceSink, (b) raw_gadget.ko + our Gadget Zero and (b-C) raw_gadget.ko + the C Gadget Zero on dummy_udc.0, one boot", timeout_secs: 900, in_all: true },
    Scenario { name: "usbtest-vudc-ss", about: "usbtest matrix on (a′) SourceSink on usbip-vudc.0 through vhci-hcd (socketpair)", timeout_secs: 600, in_all: true },
    Scenario { name: "usbtest-vudc-raw", about: "usbtest matrix on (b′) raw_gadget.ko + our Gadget Zero on usbip-vudc.0 through vhci-hcd", timeout_secs: 900, in_all: true },
    Scenario { name: "script-dummy", about: "scripted usbfs host against (a) and (b), compared item by item", timeout_secs: 300, in_all: true },
    Scenario { name: "keyboard", about: "our HID keyboard on raw_gadget.ko: evdev reads the typed text, sysfs shows the declared descriptors", timeout_secs: 300, in_all: true },
    Scenario { name: "cuse", about: "C clients (tests/c) on raw_gadget.ko and `rawgadget serve`: errno script diffed line by line (C12), usbtest on (d) the C Gadget Zero via CUSE, ioctl latency", timeout_secs: 900, in_all: true },
    Scenario { name: "usbtest-usbip", about: "usbtest matrix on (c) our engine attached to vhci-hcd by `rawgadget zero --usbip-attach`; must pass every case (b′) passes", timeout_secs: 900, in_all: true },
    Scenario { name: "script-usbip", about: "scripted usbfs host against (c) our engine via vhci and (b′) raw_gadget.ko on usbip-vudc, item by item; only differences the contract explains", timeout_secs: 300, in_all: true },
    Scenario { name: "keyboard-usbip", about: "our HID keyboard on (c) via vhci (`--usbip-attach`) at high, low, full and SuperSpeed: evdev reads the typed text, sysfs shows the speed and the declared descriptors", timeout_secs: 240, in_all: true },
    Scenario { name: remote::SCENARIO, about: "our keyboard exported over TCP from the host, imported in the guest by the stock `usbip attach` over QEMU's user network", timeout_secs: 240, in_all: true },
];

fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or(here)
}

/// What every boot needs.
struct Prepared {
    kernel: kernel::Kernel,
    initrd: PathBuf,
    /// Our CLI as built for the guest (static, so the host runs it too: `usbip-remote`).
    cli: Option<PathBuf>,
    cli_missing: String,
    has_cli: bool,
    /// `rawgadget keyboard` flags the bench passes when the CLI has them.
    keyboard_flags: Vec<String>,
    source_version: String,
    /// dummy_hcd.ko is the rebuilt one with the halt-lock fix, not Debian's.
    dummy_hcd_fixed: bool,
}

fn prepare(cache: &Path, opts: &Opts, phases: &mut Phases) -> Result<Prepared> {
    let repo = repo_root();
    phases.time("host tools", || host::ensure_tools(!opts.no_install))?;
    let version = phases.time("choose kernel", || {
        kernel::choose_version(cache, opts.kernel.as_deref())
    })?;
    eprintln!(
        "bench: kernel {} ({})",
        version.release(),
        version.image_pkg()
    );
    let k = phases.time("kernel packages (download, unpack, depmod)", || {
        kernel::prepare(cache, &version)
    })?;
    let src = phases.time("linux-source files", || kernel::extract_sources(cache))?;
    let source_version = src
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ko = phases.time("raw_gadget.ko build", || {
        kernel::build_raw_gadget(cache, &k, &src)
    })?;
    let dummy_hcd = if opts.stock_dummy_hcd {
        None
    } else {
        Some(phases.time("dummy_hcd.ko build (halt-lock fix)", || {
            kernel::build_dummy_hcd(cache, &k, &src)
        })?)
    };
    let (mut bins, cli_missing) = phases.time("guest binaries (cargo, static)", || {
        bins::build(&repo, cache)
    })?;
    if !cli_missing.is_empty() {
        eprintln!(
            "bench: {cli_missing}; substrates driven by our Gadget Zero will show as not run"
        );
    }
    let has_cli = bins.cli.is_some() && cli_missing.is_empty();
    let keyboard_flags = bins
        .cli
        .as_deref()
        .map(bins::keyboard_flags)
        .unwrap_or_default();
    // The C clients are needed by `cuse` only: a failed build is reported, not fatal.
    match phases.time("C test clients (gcc, static)", || {
        bins::build_c_clients(&repo, cache, &src.join("include/uapi"))
    }) {
        Ok(c) => bins.c_clients = c,
        Err(e) => eprintln!("bench: the C test clients did not build: {e:#}"),
    }
    let initrd = phases.time("initramfs", || {
        initramfs::build(cache, &k, &ko, dummy_hcd.as_deref(), &bins)
    })?;
    Ok(Prepared {
        kernel: k,
        initrd,
        cli: bins.cli.clone(),
        cli_missing,
        has_cli,
        keyboard_flags,
        source_version,
        dummy_hcd_fixed: dummy_hcd.is_some(),
    })
}

/// The accelerator to use: a cached verdict on KVM, else KVM when /dev/kvm opens.
fn initial_accel(cache: &Path, opts: &Opts) -> Result<Accel> {
    match opts.accel.as_str() {
        "kvm" => Ok(Accel::Kvm),
        "tcg" => Ok(Accel::Tcg),
        "auto" => {
            let known_bad = fs::read_to_string(cache.join("kvm-broken")).is_ok();
            Ok(if vm::kvm_usable() && !known_bad {
                Accel::Kvm
            } else {
                Accel::Tcg
            })
        }
        other => bail!("--accel must be auto, kvm or tcg, not {other:?}"),
    }
}

/// One boot of a scenario.
#[derive(serde::Serialize)]
struct Boot {
    /// What this boot ran when it resumed after a failed substrate (empty for the first boot).
    resumed: String,
    status: i32,
    detail: String,
    boot_secs: Option<f64>,
    total_secs: f64,
    timed_out: bool,
    console_log: PathBuf,
}

/// The result of a scenario: its first boot and any resumed boots.
#[derive(serde::Serialize)]
struct ScenarioRun {
    scenario: String,
    accel: Accel,
    /// The first non-zero status of its boots, or 0.
    status: i32,
    detail: String,
    boots: Vec<Boot>,
    run_dir: PathBuf,
    #[serde(skip)]
    records: Vec<Record>,
}

impl ScenarioRun {
    fn total_secs(&self) -> f64 {
        self.boots.iter().map(|b| b.total_secs).sum()
    }
}

/// The `rawgadget keyboard` flags every keyboard scenario passes: those the CLI offers
/// (`--wait-for-led`) and `--kb-args`.
fn keyboard_args(opts: &Opts, prep: &Prepared) -> Vec<String> {
    let mut args = prep.keyboard_flags.clone();
    args.extend(
        opts.kb_args
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_string),
    );
    args
}

fn cmdline(s: &Scenario, opts: &Opts, prep: &Prepared) -> String {
    let mut c = format!(
        "console=ttyS0 quiet loglevel=4 panic=-1 rgbench.scenario={} rgbench.count={} rgbench.vcount={} rgbench.runs={} rgbench.text={}",
        s.name,
        opts.count,
        opts.vudc_count,
        opts.runs.max(1),
        escape(&opts.text)
    );
    c.push_str(&format!(" rgbench.case_timeout={}", opts.case_timeout));
    if !opts.substrates.is_empty() {
        c.push_str(&format!(
            " rgbench.substrates={}",
            escape(&opts.substrates.join(","))
        ));
    }
    let kb_args = keyboard_args(opts, prep);
    if !kb_args.is_empty() {
        c.push_str(&format!(" rgbench.kb_args={}", escape(&kb_args.join(","))));
    }
    if !opts.append.is_empty() {
        c.push(' ');
        c.push_str(&opts.append);
    }
    if !opts.cases.is_empty() {
        let cases: Vec<String> = opts.cases.iter().map(u32::to_string).collect();
        c.push_str(&format!(" rgbench.cases={}", cases.join(",")));
    } else if s.name == "cuse" {
        // Issue 6 item 3's subset (the guest caps count at 20 and runs at 3 there).
        c.push_str(&format!(" rgbench.cases={CUSE_CASES}"));
    }
    if prep.has_cli {
        c.push_str(" rgbench.cli=/bin/rawgadget");
    } else {
        c.push_str(&format!(
            " rgbench.cli_missing={}",
            escape(&prep.cli_missing)
        ));
    }
    c
}

/// Boots once with `extra` appended to the scenario's command line; falls back from KVM to TCG.
#[allow(clippy::too_many_arguments)]
fn boot_once(
    s: &Scenario,
    cache: &Path,
    opts: &Opts,
    prep: &Prepared,
    accel: &mut Accel,
    extra: &str,
    run_dir: &Path,
) -> Result<(Boot, Vec<Record>)> {
    let timeout = Duration::from_secs_f64(s.timeout_secs as f64 * opts.timeout_scale.max(0.1));
    let mut line = format!("{}{extra}", cmdline(s, opts, prep));
    // usbip-remote: the device is exported from this side for the length of the boot.
    let _export = if s.name == remote::SCENARIO {
        match host_export(opts, prep, run_dir) {
            Ok(e) => {
                line.push_str(&e.cmdline());
                Some(e)
            }
            Err(e) => {
                eprintln!("bench: {e:#}");
                line.push_str(&format!(
                    " rgbench.usbip_missing={}",
                    escape(&format!("{e:#}"))
                ));
                None
            }
        }
    } else {
        None
    };
    let vmlinuz = prep.kernel.vmlinuz();
    let mut early_crashes = 0;
    loop {
        eprintln!(
            "bench: booting {} under {} (timeout {:?}){extra}",
            s.name,
            accel.label(),
            timeout
        );
        let spec = vm::BootSpec {
            qemu: "qemu-system-x86_64",
            kernel: &vmlinuz,
            initrd: &prep.initrd,
            cmdline: line.clone(),
            accel: *accel,
            timeout,
            run_dir,
            tag: s.name,
            stream: !opts.quiet,
            net: remote::needs_net(s.name),
        };
        let out = vm::boot(&spec)?;
        if out.never_started && *accel == Accel::Kvm && opts.accel == "auto" {
            // real-kernel-bench.md: /dev/kvm exists on these machines but QEMU dies with this guest.
            eprintln!("bench: KVM did not work for this guest (QEMU exited before /init); falling back to TCG");
            fs::write(
                cache.join("kvm-broken"),
                "QEMU exited before /init under -accel kvm -cpu host\n",
            )?;
            *accel = Accel::Tcg;
            continue;
        }
        if out.boot_secs.is_none() && !out.timed_out && early_crashes < MAX_EARLY_CRASHES {
            // Seen under TCG with -smp 2: the kernel dies before /init ("Oops: int3" while
            // patching its own text). Nothing of the scenario ran yet, so boot again.
            early_crashes += 1;
            eprintln!(
                "bench: the guest kernel died before /init (see {}); booting again ({early_crashes}/{MAX_EARLY_CRASHES})",
                out.console_log.display()
            );
            let _ = fs::rename(
                &out.console_log,
                run_dir.join(format!("console-early-crash{early_crashes}.log")),
            );
            continue;
        }
        let records = report::parse_records(&out.results);
        let end = records.iter().rev().find_map(|r| match r {
            Record::End { status, detail } => Some((*status, detail.clone())),
            _ => None,
        });
        let (status, detail) = match end {
            Some(e) => e,
            None if out.timed_out => (124, format!("hard timeout after {timeout:?}")),
            None => (
                3,
                format!(
                    "the guest ended without a result; see {}",
                    out.console_log.display()
                ),
            ),
        };
        let boot = Boot {
            resumed: extra.trim().to_string(),
            status,
            detail,
            boot_secs: out.boot_secs,
            total_secs: out.total_secs,
            timed_out: out.timed_out,
            console_log: out.console_log,
        };
        return Ok((boot, records));
    }
}

/// Starts our keyboard exported over TCP on the host for `usbip-remote`, with the flags the
/// keyboard scenarios use.
fn host_export(opts: &Opts, prep: &Prepared, run_dir: &Path) -> Result<remote::HostExport> {
    let cli = match &prep.cli {
        Some(cli) if prep.has_cli => cli,
        _ => bail!("our rawgadget CLI is not available: {}", prep.cli_missing),
    };
    let flags = keyboard_args(opts, prep);
    remote::HostExport::start(cli, &opts.text, &flags, &run_dir.join("export.log"))
}

/// A substrate to finish in another boot.
struct Unfinished {
    substrate: String,
    /// Cases still to run, in order.
    left: Vec<u32>,
    /// The case that failed and is run again.
    retry: Option<u32>,
}

/// Errors that mean the substrate went away under the case (a hang cut off by the watchdog, a
/// device dropped by vhci) rather than a verdict of the case itself: worth one retry in a fresh boot.
const RETRYABLE: &[&str] = &["timeout", "ENODEV", "ENOENT", "ESHUTDOWN", "EPROTO"];

/// Substrates that failed part-way (some cases reported, then the substrate failed), with the
/// requested cases still to run: from the first case that ended in a [`RETRYABLE`] error (run again,
/// once) or else from the first case not reached.
fn unfinished(records: &[Record], requested: &[u32], retried: &[(String, u32)]) -> Vec<Unfinished> {
    let mut out: Vec<Unfinished> = Vec::new();
    for r in records {
        let Record::Substrate {
            substrate,
            state: SubstrateState::Failed,
            ..
        } = r
        else {
            continue;
        };
        // the null-device floor is a reference, measured in (c)'s boot only: never resumed
        if out.iter().any(|u| &u.substrate == substrate) || substrate == substrate::N {
            continue;
        }
        let mut done: Vec<u32> = Vec::new();
        let mut first_gone: Option<u32> = None;
        for r in records {
            if let Record::Usbtest {
                substrate: s,
                params,
                runs,
                ..
            } = r
            {
                if s != substrate {
                    continue;
                }
                done.push(params.case);
                if let Some(RunOutcome::Error(e)) = runs.last() {
                    if first_gone.is_none() && RETRYABLE.contains(&e.as_str()) {
                        first_gone = Some(params.case);
                    }
                }
            }
        }
        if done.is_empty() {
            continue;
        }
        // Everything from the first case the device was lost in is a consequence of the loss.
        let (retry, left): (Option<u32>, Vec<u32>) = match first_gone {
            Some(case) if !retried.contains(&(substrate.clone(), case)) => {
                let from = done.iter().position(|c| *c == case).unwrap_or(0);
                let mut left: Vec<u32> = done[from..].to_vec();
                left.extend(requested.iter().copied().filter(|c| !done.contains(c)));
                (Some(case), left)
            }
            Some(case) => {
                let from = done
                    .iter()
                    .position(|c| *c == case)
                    .map_or(done.len(), |i| i + 1);
                let mut left: Vec<u32> = done[from..].to_vec();
                left.extend(requested.iter().copied().filter(|c| !done.contains(c)));
                (None, left)
            }
            None => (
                None,
                requested
                    .iter()
                    .copied()
                    .filter(|c| !done.contains(c))
                    .collect(),
            ),
        };
        if !left.is_empty() {
            out.push(Unfinished {
                substrate: substrate.clone(),
                left,
                retry,
            });
        }
    }
    out
}

/// Substrates measured side by side in one boot with their runs interleaved (issue 4 compares
/// them): resuming one without the other would time them in different boots under different host
/// load, which is what decided the verdicts before they were paired.
const PAIRED: [&str; 2] = [substrate::B, substrate::B_C];

/// The substrates of one resume boot: `first` alone, or `first` with its partner of [`PAIRED`] when
/// the partner ran in this scenario, both on the union of their remaining cases in the order they
/// were requested. The partner's own pending entry, if any, is taken out of `pending`.
fn resume_group(
    first: Unfinished,
    pending: &mut std::collections::VecDeque<Unfinished>,
    records: &[Record],
    requested: &[u32],
) -> Vec<Unfinished> {
    let Some(partner) = PAIRED
        .iter()
        .find(|p| PAIRED.contains(&first.substrate.as_str()) && **p != first.substrate)
    else {
        return vec![first];
    };
    let partner_ran = records.iter().any(|r| match r {
        Record::Usbtest { substrate: s, .. } | Record::Substrate { substrate: s, .. } => {
            s == partner
        }
        _ => false,
    });
    if !partner_ran {
        return vec![first];
    }
    let theirs = pending
        .iter()
        .position(|u| u.substrate == *partner)
        .and_then(|i| pending.remove(i));
    let mut cases: Vec<u32> = first.left.clone();
    if let Some(t) = &theirs {
        cases.extend(t.left.iter().copied().filter(|c| !first.left.contains(c)));
    }
    // requested order first, then any case not requested (kept as it came)
    let rank = |c: &u32| requested.iter().position(|r| r == c).unwrap_or(usize::MAX);
    cases.sort_by_key(rank);
    let retry = theirs.and_then(|t| t.retry);
    vec![
        Unfinished {
            left: cases.clone(),
            ..first
        },
        Unfinished {
            substrate: partner.to_string(),
            left: cases,
            retry,
        },
    ]
}

/// Whether every substrate that reported a failure still has a result for every requested case
/// (its matrix was finished in later boots).
fn failed_substrates_complete(records: &[Record], requested: &[u32]) -> bool {
    records.iter().all(|r| match r {
        Record::Substrate { substrate, state: SubstrateState::Failed, .. } => requested.iter().all(|case| {
            records.iter().any(|r| {
                matches!(r, Record::Usbtest { substrate: s, params, .. } if s == substrate && params.case == *case)
            })
        }),
        _ => true,
    })
}

/// Boots that die before `/init` are retried this many times.
const MAX_EARLY_CRASHES: usize = 2;

/// Most boots one scenario may add to finish substrates that failed part-way.
const MAX_RESUMES: usize = 4;

/// Most boots one substrate may add.
const MAX_RESUMES_PER_SUBSTRATE: usize = 2;

fn run_one(
    s: &Scenario,
    cache: &Path,
    opts: &Opts,
    prep: &Prepared,
    accel: &mut Accel,
) -> Result<ScenarioRun> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let run_dir = cache.join("runs").join(format!("{stamp}-{}", s.name));
    let (first, mut records) = boot_once(s, cache, opts, prep, accel, "", &run_dir)?;
    let mut boots = vec![first];
    let requested: Vec<u32> = if opts.cases.is_empty() {
        MATRIX_CASES.to_vec()
    } else {
        opts.cases.clone()
    };
    // A hang or a dropped device ends a substrate's matrix in that boot (the boot may even be
    // unusable, contract O3); finish its remaining cases in fresh boots so the table is complete.
    let mut retried: Vec<(String, u32)> = Vec::new();
    let pending = if s.name.starts_with("usbtest") {
        unfinished(&records, &requested, &retried)
    } else {
        Vec::new()
    };
    let mut pending: std::collections::VecDeque<Unfinished> = pending.into();
    let mut n = 0;
    let mut per_substrate: Vec<String> = Vec::new();
    let mut gave_up: Vec<Unfinished> = Vec::new();
    // First in, first out, so that every substrate gets its turn.
    while let Some(first) = pending.pop_front() {
        let group = resume_group(first, &mut pending, &records, &requested);
        if n == MAX_RESUMES {
            pending.extend(group);
            break;
        }
        if group.iter().any(|u| {
            per_substrate.iter().filter(|x| **x == u.substrate).count() == MAX_RESUMES_PER_SUBSTRATE
        }) {
            gave_up.extend(group);
            continue;
        }
        n += 1;
        let left = group[0].left.clone();
        let subs: Vec<String> = group.iter().map(|u| u.substrate.clone()).collect();
        for u in &group {
            per_substrate.push(u.substrate.clone());
            if let Some(case) = u.retry {
                retried.push((u.substrate.clone(), case));
            }
        }
        let cases: Vec<String> = left.iter().map(u32::to_string).collect();
        let extra = format!(
            " rgbench.substrates={} rgbench.cases={}",
            escape(&subs.join(",")),
            cases.join(",")
        );
        let beside = match subs.get(1) {
            Some(partner) => format!(", with ({partner}) measured beside it again"),
            None => String::new(),
        };
        eprintln!(
            "bench: ({}) stopped part-way; resuming cases {} in a new boot{beside}",
            subs[0],
            cases.join(",")
        );
        let dir = run_dir.join(format!("resume{n}"));
        let (boot, more) = boot_once(s, cache, opts, prep, accel, &extra, &dir)?;
        boots.push(boot);
        pending.extend(unfinished(&more, &left, &retried));
        records.extend(more);
    }
    // A substrate that lost its device part-way and was finished in later boots passes when the
    // last boot passed and nothing was left over; the table still shows the retried cases.
    pending.extend(gave_up);
    let finished = pending.is_empty()
        && boots.last().is_some_and(|b| b.status == 0)
        && failed_substrates_complete(&records, &requested);
    let (status, detail) = if finished {
        let detail = if boots.len() > 1 {
            format!(
                "pass, finished in {} boots after a lost device",
                boots.len()
            )
        } else {
            "pass".to_string()
        };
        (0, detail)
    } else {
        boots
            .iter()
            .find(|b| b.status != 0)
            .map(|b| (b.status, b.detail.clone()))
            .unwrap_or((0, "pass".into()))
    };
    Ok(ScenarioRun {
        scenario: s.name.to_string(),
        accel: *accel,
        status,
        detail,
        boots,
        run_dir,
        records,
    })
}

/// Issue 5's floor ratios and the throughput table (printed, not gated).
fn floor_and_throughput(c: &Collected) -> String {
    let mut s = String::new();
    let has = |x: &str| c.cells.keys().any(|(sub, _)| sub == x);
    if has(substrate::C) && has(substrate::N) {
        let (t, within) = report::floor_comparison(c);
        s.push_str(&format!(
            "\n### (c) against the null-device floor (n), same boot: {} (target ≤ {:.0}×, not gated)\n\n{t}",
            if within { "within the target everywhere" } else { "ABOVE the target on some case" },
            report::FLOOR_TARGET
        ));
    }
    if let Some(t) = report::throughput_table(c) {
        s.push_str(&format!(
            "\n### Throughput (usbfs in the guest; median (min–max) of the runs; {})\n\n{t}",
            rawgadget_bench_guest::throughput::DESCRIPTION
        ));
        for line in report::throughput_targets(c) {
            s.push_str(&format!("- {line}\n"));
        }
    }
    if let Some(t) = report::gadget_profile_table(c, report::ProfileSet::RawGadgetPair) {
        s.push_str(&format!("\n### (b) and (b-C) per usbtest iteration (gzprof: /proc over the timed runs, ioctls of one strace'd run)\n\n{t}"));
    }
    if let Some(t) = report::gadget_profile_table(c, report::ProfileSet::UsbipDaemons) {
        s.push_str(&format!("\n### (c) and (n) per usbtest iteration (gzprof: /proc over the timed runs, system calls of one strace'd run)\n\n{t}"));
    }
    if let Some((t, verdicts)) = report::usbip_targets(c) {
        let count =
            |want: report::TargetVerdict| verdicts.iter().filter(|(_, v)| *v == want).count();
        s.push_str(&format!(
            "\n### Issue 5 speed targets per case: {} met, {} missed where the null-device floor misses too, {} missed by our own cost ((a), (b) from the usbtest-dummy boot; (c), (n) from usbtest-usbip)\n\n{t}",
            count(report::TargetVerdict::Met),
            count(report::TargetVerdict::MissedFloorToo),
            count(report::TargetVerdict::Missed),
        ));
    }
    s
}

fn print_summary(runs: &[ScenarioRun], c: &Collected) -> (String, bool) {
    let mut md = String::new();
    md.push_str(&report::table(c));
    let mut functional_ok = true;
    let mut sections = String::new();
    for (base, x) in [
        (substrate::A, substrate::B),
        (substrate::A_PRIME, substrate::B_PRIME),
        (substrate::B_PRIME, substrate::C),
        (substrate::A, substrate::C),
    ] {
        let has = |s: &str| c.cells.keys().any(|(sub, _)| sub == s);
        if has(base) && has(x) {
            let (t, matches, fast) = report::comparison(c, base, x);
            // The C reference is raw_gadget.ko on dummy_hcd ((b-C) of this run, or
            // real-kernel-bench.md's figures): a speed target for (b) against (a) only (issue 4).
            // Other pairs run on other hosts (usbip-vudc's jiffies timer, O4; vhci): their
            // ratios are shown beside dummy_hcd's for information, not judged.
            let speed = match (base == substrate::A && x == substrate::B, fast) {
                (true, true) => "no worse than the C reference",
                (true, false) => "SLOWER than the C reference on some case",
                (false, _) => {
                    "shown beside the dummy_hcd C reference, not judged (another host side)"
                }
            };
            sections.push_str(&format!(
                "\n### ({x}) against ({base}): pass/errno {}, speed {speed}\n\n{t}",
                if matches { "matches" } else { "DIFFERS" },
            ));
            // Issue 4 gates (b) against (a); issue 5 gates (c) against (b′): (c) must pass every
            // case (b′) passes. The vudc pair and (c) against (a) are shown for information.
            let gated = (base, x) == (substrate::A, substrate::B)
                || (base, x) == (substrate::B_PRIME, substrate::C);
            if !matches && gated {
                functional_ok = false;
            }
        }
    }
    // Issue 5: (c)'s iso cases must pass; (b′) is no oracle for iso (contract I8).
    if let Some((t, ok)) = report::iso_gate(c, substrate::C) {
        sections.push_str(&format!(
            "\n### ({}) iso cases: {}\n\n{t}",
            substrate::C,
            if ok { "all pass" } else { "FAIL" }
        ));
        functional_ok &= ok;
    }
    if let Some(t) = report::gadget_profile_table(c, report::ProfileSet::UsbipDaemons) {
        sections.push_str(&format!(
            "\n### (c) and its null floor (n) per usbtest iteration: what each USB/IP daemon did (issue 5; /proc over the timed runs, system calls from one strace'd run after them; (c)'s main thread is the Gadget Zero's ep0 loop)\n\n{t}"
        ));
    }
    if let Some(t) = report::gadget_profile_table(c, report::ProfileSet::RawGadgetPair) {
        sections.push_str(&format!(
            "\n### (b) and (b-C) per usbtest iteration: what each Gadget Zero did (issue 4; /proc over the timed runs, raw gadget ioctls from one strace'd run after them)\n\n{t}"
        ));
    }
    sections.push_str(&floor_and_throughput(c));
    // issue 6: serve against the same C program on the module (printed, not gated)
    for x in [substrate::D, rawgadget_bench_guest::cuse::D_SLOW] {
        use rawgadget_bench_guest::cuse::{B_C, FUSE_FLOOR, N_CUSE};
        if let Some(t) = report::cuse_ratios(c, B_C, x, &[N_CUSE, FUSE_FLOOR]) {
            sections.push_str(&t);
        }
    }
    if let Some((n, diffs)) = report::script_diff(c, substrate::A, substrate::B) {
        sections.push_str(&format!(
            "\n### Scripted host, (a) against (b): {n} steps, {} differences\n\n",
            diffs.len()
        ));
        for d in &diffs {
            sections.push_str(&format!(
                "- line {} `{}`: (a) {} / (b) {}\n",
                d.line, d.text, d.left, d.right
            ));
        }
    }
    // Issue 5: (c) against (b′) is gated, (c) against (b) is shown.
    let (scripts, scripts_ok) = report::usbip_script_sections(c);
    sections.push_str(&scripts);
    functional_ok &= scripts_ok;
    if !c.checks.is_empty() {
        sections.push_str("\n### Checks\n\n");
        for (name, pass, detail) in &c.checks {
            sections.push_str(&format!(
                "- {} {name}: {detail}\n",
                if *pass { "PASS" } else { "FAIL" }
            ));
        }
    }
    let not_run: Vec<String> = c
        .substrates
        .iter()
        .filter(|(_, (st, _))| *st != rawgadget_bench_guest::record::SubstrateState::Up)
        .map(|(s, (st, why))| format!("- ({s}) {st:?}: {why}"))
        .collect();
    if !not_run.is_empty() {
        sections.push_str("\n### Substrates that failed or did not run (a failed one may have been finished in later boots)\n\n");
        sections.push_str(&not_run.join("\n"));
        sections.push('\n');
    }
    md.push_str(&sections);
    md.push_str("\n### Boots\n\n| scenario | status | accel | boot to /init (s) | boot total (s) |\n|---|---|---|---|---|\n");
    for r in runs {
        for b in &r.boots {
            let name = if b.resumed.is_empty() {
                r.scenario.clone()
            } else {
                format!(
                    "{} (resumed:{})",
                    r.scenario,
                    b.resumed.replace("rgbench.", " ")
                )
            };
            let status = if b.status == 0 {
                "pass".to_string()
            } else {
                format!("{} ({})", b.status, b.detail)
            };
            let to_init = b
                .boot_secs
                .map(|x| format!("{x:.1}"))
                .unwrap_or_else(|| "—".into());
            md.push_str(&format!(
                "| {name} | {status} | {} | {to_init} | {:.1} |\n",
                r.accel.label(),
                b.total_secs
            ));
        }
    }
    println!("\n{md}");
    (md, functional_ok)
}

/// What a bench invocation gathered.
struct Summary<'a> {
    phases: &'a Phases,
    runs: &'a [ScenarioRun],
    collected: &'a Collected,
    markdown: &'a str,
}

fn write_outputs(
    cache: &Path,
    opts: &Opts,
    prep: &Prepared,
    sum: &Summary<'_>,
    write_docs: bool,
) -> Result<()> {
    let Summary {
        phases,
        runs,
        collected: c,
        markdown: md,
    } = *sum;
    let accel = runs.first().map(|r| r.accel.label()).unwrap_or("none");
    let json = serde_json::json!({
        "date": host::today(),
        "accel": accel,
        "kernel": prep.kernel.version.release(),
        "linux_source": prep.source_version,
        "dummy_hcd": dummy_hcd_line(prep),
        "loadavg": host::loadavg(),
        "count": opts.count, "vudc_count": opts.vudc_count, "runs": opts.runs,
        "phases": phases.entries,
        "scenarios": runs,
        "cells": c.cells.iter().map(|((s, case), cell)| serde_json::json!({
            "substrate": s, "case": case, "result": cell.render(), "verdict": cell.verdict(), "median": cell.median(),
        })).collect::<Vec<_>>(),
        "checks": c.checks,
        "throughput": c.throughput,
        "table_markdown": md,
    });
    let text = serde_json::to_string_pretty(&json)?;
    fs::create_dir_all(cache.join("results"))?;
    fs::write(cache.join("results/last.json"), &text)?;
    if let Some(p) = &opts.json {
        fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
    }
    if write_docs {
        let doc = repo_root().join("docs/bench-results.md");
        let phases_md: String = phases
            .entries
            .iter()
            .map(|(n, s)| format!("| {n} | {s:.1} |\n"))
            .collect();
        let body = format!(
            "# Real-kernel bench: latest results\n\n\
             Written by `cargo run -p rawgadget-bench --release -- all` (see docs/bench.md). Do not edit by hand.\n\n\
             - Date: {date}\n- Accelerator: {accel}\n- Guest kernel: Debian {kernel}; raw_gadget.ko from linux-source-6.12 {src}\n\
             - dummy_hcd.ko: {dummy_hcd}\n\
             - Host load average at the end (1/5/15 min): {load}\n\
             - usbtest: {runs} runs per case ((b) and (b-C): at least 10, paired); {counts}; {scaled}; pattern=1; median (min–max) of usbtest's own duration in seconds, or the errno\n\
             - Case parameters (real-kernel-bench.md): size 1024, sglen 32; cases 3, 4, 7, 8 vary 421; 14 size 256 vary 8; \
             21 size 128 vary 8; 25, 26 size 64; iso cases 15, 16, 22, 23 with usbtest alt=1, size 1024, 8 URBs queued\n\n\
             {md}\n### Phases of this run (seconds)\n\n| phase | s |\n|---|---|\n{phases_md}",
            date = host::today(),
            kernel = prep.kernel.version.release(),
            src = prep.source_version,
            dummy_hcd = dummy_hcd_line(prep),
            load = host::loadavg(),
            runs = opts.runs,
            counts = report::counts_line(c),
            scaled = rawgadget_bench_guest::usbtest::SCALED_CASES,
        );
        fs::write(&doc, body).with_context(|| format!("writing {}", doc.display()))?;
        eprintln!("bench: wrote {}", doc.display());
    }
    Ok(())
}

/// Which dummy_hcd.ko the guest loaded, for the results' header.
fn dummy_hcd_line(prep: &Prepared) -> String {
    if prep.dummy_hcd_fixed {
        format!(
            "rebuilt from linux-source-6.12 {} with the halt-lock fix (docs/bench.md; --stock-dummy-hcd loads Debian's)",
            prep.source_version
        )
    } else {
        "Debian's, as shipped (--stock-dummy-hcd)".to_string()
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let opts = cli.opts;
    let cache = opts
        .cache
        .clone()
        .unwrap_or_else(|| repo_root().join(".bench-cache"));
    fs::create_dir_all(&cache)?;
    let selected: Vec<&Scenario> = match &cli.cmd {
        Cmd::List => {
            for s in SCENARIOS {
                println!(
                    "{:<18} {}{}",
                    s.name,
                    s.about,
                    if s.in_all { "" } else { " (not in `all`)" }
                );
            }
            return Ok(());
        }
        Cmd::Report { run_dirs } => {
            if run_dirs.is_empty() {
                bail!("name run directories (under {}/runs)", cache.display());
            }
            let mut collected = Collected {
                stock_dummy_hcd: opts.stock_dummy_hcd,
                ..Default::default()
            };
            for dir in run_dirs {
                let path = dir.join("results.jsonl");
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                collected.add(&report::parse_records(&text));
            }
            print_summary(&[], &collected);
            return Ok(());
        }
        Cmd::Prepare => Vec::new(),
        Cmd::Run { scenarios } => {
            if scenarios.is_empty() {
                bail!("name a scenario (see `list`)");
            }
            scenarios
                .iter()
                .map(|n| {
                    SCENARIOS
                        .iter()
                        .find(|s| s.name == n)
                        .with_context(|| format!("no scenario {n:?}; see `list`"))
                })
                .collect::<Result<_>>()?
        }
        Cmd::All => SCENARIOS.iter().filter(|s| s.in_all).collect(),
    };
    let mut phases = Phases::default();
    let prep = prepare(&cache, &opts, &mut phases)?;
    if selected.is_empty() {
        eprintln!(
            "bench: prepared kernel {} and {}",
            prep.kernel.version.release(),
            prep.initrd.display()
        );
        return Ok(());
    }
    let mut accel = initial_accel(&cache, &opts)?;
    let mut runs = Vec::new();
    let mut collected = Collected {
        stock_dummy_hcd: opts.stock_dummy_hcd,
        ..Default::default()
    };
    for s in &selected {
        let r = phases.time(&format!("boot {}", s.name), || {
            run_one(s, &cache, &opts, &prep, &mut accel)
        })?;
        eprintln!(
            "bench: {} -> status {} ({}) in {:.1} s over {} boot(s)",
            s.name,
            r.status,
            r.detail,
            r.total_secs(),
            r.boots.len()
        );
        collected.add(&r.records);
        fs::write(
            r.run_dir.join("summary.json"),
            serde_json::to_string_pretty(&r)?,
        )?;
        runs.push(r);
    }
    let (md, functional_ok) = print_summary(&runs, &collected);
    let all = matches!(cli.cmd, Cmd::All);
    let sum = Summary {
        phases: &phases,
        runs: &runs,
        collected: &collected,
        markdown: &md,
    };
    write_outputs(
        &cache,
        &opts,
        &prep,
        &sum,
        (all || opts.write_docs) && !opts.no_docs,
    )?;
    let failed: Vec<&ScenarioRun> = runs.iter().filter(|r| r.status != 0).collect();
    for r in &failed {
        eprintln!(
            "bench: {} failed: {} (console: {})",
            r.scenario,
            r.detail,
            r.run_dir.join("console.log").display()
        );
    }
    if !functional_ok {
        eprintln!(
            "bench: (b) does not match (a)'s pass/errno column, or (c) fails a case (b′) passes or an iso case, or the scripted host saw a difference between (b′) and (c) the contract does not explain"
        );
    }
    let code = match (runs.as_slice(), failed.is_empty() && functional_ok) {
        ([only], _) if only.status != 0 => only.status,
        (_, true) => 0,
        _ => 1,
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rawgadget_bench_guest::usbtest::case_params;

    fn ran(sub: &str, case: u32, runs: Vec<RunOutcome>) -> Record {
        Record::Usbtest {
            substrate: sub.into(),
            params: case_params(case, 10),
            alt: -1,
            runs,
        }
    }

    fn failed(sub: &str) -> Record {
        Record::Substrate {
            substrate: sub.into(),
            state: SubstrateState::Failed,
            detail: "gone".into(),
        }
    }

    #[test]
    fn a_dropped_device_is_resumed_with_its_case_retried_once() {
        let records = vec![
            ran("a'", 1, vec![RunOutcome::Pass(0.1)]),
            ran(
                "a'",
                2,
                vec![RunOutcome::Pass(0.1), RunOutcome::Error("ENODEV".into())],
            ),
            failed("a'"),
        ];
        let u = unfinished(&records, &[1, 2, 3, 4], &[]);
        assert_eq!(u.len(), 1);
        assert_eq!((u[0].left.clone(), u[0].retry), (vec![2, 3, 4], Some(2)));
        // Already retried: only the cases not reached.
        let u = unfinished(&records, &[1, 2, 3, 4], &[("a'".into(), 2)]);
        assert_eq!((u[0].left.clone(), u[0].retry), (vec![3, 4], None));
    }

    #[test]
    fn a_paired_substrate_is_resumed_with_its_partner_on_the_union_of_their_cases() {
        let records = vec![
            ran("b", 9, vec![RunOutcome::Pass(0.1)]),
            ran("b", 10, vec![RunOutcome::Error("timeout".into())]),
            failed("b"),
            ran("b-c", 9, vec![RunOutcome::Pass(0.1)]),
            ran("b-c", 10, vec![RunOutcome::Pass(0.1)]),
            ran("b-c", 11, vec![RunOutcome::Error("ENODEV".into())]),
            failed("b-c"),
        ];
        let requested = [9, 10, 11, 12];
        let mut pending: std::collections::VecDeque<Unfinished> =
            unfinished(&records, &requested, &[]).into();
        assert_eq!(pending.len(), 2);
        let first = pending.pop_front().unwrap();
        let group = resume_group(first, &mut pending, &records, &requested);
        assert!(pending.is_empty(), "the partner's own entry is folded in");
        let got: Vec<(&str, Vec<u32>, Option<u32>)> = group
            .iter()
            .map(|u| (u.substrate.as_str(), u.left.clone(), u.retry))
            .collect();
        assert_eq!(
            got,
            vec![
                ("b", vec![10, 11, 12], Some(10)),
                ("b-c", vec![10, 11, 12], Some(11)),
            ]
        );
    }

    #[test]
    fn a_paired_substrate_takes_its_finished_partner_along_but_a_lone_one_runs_alone() {
        let lost = vec![
            ran("b", 9, vec![RunOutcome::Pass(0.1)]),
            ran("b", 10, vec![RunOutcome::Error("timeout".into())]),
            failed("b"),
        ];
        let mut with_partner = lost.clone();
        with_partner.push(ran("b-c", 10, vec![RunOutcome::Pass(0.1)]));
        let first = unfinished(&with_partner, &[9, 10], &[]).remove(0);
        let group = resume_group(first, &mut Default::default(), &with_partner, &[9, 10]);
        let subs: Vec<&str> = group.iter().map(|u| u.substrate.as_str()).collect();
        assert_eq!(subs, ["b", "b-c"]);
        assert_eq!(group[1].retry, None, "the partner lost nothing");
        // (b) run without (b-C) in this scenario: nothing to pair with
        let first = unfinished(&lost, &[9, 10], &[]).remove(0);
        let group = resume_group(first, &mut Default::default(), &lost, &[9, 10]);
        assert_eq!(group.len(), 1);
        // a substrate outside the pair is never grouped
        let other = vec![
            ran("a'", 1, vec![RunOutcome::Error("ENODEV".into())]),
            failed("a'"),
        ];
        let first = unfinished(&other, &[1], &[]).remove(0);
        assert_eq!(
            resume_group(first, &mut Default::default(), &with_partner, &[1]).len(),
            1
        );
    }

    #[test]
    fn a_failed_substrate_counts_as_finished_only_with_every_case() {
        let mut records = vec![
            ran("a'", 1, vec![RunOutcome::Error("ENODEV".into())]),
            failed("a'"),
        ];
        assert!(!failed_substrates_complete(&records, &[1, 2]));
        records.push(ran("a'", 2, vec![RunOutcome::Pass(0.1)]));
        assert!(failed_substrates_complete(&records, &[1, 2]));
        records.push(failed("b"));
        assert!(!failed_substrates_complete(&records, &[1, 2]));
    }

    #[test]
    fn a_verdict_errno_is_not_retried_and_a_substrate_that_never_ran_is_not_resumed() {
        let records = vec![
            ran("b", 1, vec![RunOutcome::Error("EPIPE".into())]),
            failed("b"),
            failed("a"),
        ];
        let u = unfinished(&records, &[1, 2], &[]);
        assert_eq!(u.len(), 1);
        assert_eq!(
            (u[0].substrate.as_str(), u[0].left.clone(), u[0].retry),
            ("b", vec![2], None)
        );
    }
}
