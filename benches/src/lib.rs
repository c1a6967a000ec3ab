//! Benchmarks of rfaas (see `cargo xtask bench`).
//!
//! This library is the small harness the benchmark binaries share:
//!
//! - [`Summary`]: median, p99, min and mean of per-iteration round-trip times;
//! - [`pin_to_cpu`] and [`cpu_count`]: keep client and server on their own cores;
//! - [`SharedRegion`]: an anonymous `memfd` mapped `MAP_SHARED`, handed to a child process by
//!   file descriptor;
//! - [`futex_wait`] / [`futex_wake`] on shared (non-private) futex words, and the bounded
//!   waits built on them, [`spin_until_ne`] and [`futex_until_ne`];
//! - [`iterations_for`] and [`warmup_iterations`]: how many round trips every benchmark binary
//!   runs per payload size, so figures compared side by side have the same sample counts;
//! - [`idle`] (the untimed gap that lets a server fall asleep) and [`human_size`].
//! - [`ExecutorProcess`] (an `rfaas-executor run` on a Unix socket, killed and reaped on drop),
//!   [`locate_executor`], [`locate_package`], [`worker_cpus`], [`run_pinned`] and
//!   [`median_min_max`]: what the benchmarks that lease executors share.
//!
//! The machines these run on have 2 vCPUs, so no wait here is unbounded: spinning falls back to
//! `sched_yield`, then to sleeping, and every wait fails with [`io::ErrorKind::TimedOut`] after
//! its timeout.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

#[cfg(test)]
mod tests;

/// Statistics over the per-iteration round-trip times of one benchmark run, in nanoseconds.
///
/// Percentiles interpolate linearly between the two nearest samples (numpy's default), so the
/// median of an even number of samples is the mean of the middle two.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples (warm-up iterations excluded by the caller).
    pub iterations: usize,
    /// 50th percentile.
    pub median_ns: f64,
    /// 99th percentile.
    pub p99_ns: f64,
    /// Fastest sample.
    pub min_ns: f64,
    /// Arithmetic mean.
    pub mean_ns: f64,
}

impl Summary {
    /// Summarizes `samples` (sorting them in place). An empty slice gives all zeros.
    pub fn from_samples(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self {
                iterations: 0,
                median_ns: 0.0,
                p99_ns: 0.0,
                min_ns: 0.0,
                mean_ns: 0.0,
            };
        }
        samples.sort_unstable();
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Self {
            iterations: samples.len(),
            median_ns: percentile(samples, 0.5),
            p99_ns: percentile(samples, 0.99),
            min_ns: samples[0] as f64,
            mean_ns: sum as f64 / samples.len() as f64,
        }
    }
}

/// The `q` quantile (`0.0..=1.0`) of non-empty, sorted `sorted`, interpolated linearly.
fn percentile(sorted: &[u64], q: f64) -> f64 {
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let fraction = position - below as f64;
    let (low, high) = (sorted[below] as f64, sorted[above] as f64);
    low + (high - low) * fraction
}

/// Pins the calling thread (not the whole process) to CPU `cpu`.
///
/// Threads and processes started afterwards inherit the pinning.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    let max = 8 * size_of::<libc::cpu_set_t>();
    if cpu >= max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {cpu} is out of range (the CPU set holds {max})"),
        ));
    }
    // SAFETY: `cpu_set_t` is a plain bit array, for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid `cpu_set_t` and `cpu` is below its capacity (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid, initialized `cpu_set_t` and the size passed is its size; pid 0
    // means the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, size_of_val(&set), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Number of CPUs the calling thread may run on (its affinity mask), at least 1.
