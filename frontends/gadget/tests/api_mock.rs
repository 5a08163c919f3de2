//! The gadget API driven through the mock backend: the logic above the ioctls.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rawgadget::mock::{Call, Ep0Reply, MockBackend};
use rawgadget::{
    has_in_data_stage, ControlRequest, Direction, EndpointAddress, EndpointAllocator,
    EndpointDescriptor, Errno, Error, Event, Gadget, Speed, TransferType,
};

fn running() -> (MockBackend, Gadget) {
    let mock = MockBackend::default();
    let g = Gadget::builder()
        .speed(Speed::High)
        .build(Arc::new(mock.clone()))
        .unwrap();
    g.run().unwrap();
    assert_eq!(g.next_event().unwrap(), Event::Connect);
    (mock, g)
}

fn bulk_pair(g: &Gadget) -> (rawgadget::Endpoint, rawgadget::Endpoint) {
    let eps = g.eps_info().unwrap();
    let mut alloc = EndpointAllocator::new(&eps);
    let bulk =
        |dir| EndpointDescriptor::new(EndpointAddress::new(0, dir), TransferType::Bulk, 512, 0);
    let (mut din, mut dout) = (bulk(Direction::In), bulk(Direction::Out));
    alloc.assign(&mut din).unwrap();
    alloc.assign(&mut dout).unwrap();
    (g.enable(&din).unwrap(), g.enable(&dout).unwrap())
}

/// spec Appendix steps 1-3: INIT with the builder's names, RUN, CONNECT first.
#[test]
fn init_run_connect() {
    let (mock, g) = running();
    assert_eq!(
        mock.calls()[..2],
        [
            Call::Init {
                driver: "dummy_udc".into(),
                device: "dummy_udc.0".into(),
                speed: Speed::High
            },
            Call::Run
        ]
    );
    assert_eq!(
        (g.udc_driver(), g.udc_device(), g.speed()),
        ("dummy_udc", "dummy_udc.0", Speed::High)
    );
    // RUN twice is refused by the backend, and the API keeps the errno and the ioctl name.
    let e = g.run().unwrap_err();
    assert_eq!(e.errno(), Errno::EINVAL);
    assert!(e.to_string().contains("USB_RAW_IOCTL_RUN"), "{e}");
}

/// spec §1.5 EP0_WRITE: a reply is cut to wLength; a shorter one is still sent whole.
#[test]
fn ep0_reply_is_cut_to_wlength() {
    let (mock, g) = running();
    let t = thread::spawn(move || {
        for _ in 0..3 {
            match g.next_event().unwrap() {
                Event::Control(s) if has_in_data_stage(&s) => {
                    g.ep0_reply(&s, &[1, 2, 3, 4, 5, 6]).unwrap();
                }
                Event::Control(_) => g.ep0_ack().unwrap(),
                e => panic!("{e:?}"),
            }
        }
    });
    let get = |len| ControlRequest {
        request_type: 0xc0,
        request: 1,
        length: len,
        ..Default::default()
    };
    assert_eq!(
        mock.control(get(4), &[]).unwrap(),
        Ep0Reply::In(vec![1, 2, 3, 4])
    );
    assert_eq!(
        mock.control(get(64), &[]).unwrap(),
        Ep0Reply::In(vec![1, 2, 3, 4, 5, 6])
    );
    // An IN request without data stage is acknowledged with EP0_READ (spec §1.5, issue #46).
    assert_eq!(mock.control(get(0), &[]).unwrap(), Ep0Reply::Out(0));
    t.join().unwrap();
}

/// spec §1.5 EP0_STALL, EP0_READ: stall and an OUT data stage.
#[test]
fn ep0_stall_and_out_data() {
    let (mock, g) = running();
    let t = thread::spawn(move || {
        let Event::Control(s) = g.next_event().unwrap() else {
            panic!()
        };
        assert_eq!(s.request, 0x42);
        g.ep0_stall().unwrap();
        let Event::Control(s) = g.next_event().unwrap() else {
            panic!()
        };
        let data = g.ep0_read(usize::from(s.length)).unwrap();
        // Answering twice is refused: one answer per SETUP.
        assert_eq!(g.ep0_ack().unwrap_err().errno(), Errno::EBUSY);
        data
    });
    let s = ControlRequest {
        request_type: 0x40,
        request: 0x42,
        ..Default::default()
    };
    assert_eq!(mock.control(s, &[]).unwrap(), Ep0Reply::Stall);
    let s = ControlRequest {
        request_type: 0x40,
        request: 0x5b,
        length: 3,
        ..Default::default()
    };
    assert_eq!(mock.control(s, &[9, 8, 7]).unwrap(), Ep0Reply::Out(3));
    assert_eq!(t.join().unwrap(), vec![9, 8, 7]);
}

