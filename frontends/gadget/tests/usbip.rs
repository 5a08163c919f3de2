//! A gadget on [`InProcess::usbip`] behind the project's fake vhci (a UNIX socketpair), with
//! several control URBs queued at once, as usbtest's case 10 queues them: the ep0 thread
//! answers them back to back and its replies leave in batches ("Write-behind" in
//! `rawgadget_usbip_udc::driver`, contract P4), which must change neither their order nor
//! their contents (contract D14), nor strand a reply behind a slow answer. The same for bulk
//! OUT URBs queued at once (usbtest's case 24) and a reader thread.

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;
use common::{config_descriptor, endpoint_descriptor, BULK_OUT, DEVICE};

use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rawgadget::usbip::{Budget, UsbipConfig};
use rawgadget::{Event, Gadget, InProcess, Speed};
use rawgadget_loopback::{setup, Host, HostConfig, HostPort};
use rawgadget_udc::{Urb, UrbId};
use rawgadget_usbip_udc::fake_vhci::{FakeVhci, WireReply};
use rawgadget_usbip_udc::ConnectionHandle;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Vendor IN request answered at once with 8 bytes made from wValue.
const ECHO: u8 = 0x5c;
/// Vendor IN request answered only when the test says so.
const HOLD: u8 = 0x5d;

fn echo_reply(value: u16) -> Vec<u8> {
    (0..8u8).map(|i| (value as u8).wrapping_add(i)).collect()
}

/// The bulk OUT side: one read per token from `go`, each read's length sent to `reads`.
struct Sink {
    go: mpsc::Receiver<()>,
    reads: mpsc::Sender<usize>,
}

/// The ep0 thread: descriptors, SET_CONFIGURATION (enables bulk OUT 0x02 and starts the
/// [`Sink`] on it), [`ECHO`] and [`HOLD`]. Tells `held` when it holds a SETUP and answers it
/// once `release` says so.
fn event_loop(
    gadget: Gadget,
    held: mpsc::Sender<u16>,
    release: mpsc::Receiver<()>,
    mut sink: Option<Sink>,
) {
    while let Ok(ev) = gadget.next_event() {
        let Event::Control(setup) = ev else { continue };
        let r = match (setup.request_type, setup.request) {
            (0x80, 6) => match setup.value >> 8 {
                1 => gadget.ep0_reply(&setup, &DEVICE).map(drop),
                2 => gadget.ep0_reply(&setup, &config_descriptor()).map(drop),
                _ => gadget.ep0_stall(),
            },
            (0x00, 9) => (|| {
                let ep = gadget.enable(&endpoint_descriptor(&BULK_OUT))?;
                gadget.configure()?;
                if let Some(Sink { go, reads }) = sink.take() {
                    thread::spawn(move || {
                        let mut buf = vec![0u8; 4096];
                        while go.recv().is_ok() {
                            let Ok(n) = ep.read_into(&mut buf) else {
                                return;
                            };
                            if reads.send(n).is_err() {
                                return;
                            }
                        }
                    });
                }
                gadget.ep0_ack()
            })(),
            (0xc0, ECHO) => gadget.ep0_reply(&setup, &echo_reply(setup.value)).map(drop),
            (0xc0, HOLD) => {
                let _ = held.send(setup.value);
                let _ = release.recv();
                gadget.ep0_reply(&setup, &echo_reply(setup.value)).map(drop)
            }
            _ => gadget.ep0_stall(),
        };
        if matches!(r, Err(e) if e.is_interrupted()) {
            return;
        }
    }
}

struct Rig {
    gadget: Gadget,
    vhci: FakeVhci<UnixStream>,
    held: mpsc::Receiver<u16>,
    release: mpsc::Sender<()>,
    go: mpsc::Sender<()>,
    reads: mpsc::Receiver<usize>,
    events: Option<thread::JoinHandle<()>>,
    _conn: ConnectionHandle,
}

