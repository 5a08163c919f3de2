//! Raw Gadget ioctls over FUSE_IOCTL, sans-IO: from one round's `fuse_ioctl_in` (and its input
//! bytes, or the caller's memory) to a decision: answer at once, ask for another round, or run
//! a [`ClientOp`] and say what goes back to the caller.
//!
//! Read contract §7 (C1–C13) and spec §1.4 first. Two ways to reach the caller's argument:
//!
//! - **The retry protocol** (C4, C5). Unrestricted ioctls (C1) arrive with no data; we answer
//!   FUSE_IOCTL_RETRY with the iovecs we need and the kernel copies them in for the next round.
//!   [`decode_retry`] is a pure function of the round (`cmd`, `arg`, the input it carries and
//!   the room of its out iovecs): nothing is kept between rounds, nothing starts before the
//!   final one, and the final one re-validates the header it carries, since another thread of
//!   the caller may have changed it (C5). Rounds per ioctl: 1 for value and `_IO` ioctls, 2
//!   for INIT, EP_ENABLE, EPS_INFO and EVENT_FETCH (its out iovec is always 16 bytes, C3), 3
//!   for EP0/EP transfers (nothing, the header, the header with the payload or the room for
//!   it), 2 for a zero-length transfer. Each direction is limited to 128 KiB (C2): a transfer
//!   longer than that gets ENOMEM here, where the module would serve up to 4 MiB.
//! - **The fast path** (C11). With the calling thread's id from `fuse_in_header.pid`, a
//!   privileged daemon reads the argument itself ([`ClientMemory`], `process_vm_readv`) in
//!   round one, runs the op and writes the results back (`process_vm_writev`): one round, no
//!   128 KiB cap. [`decode_fast`] returns `None` when the memory cannot be reached (pid 0,
//!   EPERM, ESRCH), and the caller falls back to the retry protocol. A fault is EFAULT, in the
//!   module's order: the header first, then its checks, then the payload.
//!
//! Either way the arguments the module takes by value (EP_DISABLE, VBUS_DRAW, the halt/wedge
//! trio) and the `_IO` ones that must be 0 (RUN, CONFIGURE, EP0_STALL) pass the raw `arg` to
//! the engine, which applies the module's checks. An unknown number is EINVAL, never ENOTTY
//! (spec §1.1). Bad input becomes an errno; nothing here panics or allocates more than the
//! module would (a header's `length` is checked before any payload is read).

use rawgadget_engine::{validate_io_header, ClientOp, OpResult, Payload};
use rawgadget_uapi::{
    self as uapi, Errno, UsbRawEpIo, UsbRawEpsInfo, UsbRawEvent, UsbRawInit,
    USB_ENDPOINT_DESCRIPTOR_IOCTL_SIZE,
};

use crate::proto::{IoctlIn, IoctlIovec, MAX_IOCTL_DIRECTION_BYTES};

/// EVENT_FETCH's out iovec: the header plus the largest event payload, the 8-byte SETUP
/// (contract C3). Only the bytes of the actual event are written back.
pub const EVENT_FETCH_OUT_LEN: u64 = (UsbRawEvent::SIZE + 8) as u64;

/// The 16 ioctls by what their argument is (spec §1.4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RawIoctl {
    Init,
    Run,
    EventFetch,
    Ep0Write,
    Ep0Read,
    EpEnable,
    EpDisable,
    EpWrite,
    EpRead,
    Configure,
    VbusDraw,
    EpsInfo,
    Ep0Stall,
    EpSetHalt,
    EpClearHalt,
    EpSetWedge,
}

impl RawIoctl {
    /// The ioctl with this number, if it is one of the 16 (the full number, size and
    /// direction included, as the module compares it).
    pub fn from_cmd(cmd: u32) -> Option<RawIoctl> {
        Some(match cmd {
            uapi::USB_RAW_IOCTL_INIT => RawIoctl::Init,
            uapi::USB_RAW_IOCTL_RUN => RawIoctl::Run,
            uapi::USB_RAW_IOCTL_EVENT_FETCH => RawIoctl::EventFetch,
            uapi::USB_RAW_IOCTL_EP0_WRITE => RawIoctl::Ep0Write,
            uapi::USB_RAW_IOCTL_EP0_READ => RawIoctl::Ep0Read,
            uapi::USB_RAW_IOCTL_EP_ENABLE => RawIoctl::EpEnable,
            uapi::USB_RAW_IOCTL_EP_DISABLE => RawIoctl::EpDisable,
            uapi::USB_RAW_IOCTL_EP_WRITE => RawIoctl::EpWrite,
            uapi::USB_RAW_IOCTL_EP_READ => RawIoctl::EpRead,
            uapi::USB_RAW_IOCTL_CONFIGURE => RawIoctl::Configure,
            uapi::USB_RAW_IOCTL_VBUS_DRAW => RawIoctl::VbusDraw,
            uapi::USB_RAW_IOCTL_EPS_INFO => RawIoctl::EpsInfo,
            uapi::USB_RAW_IOCTL_EP0_STALL => RawIoctl::Ep0Stall,
            uapi::USB_RAW_IOCTL_EP_SET_HALT => RawIoctl::EpSetHalt,
            uapi::USB_RAW_IOCTL_EP_CLEAR_HALT => RawIoctl::EpClearHalt,
            uapi::USB_RAW_IOCTL_EP_SET_WEDGE => RawIoctl::EpSetWedge,
            _ => return None,
        })
    }

