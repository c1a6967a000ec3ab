//! The fault matrix with real processes (docs/reliability.md, "Faults and load"): a function
//! that panics, aborts or segfaults, an executor SIGKILLed mid-invocation, a client killed
//! mid-lease, a manager and a registry SIGKILLed and restarted. Each test checks what the other
//! parties see (a clear error within a bound, never a hang), what is reclaimed (cores and memory
//! in the registry's listing, the executor process reaped, no file left in the socket directory
//! or `/dev/shm`) and what the ledger keeps.

use executor::manager::{LedgerEntry, read_ledger};
use functions_example as fx;
use rfaas::managed::{LeaseSpec, lease_anywhere, lease_from};
use rfaas::registry::RegistryClient;
use rfaas::wire::Fabric;
use rfaas::{CallError, EncodeError, Encoded, Error, Placement, RemoteCall, Status};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use tests::{
    BOUND, Daemon, c_library, children_of, dev_shm_names, dir_names, eventually, example_package,
    lease_executor, ledger_text, manager_config, process_stat, registry_config, scratch_dir,
    signal,
};

/// Cores and memory of every test node.
const CORES: u32 = 2;
const MEMORY_MIB: u64 = 1024;
/// Memory of every lease.
const LEASE_MIB: u64 = 64;

fn spec(cores: u32, fabric: Fabric) -> LeaseSpec {
    let mut s = LeaseSpec::default();
    s.cores = cores;
    s.fabric = fabric;
    s.memory_mib = LEASE_MIB;
    s.hot_timeout_us = 200;
    s.slot_size = Some(4096);
    s
}

/// A registry and one manager registered with it (heart-beating every 50 ms), in scratch
/// directory `name`.
struct Node {
    dir: PathBuf,
    registry: Daemon,
    manager: Daemon,
    /// Whether the manager runs under `rfaas-test-reaper` (to be killed).
    reaped: bool,
}

impl Node {
    fn start(name: &str, reaped: bool) -> Node {
        let dir = scratch_dir(name);
        let registry = Daemon::start("registry", &registry_config(&dir, "127.0.0.1:0", 2000));
        let node = Node {
            manager: Node::manager(&dir, &registry.address, reaped),
            dir,
            registry,
            reaped,
        };
        node.wait_free(
            "the node registers with all its capacity",
            CORES,
            MEMORY_MIB,
        );
        node
    }

    /// A node whose manager has `extra` configuration and environment `env`, its stderr
    /// (where its executors' stdout goes) discarded.
    fn start_quiet(name: &str, extra: &str, env: &[(&str, &str)]) -> Node {
        let dir = scratch_dir(name);
        let registry = Daemon::start("registry", &registry_config(&dir, "127.0.0.1:0", 2000));
        let config = manager_config(
            &dir,
            CORES,
            MEMORY_MIB,
            &format!(
                "registry = \"{}\"\nheartbeat_ms = 50\n{extra}",
                registry.address
            ),
        );
        let node = Node {
            manager: Daemon::start_quiet("manager", &config, env),
            dir,
            registry,
            reaped: false,
        };
        node.wait_free(
            "the node registers with all its capacity",
            CORES,
            MEMORY_MIB,
        );
        node
    }

    fn manager(dir: &Path, registry: &str, reaped: bool) -> Daemon {
        let config = manager_config(
            dir,
            CORES,
            MEMORY_MIB,
            &format!("registry = \"{registry}\"\nheartbeat_ms = 50\n"),
        );
        if reaped {
            Daemon::start_under(
                Path::new(env!("CARGO_BIN_EXE_rfaas-test-reaper")),
                "manager",
                &config,
            )
        } else {
            // Panics are expected in these tests: no backtraces from the executors.
            Daemon::start_env("manager", &config, &[("RUST_BACKTRACE", "0")])
        }
    }

    /// Kills the manager with SIGKILL and starts it again on the same configuration.
    fn restart_manager(&mut self) {
        self.manager.kill();
        self.manager = Node::manager(&self.dir, &self.registry.address, self.reaped);
    }

