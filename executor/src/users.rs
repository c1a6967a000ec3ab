//! Executors under users of their own (the manager's `executor_uids`): each lease's executor
//! runs as a user id no other running lease has, so that one lease's functions cannot signal
//! another lease's processes, write the manager's files (the package cache, the ledger) or
//! read another lease's, and whatever processes they leave behind can be found and killed by
//! their user id when the lease ends, wherever they moved (another process group, a session of
//! their own).
//!
//! The ids must be reserved for rfaas: the lease's end kills every process of its user. A
//! pool never hands out an id that has processes (an id of a real user that the configured
//! range overlaps by mistake is never used, and neither is one whose processes survived their
//! lease's end), and refuses, at start, ranges that take in root or the manager's own user.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A range of user ids, `first` to `last` inclusive, as the configuration writes it:
/// `"FIRST-LAST"` (or a single id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

/// The most ids one range may hold (a pool is a set of them).
pub const MAX_UIDS: u32 = 65_536;

/// `nobody`: shared by services that drop their privileges, never a lease's.
const NOBODY: u32 = 65_534;

impl std::str::FromStr for UidRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("executor_uids = {text:?}: {why}");
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| bad("expected FIRST-LAST, two user ids (such as \"61000-61063\")"))
        };
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let id = number(text)?;
                (id, id)
            }
        };
        if first > last {
            return Err(bad("the first id is above the last"));
        }
        if first == 0 {
            return Err(bad("takes in root (user 0)"));
        }
        if last == u32::MAX {
            return Err(bad("4294967295 is not a user id (it means \"no change\")"));
        }
        if (first..=last).contains(&NOBODY) {
            return Err(bad(
                "takes in `nobody` (65534), which other services run as: its processes would be killed",
            ));
        }
        if last - first >= MAX_UIDS {
            return Err(bad(&format!("more than {MAX_UIDS} ids")));
        }
        Ok(UidRange { first, last })
    }
}

impl std::fmt::Display for UidRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl UidRange {
    pub fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last).contains(&uid)
    }

    pub fn len(&self) -> u32 {
        self.last - self.first + 1
    }

    /// Always false: a range holds at least one id.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Whether user id `uid` has an account (the name service knows it: `/etc/passwd`, or a
