//! rfaas invocation round trips beside the raw ping-pong baselines, measured in one run.
//!
//! The client thread is pinned to `--client-cpu`, the executor's worker (`--cpus`) and the
//! baseline's server to `--server-cpu`. Cases, each round trips of `noop` or `echo` of a payload:
//!
//! - *hot*: an executor started with `--hot-timeout-us -1` (its worker busy-polls); `noop`,
//!   `echo` of each payload size into a heap vector (the client copies the result out of its
//!   result slot) and into an [`rfaas::Buffer`] (`echo-buf`: the result lands in place), through
//!   the blocking [`Invocation::wait`]; compared with the sibling `pingpong` binary's `spin`
//!   mode (both sides spinning) at the same size (8 B for `noop`);
//! - *async*: the hot `noop` and smallest payloads also through `.await` on a tokio
//!   current-thread runtime, against `wait()` measured just before, reported as the overhead
//!   in ns: `async` runs one `block_on` per invocation, `task` awaits every invocation inside
//!   one `block_on` (as a running task would); `block_on` of a ready future alone is timed too,
//!   to tell the runtime's share from the invocation future's;
//! - *warm*: an executor started with `--hot-timeout-us 0` (its worker sleeps in the completion
//!   queue's futex between invocations); the same calls, each after the same untimed idle gap
//!   (`--futex-gap-us`) as `pingpong`'s `futex` mode (the server asleep), compared with it;
//! - *tcp*: an executor serving over TCP loopback (`--listen 127.0.0.1:0`, hot:
//!   `--hot-timeout-us -1`), reached with [`Lease::connect_tcp`]; `noop`, `echo` of each
//!   payload size into a heap vector and into an [`rfaas::Buffer`] (`echo-buf`: the worker
//!   writes the result into it with a plain write before its answer), compared with `pingpong`'s `tcp` mode (blocking
//!   `TCP_NODELAY` sockets) at the same size (the target's baseline), and beside it with its
//!   `tcp-spin` mode (both sides busy-polling non-blocking sockets, as the hot worker and the
//!   spinning client do: no scheduler wake-up per message), a stricter reference without a
//!   target.
//!
//! Each case runs between two baseline runs of its size (`pingpong --json`, one size) and on an
//! executor of its own: the machine's speed drifts (DESIGN.md §5), and the baseline's server
//! cannot share its core with a spinning worker. The baseline is the mean of the two runs;
//! when their medians differ by more than 25% the case is flagged as drifted.
//!
//! Every case is `warm-up + iterations` round trips, as many as `pingpong` runs for the size;
//! only the latter are recorded. The table gives medians and p99 and the ratio of the medians,
//! and checks the targets: hot small calls within 1.5x of `spin`, warm small calls within 1.3x
//! of `futex`, payloads of 64 KiB and more at 70% or more of the baseline's bandwidth (ratio at
//! most 1/0.7); over TCP, every size within 1.3x of `tcp`. A missed target is reported, never
//! an error: these VMs are noisy.
//!
//! The executor is `rfaas-executor` next to this binary (or `--executor`), serving the package
//! `cargo xtask package` writes (`<target dir>/rfaas/functions-example`, or `--package`). It is
//! killed and reaped on every exit path, and dies with this process (`PR_SET_PDEATHSIG`).
//!
//! ```text
//! cargo build --release -p benches -p executor && cargo xtask package
//! target/release/invoke [--quick] [--json] [--sizes 8,65536,1048576] [--futex-gap-us 20]
//! ```
//!
//! [`Invocation::wait`]: rfaas::Invocation::wait
//! [`Lease::connect_tcp`]: rfaas::Lease::connect_tcp

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use benches::{
    Summary, cpu_count, human_size, idle, iterations_for, pin_to_cpu, warmup_iterations,
};
use clap::Parser;
use functions_example::{echo, noop};
use rfaas::wire::HEADER_LEN;
use rfaas::{Lease, LeaseOptions};
use serde::{Deserialize, Serialize};

/// Longest a single invocation may take before the run fails.
const WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the executor may take to print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one `pingpong` run may take (its own waits are bounded too).
const PINGPONG_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest payload accepted: each of the executor's slots holds one (sparse memfds).
const MAX_SIZE: usize = 64 << 20;
/// Input slots per worker (one invocation is in flight at a time; the rest are idle).
const SLOTS: u32 = 8;
/// Bytes a slot reserves for `echo`'s argument layout (16 bytes today) and alignment.
const ARGS_ROOM: usize = 256;
/// The baseline payload a `noop` is compared with.
const NOOP_BASELINE_SIZE: usize = 8;
/// From this payload size on, the bandwidth target applies instead of the latency targets.
const BANDWIDTH_FROM: usize = 64 * 1024;
/// Hot small calls: at most this many times the `spin` round trip.
const HOT_TARGET: f64 = 1.5;
/// Warm small calls: at most this many times the `futex` round trip.
const WARM_TARGET: f64 = 1.3;
/// Over TCP, any size: at most this many times the raw `tcp` round trip.
const TCP_TARGET: f64 = 1.3;
/// Large payloads: at least this fraction of the baseline's bandwidth.
const BANDWIDTH_FRACTION: f64 = 0.7;
/// A case whose baseline medians before and after differ by more than this factor is flagged.
const DRIFT_LIMIT: f64 = 1.25;

