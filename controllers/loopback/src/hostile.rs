//! Traffic a well-behaved host would not send: wrong wLength, unknown requests, oversize
//! transfers, transfers before configuration, unlink storms, and URBs that skip the host
//! core's own checks. Each function returns what happened, one [`Probe`] per URB, and leaves
//! the device in whatever state it ends up in; [`alive`] checks it still answers.
//!
//! A device (and the engine and model under it) must survive all of it: an errno or a stall,
//! never a panic or a hang.

use std::time::Duration;

use rawgadget_uapi::Errno;
use rawgadget_udc::{Unlink, Urb, UrbFlags, UrbKind};

use crate::host::{setup, Host, UrbResult};
use crate::port::HostPort;

/// One hostile URB and its result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub what: String,
    pub result: UrbResult,
}

fn probe<P: HostPort + ?Sized>(
    host: &mut Host,
    p: &mut P,
    what: String,
    urb: Urb,
    timeout: Duration,
) -> Probe {
    let result = host.transfer(p, urb, timeout);
    Probe { what, result }
}

/// Short timeout for probes that may legitimately never complete (a device that keeps a
/// reply pending, contract D18).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether the device still answers GET_STATUS(device) (answered by the controller itself,
/// contract D20) and GET_DESCRIPTOR(DEVICE) (answered by the client).
pub fn alive<P: HostPort + ?Sized>(
    host: &mut Host,
    p: &mut P,
) -> (Result<u16, Errno>, Result<Vec<u8>, Errno>) {
    let status = host.get_status(p, 0, 0);
    let desc = host.control_in(p, 0, 6, 0x0100, 0, 18);
    (status, desc)
}

/// GET_DESCRIPTOR(DEVICE) and (CONFIG) with odd wLength values: 0, 1, 7, 8, 17, 19, 255, 4095,
/// 65535.
pub fn wrong_wlength<P: HostPort + ?Sized>(host: &mut Host, p: &mut P) -> Vec<Probe> {
    let mut out = Vec::new();
    for value in [0x0100u16, 0x0200] {
        for len in [0u16, 1, 7, 8, 17, 19, 255, 4095, 65535] {
            let s = setup(0x80, 6, value, 0, len);
            out.push(probe(
                host,
                p,
                format!("GET_DESCRIPTOR {value:#06x} wLength {len}"),
                Urb::control(s, &[]),
                PROBE_TIMEOUT,
            ));
        }
    }
    out
}

/// Requests nobody defines: reserved standard bRequest values, the reserved type, recipient
/// "other" and reserved recipients, both directions, with and without data.
pub fn unknown_requests<P: HostPort + ?Sized>(host: &mut Host, p: &mut P) -> Vec<Probe> {
    let mut out = Vec::new();
    let cases: [(u8, u8, u16); 10] = [
        (0x80, 0xff, 4),  // standard IN, reserved bRequest
        (0x00, 0x02, 0),  // standard OUT bRequest 2 (reserved)
        (0x00, 0x04, 0),  // standard OUT bRequest 4 (reserved)
        (0xe0, 0x01, 8),  // reserved type, IN
        (0x60, 0x01, 8),  // reserved type, OUT with data
        (0x83, 0x00, 2),  // GET_STATUS to "other"
        (0x9f, 0x00, 2),  // GET_STATUS to a reserved recipient
        (0x00, 0x07, 18), // SET_DESCRIPTOR
        (0x82, 0x0c, 2),  // SYNCH_FRAME
        (0xc1, 0x55, 64), // vendor to interface
    ];
    for (rt, req, len) in cases {
        let s = setup(rt, req, 0x1234, 0x5678, len);
        let data = vec![0xa5; usize::from(len)];
        out.push(probe(
            host,
            p,
            format!("bRequestType {rt:#04x} bRequest {req:#04x} wLength {len}"),
            Urb::control(s, &data),
            PROBE_TIMEOUT,
        ));
    }
    out
}

/// Transfers far larger than anything the device queues: 1 MiB bulk IN and OUT (with
/// URB_SHORT_NOT_OK on IN), a 64 KiB control OUT data stage.
pub fn oversize_transfers<P: HostPort + ?Sized>(
    host: &mut Host,
    p: &mut P,
    bulk_in: u8,
    bulk_out: u8,
) -> Vec<Probe> {
    let mut out = Vec::new();
    let mut urb = Urb::bulk(bulk_in | 0x80, vec![0; 1 << 20]);
    urb.flags = UrbFlags {
        zero_packet: false,
        short_not_ok: true,
    };
    out.push(probe(
        host,
        p,
        format!("bulk IN {bulk_in:#04x} 1 MiB"),
        urb,
        PROBE_TIMEOUT,
    ));
    let mut urb = Urb::bulk(bulk_out & 0x7f, vec![0x5a; 1 << 20]);
    urb.flags.zero_packet = true;
    out.push(probe(
        host,
        p,
        format!("bulk OUT {bulk_out:#04x} 1 MiB"),
        urb,
        PROBE_TIMEOUT,
    ));
    let s = setup(0x40, 0x77, 0, 0, 65535);
    out.push(probe(
        host,
        p,
        "vendor OUT wLength 65535".into(),
        Urb::control(s, &vec![1; 65535]),
        PROBE_TIMEOUT,
    ));
    out
}

