//! One deadline for a whole exchange: a lease's handshake, a negotiation with a manager, a
//! registry request.
//!
//! A handshake is many blocking reads and writes on several sockets (the control connection,
//! then one per worker), some of them inside the transports' own `connect`s. A timeout per read
//! does not bound the whole: a peer that drips its messages a byte at a time restarts it with
//! every byte. The watchdog does: past its deadline it shuts down every socket it watches, so
//! whatever read or write the handshake is blocked in returns at once, and the handshake's
//! result is replaced by a timeout error.

use crate::lease::Error;
use crate::transport::TransportError;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A watched socket (a clone of the handshake's handle: shutting it down ends both).
enum Watched {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Watched {
    fn shut(&self) {
        let _ = match self {
            Watched::Unix(s) => s.shutdown(Shutdown::Both),
            Watched::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

/// The longest handshake deadline: 30 days.
pub(crate) const LONGEST: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long the watchdog thread stays with nothing to watch before it exits (a burst of
/// handshakes, the workers of one lease or the leases of one job, shares one thread).
const LINGER: Duration = Duration::from_secs(10);

/// One watched exchange.
struct Entry {
    id: u64,
    deadline: Instant,
    sockets: Vec<Watched>,
    /// The deadline passed first: every socket was shut down.
    fired: bool,
}

/// Every exchange of the process being watched, and whether the thread that watches them runs.
struct Board {
    entries: Vec<Entry>,
    next_id: u64,
    running: bool,
    /// The process the thread runs in: a child forked from it has the board but not the
    /// thread, and starts one of its own. (Only as far as a fork goes that copied the board
    /// unlocked: like any lock, one held by another thread at the fork stays held in the
    /// child. A client that forks should exec before it leases.)
    pid: u32,
}

static BOARD: Mutex<Board> = Mutex::new(Board {
    entries: Vec::new(),
    next_id: 0,
    running: false,
    pid: 0,
});
/// Notified when an exchange starts or ends (the thread's next deadline may have changed).
static CHANGED: Condvar = Condvar::new();

fn board() -> MutexGuard<'static, Board> {
    // The board stays consistent across a panic (every change is one push, flag or removal).
    BOARD.lock().unwrap_or_else(|p| p.into_inner())
}

/// The watchdog thread: shuts down the sockets of every exchange whose deadline passed, sleeping
/// until the next deadline; exits after [`LINGER`] with nothing to watch.
fn watch_all() {
    let mut b = board();
    let mut idle_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for e in b.entries.iter_mut().filter(|e| !e.fired) {
            if e.deadline <= now {
                e.fired = true;
                for w in &e.sockets {
                    w.shut();
                }
            } else {
                next = Some(next.map_or(e.deadline, |n| n.min(e.deadline)));
            }
        }
        let wait = match next {
            Some(deadline) => {
                idle_since = None;
                deadline - now
            }
            None => {
                let idle = now.duration_since(*idle_since.get_or_insert(now));
                if idle >= LINGER {
                    if b.entries.is_empty() {
                        b.running = false;
                        return;
                    }
                    // Fired exchanges not yet finished: wait for them another while.
                    idle_since = Some(now);
                    LINGER
                } else {
                    LINGER - idle
                }
            }
        };
        b = CHANGED
            .wait_timeout(b, wait)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Bounds an exchange by `timeout`: start it before the first blocking step, open its TCP
/// connections with [`connect_tcp`] (watch a Unix socket with [`watch_unix`]), and pass the
/// result through [`finish`] (or ask [`expired`]).
///
/// One thread of the process watches every exchange in progress (started by the first, it
/// exits once none has been in progress for [`LINGER`]): an exchange costs no thread of its
/// own.
///
/// [`connect_tcp`]: Watchdog::connect_tcp
/// [`watch_unix`]: Watchdog::watch_unix
/// [`finish`]: Watchdog::finish
/// [`expired`]: Watchdog::expired
pub(crate) struct Watchdog {
    id: u64,
    deadline: Instant,
    timeout: Duration,
    /// Taken off the board (by `stop`).
    stopped: bool,
}

impl Watchdog {
    /// Starts the clock. A `timeout` over [`LONGEST`] is cut to it (no handshake is meant to
    /// take longer, and a deadline must be representable).
    pub(crate) fn start(timeout: Duration) -> Result<Watchdog, TransportError> {
        let timeout = timeout.min(LONGEST);
        let deadline = Instant::now() + timeout;
        let mut b = board();
        let id = b.next_id;
        b.next_id += 1;
        let pid = std::process::id();
        if b.running && b.pid != pid {
            // Forked: the thread (and the threads whose exchanges these were) stayed behind.
            b.running = false;
            b.entries.clear();
        }
        if !b.running {
            // Started under the lock: the thread's first look at the board waits for it, and
            // no other start spawns a second one.
            std::thread::Builder::new()
                .name("rfaas-watchdog".into())
                .spawn(watch_all)
                .map_err(TransportError::Io)?;
            b.running = true;
            b.pid = pid;
        }
        b.entries.push(Entry {
            id,
            deadline,
            sockets: Vec::new(),
            fired: false,
        });
        drop(b);
        CHANGED.notify_all();
        Ok(Watchdog {
            id,
            deadline,
            timeout,
            stopped: false,
        })
    }

    fn watch(&self, w: Watched) {
        let mut b = board();
        match b.entries.iter_mut().find(|e| e.id == self.id) {
            Some(e) if !e.fired => e.sockets.push(w),
            // Too late: the others have been shut down already (and the clone is dropped).
            _ => w.shut(),
        }
    }

    /// Connects to `addr` (`host:port`, each address it names in turn) within what is left
    /// of the deadline, and watches the connection. A host name is looked up within that time
    /// too ([`resolve_within`]).
    pub(crate) fn connect_tcp(&self, addr: &str) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
        for a in resolve_within(addr, self.left())? {
            let left = self.left();
            if left.is_zero() {
                last = io::ErrorKind::TimedOut.into();
                break;
            }
            match TcpStream::connect_timeout(&a, left) {
                Ok(s) => {
                    self.watch(Watched::Tcp(s.try_clone()?));
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Watches the Unix-socket connection of the handshake.
    pub(crate) fn watch_unix(&self, stream: &UnixStream) -> Result<(), TransportError> {
        self.watch(Watched::Unix(stream.try_clone()?));
        Ok(())
    }

    /// Time left before the deadline (zero once it has passed): the bound for a step that
    /// cannot be interrupted by a shutdown, such as connecting a new socket.
    pub(crate) fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Stops the watchdog and returns the work's `result`, unless the deadline cut it short
    /// ([`Watchdog::expired`]): then it is `Error::Handshake("{late} within {timeout}")`, with
    /// `late` saying who was late ("the executor did not complete the handshake").
    pub(crate) fn finish<T>(self, result: Result<T, Error>, late: &str) -> Result<T, Error> {
        let timeout = self.timeout;
        if self.expired(result.is_err()) {
            return Err(Error::Handshake(format!("{late} within {timeout:?}")));
        }
        result
    }

    /// Stops the watchdog; whether the deadline cut the work short: it fired, or the work
    /// `failed` at or after the deadline (a step bounded by what was left, such as a connect,
    /// may fail then just before the watchdog wakes).
    pub(crate) fn expired(mut self, failed: bool) -> bool {
        let fired = self.stop();
        fired || (failed && Instant::now() >= self.deadline)
    }

    /// Takes the exchange off the board (dropping its sockets' clones); whether it fired.
    fn stop(&mut self) -> bool {
        if std::mem::replace(&mut self.stopped, true) {
            return false;
        }
        let mut b = board();
        let fired = match b.entries.iter().position(|e| e.id == self.id) {
            Some(i) => b.entries.swap_remove(i).fired,
            None => false,
        };
        drop(b);
        CHANGED.notify_all();
        fired
    }
}

/// The addresses `addr` (`host:port`) names, looked up within `left`.
///
/// A literal address (`10.0.0.7:7000`, `[::1]:7000`) needs no lookup. A host name is looked up
/// by the system resolver (`getaddrinfo`), which cannot be interrupted and on a cluster with a
/// broken name server may block for many seconds: it runs on a thread of its own, and past
/// `left` the caller gets [`io::ErrorKind::TimedOut`] while the thread finishes the lookup
/// alone and exits.
pub(crate) fn resolve_within(addr: &str, left: Duration) -> io::Result<Vec<SocketAddr>> {
    if let Ok(literal) = addr.parse::<SocketAddr>() {
        return Ok(vec![literal]);
    }
    resolve_with(addr, left, |name| Ok(name.to_socket_addrs()?.collect()))
}

/// [`resolve_within`] with the lookup itself given (tests stand in a slow resolver).
fn resolve_with<F>(addr: &str, left: Duration, lookup: F) -> io::Result<Vec<SocketAddr>>
where
    F: FnOnce(&str) -> io::Result<Vec<SocketAddr>> + Send + 'static,
{
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no time left to look up {addr}"),
        ));
    }
    // Capacity 1: the thread's one send never blocks, even after we stopped waiting.
    let (tx, rx) = mpsc::sync_channel(1);
    let name = addr.to_owned();
    std::thread::Builder::new()
        .name("rfaas-resolve".into())
        .spawn(move || {
            let _ = tx.send(lookup(&name));
        })?;
    match rx.recv_timeout(left) {
        Ok(found) => found,
        Err(RecvTimeoutError::Timeout) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("looking up {addr} took longer than the {left:?} left"),
        )),
        Err(RecvTimeoutError::Disconnected) => Err(io::Error::other(format!(
            "the lookup of {addr} ended without an answer"
        ))),
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
