//! How the host reaches the bus: the [`HostPort`] trait and its three implementations.
//!
//! - `&mut Bus` on its own: nobody answers the gadget side except the controller itself
//!   (GET_STATUS, SET_ADDRESS ...) and what the test did before. Waiting lets virtual time pass.
//! - [`Stepped`]: single-threaded and deterministic. While the host waits, a [`Device`] (a
//!   scripted client, a state machine) is stepped; when neither side can move, virtual time
//!   jumps to the next timer or the wait's deadline, as quinn's test `Pair` does.
//! - [`Threaded`]: the device program runs in another thread on a [`SharedBus`]; the host
//!   sleeps until its URB is handed to it, with a real-time timeout, and runs the bus's inline
//!   steps (same-thread device code) before it does. Sleeps advance the virtual clock without
//!   waiting.

use std::sync::Arc;
use std::time::Duration;

use rawgadget_uapi::Errno;
use rawgadget_udc::{Instant, PortStatus, Unlink, Urb, UrbCompletion, UrbId};

use crate::bus::Bus;
use crate::shared::SharedBus;

/// A hub port action (SetPortFeature / ClearPortFeature).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PortAction {
    Reset,
    Suspend,
    Resume,
    PowerOn,
    PowerOff,
}

/// What a host needs from the bus. See the module doc.
pub trait HostPort {
    fn now(&mut self) -> Instant;
    fn submit(&mut self, urb: Urb) -> UrbId;
    /// # Errors
    /// As [`Bus::unlink`].
    fn unlink(&mut self, id: UrbId, how: Unlink) -> Result<(), Errno>;
    /// # Errors
    /// EPIPE when the root hub refuses (suspend/resume at SuperSpeed).
    fn port(&mut self, action: PortAction) -> Result<(), Errno>;
    fn port_status(&mut self) -> PortStatus;
    fn clear_connect_change(&mut self);
    /// Waits until URB `id` is given back or `timeout` passes; `None` on timeout (the URB is
    /// then still pending).
    fn wait(&mut self, id: UrbId, timeout: Duration) -> Option<UrbCompletion>;
    /// Lets `d` pass.
    fn sleep(&mut self, d: Duration);
    /// Waits until a device is connected (a hub waits for a connect change without a time
    /// limit; `timeout` bounds it); returns whether one is.
    fn wait_connection(&mut self, timeout: Duration) -> bool;
}

fn port_action(bus: &mut Bus, action: PortAction) -> Result<(), Errno> {
    match action {
        PortAction::Reset => {
            bus.port_reset();
            Ok(())
        }
        PortAction::Suspend => bus.port_suspend(),
        PortAction::Resume => bus.port_resume(),
        PortAction::PowerOn => {
            bus.port_power(true);
            Ok(())
        }
        PortAction::PowerOff => {
            bus.port_power(false);
            Ok(())
        }
    }
}

/// Something that acts on the gadget side between host steps: returns whether it did
/// anything (so that a wait knows when both sides are idle).
pub trait Device {
    fn step(&mut self, bus: &mut Bus) -> bool;
}

impl<F: FnMut(&mut Bus) -> bool> Device for F {
    fn step(&mut self, bus: &mut Bus) -> bool {
        self(bus)
    }
}

/// A device that never acts.
pub struct Idle;

impl Device for Idle {
    fn step(&mut self, _bus: &mut Bus) -> bool {
        false
    }
}

/// Single-threaded host port: see the module doc.
pub struct Stepped<'a, D: Device> {
    pub bus: &'a mut Bus,
    pub device: D,
}

impl<'a, D: Device> Stepped<'a, D> {
    pub fn new(bus: &'a mut Bus, device: D) -> Self {
        Stepped { bus, device }
    }

    /// Steps the device until it is idle.
    pub fn settle(&mut self) {
        // a device that never stops acting would hang the host: cap it
        for _ in 0..100_000 {
            self.bus.run_until_idle();
            if !self.device.step(self.bus) {
                return;
            }
        }
        tracing::warn!("device still busy after 100000 steps");
    }
}

