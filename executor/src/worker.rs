//! The executor process's data plane: sessions (one per connected client) and their workers.
//!
//! A session sends a [`Welcome`], reads the client's [`Hello`], then connects one shared-memory
//! endpoint per worker. Each worker thread is pinned to a core, owns an input region of
//! `slots` slots, and loops: poll its completion queue while hot, fall back to blocking waits
//! after the hot timeout, handle an invocation, go hot again. The function's output is written
//! straight into the client's result region through the endpoint's window, or, when the client
//! expects a small result, run into the worker's scratch and sent inside the answer's
//! completion entry.

use crate::FunctionLibrary;
use crate::conn::Deadlined;
use crate::cpus::CpuPool;
use rfaas::Status;
use rfaas::transport::shm::{CompletionQueue, ShmEndpoint, Side, recv_message_by, send_message_by};
use rfaas::transport::tcp::{TcpEndpoint, TcpQueue};
use rfaas::transport::{
    Completion, Endpoint, LIVENESS_TICK, Queue, Region, TransportError, recv_json, send_json,
};
use rfaas::wire::{
    ABI_VERSION, Attach, FLAG_PLACED, FLAG_SMALL_RESULT, FunctionInfo, HEADER_LEN, Hello,
    INPUT_REGION, InvocationHeader, KNOWN_FLAGS, MAX_INVOCATION_ID, OUTPUT_REGION, PlacedOutput,
    PlacedOutputs, RESULT_REGION, SESSION_PROTOCOL, Verdict, Welcome, response_imm, token_matches,
};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use zerocopy::FromBytes;

/// How long a worker keeps busy-polling after its last invocation (rFaaS semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HotTimeout {
    /// Always hot (`-1`): poll forever, yielding the core now and then.
    Always,
    /// Always warm (`0`): block in the completion queue between invocations.
    Never,
    /// Hot for this long after each invocation, then warm.
    For(Duration),
}

impl HotTimeout {
    /// From microseconds: -1 always hot, 0 always warm, otherwise the timeout.
    pub fn from_micros(us: i64) -> Result<Self, String> {
        match us {
            -1 => Ok(HotTimeout::Always),
            0 => Ok(HotTimeout::Never),
            us if us > 0 => Ok(HotTimeout::For(Duration::from_micros(us as u64))),
            other => Err(format!(
                "hot timeout {other} µs: use -1 (always hot), 0 (always warm) or a positive number"
            )),
        }
    }
}

/// Configuration of the workers of each session.
#[derive(Clone)]
pub struct WorkerConfig {
    /// Workers (leased cores) per session.
    pub workers: u32,
    /// CPUs to pin workers to: each session takes the least used of them for its workers
    /// (see [`CpuPool::take`]); an empty pool: no pinning.
    pub cpus: Arc<CpuPool>,
    /// Input slots per worker.
    pub slots: u32,
    /// Bytes per slot (header included); also the result area per slot.
    pub slot_size: u32,
    /// Busy-polling policy.
    pub hot_timeout: HotTimeout,
    /// The session token a client must present ([`rfaas::wire::Hello::token`], and
    /// [`rfaas::wire::Attach`] on each data connection); `None`: any client may connect.
    pub token: Option<String>,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("workers", &self.workers)
            .field("cpus", &self.cpus.cpus())
            .field("slots", &self.slots)
            .field("slot_size", &self.slot_size)
            .field("hot_timeout", &self.hot_timeout)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl WorkerConfig {
    /// Checks the limits the protocol imposes.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 || self.workers > 256 {
            return Err(format!("{} workers: between 1 and 256", self.workers));
        }
        if self.slots == 0 || self.slots > rfaas::transport::shm::RING_CAPACITY {
            return Err(format!(
                "{} slots: between 1 and {}",
                self.slots,
                rfaas::transport::shm::RING_CAPACITY
            ));
        }
        if (self.slot_size as usize) < HEADER_LEN + 64 || !self.slot_size.is_multiple_of(64) {
            return Err(format!(
                "slot size {}: a multiple of 64, at least {}",
                self.slot_size,
                (HEADER_LEN + 64).next_multiple_of(64)
            ));
        }
        let total = u64::from(self.workers) * u64::from(self.slots) * u64::from(self.slot_size);
        if total > u64::from(u32::MAX)
            || u64::from(self.workers) * u64::from(self.slots) > u64::from(MAX_INVOCATION_ID)
        {
            return Err(format!(
                "workers x slots x slot size = {total} bytes: at most 4 GiB"
            ));
        }
        Ok(())
    }
}

/// What one worker did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Invocations answered (any status).
    pub invocations: u64,
    /// Invocations whose function ran and returned `Ok`.
    pub ok: u64,
    /// Time spent busy-polling.
    pub hot_poll: Duration,
    /// Time spent running functions.
    pub exec: Duration,
    /// Times the worker went from hot to warm (hot timeout expired).
    pub warm_sleeps: u64,
    /// Completions that named no valid slot (dropped).
    pub dropped: u64,
}

