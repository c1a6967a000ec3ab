//! End to end over TCP loopback: the same executor binary, `--listen`, and `Lease::connect_tcp`.

use functions_example as fx;
use rfaas::transport::tcp::{TcpEndpoint, TcpQueue};
use rfaas::transport::{Endpoint, Queue, Region, recv_json, send_json};
use rfaas::wire::{
    Attach, FLAG_PLACED, HEADER_LEN, Hello, INPUT_REGION, InvocationHeader, RESULT_REGION,
    SEND_REGION, SESSION_PROTOCOL, Verdict, Welcome, split_response_imm,
};
use rfaas::{
    CallError, EncodeError, Encoded, Error, Gather, Lease, LeaseOptions, Placement, RemoteCall,
    Status,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tests::{Executor, Rng};
use zerocopy::IntoBytes;

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
    // Buffers work over TCP too (the worker writes their results into them).
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

// SAFETY: every method passes through to the wrapped `C`, which keeps the contract; a greedy
// gather changes which input bytes are sent from where, not what the encoding says.
unsafe impl<C: RemoteCall> RemoteCall for Spy<'_, C> {
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

/// A generated call, passed through, noting whether the lease had its outputs placed in the
/// caller's buffers and how many output bytes came back through the result area.
struct Seen<'c, C> {
    call: C,
    in_place: &'c AtomicBool,
    returned: &'c AtomicUsize,
}

// SAFETY: every method passes through to the wrapped `C`, which keeps the contract; the
// encoding's `in_place` is only noted.
unsafe impl<C: RemoteCall> RemoteCall for Seen<'_, C> {
    type Output = C::Output;
    const NAME: &'static str = C::NAME;
    const FINGERPRINT: u64 = C::FINGERPRINT;

    fn layout(&self, placement: &Placement) -> Result<Encoded, EncodeError> {
        self.call.layout(placement)
    }

    fn encode(&self, buf: &mut [u8], placement: &Placement) -> Result<Encoded, EncodeError> {
        let r = self.call.encode(buf, placement);
        if let Ok(e) = &r {
            self.in_place.store(e.in_place, Ordering::Relaxed);
        }
        r
    }

    fn encode_gather<'s>(
        &'s self,
        buf: &mut [u8],
        placement: &Placement,
        gather: &mut Gather<'s>,
    ) -> Result<Encoded, EncodeError> {
        let r = self.call.encode_gather(buf, placement, gather);
        if let Ok(e) = &r {
            self.in_place.store(e.in_place, Ordering::Relaxed);
        }
        r
    }

    fn decode(
        self,
        status: Status,
        output: &[u8],
        placement: &Placement,
    ) -> Result<Self::Output, CallError> {
        self.returned.store(output.len(), Ordering::Relaxed);
        self.call.decode(status, output, placement)
    }
}

/// Runs `call` on `lease` through [`Seen`]: its result, whether its outputs were placed, and
/// how many output bytes came back through the result area.
fn seen<C: RemoteCall>(lease: &Lease, call: C) -> (Result<C::Output, Error>, bool, usize) {
    let (in_place, returned) = (AtomicBool::new(false), AtomicUsize::new(usize::MAX));
    let r = lease
        .invoke(Seen {
            call,
            in_place: &in_place,
            returned: &returned,
        })
        .timeout(T)
        .wait();
    (r, in_place.into_inner(), returned.into_inner())
}

