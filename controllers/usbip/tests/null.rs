//! The null-device floor (contract P5) over a socketpair, with the fake vhci (vhci's framing
//! checks) and the loopback host (Linux-like enumeration) on the other end: the replies usbtest
//! depends on, one test per rule.

use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;

use rawgadget_loopback::{Host, HostConfig};
use rawgadget_uapi::{Errno, Speed};
use rawgadget_udc::UrbFlags;
use rawgadget_usb::{ConfigurationBuilder, DeviceDescriptor, EndpointAddress, Repr, TransferType};
use rawgadget_usbip::wire::Direction;
use rawgadget_usbip::{CmdSubmit, CmdSubmitRepr};
use rawgadget_usbip_udc::fake_vhci::{FakeVhci, WireReply};
use rawgadget_usbip_udc::null::{serve, NullDescriptors, NullDevice, NullEnd, NullStats};

const TIMEOUT: Duration = Duration::from_secs(5);
const BULK_IN: u8 = 0x81;
const BULK_OUT: u8 = 0x02;
const INT_IN: u8 = 0x85;
const INT_OUT: u8 = 0x08;
const ECONNRESET: i32 = -104;

/// Gadget Zero's shape at high speed: vendor class, bulk IN/OUT of 512 and interrupt IN/OUT
/// of 64 in altsetting 0 of interface 0, strings 1–3.
fn gadget_zero() -> NullDescriptors {
    let device = DeviceDescriptor::builder(0x0525, 0xa4a0)
        .class(0xff, 0, 0)
        .max_packet_size0(64)
        .strings(1, 2, 3)
        .build();
    let mut config = ConfigurationBuilder::new(1).attributes(0xc0).max_power(50);
    {
        let mut interface = config.interface();
        let mut alt = interface.alt_setting(0xff, 0, 0);
        alt.endpoint(EndpointAddress(BULK_OUT), TransferType::Bulk, 512, 0);
        alt.endpoint(EndpointAddress(BULK_IN), TransferType::Bulk, 512, 0);
        alt.endpoint(EndpointAddress(INT_OUT), TransferType::Interrupt, 64, 4);
        alt.endpoint(EndpointAddress(INT_IN), TransferType::Interrupt, 64, 4);
    }
    NullDescriptors {
        speed: Some(Speed::High),
        device: device.to_vec(),
        config: config.build().unwrap(),
        qualifier: Some(device.qualifier().to_vec()),
        other_speed_config: None,
        bos: None,
        strings: vec![
            (1, "rawgadget".into()),
            (2, "Gadget Zero".into()),
            (3, "0123456789".into()),
        ],
    }
}

struct Rig {
    vhci: FakeVhci<UnixStream>,
    host: Host,
    device: Option<JoinHandle<(NullEnd, NullStats)>>,
}

impl Rig {
    fn new(enumerate: bool) -> Rig {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut device = NullDevice::new(gadget_zero()).unwrap();
        let thread = std::thread::spawn(move || {
            let mut stream = ours;
            let end = serve(&mut device, &mut stream);
            (end, device.stats())
        });
        let mut rig = Rig {
            vhci: FakeVhci::new(theirs, Speed::High, 0x0001_0002),
            host: Host::new(HostConfig {
                set_configuration: enumerate,
                ..HostConfig::default()
            }),
            device: Some(thread),
        };
        rig.host.enumerate(&mut rig.vhci).unwrap();
        rig
    }

    fn bulk_in(&mut self, ep: u8, len: usize) -> rawgadget_loopback::UrbResult {
        self.host
            .bulk_in(&mut self.vhci, ep, len, UrbFlags::default(), TIMEOUT)
    }

    fn bulk_out(&mut self, ep: u8, data: Vec<u8>) -> rawgadget_loopback::UrbResult {
        self.host
            .bulk_out(&mut self.vhci, ep, data, UrbFlags::default(), TIMEOUT)
    }

    /// Closes the host side; returns how the device's connection ended and its counters.
    fn finish(mut self) -> (NullEnd, NullStats) {
        assert_eq!(
            self.vhci.error(),
            None,
            "vhci would have dropped the device"
        );
        self.vhci.detach();
        self.device.take().unwrap().join().unwrap()
    }
}

