//! One full-stack test per contract rule D1–D31 (udc-contract.md §2): a client issuing raw
//! gadget ioctls through the engine, the controller model, and a host submitting URBs. Each
//! asserts what a client and a host of `raw_gadget.ko` on `dummy_udc` would see. Rules whose
//! kernel behaviour is not yet settled against the real thing are listed in
//! docs/contract-coverage.md.

mod common;

use std::time::Duration;

use common::*;
use rawgadget_engine::{ClientOp, Outcome, Payload};
use rawgadget_loopback::scripted::{DeviceScript, Reply, ScriptedDevice};
use rawgadget_loopback::{Bus, Host, HostConfig, HostPort, Stepped};
use rawgadget_uapi::{event_type::*, speed::*, Errno, Speed};
use rawgadget_udc::{Personality, Unlink, Urb, UrbFlags};

// ------------------------------------------------------------------------------------------
// 2.1 Endpoints, speed, enabling

/// contract D1
#[test]
fn d1_eps_info_lists_dummy_endpoints() {
    let mut r = Rig::running();
    let res = r.done(ClientOp::EpsInfo);
    assert_eq!(res.ret, Ok(24));
    let Payload::EpsInfo(info) = res.payload else {
        panic!()
    };
    let names: Vec<String> = info.eps[..24]
        .iter()
        .map(|e| String::from_utf8_lossy(e.name_bytes()).into_owned())
        .collect();
    assert_eq!(names[0], "ep1in-bulk");
    assert_eq!(names[8], "ep15in-int");
    assert_eq!(names[10], "ep2in-bulk");
    assert_eq!(names[11], "ep-aout");
    assert_eq!(names[23], "ep-mout");
    assert_eq!(info.eps[7].addr, 12);
    assert_eq!(info.eps[12].addr, 0xff);
    for e in &info.eps[..24] {
        assert_eq!(
            (
                e.limits.maxpacket_limit,
                e.limits.max_streams,
                e.limits.reserved
            ),
            (65535, 16, 0)
        );
        assert!(!e.caps.type_iso());
    }
    assert_eq!(info.eps[24].name_bytes(), b"");
}

/// contract D2
#[test]
fn d2_run_with_wrong_udc_names_is_ebusy() {
    for (driver, device) in [
        ("dummy_udc", "dummy_udc.1"),
        ("dummy_hcd", "dummy_udc.0"),
        ("dummy_udc", ""),
    ] {
        let mut bus = Bus::new();
        let init = rawgadget_uapi::UsbRawInit::new(driver, device, USB_SPEED_HIGH);
        assert!(
            matches!(bus.client(ClientOp::Init(Box::new(init))), Outcome::Done(r) if r.ret == Ok(0))
        );
        let Outcome::Done(r) = bus.client(ClientOp::Run { arg: 0 }) else {
            panic!()
        };
        assert_eq!(r.ret, Err(Errno::EBUSY), "{driver} {device}");
    }
    // a second instance on the same controller: busy too
    let mut r = Rig::running();
    let _ = r.bus.reopen();
    let init = rawgadget_uapi::UsbRawInit::new("dummy_udc", "dummy_udc.0", USB_SPEED_HIGH);
    assert_eq!(r.ret(ClientOp::Init(Box::new(init))), Ok(0));
    assert_eq!(
        r.ret(ClientOp::Run { arg: 0 }),
        Ok(0),
        "free again after close"
    );
}

/// contract D3
#[test]
fn d3_speed_is_min_of_init_and_personality() {
    let rows = [
        (Personality::dummy(), USB_SPEED_SUPER, Speed::High),
        (Personality::dummy(), USB_SPEED_FULL, Speed::Full),
        (Personality::dummy(), USB_SPEED_UNKNOWN, Speed::High),
        (
            Personality::dummy_super_speed(),
            USB_SPEED_SUPER,
            Speed::Super,
        ),
        (Personality::dummy_super_speed(), USB_SPEED_LOW, Speed::Low),
    ];
    for (p, init, want) in rows {
        let r = Rig::running_with(p, init);
        assert_eq!(r.bus.port_status().speed, Some(want), "INIT speed {init}");
    }
}

