//! Thin wrappers over the Linux calls the shared-memory transport needs: memfd regions,
//! shared mappings, futexes, file-descriptor passing, peer liveness and CPU pinning.
//!
//! Every `unsafe` block of the transport's OS interface lives here, each with its invariant.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Seals every memory file we create and share: its size is fixed for good, so no holder of
/// the descriptor (a peer process) can shrink it under the other's mapping, whose next access
/// would then die of `SIGBUS`.
const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// Creates an anonymous memory file of `len` bytes (zero-filled), sealed at that size.
pub fn memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "memfd name contains NUL"))?;
    // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
    let fd = cvt(unsafe {
        libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    // SAFETY: `memfd_create` returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "region too large"))?;
    // SAFETY: `fd` is a valid, owned memfd.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    // SAFETY: `fd` is a valid memfd created with sealing allowed; F_ADD_SEALS takes an int.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) })?;
    Ok(fd)
}

/// Whether the memory file behind `fd` can never shrink (sealed with `F_SEAL_SHRINK`).
pub fn cannot_shrink(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: `fd` is a valid descriptor; F_GET_SEALS takes no argument (EINVAL for files that
    // are not memfds, reported as an error).
    let seals = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) })?;
    Ok(seals & libc::F_SEAL_SHRINK != 0)
}

/// Whether the file behind `fd` is shared memory (`shmem`, as `memfd_create` without
/// `MFD_HUGETLB` and `tmpfs` make them): memory whose size seals hold. A sealed hugetlbfs
/// memfd is not: punching a hole in it (`fallocate`, which the seals allow) gives its huge
/// pages back, and a mapping's next access to them dies of `SIGBUS`.
pub fn is_shared_memory(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `fd` is a valid descriptor and `st` is writable storage for one `statfs`.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: `fstatfs` succeeded, so it initialized `st`.
    let st = unsafe { st.assume_init() };
    Ok(st.f_type == libc::TMPFS_MAGIC)
}

/// The size of the file behind `fd`.
pub fn file_len(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is a valid descriptor and `st` is writable storage for one `stat`.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: `fstat` succeeded, so it initialized `st`.
    let st = unsafe { st.assume_init() };
    usize::try_from(st.st_size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative file size"))
}

/// A shared, read-write mapping of a whole memory file. Unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access goes through raw pointers whose
// synchronization is the caller's protocol (atomics for control words, copies for data).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` shared and read-write: a shared-memory file (not hugetlbfs)
    /// sealed against shrinking (as [`memfd`] makes them) of at least `len` bytes; anything
    /// else is refused.
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Ok(Mapping {
                ptr: std::ptr::NonNull::<u64>::dangling().as_ptr().cast(),
                len: 0,
            });
        }
        // Checked before the size: once sealed, the size read next is final.
        if !cannot_shrink(fd).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a sealable memory file: {e}"),
            )
        })? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "memory file not sealed against shrinking (F_SEAL_SHRINK)",
            ));
        }
        // A sealed memory file elsewhere (hugetlbfs) can still lose its pages.
        if !is_shared_memory(fd)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a shared-memory file (a sealed memfd on tmpfs; hugetlbfs is refused)",
            ));
        }
        if file_len(fd)? < len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "memory file shorter than the region it should hold",
            ));
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint); `fd` is valid; the file is
        // shared memory at least `len` bytes long and sealed against shrinking (all checked),
        // so no access within `len` faults with SIGBUS, whoever else holds the descriptor.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Start of the mapping (page aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: `ptr`/`len` came from a successful `mmap` and are unmapped exactly once.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// Sleeps while `*word == expected`, for at most `timeout`. Spurious wake-ups are possible.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 for the call (possibly in shared memory, hence
    // the non-private futex op); `ts` lives across the call. Errors (EAGAIN, ETIMEDOUT,
    // EINTR) all mean "re-check the word", which every caller does.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes up to `n` waiters sleeping on `word`.
pub fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE only reads the address as a key.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n);
    }
}

