//! TCP fabric: the same verbs-shaped operations framed over a byte stream, for hosts that share
//! neither memory nor an RDMA fabric.
//!
//! Connecting exchanges region descriptors (`(key, len)` of each side's regions) as one
//! length-prefixed JSON frame each way. A write-with-immediate is one frame:
//!
//! ```text
//! u32 remote_key | u64 remote_offset | u32 len | u32 imm | len bytes      (little-endian)
//! ```
//!
//! A plain write ([`Endpoint::write`]) is the same frame with the key's top bit set
//! (`FRAME_SILENT`): the receiver places the bytes and queues no completion.
//!
//! There is no thread of the transport's own: the threads that poll or wait on a [`TcpQueue`]
//! read its endpoints' sockets themselves, like a verbs completion queue being polled.
//! [`Queue::poll`] reads without blocking (`MSG_DONTWAIT`); [`Queue::wait`] sleeps in `ppoll(2)`
//! on the sockets and an eventfd of its own that [`Queue::interrupt`] writes. Each endpoint
//! keeps its partial frame (header bytes so far, payload bytes so far) across polls under a
//! lock, so one thread at a time reads a socket and a frame may arrive split anywhere. Every
//! header is validated against the local regions before its payload is placed (an unknown key
//! or an out-of-bounds range ends the connection as a protocol violation). A header is read
//! together with up to `LOOKAHEAD` bytes after it (so a small frame costs one `recv`), which
//! are copied into the region once the header is checked (or start the next frame); the rest
//! of a larger payload is read straight into the region. A poll that returns a frame while the
//! next one's header is already in the endpoint's memory wakes the queue's waiters (their
//! sockets will not show it). A socket found empty in the middle of a payload is left alone for
//! a couple of microseconds (`MID_FRAME_PAUSE`), so pollers do not fight the kernel for its
//! lock while the rest arrives. A sender whose socket is full receives meanwhile (into the
//! endpoint's backlog, delivered first) so two peers sending to each other never deadlock.
//! There is no zero-copy window: [`Endpoint::window`] returns `None`.

use super::shm::MAX_REGIONS;
use super::{Completion, Endpoint, LIVENESS_TICK, Queue, Region, TransportError, check_range};
use crate::wire::Offer;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError};
use std::time::{Duration, Instant};

/// Bytes of a write frame's header.
const FRAME_HEADER: usize = 20;
/// Remote-key bit of a frame the receiver queues no completion for ([`Endpoint::write`]).
const FRAME_SILENT: u32 = 1 << 31;
/// Bytes a receiver reads past a frame header in the same `recv` (the start of the payload, or
/// of the next frame): a small frame then costs one system call, not two.
const LOOKAHEAD: usize = 128;
/// Plain-write frames one poll takes in before it returns (with nothing): a peer that streams
/// them cannot keep a poller (and its deadlines) inside the transport.
const SILENT_PER_POLL: usize = 64;
/// Completions an endpoint's blocked sender takes in (to be delivered later) before it stops
/// receiving (back-pressure).
pub const QUEUE_CAPACITY: usize = 4096;
/// How often a sender that cannot receive (another thread is, or the backlog is full) looks
/// again while its socket is full.
const SEND_RECHECK: Duration = Duration::from_millis(1);
/// How long a poller leaves a socket alone after finding it empty in the middle of a frame's
/// payload. The rest of a large frame arrives over hundreds of microseconds; a poller spinning
/// on `recv` meanwhile takes the socket's lock thousands of times, against the kernel delivering
/// the very segments it waits for (measured: 1 MiB echoes ~14% slower without the pause).
/// Frames that arrive whole, and headers, are never held back.
const MID_FRAME_PAUSE: Duration = Duration::from_micros(2);

/// How long a send with patience waits, once part of its frame is out, for the peer to take
/// more, if the patience is shorter: an honest executor reads nothing while its worker runs a
/// function, and giving up midway costs the connection.
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// How [`Conn::send`] ended, when it did not fail.
enum Sent {
    All,
    /// The socket had no room for any of the frame within the caller's patience.
    NoRoom,
    /// Part of the frame went out, then the socket had no room within the caller's patience.
    Stalled,
}

enum Event {
    Completion(Completion),
    Gone(u32),
    Broken(u32, String),
}