/// contract D4: at SS a reply that is a multiple of 9 and shorter than wLength leaves the
/// URB pending; Linux's 255-byte string read times out and its 2-byte fallback succeeds.
#[test]
fn d4_ss_ep0_maxpacket_nine() {
    let mut script = DeviceScript::vendor_loopback(USB_SPEED_SUPER);
    script.zero_on_short = false;
    script.strings.set(3, "12345678").unwrap(); // 18 bytes: 2 × 9
    let mut bus = Bus::with_personality(Personality::dummy_super_speed());
    let mut port = Stepped::new(&mut bus, ScriptedDevice::new(script));
    let mut host = Host::new(HostConfig::default());
    host.enumerate(&mut port).unwrap();
    assert_eq!(port.bus.controller().ep0_maxpacket(), 9);
    let rec = host.recording();
    assert_eq!(rec.string(3).as_deref(), Some("12345678"));
    let serial_reads: Vec<(u32, Result<(), Errno>)> = rec
        .events
        .iter()
        .filter_map(|e| match e {
            rawgadget_loopback::HostEvent::Urb(t)
                if t.setup.map(|s| s[2..4] == [3, 3]) == Some(true) =>
            {
                Some((t.length, t.status))
            }
            _ => None,
        })
        .collect();
    // the URB is killed after 5 s (ENOENT at the URB level, ETIMEDOUT for usb_control_msg)
    assert_eq!(
        serial_reads,
        vec![(255, Err(Errno::ENOENT)), (2, Ok(())), (18, Ok(()))]
    );
}

/// contract D5: the first matching disabled endpoint is used; the host reaches the first
/// enabled one with that address (U6).
#[test]
fn d5_ep_enable_first_match() {
    let mut r = Rig::running();
    assert_eq!(r.enable(BULK_IN_512), Ok(0)); // ep1in-bulk
    assert_eq!(r.enable(BULK_IN_512), Ok(12)); // ep-bin, the first ANY IN endpoint
    assert_eq!(r.enable(INT_IN_64), Ok(2)); // ep5in-int
    assert_eq!(
        r.enable([9, 5, 0x83, 1, 0, 2, 0, 1, 0]),
        Err(Errno::EINVAL),
        "no iso on dummy"
    );
    // the host's URBs to 0x81 go to handle 0, not 12
    let u = r.submit(Urb::bulk(0x81, vec![0; 512]));
    let w = pending(r.write(12, pattern(100), false));
    assert!(r.urb(u).is_none());
    let w0 = pending(r.write(0, pattern(70), false));
    assert_eq!(r.urb_done(u).actual_length, 70);
    assert_eq!(r.ret_of(w0), Some(Ok(70)));
    assert!(r.ret_of(w).is_none(), "handle 12 is never read");
}

/// contract D6
#[test]
fn d6_enable_checks_follow_speed_and_port() {
    let mut r = Rig::connected(USB_SPEED_HIGH);
    assert_eq!(
        r.enable(BULK_IN_512),
        Err(Errno::ESHUTDOWN),
        "before the first reset"
    );
    r.reset();
    r.bus.port_reset();
    assert_eq!(
        r.enable(BULK_IN_512),
        Err(Errno::ESHUTDOWN),
        "during a reset"
    );
    r.bus.advance(Duration::from_millis(50));
    assert_eq!(
        r.enable([9, 5, 0x81, 2, 64, 0, 0, 0, 0]),
        Err(Errno::EINVAL),
        "bulk 64 at HS"
    );
    assert_eq!(r.enable(BULK_IN_512), Ok(0));
    // ep5in-int cannot take bulk (D5 never offers it), so the first ANY IN endpoint does
    assert_eq!(r.enable([9, 5, 0x85, 2, 0, 2, 0, 0, 0]), Ok(12));
    assert_eq!(
        r.enable([9, 5, 0x85, 3, 0, 4, 0, 0, 0]),
        Ok(2),
        "interrupt 1024 at HS"
    );
    assert_eq!(
        r.enable([9, 5, 0x8a, 3, 1, 4, 0, 0, 0]),
        Err(Errno::EINVAL),
        "interrupt 1025"
    );
}

/// contract D7
#[test]
fn d7_transfers_while_port_disabled_are_eshutdown() {
    let mut r = Rig::with_bulk();
    let u = r.control(setup(0xc0, 1, 0, 0, 4), &[]);
    r.control_event();
    r.bus.port_reset();
    assert_eq!(r.urb_done(u).status, Err(Errno::EPROTO));
    assert_eq!(
        done(r.write(0, pattern(100), false)).ret,
        Err(Errno::ESHUTDOWN)
    );
    assert_eq!(done(r.read(1, 100)).ret, Err(Errno::ESHUTDOWN));
    assert_eq!(
        done(r.ep0_write(pattern(4), false)).ret,
        Err(Errno::ESHUTDOWN)
    );
    assert_eq!(
        r.bus.instance().ep0_pending(),
        rawgadget_engine::Ep0Pending::In,
        "the SETUP stays pending"
    );
}

// ------------------------------------------------------------------------------------------
// 2.2 Packet-level matching

