//! Parallel invocations: throughput and latency against leased cores and outstanding
//! invocations, on our shared-memory transport (rFaaS's parallel-invocations experiment).
//!
//! Method. For each number of cores `C` in `1..=--max-cores` (2 by default) an executor is
//! started with `--cores C` (worker `i` pinned to CPU `(--server-cpu + i) mod #CPUs`),
//! `--slots` at least the largest window and a short hot timeout (`--hot-timeout-us`, 200 µs);
//! one client thread, pinned to `--client-cpu`, leases all its workers with
//! [`Lease::connect`]. For each function (`noop`; `echo` of 64 bytes into a heap buffer, every
//! echo checked) and each window `W` in `--outstanding` (1, 2, 4, 8, 16), the client keeps `W`
//! invocations in flight: `W` lanes (async blocks, each with its own output buffer) each
//! invoke, `.await` the [`Invocation`] future, and invoke again as soon as it completes, all
//! driven by one tokio current-thread runtime on the client thread. The lease spreads
//! invocations over the workers with a free slot, round robin. A run is a tenth of its time of
//! untimed warm-up, then `--seconds` (1 s) of timed invocations (at most `--invocations`,
//! 4 M; lanes start no new invocation after that and the run ends when the last one returns;
//! a run of counts, not only of time, because a stall of a few milliseconds, when another
//! tenant takes the vCPU, dominates a short run). Reported: invocations completed per second
//! of wall time,
//! and the median and p99 of the per-invocation latency (from creating the invocation to its
//! lane seeing the result; with `W` in flight it includes the queueing behind the others, so
//! by Little's law it grows like `W / throughput` once the workers are saturated).
//!
//! Limits on our 2-vCPU VMs. The client needs a core of its own (cpu 0) and the first worker
//! gets the other (cpu 1); the second worker shares cpu 0 with the client, so `C = 2`
//! oversubscribes the machine: three spinning threads on two vCPUs, which the kernel
//! time-slices, and any gain from the second worker comes only from the time the client leaves
//! its core (for instance while its invocations' futures are parked). That is measured anyway,
//! as the shape of the curve on a bigger machine cannot be had here; nothing spins forever:
//! workers go warm (futex sleep) after the hot timeout, the client's futures spin 50 µs and
//! then park (the lease's progress thread wakes them), and every invocation has a timeout. The
//! vCPUs are also shared with other tenants, so absolute figures are noisy (report `uptime`'s
//! load with them).
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

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use benches::{
    ExecutorProcess, ExecutorSpec, Summary, cpu_count, locate_executor, locate_package, run_pinned,
    worker_cpus,
};
use clap::Parser;
use functions_example::{echo, noop};
use rfaas::Lease;
use serde::Serialize;

