//! A misbehaving executor speaking the session protocol by hand: answers the client did not
//! expect must not complete anybody's invocation.

use functions_example as fx;
use rfaas::transport::Region;
use rfaas::transport::shm::{CompletionQueue, ShmEndpoint, Side, recv_message, send_message};
use rfaas::wire::{
    ABI_VERSION, FunctionInfo, HEADER_LEN, Hello, INPUT_REGION, InvocationHeader, SESSION_PROTOCOL,
    Status, Verdict, Welcome, response_imm,
};
use rfaas::{Lease, RemoteCall};
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::time::Duration;
use zerocopy::FromBytes;

const SLOT: usize = 4096;

/// The executor's side of one session (one worker, one slot): welcome, hello, verdict, then
/// the endpoint.
struct Rogue {
    ep: ShmEndpoint,
    cq: std::sync::Arc<CompletionQueue>,
    input: std::sync::Arc<Region>,
    _stream: std::os::unix::net::UnixStream,
}

impl Rogue {
    fn accept(listener: &UnixListener) -> Rogue {
        let (stream, _) = listener.accept().expect("accept");
        let welcome = Welcome {
            protocol: SESSION_PROTOCOL,
            abi_version: ABI_VERSION,
            functions: vec![FunctionInfo {
                index: 0,
                name: <fx::noop::Call as RemoteCall>::NAME.to_owned(),
                fingerprint: <fx::noop::Call as RemoteCall>::FINGERPRINT,
            }],
            workers: 1,
            slots: 1,
            slot_size: SLOT as u32,
            data: None,
        };
        send_message(&stream, &welcome, &[]).expect("welcome");
        let (_hello, _): (Hello, _) = recv_message(&stream).expect("hello");
        send_message(&stream, &Verdict::Accepted, &[]).expect("verdict");
        let input = std::sync::Arc::new(Region::new(INPUT_REGION, SLOT).expect("region"));
        let cq = CompletionQueue::new().expect("cq");
        let ep = ShmEndpoint::connect(&stream, Side::Passive, vec![input.clone()], &cq)
            .expect("endpoint");
        Rogue {
            ep,
            cq,
            input,
            _stream: stream,
        }
    }

    /// The next invocation's id (as the client wrote it in the header).
    fn next_id(&self) -> u32 {
        let c = loop {
            match self.cq.wait(Duration::from_secs(10)) {
                Ok(Some(c)) => break c,
                Ok(None) => {}
                Err(e) => panic!("transport error: {e}"),
            }
        };
        assert_eq!(c.imm, 0, "the only slot");
        let mut raw = [0u8; HEADER_LEN];
        self.input.read(0, &mut raw).expect("header");
        InvocationHeader::read_from_bytes(&raw)
            .expect("header bytes")
            .id
            .get()
    }

    fn answer(&self, id: u32, status: Status) {
        self.answer_with_len(id, status, 0);
    }

    /// An answer claiming `len` bytes of output.
    fn answer_with_len(&self, id: u32, status: Status, len: usize) {
        self.ep
            .signal(response_imm(id, status), len)
            .expect("answer");
    }
}

/// A rogue executor on a fresh socket that runs `script` on its session (then keeps the
/// session up until the client leaves), and the client's lease to it.
fn session(
    name: &str,
    script: impl FnOnce(&Rogue) + Send + 'static,
) -> (Lease, std::thread::JoinHandle<()>) {
    let path = tests::scratch_dir(name).join("rogue.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let rogue = std::thread::spawn(move || {
        let r = Rogue::accept(&listener);
        script(&r);
        let _ = r.cq.wait(Duration::from_secs(10));
    });
    (Lease::connect(&path).expect("lease"), rogue)
}

/// Calls `noop` and gives up on it after 50 ms (the rogue holds its answer back), tells the
/// rogue it may answer (`go`), and calls `noop` again: that call waits for the slot (the lease
/// has one), freed by the first call's answer, then for its own answer.
fn abandon_one_then_call_again(lease: &Lease, go: &mpsc::Sender<()>) -> Result<(), rfaas::Error> {
    let first = fx::noop::invoke(lease)
        .timeout(Duration::from_millis(50))
        .wait();
    assert!(
        matches!(first, Err(rfaas::Error::Timeout(_))),
        "the rogue holds the first answer back: {first:?}"
    );
    go.send(()).expect("rogue alive");
    fx::noop::invoke(lease)
        .timeout(Duration::from_secs(10))
        .wait()
}

