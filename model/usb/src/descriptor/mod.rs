//! Descriptors (USB 2.0 §9.5–§9.6, USB 3.2 §9.6, HID 1.11 §6.2.1, IAD ECN).
//!
//! Three ways to hold one, for three jobs:
//! - **views** (`DeviceView<T>`, `EndpointView<T>`, ... and the generic [`Descriptor`]) read
//!   fields in place; accessors never panic, a field beyond the buffer reads as 0;
//! - **reprs** (`DeviceDescriptor`, `EndpointDescriptor`, ...) are the validated meaning, with
//!   [`Repr::parse`] / [`Repr::emit`] / [`Repr::buffer_len`]; `parse(emit(x)) == x`;
//! - [`RawDescriptor`] keeps bytes verbatim, however malformed. Serving a descriptor with a wrong
//!   `bLength` or a lying `wTotalLength` is a feature of Raw Gadget, so nothing here normalises
//!   bytes it was given: parsing fails instead, and the raw bytes stay printable.
//!
//! [`Descriptors`] walks a blob (a configuration bundle, a BOS) and stops at the first
//! impossible `bLength`, keeping the error and the remaining bytes (nusb habit).

use alloc::vec::Vec;
use core::fmt;

use crate::wire::{check_len, Error, Hex, Repr, Result};

mod bos;
mod config;
mod device;
mod endpoint;
mod hid;
mod string;

pub use bos::*;
pub use config::*;
pub use device::*;
pub use endpoint::*;
pub use hid::*;
pub use string::*;

/// Descriptor types (`bDescriptorType`), `USB_DT_*` of `linux/usb/ch9.h`.
pub mod types {
    pub const USB_DT_DEVICE: u8 = 0x01;
    pub const USB_DT_CONFIG: u8 = 0x02;
    pub const USB_DT_STRING: u8 = 0x03;
    pub const USB_DT_INTERFACE: u8 = 0x04;
    pub const USB_DT_ENDPOINT: u8 = 0x05;
    pub const USB_DT_DEVICE_QUALIFIER: u8 = 0x06;
    pub const USB_DT_OTHER_SPEED_CONFIG: u8 = 0x07;
    pub const USB_DT_INTERFACE_POWER: u8 = 0x08;
    pub const USB_DT_OTG: u8 = 0x09;
    pub const USB_DT_DEBUG: u8 = 0x0a;
    pub const USB_DT_INTERFACE_ASSOCIATION: u8 = 0x0b;
    pub const USB_DT_BOS: u8 = 0x0f;
    pub const USB_DT_DEVICE_CAPABILITY: u8 = 0x10;
    /// HID class descriptor (HID 1.11 §7.1), also used by other classes (DFU functional, ...).
    pub const HID_DT_HID: u8 = 0x21;
    pub const HID_DT_REPORT: u8 = 0x22;
    pub const HID_DT_PHYSICAL: u8 = 0x23;
    pub const USB_DT_CS_INTERFACE: u8 = 0x24;
    pub const USB_DT_CS_ENDPOINT: u8 = 0x25;
    pub const USB_DT_SS_ENDPOINT_COMP: u8 = 0x30;
    pub const USB_DT_SSP_ISOC_ENDPOINT_COMP: u8 = 0x31;
}

/// Fixed sizes (`USB_DT_*_SIZE`).
pub mod sizes {
    pub const USB_DT_DEVICE_SIZE: u8 = 18;
    pub const USB_DT_CONFIG_SIZE: u8 = 9;
    pub const USB_DT_INTERFACE_SIZE: u8 = 9;
    pub const USB_DT_ENDPOINT_SIZE: u8 = 7;
    /// Audio endpoints carry `bRefresh` and `bSynchAddress`; EP_ENABLE always copies 9 bytes.
    pub const USB_DT_ENDPOINT_AUDIO_SIZE: u8 = 9;
    pub const USB_DT_DEVICE_QUALIFIER_SIZE: u8 = 10;
    pub const USB_DT_INTERFACE_ASSOCIATION_SIZE: u8 = 8;
    pub const USB_DT_BOS_SIZE: u8 = 5;
    pub const USB_DT_USB_EXT_CAP_SIZE: u8 = 7;
    pub const USB_DT_USB_SS_CAP_SIZE: u8 = 10;
    pub const USB_DT_SS_EP_COMP_SIZE: u8 = 6;
}

