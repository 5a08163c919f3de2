//! The root-hub port the gadget is plugged into, and dummy's link-state logic
//! (`set_link_state`, `dummy_hcd.c:411-510`; hub requests `dummy_hcd.c:2140-2380`).
//!
//! Host actions: power, reset, suspend, resume. Gadget actions: the pull-up (bind/unbind).
//! Every change goes through [`Controller::set_link_state`], which reports to the gadget
//! driver exactly the edges dummy reports: a reset edge (nuke + RESET, contract D27), a power
//! loss (nuke + DISCONNECT, D30), and changes of "active" (SUSPEND/RESUME, D29).

use rawgadget_engine::BusEvent;
use rawgadget_uapi::{Errno, Speed};

use super::control::DEVSTATUS_KEPT_BY_RESET;
use super::{Controller, GadgetEvent};
use crate::time::Instant;

/// The port bits dummy keeps in `port_status` that matter for the gadget.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(super) struct PortBits {
    pub powered: bool,
    pub connected: bool,
    pub enabled: bool,
    pub suspended: bool,
    pub resetting: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Port {
    pub bits: PortBits,
    /// `old_status`: the bits at the previous `set_link_state`.
    pub old: PortBits,
    /// `dum_hcd->active`: connected, enabled and not suspended.
    pub active: bool,
    pub old_active: bool,
    /// C_CONNECTION: the connection changed since the host last cleared it.
    pub connect_change: bool,
    /// The end of the reset signalling (`re_timeout` while RESET is set).
    pub reset_done_at: Option<Instant>,
    /// The end of the resume signalling (`re_timeout` while `resuming`).
    pub resume_done_at: Option<Instant>,
}

impl Port {
    /// A root-hub port the hub has already powered (`hub_activate` → `hub_power_on`).
    pub fn powered() -> Port {
        let bits = PortBits {
            powered: true,
            ..PortBits::default()
        };
        Port {
            bits,
            old: bits,
            active: false,
            old_active: false,
            connect_change: false,
            reset_done_at: None,
            resume_done_at: None,
        }
    }
}

/// The port as the host's hub driver sees it (GetPortStatus).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PortStatus {
    pub powered: bool,
    /// A gadget is bound and its pull-up is on.
    pub connected: bool,
    /// The last reset completed and nothing disabled the port since.
    pub enabled: bool,
    pub suspended: bool,
    /// A reset is being signalled; it ends at [`Controller::poll_timeout`].
    pub resetting: bool,
    /// Resume is being signalled after a host resume; it ends at `poll_timeout`.
    pub resuming: bool,
    /// C_CONNECTION: the connection changed since [`Controller::clear_connect_change`].
    pub connect_change: bool,
    /// The negotiated speed while connected (contract D3).
    pub speed: Option<Speed>,
}

impl Controller {
    /// GetPortStatus, without side effects (time is applied by
    /// [`Controller::handle_timeout`]).
    pub fn port_status(&self) -> PortStatus {
        let b = self.port.bits;
        PortStatus {
            powered: b.powered,
            connected: b.connected,
            enabled: b.enabled,
            suspended: b.suspended,
            resetting: b.resetting,
            resuming: self.port.resume_done_at.is_some(),
            connect_change: self.port.connect_change,
            speed: b.connected.then_some(self.speed),
        }
    }

    /// ClearPortFeature(C_CONNECTION).
    pub fn clear_connect_change(&mut self) {
        self.port.connect_change = false;
    }

    /// SetPortFeature(POWER) / ClearPortFeature(POWER). Power loss nukes every request with
    /// ESHUTDOWN and reports DISCONNECT (contract D30); pending URBs then fail with EPROTO
    /// (D24).
    pub fn port_power(&mut self, now: Instant, on: bool) {
        self.advance_clock(now);
        self.port.bits.powered = on;
        if !on {
            // port_status = 0
            self.port.bits = PortBits::default();
            self.port.reset_done_at = None;
            self.port.resume_done_at = None;
        }
        self.set_link_state();
        self.run();
    }

    /// SetPortFeature(RESET): starts a reset if a device is connected. The port is disabled
    /// for [`Personality::reset_time`](crate::Personality::reset_time) (contract D6, D7 give
    /// ESHUTDOWN meanwhile); the gadget's requests end with ESHUTDOWN, the address becomes 0,
    /// the device-status bits are cleared and RESET is reported at once (contract D27).
    pub fn port_reset(&mut self, now: Instant) {
        self.advance_clock(now);
        if !self.port.bits.connected {
            return;
        }
        if self.speed == Speed::Super {
            // port_status = POWER | CONNECTION | RESET
            self.port.bits = PortBits {
                powered: true,
                connected: true,
                resetting: true,
                ..PortBits::default()
            };
        } else {
            self.port.bits.enabled = false;
            self.port.bits.resetting = true;
        }
        // contract D21: a port reset clears every status bit but self-powered
        self.devstatus &= DEVSTATUS_KEPT_BY_RESET;
        self.port.reset_done_at = Some(self.now + self.personality.reset_time);
        self.set_link_state();
        self.run();
    }

