//! Reference data: what EPS_INFO reports on the kernel's `dummy_udc` (contract D1).
//!
//! This is observable ABI output of the one controller every raw-gadget program is written
//! against, so it lives here, once: the controller model serves it, the engine's test mock
//! and the gadget API's offline endpoint assignment read it.

use crate::UsbRawEpCaps;

/// The gadget (UDC driver) name, `dummy_hcd.c:59`; device names are `dummy_udc.N` (D2).
pub const DRIVER_NAME: &str = "dummy_udc";

/// Every endpoint's `maxpacket_limit` (`usb_ep_set_maxpacket_limit(&ep->ep, ~0)`, stored as
/// 0xffff, `dummy_hcd.c:1088`).
pub const MAXPACKET_LIMIT: u16 = 65535;

/// Every endpoint's `max_streams` (`dummy_hcd.c:1089`).
pub const MAX_STREAMS: u16 = 16;

const BULK_IN: UsbRawEpCaps = UsbRawEpCaps::new(false, false, true, false, true, false);
const BULK_OUT: UsbRawEpCaps = UsbRawEpCaps::new(false, false, true, false, false, true);
const INT_IN: UsbRawEpCaps = UsbRawEpCaps::new(false, false, false, true, true, false);
const ALL_IN: UsbRawEpCaps = UsbRawEpCaps::new(false, false, true, true, true, false);
const ALL_OUT: UsbRawEpCaps = UsbRawEpCaps::new(false, false, true, true, false, true);

/// The 24 non-control endpoints in list order, which is EPS_INFO and handle order
/// (`dummy_hcd.c:142-218`; its iso entries are commented out, so there are none).
pub const ENDPOINTS: [(&str, UsbRawEpCaps); 24] = [
    ("ep1in-bulk", BULK_IN),
    ("ep2out-bulk", BULK_OUT),
    ("ep5in-int", INT_IN),
    ("ep6in-bulk", BULK_IN),
    ("ep7out-bulk", BULK_OUT),
    ("ep10in-int", INT_IN),
    ("ep11in-bulk", BULK_IN),
    ("ep12out-bulk", BULK_OUT),
    ("ep15in-int", INT_IN),
    ("ep1out-bulk", BULK_OUT),
    ("ep2in-bulk", BULK_IN),
    ("ep-aout", ALL_OUT),
    ("ep-bin", ALL_IN),
    ("ep-cout", ALL_OUT),
    ("ep-dout", ALL_OUT),
    ("ep-ein", ALL_IN),
    ("ep-fout", ALL_OUT),
    ("ep-gin", ALL_IN),
    ("ep-hout", ALL_OUT),
    ("ep-iout", ALL_OUT),
    ("ep-jin", ALL_IN),
    ("ep-kout", ALL_OUT),
    ("ep-lin", ALL_IN),
    ("ep-mout", ALL_OUT),
];
