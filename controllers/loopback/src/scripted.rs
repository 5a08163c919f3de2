//! A scripted raw-gadget client for tests, examples and fuzzing: a tiny device program written
//! against the engine's [`ClientOp`]s, stepped from the host's waits ([`Device`]).
//!
//! It opens the instance (INIT + RUN), keeps one EVENT_FETCH outstanding, answers standard
//! requests from its [`DeviceScript`] (descriptors, strings, SET_CONFIGURATION with
//! EP_ENABLE + CONFIGURE), passes other requests to an optional handler, and stalls what nobody
//! answers. Endpoint I/O is queued by the test as [`DeviceOp`]s and issued once the device is
//! configured. Everything it sees and every result it gets is recorded.
//!
//! It is deliberately small and literal, like the C examples shipped with raw gadget; the
//! built-in devices of `rawgadget-devices` are the real ones.

use std::collections::VecDeque;

use rawgadget_engine::{ClientOp, OpId, OpResult, Outcome, Payload};
use rawgadget_uapi::{event_type, speed, Errno, UsbRawEpIo, UsbRawInit, USB_RAW_IO_FLAGS_ZERO};
use rawgadget_usb::{ControlRequest, StringTable};

use crate::bus::Bus;
use crate::port::Device;

/// What the device answers with. See [`DeviceScript::vendor_loopback`] for an example.
#[derive(Clone, Debug)]
pub struct DeviceScript {
    /// INIT's speed (`USB_SPEED_*`).
    pub speed: u8,
    pub udc_driver: String,
    pub udc_device: String,
    /// The 18-byte device descriptor (any bytes: it is sent as is).
    pub device: Vec<u8>,
    /// Full configuration descriptors, by index.
    pub configs: Vec<Vec<u8>>,
    pub strings: StringTable,
    pub bos: Option<Vec<u8>>,
    pub qualifier: Option<Vec<u8>>,
    /// Set USB_RAW_IO_FLAGS_ZERO on replies shorter than wLength, so that a reply that is a
    /// multiple of ep0's maxpacket still ends the transfer (contract D4, D18).
    pub zero_on_short: bool,
}

impl DeviceScript {
    /// A vendor-specific device (VID 0x1d6b, PID 0x0104) with one interface: bulk IN 0x81,
    /// bulk OUT 0x02 and interrupt IN 0x83, sized for `speed_code`; three strings; bcdUSB 0x0200
    /// (0x0320 with a BOS at SuperSpeed).
    pub fn vendor_loopback(speed_code: u8) -> DeviceScript {
        let (bulk_mp, int_mp, ep0_mp, bcd): (u16, u16, u8, u16) = match speed_code {
            speed::USB_SPEED_SUPER => (1024, 1024, 9, 0x0320),
            speed::USB_SPEED_FULL => (64, 64, 64, 0x0200),
            speed::USB_SPEED_LOW => (8, 8, 8, 0x0110),
            _ => (512, 512, 64, 0x0200),
        };
        let bcd = bcd.to_le_bytes();
        #[rustfmt::skip]
        let device = vec![
            18, 1,            // bLength, bDescriptorType DEVICE
            bcd[0], bcd[1],   // bcdUSB
            0xff, 0, 0,       // bDeviceClass vendor, bDeviceSubClass, bDeviceProtocol
            ep0_mp,           // bMaxPacketSize0 (log2 at SS)
            0x6b, 0x1d,       // idVendor 0x1d6b
            0x04, 0x01,       // idProduct 0x0104
            0x00, 0x01,       // bcdDevice 1.00
            1, 2, 3,          // iManufacturer, iProduct, iSerialNumber
            1,                // bNumConfigurations
        ];
        let b = bulk_mp.to_le_bytes();
        let i = int_mp.to_le_bytes();
        let ss = speed_code == speed::USB_SPEED_SUPER;
        let mut config: Vec<u8> = vec![
            9, 2, 0, 0, // bLength, CONFIG, wTotalLength (patched below)
            1, 1, 4, // bNumInterfaces, bConfigurationValue 1, iConfiguration 4
            0x80, 50, // bmAttributes bus-powered, bMaxPower 100 mA
            9, 4, 0, 0, 3, 0xff, 0, 0,
            5, // interface 0 alt 0, 3 endpoints, vendor, iInterface 5
        ];
        for ep in [
            [7, 5, 0x81, 2, b[0], b[1], 0], // bulk IN 1
            [7, 5, 0x02, 2, b[0], b[1], 0], // bulk OUT 2
            [7, 5, 0x83, 3, i[0], i[1], 4], // interrupt IN 3, bInterval 4
        ] {
            config.extend_from_slice(&ep);
            if ss {
                config.extend_from_slice(&[6, 0x30, 0, 0, 0, 0]); // SS companion
            }
        }
        let total = (config.len() as u16).to_le_bytes();
        config[2] = total[0];
        config[3] = total[1];
        let mut strings = StringTable::new();
        for (ix, s) in [
            (1, "rawgadget"),
            (2, "loopback test device"),
            (3, "0001"),
            (4, "default"),
            (5, "vendor loopback"),
        ] {
            strings.set(ix, s).expect("short ASCII strings fit");
        }
        #[rustfmt::skip]
        let bos = ss.then(|| vec![
            5, 0x0f, 22, 0, 2,                  // BOS, wTotalLength 22, 2 capabilities
            7, 0x10, 2, 0x02, 0, 0, 0,           // USB 2.0 extension: LPM
            10, 0x10, 3, 0, 0x0e, 0, 1, 10, 0xff, 0x07, // SuperSpeed USB capability
        ]);
        #[rustfmt::skip]
        let qualifier = (speed_code == speed::USB_SPEED_HIGH || speed_code == speed::USB_SPEED_FULL).then(|| vec![
            10, 6, 0x00, 0x02, 0xff, 0, 0, 64, 1, 0, // DEVICE_QUALIFIER
        ]);
        DeviceScript {
            speed: speed_code,
            udc_driver: "dummy_udc".into(),
            udc_device: "dummy_udc.0".into(),
            device,
            configs: vec![config],
            strings,
            bos,
            qualifier,
            zero_on_short: true,
        }
    }

