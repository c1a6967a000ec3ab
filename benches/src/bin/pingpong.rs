//! Cross-process ping-pong: the raw round-trip baselines rfaas latency is compared against.
//!
//! The client (this process) sends `size` bytes to a server process and waits for the server
//! to echo them back, over three paths:
//!
//! - `spin`: shared memory, both sides spinning on sequence words;
//! - `futex`: shared memory, the server asleep in `futex_wait` between requests (a warm
//!   executor sleeping between invocations), the client spinning for the response. The client
//!   idles `--futex-gap-us` (untimed) before each request: back to back, the next request is
//!   posted before the server reaches `futex_wait`, the server never sleeps, and the figure is
//!   a spin plus a `futex_wake` syscall (~0.8 µs). The server counts the requests it slept on;
//!   the client warns when that is under 95%. Longer gaps let the idle vCPU sleep deeper (on
//!   the 2-vCPU VM: ~6 µs for 2-50 µs gaps, ~15 µs for 200 µs, ~24 µs for 2 ms);
//! - `tcp`: TCP loopback with `TCP_NODELAY`, blocking `std::net` sockets;
//! - `tcp-spin`: the same with non-blocking sockets both sides poll in a loop (`recv` until
//!   data comes, as a hot rfaas worker and a spinning client do): the stricter TCP baseline,
//!   without the scheduler's wake-up in the round trip. Not part of `all`.
//!
//! The server is this binary re-executed with a hidden `--role server`; it gets the shared
//! memory as an inherited memfd (`--shm-fd`) or the port to connect to (`--port`). It dies with
//! the client (`PR_SET_PDEATHSIG`), and the client kills it on every error path. No wait in
//! either process is unbounded: spins yield, then sleep, and fail after [`WAIT_TIMEOUT`].
//!
//! ```text
//! cargo run --release -p benches --bin pingpong -- [--mode spin|futex|tcp|all] [--json]
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use benches::{
    FutexWait, SharedRegion, Summary, cpu_count, futex_wait, futex_wake, human_size, idle,
    iterations_for, pin_to_cpu, spin_until_ne, warmup_iterations,
};
use clap::{Parser, ValueEnum};
use serde::Serialize;

/// Longest any single wait may take (a response, a request, the server starting or exiting).
const WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest payload accepted, to keep a typo from mapping all memory.
const MAX_SIZE: usize = 1 << 30;

/// Cross-process round-trip baselines: shared memory (spinning or futex) and TCP loopback.
#[derive(Parser, Debug)]
#[command(name = "pingpong")]
struct Args {
    /// Which path to measure.
    #[arg(long, value_enum, default_value_t = Mode::All)]
    mode: Mode,
    /// Payload sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,65536,1048576")]
    sizes: Vec<usize>,
    /// Measured iterations per size (default: 20000 up to 64 KiB, proportionally fewer above,
    /// at least 1000); warm-up iterations come on top.
    #[arg(long)]
    iterations: Option<usize>,
    /// CI smoke run: 200 iterations per size.
    #[arg(long)]
    quick: bool,
    /// CPU the client is pinned to.
    #[arg(long, default_value_t = 0)]
    client_cpu: usize,
    /// CPU the server is pinned to.
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
    /// In futex mode, idle time (µs) before each request so the server is asleep when it
    /// arrives (not timed).
    #[arg(long, default_value_t = 20)]
    futex_gap_us: u64,
    /// Print one JSON object per (mode, size) instead of a table.
    #[arg(long)]
    json: bool,

