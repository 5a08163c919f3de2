//! The device side in URB mode: CMD_SUBMIT and CMD_UNLINK from the host.
//!
//! Framing uses only `direction` and `number_of_packets` (contract U12): OUT data of
//! `transfer_buffer_length` bytes follows an OUT header, then `number_of_packets` 16-byte iso
//! descriptors (none for 0 or 0xffffffff, U15). The transfer type is never needed, so a URB for
//! an endpoint that is not enabled is still read in full and can be answered EPROTO (D24).

use alloc::vec::Vec;

use super::{fill, HeaderBuf, Limits};
use crate::wire::{
    CmdSubmit, CmdSubmitRepr, CmdUnlinkRepr, Command, DevicePdu, Header, IsoPacketDescriptor,
};
use crate::Error;

/// What one [`UrbDecoder::decode`] call produced.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum UrbStep {
    /// All input was consumed; at least this many more bytes are needed.
    NeedMore(usize),
    /// A whole PDU; bytes after it were left unconsumed.
    Pdu(DevicePdu),
}

/// A CMD_SUBMIT whose header is parsed and whose payload is still arriving.
#[derive(Clone, Debug)]
struct Partial {
    header: CmdSubmitRepr,
    /// OUT data then iso descriptors; allocated once, at the announced (budget-checked) size.
    payload: Vec<u8>,
    want: usize,
}

/// Streaming decoder for the bytes a device reads in URB mode. See the [module docs](super) for
/// the calling convention.
#[derive(Clone, Debug)]
pub struct UrbDecoder {
    limits: Limits,
    header: HeaderBuf,
    partial: Option<Partial>,
    poisoned: Option<Error>,
}