    /// The endpoint descriptors of configuration `value`, as EP_ENABLE's 9 bytes.
    pub fn endpoints(&self, value: u8) -> Vec<[u8; 9]> {
        let Some(cfg) = self.configs.iter().find(|c| c.len() >= 9 && c[5] == value) else {
            return Vec::new();
        };
        rawgadget_usb::Descriptors::new(cfg)
            .filter(|d| d.descriptor_type() == 5 && d.as_bytes().len() >= 7)
            .map(|d| {
                let mut e = [0u8; 9];
                let b = d.as_bytes();
                let n = b.len().min(9);
                e[..n].copy_from_slice(&b[..n]);
                e[0] = 9;
                e
            })
            .collect()
    }
}

/// What a handler answers to a request the script does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// EP0_WRITE these bytes (cut to wLength).
    Data(Vec<u8>),
    /// Accept: EP0_READ the data stage (or a 0-length status).
    Ack,
    /// EP0_STALL.
    Stall,
    /// Do nothing: the SETUP stays pending (contract D16 tests).
    Ignore,
}

/// Endpoint I/O the test wants the device to do once configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceOp {
    /// EP_WRITE on the endpoint enabled with this address.
    Write {
        address: u8,
        data: Vec<u8>,
        zero: bool,
    },
    /// EP_READ of `length` bytes.
    Read { address: u8, length: u32 },
}

/// A handler for requests the script does not answer.
pub type Handler = Box<dyn FnMut(&ControlRequest) -> Reply + Send>;