impl WorkerStats {
    fn add(&mut self, o: &WorkerStats) {
        self.invocations += o.invocations;
        self.ok += o.ok;
        self.hot_poll += o.hot_poll;
        self.exec += o.exec;
        self.warm_sleeps += o.warm_sleeps;
        self.dropped += o.dropped;
    }
}

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The handshake failed.
    #[error("session handshake failed: {0}")]
    Handshake(String),
    /// The client was refused (wrong or missing session token); the reason.
    #[error("session refused: {0}")]
    Refused(String),
    /// A transport operation failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The session's workers could not all be given their memory or thread.
    #[error("cannot start the session's workers: {0}")]
    Workers(String),
    /// The peer closed the connection before its hello (a client that gave up, or a probe
    /// such as `run` checking whether a socket is in use); the transport's words.
    #[error("the connection closed before its hello: {0}")]
    NoHello(TransportError),
}

/// A failure of the welcome or the hello: the peer's hang-up there is [`SessionError::NoHello`].
fn before_hello(e: TransportError) -> SessionError {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
    match &e {
        TransportError::Io(io)
            if matches!(io.kind(), BrokenPipe | ConnectionReset | UnexpectedEof) =>
        {
            SessionError::NoHello(e)
        }
        _ => SessionError::Transport(e),
    }
}

/// Checks that `lib`'s function table fits a session's welcome (clients refuse control
/// messages over [`rfaas::transport::MAX_CONTROL_MESSAGE`]).
pub fn check_welcome(lib: &FunctionLibrary, cfg: &WorkerConfig) -> Result<(), String> {
    let len = serde_json::to_vec(&welcome(lib, cfg, Some("255.255.255.255:65535".into())))
        .map_err(|e| e.to_string())?
        .len();
    let max = rfaas::transport::MAX_CONTROL_MESSAGE;
    if len > max {
        return Err(format!(
            "{} functions: their names and signatures make a session welcome of {len} bytes, over the {max} a client accepts",
            lib.functions().len()
        ));
    }
    Ok(())
}

fn welcome(lib: &FunctionLibrary, cfg: &WorkerConfig, data: Option<String>) -> Welcome {
    Welcome {
        protocol: SESSION_PROTOCOL,
        abi_version: ABI_VERSION,
        functions: lib
            .functions()
            .iter()
            .map(|f| FunctionInfo {
                index: f.index,
                name: f.name.clone(),
                fingerprint: f.fingerprint,
            })
            .collect(),
        workers: cfg.workers,
        slots: cfg.slots,
        slot_size: cfg.slot_size,
        data,
    }
}

/// Checks the client's hello; returns the size of its result region.
fn check_hello(hello: &Hello, cfg: &WorkerConfig) -> Result<u64, SessionError> {
    if !token_matches(cfg.token.as_deref(), hello.token.as_deref()) {
        return Err(SessionError::Refused(
            if hello.token.is_none() {
                "the client presented no session token"
            } else {
                "the client presented a wrong session token"
            }
            .into(),
        ));
    }
    if hello.protocol != SESSION_PROTOCOL {
        return Err(SessionError::Handshake(format!(
            "client speaks protocol {}, this executor {SESSION_PROTOCOL}",
            hello.protocol
        )));
    }
    // The client's result region: one result area per slot, then (optionally) its buffer
    // arena for in-place outputs; offsets travel as u32.
    let areas = u64::from(cfg.workers) * u64::from(cfg.slots) * u64::from(cfg.slot_size);
    let result_len = hello.result_len;
    if result_len < areas || result_len > u64::from(u32::MAX) {
        return Err(SessionError::Handshake(format!(
            "result region of {result_len} bytes: between {areas} and 4 GiB"
        )));
    }
    Ok(result_len)
}

/// The client must have offered its result region, of the size its hello announced.
fn check_result_region(ep: &impl Endpoint, result_len: u64) -> Result<(), SessionError> {
    if ep.remote_len(RESULT_REGION) != Some(result_len as usize) {
        return Err(SessionError::Handshake(
            "client did not offer its result region".into(),
        ));
    }
    Ok(())
}

/// A region of one area per slot: offered to the client (inputs), or staging it never sees
/// (outputs sent with writes).
fn slots_region(
    key: u32,
    cfg: &WorkerConfig,
    offered: bool,
) -> Result<Arc<Region>, TransportError> {
    let len = cfg.slots as usize * cfg.slot_size as usize;
    Ok(Arc::new(if offered {
        Region::new(key, len)?
    } else {
        Region::staging(key, len)?
    }))
}

/// Serves one client on `stream` (shared memory) until it disconnects; returns the workers'
/// totals. `established` is called once the handshake is over (not if it fails).
pub fn serve_session(
    lib: &Arc<FunctionLibrary>,
    stream: UnixStream,
    cfg: &WorkerConfig,
    established: impl FnOnce(),
) -> Result<WorkerStats, SessionError> {
    // One deadline for welcome and hello however the peer paces its bytes: a client that
    // connects and stays silent, drips its bytes or reads none, loses its turn after the hello
    // timeout.
    let hello_by = Some(Instant::now() + HELLO_TIMEOUT);
    send_message_by(&stream, &welcome(lib, cfg, None), &[], hello_by).map_err(before_hello)?;
    let (hello, fds): (Hello, _) = recv_message_by(&stream, hello_by).map_err(before_hello)?;
    if !fds.is_empty() {
        return Err(SessionError::Handshake(
            "unexpected descriptors with hello".into(),
        ));
    }
    // And one for the verdict and all the workers' endpoints.
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let checked = check_hello(&hello, cfg);
    let verdict = verdict(&checked);
    send_message_by(&stream, &verdict, &[], Some(deadline))?;
    let result_len = checked?;
    let mut workers = Vec::new();
    for _ in 0..cfg.workers {
        let input = slots_region(INPUT_REGION, cfg, true)?;
        let cq = CompletionQueue::new()?;
        let ep = ShmEndpoint::connect_by(
            &stream,
            Side::Passive,
            vec![input.clone()],
            &cq,
            Some(deadline),
        )?;
        check_result_region(&ep, result_len)?;
        workers.push(Worker {
            ep,
            cq,
            input,
            output: None,
        });
    }
    stream
        .set_read_timeout(None)
        .and_then(|()| stream.set_write_timeout(None))
        .map_err(TransportError::Io)?;
    established();
    // Shutting the session's socket down ends the session for the client (its rings watch the
    // socket) and for our workers alike.
    let ours = stream.try_clone().map_err(TransportError::Io)?;
    let end = move || {
        let _ = ours.shutdown(std::net::Shutdown::Both);
    };
    run_workers(lib, &workers, cfg, &end)
}

