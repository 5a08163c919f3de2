//! A [`Bus`] shared between threads: a device program answering control requests in one
//! thread while a host waits for its URBs in another, as with a real raw-gadget program.
//!
//! One mutex guards the whole bus. Waiters do not share a condition variable: each one
//! registers what it waits for, and whoever changes the bus wakes only the waiters whose
//! condition may now hold:
//! - a waiter for one client operation ([`SharedBus::wait_op`]) or one URB
//!   ([`SharedBus::wait_urb`]) has its result *delivered*: the thread that completed it takes
//!   it off the bus under the lock, puts it in the waiter's slot and unparks that thread only,
//!   which then returns without touching the bus lock again;
//! - a waiter for anything else ([`SharedBus::wait_for`]) is woken by every change and
//!   re-checks its condition under the lock;
//! - a *completion hook* ([`SharedBus::on_op_complete`]) is no thread at all: the thread
//!   whose change completes the operation runs it, right after it releases the lock. A
//!   front-end that answers a blocked call by writing somewhere (a CUSE reply) saves the
//!   thread switch a waiting thread would cost.
//!
//! [`SharedBus::client_quiet`] runs a client operation and wakes the `wait_for` waiters only
//! when a host can see a difference (a URB given back, a result queued, the port, the
//! instance's state, the controller's next timeout): most ioctls change nothing a host
//! waits for, and waking its threads for each of them costs a switch per ioctl.
//!
//! Before parking, a waiter spins for a while on its slot: when the other side is running on
//! another core, its answer usually comes within a few microseconds, much sooner than a
//! futex wake and the scheduler would bring it. The spin time adapts per kind of wait (it
//! doubles when spinning paid off and halves when it did not), and there is none on a single
//! CPU, where spinning only delays the thread that would answer.
//!
//! # Same-thread dispatch
//! [`SharedBus::add_inline_step`] installs a device step that the *host's* waits
//! ([`SharedBus::wait_for`], [`SharedBus::wait_urb`]) run before they park, in the host's
//! thread: a device program's event handler then answers a control request, or its endpoint
//! loop queues its next transfer, without any thread switch, as [`Stepped`](crate::Stepped)
//! does single-threaded. Steps run in the order they were added, round after round until
//! none moves. A step must not wait for the host, which is the thread running it:
//! [`SharedBus::wait_op`] called from inside a step cancels its operation at once (EINTR
//! unless it already finished, as a signal would) instead of deadlocking.
//!
//! The bus is always idle between calls (every `Bus` input runs the driver loop), so a waiter
//! never has to drive anything itself.

use std::cell::Cell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant as StdInstant};

use rawgadget_engine::{ClientOp, OpId, OpResult, Outcome, Payload};
use rawgadget_uapi::Errno;
use rawgadget_udc::{UrbCompletion, UrbId};

use crate::bus::Bus;
use crate::port::Device;

/// A device step run by the host's waits; returns whether it did anything.
pub type InlineStep = Box<dyn FnMut() -> bool + Send>;

/// A completion hook ([`SharedBus::on_op_complete`]): gets the operation's result in the
/// thread that completed it, without the bus lock.
pub type OpHook = Box<dyn FnOnce(OpResult) + Send>;

/// Names an inline step for [`SharedBus::remove_inline_step`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct InlineStepId(u64);

/// See the module doc.
pub struct SharedBus {
    inner: Mutex<Inner>,
    /// Bumped, under the lock, by every change made through [`SharedBus::with`] or announced
    /// with [`SharedBus::notify`]; lets a waiter tell "something happened".
    generation: AtomicU64,
    /// Adaptive spin budgets, per [`WaitKind`].
    spin: [SpinBudget; 2],
    /// Whether spinning can help at all (more than one CPU).
    multi_core: bool,
    inline: Mutex<Vec<(InlineStepId, InlineStep)>>,
    /// Additions and removals asked for from inside a step, applied after its round.
    deferred: Mutex<Deferred>,
    next_step_id: AtomicU64,
    /// Whether there are steps: spares the host's waits a lock when there are none.
    has_inline: AtomicBool,
}

#[derive(Default)]
struct Deferred {
    add: Vec<(InlineStepId, InlineStep)>,
    remove: Vec<InlineStepId>,
}

