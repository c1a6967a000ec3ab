//! The client side of the data plane: a [`Lease`] on an executor's workers, and
//! [`Invocation`]s of typed calls on it (futures, or blocking with [`Invocation::wait`]).
//!
//! Hot path (shared memory): pick a worker with a free slot, encode header and arguments
//! straight into that slot of the executor's input region (the one copy an RDMA write would
//! make), signal the slot number; the worker writes the result straight into this lease's
//! result region and signals `id << 8 | status` with the output length. Nothing on this path
//! allocates.

mod functions;
mod slots;

use functions::FunctionTable;
use slots::{Claim, Delivery, Slot, Slots, tagged, untag};

use crate::call::{CallError, EncodeError, Gather, Placement, RemoteCall};
use crate::payload::Payload;
use crate::transport::shm::{
    CompletionQueue, RING_CAPACITY, ShmEndpoint, Side, recv_message, send_message,
};
use crate::transport::tcp::{TcpEndpoint, TcpQueue};
use crate::transport::{
    Endpoint, LIVENESS_TICK, Queue, Region, TransportError, recv_json, send_json,
};
use crate::watchdog::Watchdog;
use crate::wire::{
    ABI_VERSION, Attach, FLAG_PLACED, FLAG_SMALL_RESULT, FunctionInfo, HEADER_LEN, Hello,
    INPUT_REGION, InvocationHeader, PlacedOutputs, RESULT_REGION, SEND_REGION, SESSION_PROTOCOL,
    Status, Verdict, Welcome, split_response_imm,
};
use std::future::Future;
use std::marker::PhantomData;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zerocopy::IntoBytes;

/// [`Error::Registry`]'s message: the registry's error, and its address unless that names it.
fn registry_error(address: &str, error: &crate::registry::RegistryError) -> String {
    match error {
        crate::registry::RegistryError::Connect { .. } => error.to_string(),
        _ => format!("{error} (registry at {address})"),
    }
}

/// Why a lease or an invocation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The executor's (or its manager's) socket could not be reached. The OS error is part of
    /// the message (not a [`source`](std::error::Error::source), so that printing the chain
    /// does not repeat it).
    #[error("cannot connect to {peer} at {path}: {error}")]
    Connect {
        /// Whom: `executor` or `manager`.
        peer: &'static str,
        /// Socket path (or TCP address).
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The cluster registry could not be asked for nodes (unreachable, authentication, a
    /// malformed answer). The registry's error is part of the message.
    #[error("{}", registry_error(address, error))]
    Registry {
        /// Its address.
        address: String,
        /// What went wrong.
        error: crate::registry::RegistryError,
    },
    /// The node's manager refused the lease (capacity, package, limits); the reason.
    #[error("lease refused: {0}")]
    Refused(String),
    /// This client's own secret cannot be used (the file `$RFAAS_SECRET_FILE` names is
    /// missing, unreadable, of the wrong size or readable by others): nothing was sent. The
    /// cause is part of the message.
    #[error("this client's secret: {0}")]
    Secret(crate::auth::AuthError),
    /// The local package to lease with cannot be used (missing, unreadable, no SHA-256 file):
    /// nothing was sent.
    #[error("package {0}")]
    Package(String),
    /// The executor's handshake was unacceptable.
    #[error("handshake with the executor failed: {0}")]
    Handshake(String),
    /// The executor refused this client's session (a missing or wrong session token, another
    /// protocol version); its reason.
    #[error("the executor refused the session: {0}")]
    SessionRefused(String),
    /// The executor's library has no function of that name.
    #[error("the executor's library has no function `{name}`")]
    UnknownFunction {
        /// The name.
        name: &'static str,
    },
    /// The function exists but its layout differs (client and library built from different
    /// sources).
    #[error(
        "function `{name}` has fingerprint {executor:#018x} on the executor but {client:#018x} in this client: rebuild one of them"
    )]
    FingerprintMismatch {
        /// The name.
        name: &'static str,
        /// The client stub's fingerprint.
        client: u64,
        /// The executor's.
        executor: u64,
    },
    /// The encoded input or the output does not fit a slot.
    #[error(
        "`{name}` needs {need} bytes of {what}, but slots hold {limit}: lease larger slots \
         (`LeaseSpec::slot_size`, `rfaas-executor run --slot-size`){}",
        if *.buffer_helps { ", or pass every output slice as an `rfaas::Buffer` of this lease (`Lease::buffer`), in the order they were allocated: over shared memory the executor then writes them in place, whatever their size" } else { "" }
    )]
    TooLarge {
        /// The function.
        name: &'static str,
        /// `"input"` or `"output"`.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        limit: usize,
        /// An output on a lease over shared memory, where outputs that are all
        /// [`rfaas::Buffer`](crate::Buffer)s of the lease, in increasing address order, are
        /// written in place, bound by no slot (these were not).
        buffer_helps: bool,
    },
    /// The lease's buffer arena has no room for the requested buffer.
    #[error(
        "no room for a {need}-byte buffer in the lease's {arena}-byte arena (see LeaseOptions::buffer_bytes)"
    )]
    BufferSpace {
        /// Bytes requested.
        need: usize,
        /// Size of the arena.
        arena: usize,
    },
    /// Arguments could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The function ran and failed, or the executor refused the invocation.
    #[error(transparent)]
    Call(#[from] CallError),
    /// No result within the invocation's timeout.
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// The executor process (or its session) went away.
    #[error("the executor disconnected")]
    ExecutorGone,
    /// The executor broke the protocol.
    #[error("protocol violation by the executor: {0}")]
    Protocol(String),
    /// A transport operation failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// A future waiting for a free slot.
struct SlotWaiter {
    waker: Waker,
    /// Its deadline, if it has one: woken at the first progress tick past it (to time out).
    deadline: Option<Instant>,
}

/// Polls of the completion queue before a blocked invocation parks.
const HOT_SPIN: Duration = Duration::from_micros(50);
/// Polls between clock reads while spinning (blocking waits and futures alike); after
/// [`HOT_SPIN`] of spinning a waiter sleeps (futures park and the lease's progress thread wakes
/// them).
const POLLS_PER_CLOCK: u32 = 64;

/// What the lease's mutex guards: everything about sleeping tasks. Slot states are atomics of
/// their own ([`Slots`]): a call's hot path takes no lock.
struct State {
    wakers: Vec<Option<Waker>>,
    /// Futures waiting for a free slot, first come first served: one entry per future (its
    /// ticket, kept while it waits), and one woken per freed slot, not all of them (thousands
    /// of futures behind a handful of slots woke each other quadratically).
    slot_waiters: std::collections::BTreeMap<u64, SlotWaiter>,
    /// The last ticket handed out.
    tickets: u64,
    parked: usize,
    closed: bool,
    /// Parked futures with a deadline, woken at every progress tick to check it.
    timed: Vec<bool>,
}

struct Inner {
    control: Control,
    functions: FunctionTable,
    workers: Vec<Box<dyn Endpoint>>,
    cq: Arc<dyn Queue>,
    /// Send staging, for fabrics without a window into the executor's memory (TCP).
    send: Option<Arc<Region>>,
    /// Whether the executor places outputs into our buffers with writes (TCP, RDMA), not
    /// through a mapping of our memory (shared memory).
    by_writes: bool,
    result: Arc<Region>,
    arena: Arc<Arena>,
    slots: u32,
    slot_size: usize,
    slot: Slots,
    violations: AtomicU64,
    state: Mutex<State>,
    wake_progress: Condvar,
    dispatched: AtomicU64,
    /// Threads asleep in the completion queue (to be woken when someone else dispatches).
    blocked: AtomicUsize,
    progress_started: AtomicBool,
    /// Output bytes each in-flight slot may receive (its result area, or up to its in-place
    /// buffers); set by the sender before it signals, so without the state lock.
    caps: Box<[AtomicU32]>,
    /// `(worker, slot)` of each invocation id (`id = worker * slots + slot`): a lookup, as
    /// integer divisions cost tens of cycles each on the hot path.
    places: Box<[(u32, u32)]>,
}

/// A connection to an executor's workers, through which functions are invoked.
///
/// Invocations are spread over the workers; each worker has `slots` invocations in flight at
/// most. Dropping the lease ends the session (the executor frees its workers).
pub struct Lease {
    inner: Arc<Inner>,
    progress: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("workers", &self.inner.workers.len())
            .field("slots", &self.inner.slots)
            .field("slot_size", &self.inner.slot_size)
            .finish()
    }
}

impl Lease {
    /// Connects to an executor listening on the Unix socket `path` (shared memory), with
    /// [`LeaseOptions::default`].
    pub fn connect(path: impl AsRef<Path>) -> Result<Lease, Error> {
        Lease::connect_with(path, &LeaseOptions::default())
    }