/// contract D8
#[test]
fn d8_one_write_spans_urbs_one_urb_spans_reads() {
    let mut r = Rig::with_bulk();
    let w = pending(r.write(0, pattern(1000), false));
    let a = r.submit(Urb::bulk(0x81, vec![0; 512]));
    assert_eq!(r.urb_done(a).data(), &pattern(1000)[..512]);
    assert!(r.ret_of(w).is_none());
    let b = r.submit(Urb::bulk(0x81, vec![0; 512]));
    assert_eq!(r.urb_done(b).data(), &pattern(1000)[512..]);
    assert_eq!(r.ret_of(w), Some(Ok(1000)));
    // one OUT URB of 1024 read by two EP_READs of 512
    let u = r.submit(Urb::bulk(0x02, pattern(1024)));
    let r1 = pending(r.read(1, 512));
    let got = r.result(r1).unwrap();
    assert_eq!((got.ret, data(&got)), (Ok(512), &pattern(1024)[..512]));
    assert!(r.urb(u).is_none());
    let r2 = pending(r.read(1, 512));
    let got = r.result(r2).unwrap();
    assert_eq!((got.ret, data(&got)), (Ok(512), &pattern(1024)[512..]));
    assert_eq!(r.urb_done(u).actual_length, 1024);
}

/// contract D9
#[test]
fn d9_nak_until_both_sides_are_ready() {
    let mut r = Rig::with_bulk();
    let u = r.submit(Urb::bulk(0x02, pattern(10)));
    r.bus.advance(Duration::from_secs(30));
    assert!(r.urb(u).is_none(), "no request: the URB waits");
    let rd = pending(r.read(1, 512));
    assert_eq!(r.ret_of(rd), Some(Ok(10)));
    assert_eq!(r.urb_done(u).status, Ok(()));
    let rd = pending(r.read(1, 512));
    r.bus.advance(Duration::from_secs(30));
    assert!(r.ret_of(rd).is_none(), "no URB: the read waits");
}

/// contract D10 (and U9: EREMOTEIO is the host core's)
#[test]
fn d10_short_packets_and_overflow() {
    let mut r = Rig::with_bulk();
    let w = pending(r.write(0, pattern(1024), false));
    let u = r.submit(Urb::bulk(0x81, vec![0; 421]));
    let c = r.urb_done(u);
    assert_eq!((c.status, c.actual_length), (Err(Errno::EOVERFLOW), 421));
    assert_eq!(
        r.ret_of(w),
        Some(Ok(421)),
        "EP_WRITE returns the bytes taken"
    );
    // OUT: the host sends more than the read has room for
    let rd = pending(r.read(1, 10));
    let u = r.submit(Urb::bulk(0x02, pattern(100)));
    assert_eq!(r.ret_of(rd), Some(Err(Errno::EOVERFLOW)));
    let c = r.urb_done(u);
    assert_eq!((c.status, c.actual_length), (Ok(()), 10));
    // a short IN read is not an error for the controller; the host core makes it EREMOTEIO
    pending(r.write(0, pattern(100), false));
    let mut host = Host::new(HostConfig::default());
    let flags = UrbFlags {
        zero_packet: false,
        short_not_ok: true,
    };
    let res = host.bulk_in(&mut r.bus, 1, 512, flags, Duration::from_secs(1));
    assert_eq!((res.status, res.actual), (Err(Errno::EREMOTEIO), 100));
}

/// contract D11
#[test]
fn d11_zero_flag_and_zero_packet() {
    let mut r = Rig::with_bulk();
    let w = pending(r.write(0, pattern(512), true));
    let u = r.submit(Urb::bulk(0x81, vec![0; 1024]));
    assert_eq!(r.urb_done(u).actual_length, 512, "the ZLP ends the URB");
    assert_eq!(r.ret_of(w), Some(Ok(512)));
    // without ZERO the URB keeps waiting for more
    pending(r.write(0, pattern(512), false));
    let u = r.submit(Urb::bulk(0x81, vec![0; 1024]));
    assert!(r.urb(u).is_none());
    // URB_ZERO_PACKET on OUT ends the read at 512
    let rd = pending(r.read(1, 1024));
    let mut urb = Urb::bulk(0x02, pattern(512));
    urb.flags.zero_packet = true;
    let u = r.submit(urb);
    assert_eq!(r.ret_of(rd), Some(Ok(512)));
    assert_eq!(r.urb_done(u).status, Ok(()));
}

/// contract D12
#[test]
fn d12_interrupt_endpoint_serviced_like_bulk() {
    let mut r = Rig::running();
    assert_eq!(r.enable(INT_IN_64), Ok(2));
    let w = pending(r.write(2, pattern(100), false));
    let a = r.submit(Urb::interrupt(0x85, vec![0; 64]));
    let b = r.submit(Urb::interrupt(0x85, vec![0; 64]));
    assert_eq!(r.urb_done(a).actual_length, 64);
    assert_eq!(r.urb_done(b).actual_length, 36);
    assert_eq!(r.ret_of(w), Some(Ok(100)));
}

