//! `cargo xtask rdma-vm`: runs commands (host-built test binaries) inside a QEMU guest whose
//! kernel has Soft-RoCE (`rdma_rxe`) on its virtio NIC, so RDMA code meets a real kernel RDMA
//! stack. See `docs/rdma.md`.
//!
//! The host installs what it lacks (apt), fetches Debian's kernel and busybox packages into
//! `TARGET_DIR/rdma-vm/`, builds an initramfs (busybox, the module closure, `rdma_vm_init.sh` as
//! `/init`) and boots it under TCG. The guest mounts the host's root read-only over virtio-9p,
//! adds `rxe0` on `eth0`, chroots into the host root and runs the commands; their exit status
//! and output come back through a second, writable 9p share, since QEMU's own exit status
//! never carries the guest's.

use anyhow::{Context, Result, anyhow, bail, ensure};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Run commands in a QEMU VM with Soft-RoCE (rxe0); without commands, an RDMA smoke check.
#[derive(clap::Args)]
pub struct RdmaVmArgs {
    /// Print the guest console even when every command succeeded.
    #[arg(long, short)]
    verbose: bool,
    /// Seconds before the VM is killed (boot, set-up and all commands).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Environment for the commands: KEY=VALUE, or KEY to pass the host's value. RUST_BACKTRACE,
    /// RUST_LOG, RUST_TEST_*, RFAAS_*, CI and NO_COLOR pass through without it.
    #[arg(long = "env", short = 'e', value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Working directory of the commands in the guest (default: the workspace root).
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Build and run the verbs test suite instead of commands: the `verbs` tests of the
    /// `rfaas` (transport) and `tests` (end-to-end) crates, built with the `verbs` feature,
    /// against a packaged functions-example and an RDMA-enabled `rfaas-executor`. They must
    /// really run (RFAAS_REQUIRE_RDMA=1: a missing device fails instead of skipping).
    #[arg(long, conflicts_with = "commands")]
    suite: bool,
    /// Commands to run in the guest, each after its own `--`: `-- BIN [ARGS...] -- BIN2 ...`.
    /// Paths are host paths (the guest sees the host's root read-only).
    #[arg(last = true, value_name = "COMMAND")]
    commands: Vec<String>,
}

/// The guest's `/init`.
const INIT: &str = include_str!("rdma_vm_init.sh");

/// Host packages: cmake and libclang (the `ibverbs-sys` build), QEMU, modprobe/depmod, the verbs
/// tools and provider the guest runs from the host root, `rdma` (iproute2), the headers RDMA
/// crates build against, and xz (the kernel).
const HOST_PACKAGES: &[&str] = &[
    "cmake",
    "libclang-dev",
    "qemu-system-x86",
    "kmod",
    "rdma-core",
    "ibverbs-providers",
    "ibverbs-utils",
    "iproute2",
    "libibverbs-dev",
    "librdmacm-dev",
    "xz-utils",
];

/// Modules the guest loads (with their dependencies). `rdma_rxe` needs `crc32_generic`:
/// without it `rdma link add` fails with "No such file".
const MODULES: &[&str] = &[
    "crc32_generic",
    "virtio_pci",
    "virtio_net",
    "9pnet_virtio",
    "9p",
    "rdma_rxe",
    "ib_uverbs",
    "rdma_ucm",
];

/// Host environment variables passed to the commands unasked (exact names, or prefixes `*`).
const PASS_ENV: &[&str] = &[
    "RUST_BACKTRACE",
    "RUST_LIB_BACKTRACE",
    "RUST_LOG",
    "RUST_MIN_STACK",
    "RUST_TEST_*",
    "RFAAS_*",
    "CI",
    "NO_COLOR",
];

/// Host paths the guest replaces with its own (kernel filesystems, scratch tmpfs).
const GUEST_LOCAL: &[&str] = &["/proc", "/sys", "/dev", "/tmp", "/run"];
/// Of those, where the guest can keep a host directory visible (bound over its tmpfs).
const KEEPABLE: &[&str] = &["/tmp", "/run"];