    /// Connects to an executor listening on the Unix socket `path` (shared memory).
    pub fn connect_with(path: impl AsRef<Path>, options: &LeaseOptions) -> Result<Lease, Error> {
        options.check()?;
        let path = path.as_ref();
        let dog = Watchdog::start(options.handshake_timeout)?;
        let lease = crate::sys::unix_connect_timeout(path, dog.left())
            .map_err(|error| Error::Connect {
                peer: "executor",
                path: path.to_path_buf(),
                error,
            })
            .and_then(|stream| {
                dog.watch_unix(&stream)?;
                Lease::shm_handshake(stream, options)
            });
        dog.finish(lease, EXECUTOR_LATE)
    }

    /// The handshake over the Unix socket `stream` (bounded by the caller's watchdog).
    fn shm_handshake(stream: UnixStream, options: &LeaseOptions) -> Result<Lease, Error> {
        stream
            .set_read_timeout(Some(options.handshake_timeout))
            .map_err(TransportError::Io)?;
        let (mut welcome, fds): (Welcome, _) = recv_message(&stream)?;
        if !fds.is_empty() {
            return Err(Error::Handshake(
                "unexpected descriptors with the welcome".into(),
            ));
        }
        let geometry = Geometry::check(&welcome, options)?;
        // Before the hello: a list we refuse costs the executor nothing more.
        let functions =
            FunctionTable::new(std::mem::take(&mut welcome.functions)).map_err(Error::Handshake)?;
        let result = Arc::new(Region::new(RESULT_REGION, geometry.result_len)?);
        send_message(
            &stream,
            &Hello {
                protocol: SESSION_PROTOCOL,
                result_len: geometry.result_len as u64,
                token: options.token.clone(),
            },
            &[],
        )?;
        let (verdict, fds): (Verdict, _) = recv_message(&stream)?;
        if !fds.is_empty() {
            return Err(Error::Handshake(
                "unexpected descriptors with the verdict".into(),
            ));
        }
        accepted(verdict)?;
        let cq = CompletionQueue::new()?;
        let mut eps: Vec<Box<dyn Endpoint>> = Vec::with_capacity(welcome.workers as usize);
        for _ in 0..welcome.workers {
            let ep = ShmEndpoint::connect(&stream, Side::Active, vec![result.clone()], &cq)?;
            geometry.check_input(ep.remote_len(INPUT_REGION))?;
            eps.push(Box::new(ep));
        }
        stream.set_read_timeout(None).map_err(TransportError::Io)?;
        Ok(Lease::new(
            welcome,
            functions,
            geometry,
            Control::Unix(stream),
            eps,
            cq,
            result,
            None,
            false,
        ))
    }

    /// Connects to an executor listening on the TCP address `addr` (`host:port`): one control
    /// connection and one data connection per worker. There is no window into this process's
    /// memory: the executor runs a function into staging of its own, and sends outputs into
    /// [`Buffer`]s with writes of their own (at most four per call, see docs/functions.md),
    /// so every output, in a `Buffer` or not, is bound by the slot size.
    pub fn connect_tcp(addr: &str, options: &LeaseOptions) -> Result<Lease, Error> {
        let cq = TcpQueue::new();
        let queue = cq.clone();
        Lease::connect_stream(addr, options, cq, move |stream, regions| {
            Ok(Box::new(TcpEndpoint::connect(stream, regions, &queue)?))
        })
    }

    /// Connects to an executor serving over RDMA (`rfaas-executor run --listen ADDR --fabric
    /// verbs`) at the TCP address `addr`: the TCP connections set up one RC queue pair per
    /// worker and then stay open as liveness signals; invocations are RDMA writes with
    /// immediates. `config` picks the device, port and GID index (see docs/rdma.md).
    #[cfg(feature = "verbs")]
    pub fn connect_verbs(
        addr: &str,
        options: &LeaseOptions,
        config: &crate::transport::verbs::VerbsConfig,
    ) -> Result<Lease, Error> {
        use crate::transport::verbs::{VerbsEndpoint, VerbsQueue};
        let ctx = config.open()?;
        // The queue is sized for the most workers an executor may offer.
        let cq = VerbsQueue::new(&ctx, config, 256)?;
        let queue = cq.clone();
        Lease::connect_stream(addr, options, cq, move |stream, regions| {
            Ok(Box::new(VerbsEndpoint::connect(&stream, regions, &queue)?))
        })
    }

    /// The TCP-controlled connection: welcome and hello on a control connection, then one
    /// data connection per worker, made an endpoint by `connect` from our result and send
    /// regions.
    fn connect_stream(
        addr: &str,
        options: &LeaseOptions,
        cq: Arc<dyn Queue>,
        connect_ep: impl FnMut(TcpStream, Vec<Arc<Region>>) -> Result<Box<dyn Endpoint>, Error>,
    ) -> Result<Lease, Error> {
        options.check()?;
        let dog = Watchdog::start(options.handshake_timeout)?;
        let lease = Lease::stream_handshake(addr, options, cq, connect_ep, &dog);
        dog.finish(lease, EXECUTOR_LATE)
    }