/// contract D13
#[test]
fn d13_small_writes_complete_at_once_through_the_fifo() {
    let mut r = Rig::with_bulk();
    let w = pending(r.write(0, pattern(10), false));
    assert_eq!(r.ret_of(w), Some(Ok(10)), "completes before the host reads");
    assert_eq!(r.ret(ClientOp::EpSetHalt { arg: 0 }), Err(Errno::EAGAIN));
    let u = r.submit(Urb::bulk(0x81, vec![0; 512]));
    assert_eq!(r.urb_done(u).data(), &pattern(10)[..]);
    assert_eq!(r.ret(ClientOp::EpSetHalt { arg: 0 }), Ok(0));
    // FIFO data is lost on reset, silently
    r.ret(ClientOp::EpClearHalt { arg: 0 }).unwrap();
    let w = pending(r.write(0, pattern(3), false));
    assert_eq!(r.ret_of(w), Some(Ok(3)));
    r.reset();
    assert_eq!(r.events(), vec![USB_RAW_EVENT_RESET, USB_RAW_EVENT_RESUME]);
    let u = r.submit(Urb::bulk(0x81, vec![0; 512]));
    assert!(r.urb(u).is_none());
}

// ------------------------------------------------------------------------------------------
// 2.3 ep0

/// contract D14
#[test]
fn d14_one_setup_at_a_time() {
    let mut r = Rig::running();
    let a = r.control(setup(0x80, 6, 0x0100, 0, 18), &[]);
    let b = r.control(setup(0xc0, 0x42, 1, 2, 3), &[]);
    assert_eq!(r.control_event(), setup(0x80, 6, 0x0100, 0, 18));
    assert!(r.try_fetch().is_none(), "the second SETUP waits");
    let w = pending(r.ep0_write(pattern(18), false));
    assert_eq!(r.ret_of(w), Some(Ok(18)));
    assert_eq!(r.urb_done(a).actual_length, 18);
    assert_eq!(r.control_event(), setup(0xc0, 0x42, 1, 2, 3));
    pending(r.ep0_write(pattern(3), false));
    assert_eq!(r.urb_done(b).data(), &pattern(3)[..]);
}

/// contract D15
#[test]
fn d15_late_answer_becomes_stale_and_overflows() {
    let mut r = Rig::running();
    let a = r.control(setup(0x80, 6, 0x0100, 0, 18), &[]);
    r.control_event();
    r.bus.unlink(a, Unlink::Async).unwrap();
    assert_eq!(r.urb_done(a).status, Err(Errno::ECONNRESET));
    let late = pending(r.ep0_write(pattern(18), false));
    assert!(r.ret_of(late).is_none());
    r.control(setup(0x80, 6, 0x0200, 0, 9), &[]);
    assert_eq!(r.ret_of(late), Some(Err(Errno::EOVERFLOW)));
    assert_eq!(r.control_event(), setup(0x80, 6, 0x0200, 0, 9));
}

/// contract D16
#[test]
fn d16_setup_while_one_is_pending_is_stalled() {
    let mut r = Rig::running();
    let a = r.control(setup(0xc0, 1, 0, 0, 8), &[]);
    r.control_event(); // fetched, never answered
    r.bus.unlink(a, Unlink::Kill).unwrap();
    r.urb_done(a);
    let b = r.control(setup(0xc0, 2, 0, 0, 8), &[]);
    let c = r.urb_done(b);
    assert_eq!((c.status, c.actual_length), (Err(Errno::EPIPE), 0));
    assert!(r.try_fetch().is_none(), "the client never sees it");
    // a reset does not clear the pending flag
    r.reset();
    assert_eq!(r.events(), vec![USB_RAW_EVENT_RESET, USB_RAW_EVENT_RESUME]);
    let d = r.control(setup(0xc0, 3, 0, 0, 8), &[]);
    assert_eq!(r.urb_done(d).status, Err(Errno::EPIPE));
    // EP0_STALL clears it
    assert_eq!(r.ret(ClientOp::Ep0Stall { arg: 0 }), Ok(0));
    r.control(setup(0xc0, 4, 0, 0, 8), &[]);
    assert_eq!(r.control_event(), setup(0xc0, 4, 0, 0, 8));
}

/// contract D17
#[test]
fn d17_ep0_stall_fails_the_urb_and_the_next_setup_clears_it() {
    let mut r = Rig::running();
    let a = r.control(setup(0xc0, 1, 0, 0, 8), &[]);
    r.control_event();
    assert_eq!(r.ret(ClientOp::Ep0Stall { arg: 0 }), Ok(0));
    assert_eq!(r.urb_done(a).status, Err(Errno::EPIPE));
    let s = r.control(setup(0x82, 0, 0, 0, 2), &[]);
    assert_eq!(r.urb_done(s).data(), &[0, 0], "GET_STATUS(ep0) reads 0");
}

