//! Descriptor tests: byte dumps (one comment per descriptor line), builders against the same
//! bytes, malformed inputs, and property tests over pseudo-random bytes and reprs.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::types::*;
use super::*;
use crate::builder::{BosBuilder, ConfigurationBuilder};
use crate::class::{hid::*, USB_CLASS_HID, USB_CLASS_VENDOR_SPEC};
use crate::setup::Direction;
use crate::testutil::Rng;

// ----------------------------------------------------------------------------------------
// Linux root hub, as read from a real machine (bytes from nusb's `test_linux_root_hub`).

#[rustfmt::skip]
static ROOT_HUB_DEVICE: [u8; 18] = [
    0x12, 0x01, 0x00, 0x02, 0x09, 0x00, 0x01, 0x40, 0x6b, // USB 2.00, hub class, protocol 1, mps0 64, ..
    0x1d, 0x02, 0x00, 0x10, 0x05, 0x03, 0x02, 0x01, 0x01, // .. 1d6b:0002, bcdDevice 5.10, strings 3/2/1, 1 config
];

#[rustfmt::skip]
static ROOT_HUB_CONFIG: [u8; 25] = [
    0x09, 0x02, 0x19, 0x00, 0x01, 0x01, 0x00, 0xe0, 0x00, // config 1: 25 bytes, 1 interface, self powered + wakeup, 0 mA
    0x09, 0x04, 0x00, 0x00, 0x01, 0x09, 0x00, 0x00, 0x00, // interface 0 alt 0: 1 endpoint, hub class
    0x07, 0x05, 0x81, 0x03, 0x04, 0x00, 0x0c,             // EP 1 IN interrupt, 4 bytes, bInterval 12
];

#[test]
fn test_deconstruct_device() {
    let v = DeviceView::new_checked(&ROOT_HUB_DEVICE[..]).unwrap();
    assert_eq!(v.length(), 18);
    assert_eq!(v.descriptor_type(), USB_DT_DEVICE);
    assert_eq!(v.usb_version(), 0x0200);
    assert_eq!(v.class(), 0x09);
    assert_eq!(v.subclass(), 0);
    assert_eq!(v.protocol(), 1);
    assert_eq!(v.max_packet_size0(), 64);
    assert_eq!(v.vendor_id(), 0x1d6b);
    assert_eq!(v.product_id(), 0x0002);
    assert_eq!(v.device_version(), 0x0510);
    assert_eq!(v.manufacturer_string(), 3);
    assert_eq!(v.product_string(), 2);
    assert_eq!(v.serial_number_string(), 1);
    assert_eq!(v.num_configurations(), 1);
}

#[test]
fn test_parse_emit_device() {
    let d = DeviceDescriptor::parse(&ROOT_HUB_DEVICE).unwrap();
    assert_eq!(d.to_vec(), ROOT_HUB_DEVICE);
    let built = DeviceDescriptor::builder(0x1d6b, 0x0002)
        .class(0x09, 0, 1)
        .device_version(0x0510)
        .strings(3, 2, 1)
        .build();
    assert_eq!(built, d);
    assert_eq!(
        d.qualifier().to_vec(),
        [
            10,
            USB_DT_DEVICE_QUALIFIER,
            0x00,
            0x02,
            0x09,
            0x00,
            0x01,
            0x40,
            0x01,
            0x00
        ]
    );
}

#[test]
fn root_hub_configuration_walk_and_build() {
    let c = ConfigurationView::new_checked(&ROOT_HUB_CONFIG[..]).unwrap();
    assert_eq!(c.total_length(), 25);
    assert_eq!(c.num_interfaces(), 1);
    assert_eq!(c.attributes(), 0xe0);
    let types: Vec<u8> = c.descriptors().map(|d| d.descriptor_type()).collect();
    assert_eq!(types, [USB_DT_CONFIG, USB_DT_INTERFACE, USB_DT_ENDPOINT]);
    let mut round = Vec::new();
    for d in c.descriptors() {
        let any = AnyDescriptor::parse(d.as_bytes()).unwrap();
        assert!(!matches!(any, AnyDescriptor::Raw(..)), "{any:?}");
        round.extend_from_slice(&any.to_vec());
    }
    assert_eq!(round, ROOT_HUB_CONFIG);

    let ep = EndpointView::new_checked(&ROOT_HUB_CONFIG[18..]).unwrap();
    assert_eq!(ep.address(), EndpointAddress(0x81));
    assert_eq!(ep.address().number(), 1);
    assert_eq!(ep.address().direction(), Direction::In);
    assert_eq!(ep.transfer_type(), TransferType::Interrupt);
    assert_eq!(ep.max_packet(), 4);
    assert_eq!(ep.mult(), 1);
    assert_eq!(ep.interval(), 12);

    let mut b = ConfigurationBuilder::new(1).attributes(0xe0).max_power(0);
    b.interface().alt_setting(0x09, 0, 0).endpoint(
        EndpointAddress(0x81),
        TransferType::Interrupt,
        4,
        12,
    );
    assert_eq!(b.build().unwrap(), ROOT_HUB_CONFIG);
}

