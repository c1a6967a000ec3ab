//! The executor manager as a real process: leases over shared memory and TCP, capacity,
//! package shipping and checks, a killed client, the ledger, and registry heartbeats.

use functions_example as fx;
use rfaas::Error;
use rfaas::managed::{LeaseSpec, lease_from};
use rfaas::registry::RegistryClient;
use rfaas::wire::Fabric;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tests::{Netns, example_package, executor_binary, scratch_dir};

const T: Duration = Duration::from_secs(20);

/// A running `rfaas-executor manager` or `registry`, killed on drop.
struct Service {
    child: Child,
    address: String,
}

impl Service {
    fn start(kind: &str, config: &Path) -> Service {
        Self::start_logging_to(kind, config, Stdio::inherit())
    }

    /// Starts it with its stderr (its log) in the file `log`, made anew.
    fn start_logged(kind: &str, config: &Path, log: &Path) -> Service {
        let file = std::fs::File::create(log).expect("log file");
        Self::start_logging_to(kind, config, file.into())
    }

    /// Starts it with its stderr (its log) at `log`.
    fn start_logging_to(kind: &str, config: &Path, log: Stdio) -> Service {
        let mut child = Command::new(executor_binary())
            .arg(kind)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("output");
        let address = line
            .trim()
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("{kind} did not start: {line:?}"))
            .to_owned();
        Service { child, address }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A two-core, 1 GiB manager's configuration under `dir` ([`tests::manager_config`]).
fn manager_config(dir: &Path, extra: &str) -> PathBuf {
    tests::manager_config(dir, 2, 1024, extra)
}

fn spec(cores: u32, fabric: Fabric) -> LeaseSpec {
    let mut s = LeaseSpec::default();
    s.cores = cores;
    s.fabric = fabric;
    s.hot_timeout_us = 1000;
    s.slot_size = Some(65536);
    s
}

/// A client process holding a one-core lease from the manager at `address` (it has invoked
/// once when this returns).
fn managed_client(address: &str) -> Child {
    let mut client = Command::new(env!("CARGO_BIN_EXE_rfaas-test-client"))
        .arg(address)
        .arg("managed")
        .arg(example_package())
        .stdout(Stdio::piped())
        .spawn()
        .expect("client");
    let mut line = String::new();
    std::io::BufReader::new(client.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("client output");
    assert_eq!(line.trim(), "leased 5");
    client
}

#[track_caller]
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn leases_capacity_reclaim_and_ledger() {
    let dir = scratch_dir("manager-main");
    let mgr = Service::start("manager", &manager_config(&dir, ""));
    let pkg = example_package();
    // First lease: the node has no copy of the package yet, so it is shipped.
    let a = lease_from(&mgr.address, pkg, &spec(1, Fabric::Shm)).expect("shm lease");
    assert!(
        dir.join("cache").read_dir().expect("cache").count() >= 1,
        "package cached by hash"
    );
    for v in 0..50u64 {
        assert_eq!(
            a.invoke(fx::fault::call(0, v))
                .timeout(T)
                .wait()
                .expect("invocation"),
            v
        );
    }
    // Over TCP, the second core.
    let b = lease_from(&mgr.address, pkg, &spec(1, Fabric::Tcp)).expect("tcp lease");
    let mut out = vec![0u8; 5];
    assert_eq!(
        fx::echo::invoke(&b, b"hello", &mut out)
            .timeout(T)
            .wait()
            .expect("echo over tcp"),
        5
    );
    assert_eq!(&out, b"hello");
    // No core left.
    match lease_from(&mgr.address, pkg, &spec(1, Fabric::Shm)) {
        Err(Error::Refused(why)) => assert!(why.contains("not enough capacity"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match lease_from(&mgr.address, pkg, &spec(3, Fabric::Shm)) {
        Err(Error::Refused(why)) => assert!(why.contains("not enough capacity"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let (ida, idb) = (a.id(), b.id());
    drop(a);
    drop(b);
    // Both cores come back: a two-core lease fits again.
    let mut both = None;
    eventually("capacity returned", || {
        both = lease_from(&mgr.address, pkg, &spec(2, Fabric::Shm)).ok();
        both.is_some()
    });
    let both = both.expect("two-core lease");
    assert_eq!(both.workers(), 2);
    drop(both);
    let ledger = dir.join("ledger.jsonl");
    eventually("ledger entries", || {
        executor::manager::read_ledger(&ledger)
            .map(|e| e.len() >= 3)
            .unwrap_or(false)
    });
    let entries = executor::manager::read_ledger(&ledger).expect("ledger");
    let a = entries
        .iter()
        .find(|e| e.lease_id == ida)
        .expect("entry of the first lease");
    assert_eq!((a.cores, a.invocations, a.fabric), (1, 50, Fabric::Shm));
    assert!(a.exec_us > 0 && a.allocated_ms > 0, "{a:?}");
    let b = entries
        .iter()
        .find(|e| e.lease_id == idb)
        .expect("entry of the tcp lease");
    assert_eq!((b.invocations, b.fabric), (1, Fabric::Tcp));
    // The ledger survives a manager restart, and ids go on after it.
    drop(mgr);
    let mgr = Service::start("manager", &manager_config(&dir, ""));
    let c = lease_from(&mgr.address, pkg, &spec(1, Fabric::Shm)).expect("lease after restart");
    assert!(
        c.id() > entries.iter().map(|e| e.lease_id).max().unwrap_or(0),
        "ids continue after the ledger"
    );
    let out = Command::new(executor_binary())
        .arg("ledger")
        .arg(&ledger)
        .output()
        .expect("ledger command");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("lease {ida:>6}")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// An always-hot worker's idle polling is accounted up to the client's leaving: the span in
/// which the client left used to be dropped, so a lease that spun idle for its whole life
/// showed next to no hot time in the ledger.
#[test]
fn an_always_hot_lease_accounts_its_idle_polling() {
    let dir = scratch_dir("manager-hot-account");
    let mgr = Service::start("manager", &manager_config(&dir, ""));
    let mut s = spec(1, Fabric::Shm);
    s.hot_timeout_us = -1;
    let lease = lease_from(&mgr.address, example_package(), &s).expect("lease");
    lease
        .invoke(fx::noop::call())
        .timeout(T)
        .wait()
        .expect("noop");
    // The worker polls hot for at least this long after the call: a lower bound by
    // construction, not a timing assumption.
    let idle = Duration::from_millis(400);
    std::thread::sleep(idle);
    let id = lease.id();
    drop(lease);
    let ledger = dir.join("ledger.jsonl");
    let mut entry = None;
    eventually("the lease's ledger entry", || {
        entry = executor::manager::read_ledger(&ledger)
            .ok()
            .and_then(|e| e.into_iter().find(|e| e.lease_id == id));
        entry.is_some()
    });
    let entry = entry.expect("entry");
    assert_eq!(entry.invocations, 1, "{entry:?}");
    // Half of it, so that no preemption of the worker between its answer and its next poll
    // can fail the test; the span in which the client left was missing entirely (hundreds of
    // microseconds accounted).
    assert!(
        entry.hot_poll_us >= idle.as_micros() as u64 / 2,
        "hot polling accounted {} µs of at least {} µs idle: {entry:?}",
        entry.hot_poll_us,
        idle.as_micros()
    );
}

/// Has `fault` start `sleep 1000` in lease `lease` (`mode` 4: in the executor's process
/// group; 5: in a group of its own) and returns its pid.
#[track_caller]
fn started(lease: &rfaas::Lease, mode: u32) -> u32 {
    let pid = lease
        .invoke(fx::fault::call(mode, 1000))
        .timeout(T)
        .wait()
        .expect("a process started");
    assert_ne!(pid, 0, "the function could not start `sleep` (mode {mode})");
    u32::try_from(pid).expect("a pid")
}

/// Whether process `pid` is gone: no such process, or a zombie nobody reaped yet (a
/// container's first process may not reap the orphans it inherits).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// A process a function started goes with its lease, not only the executor: the executor
/// leads a process group of its own, which the lease's end kills whole. (A function's `sleep`
/// used to outlive the lease, holding CPU time and memory the node had given back.)
#[test]
fn processes_a_function_started_end_with_the_lease() {
    let dir = scratch_dir("manager-process-group");
    let mgr = Service::start("manager", &manager_config(&dir, ""));
    let lease = lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm)).expect("lease");
    let pid = started(&lease, 4);
    assert!(!process_gone(pid), "`sleep 1000` ended by itself");
    drop(lease);
    eventually("the function's process ended with the lease", || {
        process_gone(pid)
    });
}

/// An executor's output (its own log, and what its functions print) reaches the manager's
/// stderr in lines tagged with the lease, so that it cannot pass for the manager's own lines;
/// and a log that is not a terminal gets no colour codes.
#[test]
fn executor_output_reaches_the_managers_log_tagged_with_its_lease() {
    let dir = scratch_dir("manager-output");
    let config = manager_config(&dir, "");
    let log = dir.join("manager.log");
    let mgr = Service::start_logged("manager", &config, &log);
    let lease = lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm)).expect("lease");
    lease
        .invoke(fx::noop::call())
        .timeout(T)
        .wait()
        .expect("noop");
    // As root without executor_uids, the manager says that tenants' code runs as root.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        eventually("the warning about functions running as root", || {
            std::fs::read_to_string(&log)
                .is_ok_and(|t| t.contains("running as root without executor_uids"))
        });
    } else {
        eprintln!("not root: the manager's warning about running as root is not checked");
    }
    let tag = format!("lease {} | ", lease.id());
    eventually("the executor's log line in the manager's", || {
        std::fs::read_to_string(&log).is_ok_and(|t| {
            t.lines()
                .any(|l| l.starts_with(&tag) && l.contains("executor ready"))
        })
    });
    drop(lease);
    drop(mgr);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains('\x1b'), "colour codes in a log file: {text}");
    assert!(
        text.lines()
            .any(|l| l.contains("manager ready") && !l.starts_with("lease ")),
        "{text}"
    );
}

/// Held by the tests of managers with cgroups: one's start ends what a killed one left, which
/// the other may be looking at.
static CGROUP_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether leases can have cgroups here (root, and the controllers); says why not.
fn cgroups_here() -> bool {
    match executor::cgroups::available() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("skipped: no cgroups for leases here: {why}");
            false
        }
    }
}

/// The cgroup paths process `pid` is in (`/proc/<pid>/cgroup`).
fn cgroups_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
}