impl Rig {
    fn start() -> Rig {
        let (backend, device) = InProcess::usbip(UsbipConfig::default());
        let gadget = Gadget::builder()
            .speed(Speed::High)
            .build(Arc::new(backend))
            .expect("INIT");
        gadget.run().expect("RUN");
        let (held_tx, held) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let (reads_tx, reads) = mpsc::channel();
        let sink = Sink {
            go: go_rx,
            reads: reads_tx,
        };
        let events = {
            let g = gadget.clone();
            thread::spawn(move || event_loop(g, held_tx, release_rx, Some(sink)))
        };
        let speed = device.wait_running(TIMEOUT).expect("RUN");
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let conn = device
            .connect(ours, Budget::LOCAL_VHCI, tracing::info_span!("test"))
            .expect("connect");
        let mut vhci = FakeVhci::new(theirs, speed, 0x0001_0002);
        Host::new(HostConfig {
            read_strings: false,
            ..HostConfig::default()
        })
        .enumerate(&mut vhci)
        .expect("enumeration over USB/IP");
        Rig {
            gadget,
            vhci,
            held,
            release,
            go,
            reads,
            events: Some(events),
            _conn: conn,
        }
    }

    /// A bulk OUT URB of `len` bytes to 0x02.
    fn bulk_out(&mut self, len: usize) -> UrbId {
        self.vhci.submit(Urb::bulk(0x02, vec![0x5a; len]))
    }

    fn vendor_in(&mut self, request: u8, value: u16) -> UrbId {
        self.vhci
            .submit(Urb::control(setup(0xc0, request, value, 0, 8), &[]))
    }

    /// The seqnums of the RET_SUBMITs read so far, in order.
    fn ret_submit_seqnums(&self) -> Vec<u32> {
        self.vhci
            .replies
            .iter()
            .filter_map(|r| match r {
                WireReply::RetSubmit { seqnum, .. } => Some(*seqnum),
                _ => None,
            })
            .collect()
    }

    /// The RET_SUBMITs written since the first `first` ones: `count` of them, in submission
    /// order (contract D14 for ep0, U8 for bulk).
    fn assert_ret_submits_in_order(&self, first: usize, count: usize) {
        let seqnums = &self.ret_submit_seqnums()[first..];
        assert_eq!(seqnums.len(), count);
        assert!(
            seqnums.windows(2).all(|w| w[0] < w[1]),
            "RET_SUBMITs in submission order: {seqnums:?}"
        );
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.release.send(());
        self.vhci.detach();
        self.gadget.stop_events();
        if let Some(t) = self.events.take() {
            let _ = t.join();
        }
    }
}

/// contract D14 with P4's write-behind: 32 control URBs queued at once, answered back to back
/// by the ep0 thread, all come back with their own data and in submission order, several
/// rounds in a row.
#[test]
fn d14_queued_controls_answered_back_to_back_keep_order_and_data() {
    let mut rig = Rig::start();
    for round in 0..4u16 {
        let first = rig.ret_submit_seqnums().len();
        let ids: Vec<(UrbId, u16)> = (0..32u16)
            .map(|i| {
                let value = round * 100 + i;
                (rig.vendor_in(ECHO, value), value)
            })
            .collect();
        for (id, value) in &ids {
            let c = rig.vhci.wait(*id, TIMEOUT).expect("given back");
            assert_eq!(c.status, Ok(()), "URB {value}");
            assert_eq!(c.actual_length, 8);
            assert_eq!(
                &c.buffer[..8],
                &echo_reply(*value)[..],
                "URB {value}'s data"
            );
        }
        rig.assert_ret_submits_in_order(first, 32);
    }
    assert_eq!(rig.vhci.error(), None);
}

