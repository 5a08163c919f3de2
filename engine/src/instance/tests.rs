//! One test per errno path of spec §1.5, grouped by state, each naming the rule it checks.
//! Fixtures build an instance directly in the state a test needs.

extern crate std;

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use rawgadget_uapi::{event_type::*, speed::*, Errno, Speed, UsbRawEpCaps, UsbRawEpIo, UsbRawInit};

use super::*;
use crate::mock::{Call, MockUdc};
use crate::udc::EpId;

// ------------------------------------------------------------------------------------------
// Fixtures

fn init_op(speed: u8) -> ClientOp {
    ClientOp::Init(Box::new(UsbRawInit::new("dummy_udc", "dummy_udc.0", speed)))
}

fn done(o: Outcome) -> OpResult {
    match o {
        Outcome::Done(r) => r,
        Outcome::Pending(op) => panic!("expected a result, got Pending({op:?})"),
    }
}

fn pending(o: Outcome) -> OpId {
    match o {
        Outcome::Pending(op) => op,
        Outcome::Done(r) => panic!("expected Pending, got {r:?}"),
    }
}

fn ret(inst: &mut Instance, udc: &mut MockUdc, op: ClientOp) -> Result<u32, Errno> {
    done(inst.handle_client(udc, op)).ret
}

fn initialized() -> (Instance, MockUdc) {
    let mut inst = Instance::new();
    let mut udc = MockUdc::default();
    assert_eq!(ret(&mut inst, &mut udc, init_op(USB_SPEED_HIGH)), Ok(0));
    (inst, udc)
}

/// RUNNING with the CONNECT event already fetched.
fn running() -> (Instance, MockUdc) {
    let (mut inst, mut udc) = initialized();
    assert_eq!(ret(&mut inst, &mut udc, ClientOp::Run { arg: 0 }), Ok(0));
    let r = done(inst.handle_client(&mut udc, ClientOp::EventFetch { capacity: 8 }));
    assert!(
        matches!(r.payload, Payload::Event { header, .. } if header.type_ == USB_RAW_EVENT_CONNECT)
    );
    (inst, udc)
}

fn setup(request_type: u8, request: u8, w_length: u16) -> [u8; 8] {
    let l = w_length.to_le_bytes();
    [request_type, request, 0, 0, 0, 0, l[0], l[1]]
}

/// RUNNING with a SETUP pending (fetched).
fn running_with_setup(request_type: u8, w_length: u16) -> (Instance, MockUdc) {
    let (mut inst, mut udc) = running();
    inst.handle_setup(setup(request_type, 6, w_length)).unwrap();
    let r = done(inst.handle_client(&mut udc, ClientOp::EventFetch { capacity: 8 }));
    assert!(
        matches!(r.payload, Payload::Event { header, .. } if header.type_ == USB_RAW_EVENT_CONTROL)
    );
    (inst, udc)
}

fn io(ep: u16, flags: u16, length: u32) -> UsbRawEpIo {
    UsbRawEpIo { ep, flags, length }
}

fn ep_desc(address: u8, attributes: u8, maxp: u16) -> [u8; 9] {
    let m = maxp.to_le_bytes();
    [9, 5, address, attributes, m[0], m[1], 0, 0, 0]
}

const BULK_IN_512: [u8; 9] = [9, 5, 0x81, 2, 0x00, 0x02, 0, 0, 0];
const BULK_OUT_512: [u8; 9] = [9, 5, 0x02, 2, 0x00, 0x02, 0, 0, 0];

/// RUNNING with bulk IN (handle 0, ep1in-bulk) and bulk OUT (handle 1, ep2out-bulk) enabled.
fn running_with_bulk() -> (Instance, MockUdc) {
    let (mut inst, mut udc) = running();
    assert_eq!(
        ret(
            &mut inst,
            &mut udc,
            ClientOp::EpEnable { desc: BULK_IN_512 }
        ),
        Ok(0)
    );
    assert_eq!(
        ret(
            &mut inst,
            &mut udc,
            ClientOp::EpEnable { desc: BULK_OUT_512 }
        ),
        Ok(1)
    );
    (inst, udc)
}

fn fetch_type(inst: &mut Instance, udc: &mut MockUdc) -> u32 {
    match done(inst.handle_client(udc, ClientOp::EventFetch { capacity: 8 })).payload {
        Payload::Event { header, .. } => header.type_,
        p => panic!("not an event: {p:?}"),
    }
}

fn next_completion(inst: &mut Instance) -> OpCompletion {
    inst.poll_completion().expect("a completion")
}

/// Every ioctl that needs RUNNING, with arguments that would otherwise pass their own checks
/// or at least reach the state check.
fn gated_ops() -> Vec<ClientOp> {
    vec![
        ClientOp::EventFetch { capacity: 8 },
        ClientOp::Ep0Write {
            io: io(0, 0, 0),
            data: vec![],
        },
        ClientOp::Ep0Read {
            io: io(0, 0, 0),
            buf: vec![],
        },
        ClientOp::EpEnable { desc: BULK_IN_512 },
        ClientOp::EpDisable { arg: 0 },
        ClientOp::EpWrite {
            io: io(0, 0, 0),
            data: vec![],
        },
        ClientOp::EpRead {
            io: io(0, 0, 0),
            buf: vec![],
        },
        ClientOp::Configure { arg: 0 },
        ClientOp::VbusDraw { arg: 0 },
        ClientOp::EpsInfo,
        ClientOp::Ep0Stall { arg: 0 },
        ClientOp::EpSetHalt { arg: 0 },
        ClientOp::EpClearHalt { arg: 0 },
        ClientOp::EpSetWedge { arg: 0 },
    ]
}

// ------------------------------------------------------------------------------------------
// OPENED / INITIALIZED

/// spec §1.5 INIT: speed values.
#[test]
fn init_speed_table() {
    let rows: &[(u8, Result<u32, Errno>, Speed)] = &[
        (USB_SPEED_UNKNOWN, Ok(0), Speed::High), // silently HIGH
        (USB_SPEED_LOW, Ok(0), Speed::Low),
        (USB_SPEED_FULL, Ok(0), Speed::Full),
        (USB_SPEED_HIGH, Ok(0), Speed::High),
        (USB_SPEED_WIRELESS, Err(Errno::EINVAL), Speed::High),
        (USB_SPEED_SUPER, Ok(0), Speed::Super),
        (USB_SPEED_SUPER_PLUS, Err(Errno::EINVAL), Speed::High),
        (7, Err(Errno::EINVAL), Speed::High),
        (255, Err(Errno::EINVAL), Speed::High),
    ];
    for &(speed, want, negotiated) in rows {
        let mut inst = Instance::new();
        let mut udc = MockUdc::default();
        assert_eq!(
            ret(&mut inst, &mut udc, init_op(speed)),
            want,
            "speed {speed}"
        );
        if want.is_ok() {
            assert_eq!(inst.state(), State::Initialized);
            assert_eq!(inst.driver_speed(), negotiated);
        } else {
            assert_eq!(
                inst.state(),
                State::Opened,
                "a failed INIT leaves the fd usable"
            );
        }
    }
}

