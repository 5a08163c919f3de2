//! The built-in devices driven through the mock backend: the host side is played by the test.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use rawgadget::mock::{Call, Ep0Reply, MockBackend, MockError};
use rawgadget::usb::Descriptors;
use rawgadget::{dummy_udc_eps, ControlRequest, EpInfo, Gadget, Speed};
use rawgadget_devices::keyboard::{text_to_reports, REPORT_DESCRIPTOR};
use rawgadget_devices::pattern::Pattern;
use rawgadget_devices::{gadget_zero, keyboard, Device, DeviceRunner, KeyboardConfig, ZeroConfig};

fn setup(request_type: u8, request: u8, value: u16, index: u16, length: u16) -> ControlRequest {
    ControlRequest {
        request_type,
        request,
        value,
        index,
        length,
    }
}

fn get_descriptor(ty: u8, index: u8, length: u16) -> ControlRequest {
    setup(0x80, 6, u16::from(ty) << 8 | u16::from(index), 0, length)
}

/// GET_DESCRIPTOR(STRING) in a language, as Linux asks after reading string 0.
fn get_string(index: u8, language: u16) -> ControlRequest {
    setup(0x80, 6, 0x0300 | u16::from(index), language, 255)
}

const SET_CONFIGURATION_1: ControlRequest = ControlRequest {
    request_type: 0,
    request: 9,
    value: 1,
    index: 0,
    length: 0,
};