#[test]
fn root_hub_lsusb_dump() {
    let mut blob = ROOT_HUB_DEVICE.to_vec();
    blob.extend_from_slice(&ROOT_HUB_CONFIG);
    let text = Dump(&blob).to_string();
    let expect = "\
Device Descriptor:
  bLength                18
  bDescriptorType         1
  bcdUSB               2.00
  bDeviceClass            9 Hub
  bDeviceSubClass         0
  bDeviceProtocol         1
  bMaxPacketSize0        64
  idVendor           0x1d6b
  idProduct          0x0002
  bcdDevice            5.10
  iManufacturer           3
  iProduct                2
  iSerial                 1
  bNumConfigurations      1
  Configuration Descriptor:
    bLength                 9
    bDescriptorType         2
    wTotalLength       0x0019
    bNumInterfaces          1
    bConfigurationValue     1
    iConfiguration          0
    bmAttributes         0xe0
      Self Powered
      Remote Wakeup
    MaxPower                0mA
    Interface Descriptor:
      bLength                 9
      bDescriptorType         4
      bInterfaceNumber        0
      bAlternateSetting       0
      bNumEndpoints           1
      bInterfaceClass         9 Hub
      bInterfaceSubClass      0 
      bInterfaceProtocol      0 
      iInterface              0
      Endpoint Descriptor:
        bLength                 7
        bDescriptorType         5
        bEndpointAddress     0x81  EP 1 IN
        bmAttributes            3
          Transfer Type            Interrupt
        wMaxPacketSize     0x0004  1x 4 bytes
        bInterval              12
";
    assert_eq!(text, expect);
}

// ----------------------------------------------------------------------------------------
// bMaxPower units (USB 3.2 §9.6.3) and OTHER_SPEED_CONFIGURATION (USB 2.0 §9.6.4).

#[rustfmt::skip]
static SS_DEVICE: [u8; 18] = [
    0x12, 0x01, 0x20, 0x03, 0x00, 0x00, 0x00, 0x09, 0x6b, // USB 3.20, class per interface, mps0 2^9, ..
    0x1d, 0x04, 0x01, 0x00, 0x01, 0x01, 0x02, 0x03, 0x01, // .. 1d6b:0104, bcdDevice 1.00, strings 1/2/3, 1 config
];

#[rustfmt::skip]
static CONFIG_MAX_POWER_12: [u8; 9] = [
    0x09, 0x02, 0x09, 0x00, 0x00, 0x01, 0x00, 0x80, 0x0c, // config 1: 9 bytes, no interface, bus powered, bMaxPower 12
];

/// USB 3.2 §9.6.3, as lsusb prints it: bMaxPower counts 8 mA units when the device's bcdUSB is
/// 3.00 or more (12 is 96 mA), 2 mA units otherwise or when no device descriptor is known.
#[test]
fn dump_max_power_unit_follows_bcd_usb() {
    let max_power = |text: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with("MaxPower"))
            .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
    };
    let with_device = [&SS_DEVICE[..], &CONFIG_MAX_POWER_12[..]].concat();
    assert_eq!(
        max_power(&Dump(&with_device).to_string()).as_deref(),
        Some("96mA")
    );
    assert_eq!(
        max_power(&Dump(&CONFIG_MAX_POWER_12).to_string()).as_deref(),
        Some("24mA")
    );
    let alone_ss = Dump::with_usb_version(&CONFIG_MAX_POWER_12, 0x0300).to_string();
    assert_eq!(max_power(&alone_ss).as_deref(), Some("96mA"));
    let alone_hs = Dump::with_usb_version(&CONFIG_MAX_POWER_12, 0x0210).to_string();
    assert_eq!(max_power(&alone_hs).as_deref(), Some("24mA"));
    // A device descriptor in the blob takes over from the given version.
    let over = Dump::with_usb_version(&with_device, 0x0200).to_string();
    assert_eq!(max_power(&over).as_deref(), Some("96mA"));
    assert_eq!(
        Dump(&with_device).to_string(),
        Dump::with_usb_version(&with_device, 0x0110).to_string()
    );
    // The typed repr says the same per speed.
    let c = ConfigurationDescriptor::parse(&CONFIG_MAX_POWER_12).unwrap();
    assert_eq!(c.max_power_ma(crate::Speed::Super), 96);
    assert_eq!(c.max_power_ma(crate::Speed::High), 24);
}

#[rustfmt::skip]
static OTHER_SPEED_KEYBOARD: [u8; 34] = [
    0x09, 0x07, 0x22, 0x00, 0x01, 0x01, 0x00, 0xa0, 0x32, // other-speed config 1: 34 bytes, 1 interface, wakeup, bMaxPower 50
    0x09, 0x04, 0x00, 0x00, 0x01, 0x03, 0x01, 0x01, 0x00, // interface 0: 1 endpoint, HID boot keyboard
    0x09, 0x21, 0x11, 0x01, 0x00, 0x01, 0x22, 0x3f, 0x00, // HID 1.11, country 0, 1 descriptor: report, 63 bytes
    0x07, 0x05, 0x85, 0x03, 0x08, 0x00, 0x08,             // EP 5 IN interrupt, 8 bytes, bInterval 8
];

