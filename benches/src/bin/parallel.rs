//! Parallel invocations: throughput and latency against leased cores and outstanding
//! invocations, on our shared-memory transport (rFaaS's parallel-invocations experiment).
//!
//! Method. For each number of cores `C` in `1..=--max-cores` (2 by default) an executor is
//! started with `--cores C` (worker `i` pinned to CPU `(--server-cpu + i) mod #CPUs`), as many
//! slots per worker as the largest window, and a short hot timeout (`--hot-timeout-us`,
//! 200 µs); one client thread, pinned to `--client-cpu`, leases all its workers with
//! [`Lease::connect`]. For each function (`noop`; `echo` of 64 bytes into a heap buffer) and
//! each window `W` in `--outstanding` (1, 2, 4, 8, 16), the client keeps `W` invocations in
//! flight: it issues `W`, each sent by one poll of its [`Invocation`] future (which encodes it
//! into a free slot of the next worker, round robin, and signals it, without waiting), then
//! [`wait`]s for the oldest (spinning 50 µs, then asleep on the lease's doorbell) and issues
//! another as soon as it returns. With one worker the results come back in order, so the
//! oldest is always the next to finish; with several, a later one may finish first, and is
//! replaced only once the ones before it are back.
//!
//! Every echo is checked: the byte count at once, the bytes in batches (the outputs rotate
//! through a pool of 4096 buffers, 256 KiB; the window drains when the pool is used up, a
//! pause of at most `W` invocations in 4096).
//!
//! The machine's speed drifts (other tenants share the vCPUs), so the configurations of one
//! executor are interleaved: `--rounds` (5) rounds, each running every configuration for
//! `--seconds / --rounds` (0.2 s) after a tenth of that of untimed warm-up, in an order rotated
//! every round. Reported per configuration: invocations completed per second of timed wall
//! time (all rounds; the table also gives the slowest and fastest round), and the median and
//! p99 of the per-invocation latency, from issuing the invocation to `wait` returning it (with
//! `W` in flight it includes the queueing behind the others, so by Little's law it grows like
//! `W / throughput` once the workers are saturated). At most `--invocations` (4 M) latencies
//! are kept per configuration; a configuration that reaches it stops early.
//!
//! Limits on our 2-vCPU VMs. The client needs a core of its own (cpu 0) and the first worker
//! gets the other (cpu 1); the second worker shares cpu 0 with the client (marked `*`), so
//! `C = 2` oversubscribes the machine, and half of the invocations (round robin) go to a
//! worker that runs only when the client's thread leaves the core or is preempted. That is
//! measured anyway, as the shape of the curve on a bigger machine cannot be had here; nothing
//! spins forever: workers go warm (futex sleep) after the hot timeout, the client's `wait`
//! sleeps after 50 µs, and every invocation has a timeout. The vCPUs are also shared with
//! other tenants, so absolute figures are noisy (report `uptime`'s load with them).
//!
//! The executor is `rfaas-executor` next to this binary (or `--executor`), serving the package
//! `cargo xtask package` writes (or `--package`); it is killed and reaped on every exit path and
//! dies with this process.
//!
//! ```text
//! cargo build --release -p benches -p executor && cargo xtask package
//! target/release/parallel [--quick] [--json] [--max-cores 2] [--outstanding 1,2,4,8,16]
//! ```
//!
//! With `--json`, one object per line: `{"experiment":"parallel","series":"noop-<C>c" or
//! "echo64-<C>c","cores":C,"x":W,"x_label":"outstanding invocations","invocations":N,
//! "throughput_per_s":..,"median_ns":..,"p99_ns":..}`.
//!
//! [`Invocation`]: rfaas::Invocation
//! [`wait`]: rfaas::Invocation::wait

use std::collections::VecDeque;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use benches::{
    ExecutorProcess, ExecutorSpec, Summary, cpu_count, locate_executor, locate_package, run_pinned,
    worker_cpus,
};
use clap::Parser;
use functions_example::{echo, noop};
use rfaas::{Invocation, Lease, RemoteCall};
use serde::Serialize;

