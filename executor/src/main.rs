//! `rfaas-executor`: the executor binary: `run` (serve a function library), `worker` (the
//! executor process of one lease), `manager`, `registry`, `ledger` and `inspect`.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use executor::FunctionLibrary;
use executor::package::{Package, fingerprint_hex, sha256_file};
use executor::worker::{HotTimeout, WorkerConfig, serve_session, serve_tcp_session};
use std::io::{IsTerminal, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// Package a built function library (a cdylib of `#[rfaas::function]`s, from any crate):
    /// writes `<out>/<name>/` with the library, its SHA-256 and the manifest, as `cargo xtask
    /// package` does inside the rfaas workspace. Prints the package's directory.
    Package {
        /// The library (`target/release/libNAME.so`).
        library: PathBuf,
        /// The package's name (its directory's): by default the library's, without `lib` and
        /// `.so`.
        #[arg(long)]
        name: Option<String>,
        /// Where to write the package's directory.
        #[arg(long, default_value = "rfaas")]
        out: PathBuf,
    },
    /// Run the node's executor manager: accepts lease requests, spawns one executor process
    /// per lease, reclaims it when the client leaves, and keeps a ledger. Prints
    /// `ready <address>` once listening.
    ///
    /// With `secret_file` in the configuration, clients must authenticate with that shared
    /// secret (HMAC-SHA256 challenge-response) before any request is read or package
    /// accepted, and the manager authenticates with it to the registry. Without one, anyone
    /// who reaches the address can lease cores and run code here: a warning says so at start.
    /// Per-lease limits (`max_cores_per_lease`, `max_slots_per_worker`, `max_slot_size`,
    /// `max_outstanding_per_lease`, `max_package_bytes`) refuse oversized leases with the
    /// limit's name.
    ///
    /// SIGTERM or SIGINT stops it in order: no new leases, the registry left, running leases
    /// told and given `shutdown_grace_ms`, then ended and recorded (a second signal ends them
    /// at once, a third exits). Under systemd use `KillMode=mixed` (docs/control-plane.md).
    Manager {
        /// TOML configuration: `listen`, `advertise`, `node_id`, `cores`, `memory_mib`,
        /// `registry`, `heartbeat_ms`, `cache_dir`, `max_cache_bytes`, `ledger`,
        /// `socket_dir`, `executor`, `executor_start_timeout_ms`, `request_timeout_ms`,
        /// `secret_file`, `executor_uids`, `cgroups`, `shutdown_grace_ms`, the limits above
        /// (see `docs/control-plane.md`); without it, the defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides the configuration's listen address.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Print a manager's ledger: one line per finished lease, then totals.
    Ledger {
        /// The ledger file.
        path: PathBuf,
    },
    /// Run the cluster registry: managers register and heartbeat their free capacity, clients
    /// list the live nodes. Prints `ready <address>` once listening.
    ///
    /// With `secret_file` in the configuration, every request (register, heartbeat,
    /// deregister, list) must come authenticated with that shared secret; without one the
    /// registry is open, and a warning says so at start.
    Registry {
        /// TOML configuration (`listen`, `heartbeat_timeout_ms`, `request_timeout_ms`,
        /// `state_file`, `max_nodes`, `secret_file`; see `docs/control-plane.md`); without it,
        /// the defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides the configuration's listen address.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Serve a function library to clients connecting on a Unix socket (shared memory) or a
    /// TCP address.
    ///
    /// Each connecting client gets a session with its own workers; the executor keeps serving
    /// other clients when one disconnects or dies. Prints `ready <socket or address>` once
    /// listening.
    ///
    /// With `RFAAS_SESSION_TOKEN` set in the environment (32 to 256 visible ASCII characters),
    /// only clients presenting that token get a session (`LeaseOptions::token`); others are
    /// refused with the reason.
    Run {
        #[command(flatten)]
        serve: Serve,
        /// Serve one session, then exit.
        #[arg(long)]
        once: bool,
    },
    /// The executor process of one lease, as the manager spawns it: serves exactly one
    /// client session within a memory limit, then reports its accounting (`stats {json}`) as
    /// its last line and exits.
    ///
    /// Reports `ready <socket or address>` once listening. Reports go to stdout, or to the
    /// descriptor `--report-fd` names.
    Worker {
        #[command(flatten)]
        serve: Serve,
        /// The lease this process serves (named in its logs).
        #[arg(long)]
        lease: u64,
        /// Private memory this process may use, MiB (heap, thread stacks, the function
        /// library's data; the shared-memory regions of the data plane are not counted). A
        /// function that allocates beyond it fails the allocation, which ends the process:
        /// its client sees the executor gone. Default: no limit.
        #[arg(long)]
        memory_mib: Option<u64>,
        /// Keep this inherited descriptor (a memory file of at least 256 bytes, the
        /// manager's) up to date, every 100 ms while counts change, with the session's counts
        /// so far: `{"invocations": N, "ok": M}` at its start, padded with spaces. What a
        /// manager records when this process dies before printing its final accounting.
        #[arg(long)]
        stats_fd: Option<i32>,
        /// Write the `ready` and `stats` lines to this inherited descriptor (a pipe from the
        /// manager) instead of stdout, which is left to the functions' own output. It is
        /// closed on exec: processes the functions start do not inherit it.
        #[arg(long)]
        report_fd: Option<i32>,
    },
}

/// The fabrics an executor listening on TCP offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum NetFabric {
    /// Invocations over TCP.
    Tcp,
    /// Invocations as RDMA writes (the TCP connection only sets them up).
    Verbs,
}

/// What to serve, where, and with how many workers.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("where").args(["socket", "listen"]).required(true)))]
struct Serve {
    /// Package directory or shared library to serve.
    #[arg(long)]
    library: PathBuf,
    /// Load the library from this inherited descriptor (open on the file `--library` names,
    /// such as the manager's cached package, which this process may not be able to open by
    /// its path).
    #[arg(long)]
    library_fd: Option<i32>,
    /// Unix socket path to listen on, for clients on this host (shared memory). A stale
    /// socket there (nobody listening) is replaced; anything else there is an error. Holds
    /// `SOCKET.lock` beside it while running (the file stays).
    #[arg(long, conflicts_with = "listen")]
    socket: Option<PathBuf>,
    /// With `--socket`: accept on this inherited descriptor, a Unix socket already bound to
    /// `--socket` and listening (the manager's), instead of binding the path (which this
    /// process may not be allowed to create). The path is then left to whoever bound it.
    #[arg(long, requires = "socket")]
    socket_fd: Option<i32>,
    /// TCP address to listen on (`host:port`; port 0 picks one), for clients anywhere.
    #[arg(long)]
    listen: Option<String>,
    /// With `--listen`: the data fabric, `tcp` or `verbs` (RDMA; needs an executor built with
    /// the `verbs` feature and an RDMA device, see docs/rdma.md).
    #[arg(long, default_value = "tcp", requires = "listen")]
    fabric: NetFabric,
    /// Workers (leased cores) per session.
    #[arg(long, default_value_t = 1)]
    cores: u32,
    /// CPUs to pin workers to, comma-separated (default: all this process may run on). Each
    /// session takes the least used of them for its workers (concurrent sessions spread over
    /// them), and gives them back when it ends.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Input slots per worker: invocations that may be in flight on one worker.
    #[arg(long, default_value_t = 8)]
    slots: u32,
    /// Bytes per slot, header included (a multiple of 64); bounds input and output size.
    #[arg(long, default_value_t = 1 << 20)]
    slot_size: u32,
    /// Microseconds a worker busy-polls after an invocation: -1 always hot, 0 always warm.
    #[arg(long, default_value_t = 10_000, allow_negative_numbers = true)]
    hot_timeout_us: i64,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RFAAS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour for a terminal only: not into log files, nor into the pipe a manager relays
        // an executor's output through (which escapes control characters).
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match Cli::parse().command {
        Command::Inspect { path } => inspect(&path),
        Command::Package { library, name, out } => package(&library, name.as_deref(), &out),
        Command::Manager { config, listen } => {
            // It holds the cluster's secret; the functions of its leases run as its user.
            executor::deny_inspection().context("making the manager uninspectable")?;
            let mut cfg = match config {
                Some(path) => {
                    executor::manager::ManagerConfig::load(&path).map_err(anyhow::Error::msg)?
                }
                None => executor::manager::ManagerConfig::default(),
            };
            if let Some(l) = listen {
                cfg.listen = l;
            }
            executor::manager::serve(cfg, |addr| println!("ready {addr}"))
                .map_err(anyhow::Error::msg)
        }
        Command::Ledger { path } => {
            let lines = executor::manager::read_ledger_lines(&path).map_err(anyhow::Error::msg)?;
            let (entries, damaged): (Vec<_>, Vec<_>) = lines.into_iter().partition(Result::is_ok);
            let entries: Vec<_> = entries.into_iter().flatten().collect();
            let (mut inv, mut exec, mut hot, mut untimed) = (0u64, 0u64, 0u64, 0usize);
            for e in &entries {
                // Unknown times are not zero.
                let time = |us: u64| match e.times_unknown {
                    true => "-".to_owned(),
                    false => us.to_string(),
                };
                println!(
                    "lease {:>6}  node {}  {} cores  {:>8} ms allocated  {:>8} µs hot  {:>8} µs exec  {:>8} invocations  {:?}",
                    e.lease_id,
                    e.node_id,
                    e.cores,
                    e.allocated_ms,
                    time(e.hot_poll_us),
                    time(e.exec_us),
                    e.invocations,
                    e.fabric
                );
                if e.times_unknown {
                    untimed += 1;
                    println!(
                        "              times unknown: the executor ended without its report (invocations from its last record)"
                    );
                }
                if let Some(exit) = &e.executor_exit {
                    println!("              executor ended before the lease: {exit}");
                }
                if let Some(why) = &e.ended_by_manager {
                    println!("              ended by the manager: {why}");
                }
                if e.cpu_us.is_some() || e.memory_peak_bytes.is_some() {
                    let show = |v: Option<u64>, unit: &str| {
                        v.map_or("-".to_owned(), |v| format!("{v} {unit}"))
                    };
                    println!(
                        "              cgroup: {} CPU, {} memory peak",
                        show(e.cpu_us, "µs"),
                        show(e.memory_peak_bytes.map(|b| b >> 10), "KiB")
                    );
                }
                (inv, exec, hot) = (inv + e.invocations, exec + e.exec_us, hot + e.hot_poll_us);
            }
            println!(
                "{} leases, {inv} invocations, {exec} µs exec, {hot} µs hot polling{}",
                entries.len(),
                match untimed {
                    0 => String::new(),
                    1 => " (1 lease without times)".to_owned(),
                    n => format!(" ({n} leases without times)"),
                }
            );
            for why in damaged.iter().filter_map(|d| d.as_ref().err()) {
                eprintln!("damaged, not counted: {why}");
            }
            anyhow::ensure!(
                damaged.is_empty(),
                "{} damaged ledger lines (not counted above)",
                damaged.len()
            );
            Ok(())
        }
        Command::Registry { config, listen } => {
            executor::deny_inspection().context("making the registry uninspectable")?;
            let mut cfg = match config {
                Some(path) => {
                    executor::registry::RegistryConfig::load(&path).map_err(anyhow::Error::msg)?
                }
                None => executor::registry::RegistryConfig::default(),
            };
            if let Some(l) = listen {
                cfg.listen = l;
            }
            executor::registry::serve(cfg, |addr| println!("ready {addr}"))
                .map_err(anyhow::Error::msg)
        }
        Command::Run { serve, once } => serve_library(serve, once),
        Command::Worker {
            serve,
            lease,
            memory_mib,
            stats_fd,
            report_fd,
        } => {
            // Other leases' functions may run as this user: they must not read this lease's
            // token or memory files through /proc (before anything of the lease is set up).
            executor::deny_inspection().context("making the executor uninspectable")?;
            if let Some(fd) = report_fd {
                let _ = REPORT.set(inherited(fd, "--report-fd")?.into());
            }
            if let Some(mib) = memory_mib {
                limit_memory(mib)?;
            }
            if let Some(fd) = stats_fd {
                let file = std::fs::File::from(inherited(fd, "--stats-fd")?);
                std::thread::spawn(move || report_progress(&file));
            }
            let span = tracing::info_span!("lease", id = lease);
            let _entered = span.enter();
            serve_library(serve, true)
        }
    }
}

/// Writes the workers' counts into `file` (at its start, in one write of `STATS_LEN` bytes:
/// a reader after this process ended sees a whole record) whenever they changed, every
/// 100 ms, for the life of the process.
fn report_progress(file: &std::fs::File) {
    use std::os::unix::fs::FileExt;
    let mut last = None;
    loop {
        let now = executor::worker::PROGRESS.totals();
        if last != Some(now) {
            let mut record = serde_json::json!({ "invocations": now.0, "ok": now.1 })
                .to_string()
                .into_bytes();
            record.resize(executor::manager::STATS_LEN, b' ');
            if let Err(e) = file.write_all_at(&record, 0) {
                tracing::warn!(error = %e, "cannot write the stats record");
            }
            last = Some(now);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Limits this process's private writable memory (`RLIMIT_DATA`: heap, anonymous mappings,
/// thread stacks; not the shared memory of the data plane) to `mib` MiB.
fn limit_memory(mib: u64) -> Result<()> {
    let bytes = mib
        .checked_mul(1 << 20)
        .context("memory limit out of range")?;
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: `limit` is a valid rlimit for the duration of the call; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot limit memory to {mib} MiB"));
    }
    Ok(())
}

fn serve_library(serve: Serve, once: bool) -> Result<()> {
    let Serve {
        library,
        library_fd,
        socket,
        socket_fd,
        listen,
        fabric,
        cores,
        cpus,
        slots,
        slot_size,
        hot_timeout_us,
    } = serve;
    let hot_timeout = HotTimeout::from_micros(hot_timeout_us).map_err(anyhow::Error::msg)?;
    let allowed = rfaas::sys::allowed_cpus();
    if let Some(bad) = cpus.iter().find(|c| !allowed.contains(c)) {
        anyhow::bail!(
            "--cpus: CPU {bad} is not one this process may run on (allowed: {})",
            executor::cpus::cpu_list(&allowed)
        );
    }
    let cpus = if cpus.is_empty() { allowed } else { cpus };
    let cpus = executor::cpus::CpuPool::new(cpus);
    let cfg = WorkerConfig {
        workers: cores,
        cpus,
        slots,
        slot_size,
        hot_timeout,
        token: session_token()?,
    };
    cfg.validate()
        .map_err(anyhow::Error::msg)
        .context("invalid worker configuration")?;
    // (After the checks: no warning about a number about to be refused.)
    if cores as usize > cfg.cpus.cpus().len() {
        tracing::warn!(
            cores,
            cpus = %executor::cpus::cpu_list(cfg.cpus.cpus()),
            "more workers per session than CPUs: workers share CPUs, and busy-polling ones slow each other down"
        );
    }
    // Taken (and closed on exec) before anything can fail: no process a function starts
    // inherits them.
    let library_file = library_fd
        .map(|fd| inherited(fd, "--library-fd"))
        .transpose()?;
    let listener = socket_fd
        .map(|fd| inherited(fd, "--socket-fd").map(UnixListener::from))
        .transpose()?;
    let opened = match library_file {
        Some(file) => FunctionLibrary::open_file(file.into(), &library).map_err(Into::into),
        None => open_library(&library),
    };
    let lib = match opened {
        Ok(lib) => Arc::new(lib),
        Err(e) => {
            // For a manager (on its report pipe): why its lease could not start, and whether
            // the package itself is at fault (`unloadable`: it evicts it) or the load failed
            // for this process's reasons (`failed`: too little memory for the library, out of
            // descriptors, a file gone). One line, as every report.
            if REPORT.get().is_some() {
                let kind = if package_at_fault(&e) {
                    "unloadable"
                } else {
                    "failed"
                };
                report(&format!("{kind} {}", one_line(&format!("{e:#}"))));
            }
            return Err(e);
        }
    };
    executor::worker::check_welcome(&lib, &cfg)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("cannot serve {}", library.display()))?;
    match (socket, listen) {
        (Some(socket), _) => run(lib, &socket, listener, cfg, once),
        (None, Some(addr)) => run_tcp(lib, &addr, cfg, once, fabric),
        (None, None) => anyhow::bail!("give --socket or --listen"),
    }
}

fn open_library(path: &Path) -> Result<FunctionLibrary> {
    if path.is_dir() {
        let (_, lib) = Package::open(path)
            .with_context(|| format!("cannot open package {}", path.display()))?;
        Ok(lib)
    } else {
        // The error names the file.
        Ok(FunctionLibrary::open(path)?)
    }
}

/// Environment variable holding the session token clients must present (`run`, `worker`).
const TOKEN_ENV: &str = "RFAAS_SESSION_TOKEN";

/// The session token from [`TOKEN_ENV`], checked: 32 to 256 visible ASCII characters.
fn session_token() -> Result<Option<String>> {
    let Some(token) = std::env::var_os(TOKEN_ENV) else {
        return Ok(None);
    };
    let token = token
        .into_string()
        .map_err(|_| anyhow::anyhow!("{TOKEN_ENV} is not UTF-8"))?;
    anyhow::ensure!(
        (32..=256).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic()),
        "{TOKEN_ENV} must be 32 to 256 visible ASCII characters (e.g. `openssl rand -hex 32`)"
    );
    Ok(Some(token))
}

/// Serves each connection of `incoming` with `serve`, on a thread of its own; with `once`,
/// one at a time until a session succeeds, then prints its accounting and returns. A session
/// that failed during its handshake (a stranger without the token, a client that went away)
/// is not the lease holder's: keep waiting for it (the manager ends the process with the lease).
/// Without `once`, at most [`executor::conn::MAX_PENDING`] sessions may be in their handshake
/// at once (each holds a thread until its deadline): a connection beyond that is closed at once.
/// `serve` drops the [`executor::conn::Pending`] it is given once its handshake is over.
fn serve_sessions<C: Send>(
    incoming: impl Iterator<Item = std::io::Result<C>>,
    once: bool,
    serve: impl Fn(
        C,
        executor::conn::Pending,
    ) -> Result<executor::worker::WorkerStats, executor::worker::SessionError>
    + Sync,
) -> Result<()> {
    let mut failed = executor::conn::AcceptErrors::default();
    let mut limit = executor::conn::PendingLimit::new(executor::conn::MAX_PENDING);
    std::thread::scope(|s| -> Result<()> {
        for conn in incoming {
            // A failed accept (out of descriptors, say) ends no session and not the executor:
            // sessions that end give their descriptors back.
            let conn = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    failed.after(&e);
                    continue;
                }
            };
            // With `once`, sessions are served one at a time: only one is ever pending.
            let Some(pending) = limit.admit() else {
                drop(conn);
                continue;
            };
            if once {
                let result = serve(conn, pending);
                if result.is_ok() {
                    print_stats(log_session(result));
                    break;
                }
                log_session(result);
                continue;
            }
            let serve = &serve;
            // No thread for the session (a thread limit): the connection closes, and the
            // client hears the executor went away.
            if let Err(e) = std::thread::Builder::new()
                .name("rfaas-session".into())
                .spawn_scoped(s, move || log_session(serve(conn, pending)))
            {
                tracing::warn!(error = %e, "no thread for a session");
            }
        }
        Ok(())
    })
}