    /// [`Lease::connect_stream`]'s handshake, every connection bounded by `dog`.
    fn stream_handshake(
        addr: &str,
        options: &LeaseOptions,
        cq: Arc<dyn Queue>,
        mut connect_ep: impl FnMut(TcpStream, Vec<Arc<Region>>) -> Result<Box<dyn Endpoint>, Error>,
        dog: &Watchdog,
    ) -> Result<Lease, Error> {
        let mut control = connect_within("executor", addr, dog)?;
        // Held for the lease's life: an executor host that vanishes ends it, and with it the
        // data connections (the watcher below; sys docs).
        if let Err(e) = crate::sys::hold_keepalive(&control) {
            tracing::warn!(error = %e, "no keepalive on the lease's control connection");
        }
        control.set_nodelay(true).map_err(TransportError::Io)?;
        control
            .set_read_timeout(Some(options.handshake_timeout))
            .map_err(TransportError::Io)?;
        let mut welcome: Welcome = recv_json(&mut control)?;
        let geometry = Geometry::check(&welcome, options)?;
        // Before the hello: a list we refuse costs the executor nothing more.
        let functions =
            FunctionTable::new(std::mem::take(&mut welcome.functions)).map_err(Error::Handshake)?;
        // An executor names the address its data listener bound, a literal: no name lookup,
        // and each connection is bounded like the rest of the handshake.
        let data: std::net::SocketAddr = welcome
            .data
            .as_deref()
            .ok_or_else(|| Error::Handshake("the executor named no data address".into()))?
            .parse()
            .map_err(|_| {
                Error::Handshake(format!(
                    "the executor's data address {:?} is not an IP address and port",
                    welcome.data.as_deref().unwrap_or_default()
                ))
            })?;
        let result = Arc::new(Region::new(RESULT_REGION, geometry.result_len)?);
        let send = Arc::new(Region::staging(SEND_REGION, geometry.areas)?);
        send_json(
            &mut control,
            &Hello {
                protocol: SESSION_PROTOCOL,
                result_len: geometry.result_len as u64,
                token: options.token.clone(),
            },
        )?;
        accepted(recv_json(&mut control)?)?;
        let attach = Attach {
            token: options.token.clone(),
        };
        let mut eps: Vec<Box<dyn Endpoint>> = Vec::with_capacity(welcome.workers as usize);
        let mut watched = Vec::with_capacity(welcome.workers as usize);
        for _ in 0..welcome.workers {
            let mut stream = connect_within("executor", &data.to_string(), dog)?;
            // Probes only: a user timeout would end a healthy session whose worker leaves its
            // receive window shut while it runs a long function (sys docs).
            if let Err(e) = crate::sys::keepalive(&stream) {
                tracing::warn!(error = %e, "no keepalive on a lease's data connection");
            }
            send_json(&mut stream, &attach)?;
            // The handshake is bounded; afterwards the connection may stay quiet forever.
            let same = stream.try_clone().map_err(TransportError::Io)?;
            same.set_read_timeout(Some(options.handshake_timeout))
                .map_err(TransportError::Io)?;
            let ep = connect_ep(stream, vec![result.clone(), send.clone()])?;
            same.set_read_timeout(None).map_err(TransportError::Io)?;
            geometry.check_input(ep.remote_len(INPUT_REGION))?;
            eps.push(ep);
            watched.push(same);
        }
        control.set_read_timeout(None).map_err(TransportError::Io)?;
        watch_control(&control, watched)?;
        Ok(Lease::new(
            welcome,
            functions,
            geometry,
            Control::Tcp(control),
            eps,
            cq,
            result,
            Some(send),
            true,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        welcome: Welcome,
        functions: FunctionTable,
        geometry: Geometry,
        control: Control,
        workers: Vec<Box<dyn Endpoint>>,
        cq: Arc<dyn Queue>,
        result: Arc<Region>,
        send: Option<Arc<Region>>,
        by_writes: bool,
    ) -> Lease {
        let Welcome {
            workers: w,
            slots,
            slot_size,
            ..
        } = welcome;
        let n = (w * slots) as usize;
        let state = State {
            wakers: vec![None; n],
            slot_waiters: std::collections::BTreeMap::new(),
            tickets: 0,
            parked: 0,
            closed: false,
            timed: vec![false; n],
        };
        let arena = Arc::new(Arena::new(
            result.clone(),
            geometry.areas,
            geometry.result_len - geometry.areas,
            n,
        ));
        Lease {
            inner: Arc::new(Inner {
                control,
                functions,
                workers,
                cq,
                send,
                by_writes,
                result,
                arena,
                slots,
                places: (0..n as u32).map(|id| (id / slots, id % slots)).collect(),
                slot_size: slot_size as usize,
                slot: Slots::new(w, slots),
                violations: AtomicU64::new(0),
                state: Mutex::new(state),
                wake_progress: Condvar::new(),
                dispatched: AtomicU64::new(0),
                blocked: AtomicUsize::new(0),
                progress_started: AtomicBool::new(false),
                caps: (0..n).map(|_| AtomicU32::new(slot_size)).collect(),
            }),
            progress: Mutex::new(None),
        }
    }

    /// The executor's functions.
    pub fn functions(&self) -> &[FunctionInfo] {
        self.inner.functions.list()
    }

    /// Number of workers (leased cores).
    pub fn workers(&self) -> usize {
        self.inner.workers.len()
    }

    /// Bytes per slot: the bound on header plus input, and on output.
    pub fn slot_size(&self) -> usize {
        self.inner.slot_size
    }

    /// Allocates a buffer of `len` zeroed elements in registered memory the executor writes
    /// into directly: an output slice taken from `Buffer`s receives its result in place, with
    /// no copy on either side. Freed when dropped.
    pub fn buffer<T: Payload>(&self, len: usize) -> Result<Buffer<T>, Error> {
        let bytes = len.checked_mul(size_of::<T>()).ok_or(Error::BufferSpace {
            need: usize::MAX,
            arena: self.inner.arena.len,
        })?;
        let offset = self.inner.arena.alloc(bytes).ok_or(Error::BufferSpace {
            need: bytes,
            arena: self.inner.arena.len,
        })?;
        // SAFETY: `[offset, offset + bytes)` was just allocated from the arena, inside the
        // live result mapping; nothing else uses it until the buffer is dropped.
        unsafe { std::ptr::write_bytes(self.inner.result.as_ptr().add(offset), 0, bytes) };
        Ok(Buffer {
            arena: self.inner.arena.clone(),
            offset,
            len,
            _t: PhantomData,
        })
    }

    /// Starts an invocation of `call`. Nothing is sent until it is first polled or waited on.
    pub fn invoke<C: RemoteCall>(&self, call: C) -> Invocation<'_, C> {
        Invocation {
            lease: self,
            call: Some(call),
            id: None,
            round: 0,
            deadline: None,
            timeout: None,
            spins: 0,
            spin_start: None,
            parked: false,
            placement: Placement::NONE,
            cap: 0,
            in_place: None,
            seen: u64::MAX,
            registered: false,
            ticket: None,
        }
    }

    /// Checks that the executor has `C`'s function with the same fingerprint; returns its index.
    pub fn resolve<C: RemoteCall>(&self) -> Result<u32, Error> {
        self.inner.resolve::<C>()
    }

    /// Completions the executor sent that matched no invocation (a misbehaving executor).
    pub fn protocol_violations(&self) -> u64 {
        self.inner.violations.load(Ordering::Relaxed)
    }

    fn ensure_progress_thread(&self) {
        if self.inner.progress_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        let handle = std::thread::Builder::new()
            .name("rfaas-progress".into())
            .spawn(move || inner.progress_loop());
        match handle {
            Ok(h) => *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(h),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the lease progress thread");
                self.inner.progress_started.store(false, Ordering::Release);
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut st = self.inner.lock();
            st.closed = true;
        }
        self.inner.wake_progress.notify_all();
        self.inner.cq.interrupt();
        if let Some(h) = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = h.join();
        }
        self.inner.control.shutdown();
    }
}

/// Room for a request encoded on the stack ([`Endpoint::max_inline`] bounds what is used).
const INLINE_BUF: usize = 64;

/// A small request's bytes, aligned like a slot (its input buffer then starts 8-byte aligned).
#[repr(C, align(64))]
struct InlineBuf([u8; INLINE_BUF]);

enum Submit {
    /// Sent in slot `id` (in round `round`), with this placement and output capacity.
    Sent {
        id: u32,
        round: u32,
        placement: Placement,
        cap: u32,
        /// Where in the result region the executor writes outputs into the caller's buffers,
        /// if it does.
        in_place: Option<(usize, usize)>,
    },
    NoSlot,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `C`'s function index, after checking its fingerprint.
    fn resolve<C: RemoteCall>(&self) -> Result<u32, Error> {
        // Hot path: a table lookup by fingerprint, then the name of the match.
        if let Some(f) = self.functions.find(C::FINGERPRINT, C::NAME) {
            return Ok(f.index);
        }
        let f = self
            .functions
            .list()
            .iter()
            .find(|f| f.name == C::NAME)
            .ok_or(Error::UnknownFunction { name: C::NAME })?;
        Err(Error::FingerprintMismatch {
            name: C::NAME,
            client: C::FINGERPRINT,
            executor: f.fingerprint,
        })
    }

    fn total_slots(&self) -> u32 {
        self.workers.len() as u32 * self.slots
    }

    fn result_offset(&self, id: u32) -> usize {
        id as usize * self.slot_size
    }

    /// Where invocation `id`'s output lands in this process, and which memory the executor may
    /// write in place (the buffer arena).
    fn placement(&self, id: u32) -> Placement {
        let base = self.result.as_ptr() as usize;
        Placement {
            base: base + self.result_offset(id),
            arena: (
                base + self.arena.start,
                base + self.arena.start + self.arena.len,
            ),
            by_writes: self.by_writes,
            room: self.slot_size,
        }
    }