/// Serves one client on `control` (TCP) until it disconnects. Data connections, one per
/// worker, arrive on a listener of their own whose address the welcome names. `established`
/// is called once the handshake is over (not if it fails).
pub fn serve_tcp_session(
    lib: &Arc<FunctionLibrary>,
    control: TcpStream,
    cfg: &WorkerConfig,
    established: impl FnOnce(),
) -> Result<WorkerStats, SessionError> {
    serve_stream_session(lib, control, cfg, established, |stream, regions| {
        let cq = TcpQueue::new();
        let ep = TcpEndpoint::connect(stream, regions, &cq)?;
        let watch = ep.stream()?;
        Ok((ep, cq, watch))
    })
}

/// Serves one client on `control` (TCP) over RDMA: as [`serve_tcp_session`], but each data
/// connection only carries the queue-pair handshake and then stays open as the liveness
/// signal; invocations travel as RDMA writes with immediates.
#[cfg(feature = "verbs")]
pub fn serve_verbs_session(
    lib: &Arc<FunctionLibrary>,
    control: TcpStream,
    cfg: &WorkerConfig,
    ctx: &Arc<rfaas::transport::verbs::ibv::Context>,
    verbs: &rfaas::transport::verbs::VerbsConfig,
    established: impl FnOnce(),
) -> Result<WorkerStats, SessionError> {
    use rfaas::transport::verbs::{VerbsEndpoint, VerbsQueue};
    serve_stream_session(lib, control, cfg, established, |stream, regions| {
        let cq = VerbsQueue::new(ctx, verbs, 1)?;
        let ep = VerbsEndpoint::connect(&stream, regions, &cq)?;
        Ok((ep, cq, stream))
    })
}

/// The TCP-controlled session: welcome and hello on `control`, then one data connection per
/// worker, each made an endpoint (with its queue and a stream to shut down when the session
/// ends) by `connect` from the worker's input and output regions.
fn serve_stream_session<E: Endpoint, Q: Queue>(
    lib: &Arc<FunctionLibrary>,
    mut control: TcpStream,
    cfg: &WorkerConfig,
    established: impl FnOnce(),
    mut connect: impl FnMut(
        TcpStream,
        Vec<Arc<Region>>,
    ) -> Result<(E, Arc<Q>, TcpStream), TransportError>,
) -> Result<WorkerStats, SessionError> {
    let ip = control.local_addr().map_err(TransportError::Io)?.ip();
    let data = TcpListener::bind((ip, 0)).map_err(TransportError::Io)?;
    let data_addr = data.local_addr().map_err(TransportError::Io)?;
    // One deadline for welcome and hello however the peer paces its bytes: a stranger that
    // drips them loses its turn as one that stays silent does.
    let hello: Hello = {
        let mut within = Deadlined::new(&control, HELLO_TIMEOUT);
        send_json(&mut within, &welcome(lib, cfg, Some(data_addr.to_string())))
            .map_err(before_hello)?;
        recv_json(&mut within).map_err(before_hello)?
    };
    control
        .set_read_timeout(Some(HELLO_TIMEOUT))
        .and_then(|()| control.set_write_timeout(None))
        .map_err(TransportError::Io)?;
    let checked = check_hello(&hello, cfg);
    send_json(&mut control, &verdict(&checked))?;
    let result_len = checked?;
    data.set_nonblocking(true).map_err(TransportError::Io)?;
    let mut workers = Vec::new();
    let mut watch = Vec::new();
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    for _ in 0..cfg.workers {
        let stream = accept_attached(&data, deadline, cfg)?;
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(TransportError::Io)?;
        let (input, output) = (
            slots_region(INPUT_REGION, cfg, true)?,
            slots_region(OUTPUT_REGION, cfg, false)?,
        );
        let (ep, cq, stream) = connect(stream, vec![input.clone(), output.clone()])?;
        check_result_region(&ep, result_len)?;
        stream.set_read_timeout(None).map_err(TransportError::Io)?;
        watch.push(stream);
        workers.push(Worker {
            ep,
            cq,
            input,
            output: Some(output),
        });
    }
    drop(data);
    control.set_read_timeout(None).map_err(TransportError::Io)?;
    established();
    // A client whose host vanishes closes nothing: the kernel's probes end the control
    // connection, and so the session, within about 25 s.
    if let Err(e) = crate::conn::hold_keepalive(&control) {
        tracing::warn!(error = %e, "no keepalive on the session's control connection");
    }
    // The control connection's end is the session's end: a reader that sees it close shuts the
    // data connections down, which ends the workers.
    let ours = control.try_clone().map_err(TransportError::Io)?;
    let watcher = std::thread::Builder::new()
        .name("rfaas-session".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            while matches!(std::io::Read::read(&mut control, &mut buf), Ok(n) if n > 0) {}
            for s in watch {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        })
        .map_err(|e| SessionError::Workers(format!("no thread to watch the session: {e}")))?;
    // Shutting the control connection down ends the session: the watcher then shuts the data
    // connections, which the client and our workers both see.
    let end = || {
        let _ = ours.shutdown(std::net::Shutdown::Both);
    };
    let stats = run_workers(lib, &workers, cfg, &end);
    drop(workers);
    if stats.is_err() {
        // The session ends here, not when the client hangs up.
        end();
    }
    let _ = watcher.join();
    stats
}

