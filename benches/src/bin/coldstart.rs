//! Cold start: from a lease request to a node's manager to the first result, process spawn and
//! library load included, for `noop` (the headline, against the 10 ms target) and for `echo` of
//! each payload size (`cargo xtask bench` runs it; `--quick` for a smoke run).
//!
//! One manager (`rfaas-executor manager`, one core, shared memory) serves every lease. Each
//! repetition leases afresh for every case in turn (`noop`, then `echo` of each size, smallest
//! first), so the machine's speed drifts (DESIGN.md §5) spread evenly over the cases; a sample
//! is the time from the lease request to the first result, the lease's teardown is not timed.
//! The very first lease (which ships the package to the node) is reported on its own.
//!
//! Leases for `noop` and payloads up to 64 KiB have 64 KiB slots; larger payloads get slots
//! just large enough (header, argument layout and payload), as a client would ask for. Every
//! echo is checked in full, untimed.
//!
//! ```text
//! cargo build --release -p benches -p executor && cargo xtask package
//! target/release/coldstart [--quick] [--json] [--iterations 200] [--sizes 8,65536,1048576]
//!     [--executor-uids 64400-64415]
//! ```
//!
//! With `--executor-uids` (as root) the manager runs each executor under a user of its own
//! (docs/control-plane.md): the change of user, the scratch mounts and the sweep at the end
//! are then part of every cold start but the sweep (teardown is not timed).

use anyhow::{Context, Result, bail, ensure};
use benches::{Summary, human_size, locate_executor, locate_package};
use clap::Parser;
use functions_example as fx;
use rfaas::managed::{LeaseSpec, ManagedLease, lease_from};
use rfaas::wire::{Fabric, HEADER_LEN};
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "coldstart",
    about = "lease request to first result, through a manager: noop and echo of each payload size"
)]
struct Args {
    /// Package directory (default: `<target dir>/rfaas/functions-example`, from `cargo xtask
    /// package`).
    #[arg(long)]
    package: Option<PathBuf>,
    /// The `rfaas-executor` binary (default: next to this one).
    #[arg(long)]
    executor: Option<PathBuf>,
    /// Cold starts per case (`noop` and each `echo` size); default 200 (3 with `--quick`).
    #[arg(long)]
    iterations: Option<usize>,
    /// `echo` payload sizes in bytes, comma-separated (`noop` is always measured too).
    #[arg(long, value_delimiter = ',', default_value = "8,65536,1048576")]
    sizes: Vec<usize>,
    /// A short smoke run.
    #[arg(long)]
    quick: bool,
    /// Print JSON lines (one per case) instead of text.
    #[arg(long)]
    json: bool,
    /// Run the manager with `executor_uids` = this range (`FIRST-LAST`; needs root): executors
    /// under users of their own, with scratch of their own where the manager may mount.
    #[arg(long)]
    executor_uids: Option<String>,
    /// Run the manager with `cgroups = true` (needs root, or a delegated cgroup v2 subtree):
    /// each lease in a cgroup of its own.
    #[arg(long)]
    cgroups: bool,
}

/// Cold starts per case by default.
const ITERATIONS: usize = 200;
/// Cold starts per case with `--quick` (a CI smoke run).
const QUICK_ITERATIONS: usize = 3;
/// The cold-start target for `noop`: lease request to first result.
const TARGET: Duration = Duration::from_millis(10);
/// Bytes per slot for `noop` and small payloads.
const SMALL_SLOT: usize = 64 * 1024;
/// Room in a slot for `echo`'s argument layout (16 bytes) and its return value, to spare.
const ARGS_ROOM: usize = 256;
/// How long one invocation may take.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a lease request may be refused for capacity (the single core returns to the
/// manager a moment after the previous lease drops).
const CAPACITY_TIMEOUT: Duration = Duration::from_secs(10);

