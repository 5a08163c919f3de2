//! `usb_gadget_ep_match_desc` (`drivers/usb/gadget/udc/core.c:1036-1100`): does a controller
//! endpoint suit an endpoint descriptor? Raw gadget's EP_ENABLE walk uses it (contract D5).
//!
//! Only the 9 bytes EP_ENABLE copies are looked at, and raw gadget passes no SuperSpeed companion,
//! so the streams check never applies (contract S4). Endpoints are never "claimed" under raw
//! gadget (only the composite framework's autoconfig claims them).

use crate::udc::UdcEndpoint;
use rawgadget_uapi::Speed;

/// The fields of a 9-byte `usb_endpoint_descriptor` that matching and I/O need.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EpDescFields {
    /// `bEndpointAddress`.
    pub address: u8,
    /// `bmAttributes`.
    pub attributes: u8,
    /// `wMaxPacketSize`, raw (little-endian decoded).
    pub w_max_packet_size: u16,
}

/// USB_ENDPOINT_XFER_* values of `bmAttributes & 3`.
pub const XFER_CONTROL: u8 = 0;
pub const XFER_ISOC: u8 = 1;
pub const XFER_BULK: u8 = 2;
pub const XFER_INT: u8 = 3;

impl EpDescFields {
    pub fn from_ioctl_bytes(desc: &[u8; 9]) -> Self {
        EpDescFields {
            address: desc[2],
            attributes: desc[3],
            w_max_packet_size: u16::from_le_bytes([desc[4], desc[5]]),
        }
    }
    /// `usb_endpoint_num`.
    pub fn number(self) -> u8 {
        self.address & 0x0f
    }
    /// `usb_endpoint_dir_in`.
    pub fn is_in(self) -> bool {
        self.address & 0x80 != 0
    }
    /// `usb_endpoint_type`.
    pub fn xfer_type(self) -> u8 {
        self.attributes & 0x03
    }
    /// `usb_endpoint_maxp`: bits 10..0.
    pub fn maxp(self) -> u16 {
        self.w_max_packet_size & 0x7ff
    }
    /// `usb_endpoint_maxp_mult`: bits 12..11, plus one.
    pub fn maxp_mult(self) -> u16 {
        ((self.w_max_packet_size >> 11) & 3) + 1
    }
}

/// `usb_gadget_ep_match_desc(gadget, ep, desc, NULL)`; `udc_max_speed` is `gadget->max_speed`.
pub fn ep_match_desc(udc_max_speed: Speed, ep: &UdcEndpoint, desc: EpDescFields) -> bool {
    let dualspeed = udc_max_speed >= Speed::High;
    let max = desc.maxp();
    if desc.is_in() && !ep.caps.dir_in() {
        return false;
    }
    if !desc.is_in() && !ep.caps.dir_out() {
        return false;
    }
    if max > ep.maxpacket_limit {
        return false;
    }
    // "high bandwidth" works only at high speed
    if !dualspeed && desc.maxp_mult() > 1 {
        return false;
    }
    match desc.xfer_type() {
        // only ep0 carries portable CONTROL traffic
        XFER_CONTROL => false,
        XFER_ISOC => ep.caps.type_iso() && (dualspeed || max <= 1023),
        // no companion descriptor reaches here, so no streams check
        XFER_BULK => ep.caps.type_bulk(),
        // bulk endpoints handle interrupt transfers too
        _ => (ep.caps.type_int() || ep.caps.type_bulk()) && (dualspeed || max <= 64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use rawgadget_uapi::UsbRawEpCaps;

    fn ep(caps: UsbRawEpCaps, limit: u16) -> UdcEndpoint {
        UdcEndpoint {
            name: "ep-a".to_string(),
            caps,
            maxpacket_limit: limit,
            max_streams: 16,
        }
    }
    fn desc(address: u8, attributes: u8, wmps: u16) -> EpDescFields {
        EpDescFields {
            address,
            attributes,
            w_max_packet_size: wmps,
        }
    }

    const BULK_IN: UsbRawEpCaps = UsbRawEpCaps::new(false, false, true, false, true, false);
    const INT_IN: UsbRawEpCaps = UsbRawEpCaps::new(false, false, false, true, true, false);
    const ISO_OUT: UsbRawEpCaps = UsbRawEpCaps::new(false, true, false, false, false, true);

    /// contract D5: direction, maxpacket limit, type; interrupt matches bulk-only endpoints.
    #[test]
    fn d5_match_table() {
        let hs = Speed::High;
        let fs = Speed::Full;
        let rows: &[(Speed, UsbRawEpCaps, u16, EpDescFields, bool, &str)] = &[
            (
                hs,
                BULK_IN,
                512,
                desc(0x81, 2, 512),
                true,
                "bulk in on bulk in",
            ),
            (
                hs,
                BULK_IN,
                512,
                desc(0x01, 2, 512),
                false,
                "out on in-only",
            ),
            (
                hs,
                BULK_IN,
                512,
                desc(0x81, 2, 1024),
                false,
                "over maxpacket_limit",
            ),
            (
                hs,
                BULK_IN,
                65535,
                desc(0x81, 3, 1024),
                true,
                "int on bulk-only",
            ),
            (
                fs,
                BULK_IN,
                65535,
                desc(0x81, 3, 65),
                false,
                "int > 64 on a full-speed UDC",
            ),
            (
                hs,
                INT_IN,
                65535,
                desc(0x81, 2, 512),
                false,
                "bulk on int-only",
            ),
            (
                hs,
                BULK_IN,
                65535,
                desc(0x81, 0, 64),
                false,
                "control never matches",
            ),
            (
                hs,
                BULK_IN,
                65535,
                desc(0x81, 1, 64),
                false,
                "iso on non-iso",
            ),
            (
                hs,
                ISO_OUT,
                65535,
                desc(0x02, 1, 1024),
                true,
                "iso 1024 at HS",
            ),
            (
                fs,
                ISO_OUT,
                65535,
                desc(0x02, 1, 1024),
                false,
                "iso 1024 on a FS UDC",
            ),
            (
                fs,
                ISO_OUT,
                65535,
                desc(0x02, 1, 1023),
                true,
                "iso 1023 on a FS UDC",
            ),
            (
                fs,
                ISO_OUT,
                65535,
                desc(0x02, 1, 0x0800 | 64),
                false,
                "mult > 1 on FS UDC",
            ),
            (
                hs,
                ISO_OUT,
                65535,
                desc(0x02, 1, 0x0800 | 64),
                true,
                "mult 2 at HS",
            ),
        ];
        for (speed, caps, limit, d, want, what) in rows {
            assert_eq!(
                ep_match_desc(*speed, &ep(*caps, *limit), *d),
                *want,
                "{what}"
            );
        }
    }
}
