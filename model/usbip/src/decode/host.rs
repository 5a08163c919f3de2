//! The host side: RET_SUBMIT and RET_UNLINK, framed and checked the way vhci does it.
//!
//! A reply cannot be framed on its own: how many data bytes and descriptors follow a RET_SUBMIT
//! depends on the URB it answers (`vhci_recv_ret_submit`, `vhci_rx.c:55-113`). So the decoder is
//! told each URB's shape when it is submitted, and applies vhci's rules in vhci's order:
//!
//! 1. an unknown seqnum tears the connection down (U14, `vhci_rx.c:66-72`);
//! 2. `number_of_packets` below 0 or above the submitted count is clamped to 0
//!    (`usbip_common.c:482-485`);
//! 3. an IN URB reads `actual_length` bytes, which must not exceed `transfer_buffer_length`
//!    (U13, `usbip_common.c:801-803`); an OUT URB reads none;
//! 4. an iso URB reads the (clamped) number of descriptors, whose `actual_length`s must sum to
//!    `actual_length` (U16, `usbip_common.c:708-726`).
//!
//! It exists to check our encoders and to let tests and tools play the host; the device itself
//! never decodes replies.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::{fill, HeaderBuf};
use crate::wire::{
    CmdSubmitRepr, Command, Direction, Header, IsoPacketDescriptor, RetSubmitRepr, RetUnlinkRepr,
};
use crate::{Error, USBIP_ISO_PACKET_LEN};

/// What the host remembers of a submitted URB to read its reply.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct UrbShape {
    pub direction: Direction,
    pub transfer_buffer_length: u32,
    /// `Some(number_of_packets)` for an iso pipe, `None` otherwise: only the host knows the pipe
    /// type (U12).
    pub iso_packets: Option<u32>,
}

impl UrbShape {
    /// The shape of `cmd`, with the pipe type the host knows.
    pub fn of(cmd: &CmdSubmitRepr, iso_pipe: bool) -> UrbShape {
        UrbShape {
            direction: cmd.direction,
            transfer_buffer_length: cmd.transfer_buffer_length,
            iso_packets: iso_pipe.then(|| cmd.iso_packet_count()),
        }
    }
}

/// A reply as the host reads it.
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub enum HostPdu {
    RetSubmit {
        header: RetSubmitRepr,
        /// IN: `actual_length` bytes, iso packets packed. OUT: empty.
        data: Vec<u8>,
        iso_packets: Vec<IsoPacketDescriptor>,
    },
    RetUnlink(RetUnlinkRepr),
}

/// What one [`HostDecoder::decode`] call produced.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum HostStep {
    NeedMore(usize),
    Pdu(HostPdu),
}

#[derive(Clone, Debug)]
struct Partial {
    header: RetSubmitRepr,
    data_len: usize,
    payload: Vec<u8>,
    want: usize,
}

/// Streaming decoder for the replies a host reads (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct HostDecoder {
    shapes: BTreeMap<u32, UrbShape>,
    header: HeaderBuf,
    partial: Option<Partial>,
    poisoned: Option<Error>,
}

impl Default for HeaderBuf {
    fn default() -> HeaderBuf {
        HeaderBuf::new()
    }
}

impl HostDecoder {
    pub fn new() -> HostDecoder {
        HostDecoder::default()
    }

    /// Records a URB the host submitted, so that its RET_SUBMIT can be framed.
    pub fn submitted(&mut self, seqnum: u32, shape: UrbShape) {
        self.shapes.insert(seqnum, shape);
    }

    /// Forgets a URB (the host gave it back after a RET_UNLINK). A later RET_SUBMIT for it is
    /// then an error, as in vhci (U14).
    pub fn forget(&mut self, seqnum: u32) -> Option<UrbShape> {
        self.shapes.remove(&seqnum)
    }