/// contract D18
#[test]
fn d18_status_stage_shapes() {
    let mut r = Rig::running();
    // IN, maxpacket multiple shorter than wLength, no ZERO: the URB stays pending
    let u = r.control(setup(0x80, 6, 0x0200, 0, 255), &[]);
    r.control_event();
    let w = pending(r.ep0_write(pattern(64), false));
    assert_eq!(r.ret_of(w), Some(Ok(64)));
    r.bus.advance(Duration::from_secs(4));
    assert!(r.urb(u).is_none());
    r.bus.unlink(u, Unlink::Kill).unwrap();
    assert_eq!(r.urb_done(u).actual_length, 64);
    // the host's usb_control_msg times out after 5 s
    let mut bus = r.bus;
    {
        let mut answered = false;
        let device = |b: &mut Bus| {
            if answered {
                return false;
            }
            let ev = match b.client(ClientOp::EventFetch { capacity: 8 }) {
                Outcome::Done(ev) => ev,
                Outcome::Pending(id) => {
                    b.cancel(id); // nothing yet: do not leave a fetch behind
                    let _ = b.take_completion(id);
                    return false;
                }
            };
            assert!(
                matches!(ev.payload, Payload::Event { header, .. } if header.type_ == USB_RAW_EVENT_CONTROL)
            );
            let io = rawgadget_uapi::UsbRawEpIo {
                ep: 0,
                flags: 0,
                length: 64,
            };
            let _ = b.client(ClientOp::Ep0Write {
                io,
                data: pattern(64),
            });
            answered = true;
            true
        };
        let mut port = Stepped::new(&mut bus, device);
        let mut host = Host::new(HostConfig::default());
        let t0 = port.now();
        assert_eq!(
            host.control_in(&mut port, 0, 6, 0x0200, 0, 255),
            Err(Errno::ETIMEDOUT)
        );
        assert_eq!(port.now() - t0, Duration::from_secs(5));
    }
    let mut r = Rig { bus };
    // OUT with data: completes when EP0_READ consumed it
    let u = r.control(setup(0x40, 9, 0, 0, 5), &pattern(5));
    r.control_event();
    let rd = pending(r.ep0_read(5));
    assert_eq!(data(&r.result(rd).unwrap()), &pattern(5)[..]);
    assert_eq!(r.urb_done(u).actual_length, 5);
    // no data: completes exactly when the client's 0-length EP0_READ is queued
    let u = r.control(setup(0x40, 10, 0, 0, 0), &[]);
    r.control_event();
    assert!(r.urb(u).is_none());
    pending(r.ep0_read(0));
    assert_eq!(r.urb_done(u).status, Ok(()));
    // no data, refused with EP0_STALL
    let u = r.control(setup(0x40, 11, 0, 0, 0), &[]);
    r.control_event();
    r.ret(ClientOp::Ep0Stall { arg: 0 }).unwrap();
    assert_eq!(r.urb_done(u).status, Err(Errno::EPIPE));
}

// ------------------------------------------------------------------------------------------
// 2.4 Requests the controller answers

/// contract D19
#[test]
fn d19_set_address_never_reaches_the_client() {
    let mut r = Rig::running();
    let u = r.control(setup(0x00, 5, 9, 0, 0), &[]);
    assert_eq!(r.urb_done(u).status, Ok(()));
    assert_eq!(r.bus.controller().address(), 9);
    assert!(r.try_fetch().is_none());
    r.control(setup(0x40, 5, 9, 0, 0), &[]);
    assert_eq!(
        r.control_event(),
        setup(0x40, 5, 9, 0, 0),
        "vendor bRequest 5 is the client's"
    );
}

/// contract D20
#[test]
fn d20_get_status_answered_by_the_controller() {
    let mut r = Rig::with_bulk();
    r.ret(ClientOp::EpSetHalt { arg: 1 }).unwrap();
    let mut host = Host::new(HostConfig::default());
    assert_eq!(host.get_status(&mut r.bus, 0, 0), Ok(0));
    assert_eq!(host.get_status(&mut r.bus, 1, 7), Ok(0));
    assert_eq!(host.get_status(&mut r.bus, 2, 0x02), Ok(1));
    assert_eq!(host.get_status(&mut r.bus, 2, 0x81), Ok(0));
    assert_eq!(
        host.get_status(&mut r.bus, 2, 0x82),
        Err(Errno::EPIPE),
        "direction counts"
    );
    assert_eq!(
        host.control_in(&mut r.bus, 0, 0, 0, 0, 1),
        Ok(vec![0]),
        "min(2, wLength)"
    );
    assert!(r.try_fetch().is_none());
}

