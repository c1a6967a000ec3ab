//! The per-node executor manager (`rfaas-executor manager`): accepts lease requests on a TCP
//! control address, caches function packages by SHA-256, checks capacity, spawns one executor
//! process per lease (the cold start), hands back where to connect, and reclaims the lease
//! when the client's control connection closes. Each finished lease is appended to a ledger
//! (JSON lines, fsync'd). User code never runs in this process.
//!
//! With a `secret_file`, every control connection authenticates with the cluster's shared
//! secret before its request is read ([`rfaas::auth`]); per-lease limits bound what one lease
//! may ask for (cores, slots, slot size, invocations in flight).

use crate::cgroups::{Cgroups, LeaseCgroup};
use crate::conn::{Deadlined, Pending};
use crate::cpus::{CpuPool, Pinning};
use crate::users::{LeaseUser, Scratch, UidRange, UserPool};
use crate::worker::{HotTimeout, WorkerConfig};
use rfaas::auth::{Accepted, AuthError, Channel, Secret};
use rfaas::registry::RegistryClient;
use rfaas::transport::send_json;
use rfaas::wire::{AuthService, Fabric, LeaseNotice, LeaseReply, LeaseRequest, NodeInfo};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Manager configuration (TOML). Every field has a default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagerConfig {
    /// TCP control address. Default `127.0.0.1:7800`.
    pub listen: String,
    /// This node's id in the registry. Default `node`.
    pub node_id: String,
    /// Cores offered to leases. Default: the CPUs this process may use.
    pub cores: u32,
    /// Memory offered to leases, MiB. Default 4096.
    pub memory_mib: u64,
    /// Registry address to register with and heartbeat to; none: standalone.
    pub registry: Option<String>,
    /// The host name or IP address (no port: the listener's is used) that clients elsewhere
    /// reach this manager at, as registered with the registry. Default: the listen address's,
    /// which must then be a specific one (a manager listening on `0.0.0.0` or `::` with a
    /// registry and no `advertise` is refused at start: clients would connect to themselves).
    pub advertise: Option<String>,
    /// Heartbeat period, ms. Default 1000.
    pub heartbeat_ms: u64,
    /// Where packages are cached by SHA-256. Default `rfaas-cache`.
    pub cache_dir: PathBuf,
    /// The ledger (JSON lines). Default `rfaas-ledger.jsonl`.
    pub ledger: PathBuf,
    /// Largest package accepted, bytes. Default 256 MiB.
    pub max_package_bytes: u64,
    /// Most bytes of packages kept in `cache_dir`: after a new package is cached, the least
    /// recently leased ones go until the cache fits (those leased in the last 10 minutes only
    /// if it cannot fit without them; never the one just cached). At least
    /// `max_package_bytes`. Default 4 GiB.
    pub max_cache_bytes: u64,
    /// Directory for the Unix sockets and stats files of executors, private to the manager's
    /// user: created (mode 0700) if missing, refused at start if another user owns it or
    /// others may write to it (in a shared `/tmp`, anyone could plant the next lease's file).
    /// Default `rfaas-sockets`.
    pub socket_dir: PathBuf,
    /// The executor binary. Default: this binary.
    pub executor: Option<PathBuf>,
    /// The cluster's shared secret (a file only its owner may read, at least 16 bytes): clients
    /// must authenticate with it, and the manager authenticates with it to the registry.
    /// Default: none, an open control plane (a warning at start).
    pub secret_file: Option<PathBuf>,
    /// Most cores one lease may have. Default: none of its own (the node's free cores bound
    /// a lease, refused as "not enough capacity").
    pub max_cores_per_lease: Option<u32>,
    /// Most input slots per worker (invocations in flight on one leased core), 1 to 256.
    /// Default 64.
    pub max_slots_per_worker: u32,
    /// Largest slot, bytes (header included: it bounds one invocation's input and its output).
    /// Default 16 MiB.
    pub max_slot_size: u32,
    /// Most invocations in flight per lease (cores × slots per worker). Default 1024.
    pub max_outstanding_per_lease: u32,
    /// How long a lease's executor may take to start (load the library, run its
    /// constructors, listen) before it is killed and the lease refused, ms. Default 30000.
    pub executor_start_timeout_ms: u64,
    /// How long a client has to send its request (authentication included), from connecting,
    /// ms; a package upload gets this plus a second per MiB. Default 10000.
    pub request_timeout_ms: u64,
    /// User ids to run lease executors as, `"FIRST-LAST"` (such as `"61000-61063"`): each
    /// running lease gets one no other running lease has (and the group of the same number),
    /// so that its functions cannot signal other leases' processes, read or write their files
    /// or the manager's (the package cache, the ledger); what they leave running is killed by
    /// its user id at the lease's end. Needs a manager running as root; the ids must be
    /// reserved for rfaas (the lease's end kills every process of its user; an id that has
    /// processes is never handed out). At most as many leases at once as ids. Default: none,
    /// executors run as the manager's user.
    pub executor_uids: Option<String>,
    /// Whether each lease runs in a cgroup of its own (`crate::cgroups`), under the cgroup
    /// the manager runs in: held to the lease's memory (shared memory and memory files
    /// included), its cores (the `cpuset` is its pinned CPUs) and a number of tasks, and killed
    /// whole at the lease's end, wherever its processes moved. Needs cgroup v2 with the
    /// `memory`, `pids` and `cpuset` controllers delegated to the manager's cgroup, or cgroup
    /// v1 with those and `freezer`, and the permission to make cgroups there (root, or a
    /// delegated subtree); a manager that cannot is refused at start, saying why. Default
    /// false.
    pub cgroups: bool,
    /// How long a manager that is asked to stop (SIGTERM or SIGINT) lets its running leases
    /// go on, ms. It takes no new leases from the signal on and leaves the registry; leases
    /// whose clients end them meanwhile are recorded as usual; those still running after this
    /// long (or at a second signal) are ended by the manager: their executors are killed, and
    /// their ledger entries say so (`ended_by_manager`). 0: end them at once. Default 30000.
    pub shutdown_grace_ms: u64,
}

/// Slots per worker of a lease that does not say (capped by the limits).
pub const DEFAULT_SLOTS: u32 = 8;
/// Bytes per slot of a lease that does not say (capped by the limits).
pub const DEFAULT_SLOT_SIZE: u32 = 1 << 20;
/// The smallest slot an executor accepts: the invocation header and 64 bytes, a multiple of 64.
pub const MIN_SLOT_SIZE: u32 = (rfaas::wire::HEADER_LEN as u32 + 64).next_multiple_of(64);

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            listen: "127.0.0.1:7800".into(),
            node_id: "node".into(),
            cores: rfaas::sys::allowed_cpus().len() as u32,
            memory_mib: 4096,
            registry: None,
            advertise: None,
            heartbeat_ms: 1000,
            cache_dir: "rfaas-cache".into(),
            ledger: "rfaas-ledger.jsonl".into(),
            max_package_bytes: 256 << 20,
            max_cache_bytes: 4 << 30,
            socket_dir: "rfaas-sockets".into(),
            executor: None,
            secret_file: None,
            max_cores_per_lease: None,
            max_slots_per_worker: 64,
            max_slot_size: 16 << 20,
            max_outstanding_per_lease: 1024,
            executor_start_timeout_ms: 30_000,
            request_timeout_ms: 10_000,
            executor_uids: None,
            cgroups: false,
            shutdown_grace_ms: 30_000,
        }
    }
}

impl ManagerConfig {
    /// Reads a TOML file (unknown keys are errors).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cfg: ManagerConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if cfg.cores == 0
            || cfg.heartbeat_ms == 0
            || cfg.executor_start_timeout_ms == 0
            || cfg.request_timeout_ms == 0
        {
            return Err(format!(
                "{}: cores, heartbeat_ms, executor_start_timeout_ms and request_timeout_ms must be positive",
                path.display()
            ));
        }
        cfg.check_limits()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    /// Checks that the per-lease limits can be met by some lease.
    pub fn check_limits(&self) -> Result<(), String> {
        let ring = rfaas::transport::shm::RING_CAPACITY;
        if self.max_cores_per_lease == Some(0) || self.max_outstanding_per_lease == 0 {
            return Err(
                "max_cores_per_lease and max_outstanding_per_lease must be positive".into(),
            );
        }
        if self.max_cache_bytes < self.max_package_bytes {
            return Err("max_cache_bytes must be at least max_package_bytes".into());
        }
        if !(1..=ring).contains(&self.max_slots_per_worker) {
            return Err(format!("max_slots_per_worker must be 1 to {ring}"));
        }
        if self.max_slot_size < MIN_SLOT_SIZE {
            return Err(format!(
                "max_slot_size must be at least {MIN_SLOT_SIZE} bytes"
            ));
        }
        self.executor_users()?;
        // Settings no lease could use: refused now rather than found out lease by lease.
        let least = min_lease_memory_mib(1, Fabric::Tcp, MIN_SLOT_SIZE);
        if self.memory_mib < least {
            return Err(format!(
                "memory_mib = {}: no lease fits (the smallest needs {least} MiB)",
                self.memory_mib
            ));
        }
        if let Some(registry) = &self.registry {
            let port = registry
                .rsplit_once(':')
                .map(|(host, port)| (host.trim_start_matches('[').trim_end_matches(']'), port));
            if !port.is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()) {
                return Err(format!("registry = {registry:?}: give host:port"));
            }
        }
        Ok(())
    }

    /// The `executor_uids` range, checked; none without one.
    pub fn executor_users(&self) -> Result<Option<UidRange>, String> {
        self.executor_uids.as_deref().map(str::parse).transpose()
    }

    /// Checks a request's shape against this node's per-lease limits (and the executor's
    /// own), and fills in what it left out: `(slots per worker, slot size)`. A request without
    /// slots or slot size gets [`DEFAULT_SLOTS`] and [`DEFAULT_SLOT_SIZE`], capped by the
    /// limits. Refusals name the limit (its configuration key).
    pub fn lease_geometry(&self, req: &LeaseRequest) -> Result<(u32, u32), String> {
        if req.cores == 0 || req.hot_timeout_us < -1 {
            return Err(
                "a lease needs at least one core and a hot timeout of -1, 0 or more".into(),
            );
        }
        if let Some(max_cores) = self.max_cores_per_lease
            && req.cores > max_cores
        {
            return Err(format!(
                "asked for {} cores; this node leases at most {max_cores} cores at once (max_cores_per_lease)",
                req.cores
            ));
        }
        let slots = match req.slots {
            Some(0) => return Err("a lease needs at least one slot per worker".into()),
            Some(n) if n > self.max_slots_per_worker => {
                return Err(format!(
                    "asked for {n} slots per worker; this node allows at most {} (max_slots_per_worker)",
                    self.max_slots_per_worker
                ));
            }
            Some(n) => n,
            None => DEFAULT_SLOTS
                .min(self.max_slots_per_worker)
                .min(self.max_outstanding_per_lease / req.cores)
                .max(1),
        };
        let slot_size = match req.slot_size {
            Some(n) if n > self.max_slot_size => {
                return Err(format!(
                    "asked for slots of {n} bytes; this node allows at most {} (max_slot_size)",
                    self.max_slot_size
                ));
            }
            Some(n) if n < MIN_SLOT_SIZE || !n.is_multiple_of(64) => {
                return Err(format!(
                    "slot size {n}: a multiple of 64, at least {MIN_SLOT_SIZE} bytes"
                ));
            }
            Some(n) => n,
            None => DEFAULT_SLOT_SIZE.min(self.max_slot_size / 64 * 64),
        };
        let outstanding = u64::from(req.cores) * u64::from(slots);
        if outstanding > u64::from(self.max_outstanding_per_lease) {
            return Err(format!(
                "{} cores x {slots} slots = {outstanding} invocations in flight; this node allows at most {} per lease (max_outstanding_per_lease)",
                req.cores, self.max_outstanding_per_lease
            ));
        }
        // The executor's own limits (workers, ring capacity, 4 GiB of slots), refused here,
        // before any package is shipped, rather than by an executor that fails to start.
        WorkerConfig {
            workers: req.cores,
            cpus: CpuPool::new(Vec::new()),
            slots,
            slot_size,
            hot_timeout: HotTimeout::from_micros(req.hot_timeout_us)?,
            token: None,
        }
        .validate()?;
        Ok((slots, slot_size))
    }
}

