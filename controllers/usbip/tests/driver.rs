//! The real driver over a socketpair, with a fake vhci (vhci's checks) on the other end and a
//! scripted raw-gadget client on the bus. One test per contract rule the driver enforces.

mod common;

use std::time::Duration;

use common::*;
use rawgadget_loopback::scripted::{DeviceOp, Reply};
use rawgadget_loopback::HostPort;
use rawgadget_uapi::event_type::*;
use rawgadget_uapi::{speed, Errno, Speed};
use rawgadget_udc::{Unlink, UrbFlags, UrbId};
use rawgadget_usbip_udc::fake_vhci::WireReply;
use rawgadget_usbip_udc::{Budget, UsbipConfig};

const ECONNRESET: i32 = -104;

// ---- attach and enumeration -----------------------------------------------------------------

fn enumerate_at(speed_code: u8, expect: Speed) {
    let mut rig = Rig::new(speed_code);
    assert_eq!(rig.speed(), expect);
    rig.enumerate();
    let rec = rig.host.recording();
    assert_eq!(rec.speed, Some(expect));
    assert_eq!(
        rec.device.as_ref().unwrap()[8..12],
        [0x6b, 0x1d, 0x04, 0x01]
    );
    assert_eq!(rec.configuration, Some(1));
    assert_eq!(rig.dev().configured, Some(1));
    let types = rig.dev().event_types();
    assert_eq!(types[0], USB_RAW_EVENT_CONNECT, "{types:?}");
    assert_eq!(types[1], USB_RAW_EVENT_RESET, "{types:?}");
    assert_eq!(
        types.iter().filter(|&&t| t == USB_RAW_EVENT_RESET).count(),
        1,
        "one RESET per attach (U5): {types:?}"
    );
    assert_eq!(
        types
            .iter()
            .filter(|&&t| t == USB_RAW_EVENT_CONNECT)
            .count(),
        1
    );
    assert_eq!(rig.vhci.error(), None);
}

/// contract U4, U5: CONNECT at RUN, exactly one RESET on attach, then the host's requests.
#[test]
fn u5_enumeration_over_usbip_high_speed() {
    enumerate_at(speed::USB_SPEED_HIGH, Speed::High);
}

/// contract U5, D3: full speed.
#[test]
fn u5_enumeration_over_usbip_full_speed() {
    enumerate_at(speed::USB_SPEED_FULL, Speed::Full);
}

/// contract U5, D3, D4: low speed (ep0 maxpacket 8; bulk cannot be enabled, D6).
#[test]
fn u5_enumeration_over_usbip_low_speed() {
    enumerate_at(speed::USB_SPEED_LOW, Speed::Low);
}

/// contract S1, S2, D28: SuperSpeed through vhci's SS hub, one reset, BOS read.
#[test]
fn s1_enumeration_over_usbip_super_speed() {
    enumerate_at(speed::USB_SPEED_SUPER, Speed::Super);
}

/// contract D3: with a high-speed maximum, a SuperSpeed gadget runs at high speed.
#[test]
fn d3_speed_is_capped_by_the_personality() {
    let config = UsbipConfig {
        personality: rawgadget_usbip_udc::usbip_personality(Speed::High),
        ..UsbipConfig::default()
    };
    let rig = Rig::with(
        config,
        rawgadget_loopback::scripted::DeviceScript::vendor_loopback(speed::USB_SPEED_SUPER),
        Budget::LOCAL_VHCI,
    );
    assert_eq!(rig.speed(), Speed::High);
}

