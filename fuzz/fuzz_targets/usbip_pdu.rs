//! Arbitrary bytes through the device-side USB/IP decoders (rawgadget-usbip), in random chunkings.
//!
//! Checks, for every input:
//! - no decoder panics, whatever the bytes or the chunking;
//! - feeding in chunks gives the same PDUs and the same end (NeedMore / error) as feeding whole;
//! - every decoded PDU or request re-encodes to bytes that decode to the same value;
//! - replies built with the checked encoders for each decoded CMD_SUBMIT are read exactly by the
//!   vhci model (`HostDecoder`), or the encoder refused them with a `ReplyError`;
//! - `Display` of every view never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rawgadget_usbip::decode::{
    DeviceDecoder, DeviceEvent, HandshakeDecoder, HandshakeStep, HostDecoder, HostStep, Limits,
    UrbDecoder, UrbShape, UrbStep,
};
use rawgadget_usbip::wire::{Header, OpHeader};
use rawgadget_usbip::{
    CmdSubmit, DevicePdu, Direction, Error, IsoPacketResult, OpRequest, RetSubmit, RetUnlink,
};

/// The input: byte 0 holds the budget choice (bit 0: small budget, fast and exercising
/// TransferTooLong; else the remote default) and the number of chunk cuts (bits 1..=4); then two
/// bytes per cut (big-endian, taken modulo the stream length); the rest is the byte stream. A seed
/// is simply `[0x00]` followed by a capture.
struct Input<'a> {
    cuts: Vec<u16>,
    small_budget: bool,
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn split(data: &'a [u8]) -> Input<'a> {
        let Some((&flags, rest)) = data.split_first() else {
            return Input { cuts: Vec::new(), small_budget: false, bytes: data };
        };
        let ncuts = usize::from((flags >> 1) & 0x0f).min(rest.len() / 2);
        let (cut_bytes, bytes) = rest.split_at(ncuts * 2);
        let cuts = cut_bytes.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        Input { cuts, small_budget: flags & 1 != 0, bytes }
    }
}

#[derive(PartialEq, Debug)]
struct Outcome<P> {
    pdus: Vec<P>,
    end: Result<usize, Error>,
}

fn chunks<'a>(bytes: &'a [u8], cuts: &[u16]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| if bytes.is_empty() { 0 } else { usize::from(c) % bytes.len() })
        .collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// Feeds `chunks`, draining every PDU, then asks with no input how the stream ended.
