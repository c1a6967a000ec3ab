//! Transport conformance suite: the same checks for every backend (`Fabric` below).

use rfaas::transport::shm::{CompletionQueue, RING_CAPACITY, ShmEndpoint, Side};
use rfaas::transport::tcp::{TcpEndpoint, TcpQueue};
use rfaas::transport::{Completion, Endpoint, Queue, Region, TransportError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One side of a connected pair.
struct Half<E, Q> {
    ep: E,
    cq: Arc<Q>,
    regions: Vec<Arc<Region>>,
    /// Keeps the control connection open; dropping it makes the peer see a hang-up.
    conn: Option<Box<dyn Send + Sync>>,
}

/// Both halves of a connected pair.
type Pair<E, Q> = (Half<E, Q>, Half<E, Q>);

/// A backend under test.
trait Fabric {
    type E: Endpoint + 'static;
    type Q: Queue + 'static;
    fn name() -> &'static str;
    /// Completions a queue takes before writes report `QueueFull` (None: writers block instead).
    fn queue_limit() -> Option<u32>;
    /// Connects two endpoints, each with its own completion queue and regions `(key, len)`.
    fn pair(a: &[(u32, usize)], b: &[(u32, usize)]) -> Pair<Self::E, Self::Q>;
}

struct Shm;

impl Fabric for Shm {
    type E = ShmEndpoint;
    type Q = CompletionQueue;
    fn name() -> &'static str {
        "shm"
    }
    fn queue_limit() -> Option<u32> {
        Some(RING_CAPACITY)
    }
    fn pair(
        a: &[(u32, usize)],
        b: &[(u32, usize)],
    ) -> (
        Half<ShmEndpoint, CompletionQueue>,
        Half<ShmEndpoint, CompletionQueue>,
    ) {
        let make = |spec: &[(u32, usize)]| {
            spec.iter()
                .map(|&(k, l)| Arc::new(Region::new(k, l).expect("region")))
                .collect::<Vec<_>>()
        };
        let (ra, rb) = (make(a), make(b));
        let (sa, sb) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let rb2 = rb.clone();
        let passive = std::thread::spawn(move || {
            let cq = CompletionQueue::new().expect("cq");
            let ep = ShmEndpoint::connect(&sb, Side::Passive, rb2, &cq).expect("passive connect");
            (ep, cq, sb)
        });
        let cqa = CompletionQueue::new().expect("cq");
        let epa =
            ShmEndpoint::connect(&sa, Side::Active, ra.clone(), &cqa).expect("active connect");
        let (epb, cqb, sb) = passive.join().expect("passive thread");
        (
            Half {
                ep: epa,
                cq: cqa,
                regions: ra,
                conn: Some(Box::new(sa)),
            },
            Half {
                ep: epb,
                cq: cqb,
                regions: rb,
                conn: Some(Box::new(sb)),
            },
        )
    }
}

/// Polls until a completion arrives, failing the test after a deadline.
#[track_caller]
fn next<Q: Queue>(cq: &Q) -> Completion {
    match cq.wait(Duration::from_secs(10)) {
        Ok(Some(c)) => c,
        other => panic!("expected a completion within 10 s, got {other:?}"),
    }
}

fn read(region: &Region, off: usize, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    region.read(off, &mut v).expect("read");
    v
}

fn delivers_bytes_and_immediates<F: Fabric>() {
    let (a, b) = F::pair(&[(1, 4096)], &[(7, 8192)]);
    for (i, len) in [0usize, 1, 8, 100, 4096].into_iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
        a.regions[0].write(0, &data).expect("local write");
        a.ep.write_with_imm(1, 0, len, 7, 4096 - len / 2, 0xdead_0000 + i as u32)
            .expect("write_with_imm");
        let c = next(&*b.cq);
        assert_eq!(
            (c.endpoint, c.imm, c.len as usize),
            (b.ep.id(), 0xdead_0000 + i as u32, len),
            "{}",
            F::name()
        );
        assert_eq!(read(&b.regions[0], 4096 - len / 2, len), data);
    }
    // And back.
    b.regions[0].write(10, b"pong").expect("write");
    b.ep.write_with_imm(7, 10, 4, 1, 0, 42).expect("write back");
    assert_eq!(next(&*a.cq).imm, 42);
    assert_eq!(read(&a.regions[0], 0, 4), b"pong");
}