use types::*;

/// The spec name of a descriptor type, or `"0xNN"`-style `"unknown"`.
pub fn type_name(descriptor_type: u8) -> &'static str {
    match descriptor_type {
        USB_DT_DEVICE => "DEVICE",
        USB_DT_CONFIG => "CONFIGURATION",
        USB_DT_STRING => "STRING",
        USB_DT_INTERFACE => "INTERFACE",
        USB_DT_ENDPOINT => "ENDPOINT",
        USB_DT_DEVICE_QUALIFIER => "DEVICE_QUALIFIER",
        USB_DT_OTHER_SPEED_CONFIG => "OTHER_SPEED_CONFIGURATION",
        USB_DT_INTERFACE_POWER => "INTERFACE_POWER",
        USB_DT_OTG => "OTG",
        USB_DT_DEBUG => "DEBUG",
        USB_DT_INTERFACE_ASSOCIATION => "INTERFACE_ASSOCIATION",
        USB_DT_BOS => "BOS",
        USB_DT_DEVICE_CAPABILITY => "DEVICE_CAPABILITY",
        HID_DT_HID => "HID",
        HID_DT_REPORT => "REPORT",
        HID_DT_PHYSICAL => "PHYSICAL",
        USB_DT_CS_INTERFACE => "CS_INTERFACE",
        USB_DT_CS_ENDPOINT => "CS_ENDPOINT",
        USB_DT_SS_ENDPOINT_COMP => "SS_ENDPOINT_COMPANION",
        USB_DT_SSP_ISOC_ENDPOINT_COMP => "SSP_ISOC_ENDPOINT_COMPANION",
        _ => "unknown",
    }
}

/// One descriptor of a blob: `bLength` bytes, at least the two header bytes (as yielded by
/// [`Descriptors`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Descriptor<'a>(&'a [u8]);

impl<'a> Descriptor<'a> {
    /// The descriptor at the start of `bytes`; fails when `bLength` < 2 or the buffer is
    /// shorter than `bLength`.
    pub fn new(bytes: &'a [u8]) -> Result<Descriptor<'a>> {
        check_len(bytes, 2)?;
        let len = bytes[0] as usize;
        if len < 2 {
            return Err(Error::BadLength { length: bytes[0] });
        }
        check_len(bytes, len)?;
        Ok(Descriptor(&bytes[..len]))
    }
    #[doc(alias = "bLength")]
    pub fn length(&self) -> u8 {
        self.0[0]
    }
    #[doc(alias = "bDescriptorType")]
    pub fn descriptor_type(&self) -> u8 {
        self.0[1]
    }
    /// All `bLength` bytes, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
    /// The bytes after the two-byte header.
    pub fn body(&self) -> &'a [u8] {
        &self.0[2..]
    }
    /// The typed meaning; see [`AnyDescriptor::parse`].
    pub fn parse(&self) -> AnyDescriptor {
        AnyDescriptor::parse_lenient(self.0)
    }
}

impl fmt::Display for Descriptor<'_> {
    /// lsusb -v style; raw fields when the typed parse fails.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.parse().fmt_lsusb(f, 0)
    }
}

/// Iterator over the descriptors of a blob. Stops at the first impossible `bLength` (0, 1, or
/// longer than what is left) and keeps the reason and the bytes it could not walk.
#[derive(Clone, Debug)]
pub struct Descriptors<'a> {
    rest: &'a [u8],
    offset: usize,
    error: Option<Error>,
}

