//! The per-node executor manager (`rfaas-executor manager`): accepts lease requests on a TCP
//! control address, caches function packages by SHA-256, checks capacity, spawns one executor
//! process per lease (the cold start), hands back where to connect, and reclaims the lease
//! when the client's control connection closes. Each finished lease is appended to a ledger
//! (JSON lines, fsync'd). User code never runs in this process.

use crate::package::sha256_hex;
use rfaas::registry::RegistryClient;
use rfaas::transport::{recv_json, send_json};
use rfaas::wire::{Fabric, LeaseReply, LeaseRequest, NodeInfo};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Heartbeat period, ms. Default 1000.
    pub heartbeat_ms: u64,
    /// Where packages are cached by SHA-256. Default `rfaas-cache`.
    pub cache_dir: PathBuf,
    /// The ledger (JSON lines). Default `rfaas-ledger.jsonl`.
    pub ledger: PathBuf,
    /// Largest package accepted, bytes. Default 256 MiB.
    pub max_package_bytes: u64,
    /// Directory for the Unix sockets of shared-memory executors. Default: the temp dir.
    pub socket_dir: PathBuf,
    /// The executor binary. Default: this binary.
    pub executor: Option<PathBuf>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            listen: "127.0.0.1:7800".into(),
            node_id: "node".into(),
            cores: rfaas::sys::allowed_cpus().len() as u32,
            memory_mib: 4096,
            registry: None,
            heartbeat_ms: 1000,
            cache_dir: "rfaas-cache".into(),
            ledger: "rfaas-ledger.jsonl".into(),
            max_package_bytes: 256 << 20,
            socket_dir: std::env::temp_dir(),
            executor: None,
        }
    }
}

impl ManagerConfig {
    /// Reads a TOML file (unknown keys are errors).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cfg: ManagerConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        if cfg.cores == 0 || cfg.heartbeat_ms == 0 {
            return Err(format!(
                "{}: cores and heartbeat_ms must be positive",
                path.display()
            ));
        }
        Ok(cfg)
    }
}

/// One finished lease, as appended to the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

/// Reads every entry of a ledger file.
pub fn read_ledger(path: &Path) -> Result<Vec<LedgerEntry>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}: line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

struct Capacity {
    free_cores: u32,
    free_memory_mib: u64,
}

struct Manager {
    cfg: ManagerConfig,
    /// Whether leases may use RDMA, or why not.
    rdma: Result<(), String>,
    exe: PathBuf,
    capacity: Mutex<Capacity>,
    next_id: AtomicU64,
    ledger: Mutex<()>,
}

/// Runs the manager until its listener fails; calls `ready` with the bound address.
pub fn serve(cfg: ManagerConfig, ready: impl FnOnce(std::net::SocketAddr)) -> Result<(), String> {
    std::fs::create_dir_all(&cfg.cache_dir)
        .map_err(|e| format!("{}: {e}", cfg.cache_dir.display()))?;
    let exe = match &cfg.executor {
        Some(p) => p.clone(),
        None => {
            std::env::current_exe().map_err(|e| format!("locating the executor binary: {e}"))?
        }
    };
    let listener =
        TcpListener::bind(&cfg.listen).map_err(|e| format!("listening on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mgr = Arc::new(Manager {
        capacity: Mutex::new(Capacity {
            free_cores: cfg.cores,
            free_memory_mib: cfg.memory_mib,
        }),
        next_id: AtomicU64::new(first_lease_id(&cfg.ledger)),
        ledger: Mutex::new(()),
        rdma: rdma_support(),
        exe,
        cfg,
    });
    match &mgr.rdma {
        Ok(()) => tracing::info!("RDMA leases offered"),
        Err(why) => tracing::info!(%why, "no RDMA leases"),
    }
    if let Some(reg) = mgr.cfg.registry.clone() {
        let (mgr, node) = (
            Arc::downgrade(&mgr),
            NodeInfo {
                id: mgr.cfg.node_id.clone(),
                address: addr.to_string(),
                cores: mgr.cfg.cores,
                memory_mib: mgr.cfg.memory_mib,
                rdma: mgr.rdma.is_ok(),
            },
        );
        std::thread::spawn(move || heartbeat(&RegistryClient::new(reg), &node, &mgr));
    }
    tracing::info!(address = %addr, cores = mgr.cfg.cores, "manager ready");
    ready(addr);
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let mgr = mgr.clone();
        std::thread::spawn(move || mgr.serve_client(stream));
    }
    Ok(())
}

/// Lease ids continue after the ledger's last entry, so they stay unique across restarts.
fn first_lease_id(ledger: &Path) -> u64 {
    read_ledger(ledger)
        .ok()
        .and_then(|e| e.iter().map(|x| x.lease_id).max())
        .map_or(1, |m| m + 1)
}

