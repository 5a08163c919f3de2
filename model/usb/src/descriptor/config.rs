//! Configuration (USB 2.0 §9.6.3), other-speed configuration (§9.6.4), interface (§9.6.5)
//! and interface association (IAD ECN) descriptors.

use core::fmt;

use super::device::class_name;
use super::sizes::*;
use super::types::*;
use super::{Block, Descriptors, Lsusb, X2, X4};
use crate::speed::{max_power_unit_ma, Speed};
use crate::wire::{check_header, view, Repr, Result};

/// `bmAttributes` bits of a configuration.
pub mod attributes {
    /// Must be set (USB 1.0 "bus powered").
    pub const USB_CONFIG_ATT_ONE: u8 = 0x80;
    pub const USB_CONFIG_ATT_SELFPOWER: u8 = 0x40;
    pub const USB_CONFIG_ATT_WAKEUP: u8 = 0x20;
    pub const USB_CONFIG_ATT_BATTERY: u8 = 0x10;
}

mod field {
    pub const TOTAL_LENGTH: usize = 2;
    pub const NUM_INTERFACES: usize = 4;
    pub const CONFIGURATION_VALUE: usize = 5;
    pub const CONFIGURATION_STRING: usize = 6;
    pub const ATTRIBUTES: usize = 7;
    pub const MAX_POWER: usize = 8;

    pub const INTERFACE_NUMBER: usize = 2;
    pub const ALTERNATE_SETTING: usize = 3;
    pub const NUM_ENDPOINTS: usize = 4;
    pub const INTERFACE_CLASS: usize = 5;
    pub const INTERFACE_SUBCLASS: usize = 6;
    pub const INTERFACE_PROTOCOL: usize = 7;
    pub const INTERFACE_STRING: usize = 8;

    pub const FIRST_INTERFACE: usize = 2;
    pub const INTERFACE_COUNT: usize = 3;
    pub const FUNCTION_CLASS: usize = 4;
    pub const FUNCTION_SUBCLASS: usize = 5;
    pub const FUNCTION_PROTOCOL: usize = 6;
    pub const FUNCTION_STRING: usize = 7;
}

view! {
    /// A view over a configuration descriptor and, when the buffer holds it, the bundle of
    /// interface, endpoint and class descriptors that follows it.
    #[doc(alias = "usb_config_descriptor")]
    ConfigurationView, type = USB_DT_CONFIG, min = USB_DT_CONFIG_SIZE, max = 255;
    /// Length of the whole bundle as the descriptor claims it (it may lie).
    #[doc(alias = "wTotalLength")]
    total_length: u16 = field::TOTAL_LENGTH;
    #[doc(alias = "bNumInterfaces")]
    num_interfaces: u8 = field::NUM_INTERFACES;
    #[doc(alias = "bConfigurationValue")]
    configuration_value: u8 = field::CONFIGURATION_VALUE;
    #[doc(alias = "iConfiguration")]
    configuration_string: u8 = field::CONFIGURATION_STRING;
    #[doc(alias = "bmAttributes")]
    attributes: u8 = field::ATTRIBUTES;
    /// In units of 2 mA (8 mA at SuperSpeed, [`crate::speed::max_power_unit_ma`]).
    #[doc(alias = "bMaxPower")]
    max_power: u8 = field::MAX_POWER;
}

impl<T: AsRef<[u8]>> ConfigurationView<T> {
    /// The bundle: the first `wTotalLength` bytes, or all of the buffer when it is shorter.
    pub fn bundle(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        &buf[..(self.total_length() as usize).min(buf.len())]
    }
    /// Walks the bundle, this descriptor first.
    pub fn descriptors(&self) -> Descriptors<'_> {
        Descriptors::new(self.bundle())
    }
}