/// An invocation is abandoned (timed out), its answer frees the slot, and the next invocation
/// takes the same slot. The executor then repeats the first answer (with another status)
/// before the real one: the repeat is counted as a violation and the new invocation gets its
/// own answer. Before invocation ids carried the slot's round, the repeat completed it.
#[test]
fn a_late_duplicate_answer_does_not_complete_the_slots_next_invocation() {
    let (go, first_may_answer) = mpsc::channel::<()>();
    let (lease, rogue) = session("rogue-duplicate", move |r| {
        let first = r.next_id();
        first_may_answer
            .recv()
            .expect("the client gave up on the first");
        r.answer(first, Status::Ok);
        let second = r.next_id();
        // The repeat, with a status the real answer does not have, then the real answer.
        r.answer(first, Status::Panic);
        r.answer(second, Status::Ok);
    });
    let second = abandon_one_then_call_again(&lease, &go);
    assert!(
        second.is_ok(),
        "the repeat completed the next invocation: {second:?}"
    );
    assert_eq!(
        lease.protocol_violations(),
        1,
        "the repeat is one violation"
    );
    drop(lease);
    rogue.join().expect("rogue");
}

/// The same repeat, for an invocation that was answered normally: it arrives while the slot's
/// next invocation waits (and polls the queue itself), and must not be taken for its answer.
#[test]
fn a_repeated_answer_is_not_taken_for_the_waiting_invocations_own() {
    let (lease, rogue) = session("rogue-repeat", |r| {
        let first = r.next_id();
        r.answer(first, Status::Ok);
        let second = r.next_id();
        r.answer(first, Status::Panic);
        r.answer(second, Status::Ok);
    });
    for round in 0..2 {
        let r = fx::noop::invoke(&lease)
            .timeout(Duration::from_secs(10))
            .wait();
        assert!(r.is_ok(), "invocation {round}: {r:?}");
    }
    assert_eq!(
        lease.protocol_violations(),
        1,
        "the repeat is one violation"
    );
    drop(lease);
    rogue.join().expect("rogue");
}