/// How long a client may take to complete a handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to answer the welcome with its hello: a client answers at once;
/// a stranger that connects and stays silent, or drips its bytes, keeps a `--once` executor
/// from its lease holder (whose own handshake timeout is longer) for at most this.
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a new data connection may take to present its [`Attach`]: the client sends it at
/// once; a stranger that connects and stays silent, or drips its bytes, delays the session by
/// at most this.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(2);

/// The answer to a hello that was checked: accepted, or refused with the reason.
fn verdict(checked: &Result<u64, SessionError>) -> Verdict {
    match checked {
        Ok(_) => Verdict::Accepted,
        Err(SessionError::Refused(reason) | SessionError::Handshake(reason)) => {
            Verdict::Refused(reason.clone())
        }
        Err(e) => Verdict::Refused(e.to_string()),
    }
}

/// The session's next data connection: accepted by `deadline` and presenting the session's
/// token in its [`Attach`]. Connections that do not (strangers who found the port) are closed
/// and the wait goes on.
fn accept_attached(
    listener: &TcpListener,
    deadline: Instant,
    cfg: &WorkerConfig,
) -> Result<TcpStream, SessionError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let stream = accept_within(listener, left)?;
        // Within one deadline, however the peer paces its bytes.
        let within = ATTACH_TIMEOUT.min(left.max(Duration::from_millis(1)));
        let attached = recv_json::<Attach>(&mut Deadlined::new(&stream, within));
        match attached {
            Ok(a) if token_matches(cfg.token.as_deref(), a.token.as_deref()) => return Ok(stream),
            Ok(_) => tracing::warn!(
                peer = ?stream.peer_addr().ok(),
                "closed a data connection with a wrong or missing session token"
            ),
            Err(e) => tracing::warn!(
                peer = ?stream.peer_addr().ok(),
                error = %e,
                "closed a data connection that did not attach"
            ),
        }
    }
}

fn accept_within(listener: &TcpListener, timeout: Duration) -> Result<TcpStream, SessionError> {
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(TransportError::Io)?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(SessionError::Handshake(
                        "client did not open its data connections".into(),
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(TransportError::Io(e).into()),
        }
    }
}

/// One worker's endpoint, completion queue and regions.
struct Worker<E, Q> {
    ep: E,
    cq: Arc<Q>,
    input: Arc<Region>,
    /// Output staging, for fabrics without a window into the client's memory.
    output: Option<Arc<Region>>,
}

/// Runs the session's workers until they end. `end` ends the whole session (visibly to the
/// client): a worker that cannot go on serving calls it, so that its client's calls fail
/// (`ExecutorGone`) instead of waiting for a worker that is gone.
fn run_workers<E: Endpoint, Q: Queue>(
    lib: &Arc<FunctionLibrary>,
    workers: &[Worker<E, Q>],
    cfg: &WorkerConfig,
    end: &(dyn Fn() + Sync),
) -> Result<WorkerStats, SessionError> {
    // Every worker's memory and thread first, so that a session that cannot have all of them
    // (a lease short of memory, a thread limit) ends at once, visibly to its client (the
    // connections close: `ExecutorGone`), instead of aborting in a worker or serving short of
    // a worker whose calls would never be answered.
    let mut scratches = Vec::with_capacity(workers.len());
    for w in workers {
        scratches.push(scratch_for(cfg, w.output.is_none())?);
    }
    // CPUs no other session of this process uses, while there are any; given back when the
    // session ends.
    let pinning = cfg.cpus.take(workers.len());
    let gate = Gate::default();
    let mut total = WorkerStats::default();
    let short = std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(workers.len());
        let mut short = None;
        for (i, (w, scratch)) in workers.iter().zip(scratches).enumerate() {
            let cpu = pinning.cpu(i);
            let gate = &gate;
            // Named, so that `top -H`, `ps -L` and a debugger say which worker a thread is.
            // (A function's panic message still says `<unnamed>`: the library's own copy of
            // std does not know the names the executor's std gave its threads.)
            let spawned = std::thread::Builder::new()
                .name(format!("rfaas-worker-{i}"))
                .spawn_scoped(s, move || {
                    if !gate.wait() {
                        return WorkerStats::default();
                    }
                    let published = &PROGRESS.workers[i % MAX_WORKERS];
                    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_worker(
                            lib,
                            &w.ep,
                            &*w.cq,
                            (&w.input, w.output.as_deref(), scratch),
                            cfg,
                            cpu,
                            published,
                        )
                    }));
                    // A bug of ours that panics the worker ends the session too, then goes on
                    // as the panic it is.
                    let (stats, failed) = served.unwrap_or_else(|panic| {
                        end();
                        std::panic::resume_unwind(panic)
                    });
                    if failed {
                        tracing::warn!(worker = i, "a worker cannot go on: ending the session");
                        end();
                    }
                    stats
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    short = Some(format!("no thread for worker {i}: {e}"));
                    break;
                }
            }
        }
        gate.open(short.is_none());
        for (i, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(stats) => {
                    if short.is_none() {
                        tracing::info!(
                            worker = i,
                            invocations = stats.invocations,
                            hot_poll_us = stats.hot_poll.as_micros() as u64,
                            exec_us = stats.exec.as_micros() as u64,
                            warm_sleeps = stats.warm_sleeps,
                            "worker finished"
                        );
                    }
                    total.add(&stats);
                }
                Err(_) => tracing::error!(worker = i, "worker thread panicked"),
            }
        }
        short
    });
    match short {
        Some(why) => Err(SessionError::Workers(why)),
        None => Ok(total),
    }
}

