//! Attaching to the local vhci-hcd through sysfs, with no TCP and no `usbip` tool
//! (contract §3.4, U17–U21).
//!
//! One end of an AF_UNIX socketpair is written to `vhci_hcd.0/attach` as
//! `"<port> <sockfd> <devid> <speed>"` by this process (the fd is looked up in the writer's fd
//! table, U17); the kernel keeps its own reference and we close our copy. The other end
//! carries the URBs. Closing it (the gadget closed, the process died) makes vhci read EOF and
//! detach the port (U20), so no `detach` write is needed.
//!
//! The port is a free one (state 4, `VDEV_ST_NULL`) on the hub of the right speed, numbered
//! globally as `controller × 2·HC_PORTS + half × HC_PORTS + rhport`, SuperSpeed half for speed
//! ≥ 5 (U18, S1); a port that turns out busy gives EBUSY and the next one is tried (U19).
//!
//! Root is needed (both files are mode 0200), and the modules `usbip-core` and `vhci-hcd`. The
//! write itself is an ordinary `write(2)` of text: no `unsafe` is involved.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rawgadget_uapi::{Errno, Speed};

use crate::device::{NotReady, UsbipDevice};
use crate::driver::{ConnectionEnd, ConnectionHandle};
use crate::link::Budget;

/// Where vhci_hcd.0's attributes live.
pub const VHCI_SYSFS: &str = "/sys/devices/platform/vhci_hcd.0";

/// `VDEV_ST_NULL` (`include/uapi/linux/usbip.h`): the port is free.
pub const VDEV_ST_NULL: u32 = 4;

/// Which root hub of a vhci controller a port belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Hub {
    /// The USB 2 hub (`hs` in `status`): low, full and high speed.
    High,
    /// The USB 3 hub (`ss`): SuperSpeed and SuperSpeed Plus (contract S1).
    Super,
}

impl Hub {
    /// The hub vhci's `attach` picks for `speed` (`vhci_sysfs.c:359-362`).
    pub fn for_speed(speed: Speed) -> Hub {
        if speed >= Speed::Super {
            Hub::Super
        } else {
            Hub::High
        }
    }
}

impl fmt::Display for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hub::High => "hs",
            Hub::Super => "ss",
        })
    }
}

/// One line of a `status` file.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct PortState {
    pub hub: Hub,
    /// The global port number `attach` and `detach` take (U18).
    pub port: u32,
    /// `VDEV_ST_*`; [`VDEV_ST_NULL`] is free.
    pub status: u32,
}

impl PortState {
    pub fn is_free(&self) -> bool {
        self.status == VDEV_ST_NULL
    }
}

/// The global port number of `rhport` on `hub` of controller `controller`, with `hc_ports`
/// ports per hub (`vhci.h`: `port_to_rhport`, `port_to_pdev_nr`; contract U18).
pub fn port_number(controller: u32, hub: Hub, rhport: u32, hc_ports: u32) -> u32 {
    let half = match hub {
        Hub::High => 0,
        Hub::Super => 1,
    };
    controller * 2 * hc_ports + half * hc_ports + rhport
}

/// Parses one `status` file (`status_show`, `vhci_sysfs.c:153-170`): a header line, then
/// `hub port sta spd dev sockfd local_busid` per port. Lines that do not parse are skipped.
pub fn parse_status(text: &str) -> Vec<PortState> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let hub = match f.next()? {
                "hs" => Hub::High,
                "ss" => Hub::Super,
                _ => return None,
            };
            let port = f.next()?.parse().ok()?;
            let status = f.next()?.parse().ok()?;
            Some(PortState { hub, port, status })
        })
        .collect()
}

/// The free ports `attach` may use for `speed`, in port order (U18).
pub fn free_ports(ports: &[PortState], speed: Speed) -> Vec<u32> {
    let hub = Hub::for_speed(speed);
    let mut free: Vec<u32> = ports
        .iter()
        .filter(|p| p.hub == hub && p.is_free())
        .map(|p| p.port)
        .collect();
    free.sort_unstable();
    free
}

