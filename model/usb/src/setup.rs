//! The 8-byte SETUP packet (`struct usb_ctrlrequest`, USB 2.0 §9.3) and the standard requests
//! of USB 2.0 §9.4 / USB 3.2 §9.4.
//!
//! [`SetupPacket`] is a view over the wire bytes, [`ControlRequest`] the owned packet (it is
//! also the payload of a Raw Gadget CONTROL event, spec §1.2), [`StandardRequest`] its meaning
//! when it is one of the standard requests in canonical form. Decoding never fails: anything
//! else is `StandardRequest::Unknown` with the packet kept whole, so a device can still answer
//! it (or stall, which is what Linux's composite driver does).

use core::fmt;

use crate::wire::{check_len, Field, Repr, Result};

/// `USB_DIR_IN`: bit 7 of `bmRequestType` and of `bEndpointAddress`.
pub const USB_DIR_IN: u8 = 0x80;
/// `USB_DIR_OUT`.
pub const USB_DIR_OUT: u8 = 0x00;
/// `USB_TYPE_MASK` of `bmRequestType`.
pub const USB_TYPE_MASK: u8 = 0x60;
pub const USB_TYPE_STANDARD: u8 = 0x00;
pub const USB_TYPE_CLASS: u8 = 0x20;
pub const USB_TYPE_VENDOR: u8 = 0x40;
pub const USB_TYPE_RESERVED: u8 = 0x60;
/// `USB_RECIP_MASK` of `bmRequestType`.
pub const USB_RECIP_MASK: u8 = 0x1f;
pub const USB_RECIP_DEVICE: u8 = 0x00;
pub const USB_RECIP_INTERFACE: u8 = 0x01;
pub const USB_RECIP_ENDPOINT: u8 = 0x02;
pub const USB_RECIP_OTHER: u8 = 0x03;

/// Standard request codes (`bRequest`), USB 2.0 table 9-4 and USB 3.2 table 9-5.
pub mod request {
    pub const USB_REQ_GET_STATUS: u8 = 0x00;
    pub const USB_REQ_CLEAR_FEATURE: u8 = 0x01;
    pub const USB_REQ_SET_FEATURE: u8 = 0x03;
    pub const USB_REQ_SET_ADDRESS: u8 = 0x05;
    pub const USB_REQ_GET_DESCRIPTOR: u8 = 0x06;
    pub const USB_REQ_SET_DESCRIPTOR: u8 = 0x07;
    pub const USB_REQ_GET_CONFIGURATION: u8 = 0x08;
    pub const USB_REQ_SET_CONFIGURATION: u8 = 0x09;
    pub const USB_REQ_GET_INTERFACE: u8 = 0x0a;
    pub const USB_REQ_SET_INTERFACE: u8 = 0x0b;
    pub const USB_REQ_SYNCH_FRAME: u8 = 0x0c;
    pub const USB_REQ_SET_SEL: u8 = 0x30;
    pub const USB_REQ_SET_ISOCH_DELAY: u8 = 0x31;
}

/// Standard feature selectors (`wValue` of SET_FEATURE / CLEAR_FEATURE).
pub mod feature {
    /// Recipient endpoint.
    pub const USB_ENDPOINT_HALT: u16 = 0;
    /// Recipient device.
    pub const USB_DEVICE_REMOTE_WAKEUP: u16 = 1;
    /// Recipient device (high speed test modes).
    pub const USB_DEVICE_TEST_MODE: u16 = 2;
    /// Recipient device (SuperSpeed link power management).
    pub const USB_DEVICE_U1_ENABLE: u16 = 48;
    pub const USB_DEVICE_U2_ENABLE: u16 = 49;
    pub const USB_DEVICE_LTM_ENABLE: u16 = 50;
    /// Recipient interface (SuperSpeed function suspend).
    pub const USB_INTRF_FUNC_SUSPEND: u16 = 0;
}

