//! USB/IP bytes: views and reprs.
//!
//! The contract, as in smoltcp's `wire`: a view (`Header<T>`, `IsoPacket<T>`, `OpHeader<T>`,
//! `UsbDeviceRecord<T>`) wraps any `AsRef<[u8]>`, `new_checked` verifies the length its accessors
//! need, and accessors never panic (a field past the end of a short buffer reads as 0). A repr is
//! the validated meaning: `parse` never panics and returns [`crate::Error`] for anything it
//! cannot accept, `emit` writes exactly `buffer_len()` bytes and panics only if the buffer is
//! shorter than that. `parse(emit(repr)) == repr` for every repr (tested by property).
//!
//! All integers are big-endian (network order), as `usbip_header_correct_endian` and
//! `usbip_net_pack_*` write them. Field offsets live in a private `mod field` per file.

mod header;
mod iso;
mod op;
mod pdu;

pub use header::{
    CmdSubmitRepr, CmdUnlinkRepr, Command, Direction, Header, HeaderRepr, RetSubmitRepr,
    RetUnlinkRepr, NUMBER_OF_PACKETS_NON_ISO,
};
pub use iso::{IsoPacket, IsoPacketDescriptor};
pub use op::{
    BusId, ExportedDevice, FixedStr, OpCode, OpHeader, OpRepDevlist, OpRepImport, OpRequest,
    OpStatus, SysfsPath, UsbDevice, UsbDeviceRecord, UsbInterface, DEVICE_RECORD_LEN,
    INTERFACE_RECORD_LEN, OP_HEADER_LEN, OP_REQ_IMPORT_LEN,
};
pub use pdu::{CmdSubmit, DevicePdu};

use core::ops::Range;

/// A field's byte range inside its message.
pub(crate) type Field = Range<usize>;

/// The big-endian `u32` at `field`, or 0 if `buf` is too short.
pub(crate) fn read_u32(buf: &[u8], field: Field) -> u32 {
    match buf.get(field).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
        Some(b) => u32::from_be_bytes(b),
        None => 0,
    }
}

/// The big-endian `u16` at `field`, or 0 if `buf` is too short.
pub(crate) fn read_u16(buf: &[u8], field: Field) -> u16 {
    match buf.get(field).and_then(|b| <[u8; 2]>::try_from(b).ok()) {
        Some(b) => u16::from_be_bytes(b),
        None => 0,
    }
}

/// The byte at `offset`, or 0 if `buf` is too short.
pub(crate) fn read_u8(buf: &[u8], offset: usize) -> u8 {
    buf.get(offset).copied().unwrap_or(0)
}

/// Writes a big-endian `u32`. Panics if `buf` is too short (the `emit` contract).
pub(crate) fn write_u32(buf: &mut [u8], field: Field, value: u32) {
    buf[field].copy_from_slice(&value.to_be_bytes());
}

/// Writes a big-endian `u16`. Panics if `buf` is too short (the `emit` contract).
pub(crate) fn write_u16(buf: &mut [u8], field: Field, value: u16) {
    buf[field].copy_from_slice(&value.to_be_bytes());
}

/// `Err(Truncated)` unless `buf` holds `need` bytes.
pub(crate) fn check_len(buf: &[u8], need: usize) -> Result<(), crate::Error> {
    if buf.len() < need {
        Err(crate::Error::Truncated {
            need,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}