/// spec §1.5 INIT step 4: names must be NUL-terminated within 128 bytes (≤ 127 chars).
#[test]
fn init_name_over_127_bytes_is_e2big() {
    for which in 0..2 {
        let mut init = UsbRawInit::new("dummy_udc", "dummy_udc.0", USB_SPEED_HIGH);
        let name = if which == 0 {
            &mut init.driver_name
        } else {
            &mut init.device_name
        };
        name.fill(b'a');
        let mut inst = Instance::new();
        let mut udc = MockUdc::default();
        assert_eq!(
            ret(&mut inst, &mut udc, ClientOp::Init(Box::new(init))),
            Err(Errno::E2BIG)
        );
        assert_eq!(inst.state(), State::Opened);
        // 127 characters plus NUL is fine
        let name = if which == 0 {
            &mut init.driver_name
        } else {
            &mut init.device_name
        };
        name[127] = 0;
        assert_eq!(
            ret(&mut inst, &mut udc, ClientOp::Init(Box::new(init))),
            Ok(0)
        );
        let (driver, device) = inst.udc_names();
        assert_eq!(
            if which == 0 {
                driver.len()
            } else {
                device.len()
            },
            127
        );
    }
}

/// spec §1.5 INIT step 5: INIT works once per fd; the speed and name checks come first.
#[test]
fn init_twice_is_einval_after_argument_checks() {
    let (mut inst, mut udc) = initialized();
    assert_eq!(
        ret(&mut inst, &mut udc, init_op(USB_SPEED_HIGH)),
        Err(Errno::EINVAL)
    );
    assert_eq!(ret(&mut inst, &mut udc, init_op(9)), Err(Errno::EINVAL));
    let mut long = UsbRawInit::new("dummy_udc", "dummy_udc.0", USB_SPEED_HIGH);
    long.device_name.fill(b'x');
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::Init(Box::new(long))),
        Err(Errno::E2BIG)
    );
    assert_eq!(inst.state(), State::Initialized);
}

/// spec §2.1: everything but INIT and RUN needs RUNNING → EINVAL before it.
#[test]
fn ioctls_before_run_are_einval() {
    for (inst_state, mut inst, mut udc) in [
        ("opened", Instance::new(), MockUdc::default()),
        ("initialized", initialized().0, MockUdc::default()),
    ] {
        for op in gated_ops() {
            let name = op.name();
            assert_eq!(
                ret(&mut inst, &mut udc, op),
                Err(Errno::EINVAL),
                "{name} in {inst_state}"
            );
        }
        inst.assert_invariants();
    }
}

/// spec §1.5 RUN: argument must be 0; only from INITIALIZED.
#[test]
fn run_argument_and_state() {
    let mut inst = Instance::new();
    let mut udc = MockUdc::default();
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::Run { arg: 0 }),
        Err(Errno::EINVAL)
    );
    let (mut inst, mut udc) = initialized();
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::Run { arg: 1 }),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        inst.state(),
        State::Initialized,
        "a bad argument changes nothing"
    );
    assert_eq!(ret(&mut inst, &mut udc, ClientOp::Run { arg: 0 }), Ok(0));
    assert_eq!(inst.state(), State::Running);
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::Run { arg: 0 }),
        Err(Errno::EINVAL)
    );
}

/// contract D2: wrong UDC names fail RUN with EBUSY and the instance is FAILED for good.
#[test]
fn d2_run_with_wrong_names_is_ebusy_then_failed() {
    let mut inst = Instance::new();
    let mut udc = MockUdc::default();
    let op = ClientOp::Init(Box::new(UsbRawInit::new(
        "dummy_udc.0",
        "dummy_udc",
        USB_SPEED_HIGH,
    )));
    assert_eq!(ret(&mut inst, &mut udc, op), Ok(0));
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::Run { arg: 0 }),
        Err(Errno::EBUSY)
    );
    assert_eq!(inst.state(), State::Failed);
    for op in gated_ops() {
        let name = op.name();
        assert_eq!(
            ret(&mut inst, &mut udc, op),
            Err(Errno::EINVAL),
            "{name} after failed RUN"
        );
    }
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::Run { arg: 0 }),
        Err(Errno::EINVAL)
    );
}

/// spec §1.5 RUN: other bind errors are returned as is.
#[test]
fn run_returns_bind_error_as_is() {
    let (mut inst, mut udc) = initialized();
    udc.bind_error = Some(Errno::ENODEV);
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::Run { arg: 0 }),
        Err(Errno::ENODEV)
    );
    assert_eq!(inst.state(), State::Failed);
}

/// contract U4, spec §1.2: CONNECT is queued at RUN, before any host exists.
#[test]
fn u4_connect_is_the_first_event_at_run() {
    let (mut inst, mut udc) = initialized();
    assert_eq!(ret(&mut inst, &mut udc, ClientOp::Run { arg: 0 }), Ok(0));
    assert_eq!(inst.queued_events(), 1);
    let r = done(inst.handle_client(&mut udc, ClientOp::EventFetch { capacity: 0 }));
    assert_eq!(r.ret, Ok(0));
    assert_eq!(
        r.payload,
        Payload::Event {
            header: UsbRawEvent {
                type_: USB_RAW_EVENT_CONNECT,
                length: 0
            },
            data: vec![]
        }
    );
}

// ------------------------------------------------------------------------------------------
// RUNNING: events

