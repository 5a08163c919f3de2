//! The kernel ABI: the `/dev/cuse` channel and the caller's memory. The only module of the
//! crate with `unsafe` (`process_vm_readv` / `process_vm_writev`, which rustix does not wrap).

#![allow(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rawgadget_uapi::Errno;
use rustix::fs::{Mode, OFlags};

use crate::ioctl::MemError;
use crate::server::{Channel, ProcessMemory};

/// Where the CUSE channel lives (`misc` minor 203, module `cuse`).
pub const CUSE_PATH: &str = "/dev/cuse";

/// An open `/dev/cuse`: one CUSE connection, hence one character device.
///
/// Reads return one request each (several threads may read); a write sends one whole reply.
/// Closing it (dropping, or the process dying) aborts the connection: in-flight calls fail
/// with ECONNABORTED, later ones with ENOTCONN, and the node goes away (contract C13).
#[derive(Debug)]
pub struct CuseChannel {
    fd: OwnedFd,
}

impl CuseChannel {
    /// Opens the channel read-write and blocking; the kernel queues CUSE_INIT at once.
    ///
    /// # Errors
    /// ENOENT without the `cuse` module (`modprobe cuse`), EACCES without root.
    pub fn open(path: &Path) -> io::Result<CuseChannel> {
        let fd = rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
        Ok(CuseChannel { fd })
    }
}

impl Channel for CuseChannel {
    fn read_request(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(rustix::io::read(&self.fd, buf)?)
    }

    fn write_reply(&self, msg: &[u8]) -> io::Result<()> {
        let n = rustix::io::write(&self.fd, msg)?;
        if n != msg.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write to /dev/cuse",
            ));
        }
        Ok(())
    }
}

/// `process_vm_readv` / `process_vm_writev` on the calling thread (contract C11). Needs
/// `CAP_SYS_PTRACE` over the caller (root), and Yama's `ptrace_scope` below 3.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessVm;

fn classify(e: io::Error) -> MemError {
    match e.raw_os_error() {
        Some(libc::EFAULT) => MemError::Fault,
        Some(n) => MemError::Unavailable(Errno(n)),
        None => MemError::Unavailable(Errno::EIO),
    }
}

impl ProcessMemory for ProcessVm {
    fn read(&self, pid: u32, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if pid == 0 {
            return Err(MemError::Unavailable(Errno::ESRCH));
        }
        if buf.is_empty() {
            return Ok(());
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as usize as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` describes `buf`, which we own mutably for the call; `remote` is only
        // an address in the other process, checked by the kernel (a bad one is EFAULT).
        let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(classify(io::Error::last_os_error()));
        }
        if n as usize != buf.len() {
            // a partial read stops at the first unmapped page: the module's copy would fault
            return Err(MemError::Fault);
        }
        Ok(())
    }

    fn write(&self, pid: u32, addr: u64, data: &[u8]) -> Result<(), MemError> {
        if pid == 0 {
            return Err(MemError::Unavailable(Errno::ESRCH));
        }
        if data.is_empty() {
            return Ok(());
        }
        let local = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as usize as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: the kernel only reads from `local` (`data`, borrowed for the call);
        // `remote` is checked by the kernel.
        let n = unsafe { libc::process_vm_writev(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(classify(io::Error::last_os_error()));
        }
        if n as usize != data.len() {
            return Err(MemError::Fault);
        }
        Ok(())
    }
}

/// The calling thread's id, as `fuse_in_header.pid` reports a caller (tests use it).
pub fn gettid() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// contract C11: our own thread's memory through process_vm_readv/writev, and a fault.
    #[test]
    fn c11_process_vm_round_trip_on_ourselves() {
        let tid = gettid();
        let src = *b"raw gadget";
        let mut dst = [0u8; 10];
        let vm = ProcessVm;
        match vm.read(tid, src.as_ptr() as u64, &mut dst) {
            Ok(()) => assert_eq!(dst, src),
            // a sandbox may forbid it; then it must say "unavailable", never "fault"
            Err(e) => assert!(matches!(e, MemError::Unavailable(_)), "{e:?}"),
        }
        let mut target = [0u8; 4];
        if vm
            .write(tid, target.as_mut_ptr() as u64, &[1, 2, 3, 4])
            .is_ok()
        {
            assert_eq!(std::hint::black_box(target), [1, 2, 3, 4]);
            // address 8 is never mapped
            assert_eq!(vm.read(tid, 8, &mut dst), Err(MemError::Fault));
        }
        assert_eq!(
            vm.read(0, 8, &mut dst),
            Err(MemError::Unavailable(Errno::ESRCH))
        );
    }
}
