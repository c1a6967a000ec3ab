//! A cgroup per lease (the manager's `cgroups = true`): each lease's executor, and everything
//! it starts, runs in a control group of its own, which
//!
//! - holds the lease to its memory, counting what the executor's own limit (`RLIMIT_DATA`)
//!   does not: shared memory, memory files, `tmpfs` pages, the kernel's memory for it
//!   (`memory.max`, or `memory.limit_in_bytes` under cgroup v1);
//! - holds it to its cores: the `cpuset` is the lease's pinned CPUs, so a function cannot move
//!   its threads onto other leases' cores with `sched_setaffinity`;
//! - bounds its tasks (`pids.max`), a fork bomb included;
//! - ends whole with the lease: every process in it is killed (`cgroup.kill`, or under the
//!   freezer, so that no pid is reused between being listed and killed), wherever in the
//!   process tree it moved (a session of its own, a daemon's double fork).
//!
//! The cgroups sit in a directory of this manager's, `rfaas-<pid>.<start time>`, under the
//! cgroup the manager runs in (for cgroup v2, the delegated one a service manager gives it). A
//! manager that starts finds the directories of managers that died (no process of their pid
//! and start time runs) and ends their leases' processes, which outlive a manager killed
//! outright.
//!
//! Nothing here is on the invocation path: a lease's cgroup is made before its executor starts
//! and removed after it ends.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A hierarchy a lease's cgroup sits in: cgroup v2's one, or one v1 controller's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// cgroup v2 with the `memory`, `pids` and `cpuset` controllers.
    Unified,
    Memory,
    Pids,
    Cpuset,
    /// cgroup v1's freezer, used to kill a lease's processes without racing pid reuse.
    Freezer,
    /// cgroup v1's CPU accounting (optional: the ledger's `cpu_us`).
    Cpuacct,
}

/// The v1 controllers a lease needs, with the name `/proc/self/cgroup` and mount options use.
const V1: [(Role, &str); 4] = [
    (Role::Memory, "memory"),
    (Role::Pids, "pids"),
    (Role::Cpuset, "cpuset"),
    (Role::Freezer, "freezer"),
];

/// The v2 controllers a lease needs.
const V2: [&str; 3] = ["memory", "pids", "cpuset"];

/// What enables them for the cgroups under one (`cgroup.subtree_control`).
const ENABLE: &str = "+memory +pids +cpuset";

/// The prefix of a manager's directory, `rfaas-<pid>.<start time>`.
const PREFIX: &str = "rfaas-";

