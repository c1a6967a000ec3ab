//! Control-plane authentication and per-lease limits, with real manager and registry
//! processes: a lease with the shared secret works end to end; no secret, another secret and
//! truncated or garbage authentication messages are refused with a clear reason before any
//! package is taken, and the manager keeps serving; a manager without the secret cannot
//! register; oversized leases are refused with the limit's name.

use functions_example as fx;
use rfaas::auth::{Channel, MAX_PRE_AUTH_MESSAGE, TAG_LEN, write_frame};
use rfaas::managed::{LeaseSpec, lease_anywhere, lease_from};
use rfaas::registry::{RegistryClient, RegistryError};
use rfaas::wire::{AuthHello, AuthService, Fabric, LeaseReply, LeaseRequest};
use rfaas::{Error, Secret};
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::{example_package, executor_binary, scratch_dir};

const T: Duration = Duration::from_secs(20);

/// A running `rfaas-executor manager` or `registry` whose log (stderr) is kept; killed on
/// drop.
struct Service {
    child: Child,
    address: String,
    log: Arc<Mutex<String>>,
}

impl Service {
    fn start(kind: &str, config: &Path) -> Service {
        let mut child = Command::new(executor_binary())
            .arg(kind)
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("output");
        let address = match line.trim().strip_prefix("ready ") {
            Some(a) => a.to_owned(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                let log = log.lock().unwrap_or_else(|e| e.into_inner());
                panic!("{kind} did not start: {line:?}\n{log}");
            }
        };
        Service {
            child,
            address,
            log,
        }
    }

    /// Waits until the log has a line with every one of `words`.
    #[track_caller]
    fn logged(&self, words: &[&str]) {
        eventually(&format!("a log line with {words:?}"), || {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            log.lines().any(|l| words.iter().all(|w| l.contains(w)))
        });
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[track_caller]
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {T:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A secret file of `text` in `dir`, readable by its owner only (or with `mode`).
fn secret_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("secret file");
    path
}

const SECRET: &str = "the cluster's secret for the auth tests\n";
const OTHER: &str = "somebody else's secret, just as long\n";

fn secret(text: &str) -> Secret {
    Secret::from_bytes(text.trim_end().as_bytes()).expect("secret")
}

/// A two-core, 1 GiB manager's configuration under `dir` ([`tests::manager_config`]).
fn manager_config(dir: &Path, extra: &str) -> PathBuf {
    tests::manager_config(dir, 2, 1024, extra)
}

fn registry_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("registry.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nheartbeat_timeout_ms = 2000\nstate_file = \"{}\"\n{extra}",
            dir.join("nodes.json").display()
        ),
    )
    .expect("config");
    path
}

fn spec(fabric: Fabric, secret: Option<Secret>) -> LeaseSpec {
    let mut s = LeaseSpec::default();
    s.fabric = fabric;
    s.hot_timeout_us = 1000;
    s.slot_size = Some(65536);
    s.secret = secret;
    s
}

/// The lease is refused with a reason that says `words`.
#[track_caller]
fn check_refused(r: Result<rfaas::managed::ManagedLease, Error>, words: &str) {
    match r {
        Err(Error::Refused(why)) => assert!(why.contains(words), "expected `{words}`: {why}"),
        other => panic!("expected a refusal saying `{words}`, got {other:?}"),
    }
}

/// The lease answers invocations with the right results.
#[track_caller]
fn check_invokes(lease: &rfaas::Lease) {
    for v in [0u64, 7, 1 << 40] {
        assert_eq!(
            lease
                .invoke(fx::fault::call(0, v))
                .timeout(T)
                .wait()
                .expect("invocation"),
            v
        );
    }
}

fn cached_packages(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("cache")).map_or(0, |d| d.count())
}

fn connect(address: &str) -> TcpStream {
    let s = TcpStream::connect(address).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    s
}

