//! The cluster registry service (`rfaas-executor registry`): managers register and heartbeat
//! their free capacity, clients list the live nodes. A node that stops heart-beating for the
//! configured timeout disappears. The node table is written durably (temporary file, fsync,
//! rename, fsync of the directory) on every change, and read back on start, so it survives a
//! restart (restored nodes get a fresh timeout to heartbeat again). With a `secret_file`,
//! every request must come over a connection authenticated with the cluster's shared secret
//! ([`rfaas::auth`]): unknown managers cannot register, unknown clients cannot list.

use rfaas::auth::{Accepted, AuthError, Secret};
use rfaas::transport::send_json;
use rfaas::wire::{AuthService, NodeInfo, NodeStatus, RegistryRequest, RegistryResponse};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Registry configuration (TOML). Every field has a default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// TCP address to listen on. Default `127.0.0.1:7700`.
    pub listen: String,
    /// Milliseconds without a heartbeat after which a node is dropped. Default 3000.
    pub heartbeat_timeout_ms: u64,
    /// Where the node table is kept. Default `rfaas-registry.json`.
    pub state_file: PathBuf,
    /// Most nodes registered at once. Default 4096.
    pub max_nodes: usize,
    /// The cluster's shared secret (a file only its owner may read, at least 16 bytes):
    /// managers and clients must authenticate with it. Default: none, open (a warning at
    /// start).
    pub secret_file: Option<PathBuf>,
    /// How long a client has for its whole exchange (authentication, request and answer),
    /// from connecting, ms. Default 10000.
    pub request_timeout_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            listen: "127.0.0.1:7700".into(),
            heartbeat_timeout_ms: 3000,
            state_file: "rfaas-registry.json".into(),
            max_nodes: 4096,
            secret_file: None,
            request_timeout_ms: 10_000,
        }
    }
}

impl RegistryConfig {
    /// Reads a TOML file (unknown keys are errors).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cfg: RegistryConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if cfg.heartbeat_timeout_ms == 0 || cfg.request_timeout_ms == 0 || cfg.max_nodes == 0 {
            return Err(format!(
                "{}: heartbeat_timeout_ms, request_timeout_ms and max_nodes must be positive",
                path.display()
            ));
        }
        Ok(cfg)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    info: NodeInfo,
    free_cores: u32,
    free_memory_mib: u64,
}

struct Entry {
    node: Stored,
    seen: Instant,
}

struct State {
    nodes: BTreeMap<String, Entry>,
    cfg: RegistryConfig,
    /// Moves with every change of the table: the version of a [`Snapshot`].
    version: u64,
    /// When connections were last turned away (too many pending, or out of descriptors): a
    /// node's heartbeat may have been among them.
    refusals: crate::conn::Refusals,
}

/// The node table as it is stored, at one version.
struct Snapshot {
    version: u64,
    body: Vec<u8>,
}

/// Writes snapshots to the state file, outside the table's lock (requests go on while one
/// is synced), one at a time, never an older one over a newer one. Changes that queue behind a
/// write are committed together: each offers its snapshot, and the next writer writes the
/// newest offered, which includes every older change, so the others find theirs on disk
/// (one fsync for many heartbeats, not one each).
struct Store {
    path: PathBuf,
    /// The version on disk.
    written: Mutex<u64>,
    /// The newest snapshot offered and not yet written.
    offered: Mutex<Option<Snapshot>>,
    /// State files written, and snapshots offered (for the tests).
    writes: AtomicU64,
    offers: AtomicU64,
}

impl Store {
    fn new(path: PathBuf) -> Store {
        Store {
            path,
            written: Mutex::new(0),
            offered: Mutex::new(None),
            writes: AtomicU64::new(0),
            offers: AtomicU64::new(0),
        }
    }