/// rfaas invocation round trips (hot, warm, `.await`, TCP) beside the raw ping-pong baselines.
#[derive(Parser, Debug)]
#[command(name = "invoke")]
struct Args {
    /// `echo` payload sizes in bytes, comma-separated (`noop` is always measured too).
    #[arg(long, value_delimiter = ',', default_value = "8,65536,1048576")]
    sizes: Vec<usize>,
    /// Which modes to measure, comma-separated (default: all).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "hot,warm,tcp"
    )]
    modes: Vec<Mode>,
    /// Measured iterations per case (default: 20000 up to 64 KiB, proportionally fewer above,
    /// at least 1000); warm-up iterations come on top.
    #[arg(long)]
    iterations: Option<usize>,
    /// CI smoke run: 200 iterations per case.
    #[arg(long)]
    quick: bool,
    /// Idle time (µs, untimed) before each warm invocation and each `futex` baseline request,
    /// so that the server is asleep when the request arrives.
    #[arg(long, default_value_t = 20)]
    futex_gap_us: u64,
    /// Print one JSON object per line instead of tables.
    #[arg(long)]
    json: bool,
    /// The `rfaas-executor` binary (default: next to this one).
    #[arg(long)]
    executor: Option<PathBuf>,
    /// The function package to serve (default: `<target dir>/rfaas/functions-example`, as
    /// written by `cargo xtask package`).
    #[arg(long)]
    package: Option<PathBuf>,
    /// CPU the client thread is pinned to.
    #[arg(long, default_value_t = 0)]
    client_cpu: usize,
    /// CPU the executor's worker (and the baseline's server) is pinned to.
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
    /// Measure each case this many times, each time between baseline runs of its own, and
    /// report the round with the median ratio, every round's ratio beside it (the machine's
    /// speed shifts within seconds, so one round is one sample).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let setup = Setup::new(&args)?;
    let mut out = Output::new(args.json);
    out.header(&args)?;
    for mode in [Mode::Hot, Mode::Warm, Mode::Tcp] {
        if !args.modes.contains(&mode) {
            continue;
        }
        let mut awaited = Vec::new();
        for (call, size) in setup.cases() {
            let base_size = size.max(NOOP_BASELINE_SIZE);
            let mut rounds = Vec::new();
            for _ in 0..args.rounds {
                // Each case between two baseline runs of its size, with an executor of its own:
                // the machine's speed drifts, and the baseline cannot share the server core with
                // a spinning worker.
                let before = setup.baseline(mode, base_size)?;
                let strict_before = mode
                    .strict_baseline()
                    .map(|m| setup.baseline_of(m, base_size))
                    .transpose()?;
                let case = {
                    let executor = setup.start_executor(mode)?;
                    setup
                        .on_client_cpu(|| setup.measure_case(&executor.address, mode, call, size))?
                };
                let strict_after = mode
                    .strict_baseline()
                    .map(|m| setup.baseline_of(m, base_size))
                    .transpose()?;
                let after = setup.baseline(mode, base_size)?;
                rounds.push(Round {
                    case,
                    before,
                    after,
                    strict: strict_before.zip(strict_after),
                });
            }
            let ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
            let round = rounds.swap_remove(median_index(&ratios));
            let strict = round.strict.as_ref().map(|(b, a)| (b, a));
            out.compare(
                &round.case.row,
                base_size,
                (&round.before, &round.after),
                strict,
                &ratios,
            )?;
            awaited.extend(round.case.awaited);
        }
        for awaited in &awaited {
            out.awaited(awaited)?;
        }
    }
    out.footer()
}

// ---------------------------------------------------------------------------------------------
// Set-up: arguments, binaries, package

/// Everything a run needs, checked before anything is measured.
struct Setup {
    sizes: Vec<usize>,
    iterations: Option<usize>,
    quick: bool,
    gap: Duration,
    client_cpu: usize,
    server_cpu: usize,
    pingpong: PathBuf,
    executor: PathBuf,
    package: PathBuf,
    slot_size: usize,
}

impl Setup {
    fn new(args: &Args) -> Result<Self> {
        ensure!(!args.sizes.is_empty(), "--sizes is empty");
        for &size in &args.sizes {
            ensure!(
                (1..=MAX_SIZE).contains(&size),
                "payload size {size} is out of range (1..={MAX_SIZE})"
            );
        }
        ensure!(args.iterations != Some(0), "--iterations must be positive");
        ensure!(
            args.client_cpu != args.server_cpu,
            "--client-cpu and --server-cpu must differ: two spinners on one core take \
             milliseconds per round trip"
        );
        let cpus = cpu_count();
        ensure!(
            cpus >= 2 && args.client_cpu.max(args.server_cpu) < cpus,
            "this benchmark pins the client to cpu {} and the executor to cpu {}, but {cpus} \
             cpu(s) are available",
            args.client_cpu,
            args.server_cpu
        );
        let mut sizes = args.sizes.clone();
        sizes.sort_unstable();
        sizes.dedup();

        let exe = std::env::current_exe().context("locating the invoke executable")?;
        let bin_dir = exe
            .parent()
            .context("the invoke executable has no directory")?;
        let pingpong = bin_dir.join("pingpong");
        ensure!(
            pingpong.is_file(),
            "the baseline binary {} is missing: build it with `cargo build --release -p benches`",
            pingpong.display()
        );
        let executor = match &args.executor {
            Some(path) => path.clone(),
            None => bin_dir.join("rfaas-executor"),
        };
        ensure!(
            executor.is_file(),
            "the executor {} is missing: build it with `cargo build --release -p executor` or \
             pass --executor PATH",
            executor.display()
        );
        let package = match &args.package {
            Some(path) => path.clone(),
            // <target>/<profile>/invoke -> <target>/rfaas/functions-example
            None => bin_dir
                .parent()
                .unwrap_or(bin_dir)
                .join("rfaas")
                .join("functions-example"),
        };
        ensure!(
            package.join("manifest.toml").is_file(),
            "no function package at {}: run `cargo xtask package` first (or pass --package DIR)",
            package.display()
        );

        // A slot holds the header and the encoded input (`echo`: 16 bytes of arguments, then the
        // payload), and the output (8 bytes of return value, then the payload); with room to
        // spare for the argument layout.
        let largest = sizes[sizes.len() - 1];
        let slot_size = (HEADER_LEN + ARGS_ROOM + largest).next_multiple_of(64);

        Ok(Self {
            sizes,
            iterations: args.iterations,
            quick: args.quick,
            gap: Duration::from_micros(args.futex_gap_us),
            client_cpu: args.client_cpu,
            server_cpu: args.server_cpu,
            pingpong,
            executor,
            package,
            slot_size,
        })
    }