struct Inner {
    bus: Bus,
    waiters: Vec<Waiter>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Key {
    Op(OpId),
    Urb(UrbId),
    Any,
}

struct Waiter {
    key: Key,
    wake: Wake,
}

/// How a waiter learns of its result: a parked thread, or a hook run by the completer.
enum Wake {
    Thread(Arc<Slot>),
    Hook(OpHook),
}

/// Where a waiter's wakeup (and, for keyed waits, its result) is left.
struct Slot {
    thread: Thread,
    /// Set after `value` is filled (keyed waits) or after any change (`Key::Any`).
    ready: AtomicBool,
    value: Mutex<Option<Delivered>>,
}

enum Delivered {
    Op(OpResult),
    Urb(UrbCompletion),
}

/// Which spin budget a wait uses: results of the other side's work arrive at different paces.
#[derive(Clone, Copy)]
enum WaitKind {
    Keyed = 0,
    Any = 1,
}

/// How long a wait spins before parking, adapted to how soon answers come: a hit doubles the
/// budget (to at least `SPIN_MIN_NS`), a miss halves it, and below `SPIN_MIN_NS` it is zero.
/// Spinning pays only while both sides stay awake on their own cores; once they park, the
/// answer needs a futex wake and the scheduler, and on a loaded machine a spin almost never
/// sees it (measured: 3% hits). At zero, one wait in `SPIN_PROBE_EVERY` still spins
/// `SPIN_PROBE_NS`, long enough to catch a peer woken from its park on an idle machine, so
/// that the budget grows back when the load goes.
struct SpinBudget {
    ns: AtomicU32,
    waits: AtomicU32,
}

const SPIN_START_NS: u32 = 10_000;
const SPIN_MIN_NS: u32 = 4_000;
const SPIN_MAX_NS: u32 = 30_000;
const SPIN_PROBE_NS: u32 = 30_000;
const SPIN_PROBE_EVERY: u32 = 32;
/// Like `Stepped::settle`: a step that never stops acting must not hang the host.
const INLINE_ROUNDS_MAX: usize = 100_000;

thread_local! {
    /// Set while this thread runs an inline step.
    static IN_INLINE_STEP: Cell<bool> = const { Cell::new(false) };
}

/// Locked bus, as [`SharedBus::lock`] returns it.
pub struct BusGuard<'a> {
    inner: MutexGuard<'a, Inner>,
}

impl Deref for BusGuard<'_> {
    type Target = Bus;
    fn deref(&self) -> &Bus {
        &self.inner.bus
    }
}

impl DerefMut for BusGuard<'_> {
    fn deref_mut(&mut self) -> &mut Bus {
        &mut self.inner.bus
    }
}