/// One finished lease, as appended to the ledger. Readers ignore fields they do not know:
/// a ledger a newer manager wrote (with fields added since, as `cpu_us` and
/// `ended_by_manager` were) still reads, and is still counted, with older tools.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The lease.
    pub lease_id: u64,
    /// The node.
    pub node_id: String,
    /// Package SHA-256.
    pub package_sha256: String,
    /// Cores leased.
    pub cores: u32,
    /// Memory reserved, MiB.
    pub memory_mib: u64,
    /// Fabric.
    pub fabric: Fabric,
    /// Start, ms since the Unix epoch.
    pub started_ms: u64,
    /// Allocation time (lease held), ms.
    pub allocated_ms: u64,
    /// Time the workers spent busy-polling, µs.
    pub hot_poll_us: u64,
    /// Time the workers spent running functions, µs.
    pub exec_us: u64,
    /// Invocations answered.
    pub invocations: u64,
    /// How the executor ended if it did so before the lease (e.g. `signal: 6 (SIGABRT)` for a
    /// function that allocated beyond the lease's memory); absent for leases the client ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_exit: Option<String>,
    /// CPU time (user and system) of all the lease's processes, µs, as its cgroup counts it
    /// (`cgroups = true`): what its functions started too. Absent without a cgroup (or where
    /// the kernel does not count it: cgroup v1 without a `cpuacct` hierarchy of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us: Option<u64>,
    /// The most memory the lease's processes had in use at once, bytes, as its cgroup counts
    /// it (memory files and the data plane's regions included). Absent without a cgroup, or
    /// before Linux 5.19 under cgroup v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<u64>,
    /// Why the manager ended the lease while its client still held it: [`ENDED_AT_SHUTDOWN`]
    /// (it was asked to stop, and the lease outlasted `shutdown_grace_ms`) or
    /// [`ENDED_SILENT`]. Absent for leases their client (or their executor) ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by_manager: Option<String>,
    /// The executor ended without its closing report (it crashed, or was stopped after the
    /// manager's grace), so `invocations` comes from the record it kept current and the times
    /// are not known: `hot_poll_us` and `exec_us` are 0 and mean nothing. Absent (false)
    /// otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub times_unknown: bool,
}

/// Reads every entry of a ledger file.
pub fn read_ledger(path: &Path) -> Result<Vec<LedgerEntry>, String> {
    read_ledger_lines(path)?.into_iter().collect()
}

/// Each entry of a ledger, or what is wrong with its line: a damaged line (torn by a full disk
/// or a crash mid-write) does not hide the entries around it.
pub fn read_ledger_lines(path: &Path) -> Result<Vec<Result<LedgerEntry, String>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.trim_ascii().is_empty())
        .map(|(i, l)| {
            serde_json::from_slice(l).map_err(|e| {
                // serde's own position is within the line (always its line 1): the column.
                let text = e.to_string();
                let what = text.rsplit_once(" at line ").map_or(&text[..], |(w, _)| w);
                format!(
                    "{}: line {}, column {}: {what}",
                    path.display(),
                    i + 1,
                    e.column()
                )
            })
        })
        .collect())
}

/// Appends `lines` (whole lines, each ending in a newline) to the ledger at `path`, and syncs
/// them. A last line left without its newline (torn) is ended first, so the new entries start
/// a line of their own; but if that torn line is the first of `lines` short of its newline (a
/// write cut short just before it, whose truncation failed too), that entry is not written
/// again, so that none is counted twice. A write that fails is cut off again (truncated to where
/// it began), so that readers see it whole or not at all. A failed sync after a whole write is
/// logged with what was written, not returned: returned, the lines would be written again.
fn append_line(path: &Path, lines: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    use std::os::unix::fs::OpenOptionsExt;
    // Only the manager's: it names every lease's package and times.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let len = f.metadata()?.len();
    let mut last = [b'\n'];
    if len > 0 {
        f.read_exact_at(&mut last, len - 1)?;
    }
    // On a failed write the file is put back as it was (the torn line's newline included).
    let start = len;
    let mut lines = lines;
    if last[0] != b'\n' {
        // The torn last line: if it is the first of `lines` short of its newline, that entry
        // is in already (a write cut short just before its newline that could not be cut
        // off); end its line and write the rest.
        let first = lines
            .iter()
            .position(|&b| b == b'\n')
            .map_or(lines, |end| &lines[..end]);
        let n = first.len() as u64;
        let mut tail = vec![0u8; first.len()];
        let mut before = [b'\n'];
        let same = len >= n
            && f.read_exact_at(&mut tail, len - n).is_ok()
            && tail == first
            && (len == n || f.read_exact_at(&mut before, len - n - 1).is_ok())
            && before[0] == b'\n';
        f.write_all(b"\n")?;
        if same {
            lines = lines.get(first.len() + 1..).unwrap_or_default();
            if lines.is_empty() {
                return sync_written(&f, path, first);
            }
        }
    }
    if let Err(e) = f.write_all(lines) {
        // Cut off what part of it went in (truncating frees space: it works on a full disk),
        // and the newline that ended a torn line, which the next append writes again.
        if let Err(t) = f.set_len(start) {
            tracing::error!(error = %t, ledger = %path.display(), "cannot cut off a ledger write that failed: the next append ends its line");
        }
        return Err(e);
    }
    sync_written(&f, path, lines)
}

/// Syncs the ledger `f` after `lines` were written to it; a failure is logged with them.
fn sync_written(f: &std::fs::File, path: &Path, lines: &[u8]) -> std::io::Result<()> {
    if let Err(e) = f.sync_all() {
        tracing::error!(
            error = %e,
            ledger = %path.display(),
            entries = %String::from_utf8_lossy(lines).trim_end(),
            "ledger entries written but not synced: they may be lost"
        );
    }
    Ok(())
}

struct Capacity {
    free_cores: u32,
    free_memory_mib: u64,
}

struct Manager {
    cfg: ManagerConfig,
    /// The ledger's lock (`<ledger>.lock`), held for the manager's life.
    _ledger_lock: std::fs::File,
    /// The shared secret clients authenticate with; none: an open control plane.
    secret: Option<Secret>,
    /// Whether leases may use RDMA, or why not.
    rdma: Result<(), String>,
    exe: PathBuf,
    /// With `executor_uids`: the executor binary, open, run through `/proc/self/fd` so that
    /// its users need no permission on the directories it lies in (a build tree in `/root`).
    exe_file: Option<std::fs::File>,
    /// With `executor_uids`: whether executors get scratch directories of their own
    /// ([`Scratch`]; it takes the privilege to mount).
    scratch: bool,
    capacity: Mutex<Capacity>,
    /// The node's CPUs, shared out among the leases' workers.
    cpus: Arc<CpuPool>,
    next_id: AtomicU64,
    /// End of the block of lease ids recorded on disk ([`reserve_lease_ids`]).
    reserved_ids: Mutex<u64>,
    /// Ledger lines not yet written (the ledger could not be appended to: a full disk, an
    /// i/o error), oldest first; written before the next entry. Held while appending.
    ledger: Mutex<std::collections::VecDeque<Vec<u8>>>,
    /// Held while the package cache is trimmed (one trim at a time).
    trimming: Mutex<()>,
    /// Package uploads in progress (at most [`MAX_UPLOADS`]).
    uploads: crate::conn::Bounded,
    /// The users executors run as (`executor_uids`); none: the manager's.
    users: Option<UserPool>,
    /// Where leases' cgroups go (`cgroups`); none: no cgroups.
    cgroups: Option<Cgroups>,
    /// [`SERVING`], [`DRAINING`] or [`ENDING`].
    phase: std::sync::atomic::AtomicU8,
    /// The control connections open now (a copy of each), shut down when the manager ends its
    /// leases.
    conns: Mutex<Conns>,
    /// Output relays running ([`relay_output`]), waited for before the manager exits.
    relays: Arc<AtomicUsize>,
    /// When a manager asked to stop ends the leases still running (set as the stop begins).
    ending_at: std::sync::OnceLock<Instant>,
}

/// The manager takes new leases.
const SERVING: u8 = 0;
/// The manager was asked to stop: no new leases; running ones go on for the grace period.
const DRAINING: u8 = 1;
/// The manager ends every lease: each control connection is shut down (and no new one
/// served), which ends its lease.
const ENDING: u8 = 2;

/// Why a manager that stops ends a lease, in its ledger entry.
pub const ENDED_AT_SHUTDOWN: &str = "the manager stopped";
/// Why a lease whose client went silent is ended, in its ledger entry.
pub const ENDED_SILENT: &str = "the client was silent past its heartbeats";

#[derive(Default)]
struct Conns {
    next: u64,
    open: std::collections::BTreeMap<u64, TcpStream>,
}

/// A control connection the manager keeps track of while it is served.
struct Tracked<'m> {
    mgr: &'m Manager,
    id: u64,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        let mut conns = self.mgr.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.open.remove(&self.id);
    }
}

/// The address registered for clients elsewhere: `advertise` with the listener's port, or the
/// listener's address, refused if it is a wildcard and a registry is configured.
fn advertised_address(cfg: &ManagerConfig, bound: std::net::SocketAddr) -> Result<String, String> {
    match &cfg.advertise {
        Some(host) => {
            let bad = |why: &str| {
                Err(format!(
                    "advertise = {host:?}: {why} (the listener's port, {}, is used)",
                    bound.port()
                ))
            };
            match host.parse::<std::net::IpAddr>() {
                Ok(ip) if ip.is_unspecified() => {
                    bad("clients cannot connect to a wildcard address")
                }
                Ok(ip) => Ok(std::net::SocketAddr::new(ip, bound.port()).to_string()),
                Err(_)
                    if host.is_empty()
                        || host.len() > 253
                        || host.contains(|c: char| c == ':' || c == '/' || c.is_whitespace()) =>
                {
                    bad("a host name or an IP address, without a port")
                }
                Err(_) => Ok(format!("{host}:{}", bound.port())),
            }
        }
        None if cfg.registry.is_some() && bound.ip().is_unspecified() => Err(format!(
            "listen = {:?} is a wildcard address: set `advertise` to the host name or address clients reach this node at, for the registry",
            cfg.listen
        )),
        None => Ok(bound.to_string()),
    }
}