    /// SetPortFeature(SUSPEND): suspends an active port and reports SUSPEND (contract D29).
    /// Requests stay queued; URBs fail with EPROTO while suspended (D24).
    ///
    /// # Errors
    /// EPIPE at SuperSpeed: dummy's USB 3 root hub refuses the request (it has link states
    /// instead, which it ignores).
    pub fn port_suspend(&mut self, now: Instant) -> Result<(), Errno> {
        self.advance_clock(now);
        if self.speed == Speed::Super {
            return Err(Errno::EPIPE);
        }
        if self.port.active {
            self.port.bits.suspended = true;
            self.set_link_state();
            self.run();
        }
        Ok(())
    }

    /// ClearPortFeature(SUSPEND): starts resume signalling; after
    /// [`Personality::resume_time`](crate::Personality::resume_time) the port is active
    /// again and RESUME is reported (contract D29).
    ///
    /// # Errors
    /// EPIPE at SuperSpeed, as [`Controller::port_suspend`].
    pub fn port_resume(&mut self, now: Instant) -> Result<(), Errno> {
        self.advance_clock(now);
        if self.speed == Speed::Super {
            return Err(Errno::EPIPE);
        }
        if self.port.bits.suspended {
            self.port.resume_done_at = Some(self.now + self.personality.resume_time);
        }
        Ok(())
    }

    /// Ends reset or resume signalling whose time has come (what dummy does on the hub's
    /// next GetPortStatus). Spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance_clock(now);
        let mut changed = false;
        if let Some(t) = self.port.resume_done_at {
            if t <= self.now {
                self.port.resume_done_at = None;
                self.port.bits.suspended = false;
                changed = true;
            }
        }
        if let Some(t) = self.port.reset_done_at {
            if t <= self.now {
                self.port.reset_done_at = None;
                self.port.bits.resetting = false;
                if self.pullup {
                    self.port.bits.enabled = true;
                    // contract D4: ep0 maxpacket is 8 at LS once the reset completes
                    if self.speed == Speed::Low {
                        self.eps[0].maxpacket = 8;
                    }
                }
                changed = true;
            }
        }
        if changed {
            self.set_link_state();
            self.run();
        } else if self.iso_deadline().is_some_and(|t| t <= self.now) {
            // contract I5: an iso packet slot or URB end has come
            self.run();
        }
    }

    /// When the model next needs [`Controller::handle_timeout`]: the end of a reset or of
    /// resume signalling, or an iso packet slot (contract I5). URB timeouts are the host's
    /// business.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.port.reset_done_at,
            self.port.resume_done_at,
            self.iso_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// dummy's `set_link_state` + `set_link_state_by_speed`: recomputes the connection from
    /// power and pull-up, then reports the edges to the gadget driver.
    pub(super) fn set_link_state(&mut self) {
        let ss = self.speed == Speed::Super;
        let p = &mut self.port;
        let mut active = false;
        if !p.bits.powered {
            p.bits = PortBits::default();
        } else if !self.pullup {
            // the pull-up is off: disconnected
            p.bits.connected = false;
            p.bits.enabled = false;
            if !ss {
                p.bits.suspended = false;
            }
            if p.old.connected {
                p.connect_change = true;
            }
        } else {
            p.bits.connected = true;
            if !p.old.connected {
                p.connect_change = true;
            }
            if ss {
                // link state U0 after every reset; dummy ignores SET_LINK_STATE
                active = p.bits.enabled;
            } else if !p.bits.enabled {
                p.bits.suspended = false;
            } else if !p.bits.suspended {
                active = true;
            }
        }
        p.active = active;
        if !p.bits.enabled || active {
            p.resume_done_at = None;
        }
        if !p.bits.powered || p.bits.resetting {
            let disconnect = p.old.powered && !p.bits.powered;
            let reset = p.bits.resetting && !p.old.resetting;
            if self.bound && (disconnect || reset) {
                self.stop_activity();
                let ev = if reset {
                    BusEvent::Reset // contract D27
                } else {
                    BusEvent::Disconnect // contract D30
                };
                tracing::debug!(?ev, "port edge reported to the gadget");
                self.gadget_out.events.push_back(GadgetEvent::Bus(ev));
            }
        } else if active != self.port.old_active && self.bound {
            // contract D29: an "active" edge is a suspend or a resume; this includes the
            // first time the port becomes active after a reset completes
            let ev = if self.port.old_active {
                BusEvent::Suspend
            } else {
                BusEvent::Resume
            };
            tracing::debug!(?ev, "link activity reported to the gadget");
            self.gadget_out.events.push_back(GadgetEvent::Bus(ev));
        }
        self.port.old = self.port.bits;
        self.port.old_active = self.port.active;
    }
}
