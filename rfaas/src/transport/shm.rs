//! Shared-memory fabric: regions are memfd mappings passed with SCM_RIGHTS over a Unix socket;
//! a write is a memcpy into the peer's mapping followed by a release-store that publishes a
//! completion entry; polling is an acquire-load; waiting is a futex on a doorbell word.
//!
//! Every index in shared memory that the peer can write is treated as hostile: queue indices
//! are checked against the capacity, and completion contents are validated by the layer above.

use super::{Completion, LIVENESS_TICK, Region, TransportError, check_range};
use crate::sys::{self, Mapping};
use crate::wire::Offer;
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering, fence};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Entries in one completion ring.
pub const RING_CAPACITY: u32 = 256;
/// Endpoints one completion queue can collect.
pub const MAX_ENDPOINTS: usize = 256;
const LINE: usize = 64;
/// Bytes of one ring entry (a cache line): `seq`, `imm`, `len`, `place` (u32 each), then up to
/// [`MAX_INLINE`] bytes of inline data.
const ENTRY_BYTES: usize = LINE;
/// Offset of the inline data in an entry.
const INLINE_OFFSET: usize = 16;
/// Most bytes a write carries inside its ring entry ([`ShmEndpoint::write_inline`]): a small
/// write then costs the consumer one cache line, not two.
pub const MAX_INLINE: usize = ENTRY_BYTES - INLINE_OFFSET;
/// `place` word of an inline entry: this bit, the region key in the next 5 bits, and the
/// destination offset in 64-byte units in the low 26 bits.
const PLACE_INLINE: u32 = 1 << 31;
const PLACE_KEY_SHIFT: u32 = 26;
const PLACE_KEY_MAX: u32 = (1 << 5) - 1;
const PLACE_OFFSET_UNITS: u64 = 1 << PLACE_KEY_SHIFT;
const RING_BYTES: usize = LINE + RING_CAPACITY as usize * ENTRY_BYTES;
const CONTROL_BYTES: usize = 2 * RING_BYTES;
const DOORBELL_BYTES: usize = 2 * LINE;
/// Largest region the handshake accepts (16 GiB).
pub const MAX_REGION: usize = 1 << 34;
/// Most regions one side of an endpoint may offer.
pub const MAX_REGIONS: usize = 8;

/// One single-producer single-consumer completion ring inside a control block.
struct RingView {
    base: *mut u8,
}

/// One entry of a ring, as atomics in shared memory.
struct EntryView<'a> {
    seq: &'a AtomicU32,
    imm: &'a AtomicU32,
    len: &'a AtomicU32,
    /// 0: the bytes were written into the region directly; else where the inline bytes go.
    place: &'a AtomicU32,
    /// The inline bytes ([`MAX_INLINE`] of them), written before `seq` is published.
    data: *mut u8,
}

/// The `place` word for `len` inline bytes bound for region `key` at `offset`, if the entry can
/// say so (small key, 64-byte aligned offset under 4 GiB).
fn place_word(key: u32, offset: usize) -> Option<u32> {
    let units = offset as u64 / LINE as u64;
    (key <= PLACE_KEY_MAX && offset.is_multiple_of(LINE) && units < PLACE_OFFSET_UNITS)
        .then_some(PLACE_INLINE | (key << PLACE_KEY_SHIFT) | units as u32)
}

/// The region key and offset a `place` word names.
fn unplace(place: u32) -> (u32, usize) {
    (
        (place >> PLACE_KEY_SHIFT) & PLACE_KEY_MAX,
        (place & (PLACE_OFFSET_UNITS as u32 - 1)) as usize * LINE,
    )
}

impl RingView {
    /// The consumer's index, published for the producer's flow control.
    fn head(&self) -> &AtomicU32 {
        // SAFETY: offset 0 of a ring is a 4-aligned u32 inside the live control mapping, which
        // outlives every view (the endpoint owns both); shared memory is accessed atomically.
        unsafe { AtomicU32::from_ptr(self.base.cast()) }
    }

    fn entry(&self, i: u32) -> EntryView<'_> {
        let off = LINE + (i % RING_CAPACITY) as usize * ENTRY_BYTES;
        // SAFETY: `off + ENTRY_BYTES <= RING_BYTES`; four 4-aligned u32s inside the ring,
        // accessed atomically, and the inline bytes after them.
        unsafe {
            EntryView {
                seq: AtomicU32::from_ptr(self.base.add(off).cast()),
                imm: AtomicU32::from_ptr(self.base.add(off + 4).cast()),
                len: AtomicU32::from_ptr(self.base.add(off + 8).cast()),
                place: AtomicU32::from_ptr(self.base.add(off + 12).cast()),
                data: self.base.add(off + INLINE_OFFSET),
            }
        }
    }
}