/// An answer claiming more output than the invocation's result area holds fails that
/// invocation at once with a protocol error (before, nothing completed it: a call without a
/// timeout waited forever), counts as a violation, and frees the slot for the next call.
#[test]
fn an_answer_longer_than_the_result_area_fails_its_invocation() {
    let (lease, rogue) = session("rogue-oversize", |r| {
        let first = r.next_id();
        r.answer_with_len(first, Status::Ok, SLOT + 1);
        let second = r.next_id();
        r.answer(second, Status::Ok);
    });
    // No timeout: the answer alone has to end the call.
    let first = fx::noop::invoke(&lease).wait();
    match &first {
        Err(rfaas::Error::Protocol(m)) => {
            assert!(m.contains(&format!("{} bytes", SLOT + 1)), "{m}")
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert_eq!(lease.protocol_violations(), 1);
    let second = fx::noop::invoke(&lease)
        .timeout(Duration::from_secs(10))
        .wait();
    assert!(second.is_ok(), "the slot was not freed: {second:?}");
    assert_eq!(lease.protocol_violations(), 1);
    drop(lease);
    rogue.join().expect("rogue");
}

/// The same oversized answer for an invocation whose owner gave up: it still frees the slot
/// (the lease has one), or the next invocation would wait for it forever.
#[test]
fn an_oversized_answer_to_an_abandoned_invocation_frees_its_slot() {
    let (go, first_may_answer) = mpsc::channel::<()>();
    let (lease, rogue) = session("rogue-oversize-abandoned", move |r| {
        let first = r.next_id();
        first_may_answer
            .recv()
            .expect("the client gave up on the first");
        r.answer_with_len(first, Status::Ok, u32::MAX as usize);
        let second = r.next_id();
        r.answer(second, Status::Ok);
    });
    let second = abandon_one_then_call_again(&lease, &go);
    assert!(second.is_ok(), "the slot was not freed: {second:?}");
    assert_eq!(lease.protocol_violations(), 1);
    drop(lease);
    rogue.join().expect("rogue");
}

/// The executor's side of a TCP session by hand, one worker: welcome (listing `noop` and
/// `echo`), hello, verdict, the data connection's attach, and the real endpoint on it. Returns
/// the control connection, the endpoint and its queue, a clone of the data socket, and the
/// input region.
fn tcp_rogue_session(
    control: std::net::TcpListener,
    slots: u32,
    slot_size: usize,
) -> (
    std::net::TcpStream,
    rfaas::transport::tcp::TcpEndpoint,
    std::sync::Arc<rfaas::transport::tcp::TcpQueue>,
    std::net::TcpStream,
    std::sync::Arc<Region>,
) {
    use rfaas::transport::tcp::{TcpEndpoint, TcpQueue};
    use rfaas::transport::{recv_json, send_json};
    use rfaas::wire::{Attach, OUTPUT_REGION};
    let (mut control, _) = control.accept().expect("accept control");
    let data = std::net::TcpListener::bind("127.0.0.1:0").expect("bind data");
    let info = |index, name: &str, fingerprint| FunctionInfo {
        index,
        name: name.to_owned(),
        fingerprint,
    };
    let welcome = Welcome {
        protocol: SESSION_PROTOCOL,
        abi_version: ABI_VERSION,
        functions: vec![
            info(0, fx::noop::NAME, fx::noop::FINGERPRINT),
            info(1, fx::echo::NAME, fx::echo::FINGERPRINT),
        ],
        workers: 1,
        slots,
        slot_size: slot_size as u32,
        data: Some(data.local_addr().expect("address").to_string()),
    };
    send_json(&mut control, &welcome).expect("welcome");
    let _hello: Hello = recv_json(&mut control).expect("hello");
    send_json(&mut control, &Verdict::Accepted).expect("verdict");
    let (mut stream, _) = data.accept().expect("accept data");
    let _attach: Attach = recv_json(&mut stream).expect("attach");
    let len = slots as usize * slot_size;
    let regions = vec![
        std::sync::Arc::new(Region::new(INPUT_REGION, len).expect("input")),
        std::sync::Arc::new(Region::new(OUTPUT_REGION, len).expect("output")),
    ];
    let raw = stream.try_clone().expect("clone");
    let cq = TcpQueue::new();
    let input = regions[0].clone();
    let ep = TcpEndpoint::connect(stream, regions, &cq).expect("endpoint");
    (control, ep, cq, raw, input)
}

/// A rogue TCP executor with two slots that waits for two invocations, then sends a frame
/// naming a region the client never offered, and holds the connections until the client
/// leaves.
fn tcp_rogue_breaking_the_framing(control: std::net::TcpListener) {
    use rfaas::transport::Queue;
    use std::io::Write;
    let (mut control, _ep, cq, mut raw, _) = tcp_rogue_session(control, 2, SLOT);
    for _ in 0..2 {
        match cq.wait(Duration::from_secs(10)) {
            Ok(Some(_)) => {}
            other => panic!("expected an invocation, got {other:?}"),
        }
    }
    // Key 99: no region of the client's. Header: key, offset, length, immediate.
    let mut frame = Vec::new();
    frame.extend_from_slice(&99u32.to_le_bytes());
    frame.extend_from_slice(&0u64.to_le_bytes());
    frame.extend_from_slice(&8u32.to_le_bytes());
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame.extend_from_slice(&[0xee; 8]);
    raw.write_all(&frame).expect("hostile frame");
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut control, &mut rest);
}

/// A frame the client cannot place breaks the worker's connection: every invocation in flight
/// there fails as `ExecutorGone` (not only the one whose poll met the frame: before, that one
/// got a transport error and the other waited for an answer that could never come), the
/// violation is counted, and later invocations fail at once.
#[test]
fn a_broken_frame_over_tcp_fails_every_invocation_of_that_worker() {
    let control = std::net::TcpListener::bind("127.0.0.1:0").expect("bind control");
    let addr = control.local_addr().expect("address").to_string();
    let rogue = std::thread::spawn(move || tcp_rogue_breaking_the_framing(control));
    let lease = std::sync::Arc::new(
        Lease::connect_tcp(&addr, &rfaas::LeaseOptions::default()).expect("lease"),
    );
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let lease = lease.clone();
            std::thread::spawn(move || fx::noop::invoke(&lease).timeout(tests::BOUND).wait())
        })
        .collect();
    for c in callers {
        let r = c.join().expect("caller");
        assert!(
            matches!(r, Err(rfaas::Error::ExecutorGone)),
            "an invocation of the broken worker: {r:?}"
        );
    }
    assert_eq!(lease.protocol_violations(), 1);
    let later = fx::noop::invoke(&lease).timeout(tests::BOUND).wait();
    assert!(
        matches!(later, Err(rfaas::Error::ExecutorGone)),
        "after the break: {later:?}"
    );
    drop(lease);
    rogue.join().expect("rogue");
}

/// A welcome listing more functions than a library may export, or fingerprints chosen to
/// collide, is refused before the client says hello (building the lookup table would cost
/// what the executor likes).
#[test]
fn a_welcome_with_too_many_or_colliding_functions_is_refused() {
    for (case, n, colliding) in [("too many", 65_537, false), ("colliding", 300, true)] {
        let path = tests::scratch_dir(&format!("rogue-functions-{n}")).join("rogue.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let rogue = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut welcome = made_up_welcome(n, 1, 1, SLOT as u32);
            if colliding {
                for f in &mut welcome.functions {
                    f.fingerprint = 42;
                }
            }
            send_message(&stream, &welcome, &[]).expect("welcome");
            // The client hangs up instead of saying hello.
            recv_message::<Hello>(&stream).is_err()
        });
        match Lease::connect(&path) {
            Err(rfaas::Error::Handshake(why)) => {
                let words = if colliding {
                    "collide"
                } else {
                    "65537 functions"
                };
                assert!(why.contains(words), "{case}: {why}")
            }
            other => panic!("{case}: expected a refused handshake, got {other:?}"),
        }
        assert!(
            rogue.join().expect("rogue"),
            "{case}: the client said hello"
        );
    }
}

