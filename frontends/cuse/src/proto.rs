//! The FUSE kernel protocol as CUSE speaks it, sans-IO: requests parsed from the bytes one
//! `read(2)` of `/dev/cuse` returns, replies built as the bytes one `write(2)` sends.
//!
//! Layouts are `include/uapi/linux/fuse.h` (protocol 7.41 in Linux 6.12), in host byte order
//! as the kernel uses them. Parsing never panics: a request that is too short or whose
//! `fuse_in_header.len` disagrees with what was read is a [`ParseError`] that keeps the raw
//! numbers for the log. Builders never fail.
//!
//! What CUSE sends (`fs/fuse/cuse.c`): CUSE_INIT once, then per open file FUSE_OPEN,
//! FUSE_IOCTL (unrestricted, with the retry protocol, `fs/fuse/ioctl.c`), FUSE_READ,
//! FUSE_WRITE, FUSE_POLL and FUSE_RELEASE; FUSE_INTERRUPT for a request already read whose
//! caller got a signal (`fs/fuse/dev.c`). No FLUSH, FSYNC or LSEEK: the character device has
//! no such file operations.

use core::fmt;

/// `FUSE_KERNEL_VERSION`: the major version both sides must speak.
pub const FUSE_KERNEL_VERSION: u32 = 7;
/// The newest minor version whose layouts this codec knows (Linux 6.12's
/// `FUSE_KERNEL_MINOR_VERSION`). CUSE_INIT answers with the smaller of this and the kernel's.
pub const FUSE_KERNEL_MINOR_VERSION: u32 = 41;
/// The oldest minor we accept: from 7.16 on, retry iovecs are `fuse_ioctl_iovec` (64-bit
/// fields) for 64-bit and 32-bit callers alike (contract C12, `ioctl.c:86-115`).
pub const FUSE_MIN_MINOR_VERSION: u32 = 16;

/// `enum fuse_opcode`, the values CUSE uses (plus the no-reply FORGET kinds).
pub mod opcode {
    pub const FUSE_FORGET: u32 = 2;
    pub const FUSE_OPEN: u32 = 14;
    pub const FUSE_READ: u32 = 15;
    pub const FUSE_WRITE: u32 = 16;
    pub const FUSE_RELEASE: u32 = 18;
    pub const FUSE_FSYNC: u32 = 20;
    pub const FUSE_FLUSH: u32 = 25;
    pub const FUSE_INTERRUPT: u32 = 36;
    pub const FUSE_DESTROY: u32 = 38;
    pub const FUSE_IOCTL: u32 = 39;
    pub const FUSE_POLL: u32 = 40;
    pub const FUSE_BATCH_FORGET: u32 = 42;
    pub const FUSE_LSEEK: u32 = 46;
    pub const CUSE_INIT: u32 = 4096;
}

/// `CUSE_UNRESTRICTED_IOCTL` in `cuse_init_in.flags` / `cuse_init_out.flags` (contract C1).
pub const CUSE_UNRESTRICTED_IOCTL: u32 = 1 << 0;

/// `fuse_ioctl_in.flags` / `fuse_ioctl_out.flags` bits.
pub mod ioctl_flags {
    /// 32-bit compat ioctl on a 64-bit kernel.
    pub const FUSE_IOCTL_COMPAT: u32 = 1 << 0;
    /// Not restricted to well-formed ioctls; retry allowed (CUSE with C1).
    pub const FUSE_IOCTL_UNRESTRICTED: u32 = 1 << 1;
    /// In a reply: retry with the iovecs that follow.
    pub const FUSE_IOCTL_RETRY: u32 = 1 << 2;
    /// The caller is 32-bit: pointers and lengths fit in 32 bits (contract C12).
    pub const FUSE_IOCTL_32BIT: u32 = 1 << 3;
    pub const FUSE_IOCTL_DIR: u32 = 1 << 4;
    /// x32 compat ioctl (64-bit time_t).
    pub const FUSE_IOCTL_COMPAT_X32: u32 = 1 << 5;
}