struct Running {
    mock: MockBackend,
    gadget: Gadget,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.gadget.stop_events();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn start(device: Device, speed: Speed, eps: Vec<EpInfo>) -> Running {
    let mock = MockBackend::new(eps);
    let gadget = Gadget::builder()
        .speed(speed)
        .build(Arc::new(mock.clone()))
        .unwrap();
    let g = gadget.clone();
    let thread = std::thread::spawn(move || {
        DeviceRunner::new(g, device).run().unwrap();
    });
    mock.wait_running().unwrap();
    Running {
        mock,
        gadget,
        thread: Some(thread),
    }
}

fn zero(speed: Speed) -> (Running, Arc<rawgadget_devices::ZeroStats>) {
    let (dev, stats) = gadget_zero(ZeroConfig {
        speed,
        ..ZeroConfig::default()
    });
    (start(dev, speed, dummy_udc_eps()), stats)
}

/// Walks a configuration bundle: `(bDescriptorType, bytes)` per descriptor; every `bLength`
/// must be valid.
fn walk(config: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut descriptors = Descriptors::new(config);
    let v = descriptors
        .by_ref()
        .map(|d| (d.descriptor_type(), d.as_bytes().to_vec()))
        .collect();
    assert_eq!(
        descriptors.error(),
        None,
        "bad bLength at {}",
        descriptors.offset()
    );
    v
}

// ---- Gadget Zero: enumeration ------------------------------------------------------------

/// The standard descriptors usbtest reads (contract T4/T5): device, config, qualifier,
/// other-speed, strings; BOS stalls at bcdUSB 2.00; GET_DESCRIPTOR(INTERFACE) stalls
/// (usbtest case 10 subcase 7).
#[test]
fn zero_enumeration_descriptors() {
    let (r, _) = zero(Speed::High);
    let m = &r.mock;
    let dev = m.control_in(get_descriptor(1, 0, 64)).unwrap();
    assert_eq!(dev.len(), 18);
    assert_eq!(&dev[..8], &[18, 1, 0x00, 0x02, 0xff, 0, 0, 64]);
    assert_eq!(
        &dev[8..12],
        &[0x25, 0x05, 0xa0, 0xa4],
        "VID 0x0525 PID 0xa4a0"
    );
    // Truncated to wLength, as Linux's first 8-byte read at SS does.
    assert_eq!(m.control_in(get_descriptor(1, 0, 8)).unwrap(), dev[..8]);

    let head = m.control_in(get_descriptor(2, 0, 9)).unwrap();
    let total = u16::from_le_bytes([head[2], head[3]]);
    let cfg = m.control_in(get_descriptor(2, 0, 256)).unwrap();
    assert_eq!(cfg.len(), usize::from(total));
    let d = walk(&cfg);
    // config, interface alt 0, four endpoints; no alt 1 on dummy_udc (no iso, f_sourcesink).
    let types: Vec<u8> = d.iter().map(|x| x.0).collect();
    assert_eq!(types, [2, 4, 5, 5, 5, 5]);
    assert_eq!(d[0].1[4], 1, "bNumInterfaces");
    assert_eq!(&d[1].1[2..8], &[0, 0, 4, 0xff, 0, 0]);
    let eps: Vec<(u8, u8, u16)> = d[2..]
        .iter()
        .map(|(_, b)| (b[2], b[3], u16::from_le_bytes([b[4], b[5]])))
        .collect();
    assert_eq!(
        eps,
        [(0x02, 2, 512), (0x81, 2, 512), (0x03, 3, 64), (0x85, 3, 64)]
    );

    let q = m.control_in(get_descriptor(6, 0, 10)).unwrap();
    assert_eq!(q, [10, 6, 0, 2, 0xff, 0, 0, 64, 1, 0]);
    let other = m.control_in(get_descriptor(7, 0, 256)).unwrap();
    assert_eq!(other[1], 7);
    let bulk_fs: Vec<u16> = walk(&other)
        .iter()
        .filter(|d| d.0 == 5 && d.1[3] == 2)
        .map(|d| u16::from_le_bytes([d.1[4], d.1[5]]))
        .collect();
    assert_eq!(bulk_fs, [64, 64], "other-speed (FS) bulk maxpacket");

    assert_eq!(
        m.control_in(get_descriptor(3, 0, 255)).unwrap(),
        [4, 3, 0x09, 0x04]
    );
    let s2 = m.control_in(get_string(2, 0x0409)).unwrap();
    let text: Vec<u16> = s2[2..]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(String::from_utf16(&text).unwrap(), "Gadget Zero");
    assert_eq!(m.control_in(get_string(42, 0x0409)), Err(MockError::Stall));
    // A language string 0 does not list stalls, as in Linux's composite driver.
    assert_eq!(m.control_in(get_string(2, 0)), Err(MockError::Stall));
    assert_eq!(
        m.control_in(get_descriptor(0x0f, 0, 5)),
        Err(MockError::Stall),
        "BOS"
    );
    assert_eq!(
        m.control_in(get_descriptor(4, 0, 9)),
        Err(MockError::Stall),
        "INTERFACE"
    );
    assert_eq!(
        m.control_in(get_descriptor(2, 1, 9)),
        Err(MockError::Stall),
        "config 1"
    );
    // GET_STATUS forms some UDCs forward (contract D20 answers them on dummy).
    assert_eq!(m.control_in(setup(0x80, 0, 0, 0, 2)).unwrap(), [1, 0]);
    assert_eq!(m.control_in(setup(0x81, 0, 0, 0, 2)).unwrap(), [0, 0]);
}

/// Requests nobody claims are stalled: unknown vendor, class and standard requests.
#[test]
fn zero_unknown_requests_stall() {
    let (r, _) = zero(Speed::High);
    let m = &r.mock;
    assert_eq!(
        m.control(setup(0xc0, 0x99, 0, 0, 4), &[]).unwrap(),
        Ep0Reply::Stall
    );
    assert_eq!(
        m.control(setup(0x21, 0x0a, 0, 0, 0), &[]).unwrap(),
        Ep0Reply::Stall
    );
    assert_eq!(
        m.control(setup(0x00, 0x0c, 0, 0, 0), &[]).unwrap(),
        Ep0Reply::Stall
    );
    assert_eq!(
        m.control(setup(0x00, 9, 2, 0, 0), &[]).unwrap(),
        Ep0Reply::Stall,
        "config 2"
    );
    // SET_INTERFACE before SET_CONFIGURATION is a request error.
    assert_eq!(
        m.control(setup(0x01, 11, 0, 0, 0), &[]).unwrap(),
        Ep0Reply::Stall
    );
}

// ---- Gadget Zero: configuration and data --------------------------------------------------

/// spec Appendix step 5: enable, VBUS_DRAW, CONFIGURE, then the status stage.
#[test]
fn zero_set_configuration_enables_endpoints() {
    let (r, _) = zero(Speed::High);
    let m = &r.mock;
    assert_eq!(
        m.control(SET_CONFIGURATION_1, &[]).unwrap(),
        Ep0Reply::Out(0)
    );
    let calls = m.calls();
    let enables = calls
        .iter()
        .filter(|c| matches!(c, Call::Enable { .. }))
        .count();
    assert_eq!(enables, 4);
    let pos = |c: &Call| calls.iter().position(|x| x == c).unwrap();
    assert!(pos(&Call::VbusDraw(50)) < pos(&Call::Configure));
    assert!(m.is_configured());
    assert_eq!(
        m.control_in(setup(0x80, 8, 0, 0, 1)).unwrap(),
        [1],
        "GET_CONFIGURATION"
    );
    assert_eq!(
        m.control_in(setup(0x81, 10, 0, 0, 1)).unwrap(),
        [0],
        "GET_INTERFACE"
    );
}

/// USB 3.2 §9.6.3 and Linux composite.c (`encode_bMaxPower`, `set_config`): a device states
/// its current in mA; `bMaxPower` is that current in the speed's units (2 mA, 8 mA at
/// SuperSpeed) capped at 500 / 900 mA, and VBUS_DRAW (2 mA units at every speed, raw_gadget.c)
/// gets the same capped current.
#[test]
fn max_power_in_speed_units_and_vbus_draw_in_2ma() {
    // (speed, declared mA, bMaxPower, VBUS_DRAW value)
    let rows = [
        (Speed::Full, 100, 50, 50),
        (Speed::High, 100, 50, 50),
        (Speed::Super, 100, 12, 50),
        (Speed::High, 1000, 250, 250),
        (Speed::Super, 1000, 112, 450),
    ];
    for (speed, ma, max_power, vbus) in rows {
        let (mut dev, _) = gadget_zero(ZeroConfig {
            speed,
            ..ZeroConfig::default()
        });
        dev.max_power_ma = ma;
        let r = start(dev, speed, dummy_udc_eps());
        let config = r.mock.control_in(get_descriptor(2, 0, 9)).unwrap();
        assert_eq!(config[8], max_power, "bMaxPower at {speed:?} for {ma} mA");
        r.mock.control(SET_CONFIGURATION_1, &[]).unwrap();
        assert!(
            r.mock.calls().contains(&Call::VbusDraw(vbus)),
            "VBUS_DRAW at {speed:?} for {ma} mA: {:?}",
            r.mock.calls()
        );
    }
}

/// contract T8: the source sends `(i % 512) % 63` at HS, per request of 32 KiB; the sink
/// accepts the same pattern and counts errors in anything else.
#[test]
fn zero_source_and_sink_pattern_hs() {
    let (r, stats) = zero(Speed::High);
    let m = &r.mock;
    m.control(SET_CONFIGURATION_1, &[]).unwrap();
    let data = m.host_in(0x81).unwrap();
    assert_eq!(data.len(), 32 * 1024);
    assert_eq!(Pattern::Mod63.check(&data, 512).errors, 0);
    assert!(
        Pattern::Mod63.check(&data, 64).errors > 0,
        "not the FS pattern"
    );
    let int = m.host_in(0x85).unwrap();
    assert_eq!(int.len(), 64);
    assert_eq!(Pattern::Mod63.check(&int, 64).errors, 0);

    // A host URB of 1000 bytes (not a multiple of maxpacket) filled from offset 0.
    let mut good = vec![0; 1000];
    Pattern::Mod63.fill(&mut good, 512);
    m.host_out(0x02, &good).unwrap();
    m.host_out_drained(0x02).unwrap();
    let mut bad = good.clone();
    bad[600] = 0xee;
    bad[601] = 0xee;
    m.host_out(0x02, &bad).unwrap();
    m.host_out_drained(0x02).unwrap();
    // The counters are updated after the read returns: wait for them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while stats.bytes_out.load(Ordering::SeqCst) < 2000 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(stats.bytes_out.load(Ordering::SeqCst), 2000);
    assert_eq!(stats.pattern_errors(), 2);
}

/// contract T8 at FS (maxpacket 64) and SS (1024), with a request size that is not a multiple
/// of maxpacket (rounded up to whole packets so the pattern stays in phase).
#[test]
fn zero_pattern_fs_and_ss() {
    for (speed, mp) in [(Speed::Full, 64usize), (Speed::Super, 1024)] {
        let (dev, _) = gadget_zero(ZeroConfig {
            speed,
            req_size: 1000,
            ..ZeroConfig::default()
        });
        let r = start(dev, speed, dummy_udc_eps());
        r.mock.control(SET_CONFIGURATION_1, &[]).unwrap();
        let data = r.mock.host_in(0x81).unwrap();
        assert_eq!(data.len(), 1000usize.div_ceil(mp) * mp, "{speed:?}");
        assert_eq!(Pattern::Mod63.check(&data, mp).errors, 0, "{speed:?}");
        let cfg = r.mock.control_in(get_descriptor(2, 0, 512)).unwrap();
        let has_companion = walk(&cfg).iter().any(|d| d.0 == 0x30);
        assert_eq!(
            has_companion,
            speed == Speed::Super,
            "SS endpoint companions"
        );
    }
}

/// usbtest cases 14/21 (`ctrl_out`): vendor 0x5b writes, 0x5c reads back, up to 4096 bytes;
/// longer requests and non-zero wValue/wIndex stall, as in f_sourcesink.
#[test]
fn zero_vendor_requests_round_trip() {
    let (r, _) = zero(Speed::High);
    let m = &r.mock;
    for (i, len) in [1usize, 64, 1024, 1025, 4096].into_iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
        let w = setup(0x40, 0x5b, 0, 0, len as u16);
        assert_eq!(
            m.control(w, &data).unwrap(),
            Ep0Reply::Out(len),
            "write {len}"
        );
        let back = m.control_in(setup(0xc0, 0x5c, 0, 0, len as u16)).unwrap();
        assert_eq!(back, data, "read back {len}");
    }
    assert_eq!(
        m.control(setup(0x40, 0x5b, 0, 0, 4097), &[0; 4097])
            .unwrap(),
        Ep0Reply::Stall
    );
    assert_eq!(
        m.control(setup(0xc0, 0x5c, 0, 0, 4097), &[]).unwrap(),
        Ep0Reply::Stall
    );
    assert_eq!(
        m.control(setup(0xc0, 0x5c, 1, 0, 4), &[]).unwrap(),
        Ep0Reply::Stall
    );
    // IN request with wLength 0: acknowledged with EP0_READ (spec §1.5).
    assert_eq!(
        m.control(setup(0xc0, 0x5c, 0, 0, 0), &[]).unwrap(),
        Ep0Reply::Out(0)
    );
}

