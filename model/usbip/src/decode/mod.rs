//! Streaming decoders: bytes in as they arrive from a socket, whole PDUs out.
//!
//! Every decoder has the same shape:
//!
//! ```text
//! decode(&mut self, input: &[u8]) -> Result<(consumed, Step), Error>
//! ```
//!
//! It consumes bytes only up to the end of the PDU in progress, so the caller keeps the rest and
//! calls again (a PDU never needs bytes the decoder has not asked for). `Step::NeedMore(n)` means
//! all of `input` was consumed and at least `n` more bytes are needed before anything can be
//! returned; a driver may read exactly `n` bytes next. A decoder holds at most one PDU: a
//! 48-byte header plus its payload, whose size was checked against [`Limits`] before anything was
//! allocated.
//!
//! After an error the decoder is poisoned and returns the same error forever: USB/IP has no
//! resynchronisation point, so the connection must be closed (contract U25, issue 5 item 6).
//!
//! - [`HandshakeDecoder`]: OP_REQ_DEVLIST / OP_REQ_IMPORT.
//! - [`UrbDecoder`]: CMD_SUBMIT (+ OUT data + iso descriptors) and CMD_UNLINK.
//! - [`DeviceDecoder`]: a whole device-side connection, handshake first, URBs after a successful
//!   import (or URBs from the start for a socket handed to vhci's `attach`, U17).
//! - [`HostDecoder`]: the other direction, RET_SUBMIT / RET_UNLINK framed with what the host
//!   submitted, checked as vhci checks them (U13, U14, U16). For tests and fake hosts.

mod device;
mod handshake;
mod host;
mod urb;

pub use device::{DeviceDecoder, DeviceEvent, Mode};
pub use handshake::{HandshakeDecoder, HandshakeStep};
pub use host::{pad_iso, HostDecoder, HostPdu, HostStep, UrbShape};
pub use urb::{UrbDecoder, UrbStep};

use crate::USBIP_MAX_ISO_PACKETS;

/// Per-PDU budgets of a URB decoder (contract U25).
///
/// `transfer_buffer_length` above `max_transfer_buffer_length` is refused before any allocation,
/// for IN as well as OUT URBs: an IN URB's length sizes the reply the device must be ready to
/// produce. The budget for the whole connection (bytes of all outstanding URBs) is the driver's.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Limits {
    /// Largest accepted `transfer_buffer_length`, in bytes. Default ([`Limits::REMOTE`]):
    /// 4 MiB, the largest transfer raw gadget itself accepts (`USB_RAW_IO_LENGTH_MAX`).
    /// Valid range: 0..=`i32::MAX`.
    pub max_transfer_buffer_length: u32,
    /// Largest accepted iso `number_of_packets`. Default: 1024 (`USBIP_MAX_ISO_PACKETS`, the
    /// stub's limit, `stub_rx.c:379-386`).
    pub max_iso_packets: u32,
}

impl Limits {
    /// For remote (TCP) peers: strict, so that a peer announcing 4 GiB gets an error, not an
    /// allocation.
    pub const REMOTE: Limits = Limits {
        max_transfer_buffer_length: rawgadget_uapi::driver::USB_RAW_IO_LENGTH_MAX,
        max_iso_packets: USBIP_MAX_ISO_PACKETS,
    };

    /// For the local vhci, a trusted kernel peer that may legitimately send large URBs (usbfs
    /// alone allows 16 MiB, `drivers/usb/core/devio.c:134`): 64 MiB.
    pub const LOCAL_VHCI: Limits = Limits {
        max_transfer_buffer_length: 64 << 20,
        max_iso_packets: USBIP_MAX_ISO_PACKETS,
    };
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::REMOTE
    }
}

/// Appends to `buf` the bytes of `input` still missing to reach `want`; returns how many.
fn fill(buf: &mut alloc::vec::Vec<u8>, want: usize, input: &[u8]) -> usize {
    let take = want.saturating_sub(buf.len()).min(input.len());
    buf.extend_from_slice(&input[..take]);
    take
}

/// The 48-byte header accumulator shared by the URB and host decoders.
#[derive(Clone, Debug)]
struct HeaderBuf {
    bytes: [u8; crate::USBIP_HEADER_LEN],
    have: usize,
}

impl HeaderBuf {
    const fn new() -> HeaderBuf {
        HeaderBuf {
            bytes: [0; crate::USBIP_HEADER_LEN],
            have: 0,
        }
    }

    /// Takes what it still needs from `input`; returns the bytes consumed.
    fn fill(&mut self, input: &[u8]) -> usize {
        let take = (self.bytes.len() - self.have).min(input.len());
        self.bytes[self.have..self.have + take].copy_from_slice(&input[..take]);
        self.have += take;
        take
    }

    fn missing(&self) -> usize {
        self.bytes.len() - self.have
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Feeding helpers shared by the decoder tests.
    use alloc::vec::Vec;

    /// What feeding a whole stream produced: the PDUs, then how it ended.
    #[derive(Clone, PartialEq, Eq, Debug)]
    pub struct Outcome<P> {
        pub pdus: Vec<P>,
        /// `Ok(n)`: waiting for `n` more bytes; `Err`: the decoder's error.
        pub end: Result<usize, crate::Error>,
    }

    /// Feeds `chunks` one after another into `decode`, draining every PDU, then asks once more
    /// with no input to learn how the stream ended.
    pub fn feed_chunks<'a, P, S>(
        mut decode: impl FnMut(&[u8]) -> Result<(usize, S), crate::Error>,
        split: impl Fn(S) -> Result<P, usize>,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Outcome<P> {
        let mut pdus = Vec::new();
        for chunk in chunks {
            let mut rest = chunk;
            loop {
                match decode(rest) {
                    Err(e) => return Outcome { pdus, end: Err(e) },
                    Ok((used, step)) => {
                        assert!(used <= rest.len(), "consumed more than given");
                        rest = &rest[used..];
                        match split(step) {
                            Ok(pdu) => pdus.push(pdu),
                            Err(_) => {
                                assert!(rest.is_empty(), "NeedMore with input left");
                                break;
                            }
                        }
                    }
                }
                if rest.is_empty() {
                    break;
                }
            }
        }
        let end = match decode(&[]) {
            Err(e) => Err(e),
            Ok((used, step)) => {
                assert_eq!(used, 0);
                match split(step) {
                    Ok(_) => panic!("a PDU out of no input"),
                    Err(n) => Ok(n),
                }
            }
        };
        Outcome { pdus, end }
    }

    /// Splits `bytes` at the given cut points (each taken modulo the length).
    pub fn chunk_at<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|c| if bytes.is_empty() { 0 } else { c % bytes.len() })
            .collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        points.dedup();
        points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
    }
}
