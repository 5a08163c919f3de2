//! `usb_gadget_ep_match_desc` (`drivers/usb/gadget/udc/core.c:1036-1100`): does a controller
//! endpoint suit an endpoint descriptor? Raw gadget's EP_ENABLE walk uses it (contract D5).
//!
//! Only the 9 bytes EP_ENABLE copies are looked at, and raw gadget passes no SuperSpeed companion,
//! so the streams check never applies (contract S4). Endpoints are never "claimed" under raw
//! gadget (only the composite framework's autoconfig claims them).

use crate::udc::UdcEndpoint;
use rawgadget_uapi::Speed;
use rawgadget_usb::{EndpointView, TransferType};

/// The 9 bytes USB_RAW_IOCTL_EP_ENABLE copies (`struct usb_endpoint_descriptor`, spec §1.3),
/// read in place with rawgadget-usb's endpoint view.
///
/// Always built with `new_unchecked` and never checked: raw gadget reads `bEndpointAddress`,
/// `bmAttributes` and `wMaxPacketSize` (bytes 2, 3 and 4..6) whatever `bLength` and
/// `bDescriptorType` say, since neither it nor `usb_gadget_ep_match_desc` looks at them (spec
/// §1.5 EP_ENABLE). The view's accessors read fixed offsets and so do the same.
pub type EpDesc<'a> = EndpointView<&'a [u8; 9]>;

/// Reads the EP_ENABLE bytes as an endpoint descriptor, unchecked (see [`EpDesc`]).
pub fn ep_desc(desc: &[u8; 9]) -> EpDesc<'_> {
    EndpointView::new_unchecked(desc)
}

/// `usb_gadget_ep_match_desc(gadget, ep, desc, NULL)`; `udc_max_speed` is `gadget->max_speed`.
pub fn ep_match_desc(udc_max_speed: Speed, ep: &UdcEndpoint, desc: &EpDesc<'_>) -> bool {
    let dualspeed = udc_max_speed >= Speed::High;
    let max = desc.max_packet();
    let is_in = desc.address().is_in();
    if is_in && !ep.caps.dir_in() {
        return false;
    }
    if !is_in && !ep.caps.dir_out() {
        return false;
    }
    if max > ep.maxpacket_limit {
        return false;
    }
    // "high bandwidth" works only at high speed
    if !dualspeed && desc.mult() > 1 {
        return false;
    }
    match desc.transfer_type() {
        // only ep0 carries portable CONTROL traffic
        TransferType::Control => false,
        TransferType::Isochronous => ep.caps.type_iso() && (dualspeed || max <= 1023),
        // no companion descriptor reaches here, so no streams check
        TransferType::Bulk => ep.caps.type_bulk(),
        // bulk endpoints handle interrupt transfers too
        TransferType::Interrupt => {
            (ep.caps.type_int() || ep.caps.type_bulk()) && (dualspeed || max <= 64)
        }
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
    /// EP_ENABLE bytes with the three fields matching reads; `bLength` and `bDescriptorType`
    /// are deliberately nonsense, since raw gadget does not check them.
    fn desc(address: u8, attributes: u8, wmps: u16) -> [u8; 9] {
        let [lo, hi] = wmps.to_le_bytes();
        [0, 0, address, attributes, lo, hi, 0, 0, 0]
    }

    /// (UDC max speed, endpoint caps, maxpacket_limit, EP_ENABLE bytes, matches, case).
    type MatchRow = (Speed, UsbRawEpCaps, u16, [u8; 9], bool, &'static str);

    const BULK_IN: UsbRawEpCaps = UsbRawEpCaps::new(false, false, true, false, true, false);
    const INT_IN: UsbRawEpCaps = UsbRawEpCaps::new(false, false, false, true, true, false);
    const ISO_OUT: UsbRawEpCaps = UsbRawEpCaps::new(false, true, false, false, false, true);

    /// spec §1.5 EP_ENABLE: raw gadget reads `bEndpointAddress`, `bmAttributes` and
    /// `wMaxPacketSize` of the 9 copied bytes whatever `bLength` and `bDescriptorType` say.
    /// The view is checked against direct reads of those bytes (`usb_endpoint_num`,
    /// `usb_endpoint_dir_in`, `usb_endpoint_type`, `usb_endpoint_maxp`,
    /// `usb_endpoint_maxp_mult`) over pseudo-random bytes, header included.
    #[test]
    fn ep_enable_bytes_read_whatever_the_header_says() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut b = [0u8; 9];
            for byte in &mut b {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = (state >> 56) as u8;
            }
            let v = ep_desc(&b);
            let wmps = u16::from_le_bytes([b[4], b[5]]);
            assert_eq!(v.address().number(), b[2] & 0x0f, "{b:02x?}");
            assert_eq!(v.address().is_in(), b[2] & 0x80 != 0, "{b:02x?}");
            assert_eq!(v.transfer_type().bits(), b[3] & 3, "{b:02x?}");
            assert_eq!(v.max_packet(), wmps & 0x7ff, "{b:02x?}");
            assert_eq!(u16::from(v.mult()), ((wmps >> 11) & 3) + 1, "{b:02x?}");
        }
    }

    /// contract D5: direction, maxpacket limit, type; interrupt matches bulk-only endpoints.
    #[test]
    fn d5_match_table() {
        let hs = Speed::High;
        let fs = Speed::Full;
        let rows: &[MatchRow] = &[
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
                ep_match_desc(*speed, &ep(*caps, *limit), &ep_desc(d)),
                *want,
                "{what}"
            );
        }
    }
}