/// Data stage direction (bit 7 of `bmRequestType`), also the direction of an endpoint.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Direction {
    /// Host to device.
    Out,
    /// Device to host.
    In,
}

impl Direction {
    /// From bit 7 of `bmRequestType` or `bEndpointAddress`.
    pub const fn from_bit7(byte: u8) -> Direction {
        if byte & USB_DIR_IN != 0 {
            Direction::In
        } else {
            Direction::Out
        }
    }
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "OUT",
            Direction::In => "IN",
        }
    }
}

/// Bits 6..5 of `bmRequestType`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum RequestType {
    Standard,
    Class,
    Vendor,
    Reserved,
}

impl RequestType {
    pub const fn from_request_type(bm_request_type: u8) -> RequestType {
        match bm_request_type & USB_TYPE_MASK {
            USB_TYPE_STANDARD => RequestType::Standard,
            USB_TYPE_CLASS => RequestType::Class,
            USB_TYPE_VENDOR => RequestType::Vendor,
            _ => RequestType::Reserved,
        }
    }
}

/// Bits 4..0 of `bmRequestType`; values 4..31 are reserved and kept.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Recipient {
    Device,
    Interface,
    Endpoint,
    Other,
    Reserved(u8),
}

impl Recipient {
    pub const fn from_request_type(bm_request_type: u8) -> Recipient {
        match bm_request_type & USB_RECIP_MASK {
            USB_RECIP_DEVICE => Recipient::Device,
            USB_RECIP_INTERFACE => Recipient::Interface,
            USB_RECIP_ENDPOINT => Recipient::Endpoint,
            USB_RECIP_OTHER => Recipient::Other,
            r => Recipient::Reserved(r),
        }
    }
    /// The five recipient bits.
    pub const fn bits(self) -> u8 {
        match self {
            Recipient::Device => USB_RECIP_DEVICE,
            Recipient::Interface => USB_RECIP_INTERFACE,
            Recipient::Endpoint => USB_RECIP_ENDPOINT,
            Recipient::Other => USB_RECIP_OTHER,
            Recipient::Reserved(r) => r & USB_RECIP_MASK,
        }
    }
}

mod field {
    pub const REQUEST_TYPE: usize = 0;
    pub const REQUEST: usize = 1;
    pub const VALUE: usize = 2;
    pub const INDEX: usize = 4;
    pub const LENGTH: usize = 6;
}

/// Wire size of a SETUP packet.
pub const SETUP_PACKET_SIZE: usize = 8;

