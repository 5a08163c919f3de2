//! Issue 5 item 5, "proof on the real kernel", the parts beyond usbtest:
//!
//! - `script-usbip`: the scripted usbfs host against (c), our engine attached to vhci-hcd by
//!   `rawgadget zero --usbip-attach`, then against (b′), raw_gadget.ko + our Gadget Zero on
//!   usbip-vudc → vhci-hcd, compared item by item. (b′) comes last in the boot and is never torn
//!   down (contract O3). Every difference must be one the contract explains ([`B_PRIME_VS_C`]);
//!   the runner also shows (c) against (b), raw_gadget.ko on dummy_hcd ([`B_VS_C`]).
//! - `usbip-remote`: a keyboard exported by the runner from outside the guest over TCP is listed
//!   and imported with Debian's stock `usbip` tool over QEMU's user network, types into evdev,
//!   and is detached again.
//!
//! (`keyboard-usbip`, our keyboard on (c) through vhci, is the keyboard scenario's code with
//! another way in; it lives beside it in [`crate::scenario`].)

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::gadget::{self, GZERO_PID, GZERO_VID};
use crate::host::{self, Difference};
use crate::record::{substrate, HostStep, Reporter, SubstrateState};
use crate::scenario::{
    check, cli_args, keyboard_checks, load_vhci, load_vudc, note, run_script, start_our_gadget,
    substrate_state, Params, ENUM_TIMEOUT,
};
use crate::script;
use crate::sysfs;

/// A script difference the contract explains: the step's text, what the left and the right
/// substrate saw (the start of [`Difference::left`] / [`Difference::right`], `*` for anything),
/// and the rule.
#[derive(Debug, Clone, Copy)]
pub struct Allowed {
    pub text: &'static str,
    pub left: &'static str,
    pub right: &'static str,
    pub rule: &'static str,
}

/// Differences allowed between (b′) raw_gadget.ko on usbip-vudc (left) and (c) our engine (right),
/// both seen through vhci-hcd. Our engine follows the dummy personality (contract §2, U1), so the
/// allowed differences are vudc's own departures from dummy_hcd (contract O5).
pub const B_PRIME_VS_C: &[Allowed] = &[];

/// Differences explained between (b) raw_gadget.ko on dummy_hcd (left) and (c) our engine
/// through vhci-hcd (right): the host controller differs (contract §3 U rules). Shown, not gated.
pub const B_VS_C: &[Allowed] = &[];

fn matches(pattern: &str, seen: &str) -> bool {
    pattern == "*" || seen.starts_with(pattern)
}

/// The contract rule that explains `d`, if `table` has one.
pub fn explain(d: &Difference, table: &[Allowed]) -> Option<&'static str> {
    table
        .iter()
        .find(|a| a.text == d.text && matches(a.left, &d.left) && matches(a.right, &d.right))
        .map(|a| a.rule)
}

/// The differences between two recordings, each with the rule that explains it (None: unexplained).
pub fn classify(
    left: &[HostStep],
    right: &[HostStep],
    table: &[Allowed],
) -> Vec<(Difference, Option<&'static str>)> {
    host::compare(left, right)
        .into_iter()
        .map(|d| {
            let why = explain(&d, table);
            (d, why)
        })
        .collect()
}

