//! The host side of a USB device through usbfs (`/dev/bus/usb/BBB/DDD`): control and bulk transfers,
//! asynchronous URBs (submit, discard, reap), resets and halts, and the `USBDEVFS_IOCTL` pass-through
//! that hands a request to the interface's kernel driver (usbtest).
//!
//! Everything that touches the kernel ABI is in [`sys`]; [`Device`] is the safe wrapper the usbtest
//! runner and the scripted host use. URBs in flight are owned by [`Device`] and pinned in boxes, since
//! the kernel keeps their addresses until they are reaped.
//!
//! This module is the bench's usbfs ABI edge, so `unsafe` is allowed here (each block says why).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use rawgadget_uapi::Errno;

/// usbfs URB types (`USBDEVFS_URB_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrbType {
    Iso = 0,
    Interrupt = 1,
    Control = 2,
    Bulk = 3,
}

/// The raw ABI: ioctl numbers and structs of `include/uapi/linux/usbdevice_fs.h` (64-bit layout).
pub mod sys {
    use rawgadget_uapi::{ioc, IOC_NONE, IOC_READ, IOC_WRITE};
    use std::os::fd::RawFd;

    const U: u8 = b'U';

    /// `struct usbdevfs_ctrltransfer`.
    #[repr(C)]
    pub struct CtrlTransfer {
        pub b_request_type: u8,
        pub b_request: u8,
        pub w_value: u16,
        pub w_index: u16,
        pub w_length: u16,
        /// Milliseconds; 0 waits forever.
        pub timeout: u32,
        pub data: *mut libc::c_void,
    }

    /// `struct usbdevfs_bulktransfer`.
    #[repr(C)]
    pub struct BulkTransfer {
        pub ep: u32,
        pub len: u32,
        pub timeout: u32,
        pub data: *mut libc::c_void,
    }

    /// `struct usbdevfs_setinterface`.
    #[repr(C)]
    pub struct SetInterface {
        pub interface: u32,
        pub altsetting: u32,
    }

    /// `struct usbdevfs_urb` without iso packet descriptors.
    #[repr(C)]
    pub struct Urb {
        pub urb_type: u8,
        pub endpoint: u8,
        pub status: i32,
        pub flags: u32,
        pub buffer: *mut libc::c_void,
        pub buffer_length: i32,
        pub actual_length: i32,
        pub start_frame: i32,
        pub number_of_packets: i32,
        pub error_count: i32,
        pub signr: u32,
        pub usercontext: *mut libc::c_void,
    }

    /// `struct usbdevfs_ioctl`: a request for the driver bound to interface `ifno`.
    #[repr(C)]
    pub struct IoctlWrapper {
        pub ifno: i32,
        pub ioctl_code: i32,
        pub data: *mut libc::c_void,
    }

    pub const USBDEVFS_CONTROL: u32 = ioc(IOC_READ | IOC_WRITE, U, 0, size_of::<CtrlTransfer>());
    pub const USBDEVFS_BULK: u32 = ioc(IOC_READ | IOC_WRITE, U, 2, size_of::<BulkTransfer>());
    pub const USBDEVFS_SETINTERFACE: u32 = ioc(IOC_READ, U, 4, size_of::<SetInterface>());
    pub const USBDEVFS_SETCONFIGURATION: u32 = ioc(IOC_READ, U, 5, size_of::<u32>());
    pub const USBDEVFS_SUBMITURB: u32 = ioc(IOC_READ, U, 10, size_of::<Urb>());
    pub const USBDEVFS_DISCARDURB: u32 = ioc(IOC_NONE, U, 11, 0);
    pub const USBDEVFS_REAPURBNDELAY: u32 = ioc(IOC_WRITE, U, 13, size_of::<usize>());
    pub const USBDEVFS_CLAIMINTERFACE: u32 = ioc(IOC_READ, U, 15, size_of::<u32>());
    pub const USBDEVFS_RELEASEINTERFACE: u32 = ioc(IOC_READ, U, 16, size_of::<u32>());
    pub const USBDEVFS_IOCTL: u32 = ioc(IOC_READ | IOC_WRITE, U, 18, size_of::<IoctlWrapper>());
    pub const USBDEVFS_RESET: u32 = ioc(IOC_NONE, U, 20, 0);
    pub const USBDEVFS_CLEAR_HALT: u32 = ioc(IOC_READ, U, 21, size_of::<u32>());
    pub const USBDEVFS_DISCONNECT: u32 = ioc(IOC_NONE, U, 22, 0);
    pub const USBDEVFS_CONNECT: u32 = ioc(IOC_NONE, U, 23, 0);
    pub const USBDEVFS_GET_SPEED: u32 = ioc(IOC_NONE, U, 31, 0);