/// A view over the 8 bytes of a SETUP packet (little-endian fields).
#[doc(alias = "usb_ctrlrequest")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SetupPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SetupPacket<T> {
    /// Wraps bytes unchecked; missing bytes read as 0.
    pub fn new_unchecked(buffer: T) -> Self {
        SetupPacket { buffer }
    }
    /// Wraps bytes holding at least 8 bytes.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = SetupPacket { buffer };
        p.check_len()?;
        Ok(p)
    }
    pub fn check_len(&self) -> Result<()> {
        check_len(self.buffer.as_ref(), SETUP_PACKET_SIZE)
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    #[doc(alias = "bRequestType")]
    #[doc(alias = "bmRequestType")]
    pub fn request_type(&self) -> u8 {
        u8::read(self.buffer.as_ref(), field::REQUEST_TYPE)
    }
    #[doc(alias = "bRequest")]
    pub fn request(&self) -> u8 {
        u8::read(self.buffer.as_ref(), field::REQUEST)
    }
    #[doc(alias = "wValue")]
    pub fn value(&self) -> u16 {
        u16::read(self.buffer.as_ref(), field::VALUE)
    }
    #[doc(alias = "wIndex")]
    pub fn index(&self) -> u16 {
        u16::read(self.buffer.as_ref(), field::INDEX)
    }
    #[doc(alias = "wLength")]
    pub fn length(&self) -> u16 {
        u16::read(self.buffer.as_ref(), field::LENGTH)
    }
    pub fn direction(&self) -> Direction {
        Direction::from_bit7(self.request_type())
    }
    pub fn kind(&self) -> RequestType {
        RequestType::from_request_type(self.request_type())
    }
    pub fn recipient(&self) -> Recipient {
        Recipient::from_request_type(self.request_type())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SetupPacket<T> {
    fn put(&mut self, offset: usize, bytes: &[u8]) {
        let buf = self.buffer.as_mut();
        for (i, b) in bytes.iter().enumerate() {
            if let Some(slot) = buf.get_mut(offset + i) {
                *slot = *b;
            }
        }
    }
    pub fn set_request_type(&mut self, v: u8) {
        self.put(field::REQUEST_TYPE, &[v]);
    }
    pub fn set_request(&mut self, v: u8) {
        self.put(field::REQUEST, &[v]);
    }
    pub fn set_value(&mut self, v: u16) {
        self.put(field::VALUE, &v.to_le_bytes());
    }
    pub fn set_index(&mut self, v: u16) {
        self.put(field::INDEX, &v.to_le_bytes());
    }
    pub fn set_length(&mut self, v: u16) {
        self.put(field::LENGTH, &v.to_le_bytes());
    }
}

/// An owned SETUP packet, every field kept as sent.
#[doc(alias = "usb_ctrlrequest")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct ControlRequest {
    #[doc(alias = "bmRequestType")]
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

impl ControlRequest {
    /// From the 8 wire bytes (the payload of a Raw Gadget CONTROL event).
    pub fn from_bytes(b: [u8; 8]) -> ControlRequest {
        let p = SetupPacket::new_unchecked(&b[..]);
        ControlRequest {
            request_type: p.request_type(),
            request: p.request(),
            value: p.value(),
            index: p.index(),
            length: p.length(),
        }
    }
    /// The 8 wire bytes.
    pub fn to_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        self.emit(&mut b);
        b
    }
    pub fn direction(&self) -> Direction {
        Direction::from_bit7(self.request_type)
    }
    pub fn kind(&self) -> RequestType {
        RequestType::from_request_type(self.request_type)
    }
    pub fn recipient(&self) -> Recipient {
        Recipient::from_request_type(self.request_type)
    }
    /// `wValue` high byte: the descriptor type of GET_DESCRIPTOR, the report type of HID
    /// GET_REPORT.
    pub fn value_high(&self) -> u8 {
        (self.value >> 8) as u8
    }
    /// `wValue` low byte: a descriptor index, a report ID, a configuration value.
    pub fn value_low(&self) -> u8 {
        self.value as u8
    }
    /// The standard request this is, or `Unknown` (see [`StandardRequest::decode`]).
    pub fn standard(&self) -> StandardRequest {
        StandardRequest::decode(self)
    }
}

impl Repr for ControlRequest {
    fn parse(bytes: &[u8]) -> Result<Self> {
        let p = SetupPacket::new_checked(bytes)?;
        Ok(ControlRequest {
            request_type: p.request_type(),
            request: p.request(),
            value: p.value(),
            index: p.index(),
            length: p.length(),
        })
    }
    fn buffer_len(&self) -> usize {
        SETUP_PACKET_SIZE
    }
    fn emit(&self, buf: &mut [u8]) {
        let buf = &mut buf[..SETUP_PACKET_SIZE];
        buf[0] = self.request_type;
        buf[1] = self.request;
        buf[2..4].copy_from_slice(&self.value.to_le_bytes());
        buf[4..6].copy_from_slice(&self.index.to_le_bytes());
        buf[6..8].copy_from_slice(&self.length.to_le_bytes());
    }
}

impl fmt::Display for ControlRequest {
    /// `bRequestType 0x80 bRequest 0x06 wValue 0x0100 wIndex 0x0000 wLength 64
    /// (GET_DESCRIPTOR DEVICE ...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bRequestType 0x{:02x} bRequest 0x{:02x} wValue 0x{:04x} wIndex 0x{:04x} wLength {}",
            self.request_type, self.request, self.value, self.index, self.length
        )?;
        match self.standard() {
            StandardRequest::Unknown(_) => Ok(()),
            std => write!(f, " ({std})"),
        }
    }
}

