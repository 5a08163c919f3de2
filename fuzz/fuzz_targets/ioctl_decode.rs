//! Raw gadget ioctl decoding over FUSE_IOCTL (rawgadget-cuse `proto` and `ioctl`).
//!
//! Each input is a caller's memory image, an ioctl number (one of the 16 or any), an argument
//! pointing into or past the image, 32-bit or not, and raw bytes for the request parser.
//! Checked:
//! - `Request::parse` never panics, and whatever it returns prints;
//! - the retry protocol, run round by round as `fuse_do_ioctl` would over the image (copy-in
//!   faults end it with EFAULT), ends within 3 rounds (contract C4), asks for at most one
//!   iovec each way within 128 KiB (C2, C6) and within 32 bits for 32-bit callers (C12);
//! - each round's decision depends only on the round (deciding twice gives the same, C5);
//! - the fast path over the same image decides exactly what the retry protocol decides, except
//!   where the retry protocol says ENOMEM (the 128 KiB cap the fast path lifts, C2/C11);
//! - what runs is well-formed: a write carries exactly `length` payload bytes of a header that
//!   passes the module's checks, memory stays bounded by the module's 4 MiB.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rawgadget_cuse::ioctl::{
    decode_fast, decode_retry, Call, ClientMemory, Decision, MemError, RetryIovecs,
};
use rawgadget_cuse::proto::{ioctl_flags, IoctlIn, Request, MAX_IOCTL_DIRECTION_BYTES};
use rawgadget_engine::{validate_io_header, ClientOp};
use rawgadget_uapi::{Errno, IOCTLS};

const BASE: u64 = 0x7000_0000;

#[derive(Arbitrary, Debug)]
struct Input {
    pick: u8,
    raw_cmd: u32,
    arg_off: i16,
    compat: bool,
    /// Long headers are rare from random bytes: optionally force a small length.
    small_length: Option<u8>,
    memory: Vec<u8>,
    raw_request: Vec<u8>,
}

struct Image<'a>(&'a [u8]);

impl Image<'_> {
    fn get(&self, addr: u64, len: u64) -> Option<&[u8]> {
        let off = addr.checked_sub(BASE)?;
        let end = off.checked_add(len)?;
        self.0.get(off as usize..usize::try_from(end).ok()?)
    }
}

impl ClientMemory for Image<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let src = self.get(addr, buf.len() as u64).ok_or(MemError::Fault)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&mut self, _: u64, _: &[u8]) -> Result<(), MemError> {
        Err(MemError::Fault)
    }
}

fn check_iovecs(r: &RetryIovecs, compat: bool) {
    for iov in r.input().iter().chain(r.output()) {
        assert!(iov.len <= u64::from(MAX_IOCTL_DIRECTION_BYTES), "{r:?}");
        if compat {
            assert!(iov.base + iov.len <= 1 << 32, "{r:?}");
        }
    }
}

fn check_call(call: &Call) {
    match &call.op {
        ClientOp::Ep0Write { io, data } | ClientOp::EpWrite { io, data } => {
            assert_eq!(validate_io_header(io), Ok(()));
            assert_eq!(data.len(), io.length as usize);
        }
        ClientOp::Ep0Read { io, buf } | ClientOp::EpRead { io, buf } => {
            assert_eq!(validate_io_header(io), Ok(()));
            assert!(buf.is_empty());
        }
        _ => {}
    }
}

fuzz_target!(|input: Input| {
    if let Ok(req) = Request::parse(&input.raw_request) {
        let _ = req.to_string();
    }

    let mut memory = input.memory;
    if let (Some(len), true) = (input.small_length, memory.len() >= 8) {
        memory[4..8].copy_from_slice(&u32::from(len).to_ne_bytes());
    }
    let cmd = if input.pick < 200 {
        IOCTLS[usize::from(input.pick) % IOCTLS.len()].cmd
    } else {
        input.raw_cmd
    };
    let arg = BASE.wrapping_add_signed(i64::from(input.arg_off));
    let mut flags = ioctl_flags::FUSE_IOCTL_UNRESTRICTED;
    if input.compat {
        flags |= ioctl_flags::FUSE_IOCTL_COMPAT | ioctl_flags::FUSE_IOCTL_32BIT;
    }
    let image = Image(&memory);

    // the retry protocol, round by round
    let mut round = IoctlIn {
        fh: 1,
        flags,
        cmd,
        arg,
        in_size: 0,
        out_size: 0,
    };
    let mut data: Vec<u8> = Vec::new();
    let mut rounds = 0;
    let retry = loop {
        rounds += 1;
        assert!(rounds <= 3, "more than 3 rounds for {cmd:#x}");
        let d = decode_retry(&round, &data);
        assert_eq!(
            d,
            decode_retry(&round, &data),
            "a round decides the same twice"
        );
        match d {
            Decision::Retry(r) => {
                check_iovecs(&r, input.compat);
                let mut next = Vec::new();
                let mut fault = false;
                for iov in r.input() {
                    match image.get(iov.base, iov.len) {
                        Some(b) => next.extend_from_slice(b),
                        None => fault = true,
                    }
                }
                if fault {
                    break Decision::Fail(Errno::EFAULT);
                }
                round.in_size = next.len() as u32;
                round.out_size = r.output().iter().map(|v| v.len as u32).sum();
                data = next;
            }
            other => break other,
        }
    };
    if let Decision::Run(call) = &retry {
        check_call(call);
    }

    // the fast path over the same memory
    let mut mem = Image(&memory);
    let fast = decode_fast(
        &IoctlIn {
            in_size: 0,
            out_size: 0,
            ..round
        },
        &mut mem,
    )
    .expect("the image is always reachable");
    if let Decision::Run(call) = &fast {
        check_call(call);
    }
    if retry != Decision::Fail(Errno::ENOMEM) {
        assert_eq!(
            fast, retry,
            "fast path and retry protocol disagree on {cmd:#x}"
        );
    }
});
