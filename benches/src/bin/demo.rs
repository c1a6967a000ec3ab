//! `cargo xtask demo`: the example library on a shared-memory executor, called from a client
//! with results checked against local calls, then hot and warm invocation latency printed
//! beside the raw shared-memory ping-pong measured in the same run.

use anyhow::{Context, Result, bail};
use benches::{Summary, pin_to_cpu};
use clap::Parser;
use functions_example as fx;
use rfaas::{CallError, Error, Lease};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "demo", about = "rfaas local demo (shared memory)")]
struct Args {
    /// Package directory (`cargo xtask package`).
    #[arg(long)]
    package: PathBuf,
    /// The `rfaas-executor` binary.
    #[arg(long)]
    executor: PathBuf,
    /// Latency iterations.
    #[arg(long, default_value_t = 20_000)]
    iterations: usize,
}

/// An executor process, killed and reaped on drop.
struct Executor {
    child: Child,
    socket: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Executor {
    fn start(bin: &Path, package: &Path, hot_timeout_us: i64) -> Result<Executor> {
        let dir = TempDir(std::env::temp_dir().join(format!(
            "rfaas-demo-{}-{hot_timeout_us}",
            std::process::id()
        )));
        std::fs::create_dir_all(&dir.0)?;
        let socket = dir.0.join("executor.sock");
        let cpus = if benches::cpu_count() >= 2 { "1" } else { "0" };
        let mut child = Command::new(bin)
            .args([
                "run",
                "--cores",
                "1",
                "--cpus",
                cpus,
                "--slot-size",
                "1048576",
            ])
            .arg(format!("--hot-timeout-us={hot_timeout_us}"))
            .arg("--library")
            .arg(package)
            .arg("--socket")
            .arg(&socket)
            .env("RFAAS_LOG", "warn")
            // The injected panic below prints its message on the executor's stderr; no
            // backtrace with it, whatever the caller's environment asks for.
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("executor stdout")?)
            .read_line(&mut line)?;
        let exec = Executor {
            child,
            socket,
            _dir: dir,
        };
        if !line.starts_with("ready") {
            bail!("executor did not start (said {line:?})");
        }
        Ok(exec)
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check(what: &str, ok: bool, detail: String) -> Result<()> {
    println!(
        "  {what:<34} {}  {detail}",
        if ok { "ok  " } else { "FAIL" }
    );
    if !ok {
        bail!("{what}: {detail}");
    }
    Ok(())
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

const T: Duration = Duration::from_secs(30);

fn functions(lease: &Lease) -> Result<()> {
    let names: Vec<&str> = lease.functions().iter().map(|f| f.name.as_str()).collect();
    println!("  executor offers: {}", names.join(", "));
    fx::noop::invoke(lease).timeout(T).wait()?;
    check("noop", true, String::new())?;

    let input: Vec<u8> = (0..4096).map(|i| (i * 7) as u8).collect();
    let mut out = vec![0u8; 4096];
    let n = fx::echo::invoke(lease, &input, &mut out)
        .timeout(T)
        .wait()?;
    check(
        "echo 4 KiB",
        n == 4096 && out == input,
        format!("{n} bytes came back"),
    )?;

    let mut rng = Rng(1);
    let x: Vec<f64> = (0..10_000).map(|_| rng.next()).collect();
    let y: Vec<f64> = (0..10_000).map(|_| rng.next()).collect();
    let (mut remote, mut local) = (vec![0.0; 10_000], vec![0.0; 10_000]);
    fx::axpy::invoke(lease, 2.5, &x, &y, &mut remote)
        .timeout(T)
        .wait()?;
    fx::axpy(2.5, &x, &y, &mut local)?;
    check(
        "axpy, 10 000 elements",
        remote == local,
        "matches the local call".into(),
    )?;

    let n = 96usize;
    let a: Vec<f64> = (0..n * n).map(|_| rng.next()).collect();
    let b: Vec<f64> = (0..n * n).map(|_| rng.next()).collect();
    let (mut remote, mut local) = (vec![0.0; n * n], vec![0.0; n * n]);
    fx::matmul::invoke(lease, n as u32, &a, &b, &mut remote)
        .timeout(T)
        .wait()?;
    fx::matmul(n as u32, &a, &b, &mut local)?;
    check(
        "matmul 96 x 96",
        remote == local,
        "matches the local call".into(),
    )?;

    let options: Vec<fx::OptionData> = (0..40_000)
        .map(|i| fx::OptionData {
            spot: 50.0 + 100.0 * rng.next() as f32,
            strike: 50.0 + 100.0 * rng.next() as f32,
            rate: 0.1 * rng.next() as f32,
            volatility: 0.05 + 0.5 * rng.next() as f32,
            time: 0.25 + 2.0 * rng.next() as f32,
            kind: (i % 2) as u32,
        })
        .collect();
    let (mut remote, mut local) = (vec![0.0f32; options.len()], vec![0.0f32; options.len()]);
    let started = Instant::now();
    fx::black_scholes::invoke(lease, &options, &mut remote)
        .timeout(T)
        .wait()?;
    let took = started.elapsed();
    fx::black_scholes(&options, &mut local)?;
    check(
        "black_scholes, 40 000 options",
        remote == local,
        format!("matches the local call ({took:.2?} remote)"),
    )?;

    match fx::parse_decimal::invoke(lease, b"12x").timeout(T).wait() {
        Err(Error::Call(CallError::Function(msg))) => check(
            "parse_decimal(\"12x\")",
            true,
            format!("error as expected: {msg}"),
        )?,
        other => check("parse_decimal(\"12x\")", false, format!("{other:?}"))?,
    }
    println!("  (next, a function panics on purpose: the executor prints its panic message)");
    match fx::fault::invoke(lease, 1, 7).timeout(T).wait() {
        Err(Error::Call(CallError::Panic(msg))) => {
            check("fault (panics)", true, format!("caught: {msg}"))?
        }
        other => check("fault (panics)", false, format!("{other:?}"))?,
    }
    let v = fx::fault::invoke(lease, 0, 8).timeout(T).wait()?;
    check(
        "after the panic",
        v == 8,
        "the executor keeps serving".into(),
    )?;
    Ok(())
}

/// Measures noop round trips on a thread pinned to CPU 0 (processes started later by the main
/// thread do not inherit the pinning).
fn measure(lease: &Lease, iterations: usize, gap: Option<Duration>) -> Result<Summary> {
    std::thread::scope(|s| {
        s.spawn(|| measure_pinned(lease, iterations, gap))
            .join()
            .expect("measuring thread")
    })
}

fn measure_pinned(lease: &Lease, iterations: usize, gap: Option<Duration>) -> Result<Summary> {
    let _ = pin_to_cpu(0);
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations + iterations / 10 {
        if let Some(g) = gap {
            let until = Instant::now() + g;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        let t = Instant::now();
        fx::noop::invoke(lease).wait()?;
        let ns = t.elapsed().as_nanos() as u64;
        if i >= iterations / 10 {
            samples.push(ns);
        }
    }
    Ok(Summary::from_samples(&mut samples))
}

/// Runs the raw ping-pong baseline (`pingpong --json`) and returns (median, p99) in ns.
fn raw(mode: &str, iterations: usize) -> Result<(f64, f64)> {
    let bin = std::env::current_exe()?.with_file_name("pingpong");
    let out = Command::new(&bin)
        .args(["--mode", mode, "--sizes", "8", "--json", "--iterations"])
        .arg(iterations.to_string())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("pingpong --mode {mode} failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with('{'))
        .context("pingpong printed no result")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    Ok((
        v["median_ns"].as_f64().unwrap_or(f64::NAN),
        v["p99_ns"].as_f64().unwrap_or(f64::NAN),
    ))
}

fn row(what: &str, s: &Summary, base_what: &str, base: (f64, f64)) {
    println!(
        "  {what:<22} {:>8.2} µs / {:>8.2} µs    {base_what:<22} {:>8.2} µs / {:>8.2} µs    {:>5.2}x",
        s.median_ns / 1e3,
        s.p99_ns / 1e3,
        base.0 / 1e3,
        base.1 / 1e3,
        s.median_ns / base.0
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!("rfaas demo: functions-example served by an executor process over shared memory\n");
    let hot = Executor::start(&args.executor, &args.package, 20_000)?;
    let lease = Lease::connect(&hot.socket).context("leasing the executor")?;
    functions(&lease)?;

    println!(
        "\nround-trip latency, {} iterations, median / p99 (rfaas beside the raw baseline of this run):",
        args.iterations
    );
    let always_hot = Executor::start(&args.executor, &args.package, -1)?;
    let lease_hot = Lease::connect(&always_hot.socket)?;
    let hot_s = measure(&lease_hot, args.iterations, None)?;
    drop(lease_hot);
    drop(always_hot);
    let raw_spin = raw("spin", args.iterations)?;
    row("hot noop invocation", &hot_s, "raw shm ping-pong", raw_spin);
    let warm = Executor::start(&args.executor, &args.package, 0)?;
    let lease_warm = Lease::connect(&warm.socket)?;
    let warm_iters = (args.iterations / 4).max(100);
    let warm_s = measure(&lease_warm, warm_iters, Some(Duration::from_micros(20)))?;
    let raw_futex = raw("futex", warm_iters)?;
    row(
        "warm noop invocation",
        &warm_s,
        "raw futex ping-pong",
        raw_futex,
    );
    println!("\n(hot: the worker busy-polls; warm: it sleeps on a futex between invocations.)");
    drop(lease);
    Ok(())
}
