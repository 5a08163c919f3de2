//! The USB/IP device end to end: bytes from a hostile peer through the codec and the driver's
//! sans-IO link (`rawgadget-usbip-udc`), into the controller model and the engine, with a
//! scripted raw-gadget client answering on the other side.
//!
//! Nothing may panic. After every step the engine's and the model's invariants hold, the link
//! stays within its budgets, and every byte it sends is accepted by a host-side decoder that
//! plays vhci (contract U13–U16): framing, known seqnums, and in particular no RET_SUBMIT for a
//! URB after its RET_UNLINK -ECONNRESET (U10, U14: the decoder forgets the URB then, as vhci
//! gives it back, so a late reply is an unknown seqnum).
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rawgadget_loopback::scripted::{DeviceOp, DeviceScript, ScriptedDevice};
use rawgadget_loopback::{Bus, Device};
use rawgadget_uapi::Speed;
use rawgadget_udc::Instant;
use rawgadget_usbip::wire::{CmdUnlinkRepr, Direction, IsoPacketDescriptor};
use rawgadget_usbip::{
    CmdSubmit, CmdSubmitRepr, DeviceDecoder, DeviceEvent, DevicePdu, HostDecoder, HostPdu,
    HostStep, Limits, OpRequest, UrbShape, UsbDevice,
};
use rawgadget_usbip_udc::{usbip_iso_personality, usbip_personality, Budget, Link, LinkConfig};

#[derive(Arbitrary, Debug)]
enum Step {
    /// Raw bytes from the peer.
    Bytes(Vec<u8>),
    /// A well-formed CMD_SUBMIT, to get past the framing more often.
    Submit {
        seqnum: u8,
        ep: u8,
        dir_in: bool,
        len: u16,
        flags: u8,
        packets: u8,
        setup: [u8; 8],
    },
    /// A well-formed CMD_UNLINK.
    Unlink { seqnum: u8, target: u8 },
    /// The client writes to / reads from an endpoint it enabled.
    DeviceWrite { address: u8, len: u16, zero: bool },
    DeviceRead { address: u8, len: u16 },
    /// The client stops answering SETUPs (or starts again).
    HoldSetups(bool),
    /// Time passes.
    Time(u16),
    /// The connection ends (U20).
    Lost,
}

#[derive(Arbitrary, Debug)]
struct Input {
    handshake: bool,
    speed: u8,
    second_reset: bool,
    /// The iso-capable personality (contract §4) with a device that has iso endpoints.
    iso: bool,
    steps: Vec<Step>,
}

/// A vendor device with iso IN 0x81, iso OUT 0x02 (bInterval 1) and bulk IN 0x83, for the
/// iso-capable personality (udc names usbip-vudc).
fn iso_script(speed: u8) -> DeviceScript {
    let mut script = DeviceScript::vendor_loopback(speed);
    script.udc_driver = "usbip-vudc".into();
    script.udc_device = "usbip-vudc.0".into();
    script.configs = vec![vec![
        9, 2, 39, 0, 1, 1, 0, 0x80, 50, // CONFIG, wTotalLength 39
        9, 4, 0, 0, 3, 0xff, 0, 0, 0, // interface 0, 3 endpoints
        7, 5, 0x81, 0x01, 0x00, 0x04, 1, // iso IN 1
        7, 5, 0x02, 0x01, 0x00, 0x04, 1, // iso OUT 2
        7, 5, 0x83, 0x02, 0x00, 0x02, 0, // bulk IN 3
    ]];
    script
}

/// Small budgets so that a run stays fast; the limits themselves are what is fuzzed.
const BUDGET: Budget = Budget {
    limits: Limits {
        max_transfer_buffer_length: 1 << 16,
        max_iso_packets: 32,
    },
    max_urbs: 64,
    max_in_flight_bytes: 1 << 20,
    max_output_bytes: 1 << 20,
};

/// The host side: learns shapes from the same bytes the link decodes, checks every reply.
struct Host {
    shadow: DeviceDecoder,
    decoder: HostDecoder,
    unlinks: HashMap<u32, u32>,
    /// OP_REP_IMPORT bytes still to skip at the start of the output.
    skip: usize,
}

impl Host {
    /// Registers what the peer's bytes submit; false once the stream is broken.
    fn learn(&mut self, mut bytes: &[u8]) -> bool {
        loop {
            let Ok((used, ev)) = self.shadow.decode(bytes) else {
                return false;
            };
            bytes = &bytes[used..];
            match ev {
                DeviceEvent::NeedMore(_) => return true,
                DeviceEvent::Request(OpRequest::Import { .. }) => {
                    self.shadow.import_accepted();
                    self.skip = 8 + 312;
                }
                DeviceEvent::Request(OpRequest::Devlist) => return false,
                DeviceEvent::Pdu(DevicePdu::Submit(s)) => {
                    let iso = s.header.iso_packet_count() > 0;
                    self.decoder
                        .submitted(s.header.seqnum, UrbShape::of(&s.header, iso));
                }
                DeviceEvent::Pdu(DevicePdu::Unlink(u)) => {
                    self.unlinks.insert(u.seqnum, u.unlink_seqnum);
                }
            }
        }
    }