    fn check(ret: libc::c_int) -> Result<libc::c_int, i32> {
        if ret < 0 {
            Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO))
        } else {
            Ok(ret)
        }
    }

    /// An ioctl whose argument is a pointer to `T` (read, written or both by the kernel).
    ///
    /// # Safety
    /// `cmd` must be an ioctl that takes a `*mut T` of exactly this layout, and every pointer inside
    /// `*arg` must be valid for the access the kernel makes for the duration of the call.
    pub unsafe fn ioctl_ptr<T>(fd: RawFd, cmd: u32, arg: *mut T) -> Result<libc::c_int, i32> {
        // SAFETY: forwarded from the caller's contract.
        check(unsafe { libc::ioctl(fd, cmd as libc::c_ulong, arg) })
    }

    /// An ioctl that takes no argument (or ignores it).
    pub fn ioctl_none(fd: RawFd, cmd: u32) -> Result<libc::c_int, i32> {
        // SAFETY: the commands used with this helper (_IO) read no memory through the argument.
        check(unsafe { libc::ioctl(fd, cmd as libc::c_ulong, 0usize) })
    }

    /// An ioctl that takes a `u32` through a pointer (`_IOR(.., unsigned int)`).
    pub fn ioctl_u32(fd: RawFd, cmd: u32, value: u32) -> Result<libc::c_int, i32> {
        let mut v = value;
        // SAFETY: `v` is a live u32 for the duration of the call, as these commands expect.
        unsafe { ioctl_ptr(fd, cmd, &mut v) }
    }

    /// `USBDEVFS_DISCARDURB`: the argument is the URB's address (as given to SUBMITURB), passed
    /// as an integer.
    pub fn discard_urb(fd: RawFd, urb_addr: usize) -> Result<libc::c_int, i32> {
        // SAFETY: the kernel only compares the pointer value with its list of submitted URBs; it does
        // not dereference it.
        check(unsafe { libc::ioctl(fd, USBDEVFS_DISCARDURB as libc::c_ulong, urb_addr) })
    }

    /// `USBDEVFS_REAPURBNDELAY`: returns the address of a completed URB, or EAGAIN.
    pub fn reap_urb_ndelay(fd: RawFd) -> Result<*mut Urb, i32> {
        let mut out: *mut Urb = std::ptr::null_mut();
        // SAFETY: the kernel writes one pointer into `out`, which lives for the call.
        unsafe { ioctl_ptr(fd, USBDEVFS_REAPURBNDELAY, &mut out) }?;
        Ok(out)
    }

    /// Waits until usbfs reports a completed URB (POLLOUT) or `timeout_ms` passes. Returns whether one
    /// is ready.
    pub fn poll_reapable(fd: RawFd, timeout_ms: i32) -> Result<bool, i32> {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = check(unsafe { libc::poll(&mut pfd, 1, timeout_ms) })?;
        if n > 0
            && pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0
            && pfd.revents & libc::POLLOUT == 0
        {
            return Err(libc::ENODEV);
        }
        Ok(n > 0)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The numbers `<linux/usbdevice_fs.h>` gives on x86_64.
        #[test]
        fn ioctl_numbers_match_the_uapi_header() {
            assert_eq!(USBDEVFS_CONTROL, 0xc018_5500);
            assert_eq!(USBDEVFS_BULK, 0xc018_5502);
            assert_eq!(USBDEVFS_SETINTERFACE, 0x8008_5504);
            assert_eq!(USBDEVFS_SUBMITURB, 0x8038_550a);
            assert_eq!(USBDEVFS_DISCARDURB, 0x0000_550b);
            assert_eq!(USBDEVFS_REAPURBNDELAY, 0x4008_550d);
            assert_eq!(USBDEVFS_CLAIMINTERFACE, 0x8004_550f);
            assert_eq!(USBDEVFS_IOCTL, 0xc010_5512);
            assert_eq!(USBDEVFS_RESET, 0x0000_5514);
            assert_eq!(USBDEVFS_CLEAR_HALT, 0x8004_5515);
            assert_eq!(USBDEVFS_GET_SPEED, 0x0000_551f);
        }
    }
}

/// A device opened through usbfs.
pub struct Device {
    file: File,
    in_flight: HashMap<usize, InFlight>,
}

/// A submitted URB: the kernel holds the addresses of `urb` and `buf` until it is reaped.
struct InFlight {
    tag: String,
    urb: Box<sys::Urb>,
    buf: Box<[u8]>,
}

/// A reaped URB.
#[derive(Debug, Clone)]
pub struct Reaped {
    pub tag: String,
    /// 0 or a negative errno, as the URB completed.
    pub status: i32,
    pub actual_length: usize,
    pub endpoint: u8,
    pub data: Vec<u8>,
}

fn errno(e: i32) -> Errno {
    Errno::from_raw(e)
}