    fn registry(&self) -> RegistryClient {
        RegistryClient::new(self.registry.address.clone())
    }

    /// The node as the registry lists it: address, free cores and memory.
    fn listed(&self) -> Option<(String, u32, u64)> {
        let nodes = self.registry().list().ok()?;
        let n = nodes.iter().find(|n| n.info.id == "test-node")?;
        Some((n.info.address.clone(), n.free_cores, n.free_memory_mib))
    }

    #[track_caller]
    fn wait_free(&self, what: &str, cores: u32, memory_mib: u64) {
        eventually(what, || {
            self.listed()
                .is_some_and(|(_, c, m)| (c, m) == (cores, memory_mib))
        });
    }

    fn ledger(&self) -> PathBuf {
        self.dir.join("ledger.jsonl")
    }

    /// The ledger's entry for lease `id`, once written.
    #[track_caller]
    fn entry(&self, id: u64) -> LedgerEntry {
        let mut found = None;
        eventually(&format!("a ledger entry for lease {id}"), || {
            found = read_ledger(&self.ledger())
                .ok()
                .and_then(|e| e.into_iter().find(|e| e.lease_id == id));
            found.is_some()
        });
        found.expect("found")
    }

    /// Checks that everything lease `id` held came back: its executor process (`exec`, started
    /// at `start`) is gone and reaped, the manager has no zombie child, the registry lists all
    /// the node's capacity free, and the lease left no file in the socket directory or in
    /// `/dev/shm` (compared with `shm_before`).
    #[track_caller]
    fn check_reclaimed(&self, exec: (u32, u64), shm_before: &std::collections::BTreeSet<String>) {
        let (pid, start) = exec;
        eventually(&format!("the executor {pid} is reaped"), || {
            process_stat(pid).is_none_or(|(_, _, s)| s != start)
        });
        eventually("the manager has no zombie child", || {
            children_of(self.manager.pid())
                .iter()
                .all(|&c| process_stat(c).is_none_or(|(state, _, _)| state != 'Z'))
        });
        self.wait_free(
            "the lease's cores and memory are free again",
            CORES,
            MEMORY_MIB,
        );
        let sockets = self.dir.join("sockets");
        eventually("the socket directory is empty", || {
            dir_names(&sockets).is_empty()
        });
        let new: Vec<String> = dev_shm_names()
            .difference(shm_before)
            .filter(|n| n.contains("rfaas"))
            .cloned()
            .collect();
        assert!(new.is_empty(), "left in /dev/shm: {new:?}");
    }
}

/// The stats record that executor `pid` of lease `id` keeps (its memory file), if this process
/// may read it.
fn published_counts(pid: u32, id: u64) -> Option<String> {
    let name = format!("rfaas-lease-{id}-stats");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .find(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains(&name)))
        .and_then(|fd| std::fs::read_to_string(fd.path()).ok())
}

/// Checks what a client sees of its executor's death: `ExecutorGone`, on every fabric.
#[track_caller]
fn check_gone<T: std::fmt::Debug>(fabric: Fabric, what: &str, r: Result<T, Error>) {
    match r {
        Err(Error::ExecutorGone) => {}
        other => panic!("{what} over {fabric:?}: expected ExecutorGone, got {other:?}"),
    }
}

/// The executor of lease `id` on `node`, with its start time.
#[track_caller]
fn executor_of(node: &Node, id: u64) -> (u32, u64) {
    let pid = lease_executor(node.manager.pid(), id)
        .unwrap_or_else(|| panic!("no executor process for lease {id}"));
    let (state, _, start) = process_stat(pid).expect("the executor runs");
    assert_ne!(state, 'Z', "the executor of lease {id} is a zombie");
    (pid, start)
}