/// Asks for the cache line holding `word` in a writable state (`PREFETCHW`), without waiting
/// for it: a write that follows later then does not stall on taking the line from the core
/// that last read it. A hint only; nothing on CPUs without the instruction (checked once).
pub fn prefetch_for_write(word: &AtomicU32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::atomic::{AtomicU8, Ordering};
        // 0: not checked yet, 1: available, 2: not available.
        static PRFCHW: AtomicU8 = AtomicU8::new(0);
        let mut known = PRFCHW.load(Ordering::Relaxed);
        if known == 0 {
            // CPUID leaf 0x8000_0001, ECX bit 8: PREFETCHW (AMD "3DNowPrefetch", Intel
            // "PRFCHW"). The extended leaf exists on every x86-64 CPU.
            let ecx = core::arch::x86_64::__cpuid(0x8000_0001).ecx;
            known = if ecx & (1 << 8) != 0 { 1 } else { 2 };
            PRFCHW.store(known, Ordering::Relaxed);
        }
        if known == 1 {
            // SAFETY: `PREFETCHW` (available: checked above) reads and writes no memory and
            // cannot fault; `word` is a valid reference anyway.
            unsafe {
                std::arch::asm!(
                    "prefetchw [{}]",
                    in(reg) word.as_ptr(),
                    options(nostack, preserves_flags, readonly)
                );
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = word;
}

/// Whether the peer of a connected stream socket has hung up (without consuming data).
pub fn peer_hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid `pollfd`, zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && (p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL)) != 0
}

/// A new non-blocking eventfd at zero (a waiter's wake-up line).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: `eventfd` takes no pointers; it returns a new descriptor or -1 (checked).
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: `fd` is a fresh open descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to eventfd `fd`'s counter, waking whoever polls it (non-blocking: a saturated
/// counter is already readable). The caller keeps `fd` open for the call.
pub fn eventfd_signal(fd: RawFd) {
    let one = 1u64;
    // SAFETY: writes the 8 bytes of a live `u64`; a full counter (EAGAIN) is already signalled.
    unsafe { libc::write(fd, (&raw const one).cast(), 8) };
}

/// Resets eventfd `fd`'s counter to zero (non-blocking: an empty counter is EAGAIN).
pub fn eventfd_clear(fd: RawFd) {
    let mut v = 0u64;
    // SAFETY: reads at most 8 bytes into a live `u64`.
    unsafe { libc::read(fd, (&raw mut v).cast(), 8) };
}

/// Seconds a held TCP connection may be quiet before the kernel probes its peer.
pub const KEEPALIVE_IDLE_SECS: libc::c_int = 10;
/// Seconds between those probes.
pub const KEEPALIVE_INTERVAL_SECS: libc::c_int = 5;
/// Unanswered probes after which the connection ends.
pub const KEEPALIVE_PROBES: libc::c_int = 3;
/// Milliseconds sent data may stay unacknowledged before the connection ends
/// (`TCP_USER_TIMEOUT`): the keepalive's 25 s.
pub const USER_TIMEOUT_MS: libc::c_int = 25_000;

/// Has the kernel watch a TCP connection held for a session's whole life that carries little
/// data (a session's or a lease's control connection), as executors and managers watch
/// theirs: a peer whose host vanished (no FIN, no RST) ends it with an error within about
/// 25 s. Quiet, it is probed after 10 s, then 3 times 5 s apart ([`keepalive`]); with data
/// unacknowledged (probes only start on a connection with none), the user timeout of the same
/// 25 s ends it, where the kernel would otherwise retransmit for ~15 minutes. Not for a
/// connection that carries calls: there the user timeout would also end a healthy session
/// whose peer leaves its receive window shut for 25 s (a worker running a long function
/// while more requests queue), as Linux counts that as unacknowledged data. Set once, at
/// connection: nothing on the call path.
pub fn hold_keepalive(stream: &std::net::TcpStream) -> io::Result<()> {
    keepalive(stream)?;
    set_int(
        stream,
        libc::IPPROTO_TCP,
        libc::TCP_USER_TIMEOUT,
        USER_TIMEOUT_MS,
    )
}

