//! Bringing up the device side of each substrate inside the guest: kernel modules, the in-kernel
//! SourceSink through configfs, a userspace gadget process on raw_gadget.ko, and the usbip-vudc →
//! vhci-hcd socketpair attach.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Gadget Zero's ids (`drivers/usb/gadget/legacy/zero.c`), which usbtest binds to.
pub const GZERO_VID: u16 = 0x0525;
pub const GZERO_PID: u16 = 0xa4a0;

/// `modprobe NAME ARGS...` (busybox modprobe; modules were decompressed and depmod'ed by the runner).
pub fn modprobe(name: &str, args: &[&str]) -> Result<()> {
    let out = Command::new("modprobe")
        .arg(name)
        .args(args)
        .output()
        .context("running modprobe")?;
    if !out.status.success() {
        bail!(
            "modprobe {name} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `rmmod NAME` (busybox's `modprobe -r` also tries to remove the dependencies, which are in use,
/// and then fails).
pub fn rmmod(name: &str) -> Result<()> {
    let out = Command::new("rmmod")
        .arg(name)
        .output()
        .context("running rmmod")?;
    if !out.status.success() {
        bail!(
            "rmmod {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// Waits for a path to appear (a UDC, a platform device attribute).
pub fn wait_path(path: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() >= deadline {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Mounts configfs at /sys/kernel/config if it is not mounted yet.
pub fn mount_configfs() -> Result<()> {
    let root = Path::new("/sys/kernel/config");
    if root.join("usb_gadget").exists() {
        return Ok(());
    }
    let st = Command::new("mount")
        .args(["-t", "configfs", "none", "/sys/kernel/config"])
        .status()?;
    if !st.success() && !root.join("usb_gadget").exists() {
        bail!("mounting configfs failed");
    }
    Ok(())
}

/// The UDC file of the bench's configfs SourceSink gadget.
pub const SOURCESINK_UDC: &str = "/sys/kernel/config/usb_gadget/rgbench_ss/UDC";

/// The kernel's Gadget Zero (SourceSink function) built through configfs: gadget 0525:a4a0,
/// function `SourceSink.0` with `pattern` 1 (real-kernel-bench.md, "Reference and baseline").
pub struct SourceSink {
    root: PathBuf,
}

impl SourceSink {
    /// Creates the gadget and binds it to `udc` (`dummy_udc.0`, `usbip-vudc.0`).
    pub fn bind(udc: &str) -> Result<SourceSink> {
        modprobe("configfs", &[])?;
        modprobe("libcomposite", &[])?;
        modprobe("usb_f_ss_lb", &[])?;
        mount_configfs()?;
        let root = PathBuf::from("/sys/kernel/config/usb_gadget/rgbench_ss");
        let g = SourceSink { root: root.clone() };
        fs::create_dir_all(&root).context("creating configfs gadget")?;
        write(&root.join("idVendor"), &format!("0x{GZERO_VID:04x}"))?;
        write(&root.join("idProduct"), &format!("0x{GZERO_PID:04x}"))?;
        write(&root.join("bcdUSB"), "0x0200")?;
        let strings = root.join("strings/0x409");
        fs::create_dir_all(&strings)?;
        write(&strings.join("manufacturer"), "rawgadget bench")?;
        write(&strings.join("product"), "SourceSink")?;
        write(&strings.join("serialnumber"), "0123456789")?;
        let config = root.join("configs/c.1");
        fs::create_dir_all(config.join("strings/0x409"))?;
        write(&config.join("strings/0x409/configuration"), "source/sink")?;
        let func = root.join("functions/SourceSink.0");
        fs::create_dir_all(&func)?;
        write(&func.join("pattern"), "1")?;
        let link = config.join("SourceSink.0");
        if !link.exists() {
            std::os::unix::fs::symlink(&func, &link).context("linking SourceSink.0 into c.1")?;
        }
        write(&root.join("UDC"), udc)?;
        Ok(g)
    }

    /// Unbinds from the UDC and removes the configfs tree (rmdir in reverse creation order).
    pub fn unbind(self) -> Result<()> {
        // Already unbound after a hang (ENODEV) is fine.
        if let Err(e) = fs::write(self.root.join("UDC"), "\n") {
            if e.raw_os_error() != Some(libc::ENODEV) {
                return Err(anyhow!("unbinding SourceSink: {e}"));
            }
        }
        let r = &self.root;
        let _ = fs::remove_file(r.join("configs/c.1/SourceSink.0"));
        for d in [
            "configs/c.1/strings/0x409",
            "configs/c.1",
            "functions/SourceSink.0",
            "strings/0x409",
            "",
        ] {
            let p = if d.is_empty() { r.clone() } else { r.join(d) };
            fs::remove_dir(&p).with_context(|| format!("rmdir {}", p.display()))?;
        }
        Ok(())
    }
}

/// A userspace gadget process (our `rawgadget` CLI) running on raw_gadget.ko.
pub struct GadgetProcess {
    child: Child,
    pub what: String,
}

impl GadgetProcess {
    /// Starts `program args...` with its output on the console.
    pub fn spawn(program: &str, args: &[String]) -> Result<GadgetProcess> {
        let what = format!("{program} {}", args.join(" "));
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(GadgetProcess { child, what })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has already exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("{} exited early: {st}", self.what);
        }
        Ok(())
    }

    /// Asks the process to stop (SIGINT, then SIGKILL after `grace`) and reaps it.
    pub fn stop(mut self, grace: Duration) -> Result<std::process::ExitStatus> {
        if let Some(st) = self.child.try_wait()? {
            return Ok(st);
        }
        signal(self.child.id(), libc::SIGINT);
        let deadline = Instant::now() + grace;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                return Ok(self.child.wait()?);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends `sig` to process `pid`.
#[allow(unsafe_code)]
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// The usbip-vudc.0 → vhci_hcd.0 attach through a UNIX socketpair (contract U17, O1): writes one
/// end's fd to vudc's `usbip_sockfd` and `<port> <fd> <devid> <speed>` to vhci's `attach`, from this
/// process, whose fd table both files resolve the numbers in. Returns the two ends, which the caller
/// keeps open for as long as the device should stay attached.
pub fn vudc_attach(
    vudc: &str,
    speed: u32,
    timeout: Duration,
) -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::AsRawFd;
    let (vudc_end, vhci_end) = sys::socketpair()?;
    let sockfd_file = PathBuf::from(format!("/sys/devices/platform/{vudc}/usbip_sockfd"));
    let attach_file = Path::new("/sys/devices/platform/vhci_hcd.0/attach");
    wait_path(&sockfd_file, timeout)?;
    wait_path(attach_file, timeout)?;
    // vudc refuses the socket (ENODEV, "gadget not bound") until a gadget driver has bound and
    // pulled up; a userspace gadget does that some time after it starts.
    let deadline = Instant::now() + timeout;
    loop {
        match fs::write(&sockfd_file, vudc_end.as_raw_fd().to_string()) {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::ENODEV) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(anyhow!("writing usbip_sockfd of {vudc}: {e}")),
        }
    }
    // devid is only echoed in usbip headers; vudc does not check it. Port 0 is on the high-speed
    // hub (U18); retry on the next HS port when busy (U19).
    let devid = (1u32 << 16) | 2;
    let mut last = None;
    for port in 0..15u32 {
        match fs::write(
            attach_file,
            format!("{port} {} {devid} {speed}", vhci_end.as_raw_fd()),
        ) {
            Ok(()) => return Ok((vudc_end, vhci_end)),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
            Err(e) => return Err(anyhow!("writing vhci attach: {e}")),
        }
    }
    Err(anyhow!("no free vhci port: {last:?}"))
}

#[allow(unsafe_code)]
mod sys {
    use std::os::fd::{FromRawFd, OwnedFd};

    /// `socketpair(AF_UNIX, SOCK_STREAM)`.
    pub fn socketpair() -> std::io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors the call writes.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }
}