/// With `cgroups = true` a lease's cgroup holds it to its cores (a function cannot widen its
/// affinity) and to its memory, counting memory files (which the executor's own limit does
/// not), and the lease's end kills what left its process group. Each of these fails without
/// the cgroup.
#[test]
fn a_lease_in_a_cgroup_keeps_to_its_cores_and_memory_and_ends_whole() {
    if !cgroups_here() {
        return;
    }
    let _serial = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch_dir("manager-cgroups");
    let mgr = Service::start("manager", &manager_config(&dir, "cgroups = true\n"));
    let mut s = spec(1, Fabric::Shm);
    s.memory_mib = 64;
    let lease = lease_from(&mgr.address, example_package(), &s).expect("lease");
    let call = |mode, value| lease.invoke(fx::fault::call(mode, value)).timeout(T).wait();
    let pid = started(&lease, 5);
    let of = cgroups_of(pid);
    assert!(
        of.contains(&format!("/lease-{}\n", lease.id())),
        "a process the function started is not in the lease's cgroup: {of}"
    );
    if rfaas::sys::allowed_cpus().len() > 1 {
        assert_eq!(
            call(7, 0).expect("affinity"),
            1,
            "a function moved onto cores its lease does not have"
        );
    } else {
        eprintln!("one CPU here: the cpuset is not checked");
    }
    assert_eq!(call(6, 16).expect("16 MiB in a memory file"), 16 << 20);
    let id = lease.id();
    drop(lease);
    eventually("the escaped process ended with the lease", || {
        process_gone(pid)
    });
    // Memory files beyond the lease's memory: the kernel ends the executor, and the ledger
    // says why.
    let lease = lease_from(&mgr.address, example_package(), &s).expect("second lease");
    match lease.invoke(fx::fault::call(6, 1024)).timeout(T).wait() {
        Err(Error::ExecutorGone) => {}
        other => panic!("expected the executor gone, got {other:?}"),
    }
    let second = lease.id();
    let ledger = dir.join("ledger.jsonl");
    eventually("the second lease's ledger entry", || {
        executor::manager::read_ledger(&ledger)
            .is_ok_and(|e| e.iter().any(|e| e.lease_id == second))
    });
    let entries = executor::manager::read_ledger(&ledger).expect("ledger");
    let entry = entries
        .iter()
        .find(|e| e.lease_id == second)
        .expect("entry");
    let exit = entry.executor_exit.as_deref().unwrap_or_default();
    assert!(exit.contains("out of memory"), "{entry:?}");
    // The first lease's accounting by its cgroup: CPU time, and a peak of at least the
    // memory file its function wrote (where the kernel counts a peak: Linux 5.19 under v2).
    let first = entries
        .iter()
        .find(|e| e.lease_id == id)
        .expect("the first lease's entry");
    assert!(first.executor_exit.is_none(), "{first:?}");
    assert!(first.cpu_us.is_some_and(|us| us > 0), "{first:?}");
    if let Some(peak) = first.memory_peak_bytes {
        assert!(peak >= 16 << 20, "{first:?}");
    }
}

/// A manager killed outright ends no lease; a manager started after it ends what the dead
/// one's leases' cgroups still hold (their processes outlive it, even its executors' deaths).
#[test]
fn a_restarted_manager_ends_what_a_killed_ones_lease_cgroups_hold() {
    if !cgroups_here() {
        return;
    }
    let _serial = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch_dir("manager-cgroups-restart");
    let config = manager_config(&dir, "cgroups = true\nshutdown_grace_ms = 0\n");
    let mgr = Service::start("manager", &config);
    let lease = lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm)).expect("lease");
    let pid = started(&lease, 5);
    drop(mgr); // SIGKILL: its lease ends without its cgroup's kill
    drop(lease);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !process_gone(pid),
        "the escaped process died with the manager"
    );
    assert!(cgroups_of(pid).contains("/lease-"), "{}", cgroups_of(pid));
    let mut mgr = Service::start("manager", &config);
    eventually(
        "the restarted manager ended the dead lease's process",
        || process_gone(pid),
    );
    // Stopped in order (SIGTERM, no grace): it ends its lease and removes its cgroups.
    let lease = lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm)).expect("lease");
    let escaped = started(&lease, 5);
    let id = lease.id();
    let manager_pid = mgr.child.id();
    tests::signal(manager_pid, libc::SIGTERM);
    let status = exited(&mut mgr);
    assert!(status.success(), "the manager exited with {status}");
    assert_eq!(
        ledger_entry(&dir, id).ended_by_manager.as_deref(),
        Some(executor::manager::ENDED_AT_SHUTDOWN)
    );
    assert!(
        process_gone(escaped),
        "a process of the lease outlived the manager's stop"
    );
    let prefix = format!("rfaas-{manager_pid}.");
    for parent in executor::cgroups::hierarchies().expect("hierarchies") {
        let left: Vec<String> = tests::dir_names(&parent)
            .into_iter()
            // (A v2 manager that moved itself into a leaf cannot remove the leaf it is in.)
            .filter(|n| n.starts_with(&prefix) && !n.ends_with(".manager"))
            .collect();
        assert!(left.is_empty(), "left in {}: {left:?}", parent.display());
    }
}

/// A cgroup of this process's, in every hierarchy, handed to user `uid` as a service
/// manager delegates one (the directory and the files that move processes and pass
/// controllers on); removed with everything under it on drop, after that user's processes.
struct Delegated {
    uid: u32,
    dirs: Vec<PathBuf>,
}

impl Delegated {
    fn new(uid: u32) -> Option<Delegated> {
        let parents = executor::cgroups::hierarchies().ok()?;
        // What a test process that was killed left (its pid gone).
        for parent in &parents {
            for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("test-delegated-")
                    && !Path::new(&format!("/proc/{pid}")).exists()
                {
                    Delegated::remove(&e.path());
                }
            }
        }
        let mut made = Delegated {
            uid,
            dirs: Vec::new(),
        };
        for parent in parents {
            let dir = parent.join(format!("test-delegated-{}", std::process::id()));
            std::fs::create_dir(&dir).expect("a cgroup to delegate");
            made.dirs.push(dir.clone());
            let v2 = parent.join("cgroup.controllers").exists();
            if v2 {
                // Passed on to it (by the root cgroup, which may, or by a test before us).
                std::fs::write(
                    parent.join("cgroup.subtree_control"),
                    "+memory +pids +cpuset",
                )
                .expect("controllers for the delegated cgroup");
            }
            // A v1 cpuset takes no task until it has CPUs and nodes.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if !v2 && dir.join(f).exists() {
                    let v = std::fs::read_to_string(parent.join(f)).expect("parent cpuset");
                    std::fs::write(dir.join(f), v.trim()).expect("cpuset");
                }
            }
            for f in [
                "",
                "cgroup.procs",
                "cgroup.subtree_control",
                "cgroup.threads",
                "tasks",
            ] {
                let path = dir.join(f);
                if path.exists() {
                    std::os::unix::fs::chown(&path, Some(uid), Some(uid)).expect("chown");
                }
            }
        }
        Some(made)
    }
}

impl Delegated {
    /// Removes cgroup `dir` and every cgroup under it (each once its processes are gone).
    fn remove(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    Delegated::remove(&e.path());
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while std::fs::remove_dir(dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        executor::users::sweep(self.uid);
        for d in &self.dirs {
            Delegated::remove(d);
        }
    }
}

/// A manager that is not root, in a cgroup delegated to its user (as systemd's
/// `Delegate=yes` gives a service), puts its leases in cgroups of their own there: under
/// cgroup v2 it first moves itself into a leaf of it, so that the cgroup may pass its
/// controllers on.
#[test]
fn a_manager_that_is_not_root_puts_leases_in_cgroups_of_its_delegated_one() {
    const UID: u32 = 64_420;
    if !cgroups_here() {
        return;
    }
    let Some(_users) = tests::spare_users(UID, UID) else {
        return;
    };
    let _serial = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let delegated = Delegated::new(UID).expect("this process's cgroups");
    let dir = scratch_dir("manager-cgroups-delegated");
    let config = manager_config(&dir, "cgroups = true\n");
    // Its directories are its user's (they must be private to it).
    for entry in walk(&dir) {
        std::os::unix::fs::chown(&entry, Some(UID), Some(UID)).expect("chown");
    }
    let joins: Vec<std::fs::File> = delegated
        .dirs
        .iter()
        .map(|d| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("cgroup.procs"))
                .expect("the delegated cgroup's procs")
        })
        .collect();
    let fds: Vec<i32> = joins.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
    let mut cmd = Command::new(executor_binary());
    cmd.args(["manager", "--config"])
        .arg(&config)
        .stdout(Stdio::piped());
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only writes to descriptors `joins` keeps open until after the spawn
    // and changes user with raw system calls (async-signal-safe, no allocation).
    unsafe {
        cmd.pre_exec(move || {
            executor::cgroups::join(&fds)?;
            executor::users::become_user(UID, 256 << 20, 4096)?;
            // It dies with the test (after the change of user, which clears this).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn");
    drop(joins);
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("output");
    let address = line
        .trim()
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("the manager did not start: {line:?}"))
        .to_owned();
    let mgr = Service { child, address };
    assert_eq!(uid_of(mgr.child.id()), UID);
    let lease = lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm)).expect("lease");
    let pid = started(&lease, 5);
    assert_eq!(uid_of(pid), UID);
    let of = cgroups_of(pid);
    assert!(
        of.contains(&format!("/test-delegated-{}/rfaas-", std::process::id()))
            && of.contains(&format!("/lease-{}\n", lease.id())),
        "not in a lease cgroup under the delegated one: {of}"
    );
    if rfaas::sys::allowed_cpus().len() > 1 {
        assert_eq!(
            lease
                .invoke(fx::fault::call(7, 0))
                .timeout(T)
                .wait()
                .expect("affinity"),
            1,
            "a function moved onto cores its lease does not have"
        );
    }
    drop(lease);
    eventually("the escaped process ended with the lease", || {
        process_gone(pid)
    });
    drop(mgr);
}

/// Every file and directory under `dir`, and `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                all.extend(walk(&e.path()));
            } else {
                all.push(e.path());
            }
        }
    }
    all
}

/// The real user id process `pid` runs as.
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .expect("a Uid line")
}

/// Whether a shell running as `uid` may open `path` for appending.
fn may_append(uid: u32, path: &Path) -> bool {
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .arg("-c")
        .arg("exec 3>>\"$1\"")
        .arg("sh")
        .arg(path)
        .uid(uid)
        .gid(uid)
        .current_dir("/")
        .stderr(Stdio::null())
        .status()
        .expect("sh")
        .success()
}

