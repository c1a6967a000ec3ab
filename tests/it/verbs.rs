//! End to end over RDMA: `rfaas-executor run --listen … --fabric verbs` and
//! `Lease::connect_verbs`, against a real device (Soft-RoCE in `cargo xtask rdma-vm --suite`).
//! Without a device each test says why and returns.

use functions_example as fx;
use rfaas::transport::verbs::{self, VerbsConfig};
use rfaas::{CallError, Error, Lease, LeaseOptions};
use std::time::Duration;
use tests::{Executor, Rng};

const T: Duration = Duration::from_secs(60);

fn rdma_or_skip(test: &str) -> bool {
    match verbs::available() {
        Ok(_) => true,
        Err(why) if std::env::var_os("RFAAS_REQUIRE_RDMA").is_some() => {
            panic!("{test}: RFAAS_REQUIRE_RDMA is set, but: {why}")
        }
        Err(why) => {
            eprintln!("{test}: skipped: {why}");
            false
        }
    }
}

fn lease(exec: &Executor) -> Lease {
    let config = VerbsConfig::from_env().expect("RFAAS_VERBS_* settings");
    Lease::connect_verbs(&exec.address, &LeaseOptions::default(), &config).expect("verbs lease")
}

#[test]
fn every_function_over_rdma() {
    if !rdma_or_skip("every_function_over_rdma") {
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
    if !rdma_or_skip("buffer_outputs_over_rdma_arrive_in_place") {
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
    if !rdma_or_skip("warm_invocations_over_rdma") {
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
    if !rdma_or_skip("a_killed_executor_fails_pending_invocations") {
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
    if !rdma_or_skip("a_client_that_leaves_frees_the_executor_for_the_next") {
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
    use rfaas::managed::{LeaseSpec, lease_from};
    use rfaas::wire::Fabric;
    use std::io::BufRead;
    if !rdma_or_skip("a_manager_grants_rdma_leases") {
        return;
    }
    let dir = tests::scratch_dir("verbs-manager");
    let config = dir.join("manager.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nnode_id = \"rdma-node\"\ncores = 2\nmemory_mib = 1024\ncache_dir = \"{}\"\nledger = \"{}\"\nsocket_dir = \"{}\"\n",
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
    spec.slot_size = Some(65536);
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
