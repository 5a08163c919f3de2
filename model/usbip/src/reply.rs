//! Encoders for what the device sends in URB mode: RET_SUBMIT and RET_UNLINK.
//!
//! A reply is built from the CMD_SUBMIT (or CMD_UNLINK) it answers, so the framing facts that make
//! vhci drop a device (contract §3.3) are checked where the reply is made, and a reply that breaks
//! one is a [`ReplyError`] instead of bytes on the wire:
//!
//! - U13: an IN reply carries exactly `actual_length` data bytes (the length of the slice given),
//!   `actual_length` never exceeds the URB's `transfer_buffer_length`, an OUT reply carries none;
//! - U15: a non-iso reply says `number_of_packets` 0, whatever the host sent (0 or 0xffffffff);
//! - U16: an iso reply echoes each submitted packet's `offset` and `length`, carries the IN data
//!   packed with no gaps, `actual_length` = Σ packet `actual_length`, and `error_count` = the
//!   packets with a non-zero status;
//! - U9: non-iso replies have `error_count` 0; statuses are 0 or a negative errno.
//!
//! `devid`, `direction` and `ep` are 0 and padding is zeroed, as `stub_tx.c` and `vudc_tx.c`
//! send them. Which reply to send, and when (U10's unlink races, U14's seqnum bookkeeping), is
//! the driver's decision.

use alloc::vec::Vec;
use core::fmt;

use rawgadget_uapi::Errno;

use crate::wire::{
    CmdSubmitRepr, CmdUnlinkRepr, Direction, Header, IsoPacketDescriptor, RetSubmitRepr,
    RetUnlinkRepr,
};
use crate::{ReplyError, USBIP_HEADER_LEN, USBIP_ISO_PACKET_LEN};

/// A URB or iso packet result: success, or the errno sent as its negative (contract U9:
/// EOVERFLOW, EPIPE, EPROTO, ESHUTDOWN, ECONNRESET ...).
pub type UrbStatus = Result<(), Errno>;

/// The wire form of a status: 0 or `-errno`. An `Errno` of 0 would read as success, so it is
/// refused by the constructors.
fn wire_status(seqnum: u32, status: UrbStatus) -> Result<i32, ReplyError> {
    match status {
        Ok(()) => Ok(0),
        Err(errno) if errno.raw() == 0 || errno.raw() == i32::MIN => Err(ReplyError::BadErrno {
            seqnum,
            errno: errno.raw(),
        }),
        Err(errno) => Ok(-errno.raw().abs()),
    }
}

/// The result of one iso packet, in submission order.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct IsoPacketResult {
    /// Bytes moved: at most the packet's submitted `length`.
    pub actual_length: u32,
    pub status: UrbStatus,
}

/// A RET_SUBMIT that respects U9, U13, U15 and U16 (see the module docs). IN data is borrowed,
/// so a driver can write header, data and descriptors with one vectored write.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RetSubmit<'a> {
    header: RetSubmitRepr,
    data: &'a [u8],
    iso_packets: Vec<IsoPacketDescriptor>,
}