/// A configuration descriptor (the 9-byte header; the bundle is built by
/// [`crate::ConfigurationBuilder`] or kept as bytes).
#[doc(alias = "usb_config_descriptor")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct ConfigurationDescriptor {
    #[doc(alias = "wTotalLength")]
    pub total_length: u16,
    #[doc(alias = "bNumInterfaces")]
    pub num_interfaces: u8,
    #[doc(alias = "bConfigurationValue")]
    pub configuration_value: u8,
    #[doc(alias = "iConfiguration")]
    pub configuration_string: u8,
    #[doc(alias = "bmAttributes")]
    pub attributes: u8,
    /// In units of 2 mA below SuperSpeed, 8 mA at SuperSpeed; see
    /// [`crate::speed::encode_max_power`] and [`ConfigurationDescriptor::max_power_ma`].
    #[doc(alias = "bMaxPower")]
    pub max_power: u8,
}

impl ConfigurationDescriptor {
    pub fn self_powered(&self) -> bool {
        self.attributes & attributes::USB_CONFIG_ATT_SELFPOWER != 0
    }
    pub fn remote_wakeup(&self) -> bool {
        self.attributes & attributes::USB_CONFIG_ATT_WAKEUP != 0
    }
    /// `bMaxPower` in mA for a device operating at `speed` (USB 3.2 §9.6.3: 8 mA units at
    /// SuperSpeed, 2 mA below).
    pub fn max_power_ma(&self, speed: Speed) -> u16 {
        u16::from(self.max_power) * max_power_unit_ma(speed)
    }

    /// `lsusb -v` layout for a device whose `bcdUSB` is `usb_version`: lsusb counts
    /// MaxPower in 8 mA units when `bcdUSB` is 3.00 or more, 2 mA below (usbutils `lsusb.c`
    /// `dump_config`). The plain [`Lsusb`] impl, with no device in sight, uses 2 mA.
    pub fn fmt_lsusb_with_usb_version(
        &self,
        out: &mut dyn fmt::Write,
        indent: usize,
        usb_version: u16,
    ) -> fmt::Result {
        self.fmt_lsusb_as(
            out,
            indent,
            USB_DT_CONFIG,
            lsusb_max_power_unit_ma(usb_version),
        )
    }

    /// The 9 bytes of a configuration or other-speed configuration header (same layout, USB
    /// 2.0 §9.6.4), `bDescriptorType` `ty`.
    fn parse_as(bytes: &[u8], ty: u8) -> Result<Self> {
        let n = USB_DT_CONFIG_SIZE;
        check_header(bytes, ty, n, n)?;
        let v = ConfigurationView::new_unchecked(bytes);
        Ok(ConfigurationDescriptor {
            total_length: v.total_length(),
            num_interfaces: v.num_interfaces(),
            configuration_value: v.configuration_value(),
            configuration_string: v.configuration_string(),
            attributes: v.attributes(),
            max_power: v.max_power(),
        })
    }

    fn emit_as(&self, buf: &mut [u8], ty: u8) {
        let b = &mut buf[..USB_DT_CONFIG_SIZE as usize];
        b[0] = USB_DT_CONFIG_SIZE;
        b[1] = ty;
        b[2..4].copy_from_slice(&self.total_length.to_le_bytes());
        b[4] = self.num_interfaces;
        b[5] = self.configuration_value;
        b[6] = self.configuration_string;
        b[7] = self.attributes;
        b[8] = self.max_power;
    }

    /// lsusb's `dump_config` lines under the title of descriptor type `ty`, MaxPower counted
    /// in `unit_ma`.
    fn fmt_lsusb_as(
        &self,
        out: &mut dyn fmt::Write,
        indent: usize,
        ty: u8,
        unit_ma: u16,
    ) -> fmt::Result {
        let title = if ty == USB_DT_OTHER_SPEED_CONFIG {
            "Other Speed Configuration Descriptor"
        } else {
            "Configuration Descriptor"
        };
        let mut b = Block::new(out, indent, title)?;
        b.field("bLength", USB_DT_CONFIG_SIZE)?;
        b.field("bDescriptorType", ty)?;
        b.field("wTotalLength", X4(self.total_length))?;
        b.field("bNumInterfaces", self.num_interfaces)?;
        b.field("bConfigurationValue", self.configuration_value)?;
        b.field("iConfiguration", self.configuration_string)?;
        b.field("bmAttributes", X2(self.attributes))?;
        if self.self_powered() {
            b.note("Self Powered")?;
        } else {
            b.note("(Bus Powered)")?;
        }
        if self.remote_wakeup() {
            b.note("Remote Wakeup")?;
        }
        b.field_unit("MaxPower", u16::from(self.max_power) * unit_ma, "mA")
    }
}

