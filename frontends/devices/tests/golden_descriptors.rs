//! Golden descriptor bytes of the built-in devices at every speed INIT accepts (LOW, FULL,
//! HIGH, SUPER), with endpoint numbers as on dummy_udc (contract D1), and Gadget Zero also on a
//! controller with iso endpoints (altsetting 1, contract T9). One comment per descriptor.
//!
//! Captured from the hand-written byte arrays the devices used before they were built with
//! rawgadget-usb's builders; the builders must produce the same bytes. A configuration is
//! written as its pieces (header, then each interface with its descriptors), each piece once.
//!
//! One change since the capture, on purpose: the SuperSpeed configurations' `bMaxPower` is 12,
//! not 50. Both devices draw 100 mA, and at SuperSpeed `bMaxPower` counts 8 mA units (USB 3.2
//! §9.6.3), so the captured 50 declared 400 mA; 12 is what Linux's `encode_bMaxPower` gives
//! (min(100, 900) / 8). Below SuperSpeed 100 mA stays 50 (2 mA units).

use rawgadget::usb::LANG_ID_EN_US;
use rawgadget::{dummy_udc_eps, EpInfo, Speed};
use rawgadget_devices::{gadget_zero, keyboard, Device, KeyboardConfig, ZeroConfig};

#[rustfmt::skip]
const ZERO_DEVICE_LS: &[u8] = &[
    // device: bcdUSB 2.00, class 0xff, bMaxPacketSize0 8, 0525:a4a0, strings 1/2/3, 1 configuration
    0x12, 0x01, 0x00, 0x02, 0xff, 0x00, 0x00, 0x08, 0x25, 0x05, 0xa0, 0xa4,
    0x00, 0x01, 0x01, 0x02, 0x03, 0x01,
];

#[rustfmt::skip]
const ZERO_DEVICE_FS_HS: &[u8] = &[
    // device: bcdUSB 2.00, class 0xff, bMaxPacketSize0 64, 0525:a4a0, strings 1/2/3, 1 configuration
    0x12, 0x01, 0x00, 0x02, 0xff, 0x00, 0x00, 0x40, 0x25, 0x05, 0xa0, 0xa4,
    0x00, 0x01, 0x01, 0x02, 0x03, 0x01,
];

#[rustfmt::skip]
const ZERO_DEVICE_SS: &[u8] = &[
    // device: bcdUSB 3.20, class 0xff, bMaxPacketSize0 9, 0525:a4a0, strings 1/2/3, 1 configuration
    0x12, 0x01, 0x20, 0x03, 0xff, 0x00, 0x00, 0x09, 0x25, 0x05, 0xa0, 0xa4,
    0x00, 0x01, 0x01, 0x02, 0x03, 0x01,
];

#[rustfmt::skip]
const ZERO_ALT0_LS_FS: &[u8] = &[
    // interface 0 alt 0: 4 endpoints, class ff/00/00, iInterface 5
    0x09, 0x04, 0x00, 0x00, 0x04, 0xff, 0x00, 0x00, 0x05,
    // endpoint 0x02 OUT bulk, wMaxPacketSize 64, bInterval 0
    0x07, 0x05, 0x02, 0x02, 0x40, 0x00, 0x00,
    // endpoint 0x81 IN bulk, wMaxPacketSize 64, bInterval 0
    0x07, 0x05, 0x81, 0x02, 0x40, 0x00, 0x00,
    // endpoint 0x03 OUT interrupt, wMaxPacketSize 64, bInterval 1
    0x07, 0x05, 0x03, 0x03, 0x40, 0x00, 0x01,
    // endpoint 0x85 IN interrupt, wMaxPacketSize 64, bInterval 1
    0x07, 0x05, 0x85, 0x03, 0x40, 0x00, 0x01,
];

