//! The machine the bench runs on: commands, root, Debian packages, phase timing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Runs a command, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let what = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!("{what} failed ({}):\n{}", out.status, tail.join("\n"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a program is on PATH (or an absolute path that exists).
pub fn have(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A host tool the bench needs and the Debian package that provides it.
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
    pub why: &'static str,
}

/// Everything the bench runs on the host.
pub const TOOLS: &[Tool] = &[
    Tool {
        program: "qemu-system-x86_64",
        package: "qemu-system-x86",
        why: "boots the guest",
    },
    Tool {
        program: "/bin/busybox",
        package: "busybox-static",
        why: "the guest's /init and shell tools",
    },
    Tool {
        program: "cpio",
        package: "cpio",
        why: "packs the initramfs",
    },
    Tool {
        program: "depmod",
        package: "kmod",
        why: "module index for the guest",
    },
    Tool {
        program: "xz",
        package: "xz-utils",
        why: "decompresses .ko.xz and the source tarball",
    },
    Tool {
        program: "make",
        package: "make",
        why: "builds raw_gadget.ko",
    },
    Tool {
        program: "x86_64-linux-gnu-gcc-12",
        package: "gcc-12",
        why: "the compiler Debian's 6.12 headers name",
    },
    Tool {
        program: "usbip",
        package: "usbip",
        why: "the stock USB/IP tool (used by the USB/IP substrate)",
    },
    Tool {
        program: "/usr/lib/x86_64-linux-gnu/libc.a",
        package: "libc6-dev",
        why: "static glibc for the guest binaries (crt-static)",
    },
];

/// Packages the kernel-module build links against at run time (modpost, objtool).
pub const LIBS: &[&str] = &["libelf1", "libssl3", "zlib1g"];

fn busybox_is_static() -> bool {
    // busybox-static installs /bin/busybox statically linked; the dynamic `busybox` package would not
    // run in an initramfs without its loader.
    run(Command::new("file").arg("-L").arg("/bin/busybox"))
        .map(|s| s.contains("statically linked") || s.contains("static-pie"))
        .unwrap_or_else(|_| {
            std::fs::read("/bin/busybox")
                .map(|b| !b.windows(16).any(|w| w == b"/lib64/ld-linux-"))
                .unwrap_or(false)
        })
}

/// Checks the host tools and installs the missing ones with apt-get when running as root; otherwise
/// says exactly what to install.
pub fn ensure_tools(allow_install: bool) -> Result<()> {
    let mut missing: Vec<&Tool> = TOOLS.iter().filter(|t| !have(t.program)).collect();
    if have("/bin/busybox") && !busybox_is_static() {
        missing.push(&TOOLS[1]);
    }
    let mut libs_missing: Vec<&str> = Vec::new();
    if have("dpkg-query") {
        for lib in LIBS {
            let ok = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", lib]))
                .map(|s| s.contains("install ok installed"))
                .unwrap_or(false);
            if !ok {
                libs_missing.push(lib);
            }
        }
    }
    if missing.is_empty() && libs_missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = missing.iter().map(|t| t.package).collect();
    pkgs.extend(libs_missing.iter().copied());
    pkgs.dedup();
    let list: Vec<String> = missing
        .iter()
        .map(|t| format!("  {} (package {}): {}", t.program, t.package, t.why))
        .collect();
    eprintln!("bench: missing on this host:\n{}", list.join("\n"));
    if !libs_missing.is_empty() {
        eprintln!("  libraries: {}", libs_missing.join(" "));
    }
    if !have("apt-get") {
        bail!(
            "no apt-get here: install the equivalents of these Debian packages by hand: {}",
            pkgs.join(" ")
        );
    }
    if !is_root() {
        bail!("not root, so I cannot install them; run:\n  sudo apt-get update && sudo apt-get install -y {}", pkgs.join(" "));
    }
    if !allow_install {
        bail!(
            "--no-install given; run: apt-get install -y {}",
            pkgs.join(" ")
        );
    }
    eprintln!("bench: apt-get install -y {}", pkgs.join(" "));
    let install = |pkgs: &[&str]| {
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if install(&pkgs).is_err() {
        run(Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        install(&pkgs)?;
    }
    Ok(())
}

/// Wall-clock phases of a bench run, for the report.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Phases {
    pub entries: Vec<(String, f64)>,
}

impl Phases {
    /// Runs `f` and records how long it took under `name`.
    pub fn time<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let r = f();
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "bench: phase {name}: {secs:.1} s{}",
            if r.is_err() { " (failed)" } else { "" }
        );
        self.entries.push((name.to_string(), secs));
        r
    }
}

/// The 1-minute load average, recorded with every figure (P5).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Today's date (UTC), `YYYY-MM-DD`, from the system clock.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }
}
