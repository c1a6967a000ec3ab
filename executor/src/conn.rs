//! What the manager and the registry do with the control connections they accept (and a `run`
//! executor with its sessions' connections): a bounded number of them may still be reading
//! their request (or be in their handshake), each request is read within one deadline
//! whatever its pace, and a failing `accept` (out of descriptors, say) backs off instead of
//! spinning.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Most connections that may be reading their request at once, per service (the manager, the
/// registry, a `run` executor's sessions in their handshake): one more is closed at once,
/// without a byte read. Each costs a thread and a descriptor until its
/// request is in (or its deadline passes).
pub const MAX_PENDING: usize = 64;

/// How long to wait after `accept` failed for lack of resources before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One connection still reading its request, counted among [`MAX_PENDING`] until dropped (or
/// one place of another [`Bounded`] count).
#[derive(Debug)]
pub struct Pending(Arc<AtomicUsize>);

/// At most `max` of something at once (connections reading their request, uploads), each
/// counted until its [`Pending`] token is dropped.
#[derive(Debug)]
pub struct Bounded {
    count: Arc<AtomicUsize>,
    max: usize,
}

impl Bounded {
    /// At most `max` at once.
    pub fn new(max: usize) -> Self {
        Bounded {
            count: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A token for one more, or `None` if `max` are taken.
    pub fn take(&self) -> Option<Pending> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Pending(self.count.clone()))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// When a service last turned a connection away (too many pending, or `accept` failing), for
/// whoever must not read silence as absence: the registry does not expire nodes whose
/// heartbeats may have been among them. Cloned handles share the clock.
#[derive(Clone, Debug, Default)]
pub struct Refusals(Arc<AtomicU64>);

impl Refusals {
    /// Milliseconds since an origin of this process's own, plus one (0: never).
    fn now_ms() -> u64 {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
    }

    /// A connection was turned away now.
    pub fn note(&self) {
        self.0.store(Self::now_ms(), Ordering::Relaxed);
    }

    /// How long ago the last connection was turned away; `None` if none ever was.
    pub fn since_last(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_millis(Self::now_ms().saturating_sub(at))),
        }
    }
}

/// Admits connections of one service while at most `max` of them are still reading their
/// request; a connection beyond that is to be closed at once, without a byte read.
#[derive(Debug)]
pub struct PendingLimit {
    places: Bounded,
    /// Warnings at most once a second, with how many were refused since the last one.
    refused: Throttled,
    /// When one was last refused.
    refusals: Refusals,
}

impl PendingLimit {
    /// At most `max` connections pending at once.
    pub fn new(max: usize) -> Self {
        PendingLimit {
            places: Bounded::new(max),
            refused: Throttled::default(),
            refusals: Refusals::default(),
        }
    }

    /// The clock of this limit's refusals (and of failed accepts in [`accept_loop`]).
    pub fn refusals(&self) -> Refusals {
        self.refusals.clone()
    }

    /// A token for one more pending connection (held until its request is in), or `None`, with
    /// a warning now and then, if `max` are pending already.
    pub fn admit(&mut self) -> Option<Pending> {
        let token = self.places.take();
        if token.is_none() {
            self.refusals.note();
            if let Some(refused) = self.refused.count() {
                tracing::warn!(
                    refused,
                    max_pending = self.places.max,
                    "closed a connection: too many are still sending their request"
                );
            }
        }
        token
    }
}

