//! One test per contract rule the controller implements (contract §2), named after the rule.
//! The gadget side is driven through the [`Udc`] trait as the engine would; SETUP verdicts are
//! given by the test. Full-stack versions (engine + client ioctls + host) are in the loopback
//! crate.

extern crate std;

use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use rawgadget_engine::{BusEvent, Completion, EpId, Request, RequestId, Udc};
use rawgadget_uapi::{Errno, Speed};

use super::*;
use crate::personality::{Personality, SsEp0Maxpacket};
use crate::urb::{Unlink, Urb, UrbCompletion, UrbFlags, UrbId};

// ------------------------------------------------------------------------------------------
// Harness

/// A controller plus a scripted gadget driver: events are collected, SETUPs answered with
/// `verdict`.
struct H {
    c: Controller,
    now: Instant,
    events: Vec<GadgetEvent>,
    verdict: Result<(), Errno>,
    next_req: u64,
}

const BULK_IN_512: [u8; 9] = [9, 5, 0x81, 2, 0x00, 0x02, 0, 0, 0]; // handle 0, ep1in-bulk
const BULK_OUT_512: [u8; 9] = [9, 5, 0x02, 2, 0x00, 0x02, 0, 0, 0]; // handle 1, ep2out-bulk
const INT_IN_64: [u8; 9] = [9, 5, 0x85, 3, 64, 0, 0, 1, 0]; // handle 2, ep5in-int
const BULK_IN6_512: [u8; 9] = [9, 5, 0x86, 2, 0x00, 0x02, 0, 0, 0]; // handle 3, ep6in-bulk

fn setup(request_type: u8, request: u8, value: u16, index: u16, length: u16) -> [u8; 8] {
    let (v, i, l) = (
        value.to_le_bytes(),
        index.to_le_bytes(),
        length.to_le_bytes(),
    );
    [request_type, request, v[0], v[1], i[0], i[1], l[0], l[1]]
}

fn get_descriptor(length: u16) -> [u8; 8] {
    setup(0x80, 6, 0x0100, 0, length)
}