fn log_session(
    result: Result<executor::worker::WorkerStats, executor::worker::SessionError>,
) -> Option<executor::worker::WorkerStats> {
    match result {
        Ok(stats) => {
            tracing::info!(
                invocations = stats.invocations,
                ok = stats.ok,
                dropped = stats.dropped,
                "session ended"
            );
            Some(stats)
        }
        Err(e @ executor::worker::SessionError::NoHello(_)) => {
            tracing::info!(error = %e, "no session");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "session failed");
            None
        }
    }
}

/// Where `ready` and `stats` lines go: `--report-fd`'s descriptor, or stdout.
static REPORT: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

/// Takes the inherited descriptor `fd` (named by option `what`), closed on exec from now on:
/// it must be open and 3 or above (0 to 2 are stdio, never handed over this way).
fn inherited(fd: i32, what: &str) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    /// The descriptors taken so far: one given to two options is refused, not owned twice.
    static TAKEN: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    if taken.contains(&fd) {
        anyhow::bail!("{what} {fd}: that descriptor was given for another option already");
    }
    // SAFETY: F_GETFD only reads the descriptor's flags, valid or not.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if fd < 3 || flags < 0 {
        anyhow::bail!("{what} {fd} is not an open descriptor of ours (3 or above)");
    }
    // SAFETY: as above; F_SETFD only sets the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error()).context(what.to_owned());
    }
    taken.push(fd);
    // The descriptor is open (checked above) and was handed to this process for this option
    // alone (no other option took it: `TAKEN`); nothing else here knows its number (every
    // descriptor this process opens itself is a new one).
    // SAFETY: `fd` is open and no one else's (above): the `OwnedFd` is its only owner.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Whether a library failed to load for what its bytes are (not a shared library for this