impl Event {
    fn into_result(self) -> Result<Completion, TransportError> {
        match self {
            Event::Completion(c) => Ok(c),
            Event::Gone(endpoint) => Err(TransportError::PeerGone { endpoint }),
            Event::Broken(endpoint, why) => Err(TransportError::PeerBroke { endpoint, why }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

// ---------------------------------------------------------------------------------------------
// System calls

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `recv(2)` of at most `len` bytes into `buf`, without blocking.
///
/// # Safety
///
/// `buf` must be valid for writes of `len` bytes for the duration of the call.
unsafe fn recv_nowait(fd: RawFd, buf: *mut u8, len: usize) -> io::Result<usize> {
    // SAFETY: the caller guarantees `buf` is writable for `len` bytes; `fd` is a descriptor the
    // caller owns (a bad one is an error, not undefined behaviour).
    cvt(unsafe { libc::recv(fd, buf.cast(), len, libc::MSG_DONTWAIT) })
}

/// `sendmsg(2)` of `bufs` as one message, without blocking and without `SIGPIPE`.
fn send_nowait(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero `msghdr` is valid: no address, no control data, no iovecs.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix; the kernel only reads them.
    msg.msg_iov = bufs.as_ptr().cast::<libc::iovec>().cast_mut();
    msg.msg_iovlen = bufs.len() as _;
    // SAFETY: `msg` points to `bufs.len()` live iovecs, each describing readable memory borrowed
    // for the duration of the call.
    cvt(unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) })
}

/// `ppoll(2)` on `fds` for up to `timeout` (`None`: without limit). An interrupted call counts
/// as a wake-up with nothing ready.
fn ppoll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<()> {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: d.subsec_nanos().into(),
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is a live, writable array of `fds.len()` pollfds; `tsp` is null or points to
    // a timespec that outlives the call; a null signal mask leaves the mask unchanged.
    let r = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            tsp,
            std::ptr::null(),
        )
    };
    match cvt(r as isize) {
        Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Receiving

/// A validated frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Body {
    /// Index of the destination in the endpoint's local regions.
    region: usize,
    offset: usize,
    len: usize,
    imm: u32,
    /// A plain write: no completion when it is complete.
    silent: bool,
    /// Payload bytes read so far.
    got: usize,
}

/// An endpoint's receive side: the frame in progress and what was received but not delivered.
struct Rx {
    /// Bytes read from the socket but not yet placed: a header (whole or in part), and bytes
    /// read past it in the same `recv` (see [`LOOKAHEAD`]).
    ahead: [u8; FRAME_HEADER + LOOKAHEAD],
    /// How many bytes of `ahead` are valid (from its start).
    have: usize,
    body: Option<Body>,
    /// Events a sender received while its socket was full, delivered before anything else.
    backlog: VecDeque<Event>,
    /// The connection ended (its last event is delivered or in the backlog); never read again.
    ended: bool,
    /// Set when the socket ran dry in the middle of a payload: no `recv` before this instant
    /// ([`MID_FRAME_PAUSE`]).
    quiet_until: Option<Instant>,
}

/// One connection: the socket and its receive state, shared by the endpoint and its queue.
struct Conn {
    id: u32,
    sock: TcpStream,
    local: Vec<Arc<Region>>,
    rx: Mutex<Rx>,
    /// Set once the connection's last event was delivered: no longer polled or waited on.
    retired: AtomicBool,
    /// The queue's waiters, woken when a sender puts events in the backlog.
    wake: Arc<Wake>,
}

impl Conn {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The next event of this connection (its backlog first, then the socket), or `None` when
    /// no whole frame is available yet.
    fn next(&self, rx: &mut Rx) -> Option<Event> {
        let event = rx.backlog.pop_front().or_else(|| self.receive(rx));
        if rx.ended && rx.backlog.is_empty() {
            self.retired.store(true, Ordering::Release);
        }
        if event.is_some() && rx.have >= FRAME_HEADER {
            // The next frame's header came with this one: waiters asleep on the socket would
            // not see it there.
            self.wake.interrupt();
        }
        event
    }

