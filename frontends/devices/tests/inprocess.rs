//! The built-in devices on the in-process backend (engine + dummy controller model), driven by
//! the in-process host from another thread, as a raw-gadget program runs against a real host.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rawgadget::{Gadget, InProcess, Speed};
use rawgadget_devices::keyboard::text_to_reports;
use rawgadget_devices::{gadget_zero, keyboard, DeviceRunner, KeyboardConfig, Pattern, ZeroConfig};
use rawgadget_loopback::{Host, HostConfig, Threaded};
use rawgadget_udc::{Urb, UrbFlags};

const TIMEOUT: Duration = Duration::from_secs(5);

fn pattern(len: usize, maxpacket: usize) -> Vec<u8> {
    (0..len).map(|i| ((i % maxpacket) % 63) as u8).collect()
}

/// Starts `device` on a fresh in-process bus in its own thread; returns the host's port.
fn start(device: rawgadget_devices::Device, speed: Speed) -> (Threaded, thread::JoinHandle<()>) {
    let (backend, bus) = InProcess::new();
    let gadget = Gadget::builder()
        .speed(speed)
        .build(Arc::new(backend))
        .expect("init");
    let runner = thread::spawn(move || {
        let mut runner = DeviceRunner::new(gadget, device);
        // ends with an error once the host side closes; either way the test asserts on the host
        let _ = runner.run();
    });
    (Threaded::new(bus), runner)
}

/// Gadget Zero enumerates like Linux does it, and its source and sink move usbtest's pattern.
#[test]
fn gadget_zero_enumerates_and_moves_the_pattern() {
    let (device, stats) = gadget_zero(ZeroConfig {
        req_size: 4096,
        ..ZeroConfig::default()
    });
    let (mut port, _runner) = start(device, Speed::High);
    let mut host = Host::new(HostConfig::default());
    host.enumerate(&mut port).expect("enumeration");
    let rec = host.recording();
    assert_eq!(rec.speed, Some(Speed::High));
    let dev = rec.device.as_ref().expect("device descriptor");
    assert_eq!(&dev[8..12], &[0x25, 0x05, 0xa0, 0xa4], "VID 0525 PID a4a0");
    assert_eq!(rec.configuration, Some(1));
    assert_eq!(rec.string(2).as_deref(), Some("Gadget Zero"));

    // sink: bulk OUT 0x02 on dummy_udc (ep2out-bulk), pattern with maxpacket 512
    let out = pattern(8192, 512);
    let r = host.bulk_out(&mut port, 0x02, out, UrbFlags::default(), TIMEOUT);
    assert_eq!((r.status, r.actual), (Ok(()), 8192));
    // source: bulk IN 0x81 (ep1in-bulk)
    let r = host.bulk_in(&mut port, 0x81, 4096, UrbFlags::default(), TIMEOUT);
    assert_eq!(r.status, Ok(()));
    assert_eq!(r.data, pattern(4096, 512));
    // the sink checked what it got; it counts after its read returns, which may be after the
    // host saw the transfer complete: wait for the count (errors are counted before bytes)
    let deadline = std::time::Instant::now() + TIMEOUT;
    while stats.bytes_out.load(Ordering::Acquire) < 8192 && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    assert!(stats.bytes_out.load(Ordering::Acquire) >= 8192);
    assert_eq!(stats.pattern_errors(), 0);

    // vendor control round trip (usbtest cases 14/21): 0x5b writes, 0x5c reads back
    let data: Vec<u8> = (0..200u8).collect();
    host.control_out(&mut port, 0x40, 0x5b, 0, 0, &data)
        .expect("0x5b");
    let back = host
        .control_in(&mut port, 0xc0, 0x5c, 0, 0, 200)
        .expect("0x5c");
    assert_eq!(back, data);

    // a wrong pattern is counted by the sink; a short packet ends its request (contract D8)
    let r = host.bulk_out(
        &mut port,
        0x02,
        vec![0xff; 100],
        UrbFlags::default(),
        TIMEOUT,
    );
    assert_eq!(r.status, Ok(()));
    let deadline = std::time::Instant::now() + TIMEOUT;
    while stats.pattern_errors() == 0 && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        stats.pattern_errors() > 0,
        "the sink must notice a broken pattern"
    );
}

/// The HID keyboard types its text as boot-protocol reports on its interrupt IN endpoint.
#[test]
fn keyboard_types_its_text() {
    let text = "Hi!\n";
    let (device, state) = keyboard(KeyboardConfig {
        text: text.into(),
        ..KeyboardConfig::default()
    })
    .expect("keyboard");
    let (mut port, _runner) = start(device, Speed::High);
    let mut host = Host::new(HostConfig::default());
    host.enumerate(&mut port).expect("enumeration");
    let config = &host.recording().configs[0];
    // interface class 3 (HID), boot subclass 1, keyboard protocol 1
    let iface = config
        .windows(9)
        .find(|w| w[0] == 9 && w[1] == 4)
        .expect("interface");
    assert_eq!(&iface[5..8], &[3, 1, 1]);
    let ep = config
        .windows(7)
        .find(|w| w[0] == 7 && w[1] == 5 && w[2] & 0x80 != 0)
        .map(|w| w[2])
        .expect("interrupt IN endpoint");
    let want = text_to_reports(text).expect("typable");
    for (i, report) in want.iter().enumerate() {
        let r = host.interrupt(&mut port, ep, vec![0; 8], TIMEOUT);
        assert_eq!(r.status, Ok(()), "report {i}");
        assert_eq!(r.data.as_slice(), &report[..], "report {i}");
    }
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !state.is_done() && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert!(state.is_done());
}