/// machine at all by its ELF header, not an rfaas library, another ABI, a broken manifest),
/// which no retry on this node mends, rather than for this process's circumstances (the
/// dynamic loader's own failures on a file whose header is right, such as too little memory
/// for the library's segments under the lease's limit, or a missing dependency, and i/o
/// errors).
fn package_at_fault(e: &anyhow::Error) -> bool {
    use executor::{LoadError, PackageError};
    // `NotElf` is the package's fault: garbage kept in the cache would start a failing
    // executor at every lease of its hash.
    let load_at_fault =
        |l: &LoadError| !matches!(l, LoadError::Io { .. } | LoadError::NotALibrary { .. });
    e.chain().any(|c| {
        if let Some(l) = c.downcast_ref::<LoadError>() {
            return load_at_fault(l);
        }
        match c.downcast_ref::<PackageError>() {
            Some(PackageError::Load(l)) => load_at_fault(l),
            Some(PackageError::Io { .. }) | None => false,
            Some(_) => true,
        }
    })
}

/// `text` on one line: line breaks become "; ".
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Writes one report line (`ready ...`, `unloadable ...`, `failed ...`, `stats ...`). The reader may be gone
/// (a manager that already gave up on us): not an error.
fn report(line: &str) {
    let line = format!("{line}\n");
    let _ = match REPORT.get() {
        Some(mut f) => f.write_all(line.as_bytes()),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes()).and_then(|()| out.flush())
        }
    };
}

