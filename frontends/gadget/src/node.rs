//! The device-node backend: `/dev/raw-gadget` of the kernel module (or of a CUSE server).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rawgadget_uapi::{Errno, Speed, UsbRawInit};

use crate::backend::{Backend, EpBuffer, EpHandle, EpInfo, IoFlags, RawEvent};
use crate::{sys, CancelHandle, Error};

/// The usual path of the raw gadget node.
pub const DEFAULT_NODE: &str = "/dev/raw-gadget";

/// One open of a raw gadget device node: one raw gadget instance.
///
/// Blocking calls are interrupted by signalling the blocked thread (see
/// [`sys::interrupt_signal`]). Closing the node (dropping the last reference) unbinds the
/// gadget from its UDC (spec §2.6).
///
/// # Platform-specific notes
/// The node allows one request in flight per endpoint and one on ep0 (spec §2.2): a second
/// concurrent read or write on the same endpoint fails with EBUSY.
#[derive(Debug)]
pub struct DeviceNode {
    fd: OwnedFd,
    path: PathBuf,
}

impl DeviceNode {
    /// Opens `path` read-write and blocking.
    ///
    /// # Errors
    /// [`Error::Open`] naming the file, with a hint when the node is missing (module not
    /// loaded) or not accessible.
    pub fn open(path: impl AsRef<Path>) -> Result<DeviceNode, Error> {
        let path = path.as_ref();
        match sys::open(path) {
            Ok(fd) => Ok(DeviceNode {
                fd,
                path: path.to_owned(),
            }),
            Err(source) => {
                let hint = match source.raw_os_error().map(Errno) {
                    Some(Errno::ENOENT) | Some(Errno::ENODEV) | Some(Errno::ENXIO) => {
                        "the raw gadget node is missing: load the kernel module \
                         (`modprobe raw_gadget`, built out of tree on kernels that do not ship \
                         it) and a UDC such as `modprobe dummy_hcd`"
                    }
                    Some(Errno::EACCES) | Some(Errno::EPERM) => {
                        "permission denied: run as root or give your user access to the node"
                    }
                    _ => "is this a raw gadget node?",
                };
                Err(Error::Open {
                    path: path.to_owned(),
                    source,
                    hint,
                })
            }
        }
    }

    /// The path this node was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs a blocking ioctl registered with `cancel`, so that another thread can interrupt it.
    ///
    /// An EINTR that `cancel` did not cause is retried: raw gadget returns EINTR for any signal
    /// (spec §2.5: it never restarts), and signals we did not send reach a blocked thread too
    /// (a debugger or `strace -p` attaching, SIGSTOP/SIGCONT). Returning it would stop the
    /// event loop or an endpoint thread for good; the C programs retry EVENT_FETCH alike.
    /// Only an EINTR from [`CancelHandle::cancel`] reaches the caller.
    fn blocking<T>(
        &self,
        cancel: &CancelHandle,
        mut call: impl FnMut() -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let _blocked = cancel
            .enter(sys::current_thread_waker())
            .map_err(|_| Errno::EINTR)?;
        loop {
            match call() {
                Err(Errno::EINTR) if !cancel.is_cancelled() => {
                    tracing::debug!("EINTR not caused by a cancel: retrying the ioctl");
                }
                r => return r,
            }
        }
    }
}

impl Backend for DeviceNode {
    fn init(&self, driver_name: &str, device_name: &str, speed: Speed) -> Result<(), Errno> {
        // Names of 128 bytes or more would be truncated by UsbRawInit::new; the module refuses
        // them with E2BIG (spec §1.5 INIT step 4), so do the same instead of truncating.
        if driver_name.len() >= 128 || device_name.len() >= 128 {
            return Err(Errno::E2BIG);
        }
        sys::init(
            &self.fd,
            &UsbRawInit::new(driver_name, device_name, speed as u8),
        )
    }

    fn run(&self) -> Result<(), Errno> {
        sys::run(&self.fd)
    }

    fn event_fetch(&self, capacity: u32, cancel: &CancelHandle) -> Result<RawEvent, Errno> {
        let (header, data) = self.blocking(cancel, || sys::event_fetch(&self.fd, capacity))?;
        Ok(RawEvent {
            event_type: header.type_,
            length: header.length,
            data,
        })
    }

    fn ep0_write(
        &self,
        data: &[u8],
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        self.blocking(cancel, || sys::ep0_write(&self.fd, data, flags.0))
    }

    fn ep0_read(
        &self,
        buf: &mut [u8],
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        self.blocking(cancel, || sys::ep0_read(&self.fd, buf, flags.0))
    }

    fn ep_enable(&self, desc: &[u8; 9]) -> Result<EpHandle, Errno> {
        sys::ep_enable(&self.fd, desc).map(EpHandle)
    }

    fn ep_disable(&self, ep: EpHandle) -> Result<(), Errno> {
        sys::ep_disable(&self.fd, ep.0)
    }