#[rustfmt::skip]
const ZERO_ALT1_LS_FS: &[u8] = &[
    // interface 0 alt 1: 4 endpoints, class ff/00/00, iInterface 5
    0x09, 0x04, 0x00, 0x01, 0x04, 0xff, 0x00, 0x00, 0x05,
    // endpoint 0x02 OUT bulk, wMaxPacketSize 64, bInterval 0
    0x07, 0x05, 0x02, 0x02, 0x40, 0x00, 0x00,
    // endpoint 0x81 IN bulk, wMaxPacketSize 64, bInterval 0
    0x07, 0x05, 0x81, 0x02, 0x40, 0x00, 0x00,
    // endpoint 0x04 OUT isochronous, wMaxPacketSize 1023, bInterval 4
    0x07, 0x05, 0x04, 0x01, 0xff, 0x03, 0x04,
    // endpoint 0x83 IN isochronous, wMaxPacketSize 1023, bInterval 4
    0x07, 0x05, 0x83, 0x01, 0xff, 0x03, 0x04,
];

#[rustfmt::skip]
const ZERO_ALT0_HS: &[u8] = &[
    // interface 0 alt 0: 4 endpoints, class ff/00/00, iInterface 5
    0x09, 0x04, 0x00, 0x00, 0x04, 0xff, 0x00, 0x00, 0x05,
    // endpoint 0x02 OUT bulk, wMaxPacketSize 512, bInterval 0
    0x07, 0x05, 0x02, 0x02, 0x00, 0x02, 0x00,
    // endpoint 0x81 IN bulk, wMaxPacketSize 512, bInterval 0
    0x07, 0x05, 0x81, 0x02, 0x00, 0x02, 0x00,
    // endpoint 0x03 OUT interrupt, wMaxPacketSize 64, bInterval 4
    0x07, 0x05, 0x03, 0x03, 0x40, 0x00, 0x04,
    // endpoint 0x85 IN interrupt, wMaxPacketSize 64, bInterval 4
    0x07, 0x05, 0x85, 0x03, 0x40, 0x00, 0x04,
];

#[rustfmt::skip]
const ZERO_ALT1_HS: &[u8] = &[
    // interface 0 alt 1: 4 endpoints, class ff/00/00, iInterface 5
    0x09, 0x04, 0x00, 0x01, 0x04, 0xff, 0x00, 0x00, 0x05,
    // endpoint 0x02 OUT bulk, wMaxPacketSize 512, bInterval 0
    0x07, 0x05, 0x02, 0x02, 0x00, 0x02, 0x00,
    // endpoint 0x81 IN bulk, wMaxPacketSize 512, bInterval 0
    0x07, 0x05, 0x81, 0x02, 0x00, 0x02, 0x00,
    // endpoint 0x04 OUT isochronous, wMaxPacketSize 1024, bInterval 4
    0x07, 0x05, 0x04, 0x01, 0x00, 0x04, 0x04,
    // endpoint 0x83 IN isochronous, wMaxPacketSize 1024, bInterval 4
    0x07, 0x05, 0x83, 0x01, 0x00, 0x04, 0x04,
];

#[rustfmt::skip]
const ZERO_ALT0_SS: &[u8] = &[
    // interface 0 alt 0: 4 endpoints, class ff/00/00, iInterface 5
    0x09, 0x04, 0x00, 0x00, 0x04, 0xff, 0x00, 0x00, 0x05,
    // endpoint 0x02 OUT bulk, wMaxPacketSize 1024, bInterval 0
    0x07, 0x05, 0x02, 0x02, 0x00, 0x04, 0x00,
    // SuperSpeed companion: bMaxBurst 0, bmAttributes 0, wBytesPerInterval 0
    0x06, 0x30, 0x00, 0x00, 0x00, 0x00,
    // endpoint 0x81 IN bulk, wMaxPacketSize 1024, bInterval 0
    0x07, 0x05, 0x81, 0x02, 0x00, 0x04, 0x00,
    // SuperSpeed companion: bMaxBurst 0, bmAttributes 0, wBytesPerInterval 0
    0x06, 0x30, 0x00, 0x00, 0x00, 0x00,
    // endpoint 0x03 OUT interrupt, wMaxPacketSize 64, bInterval 4
    0x07, 0x05, 0x03, 0x03, 0x40, 0x00, 0x04,
    // SuperSpeed companion: bMaxBurst 0, bmAttributes 0, wBytesPerInterval 64
    0x06, 0x30, 0x00, 0x00, 0x40, 0x00,
    // endpoint 0x85 IN interrupt, wMaxPacketSize 64, bInterval 4
    0x07, 0x05, 0x85, 0x03, 0x40, 0x00, 0x04,
    // SuperSpeed companion: bMaxBurst 0, bmAttributes 0, wBytesPerInterval 64
    0x06, 0x30, 0x00, 0x00, 0x40, 0x00,
];