/// An executor over TCP names its data listener's address, a literal IP address and port: a
/// name (whose lookup could take any time) is refused, before the client says hello.
#[test]
fn a_data_address_that_is_no_ip_address_is_refused() {
    use rfaas::transport::{recv_json, send_json};
    let control = std::net::TcpListener::bind("127.0.0.1:0").expect("bind control");
    let addr = control.local_addr().expect("address").to_string();
    let rogue = std::thread::spawn(move || {
        let (mut control, _) = control.accept().expect("accept");
        let welcome = Welcome {
            protocol: SESSION_PROTOCOL,
            abi_version: ABI_VERSION,
            functions: Vec::new(),
            workers: 1,
            slots: 1,
            slot_size: SLOT as u32,
            data: Some("executor.invalid:4000".into()),
        };
        send_json(&mut control, &welcome).expect("welcome");
        recv_json::<Hello>(&mut control).is_err()
    });
    match Lease::connect_tcp(&addr, &rfaas::LeaseOptions::default()) {
        Err(rfaas::Error::Handshake(why)) => {
            assert!(why.contains("executor.invalid:4000"), "{why}")
        }
        other => panic!("expected a refused handshake, got {other:?}"),
    }
    assert!(rogue.join().expect("rogue"), "the client said hello");
}

/// An executor that stops reading its data connection: the client's sends find the socket
/// full. The call whose request is stuck midway gives up after 10 s without progress (at
/// least that long, since an honest executor reads nothing while it runs a function), closing
/// the connection, and times out; later calls find the worker gone. Before, the send waited
/// forever, whatever the timeout.
#[test]
fn a_send_to_an_executor_that_stops_reading_times_out() {
    use rfaas::transport::Queue;
    const BIG: usize = 1 << 20;
    const CALLS: u32 = 64;
    let control = std::net::TcpListener::bind("127.0.0.1:0").expect("bind control");
    let addr = control.local_addr().expect("address").to_string();
    let (drain, may_drain) = mpsc::channel::<()>();
    let rogue = std::thread::spawn(move || {
        let (mut control, _ep, cq, _raw, _) = tcp_rogue_session(control, CALLS, 2 * BIG);
        // Reads nothing (a queue reads its sockets only when polled) until the client is done.
        may_drain.recv().expect("the client is done");
        let mut received = 0;
        while let Ok(Some(_)) = cq.wait(Duration::from_secs(1)) {
            received += 1;
        }
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut control, &mut rest);
        received
    });
    let lease = Lease::connect_tcp(&addr, &rfaas::LeaseOptions::default()).expect("lease");
    let (done, outcome) = mpsc::channel();
    let caller = std::thread::spawn(move || {
        let input = vec![7u8; BIG];
        let mut out = vec![0u8; 8];
        // Each call is sent and abandoned (no answer comes) until the socket's buffers are
        // full; then one is stuck midway, and after 10 s its connection is closed with it
        // (nothing after a partial frame would be framed right): the calls after it find the
        // worker gone.
        let mut gone = false;
        for n in 0..CALLS {
            let r = fx::echo::invoke(&lease, &input, &mut out)
                .timeout(Duration::from_millis(200))
                .wait();
            match r {
                Err(rfaas::Error::Timeout(_)) if !gone => {}
                Err(rfaas::Error::ExecutorGone) if n > 0 => gone = true,
                other => panic!("call {n} (worker gone: {gone}): {other:?}"),
            }
        }
        done.send(()).expect("test alive");
        lease
    });
    outcome
        .recv_timeout(tests::BOUND)
        .expect("an invocation blocked in its send (no timeout within 20 s)");
    let lease = caller.join().expect("caller");
    drain.send(()).expect("rogue alive");
    drop(lease);
    let received = rogue.join().expect("rogue");
    // Evidence that sends gave up: fewer requests reached the executor than were made (a
    // socket that is never read keeps its initial window: a few MiB here, against 64 MiB of
    // requests, and TCP buffers are at most 32 MiB by the kernel's default limits).
    assert!(
        received < CALLS,
        "every one of {CALLS} requests of 1 MiB got through: no send ever found the socket full"
    );
}

