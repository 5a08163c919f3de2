//! A [`Bus`] shared between threads: a device program answering control requests in one
//! thread while a host waits for its URBs in another, as with a real raw-gadget program.
//!
//! One mutex guards the whole bus and one condition variable is notified after every change,
//! so any waiter (a blocked ioctl, a host waiting for a URB) re-checks its condition. The bus
//! is always idle between calls (every `Bus` input runs the driver loop), so a waiter never
//! has to drive anything itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant as StdInstant};

use rawgadget_engine::{ClientOp, OpResult, Outcome};

use crate::bus::Bus;
use crate::port::Device;

/// See the module doc.
#[derive(Debug)]
pub struct SharedBus {
    bus: Mutex<Bus>,
    changed: Condvar,
    /// Bumped, under the lock, by every change made through [`SharedBus::with`]; lets a
    /// waiter tell "something happened" without a lost wakeup.
    generation: AtomicU64,
}

impl SharedBus {
    pub fn new(bus: Bus) -> Arc<SharedBus> {
        Arc::new(SharedBus {
            bus: Mutex::new(bus),
            changed: Condvar::new(),
            generation: AtomicU64::new(0),
        })
    }

    /// Locks the bus. Callers that change it must call [`SharedBus::notify`] afterwards;
    /// prefer [`SharedBus::with`].
    pub fn lock(&self) -> MutexGuard<'_, Bus> {
        // a panic while holding the lock leaves the bus in a consistent state between inputs
        self.bus.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every waiter.
    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Runs `f` on the locked bus, then wakes every waiter.
    pub fn with<R>(&self, f: impl FnOnce(&mut Bus) -> R) -> R {
        let r = {
            let mut bus = self.lock();
            let r = f(&mut bus);
            self.generation.fetch_add(1, Ordering::Relaxed);
            r
        };
        self.notify();
        r
    }

    /// How many changes [`SharedBus::with`] has made so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
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
            let (moved, seen) = {
                let mut bus = self.lock();
                let mut moved = false;
                while device.step(&mut bus) {
                    moved = true;
                }
                if moved {
                    self.generation.fetch_add(1, Ordering::Relaxed);
                }
                (moved, self.generation())
            };
            if moved {
                self.notify();
            }
            if done(device) {
                return;
            }
            let _ = self.wait_for(poll, |_| (self.generation() != seen).then_some(()));
        }
    }

    /// Waits until `f` returns `Some` (checked under the lock after every change) or
    /// `timeout` of real time passes.
    pub fn wait_for<R>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&mut Bus) -> Option<R>,
    ) -> Option<R> {
        let deadline = StdInstant::now().checked_add(timeout);
        let mut bus = self.lock();
        loop {
            if let Some(r) = f(&mut bus) {
                drop(bus);
                self.notify();
                return Some(r);
            }
            let left = match deadline {
                Some(d) => d.checked_duration_since(StdInstant::now())?,
                None => Duration::from_secs(3600),
            };
            bus = match self.changed.wait_timeout(bus, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// A blocking ioctl: runs `op`, and if it blocks waits for its result up to `timeout`.
    /// On timeout the operation is cancelled like a signal (EINTR unless it completed).
    pub fn client_blocking(&self, op: ClientOp, timeout: Duration) -> OpResult {
        let id = match self.with(|b| b.client(op)) {
            Outcome::Done(r) => return r,
            Outcome::Pending(id) => id,
        };
        if let Some(r) = self.wait_for(timeout, |b| b.take_completion(id)) {
            return r;
        }
        self.with(|b| {
            b.cancel(id);
            b.take_completion(id)
        })
        .unwrap_or(OpResult {
            ret: Err(rawgadget_uapi::Errno::EINTR),
            payload: rawgadget_engine::Payload::None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_bus_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<SharedBus>();
        assert_send_sync::<Arc<SharedBus>>();
    }
}
