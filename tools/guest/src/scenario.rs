//! What one boot of the bench VM runs. The runner puts `rgbench.scenario=NAME` and the parameters
//! (`rgbench.count=100 rgbench.runs=5 ...`) on the kernel command line; `/init` calls
//! `bench-guest scenario`, which reads them from `/proc/cmdline`, runs the scenario, writes its
//! records to the result channel and returns the exit status the runner passes on.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rawgadget::Speed;

use crate::gadget::{self, GadgetProcess, SourceSink, GZERO_PID, GZERO_VID};
use crate::host;
use crate::record::{substrate, Record, Reporter, RunOutcome, SubstrateState};
use crate::script;
use crate::sysfs::{self, UsbDevice};
use crate::usbfs::Device;
use crate::usbtest::{self, ISO_CASES, MATRIX_CASES};

/// Scenario parameters, from `rgbench.*` words.
#[derive(Debug, Clone)]
pub struct Params {
    pub scenario: String,
    /// usbtest iterations on dummy_hcd substrates.
    pub count: u32,
    /// usbtest iterations on usbip-vudc substrates (O4: jiffies-timer bound, give them less).
    pub vudc_count: u32,
    /// Runs per case (P5: at least 5).
    pub runs: u32,
    /// A usbtest run that takes longer is reported as `timeout` and ends its substrate.
    pub case_timeout: Duration,
    pub cases: Vec<u32>,
    /// Our CLI (`rawgadget`), or empty when the runner could not build it.
    pub gadget_cli: String,
    /// Why the CLI is missing, when it is.
    pub gadget_missing: String,
    /// Text the keyboard scenario types.
    pub text: String,
    /// Substrates to run (all when empty).
    pub substrates: Vec<String>,
    pub extra: BTreeMap<String, String>,
}

impl Params {
    /// Whether substrate `s` was selected.
    pub fn wants(&self, s: &str) -> bool {
        self.substrates.is_empty() || self.substrates.iter().any(|x| x == s)
    }