///
/// Call it before [`pin_to_cpu`], which narrows the mask to one CPU.
pub fn cpu_count() -> usize {
    // SAFETY: `cpu_set_t` is a plain bit array, for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid `cpu_set_t` and the size passed is its size; pid 0 means the
    // calling thread.
    let rc = unsafe { libc::sched_getaffinity(0, size_of_val(&set), &mut set) };
    if rc == 0 {
        // SAFETY: `set` was filled in by the successful `sched_getaffinity` above.
        let count = unsafe { libc::CPU_COUNT(&set) };
        if let Ok(count) = usize::try_from(count)
            && count > 0
        {
            return count;
        }
    }
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// A memory region shared between processes: a `memfd` mapped read-write and `MAP_SHARED`.
///
/// The creating process passes it to a child by file descriptor: [`SharedRegion::inheritable_fd`]
/// duplicates the descriptor without `FD_CLOEXEC`, the child receives its number (for example
/// as an argument) and maps it with [`SharedRegion::from_fd`]. The mapping is unmapped on drop.
///
/// Both processes see the same bytes; how they synchronize on them (atomics in the region) is up
/// to the caller. If another process shrinks the file, touching the lost pages raises `SIGBUS`.
#[derive(Debug)]
pub struct SharedRegion {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the region is a process-wide mapping owned by this value; it is not tied to the thread
// that created it, and it is only reached through raw pointers whose use the caller synchronizes.
unsafe impl Send for SharedRegion {}
// SAFETY: `&SharedRegion` only hands out the raw pointer, length and borrowed descriptor.
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// Creates a zero-filled region of `len` bytes (`len > 0`); `name` only labels the memfd
    /// in `/proc/<pid>/fd` and need not be unique.
    pub fn create(name: &str, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a shared region cannot be empty",
            ));
        }
        let name = CString::new(name).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a shared region name cannot contain NUL",
            )
        })?;
        // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `memfd_create` succeeded, so `raw` is an open descriptor that nothing else
        // owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "shared region too large"))?;
        // SAFETY: `fd` is an open memfd; `ftruncate` only changes its size.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Self::map(fd, len)
    }

    /// Maps the whole of an existing shared-memory file, typically a memfd received from the
    /// parent process.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: `libc::stat` is plain data, for which all zeroes is a valid value.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is an open descriptor and `stat` a valid, writable `struct stat`.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let len = usize::try_from(stat.st_size).unwrap_or(0);
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the shared-memory file is empty",
            ));
        }
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel (null hint, no MAP_FIXED) cannot alias
        // any Rust object; `fd` is open and at least `len` bytes long.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
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
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Self { ptr, len, fd })
    }

    /// Start of the mapping (page-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a region is never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memfd behind the mapping (close-on-exec).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A duplicate of the memfd without `FD_CLOEXEC`, for a child process to inherit.
    ///
    /// Pass its number to the child, spawn, then drop it in the parent. Every process spawned
    /// while it is open inherits it too.
    pub fn inheritable_fd(&self) -> io::Result<OwnedFd> {
        // `try_clone` duplicates with FD_CLOEXEC set; clear it on the duplicate only.
        let dup = self.fd.try_clone()?;
        // SAFETY: `dup` is an open descriptor we own; F_SETFD only changes its flags.
        if unsafe { libc::fcntl(dup.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(dup)
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe the mapping made in `map`, unmapped only here; callers
        // only reach it through raw pointers, which they must not use past the region's life.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// How a [`futex_wait`] call returned. All but `TimedOut` mean "check the word again".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FutexWait {
    /// Woken by [`futex_wake`] (or spuriously).
    Woken,
    /// The word did not hold `expected` when the kernel looked (`EAGAIN`).
    ValueChanged,
    /// A signal interrupted the wait (`EINTR`).
    Interrupted,
    /// The timeout elapsed (`ETIMEDOUT`).
    TimedOut,
}

/// Sleeps while `word` holds `expected`, until [`futex_wake`] or `timeout` (`None`: no
/// timeout).
///
/// The futex is not private (`FUTEX_WAIT`, not `FUTEX_WAIT_PRIVATE`), so it works between
/// processes that map the same `MAP_SHARED` memory.
pub fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> io::Result<FutexWait> {
    let timespec = timeout.map(|timeout| libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        // Below 1e9, so it fits every `c_long`.
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    });
    let timespec_ptr = timespec
        .as_ref()
        .map_or(ptr::null(), |timespec| timespec as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32 for the duration of the call; `timespec_ptr` is null
    // or points to `timespec`, which outlives the call; FUTEX_WAIT reads nothing else.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            timespec_ptr,
            ptr::null::<u32>(),
            0u32,
        )
    };
    if rc == 0 {
        return Ok(FutexWait::Woken);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EAGAIN) => Ok(FutexWait::ValueChanged),
        Some(libc::EINTR) => Ok(FutexWait::Interrupted),
        Some(libc::ETIMEDOUT) => Ok(FutexWait::TimedOut),
        _ => Err(error),
    }
}