fn keeps_order_and_reports_a_full_queue<F: Fabric>() {
    let (a, b) = F::pair(&[(1, 64)], &[(2, 64)]);
    let n = F::queue_limit().unwrap_or(1000);
    for i in 0..n {
        a.ep.write_with_imm(1, 0, 8, 2, 0, i)
            .expect("write within capacity");
    }
    if F::queue_limit().is_some() {
        assert!(
            matches!(
                a.ep.write_with_imm(1, 0, 8, 2, 0, 999_999),
                Err(TransportError::QueueFull)
            ),
            "{}: a full queue must be reported",
            F::name()
        );
    }
    for i in 0..n {
        assert_eq!(next(&*b.cq).imm, i, "completions arrive in order");
    }
    assert_eq!(b.cq.poll().expect("poll"), None);
    a.ep.write_with_imm(1, 0, 8, 2, 0, 1_000_000)
        .expect("room again after draining");
    assert_eq!(next(&*b.cq).imm, 1_000_000);
}

fn rejects_invalid_descriptors_before_posting<F: Fabric>() {
    let (a, b) = F::pair(&[(1, 64)], &[(2, 128)]);
    let cases: [(u32, usize, usize, u32, usize); 6] = [
        (9, 0, 8, 2, 0),          // unknown local key
        (1, 60, 8, 2, 0),         // past the local region
        (1, 0, 8, 3, 0),          // unknown remote key
        (1, 0, 8, 2, 121),        // past the remote region
        (1, 0, 8, 2, usize::MAX), // offset + length overflows
        (1, usize::MAX, 8, 2, 0), // local overflow
    ];
    for (lk, lo, len, rk, ro) in cases {
        let r = a.ep.write_with_imm(lk, lo, len, rk, ro, 5);
        assert!(
            matches!(
                r,
                Err(TransportError::UnknownRegion { .. } | TransportError::OutOfBounds { .. })
            ),
            "{}: {:?} accepted: {r:?}",
            F::name(),
            (lk, lo, len, rk, ro)
        );
    }
    assert!(a.ep.window(2, 100, 29).is_err());
    assert_eq!(
        b.cq.poll().expect("poll"),
        None,
        "nothing may be delivered for rejected writes"
    );
    assert_eq!(a.ep.remote_len(2), Some(128));
    assert_eq!(a.ep.remote_len(3), None);
}

fn wakes_a_sleeping_waiter<F: Fabric>() {
    let (a, b) = F::pair(&[(1, 64)], &[(2, 64)]);
    // Timeout without traffic: None, not an error.
    assert_eq!(b.cq.wait(Duration::from_millis(30)).expect("wait"), None);
    let cq = b.cq.clone();
    let waiter = std::thread::spawn(move || cq.wait(Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(50)); // let it fall asleep
    a.ep.write_with_imm(1, 0, 4, 2, 0, 77).expect("write");
    let got = waiter.join().expect("waiter").expect("wait");
    assert_eq!(got.map(|c| c.imm), Some(77), "{}", F::name());
}

fn reports_a_peer_that_hangs_up<F: Fabric>() {
    let (a, mut b) = F::pair(&[(1, 64)], &[(2, 64)]);
    // Pending completions are delivered before the hang-up.
    b.ep.write_with_imm(2, 0, 4, 1, 0, 1).expect("write");
    drop(b.conn.take());
    drop(b);
    assert_eq!(next(&*a.cq).imm, 1);
    let start = Instant::now();
    match a.cq.wait(Duration::from_secs(10)) {
        Err(TransportError::PeerGone { endpoint }) => assert_eq!(endpoint, a.ep.id()),
        other => panic!(
            "{}: expected PeerGone, got {other:?} after {:?}",
            F::name(),
            start.elapsed()
        ),
    }
    // Reported once; afterwards a wait just times out.
    assert_eq!(
        a.cq.wait(Duration::from_millis(10)).expect("second wait"),
        None
    );
}

fn zero_copy_window_then_signal<F: Fabric>() {
    let (a, b) = F::pair(&[(1, 64)], &[(2, 64)]);
    match a.ep.window(2, 16, 8).expect("window in bounds") {
        Some(ptr) => {
            // SAFETY: the window is 8 in-bounds bytes of the peer's live region.
            unsafe { std::ptr::copy_nonoverlapping(b"windowed".as_ptr(), ptr, 8) };
            a.ep.signal(3, 8).expect("signal");
            let c = next(&*b.cq);
            assert_eq!((c.imm, c.len), (3, 8));
            assert_eq!(read(&b.regions[0], 16, 8), b"windowed");
        }
        None => eprintln!("{}: no zero-copy window on this fabric", F::name()),
    }
}

struct Tcp;

impl Fabric for Tcp {
    type E = TcpEndpoint;
    type Q = TcpQueue;
    fn name() -> &'static str {
        "tcp"
    }
    fn queue_limit() -> Option<u32> {
        None
    }
    fn pair(a: &[(u32, usize)], b: &[(u32, usize)]) -> Pair<TcpEndpoint, TcpQueue> {
        let make = |spec: &[(u32, usize)]| {
            spec.iter()
                .map(|&(k, l)| Arc::new(Region::new(k, l).expect("region")))
                .collect::<Vec<_>>()
        };
        let (ra, rb) = (make(a), make(b));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let rb2 = rb.clone();
        let passive = std::thread::spawn(move || {
            let (s, _) = listener.accept().expect("accept");
            let cq = TcpQueue::new();
            (
                TcpEndpoint::connect(s, rb2, &cq).expect("passive connect"),
                cq,
            )
        });
        let cqa = TcpQueue::new();
        let epa = TcpEndpoint::connect(
            std::net::TcpStream::connect(addr).expect("connect"),
            ra.clone(),
            &cqa,
        )
        .expect("active connect");
        let (epb, cqb) = passive.join().expect("passive thread");
        (
            Half {
                ep: epa,
                cq: cqa,
                regions: ra,
                conn: None,
            },
            Half {
                ep: epb,
                cq: cqb,
                regions: rb,
                conn: None,
            },
        )
    }
}