    /// The op for ioctls whose argument is the value itself (`_IO` and `_IOW(.., __u32)`).
    fn by_value(self, arg: u64) -> Option<ClientOp> {
        Some(match self {
            RawIoctl::Run => ClientOp::Run { arg },
            RawIoctl::Configure => ClientOp::Configure { arg },
            RawIoctl::Ep0Stall => ClientOp::Ep0Stall { arg },
            RawIoctl::EpDisable => ClientOp::EpDisable { arg },
            RawIoctl::VbusDraw => ClientOp::VbusDraw { arg },
            RawIoctl::EpSetHalt => ClientOp::EpSetHalt { arg },
            RawIoctl::EpClearHalt => ClientOp::EpClearHalt { arg },
            RawIoctl::EpSetWedge => ClientOp::EpSetWedge { arg },
            _ => return None,
        })
    }

    /// What goes back to the caller's memory on success.
    pub fn write_back(self) -> WriteBack {
        match self {
            RawIoctl::EventFetch => WriteBack::Event,
            RawIoctl::Ep0Read | RawIoctl::EpRead => WriteBack::ReadData,
            RawIoctl::EpsInfo => WriteBack::EpsInfo,
            _ => WriteBack::None,
        }
    }
}

/// What a successful ioctl copies back to the caller (spec §1.5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WriteBack {
    /// Only the return value.
    None,
    /// EVENT_FETCH: the header (with the event's full length) and `min(capacity, length)`
    /// payload bytes, at `arg`.
    Event,
    /// EP0_READ / EP_READ: the bytes read, at `arg + 8`.
    ReadData,
    /// EPS_INFO: the 960-byte struct at `arg`.
    EpsInfo,
}

impl WriteBack {
    /// The bytes to copy back and their offset from `arg`, for a successful result.
    pub fn bytes(self, r: &OpResult) -> Option<(u64, Vec<u8>)> {
        let n = *r.ret.as_ref().ok()? as usize;
        match (self, &r.payload) {
            (WriteBack::Event, Payload::Event { header, data }) => {
                let mut v = Vec::with_capacity(UsbRawEvent::SIZE + data.len());
                v.extend_from_slice(&header.to_bytes());
                v.extend_from_slice(data);
                Some((0, v))
            }
            (WriteBack::ReadData, Payload::Data(d)) => Some((8, d[..n.min(d.len())].to_vec())),
            (WriteBack::ReadData, _) => Some((8, Vec::new())),
            (WriteBack::EpsInfo, Payload::EpsInfo(info)) => Some((0, info.to_bytes().to_vec())),
            _ => None,
        }
    }
}

/// An operation ready for the engine, and what its result sends back.
#[derive(Debug, PartialEq, Eq)]
pub struct Call {
    pub ioctl: RawIoctl,
    pub op: ClientOp,
}

/// Iovecs of one FUSE_IOCTL_RETRY (at most one each way).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RetryIovecs {
    pub input: Option<IoctlIovec>,
    pub output: Option<IoctlIovec>,
}

impl RetryIovecs {
    pub fn input(&self) -> &[IoctlIovec] {
        self.input.as_slice()
    }
    pub fn output(&self) -> &[IoctlIovec] {
        self.output.as_slice()
    }
}

/// What to do with one FUSE_IOCTL round.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Fail the ioctl at once with this errno.
    Fail(Errno),
    /// Ask the kernel for another round with these iovecs.
    Retry(RetryIovecs),
    /// Run this op; its result is the ioctl's.
    Run(Call),
}

/// Why the caller's memory could not be used.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MemError {
    /// The address is not mapped (or not writable): EFAULT, as `copy_from_user` gives.
    Fault,
    /// The memory cannot be reached at all (pid 0, EPERM, ESRCH): use the retry protocol.
    Unavailable(Errno),
}

/// The calling thread's memory (C11), `process_vm_readv/writev` in the daemon.
pub trait ClientMemory {
    /// Reads exactly `buf.len()` bytes at `addr`; a partial read is a fault.
    ///
    /// # Errors
    /// [`MemError`].
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;
    /// Writes all of `data` at `addr`; a partial write is a fault.
    ///
    /// # Errors
    /// [`MemError`].
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError>;
}

/// `arg + off` as the caller sees it; `None` (EFAULT) when it wraps or, for a 32-bit caller,
/// leaves the 32-bit address space (the kernel would refuse such a retry iovec with EIO,
/// `ioctl.c:107-111`, where the module faults).
fn addr(ioctl: &IoctlIn, off: u64, len: u64) -> Option<u64> {
    let base = ioctl.arg.checked_add(off)?;
    let end = base.checked_add(len)?;
    if ioctl.is_32bit() && end > u64::from(u32::MAX) + 1 {
        return None;
    }
    Some(base)
}

fn iov(ioctl: &IoctlIn, off: u64, len: u64) -> Result<IoctlIovec, Errno> {
    let base = addr(ioctl, off, len).ok_or(Errno::EFAULT)?;
    Ok(IoctlIovec { base, len })
}

fn io_header(b: &[u8]) -> UsbRawEpIo {
    let mut h = [0u8; 8];
    h.copy_from_slice(&b[..8]);
    UsbRawEpIo::from_bytes(&h)
}

fn transfer_op(ioctl: RawIoctl, io: UsbRawEpIo, data: Vec<u8>) -> ClientOp {
    match ioctl {
        RawIoctl::Ep0Write => ClientOp::Ep0Write { io, data },
        RawIoctl::EpWrite => ClientOp::EpWrite { io, data },
        RawIoctl::Ep0Read => ClientOp::Ep0Read { io, buf: data },
        _ => ClientOp::EpRead { io, buf: data },
    }
}

