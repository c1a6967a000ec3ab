//! Support for the end-to-end tests in `it/`: aligned buffers, a seeded generator, packaging
//! through the real `cargo xtask package`, C fixtures, and a local invoker that drives a
//! typed call through a loaded library exactly as an executor would.

use executor::FunctionLibrary;
use rfaas::{CallError, Placement, RemoteCall};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// A `cargo` command in the workspace root.
pub fn cargo() -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(workspace_root());
    c
}

/// Runs a command, returning its output; panics only if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Text of stdout and stderr together.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Packages `functions-example` once per test process with `cargo xtask package` into a
/// directory of this test run, and returns the package directory.
///
/// `RFAAS_TEST_PACKAGE` names a package built beforehand instead (where the tests cannot run
/// cargo, as in the RDMA VM of `cargo xtask rdma-vm`).
pub fn example_package() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("RFAAS_TEST_PACKAGE") {
            return PathBuf::from(dir);
        }
        let out = scratch_dir("packages");
        let o = run(cargo()
            .args(["xtask", "package", "-p", "functions-example", "--out"])
            .arg(&out));
        assert!(
            o.status.success(),
            "cargo xtask package failed:\n{}",
            text(&o)
        );
        out.join("functions-example")
    })
}

/// The users `first` to `last` for a test that runs processes as them and kills every process
/// of theirs: only as root (with CAP_SYS_PTRACE, to look into their processes), and only where
/// no account or process uses those ids (a test must not kill a real user's processes); `None`,
/// having said why, otherwise. The guard kills whatever of theirs is left when it is dropped
/// (a failed test's leftovers would otherwise hold its output open, and later runs would skip).
pub fn spare_users(first: u32, last: u32) -> Option<SpareUsers> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: processes under other users need root");
        return None;
    }
    // Their processes' /proc entries (root, ns, fd) are what the tests look at.
    if !executor::users::has_capability(executor::users::CAP_SYS_PTRACE) {
        eprintln!("skipped: looking into other users' processes needs CAP_SYS_PTRACE");
        return None;
    }
    let others = executor::users::others_in(executor::users::UidRange { first, last });
    if !others.is_empty() {
        eprintln!("skipped: users {first}-{last} are in use here: {others:?}");
        return None;
    }
    Some(SpareUsers(first, last))
}

/// Users a test may run processes as ([`spare_users`]); their processes are killed on drop.
pub struct SpareUsers(u32, u32);

impl Drop for SpareUsers {
    fn drop(&mut self) {
        for uid in self.0..=self.1 {
            executor::users::sweep(uid);
        }
    }
}

/// A fresh directory under `target/test-scratch/` (or `$RFAAS_TEST_SCRATCH`), unique to
/// `name` (cleared first).
pub fn scratch_dir(name: &str) -> PathBuf {
    let root = std::env::var_os("RFAAS_TEST_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("test-scratch"));
    let dir = root.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clearing scratch dir");
    }
    std::fs::create_dir_all(&dir).expect("creating scratch dir");
    dir
}

/// Compiles a C source into a shared library named `name` (a fixture for the loader).
pub fn c_library(name: &str, source: &str) -> PathBuf {
    c_library_with(name, source, &[])
}

/// [`c_library`] with `extra_args` for the compiler after the source (libraries to link:
/// `-L<dir>`, `-l<name>`). The library is `lib<name>.so` in a scratch directory of its own.
pub fn c_library_with(name: &str, source: &str, extra_args: &[&str]) -> PathBuf {
    let dir = scratch_dir(&format!("c-{name}"));
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).expect("writing C fixture");
    let lib = dir.join(format!("lib{name}.so"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    // `RFAAS_ABI`: the ABI version this build of rfaas speaks, for the fixtures' manifests.
    let o = run(Command::new(cc)
        .arg(format!("-DRFAAS_ABI={}", rfaas::wire::ABI_VERSION))
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&src)
        .args(extra_args));
    assert!(
        o.status.success(),
        "cc failed for fixture {name}:\n{}",
        text(&o)
    );
    lib
}