/// Accepts connections on `listener` for as long as it lives, handing each to `serve` on a
/// thread of its own (named `name`) with its [`Pending`] token, which `serve` drops once the
/// connection's request is in. Beyond `limit`'s connections still reading, a new one is closed
/// at once. Those and failed accepts are noted in `limit`'s [`Refusals`].
pub fn accept_loop(
    listener: &TcpListener,
    name: &str,
    mut limit: PendingLimit,
    serve: impl Fn(TcpStream, Pending) + Send + Sync + 'static,
) {
    let serve = Arc::new(serve);
    let mut failed = AcceptErrors::default();
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(stream) => stream,
            Err(e) => {
                limit.refusals.note();
                failed.after(&e);
                continue;
            }
        };
        let Some(token) = limit.admit() else {
            drop(stream);
            continue;
        };
        let serve = serve.clone();
        // Dropped with the closure (the connection closed, the count returned) if no
        // thread can be started.
        if let Err(e) = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || serve(stream, token))
        {
            tracing::warn!(error = %e, "no thread for a connection");
            std::thread::sleep(ACCEPT_BACKOFF);
        }
    }
}

/// What follows a failed `accept`: a warning (at most once a second, with how many failed
/// since the last), and a pause if the process is out of descriptors or memory (the next
/// `accept` would fail at once: without it the loop spins).
#[derive(Debug, Default)]
pub struct AcceptErrors(Throttled);

impl AcceptErrors {
    /// Reports `e` and backs off if it calls for it; then `accept` again.
    pub fn after(&mut self, e: &io::Error) {
        if let Some(failed) = self.0.count() {
            tracing::warn!(error = %e, failed, "accepting a connection");
        }
        if out_of_resources(e) {
            std::thread::sleep(ACCEPT_BACKOFF);
        } else {
            // Whatever else failed (a connection aborted before it was taken, or something
            // lasting), accepting again at once must not become a spin.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Counts events and says when to report them: at most once a second.
#[derive(Debug, Default)]
pub(crate) struct Throttled {
    since: u64,
    last: Option<Instant>,
}

impl Throttled {
    /// None counted yet.
    pub(crate) const fn new() -> Self {
        Throttled {
            since: 0,
            last: None,
        }
    }

    /// Counts one event; the count since the last report, if it is time for one.
    pub(crate) fn count(&mut self) -> Option<u64> {
        self.since += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

/// Whether `accept` failed for lack of descriptors or memory (it will fail again at once).
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// A TCP stream whose reads and writes all end by one deadline: each waits at most what is
/// left of it. A peer that sends a byte now and then cannot stretch the exchange, as it can a
/// timeout per read.
pub struct Deadlined<'s> {
    stream: &'s TcpStream,
    deadline: Instant,
    timeout: Duration,
}

impl<'s> Deadlined<'s> {
    /// `stream`, for `timeout` from now.
    pub fn new(stream: &'s TcpStream, timeout: Duration) -> Self {
        Deadlined {
            stream,
            deadline: Instant::now() + timeout,
            timeout,
        }
    }

    /// Moves the deadline to `timeout` from `from` (a deadline that grows with the bytes read).
    pub fn reset(&mut self, from: Instant, timeout: Duration) {
        self.deadline = from + timeout;
        self.timeout = timeout;
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.stream.peer_addr()
    }

    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the exchange took longer than {:?}", self.timeout),
            ));
        }
        Ok(left)
    }

    /// Maps a timeout of the last step to the deadline's own error.
    fn past(&self, e: io::Error) -> io::Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the exchange took longer than {:?}", self.timeout),
            ),
            _ => e,
        }
    }
}

impl Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        (&*self.stream).read(buf).map_err(|e| self.past(e))
    }
}

impl Write for Deadlined<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        (&*self.stream).write(buf).map_err(|e| self.past(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.stream).flush()
    }
}

/// Keepalive for a connection held for a lease's or a session's whole life, which carries
/// little data: a peer whose host vanished (no FIN, no RST) ends it with an error within about
/// 25 s (10 s idle, then 3 probes 5 s apart, and a user timeout of the same 25 s for data left
/// unacknowledged). The clients' side does the same: one implementation,
/// [`rfaas::sys::hold_keepalive`].
pub fn hold_keepalive(stream: &TcpStream) -> io::Result<()> {
    rfaas::sys::hold_keepalive(stream)
}

#[cfg(test)]
mod tests;