/// On a fabric without a window into our memory (TCP, RDMA): outputs into `rfaas::Buffer`s
/// are written into them by the worker (only the return value comes back through the result
/// area, and nothing is copied on our side), other outputs are copied as before; an error
/// leaves the buffers as they were; buffers of several threads in flight at once each get
/// their own results.
pub(crate) fn buffer_outputs_arrive_in_place(lease: &Lease) {
    let input: Vec<u8> = (0..50_000).map(|i| (i % 249) as u8).collect();
    let mut buf = lease.buffer::<u8>(input.len()).expect("buffer");
    buf.fill(0xee);
    let (r, in_place, returned) = seen(lease, fx::echo::call(&input, &mut buf));
    assert_eq!(r.expect("echo into a buffer"), input.len() as u64);
    assert!(in_place, "a buffer output is placed");
    assert_eq!(
        returned, 8,
        "only the return value travels through the result area"
    );
    assert!(buf[..] == input[..], "the buffer holds the echo");
    // The same into a Vec: copied from the result area.
    let mut out = vec![0u8; input.len()];
    let (r, in_place, returned) = seen(lease, fx::echo::call(&input, &mut out));
    assert_eq!(r.expect("echo into a Vec"), input.len() as u64);
    assert!(!in_place);
    assert_eq!(returned, 8 + input.len());
    assert_eq!(out, input);
    // Two output buffers (two placed ranges, no return value), then one buffer and one Vec
    // (copied: all outputs are placed or none).
    let mut rng = Rng::new(11);
    let x: Vec<f64> = (0..1000).map(|_| rng.range(-5.0, 5.0)).collect();
    let (mut sl, mut cl) = (vec![0.0; 1000], vec![0.0; 1000]);
    fx::sincos(&x, &mut sl, &mut cl).expect("local sincos");
    let mut sb = lease.buffer::<f64>(1000).expect("buffer");
    let mut cb = lease.buffer::<f64>(1000).expect("buffer");
    let (r, in_place, returned) = seen(lease, fx::sincos::call(&x, &mut sb, &mut cb));
    r.expect("sincos into buffers");
    assert!(in_place);
    assert_eq!(returned, 0);
    assert_eq!((&sb[..], &cb[..]), (&sl[..], &cl[..]));
    sb.fill(0.0);
    let mut cv = vec![0.0; 1000];
    let (r, in_place, _) = seen(lease, fx::sincos::call(&x, &mut sb, &mut cv));
    r.expect("sincos into a buffer and a Vec");
    assert!(!in_place);
    assert_eq!((&sb[..], &cv[..]), (&sl[..], &cl[..]));
    // A function error: the message comes back, the buffers stay as they were.
    let mut short = lease.buffer::<f64>(999).expect("buffer");
    sb.fill(7.0);
    short.fill(7.0);
    match seen(lease, fx::sincos::call(&x, &mut sb, &mut short)).0 {
        Err(Error::Call(CallError::Function(m))) => assert!(!m.is_empty()),
        other => panic!("expected a function error, got {other:?}"),
    }
    assert!(sb.iter().chain(short.iter()).all(|&v| v == 7.0));
    // The whole message, however small the outputs (it has the slot's room, not theirs).
    let (mut one, mut two) = (
        lease.buffer::<f64>(1).expect("buffer"),
        lease.buffer::<f64>(2).expect("buffer"),
    );
    let local = fx::sincos(&[0.5], &mut [0.0], &mut [0.0; 2]).expect_err("lengths differ");
    match seen(lease, fx::sincos::call(&[0.5], &mut one, &mut two)).0 {
        Err(Error::Call(CallError::Function(m))) => assert_eq!(m, local.to_string()),
        other => panic!("expected a function error, got {other:?}"),
    }
    // Staged at the executor, a buffer's output is bound by the slot too: the error says so,
    // without suggesting a buffer.
    let mut over = lease.buffer::<u8>(lease.slot_size() + 8).expect("buffer");
    match lease
        .invoke(fx::echo::call(&[1u8; 8], &mut over))
        .timeout(T)
        .wait()
    {
        Err(
            e @ Error::TooLarge {
                what: "output",
                buffer_helps: false,
                ..
            },
        ) => assert!(!e.to_string().contains("Buffer"), "{e}"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    drop(over);
    // Threads with buffers of their own, several invocations in flight each.
    std::thread::scope(|s| {
        for t in 0..3u8 {
            s.spawn(move || {
                let inputs: Vec<Vec<u8>> = (0..4u8)
                    .map(|k| (0..20_000).map(|i| (i as u8) ^ (t * 16 + k)).collect())
                    .collect();
                let mut bufs: Vec<_> = (0..4)
                    .map(|_| lease.buffer::<u8>(20_000).expect("buffer"))
                    .collect();
                for _ in 0..10 {
                    let pending: Vec<_> = inputs
                        .iter()
                        .zip(bufs.iter_mut())
                        .map(|(i, b)| fx::echo::invoke(lease, i, b).timeout(T))
                        .collect();
                    for p in pending {
                        assert_eq!(p.wait().expect("echo"), 20_000);
                    }
                    for (i, b) in inputs.iter().zip(&bufs) {
                        assert!(b[..] == i[..], "thread {t}: a buffer holds another's echo");
                    }
                }
            });
        }
    });
    assert_eq!(lease.protocol_violations(), 0);
}

#[test]
fn buffer_outputs_over_tcp_arrive_in_place() {
    let mut exec = Executor::start_tcp(
        "tcp-placed",
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
    buffer_outputs_arrive_in_place(&lease(&exec));
    assert!(exec.is_running());
}

/// A client speaking the TCP session by hand (one worker), with a result region of
/// `result_len` bytes (the result areas, then room of its own).
struct RawTcp {
    _control: std::net::TcpStream,
    ep: TcpEndpoint,
    cq: Arc<TcpQueue>,
    welcome: Welcome,
    result: Arc<Region>,
    send: Arc<Region>,
}

impl RawTcp {
    fn connect(exec: &Executor, result_len: usize) -> RawTcp {
        let mut control = std::net::TcpStream::connect(&exec.address).expect("connect");
        let welcome: Welcome = recv_json(&mut control).expect("welcome");
        assert_eq!(welcome.workers, 1);
        send_json(
            &mut control,
            &Hello {
                protocol: SESSION_PROTOCOL,
                result_len: result_len as u64,
                token: None,
            },
        )
        .expect("hello");
        let verdict: Verdict = recv_json(&mut control).expect("verdict");
        assert_eq!(verdict, Verdict::Accepted);
        let mut data = std::net::TcpStream::connect(welcome.data.as_deref().expect("data address"))
            .expect("data connection");
        send_json(&mut data, &Attach { token: None }).expect("attach");
        let result = Arc::new(Region::new(RESULT_REGION, result_len).expect("region"));
        let send =
            Arc::new(Region::staging(SEND_REGION, welcome.slot_size as usize).expect("region"));
        let cq = TcpQueue::new();
        let ep =
            TcpEndpoint::connect(data, vec![result.clone(), send.clone()], &cq).expect("endpoint");
        RawTcp {
            _control: control,
            ep,
            cq,
            welcome,
            result,
            send,
        }
    }

    fn index_of(&self, name: &str) -> u32 {
        let f = self.welcome.functions.iter().find(|f| f.name == name);
        f.expect("function").index
    }

    /// Sends `header` and `input` into slot 0 and returns the answer's `(id, status, len)`.
    fn call(&self, header: InvocationHeader, input: &[u8]) -> (u32, Status, u32) {
        self.send.write(0, header.as_bytes()).expect("header");
        self.send.write(HEADER_LEN, input).expect("input");
        let len = HEADER_LEN + input.len();
        self.ep
            .write_with_imm(SEND_REGION, 0, len, INPUT_REGION, 0, 0)
            .expect("send");
        match self.cq.wait(Duration::from_secs(10)) {
            Ok(Some(c)) => {
                let (id, raw) = split_response_imm(c.imm);
                (id, Status::from_u32(raw).expect("known status"), c.len)
            }
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn read(&self, off: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.result.read(off, &mut v).expect("read");
        v
    }
}

/// `echo`'s input for `data` (laid out for copied outputs: return value at 0, the slice at 8),
/// followed by a placement list of `ranges` `(at, len, dest)` and `count`.
fn placed_echo(data: &[u8], ranges: &[(u32, u32, u32)], count: u32) -> Vec<u8> {
    let mut sink = vec![0u8; data.len()];
    let call = fx::echo::call(data, &mut sink);
    let mut v = vec![0u8; call.layout(&Placement::NONE).expect("layout").input_len];
    call.encode(&mut v, &Placement::NONE).expect("encode");
    for &(at, len, dest) in ranges {
        for w in [at, len, dest] {
            v.extend_from_slice(&w.to_le_bytes());
        }
    }
    v.extend_from_slice(&count.to_le_bytes());
    v
}

/// Placement lists from a hostile client over TCP: a valid one lands the output where it
/// says (and only the return value in the result area); lists that are malformed, reach
/// outside the staging or the client's region, or do not match the function's output are
/// answered `BadCall` without writing anything, and the executor keeps serving.
#[test]
fn hostile_placement_lists_over_tcp_are_refused() {
    let mut exec = Executor::start_tcp(
        "tcp-placed-hostile",
        "127.0.0.1:0",
        &[
            "--cores",
            "1",
            "--slots",
            "4",
            "--slot-size",
            "4096",
            "--hot-timeout-us",
            "1000",
        ],
    );
    let region = 4 * 4096 + 65536;
    let raw = RawTcp::connect(&exec, region);
    let echo = raw.index_of("echo");
    let data: Vec<u8> = (0..64).map(|i| (i * 5 + 1) as u8).collect();
    let header = |id: u32, input_len: usize, cap: u32| InvocationHeader {
        id: id.into(),
        function: echo.into(),
        input_len: (input_len as u32).into(),
        result_offset: 0.into(),
        result_cap: cap.into(),
        flags: FLAG_PLACED.into(),
    };
    // Valid: the 64 echoed bytes go to 20 000 bytes past the result area.
    let input = placed_echo(&data, &[(8, 64, 20_000)], 1);
    assert_eq!(
        raw.call(header(1, input.len(), 72), &input),
        (1, Status::Ok, 8)
    );
    assert_eq!(raw.read(20_000, 64), data);
    assert_eq!(raw.read(0, 8), 64u64.to_le_bytes());
    assert_eq!(
        raw.read(8, 64),
        [0; 64],
        "the output slice did not come back"
    );
    let short = &data[..32];
    type Case = (&'static str, Vec<u8>, u32);
    let cases: [Case; 8] = [
        (
            "too many ranges",
            placed_echo(&data, &[(8, 1, 30_000); 5], 5),
            72,
        ),
        (
            "a count beyond the limit",
            placed_echo(&data, &[(8, 64, 30_000)], 200),
            72,
        ),
        (
            "overlapping ranges",
            placed_echo(&data, &[(8, 40, 30_000), (40, 32, 31_000)], 2),
            72,
        ),
        (
            "an empty range",
            placed_echo(&data, &[(8, 0, 30_000)], 1),
            72,
        ),
        ("a count past the input", 1u32.to_le_bytes().to_vec(), 72),
        (
            "a range past the result capacity",
            placed_echo(&data, &[(8, 64, 30_000)], 1),
            64,
        ),
        (
            "a destination past the client's region",
            placed_echo(&data, &[(8, 64, region as u32 - 32)], 1),
            72,
        ),
        (
            "a range past the function's output",
            placed_echo(short, &[(8, 64, 30_000)], 1),
            72,
        ),
    ];
    for (i, (what, input, cap)) in cases.into_iter().enumerate() {
        let id = 10 + i as u32;
        assert_eq!(
            raw.call(header(id, input.len(), cap), &input),
            (id, Status::BadCall, 0),
            "{what}"
        );
    }
    assert!(
        raw.read(30_000, 2000).iter().all(|&b| b == 0)
            && raw.read(region - 32, 32).iter().all(|&b| b == 0),
        "nothing refused was written"
    );
    // The session still serves, and so does the executor.
    let input = placed_echo(&data, &[(8, 64, 40_000)], 1);
    assert_eq!(
        raw.call(header(2, input.len(), 72), &input),
        (2, Status::Ok, 8)
    );
    assert_eq!(raw.read(40_000, 64), data);
    drop(raw);
    let lease = lease(&exec);
    assert_eq!(
        fx::fault::invoke(&lease, 0, 5)
            .timeout(T)
            .wait()
            .expect("fault"),
        5
    );
    assert!(exec.is_running());
}
