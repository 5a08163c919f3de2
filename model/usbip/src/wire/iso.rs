//! `struct usbip_iso_packet_descriptor`: 16 bytes per iso packet, after the data of a CMD_SUBMIT
//! or RET_SUBMIT (`usbip_common.h:219-227`, `usbip_alloc_iso_desc_pdu`, `usbip_recv_iso`).

use core::fmt;

use super::{check_len, read_u32, write_u32};
use crate::{Error, USBIP_ISO_PACKET_LEN};

mod field {
    use crate::wire::Field;

    pub const OFFSET: Field = 0x00..0x04;
    pub const LENGTH: Field = 0x04..0x08;
    pub const ACTUAL_LENGTH: Field = 0x08..0x0c;
    pub const STATUS: Field = 0x0c..0x10;
}

/// A view over one 16-byte iso packet descriptor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IsoPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IsoPacket<T> {
    pub const fn new_unchecked(buffer: T) -> IsoPacket<T> {
        IsoPacket { buffer }
    }

    /// # Errors
    /// [`Error::Truncated`] if `buffer` is shorter than 16 bytes.
    pub fn new_checked(buffer: T) -> Result<IsoPacket<T>, Error> {
        check_len(buffer.as_ref(), USBIP_ISO_PACKET_LEN)?;
        Ok(IsoPacket { buffer })
    }

    /// Where the packet starts in the host's (unpacked) transfer buffer.
    pub fn offset(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::OFFSET)
    }
    /// Expected length.
    pub fn length(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::LENGTH)
    }
    pub fn actual_length(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACTUAL_LENGTH)
    }
    /// 0 or a negative errno.
    pub fn status(&self) -> i32 {
        read_u32(self.buffer.as_ref(), field::STATUS) as i32
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IsoPacket<T> {
    pub fn set_offset(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::OFFSET, v)
    }
    pub fn set_length(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::LENGTH, v)
    }
    pub fn set_actual_length(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::ACTUAL_LENGTH, v)
    }
    pub fn set_status(&mut self, v: i32) {
        write_u32(self.buffer.as_mut(), field::STATUS, v as u32)
    }
}

impl<T: AsRef<[u8]>> fmt::Display for IsoPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.buffer.as_ref().len() < USBIP_ISO_PACKET_LEN {
            write!(
                f,
                "iso packet (truncated, {} of 16 bytes) ",
                self.buffer.as_ref().len()
            )?;
            return super::header::hex(f, self.buffer.as_ref());
        }
        IsoPacketDescriptor::parse(self).fmt(f)
    }
}

/// One iso packet descriptor. Every bit pattern is a valid descriptor at this level; whether it
/// fits its URB is checked by the decoder (bounds) and by [`crate::RetSubmit`] (U16).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct IsoPacketDescriptor {
    pub offset: u32,
    pub length: u32,
    pub actual_length: u32,
    pub status: i32,
}

impl IsoPacketDescriptor {
    /// Reads a descriptor; fields past the end of a short buffer read as 0, so check the length
    /// first (`IsoPacket::new_checked`) when that matters.
    pub fn parse<T: AsRef<[u8]>>(packet: &IsoPacket<T>) -> IsoPacketDescriptor {
        IsoPacketDescriptor {
            offset: packet.offset(),
            length: packet.length(),
            actual_length: packet.actual_length(),
            status: packet.status(),
        }
    }

    pub const fn buffer_len(&self) -> usize {
        USBIP_ISO_PACKET_LEN
    }

    /// Panics if the buffer is shorter than 16 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, packet: &mut IsoPacket<&mut T>) {
        packet.set_offset(self.offset);
        packet.set_length(self.length);
        packet.set_actual_length(self.actual_length);
        packet.set_status(self.status);
    }

    /// Parses `count` consecutive descriptors.
    ///
    /// # Errors
    /// [`Error::Truncated`] if `bytes` holds fewer than `count` descriptors.
    pub fn parse_all(
        bytes: &[u8],
        count: usize,
    ) -> Result<alloc::vec::Vec<IsoPacketDescriptor>, Error> {
        let need = count.saturating_mul(USBIP_ISO_PACKET_LEN);
        check_len(bytes, need)?;
        Ok(bytes[..need]
            .chunks_exact(USBIP_ISO_PACKET_LEN)
            .map(|chunk| IsoPacketDescriptor::parse(&IsoPacket::new_unchecked(chunk)))
            .collect())
    }

    /// Writes `packets` back to back. Panics if `buf` is shorter than `16 * packets.len()`.
    pub fn emit_all(packets: &[IsoPacketDescriptor], buf: &mut [u8]) {
        assert!(
            buf.len() >= packets.len() * USBIP_ISO_PACKET_LEN,
            "iso buffer too short"
        );
        for (packet, chunk) in packets
            .iter()
            .zip(buf.chunks_exact_mut(USBIP_ISO_PACKET_LEN))
        {
            packet.emit(&mut IsoPacket::new_unchecked(chunk));
        }
    }
}

impl fmt::Display for IsoPacketDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "iso offset={} length={} actual_length={} status={}",
            self.offset, self.length, self.actual_length, self.status
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    /// The second packet of an iso IN reply: 192 bytes into the buffer, 192 expected, 100 sent,
    /// status -EXDEV (-18).
    #[rustfmt::skip]
    const PACKET: [u8; 16] = [
        0x00, 0x00, 0x00, 0xc0, // offset: 192
        0x00, 0x00, 0x00, 0xc0, // length: 192
        0x00, 0x00, 0x00, 0x64, // actual_length: 100
        0xff, 0xff, 0xff, 0xee, // status: -EXDEV
    ];

    const REPR: IsoPacketDescriptor = IsoPacketDescriptor {
        offset: 192,
        length: 192,
        actual_length: 100,
        status: -18,
    };

    #[test]
    fn test_parse_and_emit() {
        let view = IsoPacket::new_checked(&PACKET[..]).unwrap();
        assert_eq!(IsoPacketDescriptor::parse(&view), REPR);
        let mut out = [0u8; 16];
        REPR.emit(&mut IsoPacket::new_unchecked(&mut out[..]));
        assert_eq!(out, PACKET);
    }

    #[test]
    fn parse_all_reports_truncation() {
        let two = [PACKET, PACKET].concat();
        assert_eq!(
            IsoPacketDescriptor::parse_all(&two, 2).unwrap(),
            [REPR, REPR]
        );
        assert_eq!(
            IsoPacketDescriptor::parse_all(&two[..31], 2),
            Err(Error::Truncated { need: 32, have: 31 })
        );
        assert_eq!(
            IsoPacketDescriptor::parse_all(&[], usize::MAX),
            Err(Error::Truncated {
                need: usize::MAX,
                have: 0
            })
        );
    }

    #[test]
    fn display_short_packet_prints_raw_bytes() {
        assert_eq!(
            IsoPacket::new_unchecked(&PACKET[..3]).to_string(),
            "iso packet (truncated, 3 of 16 bytes) 000000"
        );
        assert_eq!(
            IsoPacket::new_unchecked(&PACKET[..]).to_string(),
            "iso offset=192 length=192 actual_length=100 status=-18"
        );
    }
}