/// The built-in smoke check: the rxe device exists and an RC queue pair pair ping-pongs.
const SMOKE: &[(&str, &str)] = &[
    (
        "ibv_devices lists rxe0",
        "rdma link show && ibv_devices && ibv_devices | grep -qw rxe0 && ibv_devinfo -d rxe0",
    ),
    (
        "ibv_rc_pingpong over rxe0 (GID 0)",
        // The client retries until the server listens on its TCP port (18515).
        "ibv_rc_pingpong -d rxe0 -g 0 & server=$!
for try in 1 2 3 4 5 6 7 8 9 10; do
    sleep 0.3
    if ibv_rc_pingpong -d rxe0 -g 0 127.0.0.1; then wait $server; exit $?; fi
done
kill $server; echo 'rdma-vm: the client never got through'; exit 1",
    ),
];

/// One command for the guest.
struct Step {
    label: String,
    argv: Vec<String>,
}

/// `cargo xtask rdma-vm`: prepares the VM (cached), boots it once for all commands and fails
/// unless every command exited 0.
pub fn run(mut args: RdmaVmArgs) -> Result<()> {
    let started = Instant::now();
    if args.suite {
        install_host_packages()?;
        let (commands, env) = suite()?;
        args.commands = commands;
        args.env.extend(env);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf();
    let workdir = match &args.workdir {
        Some(dir) => std::path::absolute(dir).context("resolving --workdir")?,
        None => workspace.clone(),
    };
    let target = target_dir(&workspace)?;
    // A workspace (or target directory) under /tmp or /run, as in a CI clone, stays visible:
    // the guest binds the host's copy over its own scratch there.
    let mut keep: Vec<PathBuf> = Vec::new();
    for dir in [&workspace, &target, &workdir] {
        let dir = std::path::absolute(dir)?;
        if KEEPABLE.iter().any(|d| dir.starts_with(d)) && !keep.iter().any(|k| dir.starts_with(k)) {
            keep.retain(|k| !k.starts_with(&dir));
            keep.push(dir);
        }
    }
    let steps = steps(&args.commands, &keep)?;
    let env = environment(&args.env)?;
    let cache = target.join("rdma-vm");
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;

    install_host_packages()?;
    let image = image(&cache)?;
    let prepared = started.elapsed();

    // Results of earlier runs (kept when they failed) go, unless their run is still going.
    for entry in fs::read_dir(&cache)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if let Some(pid) = name.strip_prefix("run-")
            && !Path::new("/proc").join(pid).exists()
        {
            fs::remove_dir_all(&path).ok();
        }
    }
    let run_dir = cache.join(format!("run-{}", std::process::id()));
    fs::create_dir_all(&run_dir)?;
    fs::write(run_dir.join("job"), job(&steps, &env, &workdir))?;
    let mut kept = String::new();
    for k in &keep {
        let k = k.to_str().context("non-UTF-8 workspace path")?;
        ensure!(!k.contains('\n'), "a newline in a workspace path");
        writeln!(kept, "{k}").unwrap();
    }
    fs::write(run_dir.join("keep"), kept)?;
    let console_path = run_dir.join("console.log");

    eprintln!(
        "==> booting {} (TCG) for {} command{}",
        image.version,
        steps.len(),
        if steps.len() == 1 { "" } else { "s" }
    );
    let boot = Instant::now();
    let status = qemu(&image, &run_dir, &console_path, args.timeout)?;
    let vm_time = boot.elapsed();
    let console = fs::read(&console_path).unwrap_or_default();

    let (summary, outcome) = report(&steps, &run_dir, status, args.timeout);
    if args.verbose || outcome.is_err() {
        eprintln!("==> guest console ({})", console_path.display());
        eprint!("{}", printable(&console));
    }
    print!("{summary}");
    eprintln!(
        "==> rdma-vm: {:.1} s (preparation {:.1} s, VM {:.1} s)",
        started.elapsed().as_secs_f64(),
        prepared.as_secs_f64(),
        vm_time.as_secs_f64()
    );
    match outcome {
        Ok(()) => {
            fs::remove_dir_all(&run_dir).ok();
            Ok(())
        }
        Err(e) => {
            eprintln!("==> results kept in {}", run_dir.display());
            Err(e)
        }
    }
}

