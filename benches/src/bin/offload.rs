//! Offloading work to a leased core: rFaaS's offload experiment on our shared-memory transport.
//!
//! Method. One executor (`rfaas-executor run`, one worker pinned to `--server-cpu`, hot timeout
//! `--hot-timeout-us`, 1000 µs by default) serves the example package; the client thread is
//! pinned to `--client-cpu` and leases the worker with [`Lease::connect_with`]. Two workloads:
//!
//! - *Black-Scholes* over `--options` options (10 M by default; the PARSEC kernel
//!   [`functions_example::black_scholes()`], 24-byte [`OptionData`] records from a fixed
//!   pseudo-random generator), computed three ways:
//!   - `local`: all of it on the client core, one call of the kernel;
//!   - `half-remote`: the first half offloaded, the second half computed locally at the same
//!     time. The remote half goes in chunks of `--chunk-options` options (64 Ki: 1.5 MiB of
//!     input, which must fit an executor slot, since inputs are always copied into the slot);
//!     up to `--window` chunks are in flight (one slot each). A chunk is sent by polling its
//!     [`Invocation`] once (the future's first poll encodes it straight into the worker's slot
//!     and signals it); the client then computes one local chunk, harvests finished remote
//!     chunks and sends new ones, and so on; when its half is done it waits ([`wait`]) for the
//!     remaining remote chunks. Remote outputs land in place in an [`rfaas::Buffer`] (the
//!     lease's registered memory, sized by [`LeaseOptions::buffer_bytes`]), so only the inputs
//!     are copied, by the client, as part of sending;
//!   - `remote`: all chunks offloaded the same way, the client only sending and waiting;
//!   - `two-threads` (in the table only, not in the JSON lines): no rfaas, the first half on a
//!     plain thread pinned to the server CPU (the executor's worker idle there), the second on
//!     the client thread: what the VM's two vCPUs give at best, the ceiling for `half-remote`.
//!
//!   The notes say when the client's own part was done and how much of it was sending: when
//!   that is the whole wall time, the client was the bottleneck, not the remote core.
//! - *matmul* of two `n x n` matrices for each `--matmul-n` (256 and 512 by default):
//!   `local` and `remote` (one invocation, the result in place in a `Buffer`). There is no
//!   half/half split: [`functions_example::matmul()`] takes whole `n x n` operands and checks
//!   their lengths, so a block of rows cannot be sent without changing the function.
//!
//! The variants of a workload are interleaved: one untimed round (page faults, a sleeping
//! worker), then `--repeats` (5) rounds, each running every variant once, in an order rotated
//! every round, so that the machine's drifting speed (other tenants) touches every variant
//! alike. The table gives the median, min and max wall time, and the speedup: the `local`
//! median over the variant's median. Every run's results are checked equal to the local ones, bit for
//! bit (same source, same compiler, same libm on both sides: an offloaded result that differs
//! is a failure, not noise).
//!
//! What this shows, and its limits on our 2-vCPU VMs: the remote half runs on the second vCPU
//! while the first computes the local half, so the ideal speedup of `half-remote` is 2x minus
//! the client's cost of copying 24 bytes per offloaded option into the slot (and the wait for
//! the slower half). The vCPUs are shared with other tenants (`uptime`'s load goes above 2):
//! a steal-heavy second vCPU makes the remote half the slower one, and the measured speedup
//! says how much of a second core we really got. `remote` alone cannot beat `local` (the same
//! kernel on an equal core, plus the copies); it measures the offload's overhead.
//!
//! The executor is `rfaas-executor` next to this binary (or `--executor`), serving the package
//! `cargo xtask package` writes (or `--package`); it is killed and reaped on every exit path and
//! dies with this process. Every wait is bounded (invocation timeouts of a minute).
//!
//! ```text
//! cargo build --release -p benches -p executor && cargo xtask package
//! target/release/offload [--quick] [--json] [--options 10000000] [--repeats 5] [--matmul-n 256,512]
//! ```
//!
//! With `--json`, one object per line: `{"experiment":"offload","series":"local|half-remote|
//! remote","workload":"black_scholes|matmul","x":..,"x_label":"options|matrix n","repeats":..,
//! "median_ns":..,"min_ns":..,"max_ns":..,"speedup":..}`.
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