    /// Warm-up and measured iterations for a payload of `size` bytes (as `pingpong` runs).
    fn plan(&self, size: usize) -> Plan {
        let iterations = iterations_for(size, self.iterations, self.quick);
        Plan {
            warmup: warmup_iterations(iterations, self.quick),
            iterations,
        }
    }

    /// Runs `f` on a new thread pinned to the client CPU. The calling thread stays unpinned,
    /// so the processes it starts (executor, `pingpong`) may use every CPU.
    fn on_client_cpu<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                pin_to_cpu(self.client_cpu)
                    .with_context(|| format!("pinning the client to cpu {}", self.client_cpu))?;
                f()
            })
            .join()
            .unwrap_or_else(|_| bail!("the measuring thread panicked"))
        })
    }
}

/// Round trips of one case: `warmup` untimed, then `iterations` timed.
#[derive(Clone, Copy)]
struct Plan {
    warmup: usize,
    iterations: usize,
}

impl Plan {
    fn total(&self) -> Result<u32> {
        u32::try_from(self.warmup + self.iterations).context("too many iterations")
    }
}

// ---------------------------------------------------------------------------------------------
// Baselines: the sibling `pingpong` binary

/// One line of `pingpong --json`.
#[derive(Deserialize)]
struct BaselineLine {
    mode: String,
    size: usize,
    iterations: usize,
    median_ns: f64,
    p99_ns: f64,
    min_ns: f64,
    mean_ns: f64,
}

impl Setup {
    /// Runs `pingpong --json` once: `spin` for hot cases, `futex` (with the idle gap) for warm
    /// ones, `tcp` for TCP ones, with the iterations of a case of `size` bytes.
    fn baseline(&self, mode: Mode, size: usize) -> Result<Summary> {
        self.baseline_of(mode.baseline(), size)
    }

    /// Runs `pingpong --mode base_mode --json` once, for a case of `size` bytes.
    fn baseline_of(&self, base_mode: &str, size: usize) -> Result<Summary> {
        let mut command = Command::new(&self.pingpong);
        command
            .args(["--mode", base_mode, "--json", "--sizes", &size.to_string()])
            .args(["--futex-gap-us", &self.gap.as_micros().to_string()])
            .args(["--client-cpu", &self.client_cpu.to_string()])
            .args(["--server-cpu", &self.server_cpu.to_string()]);
        if let Some(iterations) = self.iterations {
            command.args(["--iterations", &iterations.to_string()]);
        }
        if self.quick {
            command.arg("--quick");
        }
        let stdout = run_bounded(command, PINGPONG_TIMEOUT).with_context(|| {
            format!(
                "running {} --mode {base_mode} --sizes {size}",
                self.pingpong.display()
            )
        })?;
        let mut lines = stdout.lines().filter(|line| !line.trim().is_empty());
        let (Some(line), None) = (lines.next(), lines.next()) else {
            bail!("pingpong --mode {base_mode} --sizes {size} printed {stdout:?}, not one line");
        };
        let row: BaselineLine = serde_json::from_str(line)
            .with_context(|| format!("parsing pingpong output {line:?}"))?;
        ensure!(
            row.mode == base_mode && row.size == size,
            "pingpong measured {} of {} bytes, not {base_mode} of {size}",
            row.mode,
            row.size
        );
        Ok(Summary {
            iterations: row.iterations,
            median_ns: row.median_ns,
            p99_ns: row.p99_ns,
            min_ns: row.min_ns,
            mean_ns: row.mean_ns,
        })
    }
}

/// Runs `command` to completion (killing it after `timeout`), returns its stdout, fails if it
/// failed. Its stderr goes to ours.
fn run_bounded(mut command: Command, timeout: Duration) -> Result<String> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the process")?;
    let mut child = Reaped(child);
    let mut stdout = child.0.stdout.take().context("no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        ensure!(
            Instant::now() < deadline,
            "the process did not finish within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    ensure!(status.success(), "the process failed: {status}");
    let text = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the output reader panicked"))?
        .context("reading the process's output")?;
    Ok(text)
}

/// A child process killed (if still running) and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        // Both are no-ops once the child has been reaped; `wait` after SIGKILL is prompt.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The executor process

