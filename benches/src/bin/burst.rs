//! Bursts: many more futures at once than a lease has slots, as an HPC code that submits a
//! whole batch of tasks and joins them.
//!
//! Method. An executor is started with one core (its worker pinned to `--server-cpu`), `--slots`
//! (8) slots and a short hot timeout (`--hot-timeout-us`, 200 µs); one client thread, pinned
//! to `--client-cpu`, leases it with [`Lease::connect`] and runs a current-thread tokio
//! runtime. For each burst size `N` in `--bursts` (8, 64, 1024, 16384), two ways to make `N`
//! `fault(0, i)` invocations (each returns `i`, checked; each has a 10 s timeout, as real code
//! sets one):
//!
//! - `join_all`: all `N` futures created at once and joined (`futures::future::join_all`):
//!   all but a slot's worth wait for a free slot, each woken when one frees;
//! - `window` (the baseline): at most as many in flight as the lease has slots, a new one
//!   started as each finishes (`FuturesUnordered`): no future ever waits for a slot.
//!
//! Both run in the same rounds (`--rounds`, 5; alternating, the order rotated every round),
//! after an untimed round. Reported per way and size: the time per invocation (the round's
//! wall time over `N`), median and slowest over the rounds (p99 of a handful of rounds is their
//! slowest), and the ratio of `join_all`'s median to the window's: what waiting for slots costs
//! beyond the calls themselves. Before 2026-11-25 every freed slot woke every waiting future,
//! which made `join_all` quadratic in `N`.
//!
//! ```text
//! cargo build --release -p benches -p executor && cargo xtask package
//! target/release/burst [--quick] [--json] [--bursts 8,64,1024,16384] [--rounds 5]
//! ```
//!
//! With `--json`, one object per line: `{"experiment":"burst","series":"join_all" or "window",
//! "x":N,"x_label":"invocations at once","median_ns":..,"max_ns":..,"ratio":..}` (times per
//! invocation; `ratio` on `join_all` rows only).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use benches::{
    ExecutorProcess, ExecutorSpec, cpu_count, locate_executor, locate_package, median_min_max,
    run_pinned,
};
use clap::Parser;
use functions_example::fault;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rfaas::Lease;
use serde::Serialize;

/// Timeout of every invocation (a slow machine is slow, not stuck).
const TIMEOUT: Duration = Duration::from_secs(10);
/// Slot size: `fault`'s arguments and answer, with plenty to spare.
const SLOT_SIZE: usize = 4096;

/// Many more invocations at once than slots, against a window of one slot's worth each.
#[derive(Parser, Debug)]
#[command(name = "burst")]
struct Args {
    /// Invocations created at once, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,64,1024,16384")]
    bursts: Vec<usize>,
    /// Input slots of the executor's one worker.
    #[arg(long, default_value_t = 8)]
    slots: u32,
    /// Timed rounds (default 5; 1 with --quick).
    #[arg(long)]
    rounds: Option<u32>,
    /// The worker's hot timeout in µs (-1 always hot, 0 always warm).
    #[arg(long, default_value_t = 200, allow_negative_numbers = true)]
    hot_timeout_us: i64,
    /// CI smoke run: one round, bursts of at most 1024.
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
    /// CPU of the worker.
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
}

/// How the invocations of one burst are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    JoinAll,
    Window,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::JoinAll => "join_all",
            Way::Window => "window",
        }
    }
}