/// `FUSE_IOCTL_MAX_IOV`: in + out iovecs of one retry (contract C6).
pub const FUSE_IOCTL_MAX_IOV: usize = 256;
/// Set in `fuse_in_header.unique` of a FUSE_INTERRUPT (and in the reply to one): the low bit
/// of the interrupted request's unique (`dev.c:32,1132`).
pub const FUSE_INT_REQ_BIT: u64 = 1;
/// Largest devinfo string in a CUSE_INIT reply.
pub const CUSE_INIT_INFO_MAX: usize = 4096;
/// `FUSE_MIN_READ_BUFFER`: a smaller read of `/dev/cuse` fails with EINVAL (contract C7).
pub const FUSE_MIN_READ_BUFFER: usize = 8192;
/// Bytes one ioctl may move in each direction through the retry protocol:
/// `FUSE_DEFAULT_MAX_PAGES_PER_REQ` (32) pages of 4 KiB; CUSE_INIT cannot raise it (contract C2).
pub const MAX_IOCTL_DIRECTION_BYTES: u32 = 32 * 4096;
/// `O_NONBLOCK` in `fuse_open_in.flags` (the opener's `f_flags`).
pub const O_NONBLOCK: u32 = 0o4000;

/// Size of the buffer `/dev/cuse` must be read with: the largest request CUSE sends to us is
/// a FUSE_IOCTL carrying [`MAX_IOCTL_DIRECTION_BYTES`] of input after its two headers. A
/// request that does not fit fails the *client's* call with EIO (contract C7, `dev.c:1343`).
pub const READ_BUFFER_SIZE: usize =
    InHeader::SIZE + IoctlIn::SIZE + MAX_IOCTL_DIRECTION_BYTES as usize + 4096;

// contract C7: the largest ioctl request fits, and the kernel's minimum is met
const _: () = assert!(READ_BUFFER_SIZE >= 40 + 32 + 128 * 1024);
const _: () = assert!(READ_BUFFER_SIZE >= FUSE_MIN_READ_BUFFER);

/// Why a request could not be parsed. Carries the raw numbers so the log shows what came.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("request of {got} bytes, shorter than fuse_in_header (40)")]
    ShortHeader { got: usize },
    #[error("fuse_in_header.len {header} but {got} bytes were read")]
    LengthMismatch { header: u32, got: usize },
    #[error("opcode {opcode}: body of {got} bytes, {needed} needed")]
    ShortBody {
        opcode: u32,
        needed: usize,
        got: usize,
    },
    #[error("FUSE_IOCTL: in_size {in_size} but {got} bytes of input follow")]
    IoctlInputMismatch { in_size: u32, got: usize },
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_ne_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_ne_bytes(a)
}

/// `struct fuse_in_header` (40 bytes).
#[doc(alias = "fuse_in_header")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct InHeader {
    /// Length of the whole request, this header included.
    pub len: u32,
    pub opcode: u32,
    /// Request id; its reply carries it. FUSE_INTERRUPT's has [`FUSE_INT_REQ_BIT`] set.
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    /// The calling *thread's* id in the daemon's pid namespace, 0 if invisible there
    /// (contract C11, `dev.c:150`).
    pub pid: u32,
    /// Extensions after the body, in 8-byte units.
    pub total_extlen: u16,
    pub padding: u16,
}

impl InHeader {
    pub const SIZE: usize = 40;

    /// # Errors
    /// [`ParseError::ShortHeader`] under 40 bytes.
    pub fn parse(b: &[u8]) -> Result<InHeader, ParseError> {
        if b.len() < Self::SIZE {
            return Err(ParseError::ShortHeader { got: b.len() });
        }
        Ok(InHeader {
            len: u32_at(b, 0),
            opcode: u32_at(b, 4),
            unique: u64_at(b, 8),
            nodeid: u64_at(b, 16),
            uid: u32_at(b, 24),
            gid: u32_at(b, 28),
            pid: u32_at(b, 32),
            total_extlen: u16_at(b, 36),
            padding: u16_at(b, 38),
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.len.to_ne_bytes());
        out.extend_from_slice(&self.opcode.to_ne_bytes());
        out.extend_from_slice(&self.unique.to_ne_bytes());
        out.extend_from_slice(&self.nodeid.to_ne_bytes());
        out.extend_from_slice(&self.uid.to_ne_bytes());
        out.extend_from_slice(&self.gid.to_ne_bytes());
        out.extend_from_slice(&self.pid.to_ne_bytes());
        out.extend_from_slice(&self.total_extlen.to_ne_bytes());
        out.extend_from_slice(&self.padding.to_ne_bytes());
    }
}

/// `struct fuse_out_header` (16 bytes).
#[doc(alias = "fuse_out_header")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct OutHeader {
    /// Length of the whole reply; the kernel refuses a write whose length differs (EINVAL).
    pub len: u32,
    /// 0 or a negative errno in (-512, 0]; with an error the reply is the header alone.
    pub error: i32,
    pub unique: u64,
}