/// USB 2.0 §9.6.4: an other-speed configuration is a configuration with bDescriptorType 7; it
/// parses, emits and prints as one, under its own title, its bundle nested below it.
#[test]
fn other_speed_configuration_typed_and_dumped() {
    let o = OtherSpeedConfigurationDescriptor::parse(&OTHER_SPEED_KEYBOARD).unwrap();
    assert_eq!(
        (o.0.total_length, o.0.num_interfaces, o.0.max_power),
        (34, 1, 50)
    );
    assert!(o.0.remote_wakeup());
    assert_eq!(o.to_vec(), OTHER_SPEED_KEYBOARD[..9]);
    assert_eq!(
        ConfigurationDescriptor::parse(&OTHER_SPEED_KEYBOARD),
        Err(Error::WrongType {
            expected: USB_DT_CONFIG,
            found: USB_DT_OTHER_SPEED_CONFIG
        })
    );
    assert_eq!(
        OtherSpeedConfigurationDescriptor::parse(&CONFIG_MAX_POWER_12),
        Err(Error::WrongType {
            expected: USB_DT_OTHER_SPEED_CONFIG,
            found: USB_DT_CONFIG
        })
    );
    assert_eq!(
        AnyDescriptor::parse(&OTHER_SPEED_KEYBOARD),
        Ok(AnyDescriptor::OtherSpeedConfiguration(o))
    );
    let text = Dump(&OTHER_SPEED_KEYBOARD).to_string();
    let head = "  Other Speed Configuration Descriptor:
    bLength                 9
    bDescriptorType         7
    wTotalLength       0x0022
    bNumInterfaces          1
    bConfigurationValue     1
    iConfiguration          0
    bmAttributes         0xa0
      (Bus Powered)
      Remote Wakeup
    MaxPower              100mA
    Interface Descriptor:
";
    assert!(text.starts_with(head), "{text}");
    // Below the header, the bundle prints exactly as the same bundle typed CONFIGURATION.
    let mut as_config = OTHER_SPEED_KEYBOARD;
    as_config[1] = USB_DT_CONFIG;
    let config_text = Dump(&as_config).to_string();
    assert_eq!(
        text.lines().skip(3).collect::<Vec<_>>(),
        config_text.lines().skip(3).collect::<Vec<_>>()
    );
    assert!(
        text.contains("\n        HID Device Descriptor:\n"),
        "{text}"
    );
    // The other speed is never SuperSpeed: 2 mA units even after a USB 3 device descriptor.
    let after_ss = [&SS_DEVICE[..], &OTHER_SPEED_KEYBOARD[..]].concat();
    assert!(Dump(&after_ss)
        .to_string()
        .contains("MaxPower              100mA\n"));
}

// ----------------------------------------------------------------------------------------
// A boot keyboard: Novatek 0603:1020, from its `lsusb -v` dump. lsusb could not open the
// device and did not print the HID descriptor, so its bytes (HID 1.10, 63-byte report) are
// the usual boot keyboard values, not read from this device; wTotalLength 34 confirms a
// 9-byte HID descriptor is there.

#[rustfmt::skip]
static KEYBOARD_CONFIG: [u8; 34] = [
    0x09, 0x02, 0x22, 0x00, 0x01, 0x01, 0x00, 0xa0, 0x32, // config 1: 34 bytes, 1 interface, bus powered + wakeup, 100 mA
    0x09, 0x04, 0x00, 0x00, 0x01, 0x03, 0x01, 0x01, 0x00, // interface 0: 1 endpoint, HID boot keyboard
    0x09, 0x21, 0x10, 0x01, 0x00, 0x01, 0x22, 0x3f, 0x00, // HID 1.10, country 0, 1 descriptor: report, 63 bytes
    0x07, 0x05, 0x81, 0x03, 0x08, 0x00, 0x0a,             // EP 1 IN interrupt, 8 bytes, bInterval 10
];

#[test]
fn keyboard_configuration_walk_and_build() {
    let c = ConfigurationView::new_checked(&KEYBOARD_CONFIG[..]).unwrap();
    let all: Vec<AnyDescriptor> = c.descriptors().map(|d| d.parse()).collect();
    assert_eq!(all.len(), 4);
    let AnyDescriptor::Interface(i) = &all[1] else {
        panic!("{:?}", all[1])
    };
    assert_eq!((i.class, i.subclass, i.protocol), (USB_CLASS_HID, 1, 1));
    let AnyDescriptor::Hid(h) = &all[2] else {
        panic!("{:?}", all[2])
    };
    assert_eq!(h.hid_version, 0x0110);
    assert_eq!(h.report_length(), Some(63));
    let hv = HidView::new_checked(&KEYBOARD_CONFIG[18..]).unwrap();
    assert_eq!(hv.num_descriptors(), 1);
    assert_eq!(
        hv.class_descriptors().collect::<Vec<_>>(),
        [HidClassDescriptor {
            descriptor_type: HID_DT_REPORT,
            length: 63
        }]
    );

    let mut b = ConfigurationBuilder::new(1).remote_wakeup(true);
    {
        let mut iface = b.interface();
        let mut alt = iface.alt_setting(
            USB_CLASS_HID,
            USB_INTERFACE_SUBCLASS_BOOT,
            USB_INTERFACE_PROTOCOL_KEYBOARD,
        );
        let mut hid = HidDescriptor::with_report(63);
        hid.hid_version = 0x0110;
        alt.hid(&hid);
        let ep = alt.endpoint_in(TransferType::Interrupt, 8, 10).unwrap();
        assert_eq!(ep, EndpointAddress(0x81));
    }
    assert_eq!(b.build().unwrap(), KEYBOARD_CONFIG);

    let text = Dump(&KEYBOARD_CONFIG).to_string();
    assert!(
        text.contains("      bInterfaceProtocol      1 Keyboard\n"),
        "{text}"
    );
    assert!(text.contains("        HID Device Descriptor:\n          bLength                 9\n"));
    assert!(
        text.contains("          bDescriptorType        34 Report\n"),
        "{text}"
    );
    assert!(
        text.contains("      (Bus Powered)\n      Remote Wakeup\n"),
        "{text}"
    );
}

// ----------------------------------------------------------------------------------------
// Gadget Zero (g_zero), source/sink configuration at high speed on dummy_udc, as composed by
// drivers/usb/gadget/legacy/zero.c and function/f_sourcesink.c with default module
// parameters (isoc_maxpacket 1024, isoc_interval 4, isoc_mult 0): configuration value 3,
// self powered so bMaxPower 0, iConfiguration 4 ("source and sink data"), iInterface never
// set; endpoints from dummy_hcd's ep1in-bulk, ep2out-bulk, ep3in-iso, ep4out-iso.