/// `script-usbip`: (c) first, detached when our process stops (U20), then (b′) to the end of the
/// boot. `rgbench.substrates` can pick one of them.
pub fn script_usbip(p: &Params, rep: &Reporter) -> Result<i32> {
    let steps = script::parse(script::DEFAULT_SCRIPT)?;
    load_vhci()?;
    let mut failed = 0;
    let mut ours = None;
    if p.wants(substrate::C) {
        let args = vec!["zero".to_string(), "--usbip-attach".to_string()];
        if let Some(g) = start_our_gadget(p, rep, substrate::C, args) {
            let r = run_script(rep, substrate::C, &steps);
            let st = g.stop(Duration::from_secs(5))?;
            note(rep, format!("our Gadget Zero (USB/IP) exited: {st}"));
            // Our end of the socket closed: vhci detaches the port (U20) before (b′) comes up
            // with the same ids.
            if let Err(e) = sysfs::wait_gone(GZERO_VID, GZERO_PID, Duration::from_secs(10)) {
                note(rep, format!("(c) did not go away: {e:#}"));
            }
            match r {
                Ok(s) => ours = Some(s),
                Err(e) => {
                    substrate_state(rep, substrate::C, SubstrateState::Failed, format!("{e:#}"));
                    failed += 1;
                }
            }
        }
    }
    let mut reference = None;
    // Kept open to the end of the boot: closing vudc's socket is the fragile path (O3).
    let mut _ends = None;
    if p.wants(substrate::B_PRIME) {
        load_vudc()?;
        gadget::modprobe("raw_gadget", &[])?;
        let args = cli_args("zero", "usbip-vudc", "usbip-vudc.0");
        if let Some(g) = start_our_gadget(p, rep, substrate::B_PRIME, args) {
            let r = gadget::vudc_attach("usbip-vudc.0", 3, ENUM_TIMEOUT).and_then(|ends| {
                _ends = Some(ends);
                run_script(rep, substrate::B_PRIME, &steps)
            });
            match r {
                Ok(s) => reference = Some(s),
                Err(e) => {
                    substrate_state(
                        rep,
                        substrate::B_PRIME,
                        SubstrateState::Failed,
                        format!("{e:#}"),
                    );
                    failed += 1;
                }
            }
            // Not stopped: dropping the handle leaves the gadget running until power-off (O3).
            drop(g);
        }
    }
    if let (Some(b), Some(c)) = (&reference, &ours) {
        let diffs = classify(b, c, B_PRIME_VS_C);
        for (d, why) in &diffs {
            note(
                rep,
                format!(
                    "line {} `{}`: b' {} / c {}: {}",
                    d.line,
                    d.text,
                    d.left,
                    d.right,
                    why.unwrap_or("UNEXPLAINED")
                ),
            );
        }
        let unexplained = diffs.iter().filter(|(_, why)| why.is_none()).count();
        if !check(
            rep,
            "script b' vs c",
            unexplained == 0,
            format!(
                "{} steps, {} differences, {} explained by the contract",
                b.len(),
                diffs.len(),
                diffs.len() - unexplained
            ),
        ) {
            failed += 1;
        }
    }
    Ok(failed)
}

/// Runs `program args` and returns (exit code, stdout and stderr); kills it after `timeout`
/// (a TCP connect to a host that does not answer can block for minutes).
fn run_tool(program: &str, args: &[&str], timeout: Duration) -> Result<(i32, String)> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out?,
        Err(_) => {
            gadget::signal(pid, libc::SIGKILL);
            bail!(
                "{program} {} did not end within {timeout:?}",
                args.join(" ")
            );
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for l in text.lines() {
        println!("bench-guest: {program}: {l}");
    }
    Ok((out.status.code().unwrap_or(-1), text))
}

/// Where the runner puts Debian's `usbip` (with its libraries and loader) in the initramfs.
pub const STOCK_USBIP: &str = "/usr/sbin/usbip";
/// The guest's address on QEMU's user network, and the host as the guest sees it.
const GUEST_ADDR: &str = "10.0.2.15/24";
const DEFAULT_HOST: &str = "10.0.2.2";

/// Brings eth0 (virtio-net on QEMU's user network) up with the address slirp expects.
fn network_up() -> Result<()> {
    gadget::modprobe("virtio_net", &[])?;
    gadget::wait_path(Path::new("/sys/class/net/eth0"), Duration::from_secs(10))?;
    for args in [
        &["link", "set", "lo", "up"][..],
        &["addr", "add", GUEST_ADDR, "dev", "eth0"],
        &["link", "set", "eth0", "up"],
    ] {
        let (code, out) = run_tool("ip", args, Duration::from_secs(10))?;
        if code != 0 {
            bail!("ip {}: {}", args.join(" "), out.trim());
        }
    }
    Ok(())
}

/// The port of `usbip port`'s first "Port NN: <Port in Use>" line.
pub fn port_in_use(usbip_port_output: &str) -> Option<u32> {
    usbip_port_output.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("Port ")?;
        let (n, tail) = rest.split_once(':')?;
        tail.contains("Port in Use")
            .then(|| n.trim().parse().ok())
            .flatten()
    })
}