    /// Reads from the socket, without blocking, until a frame is complete, the connection ends,
    /// or no more bytes are there (`None`; the partial frame is kept in `rx`).
    fn receive(&self, rx: &mut Rx) -> Option<Event> {
        if rx.ended {
            return None;
        }
        // Only ever set while a payload is in progress, and nothing else reads the socket.
        if let Some(until) = rx.quiet_until {
            if Instant::now() < until {
                return None;
            }
            rx.quiet_until = None;
        }
        let mut silent = 0;
        let end = loop {
            let read = match rx.body {
                None if rx.have >= FRAME_HEADER => {
                    // A whole header is buffered: check it, then place what was read past it
                    // (up to the payload's end; anything after that starts the next frame).
                    let header = rx.ahead[..FRAME_HEADER]
                        .try_into()
                        .expect("FRAME_HEADER bytes");
                    let mut body = match self.validate(&header) {
                        Ok(body) => body,
                        Err(why) => break Event::Broken(self.id, why),
                    };
                    let k = (rx.have - FRAME_HEADER).min(body.len);
                    let region = &self.local[body.region];
                    // SAFETY: `[offset, offset + len)` lies inside the live region (checked in
                    // `validate`) and `k <= len`; the source is `k` bytes of `ahead` after the
                    // header (`k <= have - FRAME_HEADER`), our own memory, not the region's.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            rx.ahead.as_ptr().add(FRAME_HEADER),
                            region.as_ptr().add(body.offset),
                            k,
                        )
                    };
                    body.got = k;
                    rx.ahead.copy_within(FRAME_HEADER + k..rx.have, 0);
                    rx.have -= FRAME_HEADER + k;
                    // While the payload is incomplete nothing is left in `ahead` (`k` took
                    // all of it), so the rest of the payload is read straight into the region.
                    rx.body = Some(body);
                    continue;
                }
                None => {
                    let have = rx.have;
                    // SAFETY: `ahead[have..]` is `ahead.len() - have` writable bytes of `rx`.
                    unsafe {
                        recv_nowait(
                            self.fd(),
                            rx.ahead.as_mut_ptr().add(have),
                            rx.ahead.len() - have,
                        )
                    }
                }
                Some(b) if b.got == b.len => {
                    rx.body = None;
                    if b.silent {
                        silent += 1;
                        if silent == SILENT_PER_POLL {
                            // More may be buffered here, not in the socket: waiters look again.
                            self.wake.interrupt();
                            return None;
                        }
                        continue;
                    }
                    return Some(Event::Completion(Completion {
                        endpoint: self.id,
                        imm: b.imm,
                        len: b.len as u32,
                    }));
                }
                Some(b) => {
                    let region = &self.local[b.region];
                    // SAFETY: `[offset, offset + len)` lies inside the live region (checked in
                    // `validate`) and `got < len`, so the rest of the payload is in bounds; the
                    // region's memory is ours and any bytes may be stored in it.
                    unsafe {
                        recv_nowait(
                            self.fd(),
                            region.as_ptr().add(b.offset + b.got),
                            b.len - b.got,
                        )
                    }
                }
            };
            match read {
                Ok(0) => break Event::Gone(self.id),
                Ok(n) => match &mut rx.body {
                    Some(b) => b.got += n,
                    None => rx.have += n,
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if rx.body.is_some() {
                        rx.quiet_until = Some(Instant::now() + MID_FRAME_PAUSE);
                    }
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break Event::Gone(self.id),
            }
        };
        rx.ended = true;
        rx.body = None;
        let _ = self.sock.shutdown(Shutdown::Both);
        Some(end)
    }

