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
    let dir = scratch_dir(&format!("c-{name}"));
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).expect("writing C fixture");
    let lib = dir.join(format!("lib{name}.so"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let o = run(Command::new(cc)
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&src));
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
        Executor::spawn(name, None, args)
    }

    /// Starts an executor listening on TCP `address` (e.g. `127.0.0.1:0`).
    pub fn start_tcp(name: &str, address: &str, args: &[&str]) -> Executor {
        Executor::spawn(name, Some(address), args)
    }

    fn spawn(name: &str, tcp: Option<&str>, args: &[&str]) -> Executor {
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
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.kill();
    }
}
