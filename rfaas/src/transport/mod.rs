//! The data-plane interface, shaped like RDMA verbs so every fabric maps onto it thinly.
//!
//! - A [`Region`] is registered memory with a key (like an MR and its rkey).
//! - An endpoint is a connected pair half (like an RC queue pair). Connecting exchanges region
//!   descriptors over the control plane.
//! - [`Endpoint::write_with_imm`] copies local bytes into the peer's region at an offset and
//!   delivers a 32-bit immediate plus the byte count to the peer's completion queue.
//! - A completion queue ([`Queue`]; [`shm::CompletionQueue`], [`tcp::TcpQueue`]) collects the completions of any number of
//!   endpoints; it is polled (non-blocking) or waited on (blocking, for warm mode).
//!
//! Backends: [`shm`] (one host; the default), [`tcp`] (any network) and `verbs` (RDMA, cargo
//! feature `verbs`).

pub mod shm;
pub mod tcp;
#[cfg(feature = "verbs")]
pub mod verbs;

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

/// One delivered write-with-immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Which endpoint of the completion queue it arrived on (its index at attach time).
    pub endpoint: u32,
    /// The 32-bit immediate.
    pub imm: u32,
    /// Bytes the peer placed with it.
    pub len: u32,
}

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The key names no region of this endpoint or its peer.
    #[error("no {side} region with key {key}")]
    UnknownRegion {
        /// `"local"` or `"remote"`.
        side: &'static str,
        /// The key.
        key: u32,
    },
    /// Offset and length fall outside the region.
    #[error("{side} region {key}: {len} bytes at offset {offset} exceed its {region_len} bytes")]
    OutOfBounds {
        /// `"local"` or `"remote"`.
        side: &'static str,
        /// The key.
        key: u32,
        /// Requested offset.
        offset: usize,
        /// Requested length.
        len: usize,
        /// Region length.
        region_len: usize,
    },
    /// The peer's completion queue has no room (like an RNR condition; RDMA: within the
    /// caller's patience, or the endpoint's send patience), or (TCP) its connection had no
    /// room for a write within the caller's patience, nothing of it sent: retry later.
    #[error("peer completion queue full")]
    QueueFull,
    /// The peer stopped taking a write midway, for longer than the caller's patience: nothing
    /// sent after a partial write would be framed right, so the connection is closed (its
    /// queue reports the endpoint's peer gone).
    #[error("peer of endpoint {endpoint} stopped taking a write midway")]
    Stalled {
        /// The endpoint whose connection is closed.
        endpoint: u32,
    },
    /// The peer closed the connection or its process ended.
    #[error("peer of endpoint {endpoint} disconnected")]
    PeerGone {
        /// The endpoint whose peer is gone.
        endpoint: u32,
    },
    /// The peer of an endpoint broke the protocol, and the endpoint is as good as gone. TCP: a
    /// frame naming no region or reaching past one; the connection is closed and this is
    /// reported once, like [`TransportError::PeerGone`]. Shared memory: a ring entry whose
    /// inline bytes are bound for a place we never offered; reported for each such entry (the
    /// ring goes on).
    #[error("peer of endpoint {endpoint} broke the protocol: {why}")]
    PeerBroke {
        /// The endpoint whose peer broke the protocol.
        endpoint: u32,
        /// What it sent.
        why: String,
    },
    /// The peer broke the protocol (corrupt queue indices, bad handshake).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A system call failed. (Its message is part of this one, so it is no `source` as well:
    /// a report of the whole chain would say it twice.)
    #[error("transport i/o error: {0}")]
    Io(std::io::Error),
    /// The fabric is not available on this host (e.g. no RDMA device), with the reason.
    #[error("fabric unavailable: {0}")]
    Unavailable(String),
    /// An RDMA verbs operation failed.
    #[error("RDMA: {0}")]
    Rdma(String),
}

impl From<std::io::Error> for TransportError {
    fn from(e: std::io::Error) -> Self {
        TransportError::Io(e)
    }
}

/// Default slice of a blocking wait after which liveness of peers is re-checked.
pub const LIVENESS_TICK: Duration = Duration::from_millis(20);