/// A standard request (USB 2.0 §9.4, USB 3.2 §9.4) decoded from a [`ControlRequest`].
///
/// Only the canonical form is decoded: the `bmRequestType` the spec gives for the request and
/// zero in the fields the spec says are zero. Everything else is `Unknown` with the packet
/// kept, so [`StandardRequest::to_control_request`] always gives back the exact packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum StandardRequest {
    /// `0x80/0x81/0x82 GET_STATUS`, `wValue` 0.
    GetStatus {
        recipient: Recipient,
        index: u16,
        length: u16,
    },
    /// `0x00/0x01/0x02 CLEAR_FEATURE`, `wLength` 0.
    ClearFeature {
        recipient: Recipient,
        feature: u16,
        index: u16,
    },
    /// `0x00/0x01/0x02 SET_FEATURE`, `wLength` 0 (`wIndex` high byte carries the test mode).
    SetFeature {
        recipient: Recipient,
        feature: u16,
        index: u16,
    },
    /// `0x00 SET_ADDRESS`, `wIndex` and `wLength` 0. Handled by the UDC, never seen by Raw
    /// Gadget clients on real controllers.
    SetAddress { address: u16 },
    /// `0x80/0x81 GET_DESCRIPTOR`: `wValue` = type << 8 | index, `wIndex` = language ID for
    /// strings (interface number for class descriptors such as HID's).
    GetDescriptor {
        recipient: Recipient,
        descriptor_type: u8,
        index: u8,
        language: u16,
        length: u16,
    },
    /// `0x00 SET_DESCRIPTOR`.
    SetDescriptor {
        descriptor_type: u8,
        index: u8,
        language: u16,
        length: u16,
    },
    /// `0x80 GET_CONFIGURATION`, `wValue` and `wIndex` 0.
    GetConfiguration { length: u16 },
    /// `0x00 SET_CONFIGURATION`, `wIndex` and `wLength` 0; the configuration value is the low
    /// byte of `value` (kept whole).
    SetConfiguration { value: u16 },
    /// `0x81 GET_INTERFACE`, `wValue` 0.
    GetInterface { interface: u16, length: u16 },
    /// `0x01 SET_INTERFACE`, `wLength` 0.
    SetInterface { interface: u16, alt_setting: u16 },
    /// `0x82 SYNCH_FRAME`, `wValue` 0.
    SynchFrame { endpoint: u16, length: u16 },
    /// `0x00 SET_SEL` (SuperSpeed), `wValue` and `wIndex` 0; a 6-byte data stage follows.
    SetSel { length: u16 },
    /// `0x00 SET_ISOCH_DELAY` (SuperSpeed), `wIndex` and `wLength` 0; delay in ns.
    SetIsochDelay { delay_ns: u16 },
    /// Class, vendor or reserved requests, unknown standard ones, and standard ones in a
    /// non-canonical form.
    Unknown(ControlRequest),
}