impl<'a> RetSubmit<'a> {
    /// The answer to a non-iso IN URB (control IN, bulk IN, interrupt IN): `data` is sent and
    /// becomes `actual_length`. A short `data` with status `Ok` is a short read; the host core,
    /// not the device, turns it into EREMOTEIO (U9).
    ///
    /// # Errors
    /// [`ReplyError::WrongDirection`] for an OUT URB, [`ReplyError::ActualLengthTooLong`] (U13),
    /// [`ReplyError::BadErrno`].
    pub fn in_data(
        cmd: &CmdSubmitRepr,
        status: UrbStatus,
        data: &'a [u8],
    ) -> Result<RetSubmit<'a>, ReplyError> {
        expect_direction(cmd, Direction::In, "IN data")?;
        check_actual_length(cmd, data.len() as u64)?;
        Ok(RetSubmit {
            header: non_iso_header(cmd, status, data.len() as u32)?,
            data,
            iso_packets: Vec::new(),
        })
    }

    /// The answer to a non-iso OUT URB: `actual_length` bytes were consumed (U9); no data is sent
    /// back (U13).
    ///
    /// # Errors
    /// [`ReplyError::WrongDirection`] for an IN URB, [`ReplyError::ActualLengthTooLong`],
    /// [`ReplyError::BadErrno`].
    pub fn out_done(
        cmd: &CmdSubmitRepr,
        status: UrbStatus,
        actual_length: u32,
    ) -> Result<RetSubmit<'static>, ReplyError> {
        expect_direction(cmd, Direction::Out, "OUT completion")?;
        check_actual_length(cmd, actual_length.into())?;
        Ok(RetSubmit {
            header: non_iso_header(cmd, status, actual_length)?,
            data: &[],
            iso_packets: Vec::new(),
        })
    }

    /// A failure that moved nothing, in either direction: EPROTO for an endpoint that is not
    /// enabled (D24, U12), EPIPE for a halt (D25), ESHUTDOWN, ECONNRESET for an unlink without
    /// progress sent as RET_SUBMIT. For an iso URB this echoes no packets, which vhci accepts
    /// (U15: a count of 0 skips the descriptors).
    ///
    /// # Errors
    /// [`ReplyError::BadErrno`].
    pub fn status_only(
        cmd: &CmdSubmitRepr,
        status: UrbStatus,
    ) -> Result<RetSubmit<'static>, ReplyError> {
        Ok(RetSubmit {
            header: non_iso_header(cmd, status, 0)?,
            data: &[],
            iso_packets: Vec::new(),
        })
    }

    /// The answer to an iso IN URB (contract U16, I6): `results[i]` is packet `i`, `packed` is
    /// the data of all packets back to back, with no gaps.
    ///
    /// # Errors
    /// [`ReplyError::WrongDirection`], [`ReplyError::IsoCountMismatch`] unless there is one
    /// result per submitted packet, [`ReplyError::IsoPacketTooLong`],
    /// [`ReplyError::IsoDataMismatch`] unless `packed.len()` = Σ `actual_length`,
    /// [`ReplyError::ActualLengthTooLong`], [`ReplyError::BadErrno`].
    pub fn iso_in(
        cmd: &CmdSubmitRepr,
        submitted: &[IsoPacketDescriptor],
        status: UrbStatus,
        start_frame: i32,
        results: &[IsoPacketResult],
        packed: &'a [u8],
    ) -> Result<RetSubmit<'a>, ReplyError> {
        expect_direction(cmd, Direction::In, "iso IN data")?;
        let (sum, iso_packets) = iso_descriptors(cmd, submitted, results)?;
        if sum != packed.len() as u64 {
            return Err(ReplyError::IsoDataMismatch {
                seqnum: cmd.seqnum,
                data_len: packed.len(),
                sum,
            });
        }
        let header = iso_header(cmd, status, start_frame, sum, &iso_packets)?;
        Ok(RetSubmit {
            header,
            data: packed,
            iso_packets,
        })
    }

    /// The answer to an iso OUT URB: `results[i]` says how much of packet `i` was consumed;
    /// `actual_length` is their sum (U16).
    ///
    /// # Errors
    /// As [`RetSubmit::iso_in`], without the data check.
    pub fn iso_out(
        cmd: &CmdSubmitRepr,
        submitted: &[IsoPacketDescriptor],
        status: UrbStatus,
        start_frame: i32,
        results: &[IsoPacketResult],
    ) -> Result<RetSubmit<'static>, ReplyError> {
        expect_direction(cmd, Direction::Out, "iso OUT completion")?;
        let (sum, iso_packets) = iso_descriptors(cmd, submitted, results)?;
        let header = iso_header(cmd, status, start_frame, sum, &iso_packets)?;
        Ok(RetSubmit {
            header,
            data: &[],
            iso_packets,
        })
    }

    /// The header as it will be sent.
    pub fn repr(&self) -> &RetSubmitRepr {
        &self.header
    }

    /// The IN data that follows the header (`actual_length` bytes; empty for OUT).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The iso descriptors that follow the data.
    pub fn iso_packets(&self) -> &[IsoPacketDescriptor] {
        &self.iso_packets
    }

    pub fn header_bytes(&self) -> [u8; USBIP_HEADER_LEN] {
        let mut bytes = [0; USBIP_HEADER_LEN];
        self.header.emit(&mut Header::new_unchecked(&mut bytes[..]));
        bytes
    }

    pub fn iso_bytes(&self) -> Vec<u8> {
        let mut bytes = alloc::vec![0; self.iso_packets.len() * USBIP_ISO_PACKET_LEN];
        IsoPacketDescriptor::emit_all(&self.iso_packets, &mut bytes);
        bytes
    }

    pub fn buffer_len(&self) -> usize {
        USBIP_HEADER_LEN + self.data.len() + self.iso_packets.len() * USBIP_ISO_PACKET_LEN
    }

    /// Writes header, data and descriptors. Panics if `buf` is shorter than `buffer_len()`.
    pub fn emit(&self, buf: &mut [u8]) {
        let buf = &mut buf[..self.buffer_len()];
        let (head, rest) = buf.split_at_mut(USBIP_HEADER_LEN);
        self.header.emit(&mut Header::new_unchecked(head));
        let (data, iso) = rest.split_at_mut(self.data.len());
        data.copy_from_slice(self.data);
        IsoPacketDescriptor::emit_all(&self.iso_packets, iso);
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut buf = alloc::vec![0; self.buffer_len()];
        self.emit(&mut buf);
        buf
    }
}

