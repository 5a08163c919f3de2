//! Binary device Object Store (USB 3.2 §9.6.2) and device capability descriptors.
//!
//! The BOS header is its own repr, like the configuration header: the capabilities that follow
//! it are walked with [`crate::Descriptors`] and parsed one by one as [`DeviceCapability`].
//! USB 2.0 extension and SuperSpeed USB capabilities are typed; every other capability is kept
//! as raw bytes.

use alloc::vec::Vec;
use core::fmt;

use super::sizes::*;
use super::types::*;
use super::{Block, Descriptors, Lsusb, X2, X4};
use crate::wire::{check_header, view, Error, Field, Hex, Repr, Result};

/// `bDevCapabilityType` values (USB 3.2 table 9-14).
pub mod capability {
    pub const USB_CAP_TYPE_WIRELESS_USB: u8 = 0x01;
    pub const USB_CAP_TYPE_EXT: u8 = 0x02;
    pub const USB_SS_CAP_TYPE: u8 = 0x03;
    pub const CONTAINER_ID_TYPE: u8 = 0x04;
    pub const USB_PLAT_DEV_CAP_TYPE: u8 = 0x05;
    pub const USB_SSP_CAP_TYPE: u8 = 0x0a;
    /// USB 2.0 extension `bmAttributes`: Link Power Management supported.
    pub const USB_LPM_SUPPORT: u32 = 1 << 1;
    /// USB 2.0 extension `bmAttributes`: BESL values valid.
    pub const USB_BESL_SUPPORT: u32 = 1 << 2;
    /// SuperSpeed `wSpeedSupported` bits.
    pub const USB_LOW_SPEED_OPERATION: u16 = 1;
    pub const USB_FULL_SPEED_OPERATION: u16 = 1 << 1;
    pub const USB_HIGH_SPEED_OPERATION: u16 = 1 << 2;
    pub const USB_5GBPS_OPERATION: u16 = 1 << 3;
}

use capability::*;

mod field {
    pub const TOTAL_LENGTH: usize = 2;
    pub const NUM_DEVICE_CAPS: usize = 4;
    pub const CAPABILITY_TYPE: usize = 2;
    pub const EXT_ATTRIBUTES: usize = 3;
    pub const SS_ATTRIBUTES: usize = 3;
    pub const SS_SPEEDS: usize = 4;
    pub const SS_FUNCTIONALITY: usize = 6;
    pub const SS_U1_EXIT: usize = 7;
    pub const SS_U2_EXIT: usize = 8;
}

view! {
    /// A view over a BOS descriptor and, when the buffer holds them, its capabilities.
    #[doc(alias = "usb_bos_descriptor")]
    BosView, type = USB_DT_BOS, min = USB_DT_BOS_SIZE, max = 255;
    #[doc(alias = "wTotalLength")]
    total_length: u16 = field::TOTAL_LENGTH;
    #[doc(alias = "bNumDeviceCaps")]
    num_device_caps: u8 = field::NUM_DEVICE_CAPS;
}

impl<T: AsRef<[u8]>> BosView<T> {
    /// Walks the first `wTotalLength` bytes (or the buffer when shorter), the header first.
    pub fn descriptors(&self) -> Descriptors<'_> {
        let buf = self.buffer.as_ref();
        Descriptors::new(&buf[..(self.total_length() as usize).min(buf.len())])
    }
}

/// The 5-byte BOS header.
#[doc(alias = "usb_bos_descriptor")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct BosDescriptor {
    #[doc(alias = "wTotalLength")]
    pub total_length: u16,
    #[doc(alias = "bNumDeviceCaps")]
    pub num_device_caps: u8,
}

impl Repr for BosDescriptor {
    fn parse(bytes: &[u8]) -> Result<Self> {
        check_header(bytes, USB_DT_BOS, USB_DT_BOS_SIZE, USB_DT_BOS_SIZE)?;
        let v = BosView::new_unchecked(bytes);
        Ok(BosDescriptor {
            total_length: v.total_length(),
            num_device_caps: v.num_device_caps(),
        })
    }
    fn buffer_len(&self) -> usize {
        USB_DT_BOS_SIZE as usize
    }
    fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..USB_DT_BOS_SIZE as usize];
        b[0] = USB_DT_BOS_SIZE;
        b[1] = USB_DT_BOS;
        b[2..4].copy_from_slice(&self.total_length.to_le_bytes());
        b[4] = self.num_device_caps;
    }
}

