//! The data patterns of Linux usbtest / f_sourcesink (contract T8).
//!
//! `pattern=1` is `(i % maxpacket) % 63`, restarting at every buffer; `pattern=0` is zeros.
//! Both sides use the endpoint's maxpacket (64 at FS, 512 at HS, 1024 at SS for bulk), so
//! buffers whose length is a multiple of maxpacket stay in phase across transfers, and every
//! packet starts the pattern again. The sink can therefore check any received buffer from its
//! first byte as long as all packets but the last were full.

/// Which pattern a source sends and a sink checks.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Pattern {
    /// usbtest `pattern=0`: all zeros (needed by usbtest cases 27/28, contract T10).
    Zeros,
    /// usbtest `pattern=1`: `(i % maxpacket) % 63`.
    #[default]
    Mod63,
}

impl Pattern {
    /// From usbtest's module parameter value.
    pub fn from_usbtest(v: u32) -> Option<Pattern> {
        match v {
            0 => Some(Pattern::Zeros),
            1 => Some(Pattern::Mod63),
            _ => None,
        }
    }

    /// The byte at offset `i` of a buffer.
    pub fn byte(self, i: usize, maxpacket: usize) -> u8 {
        match self {
            Pattern::Zeros => 0,
            Pattern::Mod63 => ((i % maxpacket.max(1)) % 63) as u8,
        }
    }

    /// One packet of the pattern (`maxpacket` bytes), from a static table, when `maxpacket` is
    /// within it: every packet of a buffer is this slice (or its start, for the last one).
    fn packet(self, maxpacket: usize) -> Option<&'static [u8]> {
        let table: &'static [u8; PACKET_TABLE_LEN] = match self {
            Pattern::Zeros => &ZEROS,
            Pattern::Mod63 => &MOD63,
        };
        table.get(..maxpacket.max(1))
    }

    /// Fills `buf` from offset 0.
    ///
    /// Packet by packet from the static table (a copy per packet), not byte by byte: a
    /// per-byte `%` costs a division per byte, which under emulation (TCG) is most of a
    /// transfer's time.
    pub fn fill(self, buf: &mut [u8], maxpacket: usize) {
        let mp = maxpacket.max(1);
        match self.packet(mp) {
            Some(packet) => {
                for chunk in buf.chunks_mut(mp) {
                    chunk.copy_from_slice(&packet[..chunk.len()]);
                }
            }
            None => {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = self.byte(i, mp);
                }
            }
        }
    }

    /// Checks `buf` from offset 0: the number of wrong bytes and the first wrong offset.
    ///
    /// Each packet is compared with the table's packet as a whole (`memcmp`); only a packet
    /// that differs is examined byte by byte.
    pub fn check(self, buf: &[u8], maxpacket: usize) -> PatternCheck {
        let mp = maxpacket.max(1);
        let mut errors = 0;
        let mut first = None;
        let mut count = |offset: usize, chunk: &[u8]| {
            for (j, &b) in chunk.iter().enumerate() {
                if b != self.byte(offset + j, mp) {
                    errors += 1;
                    first.get_or_insert(offset + j);
                }
            }
        };
        match self.packet(mp) {
            Some(packet) => {
                for (k, chunk) in buf.chunks(mp).enumerate() {
                    if chunk != &packet[..chunk.len()] {
                        count(k * mp, chunk);
                    }
                }
            }
            None => count(0, buf),
        }
        PatternCheck {
            errors,
            first_error: first,
        }
    }
}

/// Packets up to this size come from the tables below (bulk 1024 at SuperSpeed, iso up to 3 ×
/// 1024 per interval): larger ones are computed byte by byte.
const PACKET_TABLE_LEN: usize = 4096;

/// `i % 63` for every offset of a packet.
static MOD63: [u8; PACKET_TABLE_LEN] = {
    let mut t = [0u8; PACKET_TABLE_LEN];
    let mut i = 0;
    while i < PACKET_TABLE_LEN {
        t[i] = (i % 63) as u8;
        i += 1;
    }
    t
};

static ZEROS: [u8; PACKET_TABLE_LEN] = [0; PACKET_TABLE_LEN];

/// The result of [`Pattern::check`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PatternCheck {
    pub errors: usize,
    pub first_error: Option<usize>,
}