/// A running `rfaas-executor run`, killed and reaped (and its socket directory removed) on
/// drop.
struct ExecutorProcess {
    child: Reaped,
    /// The Unix socket's directory (none over TCP).
    dir: Option<PathBuf>,
    address: Address,
}

/// Where an executor serves.
enum Address {
    /// A Unix socket (shared-memory data plane).
    Unix(PathBuf),
    /// `ip:port` over TCP, as the executor printed it.
    Tcp(String),
}

impl Setup {
    /// Starts an executor with one worker pinned to the server CPU, hot (`--hot-timeout-us -1`)
    /// or warm (`0`), on a Unix socket or (TCP) on an ephemeral loopback port, and waits for
    /// `ready` (over TCP: `ready <ip:port>`, the address it bound).
    ///
    /// Call it from the thread that outlives the executor: `PR_SET_PDEATHSIG` fires when the
    /// *thread* that started the child exits.
    fn start_executor(&self, mode: Mode) -> Result<ExecutorProcess> {
        let mut command = Command::new(&self.executor);
        command.arg("run").arg("--library").arg(&self.package);
        // Over TCP, the address is known once the executor prints it.
        let (dir, address) = if mode == Mode::Tcp {
            command.args(["--listen", "127.0.0.1:0"]);
            (None, Address::Tcp(String::new()))
        } else {
            let dir = std::env::temp_dir().join(format!(
                "rfaas-invoke-{}-{}",
                std::process::id(),
                mode.name()
            ));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating the socket directory {}", dir.display()))?;
            let socket = dir.join("executor.sock");
            command.arg("--socket").arg(&socket);
            (Some(dir), Address::Unix(socket))
        };
        command
            .args(["--cores", "1", "--cpus", &self.server_cpu.to_string()])
            .args(["--slots", &SLOTS.to_string()])
            .args(["--slot-size", &self.slot_size.to_string()])
            .args(["--hot-timeout-us", mode.hot_timeout_us()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if std::env::var_os("RFAAS_LOG").is_none() {
            // The executor logs at `info` by default; keep the table clean. Over TCP its hot
            // worker also warns about the client hanging up at the end of every case (the
            // reader's `PeerGone` reaches `cq.poll()` in `run_worker`), so only errors there.
            let level = if mode == Mode::Tcp { "error" } else { "warn" };
            command.env("RFAAS_LOG", level);
        }
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before `exec`; it only calls `prctl` and
        // `getppid` (async-signal-safe) and builds errors without allocating.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // If we died before the prctl, the child has been reparented already.
                if u32::try_from(libc::getppid()).ok() != Some(parent) {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            })
        };
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.executor.display()))?;
        let mut executor = ExecutorProcess {
            child: Reaped(child),
            dir,
            address,
        };
        let stdout = executor.child.0.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep draining, so the executor never blocks writing.
            for _ in lines {}
        });
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(Ok(line))) if line.starts_with("ready") => {
                if let Address::Tcp(address) = &mut executor.address {
                    let ["ready", bound] = line.split_whitespace().collect::<Vec<_>>()[..] else {
                        bail!("the executor printed {line:?}, not `ready <ip:port>`");
                    };
                    bound.clone_into(address);
                }
                Ok(executor)
            }
            Ok(Some(Ok(line))) => bail!("the executor printed {line:?} instead of `ready`"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("the executor was not ready within {READY_TIMEOUT:?}")
            }
            Ok(Some(Err(_)) | None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = executor.exit_status();
                bail!("the executor exited before it was ready ({status})")
            }
        }
    }
}

impl ExecutorProcess {
    /// How the process ended, after giving it a moment to do so.
    fn exit_status(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match self.child.0.try_wait() {
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
        // Kill and reap before removing the socket directory (`Reaped`'s drop is then a no-op).
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// rfaas measurements (on the pinned client thread)

/// What is invoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Func {
    Noop,
    /// `echo` into a heap vector: the client copies the result out of its result slot.
    Echo,
    /// `echo` into an [`rfaas::Buffer`]: the executor writes the result in place.
    EchoBuf,
}

impl Func {
    fn name(self) -> &'static str {
        match self {
            Func::Noop => "noop",
            Func::Echo => "echo",
            Func::EchoBuf => "echo-buf",
        }
    }
}

/// How the executor's worker waits between invocations, and how the client reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Hot,
    Warm,
    /// Hot, over TCP loopback.
    Tcp,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Hot => "hot",
            Mode::Warm => "warm",
            Mode::Tcp => "tcp",
        }
    }

    /// The executor's `--hot-timeout-us`: always hot, or always warm.
    fn hot_timeout_us(self) -> &'static str {
        match self {
            Mode::Hot | Mode::Tcp => "-1",
            Mode::Warm => "0",
        }
    }

    /// The `pingpong` mode compared with: both sides spinning, the server asleep, or TCP.
    fn baseline(self) -> &'static str {
        match self {
            Mode::Hot => "spin",
            Mode::Warm => "futex",
            Mode::Tcp => "tcp",
        }
    }

    /// A stricter baseline reported beside the target's (no target of its own): for TCP, the
    /// ping-pong that busy-polls non-blocking sockets as a hot worker does, without the
    /// scheduler's wake-up that the blocking `tcp` baseline pays per message.
    fn strict_baseline(self) -> Option<&'static str> {
        match self {
            Mode::Tcp => Some("tcp-spin"),
            Mode::Hot | Mode::Warm => None,
        }
    }

    /// Idle time before each invocation (warm: so that the worker is asleep).
    fn gap(self, gap: Duration) -> Option<Duration> {
        match self {
            Mode::Hot | Mode::Tcp => None,
            Mode::Warm => Some(gap),
        }
    }
}

