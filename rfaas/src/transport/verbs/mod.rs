//! RDMA fabric (cargo feature `verbs`): RC queue pairs, one-sided `RDMA_WRITE_WITH_IMM`
//! (inline below the device limit) into the peer's registered regions, a shared receive queue
//! per completion queue for the immediates, and a completion channel for warm waits.
//!
//! Connecting exchanges queue-pair addresses and region descriptors (address, length, rkey)
//! over a TCP control connection, which then stays open as the liveness signal: RC queue pairs
//! only notice a dead peer when they send, so a hung-up control connection is what reports
//! [`TransportError::PeerGone`] to a receiver.
//!
//! Writes are checked against the regions both sides offered before anything is posted. The
//! device reads non-inline source bytes after `write_with_imm` returns: they must stay
//! unchanged until the peer has seen the completion (the invocation protocol guarantees it:
//! a slot is reused only after its answer arrived).

pub mod ibv;

use super::{Completion, LIVENESS_TICK, Region, TransportError, check_range, local_range};
use ibv::{Context, Cq, MemoryRegion, QpAddress, QueuePair, RdmaWrite, VerbsError, Wc};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Most regions one side of an endpoint may offer.
pub const MAX_REGIONS: usize = 8;
/// Largest region a peer may describe (16 GiB).
pub const MAX_REGION: u64 = 1 << 34;
/// One send in this many asks for a completion (the others are retired with it).
const SIGNAL_EVERY: u32 = 16;
/// How long a writer retries a full send queue before reporting `QueueFull`.
const FULL_RETRY: Duration = Duration::from_millis(2);
/// How long dropping an endpoint waits for its writes to complete.
const DRAIN: Duration = Duration::from_secs(1);
/// Receives are re-posted in batches of this many.
const REPOST_BATCH: u32 = 16;

/// Which device and port to use, and how deep the queues are (rFaaS keeps the same facts in
/// its device database). Every field has a default; `from_env` reads overrides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerbsConfig {
    /// Device name as `ibv_devices` lists it (default: the first device).
    pub device: Option<String>,
    /// Port number (default 1).
    pub port: u8,
    /// GID table index (default 0: on RoCE the link-local IPv6 GID; pick a RoCE v2 entry of
    /// `show_gids` to route across subnets).
    pub gid_index: u8,
    /// Inline data to ask for, bytes (default 128; the device may grant less). Writes this
    /// small are copied into the work request: lowest latency, no DMA read.
    pub max_inline: u32,
    /// Send work requests per queue pair (default 128).
    pub send_depth: u32,
    /// Receives posted on a completion queue's shared receive queue (default 512).
    pub recv_depth: u32,
}

impl Default for VerbsConfig {
    fn default() -> Self {
        VerbsConfig {
            device: None,
            port: 1,
            gid_index: 0,
            max_inline: 128,
            send_depth: 128,
            recv_depth: 512,
        }
    }
}

impl VerbsConfig {
    /// The defaults with `RFAAS_VERBS_DEVICE`, `RFAAS_VERBS_PORT`, `RFAAS_VERBS_GID_INDEX` and
    /// `RFAAS_VERBS_MAX_INLINE` applied (unparsable numbers are an error).
    pub fn from_env() -> Result<VerbsConfig, TransportError> {
        let mut c = VerbsConfig::default();
        if let Ok(d) = std::env::var("RFAAS_VERBS_DEVICE") {
            c.device = Some(d);
        }
        fn num<T: std::str::FromStr>(name: &str, into: &mut T) -> Result<(), TransportError> {
            if let Ok(v) = std::env::var(name) {
                *into = v
                    .parse()
                    .map_err(|_| TransportError::Protocol(format!("{name}={v:?}: not a number")))?;
            }
            Ok(())
        }
        num("RFAAS_VERBS_PORT", &mut c.port)?;
        num("RFAAS_VERBS_GID_INDEX", &mut c.gid_index)?;
        num("RFAAS_VERBS_MAX_INLINE", &mut c.max_inline)?;
        Ok(c)
    }

    /// Opens the configured device.
    pub fn open(&self) -> Result<Arc<Context>, TransportError> {
        Ok(Context::open(
            self.device.as_deref(),
            self.port,
            self.gid_index,
        )?)
    }
}

impl From<VerbsError> for TransportError {
    fn from(e: VerbsError) -> Self {
        match e {
            VerbsError::Unavailable(why) => TransportError::Unavailable(why),
            e => TransportError::Rdma(e.to_string()),
        }
    }
}