    // What the client passes to the server process it starts.
    #[arg(long, value_enum, default_value_t = Role::Client, hide = true)]
    role: Role,
    #[arg(long, hide = true)]
    size: Option<usize>,
    #[arg(long, hide = true)]
    total: Option<u32>,
    #[arg(long, hide = true)]
    shm_fd: Option<RawFd>,
    #[arg(long, hide = true)]
    port: Option<u16>,
    #[arg(long, hide = true)]
    parent_pid: Option<u32>,
    #[arg(long, hide = true)]
    pin_server: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Spin,
    Futex,
    Tcp,
    TcpSpin,
    All,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Spin => "spin",
            Mode::Futex => "futex",
            Mode::Tcp => "tcp",
            Mode::TcpSpin => "tcp-spin",
            Mode::All => "all",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Role {
    Client,
    Server,
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.role {
        Role::Client => client(&args),
        Role::Server => server(&args).context("pingpong server"),
    }
}

// ---------------------------------------------------------------------------------------------
// Client

/// One line of `--json` output.
#[derive(Serialize)]
struct Row {
    mode: &'static str,
    size: usize,
    #[serde(flatten)]
    summary: Summary,
}

/// What one (mode, size) run needs to know.
#[derive(Clone, Copy)]
struct Run {
    mode: Mode,
    size: usize,
    warmup: usize,
    iterations: usize,
    /// `Some(cpu)` to pin the server.
    server_cpu: Option<usize>,
    /// Futex mode: idle time before each request, so that the server is asleep.
    futex_gap: Duration,
}

impl Run {
    fn total(&self) -> Result<u32> {
        u32::try_from(self.warmup + self.iterations)
            .ok()
            .filter(|&total| total < u32::MAX)
            .context("too many iterations")
    }
}

fn client(args: &Args) -> Result<()> {
    ensure!(!args.sizes.is_empty(), "--sizes is empty");
    for &size in &args.sizes {
        ensure!(
            (1..=MAX_SIZE).contains(&size),
            "payload size {size} is out of range (1..={MAX_SIZE})"
        );
    }
    ensure!(args.iterations != Some(0), "--iterations must be positive");

    let cpus = cpu_count();
    let two_cpus = cpus >= 2 && args.client_cpu != args.server_cpu;
    if two_cpus {
        pin_to_cpu(args.client_cpu)
            .with_context(|| format!("pinning the client to cpu {}", args.client_cpu))?;
    } else {
        eprintln!(
            "pingpong: {cpus} cpu(s) available, client cpu {}, server cpu {}: not pinning, \
             skipping spin mode (two spinners on one core take milliseconds per round trip)",
            args.client_cpu, args.server_cpu
        );
    }

    let modes: &[Mode] = match args.mode {
        Mode::All => &[Mode::Spin, Mode::Futex, Mode::Tcp],
        Mode::Spin => &[Mode::Spin],
        Mode::Futex => &[Mode::Futex],
        Mode::Tcp => &[Mode::Tcp],
        Mode::TcpSpin => &[Mode::TcpSpin],
    };
    if !args.json {
        println!(
            "pingpong: client cpu {}, server cpu {}{}; round trips in µs",
            args.client_cpu,
            args.server_cpu,
            if two_cpus { "" } else { " (not pinned)" }
        );
        println!(
            "{:<6} {:>8} {:>7} {:>10} {:>10} {:>10} {:>10}",
            "mode", "size", "iters", "median", "p99", "min", "mean"
        );
    }
    for &mode in modes {
        if mode == Mode::Spin && !two_cpus {
            continue;
        }
        for &size in &args.sizes {
            let iterations = iterations_for(size, args.iterations, args.quick);
            let warmup = warmup_iterations(iterations, args.quick);
            let run = Run {
                mode,
                size,
                warmup,
                iterations,
                server_cpu: two_cpus.then_some(args.server_cpu),
                futex_gap: Duration::from_micros(args.futex_gap_us),
            };
            let mut samples = match mode {
                Mode::Spin | Mode::Futex => shm_client(run),
                Mode::Tcp | Mode::TcpSpin => tcp_client(run),
                Mode::All => unreachable!("expanded above"),
            }
            .with_context(|| format!("{} ping-pong of {size} bytes", mode.name()))?;
            let summary = Summary::from_samples(&mut samples);
            report(mode, size, &summary, args.json)?;
        }
    }
    Ok(())
}

fn report(mode: Mode, size: usize, summary: &Summary, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let row = Row {
            mode: mode.name(),
            size,
            summary: *summary,
        };
        serde_json::to_writer(&mut out, &row)?;
        writeln!(out)?;
    } else {
        let us = |ns: f64| ns / 1_000.0;
        writeln!(
            out,
            "{:<6} {:>8} {:>7} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            mode.name(),
            human_size(size),
            summary.iterations,
            us(summary.median_ns),
            us(summary.p99_ns),
            us(summary.min_ns),
            us(summary.mean_ns),
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Writes `seq` into the first (up to 4) bytes of the payload, so each echo is checked.
fn tag(payload: &mut [u8], seq: u32) {
    let n = payload.len().min(4);
    payload[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

/// The server process, killed and reaped on drop unless [`ServerProcess::finish`] reaped it.
struct ServerProcess {
    child: Child,
}

/// Where the server finds its end of the channel.
enum Endpoint {
    /// An inherited memfd.
    Shm(RawFd),
    /// A TCP port on 127.0.0.1 to connect to.
    Tcp(u16),
}

impl ServerProcess {
    fn spawn(run: Run, endpoint: Endpoint) -> Result<Self> {
        let exe = std::env::current_exe().context("locating the pingpong executable")?;
        let mut command = Command::new(&exe);
        command
            .args(["--role", "server", "--mode", run.mode.name()])
            .args(["--size", &run.size.to_string()])
            .args(["--total", &run.total()?.to_string()])
            .args(["--parent-pid", &std::process::id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(cpu) = run.server_cpu {
            command.args(["--pin-server", "--server-cpu", &cpu.to_string()]);
        }
        match endpoint {
            Endpoint::Shm(fd) => command.args(["--shm-fd", &fd.to_string()]),
            Endpoint::Tcp(port) => command.args(["--port", &port.to_string()]),
        };
        let child = command
            .spawn()
            .with_context(|| format!("starting the server {}", exe.display()))?;
        Ok(Self { child })
    }

    /// `Some(status)` once the server has exited.
    fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait().context("checking the server process")
    }

    /// Waits (bounded) for the server to exit on its own and checks its status.
    fn finish(mut self) -> Result<()> {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            if let Some(status) = self.exited()? {
                ensure!(status.success(), "the server failed: {status}");
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the server did not exit within {WAIT_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops the server and adds how it ended to `error`.
    fn explain(&mut self, error: anyhow::Error) -> anyhow::Error {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!("the server had exited: {status}"),
            _ => {
                let _ = self.child.kill();
                match self.child.wait() {
                    Ok(status) => format!("the server was still running (killed: {status})"),
                    Err(wait) => format!("the server could not be reaped: {wait}"),
                }
            }
        };
        error.context(status)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Both are no-ops once the child has been reaped; `wait` after SIGKILL is prompt.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The layout of the shared region: two sequence words and a readiness word, each on its own
/// pair of cache lines (the adjacent-line prefetcher pulls lines in pairs), then the request
/// and response areas, each page-aligned.
///
/// The client writes the request area then `request_seq` (Release); the server waits for
/// `request_seq` (Acquire), copies the request area into the response area, then writes
/// `response_seq` (Release); the client waits for it (Acquire). Each side touches an area only
/// while the other is waiting, so the plain copies never race.
struct Channel<'a> {
    region: &'a SharedRegion,
    size: usize,
}

const REQUEST_SEQ: usize = 0;
const RESPONSE_SEQ: usize = 128;
/// Set to 1 by the server once it is pinned and mapped (futex-woken).
const READY: usize = 256;
/// How many requests the server actually slept on in futex mode.
const SLEPT: usize = 384;
const PAGE: usize = 4096;

impl<'a> Channel<'a> {
    fn request_offset() -> usize {
        PAGE
    }

    fn response_offset(size: usize) -> usize {
        PAGE + size.next_multiple_of(PAGE)
    }

    fn region_len(size: usize) -> usize {
        Self::response_offset(size) + size.next_multiple_of(PAGE)
    }

    fn new(region: &'a SharedRegion, size: usize) -> Result<Self> {
        ensure!(
            region.len() >= Self::region_len(size),
            "the shared region holds {} bytes, {} needed",
            region.len(),
            Self::region_len(size)
        );
        Ok(Self { region, size })
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: every word offset is 4-aligned and below PAGE, inside the page-aligned region
        // (at least `region_len` > PAGE bytes, checked in `new`) that outlives `self`; both
        // processes only access these words atomically.
        unsafe { &*self.region.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    fn request_seq(&self) -> &AtomicU32 {
        self.word(REQUEST_SEQ)
    }

    fn response_seq(&self) -> &AtomicU32 {
        self.word(RESPONSE_SEQ)
    }

    fn ready(&self) -> &AtomicU32 {
        self.word(READY)
    }

    fn slept(&self) -> &AtomicU32 {
        self.word(SLEPT)
    }

    fn request(&self) -> *mut u8 {
        // SAFETY: `request_offset() + size <= region_len(size) <= len` (checked in `new`).
        unsafe { self.region.as_ptr().add(Self::request_offset()) }
    }

    fn response(&self) -> *mut u8 {
        // SAFETY: `response_offset(size) + size <= region_len(size) <= len` (checked in `new`).
        unsafe { self.region.as_ptr().add(Self::response_offset(self.size)) }
    }
}

fn shm_client(run: Run) -> Result<Vec<u64>> {
    let region = SharedRegion::create("rfaas-pingpong", Channel::region_len(run.size))
        .context("creating the shared region")?;
    let channel = Channel::new(&region, run.size)?;
    let mut server = {
        let inheritable = region
            .inheritable_fd()
            .context("duplicating the memfd for the server")?;
        // `inheritable` is closed here once the server has inherited it.
        ServerProcess::spawn(run, Endpoint::Shm(inheritable.as_raw_fd()))?
    };
    let samples = shm_ping(run, &channel, &mut server).map_err(|error| server.explain(error))?;
    server.finish()?;
    if run.mode == Mode::Futex {
        let total = run.total()?;
        let slept = channel.slept().load(Ordering::Relaxed);
        if u64::from(slept) * 100 < u64::from(total) * 95 {
            eprintln!(
                "pingpong: futex {} B: the server found {} of {total} requests already posted \
                 and did not sleep on them",
                run.size,
                total - slept
            );
        }
    }
    Ok(samples)
}

fn shm_ping(run: Run, channel: &Channel<'_>, server: &mut ServerProcess) -> Result<Vec<u64>> {
    // Wait for the server in short slices, to notice at once if it fails to start.
    let deadline = Instant::now() + WAIT_TIMEOUT;
    while channel.ready().load(Ordering::Acquire) == 0 {
        if let Some(status) = server.exited()? {
            bail!("the server exited before it was ready: {status}");
        }
        ensure!(
            Instant::now() < deadline,
            "the server was not ready within {WAIT_TIMEOUT:?}"
        );
        futex_wait(channel.ready(), 0, Some(Duration::from_millis(10)))
            .context("waiting for the server to start")?;
    }
    let total = run.total()?;
    let mut payload: Vec<u8> = (0..run.size).map(|i| i as u8).collect();
    let mut samples = Vec::with_capacity(run.iterations);
    let (request_seq, response_seq) = (channel.request_seq(), channel.response_seq());
    for seq in 1..=total {
        tag(&mut payload, seq);
        if run.mode == Mode::Futex {
            idle(run.futex_gap);
        }
        let start = Instant::now();
        // SAFETY: the request area holds `size` bytes (see `Channel::new`) and the server only
        // reads it after we publish `seq` below; `payload` is a separate allocation.
        unsafe { ptr::copy_nonoverlapping(payload.as_ptr(), channel.request(), run.size) };
        request_seq.store(seq, Ordering::Release);
        if run.mode == Mode::Futex {
            futex_wake(request_seq, 1).context("waking the server")?;
        }
        let seen = spin_until_ne(response_seq, seq - 1, WAIT_TIMEOUT)
            .with_context(|| format!("waiting for response {seq}"))?;
        let elapsed = start.elapsed();
        ensure!(seen == seq, "expected response {seq}, got {seen}");
        // SAFETY: the server wrote the response area before publishing `seq` (Acquire above)
        // and does not touch it until we publish the next request.
        let echoed = unsafe { std::slice::from_raw_parts(channel.response(), run.size) };
        record(
            &run,
            seq,
            total,
            echoed,
            &payload[..],
            elapsed,
            &mut samples,
        )?;
    }
    Ok(samples)
}

fn tcp_client(run: Run) -> Result<Vec<u64>> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1")?;
    let port = listener.local_addr()?.port();
    let mut server = ServerProcess::spawn(run, Endpoint::Tcp(port))?;
    let samples = tcp_ping(run, &listener, &mut server).map_err(|error| server.explain(error))?;
    server.finish()?;
    Ok(samples)
}

fn tcp_ping(run: Run, listener: &TcpListener, server: &mut ServerProcess) -> Result<Vec<u64>> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = server.exited()? {
                    bail!("the server exited before connecting: {status}");
                }
                ensure!(
                    Instant::now() < deadline,
                    "the server did not connect within {WAIT_TIMEOUT:?}"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(error) => return Err(error).context("accepting the server's connection"),
        }
    };
    let spin = run.mode == Mode::TcpSpin;
    configure(&stream, spin)?;
    let total = run.total()?;
    let mut payload: Vec<u8> = (0..run.size).map(|i| i as u8).collect();
    let mut echoed = vec![0; run.size];
    let mut samples = Vec::with_capacity(run.iterations);
    for seq in 1..=total {
        tag(&mut payload, seq);
        let start = Instant::now();
        transfer(&mut stream, spin, Direction::Write(&payload))
            .with_context(|| format!("sending request {seq}"))?;
        transfer(&mut stream, spin, Direction::Read(&mut echoed))
            .with_context(|| format!("receiving response {seq}"))?;
        let elapsed = start.elapsed();
        record(
            &run,
            seq,
            total,
            &echoed[..],
            &payload[..],
            elapsed,
            &mut samples,
        )?;
    }
    Ok(samples)
}

/// One way of a round trip: all of a request or response.
enum Direction<'a> {
    Write(&'a [u8]),
    Read(&'a mut [u8]),
}

/// Moves all of `direction`'s bytes: blocking calls, or (`spin`) non-blocking ones retried in
/// a loop that spins, then yields, and gives up after [`WAIT_TIMEOUT`].
fn transfer(stream: &mut TcpStream, spin: bool, direction: Direction<'_>) -> std::io::Result<()> {
    if !spin {
        return match direction {
            Direction::Write(bytes) => stream.write_all(bytes),
            Direction::Read(bytes) => stream.read_exact(bytes),
        };
    }
    let (mut done, total) = match &direction {
        Direction::Write(b) => (0, b.len()),
        Direction::Read(b) => (0, b.len()),
    };
    let mut direction = direction;
    let mut idle: u32 = 0;
    let mut since: Option<Instant> = None;
    while done < total {
        let step = match &mut direction {
            Direction::Write(b) => stream.write(&b[done..]),
            Direction::Read(b) => stream.read(&mut b[done..]),
        };
        match step {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                done += n;
                idle = 0;
                since = None;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                idle = idle.saturating_add(1);
                if idle.is_multiple_of(1024) {
                    let now = Instant::now();
                    if now.duration_since(*since.get_or_insert(now)) >= WAIT_TIMEOUT {
                        return Err(std::io::ErrorKind::TimedOut.into());
                    }
                    if idle >= benches::SPINS_BEFORE_YIELD {
                        std::thread::yield_now();
                    }
                }
                std::hint::spin_loop();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `TCP_NODELAY`, blocking with every read and write bounded by [`WAIT_TIMEOUT`], or
/// non-blocking (`spin`; [`transfer`] bounds the loop).
fn configure(stream: &TcpStream, spin: bool) -> Result<()> {
    stream.set_nonblocking(spin)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(WAIT_TIMEOUT))?;
    stream.set_write_timeout(Some(WAIT_TIMEOUT))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Server

fn server(args: &Args) -> Result<()> {
    let parent = args.parent_pid.context("--parent-pid is required")?;
    die_with_parent(parent)?;
    if args.pin_server {
        pin_to_cpu(args.server_cpu)
            .with_context(|| format!("pinning the server to cpu {}", args.server_cpu))?;
    }
    let size = args.size.context("--size is required")?;
    let total = args.total.context("--total is required")?;
    match args.mode {
        Mode::Spin | Mode::Futex => {
            let fd = args.shm_fd.context("--shm-fd is required")?;
            shm_server(args.mode, fd, size, total)
        }
        Mode::Tcp | Mode::TcpSpin => tcp_server(
            args.port.context("--port is required")?,
            size,
            total,
            args.mode == Mode::TcpSpin,
        ),
        Mode::All => bail!("the server runs one mode, not all"),
    }
}

/// Makes sure this server never outlives the client that started it.
fn die_with_parent(parent: u32) -> Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and changes only this process's
    // parent-death signal.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("PR_SET_PDEATHSIG");
    }
    // If the client died before the prctl, we have been reparented already.
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    ensure!(
        u32::try_from(ppid).ok() == Some(parent),
        "the client (pid {parent}) is gone"
    );
    Ok(())
}

fn shm_server(mode: Mode, fd: RawFd, size: usize, total: u32) -> Result<()> {
    // SAFETY: F_GETFD only reads the flags of a descriptor, open or not.
    let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
    ensure!(open, "--shm-fd {fd} is not an open descriptor");
    // SAFETY: the client passed us this inherited memfd for our exclusive use; nothing else in
    // this process knows the number, so the `OwnedFd` is its only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let region = SharedRegion::from_fd(fd).context("mapping the shared region")?;
    let channel = Channel::new(&region, size)?;
    channel.ready().store(1, Ordering::Release);
    futex_wake(channel.ready(), 1).context("waking the client")?;

    let (request_seq, response_seq) = (channel.request_seq(), channel.response_seq());
    let mut slept = 0;
    for seq in 1..=total {
        let seen = match mode {
            Mode::Spin => spin_until_ne(request_seq, seq - 1, WAIT_TIMEOUT),
            _ => {
                let (seen, did_sleep) = sleep_until_ne(request_seq, seq - 1)?;
                slept += u32::from(did_sleep);
                Ok(seen)
            }
        }
        .with_context(|| format!("waiting for request {seq}"))?;
        ensure!(seen == seq, "expected request {seq}, got {seen}");
        // SAFETY: both areas hold `size` bytes and do not overlap (see `Channel`); the client
        // wrote the request before publishing `seq` (Acquire above) and touches neither area
        // until we publish the response below.
        unsafe { ptr::copy_nonoverlapping(channel.request(), channel.response(), size) };
        channel.slept().store(slept, Ordering::Relaxed);
        response_seq.store(seq, Ordering::Release);
    }
    Ok(())
}

/// [`benches::futex_until_ne`], also saying whether the wait actually slept in the kernel
/// (rather than finding the request already posted).
fn sleep_until_ne(word: &AtomicU32, old: u32) -> Result<(u32, bool)> {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let mut slept = false;
    loop {
        let value = word.load(Ordering::Acquire);
        if value != old {
            return Ok((value, slept));
        }
        let remaining = deadline
            .checked_duration_since(Instant::now())
            .filter(|remaining| !remaining.is_zero())
            .with_context(|| format!("no request within {WAIT_TIMEOUT:?}"))?;
        slept |= futex_wait(word, old, Some(remaining))? == FutexWait::Woken;
    }
}

fn tcp_server(port: u16, size: usize, total: u32, spin: bool) -> Result<()> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, WAIT_TIMEOUT)
        .with_context(|| format!("connecting to {address}"))?;
    configure(&stream, spin)?;
    let mut buffer = vec![0; size];
    for seq in 1..=total {
        // Store and forward: read the whole request, then echo it, so neither side can block
        // writing while the other is blocked writing too.
        transfer(&mut stream, spin, Direction::Read(&mut buffer))
            .with_context(|| format!("receiving request {seq}"))?;
        transfer(&mut stream, spin, Direction::Write(&buffer))
            .with_context(|| format!("sending response {seq}"))?;
    }
    Ok(())
}

/// Checks one echo (its first bytes every time, all of it on the last round trip, outside the
/// timed section) and keeps its time once the warm-up is over.
fn record(
    run: &Run,
    seq: u32,
    total: u32,
    echoed: &[u8],
    payload: &[u8],
    elapsed: Duration,
    samples: &mut Vec<u64>,
) -> Result<()> {
    let n = run.size.min(4);
    ensure!(
        echoed[..n] == payload[..n],
        "response {seq} is not the echo"
    );
    if seq == total {
        ensure!(echoed == payload, "the last response is not the echo");
    }
    if seq as usize > run.warmup {
        samples.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }
    Ok(())
}