/// How the client waits for a hot invocation, besides [`rfaas::Invocation::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Async {
    /// `runtime.block_on(invocation)`, one per invocation.
    BlockOn,
    /// `invocation.await` inside one `block_on` running the whole case (a running task).
    Task,
}

impl Async {
    fn name(self) -> &'static str {
        match self {
            Async::BlockOn => "async",
            Async::Task => "task",
        }
    }
}

/// One measured rfaas case.
struct Measured {
    mode: Mode,
    call: Func,
    /// Payload bytes (0 for `noop`).
    size: usize,
    summary: Summary,
}

/// A hot case through `.await`, beside the same case through `wait()` measured just before.
struct Awaited {
    how: Async,
    call: Func,
    size: usize,
    summary: Summary,
    wait: Summary,
    /// `block_on` of a ready future, per call: the runtime's own share of `async`.
    block_on: Summary,
}

/// One measurement of a case between its baseline runs.
struct Round {
    case: CaseResult,
    before: Summary,
    after: Summary,
    /// The stricter baseline's runs before and after, where the mode has one.
    strict: Option<(Summary, Summary)>,
}

impl Round {
    /// rfaas median / the mean of the baseline medians around it.
    fn ratio(&self) -> f64 {
        self.case.row.summary.median_ns / ((self.before.median_ns + self.after.median_ns) / 2.0)
    }
}

/// Index of the median of `values` (non-empty; the lower middle one of an even count).
fn median_index(values: &[f64]) -> usize {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order[(order.len().max(1) - 1) / 2]
}

/// What one case measured.
struct CaseResult {
    row: Measured,
    /// Hot `noop` and smallest payloads: the same through `.await`.
    awaited: Vec<Awaited>,
}

/// Where an echo's result goes.
enum Sink {
    Heap(Vec<u8>),
    Registered(rfaas::Buffer<u8>),
}

impl Sink {
    fn bytes(&self) -> &[u8] {
        match self {
            Sink::Heap(bytes) => bytes,
            Sink::Registered(buffer) => buffer,
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Sink::Heap(bytes) => bytes,
            Sink::Registered(buffer) => buffer,
        }
    }
}

/// The buffers and samples of one case: `warmup` round trips, then `iterations` recorded.
struct Case {
    warmup: usize,
    total: u32,
    input: Vec<u8>,
    output: Sink,
    samples: Vec<u64>,
}

impl Case {
    fn new(plan: Plan, size: usize, output: Sink) -> Result<Self> {
        Ok(Self {
            warmup: plan.warmup,
            total: plan.total()?,
            input: (0..size).map(|i| i as u8).collect(),
            output,
            samples: Vec::with_capacity(plan.iterations),
        })
    }

    /// Tags the payload with `seq`, so each echo is checked.
    fn prepare(&mut self, seq: u32) {
        let n = self.input.len().min(4);
        self.input[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
    }

    /// Checks echo `seq` (every byte of the last one).
    fn check(&self, copied: u64, seq: u32) -> Result<()> {
        check_echo(copied, &self.input, self.output.bytes(), seq == self.total)
            .with_context(|| format!("echo {seq} of {} bytes", self.input.len()))
    }

    fn record(&mut self, seq: u32, elapsed: Duration) {
        if seq as usize > self.warmup {
            self.samples
                .push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        }
    }

    fn finish(mut self) -> Summary {
        Summary::from_samples(&mut self.samples)
    }
}

impl Setup {
    fn connect(&self, address: &Address) -> Result<Lease> {
        let lease = match address {
            Address::Unix(socket) => Lease::connect(socket),
            Address::Tcp(address) => Lease::connect_tcp(address, &LeaseOptions::default()),
        }
        .context("connecting to the executor")?;
        let stale = "the package does not match this binary's stubs: run `cargo xtask package` \
                     and rebuild";
        lease.resolve::<noop::Call>().context(stale)?;
        lease.resolve::<echo::Call<'_>>().context(stale)?;
        Ok(lease)
    }

    /// `noop`, then `echo` of each size (smallest first), then the same into `Buffer`s.
    fn cases(&self) -> Vec<(Func, usize)> {
        let mut cases = vec![(Func::Noop, 0)];
        for call in [Func::Echo, Func::EchoBuf] {
            cases.extend(self.sizes.iter().map(|&size| (call, size)));
        }
        cases
    }

    /// A case's buffers; `noop` runs as many round trips as an 8-byte payload.
    fn case(&self, lease: Option<&Lease>, call: Func, size: usize) -> Result<Case> {
        let output = match (call, lease) {
            (Func::EchoBuf, Some(lease)) => Sink::Registered(
                lease
                    .buffer(size)
                    .with_context(|| format!("allocating a {size}-byte rfaas::Buffer"))?,
            ),
            _ => Sink::Heap(vec![0; size]),
        };
        Case::new(self.plan(size.max(NOOP_BASELINE_SIZE)), size, output)
    }