    /// Encodes `call` into a free slot of some worker and signals it. `patience` (what is left
    /// of the invocation's `timeout`) bounds a wait for room to send (a peer that stops
    /// reading; see [`Endpoint::write_gather`]): past it, the slot is freed and the
    /// error is [`Error::Timeout`] of `timeout`.
    fn submit<C: RemoteCall>(
        &self,
        call: &C,
        timeout: Option<Duration>,
        patience: Option<Duration>,
    ) -> Result<Submit, Error> {
        let function = self.resolve::<C>()?;
        // Sizes with the placement any slot would get (the arena lies after every result
        // area, so whether outputs go in place does not depend on the slot).
        let layout = call.layout(&self.placement(0))?;
        let limit = self.slot_size - HEADER_LEN;
        if layout.input_len > limit {
            return Err(Error::TooLarge {
                name: C::NAME,
                what: "input",
                need: layout.input_len,
                limit,
                buffer_helps: false,
            });
        }
        // Outputs the executor writes where they are may reach past the slot (into the arena);
        // any other output is produced in one slot (the result area, or the worker's staging).
        let direct = layout.in_place && !self.by_writes;
        if !direct && layout.output_len > self.slot_size {
            return Err(Error::TooLarge {
                name: C::NAME,
                what: "output",
                need: layout.output_len,
                limit: self.slot_size,
                buffer_helps: !self.by_writes,
            });
        }
        let (worker, id, round) = match self.slot.claim() {
            Claim::Got { worker, id, round } => (worker, id, round),
            Claim::Busy => return Ok(Submit::NoSlot),
            Claim::AllDead => return Err(Error::ExecutorGone),
        };
        let ep = &self.workers[worker];
        let slot = self.places[id as usize].1;
        let len = HEADER_LEN + layout.input_len;
        let placement = self.placement(id);
        // A small request is encoded on the stack and travels inside the completion entry.
        let mut small = InlineBuf([0; INLINE_BUF]);
        let sent = (|| -> Result<(u32, Option<(usize, usize)>), Error> {
            let slot_off = slot as usize * self.slot_size;
            // Encode on the stack (a small request on a fabric with inline writes), straight
            // into the worker's slot (shared memory), or into our staging area for this slot,
            // sent with one write afterwards (TCP).
            let inline = len <= ep.max_inline().min(INLINE_BUF);
            let window = if inline {
                None
            } else {
                ep.window(INPUT_REGION, slot_off, len)?
            };
            let staged = !inline && window.is_none();
            let target = match (window, &self.send) {
                _ if inline => small.0.as_mut_ptr(),
                (Some(w), _) => w,
                (None, Some(send)) => send.as_ptr().wrapping_add(self.result_offset(id)),
                (None, None) => {
                    return Err(Error::Protocol(
                        "fabric offers neither a window nor staging".into(),
                    ));
                }
            };
            // `target` is our stack buffer (`len <= INLINE_BUF`), the worker's input slot
            // (bounds checked by `ep.window`; the worker reads it only after our signal) or our
            // staging area for this id (one slot per id).
            // SAFETY: `len <= slot_size` bytes that only this invocation writes while its slot is
            // in flight; any bytes may be stored there.
            let bytes = unsafe { std::slice::from_raw_parts_mut(target, len) };
            // Staged for a fabric that sends from anywhere (TCP): large input slices stay where
            // they are and go out as pieces of the one vectored write, not copied first.
            let mut gather = (staged && ep.gathers()).then(Gather::default);
            let encoded = match gather.as_mut() {
                Some(gather) => call.encode_gather(&mut bytes[HEADER_LEN..], &placement, gather)?,
                None => call.encode(&mut bytes[HEADER_LEN..], &placement)?,
            };
            // The pieces' offsets are the encoding's; the write starts with our header, so no
            // piece, whatever an `encode_gather` records, can fall on it.
            let mut pieces = [(0, &[][..]); Gather::MAX_PIECES];
            let taken = gather.as_ref().map_or(&[][..], Gather::pieces);
            for (piece, &(at, bytes)) in pieces.iter_mut().zip(taken) {
                *piece = (HEADER_LEN + at, bytes);
            }
            let pieces = &pieces[..taken.len()];
            // Outputs written where they are reach to the last buffer's end; any other output
            // (placed by writes or not) is produced in one slot, whose whole room an error
            // message may use.
            let cap = if encoded.in_place && !self.by_writes {
                encoded.output_len
            } else {
                self.slot_size
            };
            // A small result (not written in place) may come back inside the completion entry.
            let small_result = !encoded.in_place
                && encoded.output_len > 0
                && encoded.output_len <= ep.max_inline();
            // Outputs placed by writes: the encoding ends with their list.
            let placed = encoded.in_place && self.by_writes;
            let flags = if small_result { FLAG_SMALL_RESULT } else { 0 }
                | if placed { FLAG_PLACED } else { 0 };
            let header = InvocationHeader {
                id: tagged(id, round).into(),
                function: function.into(),
                input_len: (layout.input_len as u32).into(),
                result_offset: (self.result_offset(id) as u32).into(),
                result_cap: (cap as u32).into(),
                flags: flags.into(),
            };
            bytes[..HEADER_LEN].copy_from_slice(header.as_bytes());
            self.caps[id as usize].store(cap as u32, Ordering::Release);
            if inline {
                ep.write_inline(&small.0[..len], INPUT_REGION, slot_off, slot)?;
            } else if staged {
                let sent = ep.write_gather(
                    SEND_REGION,
                    self.result_offset(id),
                    len,
                    pieces,
                    INPUT_REGION,
                    slot_off,
                    slot,
                    patience,
                );
                match (sent, patience) {
                    (Ok(()), _) => {}
                    // No room within the invocation's timeout: nothing sent (or, stalled
                    // midway, the connection closed and the worker reported gone by its queue).
                    (Err(TransportError::QueueFull | TransportError::Stalled { .. }), Some(_)) => {
                        return Err(Error::Timeout(timeout.unwrap_or_default()));
                    }
                    (Err(e), _) => return Err(e.into()),
                }
            } else {
                ep.signal(slot, len)?;
            }
            // The arena memory the executor may write for this call (see `Arena::hold`): from
            // the first buffer to the end of the last (placed by writes, their list says
            // where; written in place through the window, the encoding does).
            let at = self.result_offset(id);
            let span = if !encoded.in_place {
                None
            } else if placed {
                PlacedOutputs::split(&bytes[HEADER_LEN..len])
                    .ok()
                    .and_then(|(_, list)| {
                        let ranges = list.ranges();
                        let first = ranges.first()?.dest.get() as usize;
                        let last = ranges.last()?;
                        let end = last.dest.get() as usize + last.len.get() as usize;
                        Some((at + first, at + end))
                    })
            } else {
                Some((
                    (at + encoded.in_place_start.min(encoded.output_len)).max(self.arena.start),
                    at + encoded.output_len,
                ))
            };
            Ok((cap as u32, span))
        })();
        match sent {
            Ok((cap, in_place)) => Ok(Submit::Sent {
                in_place: in_place.inspect(|&span| self.arena.mark(id, span)),
                id,
                round,
                placement,
                cap,
            }),
            Err(e) => {
                self.free_slot(id);
                // A send that failed closed the worker's connection. The worker is failed when
                // its queue reports the end, after whatever it had sent before: failing it here
                // would hand back buffers its earlier frames are still placed into.
                match e {
                    Error::Transport(TransportError::PeerGone { .. }) => Err(Error::ExecutorGone),
                    e => Err(e),
                }
            }
        }
    }

    /// Handles every completion currently queued; returns how many.
    fn progress(&self) -> Result<usize, Error> {
        let mut n = 0;
        loop {
            match self.cq.poll() {
                Ok(Some(c)) => self.dispatch(c.endpoint, c.imm, c.len),
                Ok(None) => return Ok(n),
                // A worker's connection ended or broke (reported once, to whoever polls): fail
                // that worker's invocations, whichever invocation happened to see it.
                Err(e) => {
                    if !self.worker_lost(&e) {
                        return Err(e.into());
                    }
                }
            }
            n += 1;
        }
    }