impl OutHeader {
    pub const SIZE: usize = 16;

    /// # Errors
    /// [`ParseError::ShortHeader`] under 16 bytes.
    pub fn parse(b: &[u8]) -> Result<OutHeader, ParseError> {
        if b.len() < Self::SIZE {
            return Err(ParseError::ShortHeader { got: b.len() });
        }
        Ok(OutHeader {
            len: u32_at(b, 0),
            error: u32_at(b, 4) as i32,
            unique: u64_at(b, 8),
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.len.to_ne_bytes());
        out.extend_from_slice(&self.error.to_ne_bytes());
        out.extend_from_slice(&self.unique.to_ne_bytes());
    }
}

/// `struct cuse_init_in` (16 bytes).
#[doc(alias = "cuse_init_in")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct CuseInitIn {
    pub major: u32,
    pub minor: u32,
    pub unused: u32,
    /// The kernel offers [`CUSE_UNRESTRICTED_IOCTL`] (`cuse.c:453`).
    pub flags: u32,
}

impl CuseInitIn {
    pub const SIZE: usize = 16;

    fn parse(b: &[u8]) -> CuseInitIn {
        CuseInitIn {
            major: u32_at(b, 0),
            minor: u32_at(b, 4),
            unused: u32_at(b, 8),
            flags: u32_at(b, 12),
        }
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        for v in [self.major, self.minor, self.unused, self.flags] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
    }
}

/// `struct cuse_init_out` (72 bytes: eight fields and `spare[10]`).
#[doc(alias = "cuse_init_out")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct CuseInitOut {
    pub major: u32,
    /// At least 11 or the kernel aborts; we answer at least [`FUSE_MIN_MINOR_VERSION`].
    pub minor: u32,
    /// [`CUSE_UNRESTRICTED_IOCTL`] to accept unrestricted ioctls (`cuse.c:344`).
    pub flags: u32,
    /// Raised to 4096 by the kernel if smaller.
    pub max_read: u32,
    pub max_write: u32,
    /// 0: the kernel allocates a chrdev region (`cuse.c:352-356`).
    pub dev_major: u32,
    pub dev_minor: u32,
}

impl CuseInitOut {
    pub const SIZE: usize = 72;

    pub fn parse(b: &[u8]) -> Option<CuseInitOut> {
        (b.len() >= Self::SIZE).then(|| CuseInitOut {
            major: u32_at(b, 0),
            minor: u32_at(b, 4),
            flags: u32_at(b, 12),
            max_read: u32_at(b, 16),
            max_write: u32_at(b, 20),
            dev_major: u32_at(b, 24),
            dev_minor: u32_at(b, 28),
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        let fields = [
            self.major,
            self.minor,
            0, // unused
            self.flags,
            self.max_read,
            self.max_write,
            self.dev_major,
            self.dev_minor,
        ];
        for v in fields {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        out.extend_from_slice(&[0u8; 40]); // spare[10]
    }
}

/// `struct fuse_open_in` (8 bytes).
#[doc(alias = "fuse_open_in")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct OpenIn {
    /// The opener's `f_flags` (O_CREAT, O_EXCL, O_NOCTTY removed).
    pub flags: u32,
    pub open_flags: u32,
}

impl OpenIn {
    pub const SIZE: usize = 8;
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&self.open_flags.to_ne_bytes());
    }
}

/// `struct fuse_open_out` (16 bytes).
#[doc(alias = "fuse_open_out")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct OpenOut {
    /// File handle: comes back in every FUSE_IOCTL and FUSE_RELEASE of this open.
    pub fh: u64,
    /// `FOPEN_*`. CUSE ignores FOPEN_NONSEEKABLE/STREAM: its open never calls
    /// `fuse_finish_open` (`cuse.c:138`), so lseek stays `noop_llseek` (contract C12).
    pub open_flags: u32,
    pub backing_id: i32,
}

impl OpenOut {
    pub const SIZE: usize = 16;
    pub fn parse(b: &[u8]) -> Option<OpenOut> {
        (b.len() >= Self::SIZE).then(|| OpenOut {
            fh: u64_at(b, 0),
            open_flags: u32_at(b, 8),
            backing_id: u32_at(b, 12) as i32,
        })
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.fh.to_ne_bytes());
        out.extend_from_slice(&self.open_flags.to_ne_bytes());
        out.extend_from_slice(&self.backing_id.to_ne_bytes());
    }
}

