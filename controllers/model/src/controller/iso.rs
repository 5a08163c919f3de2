//! Isochronous URBs on the iso-capable personality (contract I5, I6). There is no kernel
//! oracle for this (I8: dummy has no iso endpoints and usbip-vudc fails iso URBs with EXDEV),
//! so the rules are the contract's:
//!
//! - **Time is an input (I5).** An iso URB starts when it reaches the head of its endpoint's
//!   queue; packet `i` is served at start + i·P and the URB completes at start + N·P, whether
//!   or not the client has queued requests. P is 2^(bInterval−1) frames of 1 ms at full speed
//!   and microframes of 125 µs at high speed. Iso never NAKs.
//! - **Per packet (I6).** IN: the packet carries up to its `length` bytes of the head request,
//!   which completes with what was sent; with no request the packet is empty (actual 0, status
//!   0). OUT: the packet's data goes into the head request, which completes with that length
//!   (EOVERFLOW if it did not fit); with no request the data is dropped and the host still
//!   sees success.
//! - **Client grace ([`Personality::iso_grace`](crate::Personality::iso_grace), an amendment
//!   to I5).** Raw gadget lets a client have one request per endpoint in flight, so a client
//!   that streams needs one round trip per packet (contract P4), and one period (1 ms for
//!   usbtest's iso endpoints) is less than a round trip under emulation. With a non-zero
//!   grace, a slot that finds no request on a *streaming* endpoint (its previous slot took
//!   one) waits up to the grace for the client's next request; the schedule then goes on from
//!   the moment the slot was served. An idle endpoint (its previous slot was empty, or it has
//!   just been enabled) never waits, so a client that queues nothing still gets every URB
//!   back at start + N·P, and one that stops streaming delays one slot by at most the grace.
//!   A host without a bus clock of its own (vhci's frame number is always 0, I6) cannot tell
//!   a slot that waited from one on time. Zero grace is I5 as written.

use core::time::Duration;

use rawgadget_uapi::{Errno, Speed};

use super::{Endpoint, GadgetOut, UrbState};
use crate::time::Instant;
use crate::urb::UrbKind;

/// The service period of an iso endpoint enabled with `desc` at `speed` (contract I5).
pub(super) fn period(speed: Speed, desc: &[u8; 9]) -> Duration {
    let exponent = u32::from(desc[6].clamp(1, 16)) - 1;
    let unit = if speed >= Speed::High {
        Duration::from_micros(125)
    } else {
        Duration::from_millis(1)
    };
    unit * (1u32 << exponent)
}

/// When the head iso URB `urb` next needs the scheduler: the end of a slot's wait for the
/// client, its next packet slot, or its end.
pub(super) fn deadline(urb: &UrbState) -> Option<Instant> {
    urb.iso_wait_until.or(urb.iso_due)
}