impl<'a> Descriptors<'a> {
    pub fn new(blob: &'a [u8]) -> Descriptors<'a> {
        Descriptors {
            rest: blob,
            offset: 0,
            error: None,
        }
    }
    /// Why the walk stopped early, if it did.
    pub fn error(&self) -> Option<Error> {
        self.error
    }
    /// Bytes not yet yielded (after a stop: the bytes that could not be walked).
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }
    /// Offset in the blob of the next descriptor (or of the stop).
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl<'a> Iterator for Descriptors<'a> {
    type Item = Descriptor<'a>;

    fn next(&mut self) -> Option<Descriptor<'a>> {
        if self.error.is_some() || self.rest.is_empty() {
            return None;
        }
        match Descriptor::new(self.rest) {
            Ok(d) => {
                let len = d.as_bytes().len();
                self.rest = &self.rest[len..];
                self.offset += len;
                Some(d)
            }
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

/// Bytes kept verbatim: a descriptor, a malformed one, a whole blob, anything. `emit` gives back
/// exactly these bytes.
#[derive(Clone, PartialEq, Eq, Debug, Hash, Default)]
pub struct RawDescriptor {
    pub bytes: Vec<u8>,
}

impl RawDescriptor {
    pub fn new(bytes: impl Into<Vec<u8>>) -> RawDescriptor {
        RawDescriptor {
            bytes: bytes.into(),
        }
    }
    /// A descriptor of `descriptor_type` with `body`, `bLength` computed (saturating at 255;
    /// use [`RawDescriptor::new`] to write any `bLength`).
    pub fn with_body(descriptor_type: u8, body: &[u8]) -> RawDescriptor {
        let mut bytes = Vec::with_capacity(2 + body.len());
        bytes.push((2 + body.len()).min(255) as u8);
        bytes.push(descriptor_type);
        bytes.extend_from_slice(body);
        RawDescriptor { bytes }
    }
    /// The header byte, 0 when missing.
    #[doc(alias = "bLength")]
    pub fn length(&self) -> u8 {
        self.bytes.first().copied().unwrap_or(0)
    }
    #[doc(alias = "bDescriptorType")]
    pub fn descriptor_type(&self) -> u8 {
        self.bytes.get(1).copied().unwrap_or(0)
    }
    /// Walks the bytes as a blob.
    pub fn descriptors(&self) -> Descriptors<'_> {
        Descriptors::new(&self.bytes)
    }
}

impl Repr for RawDescriptor {
    /// Takes all of `bytes`, whatever they say.
    fn parse(bytes: &[u8]) -> Result<Self> {
        Ok(RawDescriptor::new(bytes))
    }
    fn buffer_len(&self) -> usize {
        self.bytes.len()
    }
    fn emit(&self, buf: &mut [u8]) {
        buf[..self.bytes.len()].copy_from_slice(&self.bytes);
    }
}

/// Any descriptor, typed where a parser exists and succeeds, raw otherwise.
///
/// Types are read without context: 0x21 is taken as HID although DFU and others reuse it; a
/// failed typed parse gives `Raw` (see [`AnyDescriptor::parse_lenient`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AnyDescriptor {
    Device(DeviceDescriptor),
    Configuration(ConfigurationDescriptor),
    OtherSpeedConfiguration(OtherSpeedConfigurationDescriptor),
    String(StringDescriptor),
    Interface(InterfaceDescriptor),
    Endpoint(EndpointDescriptor),
    DeviceQualifier(DeviceQualifierDescriptor),
    InterfaceAssociation(InterfaceAssociationDescriptor),
    Bos(BosDescriptor),
    DeviceCapability(DeviceCapability),
    SsEndpointCompanion(SsEndpointCompanionDescriptor),
    Hid(HidDescriptor),
    /// A type without a parser here, or bytes a typed parser refused (with its reason).
    Raw(RawDescriptor, Option<Error>),
}

impl AnyDescriptor {
    /// The typed descriptor at the start of `bytes`; the typed parser's error when it refuses
    /// them; `Raw` for types without a parser (bytes up to `bLength`).
    pub fn parse(bytes: &[u8]) -> Result<AnyDescriptor> {
        check_len(bytes, 2)?;
        Ok(match bytes[1] {
            USB_DT_DEVICE => AnyDescriptor::Device(DeviceDescriptor::parse(bytes)?),
            USB_DT_CONFIG => AnyDescriptor::Configuration(ConfigurationDescriptor::parse(bytes)?),
            USB_DT_OTHER_SPEED_CONFIG => AnyDescriptor::OtherSpeedConfiguration(
                OtherSpeedConfigurationDescriptor::parse(bytes)?,
            ),
            USB_DT_STRING => AnyDescriptor::String(StringDescriptor::parse(bytes)?),
            USB_DT_INTERFACE => AnyDescriptor::Interface(InterfaceDescriptor::parse(bytes)?),
            USB_DT_ENDPOINT => AnyDescriptor::Endpoint(EndpointDescriptor::parse(bytes)?),
            USB_DT_DEVICE_QUALIFIER => {
                AnyDescriptor::DeviceQualifier(DeviceQualifierDescriptor::parse(bytes)?)
            }
            USB_DT_INTERFACE_ASSOCIATION => {
                AnyDescriptor::InterfaceAssociation(InterfaceAssociationDescriptor::parse(bytes)?)
            }
            USB_DT_BOS => AnyDescriptor::Bos(BosDescriptor::parse(bytes)?),
            USB_DT_DEVICE_CAPABILITY => {
                AnyDescriptor::DeviceCapability(DeviceCapability::parse(bytes)?)
            }
            USB_DT_SS_ENDPOINT_COMP => {
                AnyDescriptor::SsEndpointCompanion(SsEndpointCompanionDescriptor::parse(bytes)?)
            }
            HID_DT_HID => AnyDescriptor::Hid(HidDescriptor::parse(bytes)?),
            _ => {
                let d = Descriptor::new(bytes)?;
                AnyDescriptor::Raw(RawDescriptor::new(d.as_bytes()), None)
            }
        })
    }