/// lsusb's MaxPower unit for a device with this `bcdUSB`: it goes by the version the device
/// claims, not by the speed it runs at (`config->MaxPower * (speed >= 0x0300 ? 8 : 2)` with
/// `speed` = `bcdUSB` in usbutils `lsusb.c`).
fn lsusb_max_power_unit_ma(usb_version: u16) -> u16 {
    let speed = if usb_version >= 0x0300 {
        Speed::Super
    } else {
        Speed::High
    };
    max_power_unit_ma(speed)
}

impl Repr for ConfigurationDescriptor {
    /// Reads a 9-byte header; a longer `bLength` is refused (kept bytes would be lost).
    fn parse(bytes: &[u8]) -> Result<Self> {
        ConfigurationDescriptor::parse_as(bytes, USB_DT_CONFIG)
    }
    fn buffer_len(&self) -> usize {
        USB_DT_CONFIG_SIZE as usize
    }
    fn emit(&self, buf: &mut [u8]) {
        self.emit_as(buf, USB_DT_CONFIG)
    }
}

impl Lsusb for ConfigurationDescriptor {
    /// MaxPower in 2 mA units; see [`ConfigurationDescriptor::fmt_lsusb_with_usb_version`].
    fn fmt_lsusb(&self, out: &mut dyn fmt::Write, indent: usize) -> fmt::Result {
        self.fmt_lsusb_as(out, indent, USB_DT_CONFIG, max_power_unit_ma(Speed::High))
    }
}

impl fmt::Display for ConfigurationDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_lsusb(f, 0)
    }
}

/// An other-speed configuration descriptor (USB 2.0 §9.6.4): a high-speed capable device's
/// configuration at the speed it is not running at, with the layout of a configuration
/// descriptor and `bDescriptorType` 7.
///
/// The other speed is full or high speed, never SuperSpeed (a device at SuperSpeed has no
/// device qualifier, USB 3.2 §9.6.2), so `bMaxPower` always counts 2 mA units here.
#[doc(alias = "USB_DT_OTHER_SPEED_CONFIG")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct OtherSpeedConfigurationDescriptor(pub ConfigurationDescriptor);

impl Repr for OtherSpeedConfigurationDescriptor {
    /// Reads a 9-byte header of type 7; a longer `bLength` is refused.
    fn parse(bytes: &[u8]) -> Result<Self> {
        ConfigurationDescriptor::parse_as(bytes, USB_DT_OTHER_SPEED_CONFIG).map(Self)
    }
    fn buffer_len(&self) -> usize {
        USB_DT_CONFIG_SIZE as usize
    }
    fn emit(&self, buf: &mut [u8]) {
        self.0.emit_as(buf, USB_DT_OTHER_SPEED_CONFIG)
    }
}

impl Lsusb for OtherSpeedConfigurationDescriptor {
    /// lsusb itself never prints this descriptor (a TODO in its `do_dualspeed`); the layout is
    /// its configuration's, under the title "Other Speed Configuration Descriptor".
    fn fmt_lsusb(&self, out: &mut dyn fmt::Write, indent: usize) -> fmt::Result {
        self.0.fmt_lsusb_as(
            out,
            indent,
            USB_DT_OTHER_SPEED_CONFIG,
            max_power_unit_ma(Speed::Full),
        )
    }
}

impl fmt::Display for OtherSpeedConfigurationDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_lsusb(f, 0)
    }
}