/// Whether this host can do RDMA: `Err` says why not (no kernel support, no device).
pub fn available() -> Result<Vec<String>, String> {
    ibv::device_names().map_err(|e| e.to_string())
}

/// What one side tells the other when connecting.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hello {
    qp: QpAddress,
    regions: Vec<RegionDesc>,
}

/// A region the peer may write.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionDesc {
    key: u32,
    addr: u64,
    len: u64,
    rkey: u32,
}

/// An endpoint attached to a queue.
struct Attached {
    qp_num: u32,
    /// The endpoint's queue pair while the endpoint lives: moved to the error state when its
    /// peer is reported gone.
    qp: std::sync::Weak<QueuePair>,
    /// The highest send work-request id known complete (every earlier one is too).
    retired: AtomicU64,
    liveness: TcpStream,
    /// The queue pair reported a failed work request.
    failed: AtomicBool,
    /// The hang-up was reported (once).
    gone_reported: AtomicBool,
}

impl Attached {
    /// Before a peer is reported gone: its queue pair (if the endpoint still lives) goes to
    /// the error state, so nothing the peer posted earlier, or posts later if it is alive
    /// after all, lands in our regions once the receiver acts on the report (a lease frees
    /// and hands out again the buffers the peer could write).
    fn shut(&self) {
        if let Some(qp) = self.qp.upgrade()
            && let Err(e) = qp.fail()
        {
            tracing::warn!(
                qp = self.qp_num,
                "could not stop a gone peer's queue pair: {e}"
            );
        }
    }
}

/// A completion queue for any number of endpoints (up to the number given at creation):
/// polled without blocking, or waited on through its completion channel.
pub struct VerbsQueue {
    cq: Arc<Cq>,
    ctx: Arc<Context>,
    config: VerbsConfig,
    endpoints: Box<[OnceLock<Attached>]>,
    count: AtomicUsize,
    attach: Mutex<()>,
    /// Receives consumed since the last re-post.
    consumed: AtomicU32,
    /// Held while polling the device, so completions leave in the order they arrived; holds
    /// those a sender took off the device to make room (see `reap`), delivered first.
    device: Mutex<std::collections::VecDeque<Completion>>,
    /// Interrupt: a generation counter and an eventfd that wakes sleepers.
    generation: AtomicU64,
    wake: OwnedFd,
}

impl std::fmt::Debug for VerbsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerbsQueue")
            .field("device", &self.ctx.name())
            .field("endpoints", &self.count.load(Ordering::Relaxed))
            .finish()
    }
}