/// The verbs suite as `cargo xtask ci` runs it (`rdma-vm --suite`, default timeout).
pub fn ci_suite() -> Result<()> {
    run(RdmaVmArgs {
        verbose: false,
        timeout: 600,
        env: Vec::new(),
        workdir: None,
        suite: true,
        commands: Vec::new(),
    })
}

/// Builds what the verbs suite runs; returns its commands (each after a `--`) and their
/// environment.
fn suite() -> Result<(Vec<String>, Vec<String>)> {
    crate::run(
        "cargo build -p executor --features verbs",
        crate::cargo().args([
            "build",
            "-p",
            "executor",
            "--features",
            "verbs",
            "--bin",
            "rfaas-executor",
        ]),
    )?;
    let (_, package) = crate::package("functions-example", None)?;
    eprintln!("==> cargo test -p rfaas -p tests --features verbs --no-run");
    let out = crate::cargo()
        .args([
            "test",
            "-p",
            "rfaas",
            "-p",
            "tests",
            "--features",
            "rfaas/verbs,tests/verbs",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    ensure!(
        out.status.success(),
        "building the verbs test binaries failed"
    );
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_it = msg["target"]["name"] == "it" && msg["profile"]["test"] == true;
        let package = msg["package_id"].as_str().unwrap_or_default();
        if let (true, Some(exe)) = (is_it, msg["executable"].as_str()) {
            binaries.push((package.to_owned(), exe.to_owned()));
        }
    }
    ensure!(
        binaries.len() == 2,
        "expected the `it` test binaries of rfaas and tests, found {binaries:?}"
    );
    let mut commands = Vec::new();
    for (_, exe) in &binaries {
        commands.extend([
            "--".into(),
            exe.clone(),
            "verbs".into(),
            // Leases in cgroups, under the guest's cgroup v2 (this machine's is v1).
            "cgroup".into(),
            "--test-threads=1".into(),
        ]);
    }
    let executor = target_dir(&crate::workspace_root())?.join("debug/rfaas-executor");
    let env = vec![
        "RFAAS_REQUIRE_RDMA=1".to_owned(),
        format!("RFAAS_TEST_PACKAGE={}", package.display()),
        format!("RFAAS_TEST_EXECUTOR={}", executor.display()),
        "RFAAS_TEST_SCRATCH=/tmp/rfaas-scratch".to_owned(),
    ];
    Ok((commands, env))
}

/// The serial console as text: no carriage returns, no terminal escape sequences (SeaBIOS
/// clears the screen).
fn printable(console: &[u8]) -> String {
    let text = String::from_utf8_lossy(console);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            // ESC [ params final-byte, or ESC plus one character.
            '\x1b' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Splits `-- A a1 -- B b1` (clap keeps the later `--` as values) into steps; none gives the
/// smoke check. Program paths with a `/` are made absolute against the host's working directory
/// and must exist on the host and be visible to the guest.
fn steps(words: &[String], keep: &[PathBuf]) -> Result<Vec<Step>> {
    let commands: Vec<&[String]> = words
        .split(|w| w == "--")
        .filter(|c| !c.is_empty())
        .collect();
    if commands.is_empty() {
        return Ok(SMOKE
            .iter()
            .map(|(label, script)| Step {
                label: (*label).to_owned(),
                argv: vec!["/bin/sh".into(), "-c".into(), (*script).to_owned()],
            })
            .collect());
    }
    commands
        .into_iter()
        .map(|argv| {
            let mut argv = argv.to_vec();
            if argv[0].contains('/') {
                let path = std::path::absolute(&argv[0])
                    .with_context(|| format!("resolving {}", argv[0]))?;
                ensure!(path.is_file(), "no such file on the host: {}", path.display());
                if let Some(dir) = GUEST_LOCAL.iter().find(|d| path.starts_with(d))
                    && !keep.iter().any(|k| path.starts_with(k))
                {
                    bail!(
                        "{} is under {dir}, which the guest replaces with its own: build it elsewhere",
                        path.display()
                    );
                }
                argv[0] = path.to_str().context("non-UTF-8 program path")?.to_owned();
            }
            Ok(Step {
                label: argv.join(" "),
                argv,
            })
        })
        .collect()
}

/// The commands' environment: the pass-through list from the host, then `--env`.
fn environment(extra: &[String]) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            PASS_ENV.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => k.starts_with(prefix),
                None => k == p,
            })
        })
        .collect();
    for e in extra {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (
                e.clone(),
                std::env::var(e).with_context(|| format!("--env {e}: not set on the host"))?,
            ),
        };
        ensure!(
            !k.is_empty() && k.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()),
            "--env {e}: not a variable name"
        );
        env.retain(|(old, _)| *old != k);
        env.push((k, v));
    }
    env.sort();
    Ok(env)
}