    fn dispatch(&self, endpoint: u32, imm: u32, len: u32) {
        let (tag, raw) = split_response_imm(imm);
        let (id, round) = untag(tag);
        let valid = id < self.total_slots() && self.places[id as usize].0 == endpoint;
        // An answer longer than the invocation's result area is still its answer (the executor
        // is done with it), but its owner gets an error instead of reading past the area.
        let fits = valid && len <= self.caps[id as usize].load(Ordering::Acquire);
        let answer = if fits {
            Slot::Done(raw, len)
        } else {
            Slot::Rejected(len)
        };
        let delivery = if valid {
            self.slot.deliver(id, round, answer)
        } else {
            Delivery::Stray
        };
        let taken = match delivery {
            // The owner may sleep: its waker was stored before it last looked at the slot,
            // under the lock taken here after the transition.
            Delivery::ToOwner => {
                self.wake_owner(id);
                true
            }
            // Its owner gave up: the answer frees the slot, once (a duplicate that raced this
            // one to the queue finds it free or reused, and is a violation). Answers of an
            // earlier round (late duplicates) find the round moved on and change nothing.
            Delivery::Freed(waiting) => {
                self.arena.unhold(|i, r| (i, r) == (id, round));
                self.after_free(waiting);
                true
            }
            // Taken off the queue before the worker's end was reported, dispatched after: an
            // honest executor's last answer, not a violation.
            Delivery::AfterEnd => true,
            Delivery::Stray => false,
        };
        if !(taken && fits) {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
        // Pairs with `block`: a thread that counts as blocked after our increment sees the
        // count moved; one that counted before it is interrupted.
        self.dispatched.fetch_add(1, Ordering::SeqCst);
        if self.blocked.load(Ordering::SeqCst) > 0 {
            self.cq.interrupt();
        }
    }

    /// Wakes the task that sleeps on invocation `id`, if one does.
    fn wake_owner(&self, id: u32) {
        let waker = {
            let mut st = self.lock();
            st.timed[id as usize] = false;
            st.wakers[id as usize].take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Frees slot `id` (its owner is done with it, or gave it up). A dead worker's slot stays
    /// unused.
    fn free_slot(&self, id: u32) {
        if self.slot.is_dead(self.places[id as usize].0 as usize) {
            self.slot.clear(id);
        } else {
            self.after_free(self.slot.release(id));
        }
    }

    /// A slot was freed: wakes the first task waiting for one, if `waiting`.
    fn after_free(&self, waiting: bool) {
        if waiting {
            self.wake_slot_waiter();
        }
    }

    /// Wakes the first future waiting for a slot (it takes the slot, or comes back to its
    /// place in the queue), and the threads blocked in `wait()` for one.
    fn wake_slot_waiter(&self) {
        self.wake_queued(false);
    }

    /// Wakes every task waiting for a slot (a worker died: their claims may fail now).
    fn wake_slot_waiters(&self) {
        self.wake_queued(true);
    }

    /// Wakes the first future in the queue for a slot, or `all` of them, and the threads
    /// blocked in `wait()` for one (see `block`).
    fn wake_queued(&self, all: bool) {
        // (No allocation: the whole queue is moved out, or one entry popped.)
        let (first, rest) = {
            let mut st = self.lock();
            let taken = match all {
                true => (None, std::mem::take(&mut st.slot_waiters)),
                false => (st.slot_waiters.pop_first(), Default::default()),
            };
            if st.slot_waiters.is_empty() {
                self.slot.waiters_woken();
            }
            taken
        };
        for (_, w) in first.into_iter().chain(rest) {
            w.waker.wake();
        }
        if self.blocked.load(Ordering::SeqCst) > 0 {
            self.cq.interrupt();
        }
    }

    /// Whether `e` reports a worker lost: its connection ended ([`TransportError::PeerGone`])
    /// or its peer broke the protocol on it ([`TransportError::PeerBroke`], also counted as a
    /// violation). Then the worker's invocations fail (see [`Inner::worker_gone`]).
    fn worker_lost(&self, e: &TransportError) -> bool {
        match *e {
            TransportError::PeerGone { endpoint } => self.worker_gone(endpoint),
            TransportError::PeerBroke { endpoint, ref why } => {
                tracing::warn!(worker = endpoint, "the executor broke the protocol: {why}");
                self.violations.fetch_add(1, Ordering::Relaxed);
                self.worker_gone(endpoint);
            }
            _ => return false,
        }
        true
    }

    /// Marks a worker dead and fails its invocations.
    fn worker_gone(&self, endpoint: u32) {
        let mut failed = Vec::new();
        if !self
            .slot
            .fail_worker(endpoint as usize, |id| failed.push(id))
        {
            return;
        }
        for id in failed {
            self.wake_owner(id);
        }
        // A dead worker writes nothing more; its slots are never claimed again.
        self.arena.unhold(|id, _| {
            self.places
                .get(id as usize)
                .is_some_and(|p| p.0 == endpoint)
        });
        self.wake_slot_waiters();
        self.dispatched.fetch_add(1, Ordering::SeqCst);
        self.cq.interrupt();
    }

    /// Sleeps on the completion queue for up to `timeout`, handling what arrives, unless
    /// `ready()` holds once this thread counts as blocked. Whoever makes it true later (a
    /// dispatch of someone else's completion, a freed slot) sees the count and interrupts the
    /// queue, which `wait_since` notices even if it happened before the sleep began.
    fn block(&self, timeout: Duration, ready: impl Fn() -> bool) -> Result<(), Error> {
        let epoch = self.cq.epoch();
        self.blocked.fetch_add(1, Ordering::SeqCst);
        let got = if ready() {
            Ok(None)
        } else {
            self.cq.wait_since(epoch, timeout)
        };
        self.blocked.fetch_sub(1, Ordering::SeqCst);
        match got {
            Ok(Some(c)) => {
                self.dispatch(c.endpoint, c.imm, c.len);
                self.progress()?;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) if self.worker_lost(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn progress_loop(&self) {
        // When parked futures with deadlines (and those waiting for a slot) last looked again,
        // and their wakers, taken under the lock and woken outside it (a waker may poll its
        // future at once, which takes the lock).
        let mut last_look = Instant::now();
        let mut timed = Vec::new();
        loop {
            {
                let mut st = self.lock();
                while st.parked == 0 && !st.closed {
                    st = self
                        .wake_progress
                        .wait(st)
                        .unwrap_or_else(|e| e.into_inner());
                }
                if st.closed {
                    return;
                }
            }
            if let Err(e) = self.block(LIVENESS_TICK, || false) {
                tracing::warn!(error = %e, "lease progress thread");
                std::thread::sleep(LIVENESS_TICK);
            }
            // Once a tick (not at every completion this thread takes): let parked futures
            // with deadlines, and those waiting for a slot, look again.
            if last_look.elapsed() < LIVENESS_TICK {
                continue;
            }
            last_look = Instant::now();
            let queued = {
                let st = self.lock();
                timed.extend(
                    st.wakers
                        .iter()
                        .zip(&st.timed)
                        .filter_map(|(w, timed)| w.as_ref().filter(|_| *timed).cloned()),
                );
                // Those waiting for a slot whose deadline has passed (they stay queued until
                // they see it).
                let now = Instant::now();
                timed.extend(
                    st.slot_waiters
                        .values()
                        .filter(|w| w.deadline.is_some_and(|d| d <= now))
                        .map(|w| w.waker.clone()),
                );
                !st.slot_waiters.is_empty()
            };
            for w in timed.drain(..) {
                w.wake();
            }
            // And, in case a wake went astray, the first one waiting for a slot.
            if queued {
                self.wake_slot_waiter();
            }
        }
    }
}

/// One invocation: a future (`.await` it under any executor) or blocking with [`wait`].
///
/// It is sent when first polled or waited on; dropping it before the result arrives abandons
/// it (the slot is reclaimed when the executor answers).
///
/// [`wait`]: Invocation::wait
pub struct Invocation<'l, C: RemoteCall> {
    lease: &'l Lease,
    call: Option<C>,
    id: Option<u32>,
    /// The round of slot `id` this invocation holds (the executor answers with both).
    round: u32,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    spins: u32,
    spin_start: Option<Instant>,
    parked: bool,
    /// Set when sent: where the output lands and how much of it may come.
    placement: Placement,
    cap: u32,
    /// Where the executor writes this call's outputs into the caller's buffers, if it does.
    in_place: Option<(usize, usize)>,
    /// The lease's dispatch counter when our slot was last looked at.
    seen: u64,
    /// Our waker is stored in the lease's state (to be removed when we are done).
    registered: bool,
    /// Our place in the queue for a free slot, while we wait for one.
    ticket: Option<u64>,
}

impl<C: RemoteCall> std::fmt::Debug for Invocation<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocation")
            .field("function", &C::NAME)
            .field("id", &self.id)
            .finish()
    }
}

impl<'l, C: RemoteCall> Invocation<'l, C> {
    /// Fails the invocation with [`Error::Timeout`] if no result arrives within `timeout`,
    /// counted from when it first has to wait: when no slot is free, else after its first
    /// few dozen polls (a microsecond or so: a clock read at every poll would cost more than a
    /// hot call). A timeout too long for the clock (`Duration::MAX`) is no timeout. Over TCP
    /// it also bounds the wait for room to start sending the request
    /// when the executor stops reading (see docs/functions.md); a request stuck midway for
    /// 10 s closes the worker's connection.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn inner(&self) -> &'l Inner {
        &self.lease.inner
    }

    fn start_clock(&mut self) {
        if self.deadline.is_none()
            && let Some(t) = self.timeout
        {
            // A timeout beyond the clock's range (`Duration::MAX`) is none.
            self.deadline = Instant::now().checked_add(t);
        }
    }

    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// How long one sleep of a blocking wait may last: until the deadline, at most a
    /// liveness tick.
    fn sleep_budget(&self) -> Duration {
        self.deadline.map_or(LIVENESS_TICK, |d| {
            d.saturating_duration_since(Instant::now())
                .min(LIVENESS_TICK)
        })
    }

    /// Sends the invocation if it has not been sent; `Ok(false)` if no slot is free yet.
    fn try_send(&mut self) -> Result<bool, Error> {
        if self.id.is_some() {
            return Ok(true);
        }
        let call = self
            .call
            .as_ref()
            .expect("`Invocation` polled after it completed");
        // A worker whose connection has no room for the request (it stopped reading) gets what
        // is left of the timeout (all of it if the clock has not started), then the invocation
        // times out (`submit` says so).
        let patience = self.timeout.map(|t| match self.deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => t,
        });
        match self.inner().submit(call, self.timeout, patience)? {
            Submit::Sent {
                id,
                round,
                placement,
                cap,
                in_place,
            } => {
                self.id = Some(id);
                self.round = round;
                self.placement = placement;
                self.cap = cap;
                self.in_place = in_place;
                if self.ticket.is_some() {
                    self.leave_slot_queue(true);
                }
                Ok(true)
            }
            Submit::NoSlot => Ok(false),
        }
    }

    /// The result, if the slot is answered (or failed).
    fn take_result(&mut self) -> Option<Result<C::Output, Error>> {
        let id = self.id?;
        match self.inner().slot.get(id) {
            Slot::Done(raw, len) => {
                // Decode while holding the slot: nobody reuses it until freed below.
                let result = self.decode(id, raw, len);
                self.finish(id);
                Some(result)
            }
            Slot::Failed => {
                self.finish(id);
                Some(Err(Error::ExecutorGone))
            }
            Slot::Rejected(len) => {
                self.finish(id);
                Some(Err(Error::Protocol(format!(
                    "the executor answered with {len} bytes, more than the {} bytes of the \
                     invocation's result area",
                    self.cap
                ))))
            }
            _ => None,
        }
    }

    fn decode(&mut self, id: u32, raw: u32, len: u32) -> Result<C::Output, Error> {
        let status = Status::from_u32(raw)
            .ok_or_else(|| Error::Protocol(format!("unknown status {raw}")))?;
        let inner = self.inner();
        let off = inner.result_offset(id);
        // The executor wrote this range before signalling and does not touch it again for this
        // invocation. `off + cap` is a slot's result area, or reaches into in-place buffers.
        // SAFETY: `len <= cap` (checked before decoding) and `off + cap` lies within our own
        // live result region.
        let output =
            unsafe { std::slice::from_raw_parts(inner.result.as_ptr().add(off), len as usize) };
        let call = self
            .call
            .take()
            .expect("`Invocation` polled after it completed");
        Ok(call.decode(status, output, &self.placement)?)
    }

    /// Takes completions off the queue: our own is decoded at once (one lock, to free the
    /// slot); others are dispatched. Then looks at our slot if someone else dispatched since the
    /// last look.
    fn try_complete(&mut self) -> Option<Result<C::Output, Error>> {
        let inner = self.inner();
        loop {
            let c = match inner.cq.poll() {
                Ok(Some(c)) => c,
                Ok(None) => break,
                // Reported once, to whoever polls: fail that worker's invocations (ours among
                // them if it ran there; `take_result` below sees it).
                Err(e) if inner.worker_lost(&e) => continue,
                Err(e) => return Some(Err(e.into())),
            };
            let (tag, raw) = split_response_imm(c.imm);
            let (id, round) = untag(tag);
            // Our id is valid (we were given it), so the lookup is in bounds.
            if Some(id) == self.id
                && round == self.round
                && c.endpoint == inner.places[id as usize].0
                && c.len <= self.cap
            {
                // The answer is off the queue and the slot still in flight: if decoding
                // panics, free the slot on the way out (dropping us would mark it abandoned, to
                // wait for an answer already taken: a slot lost for good).
                let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.decode(id, raw, c.len)
                })) {
                    Ok(result) => result,
                    Err(panic) => self.finish_and_unwind(id, panic),
                };
                self.finish(id);
                return Some(result);
            }
            inner.dispatch(c.endpoint, c.imm, c.len);
        }
        let now_seen = inner.dispatched.load(Ordering::Acquire);
        if now_seen != self.seen {
            self.seen = now_seen;
            return self.take_result();
        }
        None
    }

    fn timed_out(&mut self) -> Error {
        self.abandon();
        Error::Timeout(self.timeout.unwrap_or_default())
    }

    /// Blocks until the result arrives: spins briefly on the completion queue, then sleeps on
    /// it. The lowest-latency way to wait.
    pub fn wait(mut self) -> Result<C::Output, Error> {
        let inner = self.inner();
        // Send, waiting for a free slot if all are busy. The timeout's clock starts after the
        // send (a clock read costs ~35 ns on our VMs, a tenth of a hot round trip).
        while !self.try_send()? {
            self.start_clock();
            if self.expired() {
                return Err(Error::Timeout(self.timeout.unwrap_or_default()));
            }
            inner.block(self.sleep_budget(), || inner.slot.wait_for_free())?;
        }
        let mut spin_start: Option<Instant> = None;
        let mut polls = 0u32;
        loop {
            // Pause first: the answer cannot be there yet right after the send, and polling its
            // line at once would take it back from the worker, which readies it for writing
            // while the function runs (`Endpoint::expect_send`).
            std::hint::spin_loop();
            if let Some(r) = self.try_complete() {
                return r;
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(POLLS_PER_CLOCK) {
                self.start_clock();
                if self.expired() {
                    return Err(self.timed_out());
                }
                if spin_start.get_or_insert_with(Instant::now).elapsed() >= HOT_SPIN {
                    let left = self.sleep_budget();
                    // Someone else may take our answer off the queue (futures on other
                    // threads): then the dispatch count moves.
                    let seen = self.seen;
                    inner.block(left, || inner.dispatched.load(Ordering::SeqCst) != seen)?;
                    spin_start = None;
                }
            }
        }
    }

    /// Frees slot `id` (its answer taken) and goes on with a panic of decoding it.
    #[cold]
    #[inline(never)]
    fn finish_and_unwind(&mut self, id: u32, panic: Box<dyn std::any::Any + Send>) -> ! {
        self.finish(id);
        std::panic::resume_unwind(panic)
    }

    /// Done with slot `id`: forgets our waker (if we registered one) and frees the slot.
    fn finish(&mut self, id: u32) {
        let inner = self.inner();
        self.forget_waker(id);
        if self.in_place.is_some() {
            inner.arena.unmark(id);
        }
        inner.free_slot(id);
        self.id = None;
    }

    fn forget_waker(&mut self, id: u32) {
        if std::mem::take(&mut self.registered) {
            let mut st = self.inner().lock();
            st.wakers[id as usize] = None;
            st.timed[id as usize] = false;
        }
    }

    /// Gives the invocation up, if it is still in flight (a finished one has no slot: the
    /// common case on drop, kept inline).
    #[inline]
    fn abandon(&mut self) {
        if let Some(id) = self.id {
            self.abandon_slot(id);
        }
    }

    #[inline(never)]
    fn abandon_slot(&mut self, id: u32) {
        // Our waker goes first: once the slot is marked abandoned, the answer may free it
        // and a new invocation may register its own waker there.
        self.forget_waker(id);
        let inner = self.inner();
        let round = self.round;
        // The executor may still write our outputs into the caller's buffers, which the
        // caller gets back now: memory released meanwhile is not handed out again until
        // the answer comes (held before the slot is marked, whose answer lifts it).
        if let Some(span) = self.in_place {
            inner.arena.hold(id, round, span);
            // The hold covers the span from here on (and is lifted by the answer, which
            // then frees the slot without us).
            inner.arena.unmark(id);
        }
        let found = inner
            .slot
            .transition(id, round, Slot::InFlight, Slot::Abandoned);
        if found.is_err() && self.in_place.is_some() {
            inner.arena.unhold(|i, r| (i, r) == (id, round));
        }
        match found {
            // The answer frees the slot when it comes.
            Ok(()) => self.id = None,
            Err(Slot::Done(..) | Slot::Failed | Slot::Rejected(_)) => self.finish(id),
            Err(_) => self.id = None,
        }
    }

    /// Takes our place in the queue for a free slot (at the first poll without one), or
    /// keeps it, with `waker` the one to wake.
    fn queue_for_slot(&mut self, waker: &Waker) {
        let deadline = self.deadline;
        let mut st = self.inner().lock();
        let ticket = *self.ticket.get_or_insert_with(|| {
            st.tickets += 1;
            st.tickets
        });
        match st.slot_waiters.entry(ticket) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let w = e.get_mut();
                if !w.waker.will_wake(waker) {
                    w.waker = waker.clone();
                }
                w.deadline = deadline;
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(SlotWaiter {
                    waker: waker.clone(),
                    deadline,
                });
            }
        }
    }

    /// Leaves the queue for a free slot, if in it: with a slot (`took`), or without one (timed
    /// out, failed, dropped), when a slot freed for us goes to the next in line. Woken for a
    /// slot, we may also have taken another one (freed while nobody was counted as waiting,
    /// seen by our own look): then the slot we were woken for is still free, and goes on too.
    #[cold]
    #[inline(never)]
    fn leave_slot_queue(&mut self, took: bool) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let inner = self.inner();
        let woken = inner.lock().slot_waiters.remove(&ticket).is_none();
        if woken && (!took || inner.slot.free_or_all_dead()) {
            inner.wake_slot_waiter();
        }
    }

    fn set_parked(&mut self, parked: bool) {
        if self.parked == parked {
            return;
        }
        self.parked = parked;
        let inner = self.inner();
        let mut st = inner.lock();
        if parked {
            st.parked += 1;
        } else {
            st.parked -= 1;
        }
        drop(st);
        if parked {
            self.lease.ensure_progress_thread();
            inner.wake_progress.notify_one();
        }
    }
}