/// Runs the manager; calls `ready` with the bound address. Blocks SIGTERM and SIGINT in the
/// calling thread first (call it before starting any other thread): at either, the manager
/// stops ([`ManagerConfig::shutdown_grace_ms`]) and ends the process (status 0).
pub fn serve(
    mut cfg: ManagerConfig,
    ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), String> {
    // Before any thread is started, so that all of them leave SIGTERM and SIGINT to the one
    // that stops the manager.
    let signals = crate::stop::TermSignals::block()
        .map_err(|e| format!("blocking SIGTERM and SIGINT: {e}"))?;
    cfg.check_limits()?;
    let secret = cfg
        .secret_file
        .as_deref()
        .map(Secret::from_file)
        .transpose()
        .map_err(|e| e.to_string())?;
    let users = cfg.executor_users()?;
    if let Some(range) = users {
        // SAFETY: geteuid and getuid have no preconditions and cannot fail.
        let (euid, uid) = unsafe { (libc::geteuid(), libc::getuid()) };
        crate::users::check_manager(range, euid, uid)?;
        let accounts = crate::users::accounts_in(range);
        if !accounts.is_empty() {
            return Err(format!(
                "executor_uids = \"{range}\" takes in accounts of this host ({}): give it ids no \
                 account uses (a lease's end kills every process of its id)",
                accounts.join(", ")
            ));
        }
        use crate::users::{CAP_SETGID, CAP_SETUID, CAP_SYS_RESOURCE, has_capability};
        if !has_capability(CAP_SETUID) || !has_capability(CAP_SETGID) {
            return Err(format!(
                "executor_uids = \"{range}\" needs CAP_SETUID and CAP_SETGID, which this manager does not have"
            ));
        }
        if let (false, Some(ceiling)) = (
            has_capability(CAP_SYS_RESOURCE),
            crate::users::memlock_ceiling(),
        ) {
            tracing::warn!(
                memlock_kib = ceiling >> 10,
                "without CAP_SYS_RESOURCE, executors under executor_uids get at most this manager's locked-memory limit: RDMA leases whose regions exceed it fail to start (raise the manager's `ulimit -l`, or give it CAP_SYS_RESOURCE)"
            );
        }
    }
    // Anyone who could write here could plant the next lease's library.
    private_dir(&cfg.cache_dir)
        .map_err(|e| format!("cache_dir {}: {e}", cfg.cache_dir.display()))?;
    if users.is_some() {
        // Root writes the ledger and the record of executor users beside it: in a directory
        // others may write to, a planted link could send those writes anywhere.
        let ledger_dir = cfg
            .ledger
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        private_dir(ledger_dir)
            .map_err(|e| format!("the ledger's directory {}: {e}", ledger_dir.display()))?;
        // The ledger names every lease's package and times: only ours (made so when created;
        // an older one may be readable by all).
        if cfg.ledger.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&cfg.ledger, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("ledger {}: {e}", cfg.ledger.display()))?;
        }
        // Executors under other users load their package through a descriptor we pass them;
        // by its path, one lease's functions could read every other tenant's package.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.cache_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cache_dir {}: {e}", cfg.cache_dir.display()))?;
    }
    private_dir(&cfg.socket_dir)
        .map_err(|e| format!("socket_dir {}: {e}", cfg.socket_dir.display()))?;
    // Granted socket paths must mean the same to clients started elsewhere.
    cfg.socket_dir = std::fs::canonicalize(&cfg.socket_dir)
        .map_err(|e| format!("socket_dir {}: {e}", cfg.socket_dir.display()))?;
    // A socket's path must fit `sockaddr_un` (107 bytes and a NUL): the directory, then
    // `/rfaas-<pid>-lease-<id>.sock`, 36 bytes with ids of up to 10 digits (each lease's own
    // path is checked again before its executor starts).
    let typical = cfg.socket_dir.as_os_str().len() + 36;
    if typical > MAX_SOCKET_PATH {
        return Err(format!(
            "socket_dir {}: too long for Unix socket paths ({typical} of {MAX_SOCKET_PATH} bytes); choose a shorter directory",
            cfg.socket_dir.display()
        ));
    }
    // One manager per ledger: two would give the same lease ids (each reserves its own).
    let ledger_lock = lock_ledger(&cfg.ledger)?;
    let cpus = rfaas::sys::allowed_cpus();
    if cfg.cores as usize > cpus.len() {
        tracing::warn!(
            cores = cfg.cores,
            cpus = cpus.len(),
            "cores is more than the CPUs this manager may use: leases' workers will share CPUs, and busy-polling ones slow each other down"
        );
    }
    remove_stale_sockets(&cfg.socket_dir);
    remove_stale_uploads(&cfg.cache_dir);
    let exe = match &cfg.executor {
        Some(p) => p.clone(),
        None => {
            std::env::current_exe().map_err(|e| format!("locating the executor binary: {e}"))?
        }
    };
    let listener =
        TcpListener::bind(&cfg.listen).map_err(|e| format!("listening on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let advertised = advertised_address(&cfg, addr)?;
    let mgr = Arc::new(Manager {
        capacity: Mutex::new(Capacity {
            free_cores: cfg.cores,
            free_memory_mib: cfg.memory_mib,
        }),
        cpus: CpuPool::new(cpus),
        _ledger_lock: ledger_lock,
        next_id: AtomicU64::new(first_lease_id(&cfg.ledger)),
        reserved_ids: Mutex::new(0),
        ledger: Mutex::new(std::collections::VecDeque::new()),
        trimming: Mutex::new(()),
        uploads: crate::conn::Bounded::new(MAX_UPLOADS),
        users: users
            .map(|range| UserPool::new(range, Some(users_record_file(&cfg.ledger))))
            .transpose()?,
        rdma: rdma_support(),
        cgroups: cfg
            .cgroups
            .then(Cgroups::open)
            .transpose()
            .map_err(|e| format!("cgroups = true: {e}"))?,
        scratch: users.is_some()
            && Scratch::available()
                .inspect_err(|why| {
                    tracing::warn!(
                        %why,
                        "executors under executor_uids share the node's /tmp, /var/tmp and /dev/shm (no mount namespaces of their own here): what one lease leaves there, the next lease of its user id can read"
                    )
                })
                .is_ok(),
        exe_file: users
            .map(|_| std::fs::File::open(&exe))
            .transpose()
            .map_err(|e| format!("opening the executor binary {}: {e}", exe.display()))?,
        exe,
        cfg,
        secret,
        phase: std::sync::atomic::AtomicU8::new(SERVING),
        conns: Mutex::new(Conns::default()),
        relays: Arc::default(),
        ending_at: std::sync::OnceLock::new(),
    });
    match &mgr.secret {
        Some(_) => tracing::info!("control plane authenticated with the shared secret"),
        None => tracing::warn!(
            address = %addr,
            "no secret_file configured: the control plane is unauthenticated; anyone who can reach this address can lease cores and run code on this node"
        ),
    }
    if let Some(c) = &mgr.cgroups {
        tracing::info!(cgroups = %c.describe(), "each lease in a cgroup of its own");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if mgr.cfg.executor_uids.is_none() && unsafe { libc::geteuid() } == 0 {
        tracing::warn!(
            "running as root without executor_uids: every lease's functions run as root too; give executor_uids a range of unused ids (docs/control-plane.md) so that each lease runs as a user of its own"
        );
    }
    match &mgr.rdma {
        Ok(()) => tracing::info!("RDMA leases offered"),
        Err(why) => tracing::info!(%why, "no RDMA leases"),
    }
    let heartbeats = if let Some(reg) = mgr.cfg.registry.clone() {
        let mut client = RegistryClient::new(reg);
        if let Some(s) = &mgr.secret {
            client = client.with_secret(s.clone());
        }
        let (mgr, node) = (
            Arc::downgrade(&mgr),
            NodeInfo {
                id: mgr.cfg.node_id.clone(),
                address: advertised,
                cores: mgr.cfg.cores,
                memory_mib: mgr.cfg.memory_mib,
                rdma: mgr.rdma.is_ok(),
            },
        );
        Some(std::thread::spawn(move || heartbeat(&client, &node, &mgr)))
    } else {
        None
    };
    {
        let mgr = mgr.clone();
        std::thread::Builder::new()
            .name("rfaas-stop".into())
            .spawn(move || mgr.stop_on_signal(&signals, heartbeats))
            .map_err(|e| format!("starting the thread that stops the manager: {e}"))?;
    }
    tracing::info!(address = %addr, cores = mgr.cfg.cores, "manager ready");
    ready(addr);
    let serving = mgr.clone();
    crate::conn::accept_loop(
        &listener,
        "rfaas-lease",
        crate::conn::PendingLimit::new(crate::conn::MAX_PENDING),
        move |stream, pending| serving.serve_client(stream, pending),
    );
    Ok(())
}

/// Waits at most `d` for SIGTERM or SIGINT (the whole `d` if waiting fails, never a spin).
fn wait_a_while(signals: &crate::stop::TermSignals, d: Duration) -> Option<libc::c_int> {
    signals.wait(Some(d)).unwrap_or_else(|_| {
        std::thread::sleep(d);
        None
    })
}

/// How often ledger entries kept for want of a writable ledger are tried again, when no
/// lease's end does it first.
const LEDGER_RETRY: Duration = Duration::from_secs(2);

/// Most ledger entries kept while the ledger cannot be written (about 300 bytes each).
const MAX_PENDING_ENTRIES: usize = 100_000;

/// Why a lease is refused when the ids ran out: only a damaged ids file or ledger (an id
/// near 2^64) gets there.
const EXHAUSTED: &str =
    "lease ids are exhausted: the ledger or its ids file records an id near 2^64 (damaged?)";

/// Lease ids are reserved on disk in blocks of this many (one fsync per block).
const LEASE_ID_BLOCK: u64 = 1024;

/// Where a manager with `executor_uids` records the ids that are its to sweep (`<ledger>.users`).
fn users_record_file(ledger: &Path) -> PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push(".users");
    PathBuf::from(name)
}

/// The file recording the end of the block of lease ids reserved so far, beside the ledger.
fn lease_ids_file(ledger: &Path) -> PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push(".ids");
    PathBuf::from(name)
}

/// Lease ids continue after the ledger's last entry and after the last reserved block, so they
/// stay unique across restarts, also for leases that were running when the manager died
/// (they have no ledger entry).
fn first_lease_id(ledger: &Path) -> u64 {
    let after_ledger = read_ledger_lines(ledger)
        .ok()
        .and_then(|e| e.iter().flatten().map(|x| x.lease_id).max())
        .map_or(1, |m| m.saturating_add(1));
    let reserved = std::fs::read_to_string(lease_ids_file(ledger))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    after_ledger.max(reserved).max(1)
}

