//! Endpoint (USB 2.0 §9.6.6) and SuperSpeed endpoint companion (USB 3.2 §9.6.7) descriptors.

use core::fmt;

use super::sizes::*;
use super::types::*;
use super::{Block, Lsusb, X2, X4};
use crate::setup::{Direction, USB_DIR_IN};
use crate::wire::{check_header, view, Repr, Result};

/// `USB_ENDPOINT_NUMBER_MASK` of `bEndpointAddress`.
pub const USB_ENDPOINT_NUMBER_MASK: u8 = 0x0f;
/// `USB_ENDPOINT_XFERTYPE_MASK` of `bmAttributes`.
pub const USB_ENDPOINT_XFERTYPE_MASK: u8 = 0x03;
pub const USB_ENDPOINT_XFER_CONTROL: u8 = 0;
pub const USB_ENDPOINT_XFER_ISOC: u8 = 1;
pub const USB_ENDPOINT_XFER_BULK: u8 = 2;
pub const USB_ENDPOINT_XFER_INT: u8 = 3;
/// `USB_ENDPOINT_MAXP_MASK` of `wMaxPacketSize`: the packet size bits.
pub const USB_ENDPOINT_MAXP_MASK: u16 = 0x07ff;

/// `bEndpointAddress`: number in bits 3..0, direction in bit 7; reserved bits 6..4 are kept.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub struct EndpointAddress(pub u8);

impl EndpointAddress {
    /// Number 0..=15 and direction.
    pub const fn new(number: u8, direction: Direction) -> EndpointAddress {
        let dir = match direction {
            Direction::In => USB_DIR_IN,
            Direction::Out => 0,
        };
        EndpointAddress(number & USB_ENDPOINT_NUMBER_MASK | dir)
    }
    pub const fn number(self) -> u8 {
        self.0 & USB_ENDPOINT_NUMBER_MASK
    }
    pub const fn direction(self) -> Direction {
        Direction::from_bit7(self.0)
    }
    pub const fn is_in(self) -> bool {
        self.0 & USB_DIR_IN != 0
    }
}

impl fmt::Display for EndpointAddress {
    /// `0x81  EP 1 IN`, as lsusb.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "0x{:02x}  EP {} {}",
            self.0,
            self.number(),
            self.direction().as_str()
        )
    }
}

/// Bits 1..0 of `bmAttributes`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum TransferType {
    Control,
    Isochronous,
    Bulk,
    Interrupt,
}

impl TransferType {
    pub const fn from_attributes(bm_attributes: u8) -> TransferType {
        match bm_attributes & USB_ENDPOINT_XFERTYPE_MASK {
            USB_ENDPOINT_XFER_CONTROL => TransferType::Control,
            USB_ENDPOINT_XFER_ISOC => TransferType::Isochronous,
            USB_ENDPOINT_XFER_BULK => TransferType::Bulk,
            _ => TransferType::Interrupt,
        }
    }
    /// The two `bmAttributes` bits.
    pub const fn bits(self) -> u8 {
        match self {
            TransferType::Control => USB_ENDPOINT_XFER_CONTROL,
            TransferType::Isochronous => USB_ENDPOINT_XFER_ISOC,
            TransferType::Bulk => USB_ENDPOINT_XFER_BULK,
            TransferType::Interrupt => USB_ENDPOINT_XFER_INT,
        }
    }
    pub const fn as_str(self) -> &'static str {
        match self {
            TransferType::Control => "Control",
            TransferType::Isochronous => "Isochronous",
            TransferType::Bulk => "Bulk",
            TransferType::Interrupt => "Interrupt",
        }
    }
}

mod field {
    pub const ADDRESS: usize = 2;
    pub const ATTRIBUTES: usize = 3;
    pub const MAX_PACKET_SIZE: usize = 4;
    pub const INTERVAL: usize = 6;
    pub const REFRESH: usize = 7;
    pub const SYNCH_ADDRESS: usize = 8;
    // SuperSpeed endpoint companion.
    pub const MAX_BURST: usize = 2;
    pub const SS_ATTRIBUTES: usize = 3;
    pub const BYTES_PER_INTERVAL: usize = 4;
}

view! {
    /// A view over an endpoint descriptor (7 bytes, 9 for audio endpoints).
    #[doc(alias = "usb_endpoint_descriptor")]
    EndpointView, type = USB_DT_ENDPOINT, min = USB_DT_ENDPOINT_SIZE, max = USB_DT_ENDPOINT_AUDIO_SIZE;
    #[doc(alias = "bEndpointAddress")]
    address_byte: u8 = field::ADDRESS;
    #[doc(alias = "bmAttributes")]
    attributes: u8 = field::ATTRIBUTES;
    /// All 16 bits of `wMaxPacketSize` (see [`EndpointView::max_packet`]).
    #[doc(alias = "wMaxPacketSize")]
    max_packet_size: u16 = field::MAX_PACKET_SIZE;
    #[doc(alias = "bInterval")]
    interval: u8 = field::INTERVAL;
    /// Audio endpoints only; 0 when absent.
    #[doc(alias = "bRefresh")]
    refresh: u8 = field::REFRESH;
    /// Audio endpoints only; 0 when absent.
    #[doc(alias = "bSynchAddress")]
    synch_address: u8 = field::SYNCH_ADDRESS;
}