view! {
    /// A view over an interface descriptor (9 bytes).
    #[doc(alias = "usb_interface_descriptor")]
    InterfaceView, type = USB_DT_INTERFACE, min = USB_DT_INTERFACE_SIZE, max = USB_DT_INTERFACE_SIZE;
    #[doc(alias = "bInterfaceNumber")]
    interface_number: u8 = field::INTERFACE_NUMBER;
    #[doc(alias = "bAlternateSetting")]
    alternate_setting: u8 = field::ALTERNATE_SETTING;
    #[doc(alias = "bNumEndpoints")]
    num_endpoints: u8 = field::NUM_ENDPOINTS;
    #[doc(alias = "bInterfaceClass")]
    class: u8 = field::INTERFACE_CLASS;
    #[doc(alias = "bInterfaceSubClass")]
    subclass: u8 = field::INTERFACE_SUBCLASS;
    #[doc(alias = "bInterfaceProtocol")]
    protocol: u8 = field::INTERFACE_PROTOCOL;
    #[doc(alias = "iInterface")]
    interface_string: u8 = field::INTERFACE_STRING;
}

/// An interface descriptor (one alternate setting of one interface).
#[doc(alias = "usb_interface_descriptor")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct InterfaceDescriptor {
    #[doc(alias = "bInterfaceNumber")]
    pub interface_number: u8,
    #[doc(alias = "bAlternateSetting")]
    pub alternate_setting: u8,
    #[doc(alias = "bNumEndpoints")]
    pub num_endpoints: u8,
    #[doc(alias = "bInterfaceClass")]
    pub class: u8,
    #[doc(alias = "bInterfaceSubClass")]
    pub subclass: u8,
    #[doc(alias = "bInterfaceProtocol")]
    pub protocol: u8,
    #[doc(alias = "iInterface")]
    pub interface_string: u8,
}

impl Repr for InterfaceDescriptor {
    fn parse(bytes: &[u8]) -> Result<Self> {
        let n = USB_DT_INTERFACE_SIZE;
        check_header(bytes, USB_DT_INTERFACE, n, n)?;
        let v = InterfaceView::new_unchecked(bytes);
        Ok(InterfaceDescriptor {
            interface_number: v.interface_number(),
            alternate_setting: v.alternate_setting(),
            num_endpoints: v.num_endpoints(),
            class: v.class(),
            subclass: v.subclass(),
            protocol: v.protocol(),
            interface_string: v.interface_string(),
        })
    }
    fn buffer_len(&self) -> usize {
        USB_DT_INTERFACE_SIZE as usize
    }
    fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..USB_DT_INTERFACE_SIZE as usize];
        b[0] = USB_DT_INTERFACE_SIZE;
        b[1] = USB_DT_INTERFACE;
        b[2] = self.interface_number;
        b[3] = self.alternate_setting;
        b[4] = self.num_endpoints;
        b[5] = self.class;
        b[6] = self.subclass;
        b[7] = self.protocol;
        b[8] = self.interface_string;
    }
}

impl Lsusb for InterfaceDescriptor {
    fn fmt_lsusb(&self, out: &mut dyn fmt::Write, indent: usize) -> fmt::Result {
        let mut b = Block::new(out, indent, "Interface Descriptor")?;
        b.field("bLength", USB_DT_INTERFACE_SIZE)?;
        b.field("bDescriptorType", USB_DT_INTERFACE)?;
        b.field("bInterfaceNumber", self.interface_number)?;
        b.field("bAlternateSetting", self.alternate_setting)?;
        b.field("bNumEndpoints", self.num_endpoints)?;
        b.field_note("bInterfaceClass", self.class, class_name(self.class))?;
        let hid_boot = self.class == crate::class::USB_CLASS_HID && self.subclass == 1;
        b.field_note(
            "bInterfaceSubClass",
            self.subclass,
            if hid_boot {
                "Boot Interface Subclass"
            } else {
                ""
            },
        )?;
        let proto = match (hid_boot, self.protocol) {
            (true, 1) => "Keyboard",
            (true, 2) => "Mouse",
            _ => "",
        };
        b.field_note("bInterfaceProtocol", self.protocol, proto)?;
        b.field("iInterface", self.interface_string)
    }
}