impl<C: RemoteCall + Unpin> Future for Invocation<'_, C> {
    type Output = Result<C::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let inner = this.inner();
        if this.id.is_none() {
            match this.try_send() {
                Ok(true) => {}
                Ok(false) => {
                    this.start_clock();
                    if this.expired() {
                        this.leave_slot_queue(false);
                        this.set_parked(false);
                        return Poll::Ready(Err(Error::Timeout(this.timeout.unwrap_or_default())));
                    }
                    // Woken when a slot frees (or by the progress thread's tick).
                    this.queue_for_slot(cx.waker());
                    if inner.slot.wait_for_free() {
                        cx.waker().wake_by_ref();
                    }
                    this.set_parked(true);
                    if let Err(e) = inner.progress() {
                        this.leave_slot_queue(false);
                        this.set_parked(false);
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Pending;
                }
                Err(e) => {
                    this.leave_slot_queue(false);
                    this.set_parked(false);
                    return Poll::Ready(Err(e));
                }
            }
        }
        if let Some(r) = this.try_complete() {
            this.set_parked(false);
            return Poll::Ready(r);
        }
        this.spins = this.spins.wrapping_add(1);
        if !this.spins.is_multiple_of(POLLS_PER_CLOCK) {
            // Hot: let the runtime run other tasks, then poll again.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.start_clock();
        if this.expired() {
            this.set_parked(false);
            return Poll::Ready(Err(this.timed_out()));
        }
        if this.spin_start.get_or_insert_with(Instant::now).elapsed() < HOT_SPIN {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // Warm: the progress thread wakes us when the answer arrives, and at every tick while
        // we have a deadline.
        if let Some(id) = this.id {
            let mut st = inner.lock();
            st.wakers[id as usize] = Some(cx.waker().clone());
            st.timed[id as usize] = this.deadline.is_some();
            drop(st);
            this.registered = true;
            // Whoever answers or fails the slot changes its state before taking the lock to
            // wake us: either it finds our waker, or we see the change here.
            if inner.slot.get(id) != Slot::InFlight {
                // Answered (or failed) meanwhile: take it now. (Through `try_complete` we
                // would only look once the dispatcher has counted it, a moment later.)
                if let Some(r) = this.take_result() {
                    this.set_parked(false);
                    return Poll::Ready(r);
                }
                cx.waker().wake_by_ref();
            }
        }
        this.set_parked(true);
        Poll::Pending
    }
}

impl<C: RemoteCall> Drop for Invocation<'_, C> {
    fn drop(&mut self) {
        if self.ticket.is_some() {
            self.leave_slot_queue(false);
        }
        self.abandon();
        if self.parked {
            let mut st = self.inner().lock();
            st.parked -= 1;
        }
    }
}