/// Functions of the crash fixture, a C library whose functions take one `u64` and return one:
/// `crash_abort` calls `abort()`, `crash_segv` writes to address 8, `echo` returns its
/// argument, `nap` sleeps that many milliseconds and returns it, `chatter` writes that many
/// bytes to stdout and returns how many it wrote. With `RFAAS_TEST_HANG_ON_LOAD` set, loading
/// the library never ends (its constructor waits forever).
const C_SOURCE: &str = r#"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
typedef uint32_t (*tramp)(const uint8_t*, size_t, uint8_t*, size_t, size_t*);
struct entry { const char* name; size_t name_len; const char* sig; size_t sig_len; uint64_t fp; tramp t; };
struct manifest { uint64_t magic; uint32_t abi; uint32_t count; const struct entry* entries; };
#define MAGIC 0x00464d7361616672ull
/* Not a constant the compiler could see through: the store below must really fault. */
static volatile uintptr_t nowhere = 8;
static uint64_t arg(const uint8_t* i, size_t il) { uint64_t v = 0; if (il >= 8) memcpy(&v, i, 8); return v; }
static uint32_t answer(uint64_t v, uint8_t* o, size_t oc, size_t* ol) {
    if (oc < 8) return 6;
    memcpy(o, &v, 8); *ol = 8; return 0;
}
static uint32_t crash_abort(const uint8_t* i, size_t il, uint8_t* o, size_t oc, size_t* ol) { abort(); }
static uint32_t crash_segv(const uint8_t* i, size_t il, uint8_t* o, size_t oc, size_t* ol) {
    *(volatile uint64_t*)nowhere = arg(i, il);
    return answer(0, o, oc, ol);
}
static uint32_t echo(const uint8_t* i, size_t il, uint8_t* o, size_t oc, size_t* ol) { return answer(arg(i, il), o, oc, ol); }
static uint32_t nap(const uint8_t* i, size_t il, uint8_t* o, size_t oc, size_t* ol) {
    uint64_t ms = arg(i, il);
    struct timespec t = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (nanosleep(&t, &t) != 0) {}
    return answer(ms, o, oc, ol);
}
static uint32_t chatter(const uint8_t* i, size_t il, uint8_t* o, size_t oc, size_t* ol) {
    uint64_t n = arg(i, il), done = 0;
    static const char line[64] = "chatter chatter chatter chatter chatter chatter chatter chatter";
    while (done < n) {
        size_t k = n - done < sizeof line ? (size_t)(n - done) : sizeof line;
        ssize_t w = write(1, line, k);
        if (w <= 0) return answer(done, o, oc, ol);
        done += (uint64_t)w;
    }
    return answer(done, o, oc, ol);
}
/* A library whose loading never ends, when the manager's environment asks for it. */
__attribute__((constructor)) static void maybe_hang(void) {
    if (getenv("RFAAS_TEST_HANG_ON_LOAD")) for (;;) pause();
}
static const struct entry E[] = {
    { "crash_abort", 11, "fn crash_abort(x: u64) -> u64", 29, 0x5eed0000, crash_abort },
    { "crash_segv", 10, "fn crash_segv(x: u64) -> u64", 28, 0x5eed0001, crash_segv },
    { "echo", 4, "fn echo(x: u64) -> u64", 22, 0x5eed0002, echo },
    { "nap", 3, "fn nap(ms: u64) -> u64", 22, 0x5eed0003, nap },
    { "chatter", 7, "fn chatter(n: u64) -> u64", 25, 0x5eed0004, chatter },
};
static const struct manifest M = { MAGIC, RFAAS_ABI, 5, E };
const struct manifest* rfaas_manifest(void) { return &M; }
"#;

const C_NAMES: [&str; 5] = ["crash_abort", "crash_segv", "echo", "nap", "chatter"];

/// A call of the crash fixture's function number `F` (in [`C_NAMES`]) with one `u64`.
struct CCall<const F: usize>(u64);

const CRASH_ABORT: usize = 0;
const CRASH_SEGV: usize = 1;
const ECHO: usize = 2;
const NAP: usize = 3;
const CHATTER: usize = 4;

