//! The host side's vocabulary: URBs as a host controller driver receives them, and their
//! completions.
//!
//! These are HCD-level objects: the host core's checks (`usb_submit_urb`: a control URB's
//! wLength must equal its buffer length, its direction follows bRequestType) and its result
//! mapping (EREMOTEIO for a short transfer with `URB_SHORT_NOT_OK`, contract U9) belong to the
//! host, not here. The model accepts any combination without panicking, as dummy_hcd would
//! once a URB reached it.

use alloc::vec::Vec;
use rawgadget_uapi::Errno;

/// Identifies one submitted URB; unique per controller.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct UrbId(pub u64);

/// One packet slot of an iso URB (`struct usb_iso_packet_descriptor`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct IsoPacket {
    pub offset: u32,
    pub length: u32,
    pub actual_length: u32,
    /// 0 or a negative errno, as the kernel keeps it.
    pub status: i32,
}

/// The pipe type of a URB, with what each type carries.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum UrbKind {
    /// A control transfer; the 8 bytes of the SETUP stage are part of it.
    Control {
        setup: [u8; 8],
    },
    Bulk,
    Interrupt,
    /// Iso URBs carry their packet layout (contract U15–U16, I6). dummy fails them (D1).
    Isochronous {
        packets: Vec<IsoPacket>,
    },
}

impl UrbKind {
    /// `usb_pipetype` as the usbmon letters: `C`, `B`, `I`, `Z`.
    pub fn letter(&self) -> char {
        match self {
            UrbKind::Control { .. } => 'C',
            UrbKind::Bulk => 'B',
            UrbKind::Interrupt => 'I',
            UrbKind::Isochronous { .. } => 'Z',
        }
    }
}

/// `urb->transfer_flags` bits the controller looks at.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct UrbFlags {
    /// `URB_ZERO_PACKET`: an OUT URB ending on a packet boundary is followed by a ZLP
    /// (contract D11). Ignored on IN.
    pub zero_packet: bool,
    /// `URB_SHORT_NOT_OK`. The controller ignores it; the host core applies it (contract U9).
    pub short_not_ok: bool,
}

/// A URB as submitted to the controller.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Urb {
    /// Endpoint number with the direction bit (`0x81` = ep1 IN). For control URBs the bit is
    /// the data direction the host chose (`usb_submit_urb`: IN iff bRequestType has
    /// USB_DIR_IN and wLength > 0).
    pub endpoint: u8,
    pub kind: UrbKind,
    /// `transfer_buffer`, exactly `transfer_buffer_length` bytes long: the data for OUT, room
    /// for IN.
    pub buffer: Vec<u8>,
    pub flags: UrbFlags,
}

impl Urb {
    /// Whether data moves to the host (`usb_urb_dir_in`).
    pub fn is_in(&self) -> bool {
        self.endpoint & 0x80 != 0
    }
    /// A control URB with its direction derived as `usb_submit_urb` does and a buffer of
    /// wLength bytes (`data` for OUT, zeroes for IN; `data` shorter than wLength is padded).
    pub fn control(setup: [u8; 8], data: &[u8]) -> Urb {
        let w_length = u16::from_le_bytes([setup[6], setup[7]]) as usize;
        let is_in = setup[0] & 0x80 != 0 && w_length > 0;
        let mut buffer = alloc::vec![0u8; w_length];
        if !is_in {
            let n = data.len().min(w_length);
            buffer[..n].copy_from_slice(&data[..n]);
        }
        Urb {
            endpoint: if is_in { 0x80 } else { 0x00 },
            kind: UrbKind::Control { setup },
            buffer,
            flags: UrbFlags::default(),
        }
    }
    /// A bulk URB: `buffer` is the data for an OUT endpoint, or room for an IN one.
    pub fn bulk(endpoint: u8, buffer: Vec<u8>) -> Urb {
        Urb {
            endpoint,
            kind: UrbKind::Bulk,
            buffer,
            flags: UrbFlags::default(),
        }
    }
    /// An interrupt URB, like [`Urb::bulk`].
    pub fn interrupt(endpoint: u8, buffer: Vec<u8>) -> Urb {
        Urb {
            endpoint,
            kind: UrbKind::Interrupt,
            buffer,
            flags: UrbFlags::default(),
        }
    }
}

/// How a URB is unlinked; the host core's status for each (`hcd.c:1727-1729`, contract D26).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Unlink {
    /// `usb_unlink_urb`: status ECONNRESET.
    Async,
    /// `usb_kill_urb`: status ENOENT.
    Kill,
}

impl Unlink {
    pub fn status(self) -> Errno {
        match self {
            Unlink::Async => Errno::ECONNRESET,
            Unlink::Kill => Errno::ENOENT,
        }
    }
}

/// A URB given back by the controller (`usb_hcd_giveback_urb`), before the host core's own
/// result mapping.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UrbCompletion {
    pub id: UrbId,
    pub endpoint: u8,
    /// 0, or EOVERFLOW, EPIPE, EPROTO, EINVAL, ECONNRESET, ENOENT ... (contract D10, D17,
    /// D24–D26).
    pub status: Result<(), Errno>,
    pub actual_length: u32,
    /// The URB's buffer, handed back with its full length. For IN the first `actual_length`
    /// bytes are the data. For OUT the contents are unspecified: the controller may have
    /// swapped it with the gadget's buffer instead of copying.
    pub buffer: Vec<u8>,
    /// Iso packet results (empty for other types).
    pub iso_packets: Vec<IsoPacket>,
}

impl UrbCompletion {
    /// The bytes received (IN) or consumed (OUT: unspecified contents, see `buffer`).
    pub fn data(&self) -> &[u8] {
        let n = (self.actual_length as usize).min(self.buffer.len());
        &self.buffer[..n]
    }
}