    /// Like [`AnyDescriptor::parse`] but never fails: refused bytes become `Raw` with the
    /// reason (all of `bytes` when even `bLength` is unusable).
    pub fn parse_lenient(bytes: &[u8]) -> AnyDescriptor {
        match AnyDescriptor::parse(bytes) {
            Ok(d) => d,
            Err(e) => {
                let keep = match Descriptor::new(bytes) {
                    Ok(d) => d.as_bytes(),
                    Err(_) => bytes,
                };
                AnyDescriptor::Raw(RawDescriptor::new(keep), Some(e))
            }
        }
    }

    /// The emitted bytes (the verbatim bytes for `Raw`).
    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            AnyDescriptor::Device(d) => d.to_vec(),
            AnyDescriptor::Configuration(d) => d.to_vec(),
            AnyDescriptor::OtherSpeedConfiguration(d) => d.to_vec(),
            AnyDescriptor::String(d) => d.to_vec(),
            AnyDescriptor::Interface(d) => d.to_vec(),
            AnyDescriptor::Endpoint(d) => d.to_vec(),
            AnyDescriptor::DeviceQualifier(d) => d.to_vec(),
            AnyDescriptor::InterfaceAssociation(d) => d.to_vec(),
            AnyDescriptor::Bos(d) => d.to_vec(),
            AnyDescriptor::DeviceCapability(d) => d.to_vec(),
            AnyDescriptor::SsEndpointCompanion(d) => d.to_vec(),
            AnyDescriptor::Hid(d) => d.to_vec(),
            AnyDescriptor::Raw(d, _) => d.bytes.clone(),
        }
    }
}

// -------------------------------------------------------------------------------------------
// lsusb -v style printing

/// Printing in the layout of `lsusb -v`, indented by `indent` spaces.
pub trait Lsusb {
    fn fmt_lsusb(&self, out: &mut dyn fmt::Write, indent: usize) -> fmt::Result;
}

/// Line writer shared by the `Lsusb` impls: a title, then fields two spaces further in with
/// the name padded and the value right-aligned as lsusb does.
pub(crate) struct Block<'a> {
    out: &'a mut dyn fmt::Write,
    indent: usize,
}