    /// Checks every byte the link sent, as vhci reads them.
    fn check(&mut self, mut out: &[u8]) {
        let skip = self.skip.min(out.len());
        self.skip -= skip;
        out = &out[skip..];
        while !out.is_empty() {
            let (used, step) = match self.decoder.decode(out) {
                Ok(x) => x,
                Err(e) => panic!("vhci would drop the device: {e}"),
            };
            out = &out[used..];
            if let HostStep::Pdu(HostPdu::RetUnlink(r)) = step {
                if r.status == -104 {
                    // vhci gives the URB back now; a later RET_SUBMIT would be fatal (U14)
                    if let Some(target) = self.unlinks.get(&r.seqnum) {
                        self.decoder.forget(*target);
                    }
                }
            }
        }
    }
}

fn pdu_bytes(step: &Step) -> Option<Vec<u8>> {
    Some(match *step {
        Step::Bytes(ref b) => b.clone(),
        Step::Submit {
            seqnum,
            ep,
            dir_in,
            len,
            flags,
            packets,
            setup,
        } => {
            let len = u32::from(len % 4096);
            let np = u32::from(packets % 5);
            let direction = if dir_in { Direction::In } else { Direction::Out };
            let per = if np > 0 { len / np } else { 0 };
            let iso_packets = (0..np)
                .map(|i| IsoPacketDescriptor {
                    offset: i * per,
                    length: per,
                    actual_length: 0,
                    status: 0,
                })
                .collect();
            let header = CmdSubmitRepr {
                seqnum: u32::from(seqnum),
                devid: 0x0001_0002,
                direction,
                ep: ep % 16,
                transfer_flags: u32::from(flags) & 0x41,
                transfer_buffer_length: len,
                start_frame: 0,
                number_of_packets: np,
                interval: 1,
                setup,
            };
            let data = if dir_in { Vec::new() } else { vec![0xa5; len as usize] };
            DevicePdu::Submit(CmdSubmit {
                header,
                data,
                iso_packets,
            })
            .to_vec()
        }
        Step::Unlink { seqnum, target } => DevicePdu::Unlink(CmdUnlinkRepr {
            seqnum: 1000 + u32::from(seqnum),
            devid: 0x0001_0002,
            unlink_seqnum: u32::from(target),
        })
        .to_vec(),
        _ => return None,
    })
}

fuzz_target!(|input: Input| {
    let speed = match input.speed % 4 {
        0 => Speed::Low,
        1 => Speed::Full,
        2 => Speed::High,
        _ => Speed::Super,
    };
    let (personality, script) = if input.iso {
        (usbip_iso_personality(), iso_script(speed as u8))
    } else {
        (
            usbip_personality(Speed::Super),
            DeviceScript::vendor_loopback(speed as u8),
        )
    };
    let mut bus = Bus::with_personality(personality);
    let mut dev = ScriptedDevice::new(script);
    let config = LinkConfig {
        budget: BUDGET,
        second_reset: input.second_reset,
    };
    let mut now = Instant::ZERO;
    while dev.step(&mut bus) {}
    let (mut link, shadow) = if input.handshake {
        (
            Link::with_handshake(config),
            DeviceDecoder::with_handshake(BUDGET.limits),
        )
    } else {
        let mut l = Link::attached(config);
        l.attach(&mut bus, now);
        (l, DeviceDecoder::attached(BUDGET.limits))
    };
    let mut host = Host {
        shadow,
        decoder: HostDecoder::new(),
        unlinks: HashMap::new(),
        skip: 0,
    };
    for step in &input.steps {
        let ok = match step {
            Step::DeviceWrite { address, len, zero } => {
                dev.push_op(DeviceOp::Write {
                    address: *address,
                    data: vec![0x3c; usize::from(*len % 2048)],
                    zero: *zero,
                });
                true
            }
            Step::DeviceRead { address, len } => {
                dev.push_op(DeviceOp::Read {
                    address: *address,
                    length: u32::from(*len % 2048),
                });
                true
            }
            Step::HoldSetups(hold) => {
                dev.hold_setups = *hold;
                true
            }
            Step::Time(ms) => {
                now = now + std::time::Duration::from_micros(u64::from(*ms) * 10);
                link.handle_timeout(&mut bus, now).is_ok()
            }
            Step::Lost => {
                link.connection_lost(&mut bus, now);
                false
            }
            other => {
                let bytes = pdu_bytes(other).unwrap_or_default();
                let learned = host.learn(&bytes);
                let r = link.handle_input(&mut bus, now, &bytes);
                if let Some(request) = link.poll_request() {
                    match request {
                        OpRequest::Import { busid } => {
                            let device = UsbDevice {
                                busnum: 1,
                                devnum: 1,
                                speed: speed as u32,
                                ..UsbDevice::default()
                            };
                            link.accept_import(&mut bus, now, &busid, device);
                        }
                        OpRequest::Devlist => {
                            link.answer_devlist(&Default::default());
                        }
                    }
                }
                r.is_ok() && learned && !link.is_closed()
            }
        };
        while dev.step(&mut bus) {}
        let collected = link.collect(&mut bus).is_ok();
        bus.assert_invariants();
        assert!(link.in_flight() <= BUDGET.max_urbs);
        assert!(link.in_flight_bytes() <= BUDGET.max_in_flight_bytes);
        if !link.is_closed() {
            let out = link.poll_transmit();
            host.check(&out);
        }
        if !ok || !collected {
            break;
        }
    }
    if !link.is_closed() {
        link.connection_lost(&mut bus, now);
    }
    while dev.step(&mut bus) {}
    bus.assert_invariants();
});
