//! The guest's initramfs: busybox, a `/init` written here, the project's static binaries, and the
//! kernel modules the scenarios load (decompressed, with a fresh depmod index, since busybox's
//! modprobe cannot read `.ko.xz`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::host::run;
use crate::kernel::{self, Kernel};

/// The guest's `/init`: mount the usual filesystems, run the scenario named on the kernel command
/// line, print its status, power off. QEMU runs with `-no-reboot`, so power-off ends the run.
pub const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
echo "rgbench: init $(uname -r)"
/bin/bench-guest scenario
rc=$?
echo "rgbench: scenario exit $rc"
if [ "$rc" != 0 ]; then dmesg | tail -n 60; fi
sync
poweroff -f
"#;

/// Binaries to put in `/bin`.
pub struct GuestBinaries {
    pub bench_guest: PathBuf,
    /// Our `rawgadget` CLI, when it built.
    pub cli: Option<PathBuf>,
    /// The static C test clients (tests/c), put in `/bin/c/`.
    pub c_clients: Vec<PathBuf>,
}

fn copy_exec(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Modules the `usbip-remote` scenario adds: the NIC on QEMU's user network (virtio-pci is built in).
const NET_MODULES: &[&str] = &["virtio_net"];

/// Debian's stock USB/IP tool, run inside the guest by `usbip-remote` (contract U22).
const STOCK_USBIP: &str = "/usr/sbin/usbip";

/// The files a dynamically linked program needs, as `ldd` names them: its libraries and the
/// dynamic loader (absolute paths).
pub fn ldd_files(ldd_output: &str) -> Vec<PathBuf> {
    ldd_output
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Copies a dynamically linked host program into the initramfs at the same path, with the
/// libraries and loader `ldd` names, at their paths too.
fn install_dynamic(root: &Path, program: &Path) -> Result<()> {
    let rel = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let libs = ldd_files(&run(Command::new("ldd").arg(program))?);
    if libs.is_empty() {
        bail!("ldd names no libraries for {}", program.display());
    }
    for f in std::iter::once(program.to_path_buf()).chain(libs) {
        let to = rel(&f);
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir)?;
        }
        copy_exec(&f, &to)?;
    }
    Ok(())
}

/// Decompresses `src` (`.ko.xz`, `.ko.zst` or plain `.ko`) into `dst` (`.ko`).
fn install_module(src: &Path, dst: &Path) -> Result<()> {
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    let name = src.to_string_lossy();
    if name.ends_with(".xz") {
        let out = fs::File::create(dst)?;
        let st = Command::new("xz")
            .arg("-dc")
            .arg(src)
            .stdout(out)
            .stderr(Stdio::inherit())
            .status()?;
        if !st.success() {
            bail!("xz -dc {} failed", src.display());
        }
    } else if name.ends_with(".ko") {
        fs::copy(src, dst)?;
    } else {
        bail!("unsupported module compression: {}", src.display());
    }
    Ok(())
}

/// Builds `cache/initramfs/<release>.cpio` (uncompressed: TCG decompresses slowly) and returns it.
pub fn build(
    cache: &Path,
    k: &Kernel,
    raw_gadget_ko: &Path,
    dummy_hcd_ko: Option<&Path>,
    bins: &GuestBinaries,
) -> Result<PathBuf> {
    let release = k.version.release();
    let root = cache.join("initramfs").join(&release);
    let _ = fs::remove_dir_all(&root);
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "etc",
    ] {
        fs::create_dir_all(root.join(d))?;
    }
    copy_exec(Path::new("/bin/busybox"), &root.join("bin/busybox"))?;
    copy_exec(&bins.bench_guest, &root.join("bin/bench-guest"))?;
    if let Some(cli) = &bins.cli {
        copy_exec(cli, &root.join("bin/rawgadget"))?;
    }
    if !bins.c_clients.is_empty() {
        fs::create_dir_all(root.join("bin/c"))?;
    }
    for c in &bins.c_clients {
        let name = c.file_name().context("C client without a name")?;
        copy_exec(c, &root.join("bin/c").join(name))?;
    }
    // Not fatal: without it only `usbip-remote` fails, and says why.
    if let Err(e) = install_dynamic(&root, Path::new(STOCK_USBIP)) {
        eprintln!("bench: the stock usbip tool is not in the initramfs: {e:#}");
    }
    // Not fatal either: without it the usbtest-dummy profile has no system call counts.
    if let Err(e) = install_dynamic(&root, Path::new("/usr/bin/strace")) {
        eprintln!("bench: strace is not in the initramfs: {e:#}");
    }
    fs::write(root.join("init"), INIT)?;
    fs::set_permissions(root.join("init"), fs::Permissions::from_mode(0o755))?;

    let mods_src = k.modules_dir();
    let mods_dst = root.join("lib/modules").join(&release);
    let dep = kernel::parse_modules_dep(
        &fs::read_to_string(mods_src.join("modules.dep")).context("reading modules.dep")?,
    );
    let mut wanted: Vec<String> = kernel::GUEST_MODULES
        .iter()
        .chain(NET_MODULES)
        .map(|s| s.to_string())
        .collect();
    // raw_gadget.ko's own dependencies, as modinfo reads them from the built module.
    let deps = run(Command::new("modinfo")
        .args(["-F", "depends"])
        .arg(raw_gadget_ko))
    .unwrap_or_default();
    wanted.extend(
        deps.trim()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    );
    let wanted_refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let mut dummy_hcd_replaced = false;
    for rel in kernel::closure(&dep, &wanted_refs)? {
        let dst_rel = rel.trim_end_matches(".xz").trim_end_matches(".zst");
        match dummy_hcd_ko {
            // the rebuilt module takes the stock one's place, so every `modprobe dummy_hcd` loads it
            Some(ko) if dst_rel.ends_with("/dummy_hcd.ko") => {
                install_module(ko, &mods_dst.join(dst_rel))?;
                dummy_hcd_replaced = true;
            }
            _ => install_module(&mods_src.join(&rel), &mods_dst.join(dst_rel))?,
        }
    }
    if dummy_hcd_ko.is_some() && !dummy_hcd_replaced {
        bail!("dummy_hcd.ko is not among the guest's modules: nothing to replace with the rebuilt one");
    }
    install_module(raw_gadget_ko, &mods_dst.join("extra/raw_gadget.ko"))?;
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        if mods_src.join(f).exists() {
            fs::copy(mods_src.join(f), mods_dst.join(f))?;
        }
    }
    run(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;

    let cpio = cache.join("initramfs").join(format!("{release}.cpio"));
    let list = run(Command::new("find").arg(".").current_dir(&root))?;
    let out = fs::File::create(&cpio)?;
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet", "-R", "0:0"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting cpio")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("cpio stdin")?;
        stdin.write_all(list.as_bytes())?;
    }
    if !child.wait()?.success() {
        bail!("cpio failed");
    }
    Ok(cpio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_names_libraries_and_the_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibudev.so.1 => /lib/x86_64-linux-gnu/libudev.so.1 (0x00007f2e)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2e)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f2e)\n";
        assert_eq!(
            ldd_files(out),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libudev.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}