/// contract U5 (optional second reset): off by default; when on, Linux's reset signature at
/// high speed gives the client the two RESETs dummy gives (D28).
#[test]
fn u5_second_reset_heuristic_is_opt_in() {
    let config = UsbipConfig {
        second_reset: true,
        ..UsbipConfig::default()
    };
    let mut rig = Rig::with(
        config,
        rawgadget_loopback::scripted::DeviceScript::vendor_loopback(speed::USB_SPEED_HIGH),
        Budget::LOCAL_VHCI,
    );
    rig.enumerate();
    let resets = rig
        .dev()
        .event_types()
        .iter()
        .filter(|&&t| t == USB_RAW_EVENT_RESET)
        .count();
    assert_eq!(resets, 2);
}

// ---- transfers -------------------------------------------------------------------------------

/// contract D8, U9, U13: bulk transfers both ways; the IN reply carries exactly the data.
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

/// contract D12: interrupt IN is serviced like bulk.
#[test]
fn interrupt_in_over_usbip() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.push_op(DeviceOp::Write {
        address: 0x83,
        data: vec![1, 2, 3, 4, 5, 6, 7, 8],
        zero: false,
    });
    let r = rig.host.interrupt(&mut rig.vhci, 0x83, vec![0; 8], TIMEOUT);
    assert_eq!(r.status, Ok(()));
    assert_eq!(r.data, [1, 2, 3, 4, 5, 6, 7, 8]);
}

/// contract U9: a short IN is sent with status 0 and the short length, error_count 0; the host
/// core (here the fake host) makes EREMOTEIO of it under URB_SHORT_NOT_OK.
#[test]
fn u9_short_in_is_status_zero_on_the_wire() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.push_op(DeviceOp::Write {
        address: 0x81,
        data: vec![7; 100],
        zero: false,
    });
    let flags = UrbFlags {
        short_not_ok: true,
        ..UrbFlags::default()
    };
    let r = rig.host.bulk_in(&mut rig.vhci, 0x81, 512, flags, TIMEOUT);
    assert_eq!(r.status, Err(Errno::EREMOTEIO));
    assert_eq!(r.actual, 100);
    match rig.vhci.replies.last().unwrap() {
        WireReply::RetSubmit {
            status,
            actual_length,
            error_count,
            number_of_packets,
            ..
        } => {
            assert_eq!(
                (*status, *actual_length, *error_count, *number_of_packets),
                (0, 100, 0, 0)
            );
        }
        other => panic!("{other:?}"),
    }
}

/// contract U9, U13, D10: a request with more data than the IN URB has room for: the URB is
/// full and carries EOVERFLOW; actual_length never exceeds transfer_buffer_length.
#[test]
fn u13_in_reply_never_exceeds_the_urb() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.push_op(DeviceOp::Write {
        address: 0x81,
        data: vec![9; 700],
        zero: false,
    });
    rig.vhci
        .submit_raw(&submit(1000, 0x81, 600, None), false)
        .unwrap();
    match rig.ret_submit(1000) {
        WireReply::RetSubmit {
            status,
            actual_length,
            ..
        } => {
            assert_eq!(actual_length, 600);
            assert_eq!(status, -Errno::EOVERFLOW.raw());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.vhci.error(), None);
}

/// contract U15: a non-iso CMD_SUBMIT with the documented 0xffffffff is accepted and answered
/// with number_of_packets 0.
#[test]
fn u15_non_iso_number_of_packets_is_zero_in_replies() {
    let mut rig = Rig::hs();
    rig.enumerate();
    let mut s = control(
        2000,
        rawgadget_loopback::setup(0x80, 6, 0x0100, 0, 18),
        Vec::new(),
    );
    s.header.number_of_packets = 0xffff_ffff;
    rig.vhci.submit_raw(&s, false).unwrap();
    match rig.ret_submit(2000) {
        WireReply::RetSubmit {
            status,
            actual_length,
            number_of_packets,
            ..
        } => {
            assert_eq!((status, actual_length, number_of_packets), (0, 18, 0));
        }
        other => panic!("{other:?}"),
    }
}

