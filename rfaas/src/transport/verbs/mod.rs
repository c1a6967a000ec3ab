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
//!
//! Each queue has a protection domain of its own, holding its shared receive queue, its
//! endpoints' queue pairs and their registrations: a peer of one queue cannot reach, with any
//! rkey, the memory of another queue's endpoints (an executor makes one queue per worker of
//! each session, on one device context).

pub mod ibv;
mod wake;

use super::{Completion, LIVENESS_TICK, Region, TransportError, check_range, local_range};
use ibv::{
    Context, Cq, MemoryRegion, PortInfo, ProtectionDomain, QpAddress, QueuePair, RdmaWrite,
    VerbsError, Wc,
};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use wake::Wake;

/// Most regions one side of an endpoint may offer.
pub const MAX_REGIONS: usize = 8;
/// Largest region a peer may describe (16 GiB).
pub const MAX_REGION: u64 = 1 << 34;
/// One send in this many asks for a completion (the others are retired with it).
const SIGNAL_EVERY: u32 = 16;
/// How long a writer waiting for room spins (yielding) before it sleeps between looks.
const SPIN_FOR_ROOM: Duration = Duration::from_millis(2);
/// Longest sleep between looks for room.
const ROOM_RECHECK: Duration = Duration::from_millis(1);
/// How long the endpoints of a queue dropped together wait, in all, for their writes to
/// complete.
const DRAIN: Duration = Duration::from_secs(1);
/// Receives are re-posted in batches of this many.
const REPOST_BATCH: u32 = 16;
/// Completion entries beyond the worst case, for good measure.
const CQ_SLACK: u64 = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
    /// How long a write waits for room in its send queue, milliseconds, when its caller gives
    /// no patience of its own (default 10 000), before reporting
    /// [`TransportError::QueueFull`] (nothing sent). The send queue stays full while the
    /// peer's receives are used up, that is while it does not poll its queue: this is how long
    /// a peer may stop polling (a client that sent many calls and collects the answers later)
    /// and still be answered. A peer that hangs up ends the wait at once.
    pub send_patience_ms: u64,
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
            send_patience_ms: 10_000,
        }
    }
}

impl VerbsConfig {
    /// The defaults with `RFAAS_VERBS_DEVICE`, `RFAAS_VERBS_PORT`, `RFAAS_VERBS_GID_INDEX`,
    /// `RFAAS_VERBS_MAX_INLINE` and `RFAAS_VERBS_SEND_PATIENCE_MS` applied (unparsable numbers
    /// are an error).
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
        num("RFAAS_VERBS_SEND_PATIENCE_MS", &mut c.send_patience_ms)?;
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

/// For tests that need a device: whether one is here; if not, prints why the test `test`
/// skips, or fails it where `RFAAS_REQUIRE_RDMA` is set (the Soft-RoCE VM run, where a
/// missing device is a broken setup, not a reason to skip).
pub fn available_or_skip(test: &str) -> bool {
    match available() {
        Ok(devices) => {
            eprintln!("{test}: RDMA devices {devices:?}");
            true
        }
        Err(why) if std::env::var_os("RFAAS_REQUIRE_RDMA").is_some() => {
            panic!("{test}: RFAAS_REQUIRE_RDMA is set, but: {why}")
        }
        Err(why) => {
            eprintln!("{test}: skipped: {why}");
            false
        }
    }
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
    /// The queue pair reported a failed work request, or the peer broke the protocol.
    failed: AtomicBool,
    /// How the peer broke the protocol, if it did (reported as `PeerBroke`, not `PeerGone`).
    broke: OnceLock<String>,
    /// The end was reported (once).
    reported: AtomicBool,
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

    /// Whether the queue pair failed or the peer hung up.
    fn gone(&self) -> bool {
        self.failed.load(Ordering::Acquire) || crate::sys::peer_hung_up(self.liveness.as_fd())
    }

    /// Reports the end of endpoint `endpoint` (this one) if nobody did yet: shuts the queue
    /// pair and says how the peer ended.
    fn report(&self, endpoint: u32) -> Option<TransportError> {
        if self.reported.swap(true, Ordering::AcqRel) {
            return None;
        }
        self.shut();
        Some(match self.broke.get() {
            Some(why) => TransportError::PeerBroke {
                endpoint,
                why: why.clone(),
            },
            None => TransportError::PeerGone { endpoint },
        })
    }
}

/// What the thread polling the device owns.
#[derive(Debug, Default)]
struct DeviceState {
    /// Completions a sender took off the device to make room (see `reap`), delivered first.
    backlog: std::collections::VecDeque<Completion>,
    /// Receives consumed and not yet re-posted.
    owed: u32,
    /// Re-posting receives failed (logged once until it works again).
    repost_failing: bool,
}

/// The time the endpoints of one queue may spend, together, letting their writes complete
/// when they are dropped (see `VerbsEndpoint`'s `Drop`). The first drain sets a deadline
/// [`DRAIN`] away; drains that start before it wait until it at most (so once a drain timed
/// out, its peer host likely gone, the drains after it do not wait at all; one whose queue pair
/// failed leaves the deadline standing, and the next ones wait until it at most), until a quiet
/// [`DRAIN`] after the deadline. A drain that succeeds with none other under way gives the
/// next one a fresh deadline. So a lease
/// whose executor host vanished closes its workers' endpoints in one [`DRAIN`], not one each.
#[derive(Debug, Default)]
struct DrainBudget(Mutex<DrainState>);

#[derive(Debug, Default)]
struct DrainState {
    deadline: Option<Instant>,
    active: u32,
}

impl DrainBudget {
    /// A drain starting at `now`: the deadline to wait until, or `None` to not wait.
    fn start(&self, now: Instant) -> Option<Instant> {
        let mut st = lock(&self.0);
        if let Some(d) = st.deadline
            && st.active == 0
            && now >= d + DRAIN
        {
            st.deadline = None;
        }
        let deadline = *st.deadline.get_or_insert(now + DRAIN);
        if now >= deadline {
            return None;
        }
        st.active += 1;
        Some(deadline)
    }