/// Bulk and interrupt URBs to `endpoints` (with direction bits), meant for before
/// SET_CONFIGURATION: the controller fails them with EPROTO (contract D24).
pub fn before_configuration<P: HostPort + ?Sized>(
    host: &mut Host,
    p: &mut P,
    endpoints: &[u8],
) -> Vec<Probe> {
    let mut out = Vec::new();
    for &ep in endpoints {
        let buf = if ep & 0x80 != 0 {
            vec![0; 64]
        } else {
            vec![7; 64]
        };
        out.push(probe(
            host,
            p,
            format!("bulk {ep:#04x}"),
            Urb::bulk(ep, buf.clone()),
            PROBE_TIMEOUT,
        ));
        out.push(probe(
            host,
            p,
            format!("interrupt {ep:#04x}"),
            Urb::interrupt(ep, buf),
            PROBE_TIMEOUT,
        ));
    }
    out
}

/// `rounds` times: queue `depth` URBs on `endpoint` (control GET_DESCRIPTOR when it is 0),
/// then unlink them all, alternating async unlink and kill, newest first. Returns the results.
pub fn unlink_storm<P: HostPort + ?Sized>(
    host: &mut Host,
    p: &mut P,
    endpoint: u8,
    rounds: usize,
    depth: usize,
) -> Vec<Probe> {
    let mut out = Vec::new();
    for round in 0..rounds {
        let mut ids = Vec::new();
        for _ in 0..depth {
            let urb = if endpoint & 0x7f == 0 {
                Urb::control(setup(0x80, 6, 0x0100, 0, 18), &[])
            } else if endpoint & 0x80 != 0 {
                Urb::bulk(endpoint, vec![0; 512])
            } else {
                Urb::bulk(endpoint, vec![3; 512])
            };
            ids.push(host.submit(p, urb));
        }
        for (i, id) in ids.iter().rev().enumerate() {
            let how = if (i + round) % 2 == 0 {
                Unlink::Async
            } else {
                Unlink::Kill
            };
            let _ = host.unlink(p, *id, how);
        }
        for id in ids {
            let result = host.wait(p, id, PROBE_TIMEOUT).unwrap_or(UrbResult {
                status: Err(Errno::EINPROGRESS),
                actual: 0,
                data: Vec::new(),
            });
            out.push(Probe {
                what: format!("round {round} urb {}", id.0),
                result,
            });
        }
    }
    out
}

/// URBs that `usb_submit_urb` would refuse but a USB/IP peer can send: a control URB whose
/// buffer disagrees with wLength, a control URB with the wrong direction bit, a bulk URB to
/// ep0, an iso URB.
pub fn bypass_host_core<P: HostPort + ?Sized>(host: &mut Host, p: &mut P) -> Vec<Probe> {
    let mut out = Vec::new();
    let s = setup(0x80, 6, 0x0100, 0, 18);
    let mk = |endpoint: u8, kind: UrbKind, len: usize| Urb {
        endpoint,
        kind,
        buffer: vec![0; len],
        flags: UrbFlags::default(),
    };
    out.push(probe(
        host,
        p,
        "GET_DESCRIPTOR wLength 18, buffer 4".into(),
        mk(0x80, UrbKind::Control { setup: s }, 4),
        PROBE_TIMEOUT,
    ));
    out.push(probe(
        host,
        p,
        "GET_DESCRIPTOR wLength 18, buffer 300".into(),
        mk(0x80, UrbKind::Control { setup: s }, 300),
        PROBE_TIMEOUT,
    ));
    out.push(probe(
        host,
        p,
        "GET_DESCRIPTOR as an OUT URB".into(),
        mk(0x00, UrbKind::Control { setup: s }, 18),
        PROBE_TIMEOUT,
    ));
    out.push(probe(
        host,
        p,
        "bulk IN to ep0".into(),
        mk(0x80, UrbKind::Bulk, 64),
        PROBE_TIMEOUT,
    ));
    out.push(probe(
        host,
        p,
        "iso IN to 0x81".into(),
        mk(0x81, UrbKind::Isochronous { packets: vec![] }, 64),
        PROBE_TIMEOUT,
    ));
    out
}
