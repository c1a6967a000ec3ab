//! Waking the threads that sleep in a verbs queue's `wait`: an interrupt count, and one
//! eventfd per sleeping thread, so that no sleeper can take another's wake-up (a shared eventfd
//! is read back to zero by the first thread it wakes).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The interrupt count and the eventfds of the threads asleep.
#[derive(Debug, Default)]
pub(super) struct Wake {
    /// Moved by every interrupt: a waiter that sees it move returns.
    generation: AtomicU64,
    /// Sleepers registered in `sleepers` (read without the lock).
    asleep: AtomicUsize,
    /// The eventfds of the registered sleepers.
    sleepers: Mutex<Vec<RawFd>>,
    /// Eventfds of sleepers that left, for the next ones.
    idle: Mutex<Vec<OwnedFd>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds one to eventfd `fd` (non-blocking: a saturated counter is already readable).
fn signal(fd: RawFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from `one` to an eventfd a registered sleeper keeps open while it
    // is listed (it unlists it under the lock we hold before closing or reusing it).
    unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
}

/// Resets eventfd `fd` to zero (non-blocking).
fn clear(fd: RawFd) {
    let mut b = [0u8; 8];
    // SAFETY: reads at most 8 bytes into `b` from our own non-blocking eventfd.
    unsafe { libc::read(fd, b.as_mut_ptr().cast(), 8) };
}

impl Wake {
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
                signal(fd);
            }
        }
    }

    /// Registers the calling thread as a sleeper with an eventfd of its own (cleared). The
    /// caller then checks the count once more before it sleeps on [`Sleeper::fd`]: an interrupt
    /// after that check signals the eventfd.
    pub(super) fn sleeper(&self) -> io::Result<Sleeper<'_>> {
        let fd = match lock(&self.idle).pop() {
            Some(fd) => fd,
            None => {
                // SAFETY: eventfd returns a new descriptor (or -1, checked) that we own.
                let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: `fd` is a fresh descriptor owned by nobody else.
                unsafe { OwnedFd::from_raw_fd(fd) }
            }
        };
        // A wake-up meant for an earlier sleeper with this eventfd is stale now.
        clear(fd.as_raw_fd());
        lock(&self.sleepers).push(fd.as_raw_fd());
        self.asleep.fetch_add(1, Ordering::SeqCst);
        Ok(Sleeper {
            wake: self,
            fd: Some(fd),
        })
    }
}

/// A registered sleeper; dropping it unregisters it (its eventfd is kept for the next one).
#[derive(Debug)]
pub(super) struct Sleeper<'w> {
    wake: &'w Wake,
    fd: Option<OwnedFd>,
}

impl Sleeper<'_> {
    /// The eventfd to poll: readable once an interrupt or a nudge came after registering.
    pub(super) fn fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
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