/// With `--once`, the session's accounting as the last report line (read by the manager).
fn print_stats(stats: Option<executor::worker::WorkerStats>) {
    let s = stats.unwrap_or_default();
    report(&format!(
        "stats {}",
        serde_json::json!({
            "invocations": s.invocations,
            "ok": s.ok,
            "hot_poll_us": s.hot_poll.as_micros() as u64,
            "exec_us": s.exec.as_micros() as u64,
            "warm_sleeps": s.warm_sleeps,
        })
    ));
}

fn run_tcp(
    lib: Arc<FunctionLibrary>,
    addr: &str,
    cfg: WorkerConfig,
    once: bool,
    fabric: NetFabric,
) -> Result<()> {
    #[cfg(feature = "verbs")]
    let verbs = match fabric {
        NetFabric::Verbs => {
            let config = rfaas::transport::verbs::VerbsConfig::from_env()?;
            let ctx = config.open().context("opening the RDMA device")?;
            tracing::info!(device = ctx.name(), port = ctx.port(), "serving over RDMA");
            Some((ctx, config))
        }
        NetFabric::Tcp => None,
    };
    #[cfg(not(feature = "verbs"))]
    if fabric == NetFabric::Verbs {
        anyhow::bail!(
            "this executor was built without RDMA support: rebuild with `--features verbs`"
        );
    }
    let listener = TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(library = %lib.path().display(), functions = lib.functions().len(), workers = cfg.workers, address = %local, ?fabric, "executor ready (tcp)");
    report(&format!("ready {local}"));
    serve_sessions(listener.incoming(), once, |stream, pending| {
        let established = move || drop(pending);
        #[cfg(feature = "verbs")]
        if let Some((ctx, config)) = &verbs {
            return executor::worker::serve_verbs_session(
                &lib,
                stream,
                &cfg,
                ctx,
                config,
                established,
            );
        }
        serve_tcp_session(&lib, stream, &cfg, established)
    })
}