/// Reads the manager's plain refusal, then the end of the connection; returns the reason.
#[track_caller]
fn plain_refusal(s: &mut TcpStream) -> String {
    let why = match rfaas::transport::recv_json::<LeaseReply>(s) {
        Ok(LeaseReply::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("the manager closes");
    assert!(rest.is_empty(), "nothing after a refusal: {rest:?}");
    why
}

/// Sends a hello for the lease service with a fixed client nonce; returns the challenge.
fn hello(s: &mut TcpStream) -> rfaas::wire::AuthChallenge {
    let hello = AuthHello {
        rfaas_auth: rfaas::wire::AUTH_PROTOCOL,
        service: AuthService::Lease,
        nonce: "5a".repeat(32),
    };
    rfaas::transport::send_json(s, &hello).expect("hello");
    rfaas::transport::recv_json(s).expect("a challenge")
}

/// A request for the example package that announces its bytes will follow.
fn package_request() -> LeaseRequest {
    let pkg = example_package();
    let sha = std::fs::read_to_string(pkg.join("libfunctions_example.so.sha256")).expect("sha");
    LeaseRequest {
        cores: 1,
        memory_mib: 256,
        hot_timeout_us: 0,
        fabric: Fabric::Shm,
        package_sha256: sha.split_whitespace().next().expect("hash").to_owned(),
        package_len: Some(
            std::fs::metadata(pkg.join("libfunctions_example.so"))
                .expect("library")
                .len(),
        ),
        slots: None,
        slot_size: None,
        heartbeat_ms: None,
    }
}

/// [`package_request`] as the JSON bytes a client would seal.
fn package_request_json() -> Vec<u8> {
    let r = package_request();
    format!(
        r#"{{"cores":1,"memory_mib":256,"hot_timeout_us":0,"fabric":"shm","package_sha256":"{}","package_len":{},"slots":null,"slot_size":null}}"#,
        r.package_sha256,
        r.package_len.expect("a length")
    )
    .into_bytes()
}

#[test]
fn only_clients_with_the_secret_lease_or_ship_code() {
    let dir = scratch_dir("auth-manager");
    let file = secret_file(&dir, "secret", SECRET, 0o600);
    let mgr = Service::start(
        "manager",
        &manager_config(&dir, &format!("secret_file = \"{}\"\n", file.display())),
    );
    let pkg = example_package();
    mgr.logged(&["control plane authenticated"]);

    // No secret: refused, and told what to do.
    check_refused(
        lease_from(&mgr.address, pkg, &spec(Fabric::Shm, None)),
        "requires authentication",
    );
    // Another secret: the client stops at the manager's proof, its request never sent.
    check_refused(
        lease_from(&mgr.address, pkg, &spec(Fabric::Shm, Some(secret(OTHER)))),
        "does not prove that it holds our secret",
    );
    // ... and the manager's log shows it too, not only the client's error.
    mgr.logged(&[
        "refused a control connection",
        "hung up during authentication",
    ]);
    // A plain request, by hand, announcing a package: refused before any byte is taken.
    let mut s = connect(&mgr.address);
    rfaas::transport::send_json(&mut s, &package_request()).expect("request");
    assert!(plain_refusal(&mut s).contains("requires authentication"));
    // Garbage where the hello goes, and malformed hellos.
    for (first, words) in [
        (&b"\x00\xffgarbage"[..], "requires authentication"),
        (
            br#"{"rfaas_auth":1,"service":"lease","nonce":"zz"}"#,
            "nonce must be 64 hex digits",
        ),
        (
            br#"{"rfaas_auth":9,"service":"lease","nonce":"00"}"#,
            "authentication protocol 9",
        ),
        (
            br#"{"rfaas_auth":1,"service":"registry","nonce":"00"}"#,
            "this is a manager",
        ),
    ] {
        let mut s = connect(&mgr.address);
        write_frame(&mut s, first).expect("first message");
        let why = plain_refusal(&mut s);
        assert!(
            why.contains(words),
            "{}: {why}",
            String::from_utf8_lossy(first)
        );
    }
    // An oversize first message: refused from its length alone.
    let mut s = connect(&mgr.address);
    s.write_all(&(MAX_PRE_AUTH_MESSAGE as u32 + 1).to_le_bytes())
        .expect("length");
    assert!(plain_refusal(&mut s).contains("at most 65536"));
    // A request after the hello whose MAC is forged, truncated or missing.
    let request = package_request_json();
    let forged = [vec![0u8; TAG_LEN], request.clone()].concat();
    for frame in [&forged[..], &request[..], &request[..TAG_LEN - 1], b""] {
        let mut s = connect(&mgr.address);
        let _ = hello(&mut s);
        write_frame(&mut s, frame).expect("request");
        let why = plain_refusal(&mut s);
        assert!(why.contains("request's MAC does not match"), "{why}");
        // Sending the package anyway changes nothing (the connection is closed).
        let _ = s.write_all(&[0u8; 4096]);
    }
    // A frame cut short.
    let mut s = connect(&mgr.address);
    let _ = hello(&mut s);
    s.write_all(&100u32.to_le_bytes()).expect("length");
    s.write_all(&[1u8; 50]).expect("half a frame");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert!(plain_refusal(&mut s).contains("connection closed"));
    mgr.logged(&[
        "refused a control connection",
        "request's MAC does not match",
    ]);
    assert_eq!(
        cached_packages(&dir),
        0,
        "no refused client shipped a package"
    );

    // Authenticated, a malformed request is refused in a sealed answer.
    let key = secret(SECRET);
    let mut s = connect(&mgr.address);
    let mut ch = Channel::connect(&mut s, &key, AuthService::Lease, |_| None).expect("handshake");
    ch.send_json(&mut s, &"a string, not a request")
        .expect("request");
    match ch.recv_json::<LeaseReply>(&mut s).expect("a sealed answer") {
        LeaseReply::Refused(why) => assert!(why.contains("bad lease request"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // The right secret: the package ships, the lease works, over both fabrics.
    let a = lease_from(&mgr.address, pkg, &spec(Fabric::Shm, Some(key.clone()))).expect("lease");
    check_invokes(&a);
    assert_eq!(
        cached_packages(&dir),
        1,
        "the package was shipped once authenticated"
    );
    let b = lease_from(&mgr.address, pkg, &spec(Fabric::Tcp, Some(key))).expect("tcp lease");
    check_invokes(&b);
    drop((a, b));
    // Both leases reclaimed: their ledger entries are written, then their cores return (the
    // client below waits for a free core).
    eventually("both leases reclaimed", || {
        executor::manager::read_ledger(&dir.join("ledger.jsonl")).is_ok_and(|e| e.len() == 2)
    });
    // From the environment: `$RFAAS_SECRET_FILE`, in a client process of its own.
    let mut client = Command::new(env!("CARGO_BIN_EXE_rfaas-test-client"))
        .arg(&mgr.address)
        .arg("managed")
        .arg(pkg)
        .env("RFAAS_SECRET_FILE", &file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("client");
    let mut line = String::new();
    std::io::BufReader::new(client.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("client output");
    let _ = client.kill();
    let _ = client.wait();
    assert_eq!(line.trim(), "leased 5");
}

#[test]
fn a_secret_and_no_secret_do_not_mix() {
    let dir = scratch_dir("auth-open-manager");
    let mgr = Service::start("manager", &manager_config(&dir, ""));
    mgr.logged(&["WARN", "control plane is unauthenticated"]);
    // A client with a secret does not lease from an open manager, and says why.
    check_refused(
        lease_from(
            &mgr.address,
            example_package(),
            &spec(Fabric::Shm, Some(secret(SECRET))),
        ),
        "no secret_file configured",
    );
    assert_eq!(cached_packages(&dir), 0);
    let lease = lease_from(&mgr.address, example_package(), &spec(Fabric::Shm, None))
        .expect("the open manager keeps serving");
    check_invokes(&lease);
}

/// The program refuses to start with `config`, saying `words` on stderr.
#[track_caller]
fn check_start_fails(kind: &str, config: &Path, words: &str) {
    let err = tests::refused_start(
        Command::new(executor_binary())
            .arg(kind)
            .arg("--config")
            .arg(config),
    );
    assert!(
        err.contains(words),
        "expected {kind} to refuse to start, saying `{words}`: {err}"
    );
}

#[test]
fn bad_secret_files_are_refused_at_start() {
    let dir = scratch_dir("auth-secret-files");
    let cases = [
        (secret_file(&dir, "open", SECRET, 0o644), "chmod 600"),
        (secret_file(&dir, "group", SECRET, 0o640), "mode 0640"),
        (secret_file(&dir, "empty", "", 0o600), "empty"),
        (
            secret_file(&dir, "short", "too short\n", 0o600),
            "too short",
        ),
        (dir.join("missing"), "cannot open"),
    ];
    for (file, words) in &cases {
        let extra = format!("secret_file = \"{}\"\n", file.display());
        check_start_fails("manager", &manager_config(&dir, &extra), words);
        check_start_fails("registry", &registry_config(&dir, &extra), words);
    }
    // A client's secret file from the environment: checked the same way, before connecting.
    let out = Command::new(env!("CARGO_BIN_EXE_rfaas-test-client"))
        .args(["127.0.0.1:1", "managed"])
        .arg(example_package())
        .env("RFAAS_SECRET_FILE", &cases[0].0)
        .output()
        .expect("client");
    let err = String::from_utf8_lossy(&out.stderr);
    // Its own file, not a refusal by anyone (nothing was sent).
    assert!(
        !out.status.success()
            && err.contains("this client's secret: secret file")
            && err.contains("chmod 600")
            && !err.contains("refused"),
        "{err}"
    );
    // Limits no lease could meet.
    check_start_fails(
        "manager",
        &manager_config(&dir, "max_slots_per_worker = 0\n"),
        "max_slots_per_worker must be 1 to 256",
    );
}

#[test]
fn only_managers_with_the_secret_register() {
    let reg_dir = scratch_dir("auth-registry");
    let file = secret_file(&reg_dir, "secret", SECRET, 0o600);
    let other = secret_file(&reg_dir, "other", OTHER, 0o600);
    let reg = Service::start(
        "registry",
        &registry_config(&reg_dir, &format!("secret_file = \"{}\"\n", file.display())),
    );
    let manager = |name: &str, secret: Option<&Path>| {
        let dir = scratch_dir(&format!("auth-registry-{name}"));
        let mut extra = format!("registry = \"{}\"\nheartbeat_ms = 50\n", reg.address);
        if let Some(f) = secret {
            extra.push_str(&format!("secret_file = \"{}\"\n", f.display()));
        }
        let cfg = manager_config(&dir, &extra);
        let text = std::fs::read_to_string(&cfg)
            .expect("config")
            .replace("node_id = \"test-node\"", &format!("node_id = \"{name}\""));
        std::fs::write(&cfg, text).expect("config");
        Service::start("manager", &cfg)
    };
    let good = manager("good", Some(&file));
    let open = manager("open", None);
    let wrong = manager("wrong", Some(&other));
    let registry = RegistryClient::new(reg.address.clone()).with_secret(secret(SECRET));
    eventually("the manager with the secret registers", || {
        registry
            .list()
            .is_ok_and(|n| n.iter().any(|n| n.info.id == "good"))
    });
    // The others keep trying and keep being refused, each with its reason.
    open.logged(&["cannot register", "secret_file", "requires authentication"]);
    wrong.logged(&["cannot register", "does not prove that it holds our secret"]);
    reg.logged(&["refused a control connection", "requires authentication"]);
    let nodes = registry.list().expect("list");
    assert_eq!(
        nodes.iter().map(|n| n.info.id.as_str()).collect::<Vec<_>>(),
        ["good"]
    );
    // A registration by hand, without the secret.
    let mut s = connect(&reg.address);
    let node = rfaas::wire::NodeInfo {
        id: "forged".into(),
        address: open.address.clone(),
        cores: 64,
        memory_mib: 1 << 20,
        rdma: false,
    };
    rfaas::transport::send_json(&mut s, &rfaas::wire::RegistryRequest::Register(node))
        .expect("request");
    match rfaas::transport::recv_json::<rfaas::wire::RegistryResponse>(&mut s) {
        Ok(rfaas::wire::RegistryResponse::Error(why)) => {
            assert!(why.contains("requires authentication"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Clients without the secret cannot even list.
    match RegistryClient::new(reg.address.clone()).list() {
        Err(RegistryError::Refused(why)) => assert!(why.contains("requires authentication")),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match lease_anywhere(&reg.address, example_package(), &spec(Fabric::Shm, None)) {
        Err(Error::Registry {
            error: RegistryError::Refused(why),
            ..
        }) => assert!(why.contains("requires authentication"), "{why}"),
        other => panic!("expected the registry's refusal, got {other:?}"),
    }
    // With the secret, the registry's only node serves.
    let lease = lease_anywhere(
        &reg.address,
        example_package(),
        &spec(Fabric::Shm, Some(secret(SECRET))),
    )
    .expect("lease through the registry");
    check_invokes(&lease);
    let nodes = registry.list().expect("list");
    assert_eq!(
        nodes.iter().map(|n| n.info.id.as_str()).collect::<Vec<_>>(),
        ["good"],
        "still only the manager with the secret"
    );
    drop((good, open, wrong));
}

#[test]
fn limits_refuse_oversized_leases_with_their_reason() {
    let dir = scratch_dir("auth-limits");
    let cfg = manager_config(
        &dir,
        "max_cores_per_lease = 2\nmax_slots_per_worker = 4\nmax_slot_size = 65536\nmax_outstanding_per_lease = 6\n",
    );
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, text.replace("\ncores = 2\n", "\ncores = 3\n")).expect("config");
    let mgr = Service::start("manager", &cfg);
    let pkg = example_package();
    let ask = |cores: u32, slots: Option<u32>, slot_size: Option<u32>| {
        let mut s = spec(Fabric::Shm, None);
        s.cores = cores;
        s.slots = slots;
        s.slot_size = slot_size;
        lease_from(&mgr.address, pkg, &s)
    };
    check_refused(ask(3, Some(1), None), "max_cores_per_lease");
    check_refused(ask(1, Some(5), None), "max_slots_per_worker");
    check_refused(ask(1, Some(1), Some(131_072)), "max_slot_size");
    check_refused(ask(2, Some(4), None), "8 invocations in flight");
    check_refused(ask(2, Some(4), None), "max_outstanding_per_lease");
    check_refused(ask(1, Some(1), Some(1000)), "a multiple of 64");
    // Refused before the package was asked for.
    assert_eq!(cached_packages(&dir), 0);
    // At the limits: granted, with what was asked.
    let lease = ask(2, Some(3), Some(65536)).expect("a lease at the limits");
    assert_eq!((lease.workers(), lease.slot_size()), (2, 65536));
    check_invokes(&lease);
    // Left out, the slot size defaults to what the node allows.
    let small = ask(1, None, None).expect("a lease with the defaults");
    assert_eq!(small.slot_size(), 65536);
    check_invokes(&small);
}

/// Sends `bytes` one every 100 ms until the peer ends the connection; returns how many went
/// out and what the peer answered.
fn drip_until_cut(address: &str, bytes: &[u8]) -> (usize, Vec<u8>) {
    let mut s = connect(address);
    let mut sent = 0;
    for b in bytes {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    (sent, answer)
}

/// A client that drips its request cannot hold a manager's or a registry's connection past
/// `request_timeout_ms` (a timeout per read would let it: each byte restarts it); clients
/// that connect and send nothing cannot take more than 64 connections' threads at once (the
/// others are closed unread); and the manager serves a real lease afterwards.
#[test]
fn slow_or_crowding_clients_cannot_hold_the_control_plane() {
    let dir = scratch_dir("auth-slow");
    let manager = Service::start(
        "manager",
        &manager_config(&dir, "request_timeout_ms = 3000\n"),
    );
    let registry = Service::start(
        "registry",
        &registry_config(&dir, "request_timeout_ms = 3000\n"),
    );
    // A whole, valid request frame, dripped: 30 s at this pace.
    let body = package_request_json();
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    assert!(frame.len() > 100, "{} bytes", frame.len());
    let (sent, answer) = drip_until_cut(&manager.address, &frame);
    assert!(
        sent < frame.len(),
        "the manager read a dripped request to its end"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("did not answer in time"), "{answer}");
    // A registry request padded with white space to 200 bytes: 20 s at this pace.
    let mut listing = br#"{"op":"list"}"#.to_vec();
    listing.resize(200, b' ');
    let mut frame = (listing.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&listing);
    let (sent, _) = drip_until_cut(&registry.address, &frame);
    assert!(
        sent < frame.len(),
        "the registry read a dripped request to its end"
    );

    // 100 idle connections: 64 wait for their deadline (and are refused, saying so), the
    // rest are closed at once, unread.
    let idle: Vec<TcpStream> = (0..100).map(|_| connect(&manager.address)).collect();
    let (mut at_once, mut late) = (0, 0);
    for mut s in idle {
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("the manager closes");
        if got.is_empty() {
            at_once += 1;
        } else {
            assert!(
                String::from_utf8_lossy(&got).contains("did not answer in time"),
                "{got:?}"
            );
            late += 1;
        }
    }
    assert_eq!(late, 64, "connections kept waiting for their request");
    assert_eq!(at_once, 36, "connections closed unread");
    manager.logged(&["too many are still sending their request"]);
    let lease = lease_from(
        &manager.address,
        example_package(),
        &spec(Fabric::Shm, None),
    )
    .expect("lease");
    check_invokes(&lease);
}

/// A manager asked to stop tells its authenticated leases in sealed notices (each in step
/// with its connection's message count: a lease whose package was shipped, and one whose
/// package was cached), their heartbeats go on after it, and it stops as soon as its last
/// lease ends, without waiting out its grace period.
#[test]
fn a_stopping_manager_tells_authenticated_leases_and_stops_once_they_end() {
    let dir = scratch_dir("auth-stop");
    let file = secret_file(&dir, "secret", SECRET, 0o600);
    let mut mgr = Service::start(
        "manager",
        &manager_config(
            &dir,
            &format!(
                "secret_file = \"{}\"\nshutdown_grace_ms = 600000\n",
                file.display()
            ),
        ),
    );
    let key = secret(SECRET);
    let shipped = lease_from(
        &mgr.address,
        example_package(),
        &spec(Fabric::Tcp, Some(key.clone())),
    )
    .expect("a lease that ships the package");
    let cached = lease_from(
        &mgr.address,
        example_package(),
        &spec(Fabric::Shm, Some(key)),
    )
    .expect("a lease of the cached package");
    assert_eq!(cached_packages(&dir), 1);
    tests::signal(mgr.child.id(), libc::SIGTERM);
    for lease in [&shipped, &cached] {
        check_invokes(lease);
        eventually("the sealed notice", || lease.notice().is_some());
        match lease.notice() {
            Some(rfaas::wire::LeaseNotice::Stopping { within_ms, .. }) => {
                assert!(within_ms > 500_000, "{within_ms} ms left of a 600 s grace")
            }
            other => panic!("expected a notice of the stop, got {other:?}"),
        }
    }
    // Longer than three heartbeat periods (1.5 s): had the heartbeats stopped with the notice,
    // the manager would end the leases as silent (and the ledger would say so).
    std::thread::sleep(Duration::from_secs(2));
    check_invokes(&shipped);
    check_invokes(&cached);
    drop((shipped, cached));
    let status = tests::exited(&mut mgr.child, "the manager");
    assert!(status.success(), "the manager exited with {status}");
    mgr.logged(&["manager stopped"]);
    let entries = executor::manager::read_ledger(&dir.join("ledger.jsonl")).expect("ledger");
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(
        entries.iter().all(|e| e.ended_by_manager.is_none()),
        "{entries:?}"
    );
}
