//! The in-process bus: one engine [`Instance`], one controller model and a virtual clock,
//! with a driver loop that shuttles between them.
//!
//! Like quinn's `ConnectionDriver::poll`, the driver decides nothing: it feeds every
//! controller output to the engine (`handle_setup`, `handle_bus`, `handle_completion`), gives
//! the gadget's SETUP verdicts back to the controller, and collects both sides' completions
//! until nothing moves ([`Bus::run_until_idle`]). Every input method runs that loop before it
//! returns, so a `Bus` is always idle between calls.
//!
//! The client side ([`Bus::client`], [`Bus::poll_completion`], [`Bus::take_completion`],
//! [`Bus::cancel`], [`Bus::close`]) is what a gadget backend wraps; the host side
//! ([`Bus::submit`], [`Bus::unlink`], the `port_*` methods, [`Bus::advance`]) is what a host
//! drives. A `Bus` is `Send` and owns all its state, so it can sit behind a `Mutex`
//! ([`SharedBus`](crate::SharedBus)).

use std::collections::VecDeque;
use std::time::Duration;

use rawgadget_engine::{ClientOp, Instance, OpCompletion, OpId, OpResult, Outcome};
use rawgadget_uapi::Errno;
use rawgadget_udc::{
    Controller, GadgetEvent, Instant, Personality, PortStatus, Unlink, Urb, UrbCompletion, UrbId,
};

/// See the module doc.
#[derive(Debug)]
pub struct Bus {
    instance: Instance,
    udc: Controller,
    now: Instant,
    /// Results of the engine's blocked operations, in completion order.
    client_done: VecDeque<OpCompletion>,
    /// URBs given back, in giveback order.
    urbs_done: VecDeque<UrbCompletion>,
    /// Gadget events fed to the engine so far, for tests and the trace.
    gadget_events: u64,
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}

impl Bus {
    /// A bus with dummy_udc.0 (default `dummy_hcd` parameters) and a fresh instance, as after
    /// `open("/dev/raw-gadget")`.
    pub fn new() -> Bus {
        Bus::with_personality(Personality::dummy())
    }

    /// A bus whose controller is `<driver_name>.0` with `personality`.
    pub fn with_personality(personality: Personality) -> Bus {
        Bus {
            instance: Instance::new(),
            udc: Controller::new(personality, 0),
            now: Instant::ZERO,
            client_done: VecDeque::new(),
            urbs_done: VecDeque::new(),
            gadget_events: 0,
        }
    }

    // ----------------------------------------------------------------------------------------
    // Getters

