//! Interrupting a blocked call from another thread.
//!
//! Raw gadget has no timeouts and no non-blocking mode (spec §2.5): EVENT_FETCH, EP0_READ/WRITE
//! and EP_READ/WRITE sleep until the host acts. A program stops such a call by making it fail
//! with EINTR: on a device node by signalling the blocked thread (spec Appendix step 6), in the
//! in-process engine by cancelling the pending operation. [`CancelHandle`] hides which.
//!
//! A handle is *sticky*: once [`CancelHandle::cancel`] has been called, the call blocked with it
//! returns EINTR (unless it had already finished, then its normal result stands, contract D31),
//! and every later call made with it returns EINTR at once without reaching the backend, until
//! [`CancelHandle::reset`]. That is what an endpoint thread needs to stop for good.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Wakes one blocked call so that it returns EINTR. Implemented by backends.
pub trait Wake: Send + Sync {
    /// Called with the handle's lock held, possibly many times, until the blocked call has
    /// deregistered. It must not block and must not call back into the [`CancelHandle`].
    fn wake(&self);
}

/// Interrupts blocking calls made with it; cheap to clone, `Send + Sync`.
#[derive(Clone, Default)]
pub struct CancelHandle {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a blocked call deregisters, so [`CancelHandle::cancel`] returns as soon
    /// as the call has, instead of polling.
    left: Condvar,
}

#[derive(Default)]
struct State {
    cancelled: bool,
    next_id: u64,
    blocked: Vec<(u64, Arc<dyn Wake>)>,
}

impl std::fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("CancelHandle")
            .field("cancelled", &st.cancelled)
            .field("blocked", &st.blocked.len())
            .finish()
    }
}

/// Returned by [`CancelHandle::enter`] when the handle is already cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl CancelHandle {
    pub fn new() -> CancelHandle {
        CancelHandle::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves only plain data behind; keep going.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Interrupts every call blocked with this handle and returns once none is left blocked;
    /// later calls fail with EINTR at once until [`reset`](Self::reset).
    ///
    /// The wake-up is repeated until the call has returned, because it can arrive just before
    /// the blocked thread enters the kernel, where it would be lost. Between wake-ups it waits
    /// for the call to deregister, so it returns as soon as the call has (a fixed sleep here
    /// made every SET_INTERFACE of a device with endpoint threads cost milliseconds).
    pub fn cancel(&self) {
        self.request_cancel();
        self.wait_cancelled();
    }

    /// The first half of [`cancel`](Self::cancel): marks the handle cancelled and wakes the
    /// calls blocked with it, without waiting. Stopping several handles, request all of them
    /// first and then [`cancel`](Self::cancel) each: their calls then return in parallel.
    pub fn request_cancel(&self) {
        let mut st = self.lock();
        st.cancelled = true;
        for (_, w) in &st.blocked {
            w.wake();
        }
    }

    fn wait_cancelled(&self) {
        let mut wait = Duration::from_micros(500);
        let mut st = self.lock();
        while !st.blocked.is_empty() {
            let (guard, timeout) = self
                .shared
                .left
                .wait_timeout(st, wait)
                .unwrap_or_else(|p| p.into_inner());
            st = guard;
            if timeout.timed_out() {
                // Possibly a lost wake-up: repeat it.
                for (_, w) in &st.blocked {
                    w.wake();
                }
                wait = (wait * 2).min(Duration::from_millis(20));
            }
        }
    }

    /// Whether [`cancel`](Self::cancel) has been called since the last reset.
    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Lets calls made with this handle block again.
    pub fn reset(&self) {
        self.lock().cancelled = false;
    }

    /// For backends: registers a call about to block, with the way to wake it. Drop the guard
    /// once the call has returned. Never hold a backend lock of your own while calling this or
    /// dropping the guard: [`Wake::wake`] runs under this handle's lock and may take it.
    ///
    /// # Errors
    /// [`Cancelled`] if the handle is cancelled: return EINTR without blocking.
    pub fn enter(&self, waker: Arc<dyn Wake>) -> Result<BlockedGuard<'_>, Cancelled> {
        let mut st = self.lock();
        if st.cancelled {
            return Err(Cancelled);
        }
        let id = st.next_id;
        st.next_id += 1;
        st.blocked.push((id, waker));
        Ok(BlockedGuard { handle: self, id })
    }

    /// Number of calls currently registered as blocked (for tests and diagnostics).
    pub fn blocked_calls(&self) -> usize {
        self.lock().blocked.len()
    }
}