/// Registered memory: a memfd mapped read-write, identified by a key.
#[derive(Debug)]
pub struct Region {
    key: u32,
    fd: OwnedFd,
    map: crate::sys::Mapping,
    offered: bool,
}

impl Region {
    /// Creates a zero-filled region of `len` bytes, offered to peers: an endpoint that has it
    /// among its local regions lets the peer write it (and, on one host, map it).
    pub fn new(key: u32, len: usize) -> Result<Region, TransportError> {
        Region::create(key, len, true)
    }

    /// Creates a zero-filled staging region of `len` bytes: a local source of writes that is
    /// never offered to a peer. Endpoints send from it, but no peer learns of it, maps it or
    /// may write into it (a frame or RDMA write addressed to it is refused; over RDMA it is
    /// registered without remote access).
    pub fn staging(key: u32, len: usize) -> Result<Region, TransportError> {
        Region::create(key, len, false)
    }

    fn create(key: u32, len: usize, offered: bool) -> Result<Region, TransportError> {
        let fd = crate::sys::memfd(&format!("rfaas-region-{key}"), len)?;
        let map = crate::sys::Mapping::new(fd.as_fd(), len)?;
        Ok(Region {
            key,
            fd,
            map,
            offered,
        })
    }

    /// Whether peers may write this region (see [`Region::staging`]).
    pub fn is_offered(&self) -> bool {
        self.offered
    }

    /// The key peers use to address it.
    pub fn key(&self) -> u32 {
        self.key
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Start address (page aligned). Peers may write this memory at any time.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// The memory file behind the region (shared with peers on one host).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    fn check(&self, offset: usize, len: usize) -> Result<(), TransportError> {
        check_range("local", self.key, offset, len, self.len())
    }

    /// Copies `bytes` into the region at `offset`.
    pub fn write(&self, offset: usize, bytes: &[u8]) -> Result<(), TransportError> {
        self.check(offset, bytes.len())?;
        // SAFETY: in bounds (checked); raw copy into shared memory, which any bytes may occupy.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.as_ptr().add(offset), bytes.len())
        };
        Ok(())
    }

    /// Copies bytes out of the region at `offset`.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), TransportError> {
        self.check(offset, out.len())?;
        // SAFETY: in bounds (checked); a raw copy out of shared memory.
        unsafe {
            std::ptr::copy_nonoverlapping(self.as_ptr().add(offset), out.as_mut_ptr(), out.len())
        };
        Ok(())
    }
}

/// The local region `key`, checked to hold `[offset, offset + len)`.
pub(crate) fn local_range(
    regions: &[std::sync::Arc<Region>],
    key: u32,
    offset: usize,
    len: usize,
) -> Result<&std::sync::Arc<Region>, TransportError> {
    let region = regions
        .iter()
        .find(|r| r.key() == key)
        .ok_or_else(|| unknown_region("local", key))?;
    check_range("local", key, offset, len, region.len())?;
    Ok(region)
}

pub(crate) fn check_range(
    side: &'static str,
    key: u32,
    offset: usize,
    len: usize,
    region_len: usize,
) -> Result<(), TransportError> {
    match offset.checked_add(len) {
        Some(end) if end <= region_len => Ok(()),
        _ => Err(TransportError::OutOfBounds {
            side,
            key,
            offset,
            len,
            region_len,
        }),
    }
}

/// Checks the pieces of a gather write of `len` bytes ([`Endpoint::write_gather`]).
pub(crate) fn check_pieces(len: usize, pieces: &[(usize, &[u8])]) -> Result<(), TransportError> {
    if pieces.len() > crate::Gather::MAX_PIECES {
        return Err(TransportError::Protocol(format!(
            "gather write of {} pieces (at most {})",
            pieces.len(),
            crate::Gather::MAX_PIECES
        )));
    }
    let mut next = 0usize;
    for &(at, bytes) in pieces {
        let end = at.checked_add(bytes.len());
        next = end.filter(|&end| at >= next && end <= len).ok_or_else(|| {
            TransportError::Protocol(format!(
                "gather piece of {} bytes at {at} overlaps another or leaves the {len}-byte write",
                bytes.len()
            ))
        })?;
    }
    Ok(())
}

