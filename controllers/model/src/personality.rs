//! What makes one controller differ from another, as data.
//!
//! The controller's rules are shared; a [`Personality`] says which endpoints exist, which
//! speeds are offered, whether the 64-byte IN FIFO is emulated, which enable checks apply and
//! how iso URBs are treated. [`Personality::dummy`] is dummy_udc with default `dummy_hcd`
//! parameters (contract §2). The iso-capable personality of contract §4 (I1–I7) will be another
//! constructor plus the iso rules it selects, not a fork of the controller.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;

use rawgadget_engine::UdcEndpoint;
use rawgadget_uapi::Speed;

/// Which checks `usb_ep_enable` makes after descriptor matching.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EnableRules {
    /// dummy_udc's `dummy_enable`: endpoint-name and speed-dependent maxpacket checks
    /// (contract D6).
    Dummy,
    /// usbip-vudc's `vep_enable`: no name or speed checks, only the descriptor type
    /// (contract I3).
    MatchOnly,
}

/// How URBs of type isochronous are treated.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IsoRule {
    /// dummy_hcd fails every iso URB that reaches an endpoint with EINVAL
    /// (`dummy_hcd.c:1983-1995`). dummy has no iso endpoints (D1), so in practice they get
    /// EPROTO first (D24).
    Reject,
    /// The iso-capable personality (contract I5, I6): an iso URB of N packets on an endpoint
    /// with period P completes at its start + N·P whether or not the client queued requests;
    /// each packet slot takes the request at the head of the queue. Never NAKs.
    Schedule,
}

/// ep0's maxpacket at SuperSpeed (contract D4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SsEp0Maxpacket {
    /// dummy's quirk: 9 (`dummy_hcd.c:918-924`). The default, because differential tests at SS
    /// need it.
    DummyNine,
    /// 512, as a real SuperSpeed controller; a named, non-default variant.
    Real512,
}

/// A controller's fixed properties. See the module doc.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Personality {
    /// `gadget->name`, the UDC *driver* name clients pass to INIT (contract D2).
    pub driver_name: String,
    /// The non-control endpoints in `gadget->ep_list` order (contract D1).
    pub endpoints: Vec<UdcEndpoint>,
    /// `gadget->max_speed`. The negotiated speed is min(INIT speed, this) (contract D3).
    pub max_speed: Speed,
    /// ep0 maxpacket at SuperSpeed (contract D4); 64 at FS/HS and 8 at LS are fixed.
    pub ss_ep0_maxpacket: SsEp0Maxpacket,
    /// Size of the single controller-wide IN FIFO, or `None` for no FIFO emulation
    /// (contract D13; vudc has none, I4).
    pub in_fifo: Option<u32>,
    /// Checks made by `usb_ep_enable` (contract D6, I3).
    pub enable_rules: EnableRules,
    /// How iso URBs are handled (contract D1, I5–I6).
    pub iso: IsoRule,
    /// Under [`IsoRule::Schedule`]: how long a packet slot of a *streaming* iso endpoint (its
    /// previous slot took a request) waits for the client's next request before it goes by
    /// empty. Raw gadget allows one request per endpoint at a time, so every packet costs the
    /// client a round trip (contract P4); a host without a bus clock of its own (vhci: frame
    /// number 0, contract I6) cannot tell a slot that waited from one on time. Zero is the
    /// strict rule of contract I5 (the slot never waits). An idle endpoint never waits.
    pub iso_grace: Duration,
    /// How long a port reset keeps the port disabled: 50 ms on dummy
    /// (`dummy_hcd.c:2353`, contract D27).
    pub reset_time: Duration,
    /// Resume signalling after the host clears a port suspend: 20 ms (`dummy_hcd.c:2157`).
    pub resume_time: Duration,
}

