//! A rig for full-stack tests: a [`Bus`] driven by hand from both sides, the client side
//! through ioctls (`ClientOp`) and the host side through URBs.

#![allow(dead_code)]

use std::time::Duration;

use rawgadget_engine::{ClientOp, OpId, OpResult, Outcome, Payload};
use rawgadget_loopback::Bus;
use rawgadget_uapi::{event_type::*, Errno, UsbRawEpIo, UsbRawInit, USB_RAW_IO_FLAGS_ZERO};
use rawgadget_udc::{Personality, Urb, UrbCompletion, UrbId};

pub const BULK_IN_512: [u8; 9] = [9, 5, 0x81, 2, 0x00, 0x02, 0, 0, 0];
pub const BULK_OUT_512: [u8; 9] = [9, 5, 0x02, 2, 0x00, 0x02, 0, 0, 0];
pub const INT_IN_64: [u8; 9] = [9, 5, 0x85, 3, 64, 0, 10, 0, 0];

pub fn setup(request_type: u8, request: u8, value: u16, index: u16, length: u16) -> [u8; 8] {
    rawgadget_loopback::setup(request_type, request, value, index, length)
}

pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

pub struct Rig {
    pub bus: Bus,
}

impl Rig {
    /// INIT + RUN at `speed` (CONNECT fetched), before any host reset.
    pub fn connected_with(personality: Personality, speed: u8) -> Rig {
        let mut r = Rig {
            bus: Bus::with_personality(personality),
        };
        let init = UsbRawInit::new("dummy_udc", "dummy_udc.0", speed);
        assert_eq!(r.ret(ClientOp::Init(Box::new(init))), Ok(0));
        assert_eq!(r.ret(ClientOp::Run { arg: 0 }), Ok(0));
        assert_eq!(r.fetch().0, USB_RAW_EVENT_CONNECT);
        r
    }
    pub fn connected(speed: u8) -> Rig {
        Rig::connected_with(Personality::dummy(), speed)
    }
    /// Connected and past the host's first reset, RESET and RESUME fetched.
    pub fn running_with(personality: Personality, speed: u8) -> Rig {
        let mut r = Rig::connected_with(personality, speed);
        r.reset();
        assert_eq!(r.fetch().0, USB_RAW_EVENT_RESET);
        assert_eq!(r.fetch().0, USB_RAW_EVENT_RESUME);
        r
    }
    pub fn running() -> Rig {
        Rig::running_with(Personality::dummy(), rawgadget_uapi::speed::USB_SPEED_HIGH)
    }
    /// Running with bulk IN 0x81 (handle 0) and bulk OUT 0x02 (handle 1) enabled.
    pub fn with_bulk() -> Rig {
        let mut r = Rig::running();
        assert_eq!(r.enable(BULK_IN_512), Ok(0));
        assert_eq!(r.enable(BULK_OUT_512), Ok(1));
        r
    }

