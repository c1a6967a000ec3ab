//! End to end over TCP loopback: the same executor binary, `--listen`, and `Lease::connect_tcp`.

use functions_example as fx;
use rfaas::{CallError, Error, Lease, LeaseOptions};
use std::time::Duration;
use tests::{Executor, Rng};

const T: Duration = Duration::from_secs(20);

fn lease(exec: &Executor) -> Lease {
    Lease::connect_tcp(&exec.address, &LeaseOptions::default()).expect("tcp lease")
}

#[test]
fn every_function_over_tcp() {
    let exec = Executor::start_tcp(
        "tcp-every",
        "127.0.0.1:0",
        &[
            "--cores",
            "2",
            "--hot-timeout-us",
            "2000",
            "--slot-size",
            "262144",
        ],
    );
    let lease = lease(&exec);
    assert_eq!(lease.workers(), 2);
    fx::noop::invoke(&lease).timeout(T).wait().expect("noop");
    let input: Vec<u8> = (0..50_000).map(|i| (i % 253) as u8).collect();
    let mut out = vec![0u8; 50_000];
    assert_eq!(
        fx::echo::invoke(&lease, &input, &mut out)
            .timeout(T)
            .wait()
            .expect("echo"),
        50_000
    );
    assert_eq!(out, input);
    let mut rng = Rng::new(4);
    // 32 KiB matrices: both inputs go out from our memory as pieces of one vectored write (as
    // did echo's 50 000 bytes), not copied into the send staging first.
    let n = 64usize;
    let a: Vec<f64> = (0..n * n).map(|_| rng.range(-1.0, 1.0)).collect();
    let b: Vec<f64> = (0..n * n).map(|_| rng.range(-1.0, 1.0)).collect();
    let (mut remote, mut local) = (vec![0.0; n * n], vec![0.0; n * n]);
    fx::matmul::invoke(&lease, n as u32, &a, &b, &mut remote)
        .timeout(T)
        .wait()
        .expect("matmul");
    fx::matmul(n as u32, &a, &b, &mut local).expect("local");
    assert_eq!(remote, local);
    // Buffers work over TCP too (their results are copied, not placed).
    let mut buf = lease.buffer::<f64>(n * n).expect("buffer");
    fx::matmul::invoke(&lease, n as u32, &a, &b, &mut buf)
        .timeout(T)
        .wait()
        .expect("matmul into a buffer");
    assert_eq!(&buf[..], &local[..]);
    match fx::parse_decimal::invoke(&lease, b"4x2").timeout(T).wait() {
        Err(Error::Call(CallError::Function(m))) => {
            assert_eq!(m, fx::parse_decimal(b"4x2").unwrap_err())
        }
        other => panic!("expected a function error, got {other:?}"),
    }
    match fx::fault::invoke(&lease, 1, 3).timeout(T).wait() {
        Err(Error::Call(CallError::Panic(m))) => assert!(m.contains("value 3"), "{m}"),
        other => panic!("expected a panic, got {other:?}"),
    }
    // Many in flight from several threads, each completed once.
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let lease = &lease;
            s.spawn(move || {
                for i in 0..200u64 {
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    assert_eq!(
        rt.block_on(fx::fault::invoke(&lease, 0, 9).timeout(T))
            .expect("async"),
        9
    );
    assert_eq!(lease.protocol_violations(), 0);
}

#[test]
fn executor_killed_over_tcp_fails_pending_invocations() {
    // Two workers, four invocations waiting on them from four threads: each one must see
    // `ExecutorGone`, whichever thread's poll happens to read a data connection's end first.
    for round in 0..3 {
        let mut exec = Executor::start_tcp(
            &format!("tcp-killed-{round}"),
            "127.0.0.1:0",
            &[
                "--cores",
                "2",
                "--hot-timeout-us",
                "0",
                "--slot-size",
                "4096",
            ],
        );
        let lease = lease(&exec);
        std::thread::scope(|s| {
            let waiters: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        fx::fault::invoke(&lease, 2, 30_000)
                            .timeout(Duration::from_secs(60))
                            .wait()
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(300));
            exec.kill();
            for (i, waiter) in waiters.into_iter().enumerate() {
                match waiter.join().expect("waiter") {
                    Err(Error::ExecutorGone) => {}
                    other => {
                        panic!("round {round}, waiter {i}: expected ExecutorGone, got {other:?}")
                    }
                }
            }
        });
        // And a new invocation on the dead lease fails at once.
        assert!(matches!(
            fx::noop::invoke(&lease).timeout(T).wait(),
            Err(Error::ExecutorGone)
        ));
    }
}

#[test]
fn a_dropped_tcp_lease_ends_its_session() {
    let mut exec = Executor::start_tcp(
        "tcp-drop",
        "127.0.0.1:0",
        &[
            "--cores",
            "1",
            "--hot-timeout-us",
            "1000",
            "--slot-size",
            "4096",
        ],
    );
    for round in 0..3u64 {
        let lease = lease(&exec);
        assert_eq!(
            fx::fault::invoke(&lease, 0, round)
                .timeout(T)
                .wait()
                .expect("invocation"),
            round
        );
    }
    assert!(exec.is_running());
}