fn pattern(max_packet: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i % max_packet) % 63) as u8).collect()
}

/// contract P5: the host enumerates the null device as our Gadget Zero (0525:a4a0, its
/// strings) and configures it, with no engine behind it.
#[test]
fn p5_enumerates_as_gadget_zero() {
    let rig = Rig::new(true);
    let rec = rig.host.recording();
    assert_eq!(rec.speed, Some(Speed::High));
    assert_eq!(
        rec.device.as_ref().unwrap()[8..12],
        [0x25, 0x05, 0xa0, 0xa4]
    );
    assert_eq!(rec.configuration, Some(1));
    assert_eq!(rec.configs[0], gadget_zero().config);
    assert_eq!(rec.string(2).as_deref(), Some("Gadget Zero"));
    let (end, stats) = rig.finish();
    assert!(matches!(end, NullEnd::Closed), "{end}");
    assert!(stats.control >= 6, "{stats:?}");
}

/// contract T8: bulk and interrupt IN carry usbtest's pattern=1 for their own maxpacket, as
/// long as the URB asks; OUT is consumed whole.
#[test]
fn t8_in_carries_the_pattern_out_is_consumed() {
    let mut rig = Rig::new(true);
    let r = rig.bulk_in(BULK_IN, 65536);
    assert_eq!(r.status, Ok(()));
    assert_eq!(r.data, pattern(512, 65536));
    let r = rig.bulk_in(BULK_IN, 1000);
    assert_eq!((r.actual, &r.data[..]), (1000, &pattern(512, 1000)[..]));
    let r = rig
        .host
        .interrupt(&mut rig.vhci, INT_IN, vec![0; 64], TIMEOUT);
    assert_eq!((r.status, r.data), (Ok(()), pattern(64, 64)));
    let r = rig.bulk_out(BULK_OUT, vec![7; 65536]);
    assert_eq!((r.status, r.actual), (Ok(()), 65536));
    let r = rig
        .host
        .interrupt(&mut rig.vhci, INT_OUT, vec![1; 64], TIMEOUT);
    assert_eq!((r.status, r.actual), (Ok(()), 64));
    // larger than the precomputed pattern: still the pattern
    let r = rig.bulk_in(BULK_IN, (1 << 20) + 512);
    assert_eq!(r.data, pattern(512, (1 << 20) + 512));
    let (_, stats) = rig.finish();
    assert_eq!(stats.bytes_out, 65536 + 64);
    assert!(stats.bytes_in >= 65536 + 1000 + 64 + (1 << 20), "{stats:?}");
}

/// contract D24: before SET_CONFIGURATION no endpoint is enabled: EPROTO.
#[test]
fn d24_urbs_before_configuration_get_eproto() {
    let mut rig = Rig::new(false);
    assert_eq!(rig.bulk_in(BULK_IN, 512).status, Err(Errno::EPROTO));
    assert_eq!(
        rig.bulk_out(BULK_OUT, vec![0; 512]).status,
        Err(Errno::EPROTO)
    );
    rig.host
        .control_out(&mut rig.vhci, 0x00, 9, 1, 0, &[])
        .unwrap();
    assert_eq!(rig.bulk_in(BULK_IN, 512).status, Ok(()));
    // an endpoint the configuration does not have
    assert_eq!(rig.bulk_in(0x83, 512).status, Err(Errno::EPROTO));
    rig.finish();
}