impl<T: AsRef<[u8]>> EndpointView<T> {
    pub fn address(&self) -> EndpointAddress {
        EndpointAddress(self.address_byte())
    }
    pub fn transfer_type(&self) -> TransferType {
        TransferType::from_attributes(self.attributes())
    }
    /// Packet size: bits 10..0 of `wMaxPacketSize` (`usb_endpoint_maxp`).
    pub fn max_packet(&self) -> u16 {
        self.max_packet_size() & USB_ENDPOINT_MAXP_MASK
    }
    /// Transactions per microframe, 1..=4 (`usb_endpoint_maxp_mult`: bits 12..11 plus one; 4
    /// only from a reserved value).
    pub fn mult(&self) -> u8 {
        ((self.max_packet_size() >> 11) & 3) as u8 + 1
    }
}

/// Extra bytes of a 9-byte (audio) endpoint descriptor.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct AudioEndpointExtension {
    #[doc(alias = "bRefresh")]
    pub refresh: u8,
    #[doc(alias = "bSynchAddress")]
    pub synch_address: u8,
}

/// An endpoint descriptor. `max_packet_size` keeps all 16 bits of `wMaxPacketSize`.
#[doc(alias = "usb_endpoint_descriptor")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct EndpointDescriptor {
    #[doc(alias = "bEndpointAddress")]
    pub address: EndpointAddress,
    #[doc(alias = "bmAttributes")]
    pub attributes: u8,
    #[doc(alias = "wMaxPacketSize")]
    pub max_packet_size: u16,
    #[doc(alias = "bInterval")]
    pub interval: u8,
    /// `Some` for the 9-byte audio form.
    pub audio: Option<AudioEndpointExtension>,
}

impl EndpointDescriptor {
    /// A 7-byte descriptor; `max_packet_size` may carry mult bits (use [`Self::with_mult`]).
    pub fn new(
        address: EndpointAddress,
        transfer: TransferType,
        max_packet_size: u16,
        interval: u8,
    ) -> EndpointDescriptor {
        EndpointDescriptor {
            address,
            attributes: transfer.bits(),
            max_packet_size,
            interval,
            audio: None,
        }
    }
    /// Sets the high-bandwidth transactions per microframe (1..=3) in bits 12..11.
    pub fn with_mult(mut self, mult: u8) -> EndpointDescriptor {
        let extra = (mult.clamp(1, 3) - 1) as u16;
        self.max_packet_size = self.max_packet_size & !(3 << 11) | extra << 11;
        self
    }
    pub fn number(&self) -> u8 {
        self.address.number()
    }
    pub fn direction(&self) -> Direction {
        self.address.direction()
    }
    pub fn transfer_type(&self) -> TransferType {
        TransferType::from_attributes(self.attributes)
    }
    /// `wMaxPacketSize & 0x7ff`.
    pub fn max_packet(&self) -> u16 {
        self.max_packet_size & USB_ENDPOINT_MAXP_MASK
    }
    /// Transactions per microframe (`usb_endpoint_maxp_mult`).
    pub fn mult(&self) -> u8 {
        ((self.max_packet_size >> 11) & 3) as u8 + 1
    }
    /// The 9 bytes USB_RAW_IOCTL_EP_ENABLE copies (`struct usb_endpoint_descriptor`, spec
    /// §1.3): the descriptor with `bLength` 7 or 9, then `bRefresh`/`bSynchAddress` (0 for a
    /// 7-byte descriptor).
    pub fn to_ioctl_bytes(&self) -> [u8; 9] {
        let mut b = [0u8; 9];
        self.emit(&mut b);
        b
    }
}

impl Repr for EndpointDescriptor {
    fn parse(bytes: &[u8]) -> Result<Self> {
        let len = check_header(
            bytes,
            USB_DT_ENDPOINT,
            USB_DT_ENDPOINT_SIZE,
            USB_DT_ENDPOINT_AUDIO_SIZE,
        )?;
        if len == 8 {
            return Err(crate::Error::BadLength { length: 8 });
        }
        let v = EndpointView::new_unchecked(bytes);
        Ok(EndpointDescriptor {
            address: v.address(),
            attributes: v.attributes(),
            max_packet_size: v.max_packet_size(),
            interval: v.interval(),
            audio: (len == 9).then(|| AudioEndpointExtension {
                refresh: v.refresh(),
                synch_address: v.synch_address(),
            }),
        })
    }
    fn buffer_len(&self) -> usize {
        if self.audio.is_some() {
            USB_DT_ENDPOINT_AUDIO_SIZE as usize
        } else {
            USB_DT_ENDPOINT_SIZE as usize
        }
    }
    fn emit(&self, buf: &mut [u8]) {
        let len = self.buffer_len();
        let b = &mut buf[..len];
        b[0] = len as u8;
        b[1] = USB_DT_ENDPOINT;
        b[2] = self.address.0;
        b[3] = self.attributes;
        b[4..6].copy_from_slice(&self.max_packet_size.to_le_bytes());
        b[6] = self.interval;
        if let Some(a) = self.audio {
            b[7] = a.refresh;
            b[8] = a.synch_address;
        }
    }
}