/// See the module doc.
pub struct ScriptedDevice {
    pub script: DeviceScript,
    pub handler: Option<Handler>,
    /// Leave every CONTROL event unanswered.
    pub hold_setups: bool,
    started: bool,
    /// EVENT_FETCH failed: the instance is not running; stop fetching.
    stopped: bool,
    fetch: Option<OpId>,
    ep0: Option<(OpId, ControlRequest)>,
    ops: VecDeque<DeviceOp>,
    in_flight: Vec<(OpId, DeviceOp)>,
    /// Every event fetched: its type and, for CONTROL, the request.
    pub events: Vec<(u32, Option<ControlRequest>)>,
    /// Results of the ep0 replies.
    pub ep0_results: Vec<(ControlRequest, Result<u32, Errno>)>,
    /// Results of endpoint I/O: the op and (ret, data read).
    pub io_results: Vec<(DeviceOp, Result<u32, Errno>, Vec<u8>)>,
    /// (address, handle) of enabled endpoints.
    pub enabled: Vec<(u8, u16)>,
    pub configured: Option<u8>,
    /// Errors from ioctls the device made on its own (INIT, RUN, EP_ENABLE ...).
    pub errors: Vec<(&'static str, Errno)>,
}

impl std::fmt::Debug for ScriptedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedDevice")
            .field("events", &self.events.len())
            .field("configured", &self.configured)
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl ScriptedDevice {
    pub fn new(script: DeviceScript) -> ScriptedDevice {
        ScriptedDevice {
            script,
            handler: None,
            hold_setups: false,
            started: false,
            stopped: false,
            fetch: None,
            ep0: None,
            ops: VecDeque::new(),
            in_flight: Vec::new(),
            events: Vec::new(),
            ep0_results: Vec::new(),
            io_results: Vec::new(),
            enabled: Vec::new(),
            configured: None,
            errors: Vec::new(),
        }
    }

    /// Queues endpoint I/O; issued once configured, in order.
    pub fn push_op(&mut self, op: DeviceOp) {
        self.ops.push_back(op);
    }

    /// The handle of the endpoint enabled with `address`.
    pub fn handle(&self, address: u8) -> Option<u16> {
        self.enabled
            .iter()
            .find(|(a, _)| *a == address)
            .map(|(_, h)| *h)
    }

    /// Types of the events seen, in order.
    pub fn event_types(&self) -> Vec<u32> {
        self.events.iter().map(|(t, _)| *t).collect()
    }

    /// The CONTROL requests seen, in order.
    pub fn setups(&self) -> Vec<ControlRequest> {
        self.events.iter().filter_map(|(_, r)| *r).collect()
    }

    /// Whether an ep0 reply or endpoint transfer is still blocked.
    pub fn busy(&self) -> bool {
        self.ep0.is_some() || !self.in_flight.is_empty()
    }

    fn run(&mut self, bus: &mut Bus, what: &'static str, op: ClientOp) -> Option<OpResult> {
        match bus.client(op) {
            Outcome::Done(r) => {
                if let Err(e) = r.ret {
                    self.errors.push((what, e));
                }
                Some(r)
            }
            Outcome::Pending(_) => {
                self.errors.push((what, Errno::EINPROGRESS));
                None
            }
        }
    }

    fn handle_event(&mut self, bus: &mut Bus, r: OpResult) {
        let Payload::Event { header, data } = r.payload else {
            if let Err(e) = r.ret {
                self.errors.push(("EVENT_FETCH", e));
            }
            return;
        };
        let req =
            (header.type_ == event_type::USB_RAW_EVENT_CONTROL && data.len() == 8).then(|| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data);
                ControlRequest::from_bytes(b)
            });
        self.events.push((header.type_, req));
        if let Some(req) = req {
            if !self.hold_setups {
                self.answer(bus, req);
            }
        }
    }

    fn reply(&mut self, bus: &mut Bus, req: ControlRequest, reply: Reply) {
        let is_in = req.request_type & 0x80 != 0 && req.length > 0;
        let op = match reply {
            Reply::Ignore => return,
            Reply::Stall => {
                self.run(bus, "EP0_STALL", ClientOp::Ep0Stall { arg: 0 });
                return;
            }
            Reply::Data(mut d) if is_in => {
                d.truncate(usize::from(req.length));
                let short = d.len() < usize::from(req.length);
                let flags = if short && self.script.zero_on_short {
                    USB_RAW_IO_FLAGS_ZERO
                } else {
                    0
                };
                let io = UsbRawEpIo {
                    ep: 0,
                    flags,
                    length: d.len() as u32,
                };
                ClientOp::Ep0Write { io, data: d }
            }
            // an IN request acked without data: a 0-length EP0_WRITE
            _ if is_in => ClientOp::Ep0Write {
                io: UsbRawEpIo::default(),
                data: Vec::new(),
            },
            _ => ClientOp::Ep0Read {
                io: UsbRawEpIo {
                    ep: 0,
                    flags: 0,
                    length: u32::from(req.length),
                },
                buf: Vec::new(),
            },
        };
        match bus.client(op) {
            Outcome::Done(r) => self.ep0_results.push((req, r.ret)),
            Outcome::Pending(id) => self.ep0 = Some((id, req)),
        }
    }

    fn answer(&mut self, bus: &mut Bus, req: ControlRequest) {
        let s = &self.script;
        let standard = req.request_type & 0x60 == 0;
        let reply = match (standard, req.request_type, req.request) {
            // GET_DESCRIPTOR
            (true, 0x80, 6) => match req.value_high() {
                1 => Reply::Data(s.device.clone()),
                2 => match s.configs.get(usize::from(req.value_low())) {
                    Some(c) => Reply::Data(c.clone()),
                    None => Reply::Stall,
                },
                3 => match s.strings.answer(&req) {
                    Some(d) => Reply::Data(d),
                    None => Reply::Stall,
                },
                6 => s.qualifier.clone().map_or(Reply::Stall, Reply::Data),
                0x0f => s.bos.clone().map_or(Reply::Stall, Reply::Data),
                _ => self.custom(&req),
            },
            // SET_CONFIGURATION
            (true, 0x00, 9) => self.set_configuration(bus, req.value_low()),
            // GET_CONFIGURATION
            (true, 0x80, 8) => Reply::Data(vec![self.configured.unwrap_or(0)]),
            // SET_INTERFACE / GET_INTERFACE: one altsetting
            (true, 0x01, 11) if req.value == 0 => Reply::Ack,
            (true, 0x81, 10) => Reply::Data(vec![0]),
            // SET_ISOCH_DELAY and SET_SEL: accepted
            (true, 0x00, 0x31) | (true, 0x00, 0x30) => Reply::Ack,
            _ => self.custom(&req),
        };
        self.reply(bus, req, reply);
    }

    fn custom(&mut self, req: &ControlRequest) -> Reply {
        match &mut self.handler {
            Some(h) => h(req),
            None => Reply::Stall,
        }
    }

    fn set_configuration(&mut self, bus: &mut Bus, value: u8) -> Reply {
        let eps = self.script.endpoints(value);
        if value != 0
            && eps.is_empty()
            && !self.script.configs.iter().any(|c| c.get(5) == Some(&value))
        {
            return Reply::Stall;
        }
        // a well-behaved client disables what it enabled before (contract U6)
        for (_, h) in std::mem::take(&mut self.enabled) {
            self.run(bus, "EP_DISABLE", ClientOp::EpDisable { arg: u64::from(h) });
        }
        self.configured = None;
        if value == 0 {
            return Reply::Ack;
        }
        for desc in eps {
            if let Some(r) = self.run(bus, "EP_ENABLE", ClientOp::EpEnable { desc }) {
                if let Ok(h) = r.ret {
                    self.enabled.push((desc[2], h as u16));
                }
            }
        }
        self.run(bus, "CONFIGURE", ClientOp::Configure { arg: 0 });
        self.configured = Some(value);
        Reply::Ack
    }

    fn issue_ops(&mut self, bus: &mut Bus) -> bool {
        let mut moved = false;
        while let Some(op) = self.ops.front() {
            let address = match op {
                DeviceOp::Write { address, .. } | DeviceOp::Read { address, .. } => *address,
            };
            let Some(h) = self.handle(address) else {
                return moved;
            };
            if self.in_flight.iter().any(|(_, o)| matches!(o, DeviceOp::Write { address: a, .. } | DeviceOp::Read { address: a, .. } if *a == address)) {
                return moved; // one transfer per endpoint at a time
            }
            let op = self.ops.pop_front().expect("front exists");
            let client_op = match &op {
                DeviceOp::Write { data, zero, .. } => ClientOp::EpWrite {
                    io: UsbRawEpIo {
                        ep: h,
                        flags: if *zero { USB_RAW_IO_FLAGS_ZERO } else { 0 },
                        length: data.len() as u32,
                    },
                    data: data.clone(),
                },
                DeviceOp::Read { length, .. } => ClientOp::EpRead {
                    io: UsbRawEpIo {
                        ep: h,
                        flags: 0,
                        length: *length,
                    },
                    buf: Vec::new(),
                },
            };
            moved = true;
            match bus.client(client_op) {
                Outcome::Done(r) => self.record_io(op, r),
                Outcome::Pending(id) => self.in_flight.push((id, op)),
            }
        }
        moved
    }

    fn record_io(&mut self, op: DeviceOp, r: OpResult) {
        let data = match (&op, r.payload) {
            (DeviceOp::Read { .. }, Payload::Data(d)) => d,
            _ => Vec::new(),
        };
        self.io_results.push((op, r.ret, data));
    }
}