/// Data moves both ways on enabled endpoints; the direction is checked before the backend.
#[test]
fn endpoint_transfers_and_direction_check() {
    let (mock, g) = running();
    let (ein, eout) = bulk_pair(&g);
    assert_eq!((ein.address(), eout.address()), (0x81, 0x02));
    assert_eq!(ein.max_packet(), 512);

    let w = {
        let ein = ein.clone();
        thread::spawn(move || ein.write(b"hello").unwrap())
    };
    assert_eq!(mock.host_in(0x81).unwrap(), b"hello");
    assert_eq!(w.join().unwrap(), 5);

    mock.host_out(0x02, b"abcdef").unwrap();
    assert_eq!(eout.read(4).unwrap(), b"abcd");
    assert_eq!(eout.read(512).unwrap(), b"ef");

    let e = ein.read(4).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert_eq!(eout.write(b"x").unwrap_err().errno(), Errno::EINVAL);
}

/// spec Appendix step 6: a blocked transfer is interrupted from another thread (EINTR) and the
/// handle stays cancelled; then the endpoint can be disabled (EP_DISABLE refuses while a
/// transfer is in flight).
#[test]
fn cancel_interrupts_blocked_read_then_disable() {
    let (mock, g) = running();
    let (_ein, eout) = bulk_pair(&g);
    let reader = {
        let eout = eout.clone();
        thread::spawn(move || eout.read(512))
    };
    while eout.cancel_handle().blocked_calls() == 0 {
        thread::sleep(Duration::from_millis(1));
    }
    eout.cancel();
    let e = reader.join().unwrap().unwrap_err();
    assert!(e.is_interrupted(), "{e}");
    assert!(eout.read(1).unwrap_err().is_interrupted(), "sticky");
    eout.disable().unwrap();
    assert!(mock.calls().contains(&Call::Disable(eout.handle())));
    assert_eq!(
        eout.disable().unwrap_err().errno(),
        Errno::EINVAL,
        "already disabled"
    );
}

/// contract D27: a reset ends transfers in flight with ESHUTDOWN and queues RESET; endpoints
/// stay enabled on dummy_udc.
#[test]
fn reset_gives_eshutdown_and_reset_event() {
    let (mock, g) = running();
    let (ein, _eout) = bulk_pair(&g);
    let writer = {
        let ein = ein.clone();
        thread::spawn(move || ein.write(&[0; 64]))
    };
    thread::sleep(Duration::from_millis(20));
    mock.bus_reset();
    let e = writer.join().unwrap().unwrap_err();
    assert!(e.is_shutdown(), "{e}");
    assert_eq!(g.next_event().unwrap(), Event::Reset);
    assert_eq!(mock.enabled().len(), 2);
}

/// The event loop can be stopped from another thread.
#[test]
fn stop_events_interrupts_next_event() {
    let (_mock, g) = running();
    let t = {
        let g = g.clone();
        thread::spawn(move || g.next_event())
    };
    thread::sleep(Duration::from_millis(20));
    g.stop_events();
    assert!(t.join().unwrap().unwrap_err().is_interrupted());
}

/// spec §1.5 EP_ENABLE: EINVAL when nothing suits, EBUSY when the suitable ones are enabled.
#[test]
fn enable_errors() {
    let (_mock, g) = running();
    let iso = EndpointDescriptor::new(EndpointAddress(0x83), TransferType::Isochronous, 1024, 1);
    assert_eq!(g.enable(&iso).unwrap_err().errno(), Errno::EINVAL);
    let d = EndpointDescriptor::new(EndpointAddress(0x81), TransferType::Bulk, 512, 0);
    let mut n = 0;
    let err = loop {
        match g.enable(&d) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    // ep1in-bulk plus the five ANY IN endpoints of dummy_udc (ep-b, -e, -g, -j, -l).
    assert_eq!((n, err.errno()), (6, Errno::EBUSY));
}

/// Halt, clear, wedge reach the backend; halting an endpoint with a transfer in flight is
/// refused (spec §1.5 EP_SET_HALT).
#[test]
fn halt_clear_wedge() {
    let (mock, g) = running();
    let (ein, _) = bulk_pair(&g);
    ein.set_halt().unwrap();
    assert_eq!(mock.is_halted(0x81), Some(true));
    ein.clear_halt().unwrap();
    assert_eq!(mock.is_halted(0x81), Some(false));
    ein.set_wedge().unwrap();
    mock.host_clear_halt(0x81);
    assert_eq!(
        mock.is_halted(0x81),
        Some(true),
        "wedged: the host cannot clear it"
    );
    ein.clear_halt().unwrap();
    assert_eq!(mock.is_halted(0x81), Some(false));
}

/// The device-node path through the public API: a missing node is a clear error, and a node
/// that is not raw gadget fails INIT with the kernel's errno.
#[test]
fn device_node_errors_through_builder() {
    let e = Gadget::builder()
        .open("/nonexistent-dir/raw-gadget")
        .unwrap_err();
    assert!(matches!(e, Error::Open { .. }));
    assert!(e.to_string().contains("/nonexistent-dir/raw-gadget"));
    let e = Gadget::builder().open("/dev/null").unwrap_err();
    assert_eq!(e.errno(), Errno::ENOTTY);
    assert!(e.to_string().contains("USB_RAW_IOCTL_INIT"), "{e}");
}