    /// Checks a frame header against the local regions.
    fn validate(&self, h: &[u8; FRAME_HEADER]) -> Result<Body, String> {
        let word = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
        let (key, silent) = (word & !FRAME_SILENT, word & FRAME_SILENT != 0);
        let offset = u64::from_le_bytes(h[4..12].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes")) as usize;
        let imm = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
        let Some(region) = self
            .local
            .iter()
            .position(|r| r.key() == key && r.is_offered())
        else {
            return Err(format!("write to unknown region {key}"));
        };
        let Ok(offset) = usize::try_from(offset) else {
            return Err("offset overflows".into());
        };
        check_range("local", key, offset, len, self.local[region].len())
            .map_err(|e| e.to_string())?;
        Ok(Body {
            region,
            offset,
            len,
            imm,
            silent,
            got: 0,
        })
    }

    /// While a send waits for room: takes in what the peer sent (into the backlog), so a peer
    /// blocked sending to us goes on. Returns what to wait for: input too (`Some(true)`), room
    /// only and soon look again (`Some(false)`: another thread is receiving or the backlog is
    /// full), or room only (`None`: the connection ended; the send will fail).
    fn receive_while_sending(&self) -> Option<bool> {
        let Some(mut rx) = try_lock(&self.rx) else {
            return Some(false);
        };
        let before = rx.backlog.len();
        while rx.backlog.len() < QUEUE_CAPACITY {
            match self.receive(&mut rx) {
                Some(e) => rx.backlog.push_back(e),
                None => break,
            }
        }
        let took = rx.backlog.len() > before;
        let watch = (!rx.ended).then_some(rx.backlog.len() < QUEUE_CAPACITY);
        drop(rx);
        if took {
            // Waiters may be asleep on a socket that no longer has these bytes.
            self.wake.interrupt();
        }
        watch
    }

    /// Sends `bufs` as one frame (one segment for small frames). The caller holds the
    /// endpoint's send lock. With `patience`, gives up if the socket has taken nothing for that
    /// long: [`Sent::NoRoom`] if none of the frame went out; once part of it did, after at
    /// least [`STALL_LIMIT`] without progress, [`Sent::Stalled`].
    fn send(&self, bufs: &mut [IoSlice<'_>], patience: Option<Duration>) -> io::Result<Sent> {
        let mut bufs = bufs;
        let mut started = false;
        // Read only when the socket is full: sends with room never touch the clock.
        let mut waiting_since: Option<Instant> = None;
        while !bufs.is_empty() {
            match send_nowait(self.fd(), bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    started = true;
                    // Patience is for a socket that takes nothing: a peer reading slowly is
                    // still reading.
                    waiting_since = None;
                    IoSlice::advance_slices(&mut bufs, n)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let (events, mut timeout) = match self.receive_while_sending() {
                        Some(true) => (libc::POLLOUT | libc::POLLIN, LIVENESS_TICK),
                        Some(false) => (libc::POLLOUT, SEND_RECHECK),
                        None => (libc::POLLOUT, LIVENESS_TICK),
                    };
                    if let Some(patience) = patience {
                        let patience = if started {
                            patience.max(STALL_LIMIT)
                        } else {
                            patience
                        };
                        let since = *waiting_since.get_or_insert_with(Instant::now);
                        let waited = since.elapsed();
                        if waited >= patience {
                            return Ok(if started { Sent::Stalled } else { Sent::NoRoom });
                        }
                        timeout = timeout.min(patience - waited);
                    }
                    let mut fds = [libc::pollfd {
                        fd: self.fd(),
                        events,
                        revents: 0,
                    }];
                    ppoll(&mut fds, Some(timeout))?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Sent::All)
    }
}

// ---------------------------------------------------------------------------------------------
// The queue

/// The waiters of a queue and how to wake them.
struct Wake {
    /// Moved by every interrupt: a waiter that sees it move returns.
    generation: AtomicU64,
    /// Threads registered in `sleepers` (read without the lock).
    asleep: AtomicUsize,
    /// The eventfds of the threads in `wait`.
    sleepers: Mutex<Vec<RawFd>>,
}

impl Wake {
    fn interrupt(&self) {
        // Pairs with `Sleeper::register`: either we see the waiter registered and write its
        // eventfd, or it sees the generation moved before it sleeps.
        self.generation.fetch_add(1, Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst) == 0 {
            return;
        }
        for &fd in lock(&self.sleepers).iter() {
            crate::sys::eventfd_signal(fd);
        }
    }
}

/// What one waiting thread needs: its eventfd and the `ppoll` set (kept for reuse).
struct Sleeper {
    efd: OwnedFd,
    fds: Vec<libc::pollfd>,
    /// The connections in `fds`, kept alive (and their descriptors open) while polled.
    conns: Vec<Arc<Conn>>,
}

/// A registered sleeper; dropping it unregisters it and returns it to the queue's idle ones.
struct Asleep<'q> {
    queue: &'q TcpQueue,
    sleeper: Option<Sleeper>,
}

impl Drop for Asleep<'_> {
    fn drop(&mut self) {
        let Some(mut sleeper) = self.sleeper.take() else {
            return;
        };
        let wake = &self.queue.wake;
        wake.asleep.fetch_sub(1, Ordering::SeqCst);
        {
            let efd = sleeper.efd.as_raw_fd();
            let mut sleepers = lock(&wake.sleepers);
            if let Some(i) = sleepers.iter().position(|&fd| fd == efd) {
                sleepers.swap_remove(i);
            }
        }
        // Release the connections (and, for retired ones, their sockets) now.
        sleeper.conns.clear();
        lock(&self.queue.idle).push(sleeper);
    }
}

struct Conns {
    list: Vec<Arc<Conn>>,
    next_id: u32,
}

/// Collects the completions of any number of TCP endpoints; the threads that poll or wait on
/// it read the endpoints' sockets.
pub struct TcpQueue {
    conns: RwLock<Conns>,
    /// Where the next poll starts, so that one busy endpoint does not starve the others.
    cursor: AtomicUsize,
    wake: Arc<Wake>,
    /// Sleepers not in use.
    idle: Mutex<Vec<Sleeper>>,
}

impl std::fmt::Debug for TcpQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpQueue").finish_non_exhaustive()
    }
}