fn fixed_in_op(ioctl: RawIoctl, b: &[u8]) -> ClientOp {
    if ioctl == RawIoctl::Init {
        let mut a = [0u8; UsbRawInit::SIZE];
        a.copy_from_slice(&b[..UsbRawInit::SIZE]);
        ClientOp::Init(Box::new(UsbRawInit::from_bytes(&a)))
    } else {
        let mut d = [0u8; USB_ENDPOINT_DESCRIPTOR_IOCTL_SIZE];
        d.copy_from_slice(&b[..USB_ENDPOINT_DESCRIPTOR_IOCTL_SIZE]);
        ClientOp::EpEnable { desc: d }
    }
}

fn run(ioctl: RawIoctl, op: ClientOp) -> Decision {
    Decision::Run(Call { ioctl, op })
}

fn retry(input: Option<IoctlIovec>, output: Option<IoctlIovec>) -> Decision {
    Decision::Retry(RetryIovecs { input, output })
}

/// One round of the retry protocol (contract C4, C5). `data` is the round's input: the bytes
/// of the in iovecs the previous round asked for (all of them start at `arg`, so `data[i]`
/// is the caller's byte at `arg + i`); `ioctl.out_size` is the room of its out iovec.
pub fn decode_retry(ioctl: &IoctlIn, data: &[u8]) -> Decision {
    let Some(kind) = RawIoctl::from_cmd(ioctl.cmd) else {
        // spec §1.1: unknown numbers are EINVAL, not ENOTTY (C12)
        return Decision::Fail(Errno::EINVAL);
    };
    if let Some(op) = kind.by_value(ioctl.arg) {
        // contract C1/C4: the value is in fuse_ioctl_in.arg; one round
        return run(kind, op);
    }
    let out_room = u64::from(ioctl.out_size);
    let decided = (|| -> Result<Decision, Errno> {
        Ok(match kind {
            RawIoctl::Init | RawIoctl::EpEnable => {
                let n = if kind == RawIoctl::Init {
                    UsbRawInit::SIZE
                } else {
                    USB_ENDPOINT_DESCRIPTOR_IOCTL_SIZE
                };
                if data.len() >= n {
                    run(kind, fixed_in_op(kind, data))
                } else {
                    retry(Some(iov(ioctl, 0, n as u64)?), None)
                }
            }
            RawIoctl::EpsInfo => {
                if out_room >= UsbRawEpsInfo::SIZE as u64 {
                    run(kind, ClientOp::EpsInfo)
                } else {
                    retry(None, Some(iov(ioctl, 0, UsbRawEpsInfo::SIZE as u64)?))
                }
            }
            RawIoctl::EventFetch => {
                // contract C3: a 16-byte out iovec whatever `length` says
                if data.len() >= UsbRawEvent::SIZE && out_room >= EVENT_FETCH_OUT_LEN {
                    let h = io_header(data);
                    run(kind, ClientOp::EventFetch { capacity: h.length })
                } else {
                    retry(
                        Some(iov(ioctl, 0, UsbRawEvent::SIZE as u64)?),
                        Some(iov(ioctl, 0, EVENT_FETCH_OUT_LEN)?),
                    )
                }
            }
            RawIoctl::Ep0Write | RawIoctl::EpWrite => {
                if data.len() < UsbRawEpIo::SIZE {
                    return Ok(retry(Some(iov(ioctl, 0, 8)?), None));
                }
                // contract C5: this round's copy of the header is the one that counts
                let io = io_header(data);
                validate_io_header(&io)?;
                let need = 8 + u64::from(io.length);
                if data.len() as u64 >= need {
                    let payload = data[8..need as usize].to_vec();
                    run(kind, transfer_op(kind, io, payload))
                } else if need > u64::from(MAX_IOCTL_DIRECTION_BYTES) {
                    // contract C2: the header travels with the payload
                    return Err(Errno::ENOMEM);
                } else {
                    retry(Some(iov(ioctl, 0, need)?), None)
                }
            }
            RawIoctl::Ep0Read | RawIoctl::EpRead => {
                if data.len() < UsbRawEpIo::SIZE {
                    return Ok(retry(Some(iov(ioctl, 0, 8)?), None));
                }
                let io = io_header(data);
                validate_io_header(&io)?;
                let len = u64::from(io.length);
                if out_room >= len {
                    // the out iovec of the previous round starts at arg + 8
                    run(kind, transfer_op(kind, io, Vec::new()))
                } else if len > u64::from(MAX_IOCTL_DIRECTION_BYTES) {
                    return Err(Errno::ENOMEM); // contract C2
                } else {
                    retry(Some(iov(ioctl, 0, 8)?), Some(iov(ioctl, 8, len)?))
                }
            }
            _ => unreachable_by_value(),
        })
    })();
    decided.unwrap_or_else(Decision::Fail)
}

/// The value ioctls returned above; kept as a function so the match stays total.
fn unreachable_by_value() -> Decision {
    Decision::Fail(Errno::EINVAL)
}

fn read_mem(mem: &mut dyn ClientMemory, ioctl: &IoctlIn, off: u64, buf: &mut [u8]) -> Fast<()> {
    let Some(a) = addr(ioctl, off, buf.len() as u64) else {
        return Fast::Done(Decision::Fail(Errno::EFAULT));
    };
    match mem.read(a, buf) {
        Ok(()) => Fast::Ok(()),
        Err(MemError::Fault) => Fast::Done(Decision::Fail(Errno::EFAULT)),
        Err(MemError::Unavailable(_)) => Fast::Fallback,
    }
}

/// Payload bytes an EP0_WRITE or EP_WRITE on the fast path reads together with its header:
/// enough for the descriptors and strings an ep0 answers with.
pub const PAYLOAD_READ_AHEAD: usize = 248;

