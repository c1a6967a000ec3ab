//! End to end over shared memory: a real `rfaas-executor run` process, a `Lease`, typed calls.

use functions_example as fx;
use rfaas::{CallError, Error, Lease};
use std::time::Duration;
use tests::{Executor, Rng};

const T: Duration = Duration::from_secs(20);

#[test]
fn every_function_through_a_real_executor() {
    let exec = Executor::start(
        "every",
        &[
            "--cores",
            "2",
            "--hot-timeout-us",
            "2000",
            "--slot-size",
            "262144",
        ],
    );
    let lease = Lease::connect(&exec.socket).expect("lease");
    assert_eq!(lease.workers(), 2);
    lease
        .invoke(fx::noop::call())
        .timeout(T)
        .wait()
        .expect("noop");
    assert_eq!(
        lease
            .invoke(fx::fault::call(0, 99))
            .timeout(T)
            .wait()
            .expect("fault 0"),
        99
    );
    let input: Vec<u8> = (0..1000).map(|i| i as u8).collect();
    let mut out = vec![0u8; 1000];
    assert_eq!(
        lease
            .invoke(fx::echo::call(&input, &mut out))
            .timeout(T)
            .wait()
            .expect("echo"),
        1000
    );
    assert_eq!(out, input);
    let mut rng = Rng::new(9);
    let x: Vec<f64> = (0..500).map(|_| rng.range(-1.0, 1.0)).collect();
    let y: Vec<f64> = (0..500).map(|_| rng.range(-1.0, 1.0)).collect();
    let (mut remote, mut local) = (vec![0.0; 500], vec![0.0; 500]);
    lease
        .invoke(fx::axpy::call(1.5, &x, &y, &mut remote))
        .timeout(T)
        .wait()
        .expect("axpy");
    fx::axpy(1.5, &x, &y, &mut local).expect("local");
    assert_eq!(remote, local);
    let n = 32usize;
    let a: Vec<f64> = (0..n * n).map(|_| rng.range(-1.0, 1.0)).collect();
    let b: Vec<f64> = (0..n * n).map(|_| rng.range(-1.0, 1.0)).collect();
    let (mut remote, mut local) = (vec![0.0; n * n], vec![0.0; n * n]);
    lease
        .invoke(fx::matmul::call(n as u32, &a, &b, &mut remote))
        .timeout(T)
        .wait()
        .expect("matmul");
    fx::matmul(n as u32, &a, &b, &mut local).expect("local");
    assert_eq!(remote, local);
    match lease
        .invoke(fx::parse_decimal::call(b"12x"))
        .timeout(T)
        .wait()
    {
        Err(Error::Call(CallError::Function(m))) => {
            assert_eq!(m, fx::parse_decimal(b"12x").unwrap_err())
        }
        other => panic!("expected a function error, got {other:?}"),
    }
    match lease.invoke(fx::fault::call(1, 5)).timeout(T).wait() {
        Err(Error::Call(CallError::Panic(m))) => {
            assert!(m.contains("fault injected: value 5"), "{m}")
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    // Still serving after the panic.
    assert_eq!(
        lease
            .invoke(fx::fault::call(0, 6))
            .timeout(T)
            .wait()
            .expect("after panic"),
        6
    );
}
