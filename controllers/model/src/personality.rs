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