    /// Seqnums still awaiting a RET_SUBMIT.
    pub fn pending(&self) -> impl Iterator<Item = u32> + '_ {
        self.shapes.keys().copied()
    }

    /// Consumes bytes of `input` up to the end of the next reply.
    ///
    /// # Errors
    /// [`Error::UnknownSeqnum`], [`Error::BadReply`], [`Error::UnknownCommand`],
    /// [`Error::UnexpectedCommand`] for CMD_*; each is final.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, HostStep), Error> {
        if let Some(err) = self.poisoned {
            return Err(err);
        }
        let result = self.step(input);
        if let Err(err) = result {
            self.poisoned = Some(err);
        }
        result
    }

    fn step(&mut self, input: &[u8]) -> Result<(usize, HostStep), Error> {
        let mut used = 0;
        let mut partial = match self.partial.take() {
            Some(partial) => partial,
            None => {
                let header = &mut self.header;
                used += header.fill(input);
                if header.missing() > 0 {
                    return Ok((used, HostStep::NeedMore(header.missing())));
                }
                header.have = 0;
                let view = Header::new_unchecked(&header.bytes[..]);
                match view.command() {
                    Command::RetUnlink => {
                        let ret = RetUnlinkRepr::parse(&view)?;
                        return Ok((used, HostStep::Pdu(HostPdu::RetUnlink(ret))));
                    }
                    Command::RetSubmit => {
                        let ret = RetSubmitRepr::parse(&view)?;
                        let partial = self.frame(ret)?;
                        if partial.want == 0 {
                            return Ok((used, HostStep::Pdu(finish(partial)?)));
                        }
                        partial
                    }
                    Command::Unknown(v) => return Err(Error::UnknownCommand(v)),
                    cmd => return Err(Error::UnexpectedCommand(cmd)),
                }
            }
        };
        used += fill(&mut partial.payload, partial.want, &input[used..]);
        if partial.payload.len() < partial.want {
            let missing = partial.want - partial.payload.len();
            self.partial = Some(partial);
            return Ok((used, HostStep::NeedMore(missing)));
        }
        Ok((used, HostStep::Pdu(finish(partial)?)))
    }

    /// Steps 1–3 of the module docs.
    fn frame(&mut self, header: RetSubmitRepr) -> Result<Partial, Error> {
        let seqnum = header.seqnum;
        let shape = self
            .shapes
            .remove(&seqnum)
            .ok_or(Error::UnknownSeqnum(seqnum))?;
        let submitted = shape.iso_packets.unwrap_or(0);
        let np = header.number_of_packets;
        let np = if (np as i32) < 0 || np > submitted {
            0
        } else {
            np
        };
        let data_len = match shape.direction {
            Direction::In if header.actual_length > shape.transfer_buffer_length => {
                return Err(Error::BadReply {
                    seqnum,
                    why: "actual_length exceeds transfer_buffer_length (contract U13)",
                });
            }
            Direction::In => header.actual_length as usize,
            Direction::Out => 0,
        };
        let iso_len = if shape.iso_packets.is_some() {
            np as usize * USBIP_ISO_PACKET_LEN
        } else {
            0
        };
        let want = data_len + iso_len;
        Ok(Partial {
            header,
            data_len,
            payload: Vec::with_capacity(want),
            want,
        })
    }
}

/// Step 4 of the module docs.
fn finish(partial: Partial) -> Result<HostPdu, Error> {
    let Partial {
        header,
        data_len,
        mut payload,
        ..
    } = partial;
    let iso_bytes = payload.split_off(data_len);
    let count = iso_bytes.len() / USBIP_ISO_PACKET_LEN;
    let iso_packets = IsoPacketDescriptor::parse_all(&iso_bytes, count)?;
    if count > 0 {
        let sum: u64 = iso_packets.iter().map(|p| u64::from(p.actual_length)).sum();
        if sum != u64::from(header.actual_length) {
            return Err(Error::BadReply {
                seqnum: header.seqnum,
                why: "iso actual_length values do not sum to actual_length (contract U16)",
            });
        }
    }
    Ok(HostPdu::RetSubmit {
        header,
        data: payload,
        iso_packets,
    })
}