/// A zeroed byte buffer whose start is 8-byte aligned (as executor slots are).
pub struct AlignedBuf {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBuf {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Self {
        AlignedBuf {
            words: vec![0; len.div_ceil(8).max(1)],
            len,
        }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &rfaas::slice_bytes(&self.words)[..self.len]
    }

    /// The bytes, mutably.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut rfaas::slice_bytes_mut(&mut self.words)[..self.len]
    }
}

/// SplitMix64: a tiny seeded generator for reproducible random inputs.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// Extra output room so that error messages fit.
pub const MESSAGE_ROOM: usize = 1024;

/// Encodes `call`, runs it through `lib` (checking name and fingerprint first, as a client
/// does at lease time) and decodes the answer.
pub fn invoke<C: RemoteCall>(lib: &FunctionLibrary, call: C) -> Result<C::Output, CallError> {
    let f = lib
        .find(C::NAME)
        .unwrap_or_else(|| panic!("library has no function `{}`", C::NAME));
    assert_eq!(
        f.fingerprint,
        C::FINGERPRINT,
        "fingerprint of `{}` differs between stub and library",
        C::NAME
    );
    let layout = call.layout(&Placement::NONE).expect("layout");
    let mut input = AlignedBuf::new(layout.input_len);
    let encoded = call
        .encode(input.bytes_mut(), &Placement::NONE)
        .expect("encode");
    assert_eq!(encoded, layout, "layout() and encode() disagree");
    let mut output = AlignedBuf::new(layout.output_len + MESSAGE_ROOM);
    let outcome = lib
        .invoke(f.index, input.bytes(), output.bytes_mut())
        .expect("invoke refused");
    call.decode(
        outcome.status,
        &output.bytes()[..outcome.output_len],
        &Placement::NONE,
    )
}

/// The `rfaas-executor` binary, built once per test process (or `$RFAAS_TEST_EXECUTOR`).
pub fn executor_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("RFAAS_TEST_EXECUTOR") {
            return PathBuf::from(bin);
        }
        let o = run(cargo().args(["build", "-q", "-p", "executor", "--bin", "rfaas-executor"]));
        assert!(
            o.status.success(),
            "building rfaas-executor failed:\n{}",
            text(&o)
        );
        workspace_root().join("target/debug/rfaas-executor")
    })
}

/// A running `rfaas-executor run` process, killed (and reaped) on drop.
pub struct Executor {
    child: std::process::Child,
    /// Its Unix socket (shared-memory executors).
    pub socket: PathBuf,
    /// Its TCP address (`host:port`, TCP executors).
    pub address: String,
}

impl Executor {
    /// Starts an executor serving the example package with `args` added, and waits (at most
    /// 60 s) until it reports `ready`.
    pub fn start(name: &str, args: &[&str]) -> Executor {
        Executor::spawn(name, None, args, &[])
    }

    /// Starts an executor listening on TCP `address` (e.g. `127.0.0.1:0`).
    pub fn start_tcp(name: &str, address: &str, args: &[&str]) -> Executor {
        Executor::spawn(name, Some(address), args, &[])
    }

    /// Starts an executor (on TCP `address`, or a Unix socket when `None`) with `env` added to
    /// its environment (e.g. `RFAAS_SESSION_TOKEN`).
    pub fn start_env(
        name: &str,
        address: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Executor {
        Executor::spawn(name, address, args, env)
    }

    fn spawn(name: &str, tcp: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Executor {
        use std::io::BufRead;
        let dir = scratch_dir(&format!("exec-{name}"));
        let socket = dir.join("executor.sock");
        let mut cmd = Command::new(executor_binary());
        cmd.arg("run").arg("--library").arg(example_package());
        match tcp {
            Some(addr) => cmd.args(["--listen", addr]),
            None => cmd.arg("--socket").arg(&socket),
        };
        let mut child = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawning rfaas-executor");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            for _ in lines {}
        });
        let mut exec = Executor {
            child,
            socket,
            address: String::new(),
        };
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(Some(Ok(line))) if line.starts_with("ready ") => {
                exec.address = line["ready ".len()..].to_owned();
                exec
            }
            other => {
                let _ = exec.child.kill();
                panic!("executor did not become ready: {other:?}");
            }
        }
    }

    /// Kills the executor process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (at most [`BOUND`]) for the process to exit on its own, and returns how it did.
    #[track_caller]
    pub fn exited(&mut self) -> std::process::ExitStatus {
        exited(&mut self.child, "the executor")
    }
}

