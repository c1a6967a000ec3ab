//! Leases negotiated with a node's manager: ask for cores, ship the function package if the
//! node lacks it, and get a [`Lease`] on the executor process the manager starts for you.
//!
//! With a shared secret ([`LeaseSpec::secret`], or the file named by `$RFAAS_SECRET_FILE`) the
//! control connection is authenticated both ways (see [`crate::auth`]); without one it is
//! plain, and a manager that requires authentication refuses.

use crate::auth::{AuthError, Channel, Secret};
use crate::lease::{Error, Lease, LeaseOptions, Shape, connect_within};
use crate::transport::{TransportError, recv_json, send_json};
use crate::watchdog::Watchdog;
use crate::wire::{AuthService, Fabric, LeaseNotice, LeaseReply, LeaseRequest, NodeStatus};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to lease.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LeaseSpec {
    /// Cores (workers). Default 1.
    pub cores: u32,
    /// Memory to reserve, MiB. Default 256.
    pub memory_mib: u64,
    /// Hot timeout, µs (-1 always hot, 0 always warm). Default 10 000.
    pub hot_timeout_us: i64,
    /// Fabric. Default `Auto`: shared memory when the node is this host, TCP otherwise.
    pub fabric: Fabric,
    /// Slots per worker (default: the executor's).
    pub slots: Option<u32>,
    /// Bytes per slot (default: the executor's).
    pub slot_size: Option<u32>,
    /// Options of the resulting lease.
    pub options: LeaseOptions,
    /// Bound on each exchange with a manager, from connecting to its answer (the package's
    /// upload included, when it asks for it): a manager that has not answered by then is
    /// given up on. [`lease_anywhere`] bounds its whole search over the nodes by it too (each
    /// node gets what is left; the session's handshake after a grant is bounded by
    /// [`LeaseOptions::handshake_timeout`]). Default 60 s.
    pub negotiation_timeout: Duration,
    /// The cluster's shared secret, to authenticate to managers and the registry that have
    /// one. Default `None`: the secret file named by `$RFAAS_SECRET_FILE` if that is set,
    /// else none (plain control connections).
    pub secret: Option<Secret>,
}

impl Default for LeaseSpec {
    fn default() -> Self {
        LeaseSpec {
            cores: 1,
            memory_mib: 256,
            hot_timeout_us: 10_000,
            fabric: Fabric::Auto,
            slots: None,
            slot_size: None,
            options: LeaseOptions::default(),
            negotiation_timeout: Duration::from_secs(60),
            secret: None,
        }
    }
}

/// A lease on an executor a manager started; dereferences to [`Lease`]. Dropping it ends the
/// session and then tells the manager, which reclaims the cores.
#[derive(Debug)]
pub struct ManagedLease {
    lease: Option<Lease>,
    control: TcpStream,
    lease_id: u64,
    heartbeat: Option<std::thread::JoinHandle<()>>,
    /// The latest notice from the manager, kept by the heartbeat thread.
    notice: Arc<Mutex<Option<LeaseNotice>>>,
}

/// How often a managed lease tells its manager the client is alive.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// How long a notice that has begun to arrive may take to arrive whole (the manager writes it
/// at once: only a manager that stops mid-message takes this long).
const NOTICE_READ: Duration = Duration::from_secs(5);

