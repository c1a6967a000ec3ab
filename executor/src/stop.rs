//! Stopping on SIGTERM or SIGINT. A daemon blocks both in every thread before it starts any
//! ([`TermSignals::block`]) and one thread of its own takes them ([`TermSignals::wait`]): no
//! signal handler runs, and no system call of another thread is interrupted.
//!
//! A forked child keeps the mask of the thread that forked it across `exec`, and std's
//! `Command` leaves it so: every process such a daemon starts must call [`unblock_all`] in its
//! `pre_exec`, or it (and whatever it starts) ignores SIGTERM and SIGINT.

use std::io;
use std::time::Duration;

/// SIGTERM and SIGINT, blocked in the thread that made this value and in every thread started
/// from it afterwards.
pub struct TermSignals(libc::sigset_t);

impl TermSignals {
    /// Blocks SIGTERM and SIGINT in the calling thread, which the threads it starts from now on
    /// inherit: call it before any other thread is started, or those keep the default action
    /// (the process ends at once).
    pub fn block() -> io::Result<TermSignals> {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: `set` is initialised by sigemptyset before anything reads it; sigaddset and
        // pthread_sigmask only read and write the set we pass (and the thread's own mask).
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
            libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
            let set = set.assume_init();
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(TermSignals(set))
        }
    }

    /// Waits for SIGTERM or SIGINT, at most `timeout` (none: without end), and takes it: the
    /// signal's number, none if the time ran out first, or why waiting failed.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<Option<libc::c_int>> {
        loop {
            let ts = timeout.map(|t| libc::timespec {
                tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
                tv_nsec: t.subsec_nanos() as libc::c_long,
            });
            // SAFETY: the set is initialised (`block`); the timespec, when given, lives across
            // the call; no siginfo is asked for (a null pointer is allowed).
            let sig = unsafe {
                libc::sigtimedwait(
                    &self.0,
                    std::ptr::null_mut(),
                    ts.as_ref().map_or(std::ptr::null(), |t| t as *const _),
                )
            };
            if sig > 0 {
                return Ok(Some(sig));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Another signal's handler ran (none of ours): wait again, for the whole time
                // (a caller that waits in a loop checks its own deadline).
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(None),
                _ => return Err(e),
            }
        }
    }
}

/// Unblocks every signal in the calling thread: for a `pre_exec` closure (it is
/// async-signal-safe and allocates nothing), so that the process started does not inherit the
/// daemon's blocked signals.
pub fn unblock_all() -> io::Result<()> {
    // SAFETY: `none` is a set on our stack, initialised by sigemptyset before
    // pthread_sigmask reads it; both are async-signal-safe and touch only the set and the
    // thread's own mask.
    let rc = unsafe {
        let mut none = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut())
    };
    match rc {
        0 => Ok(()),
        rc => Err(io::Error::from_raw_os_error(rc)),
    }
}

/// The socket [`unlink_on_signal`] removes: its absolute path, the file it was (device and
/// inode: a file another process put there since is not ours), and the process it belongs to
/// (a child forked without `exec` inherits the handler, not the socket).
struct Unlink {
    path: std::ffi::CString,
    dev: u64,
    ino: u64,
    pid: libc::pid_t,
}

