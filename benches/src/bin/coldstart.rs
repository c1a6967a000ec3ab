//! Cold start: from a lease request to a node's manager to the first result, process spawn and
//! library load included (`cargo xtask bench` runs it; `--quick` for a smoke run).

use anyhow::{Context, Result, bail};
use benches::Summary;
use clap::Parser;
use functions_example as fx;
use rfaas::managed::{LeaseSpec, lease_from};
use rfaas::wire::Fabric;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "coldstart",
    about = "lease request to first result, through a manager"
)]
struct Args {
    /// Package directory (`cargo xtask package`).
    #[arg(long)]
    package: PathBuf,
    /// The `rfaas-executor` binary.
    #[arg(long)]
    executor: PathBuf,
    /// Cold starts to measure.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// A short smoke run.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

struct Manager(Child, PathBuf);

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("rfaas-coldstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("manager.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ncores = 1\ncache_dir = \"{0}/cache\"\nledger = \"{0}/ledger.jsonl\"\nsocket_dir = \"{0}\"\nexecutor = \"{1}\"\n",
            dir.display(),
            args.executor.display()
        ),
    )?;
    let mut child = Command::new(&args.executor)
        .arg("manager")
        .arg("--config")
        .arg(&config)
        .env("RFAAS_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the manager")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let mgr = Manager(child, dir);
    let Some(addr) = line.trim().strip_prefix("ready ").map(str::to_owned) else {
        bail!("manager did not start: {line:?}")
    };
    let mut spec = LeaseSpec::default();
    spec.fabric = Fabric::Shm;
    spec.slot_size = Some(65536);
    let once = || -> Result<u64> {
        // The single core returns to the manager a moment after the previous lease drops.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let t = Instant::now();
            match lease_from(&addr, &args.package, &spec) {
                Ok(lease) => {
                    fx::noop::invoke(&lease)
                        .timeout(Duration::from_secs(10))
                        .wait()?;
                    return Ok(t.elapsed().as_nanos() as u64);
                }
                Err(rfaas::Error::Refused(why))
                    if why.contains("capacity") && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let first = once()?; // includes shipping the package to the node
    let n = if args.quick { 10 } else { args.iterations };
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        samples.push(once()?);
    }
    let s = Summary::from_samples(&mut samples);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"case": "cold start (shm)", "iterations": n, "median_ns": s.median_ns, "p99_ns": s.p99_ns, "first_with_upload_ns": first})
        );
    } else {
        println!(
            "cold start, lease request to first result (shm, 1 core), {n} runs: median {:.2} ms, p99 {:.2} ms, min {:.2} ms; first one with the package upload {:.2} ms; target < 10 ms: {}",
            s.median_ns / 1e6,
            s.p99_ns / 1e6,
            s.min_ns / 1e6,
            first as f64 / 1e6,
            if s.median_ns < 10e6 { "met" } else { "MISSED" }
        );
    }
    drop(mgr);
    Ok(())
}