/// [`Endpoint::write_many_with_imm`] as separate writes, each checked before it is sent.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_one_by_one<E: Endpoint + ?Sized>(
    ep: &E,
    local_key: u32,
    writes: &[(usize, usize, usize)],
    local_off: usize,
    len: usize,
    remote_key: u32,
    remote_off: usize,
    imm: u32,
) -> Result<(), TransportError> {
    for &(off, n, roff) in writes {
        ep.write(local_key, off, n, remote_key, roff)?;
    }
    ep.write_with_imm(local_key, local_off, len, remote_key, remote_off, imm)
}

/// A connected endpoint (like an RC queue pair).
pub trait Endpoint: Send + Sync {
    /// Index of this endpoint in its completion queue.
    fn id(&self) -> u32;
    /// Length of the peer's region `key`, if it offered one.
    fn remote_len(&self, key: u32) -> Option<usize>;
    /// Copies local bytes into the peer's region and delivers `(imm, len)` to its queue.
    /// Invalid keys, offsets and lengths are rejected before anything is written.
    fn write_with_imm(
        &self,
        local_key: u32,
        local_off: usize,
        len: usize,
        remote_key: u32,
        remote_off: usize,
        imm: u32,
    ) -> Result<(), TransportError>;
    /// Copies `len` local bytes at `local_off` into the peer's region `remote_key` at
    /// `remote_off`, like an RDMA write without immediate: the peer's queue sees nothing.
    /// Writes on one endpoint arrive in the order they were made, so a later
    /// [`Endpoint::write_with_imm`] on the same endpoint announces this one too. Checked like
    /// [`Endpoint::write_with_imm`], before anything is written.
    fn write(
        &self,
        local_key: u32,
        local_off: usize,
        len: usize,
        remote_key: u32,
        remote_off: usize,
    ) -> Result<(), TransportError>;
    /// [`Endpoint::write`] of each local range `(local_off, len, remote_off)` of `writes`,
    /// then [`Endpoint::write_with_imm`] of `len` bytes at `local_off` to `remote_off`, all
    /// from region `local_key` into the peer's `remote_key`: the peer sees the one completion
    /// with every write in place. Fabrics may send them in one go (TCP: one vectored send of
    /// all the frames, every range checked before anything is sent); by default they are
    /// sent one by one, each checked before it is sent.
    #[allow(clippy::too_many_arguments)]
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
        write_one_by_one(
            self, local_key, writes, local_off, len, remote_key, remote_off, imm,
        )
    }
    /// A pointer into the peer's region for writing in place, when the fabric maps peer
    /// memory (shared memory); `None` otherwise. Bounds are checked.
    fn window(
        &self,
        key: u32,
        offset: usize,
        len: usize,
    ) -> Result<Option<*mut u8>, TransportError>;
    /// Delivers `(imm, len)` for bytes placed through [`Endpoint::window`].
    fn signal(&self, imm: u32, len: usize) -> Result<(), TransportError>;
    /// A hint that this side sends on the endpoint soon (a worker that has just taken an
    /// invocation off its queue): the fabric may prepare. Shared memory takes the cache line
    /// of the next completion entry for writing while the function runs, so the answer does
    /// not wait for it to come over from the peer, which polls that line. Other fabrics do
    /// nothing.
    fn expect_send(&self) {}
    /// Whether [`Endpoint::write_gather`] sends pieces from any memory (TCP's vectored
    /// writes). Where it does not, callers encode everything into their registered memory
    /// and write that.
    fn gathers(&self) -> bool {
        false
    }
    /// [`Endpoint::write_with_imm`] of `len` local bytes at `local_off`, except that each
    /// piece `(at, bytes)` stands for the `bytes.len()` bytes at `local_off + at`: those are
    /// sent from `bytes` (any memory, registered or not) instead of the region. At most
    /// [`crate::Gather::MAX_PIECES`] pieces, in increasing order, not overlapping, inside the
    /// `len` bytes; anything else is rejected before anything is sent. Fabrics that do not
    /// [`Endpoint::gathers`] take no pieces.
    ///
    /// `patience` bounds a wait for room, on a fabric whose sends wait for it (TCP, when the
    /// peer stops reading or another sender holds the connection, both waits together; RDMA,
    /// while the peer's receive queue is full, up to `VerbsConfig::send_patience_ms` without
    /// one): if none of the write went out by then, [`TransportError::QueueFull`], the
    /// connection intact; if part of it did, TCP waits at least 10 s without progress before
    /// [`TransportError::Stalled`] and closing the connection. Shared memory never waits for
    /// room, and ignores it.
    #[allow(clippy::too_many_arguments)]
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
        let _ = patience;
        if pieces.is_empty() {
            return self.write_with_imm(local_key, local_off, len, remote_key, remote_off, imm);
        }
        Err(TransportError::Unavailable(
            "this fabric has no gather writes".into(),
        ))
    }
    /// Most bytes [`Endpoint::write_inline`] takes; 0 when the fabric has no inline writes.
    fn max_inline(&self) -> usize {
        0
    }
    /// Copies `bytes` (up to [`Endpoint::max_inline`], from any memory, registered or not)
    /// into the peer's region `remote_key` at `remote_off` and delivers
    /// `(imm, bytes.len())`, like an RDMA write with `IBV_SEND_INLINE`. On shared memory a
    /// small write travels inside the completion entry, so the peer reads one cache line.
    fn write_inline(
        &self,
        bytes: &[u8],
        remote_key: u32,
        remote_off: usize,
        imm: u32,
    ) -> Result<(), TransportError> {
        let _ = (bytes, remote_key, remote_off, imm);
        Err(TransportError::Unavailable(
            "this fabric has no inline writes".into(),
        ))
    }
}