fn feed<P, S>(
    mut decode: impl FnMut(&[u8]) -> Result<(usize, S), Error>,
    split: impl Fn(S) -> Result<P, usize>,
    chunks: &[&[u8]],
) -> Outcome<P> {
    let mut pdus = Vec::new();
    for chunk in chunks {
        let mut rest = *chunk;
        loop {
            match decode(rest) {
                Err(e) => return Outcome { pdus, end: Err(e) },
                Ok((used, step)) => {
                    assert!(used <= rest.len());
                    rest = &rest[used..];
                    match split(step) {
                        Ok(p) => pdus.push(p),
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
            Ok(split(step).err().expect("a PDU out of no input"))
        }
    };
    Outcome { pdus, end }
}

fn urb(limits: Limits, chunks: &[&[u8]]) -> Outcome<DevicePdu> {
    let mut dec = UrbDecoder::new(limits);
    feed(
        |b| dec.decode(b),
        |s| match s {
            UrbStep::Pdu(p) => Ok(p),
            UrbStep::NeedMore(n) => Err(n),
        },
        chunks,
    )
}

fn handshake(chunks: &[&[u8]]) -> Outcome<OpRequest> {
    let mut dec = HandshakeDecoder::new();
    feed(
        |b| dec.decode(b),
        |s| match s {
            HandshakeStep::Request(r) => Ok(r),
            HandshakeStep::NeedMore(n) => Err(n),
        },
        chunks,
    )
}

/// A connection that imports on OP_REQ_IMPORT and then reads URBs.
fn connection(limits: Limits, chunks: &[&[u8]]) -> Outcome<DeviceEvent> {
    let mut dec = DeviceDecoder::with_handshake(limits);
    let mut events = Vec::new();
    let out = feed(
        |b| {
            let r = dec.decode(b);
            if let Ok((_, DeviceEvent::Request(OpRequest::Import { .. }))) = &r {
                assert!(dec.import_accepted());
            }
            r
        },
        |s| match s {
            DeviceEvent::NeedMore(n) => Err(n),
            other => Ok(other),
        },
        chunks,
    );
    events.extend(out.pdus);
    Outcome { pdus: events, end: out.end }
}

/// Replies for `submit` built by the checked encoders must be read exactly by the vhci model.
fn check_replies(submit: &CmdSubmit, filler: &[u8]) {
    let cmd = &submit.header;
    let iso = !submit.iso_packets.is_empty();
    let shape = UrbShape::of(cmd, iso);
    let packed: Vec<u8>;
    let reply = match (cmd.direction, iso) {
        (Direction::In, false) => {
            let n = filler.len().min(cmd.transfer_buffer_length as usize);
            RetSubmit::in_data(cmd, Ok(()), &filler[..n])
        }
        (Direction::Out, false) => {
            RetSubmit::out_done(cmd, Ok(()), cmd.transfer_buffer_length / 2)
        }
        (Direction::In, true) | (Direction::Out, true) => {
            let results: Vec<IsoPacketResult> = submit
                .iso_packets
                .iter()
                .enumerate()
                .map(|(i, p)| IsoPacketResult {
                    actual_length: p.length / (i as u32 % 3 + 1),
                    status: if i % 4 == 3 {
                        Err(rawgadget_uapi::Errno::EXDEV)
                    } else {
                        Ok(())
                    },
                })
                .collect();
            let sum: u64 = results.iter().map(|r| u64::from(r.actual_length)).sum();
            packed = vec![0x5au8; sum.min(1 << 24) as usize];
            if cmd.direction == Direction::In {
                RetSubmit::iso_in(cmd, &submit.iso_packets, Ok(()), 0, &results, &packed)
            } else {
                RetSubmit::iso_out(cmd, &submit.iso_packets, Ok(()), 0, &results)
            }
        }
    };
    let Ok(reply) = reply else {
        // Refused (e.g. overlapping iso packets summing past the buffer): nothing is sent.
        return;
    };
    let _ = reply.to_string();
    let bytes = reply.to_vec();
    let mut host = HostDecoder::new();
    host.submitted(cmd.seqnum, shape);
    match host.decode(&bytes) {
        Ok((used, HostStep::Pdu(_))) => assert_eq!(used, bytes.len(), "vhci read a different length"),
        other => panic!("vhci model refused an encoder-approved reply: {other:?}"),
    }
    // An unlink reply is always a bare header.
    let unlink = rawgadget_usbip::CmdUnlinkRepr { seqnum: 1, devid: 0, unlink_seqnum: cmd.seqnum };
    assert_eq!(RetUnlink::unlinked(&unlink).to_vec().len(), 48);
}

fuzz_target!(|data: &[u8]| {
    let input = Input::split(data);
    let bytes = input.bytes;
    let limits = if input.small_budget {
        Limits { max_transfer_buffer_length: 4096, max_iso_packets: 64 }
    } else {
        Limits::REMOTE
    };
    let cut = chunks(bytes, &input.cuts);

    // Views print whatever the bytes.
    let _ = Header::new_unchecked(&bytes[..]).to_string();
    let _ = OpHeader::new_unchecked(&bytes[..]).to_string();

    // URB mode.
    let whole = urb(limits, &[bytes]);
    assert_eq!(urb(limits, &cut), whole, "chunking changed the URB decode");
    for pdu in &whole.pdus {
        let _ = pdu.to_string();
        let again = pdu.to_vec();
        let redecoded = urb(limits, &[&again]);
        assert_eq!(redecoded.pdus.as_slice(), std::slice::from_ref(pdu), "round trip");
        assert_eq!(redecoded.end, Ok(48));
        if let DevicePdu::Submit(submit) = pdu {
            assert!(submit.is_consistent());
            check_replies(submit, bytes);
        }
    }

    // Handshake mode.
    let hs = handshake(&[bytes]);
    assert_eq!(handshake(&cut), hs, "chunking changed the handshake decode");
    for request in &hs.pdus {
        let _ = request.to_string();
        assert_eq!(handshake(&[&request.to_vec()]).pdus, [*request], "round trip");
    }

    // A whole connection: handshake, import, URBs.
    let conn = connection(limits, &[bytes]);
    assert_eq!(connection(limits, &cut), conn, "chunking changed the connection decode");
});