/// A worker's scratch (see [`handle`]): where small results are run before they travel
/// inline, on fabrics with a window (`windowed`); 8-byte aligned, a slot long, allocated (and
/// zeroed lazily by the kernel) once per worker of a session, so it only ever holds this
/// client's bytes. Empty elsewhere.
fn scratch_for(cfg: &WorkerConfig, windowed: bool) -> Result<Vec<u64>, SessionError> {
    let words = (cfg.slot_size as usize).div_ceil(8);
    if !windowed || words == 0 {
        return Ok(Vec::new());
    }
    let short = || {
        SessionError::Workers(format!(
            "no memory for a worker's {} bytes of scratch (the lease's memory limit?)",
            cfg.slot_size
        ))
    };
    let layout = std::alloc::Layout::array::<u64>(words).map_err(|_| short())?;
    // Zeroed by the allocator (fresh pages: by the kernel, lazily), not written here: a slot
    // of 16 MiB costs nothing until results are run in it.
    // SAFETY: `layout` has a non-zero size (`words > 0`).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<u64>();
    if ptr.is_null() {
        return Err(short());
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of `words` u64s (so a
    // capacity of `words`), and all `words` of them are initialized (zero is a valid u64).
    Ok(unsafe { Vec::from_raw_parts(ptr, words, words) })
}

/// Holds the session's workers until all of them exist: then lets them serve, or (one could
/// not be started) return at once.
#[derive(Default)]
struct Gate {
    verdict: Mutex<Option<bool>>,
    decided: Condvar,
}

impl Gate {
    /// Whether to serve, once decided.
    fn wait(&self) -> bool {
        let mut v = self.verdict.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(go) = *v {
                return go;
            }
            v = self.decided.wait(v).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn open(&self, go: bool) {
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(go);
        self.decided.notify_all();
    }
}

/// Workers whose progress [`PROGRESS`] publishes (the most a session has).
pub const MAX_WORKERS: usize = 256;

/// One worker's counts so far, on a cache line of its own (only that worker writes it).
#[repr(align(64))]
#[derive(Debug, Default)]
pub struct WorkerProgress {
    invocations: AtomicU64,
    ok: AtomicU64,
}

/// The counts of this process's workers as they go, published for a reporter thread (the
/// `worker` subcommand's `--stats-fd`): the final accounting is printed when the session
/// ends, and these let a manager count the invocations of an executor that crashed. Worker `i`
/// of every session writes slot `i`: meaningful for processes serving one session at a time.
pub struct Progress {
    workers: [WorkerProgress; MAX_WORKERS],
}

impl Progress {
    /// `(invocations, ok)` summed over the workers.
    pub fn totals(&self) -> (u64, u64) {
        self.workers.iter().fold((0, 0), |(n, ok), w| {
            (
                n + w.invocations.load(Ordering::Relaxed),
                ok + w.ok.load(Ordering::Relaxed),
            )
        })
    }
}

/// The process's worker progress (see [`Progress`]).
pub static PROGRESS: Progress = Progress {
    workers: [const {
        WorkerProgress {
            invocations: AtomicU64::new(0),
            ok: AtomicU64::new(0),
        }
    }; MAX_WORKERS],
};

/// Idle polls between checks of the clock and of the peer's liveness.
const POLLS_PER_CHECK: u32 = 256;
/// While always hot, yield the core after this much idle polling.
const YIELD_EVERY: Duration = Duration::from_millis(1);

fn run_worker<E: Endpoint, Q: Queue + ?Sized>(
    lib: &FunctionLibrary,
    ep: &E,
    cq: &Q,
    (input, output, mut scratch): (&Region, Option<&Region>, Vec<u64>),
    cfg: &WorkerConfig,
    cpu: Option<usize>,
    published: &WorkerProgress,
) -> (WorkerStats, bool) {
    if let Some(cpu) = cpu
        && let Err(e) = rfaas::sys::pin_to_cpu(cpu)
    {
        tracing::warn!(cpu, error = %e, "cannot pin worker");
    }
    let mut stats = WorkerStats::default();
    let mut hot = cfg.hot_timeout != HotTimeout::Never;
    // Accounting in cheap ticks: one read after the poll (on the critical path) and one after
    // the answer; `Instant` only off the critical path.
    let clock = TickClock::new();
    let (mut hot_ticks, mut exec_ticks) = (0u64, 0u64);
    let mut now = ticks();
    // When the last invocation ended: read lazily, at the first clock check after it (a clock
    // read costs ~35 ns here; the hot timeout is that much later, a few µs).
    let mut last_work: Option<Instant> = Some(Instant::now());
    // Whether the worker stops for a failure of its own (not the client's leaving).
    let mut failed = false;
    'serve: loop {
        let completion = if hot {
            let started = now;
            let polled = hot_poll(cq, cfg, &mut last_work);
            // The hot span counts however it ended: a client leaving an always-hot worker
            // ends the span that holds all of the lease's idle time.
            now = ticks();
            hot_ticks += now.wrapping_sub(started);
            match polled {
                Polled::Got(c) => Some(c),
                Polled::Cooled => {
                    hot = false;
                    stats.warm_sleeps += 1;
                    None
                }
                Polled::End(gone) => {
                    failed = !gone;
                    break 'serve;
                }
            }
        } else {
            let got = cq.wait(LIVENESS_TICK);
            now = ticks();
            match got {
                Ok(c) => c,
                Err(TransportError::PeerGone { .. }) => break 'serve,
                Err(e) => {
                    tracing::warn!(error = %e, "completion queue error");
                    failed = true;
                    break 'serve;
                }
            }
        };
        let Some(c) = completion else { continue };
        match handle(lib, ep, (input, output), &mut scratch, cfg, c) {
            Ok(Some(status)) => {
                stats.invocations += 1;
                stats.ok += u64::from(status == Status::Ok);
                // Plain stores to this worker's own line: what survives a crash.
                published
                    .invocations
                    .store(stats.invocations, Ordering::Relaxed);
                published.ok.store(stats.ok, Ordering::Relaxed);
            }
            Ok(None) => stats.dropped += 1,
            Err(e) => {
                // The function may have run: its time counts.
                exec_ticks += ticks().wrapping_sub(now);
                if !matches!(e, TransportError::PeerGone { .. }) {
                    tracing::warn!(error = %e, "cannot answer the client");
                    failed = true;
                }
                break 'serve;
            }
        }
        let done = ticks();
        exec_ticks += done.wrapping_sub(now);
        now = done;
        last_work = None;
        hot = cfg.hot_timeout != HotTimeout::Never;
    }
    stats.hot_poll = clock.duration(hot_ticks);
    stats.exec = clock.duration(exec_ticks);
    (stats, failed)
}

/// How a hot poll ended.
enum Polled {
    Got(Completion),
    /// The hot timeout passed without work: go warm.
    Cooled,
    /// The client left (`true`), or the queue failed (`false`): the session is over.
    End(bool),
}

/// Busy-polls `cq` until a completion comes, the hot timeout passes since `last_work` (read
/// lazily: `None` means "just now", filled at the first clock check), or the session ends.
/// Spinning is bounded: the core is yielded every [`YIELD_EVERY`], and the peer's liveness
/// checked then.
#[inline(always)]
fn hot_poll<Q: Queue + ?Sized>(
    cq: &Q,
    cfg: &WorkerConfig,
    last_work: &mut Option<Instant>,
) -> Polled {
    let mut last_yield: Option<Instant> = *last_work;
    let mut polls = 0u32;
    let ended = |e: TransportError| {
        let gone = matches!(e, TransportError::PeerGone { .. });
        if !gone {
            tracing::warn!(error = %e, "completion queue error");
        }
        Polled::End(gone)
    };
    loop {
        match cq.poll() {
            Ok(Some(c)) => return Polled::Got(c),
            Ok(None) => {}
            Err(e) => return ended(e),
        }
        polls += 1;
        if polls.is_multiple_of(POLLS_PER_CHECK) {
            let now = Instant::now();
            let since = *last_work.get_or_insert(now);
            let yielded = *last_yield.get_or_insert(now);
            if let HotTimeout::For(t) = cfg.hot_timeout
                && now.duration_since(since) >= t
            {
                return Polled::Cooled;
            }
            if now.duration_since(yielded) >= YIELD_EVERY {
                // Bounded spinning: let other threads on this core run, and notice a client
                // that went away.
                std::thread::yield_now();
                last_yield = Some(now);
                match cq.wait(Duration::ZERO) {
                    Ok(Some(c)) => return Polled::Got(c),
                    Ok(None) => {}
                    Err(e) => return ended(e),
                }
            }
        }
        std::hint::spin_loop();
    }
}

/// A cheap monotonic counter: the TSC on x86-64 (about half the cost of `Instant::now` on our
/// VMs), nanoseconds elsewhere.
fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` has no preconditions; it only reads the time-stamp counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Converts ticks to time with the ratio measured over the clock's lifetime.
struct TickClock {
    instant: Instant,
    ticks: u64,
}

impl TickClock {
    fn new() -> Self {
        TickClock {
            instant: Instant::now(),
            ticks: ticks(),
        }
    }

    fn duration(&self, t: u64) -> Duration {
        let (ns, elapsed) = (
            self.instant.elapsed().as_nanos() as f64,
            ticks().wrapping_sub(self.ticks) as f64,
        );
        if elapsed <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((t as f64 * ns / elapsed) as u64)
    }
}

/// Answers one invocation. `Ok(None)`: the completion named no slot, nothing to answer.
///
/// `scratch` (8-byte aligned, empty when `output` stages results) is where a result the
/// client flagged small is produced before it travels inline.
fn handle<E: Endpoint>(
    lib: &FunctionLibrary,
    ep: &E,
    (input, output): (&Region, Option<&Region>),
    scratch: &mut [u64],
    cfg: &WorkerConfig,
    c: Completion,
) -> Result<Option<Status>, TransportError> {
    // The answer goes out on this endpoint: let the fabric get ready for it while we check the
    // request and run the function (on shared memory, the line the client polls is taken for
    // writing now, not when the answer is published).
    ep.expect_send();
    let slot_size = cfg.slot_size as usize;
    if c.imm >= cfg.slots || (c.len as usize) < HEADER_LEN || c.len as usize > slot_size {
        tracing::debug!(
            imm = c.imm,
            len = c.len,
            "dropping a completion that names no valid slot"
        );
        return Ok(None);
    }
    let slot_off = c.imm as usize * slot_size;
    let mut raw = [0u8; HEADER_LEN];
    input.read(slot_off, &mut raw)?;
    let header = InvocationHeader::read_from_bytes(&raw).expect("exactly HEADER_LEN bytes");
    let id = header.id.get();
    if id > MAX_INVOCATION_ID {
        return Ok(None);
    }
    let (off, cap) = (
        header.result_offset.get() as usize,
        header.result_cap.get() as usize,
    );
    // Where the output goes: straight into the client's result area (shared memory), or into
    // our staging slot, sent with one write afterwards (TCP; at most a slot).
    // A result the client expects small is produced in our scratch and sent inline (one cache
    // line for the client to read, not two), if the fabric has inline writes and it fits.
    let inline = header.flags.get() & FLAG_SMALL_RESULT != 0
        && output.is_none()
        && ep.max_inline() > 0
        && cap <= size_of_val(scratch);
    let window = ep.window(RESULT_REGION, off, cap);
    let target = match window {
        Ok(Some(_)) if inline => Some(scratch.as_mut_ptr().cast::<u8>()),
        Ok(Some(window)) => Some(window),
        Ok(None) if cap <= slot_size => output.map(|o| o.as_ptr().wrapping_add(slot_off)),
        _ => None,
    };
    let Some(target) = target else {
        // Nowhere to write a result: answer with the status alone.
        send(
            ep,
            output.is_some(),
            slot_off,
            off,
            response_imm(id, Status::BadCall),
            0,
        )?;
        return Ok(Some(Status::BadCall));
    };
    let input_len = header.input_len.get() as usize;
    // Output ranges the client wants in its buffers (`FLAG_PLACED`), sent there by writes.
    let mut placed = None;
    let (status, len) = if header.flags.get() & !KNOWN_FLAGS != 0 {
        (Status::BadCall, 0)
    } else if input_len > slot_size - HEADER_LEN {
        (Status::InputTooLarge, 0)
    } else if HEADER_LEN + input_len > c.len as usize {
        (Status::InputTooShort, 0)
    } else {
        // The client may scribble on its own slot while we read it; every byte pattern is
        // acceptable input and the trampoline validates it.
        // SAFETY: `slot_off + HEADER_LEN + input_len <= (slot + 1) * slot_size <= region length`
        // (slot < slots, input_len <= slot_size - HEADER_LEN: checked above): our live region.
        let input = unsafe {
            std::slice::from_raw_parts(input.as_ptr().add(slot_off + HEADER_LEN), input_len)
        };
        let args = if header.flags.get() & FLAG_PLACED == 0 {
            Ok(input)
        } else {
            placed_outputs(ep, input, output.is_some(), off, cap).map(|(args, list)| {
                placed = Some(list);
                args
            })
        };
        match args {
            Err(why) => {
                tracing::debug!(id, why, "refusing an invocation's placed outputs");
                (Status::BadCall, 0)
            }
            Ok(args) => {
                // `target` is the client's result area (bounds checked by `ep.window`, another
                // memory file than our input region), our own staging slot
                // (`cap <= slot_size`) or our scratch (`cap` bytes of it, checked above; not
                // shared memory).
                // SAFETY: `cap` writable bytes that nothing else touches while this invocation
                // is in flight, not overlapping `args`.
                let out = unsafe { std::slice::from_raw_parts_mut(target, cap) };
                let o = lib.call(header.function.get(), args, out);
                (o.status, o.output_len)
            }
        }
    };
    if status == Status::Ok
        && let Some(list) = &placed
    {
        return send_placed(ep, slot_off, off, id, len, list);
    }
    if inline && let Ok(Some(window)) = window {
        // SAFETY: the function wrote `len <= cap` bytes of `scratch` (the trampoline contract,
        // checked by `call`); `cap <= size_of_val(scratch)`. Our memory, nothing else holds it.
        let bytes = unsafe { std::slice::from_raw_parts(scratch.as_ptr().cast::<u8>(), len) };
        let imm = response_imm(id, status);
        if len <= ep.max_inline() {
            // Inside the completion entry (the fabric places it in the result area).
            until_room(|| ep.write_inline(bytes, RESULT_REGION, off, imm))?;
        } else {
            // A longer output (an error message): into the result area, as without the flag.
            // SAFETY: `window` holds `cap >= len` bytes of the client's result area (bounds
            // checked by `ep.window`), another memory file than `scratch`.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), window, len) };
            until_room(|| ep.signal(imm, len))?;
        }
        return Ok(Some(status));
    }
    send(
        ep,
        output.is_some(),
        slot_off,
        off,
        response_imm(id, status),
        len,
    )?;
    Ok(Some(status))
}

/// Splits a `FLAG_PLACED` input into the argument layout and its list of placed outputs, and
/// checks the list: only where outputs are staged (`staged`; a worker with a window writes
/// the client's buffers directly and needs none), every range inside the `cap` bytes of
/// staging, every destination inside the client's result region.
fn placed_outputs<'i, E: Endpoint>(
    ep: &E,
    input: &'i [u8],
    staged: bool,
    result_off: usize,
    cap: usize,
) -> Result<(&'i [u8], PlacedOutputs), &'static str> {
    if !staged {
        return Err("placed outputs on a fabric that writes outputs in place");
    }
    let (args, list) = PlacedOutputs::split(input)?;
    let region = ep.remote_len(RESULT_REGION).unwrap_or(0);
    for r in list.ranges() {
        let (at, len, dest) = (
            r.at.get() as usize,
            r.len.get() as usize,
            r.dest.get() as usize,
        );
        if at + len > cap {
            return Err("placed output outside the result capacity");
        }
        if result_off + dest + len > region {
            return Err("placed output outside the client's result region");
        }
    }
    Ok((args, list))
}

/// Answers a successful `FLAG_PLACED` invocation whose `len` bytes of output are staged: each
/// listed range goes with a plain write to the client's buffer, then the output before the
/// first of them (the return value) with the completion, to the result area. The ranges were
/// checked against the staging and the client's region before the call; an output that does
/// not cover them all (a client whose list does not match the call) is answered `BadCall`.
fn send_placed<E: Endpoint>(
    ep: &E,
    slot_off: usize,
    result_off: usize,
    id: u32,
    len: usize,
    list: &PlacedOutputs,
) -> Result<Option<Status>, TransportError> {
    let ranges = list.ranges();
    let end = |r: &PlacedOutput| r.at.get() as usize + r.len.get() as usize;
    // `split` keeps the ranges in order, so the last is the one to check; all are checked
    // anyway, as cheap as it is, so that nothing here rests on the order.
    if ranges.iter().any(|r| end(r) > len) {
        send(
            ep,
            true,
            slot_off,
            result_off,
            response_imm(id, Status::BadCall),
            0,
        )?;
        return Ok(Some(Status::BadCall));
    }
    let mut writes = [(0, 0, 0); PlacedOutputs::MAX];
    for (w, r) in writes.iter_mut().zip(ranges) {
        let (at, n, dest) = (r.at.get() as usize, r.len.get() as usize, r.dest.get());
        *w = (slot_off + at, n, result_off + dest as usize);
    }
    // The return value, before the first placed range (a status without output: at 0).
    let head = ranges.first().map_or(len, |r| r.at.get() as usize);
    // Tried again whole if there was no room: writes that went out before write the same bytes
    // to the same places again, and only the last one, the completion, is seen.
    until_room(|| {
        ep.write_many_with_imm(
            OUTPUT_REGION,
            &writes[..ranges.len()],
            slot_off,
            head,
            RESULT_REGION,
            if head == 0 { 0 } else { result_off },
            response_imm(id, Status::Ok),
        )
    })?;
    Ok(Some(Status::Ok))
}

/// Delivers a response: a signal for output already in place, or a write from staging.
fn send<E: Endpoint>(
    ep: &E,
    staged: bool,
    slot_off: usize,
    result_off: usize,
    imm: u32,
    len: usize,
) -> Result<(), TransportError> {
    until_room(|| {
        if staged {
            // A status without output carries no bytes; offset 0 is always a valid target.
            let result_off = if len == 0 { 0 } else { result_off };
            ep.write_with_imm(OUTPUT_REGION, slot_off, len, RESULT_REGION, result_off, imm)
        } else {
            ep.signal(imm, len)
        }
    })
}

/// How long a worker keeps trying to answer a client whose completion queue has no room.
const ANSWER_PATIENCE: Duration = Duration::from_secs(60);

/// Runs `send` (an answer) again while it finds no room at the peer
/// ([`TransportError::QueueFull`]: nothing of it went out), for up to [`ANSWER_PATIENCE`]: a
/// client that collects its answers late (over RDMA, more answers than its receive queue
/// holds) is waited for, not dropped. A fabric that waits for room itself (RDMA, up to its
/// send patience, ended at once by a hang-up) makes each try long; one that does not is tried
/// again every millisecond.
fn until_room<T>(mut send: impl FnMut() -> Result<T, TransportError>) -> Result<T, TransportError> {
    let mut since = None;
    loop {
        match send() {
            Err(TransportError::QueueFull) => {
                let since = *since.get_or_insert_with(Instant::now);
                if since.elapsed() >= ANSWER_PATIENCE {
                    return Err(TransportError::QueueFull);
                }
                tracing::debug!("no room for an answer at the client yet");
                std::thread::sleep(Duration::from_millis(1));
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests;