/// `struct fuse_release_in` (24 bytes).
#[doc(alias = "fuse_release_in")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ReleaseIn {
    pub fh: u64,
    pub flags: u32,
    pub release_flags: u32,
    pub lock_owner: u64,
}

impl ReleaseIn {
    pub const SIZE: usize = 24;
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.fh.to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&self.release_flags.to_ne_bytes());
        out.extend_from_slice(&self.lock_owner.to_ne_bytes());
    }
}

/// `struct fuse_ioctl_in` (32 bytes), followed by `in_size` bytes of input.
#[doc(alias = "fuse_ioctl_in")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct IoctlIn {
    pub fh: u64,
    /// [`ioctl_flags`]: UNRESTRICTED (C1), COMPAT and 32BIT for 32-bit callers (C12).
    pub flags: u32,
    pub cmd: u32,
    /// The third `ioctl()` argument, as the caller passed it (zero-extended for 32-bit).
    pub arg: u64,
    /// Bytes of input copied from the in iovecs of the previous round (0 in round one).
    pub in_size: u32,
    /// Room of the out iovecs of the previous round (0 in round one).
    pub out_size: u32,
}

impl IoctlIn {
    pub const SIZE: usize = 32;

    fn parse(b: &[u8]) -> IoctlIn {
        IoctlIn {
            fh: u64_at(b, 0),
            flags: u32_at(b, 8),
            cmd: u32_at(b, 12),
            arg: u64_at(b, 16),
            in_size: u32_at(b, 24),
            out_size: u32_at(b, 28),
        }
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.fh.to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&self.cmd.to_ne_bytes());
        out.extend_from_slice(&self.arg.to_ne_bytes());
        out.extend_from_slice(&self.in_size.to_ne_bytes());
        out.extend_from_slice(&self.out_size.to_ne_bytes());
    }

    /// The caller is a 32-bit process (contract C12).
    pub fn is_32bit(&self) -> bool {
        self.flags & ioctl_flags::FUSE_IOCTL_32BIT != 0
    }
}

/// `struct fuse_ioctl_out` (16 bytes).
#[doc(alias = "fuse_ioctl_out")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct IoctlOut {
    /// The ioctl's return value (or a negative errno).
    pub result: i32,
    /// [`ioctl_flags::FUSE_IOCTL_RETRY`] to ask for another round.
    pub flags: u32,
    pub in_iovs: u32,
    pub out_iovs: u32,
}

impl IoctlOut {
    pub const SIZE: usize = 16;
    pub fn parse(b: &[u8]) -> Option<IoctlOut> {
        (b.len() >= Self::SIZE).then(|| IoctlOut {
            result: u32_at(b, 0) as i32,
            flags: u32_at(b, 4),
            in_iovs: u32_at(b, 8),
            out_iovs: u32_at(b, 12),
        })
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.result.to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&self.in_iovs.to_ne_bytes());
        out.extend_from_slice(&self.out_iovs.to_ne_bytes());
    }
}

/// `struct fuse_ioctl_iovec` (16 bytes): the 7.16+ layout, for 32-bit callers too (C12).
#[doc(alias = "fuse_ioctl_iovec")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct IoctlIovec {
    /// An address in the caller's memory.
    pub base: u64,
    pub len: u64,
}

impl IoctlIovec {
    pub const SIZE: usize = 16;
    pub fn parse(b: &[u8]) -> Option<IoctlIovec> {
        (b.len() >= Self::SIZE).then(|| IoctlIovec {
            base: u64_at(b, 0),
            len: u64_at(b, 8),
        })
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.base.to_ne_bytes());
        out.extend_from_slice(&self.len.to_ne_bytes());
    }
}

/// `struct fuse_interrupt_in` (8 bytes).
#[doc(alias = "fuse_interrupt_in")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct InterruptIn {
    /// The interrupted request's unique.
    pub unique: u64,
}

/// The fixed parts of `fuse_read_in` / `fuse_write_in` (40 bytes each) that matter here.
#[doc(alias = "fuse_read_in")]
#[doc(alias = "fuse_write_in")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RwIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
}

