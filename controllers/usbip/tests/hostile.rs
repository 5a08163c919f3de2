//! A hostile USB/IP peer against the real driver: every case ends in an error reply or a
//! closed connection, never a panic, a hang or unbounded memory (issue 5 item 6, contract U25).

mod common;

use std::time::Duration;

use common::*;
use rawgadget_loopback::scripted::{DeviceOp, DeviceScript};
use rawgadget_uapi::event_type::*;
use rawgadget_uapi::{speed, Errno};
use rawgadget_usbip_udc::{Budget, ConnectionEnd, LinkError, UsbipConfig};

fn remote_rig() -> Rig {
    Rig::with(
        UsbipConfig::default(),
        DeviceScript::vendor_loopback(speed::USB_SPEED_HIGH),
        Budget::REMOTE,
    )
}

/// The driver closed the connection because of the peer, and says why.
fn closed_for_protocol(rig: &mut Rig) -> LinkError {
    rig.wait_closed();
    match rig.conn.take().unwrap().join() {
        ConnectionEnd::Protocol(e) => e,
        other => panic!("expected a protocol error, got {other}"),
    }
}

fn header(command: u32, seqnum: u32) -> Vec<u8> {
    let mut b = vec![0u8; 48];
    b[0..4].copy_from_slice(&command.to_be_bytes());
    b[4..8].copy_from_slice(&seqnum.to_be_bytes());
    b
}

/// A truncated header, then the peer goes away: the connection ends, the gadget sees
/// DISCONNECT (U20).
#[test]
fn truncated_header_then_eof() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.vhci.send_raw(&header(1, 9)[..20]).unwrap();
    rig.vhci.detach();
    let end = rig.conn.take().unwrap().join();
    assert!(matches!(end, ConnectionEnd::PeerClosed), "{end}");
    rig.wait_dev("DISCONNECT", |d| {
        d.event_types().contains(&USB_RAW_EVENT_DISCONNECT)
    });
}

/// An OUT CMD_SUBMIT that announces more data than it sends (a lying length), then EOF, in
/// the middle of a transfer: the client's queued read ends with ESHUTDOWN (U20, D30).
#[test]
fn lying_length_and_disconnect_mid_transfer() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.push_op(DeviceOp::Read {
        address: 0x02,
        length: 512,
    });
    rig.wait_dev("the read is queued", |d| d.busy());
    let mut bytes =
        rawgadget_usbip::DevicePdu::Submit(submit(10, 0x02, 65536, Some(vec![1; 65536]))).to_vec();
    bytes.truncate(48 + 1000);
    rig.vhci.send_raw(&bytes).unwrap();
    rig.settle(Duration::from_millis(20));
    rig.vhci.detach();
    rig.wait_dev("the read ends", |d| !d.io_results.is_empty());
    assert_eq!(rig.dev().io_results[0].1, Err(Errno::ESHUTDOWN));
}

/// A transfer_buffer_length beyond the budget is refused before any allocation; the
/// connection closes (U25).
#[test]
fn huge_transfer_buffer_length_closes_the_connection() {
    let mut rig = remote_rig();
    rig.enumerate();
    let mut h = header(1, 11);
    h[12..16].copy_from_slice(&1u32.to_be_bytes()); // IN
    h[16..20].copy_from_slice(&1u32.to_be_bytes()); // ep 1
    h[24..28].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
    rig.vhci.send_raw(&h).unwrap();
    let e = closed_for_protocol(&mut rig);
    assert!(
        matches!(
            e,
            LinkError::Decode(rawgadget_usbip::Error::TransferTooLong { .. })
        ),
        "{e}"
    );
}

/// A negative transfer_buffer_length closes the connection.
#[test]
fn negative_length_closes_the_connection() {
    let mut rig = Rig::hs();
    rig.enumerate();
    let mut h = header(1, 12);
    h[24..28].copy_from_slice(&0x8000_0000u32.to_be_bytes());
    rig.vhci.send_raw(&h).unwrap();
    let e = closed_for_protocol(&mut rig);
    assert!(
        matches!(
            e,
            LinkError::Decode(rawgadget_usbip::Error::NegativeLength { .. })
        ),
        "{e}"
    );
}