    /// Keeps `snap` as the next to write, unless a newer one is there.
    fn offer(&self, snap: Snapshot) {
        let mut offered = self.offered.lock().unwrap_or_else(|e| e.into_inner());
        if offered.as_ref().is_none_or(|o| o.version < snap.version) {
            *offered = Some(snap);
        }
        self.offers.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes `snap` (or a newer table) durable: written aside, fsynced, renamed over the state
    /// file, the rename fsynced.
    fn write(&self, snap: Snapshot) -> std::io::Result<()> {
        let mine = snap.version;
        self.offer(snap);
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if *written >= mine {
            // Ours is on disk, in a newer table; an offer left behind (ours, if it came after
            // that write) is not kept for nothing.
            let mut offered = self.offered.lock().unwrap_or_else(|e| e.into_inner());
            if offered.as_ref().is_some_and(|o| o.version <= *written) {
                *offered = None;
            }
            return Ok(());
        }
        // The newest offered: ours or newer (one taken by a writer before us was written,
        // or put back when its write failed, before that writer let go of `written`).
        let Some(newest) = self
            .offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Err(std::io::Error::other(
                "the node table's snapshot went missing",
            ));
        };
        match self.write_file(&newest.body) {
            Ok(()) => {
                *written = newest.version;
                self.writes.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                // For the next writer (its own change is newer, or it fails as we did).
                self.offer(newest);
                Err(e)
            }
        }
    }

    fn write_file(&self, body: &[u8]) -> std::io::Result<()> {
        let tmp = crate::aside_path(&self.path);
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Writes `snap` if there is one; `resp` unless that fails.
    fn answer(&self, resp: RegistryResponse, snap: Option<Snapshot>) -> RegistryResponse {
        match snap.map(|s| self.write(s)) {
            Some(Err(e)) => {
                tracing::error!(error = %e, file = %self.path.display(), "cannot persist the node table");
                RegistryResponse::Error("registry cannot persist its state".into())
            }
            _ => resp,
        }
    }
}

/// How much longer than `heartbeat_timeout_ms` a silent node stays listed while the registry
/// turns connections away.
const FLOOD_GRACE: Duration = Duration::from_secs(60);

impl State {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.heartbeat_timeout_ms)
    }

    /// Drops nodes whose heartbeat is overdue; whether any was dropped. While connections
    /// are being turned away (a flood of them), a node's silence is forgiven for up to
    /// [`FLOOD_GRACE`] more: its heartbeats may have been among them, and dropping every node
    /// for it would send no client anywhere. (Not for longer: whoever keeps a flood going
    /// must not keep dead nodes listed.)
    fn expire(&mut self) -> bool {
        let timeout = self.timeout();
        let before = self.nodes.len();
        let turned_away = self.refusals.since_last().is_some_and(|t| t < timeout);
        self.nodes.retain(|id, e| {
            let silent = e.seen.elapsed();
            let keep = silent < timeout || (turned_away && silent < timeout + FLOOD_GRACE);
            if !keep {
                tracing::info!(node = %id, "node stopped heart-beating; dropped");
            }
            keep
        });
        self.nodes.len() != before
    }

    /// The table after a change, to be written (by [`Store::write`], outside the lock).
    fn changed(&mut self) -> Snapshot {
        self.version += 1;
        let stored: Vec<&Stored> = self.nodes.values().map(|e| &e.node).collect();
        Snapshot {
            version: self.version,
            // Plain data: serializing cannot fail.
            body: serde_json::to_vec_pretty(&stored).unwrap_or_default(),
        }
    }

    /// Answers `req`, with the table to store if it changed (the answer is sent once it is).
    fn handle(&mut self, req: RegistryRequest) -> (RegistryResponse, Option<Snapshot>) {
        let changed_by_expiry = self.expire();
        let (resp, changed) = match req {
            RegistryRequest::Register(info) => match validate(&info) {
                Err(e) => (RegistryResponse::Error(e), false),
                Ok(())
                    if !self.nodes.contains_key(&info.id)
                        && self.nodes.len() >= self.cfg.max_nodes =>
                {
                    (
                        RegistryResponse::Error(format!(
                            "registry full ({} nodes)",
                            self.cfg.max_nodes
                        )),
                        false,
                    )
                }
                Ok(())
                    if self
                        .nodes
                        .get(&info.id)
                        .is_some_and(|e| e.node.info.address != info.address) =>
                {
                    // A live node's id (expired ones are gone): taken from another address, it
                    // would send that node's clients elsewhere.
                    let e = &self.nodes[&info.id];
                    tracing::warn!(node = %info.id, address = %info.address, registered = %e.node.info.address, "refused to register a live node's id from another address");
                    (
                        RegistryResponse::Error(format!(
                            "node `{}` is registered at {} (heard from {} ms ago), not at {}: a node id names one node; a node that moved is listed at its new address once the old entry expires ({} ms without heartbeats) or is deregistered",
                            info.id,
                            e.node.info.address,
                            e.seen.elapsed().as_millis(),
                            info.address,
                            self.cfg.heartbeat_timeout_ms
                        )),
                        false,
                    )
                }
                Ok(()) => {
                    tracing::info!(node = %info.id, address = %info.address, cores = info.cores, "node registered");
                    let node = Stored {
                        free_cores: info.cores,
                        free_memory_mib: info.memory_mib,
                        info,
                    };
                    self.nodes.insert(
                        node.info.id.clone(),
                        Entry {
                            node,
                            seen: Instant::now(),
                        },
                    );
                    (RegistryResponse::Ok, true)
                }
            },
            RegistryRequest::Heartbeat {
                id,
                address,
                free_cores,
                free_memory_mib,
            } => match self.nodes.get_mut(&id) {
                None => (
                    RegistryResponse::Error(format!("unknown node `{id}`: register first")),
                    false,
                ),
                // Not this node's entry: it must not keep another's alive. (A heartbeat
                // without an address, from a manager older than the check, is not checked.)
                Some(e) if address.as_ref().is_some_and(|a| *a != e.node.info.address) => {
                    let address = address.unwrap_or_default();
                    tracing::warn!(node = %id, address = %address, registered = %e.node.info.address, "refused a heartbeat for a node registered at another address");
                    (
                        RegistryResponse::Error(format!(
                            "node `{id}` is registered at {}, not at {address}: another process registered this id",
                            e.node.info.address
                        )),
                        false,
                    )
                }
                Some(e)
                    if free_cores > e.node.info.cores
                        || free_memory_mib > e.node.info.memory_mib =>
                {
                    (
                        RegistryResponse::Error(format!(
                            "node `{id}` reports {free_cores} free cores / {free_memory_mib} MiB, more than its {} / {}",
                            e.node.info.cores, e.node.info.memory_mib
                        )),
                        false,
                    )
                }
                Some(e) => {
                    let changed = (e.node.free_cores, e.node.free_memory_mib)
                        != (free_cores, free_memory_mib);
                    e.node.free_cores = free_cores;
                    e.node.free_memory_mib = free_memory_mib;
                    e.seen = Instant::now();
                    (RegistryResponse::Ok, changed)
                }
            },
            RegistryRequest::Deregister { id } => match self.nodes.remove(&id) {
                Some(_) => {
                    tracing::info!(node = %id, "node left");
                    (RegistryResponse::Ok, true)
                }
                None => (
                    RegistryResponse::Error(format!("unknown node `{id}`")),
                    false,
                ),
            },
            RegistryRequest::List => {
                let mut nodes: Vec<NodeStatus> = self
                    .nodes
                    .values()
                    .map(|e| NodeStatus {
                        info: e.node.info.clone(),
                        free_cores: e.node.free_cores,
                        free_memory_mib: e.node.free_memory_mib,
                        age_ms: e.seen.elapsed().as_millis() as u64,
                    })
                    .collect();
                nodes.sort_by(|a, b| {
                    b.free_cores
                        .cmp(&a.free_cores)
                        .then_with(|| a.info.id.cmp(&b.info.id))
                });
                (RegistryResponse::Nodes(nodes), false)
            }
        };
        let snap = (changed || changed_by_expiry).then(|| self.changed());
        (resp, snap)
    }
}