#[rustfmt::skip]
const ZERO_ALT1_SS: &[u8] = &[
    // interface 0 alt 1: 4 endpoints, class ff/00/00, iInterface 5
    0x09, 0x04, 0x00, 0x01, 0x04, 0xff, 0x00, 0x00, 0x05,
    // endpoint 0x02 OUT bulk, wMaxPacketSize 1024, bInterval 0
    0x07, 0x05, 0x02, 0x02, 0x00, 0x04, 0x00,
    // SuperSpeed companion: bMaxBurst 0, bmAttributes 0, wBytesPerInterval 0
    0x06, 0x30, 0x00, 0x00, 0x00, 0x00,
    // endpoint 0x81 IN bulk, wMaxPacketSize 1024, bInterval 0
    0x07, 0x05, 0x81, 0x02, 0x00, 0x04, 0x00,
    // SuperSpeed companion: bMaxBurst 0, bmAttributes 0, wBytesPerInterval 0
    0x06, 0x30, 0x00, 0x00, 0x00, 0x00,
    // endpoint 0x04 OUT isochronous, wMaxPacketSize 1024, bInterval 4
    0x07, 0x05, 0x04, 0x01, 0x00, 0x04, 0x04,
    // SuperSpeed companion: bMaxBurst 0, bmAttributes 0, wBytesPerInterval 1024
    0x06, 0x30, 0x00, 0x00, 0x00, 0x04,
    // endpoint 0x83 IN isochronous, wMaxPacketSize 1024, bInterval 4
    0x07, 0x05, 0x83, 0x01, 0x00, 0x04, 0x04,
    // SuperSpeed companion: bMaxBurst 0, bmAttributes 0, wBytesPerInterval 1024
    0x06, 0x30, 0x00, 0x00, 0x00, 0x04,
];

#[rustfmt::skip]
const ZERO_CONFIG_46: &[u8] = &[
    // configuration 1: wTotalLength 46, 1 interface, iConfiguration 4, bmAttributes 0xc0 (self-powered), bMaxPower 50 (100 mA)
    0x09, 0x02, 0x2e, 0x00, 0x01, 0x01, 0x04, 0xc0, 0x32,
];

#[rustfmt::skip]
const ZERO_CONFIG_70: &[u8] = &[
    // configuration 1: wTotalLength 70, 1 interface, iConfiguration 4, bmAttributes 0xc0 (self-powered), bMaxPower 12 (96 mA, SuperSpeed units)
    0x09, 0x02, 0x46, 0x00, 0x01, 0x01, 0x04, 0xc0, 0x0c,
];

#[rustfmt::skip]
const ZERO_CONFIG_83: &[u8] = &[
    // configuration 1: wTotalLength 83, 1 interface, iConfiguration 4, bmAttributes 0xc0 (self-powered), bMaxPower 50 (100 mA)
    0x09, 0x02, 0x53, 0x00, 0x01, 0x01, 0x04, 0xc0, 0x32,
];