/// directory service).
pub fn has_account(uid: u32) -> bool {
    let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut buf = vec![0u8; 16 << 10];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: `pwd` and `buf` are valid for writing for the sizes given; `found` is set to
    // `pwd` or null, and neither is used after `buf` goes.
    let r = unsafe {
        libc::getpwuid_r(
            uid,
            pwd.as_mut_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    r == 0 && !found.is_null()
}

/// Whether a manager whose effective user is `euid` (and real user `uid`) may start its
/// executors as the users of `range`: it must be root (setting another user's ids takes
/// `CAP_SETUID`, and raising the executors' locked-memory limit `CAP_SYS_RESOURCE`), and the
/// range must not take in its own user.
pub fn check_manager(range: UidRange, euid: u32, uid: u32) -> Result<(), String> {
    if euid != 0 {
        return Err(format!(
            "executor_uids = \"{range}\" needs the manager to run as root (it starts each \
             executor as one of those users); this manager runs as user {euid}"
        ));
    }
    if range.contains(uid) {
        return Err(format!(
            "executor_uids = \"{range}\" takes in the manager's own user ({uid})"
        ));
    }
    Ok(())
}

/// The user ids leases may run as, each with at most one lease at a time.
pub struct UserPool {
    range: UidRange,
    state: Mutex<PoolState>,
    /// Where the ids that are ours to sweep (taken by leases, or left dirty by them) are kept
    /// across a restart: a manager killed with leases running leaves their processes behind,
    /// and the next one sweeps what this file names.
    record: Option<std::path::PathBuf>,
    /// The record's lock, held for the pool's life: a second manager on the same record (the
    /// same ledger) would sweep this one's running leases.
    _lock: Option<std::fs::File>,
}

struct PoolState {
    /// Ids no lease has and that had no process when last checked.
    clean: BTreeSet<u32>,
    /// Ids whose lease's processes had not all died by the end of its sweep: swept again
    /// before being handed out.
    dirty: BTreeSet<u32>,
    /// Ids that had processes when the pool was made (a real user's inside the range, or what
    /// a killed manager's leases left that no record names): never swept (they may not be
    /// ours), handed out only once they have none.
    foreign: BTreeSet<u32>,
    /// Ids leases hold now.
    taken: BTreeSet<u32>,
    /// Ids being swept (without the lock held) before they are handed out: still ours.
    sweeping: BTreeSet<u32>,
    /// Ids an earlier pool's record names that this range no longer holds and whose processes
    /// would not die: kept in the record, so that the next start sweeps them again; never
    /// handed out.
    outside: BTreeSet<u32>,
}

/// A lease's user id, given back to its pool (after its processes are killed) when dropped.
pub struct LeaseUser<'p> {
    pool: &'p UserPool,
    uid: u32,
}

impl LeaseUser<'_> {
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for LeaseUser<'_> {
    fn drop(&mut self) {
        let clean = sweep(self.uid);
        let mut state = self.pool.lock();
        state.taken.remove(&self.uid);
        if clean {
            state.clean.insert(self.uid);
        } else {
            tracing::warn!(
                uid = self.uid,
                "processes of a lease's user outlived its end (killed, still there after 2 s); the id is swept again before its next lease"
            );
            state.dirty.insert(self.uid);
        }
        self.pool.save(&state);
    }
}

impl UserPool {
    /// A pool of the ids of `range`, keeping the ids that are its to sweep in `record` (if
    /// given). The ids an earlier pool's record names are swept now (a killed manager's
    /// leases left them). Others with running processes (a real user's inside the range) are
    /// set aside with a warning and used only once they have none. Fails if `/proc` cannot be
    /// read (no id could be known to be free).
    pub fn new(range: UidRange, record: Option<std::path::PathBuf>) -> Result<Self, String> {
        let lock = record.as_deref().map(lock_record).transpose()?;
        // Only a record of this boot: after a restart of the node no lease's process is left,
        // and the ids may have other users by now.
        let text = record
            .as_deref()
            .and_then(|r| std::fs::read_to_string(r).ok())
            .unwrap_or_default();
        let mut lines = text.lines();
        let this_boot = lines.next() == Some(boot_line().as_str());
        let recorded: BTreeSet<u32> = lines
            .filter(|_| this_boot)
            .filter_map(|id| id.trim().parse().ok())
            .collect();
        let (ours, earlier): (BTreeSet<u32>, BTreeSet<u32>) =
            recorded.into_iter().partition(|&id| range.contains(id));
        // Ids of a wider range an earlier manager had leases under (the range shrank since):
        // still ours to sweep, once. Only ids a range could hold (not root, not `nobody`, not
        // the manager's own: a damaged record must not have us kill those), and only ids
        // without an account (a range may shrink because it took in real users by mistake:
        // their sessions are not ours to end).
        // SAFETY: getuid has no preconditions and cannot fail.
        let manager = unsafe { libc::getuid() };
        let mut outside = BTreeSet::new();
        for uid in earlier {
            if uid.to_string().parse::<UidRange>().is_err() || uid == manager {
                tracing::warn!(
                    uid,
                    "the record of executor users names an id no range may hold; ignored"
                );
                continue;
            }
            if has_account(uid) {
                tracing::warn!(
                    uid,
                    "an earlier manager's lease ran under an id executor_uids no longer holds, which has an account: not swept (its user's processes are not ours to end)"
                );
                continue;
            }
            if sweep(uid) {
                tracing::info!(
                    uid,
                    "swept what an earlier manager's lease left running under an id executor_uids no longer holds"
                );
            } else {
                tracing::warn!(
                    uid,
                    "an earlier manager's lease left processes that will not die under an id executor_uids no longer holds; swept again at the next start"
                );
                outside.insert(uid);
            }
        }
        let mut dirty = BTreeSet::new();
        for &uid in &ours {
            if sweep(uid) {
                tracing::info!(uid, "swept what an earlier manager's lease left running");
            } else {
                tracing::warn!(
                    uid,
                    "an earlier manager's lease left processes that will not die; the id is swept again before its next lease"
                );
                dirty.insert(uid);
            }
        }
        let busy = processes_of(|uid| range.contains(uid) && !ours.contains(&uid))
            .map_err(|e| format!("executor_uids: cannot list processes in /proc: {e}"))?;
        let mut clean = BTreeSet::new();
        let mut foreign = BTreeSet::new();
        for uid in (range.first..=range.last).filter(|u| !dirty.contains(u)) {
            match busy.iter().find(|p| p.uid == uid) {
                Some(p) => {
                    tracing::warn!(
                        uid,
                        pid = p.pid,
                        "a user id of executor_uids has running processes: not used for leases while it has (executor_uids must be reserved for rfaas)"
                    );
                    foreign.insert(uid);
                }
                None => {
                    clean.insert(uid);
                }
            }
        }
        let pool = UserPool {
            range,
            state: Mutex::new(PoolState {
                clean,
                dirty,
                foreign,
                taken: BTreeSet::new(),
                sweeping: BTreeSet::new(),
                outside,
            }),
            record,
            _lock: lock,
        };
        pool.save(&pool.lock());
        Ok(pool)
    }