/// The job file the guest's `/init` sources: exports, the working directory, one `step` per
/// command.
fn job(steps: &[Step], env: &[(String, String)], workdir: &Path) -> String {
    let mut job =
        String::from("# rdma-vm job: written by the host, sourced by the guest's /init\n");
    for (k, v) in env {
        writeln!(job, "export {k}={}", quote(v)).unwrap();
    }
    writeln!(job, "workdir={}", quote(&workdir.to_string_lossy())).unwrap();
    for (i, step) in steps.iter().enumerate() {
        let argv: Vec<String> = step.argv.iter().map(|a| quote(a)).collect();
        writeln!(job, "step {} {}", i + 1, argv.join(" ")).unwrap();
    }
    job
}

/// Single-quotes a word for the shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn target_dir(workspace: &Path) -> Result<PathBuf> {
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    ensure!(out.status.success(), "cargo metadata failed");
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let dir = meta["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    Ok(PathBuf::from(dir))
}

/// Runs `cmd`, showing its output only if it fails.
fn quiet(what: &str, cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({})\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn apt_get() -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// Installs the host packages that are missing (one `dpkg-query` when none is).
fn install_host_packages() -> Result<()> {
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${db:Status-Status}\n")
        .args(HOST_PACKAGES)
        .stderr(Stdio::null())
        .output()
        .context("running dpkg-query: rdma-vm needs a Debian-based host")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .copied()
        .filter(|p| !listing.lines().any(|l| l == format!("{p} installed")))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let uid = quiet("id -u", Command::new("id").arg("-u"))?;
    if String::from_utf8_lossy(&uid).trim() != "0" {
        bail!(
            "missing packages; run as root: apt-get install -y --no-install-recommends {}",
            missing.join(" ")
        );
    }
    eprintln!("==> apt-get install {}", missing.join(" "));
    let t = Instant::now();
    let install = || {
        quiet(
            "apt-get install",
            apt_get()
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing),
        )
    };
    if install().is_err() {
        // Package lists missing or stale.
        quiet("apt-get update", apt_get().arg("update"))?;
        install()?;
    }
    eprintln!("    installed in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// What QEMU boots.
struct Image {
    /// The kernel's release, e.g. `6.1.0-48-amd64` (its modules directory).
    version: String,
    kernel: PathBuf,
    initrd: PathBuf,
}

/// Finds or builds the kernel and initramfs in `cache`.
fn image(cache: &Path) -> Result<Image> {
    let deb = kernel_deb(cache)?;
    let busybox = busybox(cache)?;
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let package = name.split('_').next().unwrap_or_default();
    let version = package
        .strip_prefix("linux-image-")
        .with_context(|| format!("unexpected kernel package name {name}"))?
        .to_owned();
    let key = fnv1a(&[
        INIT.as_bytes(),
        MODULES.join(" ").as_bytes(),
        name.as_bytes(),
        &fs::metadata(&busybox)?.len().to_le_bytes(),
    ]);
    let kernel = cache.join(format!("vmlinux-{version}"));
    let initrd = cache.join(format!("initrd-{version}-{key:016x}.cpio"));
    if kernel.is_file() && initrd.is_file() {
        return Ok(Image {
            version,
            kernel,
            initrd,
        });
    }

    eprintln!("==> building the initramfs for {version}");
    let t = Instant::now();
    let root = cache.join(format!("unpack-{version}"));
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    quiet(
        "dpkg-deb -x (kernel)",
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
    )?;
    // The .deb ships no modules.dep.
    quiet(
        "depmod",
        Command::new("depmod").arg("-b").arg(&root).arg(&version),
    )?;
    let mut modules: Vec<PathBuf> = Vec::new();
    for m in MODULES {
        let out = quiet(
            &format!("modprobe --show-depends {m}"),
            Command::new("modprobe").arg("-d").arg(&root).args([
                "-S",
                &version,
                "--show-depends",
                m,
            ]),
        )?;
        for line in String::from_utf8_lossy(&out).lines() {
            // "insmod /path/to/x.ko [options]" or "builtin x".
            if let Some(path) = line
                .strip_prefix("insmod ")
                .and_then(|r| r.split_whitespace().next())
            {
                let path = PathBuf::from(path);
                if !modules.contains(&path) {
                    modules.push(path);
                }
            }
        }
    }

    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "lib", "lib/modules", "proc", "sys"] {
        cpio.dir(dir);
    }
    cpio.char_dev("dev/console", 5, 1);
    cpio.file("init", 0o755, INIT.as_bytes());
    cpio.file("bin/busybox", 0o755, &fs::read(&busybox)?);
    let mut order = String::new();
    for path in &modules {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        ensure!(
            file.ends_with(".ko"),
            "{}: compressed modules are not handled",
            path.display()
        );
        let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        cpio.file(&format!("lib/modules/{file}"), 0o644, &data);
        order.push_str(&file);
        order.push('\n');
    }
    cpio.file("modules", 0o644, order.as_bytes());

    let vmlinuz = root.join("boot").join(format!("vmlinuz-{version}"));
    uncompress_kernel(&vmlinuz, &kernel)?;
    // Older initramfs builds of any version go; the new one is written whole, then renamed.
    for entry in fs::read_dir(cache)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("initrd-") {
            fs::remove_file(entry.path())?;
        }
    }
    let partial = initrd.with_extension("partial");
    fs::write(&partial, cpio.finish())?;
    fs::rename(&partial, &initrd)?;
    fs::remove_dir_all(&root)?;
    eprintln!(
        "    {} modules ({}), built in {:.1} s",
        modules.len(),
        order.trim_end().replace('\n', " "),
        t.elapsed().as_secs_f64()
    );
    Ok(Image {
        version,
        kernel,
        initrd,
    })
}

