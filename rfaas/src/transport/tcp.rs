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
//! A reader thread per endpoint validates every frame against its own regions (an unknown key
//! or an out-of-bounds range ends the connection as a protocol violation), copies the bytes into
//! the region, and queues the completion. There is no zero-copy window: [`Endpoint::window`]
//! returns `None`.

use super::{Completion, Endpoint, Queue, Region, TransportError, check_range};
use crate::wire::Offer;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes of a write frame's header.
const FRAME_HEADER: usize = 20;
/// Completions a queue holds before the reader threads stop reading (back-pressure).
pub const QUEUE_CAPACITY: usize = 4096;

enum Event {
    Completion(Completion),
    Gone(u32),
    Broken(u32, String),
}

struct QueueState {
    events: VecDeque<Event>,
    endpoints: u32,
    /// Threads in `wait` / readers waiting for room: notified only when there are some
    /// (a condition variable's notify is a system call even with nobody waiting).
    waiters: usize,
    writers_blocked: usize,
}

/// Collects the completions of any number of TCP endpoints.
pub struct TcpQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
    room: Condvar,
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
            state: Mutex::new(QueueState {
                events: VecDeque::new(),
                endpoints: 0,
                waiters: 0,
                writers_blocked: 0,
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, e: Event) {
        let mut st = self.lock();
        while st.events.len() >= QUEUE_CAPACITY && matches!(e, Event::Completion(_)) {
            st.writers_blocked += 1;
            st = self.room.wait(st).unwrap_or_else(|e| e.into_inner());
            st.writers_blocked -= 1;
        }
        st.events.push_back(e);
        let wake = st.waiters > 0;
        drop(st);
        if wake {
            self.ready.notify_all();
        }
    }

    fn take(&self, st: &mut QueueState) -> Option<Result<Completion, TransportError>> {
        let e = st.events.pop_front()?;
        if st.writers_blocked > 0 {
            self.room.notify_one();
        }
        Some(match e {
            Event::Completion(c) => Ok(c),
            Event::Gone(endpoint) => Err(TransportError::PeerGone { endpoint }),
            Event::Broken(endpoint, why) => Err(TransportError::Protocol(format!(
                "endpoint {endpoint}: {why}"
            ))),
        })
    }
}

impl Queue for TcpQueue {
    fn poll(&self) -> Result<Option<Completion>, TransportError> {
        let mut st = self.lock();
        self.take(&mut st).transpose()
    }

    fn wait(&self, timeout: Duration) -> Result<Option<Completion>, TransportError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if let Some(r) = self.take(&mut st) {
                return r.map(Some);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            st.waiters += 1;
            let (guard, res) = self
                .ready
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            st.waiters -= 1;
            if !res.timed_out() && st.events.is_empty() {
                // Interrupted: let the caller look around.
                return Ok(None);
            }
        }
    }

    fn interrupt(&self) {
        self.ready.notify_all();
    }
}

/// One connected TCP endpoint.
pub struct TcpEndpoint {
    id: u32,
    writer: Mutex<TcpStream>,
    local: Vec<Arc<Region>>,
    remote: Vec<(u32, usize)>,
    reader: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TcpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpEndpoint")
            .field("id", &self.id)
            .field("remote", &self.remote)
            .finish()
    }
}

impl TcpEndpoint {
    /// Connects over `stream` (both sides call this): exchanges region descriptors, then starts
    /// the reader thread that delivers the peer's writes into `local` and completions to `cq`.
    pub fn connect(
        stream: TcpStream,
        local: Vec<Arc<Region>>,
        cq: &Arc<TcpQueue>,
    ) -> Result<TcpEndpoint, TransportError> {
        stream.set_nodelay(true)?;
        let offer = Offer {
            regions: local.iter().map(|r| (r.key(), r.len() as u64)).collect(),
            control: false,
        };
        let mut w = stream.try_clone()?;
        super::send_json(&mut w, &offer)?;
        let mut r = stream.try_clone()?;
        r.set_read_timeout(Some(Duration::from_secs(10)))?;
        let peer: Offer = super::recv_json(&mut r)?;
        r.set_read_timeout(None)?;
        let mut remote = Vec::new();
        for (key, len) in peer.regions {
            let len = usize::try_from(len)
                .map_err(|_| TransportError::Protocol("region too large".into()))?;
            if remote.iter().any(|(k, _)| *k == key) {
                return Err(TransportError::Protocol(format!(
                    "region key {key} offered twice"
                )));
            }
            remote.push((key, len));
        }
        let id = {
            let mut st = cq.lock();
            st.endpoints += 1;
            st.endpoints - 1
        };
        let reader = {
            let (cq, local) = (cq.clone(), local.clone());
            std::thread::Builder::new()
                .name(format!("rfaas-tcp-{id}"))
                .spawn(move || {
                    // Not on the caller's pinned core: a client spinning there for its answer
                    // would have to be preempted for every frame.
                    crate::sys::unpin();
                    read_loop(r, id, &local, &cq)
                })?
        };
        Ok(TcpEndpoint {
            id,
            writer: Mutex::new(w),
            local,
            remote,
            reader: Some(reader),
        })
    }
}