/// contract U7, D14: 32 control URBs queued at once (usbtest case 10) complete in submission
/// order, and the client sees their SETUPs one at a time, in order.
#[test]
fn u7_d14_queued_control_urbs_complete_in_order() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.dev().handler = Some(Box::new(|req| Reply::Data(vec![req.value as u8; 4])));
    let before = rig.dev().setups().len();
    let ids: Vec<UrbId> = (0..32u16)
        .map(|i| {
            let urb =
                rawgadget_udc::Urb::control(rawgadget_loopback::setup(0xc0, 0x5c, i, 0, 4), &[]);
            rig.host.submit(&mut rig.vhci, urb)
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let r = rig
            .host
            .wait(&mut rig.vhci, *id, TIMEOUT)
            .expect("completes");
        assert_eq!(r.status, Ok(()));
        assert_eq!(r.data, vec![i as u8; 4]);
    }
    let seqnums = ret_submit_seqnums(&rig.vhci.replies);
    let tail = &seqnums[seqnums.len() - 32..];
    assert!(
        tail.windows(2).all(|w| w[0] < w[1]),
        "out of order: {tail:?}"
    );
    let setups = rig.dev().setups();
    let values: Vec<u16> = setups[before..].iter().map(|s| s.value).collect();
    assert_eq!(values, (0..32).collect::<Vec<u16>>());
}

/// contract U8: endpoints are independent: an IN URB waiting for data does not hold back an
/// OUT URB on another endpoint, or control.
#[test]
fn u8_per_endpoint_queues_are_independent() {
    let mut rig = Rig::hs();
    rig.enumerate();
    let waiting = rig
        .host
        .submit(&mut rig.vhci, rawgadget_udc::Urb::bulk(0x81, vec![0; 512]));
    rig.push_op(DeviceOp::Read {
        address: 0x02,
        length: 64,
    });
    let r = rig.host.bulk_out(
        &mut rig.vhci,
        0x02,
        vec![5; 64],
        UrbFlags::default(),
        TIMEOUT,
    );
    assert_eq!(r.status, Ok(()));
    assert!(rig.host.get_status(&mut rig.vhci, 0, 0).is_ok());
    rig.push_op(DeviceOp::Write {
        address: 0x81,
        data: vec![1; 10],
        zero: false,
    });
    let r = rig.host.wait(&mut rig.vhci, waiting, TIMEOUT).unwrap();
    assert_eq!((r.status, r.data), (Ok(()), vec![1; 10]));
}

/// contract U1, D20, D22: requests the controller answers itself (GET_STATUS, SET/CLEAR
/// FEATURE(HALT)) never reach the client, even though vhci forwards them.
#[test]
fn u1_controller_answers_its_own_requests() {
    let mut rig = Rig::hs();
    rig.enumerate();
    let before = rig.dev().setups().len();
    assert_eq!(rig.host.get_status(&mut rig.vhci, 0, 0), Ok(0));
    assert_eq!(rig.host.set_halt(&mut rig.vhci, 0x81), Ok(()));
    assert_eq!(rig.host.get_status(&mut rig.vhci, 2, 0x81), Ok(1));
    // contract D25: a halted endpoint fails its URBs with EPIPE
    let r = rig
        .host
        .bulk_in(&mut rig.vhci, 0x81, 64, UrbFlags::default(), TIMEOUT);
    assert_eq!(r.status, Err(Errno::EPIPE));
    assert_eq!(rig.host.clear_halt(&mut rig.vhci, 0x81), Ok(()));
    assert_eq!(rig.host.get_status(&mut rig.vhci, 2, 0x81), Ok(0));
    assert_eq!(rig.dev().setups().len(), before, "none reached the client");
}