/// contract D27/D28, spec Appendix step 6: a reset stops the endpoint threads and disables
/// the endpoints; the next SET_CONFIGURATION enables them again and data flows.
#[test]
fn zero_reset_then_reconfigure() {
    let (r, _) = zero(Speed::High);
    let m = &r.mock;
    m.control(SET_CONFIGURATION_1, &[]).unwrap();
    m.host_in(0x81).unwrap();
    m.bus_reset();
    m.wait_enabled(0).unwrap();
    let disables = m
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Disable(_)))
        .count();
    assert_eq!(disables, 4);
    // Enumeration again, then configuration.
    m.control_in(get_descriptor(1, 0, 64)).unwrap();
    assert_eq!(
        m.control(SET_CONFIGURATION_1, &[]).unwrap(),
        Ep0Reply::Out(0)
    );
    assert_eq!(m.wait_enabled(4).unwrap().len(), 4);
    let data = m.host_in(0x81).unwrap();
    assert_eq!(Pattern::Mod63.check(&data, 512).errors, 0);
    // A repeated SET_CONFIGURATION without reset re-enables cleanly (disable first).
    assert_eq!(
        m.control(SET_CONFIGURATION_1, &[]).unwrap(),
        Ep0Reply::Out(0)
    );
    assert_eq!(m.wait_enabled(4).unwrap().len(), 4);
    m.host_in(0x81).unwrap();
    // SET_CONFIGURATION(0) leaves the configured state.
    assert_eq!(
        m.control(setup(0, 9, 0, 0, 0), &[]).unwrap(),
        Ep0Reply::Out(0)
    );
    assert_eq!(m.wait_enabled(0).unwrap().len(), 0);
    assert_eq!(m.control_in(setup(0x80, 8, 0, 0, 1)).unwrap(), [0]);
}