#[rustfmt::skip]
static GADGET_ZERO_HS_CONFIG: [u8; 69] = [
    0x09, 0x02, 0x45, 0x00, 0x01, 0x03, 0x04, 0xc0, 0x00, // config 3: 69 bytes, 1 interface, self powered
    0x09, 0x04, 0x00, 0x00, 0x02, 0xff, 0x00, 0x00, 0x00, // interface 0 alt 0: 2 endpoints, vendor
    0x07, 0x05, 0x81, 0x02, 0x00, 0x02, 0x00,             // EP 1 IN bulk 512 (source)
    0x07, 0x05, 0x02, 0x02, 0x00, 0x02, 0x00,             // EP 2 OUT bulk 512 (sink)
    0x09, 0x04, 0x00, 0x01, 0x04, 0xff, 0x00, 0x00, 0x00, // interface 0 alt 1: 4 endpoints, vendor
    0x07, 0x05, 0x81, 0x02, 0x00, 0x02, 0x00,             // EP 1 IN bulk 512
    0x07, 0x05, 0x02, 0x02, 0x00, 0x02, 0x00,             // EP 2 OUT bulk 512
    0x07, 0x05, 0x83, 0x01, 0x00, 0x04, 0x04,             // EP 3 IN iso 1024, bInterval 4
    0x07, 0x05, 0x04, 0x01, 0x00, 0x04, 0x04,             // EP 4 OUT iso 1024, bInterval 4
];

#[test]
fn gadget_zero_built_with_explicit_and_allocated_endpoints() {
    let mut b = ConfigurationBuilder::new(3)
        .self_powered(true)
        .max_power(0)
        .string(4);
    {
        let mut iface = b.interface();
        assert_eq!(iface.number(), 0);
        let mut alt0 = iface.alt_setting(USB_CLASS_VENDOR_SPEC, 0, 0);
        // Allocated IN numbers start at 1; dummy_udc's ep2out-bulk is given explicitly (the
        // allocator would pick OUT 1, which dummy_udc does not have).
        let src = alt0.endpoint_in(TransferType::Bulk, 512, 0).unwrap();
        assert_eq!(src, EndpointAddress(0x81));
        let sink = alt0.endpoint(EndpointAddress(0x02), TransferType::Bulk, 512, 0);
        let mut alt1 = iface.alt_setting(USB_CLASS_VENDOR_SPEC, 0, 0);
        // The same bulk endpoints again: explicit addresses.
        alt1.endpoint(src, TransferType::Bulk, 512, 0);
        alt1.endpoint(sink, TransferType::Bulk, 512, 0);
        alt1.endpoint(EndpointAddress(0x83), TransferType::Isochronous, 1024, 4);
        alt1.endpoint(EndpointAddress(0x04), TransferType::Isochronous, 1024, 4);
    }
    assert_eq!(b.build().unwrap(), GADGET_ZERO_HS_CONFIG);
}