/// Longest one invocation may wait for its result (oversubscribed cores are slow, not stuck).
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Payload of the `echo` invocations.
const ECHO_SIZE: usize = 64;
/// `echo` outputs rotate through this many buffers of [`ECHO_SIZE`] bytes.
const ECHO_POOL: usize = 4096;
/// Slot size: header, `echo`'s arguments and 64 bytes, with plenty to spare.
const SLOT_SIZE: usize = 4096;
/// Timed seconds per configuration by default, and with `--quick`.
const SECONDS: f64 = 1.0;
const QUICK_SECONDS: f64 = 0.05;
/// Rounds by default, and with `--quick`.
const ROUNDS: u32 = 5;
const QUICK_ROUNDS: u32 = 1;
/// Most latencies kept per configuration by default, and with `--quick`.
const INVOCATIONS: usize = 4_000_000;
const QUICK_INVOCATIONS: usize = 100_000;
/// Untimed warm-up before each timed slice, as a share of the slice.
const WARMUP_SHARE: f64 = 0.1;

/// Throughput and latency of `noop` and 64-byte `echo` against leased cores and invocations in
/// flight.
#[derive(Parser, Debug)]
#[command(name = "parallel")]
struct Args {
    /// Leased cores (executor workers) from 1 up to this.
    #[arg(long, default_value_t = 2)]
    max_cores: u32,
    /// Invocations in flight, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    outstanding: Vec<usize>,
    /// Timed seconds per configuration, over all rounds (default 1; 0.05 with --quick).
    #[arg(long)]
    seconds: Option<f64>,
    /// Rounds the configurations are interleaved in (default 5; 1 with --quick).
    #[arg(long)]
    rounds: Option<u32>,
    /// Most invocations (latencies kept) per configuration (default 4000000; 100000 with
    /// --quick).
    #[arg(long)]
    invocations: Option<usize>,
    /// The executor workers' hot timeout in µs (-1 always hot, 0 always warm).
    #[arg(long, default_value_t = 200, allow_negative_numbers = true)]
    hot_timeout_us: i64,
    /// CI smoke run: one round of 50 ms per configuration.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// The `rfaas-executor` binary (default: next to this one).
    #[arg(long)]
    executor: Option<PathBuf>,
    /// The function package to serve (default: `<target dir>/rfaas/functions-example`).
    #[arg(long)]
    package: Option<PathBuf>,
    /// CPU the client thread is pinned to.
    #[arg(long, default_value_t = 0)]
    client_cpu: usize,
    /// CPU of the first worker; further workers take the next CPUs, wrapping around.
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
}

/// What is invoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Func {
    Noop,
    /// `echo` of [`ECHO_SIZE`] bytes into a heap buffer.
    Echo,
}

impl Func {
    fn name(self) -> &'static str {
        match self {
            Func::Noop => "noop",
            Func::Echo => "echo64",
        }
    }
}