impl Lsusb for EndpointDescriptor {
    fn fmt_lsusb(&self, out: &mut dyn fmt::Write, indent: usize) -> fmt::Result {
        let mut b = Block::new(out, indent, "Endpoint Descriptor")?;
        b.field("bLength", self.buffer_len())?;
        b.field("bDescriptorType", USB_DT_ENDPOINT)?;
        b.field_note(
            "bEndpointAddress",
            X2(self.address.0),
            format_args!(" EP {} {}", self.number(), self.direction().as_str()),
        )?;
        b.field("bmAttributes", self.attributes)?;
        b.note(format_args!(
            "Transfer Type            {}",
            self.transfer_type().as_str()
        ))?;
        if self.transfer_type() == TransferType::Isochronous {
            let sync = ["None", "Asynchronous", "Adaptive", "Synchronous"];
            let usage = ["Data", "Feedback", "Implicit feedback Data", "(reserved)"];
            b.note(format_args!(
                "Synch Type               {}",
                sync[(self.attributes >> 2 & 3) as usize]
            ))?;
            b.note(format_args!(
                "Usage Type               {}",
                usage[(self.attributes >> 4 & 3) as usize]
            ))?;
        }
        b.field_note(
            "wMaxPacketSize",
            X4(self.max_packet_size),
            format_args!(" {}x {} bytes", self.mult(), self.max_packet()),
        )?;
        b.field("bInterval", self.interval)?;
        if let Some(a) = self.audio {
            b.field("bRefresh", a.refresh)?;
            b.field("bSynchAddress", X2(a.synch_address))?;
        }
        Ok(())
    }
}

impl fmt::Display for EndpointDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_lsusb(f, 0)
    }
}

view! {
    /// A view over a SuperSpeed endpoint companion descriptor (6 bytes).
    #[doc(alias = "usb_ss_ep_comp_descriptor")]
    SsEndpointCompanionView, type = USB_DT_SS_ENDPOINT_COMP,
        min = USB_DT_SS_EP_COMP_SIZE, max = USB_DT_SS_EP_COMP_SIZE;
    #[doc(alias = "bMaxBurst")]
    max_burst: u8 = field::MAX_BURST;
    #[doc(alias = "bmAttributes")]
    attributes: u8 = field::SS_ATTRIBUTES;
    #[doc(alias = "wBytesPerInterval")]
    bytes_per_interval: u16 = field::BYTES_PER_INTERVAL;
}

/// A SuperSpeed endpoint companion descriptor (follows each endpoint at SuperSpeed).
#[doc(alias = "usb_ss_ep_comp_descriptor")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct SsEndpointCompanionDescriptor {
    /// Packets per burst minus one (0..=15).
    #[doc(alias = "bMaxBurst")]
    pub max_burst: u8,
    /// Bulk: max streams exponent (bits 4..0); isochronous: mult (bits 1..0).
    #[doc(alias = "bmAttributes")]
    pub attributes: u8,
    /// Periodic endpoints: bytes per service interval.
    #[doc(alias = "wBytesPerInterval")]
    pub bytes_per_interval: u16,
}

impl Repr for SsEndpointCompanionDescriptor {
    fn parse(bytes: &[u8]) -> Result<Self> {
        let n = USB_DT_SS_EP_COMP_SIZE;
        check_header(bytes, USB_DT_SS_ENDPOINT_COMP, n, n)?;
        let v = SsEndpointCompanionView::new_unchecked(bytes);
        Ok(SsEndpointCompanionDescriptor {
            max_burst: v.max_burst(),
            attributes: v.attributes(),
            bytes_per_interval: v.bytes_per_interval(),
        })
    }
    fn buffer_len(&self) -> usize {
        USB_DT_SS_EP_COMP_SIZE as usize
    }
    fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..USB_DT_SS_EP_COMP_SIZE as usize];
        b[0] = USB_DT_SS_EP_COMP_SIZE;
        b[1] = USB_DT_SS_ENDPOINT_COMP;
        b[2] = self.max_burst;
        b[3] = self.attributes;
        b[4..6].copy_from_slice(&self.bytes_per_interval.to_le_bytes());
    }
}

impl Lsusb for SsEndpointCompanionDescriptor {
    fn fmt_lsusb(&self, out: &mut dyn fmt::Write, indent: usize) -> fmt::Result {
        let mut b = Block::new(out, indent, "SuperSpeed Endpoint Companion Descriptor")?;
        b.field("bLength", USB_DT_SS_EP_COMP_SIZE)?;
        b.field("bDescriptorType", USB_DT_SS_ENDPOINT_COMP)?;
        b.field("bMaxBurst", self.max_burst)?;
        b.field("bmAttributes", X2(self.attributes))?;
        b.field("wBytesPerInterval", self.bytes_per_interval)
    }
}

impl fmt::Display for SsEndpointCompanionDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_lsusb(f, 0)
    }
}