    fn ep_write(
        &self,
        ep: EpHandle,
        data: &[u8],
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        self.blocking(cancel, || sys::ep_write(&self.fd, ep.0, data, flags.0))
    }

    fn ep_read(
        &self,
        ep: EpHandle,
        buf: &mut [u8],
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        self.blocking(cancel, || sys::ep_read(&self.fd, ep.0, buf, flags.0))
    }

    fn ep_write_buf(
        &self,
        ep: EpHandle,
        buf: &mut EpBuffer,
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        self.blocking(cancel, || sys::ep_write_buf(&self.fd, ep.0, buf, flags.0))
    }

    fn ep_read_buf(
        &self,
        ep: EpHandle,
        buf: &mut EpBuffer,
        flags: IoFlags,
        cancel: &CancelHandle,
    ) -> Result<usize, Errno> {
        self.blocking(cancel, || sys::ep_read_buf(&self.fd, ep.0, buf, flags.0))
    }

    fn configure(&self) -> Result<(), Errno> {
        sys::configure(&self.fd)
    }

    fn vbus_draw(&self, units_2ma: u32) -> Result<(), Errno> {
        sys::vbus_draw(&self.fd, units_2ma)
    }

    fn eps_info(&self) -> Result<Vec<EpInfo>, Errno> {
        let (info, n) = sys::eps_info(&self.fd)?;
        Ok(info
            .eps
            .iter()
            .take(n.min(info.eps.len()))
            .map(EpInfo::from_raw)
            .collect())
    }

    fn ep0_stall(&self) -> Result<(), Errno> {
        sys::ep0_stall(&self.fd)
    }

    fn set_halt(&self, ep: EpHandle) -> Result<(), Errno> {
        sys::ep_set_halt(&self.fd, ep.0)
    }

    fn clear_halt(&self, ep: EpHandle) -> Result<(), Errno> {
        sys::ep_clear_halt(&self.fd, ep.0)
    }

    fn set_wedge(&self, ep: EpHandle) -> Result<(), Errno> {
        sys::ep_set_wedge(&self.fd, ep.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing node gives a clear error naming the file and what to do.
    #[test]
    fn missing_node_names_file_and_fix() {
        let err = DeviceNode::open("/nonexistent/raw-gadget").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/raw-gadget"), "{msg}");
        assert!(msg.contains("modprobe raw_gadget"), "{msg}");
        assert_eq!(err.errno(), Errno::ENOENT);
    }

    /// The blocking calls of the node backend honour a cancelled handle without an ioctl
    /// (on /dev/null an ioctl would give ENOTTY, so EINTR proves it was not issued).
    #[test]
    fn cancelled_handle_skips_the_ioctl() {
        let node = DeviceNode::open("/dev/null").unwrap();
        let c = CancelHandle::new();
        assert_eq!(node.event_fetch(8, &c), Err(Errno::ENOTTY));
        c.cancel();
        assert_eq!(node.event_fetch(8, &c), Err(Errno::EINTR));
        assert_eq!(
            node.ep_read(EpHandle(0), &mut [0; 8], IoFlags::NONE, &c),
            Err(Errno::EINTR)
        );
        let mut buf = EpBuffer::new(8);
        assert_eq!(
            node.ep_read_buf(EpHandle(0), &mut buf, IoFlags::NONE, &c),
            Err(Errno::EINTR)
        );
        assert_eq!(
            node.ep_write_buf(EpHandle(0), &mut buf, IoFlags::NONE, &c),
            Err(Errno::EINTR)
        );
    }

    /// spec §2.5: an EINTR from a signal nobody sent through the cancel handle (a tracer
    /// attaching, SIGSTOP/SIGCONT) is retried; one after `cancel` is returned.
    #[test]
    fn spurious_eintr_is_retried_and_cancel_is_not() {
        let node = DeviceNode::open("/dev/null").unwrap();
        let c = CancelHandle::new();
        let mut calls = 0;
        let r = node.blocking(&c, || {
            calls += 1;
            if calls < 3 {
                Err(Errno::EINTR)
            } else {
                Ok(calls)
            }
        });
        assert_eq!((r, calls), (Ok(3), 3));
        // A cancel that lands while the call is blocked: its EINTR is the result.
        let mut calls = 0;
        let r: Result<(), Errno> = node.blocking(&c, || {
            calls += 1;
            c.request_cancel();
            Err(Errno::EINTR)
        });
        assert_eq!((r, calls), (Err(Errno::EINTR), 1));
    }

    /// Over-long UDC names give E2BIG as INIT would (spec §1.5 INIT step 4).
    #[test]
    fn init_long_name_is_e2big() {
        let node = DeviceNode::open("/dev/null").unwrap();
        let long = "x".repeat(128);
        assert_eq!(
            node.init(&long, "dummy_udc.0", Speed::High),
            Err(Errno::E2BIG)
        );
        assert_eq!(
            node.init("dummy_udc", "dummy_udc.0", Speed::High),
            Err(Errno::ENOTTY)
        );
    }
}