    /// Measures one case on a fresh lease; hot `noop` and the smallest payloads also through
    /// `.await`, right after `wait()`.
    fn measure_case(
        &self,
        address: &Address,
        mode: Mode,
        call: Func,
        size: usize,
    ) -> Result<CaseResult> {
        let lease = self.connect(address)?;
        let wait = self.measure_wait(&lease, call, size, mode.gap(self.gap))?;
        let mut awaited = Vec::new();
        if mode == Mode::Hot && (call == Func::Noop || size == self.sizes[0]) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .context("building the tokio runtime")?;
            let block_on = self.block_on_floor(&runtime)?;
            for how in [Async::BlockOn, Async::Task] {
                let summary = self.measure_async(&runtime, &lease, how, call, size)?;
                awaited.push(Awaited {
                    how,
                    call,
                    size,
                    summary,
                    wait,
                    block_on,
                });
            }
        }
        Ok(CaseResult {
            row: Measured {
                mode,
                call,
                size,
                summary: wait,
            },
            awaited,
        })
    }

    /// `runtime.block_on(ready(()))`, per call (timed in batches: it takes about as long as
    /// reading the clock).
    fn block_on_floor(&self, runtime: &tokio::runtime::Runtime) -> Result<Summary> {
        const BATCH: u32 = 64;
        let mut case = self.case(None, Func::Noop, 0)?;
        for seq in 1..=case.total {
            let start = Instant::now();
            for _ in 0..BATCH {
                runtime.block_on(std::future::ready(()));
            }
            case.record(seq, start.elapsed() / BATCH);
        }
        Ok(case.finish())
    }

    /// One case through the blocking `wait()`, idling `gap` (untimed) before each invocation.
    fn measure_wait(
        &self,
        lease: &Lease,
        call: Func,
        size: usize,
        gap: Option<Duration>,
    ) -> Result<Summary> {
        let mut case = self.case(Some(lease), call, size)?;
        for seq in 1..=case.total {
            case.prepare(seq);
            if let Some(gap) = gap {
                idle(gap);
            }
            let elapsed = match call {
                Func::Noop => {
                    let start = Instant::now();
                    lease
                        .invoke(noop::call())
                        .timeout(WAIT_TIMEOUT)
                        .wait()
                        .context("invoking noop")?;
                    start.elapsed()
                }
                Func::Echo | Func::EchoBuf => {
                    let start = Instant::now();
                    let copied = lease
                        .invoke(echo::call(&case.input, case.output.bytes_mut()))
                        .timeout(WAIT_TIMEOUT)
                        .wait()
                        .context("invoking echo")?;
                    let elapsed = start.elapsed();
                    case.check(copied, seq)?;
                    elapsed
                }
            };
            case.record(seq, elapsed);
        }
        Ok(case.finish())
    }

    /// One case through `.await` on a current-thread runtime.
    fn measure_async(
        &self,
        runtime: &tokio::runtime::Runtime,
        lease: &Lease,
        how: Async,
        call: Func,
        size: usize,
    ) -> Result<Summary> {
        let mut case = self.case(Some(lease), call, size)?;
        match how {
            Async::BlockOn => {
                for seq in 1..=case.total {
                    case.prepare(seq);
                    let elapsed = match call {
                        Func::Noop => {
                            let start = Instant::now();
                            runtime
                                .block_on(lease.invoke(noop::call()).timeout(WAIT_TIMEOUT))
                                .context("invoking noop")?;
                            start.elapsed()
                        }
                        Func::Echo | Func::EchoBuf => {
                            let start = Instant::now();
                            let invocation = lease
                                .invoke(echo::call(&case.input, case.output.bytes_mut()))
                                .timeout(WAIT_TIMEOUT);
                            let copied = runtime.block_on(invocation).context("invoking echo")?;
                            let elapsed = start.elapsed();
                            case.check(copied, seq)?;
                            elapsed
                        }
                    };
                    case.record(seq, elapsed);
                }
            }
            Async::Task => runtime.block_on(async {
                for seq in 1..=case.total {
                    case.prepare(seq);
                    let elapsed = match call {
                        Func::Noop => {
                            let start = Instant::now();
                            lease
                                .invoke(noop::call())
                                .timeout(WAIT_TIMEOUT)
                                .await
                                .context("invoking noop")?;
                            start.elapsed()
                        }
                        Func::Echo | Func::EchoBuf => {
                            let start = Instant::now();
                            let copied = lease
                                .invoke(echo::call(&case.input, case.output.bytes_mut()))
                                .timeout(WAIT_TIMEOUT)
                                .await
                                .context("invoking echo")?;
                            let elapsed = start.elapsed();
                            case.check(copied, seq)?;
                            elapsed
                        }
                    };
                    case.record(seq, elapsed);
                }
                anyhow::Ok(())
            })?,
        }
        Ok(case.finish())
    }
}