/// The resolved run parameters.
struct Plan {
    windows: Vec<usize>,
    /// Timed length of one slice (a configuration in one round).
    slice: Duration,
    rounds: u32,
    invocations: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut windows = args.outstanding.clone();
    windows.sort_unstable();
    windows.dedup();
    ensure!(!windows.is_empty(), "--outstanding is empty");
    ensure!(
        windows.iter().all(|&w| (1..=256).contains(&w)),
        "--outstanding values must be between 1 and 256"
    );
    ensure!(
        (1..=256).contains(&args.max_cores),
        "--max-cores must be between 1 and 256"
    );
    let seconds = args
        .seconds
        .unwrap_or(if args.quick { QUICK_SECONDS } else { SECONDS });
    ensure!(
        seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0,
        "--seconds must be positive (and at most an hour)"
    );
    let rounds = args
        .rounds
        .unwrap_or(if args.quick { QUICK_ROUNDS } else { ROUNDS });
    ensure!(
        (1..=1000).contains(&rounds),
        "--rounds must be between 1 and 1000"
    );
    let invocations = args.invocations.unwrap_or(if args.quick {
        QUICK_INVOCATIONS
    } else {
        INVOCATIONS
    });
    ensure!(invocations >= 1, "--invocations must be positive");
    let cpus = cpu_count();
    ensure!(
        args.client_cpu < cpus && args.server_cpu < cpus,
        "the client goes on cpu {} and the first worker on cpu {}, but {cpus} cpu(s) are \
         available",
        args.client_cpu,
        args.server_cpu
    );
    let executor = locate_executor(args.executor.as_deref())?;
    let package = locate_package(args.package.as_deref())?;
    let plan = Plan {
        slice: Duration::from_secs_f64(seconds / f64::from(rounds)),
        windows,
        rounds,
        invocations,
    };
    let largest = plan.windows[plan.windows.len() - 1];