/// Sends a byte on the control connection every [`HEARTBEAT`] until that fails or the
/// connection is shut down (the lease's drop), which ends the wait at once. Between beats it
/// listens for the manager's notices ([`LeaseNotice`], opened with `auth` on an authenticated
/// connection) and keeps the latest in `notice`; after a message it cannot read (a manager
/// that is not ours, or a damaged connection) it stops listening, and only beats.
fn start_heartbeat(
    control: &TcpStream,
    mut auth: Option<Channel>,
    notice: Arc<Mutex<Option<LeaseNotice>>>,
) -> Result<std::thread::JoinHandle<()>, Error> {
    use std::io::Read;
    let mut beat = control.try_clone().map_err(TransportError::Io)?;
    std::thread::Builder::new()
        .name("rfaas-lease-heartbeat".into())
        .spawn(move || {
            let mut listening = true;
            // Beats go out on time whatever the manager writes (a manager that streams bytes
            // gets no burst of beats back).
            let mut next = Instant::now();
            loop {
                let now = Instant::now();
                if now >= next {
                    if beat.write_all(&[0]).is_err() {
                        break;
                    }
                    next = now + HEARTBEAT;
                }
                let wait = next
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                if beat.set_read_timeout(Some(wait)).is_err() {
                    break;
                }
                let mut b = [0u8; 1];
                // Waits for the next beat, unless the manager writes (or ends the connection).
                match beat.peek(&mut b) {
                    Ok(0) => break,
                    Ok(_) if listening => {
                        let _ = beat.set_read_timeout(Some(NOTICE_READ));
                        let got = match &mut auth {
                            Some(ch) => ch.recv_json(&mut beat).map_err(|e| e.to_string()),
                            None => recv_json(&mut beat).map_err(|e| e.to_string()),
                        };
                        match got {
                            Ok(n) => {
                                tracing::info!(notice = ?n, "the manager's notice");
                                *notice.lock().unwrap_or_else(|e| e.into_inner()) = Some(n);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "an unreadable message from the manager: no longer listening for notices");
                                listening = false;
                            }
                        }
                    }
                    Ok(_) => {
                        let mut skip = [0u8; 4096];
                        if matches!(beat.read(&mut skip), Ok(0)) {
                            break;
                        }
                    }
                    // The beat's time.
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) => {}
                    // The connection failed: the lease is over.
                    Err(_) => break,
                }
            }
        })
        .map_err(|e| Error::Transport(TransportError::Io(e)))
}

impl ManagedLease {
    /// The manager's id for this lease (as in its ledger).
    pub fn id(&self) -> u64 {
        self.lease_id
    }

    /// The latest notice from the lease's manager, if it sent one: such as
    /// [`LeaseNotice::Stopping`], the manager was asked to stop and ends this lease within the
    /// time it says (calls then fail with [`Error::ExecutorGone`]) unless it is dropped first.
    /// A client that sees it can finish its work, or lease elsewhere. Heard within about half a
    /// second of the manager sending it.
    pub fn notice(&self) -> Option<LeaseNotice> {
        self.notice
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl std::ops::Deref for ManagedLease {
    type Target = Lease;
    fn deref(&self) -> &Lease {
        self.lease.as_ref().expect("present until drop")
    }
}

impl Drop for ManagedLease {
    fn drop(&mut self) {
        drop(self.lease.take());
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
    }
}

/// The spec's secret, else the one `$RFAAS_SECRET_FILE` names.
fn resolve_secret(spec: &LeaseSpec) -> Result<Option<Secret>, Error> {
    match &spec.secret {
        Some(s) => Ok(Some(s.clone())),
        None => Secret::from_env().map_err(Error::Secret),
    }
}

/// An authentication failure as a lease error: the transport's own, or a refusal with the
/// reason (the manager's words, or what failed to verify).
fn auth_error(e: AuthError) -> Error {
    match e {
        AuthError::Transport(t) => Error::Transport(t),
        other => Error::Refused(other.to_string()),
    }
}

/// The reason in a manager's plain refusal.
fn lease_refusal(frame: &[u8]) -> Option<String> {
    match serde_json::from_slice(frame).ok()? {
        LeaseReply::Refused(why) => Some(why),
        _ => None,
    }
}

/// One control connection to a manager: plain, or sealed after an authentication handshake.
struct Control<'s> {
    stream: &'s mut TcpStream,
    auth: Option<Channel>,
}

impl<'s> Control<'s> {
    fn open(stream: &'s mut TcpStream, secret: Option<&Secret>) -> Result<Self, Error> {
        let auth = match secret {
            Some(s) => Some(
                Channel::connect(&mut *stream, s, AuthService::Lease, lease_refusal)
                    .map_err(auth_error)?,
            ),
            None => None,
        };
        Ok(Control { stream, auth })
    }

    fn send(&mut self, request: &LeaseRequest) -> Result<(), Error> {
        match &mut self.auth {
            Some(ch) => ch.send_json(self.stream, request).map_err(auth_error),
            None => Ok(send_json(self.stream, request)?),
        }
    }