impl H {
    fn with(personality: Personality, speed: Speed) -> H {
        let mut h = H {
            c: Controller::new(personality, 0),
            now: Instant::ZERO,
            events: Vec::new(),
            verdict: Ok(()),
            next_req: 1,
        };
        h.c.bind(b"dummy_udc", b"dummy_udc.0", speed).unwrap();
        h
    }
    /// Bound at `speed` and past the first reset, events cleared.
    fn enabled(speed: Speed) -> H {
        let p = if speed == Speed::Super {
            Personality::dummy_super_speed()
        } else {
            Personality::dummy()
        };
        let mut h = H::with(p, speed);
        h.reset();
        h.events.clear();
        h
    }
    fn hs() -> H {
        H::enabled(Speed::High)
    }
    /// A full port reset: starts, waits 50 ms, ends.
    fn reset(&mut self) {
        self.c.port_reset(self.now);
        self.drain();
        self.advance(Duration::from_millis(50));
    }
    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.c.handle_timeout(self.now);
        self.drain();
    }
    /// Collects gadget events, answering SETUPs with `verdict`.
    fn drain(&mut self) {
        while let Some(ev) = self.c.poll_gadget_event() {
            let is_setup = matches!(ev, GadgetEvent::Setup(_));
            self.events.push(ev);
            if is_setup {
                self.c.handle_setup_verdict(self.verdict);
            }
        }
        self.c.assert_invariants();
    }
    fn take_events(&mut self) -> Vec<GadgetEvent> {
        self.drain();
        core::mem::take(&mut self.events)
    }
    fn setups(&mut self) -> Vec<[u8; 8]> {
        self.take_events()
            .into_iter()
            .filter_map(|e| match e {
                GadgetEvent::Setup(s) => Some(s),
                _ => None,
            })
            .collect()
    }
    fn completions(&mut self) -> Vec<Completion> {
        self.take_events()
            .into_iter()
            .filter_map(|e| match e {
                GadgetEvent::Completion(c) => Some(c),
                _ => None,
            })
            .collect()
    }
    fn bus_events(&mut self) -> Vec<BusEvent> {
        self.take_events()
            .into_iter()
            .filter_map(|e| match e {
                GadgetEvent::Bus(b) => Some(b),
                _ => None,
            })
            .collect()
    }
    fn enable(&mut self, handle: u16, desc: [u8; 9]) {
        self.c.ep_enable(handle, &desc).unwrap();
    }
    fn request(&mut self, buf: Vec<u8>, zero: bool) -> Request {
        let id = RequestId(self.next_req);
        self.next_req += 1;
        Request {
            id,
            length: buf.len() as u32,
            buf,
            zero,
        }
    }
    fn queue(&mut self, ep: EpId, buf: Vec<u8>, zero: bool) -> RequestId {
        let r = self.request(buf, zero);
        let id = r.id;
        self.c.queue(ep, r).map_err(|(e, _)| e).unwrap();
        self.drain();
        id
    }
    fn submit(&mut self, urb: Urb) -> UrbId {
        let id = self.c.submit_urb(self.now, urb);
        self.drain();
        id
    }
    fn done(&mut self) -> Vec<UrbCompletion> {
        self.drain();
        let mut v = Vec::new();
        while let Some(u) = self.c.poll_urb_completion() {
            v.push(u);
        }
        v
    }
    fn done_one(&mut self) -> UrbCompletion {
        let mut d = self.done();
        assert_eq!(d.len(), 1, "expected exactly one URB given back: {d:?}");
        d.remove(0)
    }
    /// A control URB through the controller only (no gadget involvement expected).
    fn control(&mut self, s: [u8; 8], data: &[u8]) -> UrbCompletion {
        self.submit(Urb::control(s, data));
        self.done_one()
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn bulk_out_zlp(endpoint: u8, buffer: Vec<u8>) -> Urb {
    let mut u = Urb::bulk(endpoint, buffer);
    u.flags = UrbFlags {
        zero_packet: true,
        short_not_ok: false,
    };
    u
}

// ------------------------------------------------------------------------------------------
// 2.1 Endpoints, speed, enabling

/// contract D1: 24 endpoints in dummy's order with its caps and limits; the binding reports
/// them; they match the engine's mock list.
#[test]
fn d1_endpoint_list() {
    let mut c = Controller::new(Personality::dummy(), 0);
    let b = c.bind(b"dummy_udc", b"dummy_udc.0", Speed::High).unwrap();
    assert_eq!(b.endpoints.len(), 24);
    assert_eq!(b.endpoints, rawgadget_engine::mock::dummy_endpoints());
    let names: Vec<&str> = b.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(&names[..3], &["ep1in-bulk", "ep2out-bulk", "ep5in-int"]);
    assert_eq!(names[11], "ep-aout");
    assert_eq!(names[23], "ep-mout");
    for e in &b.endpoints {
        assert_eq!((e.maxpacket_limit, e.max_streams), (65535, 16));
        assert!(!e.caps.type_iso() && !e.caps.type_control());
    }
    assert_eq!(b.max_speed, Speed::High);
}

/// contract D2: the driver name is `dummy_udc`, device names `dummy_udc.N`; anything else,
/// or a second bind, is EBUSY.
#[test]
fn d2_names_and_busy() {
    let mut c = Controller::new(Personality::dummy(), 3);
    assert_eq!(c.device_name(), "dummy_udc.3");
    let e = |r: Result<rawgadget_engine::Binding, Errno>| r.err();
    assert_eq!(
        e(c.bind(b"dummy_udc", b"dummy_udc.0", Speed::High)),
        Some(Errno::EBUSY)
    );
    assert_eq!(
        e(c.bind(b"dummy_hcd", b"dummy_udc.3", Speed::High)),
        Some(Errno::EBUSY)
    );
    assert!(c.bind(b"dummy_udc", b"dummy_udc.3", Speed::High).is_ok());
    assert_eq!(
        e(c.bind(b"dummy_udc", b"dummy_udc.3", Speed::High)),
        Some(Errno::EBUSY)
    );
    c.unbind();
    assert!(
        c.bind(b"dummy_udc", b"dummy_udc.3", Speed::High).is_ok(),
        "free again after unbind"
    );
}

/// contract D3: negotiated speed = min(driver speed, personality max); SUPER only when the
/// personality offers it.
#[test]
fn d3_speed_negotiation() {
    let rows = [
        (Personality::dummy(), Speed::Low, Speed::Low),
        (Personality::dummy(), Speed::Full, Speed::Full),
        (Personality::dummy(), Speed::High, Speed::High),
        (Personality::dummy(), Speed::Super, Speed::High),
        (Personality::dummy(), Speed::Unknown, Speed::High),
        (Personality::dummy_super_speed(), Speed::Super, Speed::Super),
        (Personality::dummy_super_speed(), Speed::High, Speed::High),
        (
            Personality::dummy_super_speed(),
            Speed::Unknown,
            Speed::Super,
        ),
    ];
    for (p, asked, want) in rows {
        let mut c = Controller::new(p, 0);
        c.bind(b"dummy_udc", b"dummy_udc.0", asked).unwrap();
        assert_eq!(c.speed(), want, "asked {asked:?}");
        c.port_reset(Instant::ZERO);
        c.handle_timeout(Instant::from_millis(50));
        assert_eq!(c.port_status().speed, Some(want));
    }
}

/// contract D4: ep0 maxpacket 64 at FS/HS, 8 at LS after the reset, 9 at SS; at SS an IN
/// reply that is a multiple of 9 and shorter than wLength leaves the URB pending unless ZERO.
#[test]
fn d4_ep0_maxpacket_and_ss_quirk() {
    for (speed, want) in [
        (Speed::Full, 64),
        (Speed::High, 64),
        (Speed::Low, 8),
        (Speed::Super, 9),
    ] {
        assert_eq!(H::enabled(speed).c.ep0_maxpacket(), want, "{speed:?}");
    }
    let mut p = Personality::dummy_super_speed();
    p.ss_ep0_maxpacket = SsEp0Maxpacket::Real512;
    let mut c = Controller::new(p, 0);
    c.bind(b"dummy_udc", b"dummy_udc.0", Speed::Super).unwrap();
    assert_eq!(c.ep0_maxpacket(), 512);

    // an 18-byte string descriptor answering a 255-byte read
    for (zero, completes) in [(false, false), (true, true)] {
        let mut h = H::enabled(Speed::Super);
        h.submit(Urb::control(setup(0x80, 6, 0x0301, 0x409, 255), &[]));
        assert_eq!(h.setups().len(), 1);
        h.queue(EpId::Ep0, pattern(18), zero);
        let d = h.done();
        assert_eq!(d.len(), usize::from(completes), "zero={zero}");
        if completes {
            assert_eq!((d[0].status, d[0].actual_length), (Ok(()), 18));
        }
    }
    // the same reply at HS is a short packet
    let mut h = H::hs();
    h.submit(Urb::control(setup(0x80, 6, 0x0301, 0x409, 255), &[]));
    h.queue(EpId::Ep0, pattern(18), false);
    assert_eq!(h.done_one().actual_length, 18);
}

/// contract D6: ESHUTDOWN before the port is enabled and during a reset; name and speed
/// checks; success clears halt and wedge.
#[test]
fn d6_enable_checks() {
    // before the first reset, and during one
    let mut h = H::with(Personality::dummy(), Speed::High);
    assert_eq!(h.c.ep_enable(0, &BULK_IN_512), Err(Errno::ESHUTDOWN));
    h.c.port_reset(h.now);
    assert_eq!(h.c.ep_enable(0, &BULK_IN_512), Err(Errno::ESHUTDOWN));
    // descriptor checks come first
    let mut bad_type = BULK_IN_512;
    bad_type[1] = 4;
    assert_eq!(h.c.ep_enable(0, &bad_type), Err(Errno::EINVAL));

    let d = |addr: u8, attr: u8, maxp: u16| {
        let m = maxp.to_le_bytes();
        [9, 5, addr, attr, m[0], m[1], 0, 0, 1]
    };
    // (speed, handle, descriptor, expected)
    type Row = (Speed, u16, [u8; 9], Result<(), Errno>);
    let rows: &[Row] = &[
        (Speed::High, 0, d(0x81, 2, 512), Ok(())),
        (Speed::High, 0, d(0x81, 2, 64), Err(Errno::EINVAL)), // bulk must be 512 at HS
        (Speed::Super, 0, d(0x81, 2, 1024), Ok(())),
        (Speed::Super, 0, d(0x81, 2, 512), Err(Errno::EINVAL)),
        (Speed::Full, 0, d(0x81, 2, 32), Ok(())),
        (Speed::Full, 0, d(0x81, 2, 48), Err(Errno::EINVAL)),
        (Speed::Low, 0, d(0x81, 2, 8), Err(Errno::EINVAL)), // never bulk at LS
        (Speed::High, 2, d(0x85, 2, 512), Err(Errno::EINVAL)), // bulk on an -int name
        (Speed::High, 0, d(0x81, 3, 1024), Ok(())),         // int on a -bulk name
        (Speed::High, 0, d(0x81, 3, 1025), Err(Errno::EINVAL)),
        (Speed::Full, 2, d(0x85, 3, 64), Ok(())),
        (Speed::Full, 2, d(0x85, 3, 65), Err(Errno::EINVAL)),
        (Speed::Low, 2, d(0x85, 3, 8), Ok(())),
        (Speed::Low, 2, d(0x85, 3, 9), Err(Errno::EINVAL)),
        // iso passes dummy_enable on a suffix-less name; D5 never lets raw gadget get here
        (Speed::High, 12, d(0x83, 1, 512), Ok(())),
        (Speed::High, 3, d(0x86, 1, 512), Err(Errno::EINVAL)), // iso on a -bulk name
        (Speed::High, 0, d(0x81, 0, 64), Err(Errno::EINVAL)),  // control
    ];
    for (speed, handle, desc, want) in rows {
        let mut h = H::enabled(*speed);
        let got = h.c.ep_enable(*handle, desc);
        assert_eq!(got, *want, "{speed:?} handle {handle} {desc:?}");
    }
    // a successful enable clears halt and wedge; enabling twice is EINVAL
    let mut h = H::hs();
    h.enable(0, BULK_IN_512);
    h.c.set_wedge(0).unwrap();
    assert_eq!(h.c.halt_state(EpId::Ep(0)), Some((true, true)));
    assert_eq!(h.c.ep_enable(0, &BULK_IN_512), Err(Errno::EINVAL));
    h.c.ep_disable(0).unwrap();
    h.enable(0, BULK_IN_512);
    assert_eq!(h.c.halt_state(EpId::Ep(0)), Some((false, false)));
}

/// contract D7: queuing any request, ep0 included, is ESHUTDOWN while the port is not
/// enabled.
#[test]
fn d7_queue_before_port_enabled_is_eshutdown() {
    let mut h = H::with(Personality::dummy(), Speed::High);
    let r = h.request(vec![0; 8], false);
    assert_eq!(
        h.c.queue(EpId::Ep0, r).err().map(|e| e.0),
        Some(Errno::ESHUTDOWN)
    );
    // enabled endpoint, then a reset disables the port
    let mut h = H::hs();
    h.enable(1, BULK_OUT_512);
    h.c.port_reset(h.now);
    let r = h.request(vec![0; 8], false);
    let (e, back) = h.c.queue(EpId::Ep(1), r).unwrap_err();
    assert_eq!(
        (e, back.buf.len()),
        (Errno::ESHUTDOWN, 8),
        "the request comes back untouched"
    );
    // a disabled endpoint is EINVAL, whatever the port
    let r = h.request(vec![0; 8], false);
    assert_eq!(
        h.c.queue(EpId::Ep(5), r).err().map(|e| e.0),
        Some(Errno::EINVAL)
    );
}

// ------------------------------------------------------------------------------------------
// 2.2 Packet-level matching

/// contract D8: one request spans several URBs and one URB several requests; the
/// completions are independent.
#[test]
fn d8_n_to_m_matching() {
    let mut h = H::hs();
    h.enable(0, BULK_IN_512);
    h.enable(1, BULK_OUT_512);
    // one 1000-byte IN request read by two 512-byte URBs
    let data = pattern(1000);
    let req = h.queue(EpId::Ep(0), data.clone(), false);
    h.submit(Urb::bulk(0x81, vec![0; 512]));
    let u1 = h.done_one();
    assert_eq!((u1.status, u1.data()), (Ok(()), &data[..512]));
    assert!(h.completions().is_empty(), "the request is only half sent");
    h.submit(Urb::bulk(0x81, vec![0; 512]));
    let u2 = h.done_one();
    assert_eq!((u2.status, u2.data()), (Ok(()), &data[512..]));
    let c = h.completions();
    assert_eq!((c[0].id, c[0].status, c[0].actual), (req, Ok(()), 1000));

    // one 1024-byte OUT URB filling two 512-byte requests
    let r1 = h.queue(EpId::Ep(1), vec![0; 512], false);
    let r2 = h.queue(EpId::Ep(1), vec![0; 512], false);
    let data = pattern(1024);
    h.submit(Urb::bulk(0x02, data.clone()));
    assert_eq!(h.done_one().actual_length, 1024);
    let c = h.completions();
    assert_eq!(c.len(), 2);
    assert_eq!((c[0].id, &c[0].buf[..]), (r1, &data[..512]));
    assert_eq!((c[1].id, &c[1].buf[..]), (r2, &data[512..]));
}

/// contract D9: with no request queued the URB waits, however long; a request then moves it.
#[test]
fn d9_no_request_no_progress() {
    let mut h = H::hs();
    h.enable(1, BULK_OUT_512);
    let u = h.submit(Urb::bulk(0x02, pattern(100)));
    h.advance(Duration::from_secs(60));
    assert!(h.done().is_empty());
    assert_eq!(h.c.urb_progress(u), Some(0));
    h.queue(EpId::Ep(1), vec![0; 512], false);
    let d = h.done_one();
    assert_eq!((d.id, d.status, d.actual_length), (u, Ok(()), 100));
}

/// contract D10: a short IN URB gets EOVERFLOW when the request had more (the request
/// reports the bytes taken); a short OUT request gets EOVERFLOW when the host had more.
#[test]
fn d10_short_packet_results() {
    let mut h = H::hs();
    h.enable(0, BULK_IN_512);
    h.enable(1, BULK_OUT_512);
    // EP_WRITE of 1024 read by a 421-byte URB: 421 taken, URB EOVERFLOW
    h.queue(EpId::Ep(0), pattern(1024), false);
    h.submit(Urb::bulk(0x81, vec![0; 421]));
    let u = h.done_one();
    assert_eq!((u.status, u.actual_length), (Err(Errno::EOVERFLOW), 421));
    let c = h.completions();
    assert_eq!((c[0].status, c[0].actual), (Ok(()), 421));
    // IN request shorter than the URB: both fine
    h.queue(EpId::Ep(0), pattern(10), false);
    h.submit(Urb::bulk(0x81, vec![0; 100]));
    assert_eq!(h.done_one().status, Ok(()));
    assert_eq!(h.completions()[0].actual, 10);
    // OUT: 100 bytes into a 10-byte request: request EOVERFLOW, URB 0 with 10 consumed
    h.queue(EpId::Ep(1), vec![0; 10], false);
    h.submit(Urb::bulk(0x02, pattern(100)));
    let u = h.done_one();
    assert_eq!((u.status, u.actual_length), (Ok(()), 10));
    let c = h.completions();
    assert_eq!((c[0].status, c[0].actual), (Err(Errno::EOVERFLOW), 10));
}

/// contract D11: req.zero on IN sends a ZLP (to the next URB if this one filled);
/// URB_ZERO_PACKET on OUT ends the head request; the opposite combinations are ignored.
#[test]
fn d11_zero_length_packets() {
    let mut h = H::hs();
    h.enable(0, BULK_IN_512);
    h.enable(1, BULK_OUT_512);
    // IN req 512 + zero, URB 1024: the ZLP ends the URB at 512
    h.queue(EpId::Ep(0), pattern(512), true);
    h.submit(Urb::bulk(0x81, vec![0; 1024]));
    assert_eq!(h.done_one().actual_length, 512);
    assert_eq!(h.completions().len(), 1);
    // IN req 512 + zero, URB 512: the URB fills; the ZLP goes to the next URB
    h.queue(EpId::Ep(0), pattern(512), true);
    h.submit(Urb::bulk(0x81, vec![0; 512]));
    assert_eq!(h.done_one().actual_length, 512);
    assert!(h.completions().is_empty(), "the ZLP is still owed");
    h.submit(Urb::bulk(0x81, vec![0; 512]));
    let z = h.done_one();
    assert_eq!((z.status, z.actual_length), (Ok(()), 0));
    assert_eq!(h.completions()[0].actual, 512);
    // URB_ZERO_PACKET on IN is ignored: the next URB gets the next request's data
    let mut u = Urb::bulk(0x81, vec![0; 512]);
    u.flags.zero_packet = true;
    h.queue(EpId::Ep(0), pattern(512), false);
    h.submit(u);
    assert_eq!(h.done_one().actual_length, 512);
    // OUT URB 512 + ZERO_PACKET into a 1024 request: the request ends at 512
    h.queue(EpId::Ep(1), vec![0; 1024], false);
    h.submit(bulk_out_zlp(0x02, pattern(512)));
    assert_eq!(h.done_one().status, Ok(()));
    let c = h.completions();
    assert_eq!((c[0].status, c[0].actual), (Ok(()), 512));
    // OUT URB 512 + ZERO_PACKET, request of exactly 512: the next request gets 0 bytes
    let a = h.queue(EpId::Ep(1), vec![0; 512], false);
    let b = h.queue(EpId::Ep(1), vec![0; 100], false);
    h.submit(bulk_out_zlp(0x02, pattern(512)));
    assert_eq!(h.done_one().actual_length, 512);
    let c = h.completions();
    assert_eq!((c[0].id, c[0].actual), (a, 512));
    assert_eq!((c[1].id, c[1].status, c[1].actual), (b, Ok(()), 0));
    // req.zero on OUT is ignored
    h.queue(EpId::Ep(1), vec![0; 512], true);
    h.submit(Urb::bulk(0x02, pattern(512)));
    assert_eq!(h.completions()[0].actual, 512);
    assert_eq!(h.done_one().status, Ok(()));
}

/// contract D12: interrupt endpoints move data as soon as both sides are ready; bInterval is
/// ignored.
#[test]
fn d12_interrupt_like_bulk() {
    let mut h = H::hs();
    h.enable(2, INT_IN_64);
    for n in [8usize, 64, 3] {
        h.queue(EpId::Ep(2), pattern(n), false);
        h.submit(Urb::interrupt(0x85, vec![0; 64]));
        let u = h.done_one();
        assert_eq!(
            (u.status, u.data()),
            (Ok(()), &pattern(n)[..]),
            "{n} bytes at once"
        );
    }
}

/// contract D13: a small IN request completes at once and its data waits in the one FIFO;
/// while busy, small writes elsewhere block; SET_HALT is EAGAIN; a reset drops the data
/// silently.
#[test]
fn d13_in_fifo_emulation() {
    let mut h = H::hs();
    h.enable(0, BULK_IN_512);
    h.enable(3, BULK_IN6_512);
    let r = h.queue(EpId::Ep(0), pattern(64), false);
    let c = h.completions();
    assert_eq!(
        (c.len(), c[0].id, c[0].status, c[0].actual),
        (1, r, Ok(()), 64),
        "completes before any URB"
    );
    assert!(h.c.fifo_busy());
    assert_eq!(h.c.set_halt(EpId::Ep(0), true), Err(Errno::EAGAIN));
    // the FIFO is busy: a small write on another endpoint blocks
    h.queue(EpId::Ep(3), pattern(10), false);
    assert!(h.completions().is_empty());
    // a second small write on the same endpoint queues behind the FIFO data
    h.queue(EpId::Ep(0), pattern(5), false);
    assert!(h.completions().is_empty());
    // the host reads the FIFO data; the FIFO's own completion is invisible
    h.submit(Urb::bulk(0x81, vec![0; 512]));
    assert_eq!(h.done_one().data(), &pattern(64)[..]);
    assert!(h.completions().is_empty());
    assert!(!h.c.fifo_busy());
    h.submit(Urb::bulk(0x81, vec![0; 512]));
    assert_eq!(h.done_one().data(), &pattern(5)[..]);
    assert_eq!(h.completions()[0].actual, 5);
    // 65 bytes never use the FIFO
    let mut h = H::hs();
    h.enable(0, BULK_IN_512);
    h.queue(EpId::Ep(0), pattern(65), false);
    assert!(h.completions().is_empty() && !h.c.fifo_busy());
    // a reset discards FIFO data: no completion for it, FIFO free again
    let mut h = H::hs();
    h.enable(0, BULK_IN_512);
    h.queue(EpId::Ep(0), pattern(3), false);
    h.take_events();
    h.reset();
    assert_eq!(h.bus_events(), vec![BusEvent::Reset, BusEvent::Resume]);
    assert!(!h.c.fifo_busy());
    h.submit(Urb::bulk(0x81, vec![0; 512]));
    assert!(h.done().is_empty(), "the FIFO data is gone");
}

// ------------------------------------------------------------------------------------------
// 2.3 ep0

/// contract D14: only the oldest control URB's SETUP is presented; the next one after it
/// completes or is unlinked.
#[test]
fn d14_one_setup_at_a_time() {
    let mut h = H::hs();
    let a = h.submit(Urb::control(get_descriptor(18), &[]));
    let b = h.submit(Urb::control(setup(0x80, 6, 0x0200, 0, 9), &[]));
    let c = h.submit(Urb::control(setup(0x80, 6, 0x0300, 0, 4), &[]));
    assert_eq!(h.setups(), vec![get_descriptor(18)]);
    h.queue(EpId::Ep0, pattern(18), false);
    assert_eq!(h.done_one().id, a);
    assert_eq!(h.setups(), vec![setup(0x80, 6, 0x0200, 0, 9)]);
    // unlinking the presented URB lets the next SETUP through
    h.c.unlink_urb(h.now, b, Unlink::Async).unwrap();
    let d = h.done_one();
    assert_eq!((d.id, d.status), (b, Err(Errno::ECONNRESET)));
    assert_eq!(h.setups(), vec![setup(0x80, 6, 0x0300, 0, 4)]);
    h.c.unlink_urb(h.now, c, Unlink::Kill).unwrap();
    assert_eq!(h.done_one().status, Err(Errno::ENOENT));
}

/// contract D15: a request still queued on ep0 when the next SETUP is presented completes
/// with EOVERFLOW first.
#[test]
fn d15_stale_ep0_request() {
    let mut h = H::hs();
    let a = h.submit(Urb::control(get_descriptor(18), &[]));
    assert_eq!(h.setups().len(), 1);
    h.c.unlink_urb(h.now, a, Unlink::Kill).unwrap();
    h.done_one();
    // the client answers late
    let late = h.queue(EpId::Ep0, pattern(18), false);
    h.submit(Urb::control(setup(0x80, 6, 0x0200, 0, 9), &[]));
    let ev = h.take_events();
    assert!(
        matches!(&ev[0], GadgetEvent::Completion(c) if c.id == late && c.status == Err(Errno::EOVERFLOW))
    );
    assert_eq!(ev[1], GadgetEvent::Setup(setup(0x80, 6, 0x0200, 0, 9)));
}

/// contract D16: when the gadget refuses a SETUP the URB is stalled with EPIPE and
/// `actual_length` 0.
#[test]
fn d16_refused_setup_is_stalled() {
    let mut h = H::hs();
    h.verdict = Err(Errno::EBUSY);
    h.submit(Urb::control(get_descriptor(18), &[]));
    let d = h.done_one();
    assert_eq!((d.status, d.actual_length), (Err(Errno::EPIPE), 0));
    // the scheduler is paused until the verdict: nothing moves before it
    let mut h = H::hs();
    h.c.submit_urb(h.now, Urb::control(get_descriptor(18), &[]));
    assert!(matches!(
        h.c.poll_gadget_event(),
        Some(GadgetEvent::Setup(_))
    ));
    assert!(h.c.poll_gadget_event().is_none());
    assert!(h.c.awaiting_setup().is_some());
    h.c.handle_setup_verdict(Ok(()));
    assert!(h.c.awaiting_setup().is_none());
}

/// contract D17: EP0_STALL fails the pending control URB with EPIPE; the next SETUP clears
/// the halt, so GET_STATUS(ep0) reads 0.
#[test]
fn d17_ep0_halt() {
    let mut h = H::hs();
    h.submit(Urb::control(get_descriptor(18), &[]));
    assert_eq!(h.setups().len(), 1);
    h.c.set_halt(EpId::Ep0, true).unwrap();
    assert_eq!(h.done_one().status, Err(Errno::EPIPE));
    h.c.set_halt(EpId::Ep0, true).unwrap();
    let s = h.control(setup(0x82, 0, 0, 0x80, 2), &[]);
    assert_eq!((s.status, s.data()), (Ok(()), &[0u8, 0][..]));
    assert_eq!(h.c.halt_state(EpId::Ep0), Some((false, false)));
}

/// contract D18: status stage shapes: IN completes on a short packet or when full, a
/// maxpacket-multiple short reply without ZERO leaves it pending; OUT completes when
/// consumed; no-data completes on the 0-length read, or EPIPE on a stall.
#[test]
fn d18_status_stage() {
    let mut h = H::hs();
    // IN filled exactly
    h.submit(Urb::control(get_descriptor(18), &[]));
    h.queue(EpId::Ep0, pattern(18), false);
    assert_eq!(h.done_one().actual_length, 18);
    h.take_events();
    // IN 64 bytes for a 255 read, no ZERO: the URB stays pending (host times out)
    let u = h.submit(Urb::control(setup(0x80, 6, 0x0200, 0, 255), &[]));
    h.queue(EpId::Ep0, pattern(64), false);
    assert_eq!(
        h.completions()[0].actual,
        64,
        "the client's EP0_WRITE completes"
    );
    h.advance(Duration::from_secs(5));
    assert!(h.done().is_empty());
    h.c.unlink_urb(h.now, u, Unlink::Kill).unwrap();
    let d = h.done_one();
    assert_eq!((d.status, d.actual_length), (Err(Errno::ENOENT), 64));
    // OUT with data: completes when EP0_READ consumed it
    h.submit(Urb::control(setup(0x40, 1, 0, 0, 5), &pattern(5)));
    assert_eq!(h.setups().len(), 1);
    assert!(h.done().is_empty());
    h.queue(EpId::Ep0, vec![0; 5], false);
    assert_eq!(h.done_one().actual_length, 5);
    assert_eq!(h.completions()[0].buf, pattern(5));
    // no data: completes exactly when the 0-length request is queued
    h.submit(Urb::control(setup(0x00, 9, 1, 0, 0), &[]));
    assert_eq!(h.setups().len(), 1);
    assert!(h.done().is_empty());
    h.queue(EpId::Ep0, vec![], false);
    assert_eq!(h.done_one().status, Ok(()));
    // no data, stalled
    h.submit(Urb::control(setup(0x00, 9, 1, 0, 0), &[]));
    h.c.set_halt(EpId::Ep0, true).unwrap();
    assert_eq!(h.done_one().status, Err(Errno::EPIPE));
}

// ------------------------------------------------------------------------------------------
// 2.4 Requests the controller answers

/// contract D19: SET_ADDRESS (0x00) is answered and stored; other request types reach the
/// gadget.
#[test]
fn d19_set_address() {
    let mut h = H::hs();
    let d = h.control(setup(0x00, 5, 7, 0, 0), &[]);
    assert_eq!(d.status, Ok(()));
    assert_eq!(h.c.address(), 7);
    assert!(h.setups().is_empty(), "never seen by the gadget");
    h.submit(Urb::control(setup(0x40, 5, 9, 0, 0), &[]));
    assert_eq!(h.setups(), vec![setup(0x40, 5, 9, 0, 0)]);
    assert_eq!(h.c.address(), 7);
}

/// contract D20: GET_STATUS for device, interface and endpoint; stall for an unknown
/// endpoint (direction counts); `actual_length = min(2, wLength)`.
#[test]
fn d20_get_status() {
    let mut h = H::hs();
    h.enable(0, BULK_IN_512);
    h.c.set_halt(EpId::Ep(0), true).unwrap();
    let st = |h: &mut H, rt: u8, index: u16, len: u16| h.control(setup(rt, 0, 0, index, len), &[]);
    assert_eq!(st(&mut h, 0x80, 0, 2).data(), &[0, 0]);
    assert_eq!(
        st(&mut h, 0x81, 42, 2).data(),
        &[0, 0],
        "any interface index"
    );
    assert_eq!(st(&mut h, 0x82, 0x81, 2).data(), &[1, 0], "halted");
    assert_eq!(
        st(&mut h, 0x82, 0x01, 2).status,
        Err(Errno::EPIPE),
        "OUT 1 is not enabled"
    );
    assert_eq!(st(&mut h, 0x82, 0x83, 2).status, Err(Errno::EPIPE));
    assert_eq!(st(&mut h, 0x82, 0x81, 1).data(), &[1]);
    let z = st(&mut h, 0x82, 0x83, 0);
    assert_eq!(
        (z.status, z.actual_length),
        (Ok(()), 0),
        "wLength 0 skips the lookup"
    );
    assert!(h.setups().is_empty());
    // other forms go to the gadget
    h.submit(Urb::control(setup(0xa0, 0, 0, 0, 4), &[]));
    assert_eq!(h.setups().len(), 1);
}

/// contract D21: device SET/CLEAR_FEATURE; U1/U2/LTM only at SS; HNP features cannot be
/// cleared; a reset clears the bits.
#[test]
fn d21_device_features() {
    let mut h = H::hs();
    let feat = |h: &mut H, req: u8, f: u16| h.control(setup(0x00, req, f, 0, 0), &[]).status;
    let status = |h: &mut H| h.control(setup(0x80, 0, 0, 0, 2), &[]).data()[0];
    assert_eq!(feat(&mut h, 3, 1), Ok(())); // REMOTE_WAKEUP
    assert_eq!(feat(&mut h, 3, 3), Ok(())); // B_HNP_ENABLE
    assert_eq!(status(&mut h), 0b1010);
    assert_eq!(feat(&mut h, 3, 2), Err(Errno::EPIPE)); // TEST_MODE
    assert_eq!(feat(&mut h, 3, 48), Err(Errno::EPIPE)); // U1 at HS
    assert_eq!(feat(&mut h, 1, 3), Err(Errno::EPIPE)); // clear HNP
    assert_eq!(feat(&mut h, 1, 1), Ok(()));
    assert_eq!(status(&mut h), 0b1000);
    h.reset();
    assert_eq!(status(&mut h), 0);
    let mut s = H::enabled(Speed::Super);
    assert_eq!(feat(&mut s, 3, 48), Ok(()));
    assert_eq!(feat(&mut s, 3, 50), Ok(()));
    assert_eq!(status(&mut s), 0b10100);
    assert_eq!(feat(&mut s, 1, 48), Ok(()));
    assert_eq!(status(&mut s), 0b10000);
    assert!(s.setups().is_empty() && h.setups().is_empty());
}

/// contract D22: endpoint SET_FEATURE halts (wValue unchecked; ep0 and unknown stall);
/// CLEAR_FEATURE clears unless wedged and succeeds either way, ep0 included.
#[test]
fn d22_endpoint_halt_features() {
    let mut h = H::hs();
    h.enable(1, BULK_OUT_512);
    let f = |h: &mut H, req: u8, value: u16, ep: u16| {
        h.control(setup(0x02, req, value, ep, 0), &[]).status
    };
    assert_eq!(f(&mut h, 3, 7, 0x02), Ok(()));
    assert_eq!(h.c.halt_state(EpId::Ep(1)), Some((true, false)));
    assert_eq!(f(&mut h, 3, 0, 0x00), Err(Errno::EPIPE));
    assert_eq!(f(&mut h, 3, 0, 0x82), Err(Errno::EPIPE));
    assert_eq!(f(&mut h, 1, 0, 0x02), Ok(()));
    assert_eq!(h.c.halt_state(EpId::Ep(1)), Some((false, false)));
    h.c.set_wedge(1).unwrap();
    assert_eq!(f(&mut h, 1, 0, 0x02), Ok(()));
    assert_eq!(
        h.c.halt_state(EpId::Ep(1)),
        Some((true, true)),
        "wedged: still halted"
    );
    assert_eq!(f(&mut h, 1, 0, 0x80), Ok(()), "CLEAR on ep0");
    assert_eq!(f(&mut h, 1, 0, 0x05), Err(Errno::EPIPE));
    assert!(h.setups().is_empty());
}

/// contract D23: everything else reaches the gadget: interface features, SET_CONFIGURATION,
/// SET_INTERFACE, SET_ISOCH_DELAY, SET_SEL, class and vendor requests.
#[test]
fn d23_everything_else_goes_to_the_gadget() {
    let forwarded = [
        setup(0x01, 3, 0, 0, 0),       // SET_FEATURE(interface)
        setup(0x01, 1, 0, 0, 0),       // CLEAR_FEATURE(interface)
        setup(0x00, 9, 1, 0, 0),       // SET_CONFIGURATION
        setup(0x01, 11, 1, 0, 0),      // SET_INTERFACE
        setup(0x00, 0x31, 40, 0, 0),   // SET_ISOCH_DELAY
        setup(0x00, 0x30, 0, 0, 6),    // SET_SEL
        setup(0x21, 0x0a, 0, 0, 0),    // HID SET_IDLE
        setup(0xc0, 0x33, 1, 2, 8),    // vendor IN
        setup(0x80, 6, 0x0100, 0, 18), // GET_DESCRIPTOR
    ];
    for s in forwarded {
        let mut h = H::hs();
        h.submit(Urb::control(s, &[0; 6]));
        assert_eq!(h.setups(), vec![s], "{s:x?}");
    }
}

// ------------------------------------------------------------------------------------------
// 2.5 Errors, halt, unlink

/// contract D24: EPROTO for URBs to endpoints that are not enabled (direction counts), for
/// every URB while suspended, and for pending URBs of a disabled endpoint (whose requests end
/// with ESHUTDOWN).
#[test]
fn d24_eproto() {
    let mut h = H::hs();
    h.enable(0, BULK_IN_512);
    assert_eq!(h.control_bulk(0x01), Err(Errno::EPROTO));
    assert_eq!(h.control_bulk(0x83), Err(Errno::EPROTO));
    // a URB half done when the gadget disables the endpoint
    h.enable(1, BULK_OUT_512);
    h.queue(EpId::Ep(1), vec![0; 512], false);
    let u = h.submit(Urb::bulk(0x02, pattern(1024)));
    assert!(h.done().is_empty(), "half consumed, waiting");
    assert_eq!(h.completions().len(), 1);
    h.c.ep_disable(1).unwrap();
    let d = h.done_one();
    assert_eq!(
        (d.id, d.status, d.actual_length),
        (u, Err(Errno::EPROTO), 512)
    );
    // a request half filled when the gadget disables the endpoint
    h.enable(1, BULK_OUT_512);
    let r = h.queue(EpId::Ep(1), vec![0; 1024], false);
    h.submit(Urb::bulk(0x02, pattern(512)));
    assert_eq!(h.done_one().status, Ok(()));
    h.c.ep_disable(1).unwrap();
    let c = h.completions();
    assert_eq!(
        (c[0].id, c[0].status, c[0].actual),
        (r, Err(Errno::ESHUTDOWN), 512)
    );
    // suspended: every URB, ep0 included
    h.c.port_suspend(h.now).unwrap();
    let d = h.control(get_descriptor(18), &[]);
    assert_eq!(d.status, Err(Errno::EPROTO));
    assert!(h.setups().is_empty());
}

impl H {
    fn control_bulk(&mut self, ep: u8) -> Result<(), Errno> {
        self.submit(Urb::bulk(ep, vec![0; 8]));
        self.done_one().status
    }
}

/// contract D25: a halted endpoint fails every URB with EPIPE, leaves the requests alone;
/// cleared by the host (not while wedged), by clear-halt, or by enable.
#[test]
fn d25_halt() {
    let mut h = H::hs();
    h.enable(1, BULK_OUT_512);
    h.queue(EpId::Ep(1), vec![0; 512], false);
    h.c.set_halt(EpId::Ep(1), true).unwrap();
    for _ in 0..2 {
        h.submit(Urb::bulk(0x02, pattern(10)));
        assert_eq!(h.done_one().status, Err(Errno::EPIPE));
    }
    assert_eq!(h.c.queued_requests(EpId::Ep(1)), 1, "requests untouched");
    assert!(h.completions().is_empty(), "the gadget is not told");
    let st = h.control(setup(0x82, 0, 0, 0x02, 2), &[]);
    assert_eq!(st.data(), &[1, 0]);
    h.control(setup(0x02, 1, 0, 0x02, 0), &[]);
    h.submit(Urb::bulk(0x02, pattern(10)));
    assert_eq!(h.done_one().status, Ok(()));
    // wedge: the host cannot clear, clear-halt can
    h.c.set_wedge(1).unwrap();
    h.control(setup(0x02, 1, 0, 0x02, 0), &[]);
    assert_eq!(h.control_bulk(0x02), Err(Errno::EPIPE));
    h.c.set_halt(EpId::Ep(1), false).unwrap();
    assert_eq!(h.c.halt_state(EpId::Ep(1)), Some((false, false)));
}

/// contract D26: an unlinked URB comes back with ECONNRESET/ENOENT and the length it
/// reached; requests are untouched; a control URB unlinked before presentation is never seen.
#[test]
fn d26_unlink_invisible_to_gadget() {
    let mut h = H::hs();
    h.enable(0, BULK_IN_512);
    // progress kept: 512 of a 1024 URB, then unlink
    let r = h.queue(EpId::Ep(0), pattern(512), false);
    let u = h.submit(Urb::bulk(0x81, vec![0; 1024]));
    assert_eq!(h.c.urb_progress(u), Some(512));
    assert_eq!(
        h.completions()[0].id,
        r,
        "the request completed: bytes moved stay moved"
    );
    h.c.unlink_urb(h.now, u, Unlink::Async).unwrap();
    let d = h.done_one();
    assert_eq!((d.status, d.actual_length), (Err(Errno::ECONNRESET), 512));
    assert_eq!(
        h.c.unlink_urb(h.now, u, Unlink::Async),
        Err(Errno(43)),
        "EIDRM once given back"
    );
    // requests untouched
    let mut h = H::hs();
    h.enable(1, BULK_OUT_512);
    let u = h.submit(Urb::bulk(0x02, pattern(10)));
    h.c.unlink_urb(h.now, u, Unlink::Kill).unwrap();
    assert_eq!(h.done_one().status, Err(Errno::ENOENT));
    h.queue(EpId::Ep(1), vec![0; 512], false);
    assert_eq!(h.c.queued_requests(EpId::Ep(1)), 1);
    // a queued control URB unlinked before presentation is never seen
    let mut h = H::hs();
    h.submit(Urb::control(get_descriptor(18), &[]));
    let hidden = h.submit(Urb::control(setup(0xc0, 1, 0, 0, 1), &[]));
    h.c.unlink_urb(h.now, hidden, Unlink::Async).unwrap();
    assert_eq!(h.done_one().id, hidden);
    h.queue(EpId::Ep0, pattern(18), false);
    h.done_one();
    assert_eq!(h.setups(), vec![get_descriptor(18)]);
    // unlinking twice while the SETUP is with the gadget: EBUSY
    let mut h = H::hs();
    let u = h.c.submit_urb(h.now, Urb::control(get_descriptor(18), &[]));
    let _ = h.c.poll_gadget_event();
    h.c.unlink_urb(h.now, u, Unlink::Async).unwrap();
    assert_eq!(h.c.unlink_urb(h.now, u, Unlink::Kill), Err(Errno::EBUSY));
    h.c.handle_setup_verdict(Ok(()));
    assert_eq!(h.done_one().status, Err(Errno::ECONNRESET));
}

// ------------------------------------------------------------------------------------------
// 2.6 Bus events and client signals

/// contract D27: a reset ends every request with ESHUTDOWN, then RESET; address 0, status
/// bits cleared; endpoints stay enabled with their halts; ESHUTDOWN during the 50 ms.
#[test]
fn d27_reset() {
    let mut h = H::hs();
    h.enable(1, BULK_OUT_512);
    h.control(setup(0x00, 5, 3, 0, 0), &[]);
    h.control(setup(0x00, 3, 1, 0, 0), &[]);
    h.submit(Urb::control(setup(0x40, 1, 0, 0, 0), &[]));
    let e0 = h.queue(EpId::Ep0, vec![0; 0], false);
    let _ = e0;
    h.done();
    h.c.set_wedge(1).unwrap();
    h.c.set_halt(EpId::Ep(1), false).unwrap();
    h.c.set_halt(EpId::Ep(1), true).unwrap();
    let r = h.queue(EpId::Ep(1), vec![0; 512], false);
    h.take_events();
    h.c.port_reset(h.now);
    let ev = h.take_events();
    assert!(
        matches!(&ev[0], GadgetEvent::Completion(c) if c.id == r && c.status == Err(Errno::ESHUTDOWN))
    );
    assert_eq!(ev[1], GadgetEvent::Bus(BusEvent::Reset));
    assert_eq!(ev.len(), 2);
    assert_eq!((h.c.address(), h.c.device_status()), (0, 0));
    assert!(
        h.c.enabled_descriptor(1).is_some(),
        "endpoints stay enabled"
    );
    assert_eq!(
        h.c.halt_state(EpId::Ep(1)),
        Some((true, false)),
        "halt survives"
    );
    // during the reset window
    let q = h.request(vec![0; 4], false);
    assert_eq!(
        h.c.queue(EpId::Ep(1), q).err().map(|e| e.0),
        Some(Errno::ESHUTDOWN)
    );
    assert_eq!(h.c.ep_enable(0, &BULK_IN_512), Err(Errno::ESHUTDOWN));
    assert_eq!(h.c.poll_timeout(), Some(h.now + Duration::from_millis(50)));
    h.advance(Duration::from_millis(49));
    assert!(!h.c.port_status().enabled);
    h.advance(Duration::from_millis(1));
    assert!(h.c.port_status().enabled);
    assert_eq!(
        h.bus_events(),
        vec![BusEvent::Resume],
        "dummy's link logic: active again"
    );
}

/// contract D29: suspend and resume are reported; requests stay queued; resume takes 20 ms.
#[test]
fn d29_suspend_resume() {
    let mut h = H::hs();
    h.enable(1, BULK_OUT_512);
    h.queue(EpId::Ep(1), vec![0; 512], false);
    h.c.port_suspend(h.now).unwrap();
    assert_eq!(h.bus_events(), vec![BusEvent::Suspend]);
    assert!(h.c.port_status().suspended);
    h.c.port_resume(h.now).unwrap();
    h.advance(Duration::from_millis(19));
    assert!(h.bus_events().is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.bus_events(), vec![BusEvent::Resume]);
    assert_eq!(h.c.queued_requests(EpId::Ep(1)), 1);
    h.submit(Urb::bulk(0x02, pattern(7)));
    assert_eq!(h.done_one().status, Ok(()));
    // SS: dummy's USB 3 root hub refuses port suspend
    let mut s = H::enabled(Speed::Super);
    assert_eq!(s.c.port_suspend(s.now), Err(Errno::EPIPE));
    assert!(s.bus_events().is_empty());
}

/// contract D30: power off nukes with ESHUTDOWN and reports DISCONNECT; unbind reports
/// SUSPEND (link logic) then DISCONNECT.
#[test]
fn d30_disconnect() {
    let mut h = H::hs();
    h.enable(1, BULK_OUT_512);
    let r = h.queue(EpId::Ep(1), vec![0; 512], false);
    h.c.port_power(h.now, false);
    let ev = h.take_events();
    assert!(
        matches!(&ev[0], GadgetEvent::Completion(c) if c.id == r && c.status == Err(Errno::ESHUTDOWN))
    );
    assert_eq!(ev[1], GadgetEvent::Bus(BusEvent::Disconnect));
    assert!(!h.c.port_status().connected);
    h.submit(Urb::bulk(0x02, pattern(3)));
    assert_eq!(h.done_one().status, Err(Errno::EPROTO));
    h.c.port_power(h.now, true);
    assert!(h.c.port_status().connected && h.c.port_status().connect_change);

    let mut h = H::hs();
    h.c.unbind();
    assert_eq!(
        h.bus_events(),
        vec![BusEvent::Suspend, BusEvent::Disconnect]
    );
    assert!(!h.c.port_status().connected);
}

/// contract D31: dequeuing a queued request ends it with ECONNRESET and the bytes it had
/// received; a completed one cannot be dequeued.
#[test]
fn d31_dequeue() {
    let mut h = H::hs();
    h.enable(1, BULK_OUT_512);
    let r = h.queue(EpId::Ep(1), vec![0; 1024], false);
    h.submit(Urb::bulk(0x02, pattern(512)));
    h.done_one();
    let c = h.c.dequeue(EpId::Ep(1), r).unwrap();
    assert_eq!((c.status, c.actual), (Err(Errno::ECONNRESET), 512));
    assert!(h.c.dequeue(EpId::Ep(1), r).is_none());
    // a FIFO completion is final: nothing left to dequeue
    h.enable(0, BULK_IN_512);
    let f = h.queue(EpId::Ep(0), pattern(4), false);
    assert!(h.c.dequeue(EpId::Ep(0), f).is_none());
}

/// The model swaps whole buffers instead of copying when one move covers both.
#[test]
fn whole_buffer_moves_without_copy() {
    let mut h = H::hs();
    h.enable(1, BULK_OUT_512);
    let data = pattern(4096);
    let ptr = data.as_ptr();
    h.queue(EpId::Ep(1), vec![0; 4096], false);
    h.submit(Urb::bulk(0x02, data));
    h.done_one();
    let c = h.completions();
    assert_eq!(c[0].buf.as_ptr(), ptr, "the gadget got the host's buffer");
    assert_eq!(c[0].buf, pattern(4096));
}

/// The scheduler walk's "already seen" set: ep0's two directions are one endpoint; every other
/// address, one with reserved bits included, is its own (contract D14: one URB per endpoint).
#[test]
fn d14_walk_keeps_one_seen_mark_per_endpoint_address() {
    let mut seen = SeenEndpoints::default();
    seen.insert(0x80);
    assert!(seen.contains(0x00), "ep0 OUT is ep0 IN's endpoint");
    for other in [0x01, 0x81, 0x10, 0x90, 0x7f, 0xff] {
        assert!(!seen.contains(other), "{other:#04x}");
    }
    seen.insert(0x81);
    assert!(seen.contains(0x81) && !seen.contains(0x01));
    seen.remove(0x00);
    assert!(!seen.contains(0x80) && seen.contains(0x81));
}