impl<'a> Block<'a> {
    pub(crate) fn new(
        out: &'a mut dyn fmt::Write,
        indent: usize,
        title: &str,
    ) -> core::result::Result<Block<'a>, fmt::Error> {
        writeln!(out, "{:indent$}{title}:", "")?;
        Ok(Block {
            out,
            indent: indent + 2,
        })
    }
    pub(crate) fn field(&mut self, name: &str, value: impl fmt::Display) -> fmt::Result {
        writeln!(self.out, "{:i$}{name:<19}{value:>6}", "", i = self.indent)
    }
    /// A field with a note after it, one space apart (lsusb's `%5u %s`).
    pub(crate) fn field_note(
        &mut self,
        name: &str,
        value: impl fmt::Display,
        note: impl fmt::Display,
    ) -> fmt::Result {
        self.field_unit(name, value, format_args!(" {note}"))
    }
    /// A field whose unit follows the number without a space (lsusb's `%5umA`).
    pub(crate) fn field_unit(
        &mut self,
        name: &str,
        value: impl fmt::Display,
        unit: impl fmt::Display,
    ) -> fmt::Result {
        writeln!(
            self.out,
            "{:i$}{name:<19}{value:>6}{unit}",
            "",
            i = self.indent
        )
    }
    /// A line under the last field, two more spaces in (lsusb's `(Bus Powered)`).
    pub(crate) fn note(&mut self, note: impl fmt::Display) -> fmt::Result {
        writeln!(self.out, "{:i$}{note}", "", i = self.indent + 2)
    }
}

/// `bcdUSB`-style BCD as lsusb prints it: `2.00`.
pub(crate) struct Bcd(pub u16);

impl fmt::Display for Bcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = alloc::format!("{:x}.{:02x}", self.0 >> 8, self.0 & 0xff);
        f.pad(&s)
    }
}

/// `0x04b5`-style hex that honours width like numbers do.
pub(crate) struct X4(pub u16);
impl fmt::Display for X4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&alloc::format!("0x{:04x}", self.0))
    }
}
pub(crate) struct X2(pub u8);
impl fmt::Display for X2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&alloc::format!("0x{:02x}", self.0))
    }
}

impl Lsusb for RawDescriptor {
    fn fmt_lsusb(&self, out: &mut dyn fmt::Write, indent: usize) -> fmt::Result {
        raw_lsusb(out, indent, &self.bytes, None)
    }
}

fn raw_lsusb(
    out: &mut dyn fmt::Write,
    indent: usize,
    bytes: &[u8],
    why: Option<Error>,
) -> fmt::Result {
    let ty = bytes.get(1).copied().unwrap_or(0);
    let title = match why {
        Some(e) => alloc::format!("Descriptor {} (unparsed: {e})", type_name(ty)),
        None => alloc::format!("Descriptor {}", type_name(ty)),
    };
    let mut b = Block::new(out, indent, &title)?;
    if let Some(&len) = bytes.first() {
        b.field("bLength", len)?;
    }
    if let Some(&ty) = bytes.get(1) {
        b.field_note("bDescriptorType", ty, X2(ty))?;
    }
    if bytes.len() > 2 {
        b.field_note("data", "", Hex(&bytes[2..]))?;
    }
    Ok(())
}

impl Lsusb for AnyDescriptor {
    fn fmt_lsusb(&self, out: &mut dyn fmt::Write, indent: usize) -> fmt::Result {
        match self {
            AnyDescriptor::Device(d) => d.fmt_lsusb(out, indent),
            AnyDescriptor::Configuration(d) => d.fmt_lsusb(out, indent),
            AnyDescriptor::OtherSpeedConfiguration(d) => d.fmt_lsusb(out, indent),
            AnyDescriptor::String(d) => d.fmt_lsusb(out, indent),
            AnyDescriptor::Interface(d) => d.fmt_lsusb(out, indent),
            AnyDescriptor::Endpoint(d) => d.fmt_lsusb(out, indent),
            AnyDescriptor::DeviceQualifier(d) => d.fmt_lsusb(out, indent),
            AnyDescriptor::InterfaceAssociation(d) => d.fmt_lsusb(out, indent),
            AnyDescriptor::Bos(d) => d.fmt_lsusb(out, indent),
            AnyDescriptor::DeviceCapability(d) => d.fmt_lsusb(out, indent),
            AnyDescriptor::SsEndpointCompanion(d) => d.fmt_lsusb(out, indent),
            AnyDescriptor::Hid(d) => d.fmt_lsusb(out, indent),
            AnyDescriptor::Raw(d, why) => raw_lsusb(out, indent, &d.bytes, *why),
        }
    }
}