impl StandardRequest {
    /// Decodes the canonical standard requests; see the type doc.
    pub fn decode(r: &ControlRequest) -> StandardRequest {
        use request::*;
        use StandardRequest as S;
        let rt = r.request_type;
        let recipient = r.recipient();
        let dev_if_ep = matches!(
            recipient,
            Recipient::Device | Recipient::Interface | Recipient::Endpoint
        );
        let std = rt & USB_TYPE_MASK == USB_TYPE_STANDARD;
        let is_in = rt & USB_DIR_IN != 0;
        if !std {
            return S::Unknown(*r);
        }
        match r.request {
            USB_REQ_GET_STATUS if is_in && dev_if_ep && r.value == 0 => S::GetStatus {
                recipient,
                index: r.index,
                length: r.length,
            },
            USB_REQ_CLEAR_FEATURE if !is_in && dev_if_ep && r.length == 0 => S::ClearFeature {
                recipient,
                feature: r.value,
                index: r.index,
            },
            USB_REQ_SET_FEATURE if !is_in && dev_if_ep && r.length == 0 => S::SetFeature {
                recipient,
                feature: r.value,
                index: r.index,
            },
            USB_REQ_SET_ADDRESS if rt == 0x00 && r.index == 0 && r.length == 0 => {
                S::SetAddress { address: r.value }
            }
            USB_REQ_GET_DESCRIPTOR
                if is_in && matches!(recipient, Recipient::Device | Recipient::Interface) =>
            {
                S::GetDescriptor {
                    recipient,
                    descriptor_type: r.value_high(),
                    index: r.value_low(),
                    language: r.index,
                    length: r.length,
                }
            }
            USB_REQ_SET_DESCRIPTOR if rt == 0x00 => S::SetDescriptor {
                descriptor_type: r.value_high(),
                index: r.value_low(),
                language: r.index,
                length: r.length,
            },
            USB_REQ_GET_CONFIGURATION if rt == 0x80 && r.value == 0 && r.index == 0 => {
                S::GetConfiguration { length: r.length }
            }
            USB_REQ_SET_CONFIGURATION if rt == 0x00 && r.index == 0 && r.length == 0 => {
                S::SetConfiguration { value: r.value }
            }
            USB_REQ_GET_INTERFACE if rt == 0x81 && r.value == 0 => S::GetInterface {
                interface: r.index,
                length: r.length,
            },
            USB_REQ_SET_INTERFACE if rt == 0x01 && r.length == 0 => S::SetInterface {
                interface: r.index,
                alt_setting: r.value,
            },
            USB_REQ_SYNCH_FRAME if rt == 0x82 && r.value == 0 => S::SynchFrame {
                endpoint: r.index,
                length: r.length,
            },
            USB_REQ_SET_SEL if rt == 0x00 && r.value == 0 && r.index == 0 => {
                S::SetSel { length: r.length }
            }
            USB_REQ_SET_ISOCH_DELAY if rt == 0x00 && r.index == 0 && r.length == 0 => {
                S::SetIsochDelay { delay_ns: r.value }
            }
            _ => S::Unknown(*r),
        }
    }

    /// The packet this request is sent as (the exact packet for `Unknown`).
    pub fn to_control_request(&self) -> ControlRequest {
        use request::*;
        use StandardRequest as S;
        let rq =
            |request_type: u8, request: u8, value: u16, index: u16, length: u16| ControlRequest {
                request_type,
                request,
                value,
                index,
                length,
            };
        let dt = |ty: u8, idx: u8| (ty as u16) << 8 | idx as u16;
        match *self {
            S::GetStatus {
                recipient,
                index,
                length,
            } => rq(
                USB_DIR_IN | recipient.bits(),
                USB_REQ_GET_STATUS,
                0,
                index,
                length,
            ),
            S::ClearFeature {
                recipient,
                feature,
                index,
            } => rq(recipient.bits(), USB_REQ_CLEAR_FEATURE, feature, index, 0),
            S::SetFeature {
                recipient,
                feature,
                index,
            } => rq(recipient.bits(), USB_REQ_SET_FEATURE, feature, index, 0),
            S::SetAddress { address } => rq(0, USB_REQ_SET_ADDRESS, address, 0, 0),
            S::GetDescriptor {
                recipient,
                descriptor_type,
                index,
                language,
                length,
            } => rq(
                USB_DIR_IN | recipient.bits(),
                USB_REQ_GET_DESCRIPTOR,
                dt(descriptor_type, index),
                language,
                length,
            ),
            S::SetDescriptor {
                descriptor_type,
                index,
                language,
                length,
            } => rq(
                0,
                USB_REQ_SET_DESCRIPTOR,
                dt(descriptor_type, index),
                language,
                length,
            ),
            S::GetConfiguration { length } => rq(0x80, USB_REQ_GET_CONFIGURATION, 0, 0, length),
            S::SetConfiguration { value } => rq(0, USB_REQ_SET_CONFIGURATION, value, 0, 0),
            S::GetInterface { interface, length } => {
                rq(0x81, USB_REQ_GET_INTERFACE, 0, interface, length)
            }
            S::SetInterface {
                interface,
                alt_setting,
            } => rq(0x01, USB_REQ_SET_INTERFACE, alt_setting, interface, 0),
            S::SynchFrame { endpoint, length } => {
                rq(0x82, USB_REQ_SYNCH_FRAME, 0, endpoint, length)
            }
            S::SetSel { length } => rq(0, USB_REQ_SET_SEL, 0, 0, length),
            S::SetIsochDelay { delay_ns } => rq(0, USB_REQ_SET_ISOCH_DELAY, delay_ns, 0, 0),
            S::Unknown(r) => r,
        }
    }
}

