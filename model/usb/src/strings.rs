//! A device's string table: what to answer to GET_DESCRIPTOR(STRING, index, language).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use crate::descriptor::{types::USB_DT_STRING, StringDescriptor, LANG_ID_EN_US};
use crate::setup::{ControlRequest, StandardRequest};
use crate::wire::{Error, Repr, Result};

/// Strings by index (1..=255) for a list of languages (default: US English only).
///
/// Index 0 is the language table. A request for another language than the listed ones gets no
/// answer (the device stalls), as Linux's composite driver does for unknown languages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StringTable {
    languages: Vec<u16>,
    strings: BTreeMap<u8, String>,
}

impl Default for StringTable {
    fn default() -> Self {
        StringTable::new()
    }
}

impl StringTable {
    /// An empty table for language 0x0409.
    pub fn new() -> StringTable {
        StringTable {
            languages: alloc::vec![LANG_ID_EN_US],
            strings: BTreeMap::new(),
        }
    }
    /// An empty table for these languages (the same strings serve each of them); at most
    /// 126 languages fit in string descriptor 0.
    pub fn with_languages(languages: &[u16]) -> Result<StringTable> {
        if languages.len() > crate::descriptor::STRING_MAX_UNITS {
            return Err(Error::TooLong(
                "at most 126 language IDs fit in string descriptor 0",
            ));
        }
        Ok(StringTable {
            languages: languages.to_vec(),
            strings: BTreeMap::new(),
        })
    }
    pub fn languages(&self) -> &[u16] {
        &self.languages
    }
    /// Adds a string at the lowest free index and returns it (for `iProduct`, `iInterface`,
    /// ...). Fails when all 255 indexes are taken or the string exceeds 126 UTF-16 units.
    pub fn add(&mut self, text: &str) -> Result<u8> {
        let index = (1..=255u8)
            .find(|i| !self.strings.contains_key(i))
            .ok_or(Error::TooLong("all 255 string indexes are in use"))?;
        self.set(index, text)?;
        Ok(index)
    }
    /// Puts a string at `index` (1..=255), replacing what was there.
    pub fn set(&mut self, index: u8, text: &str) -> Result<()> {
        if index == 0 {
            return Err(Error::Malformed("string index 0 is the language table"));
        }
        StringDescriptor::new(text)?;
        self.strings.insert(index, text.into());
        Ok(())
    }
    pub fn get(&self, index: u8) -> Option<&str> {
        self.strings.get(&index).map(|s| s.as_str())
    }
    /// The full descriptor for string `index` in `language`: the language table for index 0
    /// (any language), `None` for an unknown index or language.
    pub fn descriptor(&self, index: u8, language: u16) -> Option<Vec<u8>> {
        let d = if index == 0 {
            StringDescriptor::languages(&self.languages).ok()?
        } else {
            if !self.languages.contains(&language) {
                return None;
            }
            StringDescriptor::new(self.strings.get(&index)?).ok()?
        };
        Some(d.to_vec())
    }
    /// The data stage for a GET_DESCRIPTOR(STRING) request, cut to `wLength`; `None` when the
    /// request is something else or asks for a string this table does not have.
    pub fn answer(&self, request: &ControlRequest) -> Option<Vec<u8>> {
        match request.standard() {
            StandardRequest::GetDescriptor {
                descriptor_type: USB_DT_STRING,
                index,
                language,
                length,
                ..
            } => {
                let mut d = self.descriptor(index, language)?;
                d.truncate(length as usize);
                Some(d)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get_string(index: u8, lang: u16, length: u16) -> ControlRequest {
        ControlRequest {
            request_type: 0x80,
            request: 0x06,
            value: 0x0300 | index as u16,
            index: lang,
            length,
        }
    }

    #[test]
    fn string_zero_is_the_language_table() {
        let t = StringTable::new();
        // bLength 4, STRING, 0x0409 little-endian.
        assert_eq!(
            t.answer(&get_string(0, 0, 255)),
            Some(alloc::vec![4, 3, 0x09, 0x04])
        );
    }

    #[test]
    fn strings_answer_in_utf16le_cut_to_wlength() {
        let mut t = StringTable::new();
        let i = t.add("Zé").unwrap();
        assert_eq!(i, 1);
        assert_eq!(t.add("x").unwrap(), 2);
        let full = alloc::vec![6, 3, b'Z', 0, 0xe9, 0];
        assert_eq!(t.answer(&get_string(1, 0x0409, 255)), Some(full));
        // Linux first reads 2 bytes... or 255; either way never more than wLength.
        assert_eq!(t.answer(&get_string(1, 0x0409, 2)), Some(alloc::vec![6, 3]));
        assert_eq!(t.get(2), Some("x"));
    }

    #[test]
    fn unknown_index_or_language_gets_no_answer() {
        let mut t = StringTable::new();
        t.add("a").unwrap();
        assert_eq!(t.answer(&get_string(9, 0x0409, 255)), None);
        assert_eq!(t.answer(&get_string(1, 0x0407, 255)), None);
        // Not a GET_DESCRIPTOR(STRING).
        let mut r = get_string(1, 0x0409, 255);
        r.value = 0x0100;
        assert_eq!(t.answer(&r), None);
    }

    #[test]
    fn overlong_and_index_zero_are_errors() {
        let mut t = StringTable::new();
        let long: String = "a".repeat(127);
        assert!(matches!(t.add(&long), Err(Error::TooLong(_))));
        assert!(t.add(&long[..126]).is_ok());
        assert!(matches!(t.set(0, "x"), Err(Error::Malformed(_))));
        for _ in 0..254 {
            t.add("y").unwrap();
        }
        assert!(matches!(t.add("z"), Err(Error::TooLong(_))));
    }
}
