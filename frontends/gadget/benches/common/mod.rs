//! The small vendor device both benches enumerate: one configuration with a bulk IN and a bulk
//! OUT endpoint (512 bytes, high speed), no strings.

pub mod measure;

use rawgadget::{EndpointAddress, EndpointDescriptor, TransferType};

pub const BULK_IN: [u8; 7] = [7, 5, 0x81, 2, 0x00, 0x02, 0];
pub const BULK_OUT: [u8; 7] = [7, 5, 0x02, 2, 0x00, 0x02, 0];

/// bcdUSB 2.00, vendor class, VID:PID 1d6b:0104, one configuration, no strings.
pub const DEVICE: [u8; 18] = [
    18, 1, 0x00, 0x02, 0xff, 0, 0, 64, 0x6b, 0x1d, 0x04, 0x01, 0, 1, 0, 0, 0, 1,
];

pub fn config_descriptor() -> Vec<u8> {
    let mut c = vec![9, 2, 32, 0, 1, 1, 0, 0x80, 50];
    c.extend_from_slice(&[9, 4, 0, 0, 2, 0xff, 0, 0, 0]);
    c.extend_from_slice(&BULK_IN);
    c.extend_from_slice(&BULK_OUT);
    c
}

pub fn endpoint_descriptor(bytes: &[u8; 7]) -> EndpointDescriptor {
    EndpointDescriptor::new(EndpointAddress(bytes[2]), TransferType::Bulk, 512, 0)
}