    /// A drain begun with a deadline from [`DrainBudget::start`] ended: `drained` if its
    /// writes completed.
    fn finish(&self, drained: bool) {
        let mut st = lock(&self.0);
        st.active = st.active.saturating_sub(1);
        if drained && st.active == 0 {
            st.deadline = None;
        }
    }
}

/// A completion queue for any number of endpoints (up to the number given at creation):
/// polled without blocking, or waited on through its completion channel. It has its own
/// protection domain (see the module documentation).
pub struct VerbsQueue {
    cq: Arc<Cq>,
    pd: Arc<ProtectionDomain>,
    ctx: Arc<Context>,
    config: VerbsConfig,
    endpoints: Box<[OnceLock<Attached>]>,
    count: AtomicUsize,
    attach: Mutex<()>,
    /// Held while polling the device, so completions leave in the order they arrived.
    device: Mutex<DeviceState>,
    /// A failure was recorded while a sender took completions (`reap`): the next poll reports
    /// it.
    unreported: AtomicBool,
    /// Interrupts and the sleeping waiters' eventfds.
    wake: Wake,
    /// The time endpoints being dropped may wait for their writes.
    drain: DrainBudget,
}

impl std::fmt::Debug for VerbsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerbsQueue")
            .field("device", &self.ctx.name())
            .field("endpoints", &self.count.load(Ordering::Relaxed))
            .finish()
    }
}