/// Writes the kernel's ELF image, the xz payload of the bzImage `vmlinuz`, to `vmlinux`: QEMU
/// boots it through its PVH entry point, which saves the ~4 s the guest spends decompressing
/// under TCG. A kernel compressed otherwise is copied as it is (QEMU boots a bzImage too).
fn uncompress_kernel(vmlinuz: &Path, vmlinux: &Path) -> Result<()> {
    let image = fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    let Some(at) = image.windows(6).position(|w| w == b"\xfd7zXZ\0") else {
        fs::write(vmlinux, &image)?;
        return Ok(());
    };
    let partial = vmlinux.with_extension("partial");
    let mut xz = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&partial)?)
        .spawn()
        .context("starting xz")?;
    // xz stops reading at the end of the stream: the bytes after it may meet a closed pipe.
    match xz.stdin.take().expect("piped").write_all(&image[at..]) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    ensure!(
        xz.wait()?.success(),
        "xz could not uncompress {}",
        vmlinuz.display()
    );
    fs::rename(&partial, vmlinux)?;
    Ok(())
}

/// The cached kernel package, or the one bookworm's `linux-image-amd64` depends on, downloaded.
fn kernel_deb(cache: &Path) -> Result<PathBuf> {
    if let Some(deb) = cached(cache, "linux-image-")? {
        return Ok(deb);
    }
    let depends = || -> Result<Option<String>> {
        let out = Command::new("apt-cache")
            .args(["depends", "linux-image-amd64"])
            .stderr(Stdio::null())
            .output()
            .context("running apt-cache")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"))
            .map(str::to_owned))
    };
    let package = match depends()? {
        Some(p) => p,
        None => {
            quiet("apt-get update", apt_get().arg("update"))?;
            depends()?.context("apt knows no linux-image-amd64: is this Debian?")?
        }
    };
    download(cache, &package)?;
    cached(cache, "linux-image-")?
        .with_context(|| format!("apt-get download {package} left no .deb"))
}