/// Linux composite.c `set_config`: SET_CONFIGURATION with a value that names no configuration
/// stalls and keeps the current configuration and its endpoints (the bench saw our Gadget Zero
/// drop to configuration 0, its endpoints then failing with EPROTO).
#[test]
fn invalid_set_configuration_stalls_and_keeps_the_configuration() {
    let (r, stats) = zero(Speed::High);
    let m = &r.mock;
    assert_eq!(
        m.control(SET_CONFIGURATION_1, &[]).unwrap(),
        Ep0Reply::Out(0)
    );
    assert_eq!(m.wait_enabled(4).unwrap().len(), 4);
    let disables_before = m
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Disable(_)))
        .count();
    assert_eq!(
        m.control(setup(0, 9, 9, 0, 0), &[]).unwrap(),
        Ep0Reply::Stall,
        "SET_CONFIGURATION(9)"
    );
    assert_eq!(
        m.control_in(setup(0x80, 8, 0, 0, 1)).unwrap(),
        [1],
        "GET_CONFIGURATION after the stall"
    );
    let disables_after = m
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Disable(_)))
        .count();
    assert_eq!(disables_after, disables_before, "no endpoint was disabled");
    assert_eq!(m.enabled().len(), 4);
    // Bulk IN and OUT still move the pattern.
    let data = m.host_in(0x81).unwrap();
    assert!(!data.is_empty());
    assert_eq!(Pattern::Mod63.check(&data, 512).errors, 0);
    let mut out = vec![0u8; 512];
    Pattern::Mod63.fill(&mut out, 512);
    m.host_out(0x02, &out).unwrap();
    m.host_out_drained(0x02).unwrap();
    assert_eq!(stats.pattern_errors(), 0);
    assert_eq!(stats.transfer_errors.load(Ordering::Relaxed), 0);
}