/// A manager on a private directory: killed, reaped and cleaned up on drop.
struct Manager {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Manager {
    fn start(executor: &Path, uids: Option<&str>, cgroups: bool) -> Result<Manager> {
        let dir = std::env::temp_dir().join(format!("rfaas-coldstart-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("manager.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ncores = 1\ncache_dir = \"{0}/cache\"\nledger = \"{0}/ledger.jsonl\"\nsocket_dir = \"{0}\"\nexecutor = \"{1}\"\ncgroups = {3}\n{2}",
                dir.display(),
                executor.display(),
                uids.map(|r| format!("executor_uids = \"{r}\"\n"))
                    .unwrap_or_default(),
                cgroups
            ),
        )?;
        let mut command = Command::new(executor);
        command
            .arg("manager")
            .arg("--config")
            .arg(&config)
            .env("RFAAS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // SAFETY: the closure runs in the forked child before `exec` and only calls `prctl`
        // (async-signal-safe); it builds its error without allocating.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e).context("starting the manager");
            }
        };
        let stdout = child.stdout.take();
        let mut manager = Manager {
            child,
            dir,
            addr: String::new(),
        };
        let mut line = String::new();
        std::io::BufReader::new(stdout.context("the manager has no stdout pipe")?)
            .read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("ready ") else {
            bail!("the manager did not start: {line:?}")
        };
        manager.addr = addr.to_owned();
        Ok(manager)
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One case: `noop` (no payload) or `echo` of `input.len()` bytes, on leases shaped by `spec`.
struct Case {
    echo: Option<Echo>,
    spec: LeaseSpec,
    samples: Vec<u64>,
}

struct Echo {
    input: Vec<u8>,
    output: Vec<u8>,
}

impl Case {
    fn new(size: Option<usize>, iterations: usize) -> Result<Case> {
        let slot = size.map_or(SMALL_SLOT, |size| {
            (HEADER_LEN + ARGS_ROOM + size)
                .next_multiple_of(64)
                .max(SMALL_SLOT)
        });
        let mut spec = LeaseSpec::default();
        spec.fabric = Fabric::Shm;
        spec.slot_size = Some(u32::try_from(slot).context("payload too large for a slot")?);
        Ok(Case {
            echo: size.map(|size| Echo {
                input: (0..size).map(|i| (i % 251) as u8).collect(),
                output: vec![0; size],
            }),
            spec,
            samples: Vec::with_capacity(iterations),
        })
    }

    fn size(&self) -> Option<usize> {
        self.echo.as_ref().map(|e| e.input.len())
    }

    fn slot_size(&self) -> u32 {
        self.spec.slot_size.unwrap_or_default()
    }