/// With `executor_uids`, each running lease's executor runs as a user no other running lease
/// has: its functions cannot write the manager's files (the package cache, the ledger), and
/// whatever they leave running is killed at the lease's end by its user id, even a process
/// that left the executor's process group (which the group kill alone misses). The ids are
/// handed out again after their lease, and a lease beyond them is refused with the reason.
#[test]
fn executors_run_as_users_of_their_own_and_leave_nothing_running() {
    // What a failed run leaves of these users (the manager killed with it ends no lease) goes.
    let Some(_users) = tests::spare_users(64_310, 64_311) else {
        return;
    };
    let dir = scratch_dir("manager-users");
    // The executor binary in a directory its users may not search (as a build tree in /root
    // would be): the manager runs it through a descriptor.
    let private = dir.join("private");
    std::fs::create_dir_all(&private).expect("private dir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let exe = private.join("rfaas-executor");
    std::fs::copy(executor_binary(), &exe).expect("copy the executor");
    // Three cores: the third lease finds cores but no user.
    let config = tests::manager_config(
        &dir,
        3,
        1024,
        &format!(
            "executor_uids = \"64310-64311\"\nexecutor = \"{}\"\n",
            exe.display()
        ),
    );
    let mgr = Service::start("manager", &config);
    // Starts a process in the executor's group (mode 4) and one in a group of its own (5).
    let started = |lease: &rfaas::Lease| [4, 5].map(|mode| started(lease, mode));
    let a = lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm)).expect("lease a");
    let b = lease_from(&mgr.address, example_package(), &spec(1, Fabric::Tcp)).expect("lease b");
    let (of_a, of_b) = (started(&a), started(&b));
    let (uid_a, uid_b) = (uid_of(of_a[0]), uid_of(of_b[0]));
    assert_ne!(uid_a, uid_b, "two running leases share a user");
    for (uid, pids) in [(uid_a, of_a), (uid_b, of_b)] {
        assert!(
            (64_310..=64_311).contains(&uid),
            "a lease runs as user {uid}"
        );
        assert_eq!(uid_of(pids[1]), uid, "a lease's processes run as its user");
        let status = std::fs::read_to_string(format!("/proc/{}/status", pids[0])).expect("status");
        assert!(
            status
                .lines()
                .any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])),
            "a lease's process may gain privileges (set-user-id programs): {status}"
        );
    }
    // Each lease has a /tmp of its own (where the manager may mount one): what a function
    // leaves there is not the node's, nor another lease's, nor the next one's of its user.
    let scratch = executor::users::Scratch::available();
    let left = format!("left-by-lease-a-{}", std::process::id());
    let tmp_of = |pid: u32| PathBuf::from(format!("/proc/{pid}/root/tmp"));
    match &scratch {
        Ok(()) => {
            std::fs::write(tmp_of(of_a[0]).join(&left), b"a's data").expect("write a's /tmp");
            assert!(
                tmp_of(of_a[1]).join(&left).exists(),
                "lease a's processes share its /tmp"
            );
            assert!(
                !Path::new("/tmp").join(&left).exists(),
                "lease a's /tmp is the node's"
            );
            assert!(
                !tmp_of(of_b[0]).join(&left).exists(),
                "lease b sees lease a's /tmp"
            );
            // And System V IPC objects of its own.
            let ipc = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/ipc")).expect("ns");
            let (a_ipc, b_ipc) = (ipc(&of_a[0].to_string()), ipc(&of_b[0].to_string()));
            assert_ne!(
                a_ipc,
                ipc("self"),
                "lease a shares the node's IPC namespace"
            );
            assert_ne!(a_ipc, b_ipc, "two leases share an IPC namespace");
        }
        Err(why) => eprintln!("not checked: executors' own /tmp ({why})"),
    }
    // What the functions write goes through a pipe the manager relays, not into the
    // manager's own stderr (a log file they could truncate).
    let stderr_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/fd/2")).expect("fd 2");
    let relayed = stderr_of(of_a[0]);
    assert!(
        relayed.to_string_lossy().starts_with("pipe:") && relayed != stderr_of(mgr.child.id()),
        "a function's stderr is {relayed:?}, the manager's is {:?}",
        stderr_of(mgr.child.id())
    );
    // The functions' user may not touch the manager's files.
    let lib = example_package().join("libfunctions_example.so");
    let sha = executor::package::sha256_file(&lib).expect("hash");
    let cached = dir.join("cache").join(format!("{sha}.so"));
    assert!(
        cached.is_file(),
        "no cached package at {}",
        cached.display()
    );
    assert!(may_append(0, &cached), "the check itself cannot open files");
    assert!(
        !may_append(uid_a, &cached),
        "a lease's user may write the package cache"
    );
    assert!(
        !may_append(uid_a, &dir.join("ledger.jsonl")),
        "a lease's user may write the ledger"
    );
    // A third lease finds no free user.
    let err = lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm))
        .expect_err("a lease beyond executor_uids");
    let text = err.to_string();
    assert!(
        text.contains("no free executor user") && text.contains("64310-64311"),
        "{text}"
    );
    drop(a);
    eventually(
        "lease a's processes ended with it, in its group or not",
        || of_a.iter().all(|&p| process_gone(p)),
    );
    assert!(
        of_b.iter().all(|&p| !process_gone(p)),
        "lease a's end killed lease b's processes"
    );
    // Its user serves the next lease, once given back (after the sweep that ends the lease,
    // which may still be checking /proc when the processes are gone).
    let mut c = None;
    eventually("lease a's user given back", || {
        match lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm)) {
            Ok(lease) => c = Some(lease),
            Err(e) if e.to_string().contains("no free executor user") => {}
            Err(e) => panic!("lease c: {e}"),
        }
        c.is_some()
    });
    let c = c.expect("lease c");
    let of_c = started(&c);
    if scratch.is_ok() {
        assert!(
            !tmp_of(of_c[0]).join(&left).exists(),
            "the next lease of lease a's user finds what a left in /tmp"
        );
    }
    assert_eq!(
        uid_of(of_c[0]),
        uid_a,
        "the free user was not handed out again"
    );
    assert_eq!(
        b.invoke(fx::fault::call(0, 7))
            .timeout(T)
            .wait()
            .expect("lease b serves on"),
        7
    );
    drop((b, c));
    eventually("every lease's processes ended", || {
        of_b.iter().chain(&of_c).all(|&p| process_gone(p))
    });
    // The ledger (every lease's package and times) is the manager's alone.
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(dir.join("ledger.jsonl"))
        .expect("ledger")
        .mode();
    assert_eq!(mode & 0o077, 0, "the ledger is open to others: {mode:o}");
}

/// A manager killed with a lease running ends no lease: the process that lease's function
/// moved out of its executor's group lives on as the lease's user. The restarted manager
/// sweeps the ids its record (`<ledger>.users`) names, so that process goes and the id serves
/// again. (Without the record the id would be set aside for good, as a stranger's.)
#[test]
fn a_restarted_manager_sweeps_what_a_killed_ones_leases_left() {
    const UID: u32 = 64_350;
    let Some(_users) = tests::spare_users(UID, UID) else {
        return;
    };
    let dir = scratch_dir("manager-users-restart");
    let config = manager_config(&dir, &format!("executor_uids = \"{UID}\"\n"));
    let mgr = Service::start("manager", &config);
    let lease = lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm)).expect("lease");
    let pid = started(&lease, 5);
    assert_eq!(uid_of(pid), UID);
    drop(mgr); // SIGKILL: its lease ends with no sweep
    drop(lease);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !process_gone(pid),
        "the escaped process died with the manager"
    );
    let mgr = Service::start("manager", &config);
    eventually("the restarted manager swept the lease's leftover", || {
        process_gone(pid)
    });
    let lease = lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm))
        .expect("a lease on the swept id");
    assert_eq!(uid_of(started(&lease, 4)), UID);
}

/// A process whose first thread ended while another runs on shows as a zombie in /proc: the
/// sweep of a lease's user still finds and kills it. (It used to be taken for dead, so that its
/// user id went to the next lease with the process still running as it.)
#[test]
fn a_lingering_thread_does_not_escape_the_sweep_of_its_user() {
    use executor::users::{processes_of, sweep};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    const UID: u32 = 64_330;
    let Some(_users) = tests::spare_users(UID, UID) else {
        return;
    };
    // Run through our descriptor: its user may not search the directories of the build tree.
    let binary = std::fs::File::open(env!("CARGO_BIN_EXE_rfaas-test-linger")).expect("binary");
    let mut child = Command::new(format!("/proc/self/fd/{}", binary.as_raw_fd()))
        .uid(UID)
        .gid(UID)
        .process_group(0)
        .current_dir("/")
        .stdout(Stdio::piped())
        .spawn()
        .expect("rfaas-test-linger");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("output");
    assert_eq!(line.trim(), "lingering");
    let pid = child.id();
    eventually("its first thread ended (a zombie in /proc)", || {
        process_gone(pid)
    });
    assert!(
        processes_of(|u| u == UID)
            .expect("/proc")
            .iter()
            .any(|p| p.pid == pid),
        "a process with a running thread was taken for dead"
    );
    assert!(sweep(UID), "the sweep left user {UID}'s process running");
    let status = child.wait().expect("wait");
    assert!(
        !status.success(),
        "the lingering thread ended by itself: {status}"
    );
}

/// An executor process whose memory limit leaves no room for all of its workers' threads ends
/// the session at once and says why: every call fails with `ExecutorGone`, none waits
/// unanswered on a worker that never started, and the process lives on. (It used to panic
/// inside the workers' scope, which under the limit aborted the process on the panic's own
/// allocation, or served with the workers it had while calls spread to the missing ones timed
/// out.)
#[test]
fn a_session_short_of_worker_threads_ends_and_says_why() {
    const WORKERS: usize = 16;
    const REASON: &str = "cannot start the session's workers";
    let mut child = Command::new(executor_binary())
        .args([
            "worker",
            "--lease",
            "1",
            "--memory-mib",
            "20",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--cores", &WORKERS.to_string(), "--slot-size", "128"])
        .arg("--library")
        .arg(example_package())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, log) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("{line}");
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let address = tests::ready_address(&mut child, "the executor");
    let lease = rfaas::Lease::connect_tcp(&address, &rfaas::LeaseOptions::default())
        .expect("the handshake needs no worker thread");
    // As many calls in flight as workers: they are spread over all of them.
    let calls: Vec<_> = (0..WORKERS)
        .map(|_| lease.invoke(fx::noop::call()).timeout(T))
        .collect();
    let outcome: Vec<_> = calls
        .into_iter()
        .map(|c| match c.wait() {
            Ok(()) => "answered".to_owned(),
            Err(Error::ExecutorGone) => "gone".to_owned(),
            Err(e) => format!("{e}"),
        })
        .collect();
    assert!(
        outcome.iter().all(|o| o == "gone"),
        "16 threads of 2 MiB stacks cannot fit in 20 MiB: {outcome:?}"
    );
    let deadline = Instant::now() + T;
    let said = loop {
        match log.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains(REASON) => break true,
            Ok(_) => {}
            Err(_) if Instant::now() >= deadline || !matches!(child.try_wait(), Ok(None)) => {
                break false;
            }
            Err(_) => {}
        }
    };
    let status = child.try_wait();
    let _ = child.kill();
    let _ = child.wait();
    assert!(said, "the executor's log never said {REASON:?}");
    assert!(
        matches!(status, Ok(None)),
        "the executor died instead of ending the session: {status:?}"
    );
}