#[derive(Serialize)]
struct Row {
    experiment: &'static str,
    series: &'static str,
    x: usize,
    x_label: &'static str,
    median_ns: f64,
    max_ns: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut bursts = args.bursts.clone();
    if args.quick {
        bursts.retain(|&n| n <= 1024);
    }
    bursts.sort_unstable();
    bursts.dedup();
    ensure!(!bursts.is_empty(), "--bursts is empty");
    ensure!(
        bursts.iter().all(|&n| (1..=1 << 20).contains(&n)),
        "--bursts values must be between 1 and 1048576"
    );
    ensure!(
        (1..=256).contains(&args.slots),
        "--slots must be between 1 and 256"
    );
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 5 });
    ensure!(
        (1..=1000).contains(&rounds),
        "--rounds must be between 1 and 1000"
    );
    let cpus = cpu_count();
    ensure!(
        args.client_cpu < cpus && args.server_cpu < cpus,
        "the client goes on cpu {} and the worker on cpu {}, but {cpus} cpu(s) are available",
        args.client_cpu,
        args.server_cpu
    );
    let executor = locate_executor(args.executor.as_deref())?;
    let package = locate_package(args.package.as_deref())?;
    // Started from this (unpinned, long-lived) thread: the executor dies with it.
    let process = ExecutorProcess::start(&ExecutorSpec {
        executor,
        package,
        cores: 1,
        cpus: vec![args.server_cpu],
        slots: args.slots,
        slot_size: SLOT_SIZE,
        hot_timeout_us: args.hot_timeout_us,
        label: "burst".into(),
    })
    .context("starting an executor")?;
    let times = run_pinned(
        args.client_cpu,
        || -> Result<Vec<(Way, usize, Vec<u64>)>> {
            let lease = Lease::connect(process.socket()).context("connecting to the executor")?;
            lease.resolve::<fault::Call>().context(
                "the package does not match this binary's stubs: run `cargo xtask package` and \
             rebuild",
            )?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("a tokio runtime")?;
            let window = lease.workers() * args.slots as usize;
            let configs: Vec<(Way, usize)> = bursts
                .iter()
                .flat_map(|&n| [(Way::JoinAll, n), (Way::Window, n)])
                .collect();
            let mut times: Vec<Vec<u64>> = vec![Vec::new(); configs.len()];
            // An untimed round first (page faults, the executor's first calls).
            for &(way, n) in &configs {
                runtime.block_on(burst(&lease, way, n, window))?;
            }
            for round in 0..rounds as usize {
                for k in 0..configs.len() {
                    let i = (round + k) % configs.len();
                    let (way, n) = configs[i];
                    let elapsed = runtime.block_on(burst(&lease, way, n, window))?;
                    times[i].push((elapsed.as_nanos() / n as u128) as u64);
                }
            }
            Ok(configs
                .into_iter()
                .zip(times)
                .map(|((way, n), t)| (way, n, t))
                .collect())
        },
    )
    .with_context(|| format!("pinning the client to cpu {}", args.client_cpu))??;

    let median_of = |way: Way, n: usize| {
        times
            .iter()
            .find(|(w, m, _)| *w == way && *m == n)
            .map(|(.., t)| median_min_max(t).0)
    };
    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(
            out,
            "burst: one worker with {} slots (cpu {}), client on cpu {}, {rounds} round(s); time per invocation, median (slowest round)",
            args.slots, args.server_cpu, args.client_cpu
        )?;
        writeln!(
            out,
            "{:>8}  {:>22}  {:>22}  {:>8}",
            "burst", "join_all", "window", "ratio"
        )?;
    }
    for &n in &bursts {
        let ratio = match (median_of(Way::JoinAll, n), median_of(Way::Window, n)) {
            (Some(j), Some(w)) if w > 0.0 => Some(j / w),
            _ => None,
        };
        let stats = |way: Way| {
            times
                .iter()
                .find(|(w, m, _)| *w == way && *m == n)
                .map(|(.., t)| {
                    let (median, _, max) = median_min_max(t);
                    (median, max)
                })
                .unwrap_or_default()
        };
        if args.json {
            for way in [Way::JoinAll, Way::Window] {
                let (median_ns, max_ns) = stats(way);
                let row = Row {
                    experiment: "burst",
                    series: way.name(),
                    x: n,
                    x_label: "invocations at once",
                    median_ns,
                    max_ns,
                    ratio: ratio.filter(|_| way == Way::JoinAll),
                };
                writeln!(out, "{}", serde_json::to_string(&row)?)?;
            }
        } else {
            let cell =
                |(median, max): (f64, f64)| format!("{:.2} µs ({:.2} µs)", median / 1e3, max / 1e3);
            writeln!(
                out,
                "{n:>8}  {:>22}  {:>22}  {:>7.2}x",
                cell(stats(Way::JoinAll)),
                cell(stats(Way::Window)),
                ratio.unwrap_or(f64::NAN)
            )?;
        }
    }
    Ok(())
}

/// Makes `n` invocations `way` (at most `window` in flight for [`Way::Window`]) and checks
/// each answer; returns the wall time.
async fn burst(lease: &Lease, way: Way, n: usize, window: usize) -> Result<Duration> {
    let call = |i: usize| fault::invoke(lease, 0, i as u64).timeout(TIMEOUT);
    let start = Instant::now();
    match way {
        Way::JoinAll => {
            let answers = futures::future::join_all((0..n).map(call)).await;
            let elapsed = start.elapsed();
            for (i, a) in answers.into_iter().enumerate() {
                ensure!(
                    a.context("an invocation of the burst")? == i as u64,
                    "a wrong answer"
                );
            }
            Ok(elapsed)
        }
        Way::Window => {
            let tagged = |i: usize| async move { (i, call(i).await) };
            let mut flying = FuturesUnordered::new();
            let mut next = 0;
            while next < n.min(window) {
                flying.push(tagged(next));
                next += 1;
            }
            while let Some((i, a)) = flying.next().await {
                ensure!(
                    a.context("an invocation of the window")? == i as u64,
                    "a wrong answer"
                );
                if next < n {
                    flying.push(tagged(next));
                    next += 1;
                }
            }
            Ok(start.elapsed())
        }
    }
}