/// contract D21
#[test]
fn d21_device_features() {
    let mut r = Rig::running();
    let mut host = Host::new(HostConfig::default());
    assert_eq!(host.control_out(&mut r.bus, 0, 3, 1, 0, &[]), Ok(()));
    assert_eq!(host.get_status(&mut r.bus, 0, 0), Ok(2));
    assert_eq!(
        host.control_out(&mut r.bus, 0, 3, 2, 0, &[]),
        Err(Errno::EPIPE),
        "TEST_MODE"
    );
    assert_eq!(
        host.control_out(&mut r.bus, 0, 3, 48, 0, &[]),
        Err(Errno::EPIPE),
        "U1 below SS"
    );
    assert_eq!(
        host.control_out(&mut r.bus, 0, 1, 3, 0, &[]),
        Err(Errno::EPIPE),
        "clear HNP"
    );
    r.reset();
    assert_eq!(
        host.get_status(&mut r.bus, 0, 0),
        Ok(0),
        "a reset clears the bits"
    );
    let events = r.events();
    assert!(!events.contains(&USB_RAW_EVENT_CONTROL));
    let mut s = Rig::running_with(Personality::dummy_super_speed(), USB_SPEED_SUPER);
    assert_eq!(host.control_out(&mut s.bus, 0, 3, 49, 0, &[]), Ok(()));
    assert_eq!(host.get_status(&mut s.bus, 0, 0), Ok(1 << 3));
}

/// contract D22
#[test]
fn d22_endpoint_halt_from_the_host_respects_wedge() {
    let mut r = Rig::with_bulk();
    let mut host = Host::new(HostConfig::default());
    assert_eq!(host.set_halt(&mut r.bus, 0x02), Ok(()));
    let u = r.submit(Urb::bulk(0x02, pattern(8)));
    assert_eq!(r.urb_done(u).status, Err(Errno::EPIPE));
    assert_eq!(host.clear_halt(&mut r.bus, 0x02), Ok(()));
    assert_eq!(host.set_halt(&mut r.bus, 0x00), Err(Errno::EPIPE), "ep0");
    assert_eq!(
        host.clear_halt(&mut r.bus, 0x80),
        Ok(()),
        "CLEAR on ep0 succeeds"
    );
    r.ret(ClientOp::EpSetWedge { arg: 1 }).unwrap();
    assert_eq!(host.clear_halt(&mut r.bus, 0x02), Ok(()), "reports success");
    assert_eq!(
        host.get_status(&mut r.bus, 2, 0x02),
        Ok(1),
        "but stays halted"
    );
    r.ret(ClientOp::EpClearHalt { arg: 1 }).unwrap();
    assert_eq!(host.get_status(&mut r.bus, 2, 0x02), Ok(0));
    assert!(r.try_fetch().is_none());
}

/// contract D23
#[test]
fn d23_other_requests_reach_the_client() {
    let mut r = Rig::running();
    for s in [
        setup(0x00, 9, 1, 0, 0),
        setup(0x01, 11, 1, 0, 0),
        setup(0x01, 3, 0, 0, 0),
        setup(0x21, 0x0a, 0, 0, 0),
        setup(0xc0, 0x99, 0, 0, 4),
    ] {
        r.control(s, &[]);
        assert_eq!(r.control_event(), s);
        r.ret(ClientOp::Ep0Stall { arg: 0 }).unwrap();
    }
}

// ------------------------------------------------------------------------------------------
// 2.5 Errors, halt, unlink

/// contract D24
#[test]
fn d24_eproto_for_missing_endpoints_and_suspended_port() {
    let mut r = Rig::with_bulk();
    for ep in [0x01, 0x82, 0x83] {
        let u = r.submit(Urb::bulk(ep, vec![0; 8]));
        assert_eq!(r.urb_done(u).status, Err(Errno::EPROTO), "{ep:#x}");
    }
    // a pending URB of an endpoint the client disables
    let u = r.submit(Urb::bulk(0x02, pattern(8)));
    assert_eq!(r.ret(ClientOp::EpDisable { arg: 1 }), Ok(0));
    assert_eq!(r.urb_done(u).status, Err(Errno::EPROTO));
    // suspended: every URB, ep0 included
    r.bus.port_suspend().unwrap();
    let u = r.control(setup(0x80, 6, 0x0100, 0, 18), &[]);
    assert_eq!(r.urb_done(u).status, Err(Errno::EPROTO));
}

/// contract D25
#[test]
fn d25_client_halt_fails_urbs_and_leaves_requests() {
    let mut r = Rig::with_bulk();
    r.ret(ClientOp::EpSetHalt { arg: 1 }).unwrap();
    let rd = pending(r.read(1, 64));
    let u = r.submit(Urb::bulk(0x02, pattern(8)));
    assert_eq!(r.urb_done(u).status, Err(Errno::EPIPE));
    assert!(r.ret_of(rd).is_none(), "the client is not told");
    let mut host = Host::new(HostConfig::default());
    assert_eq!(host.get_status(&mut r.bus, 2, 0x02), Ok(1));
    host.clear_halt(&mut r.bus, 0x02).unwrap();
    let u = r.submit(Urb::bulk(0x02, pattern(8)));
    assert_eq!(r.urb_done(u).status, Ok(()));
    assert_eq!(r.ret_of(rd), Some(Ok(8)));
}