/// Longest one invocation may wait for its result (oversubscribed cores are slow, not stuck).
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Payload of the `echo` invocations.
const ECHO_SIZE: usize = 64;
/// Slot size: header, `echo`'s arguments and 64 bytes, with plenty to spare.
const SLOT_SIZE: usize = 4096;
/// Length of a timed run by default, and with `--quick`.
const SECONDS: f64 = 1.0;
const QUICK_SECONDS: f64 = 0.05;
/// Most timed invocations per run (their latencies are kept) by default, and with `--quick`.
const INVOCATIONS: usize = 4_000_000;
const QUICK_INVOCATIONS: usize = 100_000;
/// Share of a run's time spent first on untimed warm-up invocations.
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
    /// Length of each timed run in seconds (default 1; 0.05 with --quick).
    #[arg(long)]
    seconds: Option<f64>,
    /// Most timed invocations per run, if reached before `--seconds` (default 4000000;
    /// 100000 with --quick).
    #[arg(long)]
    invocations: Option<usize>,
    /// The executor workers' hot timeout in µs (-1 always hot, 0 always warm).
    #[arg(long, default_value_t = 200, allow_negative_numbers = true)]
    hot_timeout_us: i64,
    /// CI smoke run: runs of 50 ms.
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
    let invocations = args.invocations.unwrap_or(if args.quick {
        QUICK_INVOCATIONS
    } else {
        INVOCATIONS
    });
    ensure!(invocations >= 1, "--invocations must be positive");
    let seconds = args
        .seconds
        .unwrap_or(if args.quick { QUICK_SECONDS } else { SECONDS });
    ensure!(
        seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0,
        "--seconds must be positive (and at most an hour)"
    );
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
    let largest = windows[windows.len() - 1];

    let out = Output { json: args.json };
    out.header(&args, cpus)?;
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
        run_pinned(args.client_cpu, || -> Result<()> {
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
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .context("building the tokio runtime")?;
            for func in [Func::Noop, Func::Echo] {
                for &window in &windows {
                    let plan = Plan {
                        func,
                        window,
                        invocations,
                        time: Duration::from_secs_f64(seconds),
                    };
                    let measured = plan.run(&runtime, &lease)?;
                    out.row(
                        &Row {
                            experiment: "parallel",
                            series: format!("{}-{cores}c", func.name()),
                            cores,
                            x: window,
                            x_label: "outstanding invocations",
                            invocations: measured.summary.iterations,
                            throughput_per_s: measured.throughput,
                            median_ns: measured.summary.median_ns,
                            p99_ns: measured.summary.p99_ns,
                        },
                        measured.summary.mean_ns,
                        shared_core,
                    )?;
                }
            }
            Ok(())
        })
        .with_context(|| format!("pinning the client to cpu {}", args.client_cpu))??;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A run: W lanes, each one invocation in flight

/// One configuration: `window` lanes invoking `func`.
struct Plan {
    func: Func,
    window: usize,
    invocations: usize,
    time: Duration,
}

/// What a timed run measured.
struct Measured {
    summary: Summary,
    /// Completed invocations per second of the run's wall time.
    throughput: f64,
}

/// The invocations the lanes of one run share: how many may still start, until when, and the
/// latencies of those that finished (kept in memory touched beforehand, so recording them
/// takes no page faults). Single-threaded (the lanes run on one thread).
struct Budget {
    left: Cell<usize>,
    deadline: Instant,
    /// Whether latencies are kept (not during warm-up).
    timed: bool,
    samples: RefCell<Vec<u64>>,
    recorded: Cell<usize>,
}

impl Budget {
    fn new(invocations: usize, time: Duration, timed: bool) -> Self {
        let samples = if timed {
            vec![u64::MAX; invocations]
        } else {
            Vec::new()
        };
        Self {
            left: Cell::new(invocations),
            deadline: Instant::now() + time,
            timed,
            samples: RefCell::new(samples),
            recorded: Cell::new(0),
        }
    }

    /// Whether a lane may start another invocation (then counted): the time it was asked.
    fn take(&self) -> Option<Instant> {
        let left = self.left.get();
        let now = Instant::now();
        if left == 0 || now >= self.deadline {
            return None;
        }
        self.left.set(left - 1);
        Some(now)
    }

    /// Records the latency of an invocation started at `start`.
    fn record(&self, start: Instant) {
        let latency = start.elapsed();
        if self.timed {
            let n = self.recorded.get();
            if let Some(sample) = self.samples.borrow_mut().get_mut(n) {
                *sample = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                self.recorded.set(n + 1);
            }
        }
    }

    /// The recorded latencies.
    fn into_samples(self) -> Vec<u64> {
        let mut samples = self.samples.into_inner();
        samples.truncate(self.recorded.get());
        samples
    }
}