/// The send depth and completion-queue size of a queue for `max_endpoints` endpoints on a
/// device of limits `(max_qp_wr, max_cqe, max_srq_wr)`: `(recv_depth, send_depth, cqe)`.
///
/// The completion queue holds the worst case: every receive completes before anyone polls,
/// and every queue pair's send queue flushes whole (an error completes every work request,
/// signalled or not), with the room a dropped endpoint's fence takes (`send_depth + 1`
/// each). Where the device's completion queues are too small for that, the send depth is
/// lowered to fit (not below `2 * SIGNAL_EVERY`).
fn queue_sizes(
    config: &VerbsConfig,
    max_endpoints: usize,
    (max_wr, max_cqe, max_srq): (u32, u32, u32),
) -> Result<(u32, u32, u32), String> {
    let recv_depth = config
        .recv_depth
        .clamp(REPOST_BATCH, max_srq.max(REPOST_BATCH));
    let floor = SIGNAL_EVERY * 2;
    // One work request of room for the fence.
    let mut send_depth = config
        .send_depth
        .clamp(floor, max_wr.saturating_sub(1).max(floor));
    let endpoints = max_endpoints.max(1) as u64;
    let fixed = u64::from(recv_depth) + CQ_SLACK;
    let fits = u64::from(max_cqe).saturating_sub(fixed) / endpoints;
    if u64::from(send_depth) + 1 > fits {
        if fits < u64::from(floor) + 1 {
            return Err(format!(
                "a queue for {max_endpoints} endpoints needs at least {} completion entries; the device allows {max_cqe}",
                fixed + endpoints * (u64::from(floor) + 1)
            ));
        }
        send_depth = (fits - 1) as u32;
    }
    let cqe = fixed + endpoints * (u64::from(send_depth) + 1);
    Ok((recv_depth, send_depth, cqe as u32))
}

impl VerbsQueue {
    /// A queue on `ctx` for up to `max_endpoints` endpoints, in a protection domain of its
    /// own.
    pub fn new(
        ctx: &Arc<Context>,
        config: &VerbsConfig,
        max_endpoints: usize,
    ) -> Result<Arc<VerbsQueue>, TransportError> {
        let (recv_depth, send_depth, cqe) = queue_sizes(config, max_endpoints, ctx.limits())
            .map_err(|why| TransportError::Rdma(format!("device {}: {why}", ctx.name())))?;
        let mut config = config.clone();
        if send_depth < config.send_depth {
            tracing::debug!(
                asked = config.send_depth,
                send_depth,
                max_endpoints,
                "send depth lowered to fit the device's completion queues"
            );
        }
        config.recv_depth = recv_depth;
        config.send_depth = send_depth;
        // The first sleeper's eventfd, now: short of descriptors, the queue is not made,
        // rather than a wait failing later.
        let wake = Wake::new().map_err(|e| {
            TransportError::Rdma(format!("an eventfd for the queue's warm waits: {e}"))
        })?;
        let pd = ProtectionDomain::new(ctx)?;
        let cq = Arc::new(Cq::new(&pd, cqe, recv_depth)?);
        Ok(Arc::new(VerbsQueue {
            cq,
            pd,
            ctx: ctx.clone(),
            config,
            endpoints: (0..max_endpoints).map(|_| OnceLock::new()).collect(),
            count: AtomicUsize::new(0),
            attach: Mutex::new(()),
            device: Mutex::new(DeviceState::default()),
            unreported: AtomicBool::new(false),
            wake,
            drain: DrainBudget::default(),
        }))
    }

    /// The device context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// The queue's protection domain: its endpoints' queue pairs and registrations are in it.
    pub fn protection_domain(&self) -> &Arc<ProtectionDomain> {
        &self.pd
    }

