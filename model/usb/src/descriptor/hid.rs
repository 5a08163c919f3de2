//! The HID descriptor (HID 1.11 §6.2.1): found after a HID interface descriptor, it lists the
//! class descriptors (report, physical) the host fetches with GET_DESCRIPTOR to the interface.

use alloc::vec::Vec;
use core::fmt;

use super::types::{HID_DT_HID, HID_DT_PHYSICAL, HID_DT_REPORT};
use super::{Bcd, Block, Lsusb};
use crate::wire::{check_header, view, Error, Field, Repr, Result};

mod field {
    pub const BCD_HID: usize = 2;
    pub const COUNTRY_CODE: usize = 4;
    pub const NUM_DESCRIPTORS: usize = 5;
    /// First (bDescriptorType, wDescriptorLength) pair; each pair is 3 bytes.
    pub const DESCRIPTORS: usize = 6;
}

view! {
    /// A view over a HID descriptor (6 bytes + 3 per class descriptor).
    #[doc(alias = "hid_descriptor")]
    HidView, type = HID_DT_HID, min = 6, max = 255;
    #[doc(alias = "bcdHID")]
    hid_version: u16 = field::BCD_HID;
    #[doc(alias = "bCountryCode")]
    country_code: u8 = field::COUNTRY_CODE;
    #[doc(alias = "bNumDescriptors")]
    num_descriptors: u8 = field::NUM_DESCRIPTORS;
}

impl<T: AsRef<[u8]>> HidView<T> {
    /// The (type, length) pairs that fit in `bLength`, whatever `bNumDescriptors` says.
    pub fn class_descriptors(&self) -> impl Iterator<Item = HidClassDescriptor> + '_ {
        let bytes = self.as_bytes();
        bytes
            .get(field::DESCRIPTORS..)
            .unwrap_or(&[])
            .chunks_exact(3)
            .map(|c| HidClassDescriptor {
                descriptor_type: c[0],
                length: u16::read(c, 1),
            })
    }
}

/// Class descriptors one HID descriptor can list: (255 - 6) / 3.
pub const HID_MAX_CLASS_DESCRIPTORS: usize = 83;

/// One entry of a HID descriptor's list.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct HidClassDescriptor {
    /// [`HID_DT_REPORT`] or [`HID_DT_PHYSICAL`].
    #[doc(alias = "bDescriptorType")]
    pub descriptor_type: u8,
    #[doc(alias = "wDescriptorLength")]
    pub length: u16,
}

/// A HID descriptor.
#[doc(alias = "hid_descriptor")]
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct HidDescriptor {
    /// `bcdHID`, e.g. 0x0111.
    #[doc(alias = "bcdHID")]
    pub hid_version: u16,
    /// 0 = not localized.
    #[doc(alias = "bCountryCode")]
    pub country_code: u8,
    /// Usually one report descriptor; at most 83 fit in 255 bytes.
    pub descriptors: Vec<HidClassDescriptor>,
}

impl HidDescriptor {
    /// HID 1.11, not localized, one report descriptor of `report_len` bytes.
    pub fn with_report(report_len: u16) -> HidDescriptor {
        HidDescriptor {
            hid_version: 0x0111,
            country_code: 0,
            descriptors: alloc::vec![HidClassDescriptor {
                descriptor_type: HID_DT_REPORT,
                length: report_len,
            }],
        }
    }
    /// Length of the report descriptor, if listed.
    pub fn report_length(&self) -> Option<u16> {
        self.descriptors
            .iter()
            .find(|d| d.descriptor_type == HID_DT_REPORT)
            .map(|d| d.length)
    }
}

impl Repr for HidDescriptor {
    /// Requires `bLength == 6 + 3 * bNumDescriptors`.
    fn parse(bytes: &[u8]) -> Result<Self> {
        let len = check_header(bytes, HID_DT_HID, 6, 255)?;
        let v = HidView::new_unchecked(bytes);
        if len != 6 + 3 * v.num_descriptors() as usize {
            return Err(Error::Malformed(
                "HID bLength does not match bNumDescriptors",
            ));
        }
        Ok(HidDescriptor {
            hid_version: v.hid_version(),
            country_code: v.country_code(),
            descriptors: v.class_descriptors().collect(),
        })
    }
    /// At most [`HID_MAX_CLASS_DESCRIPTORS`] entries fit in `bLength`; further ones are not
    /// emitted (parse never yields more).
    fn buffer_len(&self) -> usize {
        6 + 3 * self.descriptors.len().min(HID_MAX_CLASS_DESCRIPTORS)
    }
    fn emit(&self, buf: &mut [u8]) {
        let len = self.buffer_len();
        let n = self.descriptors.len().min(HID_MAX_CLASS_DESCRIPTORS);
        let b = &mut buf[..len];
        b[0] = len as u8;
        b[1] = HID_DT_HID;
        b[2..4].copy_from_slice(&self.hid_version.to_le_bytes());
        b[4] = self.country_code;
        b[5] = n as u8;
        for (i, d) in self.descriptors.iter().take(n).enumerate() {
            let o = field::DESCRIPTORS + 3 * i;
            b[o] = d.descriptor_type;
            b[o + 1..o + 3].copy_from_slice(&d.length.to_le_bytes());
        }
    }
}

impl Lsusb for HidDescriptor {
    fn fmt_lsusb(&self, out: &mut dyn fmt::Write, indent: usize) -> fmt::Result {
        let mut b = Block::new(out, indent, "HID Device Descriptor")?;
        b.field("bLength", self.buffer_len())?;
        b.field("bDescriptorType", HID_DT_HID)?;
        b.field("bcdHID", Bcd(self.hid_version))?;
        b.field_note(
            "bCountryCode",
            self.country_code,
            if self.country_code == 0 {
                "Not supported"
            } else {
                ""
            },
        )?;
        b.field("bNumDescriptors", self.descriptors.len())?;
        for d in &self.descriptors {
            let name = match d.descriptor_type {
                HID_DT_REPORT => "Report",
                HID_DT_PHYSICAL => "Physical",
                _ => "",
            };
            b.field_note("bDescriptorType", d.descriptor_type, name)?;
            b.field("wDescriptorLength", d.length)?;
        }
        Ok(())
    }
}

impl fmt::Display for HidDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_lsusb(f, 0)
    }
}