/// contract D26
#[test]
fn d26_unlink_keeps_progress_and_is_invisible_to_the_client() {
    let mut r = Rig::with_bulk();
    let u = r.submit(Urb::bulk(0x81, vec![0; 1024]));
    let w = pending(r.write(0, pattern(512), false));
    assert_eq!(r.ret_of(w), Some(Ok(512)));
    r.bus.unlink(u, Unlink::Async).unwrap();
    let c = r.urb_done(u);
    assert_eq!((c.status, c.actual_length), (Err(Errno::ECONNRESET), 512));
    // a pending read is not touched by an unlinked URB
    let rd = pending(r.read(1, 64));
    let u = r.submit(Urb::bulk(0x02, vec![]));
    let _ = u;
    let rd2 = r.ret_of(rd);
    assert_eq!(rd2, Some(Ok(0)), "a ZLP completes the read");
    let rd = pending(r.read(1, 512));
    let v = r.submit(Urb::bulk(0x02, pattern(1024)));
    assert_eq!(r.ret_of(rd), Some(Ok(512)));
    r.bus.unlink(v, Unlink::Kill).unwrap();
    let c = r.urb_done(v);
    assert_eq!(
        (c.status, c.actual_length),
        (Err(Errno::ENOENT), 512),
        "bytes moved stay moved"
    );
    // a control URB unlinked before its SETUP was presented is never seen
    let a = r.control(setup(0xc0, 1, 0, 0, 1), &[]);
    let b = r.control(setup(0xc0, 2, 0, 0, 1), &[]);
    r.bus.unlink(b, Unlink::Async).unwrap();
    assert_eq!(r.control_event(), setup(0xc0, 1, 0, 0, 1));
    pending(r.ep0_write(vec![1], false));
    assert_eq!(r.urb_done(a).status, Ok(()));
    assert!(r.try_fetch().is_none());
}

// ------------------------------------------------------------------------------------------
// 2.6 Bus events and client signals

/// contract D27
#[test]
fn d27_reset_ends_transfers_keeps_endpoints_and_halts() {
    let mut r = Rig::with_bulk();
    let rd = pending(r.read(1, 512));
    r.ret(ClientOp::EpSetHalt { arg: 0 }).unwrap();
    r.bus.port_reset();
    assert_eq!(r.ret_of(rd), Some(Err(Errno::ESHUTDOWN)));
    assert_eq!(r.events(), vec![USB_RAW_EVENT_RESET]);
    r.bus.advance(Duration::from_millis(50));
    assert_eq!(r.events(), vec![USB_RAW_EVENT_RESUME]);
    assert_eq!(r.bus.controller().address(), 0);
    // still enabled: no EP_ENABLE needed
    let rd = pending(r.read(1, 512));
    let u = r.submit(Urb::bulk(0x02, pattern(20)));
    assert_eq!(r.ret_of(rd), Some(Ok(20)));
    assert_eq!(r.urb_done(u).status, Ok(()));
    // the halt survived
    let u = r.submit(Urb::bulk(0x81, vec![0; 8]));
    assert_eq!(r.urb_done(u).status, Err(Errno::EPIPE));
}

/// contract D28: two resets at LS/FS/HS, one at SS; SET_ADDRESS is invisible.
#[test]
fn d28_resets_per_enumeration() {
    use USB_RAW_EVENT_CONNECT as CONNECT;
    use USB_RAW_EVENT_CONTROL as CONTROL;
    use USB_RAW_EVENT_RESET as RESET;
    use USB_RAW_EVENT_RESUME as RESUME;
    for (personality, speed) in [
        (Personality::dummy(), USB_SPEED_HIGH),
        (Personality::dummy(), USB_SPEED_FULL),
        (Personality::dummy_super_speed(), USB_SPEED_SUPER),
    ] {
        let mut bus = Bus::with_personality(personality);
        let script = DeviceScript::vendor_loopback(speed);
        let mut port = Stepped::new(&mut bus, ScriptedDevice::new(script));
        let mut host = Host::new(HostConfig::default());
        host.enumerate(&mut port).unwrap();
        let types = port.device.event_types();
        let ss = speed == USB_SPEED_SUPER;
        let want: &[u32] = if ss {
            &[CONNECT, RESET, RESUME, CONTROL, CONTROL]
        } else {
            &[CONNECT, RESET, RESUME, CONTROL, RESET, RESUME, CONTROL]
        };
        assert_eq!(&types[..want.len()], want, "speed {speed}");
        let resets = types.iter().filter(|&&t| t == RESET).count();
        assert_eq!(resets, if ss { 1 } else { 2 }, "speed {speed}");
        let setups = port.device.setups();
        assert!(
            setups.iter().all(|s| s.request != 5),
            "SET_ADDRESS is the controller's"
        );
        let first = setups[0];
        assert_eq!((first.request, first.value), (6, 0x0100));
        assert_eq!(first.length, if ss { 8 } else { 64 });
        if ss {
            assert_eq!(
                setups[1].request, 0x31,
                "SET_ISOCH_DELAY reaches the client"
            );
        }
    }
}