#[rustfmt::skip]
const ZERO_CONFIG_131: &[u8] = &[
    // configuration 1: wTotalLength 131, 1 interface, iConfiguration 4, bmAttributes 0xc0 (self-powered), bMaxPower 12 (96 mA, SuperSpeed units)
    0x09, 0x02, 0x83, 0x00, 0x01, 0x01, 0x04, 0xc0, 0x0c,
];

#[rustfmt::skip]
const ZERO_QUALIFIER: &[u8] = &[
    // device qualifier: bcdUSB 2.00, class 0xff, bMaxPacketSize0 64, 1 configuration
    0x0a, 0x06, 0x00, 0x02, 0xff, 0x00, 0x00, 0x40, 0x01, 0x00,
];

#[rustfmt::skip]
const KEYBOARD_DEVICE_LS: &[u8] = &[
    // device: bcdUSB 2.00, class 0x00, bMaxPacketSize0 8, 1d6b:0104, strings 1/2/3, 1 configuration
    0x12, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x08, 0x6b, 0x1d, 0x04, 0x01,
    0x00, 0x01, 0x01, 0x02, 0x03, 0x01,
];

#[rustfmt::skip]
const KEYBOARD_DEVICE_FS_HS: &[u8] = &[
    // device: bcdUSB 2.00, class 0x00, bMaxPacketSize0 64, 1d6b:0104, strings 1/2/3, 1 configuration
    0x12, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x40, 0x6b, 0x1d, 0x04, 0x01,
    0x00, 0x01, 0x01, 0x02, 0x03, 0x01,
];

#[rustfmt::skip]
const KEYBOARD_DEVICE_SS: &[u8] = &[
    // device: bcdUSB 3.20, class 0x00, bMaxPacketSize0 9, 1d6b:0104, strings 1/2/3, 1 configuration
    0x12, 0x01, 0x20, 0x03, 0x00, 0x00, 0x00, 0x09, 0x6b, 0x1d, 0x04, 0x01,
    0x00, 0x01, 0x01, 0x02, 0x03, 0x01,
];

#[rustfmt::skip]
const KEYBOARD_INTERFACE: &[u8] = &[
    // interface 0 alt 0: 1 endpoints, class 03/01/01, iInterface 0
    0x09, 0x04, 0x00, 0x00, 0x01, 0x03, 0x01, 0x01, 0x00,
    // HID 1.11: bCountryCode 0, 1 class descriptor: REPORT (0x22), 63 bytes
    0x09, 0x21, 0x11, 0x01, 0x00, 0x01, 0x22, 0x3f, 0x00,
];

#[rustfmt::skip]
const KEYBOARD_ENDPOINT_LS_FS: &[u8] = &[
    // endpoint 0x85 IN interrupt, wMaxPacketSize 8, bInterval 8
    0x07, 0x05, 0x85, 0x03, 0x08, 0x00, 0x08,
];

#[rustfmt::skip]
const KEYBOARD_ENDPOINT_HS: &[u8] = &[
    // endpoint 0x85 IN interrupt, wMaxPacketSize 8, bInterval 7
    0x07, 0x05, 0x85, 0x03, 0x08, 0x00, 0x07,
];

#[rustfmt::skip]
const KEYBOARD_ENDPOINT_SS: &[u8] = &[
    // endpoint 0x85 IN interrupt, wMaxPacketSize 8, bInterval 7
    0x07, 0x05, 0x85, 0x03, 0x08, 0x00, 0x07,
    // SuperSpeed companion: bMaxBurst 0, bmAttributes 0, wBytesPerInterval 8
    0x06, 0x30, 0x00, 0x00, 0x08, 0x00,
];

#[rustfmt::skip]
const KEYBOARD_CONFIG_34: &[u8] = &[
    // configuration 1: wTotalLength 34, 1 interface, iConfiguration 0, bmAttributes 0xa0 (remote wakeup), bMaxPower 50 (100 mA)
    0x09, 0x02, 0x22, 0x00, 0x01, 0x01, 0x00, 0xa0, 0x32,
];