impl fmt::Debug for SharedBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBus")
            .field("generation", &self.generation())
            .field("inline_step", &self.has_inline.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SharedBus {
    pub fn new(bus: Bus) -> Arc<SharedBus> {
        let multi_core = thread::available_parallelism().is_ok_and(|n| n.get() > 1);
        let start = if multi_core { SPIN_START_NS } else { 0 };
        let budget = || SpinBudget {
            ns: AtomicU32::new(start),
            waits: AtomicU32::new(0),
        };
        Arc::new(SharedBus {
            inner: Mutex::new(Inner {
                bus,
                waiters: Vec::new(),
            }),
            generation: AtomicU64::new(0),
            spin: [budget(), budget()],
            multi_core,
            inline: Mutex::new(Vec::new()),
            deferred: Mutex::new(Deferred::default()),
            next_step_id: AtomicU64::new(0),
            has_inline: AtomicBool::new(false),
        })
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        // a panic while holding the lock leaves the bus in a consistent state between inputs
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the bus. Callers that change it must call [`SharedBus::notify`] afterwards;
    /// prefer [`SharedBus::with`].
    pub fn lock(&self) -> BusGuard<'_> {
        BusGuard {
            inner: self.lock_inner(),
        }
    }

    /// Announces a change made through [`SharedBus::lock`]: delivers results to the waiters
    /// for them and wakes the others.
    pub fn notify(&self) {
        self.changed(self.lock_inner());
    }

    /// Announces a change made through [`SharedBus::lock`] that no [`SharedBus::wait_for`]
    /// condition depends on: delivers results to the waiters for them (and runs hooks) but
    /// wakes no `wait_for` waiter and leaves the generation alone. The caller must know
    /// every `wait_for` condition on this bus (the USB/IP driver does: its writer thread and
    /// `wait_running`); waking a thread only for it to find nothing costs a switch.
    pub fn notify_keyed(&self) {
        self.deliver(self.lock_inner(), false);
    }

    /// Runs `f` on the locked bus, then wakes the waiters it concerns.
    pub fn with<R>(&self, f: impl FnOnce(&mut Bus) -> R) -> R {
        let mut inner = self.lock_inner();
        let r = f(&mut inner.bus);
        self.changed(inner);
        r
    }

    /// How many changes have been announced so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// After a change: bump the generation, hand finished results to their waiters and wake
    /// them (after unlocking, so that they do not wake into a held lock).
    fn changed(&self, inner: MutexGuard<'_, Inner>) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.deliver(inner, true);
    }

    /// Hands finished results to their keyed waiters and hooks, and wakes the `Key::Any`
    /// waiters when `wake_any`; unparks and runs hooks after unlocking.
    fn deliver(&self, mut inner: MutexGuard<'_, Inner>, wake_any: bool) {
        if inner.waiters.is_empty() {
            return;
        }
        let mut woken: Vec<Arc<Slot>> = Vec::new();
        let mut hooks: Vec<(OpHook, OpResult)> = Vec::new();
        let Inner { bus, waiters } = &mut *inner;
        let mut i = 0;
        while i < waiters.len() {
            let w = &waiters[i];
            let value = match w.key {
                Key::Op(op) => match bus.take_completion(op) {
                    Some(r) => Some(Delivered::Op(r)),
                    None => {
                        i += 1;
                        continue;
                    }
                },
                Key::Urb(id) => match bus.take_urb_completion(id) {
                    Some(c) => Some(Delivered::Urb(c)),
                    None => {
                        i += 1;
                        continue;
                    }
                },
                Key::Any if wake_any => None,
                Key::Any => {
                    i += 1;
                    continue;
                }
            };
            // order among waiters does not matter: each has its own key
            let w = waiters.swap_remove(i);
            match (w.wake, value) {
                (Wake::Hook(hook), Some(Delivered::Op(r))) => hooks.push((hook, r)),
                (Wake::Hook(_), _) => unreachable!("hooks are registered for ops only"),
                (Wake::Thread(slot), value) => {
                    if value.is_some() {
                        *slot.value.lock().unwrap_or_else(|e| e.into_inner()) = value;
                    }
                    slot.ready.store(true, Ordering::Release);
                    woken.push(slot);
                }
            }
        }
        drop(inner);
        for slot in woken {
            slot.thread.unpark();
        }
        for (hook, r) in hooks {
            hook(r);
        }
    }

    /// Calls `hook` with the result of blocked client operation `op` once it completes: at
    /// once, in this thread, if it already has; otherwise in the thread whose change
    /// completes it (a host's URB, a cancel, a close), right after that thread releases the
    /// bus lock. The hook must not wait for the bus; it may lock it.
    pub fn on_op_complete(&self, op: OpId, hook: OpHook) {
        let mut inner = self.lock_inner();
        if let Some(r) = inner.bus.take_completion(op) {
            drop(inner);
            hook(r);
            return;
        }
        inner.waiters.push(Waiter {
            key: Key::Op(op),
            wake: Wake::Hook(hook),
        });
    }

    /// Runs one client operation, like `with(|b| b.client(op))`, and then `on_pending` under
    /// the same lock if it blocked (to record it before anyone can complete it). Results
    /// are delivered to keyed waiters and hooks as always, but `wait_for` waiters are woken
    /// only if a host could see a difference: a URB given back, a client result queued, the
    /// port status, the instance's state, the controller's next timeout. Changes inside the
    /// instance that no host sees (an endpoint's flags, an event fetched) wake nobody; a
    /// `wait_for` condition on such state must use [`SharedBus::with`].
    pub fn client_quiet(&self, op: ClientOp, on_pending: impl FnOnce(OpId)) -> Outcome {
        self.client_quiet_then(op, on_pending, |_, _| ()).0
    }

    /// [`SharedBus::client_quiet`], with `after` run under the same lock once the operation
    /// has run (given its outcome): a front-end whose thread writes the host's replies itself
    /// (a USB/IP link's client flush, contract P4) takes there the URBs the operation gave
    /// back, and the result of an operation that blocked and already completed. What `after`
    /// took off the bus is no longer a host-visible change, so the host's threads are not
    /// woken for it.
    pub fn client_quiet_then<T>(
        &self,
        op: ClientOp,
        on_pending: impl FnOnce(OpId),
        after: impl FnOnce(&mut Bus, &Outcome) -> T,
    ) -> (Outcome, T) {
        let mut inner = self.lock_inner();
        let before = HostView::of(&inner.bus);
        let out = inner.bus.client(op);
        if let Outcome::Pending(id) = out {
            on_pending(id);
        }
        let taken = after(&mut inner.bus, &out);
        let visible = HostView::of(&inner.bus) != before;
        if visible {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
        self.deliver(inner, visible);
        (out, taken)
    }

    fn register(inner: &mut Inner, key: Key) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            thread: thread::current(),
            ready: AtomicBool::new(false),
            value: Mutex::new(None),
        });
        inner.waiters.push(Waiter {
            key,
            wake: Wake::Thread(slot.clone()),
        });
        slot
    }

    fn deregister(inner: &mut Inner, slot: &Arc<Slot>) {
        inner
            .waiters
            .retain(|w| !matches!(&w.wake, Wake::Thread(s) if Arc::ptr_eq(s, slot)));
    }

    /// Spins (adaptively), then parks until `slot` is ready, `interrupted` holds or the
    /// deadline passes. Returns whether the slot is ready.
    fn park_until(
        &self,
        slot: &Slot,
        deadline: Option<StdInstant>,
        kind: WaitKind,
        interrupted: &dyn Fn() -> bool,
    ) -> bool {
        if let Some(ready) = self.spin(slot, deadline, kind, interrupted) {
            return ready;
        }
        loop {
            if slot.ready.load(Ordering::Acquire) {
                return true;
            }
            if interrupted() {
                return false;
            }
            match deadline {
                Some(d) => {
                    let now = StdInstant::now();
                    if now >= d {
                        return false;
                    }
                    thread::park_timeout(d - now);
                }
                None => thread::park(),
            }
        }
    }

    /// The spinning part of [`park_until`](Self::park_until): `Some` if the wait ended
    /// (`true`: ready), `None` to park.
    fn spin(
        &self,
        slot: &Slot,
        deadline: Option<StdInstant>,
        kind: WaitKind,
        interrupted: &dyn Fn() -> bool,
    ) -> Option<bool> {
        if !self.multi_core {
            return None;
        }
        let budget = &self.spin[kind as usize];
        let ns = budget.ns.load(Ordering::Relaxed);
        let limit_ns = if ns > 0 {
            ns
        } else if budget.waits.fetch_add(1, Ordering::Relaxed) % SPIN_PROBE_EVERY == 0 {
            SPIN_PROBE_NS
        } else {
            return None;
        };
        let start = StdInstant::now();
        let mut limit = Duration::from_nanos(u64::from(limit_ns));
        if let Some(d) = deadline {
            limit = limit.min(d.saturating_duration_since(start));
        }
        let mut spins = 0u32;
        loop {
            if slot.ready.load(Ordering::Acquire) {
                let grown = ns.saturating_mul(2).clamp(SPIN_MIN_NS, SPIN_MAX_NS);
                budget.ns.store(grown, Ordering::Relaxed);
                return Some(true);
            }
            if interrupted() {
                return Some(false);
            }
            std::hint::spin_loop();
            spins += 1;
            if spins % 32 == 0 && start.elapsed() >= limit {
                let halved = ns / 2;
                let next = if halved < SPIN_MIN_NS { 0 } else { halved };
                budget.ns.store(next, Ordering::Relaxed);
                return None;
            }
        }
    }

    /// Waits until `f` returns `Some` (checked under the lock after every change) or
    /// `timeout` of real time passes. A host's wait: runs the inline step, if one is
    /// installed, before parking.
    pub fn wait_for<R>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&mut Bus) -> Option<R>,
    ) -> Option<R> {
        let deadline = StdInstant::now().checked_add(timeout);
        loop {
            let slot = {
                let mut inner = self.lock_inner();
                if let Some(r) = f(&mut inner.bus) {
                    // `f` may have changed the bus (taken a result, stepped a device)
                    self.changed(inner);
                    return Some(r);
                }
                Self::register(&mut inner, Key::Any)
            };
            self.run_inline_steps();
            self.park_until(&slot, deadline, WaitKind::Any, &|| false);
            let mut inner = self.lock_inner();
            Self::deregister(&mut inner, &slot);
            if let Some(r) = f(&mut inner.bus) {
                self.changed(inner);
                return Some(r);
            }
            drop(inner);
            if deadline.is_some_and(|d| StdInstant::now() >= d) {
                return None;
            }
        }
    }

    /// Waits until URB `id` is given back or `timeout` passes; `None` on timeout (the URB is
    /// then still pending). A host's wait: runs the inline step before parking.
    pub fn wait_urb(&self, id: UrbId, timeout: Duration) -> Option<UrbCompletion> {
        let deadline = StdInstant::now().checked_add(timeout);
        loop {
            let slot = {
                let mut inner = self.lock_inner();
                if let Some(c) = inner.bus.take_urb_completion(id) {
                    return Some(c);
                }
                Self::register(&mut inner, Key::Urb(id))
            };
            self.run_inline_steps();
            self.park_until(&slot, deadline, WaitKind::Keyed, &|| false);
            if let Some(c) = Self::take_delivered_urb(&slot) {
                return Some(c);
            }
            Self::deregister(&mut self.lock_inner(), &slot);
            // delivered between the park and the deregistration
            if let Some(c) = Self::take_delivered_urb(&slot) {
                return Some(c);
            }
            if deadline.is_some_and(|d| StdInstant::now() >= d) {
                return None;
            }
        }
    }

    fn take_delivered_urb(slot: &Slot) -> Option<UrbCompletion> {
        match slot.value.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(Delivered::Urb(c)) => Some(c),
            _ => None,
        }
    }

    fn take_delivered_op(slot: &Slot) -> Option<OpResult> {
        match slot.value.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(Delivered::Op(r)) => Some(r),
            _ => None,
        }
    }

    /// Waits for the result of blocked client operation `op` (a blocking ioctl's sleep).
    ///
    /// When `interrupted()` turns true the operation is cancelled once, like a signal: its
    /// result is then EINTR, or its normal result if it had already finished (contract D31),
    /// and the wait goes on for that result. `None` only when `timeout` passes first (the
    /// operation is then still pending). Called from inside an inline step, where waiting
    /// could only deadlock, the operation is cancelled at once.
    pub fn wait_op(
        &self,
        op: OpId,
        timeout: Option<Duration>,
        interrupted: &dyn Fn() -> bool,
    ) -> Option<OpResult> {
        let deadline = timeout.and_then(|t| StdInstant::now().checked_add(t));
        let in_step = IN_INLINE_STEP.with(Cell::get);
        let mut cancelled = false;
        loop {
            let slot = {
                let mut inner = self.lock_inner();
                if let Some(r) = inner.bus.take_completion(op) {
                    return Some(r);
                }
                if !cancelled && (in_step || interrupted()) {
                    if in_step {
                        tracing::warn!(
                            ?op,
                            "a blocking call inside an inline step would wait for the host, \
                             which is this thread: interrupted"
                        );
                    }
                    cancelled = true;
                    inner.bus.cancel(op);
                    let r = inner.bus.take_completion(op);
                    self.changed(inner);
                    match r {
                        Some(r) => return Some(r),
                        None => continue,
                    }
                }
                Self::register(&mut inner, Key::Op(op))
            };
            let check = || !cancelled && interrupted();
            self.park_until(&slot, deadline, WaitKind::Keyed, &check);
            if let Some(r) = Self::take_delivered_op(&slot) {
                return Some(r);
            }
            Self::deregister(&mut self.lock_inner(), &slot);
            if let Some(r) = Self::take_delivered_op(&slot) {
                return Some(r);
            }
            if deadline.is_some_and(|d| StdInstant::now() >= d) {
                return None;
            }
        }
    }

    /// A blocking ioctl: runs `op`, and if it blocks waits for its result up to `timeout`.
    /// On timeout the operation is cancelled like a signal (EINTR unless it completed).
    pub fn client_blocking(&self, op: ClientOp, timeout: Duration) -> OpResult {
        let id = match self.with(|b| b.client(op)) {
            Outcome::Done(r) => return r,
            Outcome::Pending(id) => id,
        };
        if let Some(r) = self.wait_op(id, Some(timeout), &|| false) {
            return r;
        }
        // a signal: EINTR unless it completed meanwhile
        self.wait_op(id, Some(timeout), &|| true)
            .unwrap_or(OpResult {
                ret: Err(Errno::EINTR),
                payload: Payload::None,
            })
    }

    /// Runs a stepped [`Device`] in the calling thread until `done(device)` holds: steps it
    /// while it moves, then sleeps until another thread changes the bus (or `poll` passes).
    pub fn drive_device<D: Device>(
        &self,
        device: &mut D,
        mut done: impl FnMut(&D) -> bool,
        poll: Duration,
    ) {
        while !done(device) {
            let seen = {
                let mut inner = self.lock_inner();
                let mut moved = false;
                while device.step(&mut inner.bus) {
                    moved = true;
                }
                // generations only move under the lock: this is the one after our change
                let seen = self.generation() + u64::from(moved);
                if moved {
                    self.changed(inner);
                }
                seen
            };
            if done(device) {
                return;
            }
            let _ = self.wait_for(poll, |_| (self.generation() != seen).then_some(()));
        }
    }

    // ----------------------------------------------------------------------------------------
    // Same-thread dispatch

    /// Adds a step for the host's waits to run before parking (see the module doc). It runs
    /// without the bus lock, in whichever thread waits as the host, and changes the bus
    /// through this `SharedBus` like a device thread would. May be called from inside a step
    /// (it then joins from the next round on).
    pub fn add_inline_step(&self, step: InlineStep) -> InlineStepId {
        let id = InlineStepId(self.next_step_id.fetch_add(1, Ordering::Relaxed));
        if Self::in_inline_step() {
            lock_ignoring_poison(&self.deferred).add.push((id, step));
        } else {
            lock_ignoring_poison(&self.inline).push((id, step));
        }
        self.has_inline.store(true, Ordering::Release);
        // a host already parked should run it now
        self.notify();
        id
    }

    /// Removes a step and returns it; waits for a round in progress in another thread to
    /// end. From inside a step the removal happens after the current round and `None` is
    /// returned.
    pub fn remove_inline_step(&self, id: InlineStepId) -> Option<InlineStep> {
        if Self::in_inline_step() {
            lock_ignoring_poison(&self.deferred).remove.push(id);
            return None;
        }
        let mut steps = lock_ignoring_poison(&self.inline);
        let pos = steps.iter().position(|(i, _)| *i == id);
        let step = pos.map(|p| steps.remove(p).1);
        if steps.is_empty() {
            self.has_inline.store(false, Ordering::Release);
        }
        step
    }

    /// Whether the calling thread is running an inline step.
    pub fn in_inline_step() -> bool {
        IN_INLINE_STEP.with(Cell::get)
    }

    /// Runs the inline steps, round after round until none moves; returns whether any did.
    /// Does nothing when there are none or they already run (in this thread or another).
    fn run_inline_steps(&self) -> bool {
        if !self.has_inline.load(Ordering::Acquire) || Self::in_inline_step() {
            return false;
        }
        let mut steps = match self.inline.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        struct Flag;
        impl Drop for Flag {
            fn drop(&mut self) {
                IN_INLINE_STEP.with(|f| f.set(false));
            }
        }
        IN_INLINE_STEP.with(|f| f.set(true));
        let flag = Flag;
        let mut moved = false;
        let mut rounds = 0;
        loop {
            let mut round = false;
            for (_, step) in steps.iter_mut() {
                round |= step();
            }
            let deferred = std::mem::take(&mut *lock_ignoring_poison(&self.deferred));
            steps.retain(|(id, _)| !deferred.remove.contains(id));
            let added = !deferred.add.is_empty();
            steps.extend(deferred.add);
            moved |= round;
            rounds += 1;
            if !(round || added) {
                break;
            }
            if rounds == INLINE_ROUNDS_MAX {
                tracing::warn!("inline steps still busy after {INLINE_ROUNDS_MAX} rounds");
                break;
            }
        }
        drop(flag);
        if steps.is_empty() {
            self.has_inline.store(false, Ordering::Release);
        }
        moved
    }
}