impl Device {
    /// Opens `/dev/bus/usb/BBB/DDD` read-write.
    pub fn open(path: &Path) -> std::io::Result<Device> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Device {
            file,
            in_flight: HashMap::new(),
        })
    }

    fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// `USBDEVFS_CONTROL`. For IN requests `data` receives up to `w_length` bytes; for OUT it is
    /// sent. Returns the byte count the kernel reports.
    pub fn control(
        &self,
        setup: [u8; 8],
        data: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, Errno> {
        let w_length = u16::from_le_bytes([setup[6], setup[7]]);
        if data.len() < w_length as usize {
            return Err(Errno::EINVAL);
        }
        let mut ct = sys::CtrlTransfer {
            b_request_type: setup[0],
            b_request: setup[1],
            w_value: u16::from_le_bytes([setup[2], setup[3]]),
            w_index: u16::from_le_bytes([setup[4], setup[5]]),
            w_length,
            timeout: timeout.as_millis().min(u32::MAX as u128) as u32,
            data: data.as_mut_ptr().cast(),
        };
        // SAFETY: `data` holds at least w_length bytes and outlives the call.
        let n =
            unsafe { sys::ioctl_ptr(self.fd(), sys::USBDEVFS_CONTROL, &mut ct) }.map_err(errno)?;
        Ok(n as usize)
    }

    /// `USBDEVFS_BULK` on a bulk or interrupt endpoint (usbfs picks the pipe type).
    pub fn bulk(&self, ep: u8, data: &mut [u8], timeout: Duration) -> Result<usize, Errno> {
        let mut bt = sys::BulkTransfer {
            ep: ep as u32,
            len: data.len() as u32,
            timeout: timeout.as_millis().min(u32::MAX as u128) as u32,
            data: data.as_mut_ptr().cast(),
        };
        // SAFETY: `data` is valid for `len` bytes and outlives the call.
        let n = unsafe { sys::ioctl_ptr(self.fd(), sys::USBDEVFS_BULK, &mut bt) }.map_err(errno)?;
        Ok(n as usize)
    }

    pub fn claim_interface(&self, ifno: u32) -> Result<(), Errno> {
        sys::ioctl_u32(self.fd(), sys::USBDEVFS_CLAIMINTERFACE, ifno)
            .map(drop)
            .map_err(errno)
    }

    pub fn release_interface(&self, ifno: u32) -> Result<(), Errno> {
        sys::ioctl_u32(self.fd(), sys::USBDEVFS_RELEASEINTERFACE, ifno)
            .map(drop)
            .map_err(errno)
    }

    pub fn set_configuration(&self, config: u32) -> Result<(), Errno> {
        sys::ioctl_u32(self.fd(), sys::USBDEVFS_SETCONFIGURATION, config)
            .map(drop)
            .map_err(errno)
    }

    pub fn set_interface(&self, interface: u32, altsetting: u32) -> Result<(), Errno> {
        let mut si = sys::SetInterface {
            interface,
            altsetting,
        };
        // SAFETY: `si` is a live SetInterface for the call.
        unsafe { sys::ioctl_ptr(self.fd(), sys::USBDEVFS_SETINTERFACE, &mut si) }
            .map(drop)
            .map_err(errno)
    }

    pub fn clear_halt(&self, ep: u8) -> Result<(), Errno> {
        sys::ioctl_u32(self.fd(), sys::USBDEVFS_CLEAR_HALT, ep as u32)
            .map(drop)
            .map_err(errno)
    }

    /// `USBDEVFS_RESET`: a port reset and re-enumeration by the kernel.
    pub fn reset(&self) -> Result<(), Errno> {
        sys::ioctl_none(self.fd(), sys::USBDEVFS_RESET)
            .map(drop)
            .map_err(errno)
    }

    /// Unbinds the kernel driver of interface `ifno` (`USBDEVFS_IOCTL` + `USBDEVFS_DISCONNECT`).
    pub fn disconnect_driver(&self, ifno: u32) -> Result<(), Errno> {
        self.driver_ioctl(ifno, sys::USBDEVFS_DISCONNECT, std::ptr::null_mut::<u8>())
            .map(drop)
    }

    /// Rebinds kernel drivers to interface `ifno` (`USBDEVFS_CONNECT`).
    pub fn connect_driver(&self, ifno: u32) -> Result<(), Errno> {
        self.driver_ioctl(ifno, sys::USBDEVFS_CONNECT, std::ptr::null_mut::<u8>())
            .map(drop)
    }

    /// `USBDEVFS_GET_SPEED`: the `enum usb_device_speed` value.
    pub fn speed(&self) -> Result<u32, Errno> {
        sys::ioctl_none(self.fd(), sys::USBDEVFS_GET_SPEED)
            .map(|s| s as u32)
            .map_err(errno)
    }

    /// `USBDEVFS_IOCTL`: hands `code` with `arg` to the driver bound to interface `ifno`. usbfs copies
    /// `_IOC_SIZE(code)` bytes of `*arg` in and out, as `_IOC_DIR(code)` says.
    pub fn driver_ioctl<T>(&self, ifno: u32, code: u32, arg: *mut T) -> Result<i32, Errno> {
        let mut w = sys::IoctlWrapper {
            ifno: ifno as i32,
            ioctl_code: code as i32,
            data: arg.cast(),
        };
        // SAFETY: usbfs copies _IOC_SIZE(code) bytes from/to `arg`; callers pass a `T` of that size
        // (see `usbtest::Param64`) or a null pointer for size-0 codes.
        unsafe { sys::ioctl_ptr(self.fd(), sys::USBDEVFS_IOCTL, &mut w) }.map_err(errno)
    }

    /// Submits an URB and keeps it under `tag` until it is reaped. For OUT endpoints `data` is the
    /// payload; for IN, `len` bytes are read.
    pub fn submit(
        &mut self,
        tag: &str,
        urb_type: UrbType,
        endpoint: u8,
        data: Vec<u8>,
        flags: u32,
    ) -> Result<(), Errno> {
        let mut buf = data.into_boxed_slice();
        let mut urb = Box::new(sys::Urb {
            urb_type: urb_type as u8,
            endpoint,
            status: 0,
            flags,
            buffer: buf.as_mut_ptr().cast(),
            buffer_length: buf.len() as i32,
            actual_length: 0,
            start_frame: 0,
            number_of_packets: 0,
            error_count: 0,
            signr: 0,
            usercontext: std::ptr::null_mut(),
        });
        let ptr: *mut sys::Urb = &mut *urb;
        // SAFETY: `urb` and `buf` are boxed and stored in `in_flight` until reaped (or until the
        // device is closed, which makes the kernel drop them first), so the addresses stay valid.
        unsafe { sys::ioctl_ptr(self.fd(), sys::USBDEVFS_SUBMITURB, ptr) }.map_err(errno)?;
        self.in_flight.insert(
            ptr as usize,
            InFlight {
                tag: tag.to_string(),
                urb,
                buf,
            },
        );
        Ok(())
    }

    /// Discards (unlinks) the URB submitted under `tag`; it still has to be reaped.
    pub fn discard(&mut self, tag: &str) -> Result<(), Errno> {
        let key = self
            .in_flight
            .iter()
            .find(|(_, f)| f.tag == tag)
            .map(|(k, _)| *k)
            .ok_or(Errno::ENOENT)?;
        sys::discard_urb(self.fd(), key).map(drop).map_err(errno)
    }

    /// Tags of URBs not yet reaped.
    pub fn pending(&self) -> Vec<String> {
        self.in_flight.values().map(|f| f.tag.clone()).collect()
    }

    /// Reaps one completed URB, waiting up to `timeout`. `Ok(None)` on timeout.
    pub fn reap(&mut self, timeout: Duration) -> Result<Option<Reaped>, Errno> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match sys::reap_urb_ndelay(self.fd()) {
                Ok(ptr) => {
                    let f = self
                        .in_flight
                        .remove(&(ptr as usize))
                        .ok_or(Errno::EFAULT)?;
                    let actual = f.urb.actual_length.max(0) as usize;
                    let is_in = f.urb.endpoint & 0x80 != 0;
                    let data = if is_in {
                        f.buf[..actual.min(f.buf.len())].to_vec()
                    } else {
                        Vec::new()
                    };
                    return Ok(Some(Reaped {
                        tag: f.tag,
                        status: f.urb.status,
                        actual_length: actual,
                        endpoint: f.urb.endpoint,
                        data,
                    }));
                }
                Err(libc::EAGAIN) => {}
                Err(e) => return Err(errno(e)),
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            sys::poll_reapable(
                self.fd(),
                left.as_millis().clamp(1, i32::MAX as u128) as i32,
            )
            .map_err(errno)?;
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // Unlink and reap what is still in flight so the kernel no longer points into our buffers
        // when they are freed; closing the file would also do it, but only after our boxes are gone.
        let fd = self.fd();
        for key in self.in_flight.keys() {
            let _ = sys::discard_urb(fd, *key);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !self.in_flight.is_empty() && std::time::Instant::now() < deadline {
            match sys::reap_urb_ndelay(fd) {
                Ok(ptr) => {
                    self.in_flight.remove(&(ptr as usize));
                }
                Err(libc::EAGAIN) => {
                    let _ = sys::poll_reapable(fd, 50);
                }
                Err(_) => break,
            }
        }
        // Whatever could not be reaped is leaked on purpose: the kernel may still write into it.
        for (_, f) in self.in_flight.drain() {
            std::mem::forget(f);
        }
    }
}