impl fmt::Display for StandardRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use StandardRequest as S;
        match *self {
            S::GetStatus {
                recipient,
                index,
                length,
            } => {
                write!(f, "GET_STATUS {recipient:?} index {index} length {length}")
            }
            S::ClearFeature {
                recipient,
                feature,
                index,
            } => {
                write!(
                    f,
                    "CLEAR_FEATURE {recipient:?} feature {feature} index {index}"
                )
            }
            S::SetFeature {
                recipient,
                feature,
                index,
            } => {
                write!(
                    f,
                    "SET_FEATURE {recipient:?} feature {feature} index {index}"
                )
            }
            S::SetAddress { address } => write!(f, "SET_ADDRESS {address}"),
            S::GetDescriptor {
                recipient,
                descriptor_type,
                index,
                language,
                length,
            } => write!(
                f,
                "GET_DESCRIPTOR {} index {index} lang 0x{language:04x} length {length}{}",
                crate::descriptor::type_name(descriptor_type),
                if recipient == Recipient::Interface {
                    " (interface)"
                } else {
                    ""
                }
            ),
            S::SetDescriptor {
                descriptor_type,
                index,
                language,
                length,
            } => write!(
                f,
                "SET_DESCRIPTOR {} index {index} lang 0x{language:04x} length {length}",
                crate::descriptor::type_name(descriptor_type)
            ),
            S::GetConfiguration { length } => write!(f, "GET_CONFIGURATION length {length}"),
            S::SetConfiguration { value } => write!(f, "SET_CONFIGURATION {value}"),
            S::GetInterface { interface, length } => {
                write!(f, "GET_INTERFACE {interface} length {length}")
            }
            S::SetInterface {
                interface,
                alt_setting,
            } => {
                write!(f, "SET_INTERFACE {interface} alt {alt_setting}")
            }
            S::SynchFrame { endpoint, length } => {
                write!(f, "SYNCH_FRAME ep 0x{endpoint:02x} length {length}")
            }
            S::SetSel { length } => write!(f, "SET_SEL length {length}"),
            S::SetIsochDelay { delay_ns } => write!(f, "SET_ISOCH_DELAY {delay_ns} ns"),
            S::Unknown(r) => write!(
                f,
                "request 0x{:02x}/0x{:02x} wValue 0x{:04x} wIndex 0x{:04x} wLength {}",
                r.request_type, r.request, r.value, r.index, r.length
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::request::*;
    use super::*;
    use crate::testutil::Rng;
    use alloc::string::ToString;

    /// USB 2.0 §9.4.3: GET_DESCRIPTOR(DEVICE) as Linux sends it first (wLength 64).
    static GET_DEVICE_DESCRIPTOR: [u8; 8] = [
        0x80, // bmRequestType: IN, standard, device
        0x06, // bRequest: GET_DESCRIPTOR
        0x00, 0x01, // wValue: DEVICE (1) << 8 | index 0
        0x00, 0x00, // wIndex: 0
        0x40, 0x00, // wLength: 64
    ];

    #[test]
    fn test_deconstruct() {
        let p = SetupPacket::new_checked(&GET_DEVICE_DESCRIPTOR[..]).unwrap();
        assert_eq!(p.request_type(), 0x80);
        assert_eq!(p.request(), USB_REQ_GET_DESCRIPTOR);
        assert_eq!(p.value(), 0x0100);
        assert_eq!(p.index(), 0);
        assert_eq!(p.length(), 64);
        assert_eq!(p.direction(), Direction::In);
        assert_eq!(p.kind(), RequestType::Standard);
        assert_eq!(p.recipient(), Recipient::Device);
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0u8; 8];
        let mut p = SetupPacket::new_unchecked(&mut bytes[..]);
        p.set_request_type(0x80);
        p.set_request(USB_REQ_GET_DESCRIPTOR);
        p.set_value(0x0100);
        p.set_index(0);
        p.set_length(64);
        assert_eq!(bytes, GET_DEVICE_DESCRIPTOR);
    }

    #[test]
    fn test_parse_emit() {
        let r = ControlRequest::parse(&GET_DEVICE_DESCRIPTOR).unwrap();
        assert_eq!(
            r.standard(),
            StandardRequest::GetDescriptor {
                recipient: Recipient::Device,
                descriptor_type: 1,
                index: 0,
                language: 0,
                length: 64
            }
        );
        assert_eq!(r.to_bytes(), GET_DEVICE_DESCRIPTOR);
        assert_eq!(ControlRequest::from_bytes(GET_DEVICE_DESCRIPTOR), r);
        assert_eq!(
            r.to_string(),
            "bRequestType 0x80 bRequest 0x06 wValue 0x0100 wIndex 0x0000 wLength 64 \
             (GET_DESCRIPTOR DEVICE index 0 lang 0x0000 length 64)"
        );
    }

    #[test]
    fn short_setup_packet_is_an_error_and_views_do_not_panic() {
        assert_eq!(
            ControlRequest::parse(&[0x80, 6, 0, 1]),
            Err(crate::Error::Truncated { need: 8, have: 4 })
        );
        let p = SetupPacket::new_unchecked(&[0x80u8, 6, 0][..]);
        assert_eq!(p.value(), 0);
        assert_eq!(p.length(), 0);
        let mut short = [0u8; 3];
        SetupPacket::new_unchecked(&mut short[..]).set_length(0xffff);
        assert_eq!(short, [0, 0, 0]);
    }

    /// Requests as Linux's USB core sends them during enumeration, and what they decode to.
    #[test]
    fn decode_table() {
        use StandardRequest as S;
        let rows: &[([u8; 8], StandardRequest)] = &[
            (
                [0x00, 0x05, 0x03, 0, 0, 0, 0, 0],
                S::SetAddress { address: 3 },
            ),
            (
                [0x80, 0x06, 0x02, 0x03, 0x09, 0x04, 0xff, 0x00],
                S::GetDescriptor {
                    recipient: Recipient::Device,
                    descriptor_type: 3,
                    index: 2,
                    language: 0x0409,
                    length: 255,
                },
            ),
            (
                [0x81, 0x06, 0x00, 0x22, 0x00, 0x00, 0x41, 0x00],
                S::GetDescriptor {
                    recipient: Recipient::Interface,
                    descriptor_type: 0x22,
                    index: 0,
                    language: 0,
                    length: 65,
                },
            ),
            (
                [0x00, 0x09, 0x01, 0, 0, 0, 0, 0],
                S::SetConfiguration { value: 1 },
            ),
            (
                [0x80, 0x08, 0, 0, 0, 0, 1, 0],
                S::GetConfiguration { length: 1 },
            ),
            (
                [0x80, 0x00, 0, 0, 0, 0, 2, 0],
                S::GetStatus {
                    recipient: Recipient::Device,
                    index: 0,
                    length: 2,
                },
            ),
            (
                [0x02, 0x01, 0, 0, 0x81, 0, 0, 0],
                S::ClearFeature {
                    recipient: Recipient::Endpoint,
                    feature: 0,
                    index: 0x81,
                },
            ),
            (
                [0x00, 0x03, 0x01, 0, 0, 0, 0, 0],
                S::SetFeature {
                    recipient: Recipient::Device,
                    feature: 1,
                    index: 0,
                },
            ),
            (
                [0x01, 0x0b, 0x01, 0, 0x02, 0, 0, 0],
                S::SetInterface {
                    interface: 2,
                    alt_setting: 1,
                },
            ),
            (
                [0x81, 0x0a, 0, 0, 0x02, 0, 1, 0],
                S::GetInterface {
                    interface: 2,
                    length: 1,
                },
            ),
            (
                [0x82, 0x0c, 0, 0, 0x83, 0, 2, 0],
                S::SynchFrame {
                    endpoint: 0x83,
                    length: 2,
                },
            ),
            ([0x00, 0x30, 0, 0, 0, 0, 6, 0], S::SetSel { length: 6 }),
            (
                [0x00, 0x31, 0x28, 0, 0, 0, 0, 0],
                S::SetIsochDelay { delay_ns: 40 },
            ),
            (
                [0x00, 0x07, 0x00, 0x01, 0, 0, 18, 0],
                S::SetDescriptor {
                    descriptor_type: 1,
                    index: 0,
                    language: 0,
                    length: 18,
                },
            ),
        ];
        for (bytes, want) in rows {
            let r = ControlRequest::from_bytes(*bytes);
            assert_eq!(r.standard(), *want, "{bytes:02x?}");
            assert_eq!(want.to_control_request(), r, "{want:?}");
        }
    }

    /// Non-canonical standard requests and class requests stay whole in `Unknown`.
    #[test]
    fn non_canonical_requests_are_unknown() {
        for bytes in [
            [0x00, 0x06, 0x00, 0x01, 0, 0, 18, 0], // GET_DESCRIPTOR with direction OUT
            [0x82, 0x06, 0x00, 0x01, 0, 0, 18, 0], // GET_DESCRIPTOR to an endpoint
            [0x80, 0x08, 0x01, 0, 0, 0, 1, 0],     // GET_CONFIGURATION with wValue 1
            [0x00, 0x09, 0x01, 0, 0, 0, 1, 0],     // SET_CONFIGURATION with a data stage
            [0x21, 0x0a, 0x00, 0, 0, 0, 0, 0],     // HID SET_IDLE (class)
            [0xc0, 0x5b, 0x00, 0, 0, 0, 4, 0],     // vendor
            [0x80, 0x02, 0, 0, 0, 0, 0, 0],        // bRequest 2 is reserved
        ] {
            let r = ControlRequest::from_bytes(bytes);
            assert_eq!(r.standard(), StandardRequest::Unknown(r), "{bytes:02x?}");
        }
    }

    /// Property: decode then encode gives back every packet exactly.
    #[test]
    fn decode_encode_is_identity_on_random_packets() {
        let mut rng = Rng::new(0x5e7u64);
        for i in 0..200_000 {
            let mut b = [0u8; 8];
            rng.fill(&mut b);
            if i % 2 == 0 {
                // Bias towards standard requests in canonical-looking shapes.
                b[0] &= 0x83;
                b[1] %= 0x33;
                if i % 4 == 0 {
                    b[6] = 0;
                    b[7] = 0;
                }
            }
            let r = ControlRequest::from_bytes(b);
            assert_eq!(r.standard().to_control_request(), r, "{b:02x?}");
            assert_eq!(r.to_bytes(), b);
        }
    }
}