/// usbtest sets altsetting 0 before every test: the endpoints restart. Alt 1 does not exist
/// without iso endpoints (contract T9).
#[test]
fn zero_set_interface() {
    let (r, _) = zero(Speed::High);
    let m = &r.mock;
    m.control(SET_CONFIGURATION_1, &[]).unwrap();
    let before = m.calls().len();
    assert_eq!(
        m.control(setup(0x01, 11, 0, 0, 0), &[]).unwrap(),
        Ep0Reply::Out(0)
    );
    let calls = m.calls();
    let new = &calls[before..];
    assert_eq!(
        new.iter().filter(|c| matches!(c, Call::Disable(_))).count(),
        4
    );
    assert_eq!(
        new.iter()
            .filter(|c| matches!(c, Call::Enable { .. }))
            .count(),
        4
    );
    assert_eq!(
        m.control(setup(0x01, 11, 1, 0, 0), &[]).unwrap(),
        Ep0Reply::Stall
    );
    m.host_in(0x81).unwrap();
}

/// With an iso-capable controller, altsetting 1 (bulk + iso, as f_sourcesink) is declared and
/// SET_INTERFACE(1) enables its endpoints.
#[test]
fn zero_iso_altsetting_when_controller_has_iso() {
    let mut eps = dummy_udc_eps();
    eps.push(EpInfo {
        name: "ep3in-iso".into(),
        addr: Some(3),
        caps: caps(true, true),
        maxpacket_limit: 1024,
        max_streams: 0,
    });
    eps.push(EpInfo {
        name: "ep4out-iso".into(),
        addr: Some(4),
        caps: caps(true, false),
        maxpacket_limit: 1024,
        max_streams: 0,
    });
    let (dev, stats) = gadget_zero(ZeroConfig::default());
    let r = start(dev, Speed::High, eps);
    let m = &r.mock;
    let cfg = m.control_in(get_descriptor(2, 0, 512)).unwrap();
    let d = walk(&cfg);
    let alts: Vec<u8> = d.iter().filter(|x| x.0 == 4).map(|x| x.1[3]).collect();
    assert_eq!(alts, [0, 1]);
    let iso: Vec<u8> = d
        .iter()
        .filter(|x| x.0 == 5 && x.1[3] & 3 == 1)
        .map(|x| x.1[2])
        .collect();
    assert_eq!(iso, [0x04, 0x83]);
    m.control(SET_CONFIGURATION_1, &[]).unwrap();
    assert_eq!(
        m.control(setup(0x01, 11, 1, 0, 0), &[]).unwrap(),
        Ep0Reply::Out(0)
    );
    let enabled = m.wait_enabled(4).unwrap();
    assert!(enabled.iter().any(|(_, d)| d.address.0 == 0x83));
    assert_eq!(m.control_in(setup(0x81, 10, 0, 0, 1)).unwrap(), [1]);
    // Iso OUT data is counted but not checked against the pattern: f_sourcesink checks its
    // bulk OUT endpoint only, and iso packets may arrive partial.
    m.host_out(0x04, &[0xee; 100]).unwrap();
    m.host_out_drained(0x04).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while stats.bytes_out.load(Ordering::SeqCst) < 100 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(stats.bytes_out.load(Ordering::SeqCst), 100);
    assert_eq!(stats.pattern_errors(), 0);
}

