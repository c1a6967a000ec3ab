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
    // The stub's own `invoke` and the lease's are the same thing.
    fx::noop::invoke(&lease).timeout(T).wait().expect("noop");
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

#[test]
fn many_concurrent_invocations_complete_exactly_once() {
    let exec = Executor::start(
        "many",
        &[
            "--cores",
            "2",
            "--slots",
            "4",
            "--hot-timeout-us",
            "500",
            "--slot-size",
            "4096",
        ],
    );
    let lease = Lease::connect(&exec.socket).expect("lease");
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 300;
    // Threads with blocking waits: 4 x 300 invocations over 2 x 4 slots, so slots run out
    // and invocations queue for them.
    let seen = std::sync::Mutex::new(vec![0u32; (THREADS * PER_THREAD) as usize]);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (lease, seen) = (&lease, &seen);
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let v = t * PER_THREAD + i;
                    let got = lease
                        .invoke(fx::fault::call(0, v))
                        .timeout(T)
                        .wait()
                        .expect("invocation");
                    assert_eq!(got, v);
                    seen.lock().unwrap()[got as usize] += 1;
                }
            });
        }
    });
    assert!(
        seen.into_inner().unwrap().iter().all(|&n| n == 1),
        "every invocation completes exactly once"
    );
    // Futures under tokio: 200 in flight at once from one task set.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let results = rt.block_on(async {
        let mut set = Vec::new();
        for v in 0..200u64 {
            set.push(lease.invoke(fx::fault::call(0, v)).timeout(T));
        }
        let mut out = Vec::new();
        for f in set {
            out.push(f.await.expect("async invocation"));
        }
        out
    });
    assert_eq!(results, (0..200).collect::<Vec<_>>());
    // And concurrently, with join of spawned tasks.
    let lease = std::sync::Arc::new(lease);
    let results = rt.block_on(async {
        let handles: Vec<_> = (0..64u64)
            .map(|v| {
                let lease = lease.clone();
                tokio::spawn(async move { lease.invoke(fx::fault::call(0, v)).timeout(T).await })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("task").expect("invocation"));
        }
        out
    });
    assert_eq!(results, (0..64).collect::<Vec<_>>());
    assert_eq!(lease.protocol_violations(), 0);
}

#[test]
fn hot_to_warm_and_back() {
    // Hot for 1 ms after each invocation, then asleep in the completion queue.
    for hot in ["1000", "0", "-1"] {
        let exec = Executor::start(
            &format!("warm{hot}"),
            &[
                "--cores",
                "1",
                "--hot-timeout-us",
                hot,
                "--slot-size",
                "4096",
            ],
        );
        let lease = Lease::connect(&exec.socket).expect("lease");
        for round in 0..3u64 {
            assert_eq!(
                lease
                    .invoke(fx::fault::call(0, round))
                    .timeout(T)
                    .wait()
                    .expect("invocation"),
                round
            );
            // Long enough for a 1 ms hot timeout to expire: the next call wakes a warm worker.
            std::thread::sleep(Duration::from_millis(30));
        }
        // Async path after the worker went warm.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        assert_eq!(
            rt.block_on(lease.invoke(fx::fault::call(0, 7)).timeout(T))
                .expect("async"),
            7
        );
    }
}