impl fmt::Display for RetSubmit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} data={}B", self.header, self.data.len())?;
        for p in &self.iso_packets {
            write!(f, " [{p}]")?;
        }
        Ok(())
    }
}

fn expect_direction(
    cmd: &CmdSubmitRepr,
    expected: Direction,
    what: &'static str,
) -> Result<(), ReplyError> {
    if cmd.direction == expected {
        Ok(())
    } else {
        Err(ReplyError::WrongDirection {
            seqnum: cmd.seqnum,
            what,
        })
    }
}

/// contract U13: `actual_length` ≤ `transfer_buffer_length`.
fn check_actual_length(cmd: &CmdSubmitRepr, actual_length: u64) -> Result<(), ReplyError> {
    if actual_length > u64::from(cmd.transfer_buffer_length) {
        return Err(ReplyError::ActualLengthTooLong {
            seqnum: cmd.seqnum,
            actual_length: actual_length as usize,
            transfer_buffer_length: cmd.transfer_buffer_length,
        });
    }
    Ok(())
}

/// contract U9, U15: no packets, no packet errors.
fn non_iso_header(
    cmd: &CmdSubmitRepr,
    status: UrbStatus,
    actual_length: u32,
) -> Result<RetSubmitRepr, ReplyError> {
    Ok(RetSubmitRepr {
        seqnum: cmd.seqnum,
        status: wire_status(cmd.seqnum, status)?,
        actual_length,
        start_frame: 0,
        number_of_packets: 0,
        error_count: 0,
    })
}

/// contract U16: one result per submitted packet, each within its length; offsets and lengths
/// echoed. Returns Σ actual_length and the descriptors to send.
fn iso_descriptors(
    cmd: &CmdSubmitRepr,
    submitted: &[IsoPacketDescriptor],
    results: &[IsoPacketResult],
) -> Result<(u64, Vec<IsoPacketDescriptor>), ReplyError> {
    let count = cmd.iso_packet_count() as usize;
    for given in [submitted.len(), results.len()] {
        if given != count {
            return Err(ReplyError::IsoCountMismatch {
                seqnum: cmd.seqnum,
                submitted: count,
                given,
            });
        }
    }
    let mut sum = 0u64;
    let mut packets = Vec::with_capacity(count);
    for (index, (s, r)) in submitted.iter().zip(results).enumerate() {
        if r.actual_length > s.length {
            return Err(ReplyError::IsoPacketTooLong {
                seqnum: cmd.seqnum,
                index,
                actual_length: r.actual_length,
                length: s.length,
            });
        }
        sum += u64::from(r.actual_length);
        packets.push(IsoPacketDescriptor {
            offset: s.offset,
            length: s.length,
            actual_length: r.actual_length,
            status: wire_status(cmd.seqnum, r.status)?,
        });
    }
    check_actual_length(cmd, sum)?;
    Ok((sum, packets))
}

