//! Class codes and the class-specific constants our built-in devices need, with the names of
//! Linux's headers (`linux/usb/ch9.h`, `linux/hid.h`) so grep finds both.

/// Class defined per interface (device descriptor only).
pub const USB_CLASS_PER_INTERFACE: u8 = 0x00;
pub const USB_CLASS_AUDIO: u8 = 0x01;
pub const USB_CLASS_COMM: u8 = 0x02;
pub const USB_CLASS_HID: u8 = 0x03;
pub const USB_CLASS_MASS_STORAGE: u8 = 0x08;
pub const USB_CLASS_HUB: u8 = 0x09;
pub const USB_CLASS_CDC_DATA: u8 = 0x0a;
pub const USB_CLASS_MISC: u8 = 0xef;
pub const USB_CLASS_APP_SPEC: u8 = 0xfe;
/// Vendor specific (Gadget Zero uses it for device and interface).
pub const USB_CLASS_VENDOR_SPEC: u8 = 0xff;
pub const USB_SUBCLASS_VENDOR_SPEC: u8 = 0xff;

/// HID 1.11: interface subclass/protocol, descriptor types, class requests, report types.
pub mod hid {
    pub use crate::descriptor::types::{HID_DT_HID, HID_DT_PHYSICAL, HID_DT_REPORT};

    /// `bInterfaceSubClass` of a boot-protocol interface.
    pub const USB_INTERFACE_SUBCLASS_BOOT: u8 = 1;
    /// `bInterfaceProtocol` of a boot keyboard.
    pub const USB_INTERFACE_PROTOCOL_KEYBOARD: u8 = 1;
    /// `bInterfaceProtocol` of a boot mouse.
    pub const USB_INTERFACE_PROTOCOL_MOUSE: u8 = 2;

    /// Class requests (`bmRequestType` 0xa1 for GET_*, 0x21 for SET_*; HID 1.11 §7.2).
    pub const HID_REQ_GET_REPORT: u8 = 0x01;
    pub const HID_REQ_GET_IDLE: u8 = 0x02;
    pub const HID_REQ_GET_PROTOCOL: u8 = 0x03;
    pub const HID_REQ_SET_REPORT: u8 = 0x09;
    pub const HID_REQ_SET_IDLE: u8 = 0x0a;
    pub const HID_REQ_SET_PROTOCOL: u8 = 0x0b;

    /// Report types (high byte of `wValue` in GET_REPORT / SET_REPORT).
    pub const HID_INPUT_REPORT: u8 = 1;
    pub const HID_OUTPUT_REPORT: u8 = 2;
    pub const HID_FEATURE_REPORT: u8 = 3;

    /// Protocols of GET_PROTOCOL / SET_PROTOCOL.
    pub const HID_BOOT_PROTOCOL: u8 = 0;
    pub const HID_REPORT_PROTOCOL: u8 = 1;
}