/// spec §1.5 EVENT_FETCH: FIFO, and the header reports the full length while only
/// min(capacity, length) bytes are copied.
#[test]
fn event_fetch_fifo_and_truncation() {
    let (mut inst, mut udc) = running();
    inst.handle_bus(BusEvent::Reset);
    inst.handle_setup(setup(0x80, 6, 18)).unwrap();
    inst.handle_bus(BusEvent::Suspend);
    assert_eq!(fetch_type(&mut inst, &mut udc), USB_RAW_EVENT_RESET);
    assert_eq!(fetch_type(&mut inst, &mut udc), USB_RAW_EVENT_CONTROL);
    assert_eq!(fetch_type(&mut inst, &mut udc), USB_RAW_EVENT_SUSPEND);
    for capacity in [0u32, 3, 8, 4096] {
        assert_eq!(
            ret(&mut inst, &mut udc, ClientOp::Ep0Stall { arg: 0 }),
            Ok(0)
        );
        inst.handle_setup(setup(0x80, 6, 18)).unwrap();
        let r = done(inst.handle_client(&mut udc, ClientOp::EventFetch { capacity }));
        let Payload::Event { header, data } = r.payload else {
            panic!("not an event")
        };
        assert_eq!(
            header,
            UsbRawEvent {
                type_: USB_RAW_EVENT_CONTROL,
                length: 8
            }
        );
        let copied = (capacity as usize).min(8);
        assert_eq!(
            data,
            setup(0x80, 6, 18)[..copied].to_vec(),
            "capacity {capacity}"
        );
    }
}

/// spec §1.5 EVENT_FETCH blocks until an event exists; several waiters get distinct events in
/// arrival order.
#[test]
fn event_fetch_blocks_and_waiters_get_distinct_events() {
    let (mut inst, mut udc) = running();
    let a = pending(inst.handle_client(&mut udc, ClientOp::EventFetch { capacity: 8 }));
    let b = pending(inst.handle_client(&mut udc, ClientOp::EventFetch { capacity: 8 }));
    assert!(inst.poll_completion().is_none());
    inst.handle_bus(BusEvent::Reset);
    inst.handle_bus(BusEvent::Resume);
    let c1 = next_completion(&mut inst);
    let c2 = next_completion(&mut inst);
    assert_eq!((c1.op, c2.op), (a, b));
    assert!(
        matches!(c1.result.payload, Payload::Event { header, .. } if header.type_ == USB_RAW_EVENT_RESET)
    );
    assert!(
        matches!(c2.result.payload, Payload::Event { header, .. } if header.type_ == USB_RAW_EVENT_RESUME)
    );
    assert_eq!(inst.queued_events(), 0);
}

/// contract C9 / spec §1.5: an interrupted EVENT_FETCH returns EINTR and loses no event.
#[test]
fn c9_interrupted_event_fetch_is_eintr_and_loses_nothing() {
    let (mut inst, mut udc) = running();
    let a = pending(inst.handle_client(&mut udc, ClientOp::EventFetch { capacity: 8 }));
    inst.cancel(&mut udc, a);
    let c = next_completion(&mut inst);
    assert_eq!((c.op, c.result.ret), (a, Err(Errno::EINTR)));
    inst.handle_bus(BusEvent::Reset);
    assert_eq!(
        inst.queued_events(),
        1,
        "the event waits for the next fetch"
    );
    assert_eq!(fetch_type(&mut inst, &mut udc), USB_RAW_EVENT_RESET);
}

/// spec §2.4: 16 unfetched events fit; the 17th moves the instance to FAILED, after which
/// ioctls are EINVAL and SETUPs are refused with ENODEV.
#[test]
fn event_queue_overflow_is_fatal() {
    let (mut inst, mut udc) = running();
    for _ in 0..16 {
        inst.handle_bus(BusEvent::Suspend);
    }
    assert_eq!(inst.state(), State::Running);
    assert_eq!(inst.queued_events(), 16);
    inst.handle_bus(BusEvent::Resume);
    assert_eq!(inst.state(), State::Failed);
    assert_eq!(inst.queued_events(), 16);
    assert_eq!(inst.handle_setup(setup(0x80, 6, 18)), Err(Errno::ENODEV));
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::EventFetch { capacity: 8 }),
        Err(Errno::EINVAL)
    );
    inst.assert_invariants();
}

/// spec §2.4: a SETUP that cannot be queued fails too, and leaves its pending flag set.
#[test]
fn setup_into_full_queue_fails_instance() {
    let (mut inst, _udc) = running();
    for _ in 0..16 {
        inst.handle_bus(BusEvent::Suspend);
    }
    assert_eq!(inst.handle_setup(setup(0x00, 9, 0)), Err(Errno::ENOMEM));
    assert_eq!(inst.state(), State::Failed);
    assert_eq!(inst.ep0_pending(), Ep0Pending::Out);
}

// ------------------------------------------------------------------------------------------
// RUNNING: ep0

/// spec §1.5 EP0_* header checks come before the state checks.
#[test]
fn ep0_io_header_checks_before_state() {
    let rows = [
        (io(30, 0, 0), "ep >= 30"),
        (io(0, 2, 0), "unknown flag"),
        (io(0, 0, (1 << 22) + 1), "length over KMALLOC_MAX_SIZE"),
    ];
    for (hdr, what) in rows {
        let mut inst = Instance::new();
        let mut udc = MockUdc::default();
        let len = hdr.length.min(16) as usize;
        let w = ClientOp::Ep0Write {
            io: hdr,
            data: vec![0; len],
        };
        assert_eq!(
            ret(&mut inst, &mut udc, w),
            Err(Errno::EINVAL),
            "write {what}"
        );
        let r = ClientOp::Ep0Read {
            io: hdr,
            buf: vec![],
        };
        assert_eq!(
            ret(&mut inst, &mut udc, r),
            Err(Errno::EINVAL),
            "read {what}"
        );
    }
    // exactly KMALLOC_MAX_SIZE passes the header check and fails later (EBUSY: no SETUP)
    let (mut inst, mut udc) = running();
    let r = ClientOp::Ep0Read {
        io: io(29, 1, 1 << 22),
        buf: vec![],
    };
    assert_eq!(ret(&mut inst, &mut udc, r), Err(Errno::EBUSY));
}

/// spec §1.5: a WRITE whose payload is shorter than `length` faulted on copy-in.
#[test]
fn ep0_write_short_payload_is_efault() {
    let (mut inst, mut udc) = running_with_setup(0x80, 18);
    let w = ClientOp::Ep0Write {
        io: io(0, 0, 18),
        data: vec![0; 4],
    };
    assert_eq!(ret(&mut inst, &mut udc, w), Err(Errno::EFAULT));
}

/// spec §1.5 EP0_*: no SETUP pending → EBUSY.
#[test]
fn ep0_io_without_setup_is_ebusy() {
    let (mut inst, mut udc) = running();
    let w = ClientOp::Ep0Write {
        io: io(0, 0, 1),
        data: vec![1],
    };
    assert_eq!(ret(&mut inst, &mut udc, w), Err(Errno::EBUSY));
    let r = ClientOp::Ep0Read {
        io: io(0, 0, 0),
        buf: vec![],
    };
    assert_eq!(ret(&mut inst, &mut udc, r), Err(Errno::EBUSY));
}