    /// Hands `uid` to a lease, recorded as ours first.
    fn grant(&self, uid: u32) -> LeaseUser<'_> {
        let mut state = self.lock();
        state.sweeping.remove(&uid);
        state.taken.insert(uid);
        self.save(&state);
        LeaseUser { pool: self, uid }
    }

    /// Writes the record: the ids taken or left dirty, one per line (written aside and
    /// renamed; not synced: it matters after a killed manager, whose writes the kernel keeps,
    /// not after a crash of the node, which no process outlives).
    fn save(&self, state: &PoolState) {
        let Some(record) = &self.record else {
            return;
        };
        let ids: String = std::iter::once(boot_line())
            .chain(
                state
                    .taken
                    .iter()
                    .chain(&state.dirty)
                    .chain(&state.sweeping)
                    .chain(&state.outside)
                    .map(u32::to_string),
            )
            .map(|line| line + "\n")
            .collect();
        let tmp = crate::aside_path(record);
        let written = {
            use std::os::unix::fs::OpenOptionsExt;
            // A fresh file, never one someone put there (a link would have root write
            // through it); the rename replaces the record itself, not what it might link to.
            let _ = std::fs::remove_file(&tmp);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| std::io::Write::write_all(&mut f, ids.as_bytes()))
                .and_then(|()| std::fs::rename(&tmp, record))
        };
        if let Err(e) = written {
            tracing::warn!(record = %record.display(), error = %e, "cannot record the executor users in use; a restart after a kill will not sweep them");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An id for a lease: a clean one; else one whose lease left processes, swept again; else
    /// one set aside at start that has no processes any more. `Err` says why there is none.
    pub fn take(&self) -> Result<LeaseUser<'_>, String> {
        let mut state = self.lock();
        if let Some(uid) = state.clean.pop_first() {
            state.sweeping.insert(uid);
            drop(state);
            // Something may run as it again since its sweep (a set-user-id file it left on a
            // file system that allows them, run by someone else): swept again if so.
            match processes_of(|u| u == uid) {
                Ok(left) if left.is_empty() => return Ok(self.grant(uid)),
                _ if sweep(uid) => return Ok(self.grant(uid)),
                _ => {
                    tracing::warn!(
                        uid,
                        "a free user of executor_uids runs processes that will not die: set aside"
                    );
                    let mut state = self.lock();
                    state.sweeping.remove(&uid);
                    state.dirty.insert(uid);
                    self.save(&state);
                    drop(state);
                    return self.take();
                }
            }
        }
        // Swept without the lock held (it may take 2 s), still ours meanwhile; a failed sweep
        // puts it back.
        let dirty: Vec<u32> = std::mem::take(&mut state.dirty).into_iter().collect();
        state.sweeping.extend(&dirty);
        drop(state);
        let mut taken = None;
        let mut still = Vec::new();
        for uid in dirty {
            if taken.is_none() && sweep(uid) {
                taken = Some(uid);
            } else {
                still.push(uid);
            }
        }
        let mut state = self.lock();
        for uid in &still {
            state.sweeping.remove(uid);
        }
        state.dirty.extend(still);
        if let Some(uid) = taken {
            drop(state);
            return Ok(self.grant(uid));
        }
        let busy = if state.foreign.is_empty() {
            Vec::new()
        } else {
            processes_of(|uid| state.foreign.contains(&uid)).map_err(|e| {
                format!("no free executor user: cannot list processes in /proc: {e}")
            })?
        };
        let free = state
            .foreign
            .iter()
            .copied()
            .find(|uid| !busy.iter().any(|p| p.uid == *uid));
        if let Some(uid) = free {
            state.foreign.remove(&uid);
            drop(state);
            return Ok(self.grant(uid));
        }
        let left = busy
            .first()
            .map(|p| format!(" (such as user {}'s pid {})", p.uid, p.pid))
            .unwrap_or_default();
        Err(format!(
            "no free executor user: the {} ids of executor_uids (\"{}\") are taken by \
             running leases or have processes left{left}",
            self.range.len(),
            self.range,
        ))
    }

    /// How many ids are not taken by leases (clean or set aside).
    pub fn free(&self) -> usize {
        let state = self.lock();
        state.clean.len() + state.dirty.len() + state.foreign.len() + state.sweeping.len()
    }
}