fn iso_header(
    cmd: &CmdSubmitRepr,
    status: UrbStatus,
    start_frame: i32,
    actual_length: u64,
    packets: &[IsoPacketDescriptor],
) -> Result<RetSubmitRepr, ReplyError> {
    Ok(RetSubmitRepr {
        seqnum: cmd.seqnum,
        status: wire_status(cmd.seqnum, status)?,
        // check_actual_length bounded it by transfer_buffer_length, a u32.
        actual_length: actual_length as u32,
        start_frame,
        number_of_packets: packets.len() as u32,
        error_count: packets.iter().filter(|p| p.status != 0).count() as u32,
    })
}

/// A RET_UNLINK (contract U10). Its seqnum is the CMD_UNLINK's own, not the target's.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct RetUnlink {
    header: RetUnlinkRepr,
}

impl RetUnlink {
    /// The target was still pending, moved nothing, and is now forgotten: status -ECONNRESET.
    /// No RET_SUBMIT may follow for it (U10, U14).
    pub fn unlinked(cmd: &CmdUnlinkRepr) -> RetUnlink {
        RetUnlink {
            header: RetUnlinkRepr {
                seqnum: cmd.seqnum,
                status: -Errno::ECONNRESET.raw(),
            },
        }
    }

    /// The target had already been answered (or is answered by a RET_SUBMIT with its partial
    /// data just before this): status 0. vhci ignores it after that RET_SUBMIT
    /// (`vhci_rx.c:158-167`).
    pub fn already_answered(cmd: &CmdUnlinkRepr) -> RetUnlink {
        RetUnlink {
            header: RetUnlinkRepr {
                seqnum: cmd.seqnum,
                status: 0,
            },
        }
    }

    pub fn repr(&self) -> &RetUnlinkRepr {
        &self.header
    }

    pub const fn buffer_len(&self) -> usize {
        USBIP_HEADER_LEN
    }

    pub fn header_bytes(&self) -> [u8; USBIP_HEADER_LEN] {
        let mut bytes = [0; USBIP_HEADER_LEN];
        self.header.emit(&mut Header::new_unchecked(&mut bytes[..]));
        bytes
    }

    /// Panics if `buf` is shorter than 48 bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        self.header.emit(&mut Header::new_unchecked(buf));
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.header_bytes().to_vec()
    }
}