#[rustfmt::skip]
const KEYBOARD_CONFIG_40: &[u8] = &[
    // configuration 1: wTotalLength 40, 1 interface, iConfiguration 0, bmAttributes 0xa0 (remote wakeup), bMaxPower 12 (96 mA, SuperSpeed units)
    0x09, 0x02, 0x28, 0x00, 0x01, 0x01, 0x00, 0xa0, 0x0c,
];

#[rustfmt::skip]
const KEYBOARD_QUALIFIER: &[u8] = &[
    // device qualifier: bcdUSB 2.00, class 0x00, bMaxPacketSize0 64, 1 configuration
    0x0a, 0x06, 0x00, 0x02, 0x00, 0x00, 0x00, 0x40, 0x01, 0x00,
];

#[rustfmt::skip]
const BOS_SS: &[u8] = &[
    // BOS: wTotalLength 22, 2 capabilities
    0x05, 0x0f, 0x16, 0x00, 0x02,
    // USB 2.0 extension: bmAttributes 0x02 (LPM)
    0x07, 0x10, 0x02, 0x02, 0x00, 0x00, 0x00,
    // SuperSpeed USB: bmAttributes 0, wSpeedsSupported 0x000e (FS/HS/SS), bFunctionalitySupport 1, bU1DevExitLat 10, wU2DevExitLat 2047
    0x0a, 0x10, 0x03, 0x00, 0x0e, 0x00, 0x01, 0x0a, 0xff, 0x07,
];

#[rustfmt::skip]
const ZERO_STRINGS: &[&[u8]] = &[
    // string 0: LANGID 0x0409 (en-US)
    &[
        0x04, 0x03, 0x09, 0x04,
    ],
    // string 1: "rawgadget"
    &[
        0x14, 0x03, 0x72, 0x00, 0x61, 0x00, 0x77, 0x00, 0x67, 0x00, 0x61, 0x00,
        0x64, 0x00, 0x67, 0x00, 0x65, 0x00, 0x74, 0x00,
    ],
    // string 2: "Gadget Zero"
    &[
        0x18, 0x03, 0x47, 0x00, 0x61, 0x00, 0x64, 0x00, 0x67, 0x00, 0x65, 0x00,
        0x74, 0x00, 0x20, 0x00, 0x5a, 0x00, 0x65, 0x00, 0x72, 0x00, 0x6f, 0x00,
    ],
    // string 3: "0123456789.0123456789.0123456789"
    &[
        0x42, 0x03, 0x30, 0x00, 0x31, 0x00, 0x32, 0x00, 0x33, 0x00, 0x34, 0x00,
        0x35, 0x00, 0x36, 0x00, 0x37, 0x00, 0x38, 0x00, 0x39, 0x00, 0x2e, 0x00,
        0x30, 0x00, 0x31, 0x00, 0x32, 0x00, 0x33, 0x00, 0x34, 0x00, 0x35, 0x00,
        0x36, 0x00, 0x37, 0x00, 0x38, 0x00, 0x39, 0x00, 0x2e, 0x00, 0x30, 0x00,
        0x31, 0x00, 0x32, 0x00, 0x33, 0x00, 0x34, 0x00, 0x35, 0x00, 0x36, 0x00,
        0x37, 0x00, 0x38, 0x00, 0x39, 0x00,
    ],
    // string 4: "source/sink"
    &[
        0x18, 0x03, 0x73, 0x00, 0x6f, 0x00, 0x75, 0x00, 0x72, 0x00, 0x63, 0x00,
        0x65, 0x00, 0x2f, 0x00, 0x73, 0x00, 0x69, 0x00, 0x6e, 0x00, 0x6b, 0x00,
    ],
    // string 5: "source and sink data"
    &[
        0x2a, 0x03, 0x73, 0x00, 0x6f, 0x00, 0x75, 0x00, 0x72, 0x00, 0x63, 0x00,
        0x65, 0x00, 0x20, 0x00, 0x61, 0x00, 0x6e, 0x00, 0x64, 0x00, 0x20, 0x00,
        0x73, 0x00, 0x69, 0x00, 0x6e, 0x00, 0x6b, 0x00, 0x20, 0x00, 0x64, 0x00,
        0x61, 0x00, 0x74, 0x00, 0x61, 0x00,
    ],
];