/// spec §1.5 direction rule: IN pending only for DIR_IN with wLength > 0; everything else,
/// zero-length IN requests included, is answered with EP0_READ.
#[test]
fn ep0_direction_rule_table() {
    // (bRequestType, wLength, expected pending)
    let rows = [
        (0x80, 18, Ep0Pending::In),
        (0x80, 0, Ep0Pending::Out), // zero-length IN request → OUT pending (issue #46)
        (0x00, 0, Ep0Pending::Out),
        (0x40, 16, Ep0Pending::Out),
        (0xc0, 1, Ep0Pending::In),
    ];
    for (rt, wl, want) in rows {
        let (mut inst, mut udc) = running_with_setup(rt, wl);
        assert_eq!(
            inst.ep0_pending(),
            want,
            "bRequestType {rt:#x} wLength {wl}"
        );
        let (wrong, right) = if want == Ep0Pending::In {
            (
                ClientOp::Ep0Read {
                    io: io(0, 0, u32::from(wl)),
                    buf: vec![],
                },
                ClientOp::Ep0Write {
                    io: io(0, 0, 1),
                    data: vec![7],
                },
            )
        } else {
            (
                ClientOp::Ep0Write {
                    io: io(0, 0, 0),
                    data: vec![],
                },
                ClientOp::Ep0Read {
                    io: io(0, 0, u32::from(wl)),
                    buf: vec![],
                },
            )
        };
        assert_eq!(
            ret(&mut inst, &mut udc, wrong),
            Err(Errno::EBUSY),
            "wrong direction"
        );
        let _ = pending(inst.handle_client(&mut udc, right));
    }
}

/// spec §1.5 EP0_WRITE: queued to the controller, blocks, returns bytes sent; the SETUP is then
/// answered and the next one reaches the client.
#[test]
fn ep0_write_completes_with_actual_and_clears_pending() {
    let (mut inst, mut udc) = running_with_setup(0x80, 18);
    let op = pending(inst.handle_client(
        &mut udc,
        ClientOp::Ep0Write {
            io: io(0, USB_RAW_IO_FLAGS_ZERO_, 18),
            data: vec![5; 18],
        },
    ));
    let (ep, req) = &udc.queued[0];
    assert_eq!(
        (*ep, req.length, req.zero, req.buf.len()),
        (EpId::Ep0, 18, true, 18)
    );
    // a second ep0 I/O while one is in flight: EBUSY (urb already queued)
    let r = ClientOp::Ep0Write {
        io: io(0, 0, 1),
        data: vec![1],
    };
    assert_eq!(ret(&mut inst, &mut udc, r), Err(Errno::EBUSY));
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::Ep0Stall { arg: 0 }),
        Err(Errno::EBUSY)
    );
    let c = udc.complete(EpId::Ep0, Ok(()), 18, &[]).unwrap();
    inst.handle_completion(c);
    let done_ = next_completion(&mut inst);
    assert_eq!((done_.op, done_.result.ret), (op, Ok(18)));
    assert_eq!(inst.ep0_pending(), Ep0Pending::None);
    assert_eq!(inst.handle_setup(setup(0x80, 6, 9)), Ok(()));
}
const USB_RAW_IO_FLAGS_ZERO_: u16 = rawgadget_uapi::USB_RAW_IO_FLAGS_ZERO;

/// spec §1.5 EP0_READ: returns min(length, actual) bytes, copied back.
#[test]
fn ep0_read_returns_min_of_length_and_actual() {
    let (mut inst, mut udc) = running_with_setup(0x40, 16);
    let op = pending(inst.handle_client(
        &mut udc,
        ClientOp::Ep0Read {
            io: io(0, 0, 16),
            buf: vec![],
        },
    ));
    let c = udc.complete(EpId::Ep0, Ok(()), 5, b"hello").unwrap();
    inst.handle_completion(c);
    let r = next_completion(&mut inst);
    assert_eq!(r.op, op);
    assert_eq!(r.result.ret, Ok(5));
    assert_eq!(r.result.payload, Payload::Data(b"hello".to_vec()));
}

/// spec §1.5: a completion status (ESHUTDOWN after a reset) is the ioctl's errno, and it
/// still clears the pending flag (gadget_ep0_complete).
#[test]
fn ep0_completion_error_is_returned_and_clears_pending() {
    let (mut inst, mut udc) = running_with_setup(0x80, 18);
    let _ = pending(inst.handle_client(
        &mut udc,
        ClientOp::Ep0Write {
            io: io(0, 0, 18),
            data: vec![0; 18],
        },
    ));
    let c = udc
        .complete(EpId::Ep0, Err(Errno::ESHUTDOWN), 0, &[])
        .unwrap();
    inst.handle_completion(c);
    assert_eq!(next_completion(&mut inst).result.ret, Err(Errno::ESHUTDOWN));
    assert_eq!(inst.ep0_pending(), Ep0Pending::None);
}

/// spec §1.5 (since 6.7): a usb_ep_queue error is returned as is, the device stays usable and
/// the SETUP stays pending, so the client can retry or stall. Contract D7: ESHUTDOWN before the
/// port is enabled.
#[test]
fn d7_ep0_queue_error_returned_and_setup_stays_pending() {
    let (mut inst, mut udc) = running_with_setup(0x80, 18);
    udc.queue_error = Some(Errno::ESHUTDOWN);
    let w = ClientOp::Ep0Write {
        io: io(0, 0, 18),
        data: vec![0; 18],
    };
    let r = done(inst.handle_client(&mut udc, w));
    assert_eq!(r.ret, Err(Errno::ESHUTDOWN));
    assert!(
        matches!(r.payload, Payload::Data(ref b) if b.len() == 18),
        "buffer handed back"
    );
    assert_eq!(inst.state(), State::Running);
    assert_eq!(inst.ep0_pending(), Ep0Pending::In);
    udc.queue_error = None;
    let w = ClientOp::Ep0Write {
        io: io(0, 0, 18),
        data: vec![0; 18],
    };
    let _ = pending(inst.handle_client(&mut udc, w));
}