/// Producer half: stamps completions into the ring the peer's queue polls.
struct SendRing {
    _control: Arc<Mapping>,
    view: RingView,
    /// Next index to write (private to the producer).
    tail: AtomicU32,
    /// The consumer's head as last read: re-read only when the ring looks full.
    cached_head: AtomicU32,
    /// Serializes concurrent senders on one endpoint.
    lock: AtomicBool,
}

/// Consumer half: pops completions the peer stamped.
struct RecvRing {
    _control: Arc<Mapping>,
    view: RingView,
    /// Next index to read (private to the consumer).
    head: AtomicU32,
    liveness: UnixStream,
    /// The peer's hang-up has been reported.
    gone_reported: AtomicBool,
    /// The endpoint's own regions, where inline writes are placed.
    local: Vec<Arc<Region>>,
}

impl RecvRing {
    /// Copies an entry's inline bytes to where its `place` word says, after checking that the
    /// peer named one of our regions and a range inside it.
    fn place_inline(&self, e: &EntryView<'_>, place: u32, len: u32) -> Result<(), String> {
        let (key, offset) = unplace(place);
        let len = len as usize;
        if place & PLACE_INLINE == 0 || len > MAX_INLINE {
            return Err(format!(
                "inline entry with place word {place:#x} and {len} bytes"
            ));
        }
        let region = super::local_range(&self.local, key, offset, len)
            .map_err(|e| format!("inline write: {e}"))?;
        // SAFETY: `len <= MAX_INLINE` bytes from the entry's inline area (inside the live
        // control mapping) to `[offset, offset + len)` of our live region (checked above); they
        // are different memory files, so they do not overlap. Any bytes may be in either.
        unsafe { std::ptr::copy_nonoverlapping(e.data, region.as_ptr().add(offset), len) };
        Ok(())
    }

    /// The consumer's head and its entry, if that entry has been published: its sequence
    /// number is exactly `head + 1` (anything else, an older lap or garbage from a hostile
    /// peer, is simply not ready).
    fn published(&self) -> Option<(u32, EntryView<'_>)> {
        let head = self.head.load(Ordering::Relaxed);
        let e = self.view.entry(head);
        (e.seq.load(Ordering::Acquire) == head.wrapping_add(1)).then_some((head, e))
    }

    /// Whether the next entry has been published.
    fn ready(&self) -> bool {
        self.published().is_some()
    }
}

// SAFETY: the raw pointers point into `_control`, an `Arc`ed shared mapping kept alive by the
// ring; all shared-memory access is atomic.
unsafe impl Send for SendRing {}
// SAFETY: as above.
unsafe impl Sync for SendRing {}
// SAFETY: as above.
unsafe impl Send for RecvRing {}
// SAFETY: as above.
unsafe impl Sync for RecvRing {}

/// A futex word peers ring when the owner sleeps.
struct Doorbell {
    map: Mapping,
}

impl Doorbell {
    fn seq(&self) -> &AtomicU32 {
        // SAFETY: offset 0 of a live mapping of DOORBELL_BYTES, 4-aligned.
        unsafe { AtomicU32::from_ptr(self.map.as_ptr().cast()) }
    }
    fn sleepers(&self) -> &AtomicU32 {
        // SAFETY: offset LINE of the same mapping.
        unsafe { AtomicU32::from_ptr(self.map.as_ptr().add(LINE).cast()) }
    }
    /// Wakes the owner if it sleeps. The caller's publishing store must be SeqCst (an `xchg`
    /// on x86, cheaper than the `mfence` of a SeqCst fence on AMD): it and the SeqCst load of
    /// the sleeper count pair with the increment and fence in `CompletionQueue::wait`, so
    /// either the sleeper sees our completion before sleeping, or we see it and wake it.
    fn ring_after_seqcst(&self) {
        if self.sleepers().load(Ordering::SeqCst) != 0 {
            self.seq().fetch_add(1, Ordering::SeqCst);
            sys::futex_wake(self.seq(), i32::MAX);
        }
    }

