//! The whole in-process stack: engine + controller model (dummy personality) + host traffic,
//! driven by random client operations, URBs, unlinks, port actions and time. Nothing may
//! panic; the engine's and the model's invariants hold after every step; every blocked client
//! operation and every URB completes at most once and only if it was outstanding; after close
//! and power-off, every one has completed exactly once (nothing lost).
#![no_main]

use std::collections::BTreeSet;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rawgadget_engine::{ClientOp, OpId, Outcome};
use rawgadget_loopback::Bus;
use rawgadget_uapi::{UsbRawEpIo, UsbRawInit};
use rawgadget_udc::{Personality, Unlink, Urb, UrbFlags, UrbId, UrbKind};

#[derive(Arbitrary, Debug)]
enum Step {
    // client side
    Fetch,
    Ep0Write {
        len: u8,
        zero: bool,
    },
    Ep0Read {
        len: u8,
    },
    Ep0Stall,
    EpEnable {
        address: u8,
        attributes: u8,
        maxp: u16,
    },
    EpDisable {
        arg: u8,
    },
    EpWrite {
        ep: u8,
        len: u16,
        zero: bool,
    },
    EpRead {
        ep: u8,
        len: u16,
    },
    SetHalt {
        arg: u8,
    },
    ClearHalt {
        arg: u8,
    },
    SetWedge {
        arg: u8,
    },
    Configure,
    Cancel {
        which: u8,
    },
    Reopen {
        speed: u8,
    },
    // host side
    Control {
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        length: u16,
    },
    RawUrb {
        endpoint: u8,
        kind: u8,
        len: u16,
        setup: [u8; 8],
        zero_packet: bool,
    },
    Bulk {
        endpoint: u8,
        len: u16,
        zero_packet: bool,
    },
    Unlink {
        which: u8,
        kill: bool,
    },
    Reset,
    Suspend,
    Resume,
    Power {
        on: bool,
    },
    Advance {
        ms: u8,
    },
}

/// Plausible endpoint descriptors first, so that enables succeed often.
fn desc(address: u8, attributes: u8, maxp: u16) -> [u8; 9] {
    let (a, t, m) = match attributes % 4 {
        0 => (0x81, 2, 512),
        1 => (0x02, 2, 512),
        2 => (0x80 | (address & 0x0f), 3, maxp % 1100),
        _ => (address, attributes, maxp),
    };
    let m = u16::to_le_bytes(m);
    [9, 5, a, t, m[0], m[1], 0, 1, 0]
}

#[derive(Default)]
struct Books {
    ops: BTreeSet<OpId>,
    ops_done: BTreeSet<OpId>,
    urbs: Vec<UrbId>,
    urbs_done: BTreeSet<UrbId>,
}

impl Books {
    fn outcome(&mut self, o: Outcome) {
        if let Outcome::Pending(id) = o {
            assert!(self.ops.insert(id), "op id {id:?} handed out twice");
        }
    }
    fn drain(&mut self, bus: &mut Bus) {
        while let Some(c) = bus.poll_completion() {
            assert!(
                self.ops.remove(&c.op),
                "completion for {:?}, which was not blocked",
                c.op
            );
            assert!(self.ops_done.insert(c.op), "{:?} completed twice", c.op);
        }
        while let Some(u) = bus.poll_urb_completion() {
            let pos = self.urbs.iter().position(|&x| x == u.id);
            assert!(
                pos.is_some(),
                "URB {:?} given back but not outstanding",
                u.id
            );
            self.urbs.remove(pos.unwrap());
            assert!(
                self.urbs_done.insert(u.id),
                "URB {:?} given back twice",
                u.id
            );
            assert!(u.actual_length as usize <= u.buffer.len());
        }
    }
}

fn open(bus: &mut Bus, books: &mut Books, speed: u8) {
    let init = UsbRawInit::new("dummy_udc", "dummy_udc.0", speed % 6);
    books.outcome(bus.client(ClientOp::Init(Box::new(init))));
    books.outcome(bus.client(ClientOp::Run { arg: 0 }));
}

