//! The device node: not shadowing the kernel module's, and its mode and group.
//!
//! CUSE's DEVNAME only names the device (`/sys/class/cuse/NAME`); devtmpfs creates `/dev/NAME`
//! with mode 0600 root:root (the `cuse` class has no `devnode` callback) and udev may then
//! apply rules. Mode, owner and group therefore need either a udev rule
//! (`packaging/99-rawgadget.rules`) or the daemon itself: [`apply_permissions`] waits for the
//! node with our device number, creates it with `mknod` where no devtmpfs does (containers),
//! then `chmod`/`chown`s it. If both are used, keep them the same: whichever runs last wins.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use rustix::fs::{FileType, Gid, Mode, Uid};

/// Why the node cannot be served under this name.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(
        "the raw_gadget kernel module is loaded ({misc} exists): /dev/{name} is the real one. \
         Unload it (`rmmod raw_gadget`) or serve under another name (--name)"
    )]
    ModuleLoaded { name: String, misc: PathBuf },
    #[error(
        "another CUSE server already serves /dev/{name} ({cuse} exists): stop it or use --name"
    )]
    AnotherServer { name: String, cuse: PathBuf },
    #[error("/dev/{name} exists and is not ours; remove it or use --name")]
    Exists { name: String },
    #[error("bad node name {0:?}: use letters, digits, '.', '_' and '-'")]
    BadName(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

/// Where sysfs and /dev are (tests point them to a temporary tree).
#[derive(Clone, Debug)]
pub struct Roots {
    pub dev: PathBuf,
    pub sys_class: PathBuf,
}

impl Default for Roots {
    fn default() -> Roots {
        Roots {
            dev: "/dev".into(),
            sys_class: "/sys/class".into(),
        }
    }
}

/// A node name CUSE and devtmpfs accept as one path component.
pub fn check_name(name: &str) -> Result<(), NodeError> {
    let ok = !name.is_empty()
        && name.len() < 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NodeError::BadName(name.into()))
    }
}