/// The executor's answer to our hello: go on, or the reason it refused.
fn accepted(verdict: Verdict) -> Result<(), Error> {
    match verdict {
        Verdict::Accepted => Ok(()),
        Verdict::Refused(reason) => Err(Error::SessionRefused(reason)),
    }
}

/// Options of a lease.
#[derive(Clone)]
#[non_exhaustive]
pub struct LeaseOptions {
    /// Bytes of registered memory for [`Lease::buffer`]s (default 64 MiB; untouched memory
    /// costs nothing).
    pub buffer_bytes: usize,
    /// The session token the executor requires (`RFAAS_SESSION_TOKEN` of `rfaas-executor
    /// run`); a managed lease sets it from the manager's grant. Default: none.
    pub token: Option<String>,
    /// Most bytes of result areas the executor's geometry (workers x slots x slot size) may
    /// make this client allocate; over TCP and RDMA as much again is allocated as send staging
    /// (and pinned, over RDMA). An executor that announces more is refused before the client
    /// allocates anything. Default 1 GiB.
    pub max_slot_memory: usize,
    /// Bound on the whole handshake: connecting, the executor's welcome and verdict, and every
    /// worker's connection, and the name lookup of a TCP address given as a host name. An
    /// executor that has not completed it by then is refused (its connections are closed).
    /// Default 10 s; at most 30 days (longer is cut to that); zero is refused.
    pub handshake_timeout: Duration,
    /// The geometry a managed lease asked its manager for: the welcome must match it.
    pub(crate) expect: Option<Shape>,
}

/// What a managed lease asked for, checked against the executor's welcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) workers: u32,
    pub(crate) slots: Option<u32>,
    pub(crate) slot_size: Option<u32>,
}

impl std::fmt::Debug for LeaseOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseOptions")
            .field("buffer_bytes", &self.buffer_bytes)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("max_slot_memory", &self.max_slot_memory)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            buffer_bytes: 64 << 20,
            token: None,
            max_slot_memory: 1 << 30,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            expect: None,
        }
    }
}

impl LeaseOptions {
    /// Refuses options no handshake could use.
    fn check(&self) -> Result<(), Error> {
        if self.handshake_timeout.is_zero() {
            return Err(Error::Handshake(
                "LeaseOptions::handshake_timeout is zero".into(),
            ));
        }
        Ok(())
    }
}

/// The handshake error's words when the deadline passes.
const EXECUTOR_LATE: &str = "the executor did not complete the handshake";