#[test]
fn gadget_zero_endpoints_for_ep_enable() {
    let c = ConfigurationView::new_checked(&GADGET_ZERO_HS_CONFIG[..]).unwrap();
    let eps: Vec<EndpointDescriptor> = c
        .descriptors()
        .filter_map(|d| match d.parse() {
            AnyDescriptor::Endpoint(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(eps.len(), 6);
    let iso_in = eps[4];
    assert_eq!(iso_in.number(), 3);
    assert_eq!(iso_in.direction(), Direction::In);
    assert_eq!(iso_in.transfer_type(), TransferType::Isochronous);
    assert_eq!(iso_in.max_packet(), 1024);
    // spec §1.3: EP_ENABLE copies 9 bytes; a 7-byte descriptor ends in two zero bytes.
    assert_eq!(
        iso_in.to_ioctl_bytes(),
        [7, 5, 0x83, 0x01, 0x00, 0x04, 0x04, 0, 0]
    );
    let audio = EndpointDescriptor {
        audio: Some(AudioEndpointExtension {
            refresh: 3,
            synch_address: 0x85,
        }),
        ..iso_in
    };
    assert_eq!(
        audio.to_ioctl_bytes(),
        [9, 5, 0x83, 0x01, 0x00, 0x04, 0x04, 3, 0x85]
    );
    assert_eq!(
        EndpointDescriptor::parse(&audio.to_ioctl_bytes()),
        Ok(audio)
    );
    let hb = iso_in.with_mult(3);
    assert_eq!(hb.max_packet_size, 0x1400);
    assert_eq!((hb.max_packet(), hb.mult()), (1024, 3));
}

// ----------------------------------------------------------------------------------------
// Dell webcam, the first part of a real capture (nusb's `test_dell_webcam`, which omits
// descriptors): wTotalLength says 675 bytes but fewer are here, a vendor descriptor 0xff
// opens the bundle, then an IAD, video class descriptors and iso endpoints with mult bits.

#[rustfmt::skip]
static DELL_WEBCAM_PART: &[u8] = &[
    0x09, 0x02, 0xa3, 0x02, 0x02, 0x01, 0x00, 0x80, 0xfa, // config 1: claims 675 bytes, 2 interfaces, 500 mA
    0x28, 0xff, 0x42, 0x49, 0x53, 0x54, 0x00, 0x01, 0x06, 0x01, 0x10, 0x00, // vendor (0xff), 40 bytes ..
    0x00, 0x00, 0x00, 0x00, 0xd1, 0x10, 0xd0, 0x07, 0xd2, 0x11, 0xf4, 0x01,
    0xd3, 0x12, 0xf4, 0x01, 0xd4, 0x13, 0xf4, 0x01, 0xd5, 0x14, 0xd0, 0x07,
    0xd6, 0x15, 0xf4, 0x01,
    0x08, 0x0b, 0x00, 0x02, 0x0e, 0x03, 0x00, 0x05,       // IAD: interfaces 0-1, video, iFunction 5
    0x09, 0x04, 0x00, 0x00, 0x01, 0x0e, 0x01, 0x00, 0x05, // interface 0: video control, 1 endpoint
    0x0d, 0x24, 0x01, 0x00, 0x01, 0x67, 0x00, 0xc0, 0xe1, 0xe4, 0x00, 0x01, 0x01, // VC header
    0x07, 0x05, 0x83, 0x03, 0x10, 0x00, 0x06,             // EP 3 IN interrupt 16
    0x05, 0x25, 0x03, 0x80, 0x00,                         // CS endpoint
    0x09, 0x04, 0x01, 0x00, 0x00, 0x0e, 0x02, 0x00, 0x00, // interface 1 alt 0: video streaming, 0 endpoints
    0x09, 0x04, 0x01, 0x02, 0x01, 0x0e, 0x02, 0x00, 0x00, // interface 1 alt 2
    0x07, 0x05, 0x81, 0x05, 0x20, 0x0b, 0x01,             // EP 1 IN iso async, 0x0b20: 2x 800 bytes
];

#[test]
fn webcam_lying_total_length_and_vendor_junk_survive() {
    let c = ConfigurationView::new_checked(DELL_WEBCAM_PART).unwrap();
    assert_eq!(c.total_length(), 675);
    assert!(DELL_WEBCAM_PART.len() < 675);
    // The bundle is what is there; the walk ends cleanly at the end of the bytes.
    assert_eq!(c.bundle(), DELL_WEBCAM_PART);
    let mut it = c.descriptors();
    let all: Vec<AnyDescriptor> = it.by_ref().map(|d| d.parse()).collect();
    assert_eq!(it.error(), None);
    assert_eq!(all.len(), 10);
    assert!(matches!(&all[1], AnyDescriptor::Raw(r, None) if r.bytes.len() == 40));
    let AnyDescriptor::InterfaceAssociation(iad) = all[2] else {
        panic!("{:?}", all[2])
    };
    assert_eq!(
        (iad.first_interface, iad.interface_count, iad.class),
        (0, 2, 0x0e)
    );
    let AnyDescriptor::Endpoint(iso) = all[9] else {
        panic!("{:?}", all[9])
    };
    assert_eq!((iso.max_packet(), iso.mult()), (800, 2));
    let round: Vec<u8> = all.iter().flat_map(|d| d.to_vec()).collect();
    assert_eq!(round, DELL_WEBCAM_PART);
    // The lie is kept: the header repr says 675.
    let AnyDescriptor::Configuration(h) = all[0] else {
        panic!()
    };
    assert_eq!(h.total_length, 675);
}

// ----------------------------------------------------------------------------------------
// Malformed input: never a panic, the walk stops with the reason and the rest of the bytes.

#[test]
fn iterator_stops_on_blength_0_1_and_overlong() {
    let cases: &[(&[u8], usize, Error)] = &[
        (
            &[9, 4, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1],
            9,
            Error::BadLength { length: 0 },
        ),
        (
            &[9, 4, 0, 0, 0, 0, 0, 0, 0, 1, 5],
            9,
            Error::BadLength { length: 1 },
        ),
        (
            &[9, 4, 0, 0, 0, 0, 0, 0, 0, 7, 5, 0x81],
            9,
            Error::Truncated { need: 7, have: 3 },
        ),
        (
            &[9, 4, 0, 0, 0, 0, 0, 0, 0, 7],
            9,
            Error::Truncated { need: 2, have: 1 },
        ),
    ];
    for (blob, good, err) in cases {
        let mut it = Descriptors::new(blob);
        assert_eq!(it.by_ref().count(), 1, "{blob:?}");
        assert_eq!(it.error(), Some(*err), "{blob:?}");
        assert_eq!(it.offset(), *good);
        assert_eq!(it.remaining(), &blob[*good..]);
        // Stays stopped.
        assert_eq!(it.next(), None);
        let dump = Dump(blob).to_string();
        assert!(dump.contains("** stopped at byte 9"), "{dump}");
    }
}

#[test]
fn typed_parsers_refuse_wrong_lengths() {
    // Device descriptor with bLength 17 / 19.
    let mut d = ROOT_HUB_DEVICE;
    d[0] = 17;
    assert_eq!(
        DeviceDescriptor::parse(&d),
        Err(Error::BadLength { length: 17 })
    );
    d[0] = 19;
    assert_eq!(
        DeviceDescriptor::parse(&d),
        Err(Error::BadLength { length: 19 }),
        "bLength outside 18..=18 is refused before the buffer check"
    );
    // Endpoint of 8 bytes (neither 7 nor 9).
    assert_eq!(
        EndpointDescriptor::parse(&[8, 5, 0x81, 2, 0, 2, 0, 0]),
        Err(Error::BadLength { length: 8 })
    );
    // Odd string.
    assert!(matches!(
        StringDescriptor::parse(&[3, 3, b'a']),
        Err(Error::Malformed(_))
    ));
    // HID claiming 2 descriptors in 9 bytes.
    assert!(matches!(
        HidDescriptor::parse(&[9, 0x21, 0x11, 1, 0, 2, 0x22, 0x3f, 0]),
        Err(Error::Malformed(_))
    ));
    // Wrong type.
    assert_eq!(
        InterfaceDescriptor::parse(&ROOT_HUB_CONFIG),
        Err(Error::WrongType {
            expected: USB_DT_INTERFACE,
            found: USB_DT_CONFIG
        })
    );
    // Views over garbage still answer.
    let v = DeviceView::new_unchecked(&[0x12u8, 1, 0x00][..]);
    assert_eq!(
        (v.usb_version(), v.vendor_id(), v.num_configurations()),
        (0, 0, 0)
    );
    assert!(v.check_len().is_err());
    assert_eq!(v.as_bytes(), [0x12, 1, 0]);
}

#[test]
fn malformed_descriptor_prints_raw_fields() {
    let bad = [8u8, 5, 0x81, 2, 0, 2, 0, 0];
    let d = Descriptor::new(&bad).unwrap();
    let text = d.to_string();
    assert_eq!(
        text,
        "Descriptor ENDPOINT (unparsed: invalid bLength 8):\n  bLength                 8\n  \
         bDescriptorType         5 0x05\n  data                      81 02 00 02 00 00\n"
    );
}

#[test]
fn raw_descriptor_keeps_bytes_verbatim() {
    // A configuration whose wTotalLength lies and whose interface says bLength 200.
    let lie = [9u8, 2, 0xff, 0xff, 1, 1, 0, 0x80, 50, 200, 4, 0];
    let raw = RawDescriptor::parse(&lie).unwrap();
    assert_eq!(raw.to_vec(), lie);
    assert_eq!(raw.length(), 9);
    let mut it = raw.descriptors();
    assert_eq!(it.by_ref().count(), 1);
    assert_eq!(it.error(), Some(Error::Truncated { need: 200, have: 3 }));
    assert_eq!(
        RawDescriptor::with_body(0x24, &[1, 2]).bytes,
        [4, 0x24, 1, 2]
    );
    assert_eq!(RawDescriptor::default().length(), 0);
    // A builder carries raw bytes through untouched.
    let mut b = ConfigurationBuilder::new(1);
    b.raw(&[200, 4, 0]);
    let out = b.build().unwrap();
    assert_eq!(&out[9..], [200, 4, 0]);
    assert_eq!(u16::from_le_bytes([out[2], out[3]]), 12);
}

// ----------------------------------------------------------------------------------------
// Builders against hand-written bytes.

#[test]
fn builder_function_fills_iad_and_counts() {
    let mut b = ConfigurationBuilder::new(1);
    {
        let mut f = b.function(0x02, 0x02, 0x01);
        f.string(7);
        f.interface()
            .alt_setting(0x02, 0x02, 0x01)
            .descriptor(0x24, &[0x00, 0x10, 0x01]);
        let mut data = f.interface();
        let mut alt = data.alt_setting(0x0a, 0, 0);
        alt.endpoint_in(TransferType::Bulk, 512, 0).unwrap();
        alt.endpoint_out(TransferType::Bulk, 512, 0).unwrap();
    }
    #[rustfmt::skip]
    let want: &[u8] = &[
        9, 2, 54, 0, 2, 1, 0, 0x80, 50,  // config: 54 bytes, 2 interfaces
        8, 11, 0, 2, 2, 2, 1, 7,         // IAD: first 0, count 2, CDC ACM, iFunction 7
        9, 4, 0, 0, 0, 2, 2, 1, 0,       // interface 0: no endpoints, CDC ACM
        5, 0x24, 0x00, 0x10, 0x01,       // CDC header functional descriptor
        9, 4, 1, 0, 2, 0x0a, 0, 0, 0,    // interface 1: 2 endpoints, CDC data
        7, 5, 0x81, 2, 0, 2, 0,          // EP 1 IN bulk 512
        7, 5, 0x01, 2, 0, 2, 0,          // EP 1 OUT bulk 512
    ];
    assert_eq!(b.build().unwrap(), want);
}

#[test]
fn builder_ss_companion_and_overflow_errors() {
    let mut b = ConfigurationBuilder::new(1);
    b.interface().alt_setting(0xff, 0, 0).endpoint(
        EndpointAddress(0x81),
        TransferType::Bulk,
        1024,
        0,
    );
    // Companion lands after the endpoint when added right after it.
    let mut b2 = ConfigurationBuilder::new(1);
    {
        let mut i = b2.interface();
        let mut alt = i.alt_setting(0xff, 0, 0);
        alt.endpoint(EndpointAddress(0x81), TransferType::Bulk, 1024, 0);
        alt.ss_companion(&SsEndpointCompanionDescriptor {
            max_burst: 15,
            attributes: 0,
            bytes_per_interval: 0,
        });
    }
    let out = b2.build().unwrap();
    assert_eq!(&out[25..], [6, 0x30, 15, 0, 0, 0]);
    let _ = b.build().unwrap();

    // 16 IN endpoints cannot be allocated.
    let mut b3 = ConfigurationBuilder::new(1);
    {
        let mut i = b3.interface();
        let mut alt = i.alt_setting(0xff, 0, 0);
        for n in 1..=15u8 {
            assert_eq!(
                alt.endpoint_in(TransferType::Bulk, 512, 0)
                    .unwrap()
                    .number(),
                n
            );
        }
        assert!(matches!(
            alt.endpoint_in(TransferType::Bulk, 512, 0),
            Err(Error::TooLong(_))
        ));
    }
    // A class descriptor too long for bLength, and a bundle too long for wTotalLength.
    let mut b4 = ConfigurationBuilder::new(1);
    b4.descriptor(0x24, &[0; 254]);
    assert!(matches!(b4.build(), Err(Error::TooLong(_))));
    let mut b5 = ConfigurationBuilder::new(1);
    for _ in 0..300 {
        b5.raw(&[0; 255]);
    }
    assert!(matches!(b5.build(), Err(Error::TooLong(_))));
}

#[test]
fn bos_builder_matches_hand_written_bytes() {
    let bos = BosBuilder::new()
        .usb20_extension(capability::USB_LPM_SUPPORT)
        .superspeed(SuperSpeedUsbCapability::linux_default())
        .build()
        .unwrap();
    #[rustfmt::skip]
    let want: &[u8] = &[
        5, 0x0f, 22, 0, 2,                        // BOS: 22 bytes, 2 capabilities
        7, 0x10, 0x02, 0x02, 0, 0, 0,             // USB 2.0 extension: LPM
        10, 0x10, 0x03, 0x00, 0x0f, 0x00, 0x01, 0x01, 0xf4, 0x01, // SuperSpeed: speeds 0x000f, U1 1, U2 500
    ];
    assert_eq!(bos, want);
    let v = BosView::new_checked(&bos[..]).unwrap();
    assert_eq!((v.total_length(), v.num_device_caps()), (22, 2));
    let caps: Vec<AnyDescriptor> = v.descriptors().skip(1).map(|d| d.parse()).collect();
    assert_eq!(
        caps,
        [
            AnyDescriptor::DeviceCapability(DeviceCapability::Usb20Extension {
                attributes: capability::USB_LPM_SUPPORT
            }),
            AnyDescriptor::DeviceCapability(DeviceCapability::SuperSpeedUsb(
                SuperSpeedUsbCapability::linux_default()
            )),
        ]
    );
    // A container ID capability is kept raw.
    let mut with_other = BosBuilder::new()
        .capability(&DeviceCapability::Other {
            capability_type: 4,
            data: vec![0; 17],
        })
        .build()
        .unwrap();
    assert_eq!(with_other[2], 25);
    let cap = DeviceCapability::parse(&with_other[5..]).unwrap();
    assert_eq!(cap.capability_type(), 4);
    with_other[7] = 2; // now claims USB 2.0 extension with 20 bytes
    assert_eq!(
        DeviceCapability::parse(&with_other[5..]),
        Err(Error::BadLength { length: 20 })
    );
    let text = Dump(&bos).to_string();
    assert!(
        text.contains("  Binary Object Store Descriptor:\n"),
        "{text}"
    );
    assert!(
        text.contains("Device can operate at SuperSpeed (5Gbps)"),
        "{text}"
    );
}

#[test]
fn string_descriptors() {
    let s = StringDescriptor::new("Gadget Zero").unwrap();
    let bytes = s.to_vec();
    assert_eq!(bytes[0], 24);
    assert_eq!(&bytes[2..6], [b'G', 0, b'a', 0]);
    assert_eq!(StringDescriptor::parse(&bytes), Ok(s.clone()));
    assert_eq!(
        StringView::new_checked(&bytes[..])
            .unwrap()
            .to_string_lossy(),
        "Gadget Zero"
    );
    // An unpaired surrogate survives a round trip.
    let odd = StringDescriptor::from_units(vec![0xd800, 0x41]).unwrap();
    assert_eq!(StringDescriptor::parse(&odd.to_vec()), Ok(odd.clone()));
    assert_eq!(odd.to_string_lossy(), "\u{fffd}A");
    let langs = StringDescriptor::languages(&[0x0409, 0x0407]).unwrap();
    assert_eq!(langs.to_vec(), [6, 3, 0x09, 0x04, 0x07, 0x04]);
    assert!(StringDescriptor::from_units(vec![0; 127]).is_err());
}

// ----------------------------------------------------------------------------------------
// Properties.

/// Every parser over pseudo-random bytes: no panic, and whatever parses emits exactly the
/// bytes it came from (parsing never normalises).
#[test]
fn arbitrary_bytes_never_panic_and_parse_emit_is_exact() {
    let mut rng = Rng::new(0xde5c);
    let mut buf = [0u8; 300];
    let mut parsed = 0usize;
    for i in 0..100_000 {
        let mut len = rng.below(buf.len());
        rng.fill(&mut buf[..]);
        // Make typed parsers reachable: a known type and a plausible bLength most of the
        // time, with the buffer at least that long.
        if i % 4 != 0 {
            let types = [1u8, 2, 3, 4, 5, 6, 7, 0x0b, 0x0f, 0x10, 0x21, 0x30, 0x24];
            buf[1] = types[rng.below(types.len())];
            let lens = [18u8, 9, 7, 10, 8, 5, 6, 2, 3, 12, 15];
            buf[0] = if i % 3 == 0 {
                rng.byte()
            } else {
                lens[rng.below(lens.len())]
            };
            if buf[1] == 0x10 {
                buf[2] = [2u8, 3, 4][rng.below(3)];
            }
            if buf[1] == 0x21 && i % 2 == 0 {
                buf[5] = (buf[0].saturating_sub(6) / 3).max(1);
                buf[0] = 6 + 3 * buf[5];
            }
            len = len.max(buf[0] as usize);
        }
        check_all_parsers(&buf[..len], &mut parsed);
    }
    assert!(
        parsed > 10_000,
        "only {parsed} typed parses: generator too weak"
    );
}

fn check_all_parsers(b: &[u8], parsed: &mut usize) {
    fn exact<R: Repr + PartialEq + core::fmt::Debug>(b: &[u8], parsed: &mut usize) {
        if let Ok(x) = R::parse(b) {
            *parsed += 1;
            let out = x.to_vec();
            assert_eq!(out, &b[..out.len()], "emit(parse(b)) differs");
            assert_eq!(out.len(), b[0] as usize);
            assert_eq!(R::parse(&out).as_ref(), Ok(&x));
        }
    }
    exact::<DeviceDescriptor>(b, parsed);
    exact::<ConfigurationDescriptor>(b, parsed);
    exact::<OtherSpeedConfigurationDescriptor>(b, parsed);
    exact::<InterfaceDescriptor>(b, parsed);
    exact::<EndpointDescriptor>(b, parsed);
    exact::<StringDescriptor>(b, parsed);
    exact::<DeviceQualifierDescriptor>(b, parsed);
    exact::<BosDescriptor>(b, parsed);
    exact::<DeviceCapability>(b, parsed);
    exact::<SsEndpointCompanionDescriptor>(b, parsed);
    exact::<HidDescriptor>(b, parsed);
    exact::<InterfaceAssociationDescriptor>(b, parsed);
    let _ = crate::ControlRequest::parse(b);
    let any = AnyDescriptor::parse_lenient(b);
    if let Ok(d) = Descriptor::new(b) {
        assert_eq!(any.to_vec(), d.as_bytes());
    }
    let _ = any.to_string();
    let mut it = Descriptors::new(b);
    let walked: usize = it.by_ref().map(|d| d.as_bytes().len()).sum();
    assert_eq!(walked + it.remaining().len(), b.len());
    let _ = Dump(b).to_string();
    // Views over the same bytes never panic either.
    let _ = (
        DeviceView::new_unchecked(b).device_version(),
        EndpointView::new_unchecked(b).mult(),
    );
    let _ = ConfigurationView::new_unchecked(b).descriptors().count();
    let _ = BosView::new_unchecked(b).descriptors().count();
    let _ = HidView::new_unchecked(b).class_descriptors().count();
    let _: String = StringView::new_unchecked(b).to_string_lossy();
}

/// parse(emit(x)) == x for pseudo-random reprs of every type.
#[test]
fn random_reprs_round_trip() {
    let mut r = Rng::new(42);
    fn rt<R: Repr + PartialEq + core::fmt::Debug>(x: R) {
        let bytes = x.to_vec();
        assert_eq!(bytes.len(), x.buffer_len());
        assert_eq!(R::parse(&bytes), Ok(x));
    }
    for _ in 0..20_000 {
        let u16r = |r: &mut Rng| r.next_u64() as u16;
        rt(DeviceDescriptor {
            usb_version: u16r(&mut r),
            class: r.byte(),
            subclass: r.byte(),
            protocol: r.byte(),
            max_packet_size0: r.byte(),
            vendor_id: u16r(&mut r),
            product_id: u16r(&mut r),
            device_version: u16r(&mut r),
            manufacturer_string: r.byte(),
            product_string: r.byte(),
            serial_number_string: r.byte(),
            num_configurations: r.byte(),
        });
        let config = ConfigurationDescriptor {
            total_length: u16r(&mut r),
            num_interfaces: r.byte(),
            configuration_value: r.byte(),
            configuration_string: r.byte(),
            attributes: r.byte(),
            max_power: r.byte(),
        };
        rt(config);
        rt(OtherSpeedConfigurationDescriptor(config));
        rt(InterfaceDescriptor {
            interface_number: r.byte(),
            alternate_setting: r.byte(),
            num_endpoints: r.byte(),
            class: r.byte(),
            subclass: r.byte(),
            protocol: r.byte(),
            interface_string: r.byte(),
        });
        rt(EndpointDescriptor {
            address: EndpointAddress(r.byte()),
            attributes: r.byte(),
            max_packet_size: u16r(&mut r),
            interval: r.byte(),
            audio: (r.byte() & 1 == 1).then(|| AudioEndpointExtension {
                refresh: r.byte(),
                synch_address: r.byte(),
            }),
        });
        let n = r.below(127);
        rt(StringDescriptor::from_units((0..n).map(|_| u16r(&mut r)).collect()).unwrap());
        rt(DeviceQualifierDescriptor {
            usb_version: u16r(&mut r),
            class: r.byte(),
            subclass: r.byte(),
            protocol: r.byte(),
            max_packet_size0: r.byte(),
            num_configurations: r.byte(),
            reserved: r.byte(),
        });
        rt(BosDescriptor {
            total_length: u16r(&mut r),
            num_device_caps: r.byte(),
        });
        rt(DeviceCapability::Usb20Extension {
            attributes: r.next_u64() as u32,
        });
        rt(DeviceCapability::SuperSpeedUsb(SuperSpeedUsbCapability {
            attributes: r.byte(),
            speeds_supported: u16r(&mut r),
            functionality_support: r.byte(),
            u1_exit_latency: r.byte(),
            u2_exit_latency: u16r(&mut r),
        }));
        let ty = loop {
            let t = r.byte();
            if t != 2 && t != 3 {
                break t;
            }
        };
        let n = r.below(253);
        rt(DeviceCapability::Other {
            capability_type: ty,
            data: (0..n).map(|_| r.byte()).collect(),
        });
        rt(SsEndpointCompanionDescriptor {
            max_burst: r.byte(),
            attributes: r.byte(),
            bytes_per_interval: u16r(&mut r),
        });
        let n = r.below(HID_MAX_CLASS_DESCRIPTORS + 1);
        rt(HidDescriptor {
            hid_version: u16r(&mut r),
            country_code: r.byte(),
            descriptors: (0..n)
                .map(|_| HidClassDescriptor {
                    descriptor_type: r.byte(),
                    length: u16r(&mut r),
                })
                .collect(),
        });
        rt(InterfaceAssociationDescriptor {
            first_interface: r.byte(),
            interface_count: r.byte(),
            class: r.byte(),
            subclass: r.byte(),
            protocol: r.byte(),
            function_string: r.byte(),
        });
        let n = r.below(64);
        rt(RawDescriptor::new(
            (0..n).map(|_| r.byte()).collect::<Vec<u8>>(),
        ));
    }
}