impl TcpQueue {
    /// A new, empty queue.
    pub fn new() -> Arc<TcpQueue> {
        Arc::new(TcpQueue {
            conns: RwLock::new(Conns {
                list: Vec::new(),
                next_id: 0,
            }),
            cursor: AtomicUsize::new(0),
            wake: Arc::new(Wake {
                generation: AtomicU64::new(0),
                asleep: AtomicUsize::new(0),
                sleepers: Mutex::new(Vec::new()),
            }),
            idle: Mutex::new(Vec::new()),
        })
    }

    fn read_conns(&self) -> std::sync::RwLockReadGuard<'_, Conns> {
        self.conns.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_conns(&self) -> std::sync::RwLockWriteGuard<'_, Conns> {
        self.conns.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches the connection `make` builds for the next endpoint index.
    fn attach(&self, make: impl FnOnce(u32) -> Arc<Conn>) -> Arc<Conn> {
        let conn = {
            let mut st = self.write_conns();
            let conn = make(st.next_id);
            st.next_id += 1;
            st.list.push(conn.clone());
            conn
        };
        // Sleeping waiters poll the connections they saw when they fell asleep.
        self.wake.interrupt();
        conn
    }

    /// Drops retired connections (closing their sockets once their endpoints are gone too).
    fn prune(&self) {
        self.write_conns()
            .list
            .retain(|c| !c.retired.load(Ordering::Acquire));
    }

    /// Takes `conn`'s next event; prunes it if that was its last.
    fn deliver(&self, conn: &Conn, rx: &mut Rx) -> Option<Event> {
        let event = conn.next(rx)?;
        if conn.retired.load(Ordering::Acquire) {
            self.prune();
        }
        Some(event)
    }

    /// One pass over the connections without blocking, skipping those another thread reads.
    fn poll_once(&self) -> Option<Event> {
        let (retired, event) = {
            let conns = self.read_conns();
            let n = conns.list.len();
            let start = if n > 1 {
                self.cursor.load(Ordering::Relaxed) % n
            } else {
                0
            };
            (0..n).find_map(|i| {
                let k = (start + i) % n;
                let conn = &conns.list[k];
                if conn.retired.load(Ordering::Acquire) {
                    return None;
                }
                let mut rx = try_lock(&conn.rx)?;
                let event = conn.next(&mut rx)?;
                if n > 1 {
                    self.cursor.store(k + 1, Ordering::Relaxed);
                }
                Some((conn.retired.load(Ordering::Acquire), event))
            })?
        };
        if retired {
            self.prune();
        }
        Some(event)
    }

