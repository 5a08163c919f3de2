//! One boot of the bench VM: QEMU with the Debian kernel and our initramfs, the guest console
//! streamed to the terminal and a log, the result channel on a second serial port, a hard timeout.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How the guest CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn label(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        }
    }
}

/// What a boot produced.
#[derive(Debug)]
pub struct BootOutcome {
    /// The result channel's lines.
    pub results: String,
    pub console_log: PathBuf,
    /// Seconds from QEMU's start to the guest's `/init` line.
    pub boot_secs: Option<f64>,
    pub total_secs: f64,
    pub timed_out: bool,
    /// QEMU exited without ever reaching `/init` (the accelerator did not work).
    pub never_started: bool,
}

pub struct BootSpec<'a> {
    pub qemu: &'a str,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub cmdline: String,
    pub accel: Accel,
    pub timeout: Duration,
    pub run_dir: &'a Path,
    /// Prefix for console lines on the terminal.
    pub tag: &'a str,
    /// Echo the console to the terminal.
    pub stream: bool,
    /// A virtio NIC on QEMU's user network (the guest reaches the host's loopback at 10.0.2.2).
    pub net: bool,
}

/// Whether `/dev/kvm` can be opened read-write (it may still not work, see [`boot`]).
pub fn kvm_usable() -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Boots once and waits for power-off, the timeout, or (under KVM) a QEMU that dies before `/init`.
pub fn boot(spec: &BootSpec<'_>) -> Result<BootOutcome> {
    fs::create_dir_all(spec.run_dir)?;
    let results_path = spec.run_dir.join("results.jsonl");
    let console_log = spec.run_dir.join("console.log");
    let _ = fs::remove_file(&results_path);
    let mut cmd = Command::new(spec.qemu);
    match spec.accel {
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => cmd.args(["-accel", "tcg", "-cpu", "max"]),
    };
    cmd.args([
        "-m",
        "1024",
        "-smp",
        "2",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
    ])
    .arg("-kernel")
    .arg(spec.kernel)
    .arg("-initrd")
    .arg(spec.initrd)
    .arg("-append")
    .arg(&spec.cmdline)
    .args(["-serial", "stdio", "-serial"])
    .arg(format!("file:{}", results_path.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if spec.net {
        // romfile= : no PXE ROM, the guest boots from -kernel.
        cmd.args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
        ]);
    }
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", spec.qemu))?;
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().context("qemu stdout")?;
    let err = child.stderr.take().context("qemu stderr")?;
    let tx2 = tx.clone();
    let t_out = std::thread::spawn(move || {
        for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
            let s = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(s).is_err() {
                break;
            }
        }
    });
    let t_err = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx2.send(format!("[qemu] {line}")).is_err() {
                break;
            }
        }
    });
    let mut log = fs::File::create(&console_log)?;
    let mut boot_secs = None;
    let mut timed_out = false;
    loop {
        let left = spec.timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            timed_out = true;
            let _ = child.kill();
            break;
        }
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => {
                if boot_secs.is_none() && line.starts_with("rgbench: init") {
                    boot_secs = Some(start.elapsed().as_secs_f64());
                }
                let _ = writeln!(log, "{line}");
                if spec.stream {
                    println!("{} | {line}", spec.tag);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if child.try_wait()?.is_some() {
                    // Drain what is left, then stop.
                    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                        let _ = writeln!(log, "{line}");
                        if spec.stream {
                            println!("{} | {line}", spec.tag);
                        }
                    }
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait()?;
    let _ = t_out.join();
    let _ = t_err.join();
    if timed_out {
        let _ = writeln!(log, "[bench] hard timeout after {:?}", spec.timeout);
        eprintln!(
            "bench: {}: hard timeout after {:?}, QEMU killed",
            spec.tag, spec.timeout
        );
    }
    let results = fs::read_to_string(&results_path).unwrap_or_default();
    Ok(BootOutcome {
        results,
        console_log,
        boot_secs,
        total_secs: start.elapsed().as_secs_f64(),
        timed_out,
        never_started: boot_secs.is_none() && !timed_out && !status.success(),
    })
}