use anyhow::{Context, Result, bail, ensure};
use benches::{
    ExecutorProcess, ExecutorSpec, cpu_count, locate_executor, locate_package, median_min_max,
    pin_to_cpu, run_pinned,
};
use clap::Parser;
use functions_example::{OptionData, black_scholes, matmul};
use rfaas::wire::HEADER_LEN;
use rfaas::{Invocation, Lease, LeaseOptions};
use serde::Serialize;

/// Longest one invocation (a chunk, or a whole matrix product) may take.
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes a slot reserves beyond the input slices: argument layout and alignment.
const ARGS_ROOM: usize = 256;
/// Defaults of a full run.
const OPTIONS: usize = 10_000_000;
const REPEATS: usize = 5;
const MATMUL_N: [u32; 2] = [256, 512];
/// Defaults with `--quick` (a CI smoke run).
const QUICK_OPTIONS: usize = 200_000;
const QUICK_REPEATS: usize = 2;
const QUICK_MATMUL_N: [u32; 2] = [64, 128];

/// Black-Scholes and matmul computed locally, half offloaded, and all offloaded.
#[derive(Parser, Debug)]
#[command(name = "offload")]
struct Args {
    /// Black-Scholes options (default 10000000; 200000 with --quick).
    #[arg(long)]
    options: Option<usize>,
    /// Timed runs per variant, after one untimed (default 5; 2 with --quick).
    #[arg(long)]
    repeats: Option<usize>,
    /// Matrix sizes, comma-separated (default 256,512; 64,128 with --quick).
    #[arg(long, value_delimiter = ',')]
    matmul_n: Option<Vec<u32>>,
    /// Options per offloaded Black-Scholes chunk (one invocation; sizes the executor's slots).
    #[arg(long, default_value_t = 65_536)]
    chunk_options: usize,
    /// Offloaded chunks in flight at most (the executor's slots per worker).
    #[arg(long, default_value_t = 4)]
    window: u32,
    /// The executor worker's hot timeout in µs (-1 always hot, 0 always warm).
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true)]
    hot_timeout_us: i64,
    /// CI smoke run: small sizes, 2 repeats.
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
    /// CPU the client thread (and the local computation) is pinned to.
    #[arg(long, default_value_t = 0)]
    client_cpu: usize,
    /// CPU the executor's worker is pinned to.
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
}

/// The resolved plan of a run.
struct Plan {
    options: usize,
    repeats: usize,
    matmul_n: Vec<u32>,
    chunk: usize,
    window: usize,
    server_cpu: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let plan = Plan {
        options: args
            .options
            .unwrap_or(if args.quick { QUICK_OPTIONS } else { OPTIONS }),
        repeats: args
            .repeats
            .unwrap_or(if args.quick { QUICK_REPEATS } else { REPEATS }),
        matmul_n: args.matmul_n.clone().unwrap_or_else(|| {
            if args.quick {
                QUICK_MATMUL_N.to_vec()
            } else {
                MATMUL_N.to_vec()
            }
        }),
        chunk: args.chunk_options,
        window: args.window as usize,
        server_cpu: args.server_cpu,
    };
    ensure!(plan.options >= 2, "--options must be at least 2");
    ensure!(plan.repeats >= 1, "--repeats must be positive");
    ensure!(plan.chunk >= 1, "--chunk-options must be positive");
    ensure!(
        (1..=256).contains(&args.window),
        "--window must be between 1 and 256"
    );
    ensure!(
        plan.matmul_n.iter().all(|&n| (1..=4096).contains(&n)),
        "--matmul-n sizes must be between 1 and 4096"
    );
    ensure!(
        args.client_cpu != args.server_cpu,
        "--client-cpu and --server-cpu must differ"
    );
    let cpus = cpu_count();
    ensure!(
        args.client_cpu.max(args.server_cpu) < cpus,
        "the client goes on cpu {} and the executor on cpu {}, but {cpus} cpu(s) are available",
        args.client_cpu,
        args.server_cpu
    );
    let executor = locate_executor(args.executor.as_deref())?;
    let package = locate_package(args.package.as_deref())?;

