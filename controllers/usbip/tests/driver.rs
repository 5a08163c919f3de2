//! The real driver over a socketpair, a fake vhci on the other end.

mod common;

use common::*;
use rawgadget_loopback::scripted::DeviceOp;
use rawgadget_uapi::event_type::*;
use rawgadget_udc::UrbFlags;

/// contract U4, U5: CONNECT at RUN, one RESET on attach, then the host's requests.
#[test]
fn u5_enumeration_over_usbip_hs() {
    let mut rig = Rig::hs();
    rig.enumerate();
    let rec = rig.host.recording();
    assert_eq!(
        rec.device.as_ref().unwrap()[8..12],
        [0x6b, 0x1d, 0x04, 0x01]
    );
    assert_eq!(rec.configuration, Some(1));
    let types = rig.dev().event_types();
    assert_eq!(types[0], USB_RAW_EVENT_CONNECT);
    assert_eq!(
        types.iter().filter(|&&t| t == USB_RAW_EVENT_RESET).count(),
        1,
        "{types:?}"
    );
    assert_eq!(rig.dev().configured, Some(1));
}

/// contract D8, U9: bulk transfers both ways through USB/IP.
#[test]
fn bulk_in_and_out_over_usbip() {
    let mut rig = Rig::hs();
    rig.enumerate();
    let data: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
    rig.push_op(DeviceOp::Write {
        address: 0x81,
        data: data.clone(),
        zero: false,
    });
    let r = rig
        .host
        .bulk_in(&mut rig.vhci, 0x81, 4096, UrbFlags::default(), TIMEOUT);
    assert_eq!(r.status, Ok(()));
    assert_eq!(r.data, data);
    rig.push_op(DeviceOp::Read {
        address: 0x02,
        length: 4096,
    });
    let r = rig.host.bulk_out(
        &mut rig.vhci,
        0x02,
        data.clone(),
        UrbFlags::default(),
        TIMEOUT,
    );
    assert_eq!(r.status, Ok(()));
    assert_eq!(r.actual, 1500);
    rig.wait_dev("the read completes", |d| d.io_results.len() == 2);
    assert_eq!(rig.dev().io_results[1].2, data);
    assert_eq!(rig.vhci.error(), None);
}
