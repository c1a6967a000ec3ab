//! End to end over RDMA: `rfaas-executor run --listen … --fabric verbs` and
//! `Lease::connect_verbs`, against a real device (Soft-RoCE in `cargo xtask rdma-vm --suite`).
//! Without a device each test says why and returns.

use functions_example as fx;
use rfaas::transport::verbs::{self, VerbsConfig};
use rfaas::{CallError, Error, Lease, LeaseOptions};
use std::time::Duration;
use tests::{Executor, Rng};

const T: Duration = Duration::from_secs(60);

fn lease(exec: &Executor) -> Lease {
    let config = VerbsConfig::from_env().expect("RFAAS_VERBS_* settings");
    Lease::connect_verbs(&exec.address, &LeaseOptions::default(), &config).expect("verbs lease")
}

#[test]
fn every_function_over_rdma() {
    if !verbs::available_or_skip("every_function_over_rdma") {
        return;
    }
    let exec = Executor::start_tcp(
        "verbs-every",
        "127.0.0.1:0",
        &[
            "--fabric",
            "verbs",
            "--cores",
            "2",
            "--hot-timeout-us",
            "1000",
            "--slot-size",
            "262144",
        ],
    );
    let lease = lease(&exec);
    assert_eq!(lease.workers(), 2);
    fx::noop::invoke(&lease).timeout(T).wait().expect("noop");
    // Below and above the inline limit.
    for len in [5usize, 100, 129, 50_000] {
        let input: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut out = vec![0u8; len];
        assert_eq!(
            fx::echo::invoke(&lease, &input, &mut out)
                .timeout(T)
                .wait()
                .expect("echo"),
            len as u64
        );
        assert_eq!(out, input, "{len} bytes");
    }
    let mut rng = Rng::new(9);
    let n = 24usize;
    let a: Vec<f64> = (0..n * n).map(|_| rng.range(-1.0, 1.0)).collect();
    let b: Vec<f64> = (0..n * n).map(|_| rng.range(-1.0, 1.0)).collect();
    let (mut remote, mut local) = (vec![0.0; n * n], vec![0.0; n * n]);
    fx::matmul::invoke(&lease, n as u32, &a, &b, &mut remote)
        .timeout(T)
        .wait()
        .expect("matmul");
    fx::matmul(n as u32, &a, &b, &mut local).expect("local");
    assert_eq!(remote, local);
    let x: Vec<f64> = (0..1000).map(|_| rng.range(-5.0, 5.0)).collect();
    let y: Vec<f64> = (0..1000).map(|_| rng.range(-5.0, 5.0)).collect();
    let (mut out, mut out_local) = (vec![0.0; 1000], vec![0.0; 1000]);
    fx::axpy::invoke(&lease, 2.5, &x, &y, &mut out)
        .timeout(T)
        .wait()
        .expect("axpy");
    fx::axpy(2.5, &x, &y, &mut out_local).expect("local axpy");
    assert_eq!(out, out_local);
    let (mut s, mut c) = (vec![0.0; 1000], vec![0.0; 1000]);
    let (mut sl, mut cl) = (vec![0.0; 1000], vec![0.0; 1000]);
    fx::sincos::invoke(&lease, &x, &mut s, &mut c)
        .timeout(T)
        .wait()
        .expect("sincos");
    fx::sincos(&x, &mut sl, &mut cl).expect("local sincos");
    assert_eq!((s, c), (sl, cl));
    let options: Vec<fx::OptionData> = (0..64)
        .map(|i| fx::OptionData {
            spot: rng.range(50.0, 150.0) as f32,
            strike: rng.range(50.0, 150.0) as f32,
            rate: 0.03,
            volatility: rng.range(0.1, 0.5) as f32,
            time: rng.range(0.1, 2.0) as f32,
            kind: i % 2,
        })
        .collect();
    let (mut prices, mut local_prices) = (vec![0.0f32; 64], vec![0.0f32; 64]);
    fx::black_scholes::invoke(&lease, &options, &mut prices)
        .timeout(T)
        .wait()
        .expect("black_scholes");
    fx::black_scholes(&options, &mut local_prices).expect("local black_scholes");
    assert_eq!(prices, local_prices);
    assert_eq!(
        fx::parse_decimal::invoke(&lease, b"90210")
            .timeout(T)
            .wait()
            .expect("parse"),
        90210
    );
    match fx::fault::invoke(&lease, 1, 3).timeout(T).wait() {
        Err(Error::Call(CallError::Panic(m))) => assert!(m.contains("value 3"), "{m}"),
        other => panic!("expected a panic, got {other:?}"),
    }
    // Many in flight from several threads (more than the slots), each completed once.
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let lease = &lease;
            s.spawn(move || {
                let pending: Vec<_> = (0..8u64)
                    .map(|i| {
                        (
                            t * 1000 + i,
                            fx::fault::invoke(lease, 0, t * 1000 + i).timeout(T),
                        )
                    })
                    .collect();
                for (v, inv) in pending {
                    assert_eq!(inv.wait().expect("invocation"), v);
                }
                for i in 8..150u64 {
                    let v = t * 1000 + i;
                    assert_eq!(
                        fx::fault::invoke(lease, 0, v)
                            .timeout(T)
                            .wait()
                            .expect("invocation"),
                        v
                    );
                }
            });
        }
    });
}