impl UrbDecoder {
    pub fn new(limits: Limits) -> UrbDecoder {
        UrbDecoder {
            limits,
            header: HeaderBuf::new(),
            partial: None,
            poisoned: None,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Consumes bytes of `input` up to the end of the next PDU.
    ///
    /// # Errors
    /// Any header error of [`CmdSubmitRepr::parse`]; [`Error::UnexpectedCommand`] for RET_SUBMIT
    /// or RET_UNLINK; [`Error::UnknownCommand`]; [`Error::TransferTooLong`] and
    /// [`Error::BadNumberOfPackets`] for budgets; [`Error::IsoPacketOutOfBounds`]. Each is final.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, UrbStep), Error> {
        if let Some(err) = self.poisoned {
            return Err(err);
        }
        match self.step(input) {
            Ok(done) => Ok(done),
            Err(err) => {
                self.poisoned = Some(err);
                self.partial = None;
                Err(err)
            }
        }
    }

    fn step(&mut self, input: &[u8]) -> Result<(usize, UrbStep), Error> {
        let mut used = 0;
        let mut partial = match self.partial.take() {
            Some(partial) => partial,
            None => {
                used += self.header.fill(input);
                if self.header.missing() > 0 {
                    return Ok((used, UrbStep::NeedMore(self.header.missing())));
                }
                self.header.have = 0;
                match self.parse_header()? {
                    Parsed::Unlink(unlink) => {
                        return Ok((used, UrbStep::Pdu(DevicePdu::Unlink(unlink))));
                    }
                    Parsed::Submit(header) if header.payload_len() == 0 => {
                        let submit = CmdSubmit {
                            header,
                            data: Vec::new(),
                            iso_packets: Vec::new(),
                        };
                        return Ok((used, UrbStep::Pdu(DevicePdu::Submit(submit))));
                    }
                    Parsed::Submit(header) => {
                        let want = header.payload_len();
                        Partial {
                            header,
                            payload: Vec::with_capacity(want),
                            want,
                        }
                    }
                }
            }
        };
        used += fill(&mut partial.payload, partial.want, &input[used..]);
        if partial.payload.len() < partial.want {
            let missing = partial.want - partial.payload.len();
            self.partial = Some(partial);
            return Ok((used, UrbStep::NeedMore(missing)));
        }
        let Partial {
            header,
            mut payload,
            ..
        } = partial;
        let iso_bytes = payload.split_off(header.out_data_len());
        let iso_packets =
            IsoPacketDescriptor::parse_all(&iso_bytes, header.iso_packet_count() as usize)?;
        check_iso_bounds(&header, &iso_packets)?;
        let submit = CmdSubmit {
            header,
            data: payload,
            iso_packets,
        };
        Ok((used, UrbStep::Pdu(DevicePdu::Submit(submit))))
    }

    fn parse_header(&self) -> Result<Parsed, Error> {
        let view = Header::new_unchecked(&self.header.bytes[..]);
        match view.command() {
            Command::CmdUnlink => CmdUnlinkRepr::parse(&view).map(Parsed::Unlink),
            Command::CmdSubmit => {
                let header = CmdSubmitRepr::parse(&view)?;
                self.check_budget(&header)?;
                Ok(Parsed::Submit(header))
            }
            Command::Unknown(v) => Err(Error::UnknownCommand(v)),
            reply => Err(Error::UnexpectedCommand(reply)),
        }
    }

    /// contract U25: budgets are checked on the header, before the payload is allocated.
    fn check_budget(&self, header: &CmdSubmitRepr) -> Result<(), Error> {
        if header.transfer_buffer_length > self.limits.max_transfer_buffer_length {
            return Err(Error::TransferTooLong {
                length: header.transfer_buffer_length,
                max: self.limits.max_transfer_buffer_length,
            });
        }
        if header.iso_packet_count() > self.limits.max_iso_packets {
            return Err(Error::BadNumberOfPackets {
                value: header.number_of_packets,
                max: self.limits.max_iso_packets,
            });
        }
        Ok(())
    }
}

enum Parsed {
    Submit(CmdSubmitRepr),
    Unlink(CmdUnlinkRepr),
}

/// Each packet must lie inside the transfer buffer: the reply echoes these offsets and vhci
/// writes the packet data there (`usbip_pad_iso`, U16).
fn check_iso_bounds(header: &CmdSubmitRepr, packets: &[IsoPacketDescriptor]) -> Result<(), Error> {
    for (index, p) in packets.iter().enumerate() {
        if u64::from(p.offset) + u64::from(p.length) > u64::from(header.transfer_buffer_length) {
            return Err(Error::IsoPacketOutOfBounds {
                index,
                offset: p.offset,
                length: p.length,
                transfer_buffer_length: header.transfer_buffer_length,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::test_util::{chunk_at, feed_chunks, Outcome};
    use crate::wire::{Direction, NUMBER_OF_PACKETS_NON_ISO};
    use alloc::vec;
    use proptest::prelude::*;

    fn run(limits: Limits, chunks: &[&[u8]]) -> Outcome<DevicePdu> {
        let mut dec = UrbDecoder::new(limits);
        feed_chunks(
            |b| dec.decode(b),
            |s| match s {
                UrbStep::Pdu(p) => Ok(p),
                UrbStep::NeedMore(n) => Err(n),
            },
            chunks.iter().copied(),
        )
    }

    fn whole(bytes: &[u8]) -> Outcome<DevicePdu> {
        run(Limits::REMOTE, &[bytes])
    }

    /// A bulk OUT CMD_SUBMIT of 5 bytes on ep2, as vhci sends it.
    #[rustfmt::skip]
    const BULK_OUT: [u8; 53] = [
        0x00, 0x00, 0x00, 0x01, // command: USBIP_CMD_SUBMIT
        0x00, 0x00, 0x00, 0x10, // seqnum: 16
        0x00, 0x01, 0x00, 0x02, // devid: 1-2
        0x00, 0x00, 0x00, 0x00, // direction: OUT
        0x00, 0x00, 0x00, 0x02, // ep: 2
        0x00, 0x00, 0x00, 0x40, // transfer_flags: URB_ZERO_PACKET
        0x00, 0x00, 0x00, 0x05, // transfer_buffer_length: 5
        0x00, 0x00, 0x00, 0x00, // start_frame: 0
        0x00, 0x00, 0x00, 0x00, // number_of_packets: 0 (non-iso, vhci)
        0x00, 0x00, 0x00, 0x00, // interval: 0
        0, 0, 0, 0, 0, 0, 0, 0, // setup: unused
        b'h', b'e', b'l', b'l', b'o', // OUT data: 5 bytes
    ];

    /// The HID interrupt OUT capture (`CmdIntrOUT`) of `usbip_protocol.rst`: 64 bytes of data,
    /// number_of_packets 0xffffffff as the protocol text prescribes.
    fn cmd_intr_out() -> Vec<u8> {
        #[rustfmt::skip]
        let mut b = vec![
            0x00, 0x00, 0x00, 0x01, // command: USBIP_CMD_SUBMIT
            0x00, 0x00, 0x0d, 0x06, // seqnum: 3334
            0x00, 0x01, 0x00, 0x0f, // devid: 1-15
            0x00, 0x00, 0x00, 0x00, // direction: OUT
            0x00, 0x00, 0x00, 0x01, // ep: 1
            0x00, 0x00, 0x00, 0x00, // transfer_flags: 0
            0x00, 0x00, 0x00, 0x40, // transfer_buffer_length: 64
            0xff, 0xff, 0xff, 0xff, // start_frame: -1
            0x00, 0x00, 0x00, 0x00, // number_of_packets: 0
            0x00, 0x00, 0x00, 0x04, // interval: 4
            0, 0, 0, 0, 0, 0, 0, 0, // setup: unused
        ];
        // The capture's 64 data bytes: ffffffff860008a784ce5ae2123763 then zeros.
        let mut data = vec![0u8; 64];
        data[..15].copy_from_slice(&[
            0xff, 0xff, 0xff, 0xff, 0x86, 0x00, 0x08, 0xa7, 0x84, 0xce, 0x5a, 0xe2, 0x12, 0x37,
            0x63,
        ]);
        b.extend_from_slice(&data);
        b
    }

    /// An iso IN CMD_SUBMIT with three 192-byte packets (an audio URB), descriptors as
    /// `usbip_alloc_iso_desc_pdu` packs them.
    fn iso_in() -> Vec<u8> {
        #[rustfmt::skip]
        let mut b = vec![
            0x00, 0x00, 0x00, 0x01, // command: USBIP_CMD_SUBMIT
            0x00, 0x00, 0x00, 0x21, // seqnum: 33
            0x00, 0x01, 0x00, 0x02, // devid
            0x00, 0x00, 0x00, 0x01, // direction: IN
            0x00, 0x00, 0x00, 0x03, // ep: 3
            0x00, 0x00, 0x02, 0x02, // transfer_flags: DIR_IN | ISO_ASAP
            0x00, 0x00, 0x02, 0x40, // transfer_buffer_length: 576
            0x00, 0x00, 0x00, 0x00, // start_frame: 0
            0x00, 0x00, 0x00, 0x03, // number_of_packets: 3
            0x00, 0x00, 0x00, 0x01, // interval: 1
            0, 0, 0, 0, 0, 0, 0, 0, // setup: unused
        ];
        for i in 0u32..3 {
            b.extend_from_slice(&(i * 192).to_be_bytes()); // offset
            b.extend_from_slice(&192u32.to_be_bytes()); // length
            b.extend_from_slice(&0u32.to_be_bytes()); // actual_length
            b.extend_from_slice(&0u32.to_be_bytes()); // status
        }
        b
    }

    fn cmd_unlink(seqnum: u32, target: u32) -> Vec<u8> {
        let repr = CmdUnlinkRepr {
            seqnum,
            devid: 0x0001_0002,
            unlink_seqnum: target,
        };
        DevicePdu::Unlink(repr).to_vec()
    }

    fn submit(pdu: &DevicePdu) -> &CmdSubmit {
        match pdu {
            DevicePdu::Submit(s) => s,
            DevicePdu::Unlink(_) => panic!("expected a CMD_SUBMIT"),
        }
    }

    /// contract U12: an OUT header is followed by transfer_buffer_length bytes.
    #[test]
    fn u12_out_data_follows_the_header() {
        let out = whole(&BULK_OUT);
        assert_eq!(out.end, Ok(48), "then waiting for the next header");
        let s = submit(&out.pdus[0]);
        assert_eq!(s.header.direction, Direction::Out);
        assert_eq!(s.header.endpoint_address(), 0x02);
        assert_eq!(s.data, b"hello");
        assert!(s.iso_packets.is_empty());
        assert_eq!(out.pdus[0].to_vec(), BULK_OUT);
    }

    /// contract U15: 0xffffffff from the protocol text means no iso descriptors.
    #[test]
    fn u15_capture_with_all_ones_number_of_packets_frames_as_non_iso() {
        let bytes = cmd_intr_out();
        let two = [bytes.clone(), bytes.clone()].concat();
        let out = whole(&two);
        assert_eq!(out.pdus.len(), 2);
        let s = submit(&out.pdus[0]);
        assert_eq!(s.header.number_of_packets, 0);
        assert_eq!(s.data.len(), 64);

        let mut doc = bytes;
        doc[32..36].copy_from_slice(&NUMBER_OF_PACKETS_NON_ISO.to_be_bytes());
        let out = whole(&doc);
        let s = submit(&out.pdus[0]);
        assert_eq!(s.header.number_of_packets, NUMBER_OF_PACKETS_NON_ISO);
        assert!(s.iso_packets.is_empty());
        assert_eq!(
            out.pdus[0].to_vec(),
            doc,
            "raw value survives the round trip"
        );
    }

    /// contract U12: an IN header carries no data; number_of_packets descriptors follow.
    #[test]
    fn u12_iso_descriptors_follow_in_header_without_data() {
        let bytes = iso_in();
        let out = whole(&bytes);
        let s = submit(&out.pdus[0]);
        assert!(s.data.is_empty());
        assert_eq!(s.iso_packets.len(), 3);
        assert_eq!(s.iso_packets[2].offset, 384);
        assert_eq!(s.iso_packets[2].length, 192);
        assert_eq!(out.pdus[0].to_vec(), bytes);
    }

    #[test]
    fn iso_out_carries_the_whole_buffer_then_descriptors() {
        let mut bytes = iso_in();
        bytes[15] = 0; // direction OUT
        let descriptors = bytes.split_off(48);
        bytes.extend(core::iter::repeat(0x5a).take(576)); // the whole 576-byte buffer
        bytes.extend_from_slice(&descriptors);
        let out = whole(&bytes);
        let s = submit(&out.pdus[0]);
        assert_eq!(s.data.len(), 576);
        assert_eq!(s.iso_packets.len(), 3);
        assert_eq!(out.pdus[0].to_vec(), bytes);
    }

    #[test]
    fn unlink_is_a_bare_header() {
        let bytes = cmd_unlink(17, 16);
        let out = whole(&bytes);
        assert_eq!(
            out.pdus,
            [DevicePdu::Unlink(CmdUnlinkRepr {
                seqnum: 17,
                devid: 0x0001_0002,
                unlink_seqnum: 16
            })]
        );
    }

    #[test]
    fn need_more_counts_down_through_header_and_payload() {
        let mut dec = UrbDecoder::new(Limits::REMOTE);
        assert_eq!(dec.decode(&[]), Ok((0, UrbStep::NeedMore(48))));
        assert_eq!(dec.decode(&BULK_OUT[..10]), Ok((10, UrbStep::NeedMore(38))));
        assert_eq!(
            dec.decode(&BULK_OUT[10..48]),
            Ok((38, UrbStep::NeedMore(5)))
        );
        assert_eq!(dec.decode(&BULK_OUT[48..50]), Ok((2, UrbStep::NeedMore(3))));
        let mut more = BULK_OUT[50..].to_vec();
        more.extend_from_slice(&[0xee; 7]); // the start of the next PDU stays with the caller
        let (used, step) = dec.decode(&more).unwrap();
        assert_eq!(used, 3);
        assert!(matches!(step, UrbStep::Pdu(DevicePdu::Submit(_))));
    }

    #[test]
    fn truncated_header_at_every_length_waits_for_the_rest() {
        for len in 0..48 {
            assert_eq!(whole(&BULK_OUT[..len]).end, Ok(48 - len), "length {len}");
        }
        for len in 48..BULK_OUT.len() {
            assert_eq!(
                whole(&BULK_OUT[..len]).end,
                Ok(BULK_OUT.len() - len),
                "length {len}"
            );
        }
    }

    /// contract U14 (the mirror image): an unknown code cannot be framed.
    #[test]
    fn u14_unknown_command_code_is_an_error() {
        let mut bytes = BULK_OUT;
        bytes[3] = 0x05;
        assert_eq!(whole(&bytes).end, Err(Error::UnknownCommand(5)));
    }

    #[test]
    fn replies_sent_to_the_device_are_errors() {
        for (code, cmd) in [(3u8, Command::RetSubmit), (4, Command::RetUnlink)] {
            let mut bytes = BULK_OUT;
            bytes[3] = code;
            assert_eq!(whole(&bytes).end, Err(Error::UnexpectedCommand(cmd)));
        }
    }

    /// contract U25: a remote peer announcing ~2 GiB gets an error, not an allocation.
    #[test]
    fn u25_huge_transfer_buffer_length_is_refused_before_allocation() {
        let mut bytes = BULK_OUT;
        bytes[24..28].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
        assert_eq!(
            whole(&bytes[..48]).end,
            Err(Error::TransferTooLong {
                length: 0x7fff_ffff,
                max: 4 << 20
            })
        );
        // 4 GiB - 1 reads as a negative __s32.
        bytes[24..28].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
        assert!(matches!(
            whole(&bytes[..48]).end,
            Err(Error::NegativeLength { .. })
        ));
    }

    /// contract U25: an IN URB's length sizes the reply the device must produce.
    #[test]
    fn u25_budget_applies_to_in_urbs_too() {
        let mut bytes = iso_in();
        bytes[24..28].copy_from_slice(&((4u32 << 20) + 1).to_be_bytes());
        assert!(matches!(
            whole(&bytes).end,
            Err(Error::TransferTooLong { .. })
        ));
    }

    /// contract U25: the trusted local vhci may send large URBs.
    #[test]
    fn u25_local_vhci_gets_a_larger_budget() {
        let mut header = BULK_OUT[..48].to_vec();
        header[24..28].copy_from_slice(&(16u32 << 20).to_be_bytes());
        assert!(matches!(
            whole(&header).end,
            Err(Error::TransferTooLong { .. })
        ));
        let out = run(Limits::LOCAL_VHCI, &[&header]);
        assert_eq!(
            out.end,
            Ok(16 << 20),
            "accepted, waiting for 16 MiB of data"
        );
    }

    #[test]
    fn lying_length_only_waits_it_never_reads_the_next_pdu_as_data() {
        // The header promises 5 bytes; only 3 arrive. The decoder waits, and asks for 2.
        let out = whole(&BULK_OUT[..51]);
        assert!(out.pdus.is_empty());
        assert_eq!(out.end, Ok(2));
    }

    #[test]
    fn too_many_iso_packets_is_refused() {
        let mut bytes = iso_in();
        bytes[32..36].copy_from_slice(&1025u32.to_be_bytes());
        assert_eq!(
            whole(&bytes[..48]).end,
            Err(Error::BadNumberOfPackets {
                value: 1025,
                max: 1024
            })
        );
    }

    #[test]
    fn iso_packet_outside_the_buffer_is_refused() {
        let mut bytes = iso_in();
        let last = 48 + 2 * 16;
        bytes[last..last + 4].copy_from_slice(&400u32.to_be_bytes()); // 400 + 192 > 576
        assert_eq!(
            whole(&bytes).end,
            Err(Error::IsoPacketOutOfBounds {
                index: 2,
                offset: 400,
                length: 192,
                transfer_buffer_length: 576
            })
        );
        bytes[last..last + 4].copy_from_slice(&u32::MAX.to_be_bytes()); // no overflow either
        assert!(matches!(
            whole(&bytes).end,
            Err(Error::IsoPacketOutOfBounds { .. })
        ));
    }

    #[test]
    fn errors_poison_the_decoder() {
        let mut dec = UrbDecoder::new(Limits::REMOTE);
        let mut bad = BULK_OUT;
        bad[15] = 9;
        assert_eq!(dec.decode(&bad), Err(Error::BadDirection(9)));
        assert_eq!(dec.decode(&BULK_OUT), Err(Error::BadDirection(9)));
    }

    #[test]
    fn a_stream_of_mixed_pdus_decodes_in_order() {
        let stream = [
            BULK_OUT.to_vec(),
            iso_in(),
            cmd_unlink(40, 33),
            cmd_intr_out(),
        ]
        .concat();
        let out = whole(&stream);
        assert_eq!(out.end, Ok(48));
        let seqnums: Vec<u32> = out.pdus.iter().map(DevicePdu::seqnum).collect();
        assert_eq!(seqnums, [16, 33, 40, 3334]);
        let again: Vec<u8> = out.pdus.iter().flat_map(DevicePdu::to_vec).collect();
        assert_eq!(again, stream);
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_pdus() {
        let stream = [BULK_OUT.to_vec(), iso_in(), cmd_unlink(40, 33)].concat();
        let singles: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run(Limits::REMOTE, &singles), whole(&stream));
    }

    proptest! {
        /// Arbitrary bytes in arbitrary chunkings never panic and give the same PDUs and the same
        /// end as feeding them whole.
        #[test]
        fn arbitrary_stream_any_chunking_same_result(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let chunked = run(Limits::REMOTE, &chunk_at(&bytes, &cuts));
            prop_assert_eq!(chunked, whole(&bytes));
        }

        /// Valid-looking streams (real headers with random fields and payloads) decode the same
        /// whole and chunked, and every decoded PDU re-encodes to the bytes it came from.
        #[test]
        fn structured_stream_round_trips(
            pdus in proptest::collection::vec(arb_device_pdu(), 0..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let stream: Vec<u8> = pdus.iter().flat_map(DevicePdu::to_vec).collect();
            let out = whole(&stream);
            prop_assert_eq!(&out.pdus, &pdus);
            prop_assert_eq!(out.end, Ok(48));
            prop_assert_eq!(run(Limits::REMOTE, &chunk_at(&stream, &cuts)), out);
        }
    }

    pub(crate) fn arb_device_pdu() -> impl Strategy<Value = DevicePdu> {
        let unlink = (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(s, d, t)| {
            DevicePdu::Unlink(CmdUnlinkRepr {
                seqnum: s,
                devid: d,
                unlink_seqnum: t,
            })
        });
        let submit = (
            any::<u32>(),
            any::<bool>(),
            0u8..16,
            any::<u32>(),
            0u32..300,
            prop_oneof![Just(0u32), Just(NUMBER_OF_PACKETS_NON_ISO), 1u32..4],
            any::<(i32, i32, [u8; 8])>(),
        )
            .prop_flat_map(
                |(seqnum, is_in, ep, flags, tbl, np, (sf, interval, setup))| {
                    let header = CmdSubmitRepr {
                        seqnum,
                        devid: 0x0001_0002,
                        direction: if is_in { Direction::In } else { Direction::Out },
                        ep,
                        transfer_flags: flags,
                        transfer_buffer_length: tbl,
                        start_frame: sf,
                        number_of_packets: np,
                        interval,
                        setup,
                    };
                    let count = header.iso_packet_count() as usize;
                    let packet =
                        (0..=tbl, any::<u32>(), any::<i32>()).prop_flat_map(move |(off, a, st)| {
                            (0..=tbl - off).prop_map(move |len| IsoPacketDescriptor {
                                offset: off,
                                length: len,
                                actual_length: a,
                                status: st,
                            })
                        });
                    (
                        Just(header),
                        proptest::collection::vec(any::<u8>(), header.out_data_len()),
                        proptest::collection::vec(packet, count),
                    )
                },
            )
            .prop_map(|(header, data, iso_packets)| {
                DevicePdu::Submit(CmdSubmit {
                    header,
                    data,
                    iso_packets,
                })
            });
        prop_oneof![unlink, submit]
    }
}
