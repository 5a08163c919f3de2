//! The project's binaries for the guest, built statically (`-C target-feature=+crt-static`, glibc:
//! no musl target on these machines) into the bench's own target directory so they do not fight with
//! the normal build.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::initramfs::GuestBinaries;

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn cargo_build(repo: &Path, target_dir: &Path, packages: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--target", TARGET])
        .args(packages.iter().flat_map(|p| ["-p", p]))
        .current_dir(repo)
        .env("CARGO_TARGET_DIR", target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // Small binaries for the initramfs; the bench does not need debug info in the guest.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("starting cargo: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("error"))
        .take(5)
        .collect();
    Err(if errors.is_empty() {
        err.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
    } else {
        errors.join(" | ")
    })
}

/// Whether a built CLI offers `zero` and `keyboard`, by asking its `--help`.
fn cli_subcommands(cli: &Path) -> Vec<String> {
    let out = Command::new(cli).arg("--help").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    ["zero", "keyboard"]
        .iter()
        .filter(|s| {
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{s} ")) || l.trim() == **s)
        })
        .map(|s| s.to_string())
        .collect()
}

/// Flags of `rawgadget keyboard` the bench uses when the CLI offers them: `--wait-for-led` makes the
/// keyboard type only once the host turns an LED on, which the keyboard scenario does right after
/// opening the evdev node (before that, only the VT's keyboard handler listens).
pub fn keyboard_flags(cli: &Path) -> Vec<String> {
    let out = Command::new(cli).args(["keyboard", "--help"]).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    ["--wait-for-led"]
        .iter()
        .filter(|f| text.contains(*f))
        .map(|f| f.to_string())
        .collect()
}

/// Builds `bench-guest` (required) and our `rawgadget` CLI (optional: its absence marks the
/// substrates that need it as not run, with the reason).
pub fn build(repo: &Path, cache: &Path) -> Result<(GuestBinaries, String)> {
    let target_dir = cache.join("target");
    let bin = |name: &str| -> PathBuf { target_dir.join(TARGET).join("release").join(name) };
    // One cargo run for both (better parallelism); if the CLI does not build, the guest alone.
    let both = cargo_build(
        repo,
        &target_dir,
        &["rawgadget-bench-guest", "rawgadget-cli"],
    );
    let cli_error = match both {
        Ok(()) => None,
        Err(e) => {
            cargo_build(repo, &target_dir, &["rawgadget-bench-guest"])
                .map_err(anyhow::Error::msg)
                .context("building bench-guest")?;
            Some(e)
        }
    };
    let bench_guest = bin("bench-guest");
    if !bench_guest.exists() {
        bail!("{} missing after the build", bench_guest.display());
    }
    let (cli, why) = match cli_error {
        None => {
            let path = bin("rawgadget");
            let subs = cli_subcommands(&path);
            if !path.exists() {
                (
                    None,
                    "rawgadget-cli built no `rawgadget` binary".to_string(),
                )
            } else if !subs.iter().any(|s| s == "zero") {
                (
                    Some(path),
                    "the rawgadget CLI has no `zero` subcommand yet".to_string(),
                )
            } else {
                (Some(path), String::new())
            }
        }
        Some(e) => (None, format!("rawgadget-cli does not build: {e}")),
    };
    Ok((
        GuestBinaries {
            bench_guest,
            cli,
            c_clients: Vec::new(),
        },
        why,
    ))
}

/// The C test clients of tests/c (written against the UAPI header only), built statically with
/// gcc against the 6.12 header `uapi` (an `include/uapi` directory) into `cache/c-clients`.
pub fn build_c_clients(repo: &Path, cache: &Path, uapi: &Path) -> Result<Vec<PathBuf>> {
    let out_dir = cache.join("c-clients");
    let st = Command::new("make")
        .arg("-C")
        .arg(repo.join("tests/c"))
        .arg(format!("UAPI={}", uapi.display()))
        .arg(format!("OUT={}", out_dir.display()))
        .stdin(Stdio::null())
        .status()
        .context("starting make")?;
    if !st.success() {
        bail!("make -C tests/c failed: {st}");
    }
    Ok(C_CLIENTS.iter().map(|c| out_dir.join(c)).collect())
}

/// The programs tests/c/Makefile builds.
pub const C_CLIENTS: &[&str] = &[
    "gadget_zero",
    "hid_keyboard",
    "errno_script",
    "ioctl_latency",
    "wakeup_floor",
];
