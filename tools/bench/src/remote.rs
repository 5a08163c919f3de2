//! The host side of the `usbip-remote` scenario (issue 5 item 3, "remote"): our keyboard exported
//! over TCP from outside the guest (`rawgadget keyboard --usbip-export 127.0.0.1:0`, so the kernel
//! picks a free port), a guest with QEMU's user network, which reaches the host's loopback at
//! 10.0.2.2, and the port and busid on the guest's command line for the stock `usbip attach`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use rawgadget_bench_guest::scenario::escape;

/// The scenario that boots with a network and an exported device.
pub const SCENARIO: &str = "usbip-remote";

/// The busid our export lists and imports the device under.
const BUSID: &str = "1-1";

/// Whether scenario `name` needs QEMU's user network.
pub fn needs_net(name: &str) -> bool {
    name == SCENARIO
}

/// Our keyboard, exported over USB/IP on the host's loopback for the length of one boot.
pub struct HostExport {
    child: Child,
    port: u16,
}

/// The port of the CLI's "rawgadget: exporting busid B on ADDR:PORT (...)" line.
pub fn exported_port(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("rawgadget: exporting busid ")?;
    let addr = rest.split_whitespace().nth(2)?;
    addr.rsplit_once(':')?.1.parse().ok()
}

impl HostExport {
    /// Starts `cli keyboard --usbip-export 127.0.0.1:0 --text TEXT FLAGS...` with its output in
    /// `log` and waits for the line that names the port.
    pub fn start(cli: &Path, text: &str, flags: &[String], log: &Path) -> Result<HostExport> {
        if let Some(dir) = log.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut child = Command::new(cli)
            .args(["keyboard", "--usbip-export", "127.0.0.1:0", "--text", text])
            .args(["--usbip-busid", BUSID])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(log.with_extension("stderr.log"))?)
            .spawn()
            .with_context(|| format!("starting {} keyboard --usbip-export", cli.display()))?;
        let stdout = child.stdout.take().context("export stdout")?;
        let mut log_file = fs::File::create(log)?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Write;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(log_file, "{line}");
                if let Some(port) = exported_port(&line) {
                    let _ = tx.send(port);
                }
            }
        });
        let mut export = HostExport { child, port: 0 };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(port) => export.port = port,
            Err(_) => {
                let st = export.child.try_wait()?;
                bail!(
                    "the export never said its port (exit status {st:?}); see {}",
                    log.display()
                );
            }
        }
        eprintln!(
            "bench: our keyboard exported on 127.0.0.1:{} (busid {BUSID}) for the guest's stock usbip",
            export.port
        );
        Ok(export)
    }

    /// The guest's `rgbench.*` words: where to import from.
    pub fn cmdline(&self) -> String {
        format!(
            " rgbench.usbip_port={} rgbench.usbip_busid={} rgbench.usbip_host=10.0.2.2",
            self.port,
            escape(BUSID)
        )
    }
}

impl Drop for HostExport {
    /// Stops the export with the boot (the CLI has nothing to save).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_comes_from_the_exporting_line() {
        assert_eq!(
            exported_port("rawgadget: exporting busid 1-1 on 127.0.0.1:41237 (import with: usbip --tcp-port 41237 attach -r 127.0.0.1 -b 1-1)"),
            Some(41237)
        );
        assert_eq!(exported_port("rawgadget: attached to vhci port 0"), None);
    }
}