// SAFETY: nothing is ever in place (`in_place: false`), `input_len` is the 8 bytes `encode`
// writes, and `decode` reads only `output`.
unsafe impl<const F: usize> RemoteCall for CCall<F> {
    type Output = u64;
    const NAME: &'static str = C_NAMES[F];
    const FINGERPRINT: u64 = 0x5eed_0000 + F as u64;

    fn layout(&self, _: &Placement) -> Result<Encoded, EncodeError> {
        Ok(Encoded {
            input_len: 8,
            output_len: 8,
            in_place: false,
            in_place_start: 0,
        })
    }

    fn encode(&self, buf: &mut [u8], placement: &Placement) -> Result<Encoded, EncodeError> {
        let have = buf.len();
        buf.get_mut(..8)
            .ok_or(EncodeError::BufferTooSmall { need: 8, have })?
            .copy_from_slice(&self.0.to_le_bytes());
        self.layout(placement)
    }

    fn decode(self, status: Status, output: &[u8], _: &Placement) -> Result<u64, CallError> {
        match (status, <[u8; 8]>::try_from(output)) {
            (Status::Ok, Ok(bytes)) => Ok(u64::from_le_bytes(bytes)),
            (Status::Ok, Err(_)) => Err(CallError::Malformed("not one u64")),
            (status, _) => Err(CallError::Rejected(status)),
        }
    }
}

/// The crash fixture, packaged once per test process.
fn crash_package() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let lib = c_library("crashy", C_SOURCE);
        let out = scratch_dir("crashy-package");
        let (_, dir) = executor::Package::create("crashy", &lib, &out).expect("packaging");
        dir
    })
}

/// How an executor dies in [`check_executor_death`].
#[derive(Clone, Copy, Debug)]
enum Death {
    /// The function calls `abort()`.
    Abort,
    /// The function writes to an unmapped address.
    Segfault,
    /// The test SIGKILLs the executor while a function sleeps in it.
    Killed,
}

