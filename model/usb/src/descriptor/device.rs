//! Device (USB 2.0 §9.6.1) and device qualifier (§9.6.2) descriptors.

use core::fmt;

use super::sizes::*;
use super::types::*;
use super::{Bcd, Block, Lsusb, X4};
use crate::speed::{default_max_packet_size0, default_usb_version, Speed};
use crate::wire::{check_header, view, Repr, Result};

mod field {
    pub const BCD_USB: usize = 2;
    pub const CLASS: usize = 4;
    pub const SUBCLASS: usize = 5;
    pub const PROTOCOL: usize = 6;
    pub const MAX_PACKET_SIZE0: usize = 7;
    pub const VENDOR: usize = 8;
    pub const PRODUCT: usize = 10;
    pub const BCD_DEVICE: usize = 12;
    pub const MANUFACTURER: usize = 14;
    pub const PRODUCT_STRING: usize = 15;
    pub const SERIAL: usize = 16;
    pub const NUM_CONFIGURATIONS: usize = 17;
    // Device qualifier.
    pub const Q_NUM_CONFIGURATIONS: usize = 8;
    pub const Q_RESERVED: usize = 9;
}

view! {
    /// A view over a device descriptor (`struct usb_device_descriptor`, 18 bytes).
    #[doc(alias = "usb_device_descriptor")]
    DeviceView, type = USB_DT_DEVICE, min = USB_DT_DEVICE_SIZE, max = USB_DT_DEVICE_SIZE;
    #[doc(alias = "bcdUSB")]
    usb_version: u16 = field::BCD_USB;
    #[doc(alias = "bDeviceClass")]
    class: u8 = field::CLASS;
    #[doc(alias = "bDeviceSubClass")]
    subclass: u8 = field::SUBCLASS;
    #[doc(alias = "bDeviceProtocol")]
    protocol: u8 = field::PROTOCOL;
    #[doc(alias = "bMaxPacketSize0")]
    max_packet_size0: u8 = field::MAX_PACKET_SIZE0;
    #[doc(alias = "idVendor")]
    vendor_id: u16 = field::VENDOR;
    #[doc(alias = "idProduct")]
    product_id: u16 = field::PRODUCT;
    #[doc(alias = "bcdDevice")]
    device_version: u16 = field::BCD_DEVICE;
    #[doc(alias = "iManufacturer")]
    manufacturer_string: u8 = field::MANUFACTURER;
    #[doc(alias = "iProduct")]
    product_string: u8 = field::PRODUCT_STRING;
    #[doc(alias = "iSerialNumber")]
    serial_number_string: u8 = field::SERIAL;
    #[doc(alias = "bNumConfigurations")]
    num_configurations: u8 = field::NUM_CONFIGURATIONS;
}

/// A device descriptor (18 bytes). String indexes are raw: 0 means "no string".
#[doc(alias = "usb_device_descriptor")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct DeviceDescriptor {
    #[doc(alias = "bcdUSB")]
    pub usb_version: u16,
    #[doc(alias = "bDeviceClass")]
    pub class: u8,
    #[doc(alias = "bDeviceSubClass")]
    pub subclass: u8,
    #[doc(alias = "bDeviceProtocol")]
    pub protocol: u8,
    #[doc(alias = "bMaxPacketSize0")]
    pub max_packet_size0: u8,
    #[doc(alias = "idVendor")]
    pub vendor_id: u16,
    #[doc(alias = "idProduct")]
    pub product_id: u16,
    #[doc(alias = "bcdDevice")]
    pub device_version: u16,
    #[doc(alias = "iManufacturer")]
    pub manufacturer_string: u8,
    #[doc(alias = "iProduct")]
    pub product_string: u8,
    #[doc(alias = "iSerialNumber")]
    pub serial_number_string: u8,
    #[doc(alias = "bNumConfigurations")]
    pub num_configurations: u8,
}

impl DeviceDescriptor {
    /// A builder with the defaults listed on [`DeviceDescriptorBuilder`].
    pub fn builder(vendor_id: u16, product_id: u16) -> DeviceDescriptorBuilder {
        DeviceDescriptorBuilder::new(vendor_id, product_id)
    }
    /// The device qualifier a high-speed capable device answers with (same class fields,
    /// `bMaxPacketSize0` and configuration count; USB 2.0 §9.6.2).
    pub fn qualifier(&self) -> DeviceQualifierDescriptor {
        DeviceQualifierDescriptor {
            usb_version: self.usb_version,
            class: self.class,
            subclass: self.subclass,
            protocol: self.protocol,
            max_packet_size0: self.max_packet_size0,
            num_configurations: self.num_configurations,
            reserved: 0,
        }
    }
}