/// Waits (at most [`BOUND`]) for `child` (`what`, for the failure) to exit on its own, and
/// returns how it did.
#[track_caller]
pub fn exited(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + BOUND;
    loop {
        if let Some(status) = child
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
        {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not exit within {BOUND:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` (an `rfaas-executor` subcommand), which must refuse to start, and returns its
/// stderr. Bounded: one that wrongly starts is killed after its `ready` line, and the test
/// fails.
#[track_caller]
pub fn refused_start(cmd: &mut Command) -> String {
    use std::io::BufRead;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut line = String::new();
    let _ = std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !line.starts_with("ready") && !out.status.success(),
        "expected {cmd:?} to refuse to start: {line}{err}"
    );
    err
}

/// How long the fault and soak tests wait for anything to happen before failing.
pub const BOUND: std::time::Duration = std::time::Duration::from_secs(20);

/// Waits until `cond` holds, polling every 20 ms; fails the test naming `what` after [`BOUND`].
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + BOUND;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {BOUND:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Writes `dir/manager.toml` for a manager on a loopback port with `cores` cores and `memory_mib`
/// MiB, its cache, ledger (`dir/ledger.jsonl`) and sockets (`dir/sockets/`, created empty)
/// under `dir`, plus the `extra` lines.
pub fn manager_config(dir: &Path, cores: u32, memory_mib: u64, extra: &str) -> PathBuf {
    let sockets = dir.join("sockets");
    std::fs::create_dir_all(&sockets).expect("socket dir");
    let path = dir.join("manager.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nnode_id = \"test-node\"\ncores = {cores}\nmemory_mib = {memory_mib}\ncache_dir = \"{}\"\nledger = \"{}\"\nsocket_dir = \"{}\"\n{extra}",
            dir.join("cache").display(),
            dir.join("ledger.jsonl").display(),
            sockets.display()
        ),
    )
    .expect("manager config");
    path
}

/// Writes `dir/registry.toml` for a registry listening on `listen` with its node table in
/// `dir/nodes.json`.
pub fn registry_config(dir: &Path, listen: &str, heartbeat_timeout_ms: u64) -> PathBuf {
    let path = dir.join("registry.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"{listen}\"\nheartbeat_timeout_ms = {heartbeat_timeout_ms}\nstate_file = \"{}\"\n",
            dir.join("nodes.json").display()
        ),
    )
    .expect("registry config");
    path
}

/// A running `rfaas-executor manager` or `registry` (`kind`), started directly or under a
/// launcher (the `rfaas-test-reaper` binary); SIGKILLed and reaped on drop.
pub struct Daemon {
    /// The daemon itself, or its launcher.
    child: std::process::Child,
    pid: u32,
    launched: bool,
    /// The address it printed (`ready ADDRESS`).
    pub address: String,
}

impl Daemon {
    /// Starts `rfaas-executor KIND --config CONFIG` and waits (at most [`BOUND`]) for its
    /// `ready` line.
    pub fn start(kind: &str, config: &Path) -> Daemon {
        Daemon::start_env(kind, config, &[])
    }

    /// As [`Daemon::start`], with environment variables `env` set (inherited by the
    /// executors a manager starts).
    pub fn start_env(kind: &str, config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(executor_binary());
        cmd.arg(kind).arg("--config").arg(config);
        cmd.envs(env.iter().copied());
        Daemon::spawn(cmd, kind, false)
    }

    /// As [`Daemon::start`], run in the working directory `cwd`.
    pub fn start_in(kind: &str, config: &Path, cwd: &Path) -> Daemon {
        let mut cmd = Command::new(executor_binary());
        cmd.arg(kind).arg("--config").arg(config).current_dir(cwd);
        Daemon::spawn(cmd, kind, false)
    }

    /// As [`Daemon::start_env`], with the daemon's stderr (its logs, and a manager's
    /// executors' stdout) discarded.
    pub fn start_quiet(kind: &str, config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(executor_binary());
        cmd.arg(kind).arg("--config").arg(config);
        cmd.envs(env.iter().copied());
        cmd.stderr(std::process::Stdio::null());
        Daemon::spawn(cmd, kind, false)
    }

    /// As [`Daemon::start`], but as the only child of `launcher` (which runs its arguments as
    /// a command line and must stay the daemon's parent).
    pub fn start_under(launcher: &Path, kind: &str, config: &Path) -> Daemon {
        let mut cmd = Command::new(launcher);
        cmd.arg(executor_binary())
            .arg(kind)
            .arg("--config")
            .arg(config);
        Daemon::spawn(cmd, kind, true)
    }

    fn spawn(mut cmd: Command, kind: &str, launched: bool) -> Daemon {
        use std::io::BufRead;
        if std::env::var_os("RFAAS_LOG").is_none() {
            // Warnings and errors only: a lease logs several lines at `info`.
            cmd.env("RFAAS_LOG", "warn");
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let line = rx.recv_timeout(BOUND);
        let address = match &line {
            Ok(Some(Ok(l))) => l.strip_prefix("ready ").map(str::to_owned),
            _ => None,
        };
        let Some(address) = address else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{kind} did not start: {line:?}");
        };
        let pid = if launched {
            // It printed, so it exists; its launcher started nothing else.
            match children_of(child.id()).as_slice() {
                [pid] => *pid,
                other => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the launcher of {kind} has children {other:?}")
                }
            }
        } else {
            child.id()
        };
        Daemon {
            child,
            pid,
            launched,
            address,
        }
    }

    /// The daemon's process id (not its launcher's).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends SIGKILL to the daemon, then waits (at most [`BOUND`]) for its process, or for its
    /// launcher to exit (a reaper exits once it has reaped the daemon and every orphan).
    #[track_caller]
    pub fn kill(&mut self) {
        signal(self.pid, libc::SIGKILL);
        let deadline = std::time::Instant::now() + BOUND;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) => {}
                Err(e) => panic!("waiting for the {} process: {e}", self.pid),
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} after SIGKILL: {} not gone within {BOUND:?} (children: {:?})",
                if self.launched {
                    "the launcher"
                } else {
                    "the daemon"
                },
                self.child.id(),
                children_of(self.child.id())
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(self.pid, libc::SIGKILL);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `sig` to process `pid`; an error (no such process) is ignored.
pub fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// What `/proc/PID/stat` says of a process: its state letter (`R`, `S`, `Z`, ...), parent and
/// start time (clock ticks after boot: with the pid, it names one process even if the pid is
/// reused). `None` if there is no such process.
pub fn process_stat(pid: u32) -> Option<(char, u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: the command may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    // Field 22 of the line is the start time; `fields` starts at field 3.
    let start = fields.get(19)?.parse().ok()?;
    Some((state, ppid, start))
}

/// Stops process `pid` (SIGSTOP) and returns once every one of its threads is stopped: the
/// signal takes effect asynchronously, and a thread running meanwhile may still act.
pub fn stop_process(pid: u32) {
    signal(pid, libc::SIGSTOP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let tasks: Vec<char> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten()
                    .filter_map(|t| {
                        let text = std::fs::read_to_string(t.path().join("stat")).ok()?;
                        text[text.rfind(')')? + 1..].trim_start().chars().next()
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !tasks.is_empty() && tasks.iter().all(|&s| s == 'T' || s == 't') {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} not stopped: thread states {tasks:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Processes whose parent is `pid` (zombies included).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut kids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| process_stat(p).is_some_and(|(_, ppid, _)| ppid == pid))
        .collect();
    kids.sort_unstable();
    kids
}

/// The command line of process `pid` (empty for a zombie or no process).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The CPUs (`Cpus_allowed_list`, e.g. `0` or `0-1`) of each thread of process `pid` named
/// `name` (the kernel's 15-character thread name, e.g. `rfaas-worker-0`).
pub fn thread_cpus(pid: u32, name: &str) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut found: Vec<String> = tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .filter_map(|t| {
            let status = std::fs::read_to_string(t.path().join("status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned())
        })
        .collect();
    found.sort();
    found
}

/// The address a freshly spawned `rfaas-executor` process (`child`, its stdout piped) reports
/// on its first line, `ready ADDRESS`; fails the test naming `what` if it reports anything
/// else.
pub fn ready_address(child: &mut std::process::Child, what: &str) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("the ready line");
    line.trim()
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("{what} did not start: {line:?}"))
        .to_owned()
}

/// The executor process a manager (`manager_pid`) runs for lease `lease_id`, if any.
pub fn lease_executor(manager_pid: u32, lease_id: u64) -> Option<u32> {
    let arg = format!("--lease={lease_id}");
    children_of(manager_pid)
        .into_iter()
        .find(|&p| cmdline(p).contains(&arg))
}

/// Names in `/dev/shm` (empty where there is none).
pub fn dev_shm_names() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The entries of a directory, by name.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The text `rfaas-executor ledger PATH` prints.
pub fn ledger_text(path: &Path) -> String {
    let out = run(Command::new(executor_binary()).arg("ledger").arg(path));
    assert!(out.status.success(), "ledger command: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace joined to this one by a veth pair: a second "host" for a test.
pub struct Netns {
    /// The namespace's name (`ip netns exec NAME ...`).
    pub name: String,
    /// This side's end of the veth pair (deleting it cuts the namespace off).
    pub veth: String,
    /// The namespace's address (this side has the other address of the /30).
    pub there: String,
}

impl Netns {
    /// Creates the `k`th namespace of this test process (`k` < 8: each test that needs one
    /// takes its own `k`), or says why not (no `ip`, not root, no namespaces): the caller
    /// skips.
    pub fn create(k: u32) -> Result<Netns, String> {
        assert!(k < 8, "namespace {k}: at most 8 per test process");
        let id = std::process::id();
        let tag = format!("{}{k}", id % 100_000);
        let (name, veth, peer) = (
            format!("rfaas-t{tag}"),
            format!("rfa{tag}"),
            format!("rfb{tag}"),
        );
        let subnet = (id % 31) * 8 + k;
        let ns = Netns {
            name,
            veth,
            there: format!("10.213.{subnet}.2"),
        };
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("cannot run `ip`: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        ip(&["netns", "add", &ns.name])?;
        let (n, v) = (ns.name.as_str(), ns.veth.as_str());
        let here = format!("10.213.{subnet}.1/30");
        let there = format!("{}/30", ns.there);
        ip(&["link", "add", v, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", n])?;
        ip(&["addr", "add", &here, "dev", v])?;
        ip(&["link", "set", v, "up"])?;
        ip(&[
            "netns", "exec", n, "ip", "addr", "add", &there, "dev", &peer,
        ])?;
        ip(&["netns", "exec", n, "ip", "link", "set", &peer, "up"])?;
        ip(&["netns", "exec", n, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Netns {
    /// This host's address on the pair (reachable from inside the namespace).
    pub fn here(&self) -> String {
        let (net, _) = self.there.rsplit_once('.').expect("an IPv4 address");
        format!("{net}.1")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and so the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
    }
}