fn validate(info: &NodeInfo) -> Result<(), String> {
    if info.id.is_empty() || info.id.len() > 128 || info.id.chars().any(char::is_control) {
        return Err("node id must be 1 to 128 printable characters".into());
    }
    if info.address.is_empty() || info.address.len() > 256 {
        return Err("node address must be 1 to 256 characters".into());
    }
    // Clients connect to it from elsewhere: a wildcard or a zero port would send them to
    // themselves, or nowhere.
    if let Ok(a) = info.address.parse::<SocketAddr>()
        && (a.ip().is_unspecified() || a.port() == 0)
    {
        return Err(format!(
            "node address {} cannot be connected to (a wildcard address or port 0): set the manager's `advertise`",
            info.address
        ));
    }
    if info.cores == 0 {
        return Err("a node must offer at least one core".into());
    }
    Ok(())
}

/// Loads the persisted node table (missing file: empty). Restored nodes count as just seen.
fn load(cfg: &RegistryConfig) -> Result<BTreeMap<String, Entry>, String> {
    let text = match std::fs::read(&cfg.state_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("{}: {e}", cfg.state_file.display())),
    };
    let stored: Vec<Stored> = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: corrupt node table: {e}", cfg.state_file.display()))?;
    Ok(stored
        .into_iter()
        .filter(|s| validate(&s.info).is_ok())
        .map(|s| {
            (
                s.info.id.clone(),
                Entry {
                    node: s,
                    seen: Instant::now(),
                },
            )
        })
        .collect())
}