fn heartbeat(reg: &RegistryClient, node: &NodeInfo, mgr: &std::sync::Weak<Manager>) {
    let mut registered = false;
    while let Some(m) = mgr.upgrade() {
        let (cores, mem) = {
            let c = m.capacity.lock().unwrap_or_else(|e| e.into_inner());
            (c.free_cores, c.free_memory_mib)
        };
        let period = Duration::from_millis(m.cfg.heartbeat_ms);
        drop(m);
        if !registered {
            registered = reg
                .register(node)
                .map_err(|e| tracing::warn!(error = %e, "cannot register"))
                .is_ok();
        }
        if registered && let Err(e) = reg.heartbeat(&node.id, cores, mem) {
            tracing::warn!(error = %e, "heartbeat failed; registering again");
            registered = false;
        }
        std::thread::sleep(period);
    }
}

/// A running lease: capacity held, an executor process serving it.
struct Held<'m> {
    mgr: &'m Manager,
    cores: u32,
    memory_mib: u64,
    child: Option<Child>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut cap = self.mgr.capacity.lock().unwrap_or_else(|e| e.into_inner());
        cap.free_cores += self.cores;
        cap.free_memory_mib += self.memory_mib;
    }
}

/// The least memory a lease of `cores` cores may ask for, MiB: the executor process's own
/// (the binary, the function library, its session thread) plus a worker thread's stack per
/// core. The executor runs under this limit (`rfaas-executor worker --memory-mib`).
pub fn min_lease_memory_mib(cores: u32) -> u64 {
    16 + 4 * u64::from(cores)
}

impl Manager {
    fn serve_client(&self, mut stream: TcpStream) {
        if let Err(e) = self.lease(&mut stream) {
            tracing::info!(error = %e, "lease ended with an error");
            let _ = send_json(&mut stream, &LeaseReply::Refused(e));
        }
    }