/// A call with a timeout that finds another call's request stuck in the connection (the
/// executor reads nothing for now) waits for it no longer than its timeout, and times out
/// without sending anything: the connection stays good, and once the executor reads again,
/// the stuck call completes and a new one is answered.
#[test]
fn a_call_behind_a_stuck_send_times_out_and_leaves_the_connection_good() {
    use rfaas::transport::{Endpoint, Queue};
    const BIG: usize = 1 << 20;
    const SLOTS: u32 = 64;
    let control = std::net::TcpListener::bind("127.0.0.1:0").expect("bind control");
    let addr = control.local_addr().expect("address").to_string();
    let (read_again, may_read) = mpsc::channel::<()>();
    let rogue = std::thread::spawn(move || {
        let (mut control, ep, cq, _raw, input) = tcp_rogue_session(control, SLOTS, 2 * BIG);
        may_read.recv().expect("told to read");
        // Answer everything that arrives (a status alone) until the client leaves.
        let mut answered = 0u32;
        loop {
            match cq.wait(Duration::from_millis(500)) {
                Ok(Some(c)) => {
                    let mut raw = [0u8; HEADER_LEN];
                    input
                        .read(c.imm as usize * 2 * BIG, &mut raw)
                        .expect("header");
                    let id = InvocationHeader::read_from_bytes(&raw)
                        .expect("header bytes")
                        .id
                        .get();
                    ep.write_with_imm(
                        rfaas::wire::OUTPUT_REGION,
                        0,
                        0,
                        rfaas::wire::RESULT_REGION,
                        0,
                        response_imm(id, Status::FunctionError),
                    )
                    .expect("answer");
                    answered += 1;
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut control, &mut rest);
        answered
    });
    let lease = std::sync::Arc::new(
        Lease::connect_tcp(&addr, &rfaas::LeaseOptions::default()).expect("lease"),
    );
    // Calls without a timeout, in flight at once, until the requests no longer go out: one is
    // stuck midway holding the connection, the rest wait for it.
    const STUCK: u32 = 24;
    let stuck: Vec<_> = (0..STUCK)
        .map(|n| {
            let lease = lease.clone();
            std::thread::spawn(move || {
                let input = vec![7u8; BIG];
                let mut out = vec![0u8; 8];
                let r = fx::echo::invoke(&lease, &input, &mut out).wait();
                assert!(
                    matches!(r, Err(rfaas::Error::Call(_))),
                    "call {n} without a timeout: {r:?}"
                );
            })
        })
        .collect();
    // Enough time for the buffers to fill and a send to be stuck (a few MiB on loopback).
    std::thread::sleep(Duration::from_millis(500));
    let (done, outcome) = mpsc::channel();
    let lease2 = lease.clone();
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let r = fx::noop::invoke(&lease2)
            .timeout(Duration::from_millis(200))
            .wait();
        let _ = done.send((r, started.elapsed()));
    });
    let (r, took) = outcome
        .recv_timeout(tests::BOUND)
        .expect("the call behind the stuck send did not time out within 20 s");
    assert!(
        matches!(r, Err(rfaas::Error::Timeout(_))),
        "the call behind the stuck send: {r:?}"
    );
    eprintln!("timed out after {took:?}");
    read_again.send(()).expect("rogue alive");
    // The stuck calls complete (answered with an error status) and a new call is answered.
    for t in stuck {
        t.join().expect("a call without a timeout");
    }
    let r = fx::noop::invoke(&lease).timeout(tests::BOUND).wait();
    assert!(
        matches!(r, Err(rfaas::Error::Call(_))),
        "a call after the executor reads again: {r:?}"
    );
    assert_eq!(lease.protocol_violations(), 0);
    drop(lease);
    let answered = rogue.join().expect("rogue");
    assert_eq!(
        answered,
        STUCK + 1,
        "every call but the timed-out one arrived, once"
    );
}

/// A welcome for `workers` x `slots` x `slot_size`, listing `functions` made-up functions.
fn made_up_welcome(functions: u32, workers: u32, slots: u32, slot_size: u32) -> Welcome {
    Welcome {
        protocol: SESSION_PROTOCOL,
        abi_version: ABI_VERSION,
        functions: (0..functions)
            .map(|i| FunctionInfo {
                index: i,
                name: format!("function_{i}"),
                fingerprint: u64::from(i),
            })
            .collect(),
        workers,
        slots,
        slot_size,
        data: None,
    }
}

