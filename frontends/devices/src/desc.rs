//! Standard descriptors as bytes, one field-name comment per byte (USB 2.0 §9.6).
//!
//! Stand-ins until the chapter 9 model crate (`rawgadget-usb`) offers builders: each function
//! returns the exact bytes sent to the host; derived fields (`bLength`, `wTotalLength`,
//! `bNumInterfaces`) are computed here.

/// Descriptor types (USB 2.0 table 9-5, USB 3.2 table 9-6, HID 1.11 §7.1).
pub mod dt {
    pub const DEVICE: u8 = 0x01;
    pub const CONFIG: u8 = 0x02;
    pub const STRING: u8 = 0x03;
    pub const INTERFACE: u8 = 0x04;
    pub const ENDPOINT: u8 = 0x05;
    pub const DEVICE_QUALIFIER: u8 = 0x06;
    pub const OTHER_SPEED_CONFIG: u8 = 0x07;
    pub const BOS: u8 = 0x0f;
    pub const DEVICE_CAPABILITY: u8 = 0x10;
    pub const HID: u8 = 0x21;
    pub const HID_REPORT: u8 = 0x22;
    pub const SS_ENDPOINT_COMP: u8 = 0x30;
}

/// Fields of a device descriptor that a device chooses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub bcd_usb: u16,
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
    pub vendor_id: u16,
    pub product_id: u16,
    pub bcd_device: u16,
    /// String indices (0 = none).
    pub manufacturer: u8,
    pub product: u8,
    pub serial: u8,
}

/// Device descriptor (18 bytes).
pub fn device(info: &DeviceInfo, max_packet0: u8) -> [u8; 18] {
    let [u0, u1] = info.bcd_usb.to_le_bytes();
    let [v0, v1] = info.vendor_id.to_le_bytes();
    let [p0, p1] = info.product_id.to_le_bytes();
    let [d0, d1] = info.bcd_device.to_le_bytes();
    [
        18,                // bLength
        dt::DEVICE,        // bDescriptorType
        u0,                // bcdUSB (lo)
        u1,                // bcdUSB (hi)
        info.class,        // bDeviceClass
        info.subclass,     // bDeviceSubClass
        info.protocol,     // bDeviceProtocol
        max_packet0,       // bMaxPacketSize0
        v0,                // idVendor (lo)
        v1,                // idVendor (hi)
        p0,                // idProduct (lo)
        p1,                // idProduct (hi)
        d0,                // bcdDevice (lo)
        d1,                // bcdDevice (hi)
        info.manufacturer, // iManufacturer
        info.product,      // iProduct
        info.serial,       // iSerialNumber
        1,                 // bNumConfigurations
    ]
}

/// Device qualifier (10 bytes): what the device would look like at the other speed.
pub fn qualifier(info: &DeviceInfo, max_packet0: u8) -> [u8; 10] {
    let [u0, u1] = info.bcd_usb.to_le_bytes();
    [
        10,                   // bLength
        dt::DEVICE_QUALIFIER, // bDescriptorType
        u0,                   // bcdUSB (lo)
        u1,                   // bcdUSB (hi)
        info.class,           // bDeviceClass
        info.subclass,        // bDeviceSubClass
        info.protocol,        // bDeviceProtocol
        max_packet0,          // bMaxPacketSize0
        1,                    // bNumConfigurations
        0,                    // bReserved
    ]
}

/// Configuration header (9 bytes) followed by `body`; `wTotalLength` computed.
pub fn config(
    ty: u8,
    num_interfaces: u8,
    value: u8,
    string: u8,
    attributes: u8,
    max_power: u8,
    body: &[u8],
) -> Vec<u8> {
    let total = u16::try_from(9 + body.len()).expect("configuration fits in wTotalLength");
    let [t0, t1] = total.to_le_bytes();
    let mut v = vec![
        9,              // bLength
        ty,             // bDescriptorType (CONFIG or OTHER_SPEED_CONFIG)
        t0,             // wTotalLength (lo)
        t1,             // wTotalLength (hi)
        num_interfaces, // bNumInterfaces
        value,          // bConfigurationValue
        string,         // iConfiguration
        attributes,     // bmAttributes (bit 7 must be set)
        max_power,      // bMaxPower (2 mA units at FS/HS, 8 mA at SS)
    ];
    v.extend_from_slice(body);
    v
}

/// Interface descriptor (9 bytes).
pub fn interface(number: u8, alt: u8, num_eps: u8, class: [u8; 3], string: u8) -> [u8; 9] {
    [
        9,             // bLength
        dt::INTERFACE, // bDescriptorType
        number,        // bInterfaceNumber
        alt,           // bAlternateSetting
        num_eps,       // bNumEndpoints
        class[0],      // bInterfaceClass
        class[1],      // bInterfaceSubClass
        class[2],      // bInterfaceProtocol
        string,        // iInterface
    ]
}