/// Records durably that ids below `end` may be in use (written aside, fsynced, renamed).
fn reserve_lease_ids(ledger: &Path, end: u64) -> std::io::Result<()> {
    let path = lease_ids_file(ledger);
    let tmp = crate::aside_path(&path);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{end}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    // The rename itself must survive a crash, or a restart could give these ids again.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// Makes sure `dir` exists (created with mode 0700), belongs to us, and nobody else may write
/// to it.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| e.to_string())?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    if meta.uid() != me {
        return Err(format!(
            "owned by user {}, not by this manager's user {me}",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "others may write to it (mode {:o}): another user could plant the files of our \
             leases; use a directory only this user may write to",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// The longest path a Unix socket may have (`sockaddr_un`'s 108 bytes, less the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Packages leased this recently are evicted from the cache only when it cannot fit otherwise.
const CACHE_RECENT: Duration = Duration::from_secs(600);

/// Sets `path`'s modification time to now (the cache's record of its last lease); whether the
/// file is there.
fn touch(path: &Path) -> bool {
    std::fs::File::options()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .is_ok()
}

/// Removes the least recently modified packages (`*.so`) of the cache `dir` until their sizes
/// add up to at most `max_bytes`, sparing `keep`; returns what it removed. Those modified
/// within `recent` are spared while removing the others is enough; if it is not, they go too,
/// least recently modified first, so that `max_bytes` bounds the cache whatever is uploaded
/// (`keep` alone fits: it is at most `max_package_bytes`).
///
/// Removing a package in use ends no lease. An executor that has a removed library loaded
/// keeps its mapping; one still starting loads the descriptor its manager opened, under the
/// trimming lock (which the caller holds) and before starting it, so the file's removal does
/// not reach it (`lease`: `touch` and `File::open` in one hold of the lock; only without
/// `/proc` does an executor load by path, and then a start racing a removal is refused as a
/// failed load). A request whose package goes before that hold finds it gone there and is
/// asked for the package again (`NeedPackage`).
fn trim_cache(dir: &Path, max_bytes: u64, keep: &Path, recent: Duration) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut packages: Vec<(SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "so"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    let mut total: u64 = packages.iter().map(|p| p.1).sum();
    packages.sort();
    let now = SystemTime::now();
    let fresh = |modified: SystemTime| {
        now.duration_since(modified)
            .map_or(true, |age| age < recent)
    };
    let mut removed = Vec::new();
    // The packages not leased recently first; the recent ones only if the cache still does not
    // fit without them.
    for recent_pass in [false, true] {
        for (modified, len, path) in &packages {
            if total <= max_bytes {
                return removed;
            }
            if *path == keep || fresh(*modified) != recent_pass {
                continue;
            }
            if std::fs::remove_file(path).is_ok() {
                total -= len;
                removed.push(path.clone());
            }
        }
    }
    removed
}

/// Whether process `pid` exists (it may be another user's).
fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Removes package uploads that a manager killed mid-upload left in the cache:
/// `<sha>.<pid>.<n>.tmp` whose pid is not running.
fn remove_stale_uploads(dir: &Path) {
    remove_orphans(dir, "upload", |n| n.strip_suffix(".tmp")?.split('.').nth(1));
}

/// Removes the sockets and stats files of executors whose manager is gone (killed: nobody
/// removed them). Their names carry the manager's pid: `rfaas-PID-lease-ID.sock`.
fn remove_stale_sockets(dir: &Path) {
    remove_orphans(dir, "socket", |n| {
        let n = n.strip_prefix("rfaas-")?;
        let ours = n.contains("-lease-")
            && [".sock", ".stats", ".stats.tmp"]
                .iter()
                .any(|ext| n.ends_with(ext));
        ours.then(|| n.split('-').next())?
    });
}

/// Removes the files of `dir` whose names `pid_in` finds the pid of a process that is not
/// running in (`what` names them in the log).
fn remove_orphans(dir: &Path, what: &str, pid_in: impl Fn(&str) -> Option<&str>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(&pid_in)
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if !alive(pid) && std::fs::remove_file(entry.path()).is_ok() {
            tracing::info!(file = %entry.path().display(), "removed a dead manager's {what}");
        }
    }
}

/// Registers the node and sends its heartbeats, until the manager is asked to stop: then it
/// leaves the registry (so that clients are no longer sent here) and returns.
fn heartbeat(reg: &RegistryClient, node: &NodeInfo, mgr: &std::sync::Weak<Manager>) {
    let mut registered = false;
    // Whether the registry may list us: not if no registration ever went through.
    let mut listed = false;
    while let Some(m) = mgr.upgrade() {
        if m.phase.load(Ordering::SeqCst) != SERVING {
            drop(m);
            if listed {
                match reg.deregister(&node.id) {
                    Ok(()) => tracing::info!("left the registry"),
                    Err(e) => tracing::warn!(error = %e, "cannot leave the registry"),
                }
            }
            return;
        }
        let (cores, mem) = {
            let c = m.capacity.lock().unwrap_or_else(|e| e.into_inner());
            (c.free_cores, c.free_memory_mib)
        };
        let period = Duration::from_millis(m.cfg.heartbeat_ms);
        let open = m.secret.is_none();
        drop(m);
        if !registered {
            registered = reg
                .register(node)
                .map_err(|e| match e {
                    // The client-side words of the registry's refusal name a client's settings.
                    rfaas::registry::RegistryError::Refused(ref why)
                        if open && why.contains("requires authentication") =>
                    {
                        tracing::warn!(
                            error = %e,
                            "cannot register: give this manager the cluster's secret (secret_file in its configuration)"
                        )
                    }
                    e => tracing::warn!(error = %e, "cannot register"),
                })
                .is_ok();
            listed |= registered;
        }
        if registered && let Err(e) = reg.heartbeat(node, cores, mem) {
            tracing::warn!(error = %e, "heartbeat failed; registering again");
            registered = false;
        }
        // In steps, so that a manager asked to stop leaves the registry at once.
        let next = Instant::now() + period;
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            if mgr
                .upgrade()
                .is_none_or(|m| m.phase.load(Ordering::SeqCst) != SERVING)
            {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }
}

/// Most package uploads a manager receives at once.
pub const MAX_UPLOADS: usize = 8;

/// Bytes per second an upload must average after the request timeout's grace.
pub const UPLOAD_RATE: u64 = 1 << 20;

/// A running lease: capacity held, an executor process serving it.
struct Held<'m> {
    mgr: &'m Manager,
    cores: u32,
    memory_mib: u64,
    child: Option<Child>,
    /// The user its executor runs as (`executor_uids`), given back once every process of that
    /// user is killed.
    user: Option<LeaseUser<'m>>,
    /// Files of the lease's executor (its socket), removed with the lease however it ends.
    files: Vec<PathBuf>,
    /// The CPUs its workers run on, given back with the lease (before its capacity, so that a
    /// lease that finds the capacity also finds the CPUs free).
    pinning: Option<Pinning>,
    /// Its cgroup (`cgroups`): every process in it is killed, and it removed, before the
    /// lease's CPUs and capacity are given back.
    cgroup: Option<LeaseCgroup>,
    /// Tells its output relay that the lease is over.
    relay: Option<RelayEnd>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Everything the lease started, wherever it moved in the process tree.
        if let Some(g) = &self.cgroup {
            g.kill();
        }
        if let Some(mut c) = self.child.take() {
            // The executor leads a process group of its own: whatever its functions started
            // (and did not move out of the group) goes with it, not just the executor. (Under
            // a user of its own, the sweep below kills all of it, wherever it moved, without
            // a group id that could be another's by now.)
            if self.user.is_none() {
                kill_group(&c);
            }
            // In case a function moved the executor itself to another group (std knows
            // whether it was reaped already and then sends nothing).
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever of the lease's user is left, wherever it moved (a session of its own): its
        // processes are killed before its capacity is given back.
        drop(self.user.take());
        drop(self.cgroup.take());
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        drop(self.pinning.take());
        let mut cap = self.mgr.capacity.lock().unwrap_or_else(|e| e.into_inner());
        cap.free_cores += self.cores;
        cap.free_memory_mib += self.memory_mib;
    }
}

/// A package received into a temporary file of the cache, removed with this value unless
/// installed (renamed into place).
struct Upload(PathBuf);

impl Drop for Upload {
    fn drop(&mut self) {
        // Gone already once installed.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Kills the process group that the executor `child` leads (it and what it started). Its id
/// is the executor's pid, which is not reused while the group has a member; once every member
/// is gone, the group is too, and `killpg` finds none. (Should the executor have been reaped
/// and its pid taken by a new group leader in the milliseconds between, that group would be
/// killed: the kernel hands out pids in order, so that takes wrapping the whole pid space.)
fn kill_group(child: &Child) {
    let Ok(pgid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: sends a signal; no memory is involved. ESRCH (no member left) is fine.
    unsafe { libc::killpg(pgid, libc::SIGKILL) };
}

/// The least memory a lease of `cores` cores over `fabric` with slots of `slot_size` bytes may
/// ask for, MiB: the executor process's own (the binary, the function library, its session
/// thread), plus per core a worker thread's stack and, over shared memory (or `Auto`, which
/// may become it), the worker's scratch of a slot (where small results are run). The executor
/// runs under this limit (`rfaas-executor worker --memory-mib`); the data plane's regions are
/// shared memory and do not count.
pub fn min_lease_memory_mib(cores: u32, fabric: Fabric, slot_size: u32) -> u64 {
    let scratch = match fabric {
        Fabric::Shm | Fabric::Auto => u64::from(slot_size).div_ceil(1 << 20),
        Fabric::Tcp | Fabric::Verbs => 0,
    };
    16 + (4 + scratch) * u64::from(cores)
}

/// Takes the lock of the ledger at `ledger` (`<ledger>.lock`) for the manager's life; refused
/// if another manager holds it (after a moment's grace for a killed one's children).
fn lock_ledger(ledger: &Path) -> Result<std::fs::File, String> {
    crate::lock_beside(ledger, Duration::from_secs(2)).map_err(|(lock, e)| match e {
        Some(e) => format!("the ledger's lock {}: {e}", lock.display()),
        None => format!(
            "{} is locked: another manager uses the ledger {} (give each manager a ledger of its own)",
            lock.display(),
            ledger.display()
        ),
    })
}

/// The manager's side of one control connection: plain, or sealed once the client has
/// authenticated.
struct Control {
    stream: TcpStream,
    auth: Option<Channel>,
}

impl Control {
    fn reply(&mut self, reply: &LeaseReply) -> Result<(), String> {
        self.send(reply)
    }

    /// Tells the holder of a granted lease something ([`LeaseNotice`]).
    fn notify(&mut self, notice: &LeaseNotice) -> Result<(), String> {
        self.send(notice)
    }

    fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), String> {
        match &mut self.auth {
            Some(ch) => ch
                .send_json(&mut self.stream, msg)
                .map_err(|e| e.to_string()),
            None => send_json(&mut self.stream, msg).map_err(|e| e.to_string()),
        }
    }
}

impl Manager {
    fn serve_client(&self, stream: TcpStream, pending: Pending) {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_owned(), |p| p.to_string());
        // Tracked, so that a manager that ends its leases can shut this connection down; none
        // is served once it does.
        let _tracked = match self.track(&stream) {
            Ok(t) => t,
            Err(why) => {
                let mut ctl = Control { stream, auth: None };
                let _ = ctl.reply(&LeaseReply::Refused(why));
                return;
            }
        };
        let mut ctl = Control { stream, auth: None };
        if let Err(e) = self.lease(&mut ctl, &peer, pending) {
            tracing::info!(%peer, error = %e, "lease request refused, or its lease ended with an error");
            let _ = ctl.reply(&LeaseReply::Refused(e));
        }
    }

    /// Keeps a copy of `stream` until the value returned is dropped. Refused (a connection
    /// the manager could not end is not served) if the manager is ending its leases, or if
    /// the copy cannot be made (out of descriptors).
    fn track(&self, stream: &TcpStream) -> Result<Tracked<'_>, String> {
        let copy = stream.try_clone().map_err(|e| {
            // Out of descriptors, it fails for every connection of a flood: reported at most
            // once a second, with how many failed.
            static FAILED: Mutex<crate::conn::Throttled> =
                Mutex::new(crate::conn::Throttled::new());
            if let Some(failed) = FAILED.lock().unwrap_or_else(|e| e.into_inner()).count() {
                tracing::warn!(error = %e, failed, "cannot keep track of a control connection");
            }
            format!("the manager cannot take the connection now: {e}")
        })?;
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if self.phase.load(Ordering::SeqCst) == ENDING {
            return Err(self.stopping());
        }
        let id = conns.next;
        conns.next += 1;
        conns.open.insert(id, copy);
        Ok(Tracked { mgr: self, id })
    }

    /// Why a lease is refused once the manager was asked to stop.
    fn stopping(&self) -> String {
        format!(
            "node {} is shutting down: it takes no new leases",
            self.cfg.node_id
        )
    }

    /// Whether the manager no longer takes leases.
    fn draining(&self) -> bool {
        self.phase.load(Ordering::SeqCst) != SERVING
    }

    /// Whether no lease holds any capacity.
    fn idle(&self) -> bool {
        let cap = self.capacity.lock().unwrap_or_else(|e| e.into_inner());
        cap.free_cores == self.cfg.cores && cap.free_memory_mib == self.cfg.memory_mib
    }

    /// Cores held by leases now (running, or starting).
    fn cores_held(&self) -> u32 {
        let cap = self.capacity.lock().unwrap_or_else(|e| e.into_inner());
        self.cfg.cores - cap.free_cores
    }

    /// Waits for SIGTERM or SIGINT, then stops the manager: no new leases, the registry left,
    /// running leases given `shutdown_grace_ms` to end (or until a second signal), then ended
    /// (their executors killed and their ledger entries written), the manager's cgroups
    /// removed, and the process ends with status 0.
    fn stop_on_signal(
        &self,
        signals: &crate::stop::TermSignals,
        heartbeats: Option<std::thread::JoinHandle<()>>,
    ) {
        // Meanwhile, ledger entries kept for want of a writable ledger are tried again every
        // few seconds, so that an idle node does not hold them in memory only.
        let sig = loop {
            match signals.wait(Some(LEDGER_RETRY)) {
                Ok(Some(sig)) => break sig,
                Ok(None) => {
                    let mut pending = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
                    self.write_pending(&mut pending);
                }
                Err(e) => {
                    tracing::error!(error = %e, "waiting for SIGTERM and SIGINT failed: the manager stops only when killed");
                    return;
                }
            }
        };
        // (A grace too long to add up is a year.)
        let now = Instant::now();
        let deadline = now
            .checked_add(Duration::from_millis(self.cfg.shutdown_grace_ms))
            .unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
        // Running leases tell their clients when they will be ended (`LeaseNotice::Stopping`).
        let _ = self.ending_at.set(deadline);
        // The heartbeat thread sees this and leaves the registry (in its own time: a registry
        // that does not answer holds up neither the grace period nor a second signal).
        self.phase.store(DRAINING, Ordering::SeqCst);
        tracing::info!(
            signal = crate::stop::name(sig),
            cores_leased = self.cores_held(),
            grace_ms = self.cfg.shutdown_grace_ms,
            "stopping: no new leases; running leases end when their clients end them, or when the grace period is over (at a second signal: now)"
        );
        let mut now = false;
        while !self.idle() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            if let Some(sig) = wait_a_while(signals, left.min(Duration::from_millis(50))) {
                tracing::info!(
                    signal = crate::stop::name(sig),
                    "ending the running leases now"
                );
                now = true;
                break;
            }
        }
        let ended = self.cores_held();
        {
            let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            self.phase.store(ENDING, Ordering::SeqCst);
            for stream in conns.open.values() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
        if ended > 0 && !now {
            tracing::info!(
                cores = ended,
                "the grace period is over: ending the running leases"
            );
        }
        // Each connection's thread ends what it was doing: a lease's kills its executor (and
        // cgroup), writes its ledger entry and gives its capacity back; a lease that was
        // starting stops before it spawns an executor, or fails at its reply; an upload
        // removes its file. Then the output relays pass on what the executors left (at most
        // a second after their lease), and the heartbeat thread leaves the registry. All of
        // it bounded: by the executor's start-up limit (an executor being started when the
        // stop began is waited for), the kill's 5 s, the registry client's timeouts; and a
        // further signal stops the waiting.
        let bound = Instant::now()
            + Duration::from_millis(self.cfg.executor_start_timeout_ms)
            + Duration::from_secs(10);
        let done = || {
            self.conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .open
                .is_empty()
                && self.relays.load(Ordering::SeqCst) == 0
                && heartbeats.as_ref().is_none_or(|h| h.is_finished())
        };
        while !done() && Instant::now() < bound {
            if let Some(sig) = wait_a_while(signals, Duration::from_millis(10)) {
                tracing::error!(
                    signal = crate::stop::name(sig),
                    cores = self.cores_held(),
                    "stopping at once: leases still being ended get no ledger entry (and entries waiting for the ledger are only in this log)"
                );
                std::process::exit(1);
            }
        }
        if !self.idle() {
            tracing::warn!(
                cores = self.cores_held(),
                "leases still held after their end: stopping anyway"
            );
        }
        if let Some(c) = &self.cgroups {
            c.remove();
        }
        self.flush_ledger();
        tracing::info!(ended_cores = ended, "manager stopped");
        std::process::exit(0);
    }

    /// Reads the connection's request: authenticates the client first if this node has a
    /// secret. Nothing of the request is looked at before its MAC is verified.
    fn request(&self, ctl: &mut Control, peer: &str) -> Result<LeaseRequest, String> {
        let mut within = Deadlined::new(&ctl.stream, self.request_timeout());
        let body = match rfaas::auth::accept(&mut within, self.secret.as_ref(), AuthService::Lease)
        {
            Ok(Accepted::Open(body)) => body,
            Ok(Accepted::Authenticated(ch, body)) => {
                ctl.auth = Some(ch);
                body
            }
            Err(AuthError::Transport(rfaas::transport::TransportError::Io(io)))
                if self.secret.is_some() && io.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                // A client holding another secret hangs up here, on finding our proof wrong
                // (it says so on its side): the operator should hear of it too.
                tracing::warn!(
                    %peer,
                    "refused a control connection: the client hung up during authentication (a client with another secret does)"
                );
                return Err("the connection closed during authentication".into());
            }
            Err(e @ AuthError::Transport(_)) => return Err(format!("bad lease request: {e}")),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "refused a control connection");
                return Err(e.to_string());
            }
        };
        serde_json::from_slice(&body)
            .map_err(|e| format!("bad lease request: malformed message: {e}"))
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.request_timeout_ms)
    }

    /// Receives a package of `len` bytes that must hash to `sha` into a temporary file of the
    /// cache, streamed to disk (never whole in memory), at [`UPLOAD_RATE`] at least after a
    /// request timeout's grace: each byte must be in by the request timeout plus a second per
    /// MiB before it (so a client that sends nothing is cut off after the request timeout,
    /// not after a second per MiB it announced). [`Manager::install`] puts it in place (once
    /// the lease holds its capacity). The file goes when the [`Upload`] does, unless
    /// installed.
    fn receive_package(&self, stream: &TcpStream, len: u64, sha: &str) -> Result<Upload, String> {
        use sha2::Digest;
        // A name of its own per upload: concurrent first leases of one package each write
        // their copy, and each rename installs a complete file.
        static UPLOADS: AtomicU64 = AtomicU64::new(0);
        let upload = Upload(self.cfg.cache_dir.join(format!(
            "{sha}.{}.{}.tmp",
            std::process::id(),
            UPLOADS.fetch_add(1, Ordering::Relaxed)
        )));
        let (start, grace) = (Instant::now(), self.request_timeout());
        let mut within = Deadlined::new(stream, grace);
        let mut file =
            std::fs::File::create(&upload.0).map_err(|e| format!("caching the package: {e}"))?;
        let mut hasher = sha2::Sha256::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = within.read(&mut chunk[..want]).map_err(|e| {
                let received = len - left;
                match e.kind() {
                    std::io::ErrorKind::TimedOut => format!(
                        "reading the package: {received} of {len} bytes in {:.1} s, too slow (an \
                         upload gets {} s, then must keep up {} MiB/s)",
                        start.elapsed().as_secs_f64(),
                        grace.as_secs_f64(),
                        UPLOAD_RATE >> 20
                    ),
                    _ => format!("reading the package: {e}"),
                }
            })?;
            if n == 0 {
                return Err(format!(
                    "reading the package: the connection ended {left} bytes short"
                ));
            }
            hasher.update(&chunk[..n]);
            file.write_all(&chunk[..n])
                .map_err(|e| format!("caching the package: {e}"))?;
            left -= n as u64;
            let received = len - left;
            within.reset(
                start,
                grace + Duration::from_secs_f64(received as f64 / UPLOAD_RATE as f64),
            );
        }
        let found = crate::package::hex(&hasher.finalize());
        if found != sha {
            return Err(format!("package bytes hash to {found}, not {sha}"));
        }
        file.sync_all()
            .map_err(|e| format!("caching the package: {e}"))?;
        Ok(upload)
    }

    /// Installs `upload` as `library` (unless a concurrent upload did first) and trims the
    /// cache; the caller holds the trimming lock and marks `library` as leased in the same
    /// step, so that no trim takes it before its lease starts.
    fn install(&self, upload: Upload, library: &Path) -> Result<(), String> {
        if library.exists() {
            return Ok(());
        }
        std::fs::rename(&upload.0, library).map_err(|e| format!("caching the package: {e}"))?;
        std::fs::File::open(&self.cfg.cache_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("caching the package: {e}"))?;
        for gone in trim_cache(
            &self.cfg.cache_dir,
            self.cfg.max_cache_bytes,
            library,
            CACHE_RECENT,
        ) {
            tracing::info!(package = %gone.display(), "evicted from the package cache");
        }
        Ok(())
    }

    fn lease(&self, ctl: &mut Control, peer: &str, pending: Pending) -> Result<(), String> {
        let req = self.request(ctl, peer)?;
        if self.draining() {
            return Err(self.stopping());
        }
        // The request's deadline set these as it went; from here on, replies get their own.
        ctl.stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .and_then(|()| ctl.stream.set_write_timeout(Some(Duration::from_secs(30))))
            .map_err(|e| e.to_string())?;
        let sha = req.package_sha256.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("package_sha256 must be 64 hex digits".into());
        }
        let (slots, slot_size) = self.cfg.lease_geometry(&req)?;
        // Before any package is shipped or capacity reserved.
        if let (Fabric::Verbs, Err(why)) = (req.fabric, &self.rdma) {
            return Err(format!("this node offers no RDMA leases: {why}"));
        }
        let least = min_lease_memory_mib(req.cores, req.fabric, slot_size);
        if req.memory_mib < least {
            return Err(format!(
                "{} MiB is too little memory for a lease of {} cores: an executor needs at least {least} MiB",
                req.memory_mib, req.cores
            ));
        }
        // Shared memory only works on this host: `auto` picks it for local clients.
        let local = ctl.stream.peer_addr().map(|p| p.ip()).ok()
            == ctl.stream.local_addr().map(|l| l.ip()).ok()
            || ctl.stream.peer_addr().is_ok_and(|p| p.ip().is_loopback());
        let fabric = match req.fabric {
            Fabric::Auto if local => Fabric::Shm,
            Fabric::Auto => Fabric::Tcp,
            Fabric::Shm if !local => return Err(
                "shared memory is only offered to clients on this node's host; ask for tcp or auto"
                    .into(),
            ),
            Fabric::Verbs => Fabric::Verbs,
            f => f,
        };
        // Checked before any byte is sent: the client waits for our go-ahead.
        if let Some(len) = req.package_len.filter(|&l| l > self.cfg.max_package_bytes) {
            return Err(format!(
                "package of {len} bytes exceeds this node's limit of {}",
                self.cfg.max_package_bytes
            ));
        }
        // Refused before any package is shipped if the node cannot take it now; the capacity
        // is reserved only once the package is in (an upload may take minutes, and holds
        // nothing meanwhile), so a lease may still be refused for capacity after its upload.
        let lacking = |cap: &Capacity| {
            (req.cores > cap.free_cores || req.memory_mib > cap.free_memory_mib).then(|| {
                format!(
                    "not enough capacity: asked {} cores / {} MiB, {} / {} free",
                    req.cores, req.memory_mib, cap.free_cores, cap.free_memory_mib
                )
            })
        };
        let reserve = || {
            // A user first (it may have to look through /proc): given back if the capacity
            // is not there.
            let user = self.users.as_ref().map(UserPool::take).transpose()?;
            let mut cap = self.capacity.lock().unwrap_or_else(|e| e.into_inner());
            // Checked under the lock the stopping manager looks at the capacity with: it
            // either sees this lease, or this lease sees that it stops.
            if self.draining() {
                return Err(self.stopping());
            }
            if let Some(why) = lacking(&cap) {
                return Err(why);
            }
            cap.free_cores -= req.cores;
            cap.free_memory_mib -= req.memory_mib;
            Ok(Held {
                mgr: self,
                cores: req.cores,
                memory_mib: req.memory_mib,
                child: None,
                user,
                files: Vec::new(),
                pinning: Some(self.cpus.take(req.cores as usize)),
                cgroup: None,
                relay: None,
            })
        };
        if let Some(why) = lacking(&self.capacity.lock().unwrap_or_else(|e| e.into_inner())) {
            return Err(why);
        }
        if let Some(pool) = &self.users
            && pool.free() == 0
        {
            // Says which ids are in use and why.
            pool.take()?;
        }
        let library = self.cfg.cache_dir.join(format!("{sha}.so"));
        let upload = if let Some(len) = req.package_len {
            // Uploads count among uploads, not among the requests being read: clients that
            // announce packages and send them slowly (or not at all) cannot hold up the requests
            // of others, and take at most MAX_UPLOADS x max_package_bytes of disk meanwhile.
            let _uploading = self.uploads.take().ok_or_else(|| {
                format!(
                    "{MAX_UPLOADS} package uploads are in progress on this node: try again shortly"
                )
            })?;
            drop(pending);
            ctl.reply(&LeaseReply::NeedPackage)?;
            Some(self.receive_package(&ctl.stream, len, &sha)?)
        } else if !library.exists() {
            return ctl.reply(&LeaseReply::NeedPackage);
        } else {
            drop(pending);
            None
        };
        // A refusal here drops the upload (its file with it): nothing of it is cached.
        let mut held = reserve()?;
        let library_file = {
            // Leased now, so the last the cache's eviction takes: installed (an upload),
            // checked and marked under the trimming lock, so a trim either sees the mark or
            // has already removed the file.
            let _trimming = self.trimming.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(upload) = upload {
                self.install(upload, &library)?;
            }
            if !touch(&library) {
                drop(held);
                return ctl.reply(&LeaseReply::NeedPackage);
            }
            // Open while it is sure to be there: the executor loads this very file, through a
            // descriptor (under a user of its own it could not open the cache by its path).
            std::fs::File::open(&library).map_err(|e| format!("opening the cached package: {e}"))?
        };
        // Never wraps: past the last id, leases are refused (a damaged ids file or ledger).
        let lease_id = self
            .next_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| id.checked_add(1))
            .map_err(|_| EXHAUSTED.to_owned())?;
        {
            let mut reserved = self.reserved_ids.lock().unwrap_or_else(|e| e.into_inner());
            if lease_id >= *reserved {
                let end = lease_id
                    .checked_add(LEASE_ID_BLOCK)
                    .ok_or_else(|| EXHAUSTED.to_owned())?;
                reserve_lease_ids(&self.cfg.ledger, end)
                    .map_err(|e| format!("recording lease ids: {e}"))?;
                *reserved = end;
            }
        }
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let t0 = Instant::now();
        // Only the lease holder learns the token (in the grant); the executor admits no session
        // without it, so a stranger who finds its socket or port cannot take the lease. It
        // travels in the environment, not in the arguments (`ps` shows those to every user).
        let token =
            rfaas::auth::session_token().map_err(|e| format!("making a session token: {e}"))?;
        // A manager ending its leases starts no more executors.
        if self.phase.load(Ordering::SeqCst) == ENDING {
            return Err(self.stopping());
        }
        let mut cmd = match &self.exe_file {
            Some(f) => {
                let mut cmd = Command::new(format!("/proc/self/fd/{}", f.as_raw_fd()));
                cmd.arg0(&self.exe);
                cmd
            }
            None => Command::new(&self.exe),
        };
        cmd.env("RFAAS_SESSION_TOKEN", &token);
        if held.user.is_some() {
            // Reopened through /proc/self/fd by its new user, who needs read permission on
            // the file (the cache directory, 0700, keeps others from finding it).
            use std::os::unix::fs::PermissionsExt;
            let mode = library_file
                .metadata()
                .map_or(0, |m| m.permissions().mode());
            if mode & 0o004 == 0 {
                library_file
                    .set_permissions(std::fs::Permissions::from_mode(0o644))
                    .map_err(|e| format!("making the cached package readable: {e}"))?;
            }
        }
        let library_fd = library_file.as_raw_fd();
        cmd.arg("worker")
            .arg(format!("--lease={lease_id}"))
            .arg(format!("--memory-mib={}", req.memory_mib))
            .arg("--library")
            .arg(&library)
            .arg(format!("--library-fd={library_fd}"));
        cmd.args([
            "--cores",
            &req.cores.to_string(),
            "--slots",
            &slots.to_string(),
        ]);
        cmd.args(["--slot-size", &slot_size.to_string()]);
        // The CPUs other leases use least (each lease's workers would otherwise all start at
        // the node's first CPU).
        let cpus = held.pinning.as_ref().map(Pinning::cpus).unwrap_or_default();
        if !cpus.is_empty() {
            cmd.arg(format!("--cpus={}", crate::cpus::cpu_list(&cpus)));
        }
        cmd.arg(format!("--hot-timeout-us={}", req.hot_timeout_us));
        let socket = self.cfg.socket_dir.join(format!(
            "rfaas-{}-lease-{lease_id}.sock",
            std::process::id()
        ));
        // The executor's counts as they go, for a lease whose executor dies without its final
        // accounting (a crash, a kill after the grace period): a memory file, not a file of
        // ours it would need permission to write.
        let stats_record = rfaas::sys::memfd(&format!("rfaas-lease-{lease_id}-stats"), STATS_LEN)
            .map_err(|e| format!("a stats record: {e}"))?;
        let stats_fd = stats_record.as_raw_fd();
        cmd.arg(format!("--stats-fd={stats_fd}"));
        // The executor reports `ready` and its closing `stats` on a pipe of their own; its
        // stdout, where functions print, goes to our stderr (under a user of its own, through
        // a pipe a thread of ours relays there), never into a pipe the lease must drain.
        let (report, report_w) = report_pipe().map_err(|e| format!("a report pipe: {e}"))?;
        let report_w_fd = report_w.as_raw_fd();
        cmd.arg(format!("--report-fd={report_w_fd}"));
        // The executor writes into a pipe we relay to our stderr line by line, each line
        // tagged with the lease (`lease 7 | ...`, control characters escaped), not into our
        // stderr itself: a tenant's output cannot pass for the manager's log lines or drive
        // the operator's terminal, and an executor under a user of its own cannot truncate
        // our log file or reopen it. (A manager started with its stderr closed discards the
        // executors' output.)
        let (stdout, stderr) = {
            let (r, w) = report_pipe().map_err(|e| format!("an output pipe: {e}"))?;
            held.relay = Some(
                relay_output(r, lease_id, &self.relays)
                    .map_err(|e| format!("an output relay: {e}"))?,
            );
            let w2 = w.try_clone().map_err(|e| format!("an output pipe: {e}"))?;
            (Stdio::from(w), Stdio::from(w2))
        };
        if matches!(fabric, Fabric::Shm | Fabric::Auto)
            && socket.as_os_str().len() > MAX_SOCKET_PATH
        {
            return Err(format!(
                "the lease's socket path {} is too long for a Unix socket ({MAX_SOCKET_PATH} bytes at most); the node's socket_dir must be shorter",
                socket.display()
            ));
        }
        // Bound here, handed over listening: the executor (perhaps under another user) needs no
        // permission in `socket_dir`, and the socket is ours to remove with the lease.
        let mut listener = None;
        match fabric {
            Fabric::Shm | Fabric::Auto => {
                let _ = std::fs::remove_file(&socket);
                let l = std::os::unix::net::UnixListener::bind(&socket)
                    .map_err(|e| format!("listening on {}: {e}", socket.display()))?;
                held.files = vec![socket.clone()];
                cmd.arg("--socket")
                    .arg(&socket)
                    .arg(format!("--socket-fd={}", l.as_raw_fd()));
                listener = Some(l);
                &mut cmd
            }
            Fabric::Tcp => {
                let ip = ctl.stream.local_addr().map_err(|e| e.to_string())?.ip();
                cmd.arg("--listen").arg(format!("{ip}:0"))
            }
            Fabric::Verbs => {
                let ip = ctl.stream.local_addr().map_err(|e| e.to_string())?.ip();
                cmd.arg("--listen")
                    .arg(format!("{ip}:0"))
                    .args(["--fabric", "verbs"])
            }
        };
        let user = held.user.as_ref().map(LeaseUser::uid);
        if user.is_some() {
            // The manager's working directory may be closed to the executor's user, and its
            // environment may hold what a tenant must not read (credentials): the executor
            // gets only what it and its functions need.
            cmd.current_dir("/").env_clear().env("HOME", "/");
            let keep = |name: &str| {
                [
                    "PATH",
                    "LANG",
                    "LC_ALL",
                    "TZ",
                    "RUST_BACKTRACE",
                    "RFAAS_LOG",
                ]
                .contains(&name)
                    || name == "RFAAS_REQUIRE_RDMA"
                    || name.starts_with("RFAAS_VERBS_")
            };
            for (name, value) in std::env::vars_os() {
                if name.to_str().is_some_and(keep) {
                    cmd.env(name, value);
                }
            }
            cmd.env("RFAAS_SESSION_TOKEN", &token);
        }
        let manager_pid = std::process::id();
        let tasks = crate::users::max_tasks(req.cores);
        // Made before the fork: the child may not allocate.
        let scratch = (user.is_some() && self.scratch).then(|| Scratch::new(req.memory_mib));
        // Locked memory an executor under another user may pin (RDMA registrations, which
        // root needs no limit for): the lease's memory and its data plane's regions.
        let memlock = (req.memory_mib << 20)
            .saturating_add(2 * u64::from(req.cores) * u64::from(slots) * u64::from(slot_size))
            .saturating_add(64 << 20);
        // Made and limited before the executor starts, which joins it first thing.
        let join_cgroup = match &self.cgroups {
            Some(cgroups) => {
                let limits = crate::cgroups::Limits {
                    memory_bytes: memlock,
                    tasks,
                    cpus: held.pinning.as_ref().map(Pinning::cpus).unwrap_or_default(),
                };
                let cgroup = cgroups
                    .create(lease_id, &limits)
                    .map_err(|e| format!("the lease's cgroup: {e}"))?;
                let fds = cgroup.join_fds();
                held.cgroup = Some(cgroup);
                fds
            }
            None => Vec::new(),
        };
        let inherited = [report_w_fd, library_fd, stats_fd]
            .into_iter()
            .chain(listener.as_ref().map(AsRawFd::as_raw_fd));
        let inherited: Vec<i32> = inherited.collect();
        // The closure runs in the forked child before exec and only makes system calls (`write`
        // to the cgroup's descriptors, `unshare`, `mount`, `setrlimit`, `setgroups`,
        // `setresgid`, `setresuid`, `getresuid` as raw calls, `prctl`, `getppid`, `fcntl`,
        // `pthread_sigmask`); `inherited` and `join_cgroup` were built before the fork. The
        // descriptors in `inherited` stay open in the parent until after the spawn, and so do
        // those of `join_cgroup` (the cgroup's `cgroup.procs`, which `held.cgroup` owns).
        // SAFETY: async-signal-safe calls only, no allocation, no locks, on open descriptors.
        unsafe {
            cmd.pre_exec(move || {
                // First, while we may still write the cgroup's files.
                crate::cgroups::join(&join_cgroup)?;
                if let Some(scratch) = &scratch {
                    scratch.enter()?;
                }
                if let Some(uid) = user {
                    crate::users::become_user(uid, memlock, tasks)?;
                }
                // The executor dies with the thread that holds its lease (and so with the
                // manager): clients then see the session end instead of an orphan serving on.
                // (After the change of user, which clears it.)
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // A manager that died before that would never send it.
                if u32::try_from(libc::getppid()).ok() != Some(manager_pid) {
                    // (No allocation here: an errno.)
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                // The report pipe's write end, the library, the stats record and the listening
                // socket stay open across exec, at the numbers we told the executor (every
                // other descriptor of ours is closed on exec). They are 3 or above: std keeps
                // 0 to 2 open, so no call of ours could have returned them.
                for &fd in &inherited {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // The manager's threads block SIGTERM and SIGINT (one of them takes them,
                // `crate::stop`), and a forked child keeps its thread's mask across exec: the
                // executor, and what its functions start, must stop at them as usual.
                crate::stop::unblock_all()
            });
        }
        // A process group of its own, which the lease's end kills whole (`kill_group`).
        let spawned = cmd
            .stdout(stdout)
            .stderr(stderr)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting an executor: {e}"));
        // Our copy of the write end: once the executor has exited, the pipe ends. The executor
        // has its own copies of the others.
        drop((report_w, library_file, listener));
        held.child = Some(spawned?);
        let mut reported = Vec::new();
        let start_timeout = Duration::from_millis(self.cfg.executor_start_timeout_ms);
        read_report(
            report.as_fd(),
            &mut reported,
            Instant::now() + start_timeout,
            |r| r.contains(&b'\n'),
        )
        .map_err(|e| format!("executor did not start within {start_timeout:?}: {e}"))?;
        let line = reported
            .split(|b| *b == b'\n')
            .next()
            .map(String::from_utf8_lossy)
            .unwrap_or_default()
            .into_owned();
        if let Some(why) = line.trim().strip_prefix("unloadable ") {
            // The package itself cannot be loaded here (not a shared library for this
            // machine, not a library of this ABI): it goes from the cache, so that
            // the next request sends it again instead of starting executors that fail.
            {
                let _trimming = self.trimming.lock().unwrap_or_else(|e| e.into_inner());
                let _ = std::fs::remove_file(&library);
            }
            tracing::warn!(lease_id, package = %sha, %why, "package cannot be loaded; evicted from the cache");
            return Err(format!("the package cannot be loaded on this node: {why}"));
        }
        if let Some(why) = line.trim().strip_prefix("failed ") {
            // This executor's circumstances (too little memory for the library under the
            // lease's limit, say): the package stays.
            return Err(format!("the executor could not load the package: {why}"));
        }
        let endpoint = line
            .trim()
            .strip_prefix("ready ")
            .ok_or_else(|| format!("executor did not start: {line:?}"))?
            .to_owned();
        tracing::info!(
            lease_id,
            cores = req.cores,
            cold_start_us = t0.elapsed().as_micros() as u64,
            endpoint,
            "lease granted"
        );
        ctl.reply(&LeaseReply::Granted {
            lease_id,
            endpoint,
            fabric,
            token: Some(token),
        })?;
        // A client whose host vanishes sends neither heartbeats nor an end of connection:
        // the kernel's probes end the connection, and the lease, within about 25 s.
        if let Err(e) = crate::conn::hold_keepalive(&ctl.stream) {
            tracing::warn!(lease_id, error = %e, "no keepalive on the control connection");
        }
        // Held until the client closes the control connection, dies, (if it promised
        // heartbeats) stays silent for three periods, or the executor ends on its own (a
        // crash, or a function beyond the lease's memory): then the control connection is
        // closed, which the client sees.
        let silence = req
            .heartbeat_ms
            .map(|ms| Duration::from_millis(ms.clamp(1, 3_600_000) * 3));
        let stopping = || {
            self.ending_at.get().map(|at| LeaseNotice::Stopping {
                node_id: self.cfg.node_id.clone(),
                within_ms: at.saturating_duration_since(Instant::now()).as_millis() as u64,
            })
        };
        let end = watch_lease(
            ctl,
            held.child.as_mut().expect("spawned"),
            silence,
            stopping,
        )?;
        let (exit, ended_by_manager) = match end {
            // Its connection shut down by a manager that stops (or closed by the client at
            // that very moment).
            LeaseEnd::Client if self.phase.load(Ordering::SeqCst) == ENDING => {
                (None, Some(ENDED_AT_SHUTDOWN.to_owned()))
            }
            LeaseEnd::Client => (None, None),
            LeaseEnd::Silent => (None, Some(ENDED_SILENT.to_owned())),
            LeaseEnd::Executor(status) => {
                // Executors are not sent SIGTERM by the manager (it kills with SIGKILL): one
                // that dies of it while the manager stops was most likely sent it along with
                // the manager, as systemd's default `KillMode=control-group` does to every
                // process of the unit.
                use std::os::unix::process::ExitStatusExt;
                if self.draining() && status.signal() == Some(libc::SIGTERM) {
                    tracing::warn!(
                        lease_id,
                        "the executor died of SIGTERM while the manager stops, so its lease was not drained: if the manager runs under systemd, give its unit KillMode=mixed"
                    );
                }
                (Some(status.to_string()), None)
            }
        };
        // An executor the kernel killed at its cgroup's memory limit: the ledger says so.
        let exit = exit.map(|status| match &held.cgroup {
            Some(g) if g.oom_kills() > 0 => format!(
                "{status}: out of memory (the lease's cgroup holds it to {} MiB: the lease's memory and its data plane's regions)",
                g.memory_limit().unwrap_or(0) >> 20
            ),
            _ => status,
        });
        if let Some(status) = &exit {
            tracing::warn!(lease_id, %status, "executor ended before its lease");
        }
        // The client's session should be gone too; give the executor a moment to report. Not
        // when the manager ended the lease: the client still holds its session, so the
        // executor would not report (a stopping manager would wait a second for nothing);
        // two periods of its stats record instead, so that the record has every invocation
        // answered before the end.
        let report_within = match ended_by_manager {
            Some(_) => Duration::from_millis(200),
            None => Duration::from_secs(1),
        };
        let mut stats = read_stats(
            report.as_fd(),
            reported,
            held.child.as_mut().expect("spawned"),
            report_within,
        );
        let times_unknown = stats.is_null();
        if times_unknown {
            // No closing line: the last counts the executor published (times are not kept).
            stats = read_stats_record(&stats_record);
        }
        // The lease is over: what is left of it goes now, so that its cgroup's counts are
        // final.
        let usage = held
            .cgroup
            .as_ref()
            .map(|g| {
                g.kill();
                g.usage()
            })
            .unwrap_or_default();
        let entry = LedgerEntry {
            lease_id,
            node_id: self.cfg.node_id.clone(),
            package_sha256: sha,
            cores: req.cores,
            memory_mib: req.memory_mib,
            fabric,
            started_ms: started,
            allocated_ms: t0.elapsed().as_millis() as u64,
            hot_poll_us: stats["hot_poll_us"].as_u64().unwrap_or(0),
            exec_us: stats["exec_us"].as_u64().unwrap_or(0),
            invocations: stats["invocations"].as_u64().unwrap_or(0),
            executor_exit: exit,
            cpu_us: usage.cpu_us,
            memory_peak_bytes: usage.memory_peak_bytes,
            ended_by_manager,
            times_unknown,
        };
        // Recorded (or kept to be, if the ledger cannot be written now) before the capacity is
        // given back (when `held` goes).
        self.append(&entry);
        drop(held);
        tracing::info!(lease_id, invocations = entry.invocations, "lease reclaimed");
        Ok(())
    }

    /// Appends `entry` to the ledger, after the entries that could not be written before. One
    /// the ledger does not take now (a full disk) is kept, and written before the next (at the
    /// latest at the next lease's end, or when the manager stops); the lease ends anyway.
    fn append(&self, entry: &LedgerEntry) {
        let mut pending = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        match serde_json::to_vec(entry) {
            Ok(mut line) => {
                line.push(b'\n');
                if pending.len() >= MAX_PENDING_ENTRIES {
                    let lost = pending.pop_front().unwrap_or_default();
                    tracing::error!(
                        entry = %String::from_utf8_lossy(&lost).trim_end(),
                        "too many ledger entries waiting: the oldest is given up (it was logged when kept)"
                    );
                }
                pending.push_back(line);
            }
            Err(e) => tracing::error!(error = %e, ?entry, "cannot encode a ledger entry"),
        }
        if !self.write_pending(&mut pending)
            && let Some(kept) = pending.back()
        {
            // In the log as well, in case the manager dies before it can write it.
            tracing::error!(
                entry = %String::from_utf8_lossy(kept).trim_end(),
                waiting = pending.len(),
                "a ledger entry kept, to be written before the next"
            );
        }
    }

    /// Writes the waiting ledger lines, oldest first, in one append (one sync); whether they
    /// went in. If not, they are kept (the ledger holds none of them).
    fn write_pending(&self, pending: &mut std::collections::VecDeque<Vec<u8>>) -> bool {
        if pending.is_empty() {
            return true;
        }
        let lines: Vec<u8> = pending.iter().flatten().copied().collect();
        match append_line(&self.cfg.ledger, &lines) {
            Ok(()) => {
                if pending.len() > 1 {
                    tracing::info!(
                        entries = pending.len(),
                        "ledger entries that had waited are written"
                    );
                }
                pending.clear();
                true
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    ledger = %self.cfg.ledger.display(),
                    waiting = pending.len(),
                    "cannot append to the ledger: its entries are kept, to be written before the next"
                );
                false
            }
        }
    }

    /// At the manager's stop: writes what waits, and puts in the log what still cannot be
    /// written (one line per entry, as it would stand in the ledger), taking it from the queue.
    fn flush_ledger(&self) {
        let mut pending = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        self.write_pending(&mut pending);
        for line in pending.drain(..) {
            tracing::error!(
                entry = %String::from_utf8_lossy(&line).trim_end(),
                "a ledger entry that could not be written (here, in the log)"
            );
        }
    }
}