/// `wait_for_led`, as usbhid drives it: the interrupt IN URB stays in flight from connect; the
/// host's own SET_REPORT(LEDs = 0) does not start typing, the one with Num Lock does, and
/// the pending URB then completes with the first key press.
#[test]
fn keyboard_wait_for_led_types_after_num_lock() {
    let text = "ab";
    let (device, state) = keyboard(KeyboardConfig {
        text: text.into(),
        wait_for_led: true,
    })
    .expect("keyboard");
    let (mut port, _runner) = start(device, Speed::High);
    let mut host = Host::new(HostConfig::default());
    host.enumerate(&mut port).expect("enumeration");
    let ep = 0x85; // ep5in-int on dummy_udc
    let first = host.submit(&mut port, Urb::interrupt(ep, vec![0; 8]));
    let set_leds = |host: &mut Host, port: &mut Threaded, leds: u8| {
        // SET_REPORT(Output, id 0) to interface 0
        host.control_out(port, 0x21, 0x09, 0x0200, 0, &[leds])
            .expect("SET_REPORT")
    };
    set_leds(&mut host, &mut port, 0x00);
    assert!(
        host.wait(&mut port, first, Duration::from_millis(300))
            .is_none(),
        "no report before Num Lock"
    );
    assert_eq!(state.reports_sent.load(Ordering::SeqCst), 0);
    set_leds(&mut host, &mut port, 0x01);
    let r = host.wait(&mut port, first, TIMEOUT).expect("first report");
    let want = text_to_reports(text).expect("typable");
    assert_eq!(r.status, Ok(()));
    assert_eq!(r.data.as_slice(), &want[0][..]);
    for (i, report) in want.iter().enumerate().skip(1) {
        let r = host.interrupt(&mut port, ep, vec![0; 8], TIMEOUT);
        assert_eq!(r.status, Ok(()), "report {i}");
        assert_eq!(r.data.as_slice(), &report[..], "report {i}");
    }
}

/// The same device at full speed: maxpacket 64 and the pattern in that phase.
#[test]
fn gadget_zero_at_full_speed() {
    let (device, stats) = gadget_zero(ZeroConfig {
        speed: Speed::Full,
        req_size: 1024,
        pattern: Pattern::Mod63,
    });
    let (mut port, _runner) = start(device, Speed::Full);
    let mut host = Host::new(HostConfig::default());
    host.enumerate(&mut port).expect("enumeration");
    assert_eq!(host.recording().speed, Some(Speed::Full));
    let r = host.bulk_in(&mut port, 0x81, 1024, UrbFlags::default(), TIMEOUT);
    assert_eq!(r.data, pattern(1024, 64));
    let r = host.bulk_out(
        &mut port,
        0x02,
        pattern(640, 64),
        UrbFlags::default(),
        TIMEOUT,
    );
    assert_eq!(r.actual, 640);
    assert_eq!(stats.pattern_errors(), 0);
}

/// contract D8: with the in-process request size (64 KiB), URBs of usbtest's lengths still
/// match the requests packet by packet: a 64 KiB URB meets one whole request, longer ones span
/// two, shorter ones share one, and a short packet ends the sink's request early. Every byte
/// keeps the pattern both ways.
#[test]
fn d8_in_process_request_size_serves_every_urb_length() {
    let (device, stats) = gadget_zero(ZeroConfig {
        req_size: rawgadget_devices::zero::IN_PROCESS_REQ_SIZE,
        ..ZeroConfig::default()
    });
    let (mut port, _runner) = start(device, Speed::High);
    let mut host = Host::new(HostConfig::default());
    host.enumerate(&mut port).expect("enumeration");
    let mut sent = 0;
    // 100000, 1000 and 700 end in a short packet (ending a request part way), 1536 does not;
    // the last short packet completes the request still filling, so the sink counts it all
    for len in [65536, 100_000, 1000, 1536, 65536, 131_072, 700] {
        let r = host.bulk_out(
            &mut port,
            0x02,
            pattern(len, 512),
            UrbFlags::default(),
            TIMEOUT,
        );
        assert_eq!((r.status, r.actual), (Ok(()), len as u32), "OUT {len}");
        sent += len as u64;
    }
    for len in [65536, 1024, 131_072, 65536, 512] {
        let r = host.bulk_in(&mut port, 0x81, len, UrbFlags::default(), TIMEOUT);
        assert_eq!(r.status, Ok(()), "IN {len}");
        assert!(r.data == pattern(len, 512), "IN {len}: the pattern");
    }
    let deadline = std::time::Instant::now() + TIMEOUT;
    while stats.bytes_out.load(Ordering::Acquire) < sent && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(stats.bytes_out.load(Ordering::Acquire), sent);
    assert_eq!(stats.pattern_errors(), 0);
}