/// SuperSpeed endpoint companion (6 bytes), required after each endpoint at SS.
pub fn ss_companion(max_burst: u8, attributes: u8, bytes_per_interval: u16) -> [u8; 6] {
    let [b0, b1] = bytes_per_interval.to_le_bytes();
    [
        6,                    // bLength
        dt::SS_ENDPOINT_COMP, // bDescriptorType
        max_burst,            // bMaxBurst
        attributes,           // bmAttributes
        b0,                   // wBytesPerInterval (lo)
        b1,                   // wBytesPerInterval (hi)
    ]
}

/// String descriptor 0: the supported language IDs (here en-US only).
pub fn string_langids() -> [u8; 4] {
    [
        4,          // bLength
        dt::STRING, // bDescriptorType
        0x09,       // wLANGID[0] (lo): 0x0409 en-US
        0x04,       // wLANGID[0] (hi)
    ]
}

/// A string descriptor: UTF-16LE, cut to the 126 code units that fit in `bLength`.
pub fn string(s: &str) -> Vec<u8> {
    let units: Vec<u16> = s.encode_utf16().take(126).collect();
    let mut v = Vec::with_capacity(2 + 2 * units.len());
    v.push((2 + 2 * units.len()) as u8); // bLength
    v.push(dt::STRING); // bDescriptorType
    for u in units {
        v.extend_from_slice(&u.to_le_bytes()); // bString
    }
    v
}

/// BOS with one USB 2.0 extension capability (LPM not supported), 12 bytes.
pub fn bos_usb2_ext() -> [u8; 12] {
    [
        5,                     // bLength (BOS header)
        dt::BOS,               // bDescriptorType
        12,                    // wTotalLength (lo)
        0,                     // wTotalLength (hi)
        1,                     // bNumDeviceCaps
        7,                     // bLength (USB 2.0 extension)
        dt::DEVICE_CAPABILITY, // bDescriptorType
        0x02,                  // bDevCapabilityType: USB 2.0 EXTENSION
        0,                     // bmAttributes (bits 7..0): no LPM
        0,                     // bmAttributes (bits 15..8)
        0,                     // bmAttributes (bits 23..16)
        0,                     // bmAttributes (bits 31..24)
    ]
}

/// BOS for a SuperSpeed device: USB 2.0 extension (LPM) and SuperSpeed USB capability, 22
/// bytes.
pub fn bos_superspeed() -> [u8; 22] {
    [
        5,                     // bLength (BOS header)
        dt::BOS,               // bDescriptorType
        22,                    // wTotalLength (lo)
        0,                     // wTotalLength (hi)
        2,                     // bNumDeviceCaps
        7,                     // bLength (USB 2.0 extension)
        dt::DEVICE_CAPABILITY, // bDescriptorType
        0x02,                  // bDevCapabilityType: USB 2.0 EXTENSION
        0x02,                  // bmAttributes (bits 7..0): LPM supported
        0,                     // bmAttributes (bits 15..8)
        0,                     // bmAttributes (bits 23..16)
        0,                     // bmAttributes (bits 31..24)
        10,                    // bLength (SuperSpeed USB capability)
        dt::DEVICE_CAPABILITY, // bDescriptorType
        0x03,                  // bDevCapabilityType: SUPERSPEED_USB
        0,                     // bmAttributes: no LTM
        0x0e,                  // wSpeedsSupported (lo): FS, HS, SS
        0,                     // wSpeedsSupported (hi)
        0x01,                  // bFunctionalitySupport: full-speed and up
        0x0a,                  // bU1DevExitLat (µs)
        0xff,                  // wU2DevExitLat (lo)
        0x07,                  // wU2DevExitLat (hi): 2047 µs
    ]
}

/// HID class descriptor (9 bytes) announcing one report descriptor.
pub fn hid(report_len: u16) -> [u8; 9] {
    let [r0, r1] = report_len.to_le_bytes();
    [
        9,              // bLength
        dt::HID,        // bDescriptorType
        0x11,           // bcdHID (lo): 1.11
        0x01,           // bcdHID (hi)
        0,              // bCountryCode: not localized
        1,              // bNumDescriptors
        dt::HID_REPORT, // bDescriptorType[0]
        r0,             // wDescriptorLength[0] (lo)
        r1,             // wDescriptorLength[0] (hi)
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_total_length_and_strings() {
        let c = config(dt::CONFIG, 1, 1, 0, 0x80, 50, &[1, 2, 3]);
        assert_eq!(&c[..4], &[9, 2, 12, 0]);
        assert_eq!(string("ab"), vec![6, 3, b'a', 0, b'b', 0]);
        assert_eq!(string(&"x".repeat(300)).len(), 254);
        assert_eq!(bos_usb2_ext()[2] as usize, bos_usb2_ext().len());
        assert_eq!(bos_superspeed()[2] as usize, bos_superspeed().len());
    }
}