/// Refuses a name the kernel module or another server holds (issue 6 item 2). A node left by a
/// server that just exited disappears asynchronously; it is given `settle` to go.
///
/// # Errors
/// [`NodeError`] with the fix in its message.
pub fn check_free(roots: &Roots, name: &str, settle: Duration) -> Result<(), NodeError> {
    check_name(name)?;
    let misc = roots.sys_class.join("misc").join(name);
    if misc.exists() {
        return Err(NodeError::ModuleLoaded {
            name: name.into(),
            misc,
        });
    }
    let cuse = roots.sys_class.join("cuse").join(name);
    let node = roots.dev.join(name);
    let deadline = Instant::now() + settle;
    while node.symlink_metadata().is_ok() || cuse.exists() {
        if Instant::now() >= deadline {
            if cuse.exists() {
                return Err(NodeError::AnotherServer {
                    name: name.into(),
                    cuse,
                });
            }
            return Err(NodeError::Exists { name: name.into() });
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Who may open the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permissions {
    /// Default 0o600.
    pub mode: u32,
    /// Default root (0).
    pub uid: u32,
    /// Default root (0).
    pub gid: u32,
}

impl Default for Permissions {
    fn default() -> Permissions {
        Permissions {
            mode: 0o600,
            uid: 0,
            gid: 0,
        }
    }
}

/// `MAJ:MIN` from `/sys/class/cuse/NAME/dev`.
fn cuse_devt(roots: &Roots, name: &str) -> Option<(u32, u32)> {
    let text = fs::read_to_string(roots.sys_class.join("cuse").join(name).join("dev")).ok()?;
    let (maj, min) = text.trim().split_once(':')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

/// Waits (up to `timeout`) for `/dev/NAME` to be the CUSE device, creates it if nobody does,
/// then sets its mode, owner and group. Returns the node's path.
///
/// # Errors
/// [`NodeError::Io`] naming the step that failed.
pub fn apply_permissions(
    roots: &Roots,
    name: &str,
    perms: Permissions,
    timeout: Duration,
) -> Result<PathBuf, NodeError> {
    let node = roots.dev.join(name);
    let io_err = |what: String| move |source: io::Error| NodeError::Io { what, source };
    let deadline = Instant::now() + timeout;
    let devt = loop {
        if let Some(d) = cuse_devt(roots, name) {
            break d;
        }
        if Instant::now() >= deadline {
            return Err(NodeError::Io {
                what: format!("waiting for /sys/class/cuse/{name}/dev"),
                source: io::ErrorKind::TimedOut.into(),
            });
        }
        thread::sleep(Duration::from_millis(20));
    };
    let want = rustix::fs::makedev(devt.0, devt.1);
    loop {
        if let Ok(st) = rustix::fs::stat(&node) {
            if FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice
                && st.st_rdev == want
            {
                break;
            }
        }
        if Instant::now() >= deadline {
            // no devtmpfs (a container): make the node ourselves
            let _ = fs::remove_file(&node);
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &node,
                FileType::CharacterDevice,
                Mode::from_raw_mode(perms.mode & 0o777),
                want,
            )
            .map_err(io::Error::from)
            .map_err(io_err(format!("mknod {}", node.display())))?;
            tracing::info!(node = %node.display(), "no devtmpfs node appeared: created it");
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    rustix::fs::chown(
        &node,
        Some(Uid::from_raw(perms.uid)),
        Some(Gid::from_raw(perms.gid)),
    )
    .map_err(io::Error::from)
    .map_err(io_err(format!("chown {}", node.display())))?;
    rustix::fs::chmod(&node, Mode::from_raw_mode(perms.mode & 0o7777))
        .map_err(io::Error::from)
        .map_err(io_err(format!("chmod {}", node.display())))?;
    Ok(node)
}

/// A user or group given by name or number, looked up in `/etc/passwd` or `/etc/group`
/// (busybox systems have both; no NSS).
pub fn lookup_id(db: &Path, name_or_id: &str) -> Option<u32> {
    if let Ok(n) = name_or_id.parse() {
        return Some(n);
    }
    let text = fs::read_to_string(db).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let id = f.next()?;
        (name == name_or_id).then(|| id.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempdir::Dir, Roots) {
        let d = tempdir::Dir::new();
        let roots = Roots {
            dev: d.path().join("dev"),
            sys_class: d.path().join("sys/class"),
        };
        fs::create_dir_all(&roots.dev).unwrap();
        fs::create_dir_all(roots.sys_class.join("misc")).unwrap();
        fs::create_dir_all(roots.sys_class.join("cuse")).unwrap();
        (d, roots)
    }

    /// A small temporary directory, removed on drop (no extra dependency).
    mod tempdir {
        use std::path::{Path, PathBuf};
        pub struct Dir(PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "rawgadget-cuse-node-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    /// Issue 6 item 2: with the module loaded, the name is refused with the fix.
    #[test]
    fn refuses_the_modules_node() {
        let (_d, roots) = tree();
        fs::create_dir_all(roots.sys_class.join("misc/raw-gadget")).unwrap();
        fs::write(roots.dev.join("raw-gadget"), b"").unwrap();
        let e = check_free(&roots, "raw-gadget", Duration::ZERO).unwrap_err();
        assert!(matches!(e, NodeError::ModuleLoaded { .. }), "{e}");
        assert!(e.to_string().contains("--name"));
        // another name is fine
        check_free(&roots, "raw-gadget-cuse", Duration::ZERO).unwrap();
    }

    #[test]
    fn refuses_another_server_and_strangers_but_waits_for_a_stale_node() {
        let (_d, roots) = tree();
        fs::create_dir_all(roots.sys_class.join("cuse/raw-gadget")).unwrap();
        let e = check_free(&roots, "raw-gadget", Duration::ZERO).unwrap_err();
        assert!(matches!(e, NodeError::AnotherServer { .. }), "{e}");
        fs::remove_dir_all(roots.sys_class.join("cuse/raw-gadget")).unwrap();
        fs::write(roots.dev.join("raw-gadget"), b"").unwrap();
        assert!(matches!(
            check_free(&roots, "raw-gadget", Duration::ZERO),
            Err(NodeError::Exists { .. })
        ));
        // a node that goes away while we wait (a server that just exited) is accepted
        let node = roots.dev.join("raw-gadget");
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            fs::remove_file(node).unwrap();
        });
        check_free(&roots, "raw-gadget", Duration::from_secs(5)).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn names_are_one_path_component() {
        for bad in ["", "..", "a/b", "raw gadget", "x\0"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("raw-gadget.1_x").unwrap();
    }

    #[test]
    fn ids_by_name_or_number() {
        let (d, _) = tree();
        let db = d.path().join("group");
        fs::write(&db, "root:x:0:\nplugdev:x:46:alice\n").unwrap();
        assert_eq!(lookup_id(&db, "plugdev"), Some(46));
        assert_eq!(lookup_id(&db, "1234"), Some(1234));
        assert_eq!(lookup_id(&db, "nobody-here"), None);
    }
}