/// The accounts of `/etc/passwd` whose user ids lie in `range`, described (`account daemon
/// (user 1)`). An id of `executor_uids` must be no account's: a lease's end kills every process
/// of its id.
pub fn accounts_in(range: UidRange) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            let mut fields = line.split(':');
            let (Some(name), Some(uid)) = (fields.next(), fields.nth(1)) else {
                continue;
            };
            if uid.parse().is_ok_and(|uid| range.contains(uid)) {
                found.push(format!("account {name} (user {uid})"));
            }
        }
    }
    found
}

/// Who else uses the ids of `range` on this host: accounts in `/etc/passwd` and running
/// processes, described. Empty when the range looks unused (for tests, which must not sweep a
/// real user's processes).
pub fn others_in(range: UidRange) -> Vec<String> {
    let mut found = accounts_in(range);
    match processes_of(|uid| range.contains(uid)) {
        Ok(procs) => found.extend(
            procs
                .iter()
                .map(|p| format!("pid {} of user {}", p.pid, p.uid)),
        ),
        Err(e) => found.push(format!("/proc cannot be listed: {e}")),
    }
    found
}

/// The first line of a record: this boot of the node (`/proc/sys/kernel/random/boot_id`).
fn boot_line() -> String {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    format!("boot {}", id.trim())
}

/// Takes the lock of the record `path` (a file beside it, `.lock`), for as long as the file
/// returned is open; refused if another process holds it.
fn lock_record(path: &std::path::Path) -> Result<std::fs::File, String> {
    crate::lock_beside(path, Duration::ZERO).map_err(|(lock, e)| match e {
        Some(e) => format!("{}: {e}", lock.display()),
        None => format!(
            "{} is locked: another manager uses this ledger with executor_uids (it would sweep this one's leases)",
            lock.display()
        ),
    })
}