static UNLINK: std::sync::OnceLock<Unlink> = std::sync::OnceLock::new();
/// Cleared once the process removed the socket itself ([`unlink_now`]).
static ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn unlink_and_die(sig: libc::c_int) {
    if ARMED.load(std::sync::atomic::Ordering::SeqCst)
        && let Some(u) = UNLINK.get()
    {
        // SAFETY: getpid, lstat and unlink are async-signal-safe; the path is NUL-terminated
        // and lives as long as the process; `st` is a plain struct on our stack that lstat
        // fills before it is read.
        unsafe {
            let mut st = std::mem::zeroed::<libc::stat>();
            // lstat, as the device and inode were taken: a symlink put at the path since is
            // not the file we bound, whatever it points to.
            if libc::getpid() == u.pid
                && libc::lstat(u.path.as_ptr(), &mut st) == 0
                && st.st_dev == u.dev
                && st.st_ino == u.ino
            {
                libc::unlink(u.path.as_ptr());
            }
        }
    }
    // SAFETY: signal and raise are async-signal-safe. With the default action back, the
    // signal raised again (pending until this handler returns: it is blocked while the
    // handler runs) ends the process as it would have without the handler.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Removes the socket at `path` (bound by this process just before) when SIGTERM, SIGINT or
/// SIGHUP ends the process, which then ends by that signal as it would have anyway. Only that
/// very file (by device and inode), and only from this process. A signal the process was
/// started with ignored (`nohup`, a background job) stays ignored. A handler, not a blocked
/// mask: processes started by this one (a function's children) keep the default actions
/// (handlers do not survive `exec`, a mask would). One socket per process: a second call
/// fails.
pub fn unlink_on_signal(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let path = std::path::absolute(path)?;
    let meta = std::fs::symlink_metadata(&path)?;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    UNLINK
        .set(Unlink {
            path: c_path,
            dev: meta.dev(),
            ino: meta.ino(),
            pid: std::process::id() as libc::pid_t,
        })
        .map_err(|_| io::Error::other("a socket to remove at a signal is already set"))?;
    ARMED.store(true, std::sync::atomic::Ordering::SeqCst);
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: `old` is written by the first sigaction before it is read; `action` is
        // zeroed (no flags, an empty mask) and then given our handler, which only makes
        // async-signal-safe calls.
        let rc = unsafe {
            let mut old = std::mem::zeroed::<libc::sigaction>();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                -1
            } else if old.sa_sigaction == libc::SIG_IGN {
                0
            } else {
                let mut action = std::mem::zeroed::<libc::sigaction>();
                action.sa_sigaction = unlink_and_die as extern "C" fn(libc::c_int) as usize;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(sig, &action, std::ptr::null_mut())
            }
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// For the process's orderly end: disarms the handler of [`unlink_on_signal`] and removes the
/// socket it was given, as the handler would (only if the file at the path is still the one
/// bound: device and inode, not followed through a symlink).
pub fn unlink_now() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    ARMED.store(false, std::sync::atomic::Ordering::SeqCst);
    if let Some(u) = UNLINK.get() {
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(u.path.to_bytes()));
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == u.dev && m.ino() == u.ino) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The signal's name, for the log.
pub fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_is_taken_by_wait_and_a_timeout_returns_none() {
        // In a thread of its own: the mask is per thread, and a SIGINT sent to this thread only
        // (`pthread_kill`) reaches no other test.
        std::thread::spawn(|| {
            let signals = TermSignals::block().expect("block");
            assert_eq!(
                signals.wait(Some(Duration::from_millis(20))).expect("wait"),
                None
            );
            // SAFETY: signals this very thread, whose mask holds SIGINT blocked: it stays
            // pending until taken below.
            let rc = unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGINT) };
            assert_eq!(rc, 0);
            assert_eq!(
                signals.wait(Some(Duration::from_secs(5))).expect("wait"),
                Some(libc::SIGINT)
            );
            assert_eq!(name(libc::SIGINT), "SIGINT");
            // Taken: nothing pending any more.
            assert_eq!(signals.wait(Some(Duration::ZERO)).expect("wait"), None);
            // And unblocked: a process started from here would get SIGINT again.
            unblock_all().expect("unblock");
            let mut mask = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            // SAFETY: asks for this thread's mask only; `mask` is written by the call (its
            // return value checked) before it is read.
            let blocked = unsafe {
                assert_eq!(
                    libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), mask.as_mut_ptr()),
                    0
                );
                libc::sigismember(mask.as_ptr(), libc::SIGINT)
            };
            assert_eq!(blocked, 0, "SIGINT still blocked");
        })
        .join()
        .expect("the test thread");
    }
}