/// contract D16, spec §2.3: a second SETUP while one is pending (fetched or not) is refused with
/// EBUSY and never queued.
#[test]
fn d16_second_setup_while_pending_is_refused() {
    let (mut inst, mut udc) = running();
    assert_eq!(inst.handle_setup(setup(0x80, 6, 18)), Ok(()));
    assert_eq!(
        inst.handle_setup(setup(0x80, 6, 9)),
        Err(Errno::EBUSY),
        "unfetched"
    );
    assert_eq!(inst.queued_events(), 1);
    assert_eq!(fetch_type(&mut inst, &mut udc), USB_RAW_EVENT_CONTROL);
    assert_eq!(
        inst.handle_setup(setup(0x00, 9, 0)),
        Err(Errno::EBUSY),
        "fetched"
    );
    assert_eq!(inst.queued_events(), 0);
    // reset and disconnect do not clear the flag (contract D16)
    inst.handle_bus(BusEvent::Reset);
    inst.handle_bus(BusEvent::Disconnect);
    assert_eq!(inst.handle_setup(setup(0x00, 9, 0)), Err(Errno::EBUSY));
}

/// spec §1.5 EP0_STALL: argument 0; in flight → EBUSY; nothing pending → EBUSY; the controller's
/// result returned and the pending flag cleared either way.
#[test]
fn ep0_stall_paths() {
    let (mut inst, mut udc) = running();
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::Ep0Stall { arg: 0 }),
        Err(Errno::EBUSY)
    );
    inst.handle_setup(setup(0x80, 6, 18)).unwrap();
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::Ep0Stall { arg: 1 }),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        inst.ep0_pending(),
        Ep0Pending::In,
        "bad argument changes nothing"
    );
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::Ep0Stall { arg: 0 }),
        Ok(0)
    );
    assert_eq!(udc.calls.last(), Some(&Call::SetHalt(EpId::Ep0, true)));
    assert_eq!(inst.ep0_pending(), Ep0Pending::None);
    inst.handle_setup(setup(0x00, 9, 0)).unwrap();
    udc.halt_error = Some(Errno::EAGAIN);
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::Ep0Stall { arg: 0 }),
        Err(Errno::EAGAIN)
    );
    assert_eq!(
        inst.ep0_pending(),
        Ep0Pending::None,
        "cleared even on error"
    );
}

/// contract D31 / spec §1.5: a signal dequeues the ep0 request; EINTR if it was still queued.
#[test]
fn d31_interrupted_ep0_read_is_eintr_when_dequeued() {
    let (mut inst, mut udc) = running_with_setup(0x00, 0);
    let op = pending(inst.handle_client(
        &mut udc,
        ClientOp::Ep0Read {
            io: io(0, 0, 0),
            buf: vec![],
        },
    ));
    inst.cancel(&mut udc, op);
    let c = next_completion(&mut inst);
    assert_eq!((c.op, c.result.ret), (op, Err(Errno::EINTR)));
    assert!(udc.queued.is_empty());
    assert_eq!(
        inst.ep0_pending(),
        Ep0Pending::None,
        "completion clears the flag"
    );
}

/// contract D31, C9: if the request had already completed, the signal changes nothing.
#[test]
fn d31_interrupt_after_completion_returns_normal_result() {
    let (mut inst, mut udc) = running_with_setup(0x80, 4);
    let op = pending(inst.handle_client(
        &mut udc,
        ClientOp::Ep0Write {
            io: io(0, 0, 4),
            data: vec![1; 4],
        },
    ));
    // completed inside the controller, not yet delivered to the engine
    let c = udc.complete(EpId::Ep0, Ok(()), 4, &[]).unwrap();
    inst.cancel(&mut udc, op);
    assert!(inst.poll_completion().is_none());
    inst.handle_completion(c);
    assert_eq!(next_completion(&mut inst).result.ret, Ok(4));
}

// ------------------------------------------------------------------------------------------
// RUNNING: endpoints

/// spec §1.5 EP_ENABLE: zero maxpacket is EINVAL, checked before the state.
#[test]
fn ep_enable_zero_maxpacket_is_einval() {
    let mut inst = Instance::new();
    let mut udc = MockUdc::default();
    // 0x1800: mult bits set, maxpacket bits zero
    let d = ep_desc(0x81, 2, 0x1800);
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::EpEnable { desc: d }),
        Err(Errno::EINVAL)
    );
    let (mut inst, mut udc) = running();
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::EpEnable { desc: d }),
        Err(Errno::EINVAL)
    );
    assert!(!udc.calls.iter().any(|c| matches!(c, Call::EpEnable(_))));
}

/// contract D5: no endpoint matches → EINVAL: nothing is iso on dummy, control never matches,
/// and a maxpacket above every `maxpacket_limit` fits nowhere.
#[test]
fn d5_no_match_is_einval() {
    let (mut inst, mut udc) = running();
    for d in [
        ep_desc(0x81, 1, 64),
        ep_desc(0x02, 1, 64),
        ep_desc(0x81, 0, 64),
        ep_desc(0x02, 0, 8),
    ] {
        assert_eq!(
            ret(&mut inst, &mut udc, ClientOp::EpEnable { desc: d }),
            Err(Errno::EINVAL),
            "{d:?}"
        );
    }
    let mut inst = Instance::new();
    let mut udc = MockUdc::default();
    for ep in udc.endpoints.iter_mut() {
        ep.maxpacket_limit = 512;
    }
    assert_eq!(ret(&mut inst, &mut udc, init_op(USB_SPEED_HIGH)), Ok(0));
    assert_eq!(ret(&mut inst, &mut udc, ClientOp::Run { arg: 0 }), Ok(0));
    let big = ep_desc(0x81, 2, 1024);
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::EpEnable { desc: big }),
        Err(Errno::EINVAL)
    );
    assert!(!udc.calls.iter().any(|c| matches!(c, Call::EpEnable(_))));
}

/// contract D5: the first free matching endpoint in list order; handles are EPS_INFO indices;
/// EBUSY once all matching endpoints are enabled.
#[test]
fn d5_first_match_then_ebusy() {
    let (mut inst, mut udc) = running();
    let int_in_5 = ep_desc(0x85, 3, 8);
    // ep5in-int (2), then the ANY in-endpoints with int caps: ep-bin 12, ep-ein 15, ep-gin 17,
    // ep-jin 20, ep-lin 22
    let mut handles = Vec::new();
    for _ in 0..6 {
        handles.push(ret(&mut inst, &mut udc, ClientOp::EpEnable { desc: int_in_5 }).unwrap());
    }
    assert_eq!(handles, vec![2, 12, 15, 17, 20, 22]);
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::EpEnable { desc: int_in_5 }),
        Err(Errno::EBUSY)
    );
    // handle = EPS_INFO index
    let r = done(inst.handle_client(&mut udc, ClientOp::EpsInfo));
    let Payload::EpsInfo(info) = r.payload else {
        panic!()
    };
    assert_eq!(info.eps[2].name_bytes(), b"ep5in-int");
    assert_eq!(info.eps[12].name_bytes(), b"ep-bin");
    // number 3 has no fixed endpoint: only ANY endpoints, all taken for IN int
    let in3 = ep_desc(0x83, 3, 8);
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::EpEnable { desc: in3 }),
        Err(Errno::EBUSY)
    );
    inst.assert_invariants();
}