impl fmt::Display for InterfaceDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_lsusb(f, 0)
    }
}

view! {
    /// A view over an interface association descriptor (8 bytes).
    #[doc(alias = "usb_interface_assoc_descriptor")]
    InterfaceAssociationView, type = USB_DT_INTERFACE_ASSOCIATION,
        min = USB_DT_INTERFACE_ASSOCIATION_SIZE, max = USB_DT_INTERFACE_ASSOCIATION_SIZE;
    #[doc(alias = "bFirstInterface")]
    first_interface: u8 = field::FIRST_INTERFACE;
    #[doc(alias = "bInterfaceCount")]
    interface_count: u8 = field::INTERFACE_COUNT;
    #[doc(alias = "bFunctionClass")]
    class: u8 = field::FUNCTION_CLASS;
    #[doc(alias = "bFunctionSubClass")]
    subclass: u8 = field::FUNCTION_SUBCLASS;
    #[doc(alias = "bFunctionProtocol")]
    protocol: u8 = field::FUNCTION_PROTOCOL;
    #[doc(alias = "iFunction")]
    function_string: u8 = field::FUNCTION_STRING;
}

/// An interface association descriptor: groups interfaces into one function.
#[doc(alias = "usb_interface_assoc_descriptor")]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct InterfaceAssociationDescriptor {
    #[doc(alias = "bFirstInterface")]
    pub first_interface: u8,
    #[doc(alias = "bInterfaceCount")]
    pub interface_count: u8,
    #[doc(alias = "bFunctionClass")]
    pub class: u8,
    #[doc(alias = "bFunctionSubClass")]
    pub subclass: u8,
    #[doc(alias = "bFunctionProtocol")]
    pub protocol: u8,
    #[doc(alias = "iFunction")]
    pub function_string: u8,
}

impl Repr for InterfaceAssociationDescriptor {
    fn parse(bytes: &[u8]) -> Result<Self> {
        let n = USB_DT_INTERFACE_ASSOCIATION_SIZE;
        check_header(bytes, USB_DT_INTERFACE_ASSOCIATION, n, n)?;
        let v = InterfaceAssociationView::new_unchecked(bytes);
        Ok(InterfaceAssociationDescriptor {
            first_interface: v.first_interface(),
            interface_count: v.interface_count(),
            class: v.class(),
            subclass: v.subclass(),
            protocol: v.protocol(),
            function_string: v.function_string(),
        })
    }
    fn buffer_len(&self) -> usize {
        USB_DT_INTERFACE_ASSOCIATION_SIZE as usize
    }
    fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..USB_DT_INTERFACE_ASSOCIATION_SIZE as usize];
        b[0] = USB_DT_INTERFACE_ASSOCIATION_SIZE;
        b[1] = USB_DT_INTERFACE_ASSOCIATION;
        b[2] = self.first_interface;
        b[3] = self.interface_count;
        b[4] = self.class;
        b[5] = self.subclass;
        b[6] = self.protocol;
        b[7] = self.function_string;
    }
}

impl Lsusb for InterfaceAssociationDescriptor {
    fn fmt_lsusb(&self, out: &mut dyn fmt::Write, indent: usize) -> fmt::Result {
        let mut b = Block::new(out, indent, "Interface Association")?;
        b.field("bLength", USB_DT_INTERFACE_ASSOCIATION_SIZE)?;
        b.field("bDescriptorType", USB_DT_INTERFACE_ASSOCIATION)?;
        b.field("bFirstInterface", self.first_interface)?;
        b.field("bInterfaceCount", self.interface_count)?;
        b.field_note("bFunctionClass", self.class, class_name(self.class))?;
        b.field("bFunctionSubClass", self.subclass)?;
        b.field("bFunctionProtocol", self.protocol)?;
        b.field("iFunction", self.function_string)
    }
}

impl fmt::Display for InterfaceAssociationDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_lsusb(f, 0)
    }
}