/// Writes `bytes` one at a time, 50 ms apart, for at most 4 s. Whether the peer hung up
/// meanwhile (a write failed).
fn drip(mut to: impl std::io::Write, bytes: &[u8]) -> bool {
    for b in bytes.iter().take(80) {
        if to.write_all(std::slice::from_ref(b)).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// An executor that sends its welcome one byte at a time (each read of the client's is
/// answered well within any per-read timeout) is cut off by the handshake's one deadline,
/// over shared memory and over TCP, and its connection closed. Before, the client waited as
/// long as the executor kept dripping.
#[test]
fn a_welcome_dripped_byte_by_byte_is_cut_off_by_the_handshake_deadline() {
    let mut options = rfaas::LeaseOptions::default();
    options.handshake_timeout = Duration::from_millis(500);
    let mut frame = Vec::new();
    rfaas::transport::send_json(&mut frame, &made_up_welcome(200, 1, 1, SLOT as u32))
        .expect("frame");
    // The client's result, and the rogue's view of the connection.
    let expect_cut =
        |fabric: &str, r: Result<Lease, rfaas::Error>, rogue: std::thread::JoinHandle<bool>| {
            match r {
                Err(rfaas::Error::Handshake(why)) => assert!(
                    why.contains("did not complete the handshake within 500ms"),
                    "{fabric}: {why}"
                ),
                other => panic!("{fabric}: expected the handshake deadline, got {other:?}"),
            }
            assert!(
                rogue.join().expect("rogue"),
                "{fabric}: the client kept listening"
            );
        };

    let path = tests::scratch_dir("rogue-drip").join("rogue.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let bytes = frame.clone();
    let rogue = std::thread::spawn(move || drip(listener.accept().expect("accept").0, &bytes));
    expect_cut("shm", Lease::connect_with(&path, &options), rogue);

    let control = std::net::TcpListener::bind("127.0.0.1:0").expect("bind control");
    let addr = control.local_addr().expect("address").to_string();
    let rogue = std::thread::spawn(move || drip(control.accept().expect("accept").0, &frame));
    expect_cut("tcp", Lease::connect_tcp(&addr, &options), rogue);
}

/// An executor announcing more result-area memory than the client allows
/// (`LeaseOptions::max_slot_memory`) is refused before the client says hello (and allocates
/// it); the same welcome within the limit is not refused for its size.
#[test]
fn a_geometry_over_the_clients_memory_limit_is_refused() {
    for (limit, refused) in [(8 << 20, true), (16 << 20, false)] {
        let path = tests::scratch_dir(&format!("rogue-geometry-{limit}")).join("rogue.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let rogue = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            // 2 workers x 8 slots x 1 MiB: 16 MiB of result areas.
            send_message(&stream, &made_up_welcome(1, 2, 8, 1 << 20), &[]).expect("welcome");
            // Whether the client said hello; then refuse it (this rogue serves nobody).
            let hello = recv_message::<Hello>(&stream).is_ok();
            if hello {
                let _ = send_message(&stream, &Verdict::Refused("rogue".into()), &[]);
            }
            hello
        });
        let mut options = rfaas::LeaseOptions::default();
        options.max_slot_memory = limit;
        let r = Lease::connect_with(&path, &options);
        let said_hello = rogue.join().expect("rogue");
        if refused {
            match r {
                Err(rfaas::Error::Handshake(why)) => assert!(
                    why.contains("16777216 bytes") && why.contains("max_slot_memory"),
                    "{why}"
                ),
                other => panic!("limit {limit}: expected a refusal for size, got {other:?}"),
            }
            assert!(!said_hello, "the client said hello");
        } else {
            assert!(
                matches!(r, Err(rfaas::Error::SessionRefused(_))),
                "limit {limit}: {r:?}"
            );
            assert!(said_hello, "the client within its limit said no hello");
        }
    }
}

/// A package directory with a made-up library hash (a manager that grants without asking for
/// the package never needs the library itself).
fn made_up_package(name: &str) -> std::path::PathBuf {
    let dir = tests::scratch_dir(name);
    std::fs::write(
        dir.join("libnothing.so.sha256"),
        format!("{}\n", "ab".repeat(32)),
    )
    .expect("hash file");
    dir
}

/// A manager that grants at once: reads the request and answers with `grant`, then holds the
/// control connection until the client leaves.
fn rogue_manager(grant: rfaas::wire::LeaseReply) -> (String, std::thread::JoinHandle<()>) {
    use rfaas::transport::{recv_json, send_json};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind manager");
    let addr = listener.local_addr().expect("address").to_string();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let _request: rfaas::wire::LeaseRequest = recv_json(&mut s).expect("request");
        send_json(&mut s, &grant).expect("grant");
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut rest);
    });
    (addr, t)
}