/// Runs the registry until the listener fails; calls `ready` with the bound address.
pub fn serve(cfg: RegistryConfig, ready: impl FnOnce(SocketAddr)) -> Result<(), String> {
    let secret = cfg
        .secret_file
        .as_deref()
        .map(Secret::from_file)
        .transpose()
        .map_err(|e| e.to_string())?;
    let nodes = load(&cfg)?;
    let listener =
        TcpListener::bind(&cfg.listen).map_err(|e| format!("listening on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(address = %addr, restored = nodes.len(), "registry ready");
    match &secret {
        Some(_) => tracing::info!("requests authenticated with the shared secret"),
        None => tracing::warn!(
            address = %addr,
            "no secret_file configured: the registry is unauthenticated; anyone who can reach this address can register nodes and steer clients to them"
        ),
    }
    let secret = Arc::new(secret);
    let tick = Duration::from_millis(cfg.heartbeat_timeout_ms / 4).max(Duration::from_millis(5));
    let timeout = Duration::from_millis(cfg.request_timeout_ms);
    let store = Arc::new(Store::new(cfg.state_file.clone()));
    let limit = crate::conn::PendingLimit::new(crate::conn::MAX_PENDING);
    let state = Arc::new(Mutex::new(State {
        nodes,
        cfg,
        version: 0,
        refusals: limit.refusals(),
    }));
    {
        // Expire silent nodes even when nobody asks.
        let state = Arc::downgrade(&state);
        let store = store.clone();
        std::thread::spawn(move || {
            while let Some(s) = state.upgrade() {
                let snap = {
                    let mut st = s.lock().unwrap_or_else(|e| e.into_inner());
                    st.expire().then(|| st.changed())
                };
                store.answer(RegistryResponse::Ok, snap);
                drop(s);
                std::thread::sleep(tick);
            }
        });
    }
    ready(addr);
    crate::conn::accept_loop(
        &listener,
        "rfaas-registry",
        limit,
        move |stream, _pending| {
            if let Err(e) = serve_one(stream, &state, &store, secret.as_ref().as_ref(), timeout) {
                tracing::debug!(error = %e, "registry request failed");
            }
        },
    );
    Ok(())
}

/// Answers one connection's request. Nothing of it is looked at before the client is
/// authenticated, when the registry has a secret.
fn serve_one(
    stream: TcpStream,
    state: &Mutex<State>,
    store: &Store,
    secret: Option<&Secret>,
    timeout: Duration,
) -> Result<(), AuthError> {
    let mut stream = crate::conn::Deadlined::new(&stream, timeout);
    let (body, mut auth) = match rfaas::auth::accept(&mut stream, secret, AuthService::Registry) {
        Ok(Accepted::Open(body)) => (body, None),
        Ok(Accepted::Authenticated(ch, body)) => (body, Some(ch)),
        Err(e) => {
            let why = match &e {
                AuthError::Transport(_) => format!("bad request: {e}"),
                _ => {
                    let peer = stream
                        .peer_addr()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    tracing::warn!(%peer, error = %e, "refused a control connection");
                    e.to_string()
                }
            };
            send_json(&mut stream, &RegistryResponse::Error(why))?;
            return Err(e);
        }
    };
    let resp = match serde_json::from_slice::<RegistryRequest>(&body) {
        Ok(req) => {
            let (resp, snap) = state.lock().unwrap_or_else(|e| e.into_inner()).handle(req);
            store.answer(resp, snap)
        }
        Err(e) => RegistryResponse::Error(format!("bad request: malformed message: {e}")),
    };
    match &mut auth {
        Some(ch) => ch.send_json(&mut stream, &resp),
        None => Ok(send_json(&mut stream, &resp)?),
    }
}

#[cfg(test)]
mod tests;