/// `usbip-remote`: the runner exports our keyboard on the host (`rawgadget keyboard
/// --usbip-export`) and names the port (`rgbench.usbip_port`) and busid; the stock tool lists
/// and imports it here (contract U22), the keyboard checks run, and `usbip detach` takes it away.
pub fn usbip_remote(p: &Params, rep: &Reporter) -> Result<i32> {
    let port = p.extra.get("usbip_port").cloned().ok_or_else(|| {
        anyhow!(
            "the runner exported no device (rgbench.usbip_port): {}",
            p.extra
                .get("usbip_missing")
                .map_or("no reason given", String::as_str)
        )
    })?;
    let busid = p
        .extra
        .get("usbip_busid")
        .cloned()
        .unwrap_or_else(|| "1-1".into());
    let host = p
        .extra
        .get("usbip_host")
        .cloned()
        .unwrap_or_else(|| DEFAULT_HOST.into());
    if !Path::new(STOCK_USBIP).exists() {
        bail!("{STOCK_USBIP} is not in the initramfs (the runner copies the host's)");
    }
    load_vhci()?;
    network_up()?;
    // The stock tool records its imports under /var/run/vhci_hcd (usbip_attach.c).
    std::fs::create_dir_all("/var/run").context("creating /var/run")?;
    let usbip = |args: &[&str]| -> Result<(i32, String)> {
        let mut all = vec!["--tcp-port", port.as_str()];
        all.extend_from_slice(args);
        run_tool(STOCK_USBIP, &all, Duration::from_secs(30))
    };
    let mut failed = 0;
    // slirp answers at once, but give the link a few tries.
    let mut listed = (-1, String::new());
    for _ in 0..10 {
        listed = usbip(&["list", "-r", &host])?;
        if listed.0 == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let shown = listed.0 == 0 && listed.1.contains(&format!("{busid}:"));
    if !check(
        rep,
        "stock usbip list -r",
        shown,
        format!("`usbip list -r {host}` (port {port}) lists busid {busid}: {shown}"),
    ) {
        return Ok(1);
    }
    let (code, out) = usbip(&["attach", "-r", &host, "-b", &busid])?;
    if !check(rep, "stock usbip attach", code == 0, format!("exit {code}")) {
        note(rep, out.trim().to_string());
        return Ok(1);
    }
    failed += keyboard_checks(
        p,
        rep,
        "keyboard via stock usbip attach",
        None,
        rawgadget::Speed::High,
    )?;
    let (_, ports) = run_tool(STOCK_USBIP, &["port"], Duration::from_secs(10))?;
    let vhci_port = port_in_use(&ports);
    if !check(
        rep,
        "stock usbip port",
        vhci_port.is_some(),
        format!(
            "the import is listed: {}",
            ports
                .lines()
                .filter(|l| l.contains("Port ") || l.contains("->"))
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    ) {
        failed += 1;
    }
    if let Some(n) = vhci_port {
        let (code, out) = run_tool(
            STOCK_USBIP,
            &["detach", "-p", &n.to_string()],
            Duration::from_secs(10),
        )?;
        let (vid, pid) = keyboard_ids(p)?;
        let gone = code == 0 && sysfs::wait_gone(vid, pid, Duration::from_secs(10)).is_ok();
        if !check(
            rep,
            "stock usbip detach",
            gone,
            format!("exit {code}, device gone {gone}: {}", out.trim()),
        ) {
            failed += 1;
        }
    }
    Ok(failed)
}

fn keyboard_ids(p: &Params) -> Result<(u16, u16)> {
    let (vid, pid, _) = crate::scenario::keyboard_declared(&p.text, rawgadget::Speed::High)?;
    Ok((vid, pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(text: &str, left: &str, right: &str) -> Difference {
        Difference {
            line: 7,
            text: text.into(),
            left: left.into(),
            right: right.into(),
        }
    }

    const TABLE: &[Allowed] = &[Allowed {
        text: "bulk bulk-in 512",
        left: "EOVERFLOW",
        right: "*",
        rule: "contract D10",
    }];

    #[test]
    fn a_difference_is_explained_only_by_its_own_step_and_results() {
        assert_eq!(
            explain(
                &diff("bulk bulk-in 512", "EOVERFLOW len 0", "ok len 512"),
                TABLE
            ),
            Some("contract D10")
        );
        assert_eq!(
            explain(&diff("bulk bulk-in 512", "ok len 12", "ok len 512"), TABLE),
            None
        );
        assert_eq!(
            explain(
                &diff("bulk bulk-in 4096", "EOVERFLOW len 0", "ok len 4096"),
                TABLE
            ),
            None
        );
    }

    #[test]
    fn the_allowed_tables_name_a_contract_rule() {
        for a in B_PRIME_VS_C.iter().chain(B_VS_C) {
            assert!(
                a.rule.contains("contract "),
                "{} has no contract rule",
                a.text
            );
            assert!(
                script::parse(script::DEFAULT_SCRIPT)
                    .unwrap()
                    .iter()
                    .any(|s| s.text == a.text),
                "{} is not a step of the default script",
                a.text
            );
        }
    }

    #[test]
    fn usbip_port_output_names_the_port_in_use() {
        let out = "Imported USB devices\n====================\nPort 00: <Port in Use> at High Speed(480Mbps)\n       unknown vendor : unknown product (1d6b:0104)\n";
        assert_eq!(port_in_use(out), Some(0));
        assert_eq!(
            port_in_use("Imported USB devices\n====================\n"),
            None
        );
    }
}