    pub fn now(&self) -> Instant {
        self.now
    }
    pub fn instance(&self) -> &Instance {
        &self.instance
    }
    pub fn controller(&self) -> &Controller {
        &self.udc
    }
    pub fn port_status(&self) -> PortStatus {
        self.udc.port_status()
    }
    /// When the controller next needs time to pass (reset or resume signalling).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.udc.poll_timeout()
    }
    /// Results of blocked operations not yet taken.
    pub fn completions_queued(&self) -> usize {
        self.client_done.len()
    }
    /// URBs given back and not yet taken.
    pub fn urb_completions_queued(&self) -> usize {
        self.urbs_done.len()
    }
    /// Number of controller callbacks delivered to the engine so far.
    pub fn gadget_events_delivered(&self) -> u64 {
        self.gadget_events
    }

    /// Checks the engine's and the controller's invariants; for tests and fuzzing.
    ///
    /// # Panics
    /// When one does not hold.
    pub fn assert_invariants(&self) {
        self.instance.assert_invariants();
        self.udc.assert_invariants();
        assert!(
            self.udc.awaiting_setup().is_none(),
            "the driver left a SETUP verdict outstanding"
        );
    }

    // ----------------------------------------------------------------------------------------
    // Client side

    /// One ioctl. A blocked operation's result comes later from [`Bus::poll_completion`] or
    /// [`Bus::take_completion`].
    pub fn client(&mut self, op: ClientOp) -> Outcome {
        let name = op.name();
        let out = self.instance.handle_client(&mut self.udc, op);
        tracing::trace!(op = name, ?out, "client");
        self.run_until_idle();
        out
    }

    /// The next result of a blocked operation, in completion order.
    #[must_use]
    pub fn poll_completion(&mut self) -> Option<OpCompletion> {
        self.client_done.pop_front()
    }

    /// The result of blocked operation `op`, if it has finished (other results stay queued).
    #[must_use]
    pub fn take_completion(&mut self, op: OpId) -> Option<OpResult> {
        let pos = self.client_done.iter().position(|c| c.op == op)?;
        self.client_done.remove(pos).map(|c| c.result)
    }

    /// A signal to the caller blocked in `op` (contract D31, C9).
    pub fn cancel(&mut self, op: OpId) {
        self.instance.cancel(&mut self.udc, op);
        self.run_until_idle();
    }

    /// `release()`: the instance unbinds and every blocked operation ends (with ESHUTDOWN).
    pub fn close(&mut self) {
        self.instance.close(&mut self.udc);
        self.run_until_idle();
    }

    /// Closes the current instance and opens a new one on the same controller, as a program
    /// that closes `/dev/raw-gadget` and opens it again.
    ///
    /// Operation ids are per instance (a new instance numbers from 1 again), so the old
    /// instance's results still queued, the ESHUTDOWN of its blocked operations included, are
    /// returned here and are no longer available from [`Bus::take_completion`].
    #[must_use]
    pub fn reopen(&mut self) -> Vec<OpCompletion> {
        self.close();
        self.instance = Instance::new();
        self.client_done.drain(..).collect()
    }

    // ----------------------------------------------------------------------------------------
    // Host side

    /// Submits a URB; it is worked on at once.
    pub fn submit(&mut self, urb: Urb) -> UrbId {
        let id = self.udc.submit_urb(self.now, urb);
        self.run_until_idle();
        id
    }

    /// Unlinks a URB (contract D26).
    ///
    /// # Errors
    /// EIDRM when it was already given back, EBUSY when already being unlinked.
    pub fn unlink(&mut self, id: UrbId, how: Unlink) -> Result<(), Errno> {
        let r = self.udc.unlink_urb(self.now, id, how);
        self.run_until_idle();
        r
    }

    /// The next URB given back.
    #[must_use]
    pub fn poll_urb_completion(&mut self) -> Option<UrbCompletion> {
        self.urbs_done.pop_front()
    }

    /// URB `id`'s completion, if it has been given back (others stay queued).
    #[must_use]
    pub fn take_urb_completion(&mut self, id: UrbId) -> Option<UrbCompletion> {
        let pos = self.urbs_done.iter().position(|c| c.id == id)?;
        self.urbs_done.remove(pos)
    }

    /// Starts a port reset (contract D27); it ends after the personality's reset time.
    pub fn port_reset(&mut self) {
        self.udc.port_reset(self.now);
        self.run_until_idle();
    }

    /// Suspends the port (contract D29).
    ///
    /// # Errors
    /// EPIPE at SuperSpeed.
    pub fn port_suspend(&mut self) -> Result<(), Errno> {
        let r = self.udc.port_suspend(self.now);
        self.run_until_idle();
        r
    }

    /// Starts resume signalling (contract D29).
    ///
    /// # Errors
    /// EPIPE at SuperSpeed.
    pub fn port_resume(&mut self) -> Result<(), Errno> {
        let r = self.udc.port_resume(self.now);
        self.run_until_idle();
        r
    }

    /// Port power on or off (contract D30).
    pub fn port_power(&mut self, on: bool) {
        self.udc.port_power(self.now, on);
        self.run_until_idle();
    }

    pub fn clear_connect_change(&mut self) {
        self.udc.clear_connect_change();
    }

    // ----------------------------------------------------------------------------------------
    // Time

    /// Lets `d` of virtual time pass, firing the controller's timers on the way.
    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        self.advance_to(until);
    }

    /// Moves the clock to `t` (never backwards), firing timers in order.
    pub fn advance_to(&mut self, t: Instant) {
        while let Some(next) = self.udc.poll_timeout().filter(|&n| n <= t) {
            self.now = self.now.max(next);
            self.udc.handle_timeout(self.now);
            self.run_until_idle();
        }
        self.now = self.now.max(t);
        self.udc.handle_timeout(self.now);
        self.run_until_idle();
    }

    // ----------------------------------------------------------------------------------------
    // The driver loop

    /// Shuttles controller outputs into the engine until nothing moves; returns whether
    /// anything did. Cheap when idle.
    pub fn run_until_idle(&mut self) -> bool {
        let mut moved = false;
        while let Some(ev) = self.udc.poll_gadget_event() {
            moved = true;
            self.gadget_events += 1;
            match ev {
                GadgetEvent::Setup(ctrl) => {
                    let verdict = self.instance.handle_setup(ctrl);
                    tracing::trace!(setup = ?ctrl, ?verdict, "->setup");
                    self.udc.handle_setup_verdict(verdict);
                }
                GadgetEvent::Bus(ev) => {
                    tracing::trace!(?ev, "bus event");
                    self.instance.handle_bus(ev);
                }
                GadgetEvent::Completion(c) => {
                    tracing::trace!(ep = ?c.ep, status = ?c.status, actual = c.actual, "->complete");
                    self.instance.handle_completion(c);
                }
            }
        }
        while let Some(c) = self.instance.poll_completion() {
            moved = true;
            self.client_done.push_back(c);
        }
        while let Some(u) = self.udc.poll_urb_completion() {
            moved = true;
            self.urbs_done.push_back(u);
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rawgadget_uapi::UsbRawInit;

    fn run(bus: &mut Bus) {
        let init = UsbRawInit::new("dummy_udc", "dummy_udc.0", 3);
        assert!(matches!(
            bus.client(ClientOp::Init(Box::new(init))),
            Outcome::Done(_)
        ));
        assert!(matches!(bus.client(ClientOp::Run { arg: 0 }), Outcome::Done(r) if r.ret == Ok(0)));
    }

    /// A blocked operation of the old instance never answers for the new one's same id.
    #[test]
    fn reopen_hands_back_the_old_instance_results() {
        let mut bus = Bus::new();
        run(&mut bus);
        let _connect = bus.client(ClientOp::EventFetch { capacity: 8 });
        let Outcome::Pending(old) = bus.client(ClientOp::EventFetch { capacity: 8 }) else {
            panic!("no event queued: the fetch blocks")
        };
        let left = bus.reopen();
        assert_eq!(left.len(), 1);
        assert_eq!(
            (left[0].op, left[0].result.ret),
            (old, Err(Errno::ESHUTDOWN))
        );
        run(&mut bus);
        let Outcome::Done(r) = bus.client(ClientOp::EventFetch { capacity: 8 }) else {
            panic!("CONNECT is queued")
        };
        assert_eq!(r.ret, Ok(0));
        assert!(bus.take_completion(old).is_none());
    }

    #[test]
    fn bus_is_send() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<Bus>();
    }
}