/// Wakes up to `n` waiters sleeping in [`futex_wait`] on `word` (in any process sharing it) and
/// returns how many were woken.
pub fn futex_wake(word: &AtomicU32, n: u32) -> io::Result<usize> {
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE reads no other argument.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            ptr::null::<libc::timespec>(),
            ptr::null::<u32>(),
            0u32,
        )
    };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// Busy-spins this many times before [`spin_until_ne`] starts yielding.
pub const SPINS_BEFORE_YIELD: u32 = 1 << 20;
/// After waiting this long, [`spin_until_ne`] sleeps between checks instead of yielding.
pub const YIELD_BEFORE_SLEEP: Duration = Duration::from_millis(100);
/// How long [`spin_until_ne`] sleeps between checks once it has waited [`YIELD_BEFORE_SLEEP`].
const SLEEP_BETWEEN_CHECKS: Duration = Duration::from_micros(200);
/// The clock is read once per this many spins.
const SPINS_PER_CLOCK_READ: u32 = 1024;

/// Waits until `word` no longer holds `old` and returns its new value (loaded with `Acquire`).
///
/// Spins [`SPINS_BEFORE_YIELD`] times, then yields the CPU between checks, then (after
/// [`YIELD_BEFORE_SLEEP`]) sleeps between them; fails with [`io::ErrorKind::TimedOut`] once
/// roughly `timeout` has passed. The fast path reads no clock.
pub fn spin_until_ne(word: &AtomicU32, old: u32, timeout: Duration) -> io::Result<u32> {
    let mut spins: u32 = 0;
    let mut start = None;
    loop {
        let value = word.load(Ordering::Acquire);
        if value != old {
            return Ok(value);
        }
        spins = spins.saturating_add(1);
        if spins < SPINS_BEFORE_YIELD {
            std::hint::spin_loop();
            if !spins.is_multiple_of(SPINS_PER_CLOCK_READ) {
                continue;
            }
        }
        let now = Instant::now();
        let waited = now.duration_since(*start.get_or_insert(now));
        if waited >= timeout {
            return Err(timed_out(timeout));
        }
        if spins >= SPINS_BEFORE_YIELD {
            if waited >= YIELD_BEFORE_SLEEP {
                std::thread::sleep(SLEEP_BETWEEN_CHECKS);
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Waits until `word` no longer holds `old` and returns its new value (loaded with `Acquire`),
/// sleeping in [`futex_wait`]; the writer must call [`futex_wake`] after changing the word.
/// Fails with [`io::ErrorKind::TimedOut`] after `timeout`.
pub fn futex_until_ne(word: &AtomicU32, old: u32, timeout: Duration) -> io::Result<u32> {
    let value = word.load(Ordering::Acquire);
    if value != old {
        return Ok(value);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline
            .checked_duration_since(Instant::now())
            .filter(|remaining| !remaining.is_zero())
            .ok_or_else(|| timed_out(timeout))?;
        futex_wait(word, old, Some(remaining))?;
        let value = word.load(Ordering::Acquire);
        if value != old {
            return Ok(value);
        }
    }
}

fn timed_out(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the shared word did not change within {timeout:?}"),
    )
}

/// Measured iterations for payloads up to [`FULL_ITERATIONS_UP_TO`] bytes by default.
pub const DEFAULT_ITERATIONS: usize = 20_000;
/// Above this size the default iteration count shrinks in proportion to the size.
pub const FULL_ITERATIONS_UP_TO: usize = 64 * 1024;
/// Fewest default iterations, whatever the size.
pub const MIN_DEFAULT_ITERATIONS: usize = 1_000;
/// Measured iterations per case with `--quick` (a CI smoke run).
pub const QUICK_ITERATIONS: usize = 200;
/// Warm-up iterations with `--quick`.
const QUICK_WARMUP: usize = 20;

/// Measured iterations for a payload of `size` bytes: `explicit` if given, else
/// [`QUICK_ITERATIONS`] with `quick`, else [`DEFAULT_ITERATIONS`] up to
/// [`FULL_ITERATIONS_UP_TO`] bytes and proportionally fewer above (a case stays near a second),
/// at least [`MIN_DEFAULT_ITERATIONS`].
pub fn iterations_for(size: usize, explicit: Option<usize>, quick: bool) -> usize {
    match (explicit, quick) {
        (Some(iterations), _) => iterations,
        (None, true) => QUICK_ITERATIONS,
        (None, false) if size <= FULL_ITERATIONS_UP_TO => DEFAULT_ITERATIONS,
        (None, false) => {
            (DEFAULT_ITERATIONS * FULL_ITERATIONS_UP_TO / size).max(MIN_DEFAULT_ITERATIONS)
        }
    }
}

/// Untimed warm-up iterations run before `iterations` measured ones: a tenth of them, between
/// 10 and 1000 (20 with `quick`).
pub fn warmup_iterations(iterations: usize, quick: bool) -> usize {
    if quick {
        QUICK_WARMUP
    } else {
        (iterations / 10).clamp(10, 1_000)
    }
}

/// Lets `gap` pass: spinning if short (a sleeping client would wake up slowly), else sleeping.
///
/// Benchmarks call it, untimed, before a request that should find the server asleep.
pub fn idle(gap: Duration) {
    if gap >= Duration::from_millis(1) {
        std::thread::sleep(gap);
        return;
    }
    let start = Instant::now();
    while start.elapsed() < gap {
        std::hint::spin_loop();
    }
}

/// `size` bytes as `8 B`, `64 KiB` or `1 MiB` (binary units, only when exact).
pub fn human_size(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s.is_multiple_of(1 << 20) => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s.is_multiple_of(1 << 10) => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// How long [`ExecutorProcess::start`] waits for the executor to print `ready`.
pub const EXECUTOR_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`ExecutorProcess::start`] runs: `rfaas-executor run --library PACKAGE --socket ...
/// --cores N --cpus ... --slots ... --slot-size ... --hot-timeout-us ...` on a Unix socket in
/// a fresh temporary directory (shared-memory sessions).
#[derive(Clone, Debug)]
pub struct ExecutorSpec {
    /// The `rfaas-executor` binary.
    pub executor: std::path::PathBuf,
    /// The function package (or library) it serves.
    pub package: std::path::PathBuf,
    /// Workers (leased cores) per session.
    pub cores: u32,
    /// CPUs the workers are pinned to (worker `i` on `cpus[i % len]`); empty: the executor's
    /// default (all allowed CPUs in order).
    pub cpus: Vec<usize>,
    /// Input slots per worker (invocations in flight per worker).
    pub slots: u32,
    /// Bytes per slot, header included (rounded up to a multiple of 64 here).
    pub slot_size: usize,
    /// `--hot-timeout-us`: -1 always hot, 0 always warm, else µs of polling after each
    /// invocation.
    pub hot_timeout_us: i64,
    /// Labels the socket directory (`rfaas-<label>-<pid>-<n>`).
    pub label: String,
}

/// A running `rfaas-executor run` on a Unix socket: killed and reaped, and its socket
/// directory removed, on drop; it also dies with the thread that started it
/// (`PR_SET_PDEATHSIG`), so start it from a thread that outlives it (typically `main`).
///
/// Unless `RFAAS_LOG` is set, the executor logs at `warn` (its `info` lines would interleave
/// with the tables).
#[derive(Debug)]
pub struct ExecutorProcess {
    child: std::process::Child,
    dir: std::path::PathBuf,
    socket: std::path::PathBuf,
}

impl ExecutorProcess {
    /// Starts the executor and waits (at most [`EXECUTOR_READY_TIMEOUT`]) for its `ready` line.
    pub fn start(spec: &ExecutorSpec) -> io::Result<Self> {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        use std::sync::atomic::AtomicUsize;

        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rfaas-{}-{}-{}",
            spec.label,
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("executor.sock");
        let slot_size = spec.slot_size.next_multiple_of(64);
        let mut command = Command::new(&spec.executor);
        command
            .arg("run")
            .arg("--library")
            .arg(&spec.package)
            .arg("--socket")
            .arg(&socket)
            .args(["--cores", &spec.cores.to_string()])
            .args(["--slots", &spec.slots.to_string()])
            .args(["--slot-size", &slot_size.to_string()])
            .args(["--hot-timeout-us", &spec.hot_timeout_us.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if !spec.cpus.is_empty() {
            let cpus: Vec<String> = spec.cpus.iter().map(usize::to_string).collect();
            command.args(["--cpus", &cpus.join(",")]);
        }
        if std::env::var_os("RFAAS_LOG").is_none() {
            command.env("RFAAS_LOG", "warn");
        }
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before `exec`; it only calls `prctl` and
        // `getppid` (async-signal-safe) and builds errors without allocating.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // If we died before the prctl, the child has been reparented already.
                if u32::try_from(libc::getppid()).ok() != Some(parent) {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            })
        };
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(io::Error::new(
                    error.kind(),
                    format!("starting {}: {error}", spec.executor.display()),
                ));
            }
        };
        // From here on, `Drop` kills, reaps and cleans up on every exit path.
        let mut process = Self { child, dir, socket };
        let stdout = process
            .child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("the executor has no stdout pipe"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep draining, so the executor never blocks writing.
            for _ in lines {}
        });
        match rx.recv_timeout(EXECUTOR_READY_TIMEOUT) {
            Ok(Some(Ok(line))) if line.starts_with("ready") => Ok(process),
            Ok(Some(Ok(line))) => Err(io::Error::other(format!(
                "the executor printed {line:?} instead of `ready`"
            ))),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the executor was not ready within {EXECUTOR_READY_TIMEOUT:?}"),
            )),
            Ok(Some(Err(_)) | None) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = process.exit_status();
                Err(io::Error::other(format!(
                    "the executor exited before it was ready ({status})"
                )))
            }
        }
    }

    /// The Unix socket it serves on (for [`rfaas::Lease::connect`]).
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// How the process ended, after giving it up to a second to do so.
    fn exit_status(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => return "still running".into(),
                Err(error) => return format!("unknown: {error}"),
            }
        }
    }
}