impl Repr for DeviceDescriptor {
    fn parse(bytes: &[u8]) -> Result<Self> {
        check_header(bytes, USB_DT_DEVICE, USB_DT_DEVICE_SIZE, USB_DT_DEVICE_SIZE)?;
        let v = DeviceView::new_unchecked(bytes);
        Ok(DeviceDescriptor {
            usb_version: v.usb_version(),
            class: v.class(),
            subclass: v.subclass(),
            protocol: v.protocol(),
            max_packet_size0: v.max_packet_size0(),
            vendor_id: v.vendor_id(),
            product_id: v.product_id(),
            device_version: v.device_version(),
            manufacturer_string: v.manufacturer_string(),
            product_string: v.product_string(),
            serial_number_string: v.serial_number_string(),
            num_configurations: v.num_configurations(),
        })
    }
    fn buffer_len(&self) -> usize {
        USB_DT_DEVICE_SIZE as usize
    }
    fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..USB_DT_DEVICE_SIZE as usize];
        b[0] = USB_DT_DEVICE_SIZE;
        b[1] = USB_DT_DEVICE;
        b[2..4].copy_from_slice(&self.usb_version.to_le_bytes());
        b[4] = self.class;
        b[5] = self.subclass;
        b[6] = self.protocol;
        b[7] = self.max_packet_size0;
        b[8..10].copy_from_slice(&self.vendor_id.to_le_bytes());
        b[10..12].copy_from_slice(&self.product_id.to_le_bytes());
        b[12..14].copy_from_slice(&self.device_version.to_le_bytes());
        b[14] = self.manufacturer_string;
        b[15] = self.product_string;
        b[16] = self.serial_number_string;
        b[17] = self.num_configurations;
    }
}

/// Builds a [`DeviceDescriptor`]; every field has a default:
///
/// | field | default |
/// |---|---|
/// | `bcdUSB` | 0x0200 (see [`DeviceDescriptorBuilder::speed`]) |
/// | class / subclass / protocol | 0 / 0 / 0 (defined by interfaces) |
/// | `bMaxPacketSize0` | 64 (valid: 8, 16, 32, 64; 9 at SuperSpeed) |
/// | `bcdDevice` | 0x0100 |
/// | string indexes | 0 (none) |
/// | `bNumConfigurations` | 1 |
#[derive(Clone, Copy, Debug)]
pub struct DeviceDescriptorBuilder(DeviceDescriptor);

impl DeviceDescriptorBuilder {
    pub fn new(vendor_id: u16, product_id: u16) -> Self {
        DeviceDescriptorBuilder(DeviceDescriptor {
            usb_version: 0x0200,
            class: 0,
            subclass: 0,
            protocol: 0,
            max_packet_size0: 64,
            vendor_id,
            product_id,
            device_version: 0x0100,
            manufacturer_string: 0,
            product_string: 0,
            serial_number_string: 0,
            num_configurations: 1,
        })
    }
    /// `bcdUSB` and `bMaxPacketSize0` suited to `speed` (0x0110/64 at full speed, 0x0200/64 at
    /// high speed, 0x0320/9 at SuperSpeed, 8 at low speed).
    pub fn speed(mut self, speed: Speed) -> Self {
        self.0.usb_version = default_usb_version(speed);
        self.0.max_packet_size0 = default_max_packet_size0(speed);
        self
    }
    pub fn usb_version(mut self, bcd: u16) -> Self {
        self.0.usb_version = bcd;
        self
    }
    pub fn class(mut self, class: u8, subclass: u8, protocol: u8) -> Self {
        self.0.class = class;
        self.0.subclass = subclass;
        self.0.protocol = protocol;
        self
    }
    pub fn max_packet_size0(mut self, size: u8) -> Self {
        self.0.max_packet_size0 = size;
        self
    }
    pub fn device_version(mut self, bcd: u16) -> Self {
        self.0.device_version = bcd;
        self
    }
    /// String indexes of manufacturer, product and serial number (0 = none), typically from
    /// [`crate::StringTable::add`].
    pub fn strings(mut self, manufacturer: u8, product: u8, serial_number: u8) -> Self {
        self.0.manufacturer_string = manufacturer;
        self.0.product_string = product;
        self.0.serial_number_string = serial_number;
        self
    }
    pub fn num_configurations(mut self, n: u8) -> Self {
        self.0.num_configurations = n;
        self
    }
    pub fn build(self) -> DeviceDescriptor {
        self.0
    }
}

/// Class code names as lsusb prints them for the classes this project uses.
pub(crate) fn class_name(class: u8) -> &'static str {
    match class {
        0x00 => "(Defined at Interface level)",
        0x01 => "Audio",
        0x02 => "Communications",
        0x03 => "Human Interface Device",
        0x08 => "Mass Storage",
        0x09 => "Hub",
        0x0a => "CDC Data",
        0x0e => "Video",
        0xef => "Miscellaneous Device",
        0xfe => "Application Specific Interface",
        0xff => "Vendor Specific Class",
        _ => "",
    }
}