    /// One cold start: lease request to first result, in nanoseconds. `seq` tags the payload.
    fn once(&mut self, addr: &str, package: &Path, seq: u32) -> Result<u64> {
        if let Some(echo) = &mut self.echo {
            let n = echo.input.len().min(4);
            echo.input[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
            echo.output.fill(0);
        }
        let deadline = Instant::now() + CAPACITY_TIMEOUT;
        let (lease, elapsed) = loop {
            let start = Instant::now();
            match lease_from(addr, package, &self.spec) {
                Ok(lease) => {
                    let elapsed = self.invoke(&lease, start)?;
                    break (lease, elapsed);
                }
                Err(rfaas::Error::Refused(why))
                    if why.contains("capacity") && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e).context("leasing"),
            }
        };
        drop(lease);
        if let Some(echo) = &self.echo {
            ensure!(
                echo.output == echo.input,
                "echo {seq} of {} bytes: the output is not the echo",
                echo.input.len()
            );
        }
        Ok(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The first invocation on a fresh lease; the time since `start` when its result is in.
    fn invoke(&mut self, lease: &ManagedLease, start: Instant) -> Result<Duration> {
        match &mut self.echo {
            None => {
                fx::noop::invoke(lease)
                    .timeout(INVOKE_TIMEOUT)
                    .wait()
                    .context("invoking noop")?;
                Ok(start.elapsed())
            }
            Some(echo) => {
                let copied = fx::echo::invoke(lease, &echo.input, &mut echo.output)
                    .timeout(INVOKE_TIMEOUT)
                    .wait()
                    .context("invoking echo")?;
                let elapsed = start.elapsed();
                ensure!(
                    copied == echo.input.len() as u64,
                    "echo copied {copied} bytes, not {}",
                    echo.input.len()
                );
                Ok(elapsed)
            }
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let executor = locate_executor(args.executor.as_deref())?;
    let package = locate_package(args.package.as_deref())?;
    let iterations = match (args.iterations, args.quick) {
        (Some(n), _) => n,
        (None, true) => QUICK_ITERATIONS,
        (None, false) => ITERATIONS,
    };
    ensure!(iterations > 0, "--iterations must be at least 1");
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    ensure!(!sizes.is_empty(), "--sizes is empty");

    let manager = Manager::start(&executor, args.executor_uids.as_deref(), args.cgroups)?;
    let mut cases = vec![Case::new(None, iterations)?];
    for &size in &sizes {
        cases.push(Case::new(Some(size), iterations)?);
    }
    // Includes shipping the package to the node.
    let first = cases[0].once(&manager.addr, &package, 0)?;
    for seq in 1..=iterations {
        for case in &mut cases {
            let ns = case.once(&manager.addr, &package, seq as u32)?;
            case.samples.push(ns);
        }
    }
    drop(manager);

    let summaries: Vec<Summary> = cases
        .iter_mut()
        .map(|c| Summary::from_samples(&mut c.samples))
        .collect();
    let noop = summaries[0];
    let target_ns = TARGET.as_nanos() as f64;
    let met = noop.median_ns < target_ns;
    if args.json {
        for (case, s) in cases.iter().zip(&summaries) {
            let line = match case.size() {
                None => serde_json::json!({
                    "case": "cold start (shm)",
                    "call": "noop",
                    "slot_size": case.slot_size(),
                    "iterations": s.iterations,
                    "median_ns": s.median_ns,
                    "p99_ns": s.p99_ns,
                    "min_ns": s.min_ns,
                    "first_with_upload_ns": first,
                    "target_ns": target_ns,
                    "met": met,
                }),
                Some(size) => serde_json::json!({
                    "case": "cold echo (shm)",
                    "call": "echo",
                    "size": size,
                    "slot_size": case.slot_size(),
                    "iterations": s.iterations,
                    "median_ns": s.median_ns,
                    "p99_ns": s.p99_ns,
                    "min_ns": s.min_ns,
                    "baseline": "cold noop",
                    "baseline_median_ns": noop.median_ns,
                    "ratio": s.median_ns / noop.median_ns,
                }),
            };
            println!("{line}");
        }
        return Ok(());
    }
    let ms = |ns: f64| format!("{:.2} ms", ns / 1e6);
    println!(
        "cold start through a manager (shm, 1 core): lease request to first result, {iterations} \
         fresh leases per case, cases interleaved"
    );
    println!(
        "{:<6} {:>8} {:>9} {:>10} {:>10} {:>10} {:>12}",
        "call", "payload", "slot", "median", "p99", "min", "/ cold noop"
    );
    for (case, s) in cases.iter().zip(&summaries) {
        let (call, payload) = match case.size() {
            None => ("noop", "—".to_owned()),
            Some(size) => ("echo", human_size(size)),
        };
        println!(
            "{call:<6} {payload:>8} {:>9} {:>10} {:>10} {:>10} {:>11.2}x",
            human_size(case.slot_size() as usize),
            ms(s.median_ns),
            ms(s.p99_ns),
            ms(s.min_ns),
            s.median_ns / noop.median_ns
        );
    }
    println!(
        "first lease, package upload included: {}; noop target < {} ms: {}",
        ms(first as f64),
        TARGET.as_millis(),
        if met { "met" } else { "MISSED" }
    );
    Ok(())
}
