//! `cargo xtask fuzz [--seconds N] [TARGET]`: builds the cargo-fuzz targets of `rfaas/fuzz/`
//! (installing cargo-fuzz first if it is missing) and runs each for N seconds, failing on the
//! first crash with the path of its reproducer.
//!
//! cargo-fuzz needs nightly compiler flags (`-Zsanitizer=address`); the stable toolchain
//! accepts them with `RUSTC_BOOTSTRAP=1`, which is set for the cargo-fuzz commands only. Each
//! target reads its committed seeds (`rfaas/fuzz/seeds/<target>/`) and grows its corpus in
//! `rfaas/fuzz/corpus/<target>/`; crashes go to `rfaas/fuzz/artifacts/<target>/` (both
//! ignored by git).

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Build and run the fuzz targets (rfaas/fuzz) for a while each; fail on a crash.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds to fuzz each target.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Largest input libFuzzer generates, in bytes.
    #[arg(long, default_value_t = 4096)]
    max_len: usize,
    /// Print libFuzzer's progress lines (new coverage, reductions) too.
    #[arg(long, short)]
    verbose: bool,
    /// The target to run (default: every target, one after the other).
    target: Option<String>,
}

/// What one run did.
struct Run {
    target: String,
    /// Wall-clock time, including cargo's up-to-date check and libFuzzer's start-up.
    seconds: f64,
    execs: Option<u64>,
    crash: Option<String>,
}

/// The fuzz smoke `cargo xtask ci` runs: every target for `seconds`.
pub fn ci_smoke(seconds: u64) -> Result<()> {
    run(FuzzArgs {
        seconds,
        max_len: 4096,
        verbose: false,
        target: None,
    })
}

/// `cargo xtask fuzz`: install, build, run each target, report.
pub fn run(args: FuzzArgs) -> Result<()> {
    let dir = super::workspace_root().join("rfaas/fuzz");
    ensure_cargo_fuzz()?;
    let all = list_targets(&dir)?;
    let targets = match &args.target {
        Some(t) if all.contains(t) => vec![t.clone()],
        Some(t) => bail!("no fuzz target `{t}` (targets: {})", all.join(", ")),
        None => all,
    };

    let mut build = cargo_fuzz(&dir, "build");
    build.arg("--debug-assertions");
    if let Some(t) = &args.target {
        build.arg(t);
    }
    super::run("cargo fuzz build", &mut build)?;

    let mut runs = Vec::new();
    for target in &targets {
        let run = run_target(&dir, target, &args)?;
        let crashed = run.crash.is_some();
        runs.push(run);
        if crashed {
            break;
        }
    }

    eprintln!(
        "\n{:<18} {:>8} {:>12}  result",
        "target", "wall s", "executions"
    );
    for r in &runs {
        let execs = r.execs.map_or("?".to_owned(), |n| n.to_string());
        let result = r.crash.as_deref().map_or("ok", |_| "CRASH");
        eprintln!(
            "{:<18} {:>8.0} {:>12}  {result}",
            r.target, r.seconds, execs
        );
    }
    if let Some(r) = runs.iter().find(|r| r.crash.is_some()) {
        let artifact = r.crash.as_deref().unwrap_or_default();
        bail!(
            "fuzz target `{}` crashed; reproducer: {artifact}\n  reproduce with: RUSTC_BOOTSTRAP=1 \
             cargo fuzz run --fuzz-dir rfaas/fuzz --debug-assertions {} {artifact}",
            r.target,
            r.target
        );
    }
    eprintln!("fuzz: {} targets, no crash", runs.len());
    Ok(())
}

/// `cargo fuzz SUBCOMMAND --fuzz-dir DIR`; `RUSTC_BOOTSTRAP=1` lets the stable toolchain take
/// cargo-fuzz's `-Z` flags.
fn cargo_fuzz(dir: &Path, subcommand: &str) -> Command {
    let mut c = super::cargo();
    c.env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", subcommand, "--fuzz-dir"])
        .arg(dir);
    c
}

/// Installs cargo-fuzz when `cargo fuzz` does not run.
fn ensure_cargo_fuzz() -> Result<()> {
    let installed = super::cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        super::run(
            "cargo install cargo-fuzz --locked",
            super::cargo().args(["install", "cargo-fuzz", "--locked"]),
        )?;
    }
    Ok(())
}

/// The targets of the fuzz project (`cargo fuzz list`).
fn list_targets(dir: &Path) -> Result<Vec<String>> {
    let out = cargo_fuzz(dir, "list")
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo fuzz list")?;
    if !out.status.success() {
        bail!("cargo fuzz list failed ({})", out.status);
    }
    let targets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(targets)
}

/// Runs one target for `args.seconds`, streaming libFuzzer's output (without its progress
/// lines unless verbose) and picking out the execution count and any crash's reproducer.
fn run_target(dir: &Path, target: &str, args: &FuzzArgs) -> Result<Run> {
    let corpus = dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let seeds = dir.join("seeds").join(target);
    let mut cmd = cargo_fuzz(dir, "run");
    cmd.args(["--debug-assertions", target]).arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
        .arg(format!("-max_len={}", args.max_len))
        .arg("-timeout=20")
        .arg("-print_final_stats=1")
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    eprintln!("==> fuzz {target} ({} s)", args.seconds);
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting cargo fuzz run")?;
    let stderr = child.stderr.take().expect("piped stderr");
    let mut execs = None;
    let mut crash = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading libFuzzer's output")?;
        if let Some(n) = executions(&line) {
            execs = Some(n);
        }
        if let Some(path) = line.split("Test unit written to ").nth(1) {
            crash = Some(reproducer(path.trim()));
        }
        if args.verbose || !is_progress(&line) {
            eprintln!("{line}");
        }
    }
    let status = child.wait().context("waiting for cargo fuzz run")?;
    if !status.success() && crash.is_none() {
        crash = Some(format!(
            "(none written: cargo fuzz run failed with {status}; see the output above)"
        ));
    }
    Ok(Run {
        target: target.to_owned(),
        seconds: started.elapsed().as_secs_f64(),
        execs,
        crash,
    })
}

/// The execution count in a libFuzzer line: `#1234 ...`, `Done 1234 runs ...` or
/// `stat::number_of_executed_units: 1234`.
fn executions(line: &str) -> Option<u64> {
    let n = if let Some(rest) = line.strip_prefix('#') {
        rest.split_whitespace().next()
    } else if let Some(rest) = line.strip_prefix("Done ") {
        rest.split_whitespace().next()
    } else {
        line.strip_prefix("stat::number_of_executed_units:")
            .map(str::trim)
    };
    n?.parse().ok()
}

/// libFuzzer's per-input progress lines (`#123\tNEW ...`, `\tNEW_FUNC[1/2]: ...`).
fn is_progress(line: &str) -> bool {
    line.starts_with("\tNEW_FUNC")
        || line.starts_with('#')
            && ["\tNEW ", "\tREDUCE ", "\tpulse ", "\tRELOAD "]
                .iter()
                .any(|k| line.contains(k))
}

/// An artifact path as libFuzzer printed it (relative to cargo-fuzz's working directory).
fn reproducer(printed: &str) -> String {
    let p = PathBuf::from(printed);
    let p = if p.is_absolute() {
        p
    } else {
        super::workspace_root().join(p)
    };
    p.display().to_string()
}