impl<D: Device> HostPort for Stepped<'_, D> {
    fn now(&mut self) -> Instant {
        self.bus.now()
    }
    fn submit(&mut self, urb: Urb) -> UrbId {
        let id = self.bus.submit(urb);
        self.settle();
        id
    }
    fn unlink(&mut self, id: UrbId, how: Unlink) -> Result<(), Errno> {
        let r = self.bus.unlink(id, how);
        self.settle();
        r
    }
    fn port(&mut self, action: PortAction) -> Result<(), Errno> {
        let r = port_action(self.bus, action);
        self.settle();
        r
    }
    fn port_status(&mut self) -> PortStatus {
        self.bus.port_status()
    }
    fn clear_connect_change(&mut self) {
        self.bus.clear_connect_change();
    }
    fn wait(&mut self, id: UrbId, timeout: Duration) -> Option<UrbCompletion> {
        let deadline = self.bus.now() + timeout;
        loop {
            self.settle();
            if let Some(c) = self.bus.take_urb_completion(id) {
                return Some(c);
            }
            if self.bus.now() >= deadline {
                return None;
            }
            // both sides idle: let time pass to the next timer or the deadline
            let next = self
                .bus
                .poll_timeout()
                .filter(|&t| t < deadline)
                .unwrap_or(deadline);
            self.bus.advance_to(next);
        }
    }
    fn wait_connection(&mut self, timeout: Duration) -> bool {
        let deadline = self.bus.now() + timeout;
        loop {
            self.settle();
            if self.bus.port_status().connected {
                return true;
            }
            if self.bus.now() >= deadline {
                return false;
            }
            let next = self
                .bus
                .poll_timeout()
                .filter(|&t| t < deadline)
                .unwrap_or(deadline);
            self.bus.advance_to(next);
        }
    }
    fn sleep(&mut self, d: Duration) {
        let until = self.bus.now() + d;
        loop {
            self.settle();
            if self.bus.now() >= until {
                return;
            }
            let next = self
                .bus
                .poll_timeout()
                .filter(|&t| t < until)
                .unwrap_or(until);
            self.bus.advance_to(next);
        }
    }
}

impl HostPort for Bus {
    fn now(&mut self) -> Instant {
        Bus::now(self)
    }
    fn submit(&mut self, urb: Urb) -> UrbId {
        Bus::submit(self, urb)
    }
    fn unlink(&mut self, id: UrbId, how: Unlink) -> Result<(), Errno> {
        Bus::unlink(self, id, how)
    }
    fn port(&mut self, action: PortAction) -> Result<(), Errno> {
        port_action(self, action)
    }
    fn port_status(&mut self) -> PortStatus {
        Bus::port_status(self)
    }
    fn clear_connect_change(&mut self) {
        Bus::clear_connect_change(self)
    }
    fn wait(&mut self, id: UrbId, timeout: Duration) -> Option<UrbCompletion> {
        Stepped::new(self, Idle).wait(id, timeout)
    }
    fn sleep(&mut self, d: Duration) {
        self.advance(d);
    }
    fn wait_connection(&mut self, timeout: Duration) -> bool {
        Stepped::new(self, Idle).wait_connection(timeout)
    }
}

/// Multi-threaded host port over a [`SharedBus`]: see the module doc.
#[derive(Clone)]
pub struct Threaded {
    shared: Arc<SharedBus>,
    /// Real time per unit of virtual wait timeout (1.0: a 5 s control timeout waits 5 s).
    pub timeout_scale: f64,
}

impl Threaded {
    pub fn new(shared: Arc<SharedBus>) -> Threaded {
        Threaded {
            shared,
            timeout_scale: 1.0,
        }
    }
    pub fn shared(&self) -> &Arc<SharedBus> {
        &self.shared
    }
}

impl HostPort for Threaded {
    fn now(&mut self) -> Instant {
        self.shared.with(|b| b.now())
    }
    fn submit(&mut self, urb: Urb) -> UrbId {
        self.shared.with(|b| b.submit(urb))
    }
    fn unlink(&mut self, id: UrbId, how: Unlink) -> Result<(), Errno> {
        self.shared.with(|b| b.unlink(id, how))
    }
    fn port(&mut self, action: PortAction) -> Result<(), Errno> {
        self.shared.with(|b| port_action(b, action))
    }
    fn port_status(&mut self) -> PortStatus {
        self.shared.with(|b| b.port_status())
    }
    fn clear_connect_change(&mut self) {
        self.shared.with(|b| b.clear_connect_change())
    }
    fn wait(&mut self, id: UrbId, timeout: Duration) -> Option<UrbCompletion> {
        let real = timeout.mul_f64(self.timeout_scale);
        // targeted: only this URB's completion wakes the host (SharedBus::wait_urb)
        self.shared.wait_urb(id, real)
    }
    fn sleep(&mut self, d: Duration) {
        // virtual: the device thread sees time jump, as it would after a real sleep
        self.shared.with(|b| b.advance(d));
    }
    fn wait_connection(&mut self, timeout: Duration) -> bool {
        let real = timeout.mul_f64(self.timeout_scale);
        self.shared
            .wait_for(real, |b| b.port_status().connected.then_some(()))
            .is_some()
    }
}