impl Plan {
    /// Warm-up (untimed, a tenth of the time), then the timed run.
    fn run(&self, runtime: &tokio::runtime::Runtime, lease: &Lease) -> Result<Measured> {
        let warmup = Budget::new(self.invocations, self.time.mul_f64(WARMUP_SHARE), false);
        self.lanes(runtime, lease, &warmup)?;
        let budget = Budget::new(self.invocations, self.time, true);
        let start = Instant::now();
        self.lanes(runtime, lease, &budget)?;
        let elapsed = start.elapsed();
        let mut samples = budget.into_samples();
        let summary = Summary::from_samples(&mut samples);
        Ok(Measured {
            throughput: summary.iterations as f64 / elapsed.as_secs_f64(),
            summary,
        })
    }

    /// Runs `window` lanes until `budget` is spent.
    fn lanes(
        &self,
        runtime: &tokio::runtime::Runtime,
        lease: &Lease,
        budget: &Budget,
    ) -> Result<()> {
        let input: [u8; ECHO_SIZE] = std::array::from_fn(|i| i as u8 ^ 0x5a);
        let input = &input;
        let lanes = (0..self.window)
            .map(|_| Some(Box::pin(lane(lease, self.func, budget, input)) as LaneFuture<'_>))
            .collect();
        runtime.block_on(JoinAll { lanes })
    }
}

/// One lane: invoke, await the result, record its latency, again, until the budget is spent.
async fn lane(lease: &Lease, func: Func, budget: &Budget, input: &[u8; ECHO_SIZE]) -> Result<()> {
    let mut output = [0u8; ECHO_SIZE];
    while let Some(start) = budget.take() {
        match func {
            Func::Noop => lease
                .invoke(noop::call())
                .timeout(WAIT_TIMEOUT)
                .await
                .context("invoking noop")?,
            Func::Echo => {
                output.fill(0);
                let copied = lease
                    .invoke(echo::call(input, &mut output))
                    .timeout(WAIT_TIMEOUT)
                    .await
                    .context("invoking echo")?;
                ensure!(
                    copied == ECHO_SIZE as u64 && output == *input,
                    "echo returned {copied} bytes, or not the bytes sent"
                );
            }
        }
        budget.record(start);
    }
    Ok(())
}

type LaneFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

/// Polls every lane until all are done (or one fails).
struct JoinAll<'a> {
    lanes: Vec<Option<LaneFuture<'a>>>,
}

impl Future for JoinAll<'_> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<()>> {
        let mut pending = false;
        for slot in &mut self.get_mut().lanes {
            let Some(lane) = slot else { continue };
            match lane.as_mut().poll(cx) {
                Poll::Pending => pending = true,
                Poll::Ready(Ok(())) => *slot = None,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
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
    fn header(&self, args: &Args, cpus: usize) -> Result<()> {
        if self.json {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "parallel: client cpu {}, workers from cpu {} ({cpus} cpus; * = a worker shares the \
             client's cpu), hot timeout {} µs; throughput in invocations/s over wall time, \
             latency per invocation in µs (creation to result, queueing included)",
            args.client_cpu, args.server_cpu, args.hot_timeout_us
        )?;
        writeln!(
            out,
            "{:<10} {:>5} {:>11} {:>11} {:>12} {:>10} {:>10} {:>10}",
            "series", "cores", "outstanding", "invocations", "throughput", "median", "p99", "mean"
        )?;
        out.flush()?;
        Ok(())
    }

    /// A row; the table also shows the mean latency (`mean_ns`), which rare long stalls
    /// (preemption by other tenants) pull far above the median.
    fn row(&self, row: &Row, mean_ns: f64, shared_core: bool) -> Result<()> {
        let mut out = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer(&mut out, row)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "{:<10} {:>4}{} {:>11} {:>11} {:>12.0} {:>10.2} {:>10.2} {:>10.2}",
                row.series,
                row.cores,
                if shared_core { "*" } else { " " },
                row.x,
                row.invocations,
                row.throughput_per_s,
                row.median_ns / 1e3,
                row.p99_ns / 1e3,
                mean_ns / 1e3
            )?;
        }
        out.flush()?;
        Ok(())
    }
}