fuzz_target!(|input: (bool, u8, Vec<Step>)| {
    let (super_speed, speed, steps) = input;
    let personality = if super_speed {
        Personality::dummy_super_speed()
    } else {
        Personality::dummy()
    };
    let mut bus = Bus::with_personality(personality);
    let mut b = Books::default();
    open(&mut bus, &mut b, speed);
    for step in steps {
        match step {
            Step::Fetch => b.outcome(bus.client(ClientOp::EventFetch { capacity: 8 })),
            Step::Ep0Write { len, zero } => {
                let io = UsbRawEpIo {
                    ep: 0,
                    flags: u16::from(zero),
                    length: u32::from(len),
                };
                b.outcome(bus.client(ClientOp::Ep0Write {
                    io,
                    data: vec![0x11; usize::from(len)],
                }))
            }
            Step::Ep0Read { len } => {
                let io = UsbRawEpIo {
                    ep: 0,
                    flags: 0,
                    length: u32::from(len),
                };
                b.outcome(bus.client(ClientOp::Ep0Read {
                    io,
                    buf: Vec::new(),
                }))
            }
            Step::Ep0Stall => b.outcome(bus.client(ClientOp::Ep0Stall { arg: 0 })),
            Step::EpEnable {
                address,
                attributes,
                maxp,
            } => b.outcome(bus.client(ClientOp::EpEnable {
                desc: desc(address, attributes, maxp),
            })),
            Step::EpDisable { arg } => b.outcome(bus.client(ClientOp::EpDisable {
                arg: u64::from(arg % 26),
            })),
            Step::EpWrite { ep, len, zero } => {
                let len = len % 3000;
                let io = UsbRawEpIo {
                    ep: u16::from(ep % 26),
                    flags: u16::from(zero),
                    length: u32::from(len),
                };
                b.outcome(bus.client(ClientOp::EpWrite {
                    io,
                    data: vec![0x22; usize::from(len)],
                }))
            }
            Step::EpRead { ep, len } => {
                let io = UsbRawEpIo {
                    ep: u16::from(ep % 26),
                    flags: 0,
                    length: u32::from(len % 3000),
                };
                b.outcome(bus.client(ClientOp::EpRead {
                    io,
                    buf: Vec::new(),
                }))
            }
            Step::SetHalt { arg } => b.outcome(bus.client(ClientOp::EpSetHalt {
                arg: u64::from(arg % 26),
            })),
            Step::ClearHalt { arg } => b.outcome(bus.client(ClientOp::EpClearHalt {
                arg: u64::from(arg % 26),
            })),
            Step::SetWedge { arg } => b.outcome(bus.client(ClientOp::EpSetWedge {
                arg: u64::from(arg % 26),
            })),
            Step::Configure => b.outcome(bus.client(ClientOp::Configure { arg: 0 })),
            Step::Cancel { which } => {
                if let Some(&op) = b.ops.iter().nth(usize::from(which) % b.ops.len().max(1)) {
                    bus.cancel(op);
                }
            }
            Step::Reopen { speed } => {
                for c in bus.reopen() {
                    assert!(
                        b.ops.remove(&c.op),
                        "completion for {:?}, which was not blocked",
                        c.op
                    );
                }
                b.drain(&mut bus);
                assert!(b.ops.is_empty(), "close left blocked ops: {:?}", b.ops);
                // a new instance numbers its operations from 1 again
                b.ops_done.clear();
                open(&mut bus, &mut b, speed);
            }
            Step::Control {
                request_type,
                request,
                value,
                index,
                length,
            } => {
                let setup =
                    rawgadget_loopback::setup(request_type, request, value, index, length % 1024);
                b.urbs.push(bus.submit(Urb::control(setup, &[0x33; 64])));
            }
            Step::RawUrb {
                endpoint,
                kind,
                len,
                setup,
                zero_packet,
            } => {
                let kind = match kind % 4 {
                    0 => UrbKind::Control { setup },
                    1 => UrbKind::Bulk,
                    2 => UrbKind::Interrupt,
                    _ => UrbKind::Isochronous {
                        packets: Vec::new(),
                    },
                };
                let urb = Urb {
                    endpoint,
                    kind,
                    buffer: vec![0x44; usize::from(len % 3000)],
                    flags: UrbFlags {
                        zero_packet,
                        short_not_ok: false,
                    },
                };
                b.urbs.push(bus.submit(urb));
            }
            Step::Bulk {
                endpoint,
                len,
                zero_packet,
            } => {
                let ep = [0x81, 0x02, 0x85, 0x01][usize::from(endpoint % 4)];
                let mut urb = Urb::bulk(ep, vec![0x55; usize::from(len % 3000)]);
                urb.flags.zero_packet = zero_packet;
                b.urbs.push(bus.submit(urb));
            }
            Step::Unlink { which, kill } => {
                if let Some(&id) = b.urbs.get(usize::from(which) % b.urbs.len().max(1)) {
                    let how = if kill { Unlink::Kill } else { Unlink::Async };
                    let _ = bus.unlink(id, how);
                }
            }
            Step::Reset => bus.port_reset(),
            Step::Suspend => {
                let _ = bus.port_suspend();
            }
            Step::Resume => {
                let _ = bus.port_resume();
            }
            Step::Power { on } => bus.port_power(on),
            Step::Advance { ms } => bus.advance(Duration::from_millis(u64::from(ms))),
        }
        b.drain(&mut bus);
        bus.assert_invariants();
    }
    // nothing lost: close the instance, power the port off, let time pass
    bus.close();
    bus.port_power(false);
    bus.advance(Duration::from_millis(100));
    b.drain(&mut bus);
    bus.assert_invariants();
    assert!(b.ops.is_empty(), "blocked ops never completed: {:?}", b.ops);
    assert!(b.urbs.is_empty(), "URBs never given back: {:?}", b.urbs);
});