/// contract D29
#[test]
fn d29_suspend_and_resume() {
    let mut r = Rig::with_bulk();
    let rd = pending(r.read(1, 64));
    r.bus.port_suspend().unwrap();
    assert_eq!(r.events(), vec![USB_RAW_EVENT_SUSPEND]);
    r.bus.port_resume().unwrap();
    r.bus.advance(Duration::from_millis(10));
    assert!(r.events().is_empty(), "resume signalling lasts 20 ms");
    r.bus.advance(Duration::from_millis(10));
    assert_eq!(r.events(), vec![USB_RAW_EVENT_RESUME]);
    assert!(r.ret_of(rd).is_none(), "requests stay queued");
    let u = r.submit(Urb::bulk(0x02, pattern(5)));
    assert_eq!(r.ret_of(rd), Some(Ok(5)));
    assert_eq!(r.urb_done(u).status, Ok(()));
}

/// contract D30
#[test]
fn d30_power_off_and_close_disconnect() {
    let mut r = Rig::with_bulk();
    let rd = pending(r.read(1, 64));
    r.bus.port_power(false);
    assert_eq!(r.ret_of(rd), Some(Err(Errno::ESHUTDOWN)));
    assert_eq!(r.events(), vec![USB_RAW_EVENT_DISCONNECT]);
    assert!(!r.bus.port_status().connected);
    r.bus.port_power(true);
    assert!(r.bus.port_status().connected);
    // close: the pull-up goes; the host sees the device gone and its URBs fail
    let mut r = Rig::with_bulk();
    let u = r.submit(Urb::bulk(0x02, pattern(8)));
    let rd = pending(r.read(1, 4));
    assert_eq!(r.ret_of(rd), Some(Err(Errno::EOVERFLOW)));
    r.urb_done(u);
    let u = r.submit(Urb::bulk(0x81, vec![0; 8]));
    r.bus.close();
    assert!(!r.bus.port_status().connected);
    assert_eq!(r.urb_done(u).status, Err(Errno::EPROTO));
}

/// contract D31
#[test]
fn d31_signal_dequeues_unless_completed() {
    let mut r = Rig::with_bulk();
    let rd = pending(r.read(1, 1024));
    let u = r.submit(Urb::bulk(0x02, pattern(512)));
    assert_eq!(r.urb_done(u).status, Ok(()));
    r.bus.cancel(rd);
    assert_eq!(
        r.ret_of(rd),
        Some(Err(Errno::EINTR)),
        "512 bytes received are lost"
    );
    // a FIFO completion is final
    let w = pending(r.write(0, pattern(8), false));
    r.bus.cancel(w);
    assert_eq!(r.ret_of(w), Some(Ok(8)));
    // a larger write, partly sent, interrupted
    let w = pending(r.write(0, pattern(1024), false));
    let u = r.submit(Urb::bulk(0x81, vec![0; 512]));
    let u2 = r.submit(Urb::bulk(0x81, vec![0; 512]));
    let _ = u2;
    // the FIFO data (8 bytes) goes first
    assert_eq!(r.urb_done(u).actual_length, 8);
    r.bus.cancel(w);
    assert_eq!(r.ret_of(w), Some(Err(Errno::EINTR)));
}

// ------------------------------------------------------------------------------------------
// Host-level checks beyond single rules

/// A scripted device answers a vendor request through a handler while the host waits.
#[test]
fn vendor_request_through_a_handler() {
    let mut bus = Bus::new();
    let mut dev = ScriptedDevice::new(DeviceScript::vendor_loopback(USB_SPEED_HIGH));
    dev.handler = Some(Box::new(|req| {
        if req.request == 0x42 {
            Reply::Data(vec![1, 2, 3])
        } else {
            Reply::Stall
        }
    }));
    let mut port = Stepped::new(&mut bus, dev);
    let mut host = Host::new(HostConfig::default());
    host.enumerate(&mut port).unwrap();
    assert_eq!(
        host.control_in(&mut port, 0x40, 0x42, 0, 0, 16),
        Ok(vec![1, 2, 3])
    );
    assert_eq!(
        host.control_in(&mut port, 0x40, 0x43, 0, 0, 16),
        Err(Errno::EPIPE)
    );
}