/// Watches a TCP session's control connection, on which the executor sends nothing after the
/// handshake: when it ends (the lease's drop shuts it down; the executor's end; its host
/// vanished, which the connection's keepalive and user timeout detect within about 25 s) the
/// data connections are shut down too, so that every call fails with `ExecutorGone` rather
/// than wait on a data connection retransmitting to a vanished host for ~15 minutes. The
/// thread ends with the connection.
fn watch_control(control: &TcpStream, data: Vec<TcpStream>) -> Result<(), Error> {
    let mut watch = control.try_clone().map_err(TransportError::Io)?;
    std::thread::Builder::new()
        .name("rfaas-lease-watch".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                match std::io::Read::read(&mut watch, &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            for s in data {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        })
        .map(drop)
        .map_err(|e| Error::Transport(TransportError::Io(e)))
}

/// Connects to `peer` (`executor` or `manager`) at `addr` within what is left of `dog`'s
/// deadline, watched by it.
pub(crate) fn connect_within(
    peer: &'static str,
    addr: &str,
    dog: &Watchdog,
) -> Result<TcpStream, Error> {
    dog.connect_tcp(addr).map_err(|error| Error::Connect {
        peer,
        path: PathBuf::from(addr),
        error,
    })
}

/// Allocation granule of the buffer arena (and the alignment of every buffer).
const BUFFER_ALIGN: usize = 64;

/// The part of the result region handed out as [`Buffer`]s: first fit over sorted free
/// extents.
struct Arena {
    region: Arc<Region>,
    /// Offset of the arena in the result region.
    start: usize,
    len: usize,
    state: Mutex<ArenaState>,
    /// Per slot, the arena memory its invocation in flight may write in place (start and
    /// end in [`BUFFER_ALIGN`] units, packed; 0: none). Marked when the call is sent,
    /// unmarked when it is finished or its span is held: a `Buffer` released while its call
    /// is marked (the `Invocation` was leaked with `mem::forget`, which ends the borrow
    /// without a drop) is not handed out again, as under a hold.
    inflight: Box<[AtomicU64]>,
    /// Whether `ArenaState::deferred` may hold extents: a call's unmarking then looks at
    /// them (a lock only then, not on every in-place call's end).
    deferring: AtomicBool,
}

impl ArenaState {
    /// Whether `[off, off + bytes)` overlaps a hold.
    fn held(&self, off: usize, bytes: usize) -> bool {
        self.holds
            .iter()
            .any(|&(.., start, end)| off < end && start < off + bytes)
    }
}

#[derive(Default)]
struct ArenaState {
    /// Free extents `(offset, len)`, sorted, coalesced.
    free: Vec<(usize, usize)>,
    /// Abandoned invocations `(slot id, round, start, end)` with outputs in place in
    /// `[start, end)`: the executor may still write there, so memory released there is not
    /// handed out again until their answers come.
    holds: Vec<(u32, u32, usize, usize)>,
    /// Extents released inside a hold or under a call's mark, freed when neither covers them
    /// any more.
    deferred: Vec<(usize, usize)>,
}

impl Arena {
    fn new(region: Arc<Region>, start: usize, len: usize, slots: usize) -> Arena {
        let free = if len == 0 {
            Vec::new()
        } else {
            vec![(start, len)]
        };
        Arena {
            region,
            start,
            len,
            state: Mutex::new(ArenaState {
                free,
                ..ArenaState::default()
            }),
            inflight: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            deferring: AtomicBool::new(false),
        }
    }

    /// Slot `id`'s call may write `[start, end)` (result-region offsets) in place.
    fn mark(&self, id: u32, (start, end): (usize, usize)) {
        let (a, b) = (start / BUFFER_ALIGN, end.div_ceil(BUFFER_ALIGN));
        let packed = ((a as u64) << 32) | (b as u64 & u64::from(u32::MAX));
        if let Some(w) = self.inflight.get(id as usize) {
            w.store(packed, Ordering::Release);
        }
    }

    /// Slot `id`'s call is over (or held): what was released under its mark alone is free
    /// again.
    fn unmark(&self, id: u32) {
        if let Some(w) = self.inflight.get(id as usize) {
            // SeqCst with the flag's load, against `release`'s flag store and look at the
            // marks: either it sees this mark gone, or this sees its flag.
            w.swap(0, Ordering::SeqCst);
            if self.deferring.load(Ordering::SeqCst) {
                self.free_deferred(&mut self.lock());
            }
        }
    }

    /// Whether `[off, off + bytes)` overlaps memory a marked call may write.
    fn marked(&self, off: usize, bytes: usize) -> bool {
        let (a, b) = (off / BUFFER_ALIGN, (off + bytes).div_ceil(BUFFER_ALIGN));
        self.inflight.iter().any(|w| {
            let packed = w.load(Ordering::SeqCst);
            let (start, end) = (
                (packed >> 32) as usize,
                (packed & u64::from(u32::MAX)) as usize,
            );
            packed != 0 && a < end && start < b
        })
    }

    fn lock(&self) -> MutexGuard<'_, ArenaState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn alloc(&self, bytes: usize) -> Option<usize> {
        let bytes = bytes.max(1).checked_next_multiple_of(BUFFER_ALIGN)?;
        let mut st = self.lock();
        let free = &mut st.free;
        let i = free.iter().position(|&(_, l)| l >= bytes)?;
        let (off, l) = free[i];
        if l == bytes {
            free.remove(i);
        } else {
            free[i] = (off + bytes, l - bytes);
        }
        Some(off)
    }

    fn release(&self, off: usize, bytes: usize) {
        let bytes = bytes.max(1).next_multiple_of(BUFFER_ALIGN);
        let mut st = self.lock();
        if st.held(off, bytes) {
            // Freed when the hold lifts (`unhold`), not by unmarking.
            st.deferred.push((off, bytes));
            return;
        }
        // The flag first (see `unmark`): a call unmarked after this look frees the extent.
        self.deferring.store(true, Ordering::SeqCst);
        if self.marked(off, bytes) {
            st.deferred.push((off, bytes));
        } else {
            Self::free_extent(&mut st.free, off, bytes);
            if st.deferred.is_empty() {
                self.deferring.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Under the lock: frees the deferred extents no hold and no mark covers any more. The
    /// flag stays up only for extents a mark covers (those under a hold alone wait for
    /// `unhold`: a hold may last the lease's life, and calls' ends need not look meanwhile).
    fn free_deferred(&self, st: &mut ArenaState) {
        let deferred = std::mem::take(&mut st.deferred);
        let mut under_marks = false;
        for (off, bytes) in deferred {
            let marked = self.marked(off, bytes);
            if st.held(off, bytes) || marked {
                st.deferred.push((off, bytes));
                under_marks |= marked;
            } else {
                Self::free_extent(&mut st.free, off, bytes);
            }
        }
        if !under_marks {
            self.deferring.store(false, Ordering::Relaxed);
        }
    }

    /// Abandoned invocation `(id, round)` may still write its in-place outputs in
    /// `[start, end)` (result-region offsets): memory released there is held back until
    /// [`Arena::unhold`].
    fn hold(&self, id: u32, round: u32, (start, end): (usize, usize)) {
        self.lock().holds.push((id, round, start, end));
    }

    /// The holds `lifted` picks are over (their answers came, or their worker died): what was
    /// released under them and is under no other hold is free again.
    fn unhold(&self, lifted: impl Fn(u32, u32) -> bool) {
        let mut st = self.lock();
        let before = st.holds.len();
        st.holds.retain(|&(id, round, ..)| !lifted(id, round));
        if st.holds.len() == before {
            return;
        }
        self.free_deferred(&mut st);
    }

    /// Puts `[off, off + bytes)` back on the free list.
    fn free_extent(free: &mut Vec<(usize, usize)>, off: usize, bytes: usize) {
        let i = free.partition_point(|&(o, _)| o < off);
        free.insert(i, (off, bytes));
        // Coalesce with the next, then with the previous extent.
        if i + 1 < free.len() && free[i].0 + free[i].1 == free[i + 1].0 {
            free[i].1 += free[i + 1].1;
            free.remove(i + 1);
        }
        if i > 0 && free[i - 1].0 + free[i - 1].1 == free[i].0 {
            free[i - 1].1 += free[i].1;
            free.remove(i);
        }
    }
}

/// `len` elements of `T` in registered memory that the executor writes directly: pass
/// `&mut buffer[..]` as an output slice and the result arrives in place, without a copy.
/// (Inputs from a `Buffer` work like any slice.) Dereferences to `[T]`; freed on drop.
///
/// The memory is shared with the executor process; it writes only the output slices of
/// invocations in flight, which hold the exclusive borrow of the buffer.
pub struct Buffer<T: Payload> {
    arena: Arc<Arena>,
    offset: usize,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Payload> Buffer<T> {
    fn ptr(&self) -> *mut T {
        // Offsets are multiples of 64 in a page-aligned mapping: aligned for any payload.
        self.arena.region.as_ptr().wrapping_add(self.offset).cast()
    }
}

impl<T: Payload> std::ops::Deref for Buffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` elements at an aligned offset of the live mapping, allocated to this
        // buffer alone (zero-filled at allocation, so initialized; any bytes are a valid `T`).
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len) }
    }
}

impl<T: Payload> std::ops::DerefMut for Buffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` makes the borrow exclusive in this process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len) }
    }
}

impl<T: Payload> Drop for Buffer<T> {
    fn drop(&mut self) {
        self.arena.release(self.offset, self.len * size_of::<T>());
    }
}

impl<T: Payload + std::fmt::Debug> std::fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

// SAFETY: a `Buffer` owns its extent of the shared mapping like a `Box<[T]>` owns its heap
// memory; the arena it points into is shared through an `Arc` with a `Mutex`-protected
// free list.
unsafe impl<T: Payload> Send for Buffer<T> {}
// SAFETY: as above; `&Buffer` only gives `&[T]`.
unsafe impl<T: Payload> Sync for Buffer<T> {}

/// How long the executor may take to answer a handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The session's control connection (closed when the lease drops).
enum Control {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Control {
    fn shutdown(&self) {
        let _ = match self {
            Control::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Control::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

/// The checked shape of a session's memory.
struct Geometry {
    /// Bytes of all result areas (one per slot): also the size of each worker's input region
    /// times the number of workers.
    areas: usize,
    /// Bytes of the result region: the areas plus the buffer arena.
    result_len: usize,
    /// Bytes of one worker's input region.
    input_len: usize,
}

/// Most workers a lease accepts.
const MAX_WORKERS: u32 = 256;
// Every slot index (below `workers * slots`) must fit under an invocation id's round.
const _: () = assert!(MAX_WORKERS as u64 * RING_CAPACITY as u64 <= 1 << slots::ROUND_SHIFT);

impl Geometry {
    fn check(welcome: &Welcome, options: &LeaseOptions) -> Result<Geometry, Error> {
        if welcome.protocol != SESSION_PROTOCOL || welcome.abi_version != ABI_VERSION {
            return Err(Error::Handshake(format!(
                "executor speaks protocol {} / ABI {}, this client {SESSION_PROTOCOL} / {ABI_VERSION}",
                welcome.protocol, welcome.abi_version
            )));
        }
        let (workers, slots, slot_size) = (welcome.workers, welcome.slots, welcome.slot_size);
        if workers == 0
            || workers > MAX_WORKERS
            || slots == 0
            || slots > RING_CAPACITY
            || slot_size < 128
            || !slot_size.is_multiple_of(64)
        {
            return Err(Error::Handshake(format!(
                "unusable geometry: {workers} workers x {slots} slots x {slot_size} bytes"
            )));
        }
        if let Some(want) = options.expect {
            let differs = |asked: Option<u32>, got: u32| asked.is_some_and(|a| a != got);
            if want.workers != workers
                || differs(want.slots, slots)
                || differs(want.slot_size, slot_size)
            {
                return Err(Error::Handshake(format!(
                    "asked the manager for {} workers x {} slots x {} bytes, the executor \
                     offers {workers} x {slots} x {slot_size}",
                    want.workers,
                    want.slots.map_or("any".into(), |s| s.to_string()),
                    want.slot_size.map_or("any".into(), |s| s.to_string()),
                )));
            }
        }
        let areas = u64::from(workers) * u64::from(slots) * u64::from(slot_size);
        if areas > options.max_slot_memory as u64 {
            return Err(Error::Handshake(format!(
                "the executor's {workers} workers x {slots} slots x {slot_size} bytes need \
                 {areas} bytes of result areas, over this client's limit of {} \
                 (LeaseOptions::max_slot_memory)",
                options.max_slot_memory
            )));
        }
        let total = areas + (options.buffer_bytes as u64).next_multiple_of(4096);
        if total > u64::from(u32::MAX) {
            return Err(Error::Handshake(format!(
                "result region of {total} bytes (result areas and buffer arena) exceeds 4 GiB"
            )));
        }
        Ok(Geometry {
            areas: areas as usize,
            result_len: total as usize,
            input_len: slots as usize * slot_size as usize,
        })
    }

    fn check_input(&self, offered: Option<usize>) -> Result<(), Error> {
        if offered != Some(self.input_len) {
            return Err(Error::Handshake(
                "worker offered no input region of the announced size".into(),
            ));
        }
        Ok(())
    }
}
