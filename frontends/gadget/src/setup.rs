//! The 8-byte SETUP packet of a CONTROL event (`struct usb_ctrlrequest`, USB 2.0 §9.3).
//!
//! Kept minimal on purpose: the chapter 9 model (crate `rawgadget-usb`) owns the full vocabulary
//! of requests and descriptors; this type only carries the packet to the program.

use std::fmt;

/// `bmRequestType` bit 7: device-to-host.
pub const DIR_IN: u8 = 0x80;
/// `bmRequestType` bits 6..5.
pub const TYPE_MASK: u8 = 0x60;
pub const TYPE_STANDARD: u8 = 0x00;
pub const TYPE_CLASS: u8 = 0x20;
pub const TYPE_VENDOR: u8 = 0x40;
/// `bmRequestType` bits 4..0.
pub const RECIP_MASK: u8 = 0x1f;
pub const RECIP_DEVICE: u8 = 0x00;
pub const RECIP_INTERFACE: u8 = 0x01;
pub const RECIP_ENDPOINT: u8 = 0x02;
pub const RECIP_OTHER: u8 = 0x03;

/// A SETUP packet, decoded (fields in host order).
#[doc(alias = "usb_ctrlrequest")]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SetupPacket {
    #[doc(alias = "bRequestType")]
    pub request_type: u8,
    #[doc(alias = "bRequest")]
    pub request: u8,
    #[doc(alias = "wValue")]
    pub value: u16,
    #[doc(alias = "wIndex")]
    pub index: u16,
    #[doc(alias = "wLength")]
    pub length: u16,
}

impl SetupPacket {
    /// Decodes the wire format (little-endian 16-bit fields).
    pub fn parse(b: &[u8; 8]) -> SetupPacket {
        SetupPacket {
            request_type: b[0],
            request: b[1],
            value: u16::from_le_bytes([b[2], b[3]]),
            index: u16::from_le_bytes([b[4], b[5]]),
            length: u16::from_le_bytes([b[6], b[7]]),
        }
    }

    /// Encodes the wire format.
    pub fn to_bytes(&self) -> [u8; 8] {
        let [v0, v1] = self.value.to_le_bytes();
        let [i0, i1] = self.index.to_le_bytes();
        let [l0, l1] = self.length.to_le_bytes();
        [self.request_type, self.request, v0, v1, i0, i1, l0, l1]
    }

    /// Device-to-host direction bit.
    pub fn is_in(&self) -> bool {
        self.request_type & DIR_IN != 0
    }

    /// Whether raw gadget expects an EP0_WRITE for this request: IN *and* a data stage
    /// (`wLength > 0`). Everything else, IN requests with `wLength == 0` included, is answered
    /// with EP0_READ (spec §1.5 EP0_WRITE/EP0_READ, xairy issue #46).
    pub fn has_in_data_stage(&self) -> bool {
        self.is_in() && self.length > 0
    }

    /// `bmRequestType & TYPE_MASK`.
    pub fn kind(&self) -> u8 {
        self.request_type & TYPE_MASK
    }

    /// `bmRequestType & RECIP_MASK`.
    pub fn recipient(&self) -> u8 {
        self.request_type & RECIP_MASK
    }

    /// High byte of `wValue` (the descriptor type of GET_DESCRIPTOR).
    pub fn value_high(&self) -> u8 {
        (self.value >> 8) as u8
    }

    /// Low byte of `wValue` (the descriptor index of GET_DESCRIPTOR).
    pub fn value_low(&self) -> u8 {
        self.value as u8
    }
}

impl fmt::Debug for SetupPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SetupPacket {{ bRequestType: {:#04x}, bRequest: {:#04x}, wValue: {:#06x}, \
             wIndex: {:#06x}, wLength: {} }}",
            self.request_type, self.request, self.value, self.index, self.length
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_emit_round_trip() {
        // GET_DESCRIPTOR(DEVICE), 64 bytes: the first request Linux sends.
        let b = [0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x40, 0x00];
        let s = SetupPacket::parse(&b);
        assert_eq!(
            (s.request_type, s.request, s.value, s.index, s.length),
            (0x80, 6, 0x100, 0, 64)
        );
        assert_eq!(s.to_bytes(), b);
        assert!(s.has_in_data_stage());
        assert_eq!(s.value_high(), 1);
    }

    /// spec §1.5: an IN request without data stage is "OUT pending" and takes EP0_READ.
    #[test]
    fn in_request_without_data_is_not_in_data_stage() {
        let s = SetupPacket {
            request_type: 0xc0,
            request: 0x5c,
            length: 0,
            ..Default::default()
        };
        assert!(s.is_in());
        assert!(!s.has_in_data_stage());
    }
}