/// The static busybox binary, from the downloaded `busybox-static` package (not installed on
/// the host: it conflicts with `busybox`).
fn busybox(cache: &Path) -> Result<PathBuf> {
    let bin = cache.join("busybox");
    if bin.is_file() {
        return Ok(bin);
    }
    let deb = match cached(cache, "busybox-static_")? {
        Some(deb) => deb,
        None => {
            download(cache, "busybox-static")?;
            cached(cache, "busybox-static_")?
                .context("apt-get download busybox-static left no .deb")?
        }
    };
    let dir = cache.join("unpack-busybox");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    quiet(
        "dpkg-deb -x (busybox)",
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir),
    )?;
    fs::copy(dir.join("bin/busybox"), &bin).context("busybox-static has no bin/busybox")?;
    fs::remove_dir_all(&dir)?;
    Ok(bin)
}

/// A `.deb` in `cache` whose name starts with `prefix` (the last by name if several).
fn cached(cache: &Path, prefix: &str) -> Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = fs::read_dir(cache)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(".deb")
        })
        .collect();
    found.sort();
    Ok(found.pop())
}

fn download(cache: &Path, package: &str) -> Result<()> {
    eprintln!("==> apt-get download {package}");
    let t = Instant::now();
    let get = || {
        quiet(
            &format!("apt-get download {package}"),
            apt_get().arg("download").arg(package).current_dir(cache),
        )
    };
    if get().is_err() {
        quiet("apt-get update", apt_get().arg("update"))?;
        get()?;
    }
    eprintln!("    downloaded in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// A 64-bit FNV-1a hash of `parts` (stable across Rust versions, for cache names).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// An uncompressed `newc` cpio archive (what the kernel unpacks as an initramfs), written
/// here so that `/dev/console` needs no `mknod` on the host.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, 0, 0, b"");
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | perm, 0, 0, data);
    }

    fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, major, minor, b"");
    }

    fn entry(&mut self, name: &str, mode: u32, rdev_major: u32, rdev_minor: u32, data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).expect("initramfs member under 4 GiB"),
            0, // dev major
            0, // dev minor
            rdev_major,
            rdev_minor,
            u32::try_from(name.len() + 1).expect("short name"),
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, 0, b"");
        self.out
    }
}