/// A process and the user id it runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub uid: u32,
}

/// Whether a `State:` line's value (or a `stat` file's state letter) is that of a task
/// that has ended (a zombie, or dead).
fn ended(state: &str) -> bool {
    matches!(state.trim_start().chars().next(), Some('Z' | 'X'))
}

/// Whether any task (thread) of process `pid` still runs: a process whose first thread ended
/// shows as a zombie while its other threads run on.
fn any_task_runs(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command's closing parenthesis.
            stat.rsplit_once(')').is_some_and(|(_, rest)| !ended(rest))
        })
    })
}

/// The processes with a task that still runs (a zombie whose threads all ended is not one)
/// and a real, effective or saved user id that `uid` accepts, from `/proc`. The id reported
/// is the first that matched. An error if `/proc` cannot be listed.
pub fn processes_of(uid: impl Fn(u32) -> bool) -> std::io::Result<Vec<Process>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process that ended meanwhile has no status: not ours to count.
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let mut ids = None;
        let mut live = true;
        for line in status.lines() {
            if let Some(state) = line.strip_prefix("State:") {
                live = !ended(state);
            } else if let Some(uids) = line.strip_prefix("Uid:") {
                // Real, effective, saved, filesystem.
                ids = Some(
                    uids.split_whitespace()
                        .take(3)
                        .filter_map(|u| u.parse::<u32>().ok())
                        .collect::<Vec<_>>(),
                );
            }
        }
        let Some(&u) = ids.as_deref().unwrap_or_default().iter().find(|&&u| uid(u)) else {
            continue;
        };
        if live || any_task_runs(pid) {
            found.push(Process { pid, uid: u });
        }
    }
    Ok(found)
}

