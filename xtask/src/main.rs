//! Project automation, run as `cargo xtask <command>` (rust-analyzer's xtask pattern).
//!
//! - `package [-p CRATE]`: build a function library in release and write its package under
//!   `target/rfaas/<crate>/`.
//! - `demo`: package the example library, start an executor on shared memory, call its
//!   functions from a client and print hot and warm latency beside the raw baseline.
//! - `bench [--quick]`: the benchmarks (release build): rfaas invocations beside the raw
//!   shared-memory, futex and TCP ping-pongs, in one run; then cold starts through a manager
//!   (`noop`, and `echo` of the same payload sizes), offload, parallel invocations, bursts of
//!   futures beyond the slots, and the peer libraries.
//! - `ci`: everything CI checks: fmt, clippy, docs, the README's test command, a bench smoke.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use executor::Package;
use serde::Deserialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod fuzz;
mod rdma_vm;
mod report;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "rfaas project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a function library (cdylib, release) and write its package under target/rfaas/.
    Package {
        /// The crate to package.
        #[arg(short = 'p', long = "package", default_value = "functions-example")]
        krate: String,
        /// Where packages go (default: TARGET_DIR/rfaas).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Package functions-example, start an executor (shared memory), call its functions and
    /// print hot and warm latency beside the raw shared-memory baseline.
    Demo,
    /// Run the benchmarks in release mode (rfaas beside raw baselines, same run).
    Bench {
        /// A short smoke run (CI): few iterations, results not kept.
        #[arg(long)]
        quick: bool,
        /// Measure nothing: redraw the plots and tables from this `results.json` (into its
        /// directory, and `docs/performance.md` unless it is a quick run's).
        #[arg(long, value_name = "RESULTS_JSON", conflicts_with = "quick")]
        from: Option<PathBuf>,
        /// Extra arguments for the `invoke` benchmark binary.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run what CI runs: fmt, clippy, docs, the test suite, a benchmark smoke, the RDMA tests
    /// in the Soft-RoCE VM and a fuzz smoke.
    Ci,
    RdmaVm(rdma_vm::RdmaVmArgs),
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Package { krate, out } => {
            let (pkg, dir) = package(&krate, out.as_deref())?;
            println!(
                "packaged {} ({} functions, sha256 {})",
                pkg.crate_name,
                pkg.functions.len(),
                pkg.sha256
            );
            println!("  {}", dir.display());
            for f in &pkg.functions {
                println!("  [{}] {}  {}", f.index, f.fingerprint, f.signature);
            }
            Ok(())
        }
        Cmd::Demo => demo(),
        Cmd::Bench {
            quick,
            from: Some(results),
            ..
        } => bench_report(report::Run::load(&results)?, quick, &results),
        Cmd::Bench { quick, args, .. } => bench(quick, &args),
        Cmd::Ci => ci(),
        Cmd::RdmaVm(args) => rdma_vm::run(args),
        Cmd::Fuzz(args) => fuzz::run(args),
    }
}

/// Builds the release binaries the demo and benchmarks run, and the example package.
fn release_build() -> Result<(PathBuf, PathBuf)> {
    let (_, package) = package("functions-example", None)?;
    run(
        "cargo build --release (executor, benches)",
        cargo().args([
            "build",
            "--release",
            "-q",
            "-p",
            "executor",
            "-p",
            "benches",
            "--bins",
        ]),
    )?;
    let release = target_dir()?.join("release");
    Ok((package, release))
}

fn target_dir() -> Result<PathBuf> {
    let meta = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    let meta: Metadata = serde_json::from_slice(&meta.stdout).context("parsing cargo metadata")?;
    Ok(meta.target_directory)
}

fn demo() -> Result<()> {
    let (package, release) = release_build()?;
    run(
        "demo",
        Command::new(release.join("demo"))
            .arg("--package")
            .arg(&package)
            .arg("--executor")
            .arg(release.join("rfaas-executor")),
    )
}

