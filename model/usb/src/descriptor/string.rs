//! String descriptors (USB 2.0 §9.6.7): UTF-16LE text, and string 0 = the language ID table.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::types::USB_DT_STRING;
use super::{Block, Lsusb, X4};
use crate::wire::{check_header, view, Error, Repr, Result};

/// Language ID of US English, the one every host asks for first.
pub const LANG_ID_EN_US: u16 = 0x0409;
/// Most UTF-16 units one descriptor holds: (255 - 2) / 2.
pub const STRING_MAX_UNITS: usize = 126;

view! {
    /// A view over a string descriptor: `bLength`, `bDescriptorType`, then `bString`.
    StringView, type = USB_DT_STRING, min = 2, max = 255;
}

impl<T: AsRef<[u8]>> StringView<T> {
    /// The UTF-16 code units of `bString` (a trailing odd byte is ignored).
    pub fn units(&self) -> impl Iterator<Item = u16> + '_ {
        self.as_bytes()
            .get(2..)
            .unwrap_or(&[])
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    }
    /// The text, invalid UTF-16 replaced by U+FFFD.
    pub fn to_string_lossy(&self) -> String {
        char::decode_utf16(self.units())
            .map(|c| c.unwrap_or('\u{fffd}'))
            .collect()
    }
}

/// A string descriptor as UTF-16 code units (kept as units so unpaired surrogates survive a
/// round trip). The same shape carries string 0, the table of language IDs.
#[derive(Clone, PartialEq, Eq, Debug, Hash, Default)]
pub struct StringDescriptor {
    units: Vec<u16>,
}

impl StringDescriptor {
    /// A descriptor for `text`; fails when it needs more than 126 UTF-16 units.
    pub fn new(text: &str) -> Result<StringDescriptor> {
        StringDescriptor::from_units(text.encode_utf16().collect())
    }
    /// From code units; fails above [`STRING_MAX_UNITS`].
    pub fn from_units(units: Vec<u16>) -> Result<StringDescriptor> {
        if units.len() > STRING_MAX_UNITS {
            return Err(Error::TooLong(
                "string descriptor holds at most 126 UTF-16 units",
            ));
        }
        Ok(StringDescriptor { units })
    }
    /// String 0: the language IDs the device supports.
    pub fn languages(lang_ids: &[u16]) -> Result<StringDescriptor> {
        StringDescriptor::from_units(lang_ids.to_vec())
    }
    pub fn units(&self) -> &[u16] {
        &self.units
    }
    /// Read as string 0: the language IDs.
    pub fn language_ids(&self) -> &[u16] {
        &self.units
    }
    pub fn to_string_lossy(&self) -> String {
        char::decode_utf16(self.units.iter().copied())
            .map(|c| c.unwrap_or('\u{fffd}'))
            .collect()
    }
}

impl Repr for StringDescriptor {
    /// Refuses an odd `bLength` (half a code unit cannot be kept).
    fn parse(bytes: &[u8]) -> Result<Self> {
        let len = check_header(bytes, USB_DT_STRING, 2, 255)?;
        if len % 2 != 0 {
            return Err(Error::Malformed("odd bLength in a string descriptor"));
        }
        let v = StringView::new_unchecked(bytes);
        Ok(StringDescriptor {
            units: v.units().collect(),
        })
    }
    fn buffer_len(&self) -> usize {
        2 + 2 * self.units.len()
    }
    fn emit(&self, buf: &mut [u8]) {
        let len = self.buffer_len();
        let b = &mut buf[..len];
        b[0] = len as u8;
        b[1] = USB_DT_STRING;
        for (i, u) in self.units.iter().enumerate() {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
    }
}

impl Lsusb for StringDescriptor {
    fn fmt_lsusb(&self, out: &mut dyn fmt::Write, indent: usize) -> fmt::Result {
        let mut b = Block::new(out, indent, "String Descriptor")?;
        b.field("bLength", self.buffer_len())?;
        b.field("bDescriptorType", USB_DT_STRING)?;
        b.field_note(
            "bString",
            "",
            format_args!("\"{}\"", self.to_string_lossy().escape_debug()),
        )?;
        // Whether this is string 0 depends on the request, so show units as language IDs too
        // when they look like them (short tables).
        if self.units.len() <= 4 {
            for u in &self.units {
                b.note(format_args!("(as language ID: {})", X4(*u)))?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for StringDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_lsusb(f, 0)
    }
}