#[test]
fn executor_killed_mid_invocation_fails_pending_invocations() {
    let mut exec = Executor::start(
        "killed",
        &[
            "--cores",
            "2",
            "--hot-timeout-us",
            "0",
            "--slot-size",
            "4096",
        ],
    );
    let lease = Lease::connect(&exec.socket).expect("lease");
    std::thread::scope(|s| {
        let waits: Vec<_> = (0..2)
            .map(|_| {
                let lease = &lease;
                s.spawn(move || {
                    lease
                        .invoke(fx::fault::call(2, 30_000))
                        .timeout(Duration::from_secs(60))
                        .wait()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        exec.kill();
        for w in waits {
            match w.join().expect("waiter") {
                Err(Error::ExecutorGone) => {}
                other => panic!("expected ExecutorGone, got {other:?}"),
            }
        }
    });
    // New invocations on the dead lease fail at once instead of hanging.
    match lease.invoke(fx::noop::call()).timeout(T).wait() {
        Err(Error::ExecutorGone) => {}
        other => panic!("expected ExecutorGone, got {other:?}"),
    }
}

#[test]
fn client_killed_mid_invocation_leaves_the_executor_serving() {
    let mut exec = Executor::start(
        "clientkill",
        &[
            "--cores",
            "1",
            "--hot-timeout-us",
            "1000",
            "--slot-size",
            "4096",
        ],
    );
    let mut client = std::process::Command::new(env!("CARGO_BIN_EXE_rfaas-test-client"))
        .arg(&exec.socket)
        .args(["slow", "2000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("client process");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(client.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("client output");
    assert_eq!(line.trim(), "invoked");
    client.kill().expect("kill client");
    client.wait().expect("reap client");
    // Another client is served (after the dead session's slow function finishes).
    let lease = Lease::connect(&exec.socket).expect("second lease");
    assert_eq!(
        lease
            .invoke(fx::fault::call(0, 11))
            .timeout(T)
            .wait()
            .expect("served"),
        11
    );
    assert!(exec.is_running(), "the executor must survive its client");
}

#[test]
fn dropped_invocations_and_leases_release_everything() {
    let exec = Executor::start(
        "drops",
        &[
            "--cores",
            "1",
            "--slots",
            "2",
            "--hot-timeout-us",
            "1000",
            "--slot-size",
            "4096",
        ],
    );
    // In a process of its own, so that no other test's descriptors are counted.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rfaas-test-client"))
        .arg(&exec.socket)
        .arg("leaks")
        .output()
        .expect("client process");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: Vec<usize> = text
        .trim()
        .strip_prefix("fds ")
        .expect("fds line")
        .split(' ')
        .map(|n| n.parse().expect("count"))
        .collect();
    assert_eq!(
        counts[0], counts[1],
        "leases must close every descriptor they opened"
    );
    // The executor serves on after all those sessions.
    let lease = Lease::connect(&exec.socket).expect("lease");
    assert_eq!(
        lease
            .invoke(fx::fault::call(0, 4))
            .timeout(T)
            .wait()
            .expect("still serving"),
        4
    );
}

#[test]
fn oversize_and_unknown_calls_are_refused_by_the_client() {
    let exec = Executor::start(
        "oversize",
        &[
            "--cores",
            "1",
            "--slot-size",
            "4096",
            "--hot-timeout-us",
            "1000",
        ],
    );
    let lease = Lease::connect(&exec.socket).expect("lease");
    let big = vec![0u8; 8192];
    let mut out = vec![0u8; 16];
    match lease
        .invoke(fx::echo::call(&big, &mut out))
        .timeout(T)
        .wait()
    {
        Err(e @ Error::TooLarge { what: "input", .. }) => {
            // It says how to make room (and not the output's remedy).
            let text = e.to_string();
            assert!(
                text.contains("--slot-size") && !text.contains("Buffer"),
                "{text}"
            );
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let mut big_out = vec![0u8; 8192];
    match lease
        .invoke(fx::echo::call(&big[..8], &mut big_out))
        .timeout(T)
        .wait()
    {
        Err(
            e @ Error::TooLarge {
                what: "output",
                buffer_helps: true,
                ..
            },
        ) => {
            let text = e.to_string();
            assert!(
                text.contains("slot_size") && text.contains("Buffer"),
                "{text}"
            );
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(
        lease
            .invoke(fx::fault::call(0, 1))
            .timeout(T)
            .wait()
            .expect("still fine"),
        1
    );
}

#[test]
fn buffers_receive_results_in_place() {
    let exec = Executor::start(
        "buffers",
        &[
            "--cores",
            "2",
            "--slot-size",
            "4096",
            "--hot-timeout-us",
            "1000",
        ],
    );
    let lease = Lease::connect_with(&exec.socket, &{
        let mut o = rfaas::LeaseOptions::default();
        o.buffer_bytes = 1 << 20;
        o
    })
    .expect("lease");
    // Larger than a slot: only possible because the output lands in the buffer itself.
    let input: Vec<u8> = (0..3000).map(|i| (i % 251) as u8).collect();
    let mut out = lease.buffer::<u8>(100_000).expect("buffer");
    assert!(out.iter().all(|&b| b == 0), "buffers start zeroed");
    let n = fx::echo::invoke(&lease, &input, &mut out[..3000])
        .timeout(T)
        .wait()
        .expect("echo into a buffer");
    assert_eq!(n, 3000);
    assert_eq!(&out[..3000], &input[..]);
    // Two output buffers, in place: 2 x 3200 bytes, more than a slot holds.
    let xs: Vec<f64> = (0..400).map(|i| i as f64 * 0.01).collect();
    let mut s = lease.buffer::<f64>(400).expect("buffer");
    let mut c = lease.buffer::<f64>(400).expect("buffer");
    fx::sincos::invoke(&lease, &xs, &mut s, &mut c)
        .timeout(T)
        .wait()
        .expect("sincos in place");
    for i in 0..400 {
        assert_eq!((s[i], c[i]), xs[i].sin_cos());
    }
    // A heap vector in the mix: nothing goes in place, the result is copied, and then it has
    // to fit a slot.
    let mut heap = vec![0.0; 200];
    fx::sincos::invoke(&lease, &xs[..200], &mut s[..200], &mut heap)
        .timeout(T)
        .wait()
        .expect("sincos mixed");
    assert_eq!(&heap[..], &c[..200]);
    match fx::sincos::invoke(&lease, &xs, &mut s, &mut vec![0.0; 400])
        .timeout(T)
        .wait()
    {
        Err(Error::TooLarge { what: "output", .. }) => {}
        other => panic!("6400 copied output bytes exceed a 4 KiB slot: {other:?}"),
    }
    // Small and large calls into buffers in turn (a small request travels inside the completion
    // entry; the output lands in the buffer either way).
    let mut few = lease.buffer::<u8>(8).expect("buffer");
    for round in 0..3u8 {
        let bytes = [round ^ 0x3c; 8];
        let n = fx::echo::invoke(&lease, &bytes, &mut few)
            .timeout(T)
            .wait()
            .expect("small echo into a buffer");
        assert_eq!((n, &few[..]), (8, &bytes[..]), "round {round}");
        let n = fx::echo::invoke(&lease, &input[..3000], &mut out[..3000])
            .timeout(T)
            .wait()
            .expect("large echo into a buffer");
        assert_eq!((n, &out[..3000]), (3000, &input[..]), "round {round}");
    }
    let mut wide = lease.buffer::<f64>(1000).expect("buffer");
    let a = vec![1.0f64; 16];
    fx::matmul::invoke(&lease, 4, &a, &a, &mut wide[..16])
        .timeout(T)
        .wait()
        .expect("matmul into a buffer");
    assert!(wide[..16].iter().all(|&v| v == 4.0));
    // Space is returned on drop; an impossible request is a clear error.
    drop((out, s, c, few, wide));
    let again = lease
        .buffer::<u8>(1 << 20)
        .expect("the whole arena is free again");
    drop(again);
    match lease.buffer::<u8>(2 << 20) {
        Err(Error::BufferSpace { .. }) => {}
        other => panic!("expected BufferSpace, got {other:?}"),
    }
}

/// Sends `inv` (its first poll), which must still be pending: a product of milliseconds.
fn send<C: rfaas::RemoteCall + Unpin>(
    inv: rfaas::Invocation<'_, C>,
) -> std::pin::Pin<Box<rfaas::Invocation<'_, C>>> {
    use std::future::Future;
    let mut inv = Box::pin(inv);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if let std::task::Poll::Ready(r) = inv.as_mut().poll(&mut cx) {
        panic!(
            "a product of milliseconds answered within one poll: {:?}",
            r.err()
        );
    }
    inv
}

/// Sends `inv` and drops it unanswered, as a caller that gives up does.
fn send_and_drop<C: rfaas::RemoteCall + Unpin>(inv: rfaas::Invocation<'_, C>) {
    drop(send(inv));
}

/// One worker with slots large enough for 768 x 768 matrix products.
const MATMUL_EXECUTOR: [&str; 8] = [
    "--cores",
    "1",
    "--hot-timeout-us",
    "1000",
    "--slots",
    "4",
    "--slot-size",
    "16777216",
];

/// An invocation dropped (or timed out) with its output in a `Buffer` may still be running: the buffer
/// the caller drops is not handed out again (a new buffer gets other memory) until the answer
/// comes, then it is. Over shared memory (the worker writes the buffer while it runs) and over
/// TCP (it writes it when it answers).
#[test]
fn memory_of_an_abandoned_in_place_call_is_held_until_its_answer() {
    let args = MATMUL_EXECUTOR;
    let shm = Executor::start("abandoned-buffer", &args);
    let tcp = Executor::start_tcp("abandoned-buffer-tcp", "127.0.0.1:0", &args);
    let options = rfaas::LeaseOptions::default();
    for lease in [
        Lease::connect(&shm.socket).expect("shm lease"),
        Lease::connect_tcp(&tcp.address, &options).expect("tcp lease"),
    ] {
        // A product of 768 x 768 matrices takes tens of milliseconds, far longer than sending
        // its input; the caller gives up at once.
        let n = 768usize;
        let mut rng = Rng::new(3);
        let a: Vec<f64> = (0..n * n).map(|_| rng.range(-1.0, 1.0)).collect();
        let mut out = lease.buffer::<f64>(n * n).expect("buffer");
        let held = out.as_ptr();
        // A buffer after the output, not part of the call.
        let spare = lease.buffer::<u8>(4096).expect("buffer");
        let spare_at = spare.as_ptr();
        send_and_drop(fx::matmul::invoke(&lease, n as u32, &a, &a, &mut out));
        drop(out);
        let other = lease.buffer::<f64>(n * n).expect("buffer");
        assert_ne!(
            other.as_ptr(),
            held,
            "memory the executor may still write was handed out again"
        );
        // Memory outside the call's outputs is handed out again at once.
        drop(spare);
        assert_eq!(
            lease.buffer::<u8>(4096).expect("buffer").as_ptr(),
            spare_at,
            "memory the call cannot write was held back"
        );
        // The worker answers in order: by the time a noop is answered, so is the product.
        fx::noop::invoke(&lease).timeout(T).wait().expect("noop");
        drop(other);
        let again = lease.buffer::<f64>(n * n).expect("buffer");
        assert_eq!(
            again.as_ptr(),
            held,
            "the memory came back after the answer"
        );
        assert_eq!(lease.protocol_violations(), 0);
    }
    // An executor that dies instead of answering writes nothing more: the memory comes back
    // once its death is seen.
    let mut dying = Executor::start("abandoned-buffer-killed", &args);
    let lease = Lease::connect(&dying.socket).expect("lease");
    let n = 768usize;
    let a = vec![0.5f64; n * n];
    let mut out = lease.buffer::<f64>(n * n).expect("buffer");
    let held = out.as_ptr();
    send_and_drop(fx::matmul::invoke(&lease, n as u32, &a, &a, &mut out));
    drop(out);
    dying.kill();
    match fx::noop::invoke(&lease).timeout(T).wait() {
        Err(Error::ExecutorGone) => {}
        other => panic!("expected ExecutorGone, got {other:?}"),
    }
    let again = lease.buffer::<f64>(n * n).expect("buffer");
    assert_eq!(
        again.as_ptr(),
        held,
        "the memory came back after the worker died"
    );
}

/// A call whose result decoding panics (a hand-written `RemoteCall` may): the rest passes
/// through to the generated call.
struct PanicsOnDecode<C>(C);

// SAFETY: `layout` and `encode` pass through to the wrapped `C`, which keeps the contract;
// `decode` touches nothing before it panics.
unsafe impl<C: rfaas::RemoteCall> rfaas::RemoteCall for PanicsOnDecode<C> {
    type Output = C::Output;
    const NAME: &'static str = C::NAME;
    const FINGERPRINT: u64 = C::FINGERPRINT;

    fn layout(&self, placement: &rfaas::Placement) -> Result<rfaas::Encoded, rfaas::EncodeError> {
        self.0.layout(placement)
    }

    fn encode(
        &self,
        buf: &mut [u8],
        placement: &rfaas::Placement,
    ) -> Result<rfaas::Encoded, rfaas::EncodeError> {
        self.0.encode(buf, placement)
    }

    fn decode(
        self,
        _: rfaas::Status,
        _: &[u8],
        _: &rfaas::Placement,
    ) -> Result<Self::Output, CallError> {
        panic!("decoding panicked on purpose");
    }
}

/// A call whose decoding panics passes the panic to its caller and gives its slot back: on a
/// lease of one slot, the next call is served.
#[test]
fn a_panicking_decode_gives_its_slot_back() {
    let exec = Executor::start(
        "decode-panic",
        &["--cores", "1", "--slots", "1", "--hot-timeout-us", "-1"],
    );
    let lease = Lease::connect(&exec.socket).expect("lease");
    // Each round takes the fixed path only if the answer comes while the call still polls
    // for it itself (it does within microseconds from a hot executor); 20 rounds make sure.
    for round in 0..20 {
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lease
                .invoke(PanicsOnDecode(fx::noop::call()))
                .timeout(T)
                .wait()
        }))
        .expect_err("the decode's panic was lost");
        assert_eq!(
            panicked.downcast_ref::<&str>(),
            Some(&"decoding panicked on purpose")
        );
        // With its one slot lost, this call would wait for a free slot until its timeout.
        assert_eq!(
            lease
                .invoke(fx::fault::call(0, round))
                .timeout(T)
                .wait()
                .unwrap_or_else(|e| panic!("round {round}: the slot was not given back: {e}")),
            round
        );
    }
}

/// An invocation leaked with `mem::forget` while its output is in place in a `Buffer` (safe
/// code: the borrow of the buffer ends without a drop) cannot make the executor's late write
/// land in another buffer: the memory the call may write is never handed out again (leaked,
/// like the invocation), while memory outside it is.
#[test]
fn a_forgotten_in_place_call_keeps_its_memory_from_other_buffers() {
    let exec = Executor::start("forgotten-buffer", &MATMUL_EXECUTOR);
    let lease = Lease::connect(&exec.socket).expect("lease");
    let n = 768usize;
    let a = vec![0.25f64; n * n];
    let mut out = lease.buffer::<f64>(n * n).expect("buffer");
    let held = out.as_ptr();
    let spare = lease.buffer::<u8>(4096).expect("buffer");
    let spare_at = spare.as_ptr();
    std::mem::forget(send(fx::matmul::invoke(&lease, n as u32, &a, &a, &mut out)));
    drop(out);
    let other = lease.buffer::<f64>(n * n).expect("buffer");
    assert_ne!(
        other.as_ptr(),
        held,
        "memory a forgotten call may still write was handed out again"
    );
    // Even after the answer has come (the worker answers in order).
    fx::noop::invoke(&lease).timeout(T).wait().expect("noop");
    drop(other);
    let again = lease.buffer::<f64>(n * n).expect("buffer");
    assert_ne!(
        again.as_ptr(),
        held,
        "the forgotten call's memory came back"
    );
    drop(spare);
    assert_eq!(
        lease.buffer::<u8>(4096).expect("buffer").as_ptr(),
        spare_at,
        "memory the call cannot write was held back"
    );
}

/// An executor stopped by SIGTERM or SIGINT (`kill`, Ctrl-C) removes its socket and ends by
/// that signal, as it would have without the handler; its client's calls then fail with
/// `ExecutorGone`. What its functions start keeps the default actions (a handler does not
/// survive `exec`). (A stopped executor used to leave its socket file behind.)
#[test]
fn an_executor_stopped_by_a_signal_removes_its_socket() {
    use std::os::unix::process::ExitStatusExt;
    for (name, sig) in [("stop-term", libc::SIGTERM), ("stop-int", libc::SIGINT)] {
        let mut exec = Executor::start(name, &["--cores", "1", "--hot-timeout-us", "1000"]);
        let lease = Lease::connect(&exec.socket).expect("lease");
        let child = lease
            .invoke(fx::fault::call(4, 1000))
            .timeout(T)
            .wait()
            .expect("a process started");
        assert_ne!(child, 0, "the function could not start `sleep`");
        let status = std::fs::read_to_string(format!("/proc/{child}/status")).expect("status");
        // Neither blocked, ignored nor caught: SIGINT (bit 1) and SIGTERM (bit 14).
        let term_int = (1u64 << (libc::SIGINT - 1)) | (1 << (libc::SIGTERM - 1));
        for field in ["SigBlk:", "SigIgn:", "SigCgt:"] {
            let mask = status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .expect("a signal mask");
            assert_eq!(
                mask & term_int,
                0,
                "the function's process: {field} {mask:x}"
            );
        }
        tests::signal(child as u32, libc::SIGKILL);
        assert!(exec.socket.exists());
        tests::signal(exec.pid(), sig);
        let status = exec.exited();
        assert_eq!(status.signal(), Some(sig), "{name}: {status}");
        assert!(
            !exec.socket.exists(),
            "{name}: {} left behind",
            exec.socket.display()
        );
        match lease.invoke(fx::fault::call(0, 1)).timeout(T).wait() {
            Err(Error::ExecutorGone) => {}
            other => panic!("{name}: expected the executor gone, got {other:?}"),
        }
    }
}

/// A signal the executor was started with ignored (`nohup`, `trap '' HUP`) stays ignored: the
/// socket's handler does not take it over (SIGHUP is in the process's `SigIgn`, not its
/// `SigCgt`); SIGTERM, not ignored, still removes the socket.
#[test]
fn an_executor_keeps_the_signals_it_was_started_ignoring() {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    let dir = tests::scratch_dir("exec-nohup");
    let socket = dir.join("executor.sock");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' HUP; exec \"$0\" \"$@\"")
        .arg(tests::executor_binary())
        .args([
            "run",
            "--cores",
            "1",
            "--hot-timeout-us",
            "1000",
            "--library",
        ])
        .arg(tests::example_package())
        .arg("--socket")
        .arg(&socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawning the executor");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("its ready line");
    assert!(line.starts_with("ready "), "{line:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("status");
    let mask = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .expect("a signal mask")
    };
    let (hup, term) = (1u64 << (libc::SIGHUP - 1), 1u64 << (libc::SIGTERM - 1));
    assert_eq!(mask("SigIgn:") & hup, hup, "SIGHUP no longer ignored");
    assert_eq!(
        mask("SigCgt:") & (hup | term),
        term,
        "caught: {:x}",
        mask("SigCgt:")
    );
    tests::signal(child.id(), libc::SIGTERM);
    let status = tests::exited(&mut child, "the executor");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    assert!(!socket.exists(), "{} left behind", socket.display());
}

/// `run --socket` replaces only a stale socket (nobody listening): a file that is not a socket
/// stays, and so does a live executor's socket (the second executor refuses to start, saying
/// why); a killed executor's socket is replaced.
#[test]
fn an_executor_replaces_only_a_stale_socket() {
    let dir = tests::scratch_dir("exec-socket-path");
    // An executor that must refuse to start (one that starts instead, the bug, is killed).
    let run = |socket: &std::path::Path| {
        tests::refused_start(
            std::process::Command::new(tests::executor_binary())
                .arg("run")
                .arg("--library")
                .arg(tests::example_package())
                .arg("--socket")
                .arg(socket)
                .args(["--cores", "1", "--once"]),
        )
    };
    let file = dir.join("notes.txt");
    std::fs::write(&file, b"keep me").expect("write");
    let err = run(&file);
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(
        std::fs::read(&file).expect("the file is still there"),
        b"keep me"
    );

    // A socket something else (not an executor) listens on.
    let foreign = dir.join("foreign.sock");
    let listener = std::os::unix::net::UnixListener::bind(&foreign).expect("bind");
    let err = run(&foreign);
    assert!(err.contains("another process is listening"), "{err}");
    drop(listener);

    let mut first = Executor::start("socket-live", &["--cores", "1", "--hot-timeout-us", "0"]);
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(&first.socket).expect("socket").ino();
    let err = run(&first.socket);
    assert!(err.contains("another executor holds"), "{err}");
    assert_eq!(
        std::fs::metadata(&first.socket).expect("socket").ino(),
        inode
    );
    let lease = Lease::connect(&first.socket).expect("the first executor still serves");
    lease
        .invoke(fx::noop::call())
        .timeout(T)
        .wait()
        .expect("a call to the first executor");
    drop(lease);

    // Killed, it leaves its socket: the next executor replaces it.
    first.kill();
    assert!(first.socket.exists());
    let mut second = std::process::Command::new(tests::executor_binary())
        .arg("run")
        .arg("--library")
        .arg(tests::example_package())
        .arg("--socket")
        .arg(&first.socket)
        .args(["--cores", "1", "--hot-timeout-us", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawning rfaas-executor");
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(second.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the ready line");
    assert!(line.starts_with("ready "), "{line}");
    let lease = Lease::connect(&first.socket).expect("the second executor serves");
    lease
        .invoke(fx::noop::call())
        .timeout(T)
        .wait()
        .expect("a call to the second executor");
    drop(lease);
    let _ = second.kill();
    let _ = second.wait();
}

/// A waker that queues its future's index for a small executor of the test's own, and counts.
struct Ready {
    index: usize,
    queue: std::sync::Arc<(std::sync::Mutex<Vec<usize>>, std::sync::Condvar)>,
}

impl std::task::Wake for Ready {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.queue.0.lock().expect("queue").push(self.index);
        self.queue.1.notify_one();
    }
}

/// Futures waiting for a free slot are woken one per freed slot, first come first served, not
/// all of them at every freed slot: a thousand futures behind two slots used to wake each
/// other quadratically. Every one of them still gets its slot and its answer, driven by an
/// executor that polls only the futures woken.
#[test]
fn futures_waiting_for_a_slot_are_woken_one_per_freed_slot() {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    let mut exec = Executor::start(
        "slot-queue",
        &["--cores", "1", "--slots", "2", "--hot-timeout-us", "0"],
    );
    let lease = Lease::connect(&exec.socket).expect("lease");
    let mut idle = Context::from_waker(Waker::noop());
    // Both slots taken by slow calls (sent at their first poll).
    let mut busy: Vec<_> = (0..2)
        .map(|_| Box::pin(lease.invoke(fx::fault::call(2, 100)).timeout(T)))
        .collect();
    for b in &mut busy {
        assert!(b.as_mut().poll(&mut idle).is_pending());
    }
    // A thousand more wait for a slot.
    const M: usize = 1000;
    let queue = Arc::new((std::sync::Mutex::new(Vec::new()), std::sync::Condvar::new()));
    let wakers: Vec<Waker> = (0..M)
        .map(|index| {
            Waker::from(Arc::new(Ready {
                index,
                queue: queue.clone(),
            }))
        })
        .collect();
    // With deadlines, far off: a future waiting for a slot is woken by the tick only once its
    // deadline has passed (all of them used to be, at every tick).
    let mut queued: Vec<_> = (0..M)
        .map(|i| {
            Some(Box::pin(
                lease.invoke(fx::fault::call(0, i as u64)).timeout(T),
            ))
        })
        .collect();
    for (q, w) in queued.iter_mut().zip(&wakers) {
        let q = q.as_mut().expect("pending");
        assert!(q.as_mut().poll(&mut Context::from_waker(w)).is_pending());
    }
    // The slow calls end (taken here), freeing both slots.
    for b in &mut busy {
        loop {
            match b.as_mut().poll(&mut idle) {
                Poll::Ready(r) => {
                    assert_eq!(r.expect("a slow call"), 100);
                    break;
                }
                Poll::Pending => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
    drop(busy);
    // Two slots freed: two futures woken, and at most one more per tick of the lease's
    // progress thread (every 20 ms, in case a wake-up went astray). All thousand at each freed
    // slot before.
    let woken = queue.0.lock().expect("queue").len();
    assert!(
        (2..M / 2).contains(&woken),
        "{woken} wake-ups of {M} futures waiting for 2 freed slots"
    );
    // Every one completes, with its own answer, polled only when woken.
    let mut left = M;
    while left > 0 {
        let ready: Vec<usize> = {
            let mut q = queue.0.lock().expect("queue");
            if q.is_empty() {
                let (g, waited) = queue.1.wait_timeout(q, T).expect("queue");
                q = g;
                assert!(
                    !waited.timed_out() || !q.is_empty(),
                    "{left} futures never woken again"
                );
            }
            std::mem::take(&mut *q)
        };
        for i in ready {
            let Some(q) = queued[i].as_mut() else {
                continue;
            };
            if let Poll::Ready(r) = q.as_mut().poll(&mut Context::from_waker(&wakers[i])) {
                assert_eq!(r.expect("a queued call"), i as u64);
                queued[i] = None;
                left -= 1;
            }
        }
    }
    assert!(exec.is_running());
}

/// What a call writing in place may still write is kept from new buffers while it is in
/// flight, and nothing more, nor longer: a buffer dropped meanwhile outside the call's outputs
/// is free at once (the lease used to keep everything from the arena's start up to the call's
/// last buffer), and one between its outputs is free once the call is done (it used to stay
/// kept for good, until no buffer fit).
#[test]
fn buffers_dropped_while_a_call_writes_in_place_come_back() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    // Stopped while a call is out, the executor answers it only when it goes on.
    let exec = Executor::start("buffer-return", &["--cores", "1", "--hot-timeout-us", "0"]);
    let (stop, go) = (
        || tests::stop_process(exec.pid()),
        || tests::signal(exec.pid(), libc::SIGCONT),
    );
    let mut options = rfaas::LeaseOptions::default();
    options.buffer_bytes = 4 << 20;
    let lease = Lease::connect_with(&exec.socket, &options).expect("lease");
    /// Polls `call` once with the executor stopped (`stop`): it must be out, unanswered.
    fn sent_unanswered<F: Future + Unpin>(call: &mut F, stop: impl Fn(), go: impl Fn())
    where
        F::Output: std::fmt::Debug,
    {
        stop();
        if let Poll::Ready(r) = Pin::new(call).poll(&mut Context::from_waker(Waker::noop())) {
            go();
            panic!("sent, not answered: {r:?}");
        }
    }
    /// Polls `call` until it is done.
    fn finish<F: Future + Unpin>(call: &mut F) -> F::Output {
        loop {
            if let Poll::Ready(r) =
                Pin::new(&mut *call).poll(&mut Context::from_waker(Waker::noop()))
            {
                return r;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // Before the call's output.
    let big = lease.buffer::<u8>(3 << 20).expect("buffer");
    let mut out = lease.buffer::<u8>(8).expect("buffer");
    let mut call = Box::pin(lease.invoke(fx::echo::call(&[7], &mut out)).timeout(T));
    sent_unanswered(&mut call, stop, go);
    drop(big);
    let again = lease.buffer::<u8>(3 << 20);
    go();
    let again = again.expect("the memory of a buffer before the call's output, free at once");
    assert_eq!(finish(&mut call).expect("echo"), 1);
    drop(call);
    assert_eq!(out[0], 7);
    drop((again, out));

    // Between the call's outputs.
    let xs: Vec<f64> = (0..1000).map(|i| i as f64 / 100.0).collect();
    let mut sin = lease.buffer::<f64>(1000).expect("buffer");
    let middle = lease.buffer::<u8>(3 << 20).expect("buffer");
    let mut cos = lease.buffer::<f64>(1000).expect("buffer");
    let mut call = Box::pin(
        lease
            .invoke(fx::sincos::call(&xs, &mut sin, &mut cos))
            .timeout(T),
    );
    sent_unanswered(&mut call, stop, go);
    drop(middle);
    // The executor may write there as far as the lease knows: kept while the call is out.
    let kept = lease.buffer::<u8>(3 << 20);
    go();
    match kept {
        Err(Error::BufferSpace { .. }) => {}
        other => panic!("memory inside a call in flight handed out: {other:?}"),
    }
    finish(&mut call).expect("sincos");
    drop(call);
    assert_eq!(sin[10], xs[10].sin());
    lease
        .buffer::<u8>(3 << 20)
        .expect("the memory between the call's outputs, free once it is done");
}

/// A timeout beyond the clock's range (`Duration::MAX`, "no limit") is no timeout, blocking
/// or awaited: it used to panic adding it to the clock once a call had to wait.
#[test]
fn a_timeout_too_long_for_the_clock_is_none() {
    let exec = Executor::start("timeout-max", &["--cores", "1", "--hot-timeout-us", "0"]);
    let lease = Lease::connect(&exec.socket).expect("lease");
    let slow = || lease.invoke(fx::fault::call(2, 30)).timeout(Duration::MAX);
    assert_eq!(slow().wait().expect("a slow call, waited on"), 30);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    assert_eq!(rt.block_on(slow()).expect("a slow call, awaited"), 30);
}