/// Runs every benchmark binary with `--json`, then writes the data (with machine, date and
/// commit), the plots and the generated tables: into `docs/bench/` and `docs/performance.md`
/// for a full run, into `target/bench-quick/` for `--quick` (a smoke run; nothing kept).
fn bench(quick: bool, args: &[String]) -> Result<()> {
    let (package, release) = release_build()?;
    let with_common = |bin: &str| {
        let mut cmd = Command::new(release.join(bin));
        cmd.arg("--package")
            .arg(&package)
            .arg("--executor")
            .arg(release.join("rfaas-executor"));
        if quick {
            cmd.arg("--quick");
        }
        cmd.arg("--json");
        cmd
    };
    let mut results = report::Run::new(quick);
    // The quick smoke measures two sizes; a full run the whole range.
    let all_sizes = if quick {
        "8,65536"
    } else {
        "8,64,1024,65536,1048576"
    };
    let sizes = ["--sizes", all_sizes];
    let invoke_args: Vec<&str> = if args.is_empty() {
        // A full run measures each case five times and keeps the median round: one round is
        // one sample of a machine whose speed shifts within seconds.
        let rounds: &[&str] = if quick { &[] } else { &["--rounds", "5"] };
        sizes.iter().chain(rounds).copied().collect()
    } else {
        args.iter().map(String::as_str).collect()
    };
    let mut runs: Vec<(&str, Command)> = vec![
        ("invoke", {
            let mut c = with_common("invoke");
            c.args(&invoke_args);
            c
        }),
        ("coldstart", {
            // Cold `echo` at the sizes hot and warm are measured at.
            let mut c = with_common("coldstart");
            c.args(sizes);
            c
        }),
        ("offload", with_common("offload")),
        ("parallel", with_common("parallel")),
        ("burst", with_common("burst")),
    ];
    // Peers start no executor.
    let mut peers = Command::new(release.join("peers"));
    if quick {
        peers.arg("--quick");
    }
    peers.args(["--json", "--sizes", all_sizes]);
    runs.push(("peers", peers));
    for (name, mut cmd) in runs {
        if !release.join(name).exists() {
            eprintln!("==> benchmarks: {name}: not built, skipped");
            continue;
        }
        eprintln!("==> benchmarks: {name}");
        let out = cmd
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("starting {name}"))?;
        if !out.status.success() {
            bail!("benchmark {name} failed ({})", out.status);
        }
        results.add(name, &String::from_utf8_lossy(&out.stdout))?;
    }
    results.add_peer_ratios();
    let root = workspace_root();
    let dir = if quick {
        root.join("target/bench-quick")
    } else {
        root.join("docs/bench")
    };
    bench_report(results, quick, &dir.join("results.json"))
}

/// Writes a run's data, plots and tables next to `results` (and into `docs/performance.md`
/// unless it is a quick run).
fn bench_report(results: report::Run, quick_arg: bool, results_path: &Path) -> Result<()> {
    let quick = quick_arg || results.meta["quick"] == true;
    let root = workspace_root();
    let dir = results_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("docs/bench"));
    let plots = results.write(&dir)?;
    let section = results.markdown(&plots);
    print!("{section}");
    if quick {
        eprintln!("==> quick run: results in {} (not kept)", dir.display());
    } else {
        let perf = root.join("docs/performance.md");
        let doc = std::fs::read_to_string(&perf).context("reading docs/performance.md")?;
        std::fs::write(&perf, report::splice(&doc, &section))?;
        let readme = root.join("README.md");
        let doc = std::fs::read_to_string(&readme).context("reading README.md")?;
        std::fs::write(&readme, report::splice(&doc, &results.headline()))?;
        eprintln!(
            "==> results in {} and docs/performance.md ({} records, plots: {})",
            dir.display(),
            results.records.len(),
            plots.join(", ")
        );
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<MetaPackage>,
    workspace_members: Vec<String>,
    target_directory: PathBuf,
}