impl fmt::Display for AnyDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_lsusb(f, 0)
    }
}

/// An `lsusb -v`-like dump of a whole blob (device descriptor, configuration bundle, BOS, or
/// several concatenated), nested by type; a stop on a bad `bLength` is printed with the bytes
/// that could not be walked.
///
/// MaxPower is printed as lsusb does, in 8 mA units when the device's `bcdUSB` is 3.00 or more
/// and 2 mA units otherwise: the dump remembers the `bcdUSB` of the last device descriptor it
/// printed. A configuration dumped without its device descriptor counts 2 mA units, unless
/// the version is given with [`Dump::with_usb_version`].
#[derive(Clone, Copy, Debug)]
pub struct Dump<'a>(pub &'a [u8]);

impl<'a> Dump<'a> {
    /// A dump of `blob` (a configuration alone, say) for a device whose `bcdUSB` is
    /// `usb_version`, so that MaxPower gets lsusb's unit; a device descriptor inside the blob
    /// still takes over from there.
    pub fn with_usb_version(blob: &'a [u8], usb_version: u16) -> DumpWithUsbVersion<'a> {
        DumpWithUsbVersion { blob, usb_version }
    }
}

impl fmt::Display for Dump<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        dump(f, self.0, None)
    }
}

/// A [`Dump`] that knows the device's `bcdUSB` before the blob starts; made by
/// [`Dump::with_usb_version`].
#[derive(Clone, Copy, Debug)]
pub struct DumpWithUsbVersion<'a> {
    blob: &'a [u8],
    usb_version: u16,
}

impl fmt::Display for DumpWithUsbVersion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        dump(f, self.blob, Some(self.usb_version))
    }
}

/// The walk behind [`Dump`]; `usb_version` is the `bcdUSB` MaxPower is printed for, `None`
/// until a device descriptor says (2 mA units meanwhile).
fn dump(f: &mut fmt::Formatter<'_>, blob: &[u8], mut usb_version: Option<u16>) -> fmt::Result {
    let mut it = Descriptors::new(blob);
    // Indent of the last container, to place class-specific descriptors under it.
    let mut container = 0;
    for d in it.by_ref() {
        let ty = d.descriptor_type();
        let indent = match ty {
            USB_DT_DEVICE => 0,
            USB_DT_CONFIG | USB_DT_OTHER_SPEED_CONFIG | USB_DT_BOS => 2,
            USB_DT_INTERFACE | USB_DT_INTERFACE_ASSOCIATION | USB_DT_DEVICE_CAPABILITY => 4,
            USB_DT_ENDPOINT => 6,
            _ => container + 2,
        };
        if matches!(
            ty,
            USB_DT_CONFIG
                | USB_DT_OTHER_SPEED_CONFIG
                | USB_DT_BOS
                | USB_DT_INTERFACE
                | USB_DT_ENDPOINT
        ) {
            container = indent + 2;
        }
        if ty == USB_DT_DEVICE {
            // lsusb reads bcdUSB whatever else the descriptor says; 0 if it is cut short.
            usb_version = Some(DeviceView::new_unchecked(d.as_bytes()).usb_version());
        }
        match (d.parse(), usb_version) {
            (AnyDescriptor::Configuration(c), Some(bcd)) => {
                c.fmt_lsusb_with_usb_version(f, indent, bcd)?
            }
            (any, _) => any.fmt_lsusb(f, indent)?,
        }
    }
    if let Some(e) = it.error() {
        writeln!(
            f,
            "** stopped at byte {}: {e}; {} bytes left: {}",
            it.offset(),
            it.remaining().len(),
            Hex(it.remaining())
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