/// contract D20, D22, D25 (usbtest case 13): SET_FEATURE(HALT) halts, GET_STATUS reports it,
/// URBs fail with EPIPE, CLEAR_FEATURE clears; ep0 cannot be halted; unknown endpoints stall.
#[test]
fn d22_d25_halt_set_status_clear() {
    let mut rig = Rig::new(true);
    let v = &mut rig.vhci;
    assert_eq!(rig.host.get_status(v, 2, BULK_IN.into()), Ok(0));
    rig.host.set_halt(v, BULK_IN).unwrap();
    assert_eq!(rig.host.get_status(v, 2, BULK_IN.into()), Ok(1));
    assert_eq!(rig.bulk_in(BULK_IN, 512).status, Err(Errno::EPIPE));
    // the other endpoints are not affected
    assert_eq!(rig.bulk_out(BULK_OUT, vec![0; 512]).status, Ok(()));
    let v = &mut rig.vhci;
    rig.host.clear_halt(v, BULK_IN).unwrap();
    assert_eq!(rig.host.get_status(v, 2, BULK_IN.into()), Ok(0));
    assert_eq!(rig.bulk_in(BULK_IN, 512).status, Ok(()));
    let v = &mut rig.vhci;
    assert_eq!(rig.host.set_halt(v, 0), Err(Errno::EPIPE));
    assert_eq!(rig.host.clear_halt(v, 0), Ok(()));
    assert_eq!(rig.host.get_status(v, 2, 0x84), Err(Errno::EPIPE));
    assert_eq!(rig.host.set_halt(v, 0x84), Err(Errno::EPIPE));
    assert_eq!(rig.host.get_status(v, 0, 0), Ok(0));
    assert_eq!(rig.host.get_status(v, 1, 0), Ok(0));
    // SET_INTERFACE re-enables the endpoints, which clears a halt (D6)
    rig.host.set_halt(v, BULK_OUT).unwrap();
    rig.host.control_out(v, 0x01, 11, 0, 0, &[]).unwrap();
    assert_eq!(rig.host.get_status(v, 2, BULK_OUT.into()), Ok(0));
    rig.finish();
}

/// contract D21: remote wakeup is a device-status bit; U1/U2 only at SuperSpeed.
#[test]
fn d21_device_features() {
    let mut rig = Rig::new(true);
    let v = &mut rig.vhci;
    rig.host.control_out(v, 0x00, 3, 1, 0, &[]).unwrap();
    assert_eq!(rig.host.get_status(v, 0, 0), Ok(2));
    rig.host.control_out(v, 0x00, 1, 1, 0, &[]).unwrap();
    assert_eq!(rig.host.get_status(v, 0, 0), Ok(0));
    assert_eq!(
        rig.host.control_out(v, 0x00, 3, 48, 0, &[]),
        Err(Errno::EPIPE)
    );
    rig.finish();
}

/// usbtest cases 9 and 10: GET_CONFIGURATION, GET_INTERFACE, SET_INTERFACE, the qualifier,
/// short reads, and the requests that must stall (INTERFACE and ENDPOINT descriptors, BOS
/// below USB 2.01, an unknown altsetting).
#[test]
fn t_ch9_answers_usbtest_checks() {
    let mut rig = Rig::new(true);
    let v = &mut rig.vhci;
    let h = &mut rig.host;
    assert_eq!(h.control_in(v, 0x80, 8, 0, 0, 1), Ok(vec![1]));
    assert_eq!(h.control_in(v, 0x81, 10, 0, 0, 1), Ok(vec![0]));
    assert_eq!(h.control_out(v, 0x01, 11, 1, 0, &[]), Err(Errno::EPIPE));
    assert_eq!(
        h.control_in(v, 0x80, 6, 0x0600, 0, 10).map(|d| d.len()),
        Ok(10)
    );
    let config = gadget_zero().config;
    assert_eq!(
        h.control_in(v, 0x80, 6, 0x0200, 0, 1024),
        Ok(config.clone())
    );
    assert_eq!(
        h.control_in(v, 0x80, 6, 0x0200, 0, 9),
        Ok(config[..9].to_vec())
    );
    assert_eq!(
        h.control_in(v, 0x80, 6, 0x0100, 0, 64).map(|d| d.len()),
        Ok(18)
    );
    assert_eq!(h.control_in(v, 0x80, 6, 0x0400, 0, 9), Err(Errno::EPIPE));
    assert_eq!(h.control_in(v, 0x80, 6, 0x0500, 0, 9), Err(Errno::EPIPE));
    assert_eq!(h.control_in(v, 0x80, 6, 0x0f00, 0, 5), Err(Errno::EPIPE));
    assert_eq!(h.control_in(v, 0x80, 6, 0x0201, 0, 9), Err(Errno::EPIPE));
    assert_eq!(
        h.control_in(v, 0x80, 6, 0x0300, 0, 255),
        Ok(vec![4, 3, 9, 4])
    );
    // an unknown request stalls, and the device keeps answering
    assert_eq!(h.control_in(v, 0xc0, 0x77, 0, 0, 4), Err(Errno::EPIPE));
    assert_eq!(h.control_in(v, 0x80, 0, 0, 0, 2), Ok(vec![0, 0]));
    rig.finish();
}

