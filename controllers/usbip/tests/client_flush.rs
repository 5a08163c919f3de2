//! The client side writing its own replies ([`ClientFlush`], contract P4): a client operation
//! that completes a URB takes the RET_SUBMIT under the bus lock and writes it itself, and the
//! unlink rules (U10, U14) still hold when its write races the reader's replies.

mod common;

use std::time::Duration;

use common::*;
use rawgadget_engine::ClientOp;
use rawgadget_uapi::UsbRawEpIo;
use rawgadget_usbip_udc::fake_vhci::WireReply;
use rawgadget_usbip_udc::Flush;

/// EP_WRITE of `data` on bulk IN 0x81, as a client of the in-process backend issues it:
/// under the bus lock, followed by the flush. Returns the replies the client took.
fn client_write(rig: &Rig, data: Vec<u8>) -> Flush {
    let ep = rig.dev().handle(0x81).expect("0x81 enabled");
    let mut bus = rig.device.bus().lock();
    let before = rig.device.client_flush().watch(&bus);
    let _ = bus.client(ClientOp::EpWrite {
        io: UsbRawEpIo {
            ep,
            flags: 0,
            length: data.len() as u32,
        },
        data,
    });
    rig.device.client_flush().collect(&mut bus, before)
}

fn ret_submit_of(rig: &mut Rig, seqnum: u32) -> (i32, u32) {
    match rig.ret_submit(seqnum) {
        WireReply::RetSubmit {
            status,
            actual_length,
            ..
        } => (status, actual_length),
        other => panic!("{other:?}"),
    }
}

/// contract P4: the client operation that completes a URB the host waits for takes its
/// RET_SUBMIT itself, and the host gets it; the writer thread is not needed, so it is not
/// woken.
#[test]
fn p4_client_op_completing_a_urb_writes_its_reply() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.vhci
        .submit_raw(&submit(5000, 0x81, 512, None), false)
        .unwrap();
    rig.settle(Duration::from_millis(50));
    let generation = rig.device.bus().generation();
    let flush = client_write(&rig, vec![7; 20]);
    assert!(
        flush.has_replies(),
        "the client takes the reply its op produced"
    );
    assert!(!flush.wakes_waiters(), "nothing left for the writer thread");
    flush.finish(rig.device.bus());
    assert_eq!(
        rig.device.bus().generation(),
        generation,
        "no wait_for waiter was woken"
    );
    assert_eq!(ret_submit_of(&mut rig, 5000), (0, 20));
    assert_eq!(rig.vhci.error(), None);
}

/// contract P4: a client operation that completes nothing takes nothing.
#[test]
fn p4_client_op_without_a_waiting_urb_takes_nothing() {
    let mut rig = Rig::hs();
    rig.enumerate();
    let flush = client_write(&rig, vec![7; 20]);
    assert!(!flush.has_replies());
    flush.finish(rig.device.bus());
    rig.vhci
        .submit_raw(&submit(5001, 0x81, 512, None), false)
        .unwrap();
    assert_eq!(ret_submit_of(&mut rig, 5001), (0, 20));
    assert_eq!(rig.vhci.error(), None);
}

/// contract U10, U14 with P4: the host unlinks a URB whose RET_SUBMIT a client thread has
/// taken but not written yet. The reader's RET_UNLINK (status 0: the URB was answered) waits
/// for the client's write and follows it, so vhci sees the RET_SUBMIT first, as the link made
/// them.
#[test]
fn u10_unlink_racing_a_client_write_keeps_ret_submit_first() {
    let mut rig = Rig::hs();
    rig.enumerate();
    rig.vhci
        .submit_raw(&submit(5002, 0x81, 512, None), false)
        .unwrap();
    rig.settle(Duration::from_millis(50));
    let pending = client_write(&rig, vec![9; 30]);
    assert!(pending.has_replies(), "the client takes the reply");
    let unlink = rig.vhci.unlink_raw(5002).unwrap();
    // the reader has handled the CMD_UNLINK; its RET_UNLINK waits in the link
    let conn = rig.conn.as_ref().unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while conn.stats().unlinks == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "CMD_UNLINK not handled"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    rig.settle(Duration::from_millis(20));
    assert!(
        !ret_submit_seqnums(&rig.vhci.replies).contains(&5002),
        "the client holds the RET_SUBMIT"
    );
    assert!(
        !rig.vhci
            .replies
            .iter()
            .any(|r| matches!(r, WireReply::RetUnlink { seqnum, .. } if *seqnum == unlink)),
        "the RET_UNLINK may not overtake it"
    );
    pending.finish(rig.device.bus());
    match rig.ret_unlink(unlink) {
        WireReply::RetUnlink { status, .. } => assert_eq!(status, 0, "U10: URB was answered"),
        other => panic!("{other:?}"),
    }
    assert_eq!(ret_submit_of(&mut rig, 5002), (0, 30));
    let order: Vec<bool> = rig
        .vhci
        .replies
        .iter()
        .filter_map(|r| match r {
            WireReply::RetSubmit { seqnum: 5002, .. } => Some(true),
            WireReply::RetUnlink { seqnum, .. } if *seqnum == unlink => Some(false),
            _ => None,
        })
        .collect();
    assert_eq!(order, [true, false], "RET_SUBMIT, then RET_UNLINK");
    assert_eq!(rig.vhci.error(), None);
}

/// contract P4: with no connection whose threads write for the client (none yet, or a TCP
/// export), nobody else would collect the give-backs: the flush wakes the bus's waiters.
#[test]
fn p4_flush_without_a_local_connection_wakes_the_waiters() {
    let device = rawgadget_usbip_udc::UsbipDevice::new(rawgadget_usbip_udc::UsbipConfig::default());
    let mut bus = device.bus().lock();
    let before = device.client_flush().watch(&bus);
    let flush = device.client_flush().collect(&mut bus, before);
    drop(bus);
    assert!(!flush.has_replies());
    assert!(flush.wakes_waiters());
    let generation = device.bus().generation();
    flush.finish(device.bus());
    assert!(device.bus().generation() > generation);
}