/// Keepalive probes on a TCP connection (after 10 s quiet, 3 probes 5 s apart): a peer whose
/// host vanished ends a quiet connection within about 25 s. Probes do not start while data is
/// unacknowledged (a request sent to a vanished host): the session's control connection
/// ([`hold_keepalive`]) covers that case, and its end ends the session's data connections.
pub fn keepalive(stream: &std::net::TcpStream) -> io::Result<()> {
    let options = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE_SECS),
        (
            libc::IPPROTO_TCP,
            libc::TCP_KEEPINTVL,
            KEEPALIVE_INTERVAL_SECS,
        ),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES),
    ];
    for (level, name, value) in options {
        set_int(stream, level, name, value)?;
    }
    Ok(())
}

/// Sets the `int` socket option `name` at `level` to `value`.
fn set_int(
    stream: &std::net::TcpStream,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid socket; the option value is a live `c_int` of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Connects a Unix stream socket to `path`, waiting at most `timeout` for room in the
/// listener's backlog (a plain `connect` waits for it without limit). `TimedOut` past it.
pub fn unix_connect_timeout(path: &std::path::Path, timeout: Duration) -> io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: an all-zero `sockaddr_un` is valid (family set below, path NUL-terminated by the
    // zeroes past the bytes copied in).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "not a usable socket path (1 to {} bytes, no NUL)",
                addr.sun_path.len() - 1
            ),
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain socket creation; the result is checked.
    let fd =
        cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // A zero `Duration` sets no timeout.
    let set_send_timeout = |t: Duration| {
        let tv = libc::timeval {
            tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_usec: libc::suseconds_t::from(t.subsec_micros()),
        };
        // SAFETY: `tv` is a live `timeval` of the size given, for SO_SNDTIMEO on our socket.
        cvt(unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        })
    };
    // On a Unix socket the send timeout also bounds `connect`'s wait for the backlog (at
    // least 1 µs: zero would mean none).
    set_send_timeout(timeout.max(Duration::from_micros(1)))?;
    // SAFETY: `addr` is a valid `sockaddr_un` of the length given.
    let r = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EAGAIN) {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the listener's backlog stayed full",
            )
        } else {
            e
        });
    }
    set_send_timeout(Duration::ZERO)?;
    Ok(UnixStream::from(sock))
}

/// Most descriptors one message may carry.
pub const MAX_FDS: usize = 16;

/// Sends `data` with `fds` attached (SCM_RIGHTS) in one `sendmsg`; loops for the remainder.
pub fn send_with_fds(stream: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    send_with_fds_by(stream, data, fds, None)
}

/// As [`send_with_fds`], but all of it by `deadline` if one is given, however slowly the peer
/// reads (each write waits at most what is left; the stream's write timeout is changed to
/// that): past it, fails with `TimedOut`.
pub fn send_with_fds_by(
    stream: &UnixStream,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors in one message",
        ));
    }
    let mut sent = 0;
    while sent < data.len() || (sent == 0 && data.is_empty()) {
        let chunk = &data[sent..];
        let mut iov = libc::iovec {
            iov_base: chunk.as_ptr() as *mut libc::c_void,
            iov_len: chunk.len(),
        };
        let raw: Vec<RawFd> = if sent == 0 {
            fds.iter().map(|f| f.as_raw_fd()).collect()
        } else {
            Vec::new()
        };
        let space = if raw.is_empty() {
            0
        } else {
            // SAFETY: CMSG_SPACE is a pure size computation.
            unsafe { libc::CMSG_SPACE((raw.len() * size_of::<RawFd>()) as u32) as usize }
        };
        let mut control = vec![0u64; space.div_ceil(8)];
        // SAFETY: a zeroed msghdr is a valid "no name, no control" header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !raw.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            // SAFETY: `msg_control` points to `space` writable, 8-aligned bytes, enough for one
            // cmsghdr carrying `raw.len()` descriptors (CMSG_SPACE above).
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN((raw.len() * size_of::<RawFd>()) as u32) as _;
                std::ptr::copy_nonoverlapping(
                    raw.as_ptr(),
                    libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                    raw.len(),
                );
            }
        }
        if let Some(deadline) = deadline {
            stream.set_write_timeout(Some(time_left(deadline)?))?;
        }
        // SAFETY: `msg` points to live iovec and control buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut if deadline.is_some() => {
                    return Err(past_deadline());
                }
                _ => return Err(e),
            }
        }
        sent += n as usize;
        if data.is_empty() {
            break;
        }
    }
    Ok(())
}