/// Boots the guest under `timeout`, console to `console`. Returns QEMU's (or timeout's) exit
/// code.
fn qemu(image: &Image, run_dir: &Path, console: &Path, timeout: u64) -> Result<Option<i32>> {
    let log = fs::File::create(console)?;
    let share = |id: &str, path: &Path, extra: &str| {
        // QEMU option values escape a comma by doubling it.
        let path = path.to_string_lossy().replace(',', ",,");
        [
            "-fsdev".to_owned(),
            format!("local,id={id},path={path},security_model=none,multidevs=remap{extra}"),
            "-device".to_owned(),
            format!("virtio-9p-pci,fsdev={id},mount_tag={id}"),
        ]
    };
    let status = Command::new("timeout")
        .args([
            "--kill-after=10",
            &timeout.to_string(),
            "qemu-system-x86_64",
        ])
        .args(["-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "2"])
        .args(["-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initrd)
        .args(["-append", "console=ttyS0 panic=-1"])
        .args(share("hostroot", Path::new("/"), ",readonly=on"))
        .args(share("results", run_dir, ""))
        .args(["-netdev", "user,id=n0,restrict=on"])
        .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("starting timeout qemu-system-x86_64")?;
    Ok(status.code())
}

/// Reads the results share: each command's verdict and output as text, and an error naming
/// every command that failed or did not finish.
fn report(
    steps: &[Step],
    run_dir: &Path,
    qemu_status: Option<i32>,
    timeout: u64,
) -> (String, Result<()>) {
    let read = |name: &str| fs::read(run_dir.join(name)).ok();
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    let vm_end = match qemu_status {
        Some(0) => "the VM stopped".to_owned(),
        Some(124 | 137) => format!("the VM was killed after the {timeout} s timeout"),
        Some(c) => format!("QEMU exited with status {c}"),
        None => "QEMU was killed by a signal".to_owned(),
    };
    if let Some(why) = read("setup-failed") {
        let why = text(why);
        return (
            String::new(),
            Err(anyhow!("guest set-up failed: {}", why.trim())),
        );
    }
    let Some(ready) = read("ready") else {
        let e = anyhow!("the guest never got rxe0 ready ({vm_end}); see its console above");
        return (String::new(), Err(e));
    };

    let mut summary = format!(
        "==> guest ready at {} s (guest clock)\n",
        text(ready).trim()
    );
    let mut failed = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        let output = read(&format!("{n}.out")).map(text);
        let status = read(&format!("{n}.status")).map(text);
        let verdict = match (&output, &status) {
            (_, Some(s)) => {
                let f: Vec<&str> = s.split_whitespace().collect();
                let rc = f.first().copied().unwrap_or("?");
                let secs = match (
                    f.get(1).and_then(|s| s.parse::<f64>().ok()),
                    f.get(2).and_then(|s| s.parse::<f64>().ok()),
                ) {
                    (Some(a), Some(b)) => format!(", {:.1} s", b - a),
                    _ => String::new(),
                };
                if rc == "0" {
                    Ok(format!("ok{secs}"))
                } else {
                    Err(format!("exit status {rc}{secs}"))
                }
            }
            (Some(_), None) => Err(format!("did not finish ({vm_end})")),
            (None, None) => Err(format!("never started ({vm_end})")),
        };
        let shown = match &verdict {
            Ok(v) => v.clone(),
            Err(v) => format!("FAILED: {v}"),
        };
        writeln!(summary, "==> [{n}/{}] {}: {shown}", steps.len(), step.label).unwrap();
        for line in output.iter().flat_map(|o| o.lines()) {
            writeln!(summary, "    {line}").unwrap();
        }
        if let Err(v) = verdict {
            failed.push(format!("[{n}] {}: {v}", step.label));
        }
    }
    let outcome = if !failed.is_empty() {
        Err(anyhow!(
            "{} of {} commands failed in the RDMA VM (output above):\n  {}",
            failed.len(),
            steps.len(),
            failed.join("\n  ")
        ))
    } else if read("done").is_none() {
        Err(anyhow!(
            "every command finished but the guest did not ({vm_end})"
        ))
    } else {
        Ok(())
    };
    (summary, outcome)
}