/// Rounds a request size up to a whole number of packets, so that the pattern stays in phase
/// from one request to the next (T8). A size of 0 becomes one packet.
pub fn round_to_packets(size: usize, maxpacket: usize) -> usize {
    let mp = maxpacket.max(1);
    size.max(1).div_ceil(mp) * mp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// contract T8: `(i % maxpacket) % 63` for the three bulk maxpackets.
    #[test]
    fn t8_pattern_values_per_maxpacket() {
        for mp in [64usize, 512, 1024] {
            let mut b = vec![0xaa; 3 * mp + 17];
            Pattern::Mod63.fill(&mut b, mp);
            for (i, &x) in b.iter().enumerate() {
                assert_eq!(x as usize, (i % mp) % 63, "mp {mp} offset {i}");
            }
            // Each packet restarts: byte mp is 0, byte 63 is 0, byte 62 is 62.
            assert_eq!((b[mp], b[63], b[62]), (0, 0, 62));
            assert_eq!(
                Pattern::Mod63.check(&b, mp),
                PatternCheck {
                    errors: 0,
                    first_error: None
                }
            );
        }
    }

    /// A buffer that is not a multiple of maxpacket (ends in a short packet) checks cleanly;
    /// a corrupted byte is found; the wrong maxpacket is detected.
    #[test]
    fn t8_short_buffers_and_errors() {
        let mp = 512;
        let mut b = vec![0; 1000];
        Pattern::Mod63.fill(&mut b, mp);
        assert_eq!(Pattern::Mod63.check(&b, mp).errors, 0);
        b[700] ^= 0xff;
        assert_eq!(
            Pattern::Mod63.check(&b, mp),
            PatternCheck {
                errors: 1,
                first_error: Some(700)
            }
        );
        let mut c = vec![0; 1024];
        Pattern::Mod63.fill(&mut c, 1024);
        let wrong = Pattern::Mod63.check(&c, 512);
        assert!(
            wrong.errors > 0 && wrong.first_error == Some(512),
            "{wrong:?}"
        );
        assert_eq!(Pattern::Zeros.check(&[0, 0, 1], 64).errors, 1);
    }

    /// contract T8: the slice-wise comparison agrees with the byte-wise definition, for a
    /// clean buffer and for a wrong byte anywhere in a packet (first, last, inside a run).
    #[test]
    fn t8_fast_check_agrees_with_the_bytewise_one() {
        for mp in [8usize, 64, 512, 1024] {
            let mut b = vec![0; 3 * mp + 70];
            Pattern::Mod63.fill(&mut b, mp);
            assert_eq!(Pattern::Mod63.check(&b, mp).errors, 0);
            for at in [0, 62, 63, mp - 1, mp, 2 * mp + 64, b.len() - 1] {
                let mut bad = b.clone();
                bad[at] ^= 0x40;
                assert_ne!(Pattern::Mod63.check(&bad, mp).errors, 0, "mp {mp} at {at}");
                assert_eq!(
                    Pattern::Mod63.check(&bad, mp),
                    PatternCheck {
                        errors: 1,
                        first_error: Some(at)
                    }
                );
            }
        }
    }

    /// Concatenated packets of a transfer that spans requests stay in phase when requests are
    /// whole packets.
    #[test]
    fn t8_requests_of_whole_packets_stay_in_phase() {
        assert_eq!(round_to_packets(32768, 512), 32768);
        assert_eq!(round_to_packets(1000, 512), 1024);
        assert_eq!(round_to_packets(0, 64), 64);
        let mp = 64;
        let mut host = vec![0; 10 * mp];
        // The host fills its 640-byte URB from offset 0...
        Pattern::Mod63.fill(&mut host, mp);
        // ...and the gadget receives it in requests of 3 packets: each checks from offset 0.
        for chunk in host.chunks(round_to_packets(150, mp)) {
            assert_eq!(Pattern::Mod63.check(chunk, mp).errors, 0);
        }
    }

    /// The table-driven fill and check agree with the definition byte by byte, for packet
    /// sizes inside and beyond the table, with errors in any packet (the last one short).
    #[test]
    fn t8_fast_paths_match_the_definition() {
        for pattern in [Pattern::Zeros, Pattern::Mod63] {
            for mp in [1usize, 8, 63, 64, 512, 1023, 1024, 4096, 5000] {
                let len = 3 * mp + mp / 2 + 1;
                let mut b = vec![0xaa; len];
                pattern.fill(&mut b, mp);
                for (i, &x) in b.iter().enumerate() {
                    assert_eq!(x, pattern.byte(i, mp), "{pattern:?} mp {mp} offset {i}");
                }
                assert_eq!(pattern.check(&b, mp).errors, 0, "{pattern:?} mp {mp}");
                // Corrupt one byte in the second packet and two in the short last one.
                let (a, c1, c2) = (mp + mp / 2, len - 1, 3 * mp);
                for at in [a, c1, c2] {
                    b[at] = b[at].wrapping_add(1);
                }
                let got = pattern.check(&b, mp);
                let want_errors = [a, c1, c2]
                    .iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len();
                assert_eq!(got.errors, want_errors, "{pattern:?} mp {mp}");
                assert_eq!(got.first_error, Some(a.min(c2)), "{pattern:?} mp {mp}");
            }
        }
    }
}