/// What a host, or a thread waiting on its behalf, can observe of the bus: if a client
/// operation leaves this unchanged, no `wait_for` waiter needs to look
/// ([`SharedBus::client_quiet`]).
#[derive(PartialEq, Eq)]
struct HostView {
    urbs_done: usize,
    client_done: usize,
    port: rawgadget_udc::PortStatus,
    state: rawgadget_engine::State,
    bound: bool,
    timeout: Option<rawgadget_udc::Instant>,
}

impl HostView {
    fn of(bus: &Bus) -> HostView {
        HostView {
            urbs_done: bus.urb_completions_queued(),
            client_done: bus.completions_queued(),
            port: bus.port_status(),
            state: bus.instance().state(),
            bound: bus.controller().is_bound(),
            timeout: bus.poll_timeout(),
        }
    }
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    use rawgadget_uapi::speed::USB_SPEED_HIGH;
    use rawgadget_uapi::{UsbRawEpIo, UsbRawInit};
    use rawgadget_udc::Urb;

    const BULK_IN_512: [u8; 9] = [9, 5, 0x81, 2, 0x00, 0x02, 0, 0, 0];
    const BULK_OUT_512: [u8; 9] = [9, 5, 0x02, 2, 0x00, 0x02, 0, 0, 0];
    /// A safety net only: every wait below is satisfied by an action, never by time.
    const LONG: Duration = Duration::from_secs(30);