    let out = Output { json: args.json };
    out.header(&args, cpus, &plan)?;
    for cores in 1..=args.max_cores {
        let worker_cpus = worker_cpus(args.server_cpu, cores as usize, cpus);
        // Started from this (unpinned, long-lived) thread: the executor dies with it.
        let process = ExecutorProcess::start(&ExecutorSpec {
            executor: executor.clone(),
            package: package.clone(),
            cores,
            cpus: worker_cpus.clone(),
            // Every window fits on one worker: the lease may put them all there.
            slots: largest as u32,
            slot_size: SLOT_SIZE,
            hot_timeout_us: args.hot_timeout_us,
            label: "parallel".into(),
        })
        .with_context(|| format!("starting an executor with {cores} core(s)"))?;
        let shared_core = worker_cpus.contains(&args.client_cpu);
        let configs = run_pinned(args.client_cpu, || -> Result<Vec<Config>> {
            let lease = Lease::connect(process.socket()).context("connecting to the executor")?;
            ensure!(
                lease.workers() == cores as usize,
                "the lease has {} workers, not {cores}",
                lease.workers()
            );
            let stale = "the package does not match this binary's stubs: run `cargo xtask \
                         package` and rebuild";
            lease.resolve::<noop::Call>().context(stale)?;
            lease.resolve::<echo::Call<'_>>().context(stale)?;
            measure(&lease, &plan)
        })
        .with_context(|| format!("pinning the client to cpu {}", args.client_cpu))??;
        for config in configs {
            out.row(cores, shared_core, config)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measurement

/// One configuration (function and window) and what its slices measured.
struct Config {
    func: Func,
    window: usize,
    /// Latencies in ns (saturated at `u32::MAX`), all rounds.
    samples: Vec<u32>,
    /// Timed wall time, all rounds.
    elapsed: Duration,
    /// Throughput of each round.
    per_round: Vec<f64>,
}

/// Runs every configuration `plan.rounds` times, interleaved, on the client thread.
fn measure(lease: &Lease, plan: &Plan) -> Result<Vec<Config>> {
    let mut configs: Vec<Config> = [Func::Noop, Func::Echo]
        .into_iter()
        .flat_map(|func| {
            plan.windows.iter().map(move |&window| Config {
                func,
                window,
                samples: Vec::new(),
                elapsed: Duration::ZERO,
                per_round: Vec::new(),
            })
        })
        .collect();
    let mut pool = vec![0u8; ECHO_POOL * ECHO_SIZE];
    let input: [u8; ECHO_SIZE] = std::array::from_fn(|i| i as u8 ^ 0x5a);
    for round in 0..plan.rounds as usize {
        let count = configs.len();
        for k in 0..count {
            let config = &mut configs[(round + k) % count];
            if config.samples.capacity() == 0 {
                // Touch the memory now, so recording takes no page faults.
                config.samples.resize(plan.invocations, u32::MAX);
                config.samples.clear();
            }
            let left = plan.invocations - config.samples.len();
            if left == 0 {
                continue;
            }
            let warmup = plan.slice.mul_f64(WARMUP_SHARE);
            let mut ignored = Vec::new();
            let mut budget = Budget::new(left, warmup, &mut ignored);
            slice(
                lease,
                config.func,
                config.window,
                &input,
                &mut pool,
                &mut budget,
            )?;

            let before = config.samples.len();
            let mut budget = Budget::new(left, plan.slice, &mut config.samples);
            let start = Instant::now();
            slice(
                lease,
                config.func,
                config.window,
                &input,
                &mut pool,
                &mut budget,
            )?;
            let elapsed = start.elapsed();
            config.elapsed += elapsed;
            let done = config.samples.len() - before;
            config.per_round.push(done as f64 / elapsed.as_secs_f64());
        }
    }
    Ok(configs)
}

/// Runs one configuration until `budget` is spent.
fn slice(
    lease: &Lease,
    func: Func,
    window: usize,
    input: &[u8; ECHO_SIZE],
    pool: &mut [u8],
    budget: &mut Budget<'_>,
) -> Result<()> {
    match func {
        Func::Noop => {
            keep_in_flight(
                window,
                budget,
                || Some(lease.invoke(noop::call()).timeout(WAIT_TIMEOUT)),
                |()| Ok(()),
            )?;
        }
        Func::Echo => {
            // Each pass over the pool: zero it, use each buffer once, check them all.
            while budget.has_time() {
                pool.fill(0);
                let mut outputs = pool.chunks_mut(ECHO_SIZE);
                let used = keep_in_flight(
                    window,
                    budget,
                    || {
                        let output = outputs.next()?;
                        Some(
                            lease
                                .invoke(echo::call(input, output))
                                .timeout(WAIT_TIMEOUT),
                        )
                    },
                    |&copied| {
                        ensure!(
                            copied == ECHO_SIZE as u64,
                            "echo copied {copied} bytes, not {ECHO_SIZE}"
                        );
                        Ok(())
                    },
                )?;
                ensure!(
                    pool.chunks(ECHO_SIZE).take(used).all(|out| out == input),
                    "an echo returned other bytes than it was sent"
                );
            }
        }
    }
    Ok(())
}

/// Keeps `window` invocations from `next` in flight: issues them (each sent by one poll of its
/// future), waits for the oldest, records its latency, issues another; stops issuing when the
/// budget is spent or `next` has no more, and returns once the last one is back, with the
/// number issued.
fn keep_in_flight<'l, C: RemoteCall + Unpin>(
    window: usize,
    budget: &mut Budget<'_>,
    mut next: impl FnMut() -> Option<Invocation<'l, C>>,
    check: impl Fn(&C::Output) -> Result<()>,
) -> Result<usize> {
    let mut inflight: VecDeque<(Instant, Invocation<'l, C>)> = VecDeque::with_capacity(window);
    let mut issued = 0;
    let mut more = true;
    loop {
        while more && inflight.len() < window {
            let Some(start) = budget.take() else {
                more = false;
                break;
            };
            let Some(mut invocation) = next() else {
                budget.give_back();
                more = false;
                break;
            };
            issued += 1;
            match Pin::new(&mut invocation).poll(&mut TaskContext::from_waker(Waker::noop())) {
                Poll::Pending => inflight.push_back((start, invocation)),
                Poll::Ready(result) => {
                    check(&result.with_context(|| format!("invoking {}", C::NAME))?)?;
                    budget.record(start);
                }
            }
        }
        let Some((start, invocation)) = inflight.pop_front() else {
            return Ok(issued);
        };
        let output = invocation
            .wait()
            .with_context(|| format!("invoking {}", C::NAME))?;
        budget.record(start);
        check(&output)?;
    }
}

/// The invocations one slice may issue: how many, until when, and where their latencies go.
struct Budget<'s> {
    left: usize,
    deadline: Instant,
    samples: &'s mut Vec<u32>,
}

impl<'s> Budget<'s> {
    fn new(left: usize, time: Duration, samples: &'s mut Vec<u32>) -> Self {
        Self {
            left,
            deadline: Instant::now() + time,
            samples,
        }
    }

    fn has_time(&self) -> bool {
        self.left > 0 && Instant::now() < self.deadline
    }

    /// Whether another invocation may be issued (then counted): the time it is issued.
    fn take(&mut self) -> Option<Instant> {
        let now = Instant::now();
        if self.left == 0 || now >= self.deadline {
            return None;
        }
        self.left -= 1;
        Some(now)
    }

    /// Returns what [`Budget::take`] counted, for an invocation that was not issued.
    fn give_back(&mut self) {
        self.left += 1;
    }

    /// Records the latency of an invocation issued at `start`.
    fn record(&mut self, start: Instant) {
        let nanos = start.elapsed().as_nanos();
        self.samples.push(u32::try_from(nanos).unwrap_or(u32::MAX));
    }
}

// ---------------------------------------------------------------------------------------------
// Output

/// One `--json` line (the field order is the contract).
#[derive(Serialize)]
struct Row {
    experiment: &'static str,
    series: String,
    cores: u32,
    x: usize,
    x_label: &'static str,
    invocations: usize,
    throughput_per_s: f64,
    median_ns: f64,
    p99_ns: f64,
}

/// A table or JSON lines on stdout.
struct Output {
    json: bool,
}

impl Output {
    fn header(&self, args: &Args, cpus: usize, plan: &Plan) -> Result<()> {
        if self.json {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "parallel: client cpu {}, workers from cpu {} ({cpus} cpus; * = a worker shares the \
             client's cpu), hot timeout {} µs; {} round(s) of {:.0} ms per configuration, \
             interleaved; throughput in invocations/s over timed wall time (slowest and fastest \
             round); latency per invocation in µs (issue to result, queueing included)",
            args.client_cpu,
            args.server_cpu,
            args.hot_timeout_us,
            plan.rounds,
            plan.slice.as_secs_f64() * 1e3
        )?;
        writeln!(
            out,
            "{:<10} {:>5} {:>11} {:>11} {:>12} {:>23} {:>9} {:>9} {:>9}",
            "series",
            "cores",
            "outstanding",
            "invocations",
            "throughput",
            "rounds: slowest-fastest",
            "median",
            "p99",
            "mean"
        )?;
        out.flush()?;
        Ok(())
    }

    fn row(&self, cores: u32, shared_core: bool, config: Config) -> Result<()> {
        let mut samples: Vec<u64> = config.samples.iter().map(|&s| u64::from(s)).collect();
        drop(config.samples);
        let summary = Summary::from_samples(&mut samples);
        let throughput = summary.iterations as f64 / config.elapsed.as_secs_f64().max(1e-9);
        let row = Row {
            experiment: "parallel",
            series: format!("{}-{cores}c", config.func.name()),
            cores,
            x: config.window,
            x_label: "outstanding invocations",
            invocations: summary.iterations,
            throughput_per_s: throughput,
            median_ns: summary.median_ns,
            p99_ns: summary.p99_ns,
        };
        let mut out = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer(&mut out, &row)?;
            writeln!(out)?;
        } else {
            let slowest = config
                .per_round
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min);
            let fastest = config.per_round.iter().copied().fold(0.0, f64::max);
            writeln!(
                out,
                "{:<10} {:>4}{} {:>11} {:>11} {:>12.0} {:>11.0}-{:<11.0} {:>9.2} {:>9.2} {:>9.2}",
                row.series,
                row.cores,
                if shared_core { "*" } else { " " },
                row.x,
                row.invocations,
                row.throughput_per_s,
                slowest,
                fastest,
                row.median_ns / 1e3,
                row.p99_ns / 1e3,
                summary.mean_ns / 1e3
            )?;
        }
        out.flush()?;
        Ok(())
    }
}