#[derive(Deserialize)]
struct MetaPackage {
    id: String,
    name: String,
    targets: Vec<MetaTarget>,
}

#[derive(Deserialize)]
struct MetaTarget {
    crate_types: Vec<String>,
}

#[derive(Deserialize)]
struct Message {
    reason: String,
    #[serde(default)]
    package_id: String,
    #[serde(default)]
    target: Option<MetaTarget>,
    #[serde(default)]
    filenames: Vec<PathBuf>,
}

/// Builds `krate`'s cdylib in release and writes its package. Returns the package directory.
fn package(krate: &str, out: Option<&Path>) -> Result<(Package, PathBuf)> {
    let meta = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    if !meta.status.success() {
        bail!("cargo metadata failed");
    }
    let meta: Metadata = serde_json::from_slice(&meta.stdout).context("parsing cargo metadata")?;
    let members: Vec<&MetaPackage> = meta
        .packages
        .iter()
        .filter(|p| meta.workspace_members.contains(&p.id))
        .collect();
    let Some(pkg) = members.iter().find(|p| p.name == krate) else {
        let names: Vec<&str> = members.iter().map(|p| p.name.as_str()).collect();
        bail!(
            "no crate named `{krate}` in this workspace (crates: {})",
            names.join(", ")
        );
    };
    if !pkg
        .targets
        .iter()
        .any(|t| t.crate_types.iter().any(|c| c == "cdylib"))
    {
        bail!(
            "crate `{krate}` does not build a cdylib: add `crate-type = [\"cdylib\", \"rlib\"]` to its [lib] section"
        );
    }
    let mut child = cargo()
        .args([
            "build",
            "--release",
            "--lib",
            "--message-format=json-render-diagnostics",
            "-p",
            krate,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("running cargo build")?;
    let mut library = None;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(msg) = serde_json::from_str::<Message>(&line) else {
            continue;
        };
        let is_cdylib = msg
            .target
            .as_ref()
            .is_some_and(|t| t.crate_types.iter().any(|c| c == "cdylib"));
        if msg.reason == "compiler-artifact" && msg.package_id == pkg.id && is_cdylib {
            library = msg
                .filenames
                .into_iter()
                .find(|f| f.extension().is_some_and(|e| e == "so"));
        }
    }
    if !child.wait().context("waiting for cargo build")?.success() {
        bail!("building `{krate}` failed");
    }
    let library =
        library.with_context(|| format!("cargo built no shared library for `{krate}`"))?;
    let out_root = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| meta.target_directory.join("rfaas"));
    let (package, dir) = Package::create(krate, &library, &out_root)
        .with_context(|| format!("packaging `{krate}`"))?;
    Ok((package, dir))
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> {what}");
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// The README's test command.
const TEST_COMMAND: [&str; 2] = ["test", "--workspace"];

fn ci() -> Result<()> {
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    run(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "cargo doc",
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    eprintln!("==> cargo {}", TEST_COMMAND.join(" "));
    let mut child = cargo()
        .args(TEST_COMMAND)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.context("reading test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (
                    words.next().and_then(|n| n.parse::<u64>().ok()),
                    words.next(),
                ) {
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        "ignored" => ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if status.success() && failed == 0 {
        // A smoke of the benchmarks (tiny iterations; numbers not kept).
        bench(true, &[])?;
    }
    println!("ci: {passed} passed, {failed} failed");
    if !status.success() || failed > 0 {
        bail!("tests failed ({status})");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    if ignored > 0 {
        bail!("{ignored} tests are marked ignored: skip at run time with a printed reason instead");
    }
    // RDMA for real: the verbs tests inside a QEMU guest with Soft-RoCE.
    eprintln!("==> cargo xtask rdma-vm --suite");
    rdma_vm::ci_suite()?;
    // A short fuzz of every target (longer runs: docs/reliability.md).
    eprintln!("==> cargo xtask fuzz --seconds 4");
    fuzz::ci_smoke(4)?;
    Ok(())
}
