//! The kernel ABI: opening a raw gadget node, one small function per ioctl, and the signal that
//! interrupts a blocked ioctl. The only module of the crate with `unsafe`.
//!
//! Argument conventions (spec §1.4), kept visible by the ioctl patterns used:
//! - `_IO` ioctls (RUN, CONFIGURE, EP0_STALL) pass 0: rustix's [`NoArg`] passes a null pointer,
//!   which is the value 0 the module checks for;
//! - `_IOW(.., __u32)` ioctls (EP_DISABLE, VBUS_DRAW, EP_SET_HALT, EP_CLEAR_HALT, EP_SET_WEDGE)
//!   pass the value itself, not a pointer: [`IntegerSetter`];
//! - the others pass a pointer to their struct, followed by the payload for the I/O ioctls:
//!   `PointerArg`, this module's own (private) `Ioctl` impl, over a byte buffer laid out
//!   exactly as the C struct.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::c_void;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Once};

use rawgadget_uapi as uapi;
use rawgadget_uapi::Errno;
use rustix::fs::{Mode, OFlags};
use rustix::ioctl::{ioctl, IntegerSetter, Ioctl, IoctlOutput, NoArg, Opcode};

use crate::backend::EpBuffer;
use crate::cancel::Wake;

/// Opens a raw gadget node the way raw gadget requires: read-write, blocking (`O_NONBLOCK`
/// gives EINVAL, spec §1.1), close-on-exec.
pub fn open(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// An ioctl whose third argument is a pointer to `len` bytes laid out as the C struct (plus its
/// payload), returning the ioctl's non-negative result.
struct PointerArg<const OPCODE: Opcode> {
    ptr: *mut c_void,
}

impl<const OPCODE: Opcode> PointerArg<OPCODE> {
    /// # Safety
    /// `buf` must be at least as long as the kernel reads and writes for `OPCODE`: the size
    /// encoded in the opcode, plus the payload length written in an `usb_raw_ep_io` or
    /// `usb_raw_event` header at its start.
    unsafe fn new(buf: &mut [u8]) -> Self {
        PointerArg {
            ptr: buf.as_mut_ptr().cast(),
        }
    }
}

// SAFETY: `PointerArg::new`'s contract makes the pointer valid for everything the kernel reads
// and writes; IS_MUTATING is true because EVENT_FETCH, EP0_READ, EP_READ and EPS_INFO write.
unsafe impl<const OPCODE: Opcode> Ioctl for PointerArg<OPCODE> {
    type Output = u32;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        OPCODE
    }

    fn as_ptr(&mut self) -> *mut c_void {
        self.ptr
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<u32> {
        // A successful ioctl returns >= 0.
        Ok(out as u32)
    }
}

const INIT: Opcode = uapi::USB_RAW_IOCTL_INIT as Opcode;
const RUN: Opcode = uapi::USB_RAW_IOCTL_RUN as Opcode;
const EVENT_FETCH: Opcode = uapi::USB_RAW_IOCTL_EVENT_FETCH as Opcode;
const EP0_WRITE: Opcode = uapi::USB_RAW_IOCTL_EP0_WRITE as Opcode;
const EP0_READ: Opcode = uapi::USB_RAW_IOCTL_EP0_READ as Opcode;
const EP_ENABLE: Opcode = uapi::USB_RAW_IOCTL_EP_ENABLE as Opcode;
const EP_DISABLE: Opcode = uapi::USB_RAW_IOCTL_EP_DISABLE as Opcode;
const EP_WRITE: Opcode = uapi::USB_RAW_IOCTL_EP_WRITE as Opcode;
const EP_READ: Opcode = uapi::USB_RAW_IOCTL_EP_READ as Opcode;
const CONFIGURE: Opcode = uapi::USB_RAW_IOCTL_CONFIGURE as Opcode;
const VBUS_DRAW: Opcode = uapi::USB_RAW_IOCTL_VBUS_DRAW as Opcode;
const EPS_INFO: Opcode = uapi::USB_RAW_IOCTL_EPS_INFO as Opcode;
const EP0_STALL: Opcode = uapi::USB_RAW_IOCTL_EP0_STALL as Opcode;
const EP_SET_HALT: Opcode = uapi::USB_RAW_IOCTL_EP_SET_HALT as Opcode;
const EP_CLEAR_HALT: Opcode = uapi::USB_RAW_IOCTL_EP_CLEAR_HALT as Opcode;
const EP_SET_WEDGE: Opcode = uapi::USB_RAW_IOCTL_EP_SET_WEDGE as Opcode;

fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

fn no_arg<const OPCODE: Opcode, F: AsFd>(fd: F) -> Result<(), Errno> {
    // SAFETY: OPCODE is one of the three `_IO` raw gadget ioctls, which take the value 0.
    unsafe { ioctl(fd, NoArg::<OPCODE>::new()) }.map_err(errno)
}

fn value_arg<const OPCODE: Opcode, F: AsFd>(fd: F, value: u32) -> Result<(), Errno> {
    // SAFETY: OPCODE is one of the `_IOW(.., __u32)` raw gadget ioctls, which take the integer
    // itself as the argument and dereference nothing.
    unsafe { ioctl(fd, IntegerSetter::<OPCODE>::new_usize(value as usize)) }.map_err(errno)
}

/// Transfers up to this size use the calling thread's scratch buffer; larger ones a buffer of
/// their own, so that a thread does not keep megabytes after one big transfer.
const SCRATCH_MAX: usize = 64 * 1024;

thread_local! {
    /// Room for one `usb_raw_ep_io` header + payload, reused by the slice-based I/O calls
    /// (ep0, [`ep_read`], [`ep_write`]): no allocation or zero-fill per call once grown.
    static SCRATCH: Cell<Option<EpBuffer>> = const { Cell::new(None) };
}

/// Runs `f` on an [`EpBuffer`] of `payload_len` bytes with unspecified contents: the thread's
/// scratch buffer for small transfers, else a new one.
fn with_scratch<R>(payload_len: usize, f: impl FnOnce(&mut EpBuffer) -> R) -> R {
    let small = payload_len <= SCRATCH_MAX;
    let mut buf = small
        .then(|| SCRATCH.try_with(Cell::take).ok().flatten())
        .flatten()
        .unwrap_or_else(|| EpBuffer::new(0));
    buf.set_len(payload_len);
    let r = f(&mut buf);
    if small {
        // Fails only while the thread exits; the buffer is then just dropped.
        let _ = SCRATCH.try_with(|s| s.set(Some(buf)));
    }
    r
}

/// Issues the I/O ioctl `OPCODE` (EP0_WRITE, EP0_READ, EP_WRITE or EP_READ) for endpoint
/// handle `ep` on `buf`, header and payload in place; returns the ioctl's byte count.
fn ep_io<const OPCODE: Opcode, F: AsFd>(
    fd: F,
    ep: u16,
    buf: &mut EpBuffer,
    flags: u16,
) -> Result<usize, Errno> {
    let bytes = buf.ep_io_bytes(ep, flags)?;
    // SAFETY: `bytes` is the `usb_raw_ep_io` header followed by exactly the `length` payload
    // bytes it announces; the kernel reads or writes no more than that.
    let n = unsafe { ioctl(fd, PointerArg::<OPCODE>::new(bytes)) }.map_err(errno)?;
    Ok(n as usize)
}

/// USB_RAW_IOCTL_INIT.
pub fn init<F: AsFd>(fd: F, arg: &uapi::UsbRawInit) -> Result<(), Errno> {
    let mut bytes = arg.to_bytes();
    // SAFETY: the kernel reads exactly `sizeof(struct usb_raw_init)` = 257 bytes, all present.
    unsafe { ioctl(fd, PointerArg::<INIT>::new(&mut bytes)) }
        .map(drop)
        .map_err(errno)
}

/// USB_RAW_IOCTL_RUN (argument 0).
pub fn run<F: AsFd>(fd: F) -> Result<(), Errno> {
    no_arg::<RUN, F>(fd)
}

/// USB_RAW_IOCTL_EVENT_FETCH with room for `capacity` payload bytes.
pub fn event_fetch<F: AsFd>(fd: F, capacity: u32) -> Result<(uapi::UsbRawEvent, Vec<u8>), Errno> {
    let mut buf = vec![0u8; uapi::UsbRawEvent::SIZE + capacity as usize];
    buf[..8].copy_from_slice(
        &uapi::UsbRawEvent {
            type_: 0,
            length: capacity,
        }
        .to_bytes(),
    );
    // SAFETY: the buffer holds the 8-byte header and the `capacity` payload bytes the header
    // announces; the kernel writes no more than that.
    unsafe { ioctl(fd, PointerArg::<EVENT_FETCH>::new(&mut buf)) }.map_err(errno)?;
    let header = uapi::UsbRawEvent::from_bytes(buf[..8].try_into().expect("8 bytes"));
    let copied = header.length.min(capacity) as usize;
    Ok((header, buf[8..8 + copied].to_vec()))
}

/// USB_RAW_IOCTL_EP0_WRITE; returns the bytes sent.
pub fn ep0_write<F: AsFd>(fd: F, data: &[u8], flags: u16) -> Result<usize, Errno> {
    with_scratch(data.len(), |buf| {
        buf.copy_from_slice(data);
        ep_io::<EP0_WRITE, F>(fd, 0, buf, flags)
    })
}

/// USB_RAW_IOCTL_EP0_READ into `out`; returns the bytes received.
pub fn ep0_read<F: AsFd>(fd: F, out: &mut [u8], flags: u16) -> Result<usize, Errno> {
    with_scratch(out.len(), |buf| {
        let n = ep_io::<EP0_READ, F>(fd, 0, buf, flags)?.min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        Ok(n)
    })
}

/// USB_RAW_IOCTL_EP_ENABLE with the 9-byte descriptor; returns the endpoint handle.
pub fn ep_enable<F: AsFd>(fd: F, desc: &[u8; 9]) -> Result<u16, Errno> {
    let mut bytes = *desc;
    // SAFETY: the kernel reads exactly the 9 bytes of `struct usb_endpoint_descriptor`.
    let h = unsafe { ioctl(fd, PointerArg::<EP_ENABLE>::new(&mut bytes)) }.map_err(errno)?;
    u16::try_from(h).map_err(|_| Errno::ERANGE)
}

/// USB_RAW_IOCTL_EP_DISABLE (handle by value).
pub fn ep_disable<F: AsFd>(fd: F, ep: u16) -> Result<(), Errno> {
    value_arg::<EP_DISABLE, F>(fd, u32::from(ep))
}

/// USB_RAW_IOCTL_EP_WRITE; returns the bytes sent. Copies `data` into a scratch buffer:
/// [`ep_write_buf`] avoids the copy.
pub fn ep_write<F: AsFd>(fd: F, ep: u16, data: &[u8], flags: u16) -> Result<usize, Errno> {
    with_scratch(data.len(), |buf| {
        buf.copy_from_slice(data);
        ep_io::<EP_WRITE, F>(fd, ep, buf, flags)
    })
}

/// USB_RAW_IOCTL_EP_READ into `out`; returns the bytes received. Copies them out of a scratch
/// buffer: [`ep_read_buf`] avoids the copy.
pub fn ep_read<F: AsFd>(fd: F, ep: u16, out: &mut [u8], flags: u16) -> Result<usize, Errno> {
    with_scratch(out.len(), |buf| {
        let n = ep_io::<EP_READ, F>(fd, ep, buf, flags)?.min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        Ok(n)
    })
}

/// USB_RAW_IOCTL_EP_WRITE of `buf`'s payload, in place: one ioctl, no allocation, no copy.
/// The kernel only reads the payload.
pub fn ep_write_buf<F: AsFd>(
    fd: F,
    ep: u16,
    buf: &mut EpBuffer,
    flags: u16,
) -> Result<usize, Errno> {
    ep_io::<EP_WRITE, F>(fd, ep, buf, flags)
}

/// USB_RAW_IOCTL_EP_READ into `buf`'s payload, in place; returns the bytes received (the
/// payload's first ones).
pub fn ep_read_buf<F: AsFd>(
    fd: F,
    ep: u16,
    buf: &mut EpBuffer,
    flags: u16,
) -> Result<usize, Errno> {
    let n = ep_io::<EP_READ, F>(fd, ep, buf, flags)?;
    Ok(n.min(buf.len()))
}

/// USB_RAW_IOCTL_CONFIGURE (argument 0).
pub fn configure<F: AsFd>(fd: F) -> Result<(), Errno> {
    no_arg::<CONFIGURE, F>(fd)
}

/// USB_RAW_IOCTL_VBUS_DRAW (2 mA units, by value).
pub fn vbus_draw<F: AsFd>(fd: F, units_2ma: u32) -> Result<(), Errno> {
    value_arg::<VBUS_DRAW, F>(fd, units_2ma)
}

/// USB_RAW_IOCTL_EPS_INFO; returns the struct and the endpoint count.
pub fn eps_info<F: AsFd>(fd: F) -> Result<(uapi::UsbRawEpsInfo, usize), Errno> {
    let mut bytes = [0u8; uapi::UsbRawEpsInfo::SIZE];
    // SAFETY: the kernel writes exactly `sizeof(struct usb_raw_eps_info)` = 960 bytes.
    let n = unsafe { ioctl(fd, PointerArg::<EPS_INFO>::new(&mut bytes)) }.map_err(errno)?;
    Ok((uapi::UsbRawEpsInfo::from_bytes(&bytes), n as usize))
}

/// USB_RAW_IOCTL_EP0_STALL (argument 0).
pub fn ep0_stall<F: AsFd>(fd: F) -> Result<(), Errno> {
    no_arg::<EP0_STALL, F>(fd)
}

/// USB_RAW_IOCTL_EP_SET_HALT (handle by value).
pub fn ep_set_halt<F: AsFd>(fd: F, ep: u16) -> Result<(), Errno> {
    value_arg::<EP_SET_HALT, F>(fd, u32::from(ep))
}

/// USB_RAW_IOCTL_EP_CLEAR_HALT (handle by value).
pub fn ep_clear_halt<F: AsFd>(fd: F, ep: u16) -> Result<(), Errno> {
    value_arg::<EP_CLEAR_HALT, F>(fd, u32::from(ep))
}

/// USB_RAW_IOCTL_EP_SET_WEDGE (handle by value).
pub fn ep_set_wedge<F: AsFd>(fd: F, ep: u16) -> Result<(), Errno> {
    value_arg::<EP_SET_WEDGE, F>(fd, u32::from(ep))
}

// ---------------------------------------------------------------------------------------------
// Interrupting a blocked ioctl.

/// The signal that interrupts a blocked ioctl: `SIGRTMIN + 7`, chosen to stay clear of
/// SIGUSR1/SIGUSR2 (which applications use) and of the first real-time signals (which threading
/// libraries take). Its handler does nothing and is installed without `SA_RESTART`, so the
/// interrupted ioctl returns EINTR (spec Appendix step 6). Threads that block it in their signal
/// mask cannot be interrupted.
pub fn interrupt_signal() -> libc::c_int {
    libc::SIGRTMIN() + 7
}

extern "C" fn interrupt_handler(_: libc::c_int) {}

fn install_interrupt_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed `sigaction` is a valid "no flags, empty mask" value, and the handler
        // is an `extern "C" fn(c_int)` that touches nothing (async-signal-safe).
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = interrupt_handler as extern "C" fn(libc::c_int) as usize;
            act.sa_flags = 0; // no SA_RESTART: the ioctl must return EINTR
            libc::sigemptyset(&mut act.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(interrupt_signal(), &act, &mut old) != 0 {
                tracing::warn!(
                    err = %std::io::Error::last_os_error(),
                    "cannot install the interrupt signal handler"
                );
            } else if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
                tracing::warn!(
                    signal = interrupt_signal(),
                    "replaced an existing signal handler"
                );
            }
        }
    });
}