impl Personality {
    /// dummy_udc with `dummy_hcd`'s default parameters (`is_high_speed=1, is_super_speed=0`):
    /// maximum speed HIGH (contract D3).
    pub fn dummy() -> Personality {
        Personality {
            driver_name: "dummy_udc".to_string(),
            endpoints: dummy_endpoints(),
            max_speed: Speed::High,
            ss_ep0_maxpacket: SsEp0Maxpacket::DummyNine,
            in_fifo: Some(64),
            enable_rules: EnableRules::Dummy,
            iso: IsoRule::Reject,
            iso_grace: Duration::ZERO,
            reset_time: Duration::from_millis(50),
            resume_time: Duration::from_millis(20),
        }
    }

    /// dummy_udc loaded with `is_super_speed=1`: SUPER becomes available (contract D3, S6).
    pub fn dummy_super_speed() -> Personality {
        Personality {
            max_speed: Speed::Super,
            ..Personality::dummy()
        }
    }

    /// The iso-capable personality of contract §4, modelled on usbip-vudc (`vudc_dev.c`):
    /// 30 endpoints `ep1out`, `ep1in` … `ep15in`, each bulk+int+iso in one direction with a
    /// fixed address (I2); no name or speed checks at enable (I3); no FIFO emulation and no
    /// SuperSpeed (I4); iso URBs scheduled on time (I5, I6). Names `usbip-vudc`/`usbip-vudc.N`.
    pub fn vudc() -> Personality {
        Personality {
            driver_name: "usbip-vudc".to_string(),
            endpoints: vudc_endpoints(),
            // contract I2: vudc_dev.c:605
            max_speed: Speed::High,
            ss_ep0_maxpacket: SsEp0Maxpacket::DummyNine,
            in_fifo: None,
            enable_rules: EnableRules::MatchOnly,
            iso: IsoRule::Schedule,
            // contract I5 as written; the USB/IP personality adds a grace
            iso_grace: Duration::ZERO,
            reset_time: Duration::from_millis(50),
            resume_time: Duration::from_millis(20),
        }
    }

    /// The maxpacket ep0 uses at `speed` once the port is enabled (contract D4).
    pub fn ep0_maxpacket(&self, speed: Speed) -> u32 {
        match speed {
            Speed::Low => 8,
            Speed::Super | Speed::SuperPlus => match self.ss_ep0_maxpacket {
                SsEp0Maxpacket::DummyNine => 9,
                SsEp0Maxpacket::Real512 => 512,
            },
            _ => 64,
        }
    }
}

/// usbip-vudc's 30 non-control endpoints in list order (contract I2, `vudc_dev.c:513-560`):
/// `ep<n>out` then `ep<n>in` for n = 1..=15, every type in one direction, `maxpacket_limit`
/// 65535 (`usb_ep_set_maxpacket_limit(~0)`), `max_streams` 16.
pub fn vudc_endpoints() -> Vec<UdcEndpoint> {
    use rawgadget_uapi::UsbRawEpCaps;
    const OUT: UsbRawEpCaps = UsbRawEpCaps::new(false, true, true, true, false, true);
    const IN: UsbRawEpCaps = UsbRawEpCaps::new(false, true, true, true, true, false);
    (1..=15)
        .flat_map(|n| {
            [
                (alloc::format!("ep{n}out"), OUT),
                (alloc::format!("ep{n}in"), IN),
            ]
        })
        .map(|(name, caps)| UdcEndpoint {
            name,
            caps,
            maxpacket_limit: 65535,
            max_streams: 16,
        })
        .collect()
}

/// dummy_udc's 24 non-control endpoints in list order (contract D1, `dummy_hcd.c:142-218`;
/// the iso entries are commented out there). Limits from `dummy_hcd.c:1088-1089`.
pub fn dummy_endpoints() -> Vec<UdcEndpoint> {
    rawgadget_uapi::dummy_udc::ENDPOINTS
        .iter()
        .map(|(name, caps)| UdcEndpoint {
            name: name.to_string(),
            caps: *caps,
            // usb_ep_set_maxpacket_limit(&ep->ep, ~0) stores 0xffff
            maxpacket_limit: rawgadget_uapi::dummy_udc::MAXPACKET_LIMIT,
            max_streams: rawgadget_uapi::dummy_udc::MAX_STREAMS,
        })
        .collect()
}