    // A slot holds the header and the encoded input: a chunk of options, or both matrices.
    // Outputs go in place into `Buffer`s, so they need no room in the slot.
    let largest_n = plan.matmul_n.iter().copied().max().unwrap_or(0) as usize;
    let matrix_bytes = largest_n * largest_n * size_of::<f64>();
    let slot_size =
        (HEADER_LEN + ARGS_ROOM) + (plan.chunk * size_of::<OptionData>()).max(2 * matrix_bytes);
    let slot_size = slot_size.next_multiple_of(64);
    ensure!(
        (slot_size as u64) * u64::from(args.window) <= u64::from(u32::MAX) / 2,
        "slots of {slot_size} bytes x {} are too large: lower --chunk-options, --window or \
         --matmul-n",
        args.window
    );
    // The buffer arena holds every option's price and the largest product, 64-byte aligned.
    let buffer_bytes = plan.options * size_of::<f32>() + matrix_bytes + 4096;

    let process = ExecutorProcess::start(&ExecutorSpec {
        executor,
        package,
        cores: 1,
        cpus: vec![args.server_cpu],
        slots: args.window,
        slot_size,
        hot_timeout_us: args.hot_timeout_us,
        label: "offload".into(),
    })
    .context("starting the executor")?;

    let out = Output { json: args.json };
    out.header(&args, &plan)?;
    run_pinned(args.client_cpu, || {
        let mut options = LeaseOptions::default();
        options.buffer_bytes = buffer_bytes;
        let lease = Lease::connect_with(process.socket(), &options)
            .context("connecting to the executor")?;
        let stale = "the package does not match this binary's stubs: run `cargo xtask package` \
                     and rebuild";
        lease.resolve::<black_scholes::Call<'_>>().context(stale)?;
        lease.resolve::<matmul::Call<'_>>().context(stale)?;
        black_scholes_experiment(&lease, &plan, &out)?;
        for &n in &plan.matmul_n {
            matmul_experiment(&lease, n, plan.repeats, &out)?;
        }
        Ok(())
    })
    .with_context(|| format!("pinning the client to cpu {}", args.client_cpu))?
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// A small deterministic generator (xorshift64*), so every run prices the same options.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[low, high)`.
    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        low + (high - low) * unit
    }
}

/// `n` options in PARSEC's ranges: spot 10..100, strike within 20% of it, rate 1..10%,
/// volatility 5..60%, 0.1..2 years, calls and puts.
fn make_options(n: usize) -> Vec<OptionData> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            let spot = rng.uniform(10.0, 100.0);
            OptionData {
                spot: spot as f32,
                strike: (spot * rng.uniform(0.8, 1.2)) as f32,
                rate: rng.uniform(0.01, 0.1) as f32,
                volatility: rng.uniform(0.05, 0.6) as f32,
                time: rng.uniform(0.1, 2.0) as f32,
                kind: if rng.next_u64() & 1 == 0 {
                    OptionData::CALL
                } else {
                    OptionData::PUT
                },
            }
        })
        .collect()
}

