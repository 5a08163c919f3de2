//! Finding USB devices the guest kernel enumerated, through `/sys/bus/usb/devices`, and reading
//! what it reports about them (the `descriptors` file, `idVendor`, interface drivers).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

const USB_DEVICES: &str = "/sys/bus/usb/devices";

/// A USB device as sysfs shows it (`/sys/bus/usb/devices/1-1`).
#[derive(Debug, Clone)]
pub struct UsbDevice {
    pub sysfs: PathBuf,
    pub busnum: u32,
    pub devnum: u32,
    pub vid: u16,
    pub pid: u16,
}

impl UsbDevice {
    /// `/dev/bus/usb/BBB/DDD`.
    pub fn devnode(&self) -> PathBuf {
        PathBuf::from(format!(
            "/dev/bus/usb/{:03}/{:03}",
            self.busnum, self.devnum
        ))
    }

    /// The sysfs directory of interface `ifno` in the active configuration.
    pub fn interface_dir(&self, ifno: u32) -> Result<PathBuf> {
        let name = self
            .sysfs
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("bad sysfs path"))?;
        let config = read_trimmed(&self.sysfs.join("bConfigurationValue")).unwrap_or_default();
        let config = if config.is_empty() {
            "1".to_string()
        } else {
            config
        };
        Ok(self.sysfs.join(format!("{name}:{config}.{ifno}")))
    }

    /// The driver bound to interface `ifno`, if any.
    pub fn interface_driver(&self, ifno: u32) -> Option<String> {
        let link = fs::read_link(self.interface_dir(ifno).ok()?.join("driver")).ok()?;
        link.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    /// The raw `descriptors` file: the device descriptor followed by every configuration's full
    /// descriptor set, as the kernel read them from the device.
    pub fn descriptors(&self) -> Result<Vec<u8>> {
        fs::read(self.sysfs.join("descriptors")).context("reading sysfs descriptors")
    }

    /// A sysfs attribute of the device, trimmed.
    pub fn attr(&self, name: &str) -> Result<String> {
        read_trimmed(&self.sysfs.join(name))
    }

    /// Whether the device directory still exists.
    pub fn present(&self) -> bool {
        self.sysfs.join("idVendor").exists()
    }
}

pub fn read_trimmed(path: &Path) -> Result<String> {
    Ok(fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

fn parse_hex16(s: &str) -> Option<u16> {
    u16::from_str_radix(s.trim(), 16).ok()
}

/// Every USB device (not interfaces, not root hubs) with the given ids.
pub fn find(vid: u16, pid: u16) -> Vec<UsbDevice> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(USB_DEVICES) else {
        return found;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(':') || name.starts_with("usb") {
            continue;
        }
        let ids = (
            read_trimmed(&path.join("idVendor"))
                .ok()
                .and_then(|s| parse_hex16(&s)),
            read_trimmed(&path.join("idProduct"))
                .ok()
                .and_then(|s| parse_hex16(&s)),
        );
        if ids != (Some(vid), Some(pid)) {
            continue;
        }
        let num = |f: &str| {
            read_trimmed(&path.join(f))
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
        };
        if let (Some(busnum), Some(devnum)) = (num("busnum"), num("devnum")) {
            // Resolve the symlink so the path survives renames of the bus listing.
            let sysfs = fs::canonicalize(&path).unwrap_or(path);
            found.push(UsbDevice {
                sysfs,
                busnum,
                devnum,
                vid,
                pid,
            });
        }
    }
    found
}

/// Waits until a device with these ids is enumerated (and, when `driver` is given, interface
/// `ifno` is bound to that driver) and its device node exists.
pub fn wait_for(
    vid: u16,
    pid: u16,
    ifno: u32,
    driver: Option<&str>,
    timeout: Duration,
) -> Result<UsbDevice> {
    let deadline = Instant::now() + timeout;
    loop {
        for d in find(vid, pid) {
            let bound = match driver {
                Some(want) => d.interface_driver(ifno).as_deref() == Some(want),
                None => true,
            };
            if bound && d.devnode().exists() {
                return Ok(d);
            }
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = find(vid, pid)
                .iter()
                .map(|d| {
                    format!(
                        "{} (if{ifno} driver {:?})",
                        d.sysfs.display(),
                        d.interface_driver(ifno)
                    )
                })
                .collect();
            return Err(anyhow!(
                "no device {vid:04x}:{pid:04x} with interface {ifno} bound to {driver:?} after {timeout:?}; seen: {seen:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until no device with these ids is left.
pub fn wait_gone(vid: u16, pid: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !find(vid, pid).is_empty() {
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "device {vid:04x}:{pid:04x} still present after {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Whether an interface's altsetting `alt` declares an isochronous endpoint, from a configuration
/// descriptor set (the bytes after the device descriptor in `descriptors`).
pub fn has_iso_endpoint(descriptors: &[u8], interface: u8, alt: u8) -> bool {
    let mut i = 0;
    let mut in_target = false;
    while i + 2 <= descriptors.len() {
        let len = descriptors[i] as usize;
        if len < 2 || i + len > descriptors.len() {
            break;
        }
        match descriptors[i + 1] {
            // INTERFACE
            4 if len >= 4 => {
                in_target = descriptors[i + 2] == interface && descriptors[i + 3] == alt
            }
            // ENDPOINT: bmAttributes transfer type 1 = isochronous
            5 if len >= 4 && in_target && descriptors[i + 3] & 3 == 1 => return true,
            _ => {}
        }
        i += len;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_endpoint_found_only_in_its_altsetting() {
        let descs = [
            // device descriptor (skipped by the walk as an unknown type)
            18, 1, 0, 2, 0xff, 0, 0, 64, 0x25, 0x05, 0xa0, 0xa4, 0, 1, 1, 2, 3, 1, // config
            9, 2, 46, 0, 1, 1, 0, 0x80, 50, // interface 0 alt 0, bulk 0x81
            9, 4, 0, 0, 1, 0xff, 0, 0, 0, 7, 5, 0x81, 2, 0, 2, 0,
            // interface 0 alt 1, iso 0x83
            9, 4, 0, 1, 1, 0xff, 0, 0, 0, 7, 5, 0x83, 1, 0, 4, 4,
        ];
        assert!(!has_iso_endpoint(&descs, 0, 0));
        assert!(has_iso_endpoint(&descs, 0, 1));
        assert!(!has_iso_endpoint(&descs, 1, 1));
    }

    #[test]
    fn truncated_descriptors_do_not_panic() {
        assert!(!has_iso_endpoint(&[9, 4, 0], 0, 0));
        assert!(!has_iso_endpoint(&[0, 0, 0, 0], 0, 0));
        assert!(!has_iso_endpoint(&[], 0, 0));
    }
}