    /// Moves the sequence number (so that a waiter that read it before, and has not slept
    /// yet, does not sleep) and wakes the sleepers: an interrupt. The increment (a locked
    /// read-modify-write) orders the caller's earlier stores before the sleeper count's load.
    fn interrupt(&self) {
        self.seq().fetch_add(1, Ordering::SeqCst);
        if self.sleepers().load(Ordering::SeqCst) != 0 {
            sys::futex_wake(self.seq(), i32::MAX);
        }
    }
}

/// Collects completions from any number of endpoints (like a verbs CQ with a completion
/// channel). Any number of threads may poll and wait: a poll that finds another one polling
/// returns nothing, but a wait never sleeps past a completion on that account.
pub struct CompletionQueue {
    doorbell_fd: OwnedFd,
    doorbell: Doorbell,
    rings: Box<[OnceLock<RecvRing>]>,
    count: AtomicUsize,
    next: AtomicUsize,
    busy: AtomicBool,
}

impl std::fmt::Debug for CompletionQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionQueue")
            .field("endpoints", &self.count.load(Ordering::Relaxed))
            .finish()
    }
}

impl CompletionQueue {
    /// A new, empty queue.
    pub fn new() -> Result<Arc<Self>, TransportError> {
        let doorbell_fd = sys::memfd("rfaas-doorbell", DOORBELL_BYTES)?;
        let map = Mapping::new(doorbell_fd.as_fd(), DOORBELL_BYTES)?;
        Ok(Arc::new(CompletionQueue {
            doorbell_fd,
            doorbell: Doorbell { map },
            rings: (0..MAX_ENDPOINTS).map(|_| OnceLock::new()).collect(),
            count: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
        }))
    }

    fn attach(&self, ring: RecvRing) -> Result<u32, TransportError> {
        // Attachments happen during connection set-up; serialize them with the poll flag.
        self.lock_busy();
        let i = self.count.load(Ordering::Relaxed);
        let r = if i >= MAX_ENDPOINTS {
            Err(TransportError::Protocol(format!(
                "completion queue full ({MAX_ENDPOINTS} endpoints)"
            )))
        } else {
            let _ = self.rings[i].set(ring);
            self.count.store(i + 1, Ordering::Release);
            Ok(i as u32)
        };
        self.busy.store(false, Ordering::Release);
        r
    }

    fn lock_busy(&self) {
        spin_lock(&self.busy);
    }