    fn recv(&mut self) -> Result<LeaseReply, Error> {
        match &mut self.auth {
            Some(ch) => ch.recv_json(self.stream).map_err(auth_error),
            None => Ok(recv_json(self.stream)?),
        }
    }
}

/// Finds a package directory's library and its SHA-256 (the `<library>.sha256` file that
/// `cargo xtask package` writes).
fn package_files(dir: &Path) -> Result<(PathBuf, String), Error> {
    let bad = |why: String| Error::Package(format!("{}: {why}", dir.display()));
    if dir.is_file() {
        return Err(bad(
            "is a file: give the package's directory (its library and `<library>.sha256`, as \
             `cargo xtask package` writes them; docs/functions.md)"
                .into(),
        ));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| bad(e.to_string()))?;
    let mut hashes: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sha256"))
        .collect();
    hashes.sort();
    if hashes.len() > 1 {
        return Err(bad(format!(
            "{} hash files ({}): a package holds one library",
            hashes.len(),
            hashes.join(", ")
        )));
    }
    if let Some(name) = hashes.pop() {
        let lib = name.strip_suffix(".sha256").unwrap_or_default();
        let text = std::fs::read_to_string(dir.join(&name)).map_err(|e| bad(e.to_string()))?;
        let sha = text
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!("{name} holds no SHA-256")));
        }
        return Ok((dir.join(lib), sha));
    }
    Err(bad(
        "no <library>.sha256 file (was it written by `cargo xtask package`? docs/functions.md \
         says how to make one by hand)"
            .into(),
    ))
}

/// One exchange with the manager at `manager`, bounded by `dog`: connect, (authenticate,)
/// send `request`, read the answer; send the package and read the verdict if the request
/// announced its size and the manager asks for it. The control connection and the answer.
fn negotiate(
    manager: &str,
    request: &LeaseRequest,
    secret: Option<&Secret>,
    library: &Path,
    dog: &Watchdog,
) -> Result<(TcpStream, LeaseReply, Option<Channel>), Error> {
    let mut control = connect_within("manager", manager, dog)?;
    control
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(TransportError::Io)?;
    let mut ctl = Control::open(&mut control, secret)?;
    ctl.send(request)?;
    let mut reply = ctl.recv()?;
    if request.package_len.is_some() && reply == LeaseReply::NeedPackage {
        // The size was accepted: send the bytes, then hear the verdict. The bytes are not
        // sealed: the manager checks them against the SHA-256 of the (sealed) request.
        let bytes = std::fs::read(library)
            .map_err(|e| Error::Package(format!("{}: {e}", library.display())))?;
        // Checked here, before the upload: a library rebuilt since it was packaged would be
        // sent whole only to be refused.
        use sha2::Digest;
        let found = crate::auth::to_hex(&sha2::Sha256::digest(&bytes));
        if found != request.package_sha256 || Some(bytes.len() as u64) != request.package_len {
            return Err(Error::Package(format!(
                "{} changed since it was packaged (its SHA-256 is now {found}, the package's \
                 .sha256 says {}): package it again",
                library.display(),
                request.package_sha256
            )));
        }
        ctl.stream.write_all(&bytes).map_err(TransportError::Io)?;
        reply = ctl.recv()?;
    }
    // Kept for the manager's notices after a grant.
    let auth = ctl.auth.take();
    Ok((control, reply, auth))
}

/// Asks the manager at `manager` (`host:port`) for a lease running the package in `package`
/// (a directory written by `cargo xtask package`), sending the library if the node lacks it.
pub fn lease_from(manager: &str, package: &Path, spec: &LeaseSpec) -> Result<ManagedLease, Error> {
    lease_from_by(manager, &package_files(package)?, spec, None)
}