impl fmt::Display for RetUnlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.header.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{pad_iso, HostDecoder, HostPdu, HostStep, UrbShape};
    use crate::wire::NUMBER_OF_PACKETS_NON_ISO;
    use crate::Error;
    use alloc::vec;
    use proptest::prelude::*;

    fn cmd(direction: Direction, tbl: u32, np: u32) -> CmdSubmitRepr {
        CmdSubmitRepr {
            seqnum: 7,
            devid: 0x0001_0002,
            direction,
            ep: 1,
            transfer_flags: 0,
            transfer_buffer_length: tbl,
            start_frame: 0,
            number_of_packets: np,
            interval: 1,
            setup: [0; 8],
        }
    }

    fn packets(n: u32, len: u32) -> Vec<IsoPacketDescriptor> {
        (0..n)
            .map(|i| IsoPacketDescriptor {
                offset: i * len,
                length: len,
                actual_length: 0,
                status: 0,
            })
            .collect()
    }

    /// Reads `bytes` as vhci would, for a URB of `shape` submitted as seqnum 7.
    fn vhci_reads(shape: UrbShape, bytes: &[u8]) -> Result<(usize, HostStep), Error> {
        let mut host = HostDecoder::new();
        host.submitted(7, shape);
        host.decode(bytes)
    }

    fn ok(actual_length: u32) -> IsoPacketResult {
        IsoPacketResult {
            actual_length,
            status: Ok(()),
        }
    }

    /// contract U13
    #[test]
    fn u13_in_reply_carries_actual_length_bytes() {
        let c = cmd(Direction::In, 64, 0);
        let reply = RetSubmit::in_data(&c, Ok(()), b"0123456789").unwrap();
        #[rustfmt::skip]
        let expected_header = [
            0x00, 0x00, 0x00, 0x03, // command: USBIP_RET_SUBMIT
            0x00, 0x00, 0x00, 0x07, // seqnum: 7
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // devid, direction, ep: 0
            0x00, 0x00, 0x00, 0x00, // status: 0
            0x00, 0x00, 0x00, 0x0a, // actual_length: 10
            0x00, 0x00, 0x00, 0x00, // start_frame: 0
            0x00, 0x00, 0x00, 0x00, // number_of_packets: 0
            0x00, 0x00, 0x00, 0x00, // error_count: 0
            0, 0, 0, 0, 0, 0, 0, 0, // padding
        ];
        let bytes = reply.to_vec();
        assert_eq!(bytes[..48], expected_header);
        assert_eq!(&bytes[48..], b"0123456789");
        assert_eq!(reply.header_bytes(), expected_header);
        let shape = UrbShape::of(&c, false);
        let (used, step) = vhci_reads(shape, &bytes).unwrap();
        assert_eq!(used, bytes.len(), "vhci reads exactly the reply");
        assert!(
            matches!(step, HostStep::Pdu(HostPdu::RetSubmit { data, .. }) if data == b"0123456789")
        );
    }

    /// contract U13
    #[test]
    fn u13_in_reply_longer_than_transfer_buffer_length_is_refused() {
        let c = cmd(Direction::In, 4, 0);
        assert_eq!(
            RetSubmit::in_data(&c, Ok(()), b"12345"),
            Err(ReplyError::ActualLengthTooLong {
                seqnum: 7,
                actual_length: 5,
                transfer_buffer_length: 4
            })
        );
    }

    /// contract U13
    #[test]
    fn u13_out_reply_carries_no_data() {
        let c = cmd(Direction::Out, 512, 0);
        let reply = RetSubmit::out_done(&c, Ok(()), 421).unwrap();
        assert_eq!(reply.buffer_len(), 48);
        assert_eq!(reply.repr().actual_length, 421);
        assert!(reply.data().is_empty());
        assert!(matches!(
            RetSubmit::out_done(&c, Ok(()), 513),
            Err(ReplyError::ActualLengthTooLong { .. })
        ));
        let (used, _) = vhci_reads(UrbShape::of(&c, false), &reply.to_vec()).unwrap();
        assert_eq!(used, 48);
    }

    #[test]
    fn replies_must_match_the_urb_direction() {
        let out = cmd(Direction::Out, 8, 0);
        assert!(matches!(
            RetSubmit::in_data(&out, Ok(()), b""),
            Err(ReplyError::WrongDirection { .. })
        ));
        let inn = cmd(Direction::In, 8, 0);
        assert!(matches!(
            RetSubmit::out_done(&inn, Ok(()), 0),
            Err(ReplyError::WrongDirection { .. })
        ));
    }

    /// contract U9
    #[test]
    fn u9_status_is_the_negative_errno_and_error_count_zero() {
        let c = cmd(Direction::In, 64, 0);
        for (errno, wire) in [
            (Errno::EOVERFLOW, -75),
            (Errno::EPIPE, -32),
            (Errno::EPROTO, -71),
            (Errno::ESHUTDOWN, -108),
        ] {
            let reply = RetSubmit::in_data(&c, Err(errno), b"ab").unwrap();
            assert_eq!(reply.repr().status, wire);
            assert_eq!(reply.repr().error_count, 0);
        }
        assert_eq!(
            RetSubmit::status_only(&c, Err(Errno(0))),
            Err(ReplyError::BadErrno {
                seqnum: 7,
                errno: 0
            })
        );
    }

    /// contract U15: 0 in replies whatever the host sent (0 or 0xffffffff).
    #[test]
    fn u15_non_iso_reply_echoes_zero_packets() {
        for np in [0, NUMBER_OF_PACKETS_NON_ISO] {
            let c = cmd(Direction::In, 8, np);
            assert_eq!(
                RetSubmit::in_data(&c, Ok(()), b"x")
                    .unwrap()
                    .repr()
                    .number_of_packets,
                0
            );
            let o = cmd(Direction::Out, 8, np);
            assert_eq!(
                RetSubmit::out_done(&o, Ok(()), 8)
                    .unwrap()
                    .repr()
                    .number_of_packets,
                0
            );
        }
    }

    /// contract D24 / U12 / U15: EPROTO for an endpoint that is not enabled, even iso.
    #[test]
    fn d24_status_only_reply_for_an_iso_urb_echoes_no_packets() {
        let c = cmd(Direction::In, 576, 3);
        let reply = RetSubmit::status_only(&c, Err(Errno::EPROTO)).unwrap();
        assert_eq!(reply.repr().number_of_packets, 0);
        assert_eq!(reply.buffer_len(), 48);
        let (used, _) = vhci_reads(UrbShape::of(&c, true), &reply.to_vec()).unwrap();
        assert_eq!(used, 48);
    }

    /// contract U16
    #[test]
    fn u16_iso_in_is_packed_with_offsets_echoed() {
        let c = cmd(Direction::In, 576, 3);
        let submitted = packets(3, 192);
        let results = [
            ok(2),
            ok(0),
            IsoPacketResult {
                actual_length: 3,
                status: Err(Errno::EXDEV),
            },
        ];
        let reply = RetSubmit::iso_in(&c, &submitted, Ok(()), 5, &results, b"abcde").unwrap();
        let r = reply.repr();
        assert_eq!(
            (
                r.actual_length,
                r.number_of_packets,
                r.error_count,
                r.start_frame
            ),
            (5, 3, 1, 5)
        );
        let bytes = reply.to_vec();
        assert_eq!(&bytes[48..53], b"abcde", "packed, no gaps");
        #[rustfmt::skip]
        let third = [
            0x00, 0x00, 0x01, 0x80, // offset: 384, as submitted
            0x00, 0x00, 0x00, 0xc0, // length: 192, as submitted
            0x00, 0x00, 0x00, 0x03, // actual_length: 3
            0xff, 0xff, 0xff, 0xee, // status: -EXDEV
        ];
        assert_eq!(bytes[53 + 32..], third);
        let (used, step) = vhci_reads(UrbShape::of(&c, true), &bytes).unwrap();
        assert_eq!(used, bytes.len());
        let HostStep::Pdu(HostPdu::RetSubmit {
            data, iso_packets, ..
        }) = step
        else {
            panic!("expected a RET_SUBMIT")
        };
        let host_buffer = pad_iso(&data, &iso_packets, 576);
        assert_eq!(&host_buffer[0..2], b"ab");
        assert_eq!(&host_buffer[384..387], b"cde");
    }

    /// contract U16
    #[test]
    fn u16_sum_of_iso_actual_lengths_must_equal_the_data() {
        let c = cmd(Direction::In, 576, 2);
        let submitted = packets(2, 192);
        assert_eq!(
            RetSubmit::iso_in(&c, &submitted, Ok(()), 0, &[ok(2), ok(2)], b"abc"),
            Err(ReplyError::IsoDataMismatch {
                seqnum: 7,
                data_len: 3,
                sum: 4
            })
        );
    }

    /// contract U16
    #[test]
    fn u16_iso_packet_cannot_exceed_its_length() {
        let c = cmd(Direction::In, 576, 2);
        let submitted = packets(2, 192);
        let data = vec![0; 193];
        assert!(matches!(
            RetSubmit::iso_in(&c, &submitted, Ok(()), 0, &[ok(193), ok(0)], &data),
            Err(ReplyError::IsoPacketTooLong { index: 0, .. })
        ));
    }

    /// contract U16
    #[test]
    fn u16_one_result_per_submitted_packet() {
        let c = cmd(Direction::Out, 576, 3);
        let submitted = packets(3, 192);
        assert_eq!(
            RetSubmit::iso_out(&c, &submitted, Ok(()), 0, &[ok(1)]),
            Err(ReplyError::IsoCountMismatch {
                seqnum: 7,
                submitted: 3,
                given: 1
            })
        );
        assert_eq!(
            RetSubmit::iso_out(&c, &submitted[..2], Ok(()), 0, &[ok(1), ok(1)]),
            Err(ReplyError::IsoCountMismatch {
                seqnum: 7,
                submitted: 3,
                given: 2
            })
        );
    }

    /// contract U16
    #[test]
    fn u16_iso_out_sums_actual_lengths_and_carries_no_data() {
        let c = cmd(Direction::Out, 576, 3);
        let submitted = packets(3, 192);
        let results = [
            ok(192),
            ok(100),
            IsoPacketResult {
                actual_length: 0,
                status: Err(Errno::EOVERFLOW),
            },
        ];
        let reply = RetSubmit::iso_out(&c, &submitted, Ok(()), 0, &results).unwrap();
        assert_eq!(reply.repr().actual_length, 292);
        assert_eq!(reply.repr().error_count, 1);
        assert_eq!(reply.buffer_len(), 48 + 3 * 16);
        let bytes = reply.to_vec();
        let (used, _) = vhci_reads(UrbShape::of(&c, true), &bytes).unwrap();
        assert_eq!(used, bytes.len());
    }

    /// contract U13 + U16: Σ actual_length is still bounded by transfer_buffer_length.
    #[test]
    fn u16_overlapping_packets_cannot_exceed_the_buffer() {
        let c = cmd(Direction::In, 100, 2);
        let submitted = [
            IsoPacketDescriptor {
                offset: 0,
                length: 100,
                actual_length: 0,
                status: 0,
            },
            IsoPacketDescriptor {
                offset: 0,
                length: 100,
                actual_length: 0,
                status: 0,
            },
        ];
        let data = vec![0; 200];
        assert!(matches!(
            RetSubmit::iso_in(&c, &submitted, Ok(()), 0, &[ok(100), ok(100)], &data),
            Err(ReplyError::ActualLengthTooLong { .. })
        ));
    }

    /// contract U10: -ECONNRESET when cancelled, 0 when already answered; own seqnum.
    #[test]
    fn u10_ret_unlink_statuses() {
        let unlink = CmdUnlinkRepr {
            seqnum: 9,
            devid: 0x0001_0002,
            unlink_seqnum: 7,
        };
        let cancelled = RetUnlink::unlinked(&unlink);
        assert_eq!(
            *cancelled.repr(),
            RetUnlinkRepr {
                seqnum: 9,
                status: -104
            }
        );
        assert_eq!(RetUnlink::already_answered(&unlink).repr().status, 0);
        let bytes = cancelled.to_vec();
        assert_eq!(bytes.len(), 48);
        assert_eq!(&bytes[..8], &[0, 0, 0, 4, 0, 0, 0, 9]);
        assert_eq!(&bytes[20..24], &[0xff, 0xff, 0xff, 0x98]);
        let mut host = HostDecoder::new();
        let (_, step) = host.decode(&bytes).unwrap();
        assert_eq!(step, HostStep::Pdu(HostPdu::RetUnlink(*cancelled.repr())));
    }

    /// contract U10: the partial data goes back in a RET_SUBMIT, status -ECONNRESET.
    #[test]
    fn u10_partial_progress_is_a_ret_submit_with_econnreset() {
        let c = cmd(Direction::In, 64, 0);
        let reply = RetSubmit::in_data(&c, Err(Errno::ECONNRESET), b"part").unwrap();
        assert_eq!(reply.repr().status, -104);
        assert_eq!(reply.repr().actual_length, 4);
    }

    #[test]
    fn display_shows_header_and_packets() {
        let c = cmd(Direction::In, 8, 1);
        let submitted = packets(1, 8);
        let reply = RetSubmit::iso_in(&c, &submitted, Ok(()), 0, &[ok(1)], b"z").unwrap();
        assert_eq!(
            alloc::format!("{reply}"),
            "USBIP_RET_SUBMIT seqnum=7 status=0 actual_length=1 start_frame=0 \
             number_of_packets=1 error_count=0 data=1B \
             [iso offset=0 length=8 actual_length=1 status=0]"
        );
    }

    proptest! {
        /// Every iso reply the encoder accepts is accepted by the vhci model, which reads exactly
        /// its bytes, and the host sees each packet's data at its submitted offset (U13, U16).
        #[test]
        fn u16_accepted_iso_replies_pass_vhci_checks(
            lens in proptest::collection::vec((0u32..64, 0u32..64, any::<bool>()), 1..8),
            is_in in any::<bool>(),
        ) {
            let mut submitted = Vec::new();
            let mut results = Vec::new();
            let mut offset = 0;
            for (len, actual, fail) in &lens {
                let actual = (*actual).min(*len);
                submitted.push(IsoPacketDescriptor { offset, length: *len, actual_length: 0, status: 0 });
                let status = if *fail { Err(Errno::EXDEV) } else { Ok(()) };
                results.push(IsoPacketResult { actual_length: actual, status });
                offset += len;
            }
            let direction = if is_in { Direction::In } else { Direction::Out };
            let c = cmd(direction, offset, submitted.len() as u32);
            let mut packed = Vec::new();
            for (i, r) in results.iter().enumerate() {
                packed.extend((0..r.actual_length).map(|b| (i as u8) ^ (b as u8)));
            }
            let reply = if is_in {
                RetSubmit::iso_in(&c, &submitted, Ok(()), 0, &results, &packed).unwrap()
            } else {
                RetSubmit::iso_out(&c, &submitted, Ok(()), 0, &results).unwrap()
            };
            let bytes = reply.to_vec();
            let (used, step) = vhci_reads(UrbShape::of(&c, true), &bytes).unwrap();
            prop_assert_eq!(used, bytes.len());
            let HostStep::Pdu(HostPdu::RetSubmit { header, data, iso_packets }) = step else {
                panic!("expected a RET_SUBMIT")
            };
            let errors = lens.iter().filter(|l| l.2).count() as u32;
            prop_assert_eq!(header.error_count, errors);
            if is_in {
                let host = pad_iso(&data, &iso_packets, offset);
                for (i, (s, r)) in submitted.iter().zip(&results).enumerate() {
                    for b in 0..r.actual_length {
                        prop_assert_eq!(host[(s.offset + b) as usize], (i as u8) ^ (b as u8));
                    }
                }
            }
        }

        /// Non-iso IN replies of any length within the URB are read exactly by the vhci model.
        #[test]
        fn u13_accepted_in_replies_pass_vhci_checks(
            tbl in 0u32..300,
            data in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let c = cmd(Direction::In, tbl, 0);
            match RetSubmit::in_data(&c, Ok(()), &data) {
                Ok(reply) => {
                    let bytes = reply.to_vec();
                    let (used, _) = vhci_reads(UrbShape::of(&c, false), &bytes).unwrap();
                    prop_assert_eq!(used, bytes.len());
                }
                Err(ReplyError::ActualLengthTooLong { .. }) => prop_assert!(data.len() > tbl as usize),
                Err(other) => prop_assert!(false, "unexpected {other}"),
            }
        }
    }
}