/// What is left until `deadline`, or the error of having passed it.
fn time_left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(past_deadline());
    }
    Ok(left)
}

fn past_deadline() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the exchange with the peer passed its deadline",
    )
}

/// Receives exactly `buf.len()` bytes, collecting any descriptors that arrive with them.
/// Fails with `UnexpectedEof` if the peer closes first.
pub fn recv_with_fds(stream: &UnixStream, buf: &mut [u8]) -> io::Result<Vec<OwnedFd>> {
    recv_with_fds_by(stream, buf, None)
}

/// As [`recv_with_fds`], but all of it by `deadline` if one is given, however the peer paces
/// its bytes (each read waits at most what is left; the stream's read timeout is changed to
/// that): past it, fails with `TimedOut`.
pub fn recv_with_fds_by(
    stream: &UnixStream,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> io::Result<Vec<OwnedFd>> {
    recv_with_fds_up_to(stream, buf, deadline, MAX_FDS)
}

/// As [`recv_with_fds_by`], but with at most `max_fds` descriptors (and never more than
/// [`MAX_FDS`]) attached to the `buf.len()` bytes: the rest of a message whose first part
/// already brought some.
pub fn recv_with_fds_up_to(
    stream: &UnixStream,
    buf: &mut [u8],
    deadline: Option<Instant>,
    max_fds: usize,
) -> io::Result<Vec<OwnedFd>> {
    let max_fds = max_fds.min(MAX_FDS);
    let mut fds = Vec::new();
    let mut got = 0;
    while got < buf.len() {
        if let Some(deadline) = deadline {
            stream.set_read_timeout(Some(time_left(deadline)?))?;
        }
        let chunk = &mut buf[got..];
        let mut iov = libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: chunk.len(),
        };
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE((MAX_FDS * size_of::<RawFd>()) as u32) as usize };
        let mut control = vec![0u64; space.div_ceil(8)];
        // SAFETY: a zeroed msghdr is a valid "no name" header; fields are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg` points to live, writable iovec and control buffers.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut if deadline.is_some() => {
                    return Err(past_deadline());
                }
                _ => return Err(e),
            }
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed the connection",
            ));
        }
        // SAFETY: iterating the control messages the kernel wrote into `control`, within
        // `msg_controllen`; each SCM_RIGHTS payload holds `(cmsg_len - CMSG_LEN(0)) / 4` fresh
        // descriptors now owned by this process.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    for i in 0..bytes / size_of::<RawFd>() {
                        fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        // A message carries at most MAX_FDS in all, however many pieces it arrives in (a peer
        // could otherwise attach descriptors to every byte and fill our descriptor table).
        if msg.msg_flags & libc::MSG_CTRUNC != 0 || fds.len() > max_fds {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many descriptors attached to a message",
            ));
        }
        got += n as usize;
    }
    Ok(fds)
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cpu index too large",
            ));
        }
        libc::CPU_SET(cpu, &mut set);
        cvt(libc::sched_setaffinity(
            0,
            size_of::<libc::cpu_set_t>(),
            &set,
        ))?;
    }
    Ok(())
}

/// CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid storage; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Lets the calling thread run on every online CPU again (undoes an inherited pinning;
/// CPUs outside the process's cpuset are refused by the kernel and the call then does nothing).
pub fn unpin() {
    // SAFETY: sysconf has no preconditions; a zeroed cpu_set_t is an empty set, and CPU_SET
    // writes within it for indices below CPU_SETSIZE.
    unsafe {
        let n = libc::sysconf(libc::_SC_NPROCESSORS_ONLN)
            .clamp(1, libc::CPU_SETSIZE as libc::c_long) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..n {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests;