/// [`lease_from`] of the package's library and SHA-256 ([`package_files`]), with every
/// exchange with the manager over by `deadline` if one is given.
fn lease_from_by(
    manager: &str,
    (library, sha): &(PathBuf, String),
    spec: &LeaseSpec,
    deadline: Option<Instant>,
) -> Result<ManagedLease, Error> {
    if spec.fabric == Fabric::Verbs && !cfg!(feature = "verbs") {
        return Err(Error::Refused(
            "RDMA leases need rfaas built with the `verbs` feature".into(),
        ));
    }
    if spec.negotiation_timeout.is_zero() {
        return Err(Error::Handshake(
            "LeaseSpec::negotiation_timeout is zero".into(),
        ));
    }
    // A geometry fully given is checked against the client's memory limit before the
    // manager ships a package or starts anything.
    if let (Some(slots), Some(size)) = (spec.slots, spec.slot_size) {
        let areas = u64::from(spec.cores) * u64::from(slots) * u64::from(size);
        if areas > spec.options.max_slot_memory as u64 {
            return Err(Error::Refused(format!(
                "{} cores x {slots} slots x {size} bytes need {areas} bytes of result areas, \
                 over this client's limit of {} (LeaseOptions::max_slot_memory)",
                spec.cores, spec.options.max_slot_memory
            )));
        }
    }
    let secret = resolve_secret(spec)?;
    let mut request = LeaseRequest {
        cores: spec.cores,
        memory_mib: spec.memory_mib,
        hot_timeout_us: spec.hot_timeout_us,
        fabric: spec.fabric,
        package_sha256: sha.clone(),
        package_len: None,
        slots: spec.slots,
        slot_size: spec.slot_size,
        heartbeat_ms: Some(HEARTBEAT.as_millis() as u64),
    };
    for attempt in 0..2 {
        // One deadline for the whole exchange: a manager that drips its answer is cut off.
        let mut timeout = spec.negotiation_timeout;
        if let Some(deadline) = deadline {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
            if timeout.is_zero() {
                return Err(Error::Refused(OUT_OF_TIME.into()));
            }
        }
        let dog = Watchdog::start(timeout)?;
        let exchange = negotiate(manager, &request, secret.as_ref(), library, &dog);
        let (control, reply, auth) = dog.finish(exchange, "the manager did not answer")?;
        match reply {
            LeaseReply::Granted {
                lease_id,
                endpoint,
                fabric,
                token,
            } => {
                control.set_read_timeout(None).map_err(TransportError::Io)?;
                // Held for the lease's life: a manager whose host vanished ends it (the
                // heartbeats' writes fail) within about 25 s, as the manager watches us.
                if let Err(e) = crate::sys::hold_keepalive(&control) {
                    tracing::warn!(error = %e, "no keepalive on the manager's control connection");
                }
                let fits = match spec.fabric {
                    Fabric::Auto => matches!(fabric, Fabric::Shm | Fabric::Tcp),
                    asked => fabric == asked,
                };
                if !fits {
                    return Err(Error::Handshake(format!(
                        "asked the manager for fabric {:?}, it granted {fabric:?}",
                        spec.fabric
                    )));
                }
                // The executor admits only the holder of the grant's token, and must offer
                // the geometry we asked for.
                let mut options = spec.options.clone();
                if token.is_some() {
                    options.token = token;
                }
                options.expect = Some(Shape {
                    workers: spec.cores,
                    slots: spec.slots,
                    slot_size: spec.slot_size,
                });
                // Heartbeats start with the grant: the manager counts the client's silence
                // from then, and the session's handshake may take longer than it allows
                // (three missed beats). Should the handshake fail, dropping `managed` stops
                // them and hangs up.
                let notice = Arc::default();
                let heartbeat = start_heartbeat(&control, auth, Arc::clone(&notice))?;
                let mut managed = ManagedLease {
                    lease: None,
                    control,
                    lease_id,
                    heartbeat: Some(heartbeat),
                    notice,
                };
                managed.lease = Some(match fabric {
                    Fabric::Tcp => Lease::connect_tcp(&endpoint, &options)?,
                    #[cfg(feature = "verbs")]
                    Fabric::Verbs => Lease::connect_verbs(
                        &endpoint,
                        &options,
                        &crate::transport::verbs::VerbsConfig::from_env()?,
                    )?,
                    #[cfg(not(feature = "verbs"))]
                    Fabric::Verbs => {
                        return Err(Error::Handshake(
                            "granted an RDMA lease, but rfaas was built without the `verbs` feature"
                                .into(),
                        ));
                    }
                    Fabric::Shm | Fabric::Auto => Lease::connect_with(&endpoint, &options)?,
                });
                return Ok(managed);
            }
            LeaseReply::NeedPackage if attempt == 0 => {
                let len = std::fs::metadata(library)
                    .map_err(|e| Error::Package(format!("{}: {e}", library.display())))?
                    .len();
                request.package_len = Some(len);
            }
            LeaseReply::NeedPackage => {
                return Err(Error::Handshake(
                    "the manager asked for the package twice".into(),
                ));
            }
            LeaseReply::Refused(why) => return Err(Error::Refused(why)),
        }
    }
    Err(Error::Handshake(
        "no lease after sending the package".into(),
    ))
}