/// Why a local attach failed. The messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(
        "vhci-hcd is not loaded ({path} is missing): run `modprobe vhci-hcd` as root. The \
         module (and usbip-core) ships with Debian's kernel packages (linux-image-*); the \
         userspace `usbip` tool is package `usbip` and is not needed here"
    )]
    VhciMissing { path: PathBuf },
    #[error("writing {path} needs root (the file is mode 0200): {source}")]
    Permission { path: PathBuf, source: io::Error },
    #[error("no free vhci port on the {hub} hub for a {speed} device")]
    NoFreePort { hub: Hub, speed: &'static str },
    #[error("every free vhci port on the {hub} hub stayed busy (EBUSY) after {attempts} attempts")]
    Busy { hub: Hub, attempts: u32 },
    #[error("vhci refused the attach of port {port}: {source}")]
    Refused { port: u32, source: io::Error },
    #[error("reading {path}: {source}")]
    Status { path: PathBuf, source: io::Error },
    #[error("cannot attach: {0}")]
    NotReady(#[from] NotReady),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// vhci's sysfs directory. [`VhciSysfs::system`] is the real one; tests point
/// [`VhciSysfs::at`] to a directory of plain files.
#[derive(Clone, Debug)]
pub struct VhciSysfs {
    root: PathBuf,
}

impl VhciSysfs {
    pub fn system() -> VhciSysfs {
        VhciSysfs::at(VHCI_SYSFS)
    }

    pub fn at(root: impl Into<PathBuf>) -> VhciSysfs {
        VhciSysfs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// # Errors
    /// [`AttachError::VhciMissing`] without an `attach` file.
    pub fn check(&self) -> Result<(), AttachError> {
        let attach = self.root.join("attach");
        if attach.exists() {
            Ok(())
        } else {
            Err(AttachError::VhciMissing { path: attach })
        }
    }

    /// Every port of every controller: `status`, `status.1`, … until one is missing (U18).
    ///
    /// # Errors
    /// [`AttachError::VhciMissing`] without `status`, [`AttachError::Status`] when one cannot
    /// be read.
    pub fn ports(&self) -> Result<Vec<PortState>, AttachError> {
        let mut ports = Vec::new();
        for i in 0u32.. {
            let name = if i == 0 {
                "status".to_string()
            } else {
                format!("status.{i}")
            };
            let path = self.root.join(&name);
            match fs::read_to_string(&path) {
                Ok(text) => ports.extend(parse_status(&text)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && i == 0 => {
                    return Err(AttachError::VhciMissing { path })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(source) => return Err(AttachError::Status { path, source }),
            }
        }
        Ok(ports)
    }

    /// Writes `"<port> <sockfd> <devid> <speed>"` to `attach` (U17) in one `write(2)`, as the
    /// store handler parses the whole buffer at once.
    ///
    /// # Errors
    /// The store's errno: EBUSY for a used port (U19), EINVAL for a bad argument or socket.
    pub fn write_attach(&self, port: u32, sockfd: i32, devid: u32, speed: Speed) -> io::Result<()> {
        let line = format!("{port} {sockfd} {devid} {}", speed as u8);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(self.root.join("attach"))?;
        let n = file.write(line.as_bytes())?;
        if n != line.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write to the attach file",
            ));
        }
        Ok(())
    }
}

/// Tries the free ports of `speed`'s hub in order, writing the attach for each until one
/// succeeds (contract U18); EBUSY moves on to the next (U19), and a round that finds none
/// re-reads the ports after `retry_delay`, since a release is asynchronous. Returns the port.
///
/// # Errors
/// [`AttachError::NoFreePort`] when no round saw a free port, [`AttachError::Busy`] when every
/// one tried was busy, [`AttachError::Permission`] or [`AttachError::Refused`] at the first
/// other failure.
pub fn attach_first_free(
    mut ports: impl FnMut() -> Result<Vec<PortState>, AttachError>,
    mut write_attach: impl FnMut(u32) -> io::Result<()>,
    speed: Speed,
    attempts: u32,
    retry_delay: Duration,
    attach_path: &Path,
) -> Result<u32, AttachError> {
    let hub = Hub::for_speed(speed);
    let mut saw_free = false;
    for round in 0..attempts.max(1) {
        if round > 0 {
            std::thread::sleep(retry_delay);
        }
        for candidate in free_ports(&ports()?, speed) {
            saw_free = true;
            match write_attach(candidate) {
                Ok(()) => return Ok(candidate),
                // contract U19: taken meanwhile, or not yet released: the next one
                Err(e) if e.raw_os_error() == Some(Errno::EBUSY.raw()) => {
                    tracing::debug!(port = candidate, "vhci port busy (EBUSY), trying the next");
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    return Err(AttachError::Permission {
                        path: attach_path.to_path_buf(),
                        source: e,
                    })
                }
                Err(source) => {
                    return Err(AttachError::Refused {
                        port: candidate,
                        source,
                    })
                }
            }
        }
    }
    if saw_free {
        Err(AttachError::Busy {
            hub,
            attempts: attempts.max(1),
        })
    } else {
        Err(AttachError::NoFreePort {
            hub,
            speed: speed.as_str(),
        })
    }
}

/// Options of a local attach.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    pub sysfs: VhciSysfs,
    /// Byte budgets: [`Budget::LOCAL_VHCI`] (vhci is a trusted kernel peer, U25).
    pub budget: Budget,
    /// `devid` of the attach, echoed by vhci in every header (U2); the stock tool uses
    /// `busnum << 16 | devnum`.
    pub devid: u32,
    /// Rounds of (re-read `status`, try every free port) before giving up on EBUSY (U19:
    /// port release is asynchronous).
    pub attempts: u32,
    /// Pause between rounds.
    pub retry_delay: Duration,
}

impl Default for AttachOptions {
    fn default() -> AttachOptions {
        AttachOptions {
            sysfs: VhciSysfs::system(),
            budget: Budget::LOCAL_VHCI,
            devid: 0x0001_0001,
            attempts: 10,
            retry_delay: Duration::from_millis(100),
        }
    }
}

/// A device attached to a local vhci port. Dropping it (or [`Attachment::detach`]) closes
/// our end of the socket, and vhci detaches the port (U20).
#[derive(Debug)]
pub struct Attachment {
    pub port: u32,
    pub hub: Hub,
    pub speed: Speed,
    pub devid: u32,
    connection: ConnectionHandle,
}

impl Attachment {
    /// Whether the port is still attached (the connection runs).
    pub fn is_attached(&self) -> bool {
        self.connection.is_running()
    }

    /// Closes our end: DISCONNECT for the gadget, and vhci detaches the port.
    pub fn detach(self) -> ConnectionEnd {
        self.connection.close();
        self.connection.join()
    }

    /// Waits until the connection ends (vhci dropped the port, the gadget closed).
    pub fn wait(self) -> ConnectionEnd {
        self.connection.join()
    }

    /// The connection's counters.
    pub fn stats(&self) -> crate::link::LinkStats {
        self.connection.stats()
    }
}

impl fmt::Display for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vhci port {} ({} hub), {}, devid 0x{:08x}",
            self.port,
            self.hub,
            self.speed.as_str(),
            self.devid
        )
    }
}