/// Bytes of the stats record an executor keeps up to date (`rfaas-executor worker
/// --stats-fd`): its JSON at the start, padded with spaces.
pub const STATS_LEN: usize = 256;

/// The counts in the stats record `fd` (JSON null if there are none: an executor that died
/// before its first record, or a record that is not whole).
fn read_stats_record(fd: &OwnedFd) -> serde_json::Value {
    use std::os::unix::fs::FileExt;
    let Ok(file) = fd.try_clone().map(std::fs::File::from) else {
        return serde_json::Value::Null;
    };
    let mut record = [0u8; STATS_LEN];
    match file.read_at(&mut record, 0) {
        Ok(n) => serde_json::from_slice(record[..n].trim_ascii_end()).unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// Whether this node can serve leases over RDMA: built with the `verbs` feature and an RDMA
/// device present (the executors it spawns are this binary).
fn rdma_support() -> Result<(), String> {
    #[cfg(feature = "verbs")]
    {
        rfaas::transport::verbs::available().map(|_| ())
    }
    #[cfg(not(feature = "verbs"))]
    {
        Err("this manager was built without RDMA support (the executor's `verbs` feature)".into())
    }
}

/// How [`watch_lease`] saw a lease end.
enum LeaseEnd {
    /// Its control connection closed.
    Client,
    /// Its client sent no heartbeat for three periods.
    Silent,
    /// Its executor ended on its own: how.
    Executor(std::process::ExitStatus),
}

/// Waits for the end of a granted lease: the client hangs up (or its connection `ctl` fails, or
/// is shut down by a manager that stops), stays silent for `silence`, or the executor `child`
/// exits by itself; returns which. Tells the client once when `notice` has something to say (a
/// manager asked to stop).
fn watch_lease(
    ctl: &mut Control,
    child: &mut Child,
    silence: Option<Duration>,
    notice: impl Fn() -> Option<LeaseNotice>,
) -> Result<LeaseEnd, String> {
    let mut told = false;
    /// How often the executor's liveness is checked while the client is quiet.
    const CHECK: Duration = Duration::from_millis(200);
    let tick = silence.map_or(CHECK, |s| s.min(CHECK));
    ctl.stream
        .set_read_timeout(Some(tick))
        .map_err(|e| e.to_string())?;
    /// Reads at most this often: a client streaming bytes (a heartbeat is one byte every
    /// 500 ms) costs a manager thread a syscall per 10 ms, not a busy core.
    const READ_GAP: Duration = Duration::from_millis(10);
    let mut heard = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match ctl.stream.read(&mut buf) {
            Ok(0) => return Ok(LeaseEnd::Client),
            Ok(_) => {
                let last = std::mem::replace(&mut heard, Instant::now());
                std::thread::sleep(READ_GAP.saturating_sub(last.elapsed()));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(LeaseEnd::Client),
        }
        if let Ok(Some(status)) = child.try_wait() {
            // A lease's executor exits cleanly only once its session ended normally, which the
            // client does when it drops the lease (it closes this connection a moment later):
            // the client's end, not the executor's. Anything else (a signal, an error) is the
            // executor's.
            if status.success() {
                return Ok(LeaseEnd::Client);
            }
            return Ok(LeaseEnd::Executor(status));
        }
        if !told && let Some(n) = notice() {
            told = true;
            // A client that does not read it loses nothing; one that is gone ends the lease
            // by the read above.
            if let Err(e) = ctl.notify(&n) {
                tracing::debug!(error = %e, "could not tell the client");
            }
        }
        if silence.is_some_and(|s| heard.elapsed() >= s) {
            tracing::info!("client silent past its heartbeats");
            return Ok(LeaseEnd::Silent);
        }
    }
}

/// Waits up to `timeout` for the executor's closing `stats` line; kills it if it does not come.
fn read_stats(
    report: BorrowedFd<'_>,
    mut reported: Vec<u8>,
    child: &mut Child,
    timeout: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
        }
    }
    // The executor is gone: the pipe ends at once, unless a process it started holds the
    // write end (it closes it on exec, not on fork); then what came within a moment.
    let _ = read_report(
        report,
        &mut reported,
        Instant::now() + Duration::from_millis(200),
        |_| false,
    );
    String::from_utf8_lossy(&reported)
        .lines()
        .filter_map(|l| l.strip_prefix("stats "))
        .next_back()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Most bytes an executor may report (a `ready` line, a `stats` line).
const REPORT_CAP: usize = 64 * 1024;

/// A pipe for an executor's reports: `(read end, write end)`, both closed on exec.
fn report_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both are new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Copies what lease `lease_id`'s executor (and whatever it started) writes into the pipe `r`
/// to our stderr in tagged lines ([`OutputLines`]), on a thread of its own, until every writer
/// is gone or a second after the returned [`RelayEnd`] is dropped (the lease's end).
fn relay_output(
    r: OwnedFd,
    lease_id: u64,
    running: &Arc<AtomicUsize>,
) -> std::io::Result<RelayEnd> {
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let over = ended.clone();
    /// Counts a relay as running for as long as it lives.
    struct Running(Arc<AtomicUsize>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    running.fetch_add(1, Ordering::SeqCst);
    let running = Running(running.clone());
    std::thread::Builder::new()
        .name(format!("rfaas-output-{lease_id}"))
        .spawn(move || {
            let _running = running;
            let mut chunk = [0u8; 8192];
            let mut lines = OutputLines::new(lease_id);
            // Our stderr is locked per write, never while waiting for output: the manager's
            // own logging goes there too.
            let emit = |framed: &[u8]| {
                let _ = std::io::stderr().write_all(framed);
            };
            // Once the lease is over, what is left is relayed for a second more at most: a
            // process of the lease that outlived it (one that left its process group, with
            // neither a cgroup nor a user of its own to end it) and holds the pipe keeps no
            // thread of ours.
            let mut over_since: Option<Instant> = None;
            loop {
                if over.load(Ordering::Acquire) {
                    let since = *over_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(1) {
                        break;
                    }
                }
                let mut pfd = libc::pollfd {
                    fd: r.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
                    continue;
                }
                // SAFETY: reads into `chunk`, which is valid for its length; `r` is open.
                let n =
                    unsafe { libc::read(r.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
                match n {
                    0 => break,
                    n if n > 0 => lines.push(&chunk[..n as usize], emit),
                    _ if std::io::Error::last_os_error().kind()
                        == std::io::ErrorKind::Interrupted => {}
                    _ => break,
                }
            }
            lines.finish(emit);
        })
        .map(|_| RelayEnd(ended))
}

/// Tells a lease's output relay, when dropped, that the lease is over.
struct RelayEnd(Arc<std::sync::atomic::AtomicBool>);

impl Drop for RelayEnd {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The longest piece of one output line relayed at once: a longer line goes in pieces, each
/// after the first tagged as a continuation.
pub const OUTPUT_LINE_MAX: usize = 4096;

/// An executor's output cut into lines for the manager's stderr: each line tagged with its
/// lease, `lease 7 | text` (a continuation of a line longer than [`OUTPUT_LINE_MAX`]:
/// `lease 7 + text`), its control characters other than tabs escaped (`\u{1b}`).
pub struct OutputLines {
    tag: String,
    pending: Vec<u8>,
    /// The pending bytes continue a line already cut.
    continued: bool,
}

impl OutputLines {
    pub fn new(lease_id: u64) -> Self {
        OutputLines {
            tag: format!("lease {lease_id}"),
            pending: Vec::new(),
            continued: false,
        }
    }

    /// Takes `bytes`, giving `emit` each whole line (or piece) framed.
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            let rest = &self.pending[start..];
            let (end, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i <= OUTPUT_LINE_MAX => (start + i, start + i + 1),
                // Longer than a piece, for sure: cut before a character that would straddle
                // the cut (a UTF-8 continuation byte starts no character; at most 3 follow a
                // lead byte).
                _ if rest.len() > OUTPUT_LINE_MAX => {
                    let mut cut = OUTPUT_LINE_MAX;
                    while cut > OUTPUT_LINE_MAX - 3 && rest[cut] & 0xC0 == 0x80 {
                        cut -= 1;
                    }
                    if rest[cut] & 0xC0 == 0x80 {
                        cut = OUTPUT_LINE_MAX; // not UTF-8 anyway
                    }
                    (start + cut, start + cut)
                }
                _ => break,
            };
            let cut = next == end;
            emit(&self.frame(&self.pending[start..end]));
            self.continued = cut;
            start = next;
        }
        self.pending.drain(..start);
    }

    /// Gives `emit` what is left of a last line without its newline.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.frame(&self.pending));
            self.pending.clear();
        }
    }

    fn frame(&self, line: &[u8]) -> Vec<u8> {
        let mut out = String::with_capacity(self.tag.len() + 4 + line.len());
        out.push_str(&self.tag);
        out.push_str(if self.continued { " + " } else { " | " });
        for c in String::from_utf8_lossy(line).chars() {
            if c.is_control() && c != '\t' {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        out.push('\n');
        out.into_bytes()
    }
}

/// Appends what the executor reports on `fd` to `buf` until `enough(buf)`, the end of the
/// pipe, or `deadline` (an error, as is more than [`REPORT_CAP`] bytes).
fn read_report(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    deadline: Instant,
    enough: impl Fn(&[u8]) -> bool,
) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    while !enough(buf) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("nothing more before the deadline".into());
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.to_string());
        }
        if r == 0 {
            continue;
        }
        // SAFETY: reads at most `chunk.len()` bytes into `chunk`; poll said the pipe is
        // readable (data or its end), so this does not block.
        let n = unsafe { libc::read(fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
        match n {
            0 => return Ok(()),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e.to_string());
                }
            }
            n => {
                if buf.len() + n as usize > REPORT_CAP {
                    return Err(format!("more than {REPORT_CAP} bytes of report"));
                }
                buf.extend_from_slice(&chunk[..n as usize]);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
