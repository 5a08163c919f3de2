//! The device side in handshake mode: OP_REQ_DEVLIST (8 bytes) or OP_REQ_IMPORT (40 bytes).
//!
//! The op header is checked as soon as its 8 bytes are in, as `usbip_net_recv_op_common` does:
//! version 0x0111, status 0, and a code this side serves. Anything else is an error, and usbipd
//! closes the connection on it too.

use crate::wire::{OpRequest, OP_HEADER_LEN, OP_REQ_IMPORT_LEN};
use crate::Error;

/// What one [`HandshakeDecoder::decode`] call produced.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HandshakeStep {
    /// All input was consumed; at least this many more bytes are needed.
    NeedMore(usize),
    /// A whole request; bytes after it were left unconsumed.
    Request(OpRequest),
}

/// Streaming decoder for op requests. After a request it starts over, ready for another; whether
/// another is allowed is the connection's business ([`super::DeviceDecoder`]).
#[derive(Clone, Debug)]
pub struct HandshakeDecoder {
    bytes: [u8; OP_REQ_IMPORT_LEN],
    have: usize,
    poisoned: Option<Error>,
}

impl Default for HandshakeDecoder {
    fn default() -> HandshakeDecoder {
        HandshakeDecoder::new()
    }
}

impl HandshakeDecoder {
    pub const fn new() -> HandshakeDecoder {
        HandshakeDecoder {
            bytes: [0; OP_REQ_IMPORT_LEN],
            have: 0,
            poisoned: None,
        }
    }

    /// Consumes bytes of `input` up to the end of the next request.
    ///
    /// # Errors
    /// [`Error::BadVersion`], [`Error::BadOpStatus`], [`Error::UnexpectedOpCode`]; each is final.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, HandshakeStep), Error> {
        if let Some(err) = self.poisoned {
            return Err(err);
        }
        let result = self.step(input);
        if let Err(err) = result {
            self.poisoned = Some(err);
        }
        result
    }

    fn step(&mut self, input: &[u8]) -> Result<(usize, HandshakeStep), Error> {
        let mut used = self.fill(OP_HEADER_LEN, input);
        if self.have < OP_HEADER_LEN {
            return Ok((used, HandshakeStep::NeedMore(OP_HEADER_LEN - self.have)));
        }
        // The header is checked (version, status, code) before waiting for a busid.
        let want = OpRequest::len_from_header(&self.bytes[..OP_HEADER_LEN])?;
        used += self.fill(want, &input[used..]);
        if self.have < want {
            return Ok((used, HandshakeStep::NeedMore(want - self.have)));
        }
        let request = OpRequest::parse(&self.bytes[..want])?;
        self.have = 0;
        Ok((used, HandshakeStep::Request(request)))
    }

    fn fill(&mut self, want: usize, input: &[u8]) -> usize {
        let take = want.saturating_sub(self.have).min(input.len());
        self.bytes[self.have..self.have + take].copy_from_slice(&input[..take]);
        self.have += take;
        take
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::test_util::{chunk_at, feed_chunks, Outcome};
    use crate::wire::{BusId, OpCode};
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn run(chunks: &[&[u8]]) -> Outcome<OpRequest> {
        let mut dec = HandshakeDecoder::new();
        feed_chunks(
            |b| dec.decode(b),
            |s| match s {
                HandshakeStep::Request(r) => Ok(r),
                HandshakeStep::NeedMore(n) => Err(n),
            },
            chunks.iter().copied(),
        )
    }

    fn import(busid: &str) -> Vec<u8> {
        OpRequest::Import {
            busid: BusId::new(busid).unwrap(),
        }
        .to_vec()
    }

    #[test]
    fn import_request_needs_header_then_busid() {
        let bytes = import("1-1");
        let mut dec = HandshakeDecoder::new();
        assert_eq!(dec.decode(&bytes[..5]), Ok((5, HandshakeStep::NeedMore(3))));
        assert_eq!(
            dec.decode(&bytes[5..8]),
            Ok((3, HandshakeStep::NeedMore(32)))
        );
        assert_eq!(
            dec.decode(&bytes[8..]),
            Ok((
                32,
                HandshakeStep::Request(OpRequest::Import {
                    busid: BusId::new("1-1").unwrap()
                })
            ))
        );
    }

    #[test]
    fn devlist_request_is_8_bytes_and_leaves_the_rest() {
        let mut bytes = OpRequest::Devlist.to_vec();
        bytes.extend_from_slice(b"xyz");
        let mut dec = HandshakeDecoder::new();
        assert_eq!(
            dec.decode(&bytes),
            Ok((8, HandshakeStep::Request(OpRequest::Devlist)))
        );
    }

    #[test]
    fn truncated_requests_at_every_length_wait() {
        let bytes = import("3-2");
        for len in 0..bytes.len() {
            let out = run(&[&bytes[..len]]);
            assert!(out.pdus.is_empty());
            let need = if len < 8 { 8 - len } else { 40 - len };
            assert_eq!(out.end, Ok(need), "length {len}");
        }
    }

    /// contract U22
    #[test]
    fn u22_bad_version_fails_as_soon_as_the_header_is_in() {
        let mut bytes = import("1-1");
        bytes[0] = 0x02;
        assert_eq!(run(&[&bytes[..8]]).end, Err(Error::BadVersion(0x0211)));
    }

    #[test]
    fn unserved_codes_fail_and_poison() {
        let mut dec = HandshakeDecoder::new();
        let crypkey = [0x01, 0x11, 0x80, 0x04, 0, 0, 0, 0];
        let err = Err(Error::UnexpectedOpCode(OpCode::Unknown(0x8004)));
        assert_eq!(dec.decode(&crypkey), err);
        assert_eq!(dec.decode(&OpRequest::Devlist.to_vec()), err);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_any_chunking_same_result(
            bytes in proptest::collection::vec(any::<u8>(), 0..120),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            prop_assert_eq!(run(&chunk_at(&bytes, &cuts)), run(&[&bytes]));
        }
    }
}