impl Lsusb for BosDescriptor {
    fn fmt_lsusb(&self, out: &mut dyn fmt::Write, indent: usize) -> fmt::Result {
        let mut b = Block::new(out, indent, "Binary Object Store Descriptor")?;
        b.field("bLength", USB_DT_BOS_SIZE)?;
        b.field("bDescriptorType", USB_DT_BOS)?;
        b.field("wTotalLength", X4(self.total_length))?;
        b.field("bNumDeviceCaps", self.num_device_caps)
    }
}

impl fmt::Display for BosDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_lsusb(f, 0)
    }
}

/// The SuperSpeed USB device capability (10 bytes).
#[doc(alias = "usb_ss_cap_descriptor")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct SuperSpeedUsbCapability {
    /// Bit 1: Latency Tolerance Messages supported.
    #[doc(alias = "bmAttributes")]
    pub attributes: u8,
    #[doc(alias = "wSpeedSupported")]
    pub speeds_supported: u16,
    /// Lowest speed with full functionality (0 low, 1 full, 2 high, 3 SuperSpeed).
    #[doc(alias = "bFunctionalitySupport")]
    pub functionality_support: u8,
    /// U1 exit latency, µs (≤ 0x0a).
    #[doc(alias = "bU1devExitLat")]
    pub u1_exit_latency: u8,
    /// U2 exit latency, µs (≤ 0x07ff).
    #[doc(alias = "bU2DevExitLat")]
    pub u2_exit_latency: u16,
}

impl SuperSpeedUsbCapability {
    /// What Linux's composite driver advertises for a SuperSpeed gadget whose UDC has no
    /// `get_config_params` (`bos_desc()` in drivers/usb/gadget/composite.c): no LTM, low to
    /// 5 Gbps, full functionality from `bFunctionalitySupport` 1, U1 exit 0x01 µs, U2 exit
    /// 0x1f4 µs (`USB_DEFAULT_U{1,2}_DEV_EXIT_LAT`).
    pub fn linux_default() -> SuperSpeedUsbCapability {
        SuperSpeedUsbCapability {
            attributes: 0,
            speeds_supported: USB_LOW_SPEED_OPERATION
                | USB_FULL_SPEED_OPERATION
                | USB_HIGH_SPEED_OPERATION
                | USB_5GBPS_OPERATION,
            functionality_support: 1,
            u1_exit_latency: 0x01,
            u2_exit_latency: 0x01f4,
        }
    }
}

/// A device capability descriptor from a BOS.
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub enum DeviceCapability {
    /// USB 2.0 extension (7 bytes): `bmAttributes` (LPM bits).
    #[doc(alias = "usb_ext_cap_descriptor")]
    Usb20Extension {
        attributes: u32,
    },
    SuperSpeedUsb(SuperSpeedUsbCapability),
    /// Any other capability, bytes after `bDevCapabilityType` kept as sent.
    Other {
        capability_type: u8,
        data: Vec<u8>,
    },
}

impl DeviceCapability {
    #[doc(alias = "bDevCapabilityType")]
    pub fn capability_type(&self) -> u8 {
        match self {
            DeviceCapability::Usb20Extension { .. } => USB_CAP_TYPE_EXT,
            DeviceCapability::SuperSpeedUsb(_) => USB_SS_CAP_TYPE,
            DeviceCapability::Other {
                capability_type, ..
            } => *capability_type,
        }
    }
}