/// Outputs into `rfaas::Buffer`s are RDMA-written into them by the worker (see the TCP test
/// of the same checks).
#[test]
fn buffer_outputs_over_rdma_arrive_in_place() {
    if !verbs::available_or_skip("buffer_outputs_over_rdma_arrive_in_place") {
        return;
    }
    let mut exec = Executor::start_tcp(
        "verbs-placed",
        "127.0.0.1:0",
        &[
            "--fabric",
            "verbs",
            "--cores",
            "2",
            "--hot-timeout-us",
            "1000",
            "--slot-size",
            "262144",
        ],
    );
    crate::tcp::buffer_outputs_arrive_in_place(&lease(&exec));
    assert!(exec.is_running());
}

#[test]
fn warm_invocations_over_rdma() {
    if !verbs::available_or_skip("warm_invocations_over_rdma") {
        return;
    }
    // Always warm: the worker sleeps on its completion channel between invocations.
    let exec = Executor::start_tcp(
        "verbs-warm",
        "127.0.0.1:0",
        &["--fabric", "verbs", "--hot-timeout-us", "0"],
    );
    let lease = lease(&exec);
    for v in 0..20u64 {
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            fx::fault::invoke(&lease, 0, v)
                .timeout(T)
                .wait()
                .expect("warm invocation"),
            v
        );
    }
}

#[test]
fn a_killed_executor_fails_pending_invocations() {
    if !verbs::available_or_skip("a_killed_executor_fails_pending_invocations") {
        return;
    }
    let mut exec = Executor::start_tcp("verbs-kill", "127.0.0.1:0", &["--fabric", "verbs"]);
    let lease = lease(&exec);
    assert_eq!(
        fx::fault::invoke(&lease, 0, 1)
            .timeout(T)
            .wait()
            .expect("first"),
        1
    );
    // A slow invocation in flight when the executor dies: an error, not a hang.
    let slow = fx::fault::invoke(&lease, 2, 30_000).timeout(T);
    std::thread::sleep(Duration::from_millis(300));
    exec.kill();
    match slow.wait() {
        Err(Error::ExecutorGone) => {}
        other => panic!("expected the executor gone, got {other:?}"),
    }
    match fx::fault::invoke(&lease, 0, 2).timeout(T).wait() {
        Err(Error::ExecutorGone) => {}
        other => panic!("expected the executor gone, got {other:?}"),
    }
}

#[test]
fn a_client_that_leaves_frees_the_executor_for_the_next() {
    if !verbs::available_or_skip("a_client_that_leaves_frees_the_executor_for_the_next") {
        return;
    }
    let exec = Executor::start_tcp("verbs-next", "127.0.0.1:0", &["--fabric", "verbs"]);
    for round in 0..3u64 {
        let lease = lease(&exec);
        // Leave with an invocation in flight.
        let _pending = fx::fault::invoke(&lease, 2, 200);
        assert_eq!(
            fx::fault::invoke(&lease, 0, round)
                .timeout(T)
                .wait()
                .expect("invocation"),
            round
        );
    }
}

#[test]
fn a_manager_grants_rdma_leases() {
    if verbs::available_or_skip("a_manager_grants_rdma_leases") {
        manager_grants_an_rdma_lease("verbs-manager", "", 65536);
    }
}

