//! `rfaas-executor`: the executor binary (today: `inspect`).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use executor::FunctionLibrary;
use executor::package::{Package, fingerprint_hex, sha256_file};
use std::path::{Path, PathBuf};

/// The rfaas executor.
#[derive(Parser)]
#[command(name = "rfaas-executor", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a function library or package and print its functions.
    ///
    /// Accepts a package directory (as written by `cargo xtask package`, verified against its
    /// SHA-256) or a library file (`.so`).
    Inspect {
        /// Package directory or shared library.
        path: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Inspect { path } => inspect(&path),
    }
}

fn inspect(path: &Path) -> Result<()> {
    let (lib, header) = if path.is_dir() {
        let (pkg, lib) = Package::open(path)
            .with_context(|| format!("cannot open package {}", path.display()))?;
        (
            lib,
            format!("package:   {} ({})\n", path.display(), pkg.crate_name),
        )
    } else {
        let lib = FunctionLibrary::open(path)
            .with_context(|| format!("cannot load {}", path.display()))?;
        (lib, String::new())
    };
    let sha = sha256_file(lib.path())?;
    print!("{header}");
    println!("library:   {}", lib.path().display());
    println!("sha256:    {sha}");
    println!("abi:       {}", rfaas::wire::ABI_VERSION);
    println!("functions: {}", lib.functions().len());
    let width = lib
        .functions()
        .iter()
        .map(|f| f.name.len())
        .max()
        .unwrap_or(0);
    for f in lib.functions() {
        println!(
            "  [{}] {:width$}  {}  {}",
            f.index,
            f.name,
            fingerprint_hex(f.fingerprint),
            f.signature
        );
    }
    Ok(())
}