    impl SharedBus {
        fn waiters(&self) -> usize {
            self.lock_inner().waiters.len()
        }
        /// Spins (yielding) until `n` threads wait: sequencing, not timing.
        fn until_waiters(&self, n: usize) {
            while self.waiters() < n {
                thread::yield_now();
            }
        }
    }

    fn done(o: Outcome) -> OpResult {
        match o {
            Outcome::Done(r) => r,
            Outcome::Pending(id) => panic!("{id:?} blocked"),
        }
    }

    /// Running at high speed, past the host's reset, bulk IN (handle 0) and OUT (handle 1)
    /// enabled.
    fn running() -> Arc<SharedBus> {
        let mut bus = Bus::new();
        let init = UsbRawInit::new("dummy_udc", "dummy_udc.0", USB_SPEED_HIGH);
        assert_eq!(done(bus.client(ClientOp::Init(Box::new(init)))).ret, Ok(0));
        assert_eq!(done(bus.client(ClientOp::Run { arg: 0 })).ret, Ok(0));
        let _connect = done(bus.client(ClientOp::EventFetch { capacity: 8 }));
        bus.port_reset();
        bus.advance(Duration::from_millis(100));
        assert_eq!(
            done(bus.client(ClientOp::EpEnable { desc: BULK_IN_512 })).ret,
            Ok(0)
        );
        assert_eq!(
            done(bus.client(ClientOp::EpEnable { desc: BULK_OUT_512 })).ret,
            Ok(1)
        );
        SharedBus::new(bus)
    }

