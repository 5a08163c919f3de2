//! Random client operations and controller callbacks on one engine instance over the scripted
//! `MockUdc`: nothing may panic, `Instance::assert_invariants` holds after every step, every
//! blocked operation completes at most once (and never an operation that was not blocked), and
//! after close every blocked operation has completed exactly once.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rawgadget_engine::mock::MockUdc;
use rawgadget_engine::{BusEvent, ClientOp, Completion, EpId, Instance, OpId, Outcome, RequestId};
use rawgadget_uapi::{Errno, UsbRawEpIo, UsbRawInit};

#[derive(Arbitrary, Debug)]
enum Step {
    Init {
        speed: u8,
        names: u8,
    },
    Run {
        arg: u8,
    },
    Fetch {
        capacity: u8,
    },
    Ep0Write {
        len: u8,
        flags: u8,
        short_payload: bool,
    },
    Ep0Read {
        len: u8,
        ep: u8,
    },
    EpEnable {
        address: u8,
        attributes: u8,
        maxp: u16,
        desc_type: u8,
    },
    EpDisable {
        arg: u64,
    },
    EpWrite {
        ep: u8,
        len: u16,
        flags: u8,
    },
    EpRead {
        ep: u8,
        len: u16,
    },
    Configure {
        arg: u8,
    },
    VbusDraw {
        arg: u64,
    },
    EpsInfo,
    Ep0Stall {
        arg: u8,
    },
    SetHalt {
        arg: u64,
    },
    ClearHalt {
        arg: u64,
    },
    SetWedge {
        arg: u64,
    },
    /// A signal to one of the blocked operations.
    Cancel {
        which: u8,
    },
    /// The controller presents a SETUP.
    Setup {
        bytes: [u8; 8],
    },
    Bus {
        which: u8,
    },
    /// The controller completes the oldest request on an endpoint.
    Complete {
        ep: u8,
        status: u8,
        actual: u16,
        data: Vec<u8>,
    },
    /// A completion for a request the engine never queued.
    Stray {
        ep: u8,
        id: u64,
    },
    /// Errors the mock returns from now on.
    Inject {
        which: u8,
        errno: u8,
    },
    Close,
}

const ERRNOS: [Option<Errno>; 6] = [
    None,
    Some(Errno::ESHUTDOWN),
    Some(Errno::EAGAIN),
    Some(Errno::EINVAL),
    Some(Errno::EBUSY),
    Some(Errno::ENOMEM),
];

const STATUSES: [Result<(), Errno>; 6] = [
    Ok(()),
    Err(Errno::ESHUTDOWN),
    Err(Errno::ECONNRESET),
    Err(Errno::EOVERFLOW),
    Err(Errno::EPIPE),
    Err(Errno::EPROTO),
];

struct Tracker {
    pending: BTreeSet<OpId>,
    finished: BTreeSet<OpId>,
}