/// A registered blocked call; deregisters on drop.
#[must_use = "the call is deregistered when the guard drops"]
pub struct BlockedGuard<'a> {
    handle: &'a CancelHandle,
    id: u64,
}

impl Drop for BlockedGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.handle.lock();
        st.blocked.retain(|(id, _)| *id != self.id);
        if st.cancelled {
            self.handle.shared.left.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Condvar;

    /// A fake blocked call: waits on a condvar until woken.
    struct CondWake {
        woken: Mutex<bool>,
        cv: Condvar,
        wakes: AtomicUsize,
    }
    impl Wake for CondWake {
        fn wake(&self) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
            *self.woken.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    #[test]
    fn cancel_wakes_blocked_call_and_is_sticky() {
        let h = CancelHandle::new();
        let w = Arc::new(CondWake {
            woken: Mutex::new(false),
            cv: Condvar::new(),
            wakes: 0.into(),
        });
        let entered = Arc::new(AtomicBool::new(false));
        let t = {
            let (h, w, entered) = (h.clone(), w.clone(), entered.clone());
            std::thread::spawn(move || {
                let g = h.enter(w.clone()).expect("not cancelled yet");
                entered.store(true, Ordering::SeqCst);
                let mut woken = w.woken.lock().unwrap();
                while !*woken {
                    woken = w.cv.wait(woken).unwrap();
                }
                drop(woken);
                drop(g);
            })
        };
        while !entered.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        h.cancel();
        t.join().unwrap();
        assert!(w.wakes.load(Ordering::SeqCst) >= 1);
        assert_eq!(h.blocked_calls(), 0);
        // Sticky until reset.
        assert!(h.enter(w.clone()).is_err());
        h.reset();
        assert!(h.enter(w).is_ok());
    }

    /// Two-phase stop: `request_cancel` wakes without waiting, so two handles' calls are
    /// interrupted together; `cancel` afterwards returns once its call has left, woken by the
    /// guard's drop rather than by re-sending (one wake each for a call that listens).
    #[test]
    fn request_cancel_interrupts_without_waiting() {
        let handles = [CancelHandle::new(), CancelHandle::new()];
        let wakers: Vec<Arc<CondWake>> = (0..2)
            .map(|_| {
                Arc::new(CondWake {
                    woken: Mutex::new(false),
                    cv: Condvar::new(),
                    wakes: 0.into(),
                })
            })
            .collect();
        let threads: Vec<_> = handles
            .iter()
            .zip(&wakers)
            .map(|(h, w)| {
                let (h, w) = (h.clone(), w.clone());
                std::thread::spawn(move || {
                    let g = h.enter(w.clone()).expect("not cancelled yet");
                    let mut woken = w.woken.lock().unwrap();
                    while !*woken {
                        woken = w.cv.wait(woken).unwrap();
                    }
                    drop(woken);
                    drop(g);
                })
            })
            .collect();
        for h in &handles {
            while h.blocked_calls() == 0 {
                std::thread::yield_now();
            }
        }
        for h in &handles {
            h.request_cancel();
            assert!(h.is_cancelled());
        }
        for w in &wakers {
            assert_eq!(w.wakes.load(Ordering::SeqCst), 1, "woken before any wait");
        }
        for h in &handles {
            h.cancel();
            assert_eq!(h.blocked_calls(), 0);
        }
        for t in threads {
            t.join().unwrap();
        }
    }

    /// A wake-up lost before the thread blocks is repeated (the signal race of spec Appendix 6).
    #[test]
    fn cancel_repeats_lost_wakeups() {
        struct Counting(AtomicUsize);
        impl Wake for Counting {
            fn wake(&self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let h = CancelHandle::new();
        let w = Arc::new(Counting(AtomicUsize::new(0)));
        let t = {
            let (h, w) = (h.clone(), w.clone());
            std::thread::spawn(move || {
                let _g = h.enter(w.clone()).unwrap();
                // Ignore the first two wake-ups, as if they came before the syscall.
                while w.0.load(Ordering::SeqCst) < 3 {
                    std::thread::yield_now();
                }
            })
        };
        while h.blocked_calls() == 0 {
            std::thread::yield_now();
        }
        h.cancel();
        t.join().unwrap();
        assert!(w.0.load(Ordering::SeqCst) >= 3);
    }
}