fn caps(iso: bool, dir_in: bool) -> rawgadget_uapi::UsbRawEpCaps {
    rawgadget_uapi::UsbRawEpCaps::new(false, iso, false, false, dir_in, !dir_in)
}

// ---- Keyboard ----------------------------------------------------------------------------

fn kbd(text: &str) -> (Running, Arc<rawgadget_devices::KeyboardState>) {
    let (dev, state) = keyboard(KeyboardConfig {
        text: text.into(),
        ..KeyboardConfig::default()
    })
    .unwrap();
    (start(dev, Speed::High, dummy_udc_eps()), state)
}

/// Enumeration: HID boot keyboard interface, HID descriptor, 8-byte interrupt IN endpoint;
/// the report descriptor is served to the interface.
#[test]
fn keyboard_descriptors() {
    let (r, _) = kbd("");
    let m = &r.mock;
    let cfg = m.control_in(get_descriptor(2, 0, 255)).unwrap();
    let d = walk(&cfg);
    let types: Vec<u8> = d.iter().map(|x| x.0).collect();
    assert_eq!(types, [2, 4, 0x21, 5]);
    assert_eq!(&d[1].1[5..8], &[3, 1, 1], "HID boot keyboard");
    assert_eq!(u16::from_le_bytes([d[2].1[7], d[2].1[8]]), 63);
    assert_eq!(
        &d[3].1[2..6],
        &[0x85, 3, 8, 0],
        "interrupt IN 8 bytes on ep5in-int"
    );
    let rep = m.control_in(setup(0x81, 6, 0x2200, 0, 255)).unwrap();
    assert_eq!(rep, REPORT_DESCRIPTOR);
    let hid = m.control_in(setup(0x81, 6, 0x2100, 0, 9)).unwrap();
    assert_eq!(hid, d[2].1);
    assert_eq!(
        m.control_in(setup(0x81, 6, 0x2200, 1, 255)),
        Err(MockError::Stall),
        "iface 1"
    );
}