/// An unknown command code closes the connection (there is no resync point).
#[test]
fn unknown_command_closes_the_connection() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.vhci.send_raw(&header(0x1234_5678, 13)).unwrap();
    let e = closed_for_protocol(&mut rig);
    assert!(
        matches!(
            e,
            LinkError::Decode(rawgadget_usbip::Error::UnknownCommand(0x1234_5678))
        ),
        "{e}"
    );
}

/// A reply code sent to the device (USBIP_RET_SUBMIT) closes the connection.
#[test]
fn reply_sent_to_the_device_closes_the_connection() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.vhci.send_raw(&header(3, 14)).unwrap();
    let e = closed_for_protocol(&mut rig);
    assert!(matches!(e, LinkError::Decode(_)), "{e}");
}

/// contract U14: a seqnum reused while its URB is in flight closes the connection.
#[test]
fn u14_duplicate_seqnum_closes_the_connection() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.vhci
        .send_raw(&rawgadget_usbip::DevicePdu::Submit(submit(20, 0x81, 64, None)).to_vec())
        .unwrap();
    rig.vhci
        .send_raw(&rawgadget_usbip::DevicePdu::Submit(submit(20, 0x81, 64, None)).to_vec())
        .unwrap();
    assert_eq!(
        closed_for_protocol(&mut rig),
        LinkError::DuplicateSeqnum(20)
    );
}

/// contract U25: a remote peer flooding submits beyond its URB budget is disconnected.
#[test]
fn u25_remote_submit_flood_is_closed() {
    let mut rig = remote_rig();
    rig.enumerate();
    let mut bytes = Vec::new();
    for i in 0..(Budget::REMOTE.max_urbs as u32 + 10) {
        bytes.extend(rawgadget_usbip::DevicePdu::Submit(submit(100 + i, 0x81, 64, None)).to_vec());
    }
    let _ = rig.vhci.send_raw(&bytes);
    let e = closed_for_protocol(&mut rig);
    assert!(
        matches!(
            e,
            LinkError::Budget {
                what: "URBs in flight",
                ..
            }
        ),
        "{e}"
    );
}

/// contract U25: a remote peer announcing more IN room than its byte budget is disconnected.
#[test]
fn u25_remote_byte_budget_is_closed() {
    let mut rig = remote_rig();
    rig.enumerate();
    let mut bytes = Vec::new();
    for i in 0..9u32 {
        bytes.extend(
            rawgadget_usbip::DevicePdu::Submit(submit(200 + i, 0x81, 4 << 20, None)).to_vec(),
        );
    }
    rig.vhci.send_raw(&bytes).unwrap();
    let e = closed_for_protocol(&mut rig);
    assert!(
        matches!(
            e,
            LinkError::Budget {
                what: "bytes in flight",
                ..
            }
        ),
        "{e}"
    );
}

/// contract U25: the local vhci is trusted with generous budgets: the same flood is served
/// (the URBs wait for data, and unlinking them all works).
#[test]
fn u25_local_vhci_flood_is_served() {
    let mut rig = Rig::hs();
    rig.enumerate();
    let n = 2000u32;
    let mut bytes = Vec::new();
    for i in 0..n {
        bytes.extend(
            rawgadget_usbip::DevicePdu::Submit(submit(1000 + i, 0x81, 4096, None)).to_vec(),
        );
    }
    rig.vhci.send_raw(&bytes).unwrap();
    let mut unlinks = Vec::new();
    for i in 0..n {
        unlinks.push(rig.vhci.unlink_raw(1000 + i).unwrap());
    }
    for u in unlinks {
        assert!(matches!(
            rig.ret_unlink(u),
            rawgadget_usbip_udc::fake_vhci::WireReply::RetUnlink { status: -104, .. }
        ));
    }
    assert!(rig.vhci.is_connected());
    assert!(rig.host.get_status(&mut rig.vhci, 0, 0).is_ok());
}

/// Garbage of every length never panics the driver: each run ends closed or still serving.
#[test]
fn garbage_never_panics() {
    for seed in 0..8u32 {
        let mut rig = Rig::hs();
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let _ = rig.vhci.send_raw(&bytes);
        rig.vhci.detach();
        let end = rig.conn.take().unwrap().join();
        assert!(
            matches!(end, ConnectionEnd::Protocol(_) | ConnectionEnd::PeerClosed),
            "{end}"
        );
    }
}