    /// A sleeper (from the idle ones, or a new one), registered for interrupts.
    fn fall_asleep(&self) -> io::Result<Asleep<'_>> {
        let idle = lock(&self.idle).pop();
        let sleeper = match idle {
            Some(s) => s,
            None => Sleeper {
                efd: crate::sys::eventfd()?,
                fds: Vec::new(),
                conns: Vec::new(),
            },
        };
        lock(&self.wake.sleepers).push(sleeper.efd.as_raw_fd());
        self.wake.asleep.fetch_add(1, Ordering::SeqCst);
        Ok(Asleep {
            queue: self,
            sleeper: Some(sleeper),
        })
    }

    /// Sleeps in `ppoll` until a socket is readable, an interrupt, or the deadline; returns
    /// the next event, if one could be taken.
    fn sleep(
        &self,
        sleeper: &mut Sleeper,
        generation: u64,
        deadline: Option<Instant>,
    ) -> Result<Option<Completion>, TransportError> {
        loop {
            // Registered: events a sender put in a backlog since are seen here or woken for.
            if let Some(e) = self.poll_once() {
                return e.into_result().map(Some);
            }
            if self.wake.generation.load(Ordering::SeqCst) != generation {
                return Ok(None);
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(None),
                },
                None => None,
            };
            sleeper.conns.clear();
            sleeper.fds.clear();
            for conn in self.read_conns().list.iter() {
                if !conn.retired.load(Ordering::Acquire) {
                    sleeper.fds.push(libc::pollfd {
                        fd: conn.fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    sleeper.conns.push(conn.clone());
                }
            }
            sleeper.fds.push(libc::pollfd {
                fd: sleeper.efd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            ppoll(&mut sleeper.fds, left)?;
            let (efd, socks) = sleeper.fds.split_last().expect("the eventfd is polled");
            if efd.revents != 0 {
                crate::sys::eventfd_clear(efd.fd);
            }
            for (p, conn) in socks.iter().zip(&sleeper.conns) {
                if p.revents == 0 || conn.retired.load(Ordering::Acquire) {
                    continue;
                }
                // Whoever holds the lock only reads without blocking: waiting for it is short,
                // and polling again before it is done would find the socket still readable.
                let mut rx = lock(&conn.rx);
                if let Some(e) = self.deliver(conn, &mut rx) {
                    return e.into_result().map(Some);
                }
            }
        }
    }
}

impl Queue for TcpQueue {
    fn poll(&self) -> Result<Option<Completion>, TransportError> {
        self.poll_once().map(Event::into_result).transpose()
    }

    fn epoch(&self) -> u64 {
        self.wake.generation.load(Ordering::SeqCst)
    }

    fn wait_since(
        &self,
        generation: u64,
        timeout: Duration,
    ) -> Result<Option<Completion>, TransportError> {
        if let Some(c) = self.poll()? {
            return Ok(Some(c));
        }
        if timeout.is_zero() {
            return Ok(None);
        }
        let deadline = Instant::now().checked_add(timeout);
        let mut asleep = self.fall_asleep()?;
        let sleeper = asleep.sleeper.as_mut().expect("registered until dropped");
        self.sleep(sleeper, generation, deadline)
    }

    fn interrupt(&self) {
        self.wake.interrupt();
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoints

/// One connected TCP endpoint.
pub struct TcpEndpoint {
    conn: Arc<Conn>,
    /// Held while a frame is sent (frames of concurrent senders do not interleave).
    send: Mutex<()>,
    remote: Vec<(u32, usize)>,
}

impl std::fmt::Debug for TcpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpEndpoint")
            .field("id", &self.conn.id)
            .field("remote", &self.remote)
            .finish()
    }
}

impl TcpEndpoint {
    /// Connects over `stream` (both sides call this): exchanges region descriptors, then
    /// attaches the connection to `cq`, whose pollers deliver the peer's writes into `local`.
    /// The peer's offer is awaited within the stream's read timeout (10 s if it has none),
    /// which is left as it was found.
    pub fn connect(
        stream: TcpStream,
        local: Vec<Arc<Region>>,
        cq: &Arc<TcpQueue>,
    ) -> Result<TcpEndpoint, TransportError> {
        stream.set_nodelay(true)?;
        let offer = Offer {
            regions: local
                .iter()
                .filter(|r| r.is_offered())
                .map(|r| (r.key(), r.len() as u64))
                .collect(),
            control: false,
        };
        let mut s = &stream;
        super::send_json(&mut s, &offer)?;
        // The caller's bound on its handshake stands; without one, 10 s for the peer's offer.
        let bound = stream.read_timeout()?;
        if bound.is_none() {
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        }
        let peer: Offer = super::recv_json(&mut s)?;
        stream.set_read_timeout(bound)?;
        // Before anything else: the duplicate check below is quadratic, and a 16 MiB offer
        // names a million regions.
        if peer.regions.len() > MAX_REGIONS {
            return Err(TransportError::Protocol(format!(
                "peer offered {} regions (at most {MAX_REGIONS})",
                peer.regions.len()
            )));
        }
        let mut remote = Vec::with_capacity(peer.regions.len());
        for (key, len) in peer.regions {
            let len = usize::try_from(len)
                .map_err(|_| TransportError::Protocol("region too large".into()))?;
            if remote.iter().any(|(k, _)| *k == key) {
                return Err(TransportError::Protocol(format!(
                    "region key {key} offered twice"
                )));
            }
            if key & FRAME_SILENT != 0 {
                return Err(TransportError::Protocol(format!(
                    "region key {key:#x} has the plain-write bit set"
                )));
            }
            remote.push((key, len));
        }
        let wake = cq.wake.clone();
        let conn = cq.attach(|id| {
            Arc::new(Conn {
                id,
                sock: stream,
                local,
                rx: Mutex::new(Rx {
                    ahead: [0; FRAME_HEADER + LOOKAHEAD],
                    have: 0,
                    body: None,
                    backlog: VecDeque::new(),
                    ended: false,
                    quiet_until: None,
                }),
                retired: AtomicBool::new(false),
                wake,
            })
        });
        Ok(TcpEndpoint {
            conn,
            send: Mutex::new(()),
            remote,
        })
    }

    /// A handle on the connection (to shut it down from elsewhere).
    pub fn stream(&self) -> io::Result<TcpStream> {
        self.conn.sock.try_clone()
    }
}

impl Endpoint for TcpEndpoint {
    fn id(&self) -> u32 {
        self.conn.id
    }

    fn remote_len(&self, key: u32) -> Option<usize> {
        self.remote.iter().find(|(k, _)| *k == key).map(|(_, l)| *l)
    }

    fn write_with_imm(
        &self,
        local_key: u32,
        local_off: usize,
        len: usize,
        remote_key: u32,
        remote_off: usize,
        imm: u32,
    ) -> Result<(), TransportError> {
        self.write_gather(
            local_key,
            local_off,
            len,
            &[],
            remote_key,
            remote_off,
            imm,
            None,
        )
    }

    fn gathers(&self) -> bool {
        true
    }

    fn write_gather(
        &self,
        local_key: u32,
        local_off: usize,
        len: usize,
        pieces: &[(usize, &[u8])],
        remote_key: u32,
        remote_off: usize,
        imm: u32,
        patience: Option<Duration>,
    ) -> Result<(), TransportError> {
        self.frame(
            local_key,
            local_off,
            len,
            pieces,
            remote_key,
            remote_off,
            Some(imm),
            patience,
        )
    }

    fn write(
        &self,
        local_key: u32,
        local_off: usize,
        len: usize,
        remote_key: u32,
        remote_off: usize,
    ) -> Result<(), TransportError> {
        self.frame(
            local_key,
            local_off,
            len,
            &[],
            remote_key,
            remote_off,
            None,
            None,
        )
    }

    fn write_many_with_imm(
        &self,
        local_key: u32,
        writes: &[(usize, usize, usize)],
        local_off: usize,
        len: usize,
        remote_key: u32,
        remote_off: usize,
        imm: u32,
    ) -> Result<(), TransportError> {
        if writes.len() > MAX_BATCH {
            return super::write_one_by_one(
                self, local_key, writes, local_off, len, remote_key, remote_off, imm,
            );
        }
        // Every frame checked before any is sent, then all of them in one vectored send.
        let mut frames = [([0u8; FRAME_HEADER], &[][..]); MAX_BATCH + 1];
        for (frame, &(off, n, roff)) in frames.iter_mut().zip(writes) {
            *frame = self.check_frame(local_key, off, n, remote_key, roff, None)?;
        }
        frames[writes.len()] =
            self.check_frame(local_key, local_off, len, remote_key, remote_off, Some(imm))?;
        let frames = &frames[..=writes.len()];
        let mut bufs = [IoSlice::new(&[]); 2 * (MAX_BATCH + 1)];
        for (pair, (h, data)) in bufs.chunks_exact_mut(2).zip(frames) {
            pair[0] = IoSlice::new(h);
            pair[1] = IoSlice::new(data);
        }
        self.send_frames(&mut bufs[..2 * frames.len()], None)
    }

    fn window(
        &self,
        key: u32,
        offset: usize,
        len: usize,
    ) -> Result<Option<*mut u8>, TransportError> {
        let rlen = self
            .remote_len(key)
            .ok_or_else(|| super::unknown_region("remote", key))?;
        check_range("remote", key, offset, len, rlen)?;
        Ok(None)
    }

    fn signal(&self, _imm: u32, _len: usize) -> Result<(), TransportError> {
        Err(TransportError::Protocol(
            "tcp has no zero-copy window to signal; use write_with_imm".into(),
        ))
    }
}

/// Most plain writes [`Endpoint::write_many_with_imm`] sends in one go over TCP (more are sent
/// one by one).
const MAX_BATCH: usize = 8;

impl TcpEndpoint {
    /// Checks a write of `len` local bytes at `local_off` to the peer's `remote_key` at
    /// `remote_off`, and returns its frame header (a write with `imm`, or a plain write for
    /// `None`) and the local bytes.
    fn check_frame(
        &self,
        local_key: u32,
        local_off: usize,
        len: usize,
        remote_key: u32,
        remote_off: usize,
        imm: Option<u32>,
    ) -> Result<([u8; FRAME_HEADER], &[u8]), TransportError> {
        let local = super::local_range(&self.conn.local, local_key, local_off, len)?;
        let rlen = self
            .remote_len(remote_key)
            .ok_or_else(|| super::unknown_region("remote", remote_key))?;
        check_range("remote", remote_key, remote_off, len, rlen)?;
        let len32 = u32::try_from(len)
            .map_err(|_| TransportError::Protocol("write larger than 4 GiB".into()))?;
        // Region keys are small (the peer's offer named this one), so the top bit is free.
        let word = if imm.is_some() {
            remote_key
        } else {
            remote_key | FRAME_SILENT
        };
        let mut h = [0u8; FRAME_HEADER];
        h[0..4].copy_from_slice(&word.to_le_bytes());
        h[4..12].copy_from_slice(&(remote_off as u64).to_le_bytes());
        h[12..16].copy_from_slice(&len32.to_le_bytes());
        h[16..20].copy_from_slice(&imm.unwrap_or(0).to_le_bytes());
        // SAFETY: in bounds of the live local region (checked above), which lives as long as
        // the endpoint; read as plain bytes.
        let data = unsafe { std::slice::from_raw_parts(local.as_ptr().add(local_off), len) };
        Ok((h, data))
    }

    /// Sends `bufs` (whole frames) under the send lock: [`TransportError::QueueFull`] if the
    /// peer took none of them within `patience`, [`TransportError::Stalled`] if it took part.
    /// A failed or stalled send ends the connection.
    fn send_frames(
        &self,
        bufs: &mut [IoSlice<'_>],
        patience: Option<Duration>,
    ) -> Result<(), TransportError> {
        // Another sender may be waiting for room itself: with patience, so long and no longer,
        // and the send gets what is left of it (the clock is read only when there is a wait).
        let (_sending, patience) = match patience {
            None => (lock(&self.send), None),
            Some(patience) => match try_lock(&self.send) {
                Some(guard) => (guard, Some(patience)),
                None => {
                    let since = Instant::now();
                    loop {
                        std::thread::sleep(SEND_RECHECK.min(patience));
                        let waited = since.elapsed();
                        if let Some(guard) = try_lock(&self.send) {
                            break (guard, Some(patience.saturating_sub(waited)));
                        }
                        if waited >= patience {
                            return Err(TransportError::QueueFull);
                        }
                    }
                }
            },
        };
        let sent = self.conn.send(bufs, patience);
        let stalled = match sent {
            Ok(Sent::All) => return Ok(()),
            Ok(Sent::NoRoom) => return Err(TransportError::QueueFull),
            Ok(Sent::Stalled) => true,
            Err(_) => false,
        };
        // Part of the frame may have gone out (a piece the kernel could not read, a failed or
        // given-up wait for room): nothing sent after it would be framed right, so the
        // connection ends here, and the peer and our queue both see it end.
        let _ = self.conn.sock.shutdown(Shutdown::Both);
        let endpoint = self.conn.id;
        Err(if stalled {
            TransportError::Stalled { endpoint }
        } else {
            TransportError::PeerGone { endpoint }
        })
    }

    /// Sends one frame: a write with `imm`, or a plain write (`None`). See
    /// [`Endpoint::write_gather`] for the pieces.
    #[allow(clippy::too_many_arguments)]
    fn frame(
        &self,
        local_key: u32,
        local_off: usize,
        len: usize,
        pieces: &[(usize, &[u8])],
        remote_key: u32,
        remote_off: usize,
        imm: Option<u32>,
        patience: Option<Duration>,
    ) -> Result<(), TransportError> {
        super::check_pieces(len, pieces)?;
        let (h, data) = self.check_frame(local_key, local_off, len, remote_key, remote_off, imm)?;
        // The frame: its header, then the local bytes with each piece sent in its place.
        let mut bufs = [IoSlice::new(&[]); 2 + 2 * crate::Gather::MAX_PIECES];
        bufs[0] = IoSlice::new(&h);
        let (mut n, mut from) = (1, 0);
        for &(at, bytes) in pieces {
            // Checked above: increasing, not overlapping, inside `len`.
            bufs[n] = IoSlice::new(&data[from..at]);
            bufs[n + 1] = IoSlice::new(bytes);
            n += 2;
            from = at + bytes.len();
        }
        bufs[n] = IoSlice::new(&data[from..]);
        self.send_frames(&mut bufs[..=n], patience)
    }
}

impl Drop for TcpEndpoint {
    fn drop(&mut self) {
        // The queue sees the connection end (its next read finds it shut down), reports it,
        // and drops its share of the connection, closing the socket.
        let _ = self.conn.sock.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests;