impl TcpEndpoint {
    /// A handle on the connection (to shut it down from elsewhere).
    pub fn stream(&self) -> std::io::Result<TcpStream> {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_clone()
    }
}

/// Writes a frame's header and payload with as few system calls as the kernel allows (one
/// segment for small frames, instead of two that each wake the peer's reader).
fn write_all_vectored(w: &mut TcpStream, header: &[u8], data: &[u8]) -> std::io::Result<()> {
    let mut bufs = [std::io::IoSlice::new(header), std::io::IoSlice::new(data)];
    let mut bufs = &mut bufs[..];
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads write frames until the peer closes or breaks the protocol.
fn read_loop(mut stream: TcpStream, id: u32, local: &[Arc<Region>], cq: &TcpQueue) {
    let event = loop {
        let mut h = [0u8; FRAME_HEADER];
        if stream.read_exact(&mut h).is_err() {
            break Event::Gone(id);
        }
        let key = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
        let offset = u64::from_le_bytes(h[4..12].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes")) as usize;
        let imm = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
        let Some(region) = local.iter().find(|r| r.key() == key) else {
            break Event::Broken(id, format!("write to unknown region {key}"));
        };
        let Ok(offset) = usize::try_from(offset) else {
            break Event::Broken(id, "offset overflows".into());
        };
        if let Err(e) = check_range("local", key, offset, len, region.len()) {
            break Event::Broken(id, e.to_string());
        }
        // SAFETY: `[offset, offset + len)` lies inside the live region (checked above); the
        // region's memory is ours and any bytes may be stored in it.
        let dst = unsafe { std::slice::from_raw_parts_mut(region.as_ptr().add(offset), len) };
        if stream.read_exact(dst).is_err() {
            break Event::Gone(id);
        }
        cq.push(Event::Completion(Completion {
            endpoint: id,
            imm,
            len: len as u32,
        }));
    };
    let _ = stream.shutdown(Shutdown::Both);
    cq.push(event);
}

impl Endpoint for TcpEndpoint {
    fn id(&self) -> u32 {
        self.id
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
        let local = super::local_range(&self.local, local_key, local_off, len)?;
        let rlen = self
            .remote_len(remote_key)
            .ok_or(TransportError::UnknownRegion {
                side: "remote",
                key: remote_key,
            })?;
        check_range("remote", remote_key, remote_off, len, rlen)?;
        let len32 = u32::try_from(len)
            .map_err(|_| TransportError::Protocol("write larger than 4 GiB".into()))?;
        let mut h = [0u8; FRAME_HEADER];
        h[0..4].copy_from_slice(&remote_key.to_le_bytes());
        h[4..12].copy_from_slice(&(remote_off as u64).to_le_bytes());
        h[12..16].copy_from_slice(&len32.to_le_bytes());
        h[16..20].copy_from_slice(&imm.to_le_bytes());
        // SAFETY: in bounds of the live local region (checked above); read as plain bytes.
        let data = unsafe { std::slice::from_raw_parts(local.as_ptr().add(local_off), len) };
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let sent = write_all_vectored(&mut w, &h, data);
        sent.map_err(|_| TransportError::PeerGone { endpoint: self.id })
    }

    fn window(
        &self,
        key: u32,
        offset: usize,
        len: usize,
    ) -> Result<Option<*mut u8>, TransportError> {
        let rlen = self.remote_len(key).ok_or(TransportError::UnknownRegion {
            side: "remote",
            key,
        })?;
        check_range("remote", key, offset, len, rlen)?;
        Ok(None)
    }

    fn signal(&self, _imm: u32, _len: usize) -> Result<(), TransportError> {
        Err(TransportError::Protocol(
            "tcp has no zero-copy window to signal; use write_with_imm".into(),
        ))
    }
}

impl Drop for TcpEndpoint {
    fn drop(&mut self) {
        // Shutting the socket down ends the reader thread (its next read fails); it is not
        // joined, since it may be waiting for room in a queue nobody drains any more.
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let _ = w.shutdown(Shutdown::Both);
        drop(self.reader.take());
    }
}