/// Checks an echo: the count, the tagged bytes, and (`all`) every byte.
fn check_echo(copied: u64, input: &[u8], output: &[u8], all: bool) -> Result<()> {
    ensure!(
        copied == input.len() as u64,
        "echo copied {copied} bytes, not {}",
        input.len()
    );
    let n = input.len().min(4);
    ensure!(output[..n] == input[..n], "the output is not the echo");
    ensure!(!all || output == input, "the output is not the echo");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Output

/// A target on the ratio of medians.
#[derive(Clone, Copy)]
struct Target {
    /// Largest acceptable ratio.
    max_ratio: f64,
    /// What it means, for the table.
    label: &'static str,
}

/// The target for `mode` at `size` (0: `noop`).
fn target(mode: Mode, size: usize) -> Target {
    match mode {
        Mode::Tcp => Target {
            max_ratio: TCP_TARGET,
            label: "<=1.3x",
        },
        _ if size >= BANDWIDTH_FROM => Target {
            max_ratio: 1.0 / BANDWIDTH_FRACTION,
            label: ">=70% bw",
        },
        Mode::Hot => Target {
            max_ratio: HOT_TARGET,
            label: "<=1.5x",
        },
        Mode::Warm => Target {
            max_ratio: WARM_TARGET,
            label: "<=1.3x",
        },
    }
}

/// A `--json` line comparing an rfaas case with its baseline.
#[derive(Serialize)]
struct CompareRow<'a> {
    /// `hot`, `warm` or `tcp`.
    mode: &'a str,
    /// `noop`, `echo` or `echo-buf`.
    call: &'a str,
    /// Payload bytes (0 for `noop`).
    size: usize,
    rfaas: &'a Summary,
    /// `spin`, `futex` or `tcp`.
    baseline_mode: &'a str,
    baseline_size: usize,
    /// The baseline run just before the case, and just after it.
    baseline_before: &'a Summary,
    baseline_after: &'a Summary,
    /// Means of the two runs' figures.
    baseline_median_ns: f64,
    baseline_p99_ns: f64,
    /// rfaas median / `baseline_median_ns`.
    ratio: f64,
    /// rfaas median - `baseline_median_ns`: what rfaas adds to the raw round trip.
    overhead_ns: f64,
    target_ratio: f64,
    met: bool,
    /// The larger of the two baseline medians over the smaller.
    drift: f64,
    /// The stricter baseline ([`Mode::strict_baseline`]), where the mode has one: its mode,
    /// the means of its runs before and after the case, and rfaas median / its median.
    #[serde(skip_serializing_if = "Option::is_none")]
    strict_baseline_mode: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict_baseline_median_ns: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict_baseline_p99_ns: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict_ratio: Option<f64>,
    /// With `--rounds` above 1: every round's ratio, in the order measured (the row is the
    /// round with the median ratio).
    #[serde(skip_serializing_if = "Option::is_none")]
    round_ratios: Option<&'a [f64]>,
}

/// A `--json` line comparing a hot case through `.await` with the same through `wait()`.
#[derive(Serialize)]
struct AwaitRow<'a> {
    /// `async` (one `block_on` per invocation) or `task` (awaited inside one `block_on`).
    mode: &'a str,
    call: &'a str,
    size: usize,
    rfaas: &'a Summary,
    /// `wait`.
    baseline_mode: &'a str,
    baseline: &'a Summary,
    ratio: f64,
    /// rfaas median - `wait()` median.
    overhead_ns: f64,
    /// Median of `block_on(ready(()))` alone.
    block_on_ns: f64,
}

/// Table or JSON lines on stdout, and the tally of targets.
struct Output {
    json: bool,
    met: usize,
    missed: Vec<String>,
    drifted: usize,
    async_header: bool,
}

fn us(ns: f64) -> f64 {
    ns / 1_000.0
}

fn size_label(call: Func, size: usize) -> String {
    match call {
        Func::Noop => "-".into(),
        Func::Echo | Func::EchoBuf => human_size(size),
    }
}

impl Output {
    fn new(json: bool) -> Self {
        Self {
            json,
            met: 0,
            missed: Vec::new(),
            drifted: 0,
            async_header: false,
        }
    }

    fn line(&self, text: std::fmt::Arguments<'_>) -> Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_fmt(text)?;
        writeln!(out)?;
        out.flush()?;
        Ok(())
    }