/// Serves sessions on the Unix socket `socket`: `listener` when given (bound there by whoever
/// handed it over, who also removes it), else bound here (replacing a stale socket, nothing
/// else) and removed at the end.
fn run(
    lib: Arc<FunctionLibrary>,
    socket: &Path,
    listener: Option<UnixListener>,
    cfg: WorkerConfig,
    once: bool,
) -> Result<()> {
    let ours = listener.is_none();
    // Held for the executor's life: of two executors started on one path at once, only one
    // can find the old socket stale and replace it.
    let _lock = match ours {
        true => Some(lock_socket_path(socket)?),
        false => None,
    };
    let listener = match listener {
        Some(l) => l,
        None => {
            remove_stale_socket(socket)?;
            let listener = UnixListener::bind(socket)
                .with_context(|| format!("listening on {}", socket.display()))?;
            // Stopped by a signal (Ctrl-C, `kill`), it leaves no socket behind.
            executor::stop::unlink_on_signal(socket)
                .with_context(|| format!("arranging to remove {} at a signal", socket.display()))?;
            listener
        }
    };
    tracing::info!(library = %lib.path().display(), functions = lib.functions().len(), workers = cfg.workers, socket = %socket.display(), "executor ready");
    report(&format!("ready {}", socket.display()));
    serve_sessions(listener.incoming(), once, |stream, pending| {
        serve_session(&lib, stream, &cfg, move || drop(pending))
    })?;
    if ours {
        // Only the socket we bound: not a file put there since (a path is not an identity).
        executor::stop::unlink_now();
    }
    Ok(())
}