#[test]
fn an_executor_runs_within_its_leases_memory() {
    let dir = scratch_dir("manager-memory");
    let mgr = Service::start("manager", &manager_config(&dir, ""));
    let pkg = example_package();
    let mut small = spec(1, Fabric::Shm);
    small.memory_mib = 8;
    match lease_from(&mgr.address, pkg, &small) {
        Err(Error::Refused(why)) => assert!(why.contains("too little memory"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A shared-memory worker keeps a slot of scratch: two cores with 16 MiB slots need more
    // than 24 MiB (granted before, and the executor died of it at the session's start).
    let mut big_slots = spec(2, Fabric::Shm);
    big_slots.memory_mib = 24;
    big_slots.slot_size = Some(16 << 20);
    match lease_from(&mgr.address, pkg, &big_slots) {
        Err(Error::Refused(why)) => assert!(why.contains("at least 56 MiB"), "{why}"),
        Ok(lease) => panic!(
            "expected a refusal, got a lease whose first call gives {:?}",
            lease.invoke(fx::noop::call()).timeout(T).wait()
        ),
        Err(e) => panic!("expected a refusal, got {e:?}"),
    }
    // Enough for them, and served.
    big_slots.memory_mib = 56;
    let lease = lease_from(&mgr.address, pkg, &big_slots).expect("lease of 16 MiB slots");
    let mut out = vec![0u8; 1 << 20];
    let input = vec![7u8; 1 << 20];
    for _ in 0..2 {
        assert_eq!(
            fx::echo::invoke(&lease, &input, &mut out)
                .timeout(T)
                .wait()
                .expect("echo within the least memory"),
            1 << 20
        );
    }
    assert_eq!(out, input);
    drop(lease);
    let mut s = spec(1, Fabric::Shm);
    s.memory_mib = 96;
    // Once the two cores are back.
    let mut lease = None;
    eventually("capacity returned", || {
        lease = lease_from(&mgr.address, pkg, &s).ok();
        lease.is_some()
    });
    let lease = lease.expect("lease");
    // Within the limit: 32 MiB allocated and touched.
    assert_eq!(
        lease
            .invoke(fx::fault::call(3, 32))
            .timeout(T)
            .wait()
            .expect("within the limit"),
        32 << 20
    );
    // Beyond it: the allocation fails, the executor ends, the invocation says so.
    match lease.invoke(fx::fault::call(3, 512)).timeout(T).wait() {
        Err(Error::ExecutorGone) => {}
        other => panic!("expected the executor gone, got {other:?}"),
    }
    let id = lease.id();
    // The manager ends the lease by itself (the client still holds it), returns the memory,
    // and records how the executor ended.
    let ledger = dir.join("ledger.jsonl");
    eventually("the lease's ledger entry", || {
        executor::manager::read_ledger(&ledger).is_ok_and(|e| e.iter().any(|e| e.lease_id == id))
    });
    let entries = executor::manager::read_ledger(&ledger).expect("ledger");
    let entry = entries.iter().find(|e| e.lease_id == id).expect("entry");
    let exit = entry.executor_exit.as_deref().unwrap_or_default();
    assert!(exit.contains("signal"), "{entry:?}");
    // The entry is written before the lease's capacity is given back (a client that finds the
    // capacity finds the entry too), so the capacity is waited for.
    let mut all = spec(2, Fabric::Shm);
    all.memory_mib = 1024;
    eventually("all the node's cores and memory free again", || {
        lease_from(&mgr.address, pkg, &all).is_ok()
    });
    drop(lease);
}

#[test]
fn rdma_leases_are_refused_by_a_node_without_rdma() {
    if cfg!(feature = "verbs") {
        eprintln!("skipped: built with RDMA support (see tests/it/verbs.rs)");
        return;
    }
    let dir = scratch_dir("manager-no-rdma");
    let mgr = Service::start("manager", &manager_config(&dir, ""));
    // This client cannot ask (no `verbs` feature): it says so itself.
    match lease_from(&mgr.address, example_package(), &spec(1, Fabric::Verbs)) {
        Err(Error::Refused(why)) => assert!(why.contains("`verbs` feature"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Asked by hand, the manager refuses before any package is shipped.
    let mut s = std::net::TcpStream::connect(&mgr.address).expect("connect");
    let request = rfaas::wire::LeaseRequest {
        cores: 1,
        memory_mib: 64,
        hot_timeout_us: 0,
        fabric: Fabric::Verbs,
        package_sha256: "ab".repeat(32),
        package_len: Some(1000),
        slots: None,
        slot_size: None,
        heartbeat_ms: None,
    };
    rfaas::transport::send_json(&mut s, &request).expect("request");
    match rfaas::transport::recv_json::<rfaas::wire::LeaseReply>(&mut s).expect("reply") {
        rfaas::wire::LeaseReply::Refused(why) => {
            assert!(why.contains("offers no RDMA leases"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The manager keeps serving.
    let lease =
        lease_from(&mgr.address, example_package(), &spec(1, Fabric::Tcp)).expect("tcp lease");
    assert_eq!(
        lease
            .invoke(fx::fault::call(0, 3))
            .timeout(T)
            .wait()
            .expect("invocation"),
        3
    );
}

#[test]
fn packages_are_checked_and_bad_requests_refused() {
    let dir = scratch_dir("manager-bad");
    let mgr = Service::start(
        "manager",
        &manager_config(&dir, "max_package_bytes = 1000000000\n"),
    );
    // A package whose recorded hash does not match its bytes.
    let fake = scratch_dir("manager-fake-package");
    std::fs::copy(
        example_package().join("libfunctions_example.so"),
        fake.join("libfunctions_example.so"),
    )
    .expect("copy");
    std::fs::write(
        fake.join("libfunctions_example.so.sha256"),
        format!("{}  libfunctions_example.so\n", "ab".repeat(32)),
    )
    .expect("sidecar");
    // The client finds out before it uploads anything.
    match lease_from(&mgr.address, &fake, &spec(1, Fabric::Shm)) {
        Err(Error::Package(why)) => assert!(why.contains("package it again"), "{why}"),
        other => panic!("expected a stale package, got {other:?}"),
    }
    // A client that uploads anyway is refused by the manager, which hashes what it gets.
    {
        use rfaas::transport::{recv_json, send_json};
        use rfaas::wire::{LeaseReply, LeaseRequest};
        let bytes = std::fs::read(fake.join("libfunctions_example.so")).expect("library");
        let mut s = std::net::TcpStream::connect(&mgr.address).expect("connect");
        send_json(
            &mut s,
            &LeaseRequest {
                cores: 1,
                memory_mib: 256,
                hot_timeout_us: 0,
                fabric: Fabric::Shm,
                package_sha256: "ab".repeat(32),
                package_len: Some(bytes.len() as u64),
                slots: None,
                slot_size: None,
                heartbeat_ms: None,
            },
        )
        .expect("request");
        let reply: LeaseReply = recv_json(&mut s).expect("reply");
        assert_eq!(reply, LeaseReply::NeedPackage);
        s.write_all(&bytes).expect("upload");
        match recv_json::<LeaseReply>(&mut s).expect("verdict") {
            LeaseReply::Refused(why) => assert!(why.contains("hash to"), "{why}"),
            other => panic!("expected a hash refusal, got {other:?}"),
        }
    }
    // Malformed and hostile control messages.
    for body in [&b"garbage"[..], br#"{"cores":1}"#, br#"{"cores":1,"memory_mib":1,"hot_timeout_us":0,"fabric":"shm","package_sha256":"zz","package_len":null,"slots":null,"slot_size":null}"#] {
        let mut s = std::net::TcpStream::connect(&mgr.address).expect("connect");
        s.write_all(&(body.len() as u32).to_le_bytes()).expect("write");
        s.write_all(body).expect("write");
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).expect("answer");
        assert!(String::from_utf8_lossy(&answer).contains("refused"), "{}", String::from_utf8_lossy(&answer));
    }
    // Still serving.
    let ok = lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm)).expect("lease");
    assert_eq!(
        ok.invoke(fx::fault::call(0, 1))
            .timeout(T)
            .wait()
            .expect("invocation"),
        1
    );
    drop(ok);
    // A node with a small package limit refuses the upload.
    let small_dir = scratch_dir("manager-small");
    let small = Service::start(
        "manager",
        &manager_config(&small_dir, "max_package_bytes = 1000\n"),
    );
    match lease_from(&small.address, example_package(), &spec(1, Fabric::Shm)) {
        Err(Error::Refused(why)) => assert!(why.contains("exceeds"), "{why}"),
        other => panic!("expected a size refusal, got {other:?}"),
    }
}

/// A package whose bytes are what the client sent but that cannot be loaded (a plain C
/// library without rfaas functions, a file that is no shared library) is refused with the
/// loader's reason, and does not stay in the cache: the next request ships it again instead
/// of starting an executor that fails. (The refusal used to read `executor did not start:
/// ""`, and the package stayed cached.) One the dynamic loader refuses for this node's
/// circumstances (a missing dependency) is refused with its reason and kept.
#[test]
fn a_package_that_cannot_be_loaded_is_refused_with_the_reason_and_evicted() {
    let dir = scratch_dir("manager-unloadable");
    let mgr = Service::start("manager", &manager_config(&dir, ""));
    // A package of `bytes` as `lib{name}.so`, and where the manager caches it.
    let package_of = |name: &str, bytes: &[u8]| {
        let package = scratch_dir(&format!("manager-{name}-package"));
        std::fs::write(package.join(format!("lib{name}.so")), bytes).expect("library");
        let sha = executor::package::sha256_hex(bytes);
        std::fs::write(
            package.join(format!("lib{name}.so.sha256")),
            format!("{sha}  lib{name}.so\n"),
        )
        .expect("sidecar");
        (package, dir.join("cache").join(format!("{sha}.so")))
    };
    // Refused twice with all of `words`, and cached after neither (the second request ships
    // it again).
    let refused_and_evicted = |package: &Path, cached: &Path, words: &[&str]| {
        for attempt in 0..2 {
            match lease_from(&mgr.address, package, &spec(1, Fabric::Shm)) {
                Err(Error::Refused(why)) => assert!(
                    words.iter().all(|w| why.contains(w)),
                    "attempt {attempt}: {why}"
                ),
                other => panic!("attempt {attempt}: expected a refusal, got {other:?}"),
            }
            assert!(
                !cached.exists(),
                "attempt {attempt}: the package stayed cached"
            );
        }
    };
    let lib = tests::c_library(
        "unloadable",
        "int not_an_rfaas_function(void) { return 1; }\n",
    );
    let (package, cached) = package_of("unloadable", &std::fs::read(&lib).expect("the library"));
    refused_and_evicted(
        &package,
        &cached,
        &[
            "cannot be loaded on this node",
            "not an rfaas function library",
        ],
    );
    // A file that is no shared library for this machine at all (any bytes a client uploads
    // with their hash): the package's fault too, refused and evicted. (It used to be left to
    // the dynamic loader, whose refusals are kept: garbage stayed cached and every later lease
    // of it started an executor that failed.)
    let (package, cached) = package_of("not-elf", b"not a shared library at all\n");
    refused_and_evicted(
        &package,
        &cached,
        &[
            "cannot be loaded on this node",
            "not a shared library for this machine: no ELF header",
        ],
    );
    // A shared library for this machine that the dynamic loader refuses (here its dependency
    // is missing on this node; the same path as a library whose segments do not fit the
    // lease's memory): refused with the loader's reason, and kept, since the loader's failures
    // may be this executor's circumstances rather than the package's bytes.
    let dep = tests::c_library("missingdep", "int rfaas_test_dep(void) { return 1; }\n");
    let dep_dir = dep.parent().expect("scratch dir").display().to_string();
    let lib = tests::c_library_with(
        "manager-needs-dep",
        "int rfaas_test_dep(void);\nint uses_dep(void) { return rfaas_test_dep(); }\n",
        &[&format!("-L{dep_dir}"), "-lmissingdep"],
    );
    let (package, cached) = package_of("needs-dep", &std::fs::read(&lib).expect("the library"));
    match lease_from(&mgr.address, &package, &spec(1, Fabric::Shm)) {
        Err(Error::Refused(why)) => assert!(
            why.contains("the executor could not load the package")
                && why.contains("not a loadable shared library")
                && why.contains("libmissingdep.so: cannot open shared object file"),
            "{why}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        cached.exists(),
        "a package the dynamic loader refused was evicted"
    );
    // The node still leases.
    let ok = lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm)).expect("lease");
    assert_eq!(
        ok.invoke(fx::fault::call(0, 7))
            .timeout(T)
            .wait()
            .expect("call"),
        7
    );
}

/// `max_cache_bytes` bounds the package cache whatever clients upload: ever new packages,
/// each kept by the cache (the dynamic loader refuses them for this node's circumstances, here
/// a missing dependency), push out the ones leased before them, recent or not. They used to be
/// spared for 10 minutes after their lease: twelve uploads of distinct 8 MiB packages left
/// 97 MiB in an 8 MiB cache.
#[test]
fn the_package_cache_stays_within_its_limit_under_uploads_of_new_packages() {
    let dep = tests::c_library("cachedep", "int rfaas_test_dep(void) { return 1; }\n");
    let dep_dir = dep.parent().expect("scratch dir").display().to_string();
    let lib = tests::c_library_with(
        "needscachedep",
        "int rfaas_test_dep(void);\nint uses_dep(void) { return rfaas_test_dep(); }\n",
        &[&format!("-L{dep_dir}"), "-lcachedep"],
    );
    let bytes = std::fs::read(&lib).expect("read library");
    // Room for three of them.
    let package_bytes = bytes.len() as u64 + 8;
    let limit = 3 * package_bytes;
    let dir = scratch_dir("manager-cache-bound");
    let mgr = Service::start(
        "manager",
        &manager_config(
            &dir,
            &format!("max_package_bytes = {package_bytes}\nmax_cache_bytes = {limit}\n"),
        ),
    );
    let cache = dir.join("cache");
    let cached_bytes = || -> u64 {
        std::fs::read_dir(&cache)
            .expect("cache dir")
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "so"))
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum()
    };
    for i in 0..8u64 {
        // The same library, made a new package by 8 bytes appended (the loader ignores them).
        let mut package_bytes = bytes.clone();
        package_bytes.extend_from_slice(&i.to_le_bytes());
        let package = scratch_dir(&format!("manager-cache-bound-package-{i}"));
        std::fs::write(package.join("libneeds-dep.so"), &package_bytes).expect("library");
        let sha = executor::package::sha256_hex(&package_bytes);
        std::fs::write(
            package.join("libneeds-dep.so.sha256"),
            format!("{sha}  libneeds-dep.so\n"),
        )
        .expect("sidecar");
        match lease_from(&mgr.address, &package, &spec(1, Fabric::Shm)) {
            Err(Error::Refused(why)) => assert!(
                why.contains("the executor could not load the package"),
                "upload {i}: {why}"
            ),
            other => panic!("upload {i}: expected a refusal, got {other:?}"),
        }
        assert!(
            cache.join(format!("{sha}.so")).exists(),
            "upload {i}: the package just leased was evicted"
        );
        let cached = cached_bytes();
        assert!(
            cached <= limit,
            "upload {i}: {cached} bytes of packages in a cache of {limit}"
        );
    }
}

/// An upload in progress holds no capacity: a client that announces a package and then sends
/// it slowly (or not at all) does not keep other leases off the node's cores meanwhile. The
/// cores were reserved before the upload, so one slow upload of the whole node's cores kept
/// the node full for as long as its upload's deadline (up to minutes).
#[test]
fn an_upload_in_progress_holds_no_capacity() {
    use rfaas::transport::{recv_json, send_json};
    use rfaas::wire::{LeaseReply, LeaseRequest};
    let dir = scratch_dir("manager-slow-upload");
    let mgr = Service::start("manager", &manager_config(&dir, ""));
    let mut uploader = std::net::TcpStream::connect(&mgr.address).expect("connect");
    send_json(
        &mut uploader,
        &LeaseRequest {
            cores: 2,
            memory_mib: 256,
            hot_timeout_us: 0,
            fabric: Fabric::Shm,
            package_sha256: "cd".repeat(32),
            package_len: Some(1 << 20),
            slots: None,
            slot_size: Some(65536),
            heartbeat_ms: None,
        },
    )
    .expect("request");
    let reply: LeaseReply = recv_json(&mut uploader).expect("reply");
    assert_eq!(
        reply,
        LeaseReply::NeedPackage,
        "the go-ahead for the upload"
    );
    // The upload is under way (not a byte of it sent): both cores are still to be had.
    let lease = lease_from(&mgr.address, example_package(), &spec(2, Fabric::Shm))
        .expect("the node's cores while another client uploads");
    assert_eq!(
        lease
            .invoke(fx::fault::call(0, 9))
            .timeout(T)
            .wait()
            .expect("call"),
        9
    );
    // The uploader, done, finds the node full and is refused; its upload is not cached.
    uploader
        .write_all(&[0u8; 1 << 20])
        .expect("the package's bytes");
    match recv_json::<LeaseReply>(&mut uploader).expect("verdict") {
        LeaseReply::Refused(why) => assert!(
            why.contains("hash to") || why.contains("not enough capacity"),
            "{why}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    drop(lease);
}

/// A client that announces a package and sends nothing is cut off after the request timeout
/// (an upload must average 1 MiB/s after that grace), not after the second per MiB it
/// announced: 64 such clients used to lock every other client out of the node for minutes.
/// Uploads now count among uploads, at most eight at once, not among the requests being read:
/// a ninth is refused at once with the reason, and other clients' requests go through.
#[test]
fn silent_uploads_are_cut_off_and_hold_up_no_other_request() {
    use rfaas::transport::{recv_json, send_json};
    use rfaas::wire::{LeaseReply, LeaseRequest};
    let dir = scratch_dir("manager-silent-uploads");
    let mgr = Service::start(
        "manager",
        // A grace long enough for the nine announcements below to fit in it on a slow machine.
        &manager_config(&dir, "request_timeout_ms = 3000\n"),
    );
    // The example package cached first (its lease then ships nothing).
    drop(lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm)).expect("lease"));
    let announce = || {
        let mut stream = std::net::TcpStream::connect(&mgr.address).expect("connect");
        stream.set_read_timeout(Some(T)).expect("timeout");
        send_json(
            &mut stream,
            &LeaseRequest {
                cores: 1,
                memory_mib: 64,
                hot_timeout_us: 0,
                fabric: Fabric::Shm,
                package_sha256: "ab".repeat(32),
                package_len: Some(256 << 20),
                slots: None,
                slot_size: None,
                heartbeat_ms: None,
            },
        )
        .expect("request");
        let reply: LeaseReply = recv_json(&mut stream).expect("reply");
        (stream, reply)
    };
    let mut uploaders: Vec<_> = (0..executor::manager::MAX_UPLOADS)
        .map(|_| {
            let (stream, reply) = announce();
            assert_eq!(reply, LeaseReply::NeedPackage, "the go-ahead for an upload");
            stream
        })
        .collect();
    match announce().1 {
        LeaseReply::Refused(why) => {
            assert!(why.contains("package uploads are in progress"), "{why}")
        }
        other => panic!("a ninth upload at once: {other:?}"),
    }
    let lease = lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm))
        .expect("a lease of a cached package while uploads wait");
    assert_eq!(
        lease
            .invoke(fx::fault::call(0, 4))
            .timeout(T)
            .wait()
            .expect("call"),
        4
    );
    // Each silent uploader hears its upload refused once its grace has passed (the socket's
    // read timeout, T, would fail the test first if the manager waited for 256 s).
    for stream in &mut uploaders {
        match recv_json::<LeaseReply>(stream).expect("the verdict") {
            LeaseReply::Refused(why) => assert!(
                why.contains("reading the package: 0 of") && why.contains("too slow"),
                "{why}"
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // The uploads' places are free again.
    assert_eq!(announce().1, LeaseReply::NeedPackage);
}

/// Clients shipping different packages at once into a cache with room for one: every lease
/// starts and serves, in two rounds. A package is installed, marked leased and opened for its
/// executor in one step under the trimming lock, and one installed moments ago is never
/// trimmed, so no upload's trim takes another's package before its executor has it (finding
/// 65; since the executor gets its library as a descriptor, a trim after that step is
/// harmless too: the test passes with the ten-minute grace at zero).
#[test]
fn concurrent_uploads_into_a_full_cache_all_serve() {
    const CLIENTS: usize = 3;
    let lib = example_package().join("libfunctions_example.so");
    let bytes = std::fs::read(&lib).expect("the example library");
    // Room for one package only.
    let limit = bytes.len() + 64;
    let dir = scratch_dir("manager-full-cache");
    // Cores for two rounds: a round's leases give theirs back a moment after they end.
    let config = tests::manager_config(
        &dir,
        2 * CLIENTS as u32,
        2048,
        &format!("max_package_bytes = {limit}\nmax_cache_bytes = {limit}\n"),
    );
    let mgr = Service::start("manager", &config);
    // Different packages of the same functions: the library with trailing bytes of its own
    // (after everything the loader reads).
    let packages: Vec<PathBuf> = (0..CLIENTS)
        .map(|i| {
            let package = scratch_dir(&format!("manager-full-cache-package-{i}"));
            let mut copy = bytes.clone();
            copy.extend_from_slice(format!("rfaas test package {i}").as_bytes());
            std::fs::write(package.join("libfunctions_example.so"), &copy).expect("copy");
            let sha = executor::package::sha256_hex(&copy);
            std::fs::write(
                package.join("libfunctions_example.so.sha256"),
                format!("{sha}  libfunctions_example.so\n"),
            )
            .expect("hash file");
            package
        })
        .collect();
    for round in 0..2 {
        let barrier = std::sync::Barrier::new(CLIENTS);
        std::thread::scope(|s| {
            let clients: Vec<_> = packages
                .iter()
                .enumerate()
                .map(|(i, package)| {
                    let (barrier, address) = (&barrier, &mgr.address);
                    s.spawn(move || {
                        barrier.wait();
                        let lease = lease_from(address, package, &spec(1, Fabric::Shm))
                            .unwrap_or_else(|e| panic!("round {round}, package {i}: {e}"));
                        let v = (round * CLIENTS + i) as u64;
                        assert_eq!(
                            lease
                                .invoke(fx::fault::call(0, v))
                                .timeout(T)
                                .wait()
                                .expect("call"),
                            v
                        );
                    })
                })
                .collect();
            for c in clients {
                c.join().expect("client");
            }
        });
    }
}

#[test]
fn a_killed_client_returns_its_cores_and_registry_sees_capacity() {
    let dir = scratch_dir("manager-kill");
    let reg_dir = scratch_dir("manager-kill-registry");
    let reg_cfg = tests::registry_config(&reg_dir, "127.0.0.1:0", 2000);
    let reg = Service::start("registry", &reg_cfg);
    let mgr = Service::start(
        "manager",
        &manager_config(
            &dir,
            &format!("registry = \"{}\"\nheartbeat_ms = 50\n", reg.address),
        ),
    );
    let registry = RegistryClient::new(reg.address.clone());
    let free = || {
        registry.list().ok().and_then(|n| {
            n.iter()
                .find(|n| n.info.id == "test-node")
                .map(|n| n.free_cores)
        })
    };
    eventually("node registered with 2 free cores", || free() == Some(2));
    let mut client = managed_client(&mgr.address);
    eventually("registry sees one core in use", || free() == Some(1));
    client.kill().expect("kill");
    client.wait().expect("reap");
    eventually("registry sees the core returned", || free() == Some(2));
    let both = lease_from(&mgr.address, example_package(), &spec(2, Fabric::Shm))
        .expect("both cores free again");
    assert_eq!(both.workers(), 2);
}

/// Another process that takes over a node's id in the registry (deregisters it, registers it
/// at an address of its own) cannot keep it: the real manager's heartbeats no longer refresh
/// the fake entry (they name the manager's address), the manager says so, and once the fake
/// entry expires the manager is listed at its own address again. Its heartbeats used to keep
/// the fake entry alive for as long as the manager ran, sending every client elsewhere.
#[test]
fn a_node_taken_over_in_the_registry_comes_back() {
    let dir = scratch_dir("manager-hijacked");
    let reg_dir = scratch_dir("manager-hijacked-registry");
    let reg = Service::start(
        "registry",
        &tests::registry_config(&reg_dir, "127.0.0.1:0", 600),
    );
    let log = dir.join("manager.log");
    let mgr = Service::start_logged(
        "manager",
        &manager_config(
            &dir,
            &format!("registry = \"{}\"\nheartbeat_ms = 50\n", reg.address),
        ),
        &log,
    );
    let registry = RegistryClient::new(reg.address.clone());
    let listed_at = || {
        registry.list().ok().and_then(|n| {
            n.iter()
                .find(|n| n.info.id == "test-node")
                .map(|n| n.info.address.clone())
        })
    };
    eventually("the node listed at its manager", || {
        listed_at().as_deref() == Some(mgr.address.as_str())
    });
    let fake = rfaas::wire::NodeInfo {
        id: "test-node".into(),
        address: "127.0.0.1:9".into(),
        cores: 64,
        memory_mib: 1 << 40,
        rdma: false,
    };
    // Taken from a live node's address: refused outright.
    match registry.register(&fake) {
        Err(rfaas::registry::RegistryError::Refused(why)) => {
            assert!(why.contains("is registered at"), "{why}")
        }
        other => panic!("a live node's id taken over: {other:?}"),
    }
    // Deregistered first, then taken (again if the manager's heartbeat came in between and it
    // registered anew): the manager's next heartbeat is refused.
    let deadline = Instant::now() + T;
    while {
        let _ = registry.deregister("test-node");
        registry.register(&fake).is_err()
    } {
        assert!(Instant::now() < deadline, "the fake never registered");
    }
    // Its heartbeat refused, or, if a heartbeat of its found the id unknown in between, its
    // registration: either way in a warning.
    eventually("the manager says its entry was taken", || {
        std::fs::read_to_string(&log).is_ok_and(|l| {
            l.lines()
                .any(|l| l.contains("WARN") && l.contains("is registered at 127.0.0.1:9"))
        })
    });
    // The fake entry expires (nobody heart-beats it); the manager is back.
    eventually("the node listed at its manager again", || {
        listed_at().as_deref() == Some(mgr.address.as_str())
    });
}

/// `lease_anywhere` bounds its whole search by the negotiation timeout: registered nodes that
/// never answer (a manager that hung, a host that vanished since its last heartbeat) take what
/// is left, and the nodes after them are reported as not tried. Each node used to get a full
/// timeout of its own, so a handful of them kept a client waiting minutes.
#[test]
fn a_search_over_silent_nodes_ends_within_one_negotiation_timeout() {
    let reg_dir = scratch_dir("silent-nodes-registry");
    let reg = Service::start(
        "registry",
        &tests::registry_config(&reg_dir, "127.0.0.1:0", 600_000),
    );
    // Connections to it complete (the backlog takes them) and hear nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = silent.local_addr().expect("address").to_string();
    let registry = RegistryClient::new(reg.address.clone());
    for id in ["silent-a", "silent-b", "silent-c"] {
        registry
            .register(&rfaas::wire::NodeInfo {
                id: id.into(),
                address: address.clone(),
                cores: 4,
                memory_mib: 4096,
                rdma: false,
            })
            .expect("register");
    }
    let mut s = spec(1, Fabric::Tcp);
    s.negotiation_timeout = Duration::from_secs(1);
    match rfaas::managed::lease_anywhere(&reg.address, example_package(), &s) {
        Err(Error::Refused(why)) => {
            assert!(why.contains("silent-a: "), "{why}");
            assert!(
                why.contains("silent-b: not tried") && why.contains("silent-c: not tried"),
                "each node got a timeout of its own: {why}"
            );
        }
        other => panic!("expected every node to fail, got {other:?}"),
    }
    drop(silent);
}

#[test]
fn two_nodes_behind_a_registry_and_a_killed_manager() {
    let reg_dir = scratch_dir("cluster-registry");
    let reg = Service::start(
        "registry",
        &tests::registry_config(&reg_dir, "127.0.0.1:0", 500),
    );
    let start = |name: &str| {
        let dir = scratch_dir(&format!("cluster-{name}"));
        let cfg = manager_config(
            &dir,
            &format!("registry = \"{}\"\nheartbeat_ms = 50\n", reg.address),
        );
        let text = std::fs::read_to_string(&cfg)
            .expect("config")
            .replace("node_id = \"test-node\"", &format!("node_id = \"{name}\""));
        std::fs::write(&cfg, text).expect("config");
        Service::start("manager", &cfg)
    };
    let (node_a, mut node_b) = (start("node-a"), start("node-b"));
    let registry = RegistryClient::new(reg.address.clone());
    eventually("both nodes registered", || {
        registry.list().map(|n| n.len() == 2).unwrap_or(false)
    });
    // Two 2-core leases fill both nodes; a third finds no room anywhere.
    let first =
        rfaas::managed::lease_anywhere(&reg.address, example_package(), &spec(2, Fabric::Shm))
            .expect("first lease");
    eventually("registry sees the first node full", || {
        registry
            .list()
            .map(|n| n.iter().filter(|n| n.free_cores == 0).count() == 1)
            .unwrap_or(false)
    });
    let second =
        rfaas::managed::lease_anywhere(&reg.address, example_package(), &spec(2, Fabric::Tcp))
            .expect("second lease");
    assert_eq!(
        first
            .invoke(fx::fault::call(0, 1))
            .timeout(T)
            .wait()
            .expect("first node"),
        1
    );
    assert_eq!(
        second
            .invoke(fx::fault::call(0, 2))
            .timeout(T)
            .wait()
            .expect("second node"),
        2
    );
    eventually("registry sees both nodes full", || {
        registry
            .list()
            .map(|n| n.iter().all(|n| n.free_cores == 0))
            .unwrap_or(false)
    });
    match rfaas::managed::lease_anywhere(&reg.address, example_package(), &spec(1, Fabric::Shm)) {
        Err(Error::Refused(why)) => assert!(why.contains("free now (of 2 live"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // More than any node has: not a matter of waiting, and the message says so.
    match rfaas::managed::lease_anywhere(&reg.address, example_package(), &spec(3, Fabric::Shm)) {
        Err(Error::Refused(why)) => assert!(
            why.contains("at all") && why.contains(": 2 cores,"),
            "{why}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Kill node b's manager: its executors go with it, so the lease on it fails instead of
    // hanging, and the registry forgets the node.
    // The registry lists equally free nodes by id, so the first lease went to node-a and the
    // second to node-b.
    let lease_on_b = &second;
    let _ = node_b.child.kill();
    let _ = node_b.child.wait();
    let mut failed = false;
    eventually("the lease on the dead node fails", || {
        failed = failed
            || lease_on_b
                .invoke(fx::fault::call(0, 4))
                .timeout(Duration::from_secs(5))
                .wait()
                .is_err();
        failed
    });
    eventually("the registry drops the dead node", || {
        registry.list().map(|n| n.len() == 1).unwrap_or(false)
    });
    drop(node_a);
    eventually("the registry drops the last node", || {
        registry.list().map(|n| n.is_empty()).unwrap_or(false)
    });
    match rfaas::managed::lease_anywhere(&reg.address, example_package(), &spec(1, Fabric::Shm)) {
        Err(Error::Refused(why)) => assert!(why.contains("lists no live node"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_silent_client_loses_its_lease() {
    let dir = scratch_dir("manager-silent");
    let mgr = Service::start("manager", &manager_config(&dir, ""));
    // The default spec asks for `auto`: a client on this host gets shared memory.
    let lease =
        lease_from(&mgr.address, example_package(), &LeaseSpec::default()).expect("auto lease");
    assert_eq!(
        lease
            .invoke(fx::fault::call(0, 1))
            .timeout(T)
            .wait()
            .expect("invocation"),
        1
    );
    drop(lease);
    // A client that stops (SIGSTOP: alive, connection open, no heartbeats) is reclaimed.
    let mut client = managed_client(&mgr.address);
    let stop = Command::new("kill")
        .args(["-STOP", &client.id().to_string()])
        .status()
        .expect("kill -STOP");
    assert!(stop.success());
    let mut both = None;
    eventually("the stopped client's core is reclaimed", || {
        both = lease_from(&mgr.address, example_package(), &spec(2, Fabric::Shm)).ok();
        both.is_some()
    });
    drop(both);
    client.kill().expect("kill");
    client.wait().expect("reap");
    let entries = executor::manager::read_ledger(&dir.join("ledger.jsonl")).expect("ledger");
    assert!(
        entries
            .iter()
            .any(|e| e.fabric == Fabric::Shm && e.invocations == 1),
        "{entries:?}"
    );
    // The stopped client's lease, and only it, is recorded as ended by the manager.
    let ended: Vec<_> = entries
        .iter()
        .filter_map(|e| e.ended_by_manager.as_deref())
        .collect();
    assert_eq!(ended, [executor::manager::ENDED_SILENT], "{entries:?}");
}

/// Waits for the manager `mgr` to exit on its own, and returns how it did.
#[track_caller]
fn exited(mgr: &mut Service) -> std::process::ExitStatus {
    tests::exited(&mut mgr.child, "the manager")
}

/// The ledger's entry for lease `id`, once written.
#[track_caller]
fn ledger_entry(dir: &Path, id: u64) -> executor::manager::LedgerEntry {
    let mut found = None;
    eventually(&format!("lease {id}'s ledger entry"), || {
        found = executor::manager::read_ledger(&dir.join("ledger.jsonl"))
            .ok()
            .and_then(|e| e.into_iter().find(|e| e.lease_id == id));
        found.is_some()
    });
    found.expect("found")
}

/// The signals process `pid` blocks (`SigBlk` in its status), as hex digits.
fn blocked_signals(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .expect("SigBlk")
        .trim()
        .to_owned()
}

/// SIGTERM (or SIGINT) stops a manager the way an operator expects: it leaves the registry at
/// once (not when its heartbeats run out), refuses new leases saying why, lets running leases
/// go on and end as usual, and at a second signal ends the rest: their executors killed,
/// their calls failing, their ledger entries saying so, nothing left in the socket directory;
/// then it exits with status 0. (A SIGTERM used to kill it on the spot: leases in progress
/// were not recorded, and the registry went on listing the node until its heartbeats ran out.)
#[test]
fn a_manager_asked_to_stop_drains_its_leases_then_ends_them() {
    let reg_dir = scratch_dir("manager-stop-registry");
    // A node would expire only after a minute: it must leave because it says so.
    let reg = Service::start(
        "registry",
        &tests::registry_config(&reg_dir, "127.0.0.1:0", 60_000),
    );
    let dir = scratch_dir("manager-stop");
    let mut mgr = Service::start(
        "manager",
        &manager_config(
            &dir,
            &format!(
                "registry = \"{}\"\nheartbeat_ms = 50\nshutdown_grace_ms = 600000\n",
                reg.address
            ),
        ),
    );
    let registry = RegistryClient::new(reg.address.clone());
    let listed = || {
        registry
            .list()
            .expect("the registry's list")
            .iter()
            .any(|n| n.info.id == "test-node")
    };
    eventually("the node registered", listed);
    let pkg = example_package();
    let a = lease_from(&mgr.address, pkg, &spec(1, Fabric::Tcp)).expect("lease a");
    let b = lease_from(&mgr.address, pkg, &spec(1, Fabric::Shm)).expect("lease b");
    let exec_b = tests::lease_executor(mgr.child.id(), b.id()).expect("b's executor");
    assert_eq!((a.notice(), b.notice()), (None, None));
    tests::signal(mgr.child.id(), libc::SIGTERM);
    eventually("the node left the registry", || !listed());
    // Each running lease is told, with the time it has left (of the 600 s grace).
    for lease in [&a, &b] {
        eventually("the lease told of the stop", || lease.notice().is_some());
        match lease.notice() {
            Some(rfaas::wire::LeaseNotice::Stopping { node_id, within_ms }) => {
                assert_eq!(node_id, "test-node");
                assert!(
                    (500_000..=600_000).contains(&within_ms),
                    "{within_ms} ms left"
                );
            }
            other => panic!("expected a notice of the stop, got {other:?}"),
        }
    }
    // No new lease, with the reason (before any capacity is looked at).
    match lease_from(&mgr.address, pkg, &spec(1, Fabric::Shm)) {
        Err(Error::Refused(why)) => assert!(why.contains("shutting down"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Running leases go on, and end as usual.
    for lease in [&a, &b] {
        assert_eq!(
            lease
                .invoke(fx::fault::call(0, 3))
                .timeout(T)
                .wait()
                .expect("a call while the manager stops"),
            3
        );
    }
    let (id_a, id_b) = (a.id(), b.id());
    drop(a);
    let entry = ledger_entry(&dir, id_a);
    assert_eq!(
        (
            entry.ended_by_manager.as_deref(),
            entry.executor_exit.as_deref(),
            entry.invocations,
            entry.times_unknown
        ),
        (None, None, 1, false),
        "{entry:?}"
    );
    assert!(
        mgr.child.try_wait().expect("wait").is_none(),
        "the manager stopped while lease b was running"
    );
    // A second signal ends the rest now.
    tests::signal(mgr.child.id(), libc::SIGINT);
    let status = exited(&mut mgr);
    assert!(status.success(), "the manager exited with {status}");
    let entry = ledger_entry(&dir, id_b);
    assert_eq!(
        entry.ended_by_manager.as_deref(),
        Some(executor::manager::ENDED_AT_SHUTDOWN),
        "{entry:?}"
    );
    // Its executor was stopped before its closing report: the count from its record, and
    // times marked unknown (not 0 µs).
    assert_eq!(
        (entry.invocations, entry.times_unknown),
        (1, true),
        "{entry:?}"
    );
    assert!(
        process_gone(exec_b),
        "lease b's executor outlived the manager"
    );
    match b.invoke(fx::fault::call(0, 4)).timeout(T).wait() {
        Err(Error::ExecutorGone) => {}
        other => panic!("expected the executor gone, got {other:?}"),
    }
    assert_eq!(tests::dir_names(&dir.join("sockets")), Vec::<String>::new());
    let text = tests::ledger_text(&dir.join("ledger.jsonl"));
    assert!(
        text.contains(&format!(
            "ended by the manager: {}",
            executor::manager::ENDED_AT_SHUTDOWN
        )),
        "{text}"
    );
    assert!(
        text.contains("times unknown") && text.contains("(1 lease without times)"),
        "{text}"
    );
}

/// Entries the ledger cannot take (here: its path is a directory for a while, as a full disk
/// or an i/o error would refuse them) are kept, and written in order before the next entry
/// once it can; each is in the log from when it is kept, and those still waiting when the
/// manager stops are logged again. Leases end meanwhile as usual. (A failed append used to
/// lose the entry.)
#[test]
fn ledger_entries_that_cannot_be_written_wait_and_are_not_lost() {
    let dir = scratch_dir("manager-ledger-full");
    let log = dir.join("manager.log");
    // One core: a lease is granted only once the one before has ended, its entry handled.
    let mut mgr = Service::start_logged(
        "manager",
        &tests::manager_config(&dir, 1, 1024, "shutdown_grace_ms = 0\n"),
        &log,
    );
    let pkg = example_package();
    let ledger = dir.join("ledger.jsonl");
    let lease = || {
        let mut lease = None;
        eventually("the core free", || {
            lease = lease_from(&mgr.address, pkg, &spec(1, Fabric::Shm)).ok();
            lease.is_some()
        });
        lease.expect("lease")
    };
    // A lease's whole life: leased, one call, ended; its id.
    let one = |v: u64| {
        let lease = lease();
        assert_eq!(
            lease
                .invoke(fx::fault::call(0, v))
                .timeout(T)
                .wait()
                .expect("call"),
            v
        );
        lease.id()
    };
    let first = one(1);
    ledger_entry(&dir, first);
    let blocked = |on: bool| {
        let saved = dir.join("ledger.saved");
        if on {
            std::fs::rename(&ledger, &saved).expect("ledger aside");
            std::fs::create_dir(&ledger).expect("a directory in its place");
        } else {
            std::fs::remove_dir(&ledger).expect("the directory");
            std::fs::rename(&saved, &ledger).expect("ledger back");
        }
    };
    blocked(true);
    let waiting: Vec<u64> = (2..4).map(one).collect();
    // Held while the ledger is put back: no lease is ending meanwhile.
    let held = lease();
    blocked(false);
    let last = held.id();
    drop(held);
    ledger_entry(&dir, last);
    let ids: Vec<u64> = executor::manager::read_ledger(&ledger)
        .expect("ledger")
        .iter()
        .map(|e| e.lease_id)
        .collect();
    assert_eq!(ids, [first, waiting[0], waiting[1], last]);
    let text = std::fs::read_to_string(&log).expect("the log");
    for id in &waiting {
        let kept = format!("lease_id\":{id},");
        assert!(
            text.lines()
                .any(|l| l.contains("ledger entry kept") && l.contains(&kept)),
            "{text}"
        );
    }
    // A manager with no lease ending writes them too (it tries every 2 s): here while the
    // only lease, granted once lease `idle` had ended, is still running.
    blocked(true);
    let idle = one(5);
    let held = lease();
    blocked(false);
    ledger_entry(&dir, idle);
    let held_id = held.id();
    drop(held);
    ledger_entry(&dir, held_id);
    // Still waiting when the manager stops: in its log again.
    blocked(true);
    let unwritten = one(6);
    let held = lease();
    tests::signal(mgr.child.id(), libc::SIGTERM);
    assert!(exited(&mut mgr).success());
    drop(held);
    let text = std::fs::read_to_string(&log).expect("the log");
    assert!(
        text.lines().any(|l| l.contains("could not be written")
            && l.contains(&format!("lease_id\":{unwritten},"))),
        "{text}"
    );
}

/// A manager stopped together with its executors (systemd's default `KillMode=control-group`
/// sends SIGTERM to every process of the unit) cannot drain its leases: it says what to
/// change, and stops once they are gone.
#[test]
fn a_manager_stopped_with_its_executors_says_to_use_kill_mode_mixed() {
    let dir = scratch_dir("manager-killmode");
    let log = dir.join("manager.log");
    let mut mgr = Service::start_logged(
        "manager",
        &manager_config(&dir, "shutdown_grace_ms = 600000\n"),
        &log,
    );
    let pkg = example_package();
    let lease = lease_from(&mgr.address, pkg, &spec(1, Fabric::Shm)).expect("lease");
    let exec = tests::lease_executor(mgr.child.id(), lease.id()).expect("the executor");
    tests::signal(mgr.child.id(), libc::SIGTERM);
    // Stopping (a request is refused for it) before its executor gets the signal too.
    eventually("the manager refuses leases", || {
        matches!(lease_from(&mgr.address, pkg, &spec(1, Fabric::Shm)),
            Err(Error::Refused(why)) if why.contains("shutting down"))
    });
    tests::signal(exec, libc::SIGTERM);
    let status = exited(&mut mgr);
    assert!(status.success(), "the manager exited with {status}");
    let entry = ledger_entry(&dir, lease.id());
    assert!(
        entry
            .executor_exit
            .as_deref()
            .is_some_and(|e| e.contains("SIGTERM")),
        "{entry:?}"
    );
    let text = std::fs::read_to_string(&log).expect("the log");
    assert!(text.contains("KillMode=mixed"), "{text}");
}

/// Leases that outlast the grace period are ended by the manager itself, which then exits.
/// Neither the executor nor what its functions start inherits the signals the manager blocks
/// (it takes SIGTERM and SIGINT in a thread of its own): they stop as usual.
#[test]
fn a_manager_ends_the_leases_that_outlast_its_grace() {
    let dir = scratch_dir("manager-grace");
    let mut mgr = Service::start(
        "manager",
        &manager_config(&dir, "shutdown_grace_ms = 300\n"),
    );
    let lease = lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm)).expect("lease");
    let exec = tests::lease_executor(mgr.child.id(), lease.id()).expect("the executor");
    let sleeper = started(&lease, 4);
    for pid in [exec, sleeper] {
        assert_eq!(
            blocked_signals(pid),
            "0000000000000000",
            "process {pid} ({:?}) blocks signals",
            tests::cmdline(pid)
        );
    }
    tests::signal(mgr.child.id(), libc::SIGTERM);
    let status = exited(&mut mgr);
    assert!(status.success(), "the manager exited with {status}");
    let entry = ledger_entry(&dir, lease.id());
    assert_eq!(
        entry.ended_by_manager.as_deref(),
        Some(executor::manager::ENDED_AT_SHUTDOWN),
        "{entry:?}"
    );
    // The executor was reaped before the manager exited; its group's kill may still be on
    // its way to the function's process.
    assert!(process_gone(exec), "the executor outlived the manager");
    eventually("a function's process ended with its lease", || {
        process_gone(sleeper)
    });
}

/// A manager running inside the namespace (another host as far as the network goes),
/// listening on the namespace's address, with `extra` configuration.
fn manager_in(ns: &Netns, name: &str, extra: &str) -> (Service, PathBuf) {
    let dir = scratch_dir(name);
    let cfg = manager_config(&dir, extra);
    let text = std::fs::read_to_string(&cfg)
        .expect("config")
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}:0\"", ns.there),
        )
        .replace("node_id = \"test-node\"", &format!("node_id = \"{name}\""));
    std::fs::write(&cfg, text).expect("config");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(executor_binary())
        .arg("manager")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::piped())
        .spawn()
        .expect("manager in the namespace");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("output");
    let mgr = Service {
        child,
        address: line
            .trim()
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("manager did not start: {line:?}"))
            .to_owned(),
    };
    assert!(mgr.address.starts_with(&ns.there), "{}", mgr.address);
    (mgr, dir)
}

/// A `run` executor's session whose client host vanishes (no FIN, no RST: its network link is
/// gone) ends within ~25 s, and its workers with it. It used to live as long as the executor.
/// The link goes at once after the client's first answer, likely before the client's
/// (delayed) acknowledgements: with data unacknowledged, keepalive probes never start, and
/// only a user timeout bounds the wait (else ~15 minutes of retransmissions).
#[test]
fn a_session_whose_client_host_vanished_ends() {
    let ns = match Netns::create(3) {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!(
                "skipping: cannot simulate a second host with a network namespace here ({why})"
            );
            return;
        }
    };
    let exec = tests::Executor::start_tcp(
        "vanished-host",
        &format!("{}:0", ns.here()),
        &["--cores", "1", "--hot-timeout-us", "0"],
    );
    let mut client = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(env!("CARGO_BIN_EXE_rfaas-test-client"))
        .arg(&exec.address)
        .arg("tcp-hold")
        .stdout(Stdio::piped())
        .spawn()
        .expect("client in the namespace");
    let mut line = String::new();
    std::io::BufReader::new(client.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("client output");
    assert_eq!(line.trim(), "leased");
    let workers = || tests::thread_cpus(exec.pid(), "rfaas-worker-0").len();
    assert_eq!(workers(), 1, "the session's worker");
    // The client's host drops off the network: its end of the link goes, the process stays.
    let gone = Command::new("ip")
        .args(["netns", "exec", &ns.name, "ip", "link", "set", "lo", "down"])
        .status()
        .and_then(|_| Command::new("ip").args(["link", "del", &ns.veth]).status())
        .expect("ip");
    assert!(gone.success(), "removing the link");
    let deadline = Instant::now() + Duration::from_secs(60);
    while workers() > 0 {
        assert!(
            Instant::now() < deadline,
            "the session of a vanished client still runs after 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = client.kill();
    let _ = client.wait();
}

#[test]
fn a_client_on_another_host_gets_tcp() {
    let ns = match Netns::create(0) {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!(
                "skipping: cannot simulate a second host with a network namespace here ({why})"
            );
            return;
        }
    };
    let (mgr, dir) = manager_in(&ns, "manager-netns", "");
    // Shared memory cannot cross hosts: refused; `auto` gives TCP.
    match lease_from(&mgr.address, example_package(), &spec(1, Fabric::Shm)) {
        Err(Error::Refused(why)) => assert!(
            why.contains("only offered to clients on this node's host"),
            "{why}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let lease = lease_from(&mgr.address, example_package(), &spec(1, Fabric::Auto))
        .expect("lease across the veth pair");
    let mut out = vec![0u8; 1000];
    let input: Vec<u8> = (0..1000).map(|i| i as u8).collect();
    assert_eq!(
        fx::echo::invoke(&lease, &input, &mut out)
            .timeout(T)
            .wait()
            .expect("echo across hosts"),
        1000
    );
    assert_eq!(out, input);
    drop(lease);
    let ledger = dir.join("ledger.jsonl");
    eventually("the lease is in the ledger", || {
        executor::manager::read_ledger(&ledger).is_ok_and(|e| {
            e.iter()
                .any(|e| e.fabric == Fabric::Tcp && e.invocations == 1)
        })
    });
    drop(mgr);
}

#[test]
fn a_cluster_of_two_hosts_behind_a_registry() {
    let (a, b) = match Netns::create(1).and_then(|a| Ok((a, Netns::create(2)?))) {
        Ok(pair) => pair,
        Err(why) => {
            eprintln!("skipping: cannot simulate two hosts with network namespaces here ({why})");
            return;
        }
    };
    // The registry on this host, reachable from both namespaces over their veth pairs.
    let reg_dir = scratch_dir("hosts-registry");
    let reg_cfg = tests::registry_config(&reg_dir, "0.0.0.0:0", 500);
    let reg = Service::start("registry", &reg_cfg);
    let port = reg.address.rsplit(':').next().expect("port").to_owned();
    let joined = |ns: &Netns| format!("registry = \"{}:{port}\"\nheartbeat_ms = 50\n", ns.here());
    let (node_a, _) = manager_in(&a, "host-a", &joined(&a));
    let (mut node_b, _) = manager_in(&b, "host-b", &joined(&b));
    let here = format!("127.0.0.1:{port}");
    let registry = RegistryClient::new(here.clone());
    eventually("both hosts registered", || {
        registry.list().is_ok_and(|n| {
            n.len() == 2
                && n.iter().any(|n| n.info.address == node_a.address)
                && n.iter().any(|n| n.info.address == node_b.address)
        })
    });
    // `auto` from this host: TCP to both (shared memory cannot cross hosts). Each 2-core lease
    // fills a host, so the two land on different hosts.
    let first = rfaas::managed::lease_anywhere(&here, example_package(), &spec(2, Fabric::Auto))
        .expect("first lease");
    eventually("registry sees a host full", || {
        registry
            .list()
            .is_ok_and(|n| n.iter().filter(|n| n.free_cores == 0).count() == 1)
    });
    let second = rfaas::managed::lease_anywhere(&here, example_package(), &spec(2, Fabric::Auto))
        .expect("second lease");
    for (lease, tag) in [(&first, 1u8), (&second, 2)] {
        let input = vec![tag; 3000];
        let mut out = vec![0u8; 3000];
        assert_eq!(
            fx::echo::invoke(lease, &input, &mut out)
                .timeout(T)
                .wait()
                .expect("echo across hosts"),
            3000
        );
        assert_eq!(out, input);
    }
    eventually("registry sees both hosts full", || {
        registry
            .list()
            .is_ok_and(|n| n.iter().all(|n| n.free_cores == 0))
    });
    match rfaas::managed::lease_anywhere(&here, example_package(), &spec(1, Fabric::Auto)) {
        Err(Error::Refused(why)) => assert!(why.contains("no node"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Host b's manager dies: its lease fails rather than hangs, the registry forgets it.
    // Equally free nodes are listed by id, so the first lease went to host-a.
    let _ = node_b.child.kill();
    let _ = node_b.child.wait();
    let mut failed = false;
    eventually("the lease on the dead host fails", || {
        failed = failed
            || second
                .invoke(fx::fault::call(0, 4))
                .timeout(Duration::from_secs(5))
                .wait()
                .is_err();
        failed
    });
    eventually("the registry drops the dead host", || {
        registry
            .list()
            .is_ok_and(|n| n.len() == 1 && n[0].info.address == node_a.address)
    });
    assert_eq!(
        first
            .invoke(fx::fault::call(0, 9))
            .timeout(T)
            .wait()
            .expect("the live host still serves"),
        9
    );
}

/// With the default `socket_dir` (`rfaas-sockets`, relative to the manager's working
/// directory), a client started elsewhere is granted a socket path it can reach: the
/// directory is made private and absolute at start.
#[test]
fn the_default_socket_directory_works_for_clients_elsewhere() {
    use std::os::unix::fs::PermissionsExt;
    // A short directory: socket paths must fit in 107 bytes.
    let dir = std::env::temp_dir().join(format!("rfaas-defsock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("manager.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ncores = 1\nmemory_mib = 512\ncache_dir = \"{}\"\nledger = \"{}\"\n",
            dir.join("cache").display(),
            dir.join("ledger.jsonl").display()
        ),
    )
    .expect("config");
    let manager = tests::Daemon::start_in("manager", &config, &dir);
    let sockets = dir.join("rfaas-sockets");
    let mode = std::fs::metadata(&sockets)
        .expect("the socket directory is made")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_ne!(std::env::current_dir().expect("cwd"), dir);
    let lease = lease_from(&manager.address, example_package(), &spec(1, Fabric::Shm))
        .expect("a shared-memory lease from another directory");
    assert_eq!(
        fx::fault::invoke(&lease, 0, 42)
            .timeout(T)
            .wait()
            .expect("invocation"),
        42
    );
    drop(lease);
    drop(manager);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a client is told when it cannot even start: the OS error and whom it could not reach
/// are in the message (a program printing it with `{}` sees them), and a package that cannot
/// be used is said to be the package, not a failed handshake.
#[test]
fn errors_before_any_exchange_say_what_and_why() {
    let dir = scratch_dir("client-errors");
    let missing = dir.join("no-such-dir").join("executor.sock");
    let e = rfaas::Lease::connect(&missing).expect_err("no executor there");
    let text = e.to_string();
    assert!(
        matches!(
            e,
            Error::Connect {
                peer: "executor",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(text.contains("No such file"), "{text}");

    // A port nobody listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let e = lease_from(
        &format!("127.0.0.1:{port}"),
        example_package(),
        &LeaseSpec::default(),
    )
    .expect_err("no manager there");
    let text = e.to_string();
    assert!(
        matches!(
            e,
            Error::Connect {
                peer: "manager",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(text.contains("refused"), "{text}");

    // The library file instead of its package directory; a directory without the SHA-256.
    let library = std::fs::read_dir(example_package())
        .expect("package")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "so"))
        .expect("the package's library");
    let e = lease_from("127.0.0.1:1", &library, &LeaseSpec::default()).expect_err("a file");
    assert!(
        matches!(&e, Error::Package(why) if why.contains("is a file")),
        "{e:?}"
    );
    let e = lease_from("127.0.0.1:1", &dir, &LeaseSpec::default()).expect_err("no hash");
    assert!(
        matches!(&e, Error::Package(why) if why.contains(".sha256")),
        "{e:?}"
    );
    // Through a registry: the package is checked before the registry is asked (this one is
    // not there), so the error is the package's.
    let e = rfaas::managed::lease_anywhere("127.0.0.1:1", &dir, &LeaseSpec::default())
        .expect_err("no hash");
    assert!(
        matches!(&e, Error::Package(why) if why.contains(".sha256")),
        "{e:?}"
    );
    // Two libraries with hashes in one directory: which one is meant is not guessed.
    let two = scratch_dir("client-errors-two");
    for name in ["liba.so", "libb.so"] {
        std::fs::copy(&library, two.join(name)).expect("copy");
        std::fs::write(
            two.join(format!("{name}.sha256")),
            format!("{}  {name}\n", "ab".repeat(32)),
        )
        .expect("hash file");
    }
    let e = lease_from("127.0.0.1:1", &two, &LeaseSpec::default()).expect_err("two");
    assert!(
        matches!(&e, Error::Package(why) if why.contains("liba.so")),
        "{e:?}"
    );
}

/// Runs a manager on `config` that must refuse to start; its log (stderr).
fn manager_refuses(config: &Path) -> String {
    tests::refused_start(
        Command::new(executor_binary())
            .arg("manager")
            .arg("--config")
            .arg(config),
    )
}

/// One manager per ledger: a second one on the same ledger (which would hand out the same
/// lease ids) refuses to start, and says why; the first serves on.
#[test]
fn a_second_manager_on_the_same_ledger_refuses_to_start() {
    let dir = scratch_dir("manager-two-on-a-ledger");
    let config = manager_config(&dir, "");
    let first = Service::start("manager", &config);
    let log = manager_refuses(&config);
    assert!(
        log.contains("is locked: another manager uses the ledger"),
        "{log}"
    );
    let lease = lease_from(&first.address, example_package(), &spec(1, Fabric::Shm))
        .expect("the first manager serves on");
    lease
        .invoke(fx::noop::call())
        .timeout(T)
        .wait()
        .expect("noop");
}

/// `executor_uids` that take in an account of this host (whose processes a lease's end would
/// kill) are refused at start, naming the account.
#[test]
fn executor_uids_that_take_in_an_account_are_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: executor_uids need a manager running as root");
        return;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let Some((name, uid)) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let uid: u32 = f.get(2)?.parse().ok()?;
        (uid != 0 && uid < 65_534).then(|| (f[0].to_owned(), uid))
    }) else {
        eprintln!("skipped: no account but root and nobody in /etc/passwd");
        return;
    };
    let dir = scratch_dir("manager-uids-account");
    let config = manager_config(&dir, &format!("executor_uids = \"{uid}-{uid}\"\n"));
    let log = manager_refuses(&config);
    assert!(
        log.contains("takes in accounts of this host")
            && log.contains(&format!("account {name} (user {uid})")),
        "{log}"
    );
}