/// contract D24, U12: a CMD_SUBMIT to an endpoint that is not enabled is parsed in full (its
/// OUT data too) and answered EPROTO; the stream stays in step.
#[test]
fn u12_d24_disabled_endpoint_gets_eproto_after_a_full_parse() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.vhci
        .submit_raw(&submit(3000, 0x05, 100, Some(vec![0xee; 100])), false)
        .unwrap();
    rig.vhci
        .submit_raw(&submit(3001, 0x86, 64, None), false)
        .unwrap();
    let s = control(
        3002,
        rawgadget_loopback::setup(0x80, 6, 0x0100, 0, 18),
        Vec::new(),
    );
    rig.vhci.submit_raw(&s, false).unwrap();
    for seqnum in [3000, 3001] {
        match rig.ret_submit(seqnum) {
            WireReply::RetSubmit {
                status,
                actual_length,
                ..
            } => {
                assert_eq!((status, actual_length), (-Errno::EPROTO.raw(), 0));
            }
            other => panic!("{other:?}"),
        }
    }
    match rig.ret_submit(3002) {
        WireReply::RetSubmit {
            status,
            actual_length,
            ..
        } => assert_eq!((status, actual_length), (0, 18)),
        other => panic!("{other:?}"),
    }
    assert!(rig.vhci.is_connected());
}

// ---- unlink (contract U10, U14) -----------------------------------------------------------

/// contract U10: a URB still pending that moved nothing: RET_UNLINK -ECONNRESET, and never a
/// RET_SUBMIT for it afterwards (U14); the client's later request is untouched and serves the
/// next URB.
#[test]
fn u10_unlink_without_progress_is_ret_unlink_econnreset() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.vhci
        .submit_raw(&submit(4000, 0x81, 512, None), false)
        .unwrap();
    rig.settle(Duration::from_millis(50));
    let unlink = rig.vhci.unlink_raw(4000).unwrap();
    match rig.ret_unlink(unlink) {
        WireReply::RetUnlink { status, .. } => assert_eq!(status, ECONNRESET),
        other => panic!("{other:?}"),
    }
    // the client's data goes to the next URB, not to the unlinked one
    rig.push_op(DeviceOp::Write {
        address: 0x81,
        data: vec![3; 20],
        zero: false,
    });
    rig.vhci
        .submit_raw(&submit(4002, 0x81, 512, None), false)
        .unwrap();
    match rig.ret_submit(4002) {
        WireReply::RetSubmit {
            status,
            actual_length,
            ..
        } => assert_eq!((status, actual_length), (0, 20)),
        other => panic!("{other:?}"),
    }
    rig.settle(Duration::from_millis(50));
    assert!(
        !ret_submit_seqnums(&rig.vhci.replies).contains(&4000),
        "U14: no RET_SUBMIT after RET_UNLINK -ECONNRESET"
    );
    assert_eq!(rig.vhci.error(), None);
}

/// contract U10, D26: a pending URB that made progress: RET_SUBMIT with -ECONNRESET and the
/// partial data, then RET_UNLINK with status 0.
#[test]
fn u10_unlink_after_progress_sends_the_partial_data_first() {
    let mut rig = Rig::hs();
    rig.enumerate();
    // 512 bytes (one whole packet, not short) into a 1024-byte URB: the URB stays pending
    rig.push_op(DeviceOp::Write {
        address: 0x81,
        data: vec![4; 512],
        zero: false,
    });
    rig.vhci
        .submit_raw(&submit(5000, 0x81, 1024, None), false)
        .unwrap();
    rig.wait_dev("the write completes", |d| d.io_results.len() == 1);
    let unlink = rig.vhci.unlink_raw(5000).unwrap();
    let reply = rig.ret_submit(5000);
    assert!(
        matches!(
            reply,
            WireReply::RetSubmit {
                status: ECONNRESET,
                actual_length: 512,
                ..
            }
        ),
        "{reply:?}"
    );
    match rig.ret_unlink(unlink) {
        WireReply::RetUnlink { status, .. } => assert_eq!(status, 0),
        other => panic!("{other:?}"),
    }
    let pos = |f: &dyn Fn(&WireReply) -> bool| rig.vhci.replies.iter().position(f).unwrap();
    assert!(
        pos(&|r| matches!(r, WireReply::RetSubmit { seqnum: 5000, .. }))
            < pos(&|r| matches!(r, WireReply::RetUnlink { seqnum, .. } if *seqnum == unlink))
    );
}