macro_rules! conformance {
    ($fabric:ty, $($test:ident),* $(,)?) => {$(
        #[test]
        fn $test() {
            super::$test::<$fabric>();
        }
    )*};
}

mod shm {
    conformance!(
        super::Shm,
        delivers_bytes_and_immediates,
        keeps_order_and_reports_a_full_queue,
        rejects_invalid_descriptors_before_posting,
        wakes_a_sleeping_waiter,
        reports_a_peer_that_hangs_up,
        zero_copy_window_then_signal,
    );
}

mod tcp {
    conformance!(
        super::Tcp,
        delivers_bytes_and_immediates,
        keeps_order_and_reports_a_full_queue,
        rejects_invalid_descriptors_before_posting,
        wakes_a_sleeping_waiter,
        reports_a_peer_that_hangs_up,
        zero_copy_window_then_signal,
    );
}

#[test]
fn tcp_rejects_hostile_frames() {
    // A peer speaking the framing by hand: a valid write, then one past the region's end.
    for (key, offset, bad_len, words) in [
        (2u32, 60u64, 8u32, "exceed"),
        (9, 0, 8, "unknown region"),
        (2, u64::MAX, 8, ""),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hostile = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            let offer = br#"{"regions":[]}"#;
            s.write_all(&(offer.len() as u32).to_le_bytes())
                .expect("write");
            s.write_all(offer).expect("write");
            let mut len = [0u8; 4];
            s.read_exact(&mut len).expect("peer offer");
            let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
            s.read_exact(&mut body).expect("peer offer");
            let frame = |key: u32, off: u64, len: u32, imm: u32| {
                let mut f = Vec::new();
                f.extend_from_slice(&key.to_le_bytes());
                f.extend_from_slice(&off.to_le_bytes());
                f.extend_from_slice(&len.to_le_bytes());
                f.extend_from_slice(&imm.to_le_bytes());
                f.extend(std::iter::repeat_n(7u8, len as usize));
                f
            };
            s.write_all(&frame(2, 0, 4, 1)).expect("good frame");
            s.write_all(&frame(key, offset, bad_len, 2))
                .expect("bad frame");
            // Hold the connection until the endpoint hangs up on us.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        });
        let (s, _) = listener.accept().expect("accept");
        let cq = TcpQueue::new();
        let region = Arc::new(Region::new(2, 64).expect("region"));
        let _ep = TcpEndpoint::connect(s, vec![region.clone()], &cq).expect("connect");
        assert_eq!(next(&*cq).imm, 1, "the valid write arrives");
        match cq.wait(Duration::from_secs(10)) {
            Err(TransportError::Protocol(msg)) => assert!(msg.contains(words), "{msg}"),
            other => panic!("expected a protocol violation, got {other:?}"),
        }
        assert_eq!(read(&region, 0, 4), [7, 7, 7, 7]);
        assert_eq!(
            read(&region, 60, 4),
            [0, 0, 0, 0],
            "nothing written for the rejected frame"
        );
        hostile.join().expect("hostile peer");
    }
}