    fn attach(&self, qp: &Arc<QueuePair>, liveness: TcpStream) -> Result<u32, TransportError> {
        let _guard = lock(&self.attach);
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
            broke: OnceLock::new(),
            reported: AtomicBool::new(false),
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

    fn attached(&self, id: u32) -> Option<&Attached> {
        self.endpoints.get(id as usize).and_then(|a| a.get())
    }

    /// Takes the next completion, if any, without blocking. One thread polls at a time; a
    /// concurrent poll returns nothing.
    pub fn poll(&self) -> Result<Option<Completion>, TransportError> {
        let mut st = match self.device.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        self.take_locked(&mut st)
    }

    /// [`VerbsQueue::poll`], waiting for a concurrent poll to finish instead of returning
    /// nothing (what it leaves may be ours).
    fn take(&self) -> Result<Option<Completion>, TransportError> {
        self.take_locked(&mut lock(&self.device))
    }

    fn take_locked(&self, st: &mut DeviceState) -> Result<Option<Completion>, TransportError> {
        if let Some(c) = st.backlog.pop_front() {
            return Ok(Some(c));
        }
        if let Some(c) = self.next_from_device(st, true)? {
            return Ok(Some(c));
        }
        // A failure a sender recorded while taking completions (after those completions).
        if self.unreported.load(Ordering::Acquire) {
            let n = self.count.load(Ordering::Acquire);
            let failed = self.endpoints[..n].iter().enumerate().find_map(|(i, a)| {
                a.get()
                    .filter(|a| a.failed.load(Ordering::Acquire))
                    .and_then(|a| a.report(i as u32))
            });
            match failed {
                Some(e) => return Err(e),
                None => self.unreported.store(false, Ordering::Release),
            }
        }
        Ok(None)
    }

    /// Re-posts the receives consumed so far (a failure is logged once and retried at the
    /// next completion).
    fn repost(&self, st: &mut DeviceState) {
        while st.owed > 0 {
            match self.cq.post_receive() {
                Ok(()) => st.owed -= 1,
                Err(e) => {
                    if !st.repost_failing {
                        tracing::warn!(owed = st.owed, "cannot re-post receives: {e}");
                    }
                    st.repost_failing = true;
                    return;
                }
            }
        }
        st.repost_failing = false;
    }

    /// The next write-with-immediate off the device (send completions are recorded on the
    /// way, every consumed receive is re-posted). A failed queue pair or a peer that broke
    /// the protocol is recorded, and, if `report`, reported (once) as
    /// [`TransportError::PeerGone`] or [`TransportError::PeerBroke`].
    fn next_from_device(
        &self,
        st: &mut DeviceState,
        report: bool,
    ) -> Result<Option<Completion>, TransportError> {
        let mut wc = [Wc::Sent {
            qp_num: 0,
            wr_id: 0,
        }];
        loop {
            if st.owed >= REPOST_BATCH {
                self.repost(st);
            }
            if self.cq.poll(&mut wc)? == 0 {
                return Ok(None);
            }
            let wc = wc[0];
            // Every receive counts, whatever completed it: one that is not re-posted is gone
            // from the shared receive queue for every endpoint.
            if wc.consumed_receive() {
                st.owed += 1;
            }
            let failure = match wc {
                Wc::Sent { qp_num, wr_id } => {
                    if let Some((_, a)) = self.endpoint_of(qp_num) {
                        a.retired.fetch_max(wr_id, Ordering::AcqRel);
                    }
                    continue;
                }
                Wc::Received { qp_num, imm, len } => {
                    // A queue pair we no longer know, or whose end we reported: nothing to
                    // deliver.
                    match self.endpoint_of(qp_num) {
                        Some((endpoint, a)) if !a.reported.load(Ordering::Acquire) => {
                            return Ok(Some(Completion { endpoint, imm, len }));
                        }
                        _ => continue,
                    }
                }
                Wc::Unexpected { qp_num, opcode } => {
                    let Some((endpoint, a)) = self.endpoint_of(qp_num) else {
                        continue;
                    };
                    // Stop it at once (the first time): it uses up receives every endpoint
                    // shares.
                    let first = a.broke.set(format!(
                        "it consumed a receive with something other than a write with immediate \
                         (work completion opcode {opcode})"
                    ));
                    if first.is_ok() {
                        tracing::debug!(
                            endpoint,
                            opcode,
                            "peer consumed a receive without a write"
                        );
                        a.failed.store(true, Ordering::Release);
                        a.shut();
                    }
                    (endpoint, a)
                }
                Wc::Failed { qp_num, status, .. } => {
                    let Some((endpoint, a)) = self.endpoint_of(qp_num) else {
                        continue;
                    };
                    tracing::debug!(endpoint, status, "verbs work request failed");
                    a.failed.store(true, Ordering::Release);
                    (endpoint, a)
                }
            };
            let (endpoint, a) = failure;
            if !report {
                self.unreported.store(true, Ordering::Release);
            } else if let Some(e) = a.report(endpoint) {
                return Err(e);
            }
        }
    }

    /// Takes what the device has completed, so senders' queues have room again: send
    /// completions are recorded, writes that arrived are kept for the next polls (in order),
    /// failures are left for the next poll or `wait` to report.
    fn reap(&self) -> Result<(), TransportError> {
        let mut st = lock(&self.device);
        let before = st.backlog.len();
        while let Some(c) = self.next_from_device(&mut st, false)? {
            st.backlog.push_back(c);
        }
        let took = st.backlog.len() > before;
        drop(st);
        if took {
            // Sleepers may have missed the events of what we took: they look again.
            self.wake.nudge(None);
        }
        Ok(())
    }

    /// Whether endpoint `id`'s queue pair failed or its peer hung up.
    fn peer_gone(&self, id: u32) -> bool {
        self.attached(id).is_none_or(Attached::gone)
    }

    /// Whether endpoint `id`'s queue pair has failed.
    fn failed(&self, id: u32) -> bool {
        self.attached(id)
            .is_some_and(|a| a.failed.load(Ordering::Acquire))
    }

    /// Send work requests of endpoint `id` known complete (the highest id).
    fn retired(&self, id: u32) -> u64 {
        self.attached(id)
            .map_or(0, |a| a.retired.load(Ordering::Acquire))
    }

    /// The first endpoint whose peer hung up, whose queue pair failed or whose peer broke the
    /// protocol, reported once.
    fn dead_peer(&self) -> Option<TransportError> {
        let n = self.count.load(Ordering::Acquire);
        for (i, a) in self.endpoints[..n].iter().enumerate() {
            let Some(a) = a.get() else { continue };
            if a.reported.load(Ordering::Acquire) || !a.gone() {
                continue;
            }
            if let Some(e) = a.report(i as u32) {
                return Some(e);
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
        self.wake.epoch()
    }

    /// [`VerbsQueue::wait`], returning early once an interrupt moved the count from `epoch`
    /// (read with [`VerbsQueue::epoch`] before the caller's last check).
    pub fn wait_since(
        &self,
        epoch: u64,
        timeout: Duration,
    ) -> Result<Option<Completion>, TransportError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(c) = self.take()? {
                return Ok(Some(c));
            }
            if let Some(e) = self.dead_peer() {
                return Err(e);
            }
            if self.wake.epoch() != epoch {
                return self.take();
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if now >= d => return Ok(None),
                Some(d) => d - now,
                None => LIVENESS_TICK,
            };
            // Registered with an eventfd of its own before the last look at the count: an
            // interrupt from here on wakes this thread, whoever else sleeps. (A thread that
            // gets none, out of descriptors, sleeps on the channel alone, briefly.)
            let sleeper = self.wake.sleeper();
            if self.wake.epoch() != epoch {
                drop(sleeper);
                return self.take();
            }
            self.cq.arm()?;
            // A completion that arrived before arming raises no event: look once more.
            if let Some(c) = self.take()? {
                return Ok(Some(c));
            }
            let mut fds = [
                libc::pollfd {
                    fd: self.cq.channel_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: sleeper.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ms = left
                .min(LIVENESS_TICK)
                .min(sleeper.longest_sleep())
                .as_millis()
                .max(1) as i32;
            // SAFETY: `fds` is an array of two valid pollfd structs for the call's duration
            // (a negative fd, a sleeper without an eventfd, is one poll skips).
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
            // The channel's event is one for all sleepers (the completion queue was armed
            // once): whoever takes it has the others look again, so a completion none of them
            // took wakes someone.
            if self.cq.take_events() {
                self.wake.nudge(Some(sleeper.fd()));
            }
            drop(sleeper);
            if self.wake.epoch() != epoch {
                return self.take();
            }
        }
    }

    /// Wakes every thread sleeping in [`VerbsQueue::wait`] (they may return `None` early).
    pub fn interrupt(&self) {
        self.wake.interrupt();
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
    /// Send work requests posted (the last one's id: they are numbered in the order they
    /// entered the send queue). Held while posting, so ids, signals and the send queue agree.
    posted: Mutex<u64>,
    /// Most send work requests in flight (posted and not known complete), besides the room
    /// kept for the fence of `Drop`.
    send_depth: u64,
    /// Largest write the port takes in one work request.
    max_msg: u32,
    /// How long a write without a patience of its own waits for room.
    send_patience: Duration,
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
    /// `cq`, registers `local` regions (both in `cq`'s protection domain), exchanges addresses
    /// and region descriptors, moves the queue pair to ready-to-send, and waits until the
    /// peer's is too. `control` stays the liveness signal: keep it open for the endpoint's
    /// life.
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
        // Room for the fence of `Drop` beyond the send depth.
        let qp = Arc::new(QueuePair::new(
            &cq.cq,
            cq.config.send_depth + 1,
            cq.config.max_inline,
        )?);
        let mut mrs = Vec::with_capacity(local.len());
        for r in &local {
            // A staging region is registered without remote access (and not offered below).
            // SAFETY: the region's mapping lives as long as the `Arc<Region>` we keep in the
            // endpoint, which drops `mrs` before `local` (field order) and never remaps it.
            mrs.push(unsafe {
                MemoryRegion::register(&cq.pd, r.as_ptr(), r.len(), r.is_offered())
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
        validate(&peer, &cq.ctx.port_info())?;
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
            posted: Mutex::new(0),
            send_depth: u64::from(cq.config.send_depth),
            max_msg: cq.ctx.port_info().max_msg,
            send_patience: Duration::from_millis(cq.config.send_patience_ms),
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

/// Checks a peer's hello against our port: few regions, distinct keys, sane lengths, no
/// address overflow, a real MTU code, a queue pair number and packet sequence number of 24
/// bits (not the special queue pairs 0 and 1), a unicast GID, and on InfiniBand a unicast
/// LID.
fn validate(peer: &Hello, port: &PortInfo) -> Result<(), TransportError> {
    let refuse = |why: String| Err(TransportError::Protocol(why));
    if peer.regions.len() > MAX_REGIONS {
        return refuse(format!(
            "peer offered {} regions (at most {MAX_REGIONS})",
            peer.regions.len()
        ));
    }
    for (i, r) in peer.regions.iter().enumerate() {
        if r.len > MAX_REGION || r.addr.checked_add(r.len).is_none() {
            return refuse(format!(
                "peer region {} of {} bytes at {:#x} is not acceptable",
                r.key, r.len, r.addr
            ));
        }
        if peer.regions[..i].iter().any(|o| o.key == r.key) {
            return refuse(format!("peer offered region {} twice", r.key));
        }
    }
    let qp = &peer.qp;
    if !(1..=5).contains(&qp.mtu) {
        return refuse(format!("peer MTU code {} is not an ibv_mtu", qp.mtu));
    }
    if !(2..=0xff_ffff).contains(&qp.qpn) {
        return refuse(format!(
            "peer queue pair number {} is not one to connect to",
            qp.qpn
        ));
    }
    if qp.psn > 0xff_ffff {
        return refuse(format!(
            "peer packet sequence number {} is not 24 bits",
            qp.psn
        ));
    }
    if qp.gid == [0; 16] || qp.gid[0] == 0xff {
        return refuse(format!(
            "peer GID {} is not a unicast address",
            std::net::Ipv6Addr::from(qp.gid)
        ));
    }
    if !port.ethernet && !(1..=0xbfff).contains(&qp.lid) {
        return refuse(format!("peer LID {:#x} is not a unicast LID", qp.lid));
    }
    Ok(())
}

impl Drop for VerbsEndpoint {
    /// Lets the writes already posted complete before the queue pair goes, within the time
    /// the queue's endpoints share for it (see `DrainBudget`; at most 1 s): what
    /// `write_with_imm` accepted reaches the peer, as on the other fabrics.
    fn drop(&mut self) {
        let posted = *self.posted.get_mut().unwrap_or_else(|e| e.into_inner());
        let Some(any) = self.remote.first() else {
            return;
        };
        if posted == 0 || self.queue.retired(self.id) >= posted || self.queue.peer_gone(self.id) {
            return;
        }
        let Some(deadline) = self.queue.drain.start(Instant::now()) else {
            return;
        };
        // The fence has its room in the send queue beyond `send_depth` (see `connect`).
        let fence = posted + 1;
        if self.qp.post_fence(fence, any.addr, any.rkey).is_err() {
            self.queue.drain.finish(false);
            return;
        }
        let drained = loop {
            if self.queue.retired(self.id) >= fence {
                break true;
            }
            if self.queue.failed(self.id) || Instant::now() >= deadline {
                break false;
            }
            if self.queue.reap().is_err() {
                break false;
            }
            std::thread::sleep(Duration::from_micros(50));
        };
        self.queue.drain.finish(drained);
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
        self.post_write(
            local_key,
            local_off,
            len,
            remote_key,
            remote_off,
            Some(imm),
            self.send_patience,
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
        self.post_write(
            local_key,
            local_off,
            len,
            remote_key,
            remote_off,
            None,
            self.send_patience,
        )
    }

    /// No pieces (verbs sends from registered memory only); `patience` bounds the wait for
    /// room in the send queue instead of [`VerbsConfig::send_patience_ms`].
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
        if !pieces.is_empty() {
            return Err(TransportError::Unavailable(
                "this fabric has no gather writes".into(),
            ));
        }
        self.post_write(
            local_key,
            local_off,
            len,
            remote_key,
            remote_off,
            Some(imm),
            patience.unwrap_or(self.send_patience),
        )
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
    /// (`None`). Without room in the send queue (the peer's receives are used up while it does
    /// not poll, and our writes wait in RNR retries), it takes the device's completions and
    /// waits for room while the peer lives, up to `patience`, then reports
    /// [`TransportError::QueueFull`] (nothing posted).
    #[allow(clippy::too_many_arguments)]
    fn post_write(
        &self,
        local_key: u32,
        local_off: usize,
        len: usize,
        remote_key: u32,
        remote_off: usize,
        imm: Option<u32>,
        patience: Duration,
    ) -> Result<(), TransportError> {
        let region = local_range(&self.local, local_key, local_off, len)?;
        let remote = self.remote(remote_key)?;
        check_range("remote", remote_key, remote_off, len, remote.len as usize)?;
        let len32 = u32::try_from(len)
            .ok()
            .filter(|&l| l <= self.max_msg)
            .ok_or_else(|| {
                TransportError::Rdma(format!(
                    "a write of {len} bytes exceeds the largest message of device {} ({} bytes)",
                    self.queue.ctx.name(),
                    self.max_msg
                ))
            })?;
        let lkey = self
            .local
            .iter()
            .position(|r| Arc::ptr_eq(r, region))
            .map(|i| self.mrs[i].lkey())
            .expect("every local region is registered");
        let write = |wr_id: u64, signaled: bool| {
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
                    signaled,
                    wr_id,
                })
            }
        };
        let mut waiting: Option<(Instant, Duration)> = None;
        loop {
            if self.queue.failed(self.id) {
                return Err(TransportError::PeerGone { endpoint: self.id });
            }
            if self.try_post(write)? {
                return Ok(());
            }
            // No room: take the device's completions (ours retire, writes that arrived are
            // kept for the next polls, in order), and look again, for a while.
            self.queue.reap()?;
            if self.queue.peer_gone(self.id) {
                return Err(TransportError::PeerGone { endpoint: self.id });
            }
            let (since, pause) = waiting.get_or_insert((Instant::now(), Duration::from_micros(20)));
            let waited = since.elapsed();
            if waited >= patience {
                return Err(TransportError::QueueFull);
            }
            if waited < SPIN_FOR_ROOM {
                std::thread::yield_now();
            } else {
                std::thread::sleep((*pause).min(patience - waited));
                *pause = (*pause * 2).min(ROOM_RECHECK);
            }
        }
    }

    /// Posts one send work request with `post(wr_id, signaled)` if the send queue has room:
    /// `Ok(false)` if not. Under the endpoint's send lock, so work-request ids follow the send
    /// queue's order and count only what was posted, and one in [`SIGNAL_EVERY`] of them asks
    /// for a completion.
    fn try_post(
        &self,
        post: impl FnOnce(u64, bool) -> Result<(), VerbsError>,
    ) -> Result<bool, TransportError> {
        let mut posted = lock(&self.posted);
        if posted.saturating_sub(self.queue.retired(self.id)) >= self.send_depth {
            return Ok(false);
        }
        let wr_id = *posted + 1;
        match post(wr_id, wr_id.is_multiple_of(u64::from(SIGNAL_EVERY))) {
            Ok(()) => {
                *posted = wr_id;
                Ok(true)
            }
            // The device's own count of a full send queue (ours should have said so first).
            Err(VerbsError::Call { source, .. }) if source.raw_os_error() == Some(libc::ENOMEM) => {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests;