/// Kills every process of user `uid` (real or saved id), wherever it is: a child that takes on
/// that user and sends `SIGKILL` to every process it may signal (`kill(-1)`), which are exactly
/// those. At least once, then until /proc lists none, for up to 2 s (a leftover may kill a
/// sweeper, which runs as its user, before it sends: it is tried again); whether none is left.
pub fn sweep(uid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Err(e) = kill_all_of(uid) {
            tracing::debug!(uid, error = %e, "a sweep of a lease's user failed; trying again");
        }
        match processes_of(|u| u == uid) {
            Ok(left) if left.is_empty() => return true,
            Ok(_) => {}
            Err(e) => tracing::warn!(uid, error = %e, "cannot list processes in /proc"),
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The raw system calls that change the user and group ids and list (32-bit ids on every
/// architecture: the plain numbers are the 16-bit calls on 32-bit x86 and ARM).
#[cfg(any(target_arch = "x86", target_arch = "arm"))]
mod ids {
    pub const SETGROUPS: libc::c_long = libc::SYS_setgroups32;
    pub const SETRESGID: libc::c_long = libc::SYS_setresgid32;
    pub const SETRESUID: libc::c_long = libc::SYS_setresuid32;
    pub const GETRESUID: libc::c_long = libc::SYS_getresuid32;
}
#[cfg(not(any(target_arch = "x86", target_arch = "arm")))]
mod ids {
    pub const SETGROUPS: libc::c_long = libc::SYS_setgroups;
    pub const SETRESGID: libc::c_long = libc::SYS_setresgid;
    pub const SETRESUID: libc::c_long = libc::SYS_setresuid;
    pub const GETRESUID: libc::c_long = libc::SYS_getresuid;
}

/// Takes on user and group `uid` (no supplementary groups) with raw system calls, and checks
/// that the real, effective and saved user ids all are `uid`. Async-signal-safe.
fn take_on(uid: u32) -> bool {
    let (mut r, mut e, mut s) = (u32::MAX, u32::MAX, u32::MAX);
    // SAFETY: raw system calls on integers (a null list for setgroups with a count of 0), and
    // getresuid writing three `uid_t`s into our locals. Raw, not libc's wrappers, which in a
    // multi-threaded parent signal its other threads: a forked child has only this one.
    unsafe {
        libc::syscall(ids::SETGROUPS, 0usize, std::ptr::null::<libc::gid_t>()) == 0
            && libc::syscall(ids::SETRESGID, uid, uid, uid) == 0
            && libc::syscall(ids::SETRESUID, uid, uid, uid) == 0
            && libc::syscall(ids::GETRESUID, &mut r, &mut e, &mut s) == 0
            && r == uid
            && e == uid
            && s == uid
    }
}

/// The most processes and threads (together) a lease of `cores` cores may have
/// (`RLIMIT_NPROC` of its user): 4096, or 64 per core on large leases. A function that forks
/// without end stops there, not at the node's limit.
pub fn max_tasks(cores: u32) -> u64 {
    4096u64.max(64 * u64::from(cores))
}

/// Takes on user `uid` (and group `uid`, without supplementary groups) for good, with no new
/// privileges (`PR_SET_NO_NEW_PRIVS`) for it or what it starts, after setting the limits that
/// need root to raise: `memlock` bytes of locked memory (RDMA
/// registrations; root needs none, another user does) and `tasks` processes and threads
/// ([`max_tasks`]). Without
/// `CAP_SYS_RESOURCE` (a container may withhold it) the locked-memory limit cannot go above
/// the manager's own hard limit, and stays there ([`memlock_ceiling`] says it at start).
///
/// For a forked child before `exec` (a `pre_exec` closure): only raw system calls, which are
/// async-signal-safe, allocate nothing and take no lock. Changing the user clears the
/// parent-death signal: set it after this.
pub fn become_user(uid: u32, memlock: u64, tasks: u64) -> std::io::Result<()> {
    let limit = |resource, value: u64| {
        let l = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: `l` is a valid rlimit for the duration of the call; setrlimit only reads it.
        if unsafe { libc::setrlimit(resource, &l) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    if limit(libc::RLIMIT_MEMLOCK, memlock).is_err() {
        let ceiling = memlock_ceiling().unwrap_or(u64::MAX);
        limit(libc::RLIMIT_MEMLOCK, memlock.min(ceiling))?;
    }
    limit(libc::RLIMIT_NPROC, tasks)?;
    if !take_on(uid) {
        return Err(std::io::Error::last_os_error());
    }
    // No way back to more privilege for it or anything it starts: set-user-id programs and
    // file capabilities do not apply (a process of the lease that became root again would be
    // beyond its user's sweep).
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// This process's hard limit of locked memory, bytes (`None`: unlimited). Async-signal-safe.
pub fn memlock_ceiling() -> Option<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `l` is writable storage for one rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut l) } != 0 {
        return Some(0);
    }
    (l.rlim_max != libc::RLIM_INFINITY).then_some(l.rlim_max)
}

/// Capability bits (`linux/capability.h`).
pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_SYS_PTRACE: u32 = 19;

/// Whether this process has capability `cap` in its effective set.
pub fn has_capability(cap: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << cap) != 0)
}

/// Private scratch for an executor: its own empty `tmpfs` on `/tmp`, `/var/tmp` and
/// `/dev/shm` (those of them that exist), in a mount namespace of its own, and a System V IPC
/// namespace of its own. What its functions leave there goes with the lease's last process,
/// instead of waiting on the node for the next lease that gets the same user id. The three
/// directories hold at most the lease's memory together (outside its memory limit).
pub struct Scratch {
    /// (directory, mount options), as C strings made before the fork.
    mounts: Vec<(std::ffi::CString, std::ffi::CString)>,
}

/// Files (and directories) per scratch directory: memory of the kernel's that no size limit
/// counts.
const SCRATCH_INODES: u32 = 16_384;

/// The shared directories a [`Scratch`] replaces.
const SCRATCH_DIRS: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

impl Scratch {
    /// Scratch of at most `size_mib` MiB in all (a third per directory).
    pub fn new(size_mib: u64) -> Scratch {
        let options = format!(
            "mode=1777,size={}m,nr_inodes={SCRATCH_INODES}",
            (size_mib / 3).max(1)
        );
        let mounts = SCRATCH_DIRS
            .iter()
            .filter(|d| std::path::Path::new(d).is_dir())
            .filter_map(|d| {
                Some((
                    std::ffi::CString::new(*d).ok()?,
                    std::ffi::CString::new(options.as_str()).ok()?,
                ))
            })
            .collect();
        Scratch { mounts }
    }

    /// Enters a mount namespace of its own (seeing the node's mounts, none of its own going
    /// back) and mounts the scratch. Needs `CAP_SYS_ADMIN`: before the change of user.
    ///
    /// For a forked child before `exec`: only system calls on memory made before the fork.
    pub fn enter(&self) -> std::io::Result<()> {
        let fail = || Err(std::io::Error::last_os_error());
        // A System V IPC namespace of its own too: shared memory segments, message queues and
        // semaphores the lease makes go with its last process, not stay on the node (outside
        // any limit) for the next lease of its user to attach.
        // SAFETY: unshare takes flags; it changes only this (single-threaded) child.
        if unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC) } != 0 {
            return fail();
        }
        // SAFETY: NUL-terminated strings that live as long as `self`, and null pointers for
        // the arguments a propagation change does not take.
        let slave = unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            )
        };
        if slave != 0 {
            return fail();
        }
        for (dir, options) in &self.mounts {
            // SAFETY: as above; `options` is the data string tmpfs parses.
            let mounted = unsafe {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    dir.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    options.as_ptr().cast(),
                )
            };
            if mounted != 0 {
                return fail();
            }
        }
        Ok(())
    }

    /// Whether this process can give executors scratch of their own (it has the privilege to
    /// make mount namespaces and mount `tmpfs`): tried in a forked child; why not if not.
    pub fn available() -> Result<(), String> {
        let scratch = Scratch::new(1);
        // SAFETY: the child runs only system calls (`unshare`, `mount`, `_exit`) on memory
        // made before the fork, so the state of our other threads at the fork does not matter.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        if pid == 0 {
            let code = match scratch.enter() {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(255).clamp(1, 255),
            };
            // SAFETY: ends the child at once, without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        let status = wait_child(pid).map_err(|e| e.to_string())?;
        match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
            (true, 0) => Ok(()),
            (true, errno) => Err(std::io::Error::from_raw_os_error(errno).to_string()),
            _ => Err(format!("the probe ended with status {status:#x}")),
        }
    }
}

/// Waits for our child `pid`; its wait status.
fn wait_child(pid: libc::pid_t) -> std::io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; `status` is writable.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `kill(-1, SIGKILL)` as user `uid`, from a forked child.
fn kill_all_of(uid: u32) -> std::io::Result<()> {
    // SAFETY: fork has no memory preconditions. The child runs only raw system calls
    // (setresgid, setresuid, kill, _exit: async-signal-safe, no allocation, no locks), so the
    // state of the parent's other threads at the fork does not matter.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // The manager's descriptors are closed first: the processes of the user we take on
        // must not get at them through us. Then the group (the user id is needed to change
        // it), then the user, checked: only then may `kill(-1)` reach exactly that user's
        // processes (a signal needs the sender's real or effective user id to be the target's
        // real or saved one), never root's, and never this child (it spares the caller).
        // SAFETY: as above (after fork): raw system calls on integers only.
        unsafe {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            let ok = take_on(uid);
            if ok {
                libc::kill(-1, libc::SIGKILL);
            }
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let status = wait_child(pid)?;
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "could not take on user {uid} to kill its processes"
        )))
    }
}

#[cfg(test)]
mod tests;