/// Takes the lock beside `socket` (`SOCKET.lock`, left in place), waiting up to a second for
/// an executor that is starting there to bind (it then serves, and the socket is in use).
fn lock_socket_path(socket: &Path) -> Result<std::fs::File> {
    executor::lock_beside(socket, std::time::Duration::from_secs(1)).map_err(|(lock, e)| match e {
        Some(e) => anyhow::Error::new(e).context(format!(
            "cannot open {} (the lock beside the socket)",
            lock.display()
        )),
        None => anyhow::anyhow!(
            "another executor holds {} (it serves on {}, or is starting there): stop it, or \
             choose another --socket path (`fuser -v {}` names the process)",
            lock.display(),
            socket.display(),
            lock.display()
        ),
    })
}

/// Makes way for our socket at `socket`: removes a socket file nobody listens on any more (an
/// executor that was killed). Anything else there is an error: a file that is not a socket (a
/// mistyped path must not cost a file), or a socket another process serves on.
fn remove_stale_socket(socket: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let found = match std::fs::symlink_metadata(socket) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("looking at {}", socket.display())),
    };
    if !found.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket: not replacing it (choose another --socket path)",
            socket.display()
        );
    }
    // Bounded: a listener that does not accept (stopped, its backlog full) is in use too.
    match rfaas::sys::unix_connect_timeout(socket, std::time::Duration::from_secs(1)) {
        Ok(_) => bail!(
            "another process is listening on {} (an executor serving there?): stop it, or \
             choose another --socket path",
            socket.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => bail!(
            "a process listens on {} but does not accept (stopped?): stop it, or choose \
             another --socket path",
            socket.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(socket) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e)
                    .with_context(|| format!("removing the stale socket {}", socket.display())),
                _ => Ok(()),
            }
        }
        // Gone since we looked: nothing to replace.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot tell whether {} is in use; remove it if it is stale",
                socket.display()
            )
        }),
    }
}

fn package(library: &Path, name: Option<&str>, out: &Path) -> Result<()> {
    let name = match name {
        Some(n) => n.to_owned(),
        None => library
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.strip_prefix("lib").unwrap_or(n))
            .map(|n| n.strip_suffix(".so").unwrap_or(n).to_owned())
            .filter(|n| !n.is_empty())
            .with_context(|| format!("{}: give the package a --name", library.display()))?,
    };
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        bail!("package name {name:?}: a name (not empty, not a path, not starting with a dot)");
    }
    let (package, dir) = Package::create(&name, library, out)
        .with_context(|| format!("packaging {}", library.display()))?;
    println!("{}", dir.display());
    eprintln!(
        "{} function(s) in {}; serve them with `rfaas-executor run --library {}`",
        package.functions.len(),
        package.library,
        dir.display()
    );
    Ok(())
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
    println!(
        "panics:    {}",
        match lib.unwinds() {
            Some(true) => "caught (panic = \"unwind\"): a panicking function answers `Panic`",
            Some(false) => {
                "abort (panic = \"abort\"): a panicking function ends the executor process"
            }
            None => "not stated by the library (not built with rfaas)",
        }
    );
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