impl VerbsQueue {
    /// A queue on `ctx` for up to `max_endpoints` endpoints.
    pub fn new(
        ctx: &Arc<Context>,
        config: &VerbsConfig,
        max_endpoints: usize,
    ) -> Result<Arc<VerbsQueue>, TransportError> {
        let (max_wr, max_cqe, max_srq) = ctx.limits();
        let recv_depth = config
            .recv_depth
            .clamp(REPOST_BATCH, max_srq.max(REPOST_BATCH));
        let mut config = config.clone();
        config.recv_depth = recv_depth;
        config.send_depth = config
            .send_depth
            .clamp(SIGNAL_EVERY * 2, max_wr.max(SIGNAL_EVERY * 2));
        // Every receive can complete before anyone polls; each queue pair adds at most one
        // signalled send completion per SIGNAL_EVERY sends in flight, plus one.
        let per_qp = config.send_depth / SIGNAL_EVERY + 1;
        let cqe = recv_depth as usize + max_endpoints * per_qp as usize + 16;
        if cqe > max_cqe as usize {
            return Err(TransportError::Rdma(format!(
                "a queue for {max_endpoints} endpoints needs {cqe} completion entries; device {} allows {max_cqe}",
                ctx.name()
            )));
        }
        let cq = Arc::new(Cq::new(ctx, cqe as u32, recv_depth)?);
        // SAFETY: eventfd returns a new descriptor (or -1, checked) that we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Arc::new(VerbsQueue {
            cq,
            ctx: ctx.clone(),
            config,
            endpoints: (0..max_endpoints).map(|_| OnceLock::new()).collect(),
            count: AtomicUsize::new(0),
            attach: Mutex::new(()),
            consumed: AtomicU32::new(0),
            device: Mutex::new(std::collections::VecDeque::new()),
            generation: AtomicU64::new(0),
            wake,
        }))
    }

    /// The device context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    fn attach(&self, qp: &Arc<QueuePair>, liveness: TcpStream) -> Result<u32, TransportError> {
        let _guard = self.attach.lock().unwrap_or_else(|e| e.into_inner());
        let i = self.count.load(Ordering::Acquire);
        let slot = self.endpoints.get(i).ok_or_else(|| {
            TransportError::Rdma(format!(
                "completion queue full: it was made for {} endpoints",
                self.endpoints.len()
            ))
        })?;
        let _ = slot.set(Attached {
            qp_num: qp.qp_num(),
            qp: Arc::downgrade(qp),
            retired: AtomicU64::new(0),
            liveness,
            failed: AtomicBool::new(false),
            gone_reported: AtomicBool::new(false),
        });
        self.count.store(i + 1, Ordering::Release);
        Ok(i as u32)
    }

    fn endpoint_of(&self, qp_num: u32) -> Option<(u32, &Attached)> {
        let n = self.count.load(Ordering::Acquire);
        self.endpoints[..n].iter().enumerate().find_map(|(i, a)| {
            a.get()
                .filter(|a| a.qp_num == qp_num)
                .map(|a| (i as u32, a))
        })
    }

    /// Takes the next completion, if any, without blocking. One thread polls at a time; a
    /// concurrent poll returns nothing.
    pub fn poll(&self) -> Result<Option<Completion>, TransportError> {
        let mut backlog = match self.device.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        if let Some(c) = backlog.pop_front() {
            return Ok(Some(c));
        }
        self.next_from_device()
    }

    /// The next write-with-immediate off the device (send completions are recorded on the
    /// way), or a failed queue pair's `PeerGone` (once).
    fn next_from_device(&self) -> Result<Option<Completion>, TransportError> {
        let mut wc = [Wc::Sent {
            qp_num: 0,
            wr_id: 0,
        }];
        loop {
            if self.cq.poll(&mut wc)? == 0 {
                return Ok(None);
            }
            match wc[0] {
                Wc::Sent { qp_num, wr_id } => {
                    if let Some((_, a)) = self.endpoint_of(qp_num) {
                        a.retired.fetch_max(wr_id, Ordering::AcqRel);
                    }
                }
                Wc::Received { qp_num, imm, len } => {
                    let n = self.consumed.fetch_add(1, Ordering::AcqRel) + 1;
                    if n.is_multiple_of(REPOST_BATCH) {
                        self.cq.post_receives(REPOST_BATCH)?;
                    }
                    // A queue pair we no longer know: nothing to deliver.
                    if let Some((endpoint, _)) = self.endpoint_of(qp_num) {
                        return Ok(Some(Completion { endpoint, imm, len }));
                    }
                }
                Wc::Failed { qp_num, status } => {
                    if let Some((endpoint, a)) = self.endpoint_of(qp_num) {
                        tracing::debug!(endpoint, status, "verbs work request failed");
                        a.failed.store(true, Ordering::Release);
                        if !a.gone_reported.swap(true, Ordering::AcqRel) {
                            a.shut();
                            return Err(TransportError::PeerGone { endpoint });
                        }
                    }
                }
            }
        }
    }

    /// Takes what the device has completed, so senders' queues have room again: send
    /// completions are recorded, writes that arrived are kept for the next polls (in order),
    /// failures are left for `wait` to report.
    fn reap(&self) -> Result<(), TransportError> {
        let mut backlog = self.device.lock().unwrap_or_else(|e| e.into_inner());
        let before = backlog.len();
        loop {
            match self.next_from_device() {
                Ok(Some(c)) => backlog.push_back(c),
                Ok(None) => break,
                // Not ours to report: `wait` does (the queue pair is marked failed).
                Err(TransportError::PeerGone { endpoint }) => {
                    if let Some(a) = self.endpoints.get(endpoint as usize).and_then(|a| a.get()) {
                        a.gone_reported.store(false, Ordering::Release);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let woke = backlog.len() > before;
        drop(backlog);
        if woke {
            // Sleepers may have missed the events of what we took.
            self.interrupt();
        }
        Ok(())
    }

    /// Whether endpoint `id`'s queue pair failed or its peer hung up.
    fn peer_gone(&self, id: u32) -> bool {
        self.endpoints
            .get(id as usize)
            .and_then(|a| a.get())
            .is_none_or(|a| {
                a.failed.load(Ordering::Acquire) || crate::sys::peer_hung_up(a.liveness.as_fd())
            })
    }

    /// Whether endpoint `id`'s queue pair has failed.
    fn failed(&self, id: u32) -> bool {
        self.endpoints
            .get(id as usize)
            .and_then(|a| a.get())
            .is_some_and(|a| a.failed.load(Ordering::Acquire))
    }

    /// Send work requests of endpoint `id` known complete (the highest id).
    fn retired(&self, id: u32) -> u64 {
        self.endpoints
            .get(id as usize)
            .and_then(|a| a.get())
            .map_or(0, |a| a.retired.load(Ordering::Acquire))
    }

    /// The first endpoint whose peer hung up (or whose queue pair failed), reported once.
    fn dead_peer(&self) -> Option<u32> {
        let n = self.count.load(Ordering::Acquire);
        for (i, a) in self.endpoints[..n].iter().enumerate() {
            let Some(a) = a.get() else { continue };
            if a.gone_reported.load(Ordering::Acquire) {
                continue;
            }
            if (a.failed.load(Ordering::Acquire) || crate::sys::peer_hung_up(a.liveness.as_fd()))
                && !a.gone_reported.swap(true, Ordering::AcqRel)
            {
                a.shut();
                return Some(i as u32);
            }
        }
        None
    }

    /// Waits up to `timeout` for a completion, sleeping on the completion channel. A peer that
    /// hangs up is reported as [`TransportError::PeerGone`] (once), after its completions.
    pub fn wait(&self, timeout: Duration) -> Result<Option<Completion>, TransportError> {
        self.wait_since(self.epoch(), timeout)
    }

    /// The interrupt count: moved by [`VerbsQueue::interrupt`].
    pub fn epoch(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// [`VerbsQueue::wait`], returning early once an interrupt moved the count from `epoch`
    /// (read with [`VerbsQueue::epoch`] before the caller's last check).
    pub fn wait_since(
        &self,
        epoch: u64,
        timeout: Duration,
    ) -> Result<Option<Completion>, TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.poll()? {
                return Ok(Some(c));
            }
            if let Some(endpoint) = self.dead_peer() {
                return Err(TransportError::PeerGone { endpoint });
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if self.generation.load(Ordering::SeqCst) != epoch {
                return self.poll();
            }
            self.cq.arm()?;
            // A completion that arrived before arming raises no event: look once more.
            if let Some(c) = self.poll()? {
                return Ok(Some(c));
            }
            let mut fds = [
                libc::pollfd {
                    fd: self.cq.channel_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ms = (deadline - now).min(LIVENESS_TICK).as_millis().max(1) as i32;
            // SAFETY: `fds` is an array of two valid pollfd structs for the call's duration.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
            self.cq.take_events();
            if fds[1].revents != 0 {
                let mut b = [0u8; 8];
                // SAFETY: reads at most 8 bytes into `b` from our own non-blocking eventfd.
                unsafe { libc::read(self.wake.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
            }
            if self.generation.load(Ordering::SeqCst) != epoch {
                return self.poll();
            }
        }
    }

    /// Wakes every thread sleeping in [`VerbsQueue::wait`] (they may return `None` early).
    pub fn interrupt(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from `one` to our own eventfd (non-blocking; a full counter
        // only means sleepers are already being woken).
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
    }
}

impl super::Queue for VerbsQueue {
    fn poll(&self) -> Result<Option<Completion>, TransportError> {
        VerbsQueue::poll(self)
    }
    fn epoch(&self) -> u64 {
        VerbsQueue::epoch(self)
    }
    fn wait_since(
        &self,
        epoch: u64,
        timeout: Duration,
    ) -> Result<Option<Completion>, TransportError> {
        VerbsQueue::wait_since(self, epoch, timeout)
    }
    fn interrupt(&self) {
        VerbsQueue::interrupt(self)
    }
}

/// One connected endpoint: an RC queue pair, our registered regions, the peer's regions.
pub struct VerbsEndpoint {
    id: u32,
    // Field order is drop order: the queue pair goes before the registrations it may use, and
    // the registrations before the regions' memory. (The queue upgrades its weak reference only
    // to move the queue pair to the error state; should that outlast this drop, the device
    // refuses accesses through the registrations already gone.)
    qp: Arc<QueuePair>,
    /// Registrations of `local`, in the same order.
    mrs: Vec<MemoryRegion>,
    local: Vec<Arc<Region>>,
    remote: Vec<RegionDesc>,
    /// Send work requests posted (the last one's id).
    posted: AtomicU64,
    queue: Arc<VerbsQueue>,
}

impl std::fmt::Debug for VerbsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerbsEndpoint")
            .field("id", &self.id)
            .field("qp_num", &self.qp.qp_num())
            .field("max_inline", &self.qp.max_inline())
            .finish()
    }
}

impl VerbsEndpoint {
    /// Connects over `control` (both sides call this, in any order): creates a queue pair on
    /// `cq`, registers `local` regions, exchanges addresses and region descriptors, moves the
    /// queue pair to ready-to-send, and waits until the peer's is too. `control` stays the
    /// liveness signal: keep it open for the endpoint's life.
    pub fn connect(
        control: &TcpStream,
        local: Vec<Arc<Region>>,
        cq: &Arc<VerbsQueue>,
    ) -> Result<VerbsEndpoint, TransportError> {
        if local.len() > MAX_REGIONS {
            return Err(TransportError::Protocol(format!(
                "{} regions offered (at most {MAX_REGIONS})",
                local.len()
            )));
        }
        let qp = Arc::new(QueuePair::new(
            &cq.cq,
            cq.config.send_depth,
            cq.config.max_inline,
        )?);
        let mut mrs = Vec::with_capacity(local.len());
        for r in &local {
            // A staging region is registered without remote access (and not offered below).
            // SAFETY: the region's mapping lives as long as the `Arc<Region>` we keep in the
            // endpoint, which drops `mrs` before `local` (field order) and never remaps it.
            mrs.push(unsafe {
                MemoryRegion::register(&cq.ctx, r.as_ptr(), r.len(), r.is_offered())
            }?);
        }
        let hello = Hello {
            qp: qp.address(),
            regions: local
                .iter()
                .zip(&mrs)
                .filter(|(r, _)| r.is_offered())
                .map(|(r, mr)| RegionDesc {
                    key: r.key(),
                    addr: r.as_ptr() as u64,
                    len: r.len() as u64,
                    rkey: mr.rkey(),
                })
                .collect(),
        };
        let mut stream = control;
        super::send_json(&mut stream, &hello)?;
        let peer: Hello = super::recv_json(&mut stream)?;
        validate(&peer)?;
        qp.connect(&peer.qp)?;
        let id = cq.attach(&qp, control.try_clone()?)?;
        // Ready: our queue pair accepts writes from now on. Neither side writes before it
        // has heard the other's.
        stream.write_all(&[1])?;
        let mut ready = [0u8; 1];
        stream.read_exact(&mut ready)?;
        if ready != [1] {
            return Err(TransportError::Protocol(format!(
                "peer sent {ready:?} instead of ready"
            )));
        }
        Ok(VerbsEndpoint {
            id,
            qp,
            mrs,
            local,
            remote: peer.regions,
            posted: AtomicU64::new(0),
            queue: cq.clone(),
        })
    }

    /// Inline data the device granted for this endpoint's writes, bytes.
    pub fn max_inline(&self) -> u32 {
        self.qp.max_inline()
    }

    fn remote(&self, key: u32) -> Result<&RegionDesc, TransportError> {
        self.remote
            .iter()
            .find(|r| r.key == key)
            .ok_or_else(|| super::unknown_region("remote", key))
    }
}

/// Checks a peer's hello: few regions, distinct keys, sane lengths, no address overflow.
fn validate(peer: &Hello) -> Result<(), TransportError> {
    if peer.regions.len() > MAX_REGIONS {
        return Err(TransportError::Protocol(format!(
            "peer offered {} regions (at most {MAX_REGIONS})",
            peer.regions.len()
        )));
    }
    for (i, r) in peer.regions.iter().enumerate() {
        if r.len > MAX_REGION || r.addr.checked_add(r.len).is_none() {
            return Err(TransportError::Protocol(format!(
                "peer region {} of {} bytes at {:#x} is not acceptable",
                r.key, r.len, r.addr
            )));
        }
        if peer.regions[..i].iter().any(|o| o.key == r.key) {
            return Err(TransportError::Protocol(format!(
                "peer offered region {} twice",
                r.key
            )));
        }
    }
    if !(1..=5).contains(&peer.qp.mtu) {
        return Err(TransportError::Protocol(format!(
            "peer MTU code {} is not an ibv_mtu",
            peer.qp.mtu
        )));
    }
    Ok(())
}

impl Drop for VerbsEndpoint {
    /// Lets the writes already posted complete (at most [`DRAIN`]) before the queue pair goes:
    /// what `write_with_imm` accepted reaches the peer, as on the other fabrics.
    fn drop(&mut self) {
        let posted = *self.posted.get_mut();
        let Some(any) = self.remote.first() else {
            return;
        };
        if posted == 0 || self.queue.retired(self.id) >= posted || self.queue.peer_gone(self.id) {
            return;
        }
        let fence = posted + 1;
        if self.qp.post_fence(fence, any.addr, any.rkey).is_err() {
            return;
        }
        let started = Instant::now();
        while self.queue.retired(self.id) < fence
            && !self.queue.failed(self.id)
            && started.elapsed() < DRAIN
        {
            if self.queue.reap().is_err() {
                return;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

impl super::Endpoint for VerbsEndpoint {
    fn id(&self) -> u32 {
        self.id
    }

    fn remote_len(&self, key: u32) -> Option<usize> {
        self.remote(key).ok().map(|r| r.len as usize)
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
        self.post_write(local_key, local_off, len, remote_key, remote_off, Some(imm))
    }

    fn write(
        &self,
        local_key: u32,
        local_off: usize,
        len: usize,
        remote_key: u32,
        remote_off: usize,
    ) -> Result<(), TransportError> {
        self.post_write(local_key, local_off, len, remote_key, remote_off, None)
    }

    fn window(
        &self,
        key: u32,
        offset: usize,
        len: usize,
    ) -> Result<Option<*mut u8>, TransportError> {
        // Peer memory is not mapped here; still check, so bad descriptors fail the same way.
        let remote = self.remote(key)?;
        check_range("remote", key, offset, len, remote.len as usize)?;
        Ok(None)
    }

    fn signal(&self, _imm: u32, _len: usize) -> Result<(), TransportError> {
        Err(TransportError::Protocol(
            "verbs has no zero-copy window to signal; use write_with_imm".into(),
        ))
    }
}

impl VerbsEndpoint {
    /// Checks and posts one write: `RDMA_WRITE_WITH_IMM` with `imm`, or a plain `RDMA_WRITE`
    /// (`None`). A full send queue is reaped and retried for a while.
    fn post_write(
        &self,
        local_key: u32,
        local_off: usize,
        len: usize,
        remote_key: u32,
        remote_off: usize,
        imm: Option<u32>,
    ) -> Result<(), TransportError> {
        let region = local_range(&self.local, local_key, local_off, len)?;
        let remote = self.remote(remote_key)?;
        check_range("remote", remote_key, remote_off, len, remote.len as usize)?;
        let len32 = u32::try_from(len)
            .map_err(|_| TransportError::Protocol("write larger than 4 GiB".into()))?;
        let lkey = self
            .local
            .iter()
            .position(|r| Arc::ptr_eq(r, region))
            .map(|i| self.mrs[i].lkey())
            .expect("every local region is registered");
        let write = |wr_id: u64| {
            // SAFETY: the local range is in bounds of a region registered under `lkey` (checked
            // above) that lives as long as this endpoint; the remote range is in bounds of the
            // region the peer registered under `rkey` (checked above).
            unsafe {
                self.qp.write_with_imm(&RdmaWrite {
                    local: region.as_ptr().add(local_off),
                    len: len32,
                    lkey,
                    remote_addr: remote.addr + remote_off as u64,
                    rkey: remote.rkey,
                    imm,
                    signaled: wr_id.is_multiple_of(u64::from(SIGNAL_EVERY)),
                    wr_id,
                })
            }
        };
        let wr_id = self.posted.fetch_add(1, Ordering::Relaxed) + 1;
        let started = Instant::now();
        loop {
            match write(wr_id) {
                Ok(()) => return Ok(()),
                Err(VerbsError::Call { source, .. })
                    if source.raw_os_error() == Some(libc::ENOMEM) =>
                {
                    // The send queue is full of work requests whose completions nobody has
                    // taken yet (or that wait for the peer's receives): take them, retry for a
                    // while, then say so.
                    self.queue.reap()?;
                    if self.queue.failed(self.id) {
                        return Err(TransportError::PeerGone { endpoint: self.id });
                    }
                    if started.elapsed() >= FULL_RETRY {
                        return Err(TransportError::QueueFull);
                    }
                    std::thread::yield_now();
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