    /// Parses `rgbench.KEY=VALUE` words; values use `%20` for spaces and `%25` for `%`.
    pub fn from_cmdline(cmdline: &str) -> Result<Params> {
        let mut kv = BTreeMap::new();
        for w in cmdline.split_whitespace() {
            if let Some(rest) = w.strip_prefix("rgbench.") {
                let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
                kv.insert(k.to_string(), unescape(v));
            }
        }
        let num = |k: &str, d: u32| -> Result<u32> {
            kv.get(k)
                .map(|v| v.parse::<u32>().with_context(|| format!("rgbench.{k}={v}")))
                .unwrap_or(Ok(d))
        };
        let cases = match kv.get("cases") {
            Some(v) if !v.is_empty() => v
                .split(',')
                .map(|c| {
                    c.parse::<u32>()
                        .with_context(|| format!("rgbench.cases: {c:?}"))
                })
                .collect::<Result<Vec<u32>>>()?,
            _ => MATRIX_CASES.to_vec(),
        };
        Ok(Params {
            scenario: kv
                .get("scenario")
                .cloned()
                .ok_or_else(|| anyhow!("no rgbench.scenario= on the command line"))?,
            count: num("count", 100)?,
            vudc_count: num("vcount", 10)?,
            runs: num("runs", 5)?.max(1),
            case_timeout: Duration::from_secs(num("case_timeout", 60)?.max(1) as u64),
            cases,
            gadget_cli: kv.get("cli").cloned().unwrap_or_default(),
            gadget_missing: kv.get("cli_missing").cloned().unwrap_or_default(),
            text: kv
                .get("text")
                .cloned()
                .unwrap_or_else(|| "Hello, rawgadget!".into()),
            substrates: kv
                .get("substrates")
                .map(|v| {
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            extra: kv,
        })
    }
}

/// Inverse of [`escape`].
pub fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let Some(x) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes a value for the kernel command line: every byte that is not printable ASCII, and `%`
/// and `"`, becomes `%XX`.
pub fn escape(v: &str) -> String {
    let mut out = String::new();
    for &byte in v.as_bytes() {
        if byte.is_ascii_graphic() && byte != b'%' && byte != b'"' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Scenario names the guest knows, with what they do.
pub const SCENARIOS: &[(&str, &str)] = &[
    ("probe", "boot, load every module the bench needs, check UDCs, vhci and raw_gadget.ko appear"),
    ("usbtest-dummy", "usbtest matrix on (a) SourceSink and (b) raw_gadget.ko + our Gadget Zero, dummy_udc.0, one boot"),
    ("usbtest-vudc-ss", "usbtest matrix on (a') SourceSink on usbip-vudc.0 through vhci"),
    ("usbtest-vudc-raw", "usbtest matrix on (b') raw_gadget.ko + our Gadget Zero on usbip-vudc.0 through vhci"),
    ("script-dummy", "scripted usbfs host against (a) and (b) on dummy_udc.0, compared item by item"),
    ("keyboard", "our HID keyboard on raw_gadget.ko: evdev sees the typed text, sysfs the declared descriptors"),
    ("usbtest-usbip", "usbtest matrix on (c) our engine attached to vhci-hcd (`rawgadget zero --usbip-attach`)"),
    ("script-usbip", "scripted usbfs host against (c) our engine via vhci and (b') raw_gadget.ko on usbip-vudc, compared item by item"),
    ("keyboard-usbip", "our HID keyboard on (c) via vhci (`--usbip-attach`) at high, low, full and SuperSpeed: evdev sees the typed text, sysfs the speed and the declared descriptors"),
    ("usbip-remote", "the stock `usbip attach` imports a keyboard the runner exports from outside the guest (QEMU user net)"),
    ("cuse", "C clients on raw_gadget.ko and on `rawgadget serve`: errno script diffed, usbtest on (d), ioctl latency"),
];

/// Runs the scenario and returns its exit status (0 pass).
pub fn run(p: &Params, rep: &Reporter) -> i32 {
    let kernel =
        crate::sysfs::read_trimmed(Path::new("/proc/sys/kernel/osrelease")).unwrap_or_default();
    rep.emit(&Record::Start {
        scenario: p.scenario.clone(),
        kernel,
        params: serde_json::json!({
            "count": p.count, "vudc_count": p.vudc_count, "runs": p.runs, "cases": p.cases,
            "cli": p.gadget_cli,
        }),
    });
    let r = match p.scenario.as_str() {
        "probe" => probe(p, rep),
        "usbtest-dummy" => usbtest_dummy(p, rep),
        "usbtest-vudc-ss" => usbtest_vudc(p, rep, false),
        "usbtest-vudc-raw" => usbtest_vudc(p, rep, true),
        "usbtest-usbip" => usbtest_usbip(p, rep),
        "script-dummy" => script_dummy(p, rep),
        "keyboard" => keyboard(p, rep),
        "keyboard-usbip" => keyboard_usbip(p, rep),
        "script-usbip" => crate::usbip_proof::script_usbip(p, rep),
        "usbip-remote" => crate::usbip_proof::usbip_remote(p, rep),
        "cuse" => crate::cuse::cuse(p, rep),
        other => Err(anyhow!("unknown scenario {other:?}")),
    };
    let (status, detail) = match r {
        Ok(0) => (0, "pass".to_string()),
        Ok(n) => (n, "some checks failed".to_string()),
        Err(e) => (2, format!("{e:#}")),
    };
    rep.emit(&Record::End { status, detail });
    status
}

pub(crate) fn note(rep: &Reporter, text: impl Into<String>) {
    let text = text.into();
    println!("bench-guest: {text}");
    rep.emit(&Record::Note { text });
}

pub(crate) fn check(rep: &Reporter, name: &str, pass: bool, detail: impl Into<String>) -> bool {
    let detail = detail.into();
    println!(
        "bench-guest: check {name}: {} {detail}",
        if pass { "PASS" } else { "FAIL" }
    );
    rep.emit(&Record::Check {
        name: name.into(),
        pass,
        detail,
    });
    pass
}

pub(crate) fn substrate_state(
    rep: &Reporter,
    s: &str,
    state: SubstrateState,
    detail: impl Into<String>,
) {
    let detail = detail.into();
    println!("bench-guest: substrate {s}: {state:?} {detail}");
    rep.emit(&Record::Substrate {
        substrate: s.into(),
        state,
        detail,
    });
}

fn probe(_p: &Params, rep: &Reporter) -> Result<i32> {
    /// A module and its parameters.
    type Module = (&'static str, &'static [&'static str]);
    // (check name, modules loaded in order, path that must then appear)
    const STEPS: &[(&str, &[Module], Option<&str>)] = &[
        (
            "dummy_hcd",
            &[("dummy_hcd", &[])],
            Some("/sys/class/udc/dummy_udc.0"),
        ),
        (
            "raw_gadget.ko",
            &[("raw_gadget", &[])],
            Some("/dev/raw-gadget"),
        ),
        ("usbtest", &[("usbtest", &["pattern=1"])], None),
        ("SourceSink", &[("usb_f_ss_lb", &[])], None),
        (
            "vhci-hcd",
            &[("vhci-hcd", &[])],
            Some("/sys/devices/platform/vhci_hcd.0/attach"),
        ),
        (
            "usbip-vudc",
            &[("usbip-vudc", &[])],
            Some("/sys/devices/platform/usbip-vudc.0/usbip_sockfd"),
        ),
        ("usbhid+evdev", &[("usbhid", &[]), ("evdev", &[])], None),
    ];
    let mut failed = 0;
    for &(name, modules, path) in STEPS {
        let r = modules
            .iter()
            .try_for_each(|&(module, args)| gadget::modprobe(module, args))
            .and_then(|()| match path {
                Some(p) => gadget::wait_path(Path::new(p), Duration::from_secs(10)),
                None => Ok(()),
            });
        let ok = r.is_ok();
        check(
            rep,
            name,
            ok,
            r.err().map(|e| format!("{e:#}")).unwrap_or_default(),
        );
        if !ok {
            failed += 1;
        }
    }
    Ok(failed)
}

/// What to do when a usbtest case hangs: cut the device off (kill the gadget process, unbind the
/// UDC) so the kernel fails the stuck URBs and usbtest returns. Returns what it did.
pub type OnHang<'a> = &'a mut dyn FnMut() -> String;

/// Errors after which the device is gone (or going): the substrate's matrix stops there.
const DEVICE_LOST: &[&str] = &["ENODEV", "ENOENT", "ESHUTDOWN"];

/// One usbtest ioctl in its own thread, so that a hang (usbtest waits without a timeout in some
/// cases, e.g. 10) can be noticed. `Err(rx)` when it did not return in time.
pub(crate) fn run_case_watched(
    devnode: &Path,
    params: usbtest::CaseParams,
    timeout: Duration,
) -> std::result::Result<
    std::result::Result<Duration, String>,
    std::sync::mpsc::Receiver<std::result::Result<Duration, String>>,
> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = devnode.to_path_buf();
    std::thread::spawn(move || {
        let r = Device::open(&path)
            .map_err(|e| {
                host::errno_name(rawgadget_uapi::Errno::from_raw(
                    e.raw_os_error().unwrap_or(libc::EIO),
                ))
            })
            .and_then(|d| usbtest::run_case(&d, 0, params).map_err(host::errno_name));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => Ok(r),
        Err(_) => Err(rx),
    }
}

/// One substrate's usbtest settings.
#[derive(Clone, Copy)]
pub(crate) struct Matrix<'a> {
    pub rep: &'a Reporter,
    pub sub: &'a str,
    pub count: u32,
    pub runs: u32,
    pub case_timeout: Duration,
}

impl<'a> Matrix<'a> {
    /// The scenario's count, runs and case timeout, reported under `sub`.
    pub(crate) fn of(p: &Params, rep: &'a Reporter, sub: &'a str) -> Matrix<'a> {
        Matrix {
            rep,
            sub,
            count: p.count,
            runs: p.runs,
            case_timeout: p.case_timeout,
        }
    }
}

/// Runs every case of `cases` `runs` times on the usbtest-bound device and reports each case.
/// A run that takes longer than `case_timeout` is reported as `timeout`, the device is cut off with
/// `on_hang`, and the substrate's matrix ends there.
pub(crate) fn usbtest_matrix(
    m: &Matrix<'_>,
    dev: &UsbDevice,
    cases: &[u32],
    alt: i32,
    on_hang: OnHang<'_>,
) -> Result<Vec<(u32, bool)>> {
    let Matrix {
        rep,
        sub,
        count,
        runs,
        case_timeout,
    } = *m;
    let devnode = dev.devnode();
    let mut passed = Vec::new();
    for &case in cases {
        let params = usbtest::case_params(case, count);
        let mut outcomes = Vec::new();
        let mut hung = None;
        let mut lost = false;
        for _ in 0..runs {
            match run_case_watched(&devnode, params, case_timeout) {
                Ok(Ok(d)) => outcomes.push(RunOutcome::Pass(d.as_secs_f64())),
                Ok(Err(e)) => {
                    lost = DEVICE_LOST.contains(&e.as_str());
                    outcomes.push(RunOutcome::Error(e));
                    // A failing case fails the same way again; do not spend the time budget on it.
                    break;
                }
                Err(rx) => {
                    outcomes.push(RunOutcome::Error("timeout".into()));
                    hung = Some(rx);
                    break;
                }
            }
        }
        passed.push((
            case,
            outcomes.iter().all(|o| matches!(o, RunOutcome::Pass(_))),
        ));
        println!(
            "bench-guest: {sub} case {case:2} {:<22} {}",
            usbtest::case_name(case),
            summary(&outcomes)
        );
        rep.emit(&Record::Usbtest {
            substrate: sub.into(),
            params,
            alt,
            runs: outcomes,
        });
        if let Some(rx) = hung {
            print_dmesg_tail(40);
            let action = on_hang();
            let after = match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(r) => format!("the ioctl then returned {r:?}"),
                Err(_) => "the ioctl is still stuck 30 s later".to_string(),
            };
            bail!("case {case} hung for more than {case_timeout:?}; {action}; {after}");
        }
        if lost || !dev.present() {
            bail!("device lost during case {case}");
        }
    }
    Ok(passed)
}

/// The kernel log's last lines on the console (usbtest and raw_gadget explain hangs there).
fn print_dmesg_tail(lines: usize) {
    if let Ok(out) = std::process::Command::new("dmesg").output() {
        let text = String::from_utf8_lossy(&out.stdout);
        let all: Vec<&str> = text.lines().collect();
        for l in &all[all.len().saturating_sub(lines)..] {
            println!("dmesg: {l}");
        }
    }
}

fn summary(o: &[RunOutcome]) -> String {
    o.iter()
        .map(|r| match r {
            RunOutcome::Pass(s) => format!("{s:.3}"),
            RunOutcome::Error(e) => e.clone(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The iso cases with usbtest `alt=1` (T9), when altsetting 1 has iso endpoints; otherwise each is
/// reported as `no-iso`.
fn usbtest_iso(m: &Matrix<'_>, on_hang: OnHang<'_>) -> Result<()> {
    usbtest_iso_cases(m, ISO_CASES, on_hang)
}

/// [`usbtest_iso`] for some of the iso cases.
fn usbtest_iso_cases(m: &Matrix<'_>, cases: &[u32], on_hang: OnHang<'_>) -> Result<()> {
    let dev = sysfs::wait_for(GZERO_VID, GZERO_PID, 0, Some("usbtest"), ENUM_TIMEOUT)?;
    let descs = dev.descriptors()?;
    if !sysfs::has_iso_endpoint(descs.get(18..).unwrap_or(&[]), 0, 1) {
        for &case in cases {
            let params = usbtest::case_params(case, m.count);
            m.rep.emit(&Record::Usbtest {
                substrate: m.sub.into(),
                params,
                alt: 1,
                runs: vec![RunOutcome::Error("no-iso".into())],
            });
        }
        note(
            m.rep,
            format!(
                "{}: altsetting 1 has no iso endpoints; iso cases not applicable",
                m.sub
            ),
        );
        return Ok(());
    }
    gadget::rmmod("usbtest")?;
    gadget::modprobe("usbtest", &["pattern=1", "alt=1"])?;
    let dev = sysfs::wait_for(GZERO_VID, GZERO_PID, 0, Some("usbtest"), ENUM_TIMEOUT)?;
    let r = usbtest_matrix(m, &dev, cases, 1, on_hang);
    gadget::rmmod("usbtest")?;
    gadget::modprobe("usbtest", &["pattern=1"])?;
    r.map(drop)
}

/// Kills the gadget process `pid` (SIGKILL): raw_gadget.ko then unregisters and the UDC
/// disconnects, which fails the URBs a hung usbtest waits for.
pub(crate) fn kill_gadget(pid: u32) -> impl FnMut() -> String {
    move || {
        gadget::signal(pid, libc::SIGKILL);
        format!("killed the gadget process {pid}")
    }
}

/// Unbinds the configfs gadget from its UDC, for the same purpose.
fn unbind_udc() -> impl FnMut() -> String {
    || match std::fs::write(gadget::SOURCESINK_UDC, "\n") {
        Ok(()) => "unbound SourceSink from its UDC".to_string(),
        Err(e) => format!("unbinding SourceSink failed: {e}"),
    }
}

pub(crate) fn cli_args(kind: &str, driver: &str, device: &str) -> Vec<String> {
    vec![
        kind.into(),
        "--driver".into(),
        driver.into(),
        "--device".into(),
        device.into(),
    ]
}

pub(crate) fn start_our_gadget(
    p: &Params,
    rep: &Reporter,
    sub: &str,
    args: Vec<String>,
) -> Option<GadgetProcess> {
    if p.gadget_cli.is_empty() {
        substrate_state(
            rep,
            sub,
            SubstrateState::NotRun,
            format!("our rawgadget CLI is not available: {}", p.gadget_missing),
        );
        return None;
    }
    match GadgetProcess::spawn(&p.gadget_cli, &args) {
        Ok(g) => Some(g),
        Err(e) => {
            substrate_state(rep, sub, SubstrateState::Failed, format!("{e:#}"));
            None
        }
    }
}

pub(crate) const ENUM_TIMEOUT: Duration = Duration::from_secs(30);

fn usbtest_dummy(p: &Params, rep: &Reporter) -> Result<i32> {
    // (b) and (b-C) run side by side on two dummy_udc instances, their runs interleaved, so
    // that a change of the host's load hits both alike (issue 4 compares them; P5).
    let pair = p.wants(substrate::B) && p.wants(substrate::B_C);
    gadget::modprobe("dummy_hcd", if pair { &["num=2"] } else { &[] })?;
    gadget::modprobe("usbtest", &["pattern=1"])?;
    gadget::wait_path(
        Path::new("/sys/class/udc/dummy_udc.0"),
        Duration::from_secs(10),
    )?;
    let mut failed = 0;

    if p.wants(substrate::A) {
        // (a) the in-kernel baseline.
        match SourceSink::bind("dummy_udc.0") {
            Ok(ss) => {
                let m = Matrix::of(p, rep, substrate::A);
                let r = sysfs::wait_for(GZERO_VID, GZERO_PID, 0, Some("usbtest"), ENUM_TIMEOUT)
                    .and_then(|dev| {
                        substrate_state(
                            rep,
                            substrate::A,
                            SubstrateState::Up,
                            format!("{}", dev.sysfs.display()),
                        );
                        usbtest_matrix(&m, &dev, &p.cases, -1, &mut unbind_udc())?;
                        usbtest_iso(&m, &mut unbind_udc())
                    });
                if let Err(e) = r {
                    substrate_state(rep, substrate::A, SubstrateState::Failed, format!("{e:#}"));
                    failed += 1;
                }
                ss.unbind()?;
                sysfs::wait_gone(GZERO_VID, GZERO_PID, Duration::from_secs(10))?;
            }
            Err(e) => {
                substrate_state(rep, substrate::A, SubstrateState::Failed, format!("{e:#}"));
                failed += 1;
            }
        }
    }

    if p.wants(substrate::B) || p.wants(substrate::B_C) {
        gadget::modprobe("raw_gadget", &[])?;
    }
    if pair {
        failed += raw_gadget_pair(p, rep)?;
    } else if p.wants(substrate::B) {
        // (b) raw_gadget.ko driven by our Gadget Zero.
        if let Some(g) = start_our_gadget(
            p,
            rep,
            substrate::B,
            cli_args("zero", "dummy_udc", "dummy_udc.0"),
        ) {
            failed += raw_gadget_matrix(p, rep, substrate::B, g, "our Gadget Zero")?;
        }
    }
    if p.wants(substrate::B_C) && !pair {
        // (b-C) the same module driven by the C Gadget Zero (same request size, 32 KiB): the
        // reference our Rust one must not be slower than (issue 4), measured in this boot.
        match spawn_c_gadget_zero(rep, "dummy_udc.0") {
            Some(g) => failed += raw_gadget_matrix(p, rep, substrate::B_C, g, "the C Gadget Zero")?,
            None => failed += 1,
        }
    }
    crate::throughput::dummy_substrates(p, rep);
    Ok(failed)
}

/// Starts the C Gadget Zero (tests/c) on raw_gadget.ko on `udc`, with 32 KiB requests as
/// ours; a failure to start is recorded as (b-C) failed.
fn spawn_c_gadget_zero(rep: &Reporter, udc: &str) -> Option<GadgetProcess> {
    let args = ["-d", "dummy_udc", "-u", udc, "-r", "32768"].map(String::from);
    match GadgetProcess::spawn(&crate::cuse::client("gadget_zero"), &args) {
        Ok(g) => Some(g),
        Err(e) => {
            let why = format!("{e:#}");
            substrate_state(rep, substrate::B_C, SubstrateState::Failed, why);
            None
        }
    }
}

/// (b) our Gadget Zero on dummy_udc.0 and (b-C) the C one on dummy_udc.1, both enumerated at
/// once, the usbtest matrix run case by case with their runs interleaved (run 1 of (b), run 1
/// of (b-C), run 2 ...): the (b)-against-(b-C) comparison of issue 4 then sees the same host
/// load on both sides. A substrate lost in a case (hang: its process is killed) is marked
/// failed there, and the runner finishes its cases in a new boot. Returns the number of
/// failed substrates.
fn raw_gadget_pair(p: &Params, rep: &Reporter) -> Result<i32> {
    use crate::throughput::interleaved_matrix;
    let mut procs: Vec<(&str, GadgetProcess)> = Vec::new();
    let mut devs: Vec<crate::sysfs::UsbDevice> = Vec::new();
    let mut failed = 0;
    // Started and enumerated one after the other, so that each device is known by its order
    // (both have the same ids).
    if let Some(g) = start_our_gadget(
        p,
        rep,
        substrate::B,
        cli_args("zero", "dummy_udc", "dummy_udc.0"),
    ) {
        procs.push((substrate::B, g));
    }
    let mut up = true;
    if let Some((sub, g)) = procs.last() {
        up = enumerated(rep, sub, g, &mut devs);
    }
    if up {
        match spawn_c_gadget_zero(rep, "dummy_udc.1") {
            Some(g) => {
                up = enumerated(rep, substrate::B_C, &g, &mut devs);
                procs.push((substrate::B_C, g));
            }
            None => up = false,
        }
    }
    if !up {
        failed += 1;
    }
    if up && devs.len() == procs.len() && !procs.is_empty() {
        let subs: Vec<(&str, &crate::sysfs::UsbDevice, u32)> = procs
            .iter()
            .zip(&devs)
            .map(|((s, g), d)| (*s, d, g.pid()))
            .collect();
        let lost = interleaved_matrix(p, rep, &subs);
        for ((sub, g), lost) in procs.iter_mut().zip(lost.iter().copied()) {
            let r = match lost {
                Some(case) => Err(anyhow::anyhow!(
                    "case {case} hung or the device was lost; killed the gadget process {}",
                    g.pid()
                )),
                None => g.check_alive(),
            };
            if let Err(e) = r {
                substrate_state(rep, sub, SubstrateState::Failed, format!("{e:#}"));
                failed += 1;
            }
        }
        // the iso cases: neither Gadget Zero offers iso on dummy_udc (recorded as n/a)
        for ((sub, g), _) in procs.iter().zip(&lost).filter(|(_, l)| l.is_none()) {
            let m = Matrix::of(p, rep, sub);
            if let Err(e) = usbtest_iso(&m, &mut kill_gadget(g.pid())) {
                note(rep, format!("({sub}) iso cases: {e:#}"));
            }
        }
    }
    for (sub, g) in procs {
        let st = g.stop(Duration::from_secs(5))?;
        note(rep, format!("({sub}) Gadget Zero exited: {st}"));
    }
    sysfs::wait_gone(GZERO_VID, GZERO_PID, Duration::from_secs(10))?;
    Ok(failed)
}

/// Waits for the device of `g` (the next Gadget Zero not in `devs`), records the substrate up
/// or failed, and adds the device to `devs`.
fn enumerated(
    rep: &Reporter,
    sub: &str,
    g: &GadgetProcess,
    devs: &mut Vec<crate::sysfs::UsbDevice>,
) -> bool {
    match crate::throughput::wait_new_device(devs) {
        Ok(d) => {
            substrate_state(rep, sub, SubstrateState::Up, g.what.clone());
            devs.push(d);
            true
        }
        Err(e) => {
            substrate_state(rep, sub, SubstrateState::Failed, format!("{e:#}"));
            false
        }
    }
}

/// The usbtest matrix (and iso cases) on a Gadget Zero process `g` bound to raw_gadget.ko on
/// dummy_udc.0; a hung case kills the process. Returns 1 if the substrate failed.
fn raw_gadget_matrix(
    p: &Params,
    rep: &Reporter,
    sub: &str,
    mut g: GadgetProcess,
    who: &str,
) -> Result<i32> {
    let m = Matrix::of(p, rep, sub);
    let pid = g.pid();
    let r =
        sysfs::wait_for(GZERO_VID, GZERO_PID, 0, Some("usbtest"), ENUM_TIMEOUT).and_then(|dev| {
            substrate_state(rep, sub, SubstrateState::Up, g.what.clone());
            usbtest_matrix(&m, &dev, &p.cases, -1, &mut kill_gadget(pid))?;
            g.check_alive()?;
            usbtest_iso(&m, &mut kill_gadget(pid))
        });
    let failed = match r {
        Ok(()) => 0,
        Err(e) => {
            substrate_state(rep, sub, SubstrateState::Failed, format!("{e:#}"));
            1
        }
    };
    let st = g.stop(Duration::from_secs(5))?;
    note(rep, format!("{who} exited: {st}"));
    // The next substrate binds the same UDC: wait for this device to leave.
    sysfs::wait_gone(GZERO_VID, GZERO_PID, Duration::from_secs(10))?;
    Ok(failed)
}

/// usbip-core and vhci-hcd, until vhci's `attach` file is there (contract U17).
pub(crate) fn load_vhci() -> Result<()> {
    gadget::modprobe("usbip-core", &[])?;
    gadget::modprobe("vhci-hcd", &[])?;
    gadget::wait_path(
        Path::new("/sys/devices/platform/vhci_hcd.0/attach"),
        Duration::from_secs(10),
    )
}

pub(crate) fn load_vudc() -> Result<()> {
    load_vhci()?;
    gadget::modprobe("usbip-vudc", &[])?;
    gadget::wait_path(
        Path::new("/sys/devices/platform/usbip-vudc.0"),
        Duration::from_secs(10),
    )
}

/// (a′) or (b′): one substrate per boot, never detached (O3).
/// (c): our engine behind vhci-hcd, attached by the CLI itself (`--usbip-attach`), no kernel UDC.
fn usbtest_usbip(p: &Params, rep: &Reporter) -> Result<i32> {
    load_vhci()?;
    gadget::modprobe("usbtest", &["pattern=1"])?;
    crate::throughput::usbip_floor(p, rep);
    let sub = substrate::C;
    let m = Matrix::of(p, rep, sub);
    // The non-iso cases run on the default controller personality (dummy_udc's, contract §2),
    // which is what `--usbip-attach` gives users and what (b′) is gated against. The iso cases
    // need the iso-capable personality (contract §4, `--usbip-iso`), which also changes non-iso
    // behaviour (no IN FIFO, I4; high speed at most), so the gadget is restarted with it for
    // them rather than running the whole matrix on it. The restart costs one enumeration.
    let (iso, rest): (Vec<u32>, Vec<u32>) = p.cases.iter().partition(|c| ISO_CASES.contains(c));
    let iso = if iso.is_empty() {
        ISO_CASES.to_vec()
    } else {
        iso
    };
    let mut failed = 0;
    for (iso_run, cases) in [(false, rest), (true, iso)] {
        if cases.is_empty() {
            continue;
        }
        let mut argv = vec!["zero".to_string(), "--usbip-attach".to_string()];
        if iso_run {
            argv.push("--usbip-iso".to_string());
        }
        let Some(mut g) = start_our_gadget(p, rep, sub, argv) else {
            return Ok(0);
        };
        let pid = g.pid();
        let r = sysfs::wait_for(GZERO_VID, GZERO_PID, 0, Some("usbtest"), ENUM_TIMEOUT).and_then(
            |dev| {
                substrate_state(
                    rep,
                    sub,
                    SubstrateState::Up,
                    format!("{} via vhci", dev.sysfs.display()),
                );
                if iso_run {
                    usbtest_iso_cases(&m, &cases, &mut kill_gadget(pid))
                } else {
                    usbtest_matrix(&m, &dev, &cases, -1, &mut kill_gadget(pid)).map(drop)
                }
            },
        );
        let alive = g.check_alive();
        let st = g.stop(Duration::from_secs(5))?;
        note(rep, format!("our Gadget Zero (USB/IP) exited: {st}"));
        if let Err(e) = r.and(alive) {
            substrate_state(rep, sub, SubstrateState::Failed, format!("{e:#}"));
            failed = 1;
            break;
        }
        // vhci detaches the port when our socket closes (U20); wait until the device is gone
        // so the next start does not find the old one.
        sysfs::wait_gone(GZERO_VID, GZERO_PID, ENUM_TIMEOUT)?;
    }
    Ok(failed)
}

fn usbtest_vudc(p: &Params, rep: &Reporter, raw: bool) -> Result<i32> {
    load_vudc()?;
    gadget::modprobe("usbtest", &["pattern=1"])?;
    let sub = if raw {
        substrate::B_PRIME
    } else {
        substrate::A_PRIME
    };
    let mut _ss = None;
    let mut g = None;
    if raw {
        gadget::modprobe("raw_gadget", &[])?;
        match start_our_gadget(p, rep, sub, cli_args("zero", "usbip-vudc", "usbip-vudc.0")) {
            Some(proc_) => g = Some(proc_),
            None => return Ok(0),
        }
    } else {
        _ss = Some(SourceSink::bind("usbip-vudc.0")?);
    }
    // The socketpair ends stay open in this process until the boot ends.
    let _ends = match gadget::vudc_attach("usbip-vudc.0", 3, ENUM_TIMEOUT) {
        Ok(ends) => ends,
        Err(e) => {
            substrate_state(rep, sub, SubstrateState::Failed, format!("{e:#}"));
            return Ok(1);
        }
    };
    let m = Matrix {
        rep,
        sub,
        count: p.vudc_count,
        runs: p.runs,
        case_timeout: p.case_timeout,
    };
    let pid = g.as_ref().map(GadgetProcess::pid);
    let mut on_hang: Box<dyn FnMut() -> String> = match pid {
        Some(pid) => Box::new(kill_gadget(pid)),
        None => Box::new(unbind_udc()),
    };
    let r =
        sysfs::wait_for(GZERO_VID, GZERO_PID, 0, Some("usbtest"), ENUM_TIMEOUT).and_then(|dev| {
            substrate_state(
                rep,
                sub,
                SubstrateState::Up,
                format!("{} via vhci", dev.sysfs.display()),
            );
            usbtest_matrix(&m, &dev, &p.cases, -1, &mut on_hang)?;
            usbtest_iso(&m, &mut on_hang)
        });
    if let Some(g) = g.as_mut() {
        if let Err(e) = g.check_alive() {
            note(rep, format!("{e:#}"));
        }
    }
    match r {
        Ok(()) => Ok(0),
        Err(e) => {
            substrate_state(rep, sub, SubstrateState::Failed, format!("{e:#}"));
            Ok(1)
        }
    }
}

pub(crate) fn run_script(
    rep: &Reporter,
    sub: &str,
    steps: &[script::Step],
) -> Result<Vec<crate::record::HostStep>> {
    let dev = sysfs::wait_for(GZERO_VID, GZERO_PID, 0, None, ENUM_TIMEOUT)?;
    // Let the kernel finish configuring before the script starts.
    let deadline = std::time::Instant::now() + ENUM_TIMEOUT;
    while dev
        .attr("bConfigurationValue")
        .unwrap_or_default()
        .is_empty()
    {
        if std::time::Instant::now() >= deadline {
            bail!("{} never got configured", dev.sysfs.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    substrate_state(
        rep,
        sub,
        SubstrateState::Up,
        format!("{}", dev.sysfs.display()),
    );
    host::run(sub, &dev, steps, |s| {
        println!(
            "bench-guest: {sub} line {:3} {:<40} -> {} len {}",
            s.line, s.text, s.status, s.actual
        );
        rep.emit(&Record::HostStep(s.clone()));
    })
}

fn script_dummy(p: &Params, rep: &Reporter) -> Result<i32> {
    let steps = script::parse(script::DEFAULT_SCRIPT)?;
    gadget::modprobe("dummy_hcd", &[])?;
    gadget::wait_path(
        Path::new("/sys/class/udc/dummy_udc.0"),
        Duration::from_secs(10),
    )?;
    let ss = SourceSink::bind("dummy_udc.0")?;
    let a = run_script(rep, substrate::A, &steps);
    ss.unbind()?;
    sysfs::wait_gone(GZERO_VID, GZERO_PID, Duration::from_secs(10))?;
    let a = match a {
        Ok(a) => a,
        Err(e) => {
            substrate_state(rep, substrate::A, SubstrateState::Failed, format!("{e:#}"));
            return Ok(1);
        }
    };
    gadget::modprobe("raw_gadget", &[])?;
    let Some(g) = start_our_gadget(
        p,
        rep,
        substrate::B,
        cli_args("zero", "dummy_udc", "dummy_udc.0"),
    ) else {
        return Ok(0);
    };
    let b = run_script(rep, substrate::B, &steps);
    let st = g.stop(Duration::from_secs(5))?;
    note(rep, format!("our Gadget Zero exited: {st}"));
    let b = match b {
        Ok(b) => b,
        Err(e) => {
            substrate_state(rep, substrate::B, SubstrateState::Failed, format!("{e:#}"));
            return Ok(1);
        }
    };
    let diffs = host::compare(&a, &b);
    for d in &diffs {
        note(
            rep,
            format!("line {} `{}`: a {} / b {}", d.line, d.text, d.left, d.right),
        );
    }
    // Every step the script marks as comparable must agree (contract O6).
    let same = check(
        rep,
        "script a vs b",
        diffs.is_empty(),
        format!("{} steps, {} differences", a.len(), diffs.len()),
    );
    Ok(if same { 0 } else { 1 })
}

/// What our HID keyboard declares on dummy_udc's endpoint list at `speed`: its device descriptor
/// followed by its configuration descriptor set, the layout of sysfs's `descriptors` file.
/// Computed by the same code the CLI runs (rawgadget-devices).
pub(crate) fn keyboard_declared(text: &str, speed: Speed) -> Result<(u16, u16, Vec<u8>)> {
    let (mut dev, _state) = rawgadget_devices::keyboard(rawgadget_devices::KeyboardConfig {
        text: text.to_string(),
        ..Default::default()
    })
    .map_err(|e| anyhow!("building the keyboard: {e}"))?;
    dev.assign_endpoints(&rawgadget::dummy_udc_eps())
        .map_err(|e| anyhow!("assigning the keyboard's endpoints: {e}"))?;
    let set = dev.descriptor_set(speed);
    if set.device.len() < 12 {
        bail!(
            "the keyboard's device descriptor is {} bytes",
            set.device.len()
        );
    }
    let vid = u16::from_le_bytes([set.device[8], set.device[9]]);
    let pid = u16::from_le_bytes([set.device[10], set.device[11]]);
    let mut bytes = set.device.clone();
    bytes.extend_from_slice(&set.config);
    Ok((vid, pid, bytes))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn keyboard(p: &Params, rep: &Reporter) -> Result<i32> {
    gadget::modprobe("dummy_hcd", &[])?;
    gadget::modprobe("raw_gadget", &[])?;
    gadget::wait_path(
        Path::new("/sys/class/udc/dummy_udc.0"),
        Duration::from_secs(10),
    )?;
    keyboard_checks(
        p,
        rep,
        "keyboard",
        Some(cli_args("keyboard", "dummy_udc", "dummy_udc.0")),
        Speed::High,
    )
}

/// Our HID keyboard on (c), our engine attached to vhci-hcd by the CLI itself, at each speed
/// (issue 5 item 4): low, full and high on vhci's USB 2 hub, SuperSpeed on its USB 3 hub.
fn keyboard_usbip(p: &Params, rep: &Reporter) -> Result<i32> {
    load_vhci()?;
    let mut failed = 0;
    for speed in [Speed::High, Speed::Low, Speed::Full, Speed::Super] {
        let label = match speed {
            Speed::High => "keyboard over vhci (c)".to_string(),
            other => format!("keyboard over vhci (c) at {}", other.as_str()),
        };
        let args = ["keyboard", "--usbip-attach", "--speed", speed_arg(speed)];
        failed += keyboard_checks(
            p,
            rep,
            &label,
            Some(args.map(str::to_string).to_vec()),
            speed,
        )?;
    }
    Ok(failed)
}

/// The CLI's `--speed` value for `speed`.
fn speed_arg(speed: Speed) -> &'static str {
    match speed {
        Speed::Low => "low",
        Speed::Full => "full",
        Speed::Super => "super",
        _ => "high",
    }
}

/// sysfs's `speed` attribute of a device at `speed` (`usb_speed_string`'s Mb/s figures,
/// drivers/usb/core/sysfs.c).
fn sysfs_speed(speed: Speed) -> &'static str {
    match speed {
        Speed::Low => "1.5",
        Speed::Full => "12",
        Speed::High => "480",
        Speed::Super => "5000",
        Speed::SuperPlus => "10000",
        _ => "unknown",
    }
}

/// The keyboard checks, named `<label> ...`: the text typed arrives as evdev key events, and sysfs
/// reports the speed, descriptors and ids the keyboard declares at `speed`. With `cli_args`
/// (`keyboard` and how to reach the host) the keyboard is started here with `--text` and the
/// runner's `kb_args`; without, it is already on its way into the guest (imported by the stock
/// usbip tool).
pub(crate) fn keyboard_checks(
    p: &Params,
    rep: &Reporter,
    label: &str,
    cli_args: Option<Vec<String>>,
    speed: Speed,
) -> Result<i32> {
    gadget::modprobe("usbhid", &[])?;
    gadget::modprobe("hid-generic", &[])?;
    gadget::modprobe("evdev", &[])?;
    let (vid, pid, declared) = keyboard_declared(&p.text, speed)?;
    let g = match cli_args {
        Some(mut args) => {
            args.extend(["--text".to_string(), p.text.clone()]);
            if let Some(extra) = p.extra.get("kb_args") {
                args.extend(
                    extra
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
            }
            let Some(g) = start_our_gadget(p, rep, label, args) else {
                return Ok(1);
            };
            Some(g)
        }
        None => None,
    };
    let r = (|| -> Result<i32> {
        let dev = sysfs::wait_for(vid, pid, 0, Some("usbhid"), ENUM_TIMEOUT)?;
        // Open the event node as soon as it exists: usbhid polls from the moment the VT keyboard
        // handler opens the device, and evdev only sees events after our open.
        let node = crate::input::wait_event_node(&dev.sysfs, Duration::from_secs(10))?;
        let text = crate::input::read_text(
            &node,
            p.text.chars().count(),
            Duration::from_secs(10),
            Duration::from_secs(60),
        )?;
        note(
            rep,
            format!("{label} at {} as {}", dev.sysfs.display(), node.display()),
        );
        let mut failed = 0;
        if !check(
            rep,
            &format!("{label} text (evdev)"),
            text == p.text,
            format!("typed {:?}, read {:?}", p.text, text),
        ) {
            failed += 1;
        }
        let reported = dev.descriptors()?;
        if !check(
            rep,
            &format!("{label} descriptors (sysfs)"),
            reported == declared,
            format!("declared {}, sysfs {}", hex(&declared), hex(&reported)),
        ) {
            failed += 1;
        }
        for (attr, want) in [
            ("speed", sysfs_speed(speed).to_string()),
            ("idVendor", format!("{vid:04x}")),
            ("idProduct", format!("{pid:04x}")),
        ] {
            let got = dev.attr(attr)?;
            if !check(
                rep,
                &format!("{label} {attr} (sysfs)"),
                got == want,
                format!("sysfs {got}, declared {want}"),
            ) {
                failed += 1;
            }
        }
        Ok(failed)
    })();
    if let Some(g) = g {
        let st = g.stop(Duration::from_secs(5))?;
        note(rep, format!("{label}: the keyboard exited: {st}"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_params_with_escaped_text() {
        let p = Params::from_cmdline(&format!(
            "console=ttyS0 quiet rgbench.scenario=keyboard rgbench.runs=7 rgbench.cases=1,2,13 rgbench.text={}",
            escape("Hi 100%\"x\"")
        ))
        .unwrap();
        assert_eq!(p.scenario, "keyboard");
        assert_eq!(p.runs, 7);
        assert_eq!(p.count, 100);
        assert_eq!(p.cases, vec![1, 2, 13]);
        assert_eq!(p.text, "Hi 100%\"x\"");
    }

    #[test]
    fn missing_scenario_and_bad_numbers_are_errors() {
        assert!(Params::from_cmdline("console=ttyS0").is_err());
        assert!(Params::from_cmdline("rgbench.scenario=probe rgbench.runs=five").is_err());
        assert!(Params::from_cmdline("rgbench.scenario=probe rgbench.cases=1,x").is_err());
    }
}
