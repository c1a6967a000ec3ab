//! End to end over TCP loopback: the same executor binary, `--listen`, and `Lease::connect_tcp`.

use functions_example as fx;
use rfaas::{
    CallError, EncodeError, Encoded, Error, Gather, Lease, LeaseOptions, Placement, RemoteCall,
    Status,
};
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// A generated call, passed through, noting how the lease had it encoded: how many times
/// through `encode_gather`, how many pieces it left out, and where the first one lies.
struct Spy<'c, C> {
    call: C,
    /// Gathers every input slice, however small (the first lies where the lease's invocation
    /// header would be, were the pieces placed from the start of what is sent).
    greedy: bool,
    gathered: &'c AtomicUsize,
    pieces: &'c AtomicUsize,
    first: &'c AtomicUsize,
}

impl<C: RemoteCall> RemoteCall for Spy<'_, C> {
    type Output = C::Output;
    const NAME: &'static str = C::NAME;
    const FINGERPRINT: u64 = C::FINGERPRINT;

    fn layout(&self, placement: &Placement) -> Result<Encoded, EncodeError> {
        self.call.layout(placement)
    }

    fn encode(&self, buf: &mut [u8], placement: &Placement) -> Result<Encoded, EncodeError> {
        self.call.encode(buf, placement)
    }

    fn encode_gather<'s>(
        &'s self,
        buf: &mut [u8],
        placement: &Placement,
        gather: &mut Gather<'s>,
    ) -> Result<Encoded, EncodeError> {
        if self.greedy {
            *gather = Gather::with_min(1);
        }
        let r = self.call.encode_gather(buf, placement, gather);
        self.gathered.fetch_add(1, Ordering::Relaxed);
        self.pieces.store(gather.pieces().len(), Ordering::Relaxed);
        if let Some((_, bytes)) = gather.pieces().first() {
            self.first.store(bytes.as_ptr() as usize, Ordering::Relaxed);
        }
        r
    }

    fn decode(
        self,
        status: Status,
        output: &[u8],
        placement: &Placement,
    ) -> Result<Self::Output, CallError> {
        self.call.decode(status, output, placement)
    }
}

/// Over TCP the lease has calls encoded for a gather write, and an input slice of 16 KiB or
/// more goes out from the caller's own memory (the result proves the bytes arrived); a smaller
/// one is copied. Over shared memory nothing is gathered: inputs are encoded in place.
#[test]
fn large_inputs_over_tcp_go_out_from_the_callers_memory() {
    let args = [
        "--cores",
        "1",
        "--hot-timeout-us",
        "2000",
        "--slot-size",
        "262144",
    ];
    let tcp = Executor::start_tcp("tcp-gather", "127.0.0.1:0", &args);
    let shm = Executor::start("shm-gather", &args);
    let leases = [
        (lease(&tcp), true),
        (Lease::connect(&shm.socket).expect("shm lease"), false),
    ];
    for (lease, over_tcp) in &leases {
        for (len, large) in [
            (50_000usize, true),
            (16 * 1024, true),
            (16 * 1024 - 1, false),
        ] {
            let input: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = vec![0u8; len];
            let (gathered, pieces, first) = Default::default();
            let spy = Spy {
                call: fx::echo::call(&input, &mut out),
                greedy: false,
                gathered: &gathered,
                pieces: &pieces,
                first: &first,
            };
            assert_eq!(
                lease.invoke(spy).timeout(T).wait().expect("echo"),
                len as u64
            );
            assert_eq!(out, input, "{len} bytes, tcp {over_tcp}");
            let want = if *over_tcp {
                (1, usize::from(large))
            } else {
                (0, 0)
            };
            assert_eq!(
                (gathered.into_inner(), pieces.into_inner()),
                want,
                "{len} bytes, tcp {over_tcp}: (encode_gather calls, pieces)"
            );
            if *over_tcp && large {
                assert_eq!(
                    first.into_inner(),
                    input.as_ptr() as usize,
                    "sent from the caller's memory"
                );
            }
        }
    }
}

/// An `encode_gather` may record any input slice, even one that starts right after the
/// argument layout, inside what would be the invocation header's bytes were its offset taken
/// for the frame's: pieces are placed after the header the lease writes, so the call arrives
/// intact, and the lease goes on serving.
#[test]
fn pieces_never_fall_on_the_invocation_header() {
    let exec = Executor::start_tcp(
        "tcp-gather-greedy",
        "127.0.0.1:0",
        &["--cores", "1", "--hot-timeout-us", "2000"],
    );
    let lease = lease(&exec);
    let input: Vec<u8> = (0..100).map(|i| (i * 7 + 3) as u8).collect();
    let mut out = vec![0u8; 100];
    let counters: [AtomicUsize; 3] = Default::default();
    let spy = Spy {
        call: fx::echo::call(&input, &mut out),
        greedy: true,
        gathered: &counters[0],
        pieces: &counters[1],
        first: &counters[2],
    };
    assert_eq!(lease.invoke(spy).timeout(T).wait().expect("echo"), 100);
    assert_eq!(out, input, "the gathered input arrived where it belongs");
    assert_eq!(
        counters[1].load(Ordering::Relaxed),
        1,
        "the greedy encoding made its piece"
    );
    assert_eq!(counters[2].load(Ordering::Relaxed), input.as_ptr() as usize);
    out.fill(0);
    for _ in 0..20 {
        assert_eq!(
            fx::echo::invoke(&lease, &input, &mut out)
                .timeout(T)
                .wait()
                .expect("echo"),
            100
        );
    }
    assert_eq!(out, input);
    assert_eq!(lease.protocol_violations(), 0);
}