/// contract D5: the candidate's enable error is returned as is; the next one is not tried.
#[test]
fn d5_controller_enable_error_is_final() {
    let (mut inst, mut udc) = running();
    udc.enable_error = Some(Errno::ESHUTDOWN);
    assert_eq!(
        ret(
            &mut inst,
            &mut udc,
            ClientOp::EpEnable { desc: BULK_IN_512 }
        ),
        Err(Errno::ESHUTDOWN)
    );
    let tries = udc
        .calls
        .iter()
        .filter(|c| matches!(c, Call::EpEnable(_)))
        .count();
    assert_eq!(tries, 1);
    assert_eq!(inst.ep_state(0), Some(EpState::Disabled));
}

/// spec §1.5 EPS_INFO: count, names, addresses from the names, caps, limits; unused slots zero.
#[test]
fn eps_info_reports_dummy_list() {
    let (mut inst, mut udc) = running();
    let r = done(inst.handle_client(&mut udc, ClientOp::EpsInfo));
    assert_eq!(r.ret, Ok(24));
    let Payload::EpsInfo(info) = r.payload else {
        panic!()
    };
    assert_eq!(info.eps[0].name_bytes(), b"ep1in-bulk");
    assert_eq!(info.eps[0].addr, 1);
    assert_eq!(info.eps[7].addr, 12);
    assert_eq!(info.eps[11].addr, 0xff);
    assert!(info.eps[0].caps.type_bulk() && info.eps[0].caps.dir_in());
    assert_eq!(info.eps[0].limits.maxpacket_limit, 65535);
    assert_eq!(info.eps[0].limits.max_streams, 16);
    assert_eq!(info.eps[24], Default::default());
}

/// spec §1.5 EPS_INFO: names are cut to 15 characters; `get_ep_addr` reads decimal digits.
#[test]
fn eps_info_name_truncation_and_address_parsing() {
    assert_eq!(ep_addr_from_name(b"ep12out-bulk"), 12);
    assert_eq!(ep_addr_from_name(b"ep-a"), 0xff);
    assert_eq!(ep_addr_from_name(b"ep"), 0xff);
    assert_eq!(ep_addr_from_name(b"ep300in"), 300u32 as u8);
    let mut inst = Instance::new();
    let mut udc = MockUdc::default();
    udc.endpoints[0].name = "ep1in-a-very-long-name".into();
    assert_eq!(ret(&mut inst, &mut udc, init_op(USB_SPEED_HIGH)), Ok(0));
    assert_eq!(ret(&mut inst, &mut udc, ClientOp::Run { arg: 0 }), Ok(0));
    let Payload::EpsInfo(info) = done(inst.handle_client(&mut udc, ClientOp::EpsInfo)).payload
    else {
        panic!()
    };
    assert_eq!(info.eps[0].name_bytes(), b"ep1in-a-very-lo");
}

/// spec §1.5 EP_DISABLE: handle range → EBUSY (C `int` conversion included), not enabled →
/// EINVAL, transfer in flight → EINVAL.
#[test]
fn ep_disable_paths() {
    let (mut inst, mut udc) = running_with_bulk();
    let rows: &[(u64, Result<u32, Errno>, &str)] = &[
        (24, Err(Errno::EBUSY), "handle == eps_num"),
        (0xffff_ffff, Err(Errno::EBUSY), "int -1"),
        (0x8000_0000, Err(Errno::EBUSY), "negative int"),
        (5, Err(Errno::EINVAL), "not enabled"),
    ];
    for &(arg, want, what) in rows {
        assert_eq!(
            ret(&mut inst, &mut udc, ClientOp::EpDisable { arg }),
            want,
            "{what}"
        );
    }
    // in flight
    let op = pending(inst.handle_client(
        &mut udc,
        ClientOp::EpRead {
            io: io(1, 0, 512),
            buf: vec![],
        },
    ));
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::EpDisable { arg: 1 }),
        Err(Errno::EINVAL)
    );
    inst.cancel(&mut udc, op);
    assert_eq!(next_completion(&mut inst).result.ret, Err(Errno::EINTR));
    // 2^32 + 1 truncates to handle 1 (C `int i = value`)
    assert_eq!(
        ret(
            &mut inst,
            &mut udc,
            ClientOp::EpDisable { arg: (1 << 32) | 1 }
        ),
        Ok(0)
    );
    assert_eq!(inst.ep_state(1), Some(EpState::Disabled));
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::EpDisable { arg: 1 }),
        Err(Errno::EINVAL)
    );
    // re-enable gets the same slot back
    assert_eq!(
        ret(
            &mut inst,
            &mut udc,
            ClientOp::EpEnable { desc: BULK_OUT_512 }
        ),
        Ok(1)
    );
}

/// spec §1.5 EP_SET_HALT / CLEAR_HALT / SET_WEDGE: shared checks, iso → EINVAL, controller
/// result as is (EAGAIN: contract D13).
#[test]
fn halt_wedge_paths() {
    for (mk, call) in [
        (
            (|arg| ClientOp::EpSetHalt { arg }) as fn(u64) -> ClientOp,
            Call::SetHalt(EpId::Ep(0), true),
        ),
        (
            |arg| ClientOp::EpClearHalt { arg },
            Call::SetHalt(EpId::Ep(0), false),
        ),
        (|arg| ClientOp::EpSetWedge { arg }, Call::SetWedge(0)),
    ] {
        let (mut inst, mut udc) = running_with_bulk();
        let name = mk(0).name();
        assert_eq!(
            ret(&mut inst, &mut udc, mk(24)),
            Err(Errno::EBUSY),
            "{name} range"
        );
        assert_eq!(
            ret(&mut inst, &mut udc, mk(3)),
            Err(Errno::EINVAL),
            "{name} not enabled"
        );
        let op = pending(inst.handle_client(
            &mut udc,
            ClientOp::EpWrite {
                io: io(0, 0, 4),
                data: vec![0; 4],
            },
        ));
        assert_eq!(
            ret(&mut inst, &mut udc, mk(0)),
            Err(Errno::EINVAL),
            "{name} in flight"
        );
        inst.cancel(&mut udc, op);
        let _ = next_completion(&mut inst);
        assert_eq!(ret(&mut inst, &mut udc, mk(0)), Ok(0), "{name}");
        assert_eq!(udc.calls.last(), Some(&call));
        udc.halt_error = Some(Errno::EAGAIN);
        if !matches!(call, Call::SetWedge(_)) {
            assert_eq!(
                ret(&mut inst, &mut udc, mk(0)),
                Err(Errno::EAGAIN),
                "{name} UDC error"
            );
        }
    }
}