impl RwIn {
    pub const SIZE: usize = 40;
}

/// `struct fuse_poll_in` (24 bytes).
#[doc(alias = "fuse_poll_in")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PollIn {
    pub fh: u64,
    pub kh: u64,
    pub flags: u32,
    pub events: u32,
}

impl PollIn {
    pub const SIZE: usize = 24;
}

/// What a request asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Operation<'a> {
    CuseInit(CuseInitIn),
    Open(OpenIn),
    Release(ReleaseIn),
    /// `data` is the input of the in iovecs asked for in the previous round.
    Ioctl {
        arg: IoctlIn,
        data: &'a [u8],
    },
    Interrupt(InterruptIn),
    Read(RwIn),
    Write {
        arg: RwIn,
        data: &'a [u8],
    },
    Poll(PollIn),
    /// FUSE_FORGET / FUSE_BATCH_FORGET: never answered.
    Forget,
    /// Anything else (FLUSH, FSYNC, LSEEK ... which CUSE does not send): answered ENOSYS.
    Other {
        opcode: u32,
    },
}

/// One parsed request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Request<'a> {
    pub header: InHeader,
    pub op: Operation<'a>,
}

impl<'a> Request<'a> {
    /// Parses what one read of `/dev/cuse` returned.
    ///
    /// # Errors
    /// [`ParseError`] when the bytes are not a well-formed request; never panics.
    pub fn parse(buf: &'a [u8]) -> Result<Request<'a>, ParseError> {
        let header = InHeader::parse(buf)?;
        if header.len as usize != buf.len() {
            return Err(ParseError::LengthMismatch {
                header: header.len,
                got: buf.len(),
            });
        }
        let ext = usize::from(header.total_extlen) * 8;
        let body_end = buf.len().saturating_sub(ext).max(InHeader::SIZE);
        let body = &buf[InHeader::SIZE..body_end];
        let need = |needed: usize| -> Result<(), ParseError> {
            if body.len() < needed {
                Err(ParseError::ShortBody {
                    opcode: header.opcode,
                    needed,
                    got: body.len(),
                })
            } else {
                Ok(())
            }
        };
        let op = match header.opcode {
            opcode::CUSE_INIT => {
                need(CuseInitIn::SIZE)?;
                Operation::CuseInit(CuseInitIn::parse(body))
            }
            opcode::FUSE_OPEN => {
                need(OpenIn::SIZE)?;
                Operation::Open(OpenIn {
                    flags: u32_at(body, 0),
                    open_flags: u32_at(body, 4),
                })
            }
            opcode::FUSE_RELEASE => {
                need(ReleaseIn::SIZE)?;
                Operation::Release(ReleaseIn {
                    fh: u64_at(body, 0),
                    flags: u32_at(body, 8),
                    release_flags: u32_at(body, 12),
                    lock_owner: u64_at(body, 16),
                })
            }
            opcode::FUSE_IOCTL => {
                need(IoctlIn::SIZE)?;
                let arg = IoctlIn::parse(body);
                let data = &body[IoctlIn::SIZE..];
                if data.len() != arg.in_size as usize {
                    return Err(ParseError::IoctlInputMismatch {
                        in_size: arg.in_size,
                        got: data.len(),
                    });
                }
                Operation::Ioctl { arg, data }
            }
            opcode::FUSE_INTERRUPT => {
                need(8)?;
                Operation::Interrupt(InterruptIn {
                    unique: u64_at(body, 0),
                })
            }
            opcode::FUSE_READ | opcode::FUSE_WRITE => {
                // 7.9+ layout; older protocols had a 24-byte fuse_write_in
                need(24)?;
                let arg = RwIn {
                    fh: u64_at(body, 0),
                    offset: u64_at(body, 8),
                    size: u32_at(body, 16),
                };
                if header.opcode == opcode::FUSE_READ {
                    Operation::Read(arg)
                } else {
                    let data = body.get(RwIn::SIZE..).unwrap_or(&[]);
                    Operation::Write { arg, data }
                }
            }
            opcode::FUSE_POLL => {
                need(PollIn::SIZE)?;
                Operation::Poll(PollIn {
                    fh: u64_at(body, 0),
                    kh: u64_at(body, 8),
                    flags: u32_at(body, 16),
                    events: u32_at(body, 20),
                })
            }
            opcode::FUSE_FORGET | opcode::FUSE_BATCH_FORGET => Operation::Forget,
            other => Operation::Other { opcode: other },
        };
        Ok(Request { header, op })
    }
}

impl fmt::Display for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        write!(f, "unique {:#x} pid {} ", h.unique, h.pid)?;
        match &self.op {
            Operation::Ioctl { arg, data } => write!(
                f,
                "FUSE_IOCTL fh {} cmd {:#010x} arg {:#x} flags {:#x} in {} out {} ({} bytes in)",
                arg.fh,
                arg.cmd,
                arg.arg,
                arg.flags,
                arg.in_size,
                arg.out_size,
                data.len()
            ),
            op => write!(f, "{op:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replies

fn reply_with(
    unique: u64,
    error: i32,
    body_len: usize,
    body: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let len = OutHeader::SIZE + body_len;
    let mut out = Vec::with_capacity(len);
    OutHeader {
        len: len as u32,
        error,
        unique,
    }
    .emit(&mut out);
    body(&mut out);
    debug_assert_eq!(out.len(), len);
    out
}

/// An error reply: the header alone with `-errno` (the kernel rejects a body after an error).
pub fn reply_error(unique: u64, errno: rawgadget_uapi::Errno) -> Vec<u8> {
    reply_with(unique, -errno.raw(), 0, |_| {})
}

/// A success without a body (FUSE_RELEASE).
pub fn reply_empty(unique: u64) -> Vec<u8> {
    reply_with(unique, 0, 0, |_| {})
}

/// The CUSE_INIT reply: `cuse_init_out` then the devinfo strings (`"DEVNAME=name\0"`).
pub fn reply_cuse_init(unique: u64, out: &CuseInitOut, devinfo: &[u8]) -> Vec<u8> {
    reply_with(unique, 0, CuseInitOut::SIZE + devinfo.len(), |v| {
        out.emit(v);
        v.extend_from_slice(devinfo);
    })
}

/// The FUSE_OPEN reply.
pub fn reply_open(unique: u64, out: &OpenOut) -> Vec<u8> {
    reply_with(unique, 0, OpenOut::SIZE, |v| out.emit(v))
}

/// The final FUSE_IOCTL reply: the return value, and `data` for the out iovecs (at most the
/// round's `out_size`, else the kernel fails the call with EIO, `ioctl.c:388`).
pub fn reply_ioctl(unique: u64, result: i32, data: &[u8]) -> Vec<u8> {
    reply_with(unique, 0, IoctlOut::SIZE + data.len(), |v| {
        IoctlOut {
            result,
            ..IoctlOut::default()
        }
        .emit(v);
        v.extend_from_slice(data);
    })
}

/// A FUSE_IOCTL reply asking for another round with these iovecs.
pub fn reply_ioctl_retry(unique: u64, input: &[IoctlIovec], output: &[IoctlIovec]) -> Vec<u8> {
    let n = input.len() + output.len();
    reply_with(unique, 0, IoctlOut::SIZE + n * IoctlIovec::SIZE, |v| {
        IoctlOut {
            result: 0,
            flags: ioctl_flags::FUSE_IOCTL_RETRY,
            in_iovs: input.len() as u32,
            out_iovs: output.len() as u32,
        }
        .emit(v);
        for iov in input.iter().chain(output) {
            iov.emit(v);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rawgadget_uapi::Errno;

    /// A FUSE_IOCTL request for USB_RAW_IOCTL_EP0_READ, round two (8 bytes of input), laid
    /// out as `fuse_dev_do_read` copies it: fuse_in_header, fuse_ioctl_in, the input.
    #[rustfmt::skip]
    fn ioctl_round_two() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&80u32.to_ne_bytes());           // len: 40 + 32 + 8
        b.extend_from_slice(&39u32.to_ne_bytes());           // opcode FUSE_IOCTL
        b.extend_from_slice(&0x1234u64.to_ne_bytes());       // unique
        b.extend_from_slice(&0u64.to_ne_bytes());            // nodeid
        b.extend_from_slice(&1000u32.to_ne_bytes());         // uid
        b.extend_from_slice(&1000u32.to_ne_bytes());         // gid
        b.extend_from_slice(&4242u32.to_ne_bytes());         // pid (the thread)
        b.extend_from_slice(&0u16.to_ne_bytes());            // total_extlen
        b.extend_from_slice(&0u16.to_ne_bytes());            // padding
        b.extend_from_slice(&7u64.to_ne_bytes());            // fuse_ioctl_in.fh
        b.extend_from_slice(&2u32.to_ne_bytes());            // flags FUSE_IOCTL_UNRESTRICTED
        b.extend_from_slice(&0xc008_5504u32.to_ne_bytes());  // cmd USB_RAW_IOCTL_EP0_READ
        b.extend_from_slice(&0x7fff_0000u64.to_ne_bytes());  // arg
        b.extend_from_slice(&8u32.to_ne_bytes());            // in_size
        b.extend_from_slice(&0u32.to_ne_bytes());            // out_size
        b.extend_from_slice(&0u16.to_ne_bytes());            // usb_raw_ep_io.ep
        b.extend_from_slice(&0u16.to_ne_bytes());            // usb_raw_ep_io.flags
        b.extend_from_slice(&64u32.to_ne_bytes());           // usb_raw_ep_io.length
        b
    }

    #[test]
    fn parse_ioctl_request_field_by_field() {
        let bytes = ioctl_round_two();
        let req = Request::parse(&bytes).unwrap();
        assert_eq!(
            req.header,
            InHeader {
                len: 80,
                opcode: opcode::FUSE_IOCTL,
                unique: 0x1234,
                nodeid: 0,
                uid: 1000,
                gid: 1000,
                pid: 4242,
                total_extlen: 0,
                padding: 0
            }
        );
        let Operation::Ioctl { arg, data } = req.op else {
            panic!("not an ioctl: {req}")
        };
        assert_eq!(
            arg,
            IoctlIn {
                fh: 7,
                flags: ioctl_flags::FUSE_IOCTL_UNRESTRICTED,
                cmd: rawgadget_uapi::USB_RAW_IOCTL_EP0_READ,
                arg: 0x7fff_0000,
                in_size: 8,
                out_size: 0
            }
        );
        assert_eq!(data.len(), 8);
        // emit is the inverse of parse
        let mut again = Vec::new();
        req.header.emit(&mut again);
        arg.emit(&mut again);
        again.extend_from_slice(data);
        assert_eq!(again, bytes);
    }

    #[rustfmt::skip]
    #[test]
    fn parse_cuse_init_request() {
        let mut b = Vec::new();
        b.extend_from_slice(&56u32.to_ne_bytes());           // len: 40 + 16
        b.extend_from_slice(&4096u32.to_ne_bytes());         // opcode CUSE_INIT
        b.extend_from_slice(&2u64.to_ne_bytes());            // unique
        b.extend_from_slice(&0u64.to_ne_bytes());            // nodeid
        b.extend_from_slice(&[0u8; 16]);                     // uid, gid, pid, extlen, padding
        b.extend_from_slice(&7u32.to_ne_bytes());            // cuse_init_in.major
        b.extend_from_slice(&41u32.to_ne_bytes());           // minor
        b.extend_from_slice(&0u32.to_ne_bytes());            // unused
        b.extend_from_slice(&1u32.to_ne_bytes());            // flags CUSE_UNRESTRICTED_IOCTL
        let req = Request::parse(&b).unwrap();
        assert_eq!(
            req.op,
            Operation::CuseInit(CuseInitIn { major: 7, minor: 41, unused: 0, flags: CUSE_UNRESTRICTED_IOCTL })
        );
    }

    #[rustfmt::skip]
    #[test]
    fn cuse_init_reply_bytes() {
        let out = CuseInitOut {
            major: 7, minor: 41, flags: CUSE_UNRESTRICTED_IOCTL,
            max_read: 4096, max_write: 4096, dev_major: 0, dev_minor: 0,
        };
        let r = reply_cuse_init(2, &out, b"DEVNAME=raw-gadget\0");
        let mut want = Vec::new();
        want.extend_from_slice(&(16u32 + 72 + 19).to_ne_bytes()); // out_header.len
        want.extend_from_slice(&0i32.to_ne_bytes());              // error
        want.extend_from_slice(&2u64.to_ne_bytes());              // unique
        want.extend_from_slice(&7u32.to_ne_bytes());              // major
        want.extend_from_slice(&41u32.to_ne_bytes());             // minor
        want.extend_from_slice(&0u32.to_ne_bytes());              // unused
        want.extend_from_slice(&1u32.to_ne_bytes());              // flags
        want.extend_from_slice(&4096u32.to_ne_bytes());           // max_read
        want.extend_from_slice(&4096u32.to_ne_bytes());           // max_write
        want.extend_from_slice(&0u32.to_ne_bytes());              // dev_major
        want.extend_from_slice(&0u32.to_ne_bytes());              // dev_minor
        want.extend_from_slice(&[0u8; 40]);                       // spare[10]
        want.extend_from_slice(b"DEVNAME=raw-gadget\0");          // devinfo
        assert_eq!(r, want);
        assert_eq!(CuseInitOut::parse(&r[16..]).unwrap(), out);
    }

    #[rustfmt::skip]
    #[test]
    fn retry_reply_bytes() {
        let r = reply_ioctl_retry(
            0x10,
            &[IoctlIovec { base: 0x1000, len: 8 }],
            &[IoctlIovec { base: 0x1008, len: 64 }],
        );
        let mut want = Vec::new();
        want.extend_from_slice(&(16u32 + 16 + 32).to_ne_bytes()); // len
        want.extend_from_slice(&0i32.to_ne_bytes());              // error
        want.extend_from_slice(&0x10u64.to_ne_bytes());           // unique
        want.extend_from_slice(&0i32.to_ne_bytes());              // fuse_ioctl_out.result
        want.extend_from_slice(&4u32.to_ne_bytes());              // flags FUSE_IOCTL_RETRY
        want.extend_from_slice(&1u32.to_ne_bytes());              // in_iovs
        want.extend_from_slice(&1u32.to_ne_bytes());              // out_iovs
        want.extend_from_slice(&0x1000u64.to_ne_bytes());         // in[0].base
        want.extend_from_slice(&8u64.to_ne_bytes());              // in[0].len
        want.extend_from_slice(&0x1008u64.to_ne_bytes());         // out[0].base
        want.extend_from_slice(&64u64.to_ne_bytes());             // out[0].len
        assert_eq!(r, want);
    }

    #[rustfmt::skip]
    #[test]
    fn error_and_ioctl_replies() {
        let e = reply_error(0x21, Errno::EAGAIN);
        let mut want = Vec::new();
        want.extend_from_slice(&16u32.to_ne_bytes());            // len: header only
        want.extend_from_slice(&(-11i32).to_ne_bytes());         // error -EAGAIN
        want.extend_from_slice(&0x21u64.to_ne_bytes());          // unique (INT bit kept)
        assert_eq!(e, want);
        let r = reply_ioctl(0x30, 3, &[1, 2, 3]);
        assert_eq!(OutHeader::parse(&r).unwrap(), OutHeader { len: 35, error: 0, unique: 0x30 });
        assert_eq!(IoctlOut::parse(&r[16..]).unwrap(), IoctlOut { result: 3, ..Default::default() });
        assert_eq!(&r[32..], &[1, 2, 3]);
        assert_eq!(reply_empty(5).len(), 16);
        let o = reply_open(9, &OpenOut { fh: 77, open_flags: 0, backing_id: 0 });
        assert_eq!(OpenOut::parse(&o[16..]).unwrap().fh, 77);
    }

    #[test]
    fn parse_rejects_bad_lengths_without_panicking() {
        assert_eq!(
            Request::parse(&[0u8; 10]),
            Err(ParseError::ShortHeader { got: 10 })
        );
        let mut b = ioctl_round_two();
        b.pop();
        assert!(matches!(
            Request::parse(&b),
            Err(ParseError::LengthMismatch {
                header: 80,
                got: 79
            })
        ));
        // in_size says 8 but 4 bytes follow
        let mut b = ioctl_round_two();
        b.truncate(76);
        b[0..4].copy_from_slice(&76u32.to_ne_bytes());
        assert_eq!(
            Request::parse(&b),
            Err(ParseError::IoctlInputMismatch { in_size: 8, got: 4 })
        );
        // a body too short for fuse_ioctl_in
        let mut b = ioctl_round_two();
        b.truncate(50);
        b[0..4].copy_from_slice(&50u32.to_ne_bytes());
        assert!(matches!(
            Request::parse(&b),
            Err(ParseError::ShortBody {
                opcode: 39,
                needed: 32,
                got: 10
            })
        ));
        // every prefix of a valid request parses or fails cleanly
        let full = ioctl_round_two();
        for n in 0..full.len() {
            let mut b = full[..n].to_vec();
            if n >= 4 {
                b[0..4].copy_from_slice(&(n as u32).to_ne_bytes());
            }
            let _ = Request::parse(&b);
        }
    }
}