fn make_matrix(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng(seed | 1);
    (0..n * n).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

/// Checks `got` equals `want` bit for bit.
fn check_bits<T: Copy>(what: &str, got: &[T], want: &[T], bits: impl Fn(T) -> u64) -> Result<()> {
    ensure!(
        got.len() == want.len(),
        "{what}: {} results, expected {}",
        got.len(),
        want.len()
    );
    if let Some(i) = (0..got.len()).find(|&i| bits(got[i]) != bits(want[i])) {
        bail!(
            "{what}: result {i} differs from the local one (bits {:#x}, expected {:#x})",
            bits(got[i]),
            bits(want[i])
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Black-Scholes

/// Offloaded Black-Scholes chunks: at most `window` in flight, sent in order, finished in
/// order (one worker runs them one after another).
struct Remote<'l, 'a, I> {
    lease: &'l Lease,
    chunks: I,
    inflight: VecDeque<Invocation<'l, black_scholes::Call<'a>>>,
    window: usize,
    /// Client time spent sending (encoding the chunks into the worker's slots).
    sending: Duration,
}

impl<'l, 'a, I> Remote<'l, 'a, I>
where
    I: Iterator<Item = (&'a [OptionData], &'a mut [f32])>,
{
    fn new(lease: &'l Lease, chunks: I, window: usize) -> Self {
        Self {
            lease,
            chunks,
            inflight: VecDeque::with_capacity(window),
            window,
            sending: Duration::ZERO,
        }
    }

    /// Sends chunks until `window` are in flight or none is left. Sending is the first poll of
    /// the invocation's future: it encodes the chunk into a free slot of the worker (the
    /// window never exceeds the slots, so one is free) and signals it, without waiting.
    fn fill(&mut self) -> Result<()> {
        while self.inflight.len() < self.window {
            let Some((input, output)) = self.chunks.next() else {
                return Ok(());
            };
            let start = Instant::now();
            let mut invocation = self
                .lease
                .invoke(black_scholes::call(input, output))
                .timeout(WAIT_TIMEOUT);
            let sent = poll_once(&mut invocation);
            self.sending += start.elapsed();
            match sent {
                Poll::Pending => self.inflight.push_back(invocation),
                Poll::Ready(result) => result.context("offloading a black_scholes chunk")?,
            }
        }
        Ok(())
    }

    /// Takes finished chunks off the front without waiting, then refills the window.
    fn harvest(&mut self) -> Result<()> {
        while let Some(front) = self.inflight.front_mut() {
            match poll_once(front) {
                Poll::Pending => break,
                Poll::Ready(result) => {
                    self.inflight.pop_front();
                    result.context("offloaded black_scholes chunk")?;
                }
            }
        }
        self.fill()
    }

    /// Waits for every chunk, sending the rest as slots free up.
    fn finish(&mut self) -> Result<()> {
        self.fill()?;
        while let Some(invocation) = self.inflight.pop_front() {
            invocation.wait().context("offloaded black_scholes chunk")?;
            self.fill()?;
        }
        Ok(())
    }
}

/// Polls `invocation` once, without a waker to call back (its first poll sends it).
fn poll_once<F: Future + Unpin>(invocation: &mut F) -> Poll<F::Output> {
    Pin::new(invocation).poll(&mut TaskContext::from_waker(Waker::noop()))
}

/// Prices `options`: the first `remote_out.len()` remotely (outputs in place in `remote_out`),
/// the rest locally into `local_out`, overlapped.
fn black_scholes_split(
    lease: &Lease,
    options: &[OptionData],
    remote_out: &mut [f32],
    local_out: &mut [f32],
    chunk: usize,
    window: usize,
) -> Result<Run> {
    let start = Instant::now();
    let (remote_in, local_in) = options.split_at(remote_out.len());
    ensure!(local_in.len() == local_out.len(), "output lengths");
    let mut remote = Remote::new(
        lease,
        remote_in.chunks(chunk).zip(remote_out.chunks_mut(chunk)),
        window,
    );
    remote.fill()?;
    for (input, output) in local_in.chunks(chunk).zip(local_out.chunks_mut(chunk)) {
        black_scholes(input, output).context("local black_scholes")?;
        remote.harvest()?;
    }
    let local_done = start.elapsed();
    remote.finish()?;
    Ok(Run {
        total: start.elapsed(),
        local_done,
        sending: remote.sending,
    })
}

/// Prices the first `first.len()` options on a new thread pinned to `cpu` (into `first`) and
/// the rest on this thread (into `second`).
fn two_threads(
    options: &[OptionData],
    first: &mut [f32],
    second: &mut [f32],
    cpu: usize,
) -> Result<Run> {
    let start = Instant::now();
    let (first_in, second_in) = options.split_at(first.len());
    let local_done = std::thread::scope(|s| {
        let helper = s.spawn(|| -> Result<()> {
            pin_to_cpu(cpu).with_context(|| format!("pinning the helper thread to cpu {cpu}"))?;
            black_scholes(first_in, first).context("black_scholes on the helper thread")?;
            Ok(())
        });
        black_scholes(second_in, second).context("local black_scholes")?;
        let local_done = start.elapsed();
        helper
            .join()
            .map_err(|_| anyhow::anyhow!("the helper thread panicked"))??;
        anyhow::Ok(local_done)
    })?;
    Ok(Run {
        total: start.elapsed(),
        local_done,
        sending: Duration::ZERO,
    })
}

/// The series of the Black-Scholes experiment, in order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Series {
    Local,
    HalfRemote,
    Remote,
    /// No rfaas: the first half on a plain thread pinned to the server CPU (the executor's
    /// worker idle there), the second on the client thread. The VM's own two-core scaling, the
    /// ceiling for `HalfRemote`; in the table only, not in the JSON lines.
    TwoThreads,
}

impl Series {
    fn name(self) -> &'static str {
        match self {
            Series::Local => "local",
            Series::HalfRemote => "half-remote",
            Series::Remote => "remote",
            Series::TwoThreads => "two-threads",
        }
    }
}

/// What one run of a variant measured.
struct Run {
    /// Wall time.
    total: Duration,
    /// When the client's own part (local computation and sending) was done.
    local_done: Duration,
    /// Client time spent sending offloaded chunks.
    sending: Duration,
}

/// The timed runs of one variant, in ns.
#[derive(Default)]
struct Times {
    total: Vec<u64>,
    local_done: Vec<u64>,
    sending: Vec<u64>,
}

/// Runs `run` for every series `repeats + 1` times, interleaved: one untimed round first (page
/// faults in slots and buffers, a sleeping worker), then timed rounds, each running every
/// series once, starting one further along each round, so that a change in the machine's speed
/// touches every series alike.
fn interleaved(
    series: &[Series],
    repeats: usize,
    mut run: impl FnMut(Series) -> Result<Run>,
) -> Result<Vec<Times>> {
    let mut times: Vec<Times> = series.iter().map(|_| Times::default()).collect();
    for round in 0..=repeats {
        for k in 0..series.len() {
            let i = (round + k) % series.len();
            let measured = run(series[i])?;
            if round > 0 {
                times[i].total.push(nanos(measured.total));
                times[i].local_done.push(nanos(measured.local_done));
                times[i].sending.push(nanos(measured.sending));
            }
        }
    }
    Ok(times)
}

fn black_scholes_experiment(lease: &Lease, plan: &Plan, out: &Output) -> Result<()> {
    let n = plan.options;
    let options = make_options(n);
    let mut reference = vec![0.0f32; n];
    black_scholes(&options, &mut reference).context("local black_scholes")?;

    let mut local_out = vec![0.0f32; n];
    let mut buffer = lease
        .buffer::<f32>(n)
        .with_context(|| format!("allocating an rfaas::Buffer of {n} prices"))?;
    let series = [
        Series::Local,
        Series::HalfRemote,
        Series::Remote,
        Series::TwoThreads,
    ];
    let times = interleaved(&series, plan.repeats, |series| {
        // Where the first `remote_n` prices go: the executor's, or the helper thread's.
        let remote_n = match series {
            Series::Local => 0,
            Series::HalfRemote | Series::TwoThreads => n / 2,
            Series::Remote => n,
        };
        local_out.fill(f32::NAN);
        buffer.fill(f32::NAN);
        let measured = match series {
            Series::Local => {
                let start = Instant::now();
                black_scholes(&options, &mut local_out).context("local black_scholes")?;
                let total = start.elapsed();
                Run {
                    total,
                    local_done: total,
                    sending: Duration::ZERO,
                }
            }
            Series::HalfRemote | Series::Remote => black_scholes_split(
                lease,
                &options,
                &mut buffer[..remote_n],
                &mut local_out[remote_n..],
                plan.chunk,
                plan.window,
            )?,
            Series::TwoThreads => two_threads(
                &options,
                &mut buffer[..remote_n],
                &mut local_out[remote_n..],
                plan.server_cpu,
            )?,
        };
        let what = format!("black_scholes {}", series.name());
        check_bits(&what, &buffer[..remote_n], &reference[..remote_n], |x| {
            u64::from(x.to_bits())
        })?;
        check_bits(&what, &local_out[remote_n..], &reference[remote_n..], |x| {
            u64::from(x.to_bits())
        })?;
        Ok(measured)
    })?;
    let local = median_min_max(&times[0].total).0;
    for (series, times) in series.into_iter().zip(&times) {
        let (median, min, max) = median_min_max(&times.total);
        let ms = |ns: &[u64]| median_min_max(ns).0 / 1e6;
        let note = match series {
            Series::Local => String::new(),
            Series::HalfRemote => format!(
                "client: own half done at {:.1} ms, {:.1} ms of it sending (medians)",
                ms(&times.local_done),
                ms(&times.sending)
            ),
            Series::Remote => format!("client: {:.1} ms sending (median)", ms(&times.sending)),
            Series::TwoThreads => {
                if out.json {
                    continue;
                }
                format!(
                    "no rfaas: a plain thread on cpu {} prices the first half; own half done at \
                     {:.1} ms",
                    plan.server_cpu,
                    ms(&times.local_done)
                )
            }
        };
        out.row(
            &Row {
                experiment: "offload",
                series: series.name(),
                workload: "black_scholes",
                x: n as u64,
                x_label: "options",
                repeats: plan.repeats,
                median_ns: median,
                min_ns: min,
                max_ns: max,
                speedup: local / median,
            },
            &note,
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Matmul

fn matmul_experiment(lease: &Lease, n: u32, repeats: usize, out: &Output) -> Result<()> {
    let size = n as usize;
    let a = make_matrix(size, 0x1234_5678 ^ u64::from(n));
    let b = make_matrix(size, 0x8765_4321 ^ u64::from(n));
    let mut reference = vec![0.0f64; size * size];
    matmul(n, &a, &b, &mut reference).context("local matmul")?;
    let mut local = vec![0.0f64; size * size];
    let mut buffer = lease
        .buffer::<f64>(size * size)
        .with_context(|| format!("allocating an rfaas::Buffer for a {n} x {n} product"))?;

    let series = [Series::Local, Series::Remote];
    let times = interleaved(&series, repeats, |series| {
        local.fill(f64::NAN);
        buffer.fill(f64::NAN);
        let start = Instant::now();
        let result: &[f64] = if series == Series::Local {
            matmul(n, &a, &b, &mut local).context("local matmul")?;
            &local
        } else {
            lease
                .invoke(matmul::call(n, &a, &b, &mut buffer))
                .timeout(WAIT_TIMEOUT)
                .wait()
                .context("remote matmul")?;
            &buffer
        };
        let total = start.elapsed();
        check_bits(
            &format!("matmul {n} {}", series.name()),
            result,
            &reference,
            f64::to_bits,
        )?;
        Ok(Run {
            total,
            local_done: total,
            sending: Duration::ZERO,
        })
    })?;
    let local_median = median_min_max(&times[0].total).0;
    for (series, times) in series.into_iter().zip(&times) {
        let (median, min, max) = median_min_max(&times.total);
        out.row(
            &Row {
                experiment: "offload",
                series: series.name(),
                workload: "matmul",
                x: u64::from(n),
                x_label: "matrix n",
                repeats,
                median_ns: median,
                min_ns: min,
                max_ns: max,
                speedup: local_median / median,
            },
            "",
        )?;
    }
    Ok(())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Output

/// One `--json` line (the field order is the contract).
#[derive(Serialize)]
struct Row {
    experiment: &'static str,
    series: &'static str,
    workload: &'static str,
    x: u64,
    x_label: &'static str,
    repeats: usize,
    median_ns: f64,
    min_ns: f64,
    max_ns: f64,
    /// `local` median / this median.
    speedup: f64,
}

/// A table or JSON lines on stdout.
struct Output {
    json: bool,
}

impl Output {
    fn header(&self, args: &Args, plan: &Plan) -> Result<()> {
        if self.json {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "offload: client cpu {}, executor worker cpu {} (hot timeout {} µs); Black-Scholes \
             chunks of {} options, {} in flight; wall time in ms over {} interleaved \
             repeats (after one untimed round); speedup = local median / median; every result checked bit for bit \
             against the local one",
            args.client_cpu,
            args.server_cpu,
            args.hot_timeout_us,
            plan.chunk,
            plan.window,
            plan.repeats
        )?;
        writeln!(
            out,
            "{:<14} {:>10} {:<12} {:>10} {:>10} {:>10} {:>8}  notes",
            "workload", "x", "series", "median", "min", "max", "speedup"
        )?;
        out.flush()?;
        Ok(())
    }

    fn row(&self, row: &Row, note: &str) -> Result<()> {
        let mut out = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer(&mut out, row)?;
            writeln!(out)?;
        } else {
            let x = match row.workload {
                "matmul" => format!("n={}", row.x),
                _ => row.x.to_string(),
            };
            writeln!(
                out,
                "{:<14} {:>10} {:<12} {:>10.2} {:>10.2} {:>10.2} {:>7.2}x  {note}",
                row.workload,
                x,
                row.series,
                row.median_ns / 1e6,
                row.min_ns / 1e6,
                row.max_ns / 1e6,
                row.speedup
            )?;
        }
        out.flush()?;
        Ok(())
    }
}
