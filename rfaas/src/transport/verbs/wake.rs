//! Waking the threads that sleep in a verbs queue's `wait`: an interrupt count, and one
//! eventfd per sleeping thread, so that no sleeper can take another's wake-up (a shared eventfd
//! is read back to zero by the first thread it wakes).
//!
//! The first sleeper's eventfd is made with the queue ([`Wake::new`]): a queue one thread waits
//! on (an executor worker's) never makes one at a wait. Threads that sleep at the same time
//! as others (a client's callers) make theirs when they first need one, and keep them for the
//! next sleepers; one that cannot (out of descriptors) still sleeps, on the completion channel
//! alone, and looks at the interrupt count every [`UNSIGNALLED_TICK`].

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Longest sleep of a sleeper without an eventfd: interrupts and nudges cannot signal it, it
/// sees them when it looks again.
pub(super) const UNSIGNALLED_TICK: Duration = Duration::from_millis(1);

/// The interrupt count and the eventfds of the threads asleep.
#[derive(Debug)]
pub(super) struct Wake {
    /// Moved by every interrupt: a waiter that sees it move returns.
    generation: AtomicU64,
    /// Sleepers registered in `sleepers` (read without the lock).
    asleep: AtomicUsize,
    /// The eventfds of the registered sleepers.
    sleepers: Mutex<Vec<RawFd>>,
    /// Eventfds of sleepers that left, for the next ones (and the one made up front).
    idle: Mutex<Vec<OwnedFd>>,
    /// A sleeper went without an eventfd (said once).
    unsignalled: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Wake {
    /// The count at zero and one eventfd made now, for the first sleeper: short of
    /// descriptors, this (the queue's creation) fails, not a later wait.
    pub(super) fn new() -> io::Result<Wake> {
        Ok(Wake {
            generation: AtomicU64::new(0),
            asleep: AtomicUsize::new(0),
            sleepers: Mutex::new(Vec::new()),
            idle: Mutex::new(vec![crate::sys::eventfd()?]),
            unsignalled: AtomicBool::new(false),
        })
    }

    /// The interrupt count.
    pub(super) fn epoch(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Moves the count and wakes every registered sleeper.
    pub(super) fn interrupt(&self) {
        // Pairs with `sleeper`: either we see the sleeper counted (and its eventfd listed) and
        // signal it, or it sees the count moved when it checks after registering.
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.nudge(None);
    }

    /// Wakes the registered sleepers (but the one with eventfd `except`) without moving the
    /// count: they look for completions again and go back to sleep.
    pub(super) fn nudge(&self, except: Option<RawFd>) {
        if self.asleep.load(Ordering::SeqCst) == 0 {
            return;
        }
        for &fd in lock(&self.sleepers).iter() {
            if Some(fd) != except {
                // Open: a registered sleeper keeps its eventfd open while it is listed, and
                // unlists it under the lock held here before closing or reusing it.
                crate::sys::eventfd_signal(fd);
            }
        }
    }

    /// Registers the calling thread as a sleeper with an eventfd of its own (cleared). The
    /// caller then checks the count once more before it sleeps on [`Sleeper::fd`]: an interrupt
    /// after that check signals the eventfd.
    ///
    /// Without a spare eventfd, and unable to make one (out of descriptors), the sleeper has
    /// none: it is not registered, and sleeps at most [`Sleeper::longest_sleep`] at a time.
    pub(super) fn sleeper(&self) -> Sleeper<'_> {
        let spare = lock(&self.idle).pop();
        let fd = match spare.map_or_else(crate::sys::eventfd, Ok) {
            Ok(fd) => fd,
            Err(e) => {
                if !self.unsignalled.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        "no eventfd for a thread waiting on an RDMA queue: it looks for \
                         interrupts every {UNSIGNALLED_TICK:?} until descriptors are free"
                    );
                }
                return Sleeper {
                    wake: self,
                    fd: None,
                };
            }
        };
        // A wake-up meant for an earlier sleeper with this eventfd is stale now.
        crate::sys::eventfd_clear(fd.as_raw_fd());
        lock(&self.sleepers).push(fd.as_raw_fd());
        self.asleep.fetch_add(1, Ordering::SeqCst);
        Sleeper {
            wake: self,
            fd: Some(fd),
        }
    }
}

/// A sleeper, registered if it has an eventfd; dropping it unregisters it (its eventfd is kept
/// for the next one).
#[derive(Debug)]
pub(super) struct Sleeper<'w> {
    wake: &'w Wake,
    fd: Option<OwnedFd>,
}

impl Sleeper<'_> {
    /// The eventfd to poll: readable once an interrupt or a nudge came after registering; -1
    /// (which `poll(2)` skips) for a sleeper without one.
    pub(super) fn fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    /// How long the sleeper may sleep before it looks again: as long as the caller likes if
    /// interrupts signal it, [`UNSIGNALLED_TICK`] if not.
    pub(super) fn longest_sleep(&self) -> Duration {
        if self.fd.is_some() {
            Duration::MAX
        } else {
            UNSIGNALLED_TICK
        }
    }
}

impl Drop for Sleeper<'_> {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        self.wake.asleep.fetch_sub(1, Ordering::SeqCst);
        {
            let raw = fd.as_raw_fd();
            let mut sleepers = lock(&self.wake.sleepers);
            if let Some(i) = sleepers.iter().position(|&s| s == raw) {
                sleepers.swap_remove(i);
            }
        }
        lock(&self.wake.idle).push(fd);
    }
}