impl Drop for ExecutorProcess {
    fn drop(&mut self) {
        // Kill and reap before removing the socket directory; both are no-ops once reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `rfaas-executor` binary: `explicit` if given, else next to the running executable
/// (`cargo build --release -p executor` puts it there). Fails if it is not a file.
pub fn locate_executor(explicit: Option<&std::path::Path>) -> io::Result<std::path::PathBuf> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => current_exe_dir()?.join("rfaas-executor"),
    };
    if !path.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "the executor {} is missing: build it with `cargo build --release -p executor` \
                 or pass --executor PATH",
                path.display()
            ),
        ));
    }
    Ok(path)
}

/// The function package to serve: `explicit` if given, else `<target dir>/rfaas/
/// functions-example` (where `cargo xtask package` writes it), found from the running
/// executable's `<target dir>/<profile>/`. Fails if it holds no `manifest.toml`.
pub fn locate_package(explicit: Option<&std::path::Path>) -> io::Result<std::path::PathBuf> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let dir = current_exe_dir()?;
            dir.parent()
                .unwrap_or(&dir)
                .join("rfaas")
                .join("functions-example")
        }
    };
    if !path.join("manifest.toml").is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no function package at {}: run `cargo xtask package` first (or pass --package \
                 DIR)",
                path.display()
            ),
        ));
    }
    Ok(path)
}

fn current_exe_dir() -> io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| io::Error::other("the running executable has no directory"))
}

/// The CPUs of `cores` workers: `first`, then the next ones, wrapping around the `available`
/// CPUs (so with more workers than CPUs, several share one).
pub fn worker_cpus(first: usize, cores: usize, available: usize) -> Vec<usize> {
    let available = available.max(1);
    (0..cores).map(|i| (first + i) % available).collect()
}

/// Runs `f` on a new thread pinned to `cpu` and returns what it returns; the calling thread
/// stays unpinned (so processes it starts later may use every CPU). A panic in `f` becomes an
/// error.
pub fn run_pinned<T: Send>(cpu: usize, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_cpu(cpu)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the pinned thread panicked")))
    })
}

/// The median of `values` (the mean of the middle two for an even count; 0 if empty), with
/// the smallest and largest: `(median, min, max)`.
pub fn median_min_max(values: &[u64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    (
        percentile(&sorted, 0.5),
        sorted[0] as f64,
        sorted[sorted.len() - 1] as f64,
    )
}