/// The host's transfer buffer after `usbip_pad_iso` (`usbip_common.c:740-772`): the packed data
/// at the start, then, walking from the last packet down to the second, each packet moved to its
/// `offset`. Mirrors the kernel exactly, including its assumptions: packet 0 is never moved (its
/// offset is taken to be 0) and nothing moves when `actual_length` equals
/// `transfer_buffer_length`. Moves that would leave the buffer are skipped instead of panicking.
pub fn pad_iso(
    data: &[u8],
    packets: &[IsoPacketDescriptor],
    transfer_buffer_length: u32,
) -> Vec<u8> {
    let mut buffer = alloc::vec![0; (transfer_buffer_length as usize).max(data.len())];
    buffer[..data.len()].copy_from_slice(data);
    if packets.is_empty() || data.is_empty() || data.len() == transfer_buffer_length as usize {
        return buffer;
    }
    let mut actual_offset = data.len();
    for p in packets.iter().skip(1).rev() {
        let len = p.actual_length as usize;
        let Some(src) = actual_offset.checked_sub(len) else {
            break;
        };
        actual_offset = src;
        let dst = p.offset as usize;
        if dst.checked_add(len).is_some_and(|end| end <= buffer.len()) {
            buffer.copy_within(src..src + len, dst);
        }
    }
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::HeaderRepr;
    use alloc::vec;

    fn ret_header(seqnum: u32, actual_length: u32, np: u32) -> Vec<u8> {
        let repr = HeaderRepr::RetSubmit(RetSubmitRepr {
            seqnum,
            status: 0,
            actual_length,
            start_frame: 0,
            number_of_packets: np,
            error_count: 0,
        });
        let mut b = vec![0; 48];
        repr.emit(&mut Header::new_unchecked(&mut b[..]));
        b
    }

    fn in_shape(tbl: u32) -> UrbShape {
        UrbShape {
            direction: Direction::In,
            transfer_buffer_length: tbl,
            iso_packets: None,
        }
    }

    /// contract U14
    #[test]
    fn u14_reply_for_an_unknown_seqnum_is_fatal() {
        let mut dec = HostDecoder::new();
        assert_eq!(
            dec.decode(&ret_header(5, 0, 0)),
            Err(Error::UnknownSeqnum(5))
        );
    }

    /// contract U14: an already answered seqnum is unknown to vhci.
    #[test]
    fn u14_second_reply_for_the_same_seqnum_is_fatal() {
        let mut dec = HostDecoder::new();
        dec.submitted(5, in_shape(8));
        let (_, step) = dec.decode(&ret_header(5, 0, 0)).unwrap();
        assert!(matches!(step, HostStep::Pdu(HostPdu::RetSubmit { .. })));
        assert_eq!(
            dec.decode(&ret_header(5, 0, 0)),
            Err(Error::UnknownSeqnum(5))
        );
    }

    /// contract U13
    #[test]
    fn u13_in_reply_longer_than_the_urb_is_fatal() {
        let mut dec = HostDecoder::new();
        dec.submitted(1, in_shape(8));
        assert!(matches!(
            dec.decode(&ret_header(1, 9, 0)),
            Err(Error::BadReply { .. })
        ));
    }

    #[test]
    fn out_reply_reads_no_data_whatever_actual_length_says() {
        let mut dec = HostDecoder::new();
        dec.submitted(
            1,
            UrbShape {
                direction: Direction::Out,
                ..in_shape(64)
            },
        );
        let (used, step) = dec.decode(&ret_header(1, 64, 0)).unwrap();
        assert_eq!(used, 48);
        assert!(matches!(step, HostStep::Pdu(HostPdu::RetSubmit { data, .. }) if data.is_empty()));
    }

    #[test]
    fn pad_iso_spreads_packets_to_their_offsets() {
        let packets = [
            IsoPacketDescriptor {
                offset: 0,
                length: 4,
                actual_length: 2,
                status: 0,
            },
            IsoPacketDescriptor {
                offset: 4,
                length: 4,
                actual_length: 3,
                status: 0,
            },
        ];
        // The kernel moves with memmove and does not clear the gap: "cd" stays behind it.
        assert_eq!(pad_iso(b"abcde", &packets, 8), b"abcdcde\0");
        // A full buffer is left as it is.
        assert_eq!(pad_iso(b"abcdefgh", &packets, 8), b"abcdefgh");
    }
}