/// spec §1.5: halting or wedging an isochronous endpoint is EINVAL.
#[test]
fn halt_on_iso_endpoint_is_einval() {
    let mut inst = Instance::new();
    let mut udc = MockUdc::default();
    udc.endpoints[0].caps = UsbRawEpCaps::new(false, true, true, true, true, false);
    assert_eq!(ret(&mut inst, &mut udc, init_op(USB_SPEED_HIGH)), Ok(0));
    assert_eq!(ret(&mut inst, &mut udc, ClientOp::Run { arg: 0 }), Ok(0));
    let iso_in = ep_desc(0x81, 1, 1024);
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::EpEnable { desc: iso_in }),
        Ok(0)
    );
    for op in [
        ClientOp::EpSetHalt { arg: 0 },
        ClientOp::EpClearHalt { arg: 0 },
        ClientOp::EpSetWedge { arg: 0 },
    ] {
        assert_eq!(ret(&mut inst, &mut udc, op), Err(Errno::EINVAL));
    }
}

/// spec §1.5 EP_WRITE / EP_READ: handle ≥ eps_num → EINVAL, not enabled → EBUSY, in flight →
/// EBUSY, direction checked against the enabled descriptor → EINVAL.
#[test]
fn ep_io_paths() {
    let (mut inst, mut udc) = running_with_bulk();
    let rd = |ep, len| ClientOp::EpRead {
        io: io(ep, 0, len),
        buf: vec![],
    };
    let wr = |ep, len: u32| ClientOp::EpWrite {
        io: io(ep, 0, len),
        data: vec![0xaa; len as usize],
    };
    let rows: Vec<(ClientOp, Errno, &str)> = vec![
        (rd(24, 8), Errno::EINVAL, "handle >= eps_num"),
        (rd(29, 8), Errno::EINVAL, "handle 29 on a 24-endpoint UDC"),
        (rd(30, 8), Errno::EINVAL, "header: ep >= 30"),
        (rd(5, 8), Errno::EBUSY, "not enabled"),
        (rd(0, 8), Errno::EINVAL, "read on an IN endpoint"),
        (wr(1, 8), Errno::EINVAL, "write on an OUT endpoint"),
        (
            ClientOp::EpRead {
                io: io(1, 4, 8),
                buf: vec![],
            },
            Errno::EINVAL,
            "unknown flag",
        ),
    ];
    for (op, want, what) in rows {
        assert_eq!(ret(&mut inst, &mut udc, op), Err(want), "{what}");
    }
    let w = pending(inst.handle_client(&mut udc, wr(0, 100)));
    assert_eq!(
        ret(&mut inst, &mut udc, wr(0, 1)),
        Err(Errno::EBUSY),
        "in flight"
    );
    // another endpoint can transfer at the same time
    let r = pending(inst.handle_client(&mut udc, rd(1, 512)));
    let c = udc.complete(EpId::Ep(1), Ok(()), 3, b"abc").unwrap();
    inst.handle_completion(c);
    let got = next_completion(&mut inst);
    assert_eq!((got.op, got.result.ret), (r, Ok(3)));
    assert_eq!(got.result.payload, Payload::Data(b"abc".to_vec()));
    // EP_WRITE returns what the controller took (contract D10: 421 of 1024, say)
    let c = udc.complete(EpId::Ep(0), Ok(()), 42, &[]).unwrap();
    inst.handle_completion(c);
    let got = next_completion(&mut inst);
    assert_eq!((got.op, got.result.ret), (w, Ok(42)));
}

/// spec §1.5: an OUT request's EOVERFLOW (contract D10) or ESHUTDOWN (D27) is the ioctl's errno.
#[test]
fn ep_io_completion_status_is_errno() {
    for status in [Errno::EOVERFLOW, Errno::ESHUTDOWN, Errno::ECONNRESET] {
        let (mut inst, mut udc) = running_with_bulk();
        let _ = pending(inst.handle_client(
            &mut udc,
            ClientOp::EpRead {
                io: io(1, 0, 8),
                buf: vec![],
            },
        ));
        let c = udc.complete(EpId::Ep(1), Err(status), 8, &[0; 8]).unwrap();
        inst.handle_completion(c);
        // ECONNRESET without a signal is not EINTR
        assert_eq!(next_completion(&mut inst).result.ret, Err(status));
    }
}

/// spec §1.5 (since 6.7): usb_ep_queue's error is returned and the endpoint stays usable.
#[test]
fn d7_ep_queue_error_is_returned() {
    let (mut inst, mut udc) = running_with_bulk();
    udc.queue_error = Some(Errno::ESHUTDOWN);
    let r = done(inst.handle_client(
        &mut udc,
        ClientOp::EpWrite {
            io: io(0, 0, 2),
            data: vec![1, 2],
        },
    ));
    assert_eq!(r.ret, Err(Errno::ESHUTDOWN));
    udc.queue_error = None;
    let _ = pending(inst.handle_client(
        &mut udc,
        ClientOp::EpWrite {
            io: io(0, 0, 2),
            data: vec![1, 2],
        },
    ));
}

/// contract D31: a signal while the request is still queued → EINTR; after it completed →
/// the normal result.
#[test]
fn d31_interrupted_ep_transfer() {
    let (mut inst, mut udc) = running_with_bulk();
    let op = pending(inst.handle_client(
        &mut udc,
        ClientOp::EpRead {
            io: io(1, 0, 64),
            buf: vec![],
        },
    ));
    inst.cancel(&mut udc, op);
    assert_eq!(next_completion(&mut inst).result.ret, Err(Errno::EINTR));
    let op = pending(inst.handle_client(
        &mut udc,
        ClientOp::EpRead {
            io: io(1, 0, 64),
            buf: vec![],
        },
    ));
    let c = udc.complete(EpId::Ep(1), Ok(()), 2, b"ok").unwrap();
    inst.cancel(&mut udc, op);
    inst.handle_completion(c);
    let got = next_completion(&mut inst);
    assert_eq!(got.result.ret, Ok(2));
    // cancelling something already finished is a no-op
    inst.cancel(&mut udc, op);
    assert!(inst.poll_completion().is_none());
}