/// contract U10: the host-visible result of an unlink after progress keeps the bytes moved
/// (D26), through the fake host's vhci rules.
#[test]
fn u10_unlink_after_progress_host_sees_partial_length() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.push_op(DeviceOp::Read {
        address: 0x02,
        length: 512,
    });
    let id = rig
        .host
        .submit(&mut rig.vhci, rawgadget_udc::Urb::bulk(0x02, vec![6; 1024]));
    rig.wait_dev("the read completes", |d| d.io_results.len() == 1);
    rig.vhci.unlink(id, Unlink::Async).unwrap();
    let c = rig.vhci.wait(id, TIMEOUT).unwrap();
    assert_eq!((c.status, c.actual_length), (Err(Errno::ECONNRESET), 512));
    assert_eq!(rig.vhci.error(), None);
}

/// contract U10: a target already answered: RET_UNLINK status 0.
#[test]
fn u10_unlink_of_an_answered_urb_is_status_zero() {
    let mut rig = Rig::hs();
    rig.enumerate();
    let s = control(
        6000,
        rawgadget_loopback::setup(0x80, 6, 0x0100, 0, 18),
        Vec::new(),
    );
    rig.vhci.submit_raw(&s, false).unwrap();
    rig.ret_submit(6000);
    let unlink = rig.vhci.unlink_raw(6000).unwrap();
    match rig.ret_unlink(unlink) {
        WireReply::RetUnlink { status, .. } => assert_eq!(status, 0),
        other => panic!("{other:?}"),
    }
}

/// contract U10, U14: unlinks of seqnums already answered (or older than any in flight) get
/// RET_UNLINK 0 at once and the connection stays up.
#[test]
fn u14_unlink_of_answered_seqnums_is_harmless() {
    let mut rig = Rig::hs();
    rig.enumerate();
    let mut unlinks = Vec::new();
    for target in [0, 1, 7, 0xffff_ffff] {
        unlinks.push(rig.vhci.unlink_raw(target).unwrap());
    }
    for u in unlinks {
        assert!(matches!(
            rig.ret_unlink(u),
            WireReply::RetUnlink { status: 0, .. }
        ));
    }
    assert!(rig.host.get_status(&mut rig.vhci, 0, 0).is_ok());
}

/// contract U10, U14: vhci's tx thread can send a CMD_UNLINK before the CMD_SUBMIT it names
/// (seen on the real kernel with usbtest case 12). The unlink is held; the submit is answered
/// RET_UNLINK -ECONNRESET, the client never sees it, and no RET_SUBMIT ever follows.
#[test]
fn u10_unlink_overtaking_its_submit() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.push_op(DeviceOp::Read {
        address: 0x02,
        length: 512,
    });
    rig.wait_dev("the read is queued", |d| d.busy());
    let unlink = rig.vhci.unlink_raw(9000).unwrap();
    rig.settle(Duration::from_millis(50));
    assert!(!rig
        .vhci
        .replies
        .iter()
        .any(|r| matches!(r, WireReply::RetUnlink { seqnum, .. } if *seqnum == unlink)));
    rig.vhci
        .submit_raw(&submit(9000, 0x02, 64, Some(vec![1; 64])), false)
        .unwrap();
    assert!(matches!(
        rig.ret_unlink(unlink),
        WireReply::RetUnlink {
            status: ECONNRESET,
            ..
        }
    ));
    rig.settle(Duration::from_millis(50));
    assert!(!ret_submit_seqnums(&rig.vhci.replies).contains(&9000));
    assert!(
        rig.dev().io_results.is_empty(),
        "the client's read saw nothing"
    );
    assert_eq!(rig.vhci.error(), None);
}

