//! Whole PDUs as the device receives them: a CMD_SUBMIT with what follows its header, or a
//! CMD_UNLINK.

use alloc::vec::Vec;
use core::fmt;

use super::{CmdSubmitRepr, CmdUnlinkRepr, Header, IsoPacketDescriptor};
use crate::{USBIP_HEADER_LEN, USBIP_ISO_PACKET_LEN};

/// One URB from the host: header, OUT data (`transfer_buffer_length` bytes, empty for IN) and the
/// iso packet descriptors (`number_of_packets` of them, none for non-iso), contract U12.
///
/// The decoder only produces consistent values. Fields are public so that a driver can move
/// `data` out; [`CmdSubmit::is_consistent`] says whether a hand-built value frames correctly.
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct CmdSubmit {
    pub header: CmdSubmitRepr,
    /// OUT: exactly `transfer_buffer_length` bytes (for iso, the whole buffer with the gaps
    /// between packets, as `vhci_tx.c:104-120` sends it). IN: empty.
    pub data: Vec<u8>,
    /// As submitted: `offset` and `length` of each packet, which the reply echoes (U16).
    pub iso_packets: Vec<IsoPacketDescriptor>,
}

impl CmdSubmit {
    /// Whether `data` and `iso_packets` have the sizes the header announces.
    pub fn is_consistent(&self) -> bool {
        self.data.len() == self.header.out_data_len()
            && self.iso_packets.len() == self.header.iso_packet_count() as usize
    }

    pub fn buffer_len(&self) -> usize {
        USBIP_HEADER_LEN + self.data.len() + self.iso_packets.len() * USBIP_ISO_PACKET_LEN
    }

    /// Writes header, data and descriptors as they are. Panics if `buf` is shorter than
    /// `buffer_len()`.
    pub fn emit(&self, buf: &mut [u8]) {
        let buf = &mut buf[..self.buffer_len()];
        let (head, rest) = buf.split_at_mut(USBIP_HEADER_LEN);
        self.header.emit(&mut Header::new_unchecked(head));
        let (data, iso) = rest.split_at_mut(self.data.len());
        data.copy_from_slice(&self.data);
        IsoPacketDescriptor::emit_all(&self.iso_packets, iso);
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut buf = alloc::vec![0; self.buffer_len()];
        self.emit(&mut buf);
        buf
    }
}

impl fmt::Display for CmdSubmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} data={}B", self.header, self.data.len())?;
        for p in &self.iso_packets {
            write!(f, " [{p}]")?;
        }
        Ok(())
    }
}

/// A PDU the device side receives once the connection is in URB mode.
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub enum DevicePdu {
    Submit(CmdSubmit),
    Unlink(CmdUnlinkRepr),
}

impl DevicePdu {
    pub fn buffer_len(&self) -> usize {
        match self {
            DevicePdu::Submit(s) => s.buffer_len(),
            DevicePdu::Unlink(u) => u.buffer_len(),
        }
    }

    /// Panics if `buf` is shorter than `buffer_len()`.
    pub fn emit(&self, buf: &mut [u8]) {
        match self {
            DevicePdu::Submit(s) => s.emit(buf),
            DevicePdu::Unlink(u) => u.emit(&mut Header::new_unchecked(buf)),
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut buf = alloc::vec![0; self.buffer_len()];
        self.emit(&mut buf);
        buf
    }

    pub fn seqnum(&self) -> u32 {
        match self {
            DevicePdu::Submit(s) => s.header.seqnum,
            DevicePdu::Unlink(u) => u.seqnum,
        }
    }
}

impl fmt::Display for DevicePdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DevicePdu::Submit(s) => s.fmt(f),
            DevicePdu::Unlink(u) => u.fmt(f),
        }
    }
}