/// What a node not tried for lack of time is reported with.
const OUT_OF_TIME: &str = "not tried: the negotiation timeout had passed";

/// Leases from whichever registered node can take `spec`: asks the registry at `registry` for
/// the live nodes (most free cores first) and tries them in turn, their negotiations all
/// within `spec.negotiation_timeout` from the registry's request (a node that does not answer
/// takes what is left, not a timeout of its own per node); the session's handshake with the
/// executor of a node that grants has `spec.options.handshake_timeout` of its own. The error
/// lists every node's refusal when none can.
pub fn lease_anywhere(
    registry: &str,
    package: &Path,
    spec: &LeaseSpec,
) -> Result<ManagedLease, Error> {
    let mut spec = spec.clone();
    spec.secret = resolve_secret(&spec)?;
    let spec = &spec;
    // A package that cannot be used is said at once (not once per node, and not behind
    // "no node has room"); it is read once for all the nodes tried.
    let files = package_files(package)?;
    let mut client = crate::registry::RegistryClient::new(registry);
    if let Some(s) = &spec.secret {
        client = client.with_secret(s.clone());
    }
    // (Cut like the watchdog's: a `Duration::MAX` is a long time, not a panic.)
    let deadline = Instant::now() + spec.negotiation_timeout.min(crate::watchdog::LONGEST);
    let nodes = client.list().map_err(|error| Error::Registry {
        address: registry.to_owned(),
        error,
    })?;
    let mut refusals = Vec::new();
    for node in nodes
        .iter()
        .filter(|n| n.free_cores >= spec.cores && n.free_memory_mib >= spec.memory_mib)
        .filter(|n| spec.fabric != Fabric::Verbs || n.info.rdma)
    {
        if Instant::now() >= deadline {
            refusals.push(format!("{}: {OUT_OF_TIME}", node.info.id));
            continue;
        }
        match lease_from_by(&node.info.address, &files, spec, Some(deadline)) {
            Ok(lease) => return Ok(lease),
            // The package's fault, not the node's: no other node would do better.
            Err(e @ Error::Package(_)) => return Err(e),
            Err(e) => refusals.push(format!("{}: {e}", node.info.id)),
        }
    }
    if refusals.is_empty() {
        let rdma = if spec.fabric == Fabric::Verbs {
            " with RDMA"
        } else {
            ""
        };
        // Busy nodes (wait, or ask for less) or none that could ever grant it (ask for less).
        let fits = |n: &NodeStatus| {
            n.info.cores >= spec.cores
                && n.info.memory_mib >= spec.memory_mib
                && (spec.fabric != Fabric::Verbs || n.info.rdma)
        };
        refusals.push(if nodes.is_empty() {
            format!("the registry at {registry} lists no live node")
        } else if nodes.iter().any(fits) {
            format!(
                "no node{rdma} has {} cores and {} MiB free now (of {} live; the leases \
                 running there must end first)",
                spec.cores,
                spec.memory_mib,
                nodes.len()
            )
        } else {
            // The node that comes closest: most cores, then most memory, of those with RDMA
            // if it is asked for.
            let largest = nodes
                .iter()
                .filter(|n| spec.fabric != Fabric::Verbs || n.info.rdma)
                .max_by_key(|n| (n.info.cores, n.info.memory_mib))
                .map_or_else(
                    || "none has RDMA".to_owned(),
                    |n| {
                        format!(
                            "the largest, {}: {} cores, {} MiB",
                            n.info.id, n.info.cores, n.info.memory_mib
                        )
                    },
                );
            format!(
                "no node{rdma} has {} cores and {} MiB at all (of {} live; {largest})",
                spec.cores,
                spec.memory_mib,
                nodes.len(),
            )
        });
    }
    Err(Error::Refused(refusals.join("; ")))
}