/// contract U10, D26, D16: a control URB unlinked while the client holds its SETUP: RET_UNLINK
/// -ECONNRESET; the SETUP stays pending, and the client's late answer becomes stale (D15).
#[test]
fn u10_unlinked_control_leaves_the_setup_pending() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.dev().hold_setups = true;
    let before = rig.dev().setups().len();
    rig.vhci
        .submit_raw(
            &control(
                7000,
                rawgadget_loopback::setup(0xc0, 0x5c, 1, 0, 4),
                Vec::new(),
            ),
            false,
        )
        .unwrap();
    rig.wait_dev("the SETUP reaches the client", |d| {
        d.setups().len() == before + 1
    });
    let unlink = rig.vhci.unlink_raw(7000).unwrap();
    assert!(matches!(
        rig.ret_unlink(unlink),
        WireReply::RetUnlink {
            status: ECONNRESET,
            ..
        }
    ));
    rig.settle(Duration::from_millis(50));
    assert!(!ret_submit_seqnums(&rig.vhci.replies).contains(&7000));
}

// ---- connection loss (contract U20, D30) -----------------------------------------------------

/// contract U20, D30: when the host side goes away, the client sees DISCONNECT and its queued
/// request ends with ESHUTDOWN.
#[test]
fn u20_connection_loss_gives_disconnect_and_eshutdown() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.push_op(DeviceOp::Read {
        address: 0x02,
        length: 512,
    });
    rig.wait_dev("the read is queued", |d| d.busy());
    rig.vhci.detach();
    rig.wait_dev("the read ends", |d| !d.io_results.is_empty());
    assert_eq!(rig.dev().io_results[0].1, Err(Errno::ESHUTDOWN));
    rig.wait_dev("DISCONNECT", |d| {
        d.event_types().contains(&USB_RAW_EVENT_DISCONNECT)
    });
    let end = rig.conn.take().unwrap().join();
    assert!(
        matches!(end, rawgadget_usbip_udc::ConnectionEnd::PeerClosed),
        "{end}"
    );
}

/// contract U20: closing from our side (the gadget's owner) also gives DISCONNECT, and the
/// host reads EOF (vhci detaches the port).
#[test]
fn u20_close_by_owner_detaches() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.conn.as_ref().unwrap().close();
    rig.wait_closed();
    rig.wait_dev("DISCONNECT", |d| {
        d.event_types().contains(&USB_RAW_EVENT_DISCONNECT)
    });
    let end = rig.conn.take().unwrap().join();
    assert!(
        matches!(end, rawgadget_usbip_udc::ConnectionEnd::ClosedByOwner),
        "{end}"
    );
}

/// contract U20: the gadget closing ends the connection (the host reads EOF).
#[test]
fn u20_gadget_close_ends_the_connection() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.stop_device();
    rig.device.bus().with(|b| b.close());
    rig.wait_closed();
    let end = rig.conn.take().unwrap().join();
    assert!(
        matches!(end, rawgadget_usbip_udc::ConnectionEnd::GadgetClosed),
        "{end}"
    );
}

// ---- iso (contract §4, U15, U16) --------------------------------------------------------------