/// A manager's grant must be what was asked for: a TCP request granted shared memory is
/// refused before connecting anywhere, and an executor whose welcome offers another number
/// of workers (or slots) than the lease asked for is refused before the client says hello.
#[test]
fn a_managed_lease_refuses_a_grant_other_than_its_request() {
    use rfaas::managed::{LeaseSpec, lease_from};
    use rfaas::wire::{Fabric, LeaseReply};
    let package = made_up_package("rogue-manager-package");

    // A geometry given in full over the client's memory limit: refused before asking anyone
    // (nothing listens at port 1).
    let mut spec = LeaseSpec::default();
    (spec.slots, spec.slot_size) = (Some(8), Some(2 << 20));
    spec.options.max_slot_memory = 8 << 20;
    match lease_from("127.0.0.1:1", &package, &spec) {
        Err(rfaas::Error::Refused(why)) => assert!(why.contains("max_slot_memory"), "{why}"),
        other => panic!("expected a refusal before connecting, got {other:?}"),
    }

    // The wrong fabric: the endpoint would be a local socket path.
    let (manager, t) = rogue_manager(LeaseReply::Granted {
        lease_id: 1,
        endpoint: "/run/some-unrelated.sock".into(),
        fabric: Fabric::Shm,
        token: None,
    });
    let mut spec = LeaseSpec::default();
    spec.fabric = Fabric::Tcp;
    match lease_from(&manager, &package, &spec) {
        Err(rfaas::Error::Handshake(why)) => {
            assert!(why.contains("fabric Tcp, it granted Shm"), "{why}")
        }
        other => panic!("expected a refused grant, got {other:?}"),
    }
    t.join().expect("manager");

    // The right fabric, the wrong geometry: the executor offers 1 worker, 8 slots.
    for (cores, slots, words) in [
        (2, None, "2 workers x any slots"),
        (1, Some(4), "x 4 slots"),
    ] {
        let path = tests::scratch_dir(&format!("rogue-managed-{cores}")).join("rogue.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let executor = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            send_message(&stream, &made_up_welcome(1, 1, 8, SLOT as u32), &[]).expect("welcome");
            recv_message::<Hello>(&stream).is_err()
        });
        let (manager, t) = rogue_manager(LeaseReply::Granted {
            lease_id: 2,
            endpoint: path.display().to_string(),
            fabric: Fabric::Shm,
            token: None,
        });
        let mut spec = LeaseSpec::default();
        (spec.cores, spec.slots, spec.fabric) = (cores, slots, Fabric::Shm);
        match lease_from(&manager, &package, &spec) {
            Err(rfaas::Error::Handshake(why)) => {
                assert!(
                    why.contains(words) && why.contains("offers 1 x 8 x 4096"),
                    "{why}"
                )
            }
            other => panic!("expected a refused welcome, got {other:?}"),
        }
        assert!(executor.join().expect("executor"), "the client said hello");
        t.join().expect("manager");
    }
}

/// A managed lease's heartbeats start with the grant, not after the session's handshake: the
/// manager counts the client's silence from the grant (three missed beats, 1.5 s), and a
/// handshake may take longer (a loaded node, RDMA registration of large regions). Before, the
/// manager reclaimed such a lease while its client was still connecting. Should the handshake
/// fail, the heartbeats stop and the control connection closes.
#[test]
fn a_managed_lease_beats_while_its_session_handshake_is_slow() {
    use rfaas::managed::{LeaseSpec, lease_from};
    use rfaas::transport::{recv_json, send_json};
    use rfaas::wire::{Fabric, LeaseReply};
    let package = made_up_package("rogue-slow-handshake");
    let path = tests::scratch_dir("rogue-slow-handshake-executor").join("slow.sock");
    let executor_listener = UnixListener::bind(&path).expect("bind");
    let (beat_tx, beat_rx) = mpsc::channel();
    // An executor that answers nothing until the manager has heard a heartbeat (or 5 s), then
    // hangs up: whether it heard of one while the client waited for its welcome.
    executor_listener
        .set_nonblocking(true)
        .expect("nonblocking");
    let executor = std::thread::spawn(move || {
        // Bounded, so that a client that never connects fails the test instead of hanging it.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match executor_listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("the client never connected to the executor: {e}"),
            }
        };
        let beat = beat_rx.recv_timeout(Duration::from_secs(5)).is_ok();
        drop(stream);
        beat
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind manager");
    let manager = listener.local_addr().expect("address").to_string();
    let grant = LeaseReply::Granted {
        lease_id: 3,
        endpoint: path.display().to_string(),
        fabric: Fabric::Shm,
        token: None,
    };
    // A manager that grants, reports the first heartbeat byte, and reads to the end.
    let manager_thread = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let _request: rfaas::wire::LeaseRequest = recv_json(&mut s).expect("request");
        send_json(&mut s, &grant).expect("grant");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut b = [0u8; 1];
        if matches!(std::io::Read::read(&mut s, &mut b), Ok(1)) {
            let _ = beat_tx.send(());
        }
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut rest).is_ok()
    });
    let mut spec = LeaseSpec::default();
    spec.fabric = Fabric::Shm;
    let result = lease_from(&manager, &package, &spec);
    assert!(
        executor.join().expect("executor"),
        "no heartbeat reached the manager while the session's handshake went on"
    );
    assert!(
        matches!(
            result,
            Err(rfaas::Error::Handshake(_) | rfaas::Error::Transport(_))
        ),
        "a session that hung up gave {result:?}"
    );
    assert!(
        manager_thread.join().expect("manager"),
        "the control connection did not close after the failed handshake"
    );
}