#[rustfmt::skip]
const KEYBOARD_STRINGS: &[&[u8]] = &[
    // string 0: LANGID 0x0409 (en-US)
    &[
        0x04, 0x03, 0x09, 0x04,
    ],
    // string 1: "rawgadget"
    &[
        0x14, 0x03, 0x72, 0x00, 0x61, 0x00, 0x77, 0x00, 0x67, 0x00, 0x61, 0x00,
        0x64, 0x00, 0x67, 0x00, 0x65, 0x00, 0x74, 0x00,
    ],
    // string 2: "Keyboard"
    &[
        0x12, 0x03, 0x4b, 0x00, 0x65, 0x00, 0x79, 0x00, 0x62, 0x00, 0x6f, 0x00,
        0x61, 0x00, 0x72, 0x00, 0x64, 0x00,
    ],
    // string 3: "0001"
    &[
        0x0a, 0x03, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00, 0x31, 0x00,
    ],
];

/// What a device answers at one speed.
struct Golden {
    name: &'static str,
    speed: Speed,
    device: &'static [u8],
    /// The configuration bundle, in pieces.
    config: &'static [&'static [u8]],
    /// Present at high speed only: the device qualifier, and the pieces of the full-speed
    /// configuration, sent as OTHER_SPEED_CONFIGURATION.
    qualifier: Option<(&'static [u8], &'static [&'static [u8]])>,
    bos: Option<&'static [u8]>,
    strings: &'static [&'static [u8]],
}

/// A controller like dummy_udc plus one iso endpoint per direction (addresses 3 IN, 4 OUT).
fn eps_with_iso() -> Vec<EpInfo> {
    let iso = |name: &str, addr, dir_in| EpInfo {
        name: name.into(),
        addr: Some(addr),
        caps: rawgadget_uapi::UsbRawEpCaps::new(false, true, false, false, dir_in, !dir_in),
        maxpacket_limit: 1024,
        max_streams: 0,
    };
    let mut eps = dummy_udc_eps();
    eps.push(iso("ep3in-iso", 3, true));
    eps.push(iso("ep4out-iso", 4, false));
    eps
}

fn build(name: &str, speed: Speed) -> Device {
    let mut device = match name {
        "keyboard" => keyboard(KeyboardConfig::default()).expect("empty text").0,
        _ => {
            gadget_zero(ZeroConfig {
                speed,
                ..ZeroConfig::default()
            })
            .0
        }
    };
    let eps = match name {
        "zero+iso" => eps_with_iso(),
        _ => dummy_udc_eps(),
    };
    device.assign_endpoints(&eps).expect("endpoints");
    device
}

/// USB 2.0 §9.6.4: the other-speed configuration is the configuration at the other speed with
/// `bDescriptorType` OTHER_SPEED_CONFIGURATION (7).
fn as_other_speed(config: &[&[u8]]) -> Vec<u8> {
    let mut v = config.concat();
    v[1] = 0x07;
    v
}