/// spec §1.5 CONFIGURE and VBUS_DRAW: argument rules and what reaches the controller.
#[test]
fn configure_and_vbus_draw() {
    let (mut inst, mut udc) = running();
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::Configure { arg: 3 }),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::Configure { arg: 0 }),
        Ok(0)
    );
    assert_eq!(udc.calls.last(), Some(&Call::SetConfigured));
    // 2 mA units, no range check, C unsigned truncation
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::VbusDraw { arg: 50 }),
        Ok(0)
    );
    assert_eq!(udc.calls.last(), Some(&Call::VbusDraw(100)));
    assert_eq!(
        ret(&mut inst, &mut udc, ClientOp::VbusDraw { arg: 0x8000_0001 }),
        Ok(0)
    );
    assert_eq!(udc.calls.last(), Some(&Call::VbusDraw(2)));
}

/// contract D27: the engine never disables endpoints on reset; the controller's ESHUTDOWN
/// completions end transfers, handles stay valid.
#[test]
fn d27_reset_keeps_endpoints_enabled() {
    let (mut inst, mut udc) = running_with_bulk();
    let op = pending(inst.handle_client(
        &mut udc,
        ClientOp::EpRead {
            io: io(1, 0, 64),
            buf: vec![],
        },
    ));
    inst.handle_bus(BusEvent::Reset);
    let c = udc
        .complete(EpId::Ep(1), Err(Errno::ESHUTDOWN), 0, &[])
        .unwrap();
    inst.handle_completion(c);
    let got = next_completion(&mut inst);
    assert_eq!((got.op, got.result.ret), (op, Err(Errno::ESHUTDOWN)));
    assert!(matches!(inst.ep_state(1), Some(EpState::Enabled(_))));
    assert_eq!(fetch_type(&mut inst, &mut udc), USB_RAW_EVENT_RESET);
    let _ = pending(inst.handle_client(
        &mut udc,
        ClientOp::EpRead {
            io: io(1, 0, 64),
            buf: vec![],
        },
    ));
}

// ------------------------------------------------------------------------------------------
// Close

/// spec §2.6: release unbinds, dequeues ep0's request, disables every enabled endpoint; our
/// engine also ends blocked callers with ESHUTDOWN.
#[test]
fn close_unbinds_and_frees() {
    let (mut inst, mut udc) = running_with_bulk();
    inst.handle_setup(setup(0x80, 6, 18)).unwrap();
    let _ = fetch_type(&mut inst, &mut udc);
    let e0 = pending(inst.handle_client(
        &mut udc,
        ClientOp::Ep0Write {
            io: io(0, 0, 1),
            data: vec![1],
        },
    ));
    let rd = pending(inst.handle_client(
        &mut udc,
        ClientOp::EpRead {
            io: io(1, 0, 8),
            buf: vec![],
        },
    ));
    let fe = pending(inst.handle_client(&mut udc, ClientOp::EventFetch { capacity: 8 }));
    inst.close(&mut udc);
    assert_eq!(inst.state(), State::Closed);
    assert!(!udc.bound);
    assert!(udc.enabled.is_empty());
    assert!(udc.queued.is_empty());
    let mut ended: Vec<OpId> = core::iter::from_fn(|| inst.poll_completion())
        .map(|c| {
            assert_eq!(c.result.ret, Err(Errno::ESHUTDOWN));
            c.op
        })
        .collect();
    ended.sort();
    let mut want = vec![e0, rd, fe];
    want.sort();
    assert_eq!(ended, want);
    // late controller input is ignored
    inst.handle_bus(BusEvent::Disconnect);
    assert_eq!(inst.queued_events(), 0);
    assert_eq!(inst.handle_setup(setup(0, 9, 0)), Err(Errno::ENODEV));
}

/// spec §2.6: closing an instance that never bound touches no controller.
#[test]
fn close_before_run_touches_no_controller() {
    let (mut inst, mut udc) = initialized();
    inst.close(&mut udc);
    assert!(udc.calls.is_empty());
}

/// spec §1.5 EP_READ copies back `min(length, actual)` bytes and nothing else: a read whose
/// caller hands over no buffer gets a kept one (the engine's spares), yet returns exactly what
/// it received, never bytes of an earlier read, also when it fails; the request the
/// controller sees always has `length` bytes of room.
#[test]
fn ep_read_with_a_kept_buffer_returns_only_its_own_data() {
    let (mut inst, mut udc) = running_with_bulk();
    let rd = |len| ClientOp::EpRead {
        io: io(1, 0, len),
        buf: vec![],
    };
    let read = |inst: &mut Instance, udc: &mut MockUdc, status, data: &[u8]| {
        let r = pending(inst.handle_client(udc, rd(4096)));
        let room = udc
            .queued
            .iter()
            .find(|(e, _)| *e == EpId::Ep(1))
            .unwrap()
            .1
            .buf
            .len();
        assert_eq!(room, 4096, "the request has length bytes of room");
        let c = udc
            .complete(EpId::Ep(1), status, data.len() as u32, data)
            .unwrap();
        inst.handle_completion(c);
        let got = next_completion(inst);
        assert_eq!(got.op, r);
        got.result
    };
    let first = read(&mut inst, &mut udc, Ok(()), &[0x11; 1000]);
    assert_eq!(first.ret, Ok(1000));
    assert_eq!(first.payload, Payload::Data(vec![0x11; 1000]));
    // the kept buffer still holds 0x11s past these 3 bytes
    let second = read(&mut inst, &mut udc, Ok(()), b"abc");
    assert_eq!(second.ret, Ok(3));
    assert_eq!(second.payload, Payload::Data(b"abc".to_vec()));
    // a failed read shows nothing of it
    let failed = read(&mut inst, &mut udc, Err(Errno::EOVERFLOW), b"xy");
    assert_eq!(failed.ret, Err(Errno::EOVERFLOW));
    assert_eq!(failed.payload, Payload::Data(Vec::new()));
    let third = read(&mut inst, &mut udc, Ok(()), &[]);
    assert_eq!(
        (third.ret, third.payload),
        (Ok(0), Payload::Data(Vec::new()))
    );
}