/// How long a lease's end waits for its processes to go before it says so and goes on.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// A cgroup file system as `/proc/self/mountinfo` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The cgroup path mounted (`/` unless a part of the hierarchy is bound here).
    pub root: String,
    /// Where it is mounted.
    pub point: PathBuf,
    /// cgroup2 (else v1).
    pub v2: bool,
    /// The super-block options (for v1, the controllers, such as `rw,memory`).
    pub options: Vec<String>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup mounts in the text of `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mut rest = after.split(' ');
            let fstype = rest.next()?;
            let _source = rest.next()?;
            let options = rest.next().unwrap_or("");
            if fields.len() < 5 || !matches!(fstype, "cgroup" | "cgroup2") {
                return None;
            }
            Some(Mount {
                root: unescape(fields[3]),
                point: PathBuf::from(unescape(fields[4])),
                v2: fstype == "cgroup2",
                options: options.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// The lines of `/proc/self/cgroup`: (the controllers, empty for v2; the path).
pub fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            Some((controllers, path.to_owned()))
        })
        .collect()
}

/// The directory of cgroup `path` in `mount`, if the mount shows it.
fn dir_in(mount: &Mount, path: &str) -> Option<PathBuf> {
    let rel = if mount.root == "/" {
        path
    } else {
        let rest = path.strip_prefix(mount.root.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest
    };
    let rel = rel.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    Some(if rel.is_empty() {
        mount.point.clone()
    } else {
        mount.point.join(rel)
    })
}

/// Where this process's cgroups are, for leases' cgroups to go under: cgroup v2's if its
/// cgroup there has the `memory`, `pids` and `cpuset` controllers (`controllers` reads a
/// directory's `cgroup.controllers`), else cgroup v1's memory, pids, cpuset and freezer
/// hierarchies. The error says what is missing.
pub fn locate(
    proc_cgroup: &str,
    mountinfo: &str,
    controllers: impl Fn(&Path) -> Option<String>,
) -> Result<Vec<(Role, PathBuf)>, String> {
    let lines = parse_proc_cgroup(proc_cgroup);
    let mounts = parse_mountinfo(mountinfo);
    let mut v2_why = "no cgroup2 file system is mounted".to_owned();
    if let Some((_, path)) = lines.iter().find(|(c, _)| c.is_empty()) {
        for m in mounts.iter().filter(|m| m.v2) {
            let Some(dir) = dir_in(m, path) else { continue };
            let have = controllers(&dir).unwrap_or_default();
            let missing: Vec<&str> = V2
                .into_iter()
                .filter(|c| !have.split_whitespace().any(|h| h == *c))
                .collect();
            if missing.is_empty() {
                return Ok(vec![(Role::Unified, dir)]);
            }
            v2_why = format!(
                "cgroup v2 at {} lacks the {} controller(s) (they are not delegated to this cgroup, or bound to cgroup v1)",
                dir.display(),
                missing.join(", ")
            );
        }
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for (role, name) in V1.into_iter().chain([(Role::Cpuacct, "cpuacct")]) {
        let dir = lines
            .iter()
            .filter(|(c, _)| c.iter().any(|c| c == name))
            .find_map(|(_, path)| {
                mounts
                    .iter()
                    .filter(|m| !m.v2 && m.options.iter().any(|o| o == name))
                    // `cpuacct` mounted with `cpu` would give each lease a scheduling group
                    // of its own (its CPU shares against the rest of the node): not used.
                    .filter(|m| role != Role::Cpuacct || !m.options.iter().any(|o| o == "cpu"))
                    .find_map(|m| dir_in(m, path))
            });
        match dir {
            Some(d) => found.push((role, d)),
            None if role == Role::Cpuacct => {}
            None => missing.push(name),
        }
    }
    if missing.is_empty() {
        return Ok(found);
    }
    Err(format!(
        "no cgroup hierarchy to put leases in: {v2_why}; cgroup v1 lacks the {} controller(s)",
        missing.join(", ")
    ))
}

/// Where this process's cgroups are ([`locate`] on its `/proc` files).
fn here() -> Result<Vec<(Role, PathBuf)>, String> {
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"));
    locate(
        &read("/proc/self/cgroup")?,
        &read("/proc/self/mountinfo")?,
        |dir| std::fs::read_to_string(dir.join("cgroup.controllers")).ok(),
    )
}

/// Whether a manager started by this process, as this user, could put leases in cgroups: a
/// hierarchy with the controllers, and root (a delegated subtree is not looked for); under
/// cgroup v2, a cgroup that passes the controllers on already, or the root one (a manager
/// started by us lands in our cgroup, with us: it could not enable them). Says why not. For
/// tests, which must not make a second [`Cgroups`] in one process.
pub fn available() -> Result<(), String> {
    let found = here()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    if let [(Role::Unified, dir)] = found.as_slice() {
        // Only the root cgroup has no type.
        if !passes_on(dir) && dir.join("cgroup.type").exists() {
            return Err(format!(
                "cgroup v2 at {} does not pass its controllers on, and a manager started here would share it with this process",
                dir.display()
            ));
        }
    }
    Ok(())
}

/// The directories of this process's cgroups that a manager started by it would use, one per
/// hierarchy (for tests that set up a delegated cgroup for such a manager).
pub fn hierarchies() -> Result<Vec<PathBuf>, String> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (_, d) in here()? {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    Ok(dirs)
}

/// Writes `value` to the control file `dir/name`.
fn put(dir: &Path, name: &str, value: &str) -> Result<(), String> {
    write(dir, name, value)
        .map_err(|e| format!("writing {value:?} to {}: {e}", dir.join(name).display()))
}

/// [`put`], with the error as the kernel gave it.
fn write(dir: &Path, name: &str, value: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(name))
        .and_then(|mut f| f.write_all(value.as_bytes()))
}

/// Whether cgroup v2 `dir` passes on the controllers leases need (to cgroups under it).
fn passes_on(dir: &Path) -> bool {
    let enabled = get(dir, "cgroup.subtree_control").unwrap_or_default();
    V2.iter()
        .all(|c| enabled.split_whitespace().any(|e| e == *c))
}

/// Reads the control file `dir/name`.
fn get(dir: &Path, name: &str) -> Result<String, String> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// The value of `key` in a flat-keyed file such as `memory.events` (`key value` lines).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// The processes in a cgroup (`cgroup.procs`); none if it cannot be read (it is gone). Never
/// 0 (cgroup v2 lists a task that has lost its pid, or one of another pid namespace, as 0;
/// `kill(0)` would signal our own process group).
fn procs(dir: &Path) -> Vec<libc::pid_t> {
    get(dir, "cgroup.procs")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|&p| p > 0)
        .collect()
}

/// The resource limits of one lease's cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Memory, bytes: the executor's, its data plane's regions, what its functions put in
    /// files of memory.
    pub memory_bytes: u64,
    /// Processes and threads.
    pub tasks: u64,
    /// The CPUs (none: the manager's).
    pub cpus: Vec<usize>,
}

/// What a lease's processes used, as its cgroup counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time, user and system, µs.
    pub cpu_us: Option<u64>,
    /// The most memory in use at once, bytes.
    pub memory_peak_bytes: Option<u64>,
}

/// Where this manager puts its leases' cgroups.
#[derive(Debug)]
pub struct Cgroups {
    /// `rfaas-<pid>.<start time>` in each hierarchy.
    parents: Vec<(Role, PathBuf)>,
}

impl Cgroups {
    /// Finds this process's cgroups, makes this manager's directory under them, and ends what
    /// managers that died left in theirs. The error says what is missing. One per process.
    pub fn open() -> Result<Cgroups, String> {
        let found = here()?;
        let me = std::process::id();
        let name = own_name(me)?;
        // Every hierarchy's leftovers first: a dead manager's directory may be in some
        // hierarchies only (another memory cgroup), or have our name (its pid is ours now).
        sweep_stale(&found);
        // Dropped on an error below, which removes what was made.
        let mut made = Cgroups {
            parents: Vec::new(),
        };
        for (role, dir) in &found {
            let parent = dir.join(&name);
            if *role == Role::Unified {
                delegate(dir, me)?;
            }
            // Controllers mounted together share a directory.
            if !made.parents.iter().any(|(_, d)| *d == parent) {
                match mkdir(&parent) {
                    // Only accounting: a manager may do without it (not delegated to it).
                    Err(why) if *role == Role::Cpuacct => {
                        tracing::warn!(%why, "no CPU time of leases in the ledger");
                        continue;
                    }
                    made_or_not => made_or_not?,
                }
            }
            made.parents.push((*role, parent.clone()));
            match role {
                Role::Unified => put(&parent, "cgroup.subtree_control", ENABLE)?,
                Role::Cpuset => {
                    // A v1 cpuset starts empty, and takes no task until it has CPUs and nodes.
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        put(&parent, f, get(dir, f)?.trim())?;
                    }
                }
                _ => {}
            }
        }
        Ok(made)
    }

    /// Removes this manager's directories (those of a manager that is killed go at the next
    /// one's start); a directory that still holds a lease's stays.
    pub fn remove(&self) {
        for (_, dir) in &self.parents {
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// Where the leases' cgroups go, for the manager's log.
    pub fn describe(&self) -> String {
        match self.parents.as_slice() {
            [(Role::Unified, dir)] => format!("cgroup v2, {}", dir.display()),
            all => format!(
                "cgroup v1, {}",
                all.iter()
                    .map(|(_, d)| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Makes lease `id`'s cgroup with `limits`, ready for its executor to join.
    pub fn create(&self, id: u64, limits: &Limits) -> Result<LeaseCgroup, String> {
        let name = format!("lease-{id}");
        let mut lease = LeaseCgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
            ended: std::cell::Cell::new(None),
        };
        let cpus = limits
            .cpus
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let bytes = limits.memory_bytes.to_string();
        for (role, parent) in &self.parents {
            let dir = parent.join(&name);
            let shared = lease.dirs.iter().any(|(_, d)| *d == dir);
            if !shared && let Err(why) = mkdir(&dir) {
                if *role == Role::Cpuacct {
                    tracing::warn!(%why, "no CPU time of this lease in the ledger");
                    continue;
                }
                return Err(why);
            }
            lease.dirs.push((*role, dir.clone()));
            match role {
                Role::Unified => {
                    put(&dir, "memory.max", &bytes)?;
                    // Not into swap either, and one task over the limit ends the lease whole.
                    for (f, v) in [("memory.swap.max", "0"), ("memory.oom.group", "1")] {
                        if dir.join(f).exists() {
                            put(&dir, f, v)?;
                        }
                    }
                    put(&dir, "pids.max", &limits.tasks.to_string())?;
                    if !cpus.is_empty() {
                        put(&dir, "cpuset.cpus", &cpus)?;
                    }
                }
                Role::Memory => {
                    put(&dir, "memory.limit_in_bytes", &bytes)?;
                    if dir.join("memory.memsw.limit_in_bytes").exists() {
                        put(&dir, "memory.memsw.limit_in_bytes", &bytes)?;
                    }
                }
                Role::Pids => put(&dir, "pids.max", &limits.tasks.to_string())?,
                Role::Cpuset => {
                    put(&dir, "cpuset.mems", get(parent, "cpuset.mems")?.trim())?;
                    let all = get(parent, "cpuset.cpus")?;
                    put(
                        &dir,
                        "cpuset.cpus",
                        if cpus.is_empty() { all.trim() } else { &cpus },
                    )?;
                }
                Role::Freezer | Role::Cpuacct => {}
            }
            if shared {
                continue;
            }
            let procs = dir.join("cgroup.procs");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(|e| format!("opening {}: {e}", procs.display()))?;
            lease.procs.push(OwnedFd::from(f));
        }
        Ok(lease)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Makes sure that cgroups under `dir` (cgroup v2) may have the controllers leases need:
/// enables them in `dir`'s `cgroup.subtree_control`. A cgroup with processes of its own
/// cannot (other than the root), so a manager alone in a delegated cgroup moves itself into
/// a leaf of it first, `rfaas-<pid>.manager`, as a service manager's documentation asks.
fn delegate(dir: &Path, me: u32) -> Result<(), String> {
    if passes_on(dir) {
        return Ok(());
    }
    let enable = || write(dir, "cgroup.subtree_control", ENABLE);
    let failed = |e: std::io::Error| {
        format!(
            "enabling the memory, pids and cpuset controllers in {}: {e}",
            dir.display()
        )
    };
    match enable() {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            // Only a cgroup of the manager's alone: moving out of one shared with other
            // processes would not make it ours (and they would stay in the way).
            let others: Vec<_> = procs(dir)
                .into_iter()
                .filter(|&p| u32::try_from(p).ok() != Some(me))
                .collect();
            if !others.is_empty() {
                return Err(format!(
                    "the cgroup {} cannot pass on its controllers: it holds other processes than this manager ({} of them, such as {}); run the manager in a cgroup of its own (a systemd service with Delegate=yes)",
                    dir.display(),
                    others.len(),
                    others[0]
                ));
            }
            let leaf = dir.join(format!("{}.manager", own_name(me)?));
            mkdir(&leaf)?;
            // Every thread of this process moves (v2 moves processes whole).
            put(&leaf, "cgroup.procs", "0")?;
            enable().map_err(failed)
        }
        Err(e) => Err(failed(e)),
    }
}

/// Makes a cgroup directory (one there already is an error: it is somebody's).
fn mkdir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir(dir).map_err(|e| format!("creating the cgroup {}: {e}", dir.display()))
}

/// The name of manager `pid`'s directory: `rfaas-<pid>.<start time>` (its start time in clock
/// ticks since boot, `/proc/<pid>/stat`), so that a later process given the same pid does not
/// pass for it.
fn own_name(pid: u32) -> Result<String, String> {
    let start = start_time(pid).ok_or_else(|| format!("reading /proc/{pid}/stat"))?;
    Ok(format!("{PREFIX}{pid}.{start}"))
}

/// Process `pid`'s start time, clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command, which may hold anything but ends at the last `)`.
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split(' ').nth(19)?.parse().ok()
}

/// Whether the manager a directory of `name` (`rfaas-<pid>.<start>`, perhaps `.manager`
/// after it) belongs to is gone, and with it whether the name is one of ours at all.
fn dead_manager(name: &str) -> Option<bool> {
    let rest = name.strip_prefix(PREFIX)?;
    let rest = rest.strip_suffix(".manager").unwrap_or(rest);
    let (pid, start) = rest.split_once('.')?;
    let (pid, start): (u32, u64) = (pid.parse().ok()?, start.parse().ok()?);
    Some(start_time(pid) != Some(start))
}

/// Ends what managers that died left in their directories under the hierarchies `all`: kills
/// every process in their leases' cgroups and removes them. A manager is dead when no
/// process of its pid and start time runs (in our pid namespace: managers in different pid
/// namespaces must not share a cgroup).
fn sweep_stale(all: &[(Role, PathBuf)]) {
    let mut names = std::collections::BTreeSet::new();
    for (_, dir) in all {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str()
                && dead_manager(name) == Some(true)
            {
                names.insert(name.to_owned());
            }
        }
    }
    for name in names {
        // An empty leaf a manager moved itself into goes with the rest (when empty).
        let mut leases = std::collections::BTreeSet::new();
        for (_, dir) in all {
            if let Ok(entries) = std::fs::read_dir(dir.join(&name)) {
                leases.extend(
                    entries
                        .flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| e.file_name()),
                );
            }
        }
        for lease in leases {
            let mut stale = LeaseCgroup {
                dirs: Vec::new(),
                procs: Vec::new(),
                ended: std::cell::Cell::new(None),
            };
            for (role, dir) in all {
                let d = dir.join(&name).join(&lease);
                if d.is_dir() {
                    stale.dirs.push((*role, d));
                }
            }
            tracing::warn!(
                cgroup = %stale.dirs.first().map(|(_, d)| d.display().to_string()).unwrap_or_default(),
                "ending the processes a killed manager's lease left"
            );
            drop(stale);
        }
        for (_, dir) in all {
            let _ = std::fs::remove_dir(dir.join(&name));
        }
    }
}

/// One lease's cgroup: its executor joins it before exec; dropped, it kills every process in
/// it and is removed.
#[derive(Debug)]
pub struct LeaseCgroup {
    dirs: Vec<(Role, PathBuf)>,
    /// Each hierarchy's `cgroup.procs`, open for writing, for the executor to join by.
    procs: Vec<OwnedFd>,
    /// The first kill's outcome (whether it left none): later ones do not wait again.
    ended: std::cell::Cell<Option<bool>>,
}

impl LeaseCgroup {
    /// The descriptors an executor joins the cgroup by ([`join`]), in the forked child.
    pub fn join_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// The cgroup's directory in hierarchy `role` (for tests and logs).
    pub fn dir(&self, role: Role) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, d)| d.as_path())
    }

    /// How many of its processes the kernel killed for memory (the OOM killer, at the
    /// cgroup's limit).
    pub fn oom_kills(&self) -> u64 {
        let (dir, file) = match (self.dir(Role::Unified), self.dir(Role::Memory)) {
            (Some(d), _) => (d, "memory.events"),
            (None, Some(d)) => (d, "memory.oom_control"),
            _ => return 0,
        };
        get(dir, file)
            .ok()
            .and_then(|t| keyed(&t, "oom_kill"))
            .unwrap_or(0)
    }

    /// What the lease's processes used so far, as the cgroup counts it (`None` where this
    /// kernel does not: `memory.peak` came with Linux 5.19; no CPU time under cgroup v1
    /// without the `cpuacct` hierarchy).
    pub fn usage(&self) -> Usage {
        let number = |dir: &Path, file| get(dir, file).ok()?.trim().parse::<u64>().ok();
        match self.dir(Role::Unified) {
            Some(d) => Usage {
                cpu_us: get(d, "cpu.stat")
                    .ok()
                    .and_then(|t| keyed(&t, "usage_usec")),
                memory_peak_bytes: number(d, "memory.peak"),
            },
            None => Usage {
                cpu_us: self
                    .dir(Role::Cpuacct)
                    .and_then(|d| number(d, "cpuacct.usage"))
                    .map(|ns| ns / 1000),
                memory_peak_bytes: self
                    .dir(Role::Memory)
                    .and_then(|d| number(d, "memory.max_usage_in_bytes")),
            },
        }
    }

    /// The memory limit, bytes (for the ledger's word on an OOM kill).
    pub fn memory_limit(&self) -> Option<u64> {
        let (dir, file) = match (self.dir(Role::Unified), self.dir(Role::Memory)) {
            (Some(d), _) => (d, "memory.max"),
            (None, Some(d)) => (d, "memory.limit_in_bytes"),
            _ => return None,
        };
        get(dir, file).ok()?.trim().parse().ok()
    }

    /// Kills every process in the cgroup and waits (at most 5 s) until none is left. Returns
    /// whether none is.
    pub fn kill(&self) -> bool {
        if let Some(ended) = self.ended.get() {
            // Stuck processes (a task in the kernel) hold the lease's end up once, not at
            // every step of it.
            return ended || self.dirs.iter().all(|(_, d)| procs(d).is_empty());
        }
        let deadline = Instant::now() + KILL_WAIT;
        let ended = if let Some(dir) = self.dir(Role::Unified) {
            // Since Linux 5.14: one write, the kernel kills them all.
            if dir.join("cgroup.kill").exists() && put(dir, "cgroup.kill", "1").is_ok() {
                wait_empty(dir, deadline)
            } else {
                freeze_and_kill(dir, "cgroup.freeze", ("1", "0"), deadline)
            }
        } else {
            match (self.dir(Role::Freezer), self.dirs.first()) {
                (Some(dir), _) => {
                    freeze_and_kill(dir, "freezer.state", ("FROZEN", "THAWED"), deadline)
                }
                (None, Some((_, dir))) => freeze_and_kill(dir, "", ("", ""), deadline),
                (None, None) => true,
            }
        };
        self.ended.set(Some(ended));
        ended
    }
}

impl Drop for LeaseCgroup {
    fn drop(&mut self) {
        if self.dirs.is_empty() {
            return;
        }
        if !self.kill() {
            tracing::warn!(
                cgroup = %self.dirs[0].1.display(),
                "processes of an ended lease are still there after 5 s"
            );
        }
        self.procs.clear();
        // A cgroup goes once its last process has; the kernel may take a moment after the
        // last exit to let it.
        let deadline = Instant::now() + Duration::from_secs(1);
        for (_, dir) in self.dirs.iter().rev() {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() >= deadline => {
                        tracing::warn!(cgroup = %dir.display(), error = %e, "cannot remove an ended lease's cgroup");
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
    }
}

/// Waits until cgroup `dir` has no process, polling with growing sleeps until `deadline`.
fn wait_empty(dir: &Path, deadline: Instant) -> bool {
    let mut nap = Duration::from_micros(200);
    loop {
        if procs(dir).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

/// Kills every process in cgroup `dir` and waits until none is left, or `deadline`: freezes it
/// first where it can (`file` set to `states.0`; none for `""`), so that none forks or exits
/// while the list is taken, and thaws it after (`states.1`) for the signals to land; repeats
/// until it is empty. Each process is signalled through a pidfd opened before the cgroup's
/// list is read again, and only if its pid is still listed: a pid that was reused in between
/// is never signalled ([`kill_listed`]).
fn freeze_and_kill(dir: &Path, file: &str, states: (&str, &str), deadline: Instant) -> bool {
    loop {
        if procs(dir).is_empty() {
            return true;
        }
        let frozen = !file.is_empty() && put(dir, file, states.0).is_ok();
        if frozen {
            // Freezing takes until every task has stopped (a task in the kernel, a moment).
            let frozen_by = (Instant::now() + Duration::from_millis(500)).min(deadline);
            while !is_frozen(dir, file, states.0) && Instant::now() < frozen_by {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        kill_listed(dir);
        if frozen {
            let _ = put(dir, file, states.1);
        }
        if wait_empty(
            dir,
            (Instant::now() + Duration::from_millis(100)).min(deadline),
        ) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

/// Sends `SIGKILL` to the processes cgroup `dir` lists, each through a pidfd opened first and
/// only if its pid is listed still after that: then the pidfd's process is the one listed (or
/// has exited, and the signal goes nowhere). A kernel without pidfds (before 5.3) gets plain
/// `kill`s, racing pid reuse.
fn kill_listed(dir: &Path) {
    let listed = procs(dir);
    let mut opened = Vec::with_capacity(listed.len());
    for &pid in &listed {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no
        // memory of ours is involved.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                for &pid in &listed {
                    // SAFETY: sends a signal; `pid` is positive ([`procs`]), so it names one
                    // process, never a group.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                return;
            }
            continue; // gone already
        }
        // SAFETY: pidfd_open returned a fresh descriptor that nothing else owns.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) };
        opened.push((pid, fd));
    }
    let still: std::collections::BTreeSet<libc::pid_t> = procs(dir).into_iter().collect();
    for (pid, fd) in opened {
        if still.contains(&pid) {
            // SAFETY: signals the process `fd` refers to; the null siginfo is allowed.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
        }
    }
}

/// Whether the freeze asked for (`file` set to `state`) has taken hold.
fn is_frozen(dir: &Path, file: &str, state: &str) -> bool {
    if file == "cgroup.freeze" {
        return get(dir, "cgroup.events")
            .ok()
            .and_then(|t| keyed(&t, "frozen"))
            == Some(1);
    }
    get(dir, file).is_ok_and(|s| s.trim() == state)
}

/// Moves the calling process into the cgroups whose `cgroup.procs` are open at `fds`: for the
/// forked child before exec (only `write`, which is async-signal-safe; no allocation). Before
/// the change of user: the lease's user may not write there.
pub fn join(fds: &[RawFd]) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: writes two bytes from a static buffer to a descriptor the caller keeps open.
        let n = unsafe { libc::write(fd, b"0\n".as_ptr().cast(), 2) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