/// A vendor device with iso IN 0x81 and iso OUT 0x02 (1024 bytes, every microframe) on the
/// iso-capable personality.
fn iso_rig() -> Rig {
    let mut script =
        rawgadget_loopback::scripted::DeviceScript::vendor_loopback(speed::USB_SPEED_HIGH);
    script.udc_driver = "usbip-vudc".into();
    script.udc_device = "usbip-vudc.0".into();
    #[rustfmt::skip]
    let config = vec![
        9, 2, 32, 0, 1, 1, 0, 0x80, 50,     // CONFIG, wTotalLength 32, 1 interface
        9, 4, 0, 0, 2, 0xff, 0, 0, 0,       // interface 0, 2 endpoints, vendor
        7, 5, 0x81, 0x01, 0x00, 0x04, 1,    // iso IN 1, 1024, bInterval 1
        7, 5, 0x02, 0x01, 0x00, 0x04, 1,    // iso OUT 2, 1024, bInterval 1
    ];
    script.configs = vec![config];
    let config = UsbipConfig {
        personality: rawgadget_usbip_udc::usbip_iso_personality(),
        ..UsbipConfig::default()
    };
    let mut rig = Rig::with(config, script, Budget::LOCAL_VHCI);
    rig.enumerate();
    assert_eq!(rig.dev().enabled.len(), 2, "{:?}", rig.dev().errors);
    rig
}

fn iso_urb(endpoint: u8, packets: u32, size: u32, fill: u8) -> rawgadget_udc::Urb {
    rawgadget_udc::Urb {
        endpoint,
        kind: rawgadget_udc::UrbKind::Isochronous {
            packets: (0..packets)
                .map(|i| rawgadget_udc::IsoPacket {
                    offset: i * size,
                    length: size,
                    ..Default::default()
                })
                .collect(),
        },
        buffer: vec![fill; (packets * size) as usize],
        flags: UrbFlags::default(),
    }
}

/// contract I5, I6, U15, U16: an iso IN URB is answered on time with every packet echoed, the
/// data packed and Σ actual = actual_length (checked by the fake vhci as vhci checks it); the
/// client's request lands in the first packet.
#[test]
fn u16_iso_in_over_usbip() {
    let mut rig = iso_rig();
    rig.push_op(DeviceOp::Write {
        address: 0x81,
        data: vec![0x11; 1024],
        zero: false,
    });
    rig.wait_dev("the request is queued", |d| d.busy());
    let id = rig.host.submit(&mut rig.vhci, iso_urb(0x81, 4, 1024, 0));
    let c = rig
        .vhci
        .wait(id, TIMEOUT)
        .expect("the iso URB completes on time");
    assert_eq!(rig.vhci.error(), None);
    assert_eq!(c.status, Ok(()));
    assert_eq!(c.iso_packets.len(), 4);
    assert_eq!(c.iso_packets[0].actual_length, 1024);
    assert_eq!(&c.buffer[..1024], &[0x11; 1024][..]);
    let sum: u32 = c.iso_packets.iter().map(|p| p.actual_length).sum();
    assert_eq!(sum, c.actual_length);
    match rig.vhci.replies.last().unwrap() {
        WireReply::RetSubmit {
            number_of_packets,
            error_count,
            ..
        } => {
            assert_eq!((*number_of_packets, *error_count), (4, 0));
        }
        other => panic!("{other:?}"),
    }
}

/// contract I6, U16: iso OUT data goes into the client's request; packets without one are
/// dropped and still succeed.
#[test]
fn u16_iso_out_over_usbip() {
    let mut rig = iso_rig();
    rig.push_op(DeviceOp::Read {
        address: 0x02,
        length: 1024,
    });
    rig.wait_dev("the request is queued", |d| d.busy());
    let id = rig.host.submit(&mut rig.vhci, iso_urb(0x02, 3, 1024, 0x22));
    let c = rig
        .vhci
        .wait(id, TIMEOUT)
        .expect("the iso URB completes on time");
    assert_eq!(rig.vhci.error(), None);
    assert_eq!((c.status, c.actual_length), (Ok(()), 3072));
    assert!(c
        .iso_packets
        .iter()
        .all(|p| p.actual_length == 1024 && p.status == 0));
    rig.wait_dev("the read completes", |d| !d.io_results.is_empty());
    assert_eq!(rig.dev().io_results[0].2, vec![0x22; 1024]);
}