/// A lease of the whole node over `fabric` answers 10 invocations, then its executor dies as
/// `death` says. The client's pending invocation fails with `ExecutorGone`, and so do later
/// ones; the manager ends the lease by itself, reclaims everything, records how the executor
/// ended, and serves a new lease.
#[track_caller]
fn check_executor_death(fabric: Fabric, death: Death) {
    let node = Node::start(&format!("faults-{death:?}-{fabric:?}"), false);
    let shm_before = dev_shm_names();
    let lease = lease_from(&node.manager.address, crash_package(), &spec(CORES, fabric))
        .expect("a lease of the crash fixture");
    for v in 0..10 {
        assert_eq!(
            lease
                .invoke(CCall::<ECHO>(v))
                .timeout(BOUND)
                .wait()
                .expect("echo"),
            v
        );
    }
    let id = lease.id();
    let exec = executor_of(&node, id);
    node.wait_free(
        "the lease holds the node's cores",
        0,
        MEMORY_MIB - LEASE_MIB,
    );
    // The executor publishes its counts as they go (what the manager records if it dies
    // without its final accounting), every 100 ms into a memory file the manager gave it:
    // wait until they include the 10 answered, read through /proc where we may (with
    // CAP_SYS_PTRACE: the executor is not dumpable), or else long enough.
    match published_counts(exec.0, id) {
        Some(_) => eventually("the executor published its counts", || {
            published_counts(exec.0, id).is_some_and(|t| t.contains("\"invocations\":10"))
        }),
        None => {
            // Reading the descriptors of a process that is not dumpable takes CAP_SYS_PTRACE.
            let may = executor::users::has_capability(executor::users::CAP_SYS_PTRACE);
            assert!(
                !may,
                "no stats record among executor {}'s descriptors",
                exec.0
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let outcome = match death {
        Death::Abort => lease.invoke(CCall::<CRASH_ABORT>(1)).timeout(BOUND).wait(),
        Death::Segfault => lease.invoke(CCall::<CRASH_SEGV>(2)).timeout(BOUND).wait(),
        Death::Killed => std::thread::scope(|s| {
            let pending = s.spawn(|| lease.invoke(CCall::<NAP>(30_000)).timeout(BOUND).wait());
            // Time to be sent and started; if it were not, it would fail the same way.
            std::thread::sleep(Duration::from_millis(300));
            signal(exec.0, libc::SIGKILL);
            pending.join().expect("waiter")
        }),
    };
    check_gone(fabric, &format!("{death:?}"), outcome);
    // Whichever worker they go to, later invocations fail at once instead of hanging.
    for v in 0..u64::from(CORES) * 2 {
        check_gone(
            fabric,
            "an invocation after the death",
            lease.invoke(CCall::<ECHO>(v)).timeout(BOUND).wait(),
        );
    }
    // The manager ends the lease although the client still holds it.
    node.check_reclaimed(exec, &shm_before);
    let entry = node.entry(id);
    let exit = match death {
        Death::Abort => "signal: 6 (SIGABRT)",
        Death::Segfault => "signal: 11 (SIGSEGV)",
        Death::Killed => "signal: 9 (SIGKILL)",
    };
    assert!(
        entry
            .executor_exit
            .as_deref()
            .is_some_and(|e| e.contains(exit)),
        "{entry:?}"
    );
    assert_eq!((entry.cores, entry.fabric), (CORES, fabric), "{entry:?}");
    // The 10 answered, from the counts the executor published (it printed no accounting).
    assert_eq!(entry.invocations, 10, "{entry:?}");
    let text = ledger_text(&node.ledger());
    assert!(
        text.contains(&format!("executor ended before the lease: {exit}")),
        "{text}"
    );
    drop(lease);
    let again = lease_from(&node.manager.address, crash_package(), &spec(CORES, fabric))
        .expect("a new lease of the whole node");
    assert_eq!(
        again
            .invoke(CCall::<ECHO>(7))
            .timeout(BOUND)
            .wait()
            .expect("echo"),
        7
    );
    let exec = executor_of(&node, again.id());
    drop(again);
    node.check_reclaimed(exec, &shm_before);
}

#[test]
fn a_function_that_aborts_costs_its_lease_only() {
    check_executor_death(Fabric::Shm, Death::Abort);
    check_executor_death(Fabric::Tcp, Death::Abort);
}

#[test]
fn a_function_that_segfaults_costs_its_lease_only() {
    check_executor_death(Fabric::Shm, Death::Segfault);
    check_executor_death(Fabric::Tcp, Death::Segfault);
}

#[test]
fn an_executor_killed_mid_invocation_costs_its_lease_only() {
    check_executor_death(Fabric::Shm, Death::Killed);
    check_executor_death(Fabric::Tcp, Death::Killed);
}

#[test]
fn a_panicking_function_costs_one_invocation() {
    for fabric in [Fabric::Shm, Fabric::Tcp] {
        let node = Node::start(&format!("faults-panic-{fabric:?}"), false);
        let shm_before = dev_shm_names();
        let lease =
            lease_from(&node.manager.address, example_package(), &spec(1, fabric)).expect("lease");
        let exec = executor_of(&node, lease.id());
        for v in 0..5u64 {
            match lease.invoke(fx::fault::call(1, v)).timeout(BOUND).wait() {
                Err(Error::Call(CallError::Panic(m))) => {
                    assert!(m.contains(&format!("fault injected: value {v}")), "{m}")
                }
                other => panic!("expected a panic, got {other:?}"),
            }
            assert_eq!(
                lease
                    .invoke(fx::fault::call(0, v))
                    .timeout(BOUND)
                    .wait()
                    .expect("served after a panic"),
                v
            );
        }
        // The same process serves on.
        assert_eq!(executor_of(&node, lease.id()), exec);
        let id = lease.id();
        drop(lease);
        node.check_reclaimed(exec, &shm_before);
        let entry = node.entry(id);
        assert_eq!(
            (entry.invocations, entry.executor_exit.as_deref()),
            (10, None),
            "{entry:?}"
        );
    }
}

/// Starts `rfaas-test-client MANAGER managed-slow` (a one-core lease over `fabric`, one
/// invocation, then a `fault` sleeping `ms`) and returns it with its lease id once the slow
/// invocation is out.
fn slow_client(manager: &str, fabric: &str, ms: u64) -> (std::process::Child, u64) {
    let mut client = Command::new(env!("CARGO_BIN_EXE_rfaas-test-client"))
        .arg(manager)
        .arg("managed-slow")
        .arg(example_package())
        .arg(fabric)
        .arg(ms.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("client process");
    let mut out = std::io::BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("client output");
    let id = line
        .trim()
        .strip_prefix("leased ")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("client did not lease: {line:?}"));
    line.clear();
    out.read_line(&mut line).expect("client output");
    assert_eq!(line.trim(), "invoked");
    (client, id)
}

#[test]
fn a_client_killed_mid_invocation_returns_its_lease() {
    for fabric in [Fabric::Shm, Fabric::Tcp] {
        let node = Node::start(&format!("faults-client-{fabric:?}"), false);
        let shm_before = dev_shm_names();
        let name = if fabric == Fabric::Shm { "shm" } else { "tcp" };
        let (mut client, id) = slow_client(&node.manager.address, name, 300);
        let exec = executor_of(&node, id);
        node.wait_free("the client holds a core", CORES - 1, MEMORY_MIB - 256);
        client.kill().expect("kill the client");
        client.wait().expect("reap the client");
        node.check_reclaimed(exec, &shm_before);
        let entry = node.entry(id);
        // The executor ended its session itself: it was not killed, and the invocation the
        // client saw answered is counted.
        assert_eq!(entry.executor_exit, None, "{entry:?}");
        assert!(entry.invocations >= 1, "{entry:?}");
        // The node serves a lease of all its cores.
        let all = lease_from(
            &node.manager.address,
            example_package(),
            &spec(CORES, fabric),
        )
        .expect("all cores again");
        assert_eq!(
            all.invoke(fx::fault::call(0, 3))
                .timeout(BOUND)
                .wait()
                .expect("invocation"),
            3
        );
        let exec = executor_of(&node, all.id());
        drop(all);
        node.check_reclaimed(exec, &shm_before);
    }
}

#[test]
fn a_killed_manager_takes_its_executors_along_and_a_restart_keeps_the_ledger() {
    let mut node = Node::start("faults-manager", true);
    let pkg = example_package();
    // Finished leases: their entries are acknowledged (fsync'd before the capacity is reused).
    for (fabric, n) in [(Fabric::Shm, 7u64), (Fabric::Tcp, 9)] {
        let lease = lease_from(&node.manager.address, pkg, &spec(1, fabric)).expect("lease");
        for v in 0..n {
            assert_eq!(
                lease
                    .invoke(fx::fault::call(0, v))
                    .timeout(BOUND)
                    .wait()
                    .expect("invocation"),
                v
            );
        }
        let id = lease.id();
        drop(lease);
        assert_eq!(node.entry(id).invocations, n);
    }
    node.wait_free("both leases returned", CORES, MEMORY_MIB);
    let before = read_ledger(&node.ledger()).expect("ledger");
    assert_eq!(before.len(), 2);
    // Leases in progress when the manager dies.
    let fabrics = [Fabric::Shm, Fabric::Tcp];
    let held: Vec<_> = fabrics
        .into_iter()
        .map(|fabric| lease_from(&node.manager.address, pkg, &spec(1, fabric)).expect("lease"))
        .collect();
    let execs: Vec<_> = held.iter().map(|l| executor_of(&node, l.id())).collect();
    std::thread::scope(|s| {
        let pending: Vec<_> = held
            .iter()
            .map(|l| s.spawn(move || l.invoke(fx::fault::call(2, 30_000)).timeout(BOUND).wait()))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        // Waits until the reaper exits: the manager and every executor it left are reaped.
        node.manager.kill();
        for (p, fabric) in pending.into_iter().zip(fabrics) {
            check_gone(fabric, "a pending invocation", p.join().expect("waiter"));
        }
    });
    for (pid, start) in &execs {
        assert!(
            process_stat(*pid).is_none_or(|(_, _, s)| s != *start),
            "executor {pid} outlived its manager"
        );
    }
    // Later invocations fail at once.
    for (lease, fabric) in held.iter().zip(fabrics) {
        check_gone(
            fabric,
            "an invocation after the death",
            lease.invoke(fx::fault::call(0, 1)).timeout(BOUND).wait(),
        );
    }
    let cut_short: Vec<u64> = held.iter().map(|l| l.id()).collect();
    drop(held);
    let old_address = node.manager.address.clone();
    node.restart_manager();
    // Every acknowledged entry is there, unchanged; the leases cut short have none.
    assert_eq!(read_ledger(&node.ledger()).expect("ledger"), before);
    let text = ledger_text(&node.ledger());
    for e in &before {
        assert!(text.contains(&format!("lease {:>6}", e.lease_id)), "{text}");
    }
    assert!(text.contains("2 leases, 16 invocations"), "{text}");
    // It registers again (at its new address) with all its capacity, and serves.
    eventually(
        "the restarted manager is listed with all its capacity",
        || {
            node.listed().is_some_and(|(address, c, m)| {
                address == node.manager.address && (c, m) == (CORES, MEMORY_MIB)
            })
        },
    );
    assert_ne!(node.manager.address, old_address);
    let lease =
        lease_from(&node.manager.address, pkg, &spec(CORES, Fabric::Shm)).expect("new lease");
    // Lease ids are not handed out twice, not even those of the leases cut short (no ledger
    // entry): the manager reserves them on disk.
    assert!(before.iter().all(|e| e.lease_id < lease.id()));
    assert!(
        cut_short.iter().all(|id| *id < lease.id()),
        "lease {} reuses an id of {cut_short:?}",
        lease.id()
    );
    assert_eq!(
        lease
            .invoke(fx::fault::call(0, 42))
            .timeout(BOUND)
            .wait()
            .expect("invocation"),
        42
    );
    let id = lease.id();
    let exec = executor_of(&node, id);
    drop(lease);
    assert_eq!(node.entry(id).invocations, 1);
    let after = read_ledger(&node.ledger()).expect("ledger");
    assert_eq!(after[..2], before[..]);
    eventually(&format!("the executor {} is reaped", exec.0), || {
        process_stat(exec.0).is_none_or(|(_, _, s)| s != exec.1)
    });
    node.wait_free("the new lease returned", CORES, MEMORY_MIB);
    // The killed manager's shared-memory lease left its socket behind; the restarted manager
    // removed it (its name carries the dead manager's pid), and its own lease's socket too.
    let sockets = dir_names(&node.dir.join("sockets"));
    assert!(sockets.is_empty(), "sockets left: {sockets:?}");
}

#[test]
fn a_killed_registry_restarts_with_its_nodes_and_managers_heartbeat_again() {
    let mut node = Node::start("faults-registry", false);
    let pkg = example_package();
    let reg = node.registry.address.clone();
    let a = lease_anywhere(&reg, pkg, &spec(1, Fabric::Shm)).expect("lease through the registry");
    node.wait_free(
        "the registry sees a core leased",
        CORES - 1,
        MEMORY_MIB - LEASE_MIB,
    );
    node.registry.kill();
    // Without the registry: leasing through it fails with a clear error, existing leases and
    // the manager go on.
    match lease_anywhere(&reg, pkg, &spec(1, Fabric::Shm)) {
        // Not a refusal (a program may retry later): the registry could not be reached, and
        // why.
        Err(e @ Error::Registry { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&reg) && text.contains("refused"), "{text}");
        }
        other => panic!("expected the registry unreachable, got {other:?}"),
    }
    assert_eq!(
        a.invoke(fx::fault::call(0, 3))
            .timeout(BOUND)
            .wait()
            .expect("a lease outlives the registry"),
        3
    );
    let b = lease_from(&node.manager.address, pkg, &spec(1, Fabric::Tcp))
        .expect("a lease straight from the manager");
    // Restarted on the same address, with the same node table.
    node.registry = Daemon::start("registry", &registry_config(&node.dir, &reg, 2000));
    assert_eq!(node.registry.address, reg);
    assert!(
        node.listed().is_some(),
        "the node is listed at once (from the node table)"
    );
    node.wait_free(
        "the manager's heartbeats report the lease taken meanwhile",
        0,
        MEMORY_MIB - 2 * LEASE_MIB,
    );
    drop((a, b));
    node.wait_free("both leases returned", CORES, MEMORY_MIB);
    let c =
        lease_anywhere(&reg, pkg, &spec(CORES, Fabric::Shm)).expect("lease through the registry");
    assert_eq!(
        c.invoke(fx::fault::call(0, 4))
            .timeout(BOUND)
            .wait()
            .expect("invocation"),
        4
    );
}

/// A function that prints far more than a pipe holds (4 MiB) is served like any other: its
/// executor's stdout is not a pipe the manager would have to drain (it goes to the manager's
/// stderr), and the lease ends and is reclaimed as usual.
#[test]
fn a_function_printing_megabytes_is_served() {
    let node = Node::start_quiet("chatter", "", &[]);
    let shm_before = dev_shm_names();
    for fabric in [Fabric::Shm, Fabric::Tcp] {
        let lease =
            lease_from(&node.manager.address, crash_package(), &spec(1, fabric)).expect("lease");
        let id = lease.id();
        let exec = executor_of(&node, id);
        let n = 4 << 20;
        assert_eq!(
            lease
                .invoke(CCall::<CHATTER>(n))
                .timeout(BOUND)
                .wait()
                .unwrap_or_else(|e| panic!("chatter over {fabric:?}: {e}")),
            n,
            "over {fabric:?}"
        );
        assert_eq!(
            lease
                .invoke(CCall::<ECHO>(5))
                .timeout(BOUND)
                .wait()
                .expect("echo"),
            5
        );
        drop(lease);
        let entry = node.entry(id);
        assert_eq!(entry.invocations, 2, "{entry:?}");
        assert_eq!(entry.executor_exit, None, "{entry:?}");
        node.check_reclaimed(exec, &shm_before);
    }
}

/// An executor that does not start within `executor_start_timeout_ms` (a library whose
/// constructor never returns) is killed and reaped, the lease is refused saying so, and its
/// cores, memory and files come back.
#[test]
fn an_executor_that_never_starts_is_killed_at_the_start_timeout() {
    let node = Node::start_quiet(
        "hang-on-load",
        "executor_start_timeout_ms = 1000\n",
        &[("RFAAS_TEST_HANG_ON_LOAD", "1")],
    );
    for fabric in [Fabric::Shm, Fabric::Tcp] {
        match lease_from(&node.manager.address, crash_package(), &spec(CORES, fabric)) {
            Err(Error::Refused(why)) => assert!(
                why.contains("executor did not start within 1s"),
                "over {fabric:?}: {why}"
            ),
            Err(other) => panic!("over {fabric:?}: expected a refusal, got {other}"),
            Ok(_) => panic!("over {fabric:?}: an executor that never started served"),
        }
        eventually("the manager has no child left", || {
            children_of(node.manager.pid()).is_empty()
        });
        node.wait_free(
            "the lease's cores and memory are free again",
            CORES,
            MEMORY_MIB,
        );
        let sockets = node.dir.join("sockets");
        eventually("the socket directory is empty", || {
            dir_names(&sockets).is_empty()
        });
    }
}