    pub fn op(&mut self, op: ClientOp) -> Outcome {
        let o = self.bus.client(op);
        self.bus.assert_invariants();
        o
    }
    pub fn done(&mut self, op: ClientOp) -> OpResult {
        match self.op(op) {
            Outcome::Done(r) => r,
            Outcome::Pending(id) => panic!("expected a result, got Pending({id:?})"),
        }
    }
    pub fn ret(&mut self, op: ClientOp) -> Result<u32, Errno> {
        self.done(op).ret
    }
    pub fn pending(&mut self, op: ClientOp) -> OpId {
        match self.op(op) {
            Outcome::Pending(id) => id,
            Outcome::Done(r) => panic!("expected Pending, got {r:?}"),
        }
    }
    /// The result of a blocked op, if it has finished.
    pub fn result(&mut self, id: OpId) -> Option<OpResult> {
        self.bus.take_completion(id)
    }
    pub fn ret_of(&mut self, id: OpId) -> Option<Result<u32, Errno>> {
        self.result(id).map(|r| r.ret)
    }
    /// EVENT_FETCH that must not block.
    pub fn fetch(&mut self) -> (u32, Option<[u8; 8]>) {
        self.try_fetch().expect("an event is queued")
    }
    /// EVENT_FETCH; `None` if it would block (the blocked fetch is then interrupted).
    pub fn try_fetch(&mut self) -> Option<(u32, Option<[u8; 8]>)> {
        let r = match self.op(ClientOp::EventFetch { capacity: 8 }) {
            Outcome::Done(r) => r,
            Outcome::Pending(id) => {
                self.bus.cancel(id);
                let r = self
                    .bus
                    .take_completion(id)
                    .expect("cancel completes a fetch");
                if r.ret == Err(Errno::EINTR) {
                    return None;
                }
                r
            }
        };
        match r.payload {
            Payload::Event { header, data } => {
                let setup = (data.len() == 8).then(|| data.clone().try_into().unwrap());
                Some((header.type_, setup))
            }
            p => panic!("EVENT_FETCH gave {:?} {p:?}", r.ret),
        }
    }
    /// All events queued now.
    pub fn events(&mut self) -> Vec<u32> {
        let mut v = Vec::new();
        while let Some((t, _)) = self.try_fetch() {
            v.push(t);
        }
        v
    }
    /// Fetches a CONTROL event and returns its SETUP.
    pub fn control_event(&mut self) -> [u8; 8] {
        let (t, s) = self.fetch();
        assert_eq!(t, USB_RAW_EVENT_CONTROL);
        s.unwrap()
    }

    pub fn enable(&mut self, desc: [u8; 9]) -> Result<u32, Errno> {
        self.ret(ClientOp::EpEnable { desc })
    }
    pub fn write(&mut self, ep: u16, data: Vec<u8>, zero: bool) -> Outcome {
        let io = UsbRawEpIo {
            ep,
            flags: if zero { USB_RAW_IO_FLAGS_ZERO } else { 0 },
            length: data.len() as u32,
        };
        self.op(ClientOp::EpWrite { io, data })
    }
    pub fn read(&mut self, ep: u16, length: u32) -> Outcome {
        let io = UsbRawEpIo {
            ep,
            flags: 0,
            length,
        };
        self.op(ClientOp::EpRead {
            io,
            buf: Vec::new(),
        })
    }
    pub fn ep0_write(&mut self, data: Vec<u8>, zero: bool) -> Outcome {
        let io = UsbRawEpIo {
            ep: 0,
            flags: if zero { USB_RAW_IO_FLAGS_ZERO } else { 0 },
            length: data.len() as u32,
        };
        self.op(ClientOp::Ep0Write { io, data })
    }
    pub fn ep0_read(&mut self, length: u32) -> Outcome {
        let io = UsbRawEpIo {
            ep: 0,
            flags: 0,
            length,
        };
        self.op(ClientOp::Ep0Read {
            io,
            buf: Vec::new(),
        })
    }

    /// A full host port reset (50 ms).
    pub fn reset(&mut self) {
        self.bus.port_reset();
        self.bus.advance(Duration::from_millis(50));
        assert!(self.bus.port_status().enabled);
    }
    pub fn submit(&mut self, urb: Urb) -> UrbId {
        let id = self.bus.submit(urb);
        self.bus.assert_invariants();
        id
    }
    pub fn control(&mut self, setup: [u8; 8], data: &[u8]) -> UrbId {
        self.submit(Urb::control(setup, data))
    }
    pub fn urb(&mut self, id: UrbId) -> Option<UrbCompletion> {
        self.bus.take_urb_completion(id)
    }
    pub fn urb_done(&mut self, id: UrbId) -> UrbCompletion {
        self.urb(id).expect("the URB was given back")
    }
}

/// Unwraps a finished op's result.
pub fn done(o: Outcome) -> OpResult {
    match o {
        Outcome::Done(r) => r,
        Outcome::Pending(id) => panic!("expected a result, got Pending({id:?})"),
    }
}

/// The id of a blocked op.
pub fn pending(o: Outcome) -> OpId {
    match o {
        Outcome::Pending(id) => id,
        Outcome::Done(r) => panic!("expected Pending, got {r:?}"),
    }
}

/// The data an EP_READ/EP0_READ returned.
pub fn data(r: &OpResult) -> &[u8] {
    match &r.payload {
        Payload::Data(d) => d,
        _ => &[],
    }
}