/// Attaches `device` to a free local vhci port. Waits for the gadget's RUN (up to the
/// device's `run_timeout`), picks a port of the hub its speed needs, writes the socket to
/// `attach`, resets the device's port (U5) and serves the connection on its own thread.
///
/// # Errors
/// [`AttachError`], whose message names the fix (load vhci-hcd, run as root ...).
pub fn attach_local(device: &UsbipDevice, opts: AttachOptions) -> Result<Attachment, AttachError> {
    opts.sysfs.check()?;
    let speed = device.wait_running(device.config().run_timeout)?;
    let claim = device.claim()?;
    let hub = Hub::for_speed(speed);
    let (ours, theirs) = UnixStream::pair()?;
    let port = attach_first_free(
        || opts.sysfs.ports(),
        |port| {
            opts.sysfs
                .write_attach(port, theirs.as_raw_fd(), opts.devid, speed)
        },
        speed,
        opts.attempts,
        opts.retry_delay,
        &opts.sysfs.root().join("attach"),
    )?;
    // contract U17: the kernel holds its own reference to that end now
    drop(theirs);
    let span = tracing::info_span!("usbip", port, hub = %hub);
    let link = std::sync::Arc::new(std::sync::Mutex::new(crate::link::Link::attached(
        device.link_config(opts.budget),
    )));
    let now = device.clock().now();
    device.bus().with(|bus| {
        link.lock()
            .unwrap_or_else(|e| e.into_inner())
            .attach(bus, now)
    });
    let connection = device.spawn(link, ours, span, claim)?;
    tracing::info!(port, %hub, speed = speed.as_str(), "attached to vhci");
    Ok(Attachment {
        port,
        hub,
        speed,
        devid: opts.devid,
        connection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `status` as vhci prints it (`port_show_vhci`) for Debian's 15 ports per hub: controller
    /// 0, port 1 used by a high-speed device.
    fn status_text(controller: u32, used: &[u32]) -> String {
        let mut s = String::from("hub port sta spd dev      sockfd local_busid\n");
        for hub in [Hub::High, Hub::Super] {
            for rhport in 0..15 {
                let port = port_number(controller, hub, rhport, 15);
                if used.contains(&port) {
                    s += &format!("{hub}  {port:04} 006 003 00010002 000003 1-1\n");
                } else {
                    s += &format!("{hub}  {port:04} 004 000 00000000 000000 0-0\n");
                }
            }
        }
        s
    }

    /// contract U18: the global numbering, and the status lines that carry it.
    #[test]
    fn u18_port_numbers_are_global() {
        assert_eq!(port_number(0, Hub::High, 0, 15), 0);
        assert_eq!(port_number(0, Hub::Super, 0, 15), 15);
        assert_eq!(port_number(1, Hub::High, 2, 15), 32);
        assert_eq!(port_number(7, Hub::Super, 14, 15), 239);
        let ports = parse_status(&status_text(1, &[31]));
        assert_eq!(ports.len(), 30);
        assert_eq!(
            ports[0],
            PortState {
                hub: Hub::High,
                port: 30,
                status: VDEV_ST_NULL
            }
        );
        assert_eq!(
            ports[1],
            PortState {
                hub: Hub::High,
                port: 31,
                status: 6
            }
        );
        assert_eq!(
            ports[15],
            PortState {
                hub: Hub::Super,
                port: 45,
                status: VDEV_ST_NULL
            }
        );
    }

    /// contract U18, S1: speed ≥ 5 uses an SS-half port, anything slower the HS half.
    #[test]
    fn u18_free_ports_follow_the_speed() {
        let ports = parse_status(&status_text(0, &[0, 15]));
        assert_eq!(free_ports(&ports, Speed::High)[..2], [1, 2]);
        assert_eq!(free_ports(&ports, Speed::Low)[0], 1);
        assert_eq!(free_ports(&ports, Speed::Super)[..2], [16, 17]);
        assert_eq!(free_ports(&ports, Speed::SuperPlus)[0], 16);
        assert!(free_ports(&ports, Speed::Super)
            .iter()
            .all(|p| (15..30).contains(p)));
    }

    fn ebusy() -> io::Error {
        io::Error::from_raw_os_error(Errno::EBUSY.raw())
    }

    /// contract U19: EBUSY moves on to the next free port.
    #[test]
    fn u19_ebusy_tries_the_next_port() {
        let ports = parse_status(&status_text(0, &[]));
        let mut tried = Vec::new();
        let port = attach_first_free(
            || Ok(ports.clone()),
            |p| {
                tried.push(p);
                if p < 3 {
                    Err(ebusy())
                } else {
                    Ok(())
                }
            },
            Speed::High,
            1,
            Duration::ZERO,
            Path::new("attach"),
        )
        .unwrap();
        assert_eq!(port, 3);
        assert_eq!(tried, [0, 1, 2, 3]);
    }

    /// contract U19: a release is asynchronous: rounds re-read the status.
    #[test]
    fn u19_busy_ports_are_retried_after_a_new_read() {
        let mut reads = 0;
        let port = attach_first_free(
            || {
                reads += 1;
                let used: Vec<u32> = if reads == 1 {
                    (0..15).collect()
                } else {
                    (0..14).collect()
                };
                Ok(parse_status(&status_text(0, &used)))
            },
            |_| Ok(()),
            Speed::High,
            3,
            Duration::ZERO,
            Path::new("attach"),
        )
        .unwrap();
        assert_eq!((port, reads), (14, 2));
    }

    /// contract U19: every port busy, or none free, or a refusal: clear errors.
    #[test]
    fn u19_attach_errors_say_why() {
        let ports = parse_status(&status_text(0, &[]));
        let busy = attach_first_free(
            || Ok(ports.clone()),
            |_| Err(ebusy()),
            Speed::Super,
            2,
            Duration::ZERO,
            Path::new("a"),
        );
        assert!(matches!(
            busy,
            Err(AttachError::Busy {
                hub: Hub::Super,
                attempts: 2
            })
        ));
        let full = parse_status(&status_text(0, &(0..30).collect::<Vec<_>>()));
        let none = attach_first_free(
            || Ok(full.clone()),
            |_| Ok(()),
            Speed::High,
            2,
            Duration::ZERO,
            Path::new("a"),
        );
        assert!(matches!(
            none,
            Err(AttachError::NoFreePort { hub: Hub::High, .. })
        ));
        let denied = attach_first_free(
            || Ok(ports.clone()),
            |_| Err(io::Error::from_raw_os_error(13)),
            Speed::High,
            1,
            Duration::ZERO,
            Path::new("a"),
        );
        assert!(matches!(denied, Err(AttachError::Permission { .. })));
        let inval = attach_first_free(
            || Ok(ports.clone()),
            |_| Err(io::Error::from_raw_os_error(22)),
            Speed::High,
            1,
            Duration::ZERO,
            Path::new("a"),
        );
        assert!(matches!(inval, Err(AttachError::Refused { port: 0, .. })));
    }

    /// contract U17: without vhci-hcd, the error names the fix and the packages.
    #[test]
    fn u17_missing_vhci_says_modprobe_and_package() {
        let dir = tempfile::tempdir().unwrap();
        let e = VhciSysfs::at(dir.path().join("vhci_hcd.0"))
            .check()
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("modprobe vhci-hcd"), "{msg}");
        assert!(msg.contains("linux-image"), "{msg}");
        assert!(msg.contains("package `usbip`"), "{msg}");
    }

    /// contract U18: `status`, `status.1` … are all read.
    #[test]
    fn u18_every_status_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("status"), status_text(0, &[])).unwrap();
        fs::write(dir.path().join("status.1"), status_text(1, &[])).unwrap();
        let ports = VhciSysfs::at(dir.path()).ports().unwrap();
        assert_eq!(ports.len(), 60);
        assert_eq!(ports.last().unwrap().port, 59);
    }
}