/// A listener whose backlog is full (an executor that stopped accepting): connecting waits
/// for room, and the handshake's deadline bounds that wait too. Before, `Lease::connect`
/// waited for as long as nobody accepted.
#[test]
fn connecting_to_a_full_backlog_is_cut_off_by_the_handshake_deadline() {
    use std::os::unix::ffi::OsStrExt;
    let path = tests::scratch_dir("rogue-backlog").join("rogue.sock");
    // A listener with a backlog of 0 (std's listeners take thousands): one connection fills it.
    // SAFETY: plain socket calls on a fresh descriptor with a zeroed, NUL-terminated address.
    let listener = unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
            *d = *s as libc::c_char;
        }
        let len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, (&addr as *const libc::sockaddr_un).cast(), len),
            0
        );
        assert_eq!(libc::listen(fd, 0), 0);
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
    };
    let _first = std::os::unix::net::UnixStream::connect(&path).expect("fills the backlog");
    let mut options = rfaas::LeaseOptions::default();
    options.handshake_timeout = Duration::from_millis(300);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Lease::connect_with(&path, &options));
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Err(rfaas::Error::Handshake(why))) => {
            assert!(
                why.contains("did not complete the handshake within 300ms"),
                "{why}"
            )
        }
        Ok(other) => panic!("expected the handshake deadline, got {other:?}"),
        Err(_) => panic!("connect still waiting for the backlog after 20 s"),
    }
    drop(listener);
}

/// A TCP server (its address) that reads one request frame (length-prefixed, whatever it
/// holds) and [`drip`]s `answer` back; the thread says whether the client hung up meanwhile.
fn answer_by_drips(answer: Vec<u8>) -> (String, std::thread::JoinHandle<bool>) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let rogue = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut len = [0u8; 4];
        s.read_exact(&mut len).expect("request length");
        let mut request = vec![0u8; u32::from_le_bytes(len) as usize];
        s.read_exact(&mut request).expect("request");
        drip(s, &answer)
    });
    (address, rogue)
}

/// A manager that drips its answer a byte at a time (each read answered well within the
/// per-read timeout) is given up on at the negotiation's deadline, and its connection closed.
/// Before, `lease_from` waited as long as the manager kept dripping.
#[test]
fn a_manager_dripping_its_answer_is_cut_off_at_the_negotiation_deadline() {
    use rfaas::managed::{LeaseSpec, lease_from};
    use rfaas::transport::send_json;
    use rfaas::wire::{Fabric, LeaseReply};
    let package = made_up_package("rogue-manager-drip");
    let mut grant = Vec::new();
    send_json(
        &mut grant,
        &LeaseReply::Granted {
            lease_id: 3,
            endpoint: "127.0.0.1:1".into(),
            fabric: Fabric::Tcp,
            token: Some("t".repeat(64)),
        },
    )
    .expect("frame");
    let (manager, rogue) = answer_by_drips(grant);
    let mut spec = LeaseSpec::default();
    spec.negotiation_timeout = Duration::from_millis(500);
    match lease_from(&manager, &package, &spec) {
        Err(rfaas::Error::Handshake(why)) => {
            assert!(
                why.contains("the manager did not answer within 500ms"),
                "{why}"
            )
        }
        other => panic!("expected the negotiation deadline, got {other:?}"),
    }
    assert!(rogue.join().expect("rogue"), "the client kept listening");
}

/// A registry that drips its answer is given up on at the client's timeout for the whole
/// request (`RegistryClient::with_timeout`), and its connection closed. Before, each read had
/// the timeout, so the request lasted as long as the registry kept dripping.
#[test]
fn a_registry_dripping_its_answer_is_cut_off_at_the_request_timeout() {
    use rfaas::registry::{RegistryClient, RegistryError};
    use rfaas::transport::send_json;
    use rfaas::wire::RegistryResponse;
    let mut answer = Vec::new();
    send_json(&mut answer, &RegistryResponse::Error("x".repeat(200))).expect("frame");
    let (registry, rogue) = answer_by_drips(answer);
    let client = RegistryClient::new(registry).with_timeout(Duration::from_millis(500));
    match client.list() {
        Err(RegistryError::TimedOut(t)) => assert_eq!(t, Duration::from_millis(500)),
        other => panic!("expected the request timeout, got {other:?}"),
    }
    assert!(rogue.join().expect("rogue"), "the client kept listening");
}