impl Repr for DeviceCapability {
    /// USB 2.0 extension must be 7 bytes and SuperSpeed 10; other types take any `bLength`
    /// from 3. `Other` is never produced for types 2 and 3.
    fn parse(bytes: &[u8]) -> Result<Self> {
        let len = check_header(bytes, USB_DT_DEVICE_CAPABILITY, 3, 255)?;
        let b = &bytes[..len];
        Ok(match b[field::CAPABILITY_TYPE] {
            USB_CAP_TYPE_EXT => {
                if len != USB_DT_USB_EXT_CAP_SIZE as usize {
                    return Err(Error::BadLength { length: len as u8 });
                }
                DeviceCapability::Usb20Extension {
                    attributes: u32::read(b, field::EXT_ATTRIBUTES),
                }
            }
            USB_SS_CAP_TYPE => {
                if len != USB_DT_USB_SS_CAP_SIZE as usize {
                    return Err(Error::BadLength { length: len as u8 });
                }
                DeviceCapability::SuperSpeedUsb(SuperSpeedUsbCapability {
                    attributes: u8::read(b, field::SS_ATTRIBUTES),
                    speeds_supported: u16::read(b, field::SS_SPEEDS),
                    functionality_support: u8::read(b, field::SS_FUNCTIONALITY),
                    u1_exit_latency: u8::read(b, field::SS_U1_EXIT),
                    u2_exit_latency: u16::read(b, field::SS_U2_EXIT),
                })
            }
            ty => DeviceCapability::Other {
                capability_type: ty,
                data: b[3..].to_vec(),
            },
        })
    }
    /// `Other` with more than 252 data bytes emits only the first 252.
    fn buffer_len(&self) -> usize {
        match self {
            DeviceCapability::Usb20Extension { .. } => USB_DT_USB_EXT_CAP_SIZE as usize,
            DeviceCapability::SuperSpeedUsb(_) => USB_DT_USB_SS_CAP_SIZE as usize,
            DeviceCapability::Other { data, .. } => 3 + data.len().min(252),
        }
    }
    fn emit(&self, buf: &mut [u8]) {
        let len = self.buffer_len();
        let b = &mut buf[..len];
        b[0] = len as u8;
        b[1] = USB_DT_DEVICE_CAPABILITY;
        b[2] = self.capability_type();
        match self {
            DeviceCapability::Usb20Extension { attributes } => {
                b[3..7].copy_from_slice(&attributes.to_le_bytes());
            }
            DeviceCapability::SuperSpeedUsb(ss) => {
                b[3] = ss.attributes;
                b[4..6].copy_from_slice(&ss.speeds_supported.to_le_bytes());
                b[6] = ss.functionality_support;
                b[7] = ss.u1_exit_latency;
                b[8..10].copy_from_slice(&ss.u2_exit_latency.to_le_bytes());
            }
            DeviceCapability::Other { data, .. } => {
                b[3..].copy_from_slice(&data[..len - 3]);
            }
        }
    }
}

impl Lsusb for DeviceCapability {
    fn fmt_lsusb(&self, out: &mut dyn fmt::Write, indent: usize) -> fmt::Result {
        match self {
            DeviceCapability::Usb20Extension { attributes } => {
                let mut b = Block::new(out, indent, "USB 2.0 Extension Device Capability")?;
                b.field("bLength", USB_DT_USB_EXT_CAP_SIZE)?;
                b.field("bDescriptorType", USB_DT_DEVICE_CAPABILITY)?;
                b.field("bDevCapabilityType", USB_CAP_TYPE_EXT)?;
                b.field("bmAttributes", alloc::format!("0x{attributes:08x}"))?;
                if attributes & USB_LPM_SUPPORT != 0 {
                    b.note("Link Power Management (LPM) Supported")?;
                }
                Ok(())
            }
            DeviceCapability::SuperSpeedUsb(ss) => {
                let mut b = Block::new(out, indent, "SuperSpeed USB Device Capability")?;
                b.field("bLength", USB_DT_USB_SS_CAP_SIZE)?;
                b.field("bDescriptorType", USB_DT_DEVICE_CAPABILITY)?;
                b.field("bDevCapabilityType", USB_SS_CAP_TYPE)?;
                b.field("bmAttributes", X2(ss.attributes))?;
                b.field("wSpeedsSupported", X4(ss.speeds_supported))?;
                for (bit, name) in [
                    (
                        USB_LOW_SPEED_OPERATION,
                        "Device can operate at Low Speed (1Mbps)",
                    ),
                    (
                        USB_FULL_SPEED_OPERATION,
                        "Device can operate at Full Speed (12Mbps)",
                    ),
                    (
                        USB_HIGH_SPEED_OPERATION,
                        "Device can operate at High Speed (480Mbps)",
                    ),
                    (
                        USB_5GBPS_OPERATION,
                        "Device can operate at SuperSpeed (5Gbps)",
                    ),
                ] {
                    if ss.speeds_supported & bit != 0 {
                        b.note(name)?;
                    }
                }
                b.field("bFunctionalitySupport", ss.functionality_support)?;
                b.field_note("bU1DevExitLat", ss.u1_exit_latency, "micro seconds")?;
                b.field_note("bU2DevExitLat", ss.u2_exit_latency, "micro seconds")
            }
            DeviceCapability::Other {
                capability_type,
                data,
            } => {
                let mut b = Block::new(out, indent, "Device Capability")?;
                b.field("bLength", self.buffer_len())?;
                b.field("bDescriptorType", USB_DT_DEVICE_CAPABILITY)?;
                b.field("bDevCapabilityType", capability_type)?;
                b.field_note("data", "", Hex(data))
            }
        }
    }
}

impl fmt::Display for DeviceCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_lsusb(f, 0)
    }
}