    fn write_op(data: Vec<u8>) -> ClientOp {
        let io = UsbRawEpIo {
            ep: 0,
            flags: 0,
            length: data.len() as u32,
        };
        ClientOp::EpWrite { io, data }
    }

    fn pending(shared: &SharedBus, op: ClientOp) -> OpId {
        match shared.with(|b| b.client(op)) {
            Outcome::Pending(id) => id,
            Outcome::Done(r) => panic!("done at once: {r:?}"),
        }
    }

    #[test]
    fn shared_bus_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<SharedBus>();
        assert_send_sync::<Arc<SharedBus>>();
    }

    /// A blocked EP_WRITE's result is delivered to its waiter by the host thread that
    /// completed it, buffer included (handed over, not copied: the host gets the very
    /// allocation the gadget wrote from).
    #[test]
    fn keyed_wait_gets_its_result_from_the_completing_thread() {
        let shared = running();
        let data: Vec<u8> = (0..512u32).map(|i| i as u8).collect();
        let sent = data.clone();
        let gadget_ptr = sent.as_ptr() as usize;
        let id = pending(&shared, write_op(sent));
        let waiter = {
            let shared = shared.clone();
            thread::spawn(move || shared.wait_op(id, Some(LONG), &|| false))
        };
        shared.until_waiters(1);
        let urb = shared.with(|b| b.submit(Urb::bulk(0x81, vec![0; 512])));
        let r = waiter.join().unwrap().expect("delivered");
        assert_eq!(r.ret, Ok(512));
        assert!(matches!(r.payload, Payload::Data(ref b) if b.len() == 512));
        let c = shared.wait_urb(urb, LONG).expect("given back");
        assert_eq!(c.data(), &data[..]);
        assert_eq!(
            c.buffer.as_ptr() as usize,
            gadget_ptr,
            "swapped, not copied"
        );
        assert_eq!(shared.waiters(), 0);
    }

    /// contract D31: a signal to a thread blocked in a transfer that is still queued ends it
    /// with EINTR.
    #[test]
    fn d31_interrupted_wait_cancels_with_eintr() {
        let shared = running();
        let id = pending(&shared, write_op(vec![1; 512]));
        let flag = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (shared, flag) = (shared.clone(), flag.clone());
            thread::spawn(move || shared.wait_op(id, None, &|| flag.load(Ordering::SeqCst)))
        };
        shared.until_waiters(1);
        flag.store(true, Ordering::SeqCst);
        waiter.thread().unpark();
        let r = waiter.join().unwrap().expect("no deadline");
        assert_eq!(r.ret, Err(Errno::EINTR));
        // the endpoint is free again
        let again = pending(&shared, write_op(vec![2; 512]));
        assert_ne!(again, id);
    }

    /// contract D31: a transfer that finished before the signal keeps its result.
    #[test]
    fn d31_signal_after_completion_keeps_the_result() {
        let shared = running();
        let id = pending(&shared, write_op(vec![3; 512]));
        let _urb = shared.with(|b| b.submit(Urb::bulk(0x81, vec![0; 512])));
        let r = shared.wait_op(id, None, &|| true).expect("completed");
        assert_eq!(r.ret, Ok(512));
    }

    /// A URB wait that times out leaves the URB pending, and its completion is not lost.
    #[test]
    fn timed_out_urb_wait_loses_nothing() {
        let shared = running();
        let urb = shared.with(|b| b.submit(Urb::bulk(0x81, vec![0; 64])));
        assert!(shared.wait_urb(urb, Duration::ZERO).is_none());
        assert_eq!(shared.waiters(), 0, "deregistered");
        let id = pending(&shared, write_op(vec![9; 64]));
        let c = shared.wait_urb(urb, LONG).expect("given back");
        assert_eq!(c.data(), &[9; 64][..]);
        assert_eq!(shared.wait_op(id, None, &|| false).unwrap().ret, Ok(64));
    }

    /// A completion hook runs in the thread whose change completes the operation (here the
    /// host's submit), after the lock is released, with the operation's result; one
    /// registered after completion runs at once in the registering thread.
    #[test]
    fn hook_runs_in_the_completing_thread() {
        let shared = running();
        let id = pending(&shared, write_op(vec![5; 512]));
        let got = Arc::new(Mutex::new(None));
        {
            let (got, shared2) = (got.clone(), shared.clone());
            shared.on_op_complete(
                id,
                Box::new(move |r| {
                    // the lock is free: a hook may look at the bus
                    let _ = shared2.generation();
                    drop(shared2.lock());
                    *got.lock().unwrap() = Some((r.ret, thread::current().id()));
                }),
            );
        }
        assert_eq!(*got.lock().unwrap(), None, "not complete yet");
        let host = {
            let shared = shared.clone();
            thread::spawn(move || {
                let urb = shared.with(|b| b.submit(Urb::bulk(0x81, vec![0; 512])));
                (
                    shared.wait_urb(urb, LONG).map(|c| c.data().len()),
                    thread::current().id(),
                )
            })
        };
        let (len, host_thread) = host.join().unwrap();
        assert_eq!(len, Some(512));
        assert_eq!(*got.lock().unwrap(), Some((Ok(512), host_thread)));
        assert_eq!(shared.waiters(), 0);
        // already complete: runs at once, here
        let id = pending(&shared, write_op(vec![6; 512]));
        let _urb = shared.with(|b| b.submit(Urb::bulk(0x81, vec![0; 512])));
        let here = Arc::new(Mutex::new(None));
        let h = here.clone();
        shared.on_op_complete(id, Box::new(move |r| *h.lock().unwrap() = Some(r.ret)));
        assert_eq!(*here.lock().unwrap(), Some(Ok(512)));
    }

    /// contract D31 through a hook: a cancel (a signal) ends the operation with EINTR and the
    /// hook gets it in the cancelling thread.
    #[test]
    fn d31_cancel_runs_the_hook_with_eintr() {
        let shared = running();
        let id = pending(&shared, write_op(vec![1; 512]));
        let got = Arc::new(Mutex::new(None));
        let g = got.clone();
        shared.on_op_complete(id, Box::new(move |r| *g.lock().unwrap() = Some(r.ret)));
        shared.with(|b| b.cancel(id));
        assert_eq!(*got.lock().unwrap(), Some(Err(Errno::EINTR)));
    }

    /// `client_quiet` wakes a `wait_for` waiter only when a host can see a difference: an
    /// ioctl refused with an errno does not wake it, one that gives a URB back does; a
    /// blocked op is recorded by `on_pending` before anyone can complete it.
    #[test]
    fn client_quiet_wakes_waiters_only_for_host_visible_changes() {
        let shared = running();
        let urb = shared.with(|b| b.submit(Urb::bulk(0x81, vec![0; 64])));
        let wakeups = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let (shared, wakeups) = (shared.clone(), wakeups.clone());
            thread::spawn(move || {
                shared.wait_for(LONG, |b| {
                    wakeups.fetch_add(1, Ordering::SeqCst);
                    b.take_urb_completion(urb)
                })
            })
        };
        shared.until_waiters(1);
        let gen = shared.generation();
        let checks = wakeups.load(Ordering::SeqCst);
        // EP_DISABLE of a handle that does not exist: EINVAL, nothing a host sees
        let r = shared.client_quiet(ClientOp::EpDisable { arg: 7 }, |_| panic!("blocked"));
        assert!(matches!(r, Outcome::Done(OpResult { ret: Err(_), .. })));
        assert_eq!(shared.generation(), gen);
        assert_eq!(shared.waiters(), 1, "still parked");
        assert_eq!(wakeups.load(Ordering::SeqCst), checks);
        // a write that completes the host's URB wakes it
        let mut recorded = None;
        let r = shared.client_quiet(write_op(vec![4; 64]), |id| recorded = Some(id));
        let c = waiter.join().unwrap().expect("woken");
        assert_eq!(c.data(), &[4; 64][..]);
        assert!(shared.generation() > gen);
        match r {
            Outcome::Done(r) => assert_eq!(r.ret, Ok(64)),
            Outcome::Pending(id) => {
                assert_eq!(recorded, Some(id));
                assert_eq!(
                    shared.wait_op(id, Some(LONG), &|| false).map(|r| r.ret),
                    Some(Ok(64))
                );
            }
        }
    }

    /// contract P4: a client that takes the URB its operation gave back (`client_quiet_then`)
    /// does not wake the host's `wait_for` waiters for it; the give-back is in its hands.
    #[test]
    fn p4_client_quiet_then_takes_the_give_back_without_waking() {
        let shared = running();
        let urb = shared.with(|b| b.submit(Urb::bulk(0x81, vec![0; 64])));
        let wakeups = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (shared, wakeups, stop) = (shared.clone(), wakeups.clone(), stop.clone());
            thread::spawn(move || {
                shared.wait_for(LONG, |_| {
                    wakeups.fetch_add(1, Ordering::SeqCst);
                    stop.load(Ordering::SeqCst).then_some(())
                })
            })
        };
        shared.until_waiters(1);
        let (gen, checks) = (shared.generation(), wakeups.load(Ordering::SeqCst));
        let (r, (given_back, result)) = shared.client_quiet_then(
            write_op(vec![5; 64]),
            |_| {},
            |b, out| {
                let result = match out {
                    Outcome::Done(r) => r.ret,
                    Outcome::Pending(id) => b.take_completion(*id).expect("completed").ret,
                };
                (b.take_urb_completion(urb), result)
            },
        );
        assert_eq!(given_back.expect("given back").data(), &[5; 64][..]);
        assert_eq!(result, Ok(64), "{r:?}");
        assert_eq!(shared.generation(), gen);
        assert_eq!(shared.waiters(), 1, "still parked");
        assert_eq!(wakeups.load(Ordering::SeqCst), checks);
        // without `after` the same give-back wakes it
        let urb = shared.with(|b| b.submit(Urb::bulk(0x81, vec![0; 64])));
        let gen = shared.generation();
        let _ = shared.client_quiet(write_op(vec![6; 64]), |_| {});
        assert!(shared.generation() > gen);
        shared.with(|b| b.take_urb_completion(urb));
        stop.store(true, Ordering::SeqCst);
        shared.notify();
        assert_eq!(waiter.join().unwrap(), Some(()));
    }

    /// A `wait_for` waiter is woken by any change and re-checks its condition.
    #[test]
    fn any_waiter_wakes_on_a_change() {
        let shared = running();
        let seen = shared.generation();
        let waiter = {
            let shared = shared.clone();
            thread::spawn(move || {
                shared.wait_for(LONG, |_| (shared.generation() != seen).then_some(()))
            })
        };
        shared.until_waiters(1);
        shared.with(|_| ());
        assert_eq!(waiter.join().unwrap(), Some(()));
    }

    /// The host's waits run the inline steps in the host's own thread: a device write issued
    /// by a step completes the URB the host waits for.
    #[test]
    fn host_wait_runs_inline_steps_in_its_thread() {
        let shared = running();
        let ran_in = Arc::new(Mutex::new(None));
        let step: InlineStep = {
            let (shared, ran_in) = (shared.clone(), ran_in.clone());
            let mut written = false;
            Box::new(move || {
                if written {
                    return false;
                }
                written = true;
                *ran_in.lock().unwrap() = Some(thread::current().id());
                let _ = shared.with(|b| b.client(write_op(vec![7; 100])));
                true
            })
        };
        let id = shared.add_inline_step(step);
        let urb = shared.with(|b| b.submit(Urb::bulk(0x81, vec![0; 512])));
        let c = shared.wait_urb(urb, LONG).expect("answered by the step");
        assert_eq!(c.data(), &[7; 100][..], "a short packet ends the URB");
        assert_eq!(*ran_in.lock().unwrap(), Some(thread::current().id()));
        assert!(shared.remove_inline_step(id).is_some());
        assert!(shared.remove_inline_step(id).is_none());
    }

    /// A step that blocks on something only the host (its own thread) could complete gets
    /// EINTR at once instead of deadlocking (the signal of contract D31).
    #[test]
    fn wait_inside_inline_step_is_interrupted() {
        let shared = running();
        let result = Arc::new(Mutex::new(None));
        let step: InlineStep = {
            let (shared, result) = (shared.clone(), result.clone());
            Box::new(move || {
                if result.lock().unwrap().is_some() {
                    return false;
                }
                // no URB is queued: only the host could complete this write
                let id = pending(&shared, write_op(vec![1; 512]));
                let r = shared.wait_op(id, None, &|| false);
                *result.lock().unwrap() = Some(r.map(|r| r.ret));
                true
            })
        };
        shared.add_inline_step(step);
        let got = shared.wait_for(LONG, |_| *result.lock().unwrap());
        assert_eq!(got, Some(Some(Err(Errno::EINTR))));
    }

    /// Steps added or removed from inside a step take effect after the round: the new step
    /// runs in the same host wait, the removed one no more.
    #[test]
    fn steps_change_between_rounds() {
        let shared = running();
        let runs = Arc::new(AtomicUsize::new(0));
        let added = {
            let (shared, runs) = (shared.clone(), runs.clone());
            let mut added = false;
            Box::new(move || {
                if added {
                    return false;
                }
                added = true;
                let (shared2, runs) = (shared.clone(), runs.clone());
                let mut own: Option<InlineStepId> = None;
                let own_slot = Arc::new(Mutex::new(None::<InlineStepId>));
                let slot = own_slot.clone();
                let id = shared.add_inline_step(Box::new(move || {
                    if own.is_none() {
                        own = *slot.lock().unwrap();
                    }
                    runs.fetch_add(1, Ordering::SeqCst);
                    // remove itself from inside: effective after this round
                    assert!(shared2.remove_inline_step(own.expect("id known")).is_none());
                    true
                }));
                *own_slot.lock().unwrap() = Some(id);
                true
            })
        };
        let first = shared.add_inline_step(added);
        let _ = shared.wait_for(LONG, |_| (runs.load(Ordering::SeqCst) > 0).then_some(()));
        // one more host wait: the removed step does not run again
        let _ = shared.wait_for(Duration::ZERO, |_| None::<()>);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(shared.remove_inline_step(first).is_some());
        assert!(!shared.has_inline.load(Ordering::SeqCst));
    }
}