    /// Takes the next completion, if any, without blocking. Endpoints are visited round-robin.
    pub fn poll(&self) -> Result<Option<Completion>, TransportError> {
        let n = self.count.load(Ordering::Acquire);
        // Plain loads first, from where the last poll left off: an idle poll takes no lock, and
        // the flag is taken for the first ring that looks ready, not for a second full scan.
        let mut i = self.next.load(Ordering::Relaxed);
        for _ in 0..n {
            if i >= n {
                i = 0;
            }
            if let Some(ring) = self.rings[i].get()
                && ring.ready()
            {
                if self
                    .busy
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    return Ok(None);
                }
                // From this ring on, under the flag: another poller may have emptied it since,
                // and then no other ready ring is passed over. (Written out here rather than
                // through `take_from`: this is the call loop's path, kept inline.)
                let r = (0..n)
                    .map(|k| if i + k >= n { i + k - n } else { i + k })
                    .find_map(|j| {
                        let ring = self.rings[j].get()?;
                        self.take(ring, j).transpose()
                    })
                    .transpose();
                self.busy.store(false, Ordering::Release);
                return r;
            }
            i += 1;
        }
        Ok(None)
    }

    /// [`CompletionQueue::poll`], but waiting for the poll flag rather than giving up when
    /// another poller holds it. The last look before sleeping must be this one: a holder that
    /// takes only its own completion wakes nobody, so a completion it passed over while we
    /// gave up would wait for the next tick.
    fn poll_waiting(&self) -> Result<Option<Completion>, TransportError> {
        let n = self.count.load(Ordering::Acquire);
        self.lock_busy();
        let r = self.take_from(self.next.load(Ordering::Relaxed), n);
        self.busy.store(false, Ordering::Release);
        r
    }

    /// Under the poll flag: the first completion of the `n` rings from ring `i` on (another
    /// poller may have emptied the one that looked ready, and then no other ready ring is
    /// passed over).
    fn take_from(&self, i: usize, n: usize) -> Result<Option<Completion>, TransportError> {
        let i = if i >= n { 0 } else { i };
        (0..n)
            .map(|k| if i + k >= n { i + k - n } else { i + k })
            .find_map(|j| {
                let ring = self.rings[j].get()?;
                self.take(ring, j).transpose()
            })
            .transpose()
    }

    /// Under the poll flag: consumes the next entry of `ring` (endpoint `i`), if it is still
    /// there (another poller may have taken it since we looked).
    // Inline in `poll` (the call loop's path), although `take_from` calls it too.
    #[inline(always)]
    fn take(&self, ring: &RecvRing, i: usize) -> Result<Option<Completion>, TransportError> {
        let Some((head, e)) = ring.published() else {
            return Ok(None);
        };
        let c = Completion {
            endpoint: i as u32,
            imm: e.imm.load(Ordering::Relaxed),
            len: e.len.load(Ordering::Relaxed),
        };
        let place = e.place.load(Ordering::Relaxed);
        let placed = if place == 0 {
            Ok(())
        } else {
            ring.place_inline(&e, place, c.len)
        };
        // Consumed either way: the entry's slot is free again for the producer.
        let head = head.wrapping_add(1);
        ring.head.store(head, Ordering::Relaxed);
        ring.view.head().store(head, Ordering::Release);
        self.next.store(i + 1, Ordering::Relaxed);
        // A peer that stamps an entry we cannot place breaks the protocol on this endpoint.
        placed.map_err(|why| TransportError::PeerBroke {
            endpoint: i as u32,
            why,
        })?;
        Ok(Some(c))
    }

    /// Returns the first endpoint whose peer hung up and whose ring is drained (marking it so
    /// it is reported once).
    fn dead_peer(&self) -> Option<u32> {
        let n = self.count.load(Ordering::Acquire);
        for i in 0..n {
            let Some(ring) = self.rings[i].get() else {
                continue;
            };
            // The hang-up first, then the ring: a peer publishes before it hangs up, so once
            // the hang-up is seen every entry it published is too (the other way round, an
            // entry published between the two looks would be passed over and reported lost).
            if !ring.gone_reported.load(Ordering::Relaxed)
                && sys::peer_hung_up(ring.liveness.as_fd())
                && !ring.ready()
            {
                ring.gone_reported.store(true, Ordering::Relaxed);
                return Some(i as u32);
            }
        }
        None
    }

    /// Waits up to `timeout` for a completion, sleeping on the doorbell. A peer that hangs up
    /// is reported as [`TransportError::PeerGone`] (once), after its pending completions.
    /// May return `None` early when [`CompletionQueue::interrupt`] is called.
    pub fn wait(&self, timeout: Duration) -> Result<Option<Completion>, TransportError> {
        self.wait_since(self.epoch(), timeout)
    }

    /// The doorbell's sequence number: moved by [`CompletionQueue::interrupt`], and by
    /// completions pushed while someone sleeps.
    pub fn epoch(&self) -> u64 {
        u64::from(self.doorbell.seq().load(Ordering::SeqCst))
    }

    /// [`CompletionQueue::wait`], returning early once the doorbell has moved from `epoch`
    /// (read with [`CompletionQueue::epoch`] before the caller's last check).
    pub fn wait_since(
        &self,
        epoch: u64,
        timeout: Duration,
    ) -> Result<Option<Completion>, TransportError> {
        self.wait_ticking(epoch, timeout, LIVENESS_TICK)
    }

    /// [`CompletionQueue::wait_since`], sleeping at most `tick` at a time (to notice a peer's
    /// hang-up, which rings nothing).
    fn wait_ticking(
        &self,
        epoch: u64,
        timeout: Duration,
        tick: Duration,
    ) -> Result<Option<Completion>, TransportError> {
        // The doorbell word is 32 bits: the epoch is its value.
        let seq = epoch as u32;
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
            let bell = &self.doorbell;
            if bell.seq().load(Ordering::SeqCst) != seq {
                // Rung since the caller's epoch: an interrupt, or a completion.
                return self.poll();
            }
            bell.sleepers().fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let got = self.poll_waiting();
            if !matches!(got, Ok(None)) {
                bell.sleepers().fetch_sub(1, Ordering::SeqCst);
                return got;
            }
            sys::futex_wait(bell.seq(), seq, (deadline - now).min(tick));
            bell.sleepers().fetch_sub(1, Ordering::SeqCst);
            if bell.seq().load(Ordering::SeqCst) != seq {
                // Rung: a completion arrived, or `interrupt` asked waiters to look around.
                return self.poll();
            }
        }
    }

    /// Wakes every thread sleeping in [`CompletionQueue::wait`] (they re-check and may return
    /// `None` early). Used when one thread handled a completion another is waiting for.
    pub fn interrupt(&self) {
        self.doorbell.interrupt();
    }

    /// Number of attached endpoints.
    pub fn endpoints(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// One connected endpoint: sends into the peer's regions and completion queue.
pub struct ShmEndpoint {
    id: u32,
    local: Vec<Arc<Region>>,
    remote: Vec<(u32, Mapping)>,
    send: SendRing,
    peer_bell: Doorbell,
    peer_fds: Vec<OwnedFd>,
}

impl std::fmt::Debug for ShmEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmEndpoint")
            .field("id", &self.id)
            .field(
                "local",
                &self
                    .local
                    .iter()
                    .map(|r| (r.key(), r.len()))
                    .collect::<Vec<_>>(),
            )
            .field(
                "remote",
                &self
                    .remote
                    .iter()
                    .map(|(k, m)| (*k, m.len()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Which end of a connection: `Active` creates the shared control block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Creates and sends the control block (the connecting client).
    Active,
    /// Receives the control block (the accepting executor).
    Passive,
}

/// Takes a short-held flag lock: spins, then yields (never sleeps: holders only run a few
/// instructions).
fn spin_lock(flag: &AtomicBool) {
    let mut spins = 0u32;
    while flag
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins > 64 {
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
}

/// Checks that a received control block is fresh: both heads zero, no entry published.
fn check_fresh(control: &OwnedFd) -> Result<(), TransportError> {
    if sys::file_len(control.as_fd())? < CONTROL_BYTES {
        return Err(TransportError::Protocol("control block too small".into()));
    }
    let map = Mapping::new(control.as_fd(), CONTROL_BYTES)?;
    for off in [0, RING_BYTES] {
        let view = RingView {
            base: map.as_ptr().wrapping_add(off),
        };
        if view.head().load(Ordering::Acquire) != 0
            || view.entry(0).seq.load(Ordering::Acquire) != 0
        {
            return Err(TransportError::Protocol("control block not fresh".into()));
        }
    }
    Ok(())
}

/// Most bytes of a handshake message (a library's function table travels in the welcome).
const MAX_MESSAGE: usize = super::MAX_CONTROL_MESSAGE;

/// Sends a length-prefixed JSON message with descriptors attached.
pub fn send_message<T: Serialize>(
    stream: &UnixStream,
    msg: &T,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> Result<(), TransportError> {
    send_message_by(stream, msg, fds, None)
}

/// As [`send_message`], but all of it by `deadline` if one is given, however slowly the peer
/// reads (the stream's write timeout is changed on the way).
pub fn send_message_by<T: Serialize>(
    stream: &UnixStream,
    msg: &T,
    fds: &[std::os::fd::BorrowedFd<'_>],
    deadline: Option<Instant>,
) -> Result<(), TransportError> {
    let body = serde_json::to_vec(msg)
        .map_err(|e| TransportError::Protocol(format!("encoding message: {e}")))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    sys::send_with_fds_by(stream, &frame, fds, deadline)?;
    Ok(())
}

/// Receives a length-prefixed JSON message and the descriptors that came with it.
pub fn recv_message<T: for<'de> Deserialize<'de>>(
    stream: &UnixStream,
) -> Result<(T, Vec<OwnedFd>), TransportError> {
    recv_message_by(stream, None)
}

/// As [`recv_message`], but the whole message by `deadline` if one is given, however the peer
/// paces its bytes (the stream's read timeout is changed on the way).
pub fn recv_message_by<T: for<'de> Deserialize<'de>>(
    stream: &UnixStream,
    deadline: Option<Instant>,
) -> Result<(T, Vec<OwnedFd>), TransportError> {
    let mut len = [0u8; 4];
    let mut fds = sys::recv_with_fds_by(stream, &mut len, deadline)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(TransportError::Protocol(format!(
            "message of {len} bytes (at most {MAX_MESSAGE})"
        )));
    }
    let mut body = vec![0u8; len];
    // The descriptors of the length and of the body count together.
    let left = sys::MAX_FDS.saturating_sub(fds.len());
    fds.extend(sys::recv_with_fds_up_to(stream, &mut body, deadline, left)?);
    let msg = serde_json::from_slice(&body)
        .map_err(|e| TransportError::Protocol(format!("malformed message: {e}")))?;
    Ok((msg, fds))
}

impl ShmEndpoint {
    /// Connects one endpoint over `stream` (both sides call this, with opposite `side`s):
    /// exchanges region descriptors and doorbells, and attaches the receive ring to `cq`.
    pub fn connect(
        stream: &UnixStream,
        side: Side,
        local: Vec<Arc<Region>>,
        cq: &Arc<CompletionQueue>,
    ) -> Result<ShmEndpoint, TransportError> {
        ShmEndpoint::connect_by(stream, side, local, cq, None)
    }

    /// As [`ShmEndpoint::connect`], but the exchange of offers must be over by `deadline` if
    /// one is given, however the peer paces its bytes.
    pub fn connect_by(
        stream: &UnixStream,
        side: Side,
        local: Vec<Arc<Region>>,
        cq: &Arc<CompletionQueue>,
        deadline: Option<Instant>,
    ) -> Result<ShmEndpoint, TransportError> {
        if local.len() > MAX_REGIONS {
            return Err(TransportError::Protocol(format!(
                "at most {MAX_REGIONS} regions per endpoint"
            )));
        }
        // Staging regions are sources only: neither named nor passed to the peer.
        let offered: Vec<Arc<Region>> = local.iter().filter(|r| r.is_offered()).cloned().collect();
        let offer = Offer {
            regions: offered.iter().map(|r| (r.key(), r.len() as u64)).collect(),
            control: side == Side::Active,
        };
        let send_offer = |control: Option<&OwnedFd>| {
            let mut fds = vec![cq.doorbell_fd.as_fd()];
            if let Some(c) = control {
                fds.push(c.as_fd());
            }
            fds.extend(offered.iter().map(|r| r.fd().as_fd()));
            send_message_by(stream, &offer, &fds, deadline)
        };
        let (peer, mut fds, control_fd) = match side {
            Side::Active => {
                let control = sys::memfd("rfaas-control", CONTROL_BYTES)?;
                send_offer(Some(&control))?;
                let (peer, fds): (Offer, _) = recv_message_by(stream, deadline)?;
                (peer, fds, control)
            }
            Side::Passive => {
                let (peer, mut fds): (Offer, Vec<OwnedFd>) = recv_message_by(stream, deadline)?;
                if !peer.control || fds.len() < 2 {
                    return Err(TransportError::Protocol(
                        "active side sent no control block".into(),
                    ));
                }
                let control = fds.remove(1);
                // Validate before answering: once our offer is out, the active side may start
                // publishing completions.
                check_fresh(&control)?;
                send_offer(None)?;
                (peer, fds, control)
            }
        };
        if peer.regions.len() > MAX_REGIONS || fds.len() != 1 + peer.regions.len() {
            return Err(TransportError::Protocol(format!(
                "peer offered {} regions with {} descriptors",
                peer.regions.len(),
                fds.len()
            )));
        }
        if sys::file_len(control_fd.as_fd())? < CONTROL_BYTES {
            return Err(TransportError::Protocol("control block too small".into()));
        }
        let control = Arc::new(Mapping::new(control_fd.as_fd(), CONTROL_BYTES)?);
        let bell_fd = fds.remove(0);
        let peer_bell = Doorbell {
            map: Mapping::new(bell_fd.as_fd(), DOORBELL_BYTES)?,
        };
        let mut remote = Vec::with_capacity(peer.regions.len());
        for ((key, len), fd) in peer.regions.iter().zip(&fds) {
            let len = usize::try_from(*len)
                .ok()
                .filter(|l| *l <= MAX_REGION)
                .ok_or_else(|| TransportError::Protocol(format!("region {key} too large")))?;
            if remote.iter().any(|(k, _)| k == key) {
                return Err(TransportError::Protocol(format!(
                    "region key {key} offered twice"
                )));
            }
            remote.push((*key, Mapping::new(fd.as_fd(), len)?));
        }
        // Active side sends on ring 0 and receives on ring 1; passive the other way round.
        let (send_off, recv_off) = if side == Side::Active {
            (0, RING_BYTES)
        } else {
            (RING_BYTES, 0)
        };
        // SAFETY (offsets): both rings lie within the CONTROL_BYTES mapping.
        let send_view = RingView {
            base: control.as_ptr().wrapping_add(send_off),
        };
        let recv_view = RingView {
            base: control.as_ptr().wrapping_add(recv_off),
        };
        let send = SendRing {
            tail: AtomicU32::new(0),
            cached_head: AtomicU32::new(0),
            lock: AtomicBool::new(false),
            view: send_view,
            _control: control.clone(),
        };
        let recv = RecvRing {
            head: AtomicU32::new(0),
            view: recv_view,
            _control: control,
            liveness: stream.try_clone()?,
            gone_reported: AtomicBool::new(false),
            local: offered,
        };
        let id = cq.attach(recv)?;
        Ok(ShmEndpoint {
            id,
            local,
            remote,
            send,
            peer_bell,
            peer_fds: fds,
        })
    }

    /// This endpoint's index in its completion queue (`Completion::endpoint`).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The local region with `key`.
    pub fn local_region(&self, key: u32) -> Option<&Arc<Region>> {
        self.local.iter().find(|r| r.key() == key)
    }

    fn remote(&self, key: u32) -> Result<&Mapping, TransportError> {
        self.remote
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, m)| m)
            .ok_or_else(|| super::unknown_region("remote", key))
    }

    /// A pointer to `len` bytes of the peer's region `key` at `offset`, for writing in place
    /// (zero copy); follow with [`ShmEndpoint::signal`]. The peer may access the same memory
    /// concurrently: write through raw pointers only.
    pub fn window(&self, key: u32, offset: usize, len: usize) -> Result<*mut u8, TransportError> {
        let m = self.remote(key)?;
        check_range("remote", key, offset, len, m.len())?;
        Ok(m.as_ptr().wrapping_add(offset))
    }

    /// Takes the cache line of the next completion entry for writing, without waiting for it
    /// (see [`super::Endpoint::expect_send`]). The peer polls that line: a send that follows
    /// soon after (and the peer leaving the line alone until then) finds it already ours, and
    /// the write that publishes the entry does not stall on a transfer. A hint: the tail is
    /// read without the send lock, and a stale one only prefetches another entry.
    pub fn expect_send(&self) {
        let ring = &self.send;
        sys::prefetch_for_write(ring.view.entry(ring.tail.load(Ordering::Relaxed)).seq);
    }

    /// Delivers `(imm, len)` for bytes already placed through [`ShmEndpoint::window`].
    pub fn signal(&self, imm: u32, len: usize) -> Result<(), TransportError> {
        self.push(imm, len, 0, |_| {})
    }

    /// Copies `bytes` (from any memory) into the peer's region `key` at `offset` and delivers
    /// `(imm, bytes.len())`, like an inline RDMA send. Up to [`MAX_INLINE`] bytes bound for a
    /// 64-byte aligned offset travel inside the ring entry (the peer's poll places them): the
    /// peer then reads one cache line instead of two. Other writes are copied into the peer's
    /// region directly.
    pub fn write_inline(
        &self,
        bytes: &[u8],
        key: u32,
        offset: usize,
        imm: u32,
    ) -> Result<(), TransportError> {
        let dst = self.window(key, offset, bytes.len())?;
        match place_word(key, offset).filter(|_| bytes.len() <= MAX_INLINE) {
            Some(place) => self.push(imm, bytes.len(), place, |entry| {
                // SAFETY: at most MAX_INLINE bytes into the entry's inline area, inside the
                // live control mapping; `bytes` is our own memory, not the ring.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), entry, bytes.len()) }
            }),
            None => self.push(imm, bytes.len(), 0, |_| {
                // SAFETY: `dst` has `bytes.len()` bytes in bounds of the peer's live mapping
                // (checked by `window`); `bytes` is our own memory, another file.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) }
            }),
        }
    }

    /// Under the send lock: checks for room, runs `copy` (the data copy; given the entry's
    /// inline area), stamps the entry with `place` (0, or an inline destination); then rings the
    /// peer's doorbell if it sleeps.
    fn push(
        &self,
        imm: u32,
        len: usize,
        place: u32,
        copy: impl FnOnce(*mut u8),
    ) -> Result<(), TransportError> {
        let len = u32::try_from(len)
            .map_err(|_| TransportError::Protocol("write larger than 4 GiB".into()))?;
        let ring = &self.send;
        spin_lock(&ring.lock);
        let result = self.stamp(imm, len, place, copy);
        ring.lock.store(false, Ordering::Release);
        if result.is_ok() {
            self.peer_bell.ring_after_seqcst();
        }
        result
    }

    /// [`ShmEndpoint::push`]'s part under the send lock.
    fn stamp(
        &self,
        imm: u32,
        len: u32,
        place: u32,
        copy: impl FnOnce(*mut u8),
    ) -> Result<(), TransportError> {
        let ring = &self.send;
        let tail = ring.tail.load(Ordering::Relaxed);
        if tail.wrapping_sub(ring.cached_head.load(Ordering::Relaxed)) >= RING_CAPACITY {
            let head = ring.view.head().load(Ordering::Acquire);
            let used = tail.wrapping_sub(head);
            if used > RING_CAPACITY {
                return Err(TransportError::Protocol(format!(
                    "peer reported an impossible queue head ({used} in use)"
                )));
            }
            ring.cached_head.store(head, Ordering::Relaxed);
            if used == RING_CAPACITY {
                return Err(TransportError::QueueFull);
            }
        }
        let e = ring.view.entry(tail);
        copy(e.data);
        e.imm.store(imm, Ordering::Relaxed);
        e.len.store(len, Ordering::Relaxed);
        e.place.store(place, Ordering::Relaxed);
        // SeqCst (a locked exchange on x86) so the doorbell check in `push` needs no fence.
        e.seq.swap(tail.wrapping_add(1), Ordering::SeqCst);
        ring.tail.store(tail.wrapping_add(1), Ordering::Relaxed);
        Ok(())
    }

    /// Descriptors the peer sent (its regions), kept open for the endpoint's life.
    pub fn peer_descriptors(&self) -> usize {
        self.peer_fds.len()
    }
}

impl super::Endpoint for ShmEndpoint {
    fn id(&self) -> u32 {
        self.id
    }
    fn remote_len(&self, key: u32) -> Option<usize> {
        self.remote(key).ok().map(Mapping::len)
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
        let local = super::local_range(&self.local, local_key, local_off, len)?;
        let dst = self.window(remote_key, remote_off, len)?;
        self.push(imm, len, 0, |_| {
            // SAFETY: both ranges are in bounds of live mappings (checked above); they belong
            // to different memory files, so they do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(local.as_ptr().add(local_off), dst, len) };
        })
    }
    fn write(
        &self,
        local_key: u32,
        local_off: usize,
        len: usize,
        remote_key: u32,
        remote_off: usize,
    ) -> Result<(), TransportError> {
        let local = super::local_range(&self.local, local_key, local_off, len)?;
        let dst = self.window(remote_key, remote_off, len)?;
        // SAFETY: both ranges are in bounds of live mappings (checked above); they belong to
        // different memory files, so they do not overlap. A later entry's publishing exchange
        // orders the copy before the peer sees that entry.
        unsafe { std::ptr::copy_nonoverlapping(local.as_ptr().add(local_off), dst, len) };
        Ok(())
    }
    fn window(
        &self,
        key: u32,
        offset: usize,
        len: usize,
    ) -> Result<Option<*mut u8>, TransportError> {
        ShmEndpoint::window(self, key, offset, len).map(Some)
    }
    fn signal(&self, imm: u32, len: usize) -> Result<(), TransportError> {
        ShmEndpoint::signal(self, imm, len)
    }
    fn expect_send(&self) {
        ShmEndpoint::expect_send(self)
    }
    fn max_inline(&self) -> usize {
        MAX_INLINE
    }
    fn write_inline(
        &self,
        bytes: &[u8],
        remote_key: u32,
        remote_off: usize,
        imm: u32,
    ) -> Result<(), TransportError> {
        ShmEndpoint::write_inline(self, bytes, remote_key, remote_off, imm)
    }
}

impl super::Queue for CompletionQueue {
    fn poll(&self) -> Result<Option<Completion>, TransportError> {
        CompletionQueue::poll(self)
    }
    fn epoch(&self) -> u64 {
        CompletionQueue::epoch(self)
    }
    fn wait_since(
        &self,
        epoch: u64,
        timeout: Duration,
    ) -> Result<Option<Completion>, TransportError> {
        CompletionQueue::wait_since(self, epoch, timeout)
    }
    fn interrupt(&self) {
        CompletionQueue::interrupt(self)
    }
}

#[cfg(test)]
mod tests;