/// A completion queue collecting the completions of several endpoints.
pub trait Queue: Send + Sync {
    /// The next completion, without blocking.
    fn poll(&self) -> Result<Option<Completion>, TransportError>;
    /// The next completion, sleeping up to `timeout`; a hung-up peer is an error, once.
    fn wait(&self, timeout: Duration) -> Result<Option<Completion>, TransportError> {
        self.wait_since(self.epoch(), timeout)
    }
    /// A count that [`Queue::interrupt`] moves (arriving completions may move it too). Read
    /// it, make a last check of what the caller waits for, then sleep with
    /// [`Queue::wait_since`]: an interrupt between the check and the sleep is not lost.
    fn epoch(&self) -> u64;
    /// [`Queue::wait`], but returning early (with what a poll finds, or `None`) once the
    /// epoch is no longer `epoch`, even if it moved before this call.
    fn wait_since(
        &self,
        epoch: u64,
        timeout: Duration,
    ) -> Result<Option<Completion>, TransportError>;
    /// Wakes the threads sleeping in [`Queue::wait`] (they may return `None` early).
    fn interrupt(&self);
}

/// Largest control-plane message (JSON), in bytes: room for the welcome of a library with the
/// loader's maximum of functions and name lengths would be hundreds of MiB, so libraries are
/// bounded by this instead (an executor refuses to serve a library whose welcome exceeds it).
pub const MAX_CONTROL_MESSAGE: usize = 16 << 20;

/// The error for a region key that names nothing, built out of line when it happens (an
/// eagerly built one costs a drop of this large enum on every successful lookup).
#[cold]
#[inline(never)]
pub(crate) fn unknown_region(side: &'static str, key: u32) -> TransportError {
    TransportError::UnknownRegion { side, key }
}

/// Writes a length-prefixed (`u32`, little-endian) JSON control message.
pub fn send_json<T: serde::Serialize>(
    w: &mut impl std::io::Write,
    msg: &T,
) -> Result<(), TransportError> {
    let body = serde_json::to_vec(msg)
        .map_err(|e| TransportError::Protocol(format!("encoding message: {e}")))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)?;
    Ok(())
}

/// Reads a length-prefixed JSON control message (at most [`MAX_CONTROL_MESSAGE`] bytes).
pub fn recv_json<T: for<'de> serde::Deserialize<'de>>(
    r: &mut impl std::io::Read,
) -> Result<T, TransportError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_CONTROL_MESSAGE {
        return Err(TransportError::Protocol(format!(
            "message of {len} bytes (at most {MAX_CONTROL_MESSAGE})"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map_err(|e| TransportError::Protocol(format!("malformed message: {e}")))
}