/// contract P4, "Write-behind": a reply made while the ep0 thread owes the next queued
/// SETUP is not stranded when that answer never comes: the writer thread writes it once it
/// has waited `MAX_WRITE_BEHIND` (2 ms; the bound here leaves room for a loaded machine, and
/// is below the writer's 500 ms poll), and the held URB completes once answered.
#[test]
fn p4_reply_is_not_stranded_behind_an_unanswered_setup() {
    let mut rig = Rig::start();
    let first = rig.vendor_in(ECHO, 1);
    let held = rig.vendor_in(HOLD, 2);
    assert_eq!(
        rig.held.recv_timeout(TIMEOUT),
        Ok(2),
        "the second SETUP is held"
    );
    let start = Instant::now();
    let c = rig
        .vhci
        .wait(first, TIMEOUT)
        .expect("the first reply arrives");
    assert_eq!(&c.buffer[..8], &echo_reply(1)[..]);
    assert!(
        start.elapsed() < Duration::from_millis(250),
        "the first reply waited {:?}",
        start.elapsed()
    );
    assert!(rig.vhci.take_done(held).is_none(), "not answered yet");
    rig.release.send(()).unwrap();
    let c = rig.vhci.wait(held, TIMEOUT).expect("answered");
    assert_eq!(&c.buffer[..8], &echo_reply(2)[..]);
    assert_eq!(rig.vhci.error(), None);
}

/// contract P4's write-behind on bulk OUT, with U8 (one URB per endpoint at a time, in
/// order): 32 OUT URBs queued at once, read back to back by the reader thread, all complete
/// whole and in submission order, several rounds in a row.
#[test]
fn u8_queued_out_urbs_read_back_to_back_keep_order() {
    let mut rig = Rig::start();
    for round in 0..4usize {
        let first = rig.ret_submit_seqnums().len();
        let ids: Vec<(UrbId, usize)> = (0..32)
            .map(|i| {
                let len = 100 + round * 32 + i;
                (rig.bulk_out(len), len)
            })
            .collect();
        for _ in 0..32 {
            rig.go.send(()).unwrap();
        }
        for (id, len) in &ids {
            let c = rig.vhci.wait(*id, TIMEOUT).expect("given back");
            assert_eq!(c.status, Ok(()));
            assert_eq!(c.actual_length as usize, *len);
            assert_eq!(
                rig.reads.recv_timeout(TIMEOUT),
                Ok(*len),
                "the reader got it"
            );
        }
        rig.assert_ret_submits_in_order(first, 32);
    }
    assert_eq!(rig.vhci.error(), None);
}

/// contract P4, write-behind on bulk OUT: a read's reply made while the next OUT URB waits
/// is not stranded when the reader does not read again: the host gets it within the bound
/// (`MAX_WRITE_BEHIND`, 2 ms; 250 ms leaves room for a loaded machine), and the next URB
/// completes once read.
#[test]
fn p4_out_reply_is_not_stranded_when_the_reader_stops() {
    let mut rig = Rig::start();
    let first = rig.bulk_out(10);
    let second = rig.bulk_out(20);
    // both reach the controller before the reader reads: its read finds the second waiting
    thread::sleep(Duration::from_millis(20));
    rig.go.send(()).unwrap();
    assert_eq!(rig.reads.recv_timeout(TIMEOUT), Ok(10));
    let start = Instant::now();
    let c = rig
        .vhci
        .wait(first, TIMEOUT)
        .expect("the first reply arrives");
    assert_eq!(c.actual_length, 10);
    assert!(
        start.elapsed() < Duration::from_millis(250),
        "the first reply waited {:?}",
        start.elapsed()
    );
    assert!(rig.vhci.take_done(second).is_none(), "not read yet");
    rig.go.send(()).unwrap();
    assert_eq!(rig.reads.recv_timeout(TIMEOUT), Ok(20));
    let c = rig.vhci.wait(second, TIMEOUT).expect("read");
    assert_eq!(c.actual_length, 20);
    assert_eq!(rig.vhci.error(), None);
}