/// The fast path's read of a write's header and the first [`PAYLOAD_READ_AHEAD`] payload
/// bytes: `Some(None)` when that span faults (it may reach past the caller's buffer: only the
/// exact reads that follow decide EFAULT, contract C11), `None` when the memory cannot be
/// reached at all (fall back to the retry protocol).
fn read_ahead<'b>(
    mem: &mut dyn ClientMemory,
    ioctl: &IoctlIn,
    buf: &'b mut [u8],
) -> Option<Option<&'b [u8]>> {
    let Some(a) = addr(ioctl, 0, buf.len() as u64) else {
        return Some(None);
    };
    match mem.read(a, buf) {
        Ok(()) => Some(Some(buf)),
        Err(MemError::Fault) => Some(None),
        Err(MemError::Unavailable(_)) => None,
    }
}

enum Fast<T> {
    Ok(T),
    Done(Decision),
    Fallback,
}

macro_rules! fast {
    ($e:expr) => {
        match $e {
            Fast::Ok(v) => v,
            Fast::Done(d) => return Some(d),
            Fast::Fallback => return None,
        }
    };
}

/// The fast path (contract C11): the whole ioctl in round one, reading the argument from the
/// caller's memory in the module's order. `None` when the memory cannot be reached; then use
/// [`decode_retry`]. Nothing has started when it returns `None` (C5).
pub fn decode_fast(ioctl: &IoctlIn, mem: &mut dyn ClientMemory) -> Option<Decision> {
    let Some(kind) = RawIoctl::from_cmd(ioctl.cmd) else {
        return Some(Decision::Fail(Errno::EINVAL));
    };
    if let Some(op) = kind.by_value(ioctl.arg) {
        return Some(run(kind, op));
    }
    Some(match kind {
        RawIoctl::Init | RawIoctl::EpEnable => {
            let mut b = vec![
                0u8;
                if kind == RawIoctl::Init {
                    UsbRawInit::SIZE
                } else {
                    USB_ENDPOINT_DESCRIPTOR_IOCTL_SIZE
                }
            ];
            fast!(read_mem(mem, ioctl, 0, &mut b));
            run(kind, fixed_in_op(kind, &b))
        }
        // EPS_INFO reads nothing; its result is written back later
        RawIoctl::EpsInfo => run(kind, ClientOp::EpsInfo),
        RawIoctl::EventFetch => {
            let mut h = [0u8; 8];
            fast!(read_mem(mem, ioctl, 0, &mut h));
            run(
                kind,
                ClientOp::EventFetch {
                    capacity: io_header(&h).length,
                },
            )
        }
        RawIoctl::Ep0Write | RawIoctl::EpWrite | RawIoctl::Ep0Read | RawIoctl::EpRead => {
            let write = matches!(kind, RawIoctl::Ep0Write | RawIoctl::EpWrite);
            // a write's header and the start of its payload in one read (one
            // `process_vm_readv` instead of two for every ep0 answer); `None` when that span
            // is not all mapped, then the header alone, as the module reads it
            let mut ahead = [0u8; 8 + PAYLOAD_READ_AHEAD];
            let ahead = if write {
                read_ahead(mem, ioctl, &mut ahead)?
            } else {
                None
            };
            let io = match ahead {
                Some(b) => io_header(&b[..8]),
                None => {
                    let mut h = [0u8; 8];
                    fast!(read_mem(mem, ioctl, 0, &mut h));
                    io_header(&h)
                }
            };
            // raw_alloc_io_data: header checks before the payload is used
            if let Err(e) = validate_io_header(&io) {
                return Some(Decision::Fail(e));
            }
            let data = if write {
                match ahead {
                    Some(b) if io.length as usize <= PAYLOAD_READ_AHEAD => {
                        b[8..8 + io.length as usize].to_vec()
                    }
                    _ => {
                        let mut payload = vec![0u8; io.length as usize];
                        fast!(read_mem(mem, ioctl, 8, &mut payload));
                        payload
                    }
                }
            } else {
                // the copy-out target must be addressable for the result to land
                if addr(ioctl, 8, u64::from(io.length)).is_none() {
                    return Some(Decision::Fail(Errno::EFAULT));
                }
                Vec::new()
            };
            run(kind, transfer_op(kind, io, data))
        }
        _ => unreachable_by_value(),
    })
}

/// Which path an ioctl took, for the reply and the statistics.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Path {
    /// Results go back in the final reply, into the out iovec the kernel holds.
    Retry,
    /// Results are written into the caller's memory by the daemon.
    Fast,
}