    fn lease(&self, stream: &mut TcpStream) -> Result<(), String> {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let req: LeaseRequest = recv_json(stream).map_err(|e| format!("bad lease request: {e}"))?;
        let sha = req.package_sha256.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("package_sha256 must be 64 hex digits".into());
        }
        if req.cores == 0 || req.hot_timeout_us < -1 {
            return Err(
                "a lease needs at least one core and a hot timeout of -1, 0 or more".into(),
            );
        }
        // Before any package is shipped or capacity reserved.
        if let (Fabric::Verbs, Err(why)) = (req.fabric, &self.rdma) {
            return Err(format!("this node offers no RDMA leases: {why}"));
        }
        let least = min_lease_memory_mib(req.cores);
        if req.memory_mib < least {
            return Err(format!(
                "{} MiB is too little memory for a lease of {} cores: an executor needs at least {least} MiB",
                req.memory_mib, req.cores
            ));
        }
        let library = self.cfg.cache_dir.join(format!("{sha}.so"));
        if let Some(len) = req.package_len {
            // Checked before any byte is sent: the client waits for our go-ahead.
            if len > self.cfg.max_package_bytes {
                return Err(format!(
                    "package of {len} bytes exceeds this node's limit of {}",
                    self.cfg.max_package_bytes
                ));
            }
            send_json(stream, &LeaseReply::NeedPackage).map_err(|e| e.to_string())?;
            let mut bytes = vec![0u8; len as usize];
            stream
                .read_exact(&mut bytes)
                .map_err(|e| format!("reading the package: {e}"))?;
            let found = sha256_hex(&bytes);
            if found != sha {
                return Err(format!("package bytes hash to {found}, not {sha}"));
            }
            if !library.exists() {
                let tmp = library.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&tmp, &bytes)
                    .and_then(|()| std::fs::rename(&tmp, &library))
                    .map_err(|e| format!("caching the package: {e}"))?;
            }
        } else if !library.exists() {
            return send_json(stream, &LeaseReply::NeedPackage).map_err(|e| e.to_string());
        }
        let mut held = {
            let mut cap = self.capacity.lock().unwrap_or_else(|e| e.into_inner());
            if req.cores > cap.free_cores || req.memory_mib > cap.free_memory_mib {
                return Err(format!(
                    "not enough capacity: asked {} cores / {} MiB, {} / {} free",
                    req.cores, req.memory_mib, cap.free_cores, cap.free_memory_mib
                ));
            }
            cap.free_cores -= req.cores;
            cap.free_memory_mib -= req.memory_mib;
            Held {
                mgr: self,
                cores: req.cores,
                memory_mib: req.memory_mib,
                child: None,
            }
        };
        let lease_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let t0 = Instant::now();
        let mut cmd = Command::new(&self.exe);
        cmd.arg("worker")
            .arg(format!("--lease={lease_id}"))
            .arg(format!("--memory-mib={}", req.memory_mib))
            .arg("--library")
            .arg(&library);
        cmd.args([
            "--cores",
            &req.cores.to_string(),
            "--slots",
            &req.slots.unwrap_or(8).to_string(),
        ]);
        cmd.args(["--slot-size", &req.slot_size.unwrap_or(1 << 20).to_string()]);
        cmd.arg(format!("--hot-timeout-us={}", req.hot_timeout_us));
        let socket = self.cfg.socket_dir.join(format!(
            "rfaas-{}-lease-{lease_id}.sock",
            std::process::id()
        ));
        // Shared memory only works on this host: `auto` picks it for local clients.
        let local = stream.peer_addr().map(|p| p.ip()).ok()
            == stream.local_addr().map(|l| l.ip()).ok()
            || stream.peer_addr().is_ok_and(|p| p.ip().is_loopback());
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
        match fabric {
            Fabric::Shm | Fabric::Auto => cmd.arg("--socket").arg(&socket),
            Fabric::Tcp => {
                let ip = stream.local_addr().map_err(|e| e.to_string())?.ip();
                cmd.arg("--listen").arg(format!("{ip}:0"))
            }
            Fabric::Verbs => {
                let ip = stream.local_addr().map_err(|e| e.to_string())?.ip();
                cmd.arg("--listen")
                    .arg(format!("{ip}:0"))
                    .args(["--fabric", "verbs"])
            }
        };
        // SAFETY: the closure runs in the forked child before exec and only calls `prctl`,
        // which is async-signal-safe; it allocates nothing and touches no locks.
        unsafe {
            cmd.pre_exec(|| {
                // The executor dies with the thread that holds its lease (and so with the
                // manager): clients then see the session end instead of an orphan serving on.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting an executor: {e}"))?;
        let mut out = BufReader::new(child.stdout.take().ok_or("executor stdout")?);
        held.child = Some(child);
        let mut line = String::new();
        out.read_line(&mut line)
            .map_err(|e| format!("executor start-up: {e}"))?;
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
        send_json(
            stream,
            &LeaseReply::Granted {
                lease_id,
                endpoint,
                fabric,
            },
        )
        .map_err(|e| e.to_string())?;
        // Held until the client closes the control connection, dies, (if it promised
        // heartbeats) stays silent for three periods, or the executor ends on its own (a
        // crash, or a function beyond the lease's memory): then the control connection is
        // closed, which the client sees.
        let silence = req
            .heartbeat_ms
            .map(|ms| Duration::from_millis(ms.clamp(1, 3_600_000) * 3));
        let exit = watch_lease(stream, held.child.as_mut().expect("spawned"), silence)?;
        if let Some(status) = &exit {
            tracing::warn!(lease_id, %status, "executor ended before its lease");
        }
        // The client's lease should be gone too; give the executor a moment to report.
        let stats = read_stats(
            &mut out,
            held.child.as_mut().expect("spawned"),
            Duration::from_secs(1),
        );
        drop(held);
        let _ = std::fs::remove_file(&socket);
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
        };
        self.append(&entry).map_err(|e| format!("ledger: {e}"))?;
        tracing::info!(lease_id, invocations = entry.invocations, "lease reclaimed");
        Ok(())
    }

    fn append(&self, entry: &LedgerEntry) -> std::io::Result<()> {
        let _guard = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.cfg.ledger)?;
        f.write_all(&line)?;
        f.sync_all()
    }
}

/// Waits up to `timeout` for the executor's closing `stats` line; kills it if it does not come.
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

/// Waits for the end of a lease: the client hangs up (or its connection fails), stays silent
/// for `silence`, or the executor exits by itself (returned: how it ended).
fn watch_lease(
    stream: &mut TcpStream,
    child: &mut Child,
    silence: Option<Duration>,
) -> Result<Option<String>, String> {
    /// How often the executor's liveness is checked while the client is quiet.
    const CHECK: Duration = Duration::from_millis(200);
    let tick = silence.map_or(CHECK, |s| s.min(CHECK));
    stream
        .set_read_timeout(Some(tick))
        .map_err(|e| e.to_string())?;
    let mut heard = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(_) => heard = Instant::now(),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(None),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(Some(status.to_string()));
        }
        if silence.is_some_and(|s| heard.elapsed() >= s) {
            tracing::info!("client silent past its heartbeats");
            return Ok(None);
        }
    }
}

fn read_stats(
    out: &mut BufReader<std::process::ChildStdout>,
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
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    rest.lines()
        .filter_map(|l| l.strip_prefix("stats "))
        .next_back()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(serde_json::Value::Null)
}