impl Tracker {
    fn outcome(&mut self, o: Outcome) {
        if let Outcome::Pending(id) = o {
            assert!(self.pending.insert(id), "op id {id:?} handed out twice");
            assert!(!self.finished.contains(&id), "op id {id:?} reused");
        }
    }
    fn drain(&mut self, inst: &mut Instance) {
        while let Some(c) = inst.poll_completion() {
            assert!(
                self.pending.remove(&c.op),
                "completion for {:?}, which was not blocked",
                c.op
            );
            assert!(self.finished.insert(c.op), "{:?} completed twice", c.op);
        }
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let mut inst = Instance::new();
    let mut udc = MockUdc::default();
    let mut t = Tracker {
        pending: BTreeSet::new(),
        finished: BTreeSet::new(),
    };
    for step in steps {
        match step {
            Step::Init { speed, names } => {
                let (driver, device) = match names % 3 {
                    0 => ("dummy_udc", "dummy_udc.0"),
                    1 => ("dummy_udc", "dummy_udc.7"),
                    _ => ("", ""),
                };
                let o = inst.handle_client(
                    &mut udc,
                    ClientOp::Init(Box::new(UsbRawInit::new(driver, device, speed % 8))),
                );
                t.outcome(o);
            }
            Step::Run { arg } => t.outcome(inst.handle_client(
                &mut udc,
                ClientOp::Run {
                    arg: u64::from(arg % 2),
                },
            )),
            Step::Fetch { capacity } => t.outcome(inst.handle_client(
                &mut udc,
                ClientOp::EventFetch {
                    capacity: u32::from(capacity),
                },
            )),
            Step::Ep0Write {
                len,
                flags,
                short_payload,
            } => {
                let io = UsbRawEpIo {
                    ep: 0,
                    flags: u16::from(flags % 3),
                    length: u32::from(len),
                };
                let n = if short_payload { len / 2 } else { len };
                t.outcome(inst.handle_client(
                    &mut udc,
                    ClientOp::Ep0Write {
                        io,
                        data: vec![0xaa; usize::from(n)],
                    },
                ))
            }
            Step::Ep0Read { len, ep } => {
                let io = UsbRawEpIo {
                    ep: u16::from(ep % 32),
                    flags: 0,
                    length: u32::from(len),
                };
                t.outcome(inst.handle_client(
                    &mut udc,
                    ClientOp::Ep0Read {
                        io,
                        buf: Vec::new(),
                    },
                ))
            }
            Step::EpEnable {
                address,
                attributes,
                maxp,
                desc_type,
            } => {
                let m = maxp.to_le_bytes();
                let desc = [9, desc_type % 7, address, attributes, m[0], m[1], 0, 1, 0];
                t.outcome(inst.handle_client(&mut udc, ClientOp::EpEnable { desc }))
            }
            Step::EpDisable { arg } => {
                t.outcome(inst.handle_client(&mut udc, ClientOp::EpDisable { arg: arg % 40 }))
            }
            Step::EpWrite { ep, len, flags } => {
                let io = UsbRawEpIo {
                    ep: u16::from(ep % 32),
                    flags: u16::from(flags % 3),
                    length: u32::from(len % 4096),
                };
                let data = vec![0x55; usize::from(len % 4096)];
                t.outcome(inst.handle_client(&mut udc, ClientOp::EpWrite { io, data }))
            }
            Step::EpRead { ep, len } => {
                let io = UsbRawEpIo {
                    ep: u16::from(ep % 32),
                    flags: 0,
                    length: u32::from(len % 4096),
                };
                t.outcome(inst.handle_client(
                    &mut udc,
                    ClientOp::EpRead {
                        io,
                        buf: Vec::new(),
                    },
                ))
            }
            Step::Configure { arg } => t.outcome(inst.handle_client(
                &mut udc,
                ClientOp::Configure {
                    arg: u64::from(arg % 2),
                },
            )),
            Step::VbusDraw { arg } => {
                t.outcome(inst.handle_client(&mut udc, ClientOp::VbusDraw { arg }))
            }
            Step::EpsInfo => t.outcome(inst.handle_client(&mut udc, ClientOp::EpsInfo)),
            Step::Ep0Stall { arg } => t.outcome(inst.handle_client(
                &mut udc,
                ClientOp::Ep0Stall {
                    arg: u64::from(arg % 2),
                },
            )),
            Step::SetHalt { arg } => {
                t.outcome(inst.handle_client(&mut udc, ClientOp::EpSetHalt { arg: arg % 40 }))
            }
            Step::ClearHalt { arg } => {
                t.outcome(inst.handle_client(&mut udc, ClientOp::EpClearHalt { arg: arg % 40 }))
            }
            Step::SetWedge { arg } => {
                t.outcome(inst.handle_client(&mut udc, ClientOp::EpSetWedge { arg: arg % 40 }))
            }
            Step::Cancel { which } => {
                if let Some(&op) = t
                    .pending
                    .iter()
                    .nth(usize::from(which) % t.pending.len().max(1))
                {
                    inst.cancel(&mut udc, op);
                }
            }
            Step::Setup { bytes } => {
                let _ = inst.handle_setup(bytes);
            }
            Step::Bus { which } => inst.handle_bus(match which % 4 {
                0 => BusEvent::Reset,
                1 => BusEvent::Suspend,
                2 => BusEvent::Resume,
                _ => BusEvent::Disconnect,
            }),
            Step::Complete {
                ep,
                status,
                actual,
                data,
            } => {
                let ep = if ep % 25 == 0 {
                    EpId::Ep0
                } else {
                    EpId::Ep(u16::from(ep % 25 - 1))
                };
                let status = STATUSES[usize::from(status) % STATUSES.len()];
                if let Some(c) = udc.complete(ep, status, u32::from(actual), &data) {
                    inst.handle_completion(c);
                }
            }
            Step::Stray { ep, id } => inst.handle_completion(Completion {
                ep: if ep % 2 == 0 {
                    EpId::Ep0
                } else {
                    EpId::Ep(u16::from(ep))
                },
                id: RequestId(id | 1 << 63),
                status: Ok(()),
                actual: 3,
                buf: vec![0; 3],
            }),
            Step::Inject { which, errno } => {
                let e = ERRNOS[usize::from(errno) % ERRNOS.len()];
                match which % 4 {
                    0 => udc.bind_error = e,
                    1 => udc.enable_error = e,
                    2 => udc.queue_error = e,
                    _ => udc.halt_error = e,
                }
            }
            Step::Close => inst.close(&mut udc),
        }
        t.drain(&mut inst);
        inst.assert_invariants();
    }
    // release(): every blocked operation ends, exactly once
    inst.close(&mut udc);
    t.drain(&mut inst);
    inst.assert_invariants();
    assert!(
        t.pending.is_empty(),
        "ops never completed after close: {:?}",
        t.pending
    );
});