/// Text → reports on the wire, in order, then `done`.
#[test]
fn keyboard_types_text() {
    let (r, state) = kbd("Hi!");
    let m = &r.mock;
    assert_eq!(
        m.control(SET_CONFIGURATION_1, &[]).unwrap(),
        Ep0Reply::Out(0)
    );
    let expected = text_to_reports("Hi!").unwrap();
    for want in &expected {
        assert_eq!(&m.host_in(0x85).unwrap(), want);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !state.is_done() && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(state.is_done());
    assert_eq!(state.reports_sent.load(Ordering::SeqCst), expected.len());
}

/// `wait_for_led`: nothing is typed after SET_CONFIGURATION nor after the host's own
/// SET_REPORT(LEDs = 0) at connect; the first SET_REPORT with Num Lock (bit 0) starts typing,
/// and the whole text follows in order.
#[test]
fn keyboard_wait_for_led_starts_at_num_lock() {
    let (dev, state) = keyboard(KeyboardConfig {
        text: "ok".into(),
        wait_for_led: true,
    })
    .unwrap();
    let r = start(dev, Speed::High, dummy_udc_eps());
    let m = &r.mock;
    assert_eq!(
        m.control(SET_CONFIGURATION_1, &[]).unwrap(),
        Ep0Reply::Out(0)
    );
    assert_eq!(m.wait_enabled(1).unwrap().len(), 1);
    // The host's SET_REPORT at connect: all LEDs off. Then Caps Lock alone.
    for leds in [0x00, 0x02] {
        assert_eq!(
            m.control(setup(0x21, 0x09, 0x0200, 0, 1), &[leds]).unwrap(),
            Ep0Reply::Out(1)
        );
    }
    // A following request is handled only after the data reached the function.
    m.control(setup(0x21, 0x0a, 0, 0, 0), &[]).unwrap();
    assert_eq!(state.leds.load(Ordering::SeqCst), 0x02);
    // No report is offered: the host's read times out.
    let impatient = m
        .clone()
        .with_timeout(std::time::Duration::from_millis(200));
    assert_eq!(impatient.host_in(0x85), Err(MockError::Timeout));
    assert_eq!(state.reports_sent.load(Ordering::SeqCst), 0);
    // Num Lock (with Caps Lock) on: typing starts.
    assert_eq!(
        m.control(setup(0x21, 0x09, 0x0200, 0, 1), &[0x03]).unwrap(),
        Ep0Reply::Out(1)
    );
    for want in text_to_reports("ok").unwrap() {
        assert_eq!(m.host_in(0x85).unwrap(), want);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !state.is_done() && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(state.is_done());
}

/// HID 1.11 §7.2: the class requests.
#[test]
fn keyboard_class_requests() {
    let (r, state) = kbd("a");
    let m = &r.mock;
    m.control(SET_CONFIGURATION_1, &[]).unwrap();
    // SET_REPORT(Output): the LED byte (Caps Lock).
    assert_eq!(
        m.control(setup(0x21, 0x09, 0x0200, 0, 1), &[0x02]).unwrap(),
        Ep0Reply::Out(1)
    );
    // The data reaches the function after the data stage: the next request is handled after.
    assert_eq!(
        m.control(setup(0x21, 0x0a, 0, 0, 0), &[]).unwrap(),
        Ep0Reply::Out(0)
    );
    assert_eq!(state.leds.load(Ordering::SeqCst), 0x02);
    assert_eq!(
        m.control(setup(0x21, 0x0a, 0x7d00, 0, 0), &[]).unwrap(),
        Ep0Reply::Out(0)
    );
    assert_eq!(
        m.control_in(setup(0xa1, 0x02, 0, 0, 1)).unwrap(),
        [0x7d],
        "GET_IDLE"
    );
    assert_eq!(
        m.control_in(setup(0xa1, 0x03, 0, 0, 1)).unwrap(),
        [1],
        "report protocol"
    );
    assert_eq!(
        m.control(setup(0x21, 0x0b, 0, 0, 0), &[]).unwrap(),
        Ep0Reply::Out(0)
    );
    assert_eq!(
        m.control_in(setup(0xa1, 0x03, 0, 0, 1)).unwrap(),
        [0],
        "boot protocol"
    );
    assert_eq!(
        m.control(setup(0x21, 0x0b, 2, 0, 0), &[]).unwrap(),
        Ep0Reply::Stall
    );
    m.host_in(0x85).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while state.reports_sent.load(Ordering::SeqCst) < 1 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(
        m.control_in(setup(0xa1, 0x01, 0x0100, 0, 8)).unwrap(),
        [0, 0, 0x04, 0, 0, 0, 0, 0]
    );
}

/// A reset stops typing; the next SET_CONFIGURATION continues with the next report.
#[test]
fn keyboard_reset_rearms_and_continues() {
    let (r, _state) = kbd("ab");
    let m = &r.mock;
    m.control(SET_CONFIGURATION_1, &[]).unwrap();
    let all = text_to_reports("ab").unwrap();
    assert_eq!(m.host_in(0x85).unwrap(), all[0]);
    m.bus_reset();
    m.wait_enabled(0).unwrap();
    m.control(SET_CONFIGURATION_1, &[]).unwrap();
    for want in &all[1..] {
        assert_eq!(&m.host_in(0x85).unwrap(), want);
    }
}