/// Serves every packet slot of the head iso URB whose time has come; returns the URB's status
/// once it is complete (its last slot served and one more period passed).
pub(super) fn service(
    ep: &mut Endpoint,
    urb: &mut UrbState,
    out: &mut GadgetOut,
    now: Instant,
    period: Duration,
    grace: Duration,
) -> Option<Result<(), Errno>> {
    // contract I5: the URB starts when it reaches the head of its endpoint
    let mut due = *urb.iso_due.get_or_insert(now);
    let to_host = urb.is_in();
    let UrbKind::Isochronous { packets } = &mut urb.kind else {
        return Some(Err(Errno::EINVAL));
    };
    let n = packets.len() as u32;
    while due <= now {
        if urb.iso_next >= n {
            // start + N·P (plus any waits)
            return Some(Ok(()));
        }
        // the client grace (module doc): a streaming endpoint waits for its next request
        if ep.queue.is_empty() && ep.iso_streaming && !grace.is_zero() {
            let until = *urb.iso_wait_until.get_or_insert(due + grace);
            if now < until {
                return None;
            }
            tracing::debug!(ep = ?ep.id, "iso slot: no request within the grace");
        }
        // a slot that waited is served now, and the schedule slips by the wait
        let served_at = if urb.iso_wait_until.take().is_some() {
            now
        } else {
            due
        };
        let p = &mut packets[urb.iso_next as usize];
        urb.iso_next += 1;
        due = served_at + period;
        urb.iso_due = Some(due);
        let offset = p.offset as usize;
        // a packet outside the buffer (never from the USB/IP decoder, which checks) moves
        // nothing
        let Some(end) = offset
            .checked_add(p.length as usize)
            .filter(|&e| e <= urb.buffer.len())
        else {
            p.actual_length = 0;
            p.status = -Errno::EINVAL.raw();
            continue;
        };
        let took = !ep.queue.is_empty();
        ep.iso_streaming = took;
        if to_host {
            // contract I6, IN: up to `length` bytes of the head request, which completes
            let sent = match ep.queue.pop_front() {
                Some(mut req) => {
                    let n = (req.length - req.actual).min(p.length);
                    let (r, b) = (req.actual as usize, n as usize);
                    urb.buffer[offset..offset + b].copy_from_slice(&req.buf[r..r + b]);
                    req.actual += n;
                    out.giveback(ep.id, req, Ok(()));
                    n
                }
                None => 0,
            };
            p.actual_length = sent;
            p.status = 0;
            urb.actual = (urb.actual + sent).min(urb.length);
        } else {
            // contract I6, OUT: into the head request; dropped without one
            if let Some(mut req) = ep.queue.pop_front() {
                let room = req.length - req.actual;
                let n = room.min(p.length);
                let (r, b) = (req.actual as usize, n as usize);
                req.buf[r..r + b].copy_from_slice(&urb.buffer[offset..offset + b]);
                req.actual += n;
                let status = if p.length > room {
                    Err(Errno::EOVERFLOW)
                } else {
                    Ok(())
                };
                out.giveback(ep.id, req, status);
            }
            p.actual_length = p.length;
            p.status = 0;
            urb.actual = (urb.actual + p.length).min(urb.length);
            debug_assert!(end <= urb.buffer.len());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    //! The iso-capable personality (contract I2–I6), driven through the `Udc` trait and the
    //! host-side inputs with a virtual clock.
    extern crate std;

    use alloc::vec;
    use alloc::vec::Vec;

    use rawgadget_engine::{Completion, EpId, Request, RequestId, Udc};

    use super::*;
    use crate::controller::{Controller, GadgetEvent};
    use crate::personality::Personality;
    use crate::urb::{IsoPacket, Urb, UrbCompletion, UrbFlags};

    /// ep1in (handle 1) and ep1out (handle 0), iso 1024, bInterval 1 (125 µs at HS).
    const ISO_IN: [u8; 9] = [9, 5, 0x81, 1, 0x00, 0x04, 1, 0, 0];
    const ISO_OUT: [u8; 9] = [9, 5, 0x01, 1, 0x00, 0x04, 1, 0, 0];

    fn running(speed: Speed) -> Controller {
        running_with(Personality::vudc(), speed)
    }

    /// The iso personality with a client grace of `GRACE`.
    const GRACE: Duration = Duration::from_millis(10);
    fn running_with_grace(speed: Speed) -> Controller {
        running_with(
            Personality {
                iso_grace: GRACE,
                ..Personality::vudc()
            },
            speed,
        )
    }

    fn running_with(p: Personality, speed: Speed) -> Controller {
        let mut c = Controller::new(p, 0);
        c.bind(b"usbip-vudc", b"usbip-vudc.0", speed).unwrap();
        c.port_reset(Instant::ZERO);
        c.handle_timeout(Instant::from_millis(50));
        assert!(c.port_status().enabled);
        c
    }

    fn iso_urb(endpoint: u8, packets: u32, size: u32, data: u8) -> Urb {
        Urb {
            endpoint,
            kind: UrbKind::Isochronous {
                packets: (0..packets)
                    .map(|i| IsoPacket {
                        offset: i * size,
                        length: size,
                        ..IsoPacket::default()
                    })
                    .collect(),
            },
            buffer: vec![data; (packets * size) as usize],
            flags: UrbFlags::default(),
        }
    }

    fn completions(c: &mut Controller) -> Vec<Completion> {
        let mut v = Vec::new();
        while let Some(ev) = c.poll_gadget_event() {
            if let GadgetEvent::Completion(x) = ev {
                v.push(x);
            }
        }
        v
    }

    fn urbs(c: &mut Controller) -> Vec<UrbCompletion> {
        core::iter::from_fn(|| c.poll_urb_completion()).collect()
    }

    /// contract I2: 30 endpoints ep1out, ep1in … ep15in, every type, one direction each;
    /// maximum speed HIGH; names usbip-vudc.
    #[test]
    fn i2_vudc_endpoint_list() {
        let p = Personality::vudc();
        assert_eq!(p.endpoints.len(), 30);
        assert_eq!(p.endpoints[0].name, "ep1out");
        assert_eq!(p.endpoints[1].name, "ep1in");
        assert_eq!(p.endpoints[29].name, "ep15in");
        assert!(p
            .endpoints
            .iter()
            .all(|e| e.caps.type_iso() && e.caps.type_bulk() && e.caps.type_int()));
        assert!(p
            .endpoints
            .iter()
            .all(|e| e.maxpacket_limit == 65535 && e.max_streams == 16));
        assert_eq!(p.max_speed, Speed::High);
        assert_eq!(p.in_fifo, None);
        let mut c = Controller::new(p, 0);
        assert_eq!(c.device_name(), "usbip-vudc.0");
        let b = c
            .bind(b"usbip-vudc", b"usbip-vudc.0", Speed::Super)
            .unwrap();
        assert_eq!(c.speed(), Speed::High, "no SuperSpeed (I4)");
        assert_eq!(b.endpoints.len(), 30);
    }

    /// contract I3: no name or speed checks: iso 1024 at full speed, bulk 64 at high speed.
    #[test]
    fn i3_enable_makes_no_speed_checks() {
        let mut c = running(Speed::Full);
        assert_eq!(c.ep_enable(1, &ISO_IN), Ok(()));
        assert_eq!(c.ep_enable(2, &[9, 5, 0x02, 2, 64, 0, 0, 0, 0]), Ok(()));
        assert_eq!(
            c.ep_enable(3, &[9, 5, 0x82, 0, 64, 0, 0, 0, 0]),
            Err(Errno::EINVAL),
            "control"
        );
    }

    /// contract I5: an iso URB of N packets completes at its start + N·P whether or not the
    /// client queued requests, and IN packets without a request are empty.
    #[test]
    fn i5_iso_in_completes_on_time_without_requests() {
        let mut c = running(Speed::High);
        c.ep_enable(1, &ISO_IN).unwrap();
        let t0 = Instant::from_millis(100);
        let id = c.submit_urb(t0, iso_urb(0x81, 8, 1024, 0));
        assert!(urbs(&mut c).is_empty());
        let end = t0 + Duration::from_micros(125 * 8);
        let mut now = t0;
        while let Some(t) = c.poll_timeout().filter(|&t| t < end) {
            assert!(t >= now);
            now = t;
            c.handle_timeout(now);
            assert!(urbs(&mut c).is_empty(), "not before start + N·P");
        }
        assert_eq!(c.poll_timeout(), Some(end));
        c.handle_timeout(end);
        let done = urbs(&mut c);
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].id, done[0].status, done[0].actual_length),
            (id, Ok(()), 0)
        );
        assert!(done[0]
            .iso_packets
            .iter()
            .all(|p| p.actual_length == 0 && p.status == 0));
    }

    /// contract I6, IN: each packet slot takes the head request (up to `length` bytes), which
    /// completes with what was sent.
    #[test]
    fn i6_iso_in_packets_take_one_request_each() {
        let mut c = running(Speed::High);
        c.ep_enable(1, &ISO_IN).unwrap();
        for (i, len) in [(1u64, 1024usize), (2, 100), (3, 2000)] {
            let req = Request {
                id: RequestId(i),
                buf: vec![i as u8; len],
                length: len as u32,
                zero: false,
            };
            c.queue(EpId::Ep(1), req).unwrap();
        }
        let t0 = Instant::from_millis(100);
        c.submit_urb(t0, iso_urb(0x81, 4, 1024, 0));
        c.handle_timeout(t0 + Duration::from_micros(500));
        let reqs = completions(&mut c);
        assert_eq!(
            reqs.iter()
                .map(|r| (r.id.0, r.actual, r.status))
                .collect::<Vec<_>>(),
            [(1, 1024, Ok(())), (2, 100, Ok(())), (3, 1024, Ok(()))]
        );
        let u = &urbs(&mut c)[0];
        let actual: Vec<u32> = u.iso_packets.iter().map(|p| p.actual_length).collect();
        assert_eq!(actual, [1024, 100, 1024, 0]);
        assert_eq!(u.actual_length, 2148);
        assert_eq!(u.buffer[1024..1124], [2; 100]);
        assert_eq!(u.buffer[2048], 3);
    }

    /// contract I6, OUT: the data goes into the head request (EOVERFLOW when it does not fit);
    /// without a request it is dropped and the host still sees success.
    #[test]
    fn i6_iso_out_fills_requests_or_drops() {
        let mut c = running(Speed::High);
        c.ep_enable(0, &ISO_OUT).unwrap();
        c.queue(
            EpId::Ep(0),
            Request {
                id: RequestId(1),
                buf: vec![0; 1024],
                length: 1024,
                zero: false,
            },
        )
        .unwrap();
        c.queue(
            EpId::Ep(0),
            Request {
                id: RequestId(2),
                buf: vec![0; 10],
                length: 10,
                zero: false,
            },
        )
        .unwrap();
        let t0 = Instant::from_millis(100);
        c.submit_urb(t0, iso_urb(0x01, 3, 1024, 7));
        c.handle_timeout(t0 + Duration::from_micros(375));
        let reqs = completions(&mut c);
        assert_eq!((reqs[0].actual, reqs[0].status), (1024, Ok(())));
        assert_eq!(reqs[0].buf, vec![7; 1024]);
        assert_eq!(
            (reqs[1].actual, reqs[1].status),
            (10, Err(Errno::EOVERFLOW))
        );
        let u = &urbs(&mut c)[0];
        assert_eq!(u.status, Ok(()));
        assert!(u
            .iso_packets
            .iter()
            .all(|p| p.actual_length == 1024 && p.status == 0));
        assert_eq!(u.actual_length, 3072);
    }

    /// contract I5: the period is 2^(bInterval−1) frames at full speed, microframes at high
    /// speed; URBs on one endpoint follow each other.
    #[test]
    fn i5_period_and_back_to_back_urbs() {
        assert_eq!(
            period(Speed::Full, &[9, 5, 0x81, 1, 0, 4, 1, 0, 0]),
            Duration::from_millis(1)
        );
        assert_eq!(
            period(Speed::High, &[9, 5, 0x81, 1, 0, 4, 4, 0, 0]),
            Duration::from_millis(1)
        );
        assert_eq!(
            period(Speed::Full, &[9, 5, 0x81, 1, 0, 4, 3, 0, 0]),
            Duration::from_millis(4)
        );
        let mut c = running(Speed::Full);
        c.ep_enable(1, &ISO_IN).unwrap();
        let t0 = Instant::from_millis(100);
        let a = c.submit_urb(t0, iso_urb(0x81, 2, 64, 0));
        let b = c.submit_urb(t0, iso_urb(0x81, 2, 64, 0));
        c.handle_timeout(t0 + Duration::from_millis(2));
        assert_eq!(urbs(&mut c).iter().map(|u| u.id).collect::<Vec<_>>(), [a]);
        c.handle_timeout(t0 + Duration::from_millis(4));
        assert_eq!(urbs(&mut c).iter().map(|u| u.id).collect::<Vec<_>>(), [b]);
        assert_eq!(c.poll_timeout(), None);
    }

    fn request(id: u64, len: usize) -> Request {
        Request {
            id: RequestId(id),
            buf: vec![id as u8; len],
            length: len as u32,
            zero: false,
        }
    }

    fn just_before(t: Instant) -> Instant {
        Instant::from_nanos(t.as_nanos() - 1)
    }

    /// Advances `c` through its own timers up to `until`.
    fn run_until(c: &mut Controller, until: Instant) {
        while let Some(t) = c.poll_timeout().filter(|&t| t <= until) {
            c.handle_timeout(t);
        }
        c.handle_timeout(until);
    }

    /// contract I5 with the client grace (`Personality::iso_grace`): on a streaming endpoint a
    /// slot with no request waits for the client's next one, is served when it arrives, and
    /// the schedule goes on from there. No packet is lost to the client's round trip.
    #[test]
    fn i5_grace_streaming_in_slot_waits_for_the_client() {
        let mut c = running_with_grace(Speed::High);
        c.ep_enable(1, &ISO_IN).unwrap();
        let p = Duration::from_micros(125);
        c.queue(EpId::Ep(1), request(1, 1024)).unwrap();
        let t0 = Instant::from_millis(100);
        let id = c.submit_urb(t0, iso_urb(0x81, 3, 1024, 0));
        assert_eq!(
            completions(&mut c).len(),
            1,
            "packet 0 took request 1 at once"
        );
        // slot 1 is due at t0 + P; the client is still on its round trip
        assert_eq!(c.poll_timeout(), Some(t0 + p));
        c.handle_timeout(t0 + p);
        assert_eq!(
            c.poll_timeout(),
            Some(t0 + p + GRACE),
            "waits up to the grace"
        );
        let late = t0 + p + Duration::from_millis(3);
        run_until(&mut c, late);
        assert!(urbs(&mut c).is_empty());
        c.queue(EpId::Ep(1), request(2, 1024)).unwrap();
        assert_eq!(
            completions(&mut c).len(),
            1,
            "the waiting slot took request 2"
        );
        // slot 2 is one period after slot 1 was served
        assert_eq!(c.poll_timeout(), Some(late + p));
        c.handle_timeout(late + p);
        c.queue(EpId::Ep(1), request(3, 1024)).unwrap();
        assert_eq!(completions(&mut c).len(), 1);
        run_until(&mut c, late + p * 2);
        let done = urbs(&mut c);
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].id, done[0].status), (id, Ok(())));
        let actual: Vec<u32> = done[0]
            .iso_packets
            .iter()
            .map(|p| p.actual_length)
            .collect();
        assert_eq!(actual, [1024, 1024, 1024]);
        assert_eq!(done[0].actual_length, 3072);
        assert_eq!(done[0].buffer[1024], 2);
        assert_eq!(done[0].buffer[2048], 3);
    }

    /// The same round trip without the grace (contract I5 as written): the slot goes by empty.
    #[test]
    fn i5_without_grace_a_late_request_misses_its_slot() {
        let mut c = running(Speed::High);
        c.ep_enable(1, &ISO_IN).unwrap();
        let p = Duration::from_micros(125);
        c.queue(EpId::Ep(1), request(1, 1024)).unwrap();
        let t0 = Instant::from_millis(100);
        c.submit_urb(t0, iso_urb(0x81, 2, 1024, 0));
        run_until(&mut c, t0 + p + Duration::from_millis(3));
        let done = urbs(&mut c);
        assert_eq!(done.len(), 1);
        let actual: Vec<u32> = done[0]
            .iso_packets
            .iter()
            .map(|p| p.actual_length)
            .collect();
        assert_eq!(actual, [1024, 0]);
    }

    /// contract I5 with the grace: a client that stops streaming delays one slot by the grace;
    /// the endpoint is then idle and its slots go by on time, empty.
    #[test]
    fn i5_grace_expires_then_the_endpoint_is_idle() {
        let mut c = running_with_grace(Speed::High);
        c.ep_enable(1, &ISO_IN).unwrap();
        let p = Duration::from_micros(125);
        c.queue(EpId::Ep(1), request(1, 1024)).unwrap();
        let t0 = Instant::from_millis(100);
        c.submit_urb(t0, iso_urb(0x81, 4, 1024, 0));
        // slot 1 waits until t0 + P + grace, then slots 2 and 3 follow one period apart
        let end = t0 + p + GRACE + p * 3;
        run_until(&mut c, just_before(end));
        assert!(urbs(&mut c).is_empty());
        run_until(&mut c, end);
        let done = urbs(&mut c);
        assert_eq!(done.len(), 1);
        let actual: Vec<u32> = done[0]
            .iso_packets
            .iter()
            .map(|p| p.actual_length)
            .collect();
        assert_eq!(actual, [1024, 0, 0, 0]);
        assert!(done[0].iso_packets.iter().all(|p| p.status == 0));
        // the next URB on the now idle endpoint does not wait
        let t1 = end + Duration::from_millis(1);
        c.submit_urb(t1, iso_urb(0x81, 2, 1024, 0));
        run_until(&mut c, t1 + p * 2);
        assert_eq!(urbs(&mut c).len(), 1, "idle: done at start + N·P");
    }

    /// contract I5: with the grace, an endpoint whose client never queued still gets every URB
    /// back at start + N·P (the grace is for streaming endpoints only).
    #[test]
    fn i5_grace_never_delays_an_idle_endpoint() {
        let mut c = running_with_grace(Speed::High);
        c.ep_enable(1, &ISO_IN).unwrap();
        c.ep_enable(0, &ISO_OUT).unwrap();
        let t0 = Instant::from_millis(100);
        let end = t0 + Duration::from_micros(125 * 8);
        c.submit_urb(t0, iso_urb(0x81, 8, 1024, 0));
        c.submit_urb(t0, iso_urb(0x01, 8, 1024, 5));
        run_until(&mut c, just_before(end));
        assert!(urbs(&mut c).is_empty());
        c.handle_timeout(end);
        assert_eq!(urbs(&mut c).len(), 2);
    }

    /// contract I6, OUT, with the grace: a streaming sink's slot waits for its next read, so
    /// no data is dropped while the client is on its round trip.
    #[test]
    fn i6_grace_streaming_out_slot_waits_for_the_next_read() {
        let mut c = running_with_grace(Speed::High);
        c.ep_enable(0, &ISO_OUT).unwrap();
        let p = Duration::from_micros(125);
        c.queue(EpId::Ep(0), request(1, 1024)).unwrap();
        let t0 = Instant::from_millis(100);
        c.submit_urb(t0, iso_urb(0x01, 2, 1024, 9));
        assert_eq!(completions(&mut c)[0].buf, vec![9; 1024]);
        run_until(&mut c, t0 + p + Duration::from_millis(2));
        assert!(urbs(&mut c).is_empty(), "slot 1 waits for the client");
        c.queue(EpId::Ep(0), request(2, 1024)).unwrap();
        let reqs = completions(&mut c);
        assert_eq!((reqs[0].id, reqs[0].actual), (RequestId(2), 1024));
        assert_eq!(reqs[0].buf, vec![9; 1024]);
        run_until(&mut c, t0 + p * 2 + Duration::from_millis(2));
        let done = urbs(&mut c);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].actual_length, 2048);
    }

    /// contract I5 with the grace: a new enable starts idle, so an URB on a re-enabled
    /// endpoint does not wait for a client that streamed before.
    #[test]
    fn i5_grace_enable_starts_idle() {
        let mut c = running_with_grace(Speed::High);
        c.ep_enable(1, &ISO_IN).unwrap();
        c.queue(EpId::Ep(1), request(1, 1024)).unwrap();
        let t0 = Instant::from_millis(100);
        c.submit_urb(t0, iso_urb(0x81, 1, 1024, 0));
        run_until(&mut c, t0 + Duration::from_micros(125));
        assert_eq!(urbs(&mut c).len(), 1);
        c.ep_disable(1).unwrap();
        c.ep_enable(1, &ISO_IN).unwrap();
        let t1 = t0 + Duration::from_millis(1);
        c.submit_urb(t1, iso_urb(0x81, 2, 1024, 0));
        run_until(&mut c, t1 + Duration::from_micros(250));
        assert_eq!(urbs(&mut c).len(), 1);
    }

    /// contract D1, I1: dummy keeps refusing iso.
    #[test]
    fn i1_dummy_still_rejects_iso() {
        assert_eq!(
            Personality::dummy().iso,
            crate::personality::IsoRule::Reject
        );
    }
}