/// usbtest cases 14 and 21: the vendor requests 0x5b/0x5c write and read back Gadget Zero's
/// 4096-byte buffer; other values or lengths stall (f_sourcesink's checks).
#[test]
fn t_vendor_buffer_round_trip() {
    let mut rig = Rig::new(true);
    let v = &mut rig.vhci;
    let data: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    rig.host.control_out(v, 0x40, 0x5b, 0, 0, &data).unwrap();
    assert_eq!(
        rig.host.control_in(v, 0xc0, 0x5c, 0, 0, 300),
        Ok(data.clone())
    );
    assert_eq!(
        rig.host.control_in(v, 0xc0, 0x5c, 1, 0, 4),
        Err(Errno::EPIPE)
    );
    assert_eq!(
        rig.host.control_out(v, 0x40, 0x5b, 0, 0, &vec![0; 4097]),
        Err(Errno::EPIPE)
    );
    rig.finish();
}

/// contract U10, U14: every URB is answered at once, so a CMD_UNLINK names one already
/// answered (RET_UNLINK 0) or one whose CMD_SUBMIT it overtook, which is then answered
/// RET_UNLINK -ECONNRESET and never gets a RET_SUBMIT (vhci would drop the device).
#[test]
fn u10_unlinks_already_answered_or_overtaking() {
    let mut rig = Rig::new(true);
    let done = rig.bulk_in(BULK_IN, 512);
    assert_eq!(done.status, Ok(()));
    let last = match rig.vhci.replies.last() {
        Some(WireReply::RetSubmit { seqnum, .. }) => *seqnum,
        other => panic!("{other:?}"),
    };
    // already answered
    let unlink = rig.vhci.unlink_raw(last).unwrap();
    // overtaking: the unlink of seqnum `last + 100` arrives before its submit
    let ahead = last + 100;
    let early = rig.vhci.unlink_raw(ahead).unwrap();
    let submit = CmdSubmit {
        header: CmdSubmitRepr {
            seqnum: ahead,
            devid: 0x0001_0002,
            direction: Direction::In,
            ep: 1,
            transfer_flags: 0x200,
            transfer_buffer_length: 512,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup: [0; 8],
        },
        data: vec![],
        iso_packets: vec![],
    };
    rig.vhci.submit_raw(&submit, false).unwrap();
    // the device still answers afterwards
    assert_eq!(rig.bulk_in(BULK_IN, 512).status, Ok(()));
    let replies = rig.vhci.replies.clone();
    assert!(
        replies.contains(&WireReply::RetUnlink {
            seqnum: unlink,
            status: 0
        }),
        "{replies:?}"
    );
    assert!(
        replies.contains(&WireReply::RetUnlink {
            seqnum: early,
            status: ECONNRESET
        }),
        "{replies:?}"
    );
    assert!(
        !replies
            .iter()
            .any(|r| matches!(r, WireReply::RetSubmit { seqnum, .. } if *seqnum == ahead)),
        "no RET_SUBMIT after RET_UNLINK -ECONNRESET: {replies:?}"
    );
    let (_, stats) = rig.finish();
    assert_eq!(stats.unlinks, 2);
}

/// contract U12, U25: a framing error from the host closes the connection with an error, no
/// panic and no reply.
#[test]
fn u12_garbage_closes_the_connection() {
    let mut rig = Rig::new(true);
    rig.vhci.send_raw(&[0xde; 48]).unwrap();
    let (end, _) = rig.device.take().unwrap().join().unwrap();
    assert!(matches!(end, NullEnd::Error(_)), "{end}");
}