    fn emit(&self, row: &impl Serialize) -> Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, row)?;
        writeln!(out)?;
        out.flush()?;
        Ok(())
    }

    fn header(&self, args: &Args) -> Result<()> {
        if self.json {
            return Ok(());
        }
        self.line(format_args!(
            "invoke: client cpu {}, executor worker cpu {}, warm/futex idle gap {} µs; round \
             trips in µs; base = mean of the baseline run before and after the case, drift = \
             their ratio; ratio = rfaas median / base median, +ns = rfaas median - base median",
            args.client_cpu, args.server_cpu, args.futex_gap_us
        ))?;
        self.line(format_args!(
            "{:<5} {:<8} {:>7} {:>6} {:>9} {:>9} | {:<5} {:>9} {:>9} {:>5} | {:>6} {:>9} {:<9} {}",
            "mode",
            "call",
            "size",
            "iters",
            "median",
            "p99",
            "base",
            "median",
            "p99",
            "drift",
            "ratio",
            "+ns",
            "target",
            "result"
        ))
    }

    /// An rfaas case beside the baseline runs of `base_size` bytes before and after it.
    fn compare(
        &mut self,
        row: &Measured,
        base_size: usize,
        (before, after): (&Summary, &Summary),
        strict: Option<(&Summary, &Summary)>,
        rounds: &[f64],
    ) -> Result<()> {
        let strict = strict.map(|(b, a)| {
            let median = (b.median_ns + a.median_ns) / 2.0;
            (
                median,
                (b.p99_ns + a.p99_ns) / 2.0,
                row.summary.median_ns / median,
            )
        });
        let base_median = (before.median_ns + after.median_ns) / 2.0;
        let base_p99 = (before.p99_ns + after.p99_ns) / 2.0;
        let drift = before.median_ns.max(after.median_ns) / before.median_ns.min(after.median_ns);
        let drifted = drift > DRIFT_LIMIT;
        let ratio = row.summary.median_ns / base_median;
        let target = target(row.mode, row.size);
        let met = ratio <= target.max_ratio;
        self.drifted += usize::from(drifted);
        if met {
            self.met += 1;
        } else {
            let name = match row.call {
                Func::Noop => format!("{} noop", row.mode.name()),
                call => format!(
                    "{} {} {}",
                    row.mode.name(),
                    call.name(),
                    human_size(row.size)
                ),
            };
            self.missed.push(format!(
                "{name} {ratio:.2}x {} ({}){}",
                row.mode.baseline(),
                target.label,
                if drifted { " ~" } else { "" }
            ));
        }
        if self.json {
            return self.emit(&CompareRow {
                mode: row.mode.name(),
                call: row.call.name(),
                size: row.size,
                rfaas: &row.summary,
                baseline_mode: row.mode.baseline(),
                baseline_size: base_size,
                baseline_before: before,
                baseline_after: after,
                baseline_median_ns: base_median,
                baseline_p99_ns: base_p99,
                ratio,
                overhead_ns: row.summary.median_ns - base_median,
                target_ratio: target.max_ratio,
                met,
                drift,
                strict_baseline_mode: strict.and(row.mode.strict_baseline()),
                strict_baseline_median_ns: strict.map(|s| s.0),
                strict_baseline_p99_ns: strict.map(|s| s.1),
                strict_ratio: strict.map(|s| s.2),
                round_ratios: (rounds.len() > 1).then_some(rounds),
            });
        }
        self.line(format_args!(
            "{:<5} {:<8} {:>7} {:>6} {:>9.3} {:>9.3} | {:<5} {:>9.3} {:>9.3} {:>5.2} | {:>6.2} {:>+9.0} {:<9} {}{}{}{}",
            row.mode.name(),
            row.call.name(),
            size_label(row.call, row.size),
            row.summary.iterations,
            us(row.summary.median_ns),
            us(row.summary.p99_ns),
            row.mode.baseline(),
            us(base_median),
            us(base_p99),
            drift,
            ratio,
            row.summary.median_ns - base_median,
            target.label,
            if met { "met" } else { "MISSED" },
            if drifted { " ~" } else { "" },
            match (strict, row.mode.strict_baseline()) {
                (Some((median, p99, ratio)), Some(name)) => format!(
                    " | {name} {:.3} {:.3}: {ratio:.2}x",
                    us(median),
                    us(p99)
                ),
                _ => String::new(),
            },
            if rounds.len() > 1 {
                let all: Vec<String> = rounds.iter().map(|r| format!("{r:.2}")).collect();
                format!(" | rounds {}", all.join(" "))
            } else {
                String::new()
            }
        ))
    }

    /// A hot case through `.await`, beside the same case through `wait()`.
    fn awaited(&mut self, awaited: &Awaited) -> Result<()> {
        let overhead = awaited.summary.median_ns - awaited.wait.median_ns;
        let ratio = awaited.summary.median_ns / awaited.wait.median_ns;
        if self.json {
            return self.emit(&AwaitRow {
                mode: awaited.how.name(),
                call: awaited.call.name(),
                size: awaited.size,
                rfaas: &awaited.summary,
                baseline_mode: "wait",
                baseline: &awaited.wait,
                ratio,
                overhead_ns: overhead,
                block_on_ns: awaited.block_on.median_ns,
            });
        }
        if !self.async_header {
            self.async_header = true;
            self.line(format_args!(
                "hot through `.await` on a tokio current_thread runtime (async: one block_on per \
                 invocation; task: awaited inside one block_on), base = wait() just before; \
                 last column: the overhead, and block_on(ready()) alone"
            ))?;
        }
        self.line(format_args!(
            "{:<5} {:<8} {:>7} {:>6} {:>9.3} {:>9.3} | {:<5} {:>9.3} {:>9.3} {:>5} | {:>6.2} {:+.0} ns (block_on {:.0} ns)",
            awaited.how.name(),
            awaited.call.name(),
            size_label(awaited.call, awaited.size),
            awaited.summary.iterations,
            us(awaited.summary.median_ns),
            us(awaited.summary.p99_ns),
            "wait",
            us(awaited.wait.median_ns),
            us(awaited.wait.p99_ns),
            "",
            ratio,
            overhead,
            awaited.block_on.median_ns
        ))
    }

    fn footer(&self) -> Result<()> {
        if self.json {
            return Ok(());
        }
        let total = self.met + self.missed.len();
        self.line(format_args!(
            "targets: {} of {total} met{}",
            self.met,
            if self.missed.is_empty() {
                String::new()
            } else {
                format!(
                    "; missed (reported, not an error): {}",
                    self.missed.join(", ")
                )
            }
        ))?;
        if self.drifted > 0 {
            self.line(format_args!(
                "~ {} case(s) drifted: their baseline runs before and after differ by more than \
                 {:.0}% (the machine's speed changed during the case); rerun before trusting them",
                self.drifted,
                (DRIFT_LIMIT - 1.0) * 100.0
            ))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::median_index;

    #[test]
    fn the_reported_round_is_the_median_one() {
        assert_eq!(median_index(&[2.0]), 0);
        assert_eq!(median_index(&[3.0, 1.0, 2.0]), 2);
        // Sorted 1.7 (1), 1.8 (3), 1.9 (0), 2.3 (2): the lower middle one.
        assert_eq!(median_index(&[1.9, 1.7, 2.3, 1.8]), 3);
        assert_eq!(median_index(&[1.8, 1.8, 1.8]), 1);
    }
}