/// Wakes one thread blocked in an ioctl by sending it [`interrupt_signal`].
pub struct ThreadWaker {
    thread: libc::pthread_t,
}

impl Wake for ThreadWaker {
    fn wake(&self) {
        // SAFETY: `CancelHandle` calls `wake` only while the call is registered, and the
        // registering thread deregisters (under the same lock) before it returns from the
        // ioctl wrapper, so the thread is alive and `self.thread` is valid.
        let rc = unsafe { libc::pthread_kill(self.thread, interrupt_signal()) };
        if rc != 0 {
            tracing::debug!(rc, "pthread_kill failed");
        }
    }
}

thread_local! {
    static CURRENT_WAKER: Arc<ThreadWaker> = {
        install_interrupt_handler();
        // SAFETY: pthread_self has no preconditions.
        Arc::new(ThreadWaker { thread: unsafe { libc::pthread_self() } })
    };
}

/// The waker of the calling thread (installs the signal handler on first use).
pub fn current_thread_waker() -> Arc<ThreadWaker> {
    CURRENT_WAKER.with(Arc::clone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// spec §1.4: the opcodes passed to the kernel are rawgadget_uapi's constants, which the
    /// uapi crate checks against the numeric table.
    #[test]
    fn opcodes_are_uapi_constants() {
        let ours: [Opcode; 16] = [
            INIT,
            RUN,
            EVENT_FETCH,
            EP0_WRITE,
            EP0_READ,
            EP_ENABLE,
            EP_DISABLE,
            EP_WRITE,
            EP_READ,
            CONFIGURE,
            VBUS_DRAW,
            EPS_INFO,
            EP0_STALL,
            EP_SET_HALT,
            EP_CLEAR_HALT,
            EP_SET_WEDGE,
        ];
        for (i, def) in uapi::IOCTLS.iter().enumerate() {
            assert_eq!(ours[i] as u64, u64::from(def.cmd), "{}", def.name);
        }
        // Also against rustix's own encoder, like rustix's tests do for kernel headers.
        assert_eq!(INIT, rustix::ioctl::opcode::write::<[u8; 257]>(b'U', 0));
        assert_eq!(RUN, rustix::ioctl::opcode::none(b'U', 1));
        assert_eq!(EPS_INFO, rustix::ioctl::opcode::read::<[u8; 960]>(b'U', 11));
        assert_eq!(
            EP_READ,
            rustix::ioctl::opcode::read_write::<[u8; 8]>(b'U', 8)
        );
        assert_eq!(EP_DISABLE, rustix::ioctl::opcode::write::<u32>(b'U', 6));
    }

    /// Every ioctl wrapper reaches the kernel: on a file that is not a raw gadget node the
    /// kernel answers ENOTTY for each of the 16 (and the in-place I/O forms), whatever the
    /// argument convention.
    #[test]
    fn every_ioctl_reaches_the_kernel_enotty_on_dev_null() {
        let fd = open(Path::new("/dev/null")).expect("open /dev/null");
        let init_arg =
            uapi::UsbRawInit::new("dummy_udc", "dummy_udc.0", uapi::speed::USB_SPEED_HIGH);
        let results: [(&str, Result<(), Errno>); 18] = [
            ("INIT", init(&fd, &init_arg)),
            ("RUN", run(&fd)),
            ("EVENT_FETCH", event_fetch(&fd, 8).map(drop)),
            ("EP0_WRITE", ep0_write(&fd, &[1, 2, 3], 0).map(drop)),
            ("EP0_READ", ep0_read(&fd, &mut [0; 4], 0).map(drop)),
            (
                "EP_ENABLE",
                ep_enable(&fd, &[7, 5, 0x81, 2, 0, 2, 0, 0, 0]).map(drop),
            ),
            ("EP_DISABLE", ep_disable(&fd, 3)),
            ("EP_WRITE", ep_write(&fd, 1, &[0; 16], 0).map(drop)),
            ("EP_READ", ep_read(&fd, 1, &mut [0; 16], 0).map(drop)),
            (
                "EP_WRITE (buffer)",
                ep_write_buf(&fd, 1, &mut EpBuffer::new(16), 0).map(drop),
            ),
            (
                "EP_READ (buffer)",
                ep_read_buf(&fd, 1, &mut EpBuffer::new(16), 0).map(drop),
            ),
            ("CONFIGURE", configure(&fd)),
            ("VBUS_DRAW", vbus_draw(&fd, 50)),
            ("EPS_INFO", eps_info(&fd).map(drop)),
            ("EP0_STALL", ep0_stall(&fd)),
            ("EP_SET_HALT", ep_set_halt(&fd, 1)),
            ("EP_CLEAR_HALT", ep_clear_halt(&fd, 1)),
            ("EP_SET_WEDGE", ep_set_wedge(&fd, 1)),
        ];
        for (name, r) in results {
            assert_eq!(r, Err(Errno::ENOTTY), "{name}");
        }
    }

    /// The slice-based I/O calls reuse one scratch buffer per thread for small transfers
    /// (sized to each call) and a fresh one beyond [`SCRATCH_MAX`], which is not kept.
    #[test]
    fn scratch_buffer_is_reused_and_sized_per_call() {
        let first = with_scratch(100, |b| {
            b.fill(7);
            (b.len(), b.as_ptr() as usize)
        });
        assert_eq!(first.0, 100);
        let second = with_scratch(50, |b| (b.len(), b.as_ptr() as usize, b[0]));
        assert_eq!(second, (50, first.1, 7), "the same memory, cut to 50 bytes");
        let big = with_scratch(SCRATCH_MAX + 1, |b| b.len());
        assert_eq!(big, SCRATCH_MAX + 1);
        let kept = SCRATCH.with(|s| {
            let b = s.take();
            let len = b.as_ref().map(|b| b.len());
            s.set(b);
            len
        });
        assert_eq!(kept, Some(50), "the big buffer was not kept");
    }

    /// The interrupt signal makes a blocking syscall return EINTR (no SA_RESTART), and a signal
    /// sent while the thread is not blocked is harmless.
    #[test]
    fn interrupt_signal_breaks_a_blocking_read() {
        let (r, _w) = rustix::pipe::pipe().expect("pipe");
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let waker = current_thread_waker();
            waker.wake(); // before blocking: must be a no-op
            tx.send(waker).unwrap();
            let mut b = [0u8; 1];
            rustix::io::read(&r, &mut b)
        });
        let waker = rx.recv().unwrap();
        let start = Instant::now();
        let res = loop {
            waker.wake();
            std::thread::sleep(Duration::from_millis(5));
            if t.is_finished() {
                break t.join().unwrap();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "read never interrupted"
            );
        };
        assert_eq!(res, Err(rustix::io::Errno::INTR));
    }
}