impl Device for ScriptedDevice {
    fn step(&mut self, bus: &mut Bus) -> bool {
        let mut moved = false;
        if !self.started {
            self.started = true;
            let init = UsbRawInit::new(
                &self.script.udc_driver,
                &self.script.udc_device,
                self.script.speed,
            );
            self.run(bus, "INIT", ClientOp::Init(Box::new(init)));
            self.run(bus, "RUN", ClientOp::Run { arg: 0 });
            moved = true;
        }
        // results of blocked operations
        if let Some((id, req)) = self.ep0 {
            if let Some(r) = bus.take_completion(id) {
                self.ep0 = None;
                self.ep0_results.push((req, r.ret));
                moved = true;
            }
        }
        let mut i = 0;
        while i < self.in_flight.len() {
            if let Some(r) = bus.take_completion(self.in_flight[i].0) {
                let (_, op) = self.in_flight.remove(i);
                self.record_io(op, r);
                moved = true;
            } else {
                i += 1;
            }
        }
        // events: keep one EVENT_FETCH outstanding
        while !self.stopped {
            let result = match self.fetch {
                Some(id) => match bus.take_completion(id) {
                    Some(r) => {
                        self.fetch = None;
                        r
                    }
                    None => break,
                },
                None => match bus.client(ClientOp::EventFetch { capacity: 8 }) {
                    Outcome::Done(r) => r,
                    Outcome::Pending(id) => {
                        self.fetch = Some(id);
                        break;
                    }
                },
            };
            moved = true;
            let failed = result.ret.is_err();
            self.handle_event(bus, result);
            if failed {
                self.stopped = true; // the instance is not running
            }
        }
        if self.configured.is_some() {
            moved |= self.issue_ops(bus);
        }
        moved
    }
}