/// One round: the fast path in round one when `mem` is given, else (or when the memory is
/// unavailable) the retry protocol.
pub fn decode(
    ioctl: &IoctlIn,
    data: &[u8],
    mem: Option<&mut dyn ClientMemory>,
) -> (Decision, Path) {
    let first_round = ioctl.in_size == 0 && ioctl.out_size == 0;
    if let (true, Some(mem)) = (first_round, mem) {
        if let Some(d) = decode_fast(ioctl, mem) {
            return (d, Path::Fast);
        }
    }
    (decode_retry(ioctl, data), Path::Retry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ioctl_flags::{FUSE_IOCTL_32BIT, FUSE_IOCTL_COMPAT, FUSE_IOCTL_UNRESTRICTED};
    use rawgadget_uapi::*;

    const ARG: u64 = 0x7fff_1000;

    fn round(cmd: u32, arg: u64, in_size: u32, out_size: u32) -> IoctlIn {
        IoctlIn {
            fh: 1,
            flags: FUSE_IOCTL_UNRESTRICTED,
            cmd,
            arg,
            in_size,
            out_size,
        }
    }

    fn io(ep: u16, flags: u16, length: u32) -> Vec<u8> {
        UsbRawEpIo { ep, flags, length }.to_bytes().to_vec()
    }

    fn retry_of(d: Decision) -> RetryIovecs {
        match d {
            Decision::Retry(r) => r,
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    fn iv(base: u64, len: u64) -> Option<IoctlIovec> {
        Some(IoctlIovec { base, len })
    }

    /// Memory with one mapped range; `unavailable` plays EPERM.
    struct Mem {
        base: u64,
        bytes: Vec<u8>,
        unavailable: bool,
        reads: usize,
    }
    impl ClientMemory for Mem {
        fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
            self.reads += 1;
            if self.unavailable {
                return Err(MemError::Unavailable(Errno::EPERM));
            }
            let off = addr.checked_sub(self.base).ok_or(MemError::Fault)? as usize;
            let src = self
                .bytes
                .get(off..off + buf.len())
                .ok_or(MemError::Fault)?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn write(&mut self, _: u64, _: &[u8]) -> Result<(), MemError> {
            // decoding never writes; a write here would be a bug the tests should see
            Err(MemError::Fault)
        }
    }

    // ---- value conventions (C1, C4: one round) ------------------------------------------

    /// contract C1: by-value arguments arrive in fuse_ioctl_in.arg and are passed as is.
    #[test]
    fn c1_value_ioctls_take_the_argument_in_round_one() {
        let table = [
            (USB_RAW_IOCTL_EP_DISABLE, 3, ClientOp::EpDisable { arg: 3 }),
            (USB_RAW_IOCTL_VBUS_DRAW, 50, ClientOp::VbusDraw { arg: 50 }),
            (USB_RAW_IOCTL_EP_SET_HALT, 1, ClientOp::EpSetHalt { arg: 1 }),
            (
                USB_RAW_IOCTL_EP_CLEAR_HALT,
                2,
                ClientOp::EpClearHalt { arg: 2 },
            ),
            (
                USB_RAW_IOCTL_EP_SET_WEDGE,
                4,
                ClientOp::EpSetWedge { arg: 4 },
            ),
            // _IO: must be 0, the engine says EINVAL otherwise; the raw value goes through
            (USB_RAW_IOCTL_RUN, 0, ClientOp::Run { arg: 0 }),
            (USB_RAW_IOCTL_RUN, ARG, ClientOp::Run { arg: ARG }),
            (USB_RAW_IOCTL_CONFIGURE, 7, ClientOp::Configure { arg: 7 }),
            (USB_RAW_IOCTL_EP0_STALL, 0, ClientOp::Ep0Stall { arg: 0 }),
        ];
        for (cmd, arg, op) in table {
            let d = decode_retry(&round(cmd, arg, 0, 0), &[]);
            assert_eq!(
                d,
                Decision::Run(Call {
                    ioctl: RawIoctl::from_cmd(cmd).unwrap(),
                    op
                })
            );
        }
    }

    /// spec §1.1, contract C12: an unknown number is EINVAL, including numbers that differ
    /// from a known one only in the size or direction bits.
    #[test]
    fn c12_unknown_ioctl_is_einval() {
        for cmd in [
            0,
            0x5510,
            0x4008_5501,
            USB_RAW_IOCTL_EP0_READ ^ 0x4000_0000,
            0xffff_ffff,
        ] {
            assert_eq!(
                decode_retry(&round(cmd, ARG, 0, 0), &[]),
                Decision::Fail(Errno::EINVAL)
            );
            let mut mem = Mem {
                base: ARG,
                bytes: vec![0; 8],
                unavailable: false,
                reads: 0,
            };
            assert_eq!(
                decode_fast(&round(cmd, ARG, 0, 0), &mut mem),
                Some(Decision::Fail(Errno::EINVAL))
            );
            assert_eq!(mem.reads, 0);
        }
    }

    // ---- fixed-size structs (C4: two rounds) --------------------------------------------

    /// contract C4: INIT asks for its 257 bytes, then runs with them.
    #[test]
    fn c4_init_two_rounds() {
        let r = retry_of(decode_retry(&round(USB_RAW_IOCTL_INIT, ARG, 0, 0), &[]));
        assert_eq!(
            r,
            RetryIovecs {
                input: iv(ARG, 257),
                output: None
            }
        );
        let init = UsbRawInit::new("dummy_udc", "dummy_udc.0", 3);
        let d = decode_retry(&round(USB_RAW_IOCTL_INIT, ARG, 257, 0), &init.to_bytes());
        assert_eq!(d, run(RawIoctl::Init, ClientOp::Init(Box::new(init))));
    }

    /// contract C4: EP_ENABLE copies all 9 bytes of the descriptor.
    #[test]
    fn c4_ep_enable_two_rounds() {
        let r = retry_of(decode_retry(
            &round(USB_RAW_IOCTL_EP_ENABLE, ARG, 0, 0),
            &[],
        ));
        assert_eq!(r.input, iv(ARG, 9));
        let desc = [9, 5, 0x81, 2, 0, 2, 0, 0, 0];
        let d = decode_retry(&round(USB_RAW_IOCTL_EP_ENABLE, ARG, 9, 0), &desc);
        assert_eq!(d, run(RawIoctl::EpEnable, ClientOp::EpEnable { desc }));
    }

    /// contract C4: EPS_INFO asks for a 960-byte out iovec, then runs.
    #[test]
    fn c4_eps_info_two_rounds() {
        let r = retry_of(decode_retry(&round(USB_RAW_IOCTL_EPS_INFO, ARG, 0, 0), &[]));
        assert_eq!(
            r,
            RetryIovecs {
                input: None,
                output: iv(ARG, 960)
            }
        );
        assert_eq!(
            decode_retry(&round(USB_RAW_IOCTL_EPS_INFO, ARG, 0, 960), &[]),
            run(RawIoctl::EpsInfo, ClientOp::EpsInfo)
        );
    }

    /// contract C3: EVENT_FETCH's out iovec is 8 + 8 bytes whatever the capacity, so a large
    /// `length` never meets the 128 KiB limit; the capacity is passed on unchanged.
    #[test]
    fn c3_event_fetch_out_iovec_is_clamped() {
        let r = retry_of(decode_retry(
            &round(USB_RAW_IOCTL_EVENT_FETCH, ARG, 0, 0),
            &[],
        ));
        assert_eq!(
            r,
            RetryIovecs {
                input: iv(ARG, 8),
                output: iv(ARG, 16)
            }
        );
        for capacity in [0u32, 8, 1 << 20, u32::MAX] {
            let hdr = UsbRawEvent {
                type_: 0,
                length: capacity,
            }
            .to_bytes();
            let d = decode_retry(&round(USB_RAW_IOCTL_EVENT_FETCH, ARG, 8, 16), &hdr);
            assert_eq!(
                d,
                run(RawIoctl::EventFetch, ClientOp::EventFetch { capacity })
            );
        }
    }

    // ---- transfers (C4: three rounds; C5: re-validation) --------------------------------

    /// contract C4: EP_WRITE takes nothing, then the header, then header and payload.
    #[test]
    fn c4_ep_write_three_rounds() {
        let r1 = retry_of(decode_retry(&round(USB_RAW_IOCTL_EP_WRITE, ARG, 0, 0), &[]));
        assert_eq!(r1.input, iv(ARG, 8));
        let hdr = io(2, 0, 5);
        let r2 = retry_of(decode_retry(
            &round(USB_RAW_IOCTL_EP_WRITE, ARG, 8, 0),
            &hdr,
        ));
        assert_eq!(
            r2,
            RetryIovecs {
                input: iv(ARG, 13),
                output: None
            }
        );
        let mut full = hdr.clone();
        full.extend_from_slice(b"hello");
        let d = decode_retry(&round(USB_RAW_IOCTL_EP_WRITE, ARG, 13, 0), &full);
        assert_eq!(
            d,
            run(
                RawIoctl::EpWrite,
                ClientOp::EpWrite {
                    io: UsbRawEpIo {
                        ep: 2,
                        flags: 0,
                        length: 5
                    },
                    data: b"hello".to_vec()
                }
            )
        );
    }

    /// contract C4: EP0_READ asks for the header, then header in and payload room out at
    /// `arg + 8`; a zero-length read (the status stage) runs in round two.
    #[test]
    fn c4_ep0_read_three_rounds_and_zero_length_in_two() {
        let hdr = io(0, 0, 64);
        let r2 = retry_of(decode_retry(
            &round(USB_RAW_IOCTL_EP0_READ, ARG, 8, 0),
            &hdr,
        ));
        assert_eq!(
            r2,
            RetryIovecs {
                input: iv(ARG, 8),
                output: iv(ARG + 8, 64)
            }
        );
        let d = decode_retry(&round(USB_RAW_IOCTL_EP0_READ, ARG, 8, 64), &hdr);
        assert!(matches!(
            d,
            Decision::Run(Call {
                ioctl: RawIoctl::Ep0Read,
                ..
            })
        ));
        let zero = io(0, 0, 0);
        let d = decode_retry(&round(USB_RAW_IOCTL_EP0_READ, ARG, 8, 0), &zero);
        assert!(matches!(
            d,
            Decision::Run(Call {
                op: ClientOp::Ep0Read {
                    io: UsbRawEpIo { length: 0, .. },
                    ..
                },
                ..
            })
        ));
    }

    /// contract C5: the final round's header is what runs. A header changed to a longer
    /// length since the previous round asks for another round; a shorter one runs with the
    /// shorter length (a consistent snapshot of header and payload).
    #[test]
    fn c5_final_round_revalidates_the_header() {
        // asked for 8 + 4, but the header now says 100
        let mut data = io(1, 0, 100);
        data.extend_from_slice(&[1, 2, 3, 4]);
        let r = retry_of(decode_retry(
            &round(USB_RAW_IOCTL_EP_WRITE, ARG, 12, 0),
            &data,
        ));
        assert_eq!(r.input, iv(ARG, 108));
        // now says 2: runs with the first two payload bytes
        let mut data = io(1, 0, 2);
        data.extend_from_slice(&[1, 2, 3, 4]);
        let d = decode_retry(&round(USB_RAW_IOCTL_EP_WRITE, ARG, 12, 0), &data);
        assert!(
            matches!(d, Decision::Run(Call { op: ClientOp::EpWrite { ref data, .. }, .. }) if data == &[1, 2])
        );
        // now has a bad flag: EINVAL, nothing runs
        let mut data = io(1, 0x8000, 4);
        data.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            decode_retry(&round(USB_RAW_IOCTL_EP_WRITE, ARG, 12, 0), &data),
            Decision::Fail(Errno::EINVAL)
        );
        // a read whose length grew past the out room retries
        let d = decode_retry(&round(USB_RAW_IOCTL_EP_READ, ARG, 8, 16), &io(1, 0, 17));
        assert_eq!(retry_of(d).output, iv(ARG + 8, 17));
    }

    /// spec §1.5: header checks (ep ≥ 30, unknown flags, length over 4 MiB) give EINVAL
    /// before any payload is asked for, in both paths.
    #[test]
    fn bad_io_headers_are_einval_before_the_payload() {
        let cases = [
            io(30, 0, 4),
            io(0xffff, 0, 4),
            io(0, 2, 4),
            io(0, 0, (1 << 22) + 1),
            io(0, 0, u32::MAX),
        ];
        for cmd in [
            USB_RAW_IOCTL_EP0_WRITE,
            USB_RAW_IOCTL_EP0_READ,
            USB_RAW_IOCTL_EP_WRITE,
            USB_RAW_IOCTL_EP_READ,
        ] {
            for h in &cases {
                assert_eq!(
                    decode_retry(&round(cmd, ARG, 8, 0), h),
                    Decision::Fail(Errno::EINVAL),
                    "{cmd:#x} {h:?}"
                );
                let mut mem = Mem {
                    base: ARG,
                    bytes: h.clone(),
                    unavailable: false,
                    reads: 0,
                };
                assert_eq!(
                    decode_fast(&round(cmd, ARG, 0, 0), &mut mem),
                    Some(Decision::Fail(Errno::EINVAL))
                );
                // a write's read-ahead faults over the unmapped payload, which must not be
                // EFAULT: the header alone is read next, and decides
                let write = matches!(cmd, USB_RAW_IOCTL_EP0_WRITE | USB_RAW_IOCTL_EP_WRITE);
                assert_eq!(
                    mem.reads,
                    if write { 2 } else { 1 },
                    "only the header is read"
                );
                // with the payload mapped, a write's read-ahead is the only read
                let mut mapped = h.clone();
                mapped.resize(8 + PAYLOAD_READ_AHEAD, 0);
                let mut mem = Mem {
                    base: ARG,
                    bytes: mapped,
                    unavailable: false,
                    reads: 0,
                };
                assert_eq!(
                    decode_fast(&round(cmd, ARG, 0, 0), &mut mem),
                    Some(Decision::Fail(Errno::EINVAL))
                );
                assert_eq!(mem.reads, 1);
            }
        }
    }

    /// contract C2: through the retry protocol a write may carry 128 KiB − 8 of payload and a
    /// read 128 KiB; beyond that ENOMEM (the module would serve up to 4 MiB).
    #[test]
    fn c2_retry_limits_are_128k_per_direction() {
        let max = MAX_IOCTL_DIRECTION_BYTES;
        let r = retry_of(decode_retry(
            &round(USB_RAW_IOCTL_EP_WRITE, ARG, 8, 0),
            &io(1, 0, max - 8),
        ));
        assert_eq!(r.input, iv(ARG, u64::from(max)));
        assert_eq!(
            decode_retry(
                &round(USB_RAW_IOCTL_EP_WRITE, ARG, 8, 0),
                &io(1, 0, max - 7)
            ),
            Decision::Fail(Errno::ENOMEM)
        );
        let r = retry_of(decode_retry(
            &round(USB_RAW_IOCTL_EP_READ, ARG, 8, 0),
            &io(1, 0, max),
        ));
        assert_eq!(r.output, iv(ARG + 8, u64::from(max)));
        assert_eq!(
            decode_retry(&round(USB_RAW_IOCTL_EP_READ, ARG, 8, 0), &io(1, 0, max + 1)),
            Decision::Fail(Errno::ENOMEM)
        );
    }

    /// contract C12: a 32-bit caller's iovecs stay within 32 bits; one that would not is
    /// EFAULT (the module's copy faults there too).
    #[test]
    fn c12_32bit_iovecs_fit_in_32_bits() {
        let mut r = round(USB_RAW_IOCTL_EP0_READ, 0xffff_f000, 8, 0);
        r.flags |= FUSE_IOCTL_COMPAT | FUSE_IOCTL_32BIT;
        let got = retry_of(decode_retry(&r, &io(0, 0, 64)));
        assert_eq!(got.output, iv(0xffff_f008, 64));
        let d = decode_retry(&r, &io(0, 0, 0x1000));
        assert_eq!(d, Decision::Fail(Errno::EFAULT));
        let mut r = round(USB_RAW_IOCTL_INIT, 0xffff_ff00, 0, 0);
        r.flags |= FUSE_IOCTL_32BIT;
        assert_eq!(decode_retry(&r, &[]), Decision::Fail(Errno::EFAULT));
        // a 64-bit argument that wraps
        assert_eq!(
            decode_retry(&round(USB_RAW_IOCTL_INIT, u64::MAX - 10, 0, 0), &[]),
            Decision::Fail(Errno::EFAULT)
        );
    }

    // ---- fast path (C11) ---------------------------------------------------------------

    /// contract C11: the fast path runs in round one with the caller's bytes.
    #[test]
    fn c11_fast_path_reads_header_then_payload() {
        let mut bytes = io(3, 1, 4);
        bytes.extend_from_slice(b"abcd");
        let mut mem = Mem {
            base: ARG,
            bytes,
            unavailable: false,
            reads: 0,
        };
        let (d, path) = decode(
            &round(USB_RAW_IOCTL_EP_WRITE, ARG, 0, 0),
            &[],
            Some(&mut mem),
        );
        assert_eq!(path, Path::Fast);
        assert_eq!(
            d,
            run(
                RawIoctl::EpWrite,
                ClientOp::EpWrite {
                    io: UsbRawEpIo {
                        ep: 3,
                        flags: 1,
                        length: 4
                    },
                    data: b"abcd".to_vec()
                }
            )
        );
        // the read-ahead faulted past the 12 mapped bytes: header, then payload
        assert_eq!(mem.reads, 3);
    }

    /// contract C11: an ep0 answer's header and payload in one read when the caller's buffer
    /// has room (the C gadget's `struct rg_io`); a payload longer than the read-ahead is read
    /// whole after it; the data is the caller's either way.
    #[test]
    fn c11_fast_path_reads_a_short_write_in_one_read() {
        for (len, reads) in [
            (18usize, 1),
            (PAYLOAD_READ_AHEAD, 1),
            (PAYLOAD_READ_AHEAD + 1, 2),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            let mut bytes = io(0, 0, len as u32);
            bytes.extend_from_slice(&payload);
            bytes.resize(8 + len.max(PAYLOAD_READ_AHEAD) + 64, 0xee);
            let mut mem = Mem {
                base: ARG,
                bytes,
                unavailable: false,
                reads: 0,
            };
            let (d, path) = decode(
                &round(USB_RAW_IOCTL_EP0_WRITE, ARG, 0, 0),
                &[],
                Some(&mut mem),
            );
            assert_eq!(path, Path::Fast);
            assert_eq!(
                d,
                run(
                    RawIoctl::Ep0Write,
                    ClientOp::Ep0Write {
                        io: UsbRawEpIo {
                            ep: 0,
                            flags: 0,
                            length: len as u32
                        },
                        data: payload
                    }
                ),
                "length {len}"
            );
            assert_eq!(mem.reads, reads, "length {len}");
        }
    }

    /// contract C11: a fault is EFAULT (header or payload); unreachable memory falls back to
    /// the retry protocol's first round.
    #[test]
    fn c11_faults_are_efault_and_eperm_falls_back() {
        // payload beyond the mapping
        let mut mem = Mem {
            base: ARG,
            bytes: io(1, 0, 100),
            unavailable: false,
            reads: 0,
        };
        let (d, _) = decode(
            &round(USB_RAW_IOCTL_EP_WRITE, ARG, 0, 0),
            &[],
            Some(&mut mem),
        );
        assert_eq!(d, Decision::Fail(Errno::EFAULT));
        // header unmapped
        let mut mem = Mem {
            base: 0,
            bytes: vec![],
            unavailable: false,
            reads: 0,
        };
        let (d, _) = decode(&round(USB_RAW_IOCTL_INIT, ARG, 0, 0), &[], Some(&mut mem));
        assert_eq!(d, Decision::Fail(Errno::EFAULT));
        // EPERM: same answer as without memory access
        let mut mem = Mem {
            base: ARG,
            bytes: io(1, 0, 4),
            unavailable: true,
            reads: 0,
        };
        let (d, path) = decode(
            &round(USB_RAW_IOCTL_EP_WRITE, ARG, 0, 0),
            &[],
            Some(&mut mem),
        );
        assert_eq!(path, Path::Retry);
        assert_eq!(retry_of(d).input, iv(ARG, 8));
        // later rounds never use the fast path
        let mut mem = Mem {
            base: ARG,
            bytes: vec![],
            unavailable: false,
            reads: 0,
        };
        let (_, path) = decode(
            &round(USB_RAW_IOCTL_EP_WRITE, ARG, 8, 0),
            &io(1, 0, 0),
            Some(&mut mem),
        );
        assert_eq!((path, mem.reads), (Path::Retry, 0));
    }

    /// contract C11: transfers longer than the retry protocol allows run on the fast path,
    /// up to the module's 4 MiB.
    #[test]
    fn c11_fast_path_lifts_the_128k_cap() {
        let len = 1u32 << 22;
        let mut bytes = io(1, 0, len);
        bytes.resize(8 + len as usize, 0x5a);
        let mut mem = Mem {
            base: ARG,
            bytes,
            unavailable: false,
            reads: 0,
        };
        let (d, _) = decode(
            &round(USB_RAW_IOCTL_EP_WRITE, ARG, 0, 0),
            &[],
            Some(&mut mem),
        );
        assert!(
            matches!(d, Decision::Run(Call { op: ClientOp::EpWrite { ref data, .. }, .. }) if data.len() == len as usize)
        );
        let mut mem = Mem {
            base: ARG,
            bytes: io(1, 0, len),
            unavailable: false,
            reads: 0,
        };
        let (d, _) = decode(
            &round(USB_RAW_IOCTL_EP_READ, ARG, 0, 0),
            &[],
            Some(&mut mem),
        );
        assert!(matches!(
            d,
            Decision::Run(Call {
                ioctl: RawIoctl::EpRead,
                ..
            })
        ));
    }

    #[test]
    fn write_back_bytes() {
        let r = OpResult {
            ret: Ok(0),
            payload: Payload::Event {
                header: UsbRawEvent {
                    type_: 2,
                    length: 8,
                },
                data: vec![0x80, 6, 0, 1, 0, 0, 18, 0],
            },
        };
        let (off, b) = WriteBack::Event.bytes(&r).unwrap();
        assert_eq!((off, b.len()), (0, 16));
        assert_eq!(
            &b[..8],
            &UsbRawEvent {
                type_: 2,
                length: 8
            }
            .to_bytes()
        );
        let r = OpResult {
            ret: Ok(3),
            payload: Payload::Data(vec![1, 2, 3, 4]),
        };
        assert_eq!(WriteBack::ReadData.bytes(&r), Some((8, vec![1, 2, 3])));
        let r = OpResult {
            ret: Err(Errno::EINTR),
            payload: Payload::Data(vec![1]),
        };
        assert_eq!(WriteBack::ReadData.bytes(&r), None);
        let r = OpResult {
            ret: Ok(0),
            payload: Payload::None,
        };
        assert_eq!(WriteBack::None.bytes(&r), None);
    }
}