/// usbtest case 10 (`test_ctrl_queue`) as the kernel runs it: `sglen` control URBs of its 16
/// subcases queued at once on ep0, each resubmitted at the tail when it completes, until
/// `sglen * iterations` have completed. usbtest's `ctrl_complete` demands FIFO completion and
/// per subcase either the exact status or an allowed fault. Returns the first failure.
fn ctrl_queue(
    host: &mut Host,
    port: &mut Threaded,
    speed: Speed,
    sglen: usize,
    iterations: usize,
) -> Result<(), String> {
    use rawgadget_uapi::Errno;
    use std::collections::VecDeque;
    // (bmRequestType, bRequest, wValue, wLength, expected): expected `Err(e)` must fail with e,
    // `Ok(Some(e))` may fail with e, `Ok(None)` must succeed.
    type Expect = Result<Option<Errno>, Errno>;
    let mp0: u16 = if speed >= Speed::Super { 512 } else { 64 };
    let subcase = |n: usize| -> (u8, u8, u16, u16, Expect) {
        match n {
            0 => (0x80, 6, 0x0100, 18, Ok(None)),
            1 => (0x80, 6, 0x0200, 9, Ok(None)),
            2 => (0x81, 10, 0, 1, Ok(Some(Errno::EPIPE))),
            3 => (0x81, 0, 0, 2, Ok(None)),
            4 => (0x80, 0, 0, 2, Ok(None)),
            5 if speed == Speed::High => (0x80, 6, 0x0600, 10, Ok(None)),
            5 => (0x80, 6, 0x0600, 10, Ok(Some(Errno::EPIPE))),
            6 => (0x80, 6, 0x0200, 18, Ok(None)),
            7 => (0x80, 6, 0x0400, 9, Err(Errno::EPIPE)),
            8 => (0x02, 1, 0, 0, Ok(Some(Errno::EPIPE))),
            9 => (0x82, 0, 0, 2, Ok(None)),
            10 => (0x80, 6, 0x0200, 1024, Err(Errno::EREMOTEIO)),
            11 => (0x80, 6, 0x0500, 9, Ok(Some(Errno::EPIPE))),
            12 => (0x80, 6, 0x0300, 9, Ok(Some(Errno::EREMOTEIO))),
            13 => (0x80, 6, 0x0200, 1024 - mp0, Err(Errno::EREMOTEIO)),
            14 => (0x80, 6, 0x0100, mp0, Err(Errno::EREMOTEIO)),
            // bcdUSB 2.00 below SuperSpeed: BOS must stall.
            _ => (0x80, 6, 0x0f00, 5, Err(Errno::EPIPE)),
        }
    };
    let submit = |host: &mut Host, port: &mut Threaded, n: usize| {
        let (rt, req, value, len, _) = subcase(n);
        let mut urb = Urb::control(rawgadget_loopback::setup(rt, req, value, 0, len), &[]);
        urb.flags.short_not_ok = urb.is_in();
        host.submit(port, urb)
    };
    let total = sglen * iterations;
    let mut pending = VecDeque::new();
    for i in 0..sglen {
        pending.push_back((submit(host, port, i % 16), i % 16));
    }
    let mut completed = 0;
    while let Some((id, n)) = pending.pop_front() {
        let Some(r) = host.wait(port, id, TIMEOUT) else {
            let later = pending
                .iter()
                .filter(|(id, _)| host.wait(port, *id, Duration::ZERO).is_some())
                .count();
            return Err(format!(
                "subcase {n} (#{completed}) still pending after {TIMEOUT:?}; {later} later ones completed"
            ));
        };
        let expected = subcase(n).4;
        let ok = match (expected, r.status) {
            (Err(e), Err(got)) => e == got,
            (Err(_), Ok(())) => false,
            (Ok(_), Ok(())) => true,
            (Ok(Some(e)), Err(got)) => e == got || (n == 12 && got == Errno::EPIPE),
            (Ok(None), Err(_)) => false,
        };
        if !ok {
            return Err(format!(
                "subcase {n} (#{completed}): status {:?}, expected {expected:?}, {} bytes",
                r.status, r.actual
            ));
        }
        completed += 1;
        if completed + pending.len() < total {
            pending.push_back((submit(host, port, n), n));
        }
    }
    Ok(())
}

/// usbtest case 10 against Gadget Zero on the in-process dummy model (contract D14-D18): 32
/// control URBs in flight, completing in order with each subcase's status.
#[test]
fn gadget_zero_control_queue_usbtest_case_10() {
    for speed in [Speed::High, Speed::Full] {
        let (device, _stats) = gadget_zero(ZeroConfig {
            speed,
            ..ZeroConfig::default()
        });
        let (mut port, _runner) = start(device, speed);
        let mut host = Host::new(HostConfig::default());
        host.enumerate(&mut port).expect("enumeration");
        ctrl_queue(&mut host, &mut port, speed, 32, 50)
            .unwrap_or_else(|e| panic!("{speed:?}: {e}"));
    }
}