/// An executor under a user of its own (`executor_uids`) registers its regions: not root, it
/// needs the locked-memory limit the manager gives it (16 MiB of slots here, twice the
/// kernel's default limit).
#[test]
fn a_manager_grants_rdma_leases_under_users_of_their_own() {
    if !verbs::available_or_skip("a_manager_grants_rdma_leases_under_users_of_their_own") {
        return;
    }
    let Some(_users) = tests::spare_users(64_390, 64_391) else {
        return;
    };
    // The executor's locked memory comes from the manager's limit unless it may raise it.
    use executor::users::{CAP_SYS_RESOURCE, has_capability, memlock_ceiling};
    if !has_capability(CAP_SYS_RESOURCE) && memlock_ceiling().is_some_and(|c| c < 64 << 20) {
        eprintln!(
            "skipped: locked memory limited to {:?} bytes without CAP_SYS_RESOURCE",
            memlock_ceiling()
        );
        return;
    }
    manager_grants_an_rdma_lease(
        "verbs-manager-users",
        "executor_uids = \"64390-64391\"\n",
        1 << 20,
    );
}

/// Starts a manager (with `extra` configuration), leases RDMA with slots of `slot_size` bytes,
/// echoes once, and finds the lease in the ledger.
fn manager_grants_an_rdma_lease(name: &str, extra: &str, slot_size: u32) {
    use rfaas::managed::{LeaseSpec, lease_from};
    use rfaas::wire::Fabric;
    use std::io::BufRead;
    let dir = tests::scratch_dir(name);
    let config = dir.join("manager.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nnode_id = \"rdma-node\"\ncores = 2\nmemory_mib = 1024\ncache_dir = \"{}\"\nledger = \"{}\"\nsocket_dir = \"{}\"\n{extra}",
            dir.join("cache").display(),
            dir.join("ledger.jsonl").display(),
            dir.display()
        ),
    )
    .expect("config");
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = std::process::Command::new(tests::executor_binary())
        .arg("manager")
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("manager");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("manager output");
    let _manager = Killed(child);
    let address = line
        .trim()
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("manager did not start: {line:?}"))
        .to_owned();
    let mut spec = LeaseSpec::default();
    spec.fabric = Fabric::Verbs;
    spec.hot_timeout_us = 1000;
    spec.slot_size = Some(slot_size);
    let lease = lease_from(&address, tests::example_package(), &spec).expect("RDMA lease");
    let input = b"over rdma, through the manager";
    let mut out = vec![0u8; input.len()];
    assert_eq!(
        fx::echo::invoke(&lease, input, &mut out)
            .timeout(T)
            .wait()
            .expect("echo"),
        input.len() as u64
    );
    assert_eq!(&out, input);
    let id = lease.id();
    drop(lease);
    let ledger = dir.join("ledger.jsonl");
    let deadline = std::time::Instant::now() + T;
    loop {
        let entries = executor::manager::read_ledger(&ledger).unwrap_or_default();
        if let Some(e) = entries.iter().find(|e| e.lease_id == id) {
            assert_eq!((e.fabric, e.invocations), (Fabric::Verbs, 1), "{e:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no ledger entry");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// The verbs fabric itself, as the executor and the client use it, against peers that misbehave
// (raw verbs objects that post what rfaas never does).

mod fabric {
    use rfaas::transport::verbs;
    use rfaas::transport::verbs::ibv::{
        Cq, MemoryRegion, ProtectionDomain, QpAddress, QueuePair, RdmaWrite, Wc,
    };
    use rfaas::transport::verbs::{VerbsConfig, VerbsEndpoint, VerbsQueue};
    use rfaas::transport::{Completion, Endpoint, Region, TransportError};
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    /// Bound of every wait for something that takes milliseconds (the VM is ~100x slower than
    /// hardware).
    const T: Duration = Duration::from_secs(30);

    fn config() -> VerbsConfig {
        VerbsConfig::from_env().expect("RFAAS_VERBS_* settings")
    }

    fn region(key: u32, len: usize) -> Arc<Region> {
        Arc::new(Region::new(key, len).expect("region"))
    }

    fn read(region: &Region, off: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        region.read(off, &mut v).expect("read");
        v
    }

    /// Accepts one connection on `listener` and connects `regions` over it as an endpoint of
    /// `queue` (the executor's side), while `client` connects to the listener's address.
    fn serve<T: Send>(
        listener: &TcpListener,
        queue: &Arc<VerbsQueue>,
        regions: Vec<Arc<Region>>,
        client: impl FnOnce(SocketAddr) -> T + Send,
    ) -> (VerbsEndpoint, TcpStream, T) {
        let addr = listener.local_addr().expect("address");
        std::thread::scope(|s| {
            let served = s.spawn(|| {
                let (stream, _) = listener.accept().expect("accept");
                let ep = VerbsEndpoint::connect(&stream, regions, queue).expect("serve");
                (ep, stream)
            });
            let client = client(addr);
            let (ep, stream) = served.join().expect("serving side");
            (ep, stream, client)
        })
    }

    /// A client as rfaas makes one: its own device context and queue.
    struct Client {
        ep: VerbsEndpoint,
        cq: Arc<VerbsQueue>,
        regions: Vec<Arc<Region>>,
        _control: TcpStream,
    }

    fn client(addr: SocketAddr, config: &VerbsConfig, regions: Vec<Arc<Region>>) -> Client {
        let control = TcpStream::connect(addr).expect("connect");
        let ctx = config.open().expect("device");
        let cq = VerbsQueue::new(&ctx, config, 1).expect("queue");
        let ep = VerbsEndpoint::connect(&control, regions.clone(), &cq).expect("client connect");
        Client {
            ep,
            cq,
            regions,
            _control: control,
        }
    }

    /// A client that speaks the handshake itself with raw verbs objects, so it can post what
    /// rfaas never does: writes with any address and rkey, `SEND`s.
    struct RawPeer {
        qp: QueuePair,
        cq: Arc<Cq>,
        mr: MemoryRegion,
        region: Arc<Region>,
        /// The regions the other side offered: `(key, addr, len, rkey)`.
        offered: Vec<(u32, u64, u64, u32)>,
        _control: TcpStream,
    }

    /// Every unsigned number in `json`, in order (the hello's field names hold no digits, and
    /// serde writes fields in declaration order).
    fn numbers(json: &str) -> Vec<u64> {
        json.split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("number"))
            .collect()
    }

    impl RawPeer {
        fn connect(addr: SocketAddr, send_depth: u32) -> RawPeer {
            let ctx = config().open().expect("device");
            let pd = ProtectionDomain::new(&ctx).expect("protection domain");
            let cq = Arc::new(Cq::new(&pd, 4096, 16).expect("completion queue"));
            let qp = QueuePair::new(&cq, send_depth, 0).expect("queue pair");
            let region = region(9, 4096);
            // SAFETY: the region stays mapped while `RawPeer` holds it, and `mr` is dropped
            // first (field order).
            let mr = unsafe { MemoryRegion::register(&pd, region.as_ptr(), region.len(), true) }
                .expect("register");
            let mut control = TcpStream::connect(addr).expect("connect");
            let me = qp.address();
            let hello = format!(
                r#"{{"qp":{{"lid":{},"qpn":{},"psn":{},"gid":{:?},"mtu":{}}},"regions":[{{"key":9,"addr":{},"len":4096,"rkey":{}}}]}}"#,
                me.lid,
                me.qpn,
                me.psn,
                me.gid,
                me.mtu,
                region.as_ptr() as u64,
                mr.rkey()
            );
            control
                .write_all(&(hello.len() as u32).to_le_bytes())
                .expect("send hello");
            control.write_all(hello.as_bytes()).expect("send hello");
            let mut len = [0u8; 4];
            control.read_exact(&mut len).expect("peer hello");
            let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
            control.read_exact(&mut body).expect("peer hello");
            let n = numbers(std::str::from_utf8(&body).expect("JSON"));
            // lid, qpn, psn, 16 GID bytes, mtu; then key, addr, len, rkey per region.
            assert!(
                n.len() >= 20 && (n.len() - 20).is_multiple_of(4),
                "hello {n:?}"
            );
            let mut gid = [0u8; 16];
            for (g, &v) in gid.iter_mut().zip(&n[3..19]) {
                *g = v as u8;
            }
            let peer = QpAddress {
                lid: n[0] as u16,
                qpn: n[1] as u32,
                psn: n[2] as u32,
                gid,
                mtu: n[19] as u32,
            };
            let offered = n[20..]
                .chunks(4)
                .map(|r| (r[0] as u32, r[1], r[2], r[3] as u32))
                .collect();
            qp.connect(&peer).expect("connect the queue pair");
            control.write_all(&[1]).expect("ready");
            let mut ready = [0u8; 1];
            control.read_exact(&mut ready).expect("peer ready");
            RawPeer {
                qp,
                cq,
                mr,
                region,
                offered,
                _control: control,
            }
        }

        /// Posts a signalled write of `len` bytes of our region to `addr` under `rkey`,
        /// announced with `imm` if given.
        fn write(&self, addr: u64, rkey: u32, len: u32, imm: Option<u32>) {
            assert!(len as usize <= self.region.len());
            // SAFETY: the source lies in our region registered under `mr`, which outlives the
            // work request (we wait for its completion); the destination is the point of the
            // tests: the peer's device checks it.
            unsafe {
                self.qp.write_with_imm(&RdmaWrite {
                    local: self.region.as_ptr(),
                    len,
                    lkey: self.mr.lkey(),
                    remote_addr: addr,
                    rkey,
                    imm,
                    signaled: true,
                    wr_id: 1,
                })
            }
            .expect("post the write");
        }

        /// The next completion of our own queue.
        #[track_caller]
        fn next(&self) -> Wc {
            let deadline = Instant::now() + T;
            let mut wc = [Wc::Sent {
                qp_num: 0,
                wr_id: 0,
            }];
            loop {
                if self.cq.poll(&mut wc).expect("poll") == 1 {
                    return wc[0];
                }
                assert!(Instant::now() < deadline, "no completion within {T:?}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[track_caller]
    fn next(cq: &VerbsQueue) -> Completion {
        match cq.wait(T) {
            Ok(Some(c)) => c,
            other => panic!("expected a completion within {T:?}, got {other:?}"),
        }
    }

    /// An executor serves every session from one device context, one queue per worker
    /// endpoint. Each queue has its own protection domain, so a client cannot write another
    /// session's input slots through its own queue pair, even knowing their address and rkey
    /// (rkeys are guessable, addresses too): its write fails, the slots stay as they were.
    #[test]
    fn a_session_cannot_write_another_sessions_memory() {
        if !verbs::available_or_skip("a_session_cannot_write_another_sessions_memory") {
            return;
        }
        let ctx = config().open().expect("device");
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let mut sessions = Vec::new();
        for _ in 0..2 {
            let input = region(1, 4096);
            let queue = VerbsQueue::new(&ctx, &config(), 1).expect("queue");
            let (ep, control, peer) = serve(&listener, &queue, vec![input.clone()], |addr| {
                RawPeer::connect(addr, 64)
            });
            sessions.push((input, queue, ep, control, peer));
        }
        let (input_a, queue_a, _, _, peer_a) = &sessions[0];
        let (_, _, _, _, peer_b) = &sessions[1];
        let (key, addr_a, _, rkey_a) = peer_a.offered[0];
        assert_eq!((key, addr_a), (1, input_a.as_ptr() as u64));
        // Session A's client writes its own slot: address and rkey are right.
        peer_a.region.write(0, b"from A..").expect("stage");
        peer_a.write(addr_a, rkey_a, 8, Some(7));
        assert!(matches!(peer_a.next(), Wc::Sent { .. }));
        assert_eq!(next(queue_a).imm, 7);
        assert_eq!(read(input_a, 0, 8), b"from A..");
        // Session B's client writes the same slot with A's rkey, from its own queue pair.
        peer_b.region.write(0, b"from B!!").expect("stage");
        peer_b.write(addr_a + 64, rkey_a, 8, None);
        match peer_b.next() {
            Wc::Failed { status, .. } => {
                eprintln!("session B's write failed with ibv_wc_status {status}")
            }
            other => panic!("session B's write into session A completed: {other:?}"),
        }
        assert_eq!(
            read(input_a, 8, 4096 - 8),
            vec![0; 4096 - 8],
            "A's slots changed"
        );
    }

    /// A client whose shared receive queue is small sends many calls and collects the answers
    /// only later: the answers beyond its receives wait in RNR retries, the executor's send
    /// queue fills, and its worker must wait for room while the client lives (it used to give
    /// up after 2 ms, stop serving, and leave the client waiting forever).
    #[test]
    fn answers_wait_for_a_client_that_collects_late() {
        if !verbs::available_or_skip("answers_wait_for_a_client_that_collects_late") {
            return;
        }
        const CALLS: u32 = 160;
        let slot = 64usize;
        let exec_config = VerbsConfig {
            send_depth: 32,
            ..config()
        };
        let client_config = VerbsConfig {
            recv_depth: 16,
            send_depth: 256,
            ..config()
        };
        let ctx = exec_config.open().expect("device");
        let queue = VerbsQueue::new(&ctx, &exec_config, 1).expect("queue");
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let input = region(2, CALLS as usize * slot);
        let (exec, _control, client) = serve(&listener, &queue, vec![input.clone()], |addr| {
            client(addr, &client_config, vec![region(1, CALLS as usize * slot)])
        });
        let answered = AtomicU32::new(0);
        std::thread::scope(|s| {
            // The worker: takes every call, then answers each (the client is not polling).
            let worker = s.spawn(|| -> Result<(), String> {
                let mut calls = Vec::new();
                while calls.len() < CALLS as usize {
                    match queue.wait(T) {
                        Ok(Some(c)) => calls.push(c.imm),
                        other => return Err(format!("call {}: {other:?}", calls.len())),
                    }
                }
                for imm in calls {
                    let off = imm as usize * slot;
                    exec.write_with_imm(2, off, 8, 1, off, imm)
                        .map_err(|e| format!("answer {imm}: {e}"))?;
                    answered.fetch_add(1, Ordering::Release);
                }
                Ok(())
            });
            for i in 0..CALLS {
                let off = i as usize * slot;
                client.regions[0]
                    .write(off, &u64::from(i).to_le_bytes())
                    .expect("stage");
                client
                    .ep
                    .write_with_imm(1, off, 8, 2, off, i)
                    .expect("call");
            }
            // Until the worker's send queue is full (16 answers took the client's receives,
            // 32 wait in its send queue) or it gave up, then a while longer.
            let deadline = Instant::now() + T;
            while answered.load(Ordering::Acquire) < 16 + 32 && !worker.is_finished() {
                assert!(Instant::now() < deadline, "the worker did not answer");
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(50));
            for i in 0..CALLS {
                match client.cq.wait(T) {
                    Ok(Some(c)) => assert_eq!((c.imm, c.len), (i, 8), "answers in order"),
                    other => {
                        let worker = if worker.is_finished() {
                            format!("{:?}", worker.join().expect("worker"))
                        } else {
                            "still running".into()
                        };
                        panic!("answer {i} of {CALLS}: {other:?} (worker: {worker})");
                    }
                }
            }
            worker.join().expect("worker").expect("every answer sent");
        });
        for i in 0..CALLS as usize {
            assert_eq!(
                read(&client.regions[0], i * slot, 8),
                (i as u64).to_le_bytes()
            );
        }
    }

    /// `wait_since` returns for every interrupt in every sleeping thread: each has an eventfd
    /// of its own (with one shared eventfd, the first thread woken took the wake-up of the
    /// others, who slept on to their next liveness tick).
    #[test]
    fn every_sleeper_wakes_for_every_interrupt() {
        if !verbs::available_or_skip("every_sleeper_wakes_for_every_interrupt") {
            return;
        }
        const SLEEPERS: usize = 4;
        const ROUNDS: u64 = 2000;
        let ctx = config().open().expect("device");
        let queue = VerbsQueue::new(&ctx, &config(), 1).expect("queue");
        // The epoch each sleeper is about to wait on.
        let waiting: Vec<AtomicU64> = (0..SLEEPERS).map(|_| AtomicU64::new(u64::MAX)).collect();
        std::thread::scope(|s| {
            let sleepers: Vec<_> = (0..SLEEPERS)
                .map(|t| {
                    let (queue, waiting) = (&queue, &waiting);
                    s.spawn(move || {
                        let mut woken = 0u64;
                        loop {
                            let epoch = queue.epoch();
                            if epoch == ROUNDS {
                                return woken;
                            }
                            waiting[t].store(epoch, Ordering::Release);
                            let got = queue.wait_since(epoch, Duration::from_secs(10));
                            assert!(matches!(got, Ok(None)), "sleeper {t}: {got:?}");
                            // The next interrupt waits for this thread to wait again.
                            assert_eq!(
                                queue.epoch(),
                                epoch + 1,
                                "sleeper {t} returned without an interrupt (10 s passed)"
                            );
                            woken += 1;
                        }
                    })
                })
                .collect();
            for round in 0..ROUNDS {
                let deadline = Instant::now() + T;
                while waiting.iter().any(|w| w.load(Ordering::Acquire) != round) {
                    assert!(
                        Instant::now() < deadline,
                        "round {round}: a sleeper is missing"
                    );
                    std::thread::yield_now();
                }
                queue.interrupt();
            }
            for (t, sleeper) in sleepers.into_iter().enumerate() {
                assert_eq!(sleeper.join().expect("sleeper"), ROUNDS, "sleeper {t}");
            }
        });
    }

    /// Zero-length `SEND`s use up receives of the shared receive queue like writes with
    /// immediates do, and complete as plain receives. They used to be taken for send
    /// completions and dropped, their receives never posted again: 512 of them starved every
    /// endpoint of the queue. Now each is posted again, and the peer is reported as breaking
    /// the protocol (its queue pair stopped); the queue's other endpoints go on.
    #[test]
    fn sends_that_use_up_receives_break_only_their_endpoint() {
        if !verbs::available_or_skip("sends_that_use_up_receives_break_only_their_endpoint") {
            return;
        }
        let ctx = config().open().expect("device");
        let queue = VerbsQueue::new(&ctx, &config(), 2).expect("queue");
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let (rogue_ep, _rogue_control, rogue) =
            serve(&listener, &queue, vec![region(2, 4096)], |addr| {
                RawPeer::connect(addr, 1024)
            });
        let (honest_ep, _honest_control, honest) =
            serve(&listener, &queue, vec![region(2, 4096)], |addr| {
                client(addr, &config(), vec![region(1, 4096)])
            });
        for i in 0..600u64 {
            rogue
                .qp
                .post_empty_send(i + 1, i == 599)
                .expect("post a SEND");
        }
        honest.regions[0].write(0, b"honest").expect("stage");
        honest
            .ep
            .write_with_imm(1, 0, 6, 2, 0, 42)
            .expect("honest write");
        let (mut broke, mut delivered) = (false, false);
        let deadline = Instant::now() + T;
        while !(broke && delivered) {
            assert!(
                Instant::now() < deadline,
                "within {T:?}: rogue reported broken {broke}, honest write delivered {delivered}"
            );
            match queue.wait(Duration::from_secs(1)) {
                Ok(None) => {}
                Ok(Some(c)) => {
                    assert_eq!(
                        c,
                        Completion {
                            endpoint: honest_ep.id(),
                            imm: 42,
                            len: 6
                        }
                    );
                    assert!(!delivered, "delivered twice");
                    delivered = true;
                }
                Err(TransportError::PeerBroke { endpoint, why }) => {
                    assert_eq!(endpoint, rogue_ep.id(), "{why}");
                    assert!(!broke, "reported twice");
                    eprintln!("rogue peer: {why}");
                    broke = true;
                }
                Err(e) => panic!("{e}"),
            }
        }
        // The honest endpoint goes on.
        honest
            .ep
            .write_with_imm(1, 0, 6, 2, 8, 43)
            .expect("honest write");
        assert_eq!(next(&queue).imm, 43);
    }

    /// A write longer than the port's largest message would fail on the device (a local
    /// length error, which kills the queue pair): it is refused before posting instead, and
    /// the endpoint goes on.
    #[test]
    fn a_write_beyond_the_largest_message_is_refused() {
        if !verbs::available_or_skip("a_write_beyond_the_largest_message_is_refused") {
            return;
        }
        let ctx = config().open().expect("device");
        let max = ctx.port_info().max_msg as usize;
        if max >= 64 << 20 {
            eprintln!(
                "a_write_beyond_the_largest_message_is_refused: skipped: the port takes {max} bytes per message"
            );
            return;
        }
        let queue = VerbsQueue::new(&ctx, &config(), 1).expect("queue");
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let len = max + 4096;
        let (_ep, _control, client) = serve(&listener, &queue, vec![region(2, len)], |addr| {
            client(addr, &config(), vec![region(1, len)])
        });
        match client.ep.write_with_imm(1, 0, max + 1, 2, 0, 1) {
            Err(TransportError::Rdma(why)) => assert!(why.contains("largest message"), "{why}"),
            other => panic!("a write of {} bytes: {other:?}", max + 1),
        }
        client.regions[0].write(max - 4, b"last").expect("stage");
        client
            .ep
            .write_with_imm(1, 0, max, 2, 0, 2)
            .expect("a write of the largest message");
        let c = next(&queue);
        assert_eq!((c.imm, c.len as usize), (2, max));
    }
}