fn table() -> Vec<Golden> {
    let zero = |speed, device, config, qualifier, bos| Golden {
        name: "zero",
        speed,
        device,
        config,
        qualifier,
        bos,
        strings: ZERO_STRINGS,
    };
    let zero_iso = |speed, device, config, qualifier, bos| Golden {
        name: "zero+iso",
        ..zero(speed, device, config, qualifier, bos)
    };
    let kbd = |speed, device, config, qualifier, bos| Golden {
        name: "keyboard",
        speed,
        device,
        config,
        qualifier,
        bos,
        strings: KEYBOARD_STRINGS,
    };
    const ZERO_FS: &[&[u8]] = &[ZERO_CONFIG_46, ZERO_ALT0_LS_FS];
    const ZERO_ISO_FS: &[&[u8]] = &[ZERO_CONFIG_83, ZERO_ALT0_LS_FS, ZERO_ALT1_LS_FS];
    const KEYBOARD_FS: &[&[u8]] = &[
        KEYBOARD_CONFIG_34,
        KEYBOARD_INTERFACE,
        KEYBOARD_ENDPOINT_LS_FS,
    ];
    use Speed::{Full, High, Low, Super};
    // (speed, device descriptor, configuration, (qualifier, other-speed configuration), BOS)
    #[rustfmt::skip]
    let rows = vec![
        zero(Low, ZERO_DEVICE_LS, ZERO_FS, None, None),
        zero(Full, ZERO_DEVICE_FS_HS, ZERO_FS, None, None),
        zero(High, ZERO_DEVICE_FS_HS, &[ZERO_CONFIG_46, ZERO_ALT0_HS], Some((ZERO_QUALIFIER, ZERO_FS)), None),
        zero(Super, ZERO_DEVICE_SS, &[ZERO_CONFIG_70, ZERO_ALT0_SS], None, Some(BOS_SS)),
        zero_iso(Low, ZERO_DEVICE_LS, ZERO_ISO_FS, None, None),
        zero_iso(Full, ZERO_DEVICE_FS_HS, ZERO_ISO_FS, None, None),
        zero_iso(High, ZERO_DEVICE_FS_HS, &[ZERO_CONFIG_83, ZERO_ALT0_HS, ZERO_ALT1_HS], Some((ZERO_QUALIFIER, ZERO_ISO_FS)), None),
        zero_iso(Super, ZERO_DEVICE_SS, &[ZERO_CONFIG_131, ZERO_ALT0_SS, ZERO_ALT1_SS], None, Some(BOS_SS)),
        kbd(Low, KEYBOARD_DEVICE_LS, KEYBOARD_FS, None, None),
        kbd(Full, KEYBOARD_DEVICE_FS_HS, KEYBOARD_FS, None, None),
        kbd(High, KEYBOARD_DEVICE_FS_HS, &[KEYBOARD_CONFIG_34, KEYBOARD_INTERFACE, KEYBOARD_ENDPOINT_HS], Some((KEYBOARD_QUALIFIER, KEYBOARD_FS)), None),
        kbd(Super, KEYBOARD_DEVICE_SS, &[KEYBOARD_CONFIG_40, KEYBOARD_INTERFACE, KEYBOARD_ENDPOINT_SS], None, Some(BOS_SS)),
    ];
    rows
}

/// Every descriptor of every built-in device at every speed, byte for byte.
#[test]
fn golden_descriptor_bytes() {
    for g in table() {
        let at = format!("{} at {:?}", g.name, g.speed);
        let device = build(g.name, g.speed);
        let set = device.descriptor_set(g.speed);
        assert_eq!(set.device, g.device, "device descriptor of {at}");
        assert_eq!(set.config, g.config.concat(), "configuration of {at}");
        assert_eq!(
            set.qualifier.as_deref(),
            g.qualifier.map(|q| q.0),
            "device qualifier of {at}"
        );
        assert_eq!(
            set.other_speed_config,
            g.qualifier.map(|q| as_other_speed(q.1)),
            "other-speed configuration of {at}"
        );
        assert_eq!(set.bos.as_deref(), g.bos, "BOS of {at}");
        for (index, want) in g.strings.iter().enumerate() {
            let index = index as u8;
            assert_eq!(
                device.strings.descriptor(index, LANG_ID_EN_US).as_deref(),
                Some(*want),
                "string {index} of {at}"
            );
        }
        let past = g.strings.len() as u8;
        assert_eq!(
            device.strings.descriptor(past, LANG_ID_EN_US),
            None,
            "string {past} of {at}"
        );
    }
}