impl Lsusb for DeviceDescriptor {
    fn fmt_lsusb(&self, out: &mut dyn fmt::Write, indent: usize) -> fmt::Result {
        let mut b = Block::new(out, indent, "Device Descriptor")?;
        b.field("bLength", USB_DT_DEVICE_SIZE)?;
        b.field("bDescriptorType", USB_DT_DEVICE)?;
        b.field("bcdUSB", Bcd(self.usb_version))?;
        b.field_note("bDeviceClass", self.class, class_name(self.class))?;
        b.field("bDeviceSubClass", self.subclass)?;
        b.field("bDeviceProtocol", self.protocol)?;
        b.field("bMaxPacketSize0", self.max_packet_size0)?;
        b.field("idVendor", X4(self.vendor_id))?;
        b.field("idProduct", X4(self.product_id))?;
        b.field("bcdDevice", Bcd(self.device_version))?;
        b.field("iManufacturer", self.manufacturer_string)?;
        b.field("iProduct", self.product_string)?;
        b.field("iSerial", self.serial_number_string)?;
        b.field("bNumConfigurations", self.num_configurations)
    }
}

impl fmt::Display for DeviceDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_lsusb(f, 0)
    }
}

view! {
    /// A view over a device qualifier descriptor (10 bytes).
    #[doc(alias = "usb_qualifier_descriptor")]
    DeviceQualifierView, type = USB_DT_DEVICE_QUALIFIER,
        min = USB_DT_DEVICE_QUALIFIER_SIZE, max = USB_DT_DEVICE_QUALIFIER_SIZE;
    #[doc(alias = "bcdUSB")]
    usb_version: u16 = field::BCD_USB;
    #[doc(alias = "bDeviceClass")]
    class: u8 = field::CLASS;
    #[doc(alias = "bDeviceSubClass")]
    subclass: u8 = field::SUBCLASS;
    #[doc(alias = "bDeviceProtocol")]
    protocol: u8 = field::PROTOCOL;
    #[doc(alias = "bMaxPacketSize0")]
    max_packet_size0: u8 = field::MAX_PACKET_SIZE0;
    #[doc(alias = "bNumConfigurations")]
    num_configurations: u8 = field::Q_NUM_CONFIGURATIONS;
    #[doc(alias = "bRESERVED")]
    reserved: u8 = field::Q_RESERVED;
}

/// A device qualifier descriptor: what the device would look like at the other speed.
#[doc(alias = "usb_qualifier_descriptor")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct DeviceQualifierDescriptor {
    pub usb_version: u16,
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
    pub max_packet_size0: u8,
    pub num_configurations: u8,
    /// `bRESERVED`, kept as sent (should be 0).
    pub reserved: u8,
}

impl Repr for DeviceQualifierDescriptor {
    fn parse(bytes: &[u8]) -> Result<Self> {
        let n = USB_DT_DEVICE_QUALIFIER_SIZE;
        check_header(bytes, USB_DT_DEVICE_QUALIFIER, n, n)?;
        let v = DeviceQualifierView::new_unchecked(bytes);
        Ok(DeviceQualifierDescriptor {
            usb_version: v.usb_version(),
            class: v.class(),
            subclass: v.subclass(),
            protocol: v.protocol(),
            max_packet_size0: v.max_packet_size0(),
            num_configurations: v.num_configurations(),
            reserved: v.reserved(),
        })
    }
    fn buffer_len(&self) -> usize {
        USB_DT_DEVICE_QUALIFIER_SIZE as usize
    }
    fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..USB_DT_DEVICE_QUALIFIER_SIZE as usize];
        b[0] = USB_DT_DEVICE_QUALIFIER_SIZE;
        b[1] = USB_DT_DEVICE_QUALIFIER;
        b[2..4].copy_from_slice(&self.usb_version.to_le_bytes());
        b[4] = self.class;
        b[5] = self.subclass;
        b[6] = self.protocol;
        b[7] = self.max_packet_size0;
        b[8] = self.num_configurations;
        b[9] = self.reserved;
    }
}

impl Lsusb for DeviceQualifierDescriptor {
    fn fmt_lsusb(&self, out: &mut dyn fmt::Write, indent: usize) -> fmt::Result {
        let mut b = Block::new(out, indent, "Device Qualifier (for other device speed)")?;
        b.field("bLength", USB_DT_DEVICE_QUALIFIER_SIZE)?;
        b.field("bDescriptorType", USB_DT_DEVICE_QUALIFIER)?;
        b.field("bcdUSB", Bcd(self.usb_version))?;
        b.field_note("bDeviceClass", self.class, class_name(self.class))?;
        b.field("bDeviceSubClass", self.subclass)?;
        b.field("bDeviceProtocol", self.protocol)?;
        b.field("bMaxPacketSize0", self.max_packet_size0)?;
        b.field("bNumConfigurations", self.num_configurations)
    }
}

impl fmt::Display for DeviceQualifierDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_lsusb(f, 0)
    }
}