/// contract I5: iso URBs come back on the controller's own timer. The writer thread waits for
/// the timer an input set (an iso URB reaching the head of its endpoint) instead of the one it
/// had when it went to sleep, which could be its 500 ms slow poll.
#[test]
fn i5_iso_urbs_complete_on_the_controller_timer() {
    let mut rig = iso_rig();
    let started = std::time::Instant::now();
    for _ in 0..5 {
        // 8 packets of 125 µs each, no client request: back after 1 ms (I5)
        let id = rig.host.submit(&mut rig.vhci, iso_urb(0x81, 8, 1024, 0));
        let c = rig.vhci.wait(id, TIMEOUT).expect("the iso URB completes");
        assert_eq!((c.status, c.actual_length), (Ok(()), 0));
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "5 URBs of 1 ms took {took:?}"
    );
    assert_eq!(rig.vhci.error(), None);
}

/// contract I5 (client grace, `usbip_iso_personality`), I6, P4: a client that streams one
/// request at a time (raw gadget's rule) loses no iso IN packet to its round trips, although
/// each is longer than the 125 µs period; the packets arrive in order. usbtest's shape: one
/// packet per URB, several URBs queued.
#[test]
fn i5_streaming_iso_in_client_loses_no_packet_over_usbip() {
    let mut rig = iso_rig();
    for i in 0..16u8 {
        rig.push_op(DeviceOp::Write {
            address: 0x81,
            data: vec![i; 1024],
            zero: false,
        });
    }
    rig.wait_dev("the first request is queued", |d| d.busy());
    let ids: Vec<UrbId> = (0..16)
        .map(|_| rig.host.submit(&mut rig.vhci, iso_urb(0x81, 1, 1024, 0xee)))
        .collect();
    for (i, id) in ids.into_iter().enumerate() {
        let c = rig.vhci.wait(id, TIMEOUT).expect("the iso URB completes");
        assert_eq!(c.status, Ok(()));
        assert_eq!(c.iso_packets[0].actual_length, 1024, "URB {i}");
        assert_eq!(c.buffer, vec![i as u8; 1024], "URB {i}");
    }
    assert_eq!(rig.vhci.error(), None);
}

/// contract I5 (client grace), I6: the same for iso OUT: a sink reading one request at a time
/// gets every packet, in order, instead of packets dropped while it was on its round trip.
#[test]
fn i6_streaming_iso_out_client_gets_every_packet_over_usbip() {
    let mut rig = iso_rig();
    for _ in 0..12 {
        rig.push_op(DeviceOp::Read {
            address: 0x02,
            length: 1024,
        });
    }
    rig.wait_dev("the first read is queued", |d| d.busy());
    let ids: Vec<UrbId> = (0..12u8)
        .map(|i| rig.host.submit(&mut rig.vhci, iso_urb(0x02, 1, 1024, i)))
        .collect();
    for id in ids {
        let c = rig.vhci.wait(id, TIMEOUT).expect("the iso URB completes");
        assert_eq!((c.status, c.actual_length), (Ok(()), 1024));
    }
    rig.wait_dev("every read completes", |d| d.io_results.len() == 12);
    for (i, (_, ret, data)) in rig.dev().io_results.iter().enumerate() {
        assert_eq!(*ret, Ok(1024), "read {i}");
        assert_eq!(*data, vec![i as u8; 1024], "read {i}");
    }
    assert_eq!(rig.vhci.error(), None);
}

/// contract I1, D24: on the dummy personality an iso URB to an endpoint that is not enabled is
/// EPROTO, answered without packets (U15: a count of 0 skips the descriptors).
#[test]
fn u15_iso_on_dummy_is_eproto_without_packets() {
    let mut rig = Rig::hs();
    rig.enumerate();
    let id = rig.host.submit(&mut rig.vhci, iso_urb(0x86, 2, 64, 0));
    let c = rig.vhci.wait(id, TIMEOUT).unwrap();
    assert_eq!(c.status, Err(Errno::EPROTO));
    assert_eq!(rig.vhci.error(), None);
}
