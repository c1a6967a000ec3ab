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

/// Keys from this one up make staging regions in a pair's spec ([`Region::staging`]: sources
/// of writes, never offered to the peer).
pub const STAGING_KEYS: u32 = 16;

/// The regions `(key, len)` of one side of a pair.
pub fn regions(spec: &[(u32, usize)]) -> Vec<Arc<Region>> {
    spec.iter()
        .map(|&(k, l)| {
            Arc::new(if k >= STAGING_KEYS {
                Region::staging(k, l).expect("staging region")
            } else {
                Region::new(k, l).expect("region")
            })
        })
        .collect()
}

/// How writers meet a queue that nobody drains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    /// Exactly this many completions fit; the next write reports `QueueFull`.
    Exact(u32),
    /// Some number fits (at least this many), then writes report `QueueFull`.
    #[cfg_attr(not(feature = "verbs"), allow(dead_code))]
    AtLeast(u32),
    /// Writers block instead (checked with 1000 writes).
    Blocks,
}

/// A backend under test.
trait Fabric {
    type E: Endpoint + 'static;
    type Q: Queue + 'static;
    fn name() -> &'static str;
    /// How a queue that nobody drains stops its writers.
    fn queue_limit() -> Limit;
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
    fn queue_limit() -> Limit {
        Limit::Exact(RING_CAPACITY)
    }
    fn pair(
        a: &[(u32, usize)],
        b: &[(u32, usize)],
    ) -> (
        Half<ShmEndpoint, CompletionQueue>,
        Half<ShmEndpoint, CompletionQueue>,
    ) {
        let (ra, rb) = (regions(a), regions(b));
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

/// A gather write sends its pieces in place of the local bytes they stand for, or (where the
/// fabric does not gather) is refused unless it has none; bad pieces are refused before
/// anything is sent, and the connection goes on delivering.
fn gather_writes_send_pieces_in_place<F: Fabric>() {
    let (a, b) = F::pair(&[(1, 4096)], &[(7, 8192)]);
    let local: Vec<u8> = (0..300).map(|j| j as u8).collect();
    a.regions[0].write(0, &local).expect("local write");
    let (p1, p2, p3) = (b"ABCDE".to_vec(), vec![0x55; 100], vec![b'Z'; 50]);
    // Adjacent pieces, one at the very start of the write's tail, one ending it.
    let pieces: [(usize, &[u8]); 3] = [(10, &p1), (15, &p2), (250, &p3)];
    if a.ep.gathers() {
        a.ep.write_gather(1, 0, 300, &pieces, 7, 1000, 5, None)
            .expect("write_gather");
        let c = next(&*b.cq);
        assert_eq!((c.imm, c.len), (5, 300), "{}", F::name());
        let mut want = local.clone();
        for (at, bytes) in pieces {
            want[at..at + bytes.len()].copy_from_slice(bytes);
        }
        assert_eq!(read(&b.regions[0], 1000, 300), want, "{}", F::name());
        let five = [
            (0, &p1[..1]),
            (2, &p1[..1]),
            (4, &p1[..1]),
            (6, &p1[..1]),
            (8, &p1[..1]),
        ];
        let bad: [&[(usize, &[u8])]; 4] = [
            &[(10, &p2), (50, &p1)],  // overlapping
            &[(250, &p3), (10, &p1)], // out of order
            &[(260, &p3)],            // past the write's end
            &five,                    // too many
        ];
        for pieces in bad {
            assert!(
                matches!(
                    a.ep.write_gather(1, 0, 300, pieces, 7, 1000, 6, None),
                    Err(TransportError::Protocol(_))
                ),
                "{}: bad pieces {pieces:?} accepted",
                F::name()
            );
        }
    } else {
        assert!(
            matches!(
                a.ep.write_gather(1, 0, 300, &pieces, 7, 1000, 6, None),
                Err(TransportError::Unavailable(_))
            ),
            "{}: pieces on a fabric that does not gather",
            F::name()
        );
    }
    // Without pieces it is a plain write, and nothing refused above was delivered.
    a.ep.write_gather(1, 0, 300, &[], 7, 2000, 7, None)
        .expect("write_gather without pieces");
    let c = next(&*b.cq);
    assert_eq!((c.imm, c.len), (7, 300), "{}", F::name());
    assert_eq!(read(&b.regions[0], 2000, 300), local, "{}", F::name());
    assert_eq!(b.cq.poll().expect("poll"), None, "{}", F::name());
}

/// A plain write places its bytes and delivers nothing; a later write with immediate on the
/// same endpoint announces it (its bytes are there when the completion is); bad descriptors are
/// refused before anything is written.
fn plain_writes_land_without_a_completion<F: Fabric>() {
    let (a, b) = F::pair(&[(1, 4096)], &[(7, 8192)]);
    let data: Vec<u8> = (0..4096).map(|j| (j * 7 + 3) as u8).collect();
    a.regions[0].write(0, &data).expect("local write");
    // Three plain writes (one empty, one ending the region), then the announcing write.
    a.ep.write(1, 0, 1000, 7, 100).expect("write");
    a.ep.write(1, 1000, 0, 7, 5000).expect("empty write");
    a.ep.write(1, 1000, 3096, 7, 8192 - 3096)
        .expect("write to the end");
    assert_eq!(b.cq.poll().expect("poll"), None, "{}", F::name());
    a.ep.write_with_imm(1, 0, 8, 7, 0, 99)
        .expect("write_with_imm");
    let c = next(&*b.cq);
    assert_eq!((c.imm, c.len), (99, 8), "{}", F::name());
    assert_eq!(
        read(&b.regions[0], 100, 1000),
        data[..1000],
        "{}",
        F::name()
    );
    assert_eq!(
        read(&b.regions[0], 8192 - 3096, 3096),
        data[1000..],
        "{}",
        F::name()
    );
    // Past either region, an unknown key: refused, nothing written, nothing delivered.
    for (lkey, loff, len, rkey, roff) in [
        (1, 4000, 200, 7, 0),
        (1, 0, 200, 7, 8100),
        (1, 0, 8, 9, 0),
        (3, 0, 8, 7, 0),
        (1, 0, 8, 7, usize::MAX),
    ] {
        assert!(
            a.ep.write(lkey, loff, len, rkey, roff).is_err(),
            "{}: write({lkey}, {loff}, {len}, {rkey}, {roff}) accepted",
            F::name()
        );
    }
    a.ep.write_with_imm(1, 0, 0, 7, 0, 100)
        .expect("write_with_imm");
    assert_eq!(next(&*b.cq).imm, 100, "{}", F::name());
    assert_eq!(read(&b.regions[0], 0, 8), data[..8], "{}", F::name());
    assert_eq!(b.cq.poll().expect("poll"), None, "{}", F::name());
    // Several plain writes and the announcing one at once (and more than a batch): one
    // completion, every write in place.
    for count in [0usize, 3, 12] {
        let writes: Vec<_> = (0..count).map(|i| (i * 300, 300, 4000 + i * 310)).collect();
        a.ep.write_many_with_imm(1, &writes, 3600, 16, 7, 200, 7000 + count as u32)
            .expect("write_many_with_imm");
        let c = next(&*b.cq);
        assert_eq!((c.imm, c.len), (7000 + count as u32, 16), "{}", F::name());
        assert_eq!(
            read(&b.regions[0], 200, 16),
            data[3600..3616],
            "{}",
            F::name()
        );
        for (off, n, roff) in writes {
            let got = read(&b.regions[0], roff, n);
            assert_eq!(got, data[off..off + n], "{} ({count})", F::name());
        }
        assert_eq!(b.cq.poll().expect("poll"), None, "{}", F::name());
    }
    // A bad range among them: refused, and no completion.
    let bad = [(0, 8, 6000), (0, 8, 9000)];
    assert!(a.ep.write_many_with_imm(1, &bad, 0, 8, 7, 0, 1).is_err());
    assert!(
        a.ep.write_many_with_imm(1, &bad[..1], 0, 8, 7, 8190, 1)
            .is_err()
    );
    a.ep.write_with_imm(1, 0, 0, 7, 0, 101)
        .expect("write_with_imm");
    assert_eq!(next(&*b.cq).imm, 101, "{}", F::name());
    assert_eq!(b.cq.poll().expect("poll"), None, "{}", F::name());
}

fn keeps_order_and_reports_a_full_queue<F: Fabric>() {
    let (a, b) = F::pair(&[(1, 64)], &[(2, 64)]);
    let mut sent = 0u32;
    match F::queue_limit() {
        Limit::Exact(n) => {
            for i in 0..n {
                // The send hint (a worker gives it before answering) changes nothing delivered,
                // here or below, where it names an entry the consumer has not taken yet.
                a.ep.expect_send();
                a.ep.write_with_imm(1, 0, 8, 2, 0, i)
                    .expect("write within capacity");
            }
            sent = n;
            a.ep.expect_send();
            assert!(
                matches!(
                    a.ep.write_with_imm(1, 0, 8, 2, 0, 999_999),
                    Err(TransportError::QueueFull)
                ),
                "{}: a full queue must be reported",
                F::name()
            );
        }
        Limit::AtLeast(n) => {
            // Write until the queue says it is full (it must, well before 100 000).
            loop {
                match a.ep.write_with_imm(1, 0, 8, 2, 0, sent) {
                    Ok(()) => sent += 1,
                    Err(TransportError::QueueFull) => break,
                    Err(e) => panic!("{}: write {sent}: {e}", F::name()),
                }
                assert!(sent < 100_000, "{}: never reported full", F::name());
            }
            assert!(sent >= n, "{}: full after only {sent} writes", F::name());
        }
        Limit::Blocks => {
            for i in 0..1000 {
                a.ep.write_with_imm(1, 0, 8, 2, 0, i)
                    .expect("write within capacity");
            }
            sent = 1000;
        }
    }
    for i in 0..sent {
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

fn staging_regions_are_not_offered<F: Fabric>() {
    let staging = STAGING_KEYS + 1;
    let (a, b) = F::pair(&[(2, 4096), (staging, 4096)], &[(1, 4096)]);
    assert_eq!(a.ep.remote_len(1), Some(4096), "{}", F::name());
    assert_eq!(b.ep.remote_len(2), Some(4096), "{}", F::name());
    assert_eq!(
        b.ep.remote_len(staging),
        None,
        "{}: a staging region is offered",
        F::name()
    );
    match b.ep.write_with_imm(1, 0, 8, staging, 0, 7) {
        Err(TransportError::UnknownRegion { .. }) => {}
        other => panic!("{}: a write into staging: {other:?}", F::name()),
    }
    // It is still a source of writes for its owner.
    a.regions[1].write(0, b"staged!!").expect("fill");
    a.ep.write_with_imm(staging, 0, 8, 1, 64, 9)
        .expect("write from staging");
    assert_eq!(next(&*b.cq).imm, 9);
    assert_eq!(read(&b.regions[0], 64, 8), b"staged!!");
    // And the writable region next to it still receives.
    b.regions[0].write(0, b"answer!!").expect("fill");
    b.ep.write_with_imm(1, 0, 8, 2, 0, 3).expect("write back");
    assert_eq!(next(&*a.cq).imm, 3);
    assert_eq!(read(&a.regions[0], 0, 8), b"answer!!");
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

fn inline_writes_land_like_any_write<F: Fabric>() {
    let (a, b) = F::pair(&[(1, 64)], &[(2, 8192), (9, 256)]);
    let max = a.ep.max_inline();
    if max == 0 {
        let err =
            a.ep.write_inline(b"x", 2, 0, 1)
                .expect_err("no inline writes");
        assert!(
            matches!(err, TransportError::Unavailable(_)),
            "{}: {err}",
            F::name()
        );
        return;
    }
    // Small and aligned (inside the completion on shared memory), too long or unaligned (the
    // ordinary path), empty, and into a second region: all land where they were sent, in order.
    let cases: Vec<(u32, usize, usize)> = vec![
        (2, 0, 8),
        (2, 64, max),
        (2, 128, max + 1),
        (2, 200, 7),
        (2, 8192 - max, max),
        (2, 4096, 0),
        (9, 192, 5),
    ];
    for (i, &(key, off, len)) in cases.iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|j| (i * 37 + j + 1) as u8).collect();
        a.ep.write_inline(&data, key, off, 100 + i as u32)
            .expect("write_inline");
        let c = next(&*b.cq);
        assert_eq!(
            (c.endpoint, c.imm, c.len as usize),
            (b.ep.id(), 100 + i as u32, len),
            "{}: case {i}",
            F::name()
        );
        let region = b.regions.iter().find(|r| r.key() == key).expect("region");
        assert_eq!(read(region, off, len), data, "{}: case {i}", F::name());
    }
    // Out of bounds or an unknown key: refused before anything is sent.
    for (key, off, len) in [(2, 8192 - 4, 8), (2, usize::MAX, 1), (3, 0, 1)] {
        assert!(a.ep.write_inline(&[0; 8][..len], key, off, 1).is_err());
    }
    assert_eq!(b.cq.poll().expect("poll"), None, "{}", F::name());
    // The bytes before and after an inline write are untouched.
    assert_eq!(read(&b.regions[0], 8, 56), vec![0; 56]);
}

/// An interrupt between reading the epoch and going to sleep is not lost: `wait_since`
/// returns at once instead of sleeping for the whole timeout.
fn an_interrupt_before_the_sleep_is_not_lost<F: Fabric>() {
    let (a, b) = F::pair(&[(1, 64)], &[(2, 64)]);
    let epoch = b.cq.epoch();
    b.cq.interrupt();
    let (tx, rx) = std::sync::mpsc::channel();
    let cq = b.cq.clone();
    std::thread::spawn(move || {
        let _ = tx.send(cq.wait_since(epoch, Duration::from_secs(3600)));
    });
    // A guard against hanging, not a speed bound: a lost interrupt sleeps for the hour.
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(got) => assert!(
            matches!(got, Ok(None)),
            "{}: nothing was sent, got {got:?}",
            F::name()
        ),
        Err(_) => panic!(
            "{}: wait_since slept through an earlier interrupt",
            F::name()
        ),
    }
    // The epoch moved: a wait from the new one still sees completions.
    let epoch = b.cq.epoch();
    a.regions[0].write(0, b"late").expect("write");
    a.ep.write_with_imm(1, 0, 4, 2, 0, 77)
        .expect("write_with_imm");
    let c =
        b.cq.wait_since(epoch, Duration::from_secs(10))
            .expect("wait_since")
            .or_else(|| b.cq.wait(Duration::from_secs(10)).expect("wait"))
            .expect("a completion within 10 s");
    assert_eq!((c.imm, c.len), (77, 4), "{}", F::name());
}

fn interrupt_wakes_a_waiter<F: Fabric>() {
    let (_a, b) = F::pair(&[(1, 64)], &[(2, 64)]);
    let (tx, rx) = std::sync::mpsc::channel();
    let cq = b.cq.clone();
    // Far longer than the test's deadline: only an interrupt ends this wait in time.
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(cq.wait(Duration::from_secs(3600)));
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    // Interrupt until the waiter returns: an interrupt before it sleeps need not wake it.
    let got = loop {
        b.cq.interrupt();
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(got) => break got,
            Err(_) if Instant::now() < deadline => {}
            Err(e) => panic!(
                "{}: interrupt did not wake a waiter in 10 s: {e}",
                F::name()
            ),
        }
    };
    assert_eq!(got.expect("wait"), None, "{}", F::name());
    waiter.join().expect("waiter");
}

fn send_all_then_receive_both_ways<F: Fabric>() {
    // Both sides send everything before they poll, more bytes each way than the sockets of a
    // TCP loopback connection buffer: a sender whose peer is itself blocked sending must keep
    // receiving, or neither finishes.
    const LEN: usize = 1 << 20;
    const FRAMES: u32 = 64;
    // Each side sends from its region 1 into the peer's region 2.
    let (a, b) = F::pair(&[(1, LEN), (2, LEN)], &[(1, LEN), (2, LEN)]);
    let pattern = |seed: u8| {
        (0..LEN)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect::<Vec<_>>()
    };
    a.regions[0].write(0, &pattern(3)).expect("fill");
    b.regions[0].write(0, &pattern(5)).expect("fill");
    let (tx, rx) = std::sync::mpsc::channel();
    let halves: Vec<_> = [a, b]
        .into_iter()
        .map(|half| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let sent = (0..FRAMES).try_for_each(|i| half.ep.write_with_imm(1, 0, LEN, 2, 0, i));
                let mut got = Vec::new();
                if sent.is_ok() {
                    while got.len() < FRAMES as usize {
                        match half.cq.wait(Duration::from_secs(10)) {
                            Ok(Some(c)) => got.push((c.imm, c.len as usize)),
                            _ => break,
                        }
                    }
                }
                let _ = tx.send((sent, got));
                half
            })
        })
        .collect();
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok((sent, got)) => {
                sent.expect("write_with_imm");
                let want: Vec<_> = (0..FRAMES).map(|i| (i, LEN)).collect();
                assert_eq!(got, want, "{}: completions", F::name());
            }
            Err(e) => panic!(
                "{}: two peers sending to each other before polling did not finish: {e}",
                F::name()
            ),
        }
    }
    for (half, seed) in halves.into_iter().zip([5, 3]) {
        let half = half.join().expect("sender");
        assert!(
            read(&half.regions[1], 0, LEN) == pattern(seed),
            "{}: payload",
            F::name()
        );
    }
}

struct Tcp;

impl Fabric for Tcp {
    type E = TcpEndpoint;
    type Q = TcpQueue;
    fn name() -> &'static str {
        "tcp"
    }
    fn queue_limit() -> Limit {
        Limit::Blocks
    }
    fn pair(a: &[(u32, usize)], b: &[(u32, usize)]) -> Pair<TcpEndpoint, TcpQueue> {
        let (ra, rb) = (regions(a), regions(b));
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

/// RDMA verbs (feature `verbs`): needs a device, so each test first says why it skips
/// where there is none (the Soft-RoCE VM of `cargo xtask rdma-vm --suite` has one).
#[cfg(feature = "verbs")]
struct Verbs;

#[cfg(feature = "verbs")]
impl Fabric for Verbs {
    type E = rfaas::transport::verbs::VerbsEndpoint;
    type Q = rfaas::transport::verbs::VerbsQueue;
    fn name() -> &'static str {
        "verbs"
    }
    fn queue_limit() -> Limit {
        // The peer's shared receive queue (512) fills, then our send queue (128), then the
        // writer gives up after its send patience (`VerbsConfig::send_patience_ms`).
        Limit::AtLeast(512)
    }
    fn pair(a: &[(u32, usize)], b: &[(u32, usize)]) -> Pair<Self::E, Self::Q> {
        let (x, y) = crate::verbs::pair(a, b);
        let half = |h: crate::verbs::Half| Half {
            ep: h.ep,
            cq: h.cq,
            regions: h.regions,
            conn: h.control.map(|c| Box::new(c) as Box<dyn Send + Sync>),
        };
        (half(x), half(y))
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
        gather_writes_send_pieces_in_place,
        plain_writes_land_without_a_completion,
        rejects_invalid_descriptors_before_posting,
        staging_regions_are_not_offered,
        wakes_a_sleeping_waiter,
        reports_a_peer_that_hangs_up,
        zero_copy_window_then_signal,
        inline_writes_land_like_any_write,
        interrupt_wakes_a_waiter,
        an_interrupt_before_the_sleep_is_not_lost,
        send_all_then_receive_both_ways,
    );
}

#[cfg(feature = "verbs")]
mod verbs {
    macro_rules! verbs_conformance {
        ($($test:ident),* $(,)?) => {$(
            #[test]
            fn $test() {
                if rfaas::transport::verbs::available_or_skip(concat!("transport::verbs::", stringify!($test))) {
                    super::$test::<super::Verbs>();
                }
            }
        )*};
    }
    verbs_conformance!(
        delivers_bytes_and_immediates,
        keeps_order_and_reports_a_full_queue,
        gather_writes_send_pieces_in_place,
        plain_writes_land_without_a_completion,
        rejects_invalid_descriptors_before_posting,
        staging_regions_are_not_offered,
        wakes_a_sleeping_waiter,
        reports_a_peer_that_hangs_up,
        zero_copy_window_then_signal,
        inline_writes_land_like_any_write,
        interrupt_wakes_a_waiter,
        an_interrupt_before_the_sleep_is_not_lost,
        send_all_then_receive_both_ways,
    );
}

mod tcp {
    conformance!(
        super::Tcp,
        delivers_bytes_and_immediates,
        keeps_order_and_reports_a_full_queue,
        gather_writes_send_pieces_in_place,
        plain_writes_land_without_a_completion,
        rejects_invalid_descriptors_before_posting,
        staging_regions_are_not_offered,
        wakes_a_sleeping_waiter,
        reports_a_peer_that_hangs_up,
        zero_copy_window_then_signal,
        inline_writes_land_like_any_write,
        interrupt_wakes_a_waiter,
        an_interrupt_before_the_sleep_is_not_lost,
        send_all_then_receive_both_ways,
    );
}

/// One TCP write frame, spoken by hand: header, then `len` bytes of `fill`.
fn frame(key: u32, off: u64, len: u32, imm: u32, fill: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&key.to_le_bytes());
    f.extend_from_slice(&off.to_le_bytes());
    f.extend_from_slice(&len.to_le_bytes());
    f.extend_from_slice(&imm.to_le_bytes());
    f.extend(std::iter::repeat_n(fill, len as usize));
    f
}

/// A peer speaking the framing by hand: connects to `addr` and exchanges offers (it offers no
/// regions).
fn raw_peer(addr: std::net::SocketAddr) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let offer = br#"{"regions":[]}"#;
    s.write_all(&(offer.len() as u32).to_le_bytes())
        .expect("write");
    s.write_all(offer).expect("write");
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("peer offer");
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut body).expect("peer offer");
    s
}

/// Key of the staging region of [`endpoint_with_raw_peer`].
const RAW_STAGING: u32 = 3;

/// A TCP endpoint on `cq` with one region (key 2, `len` bytes) and a staging region (key
/// [`RAW_STAGING`], `len` bytes, not offered), connected to a raw peer.
fn endpoint_with_raw_peer(
    cq: &Arc<TcpQueue>,
    len: usize,
) -> (TcpEndpoint, Arc<Region>, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peer = std::thread::spawn(move || raw_peer(addr));
    let (s, _) = listener.accept().expect("accept");
    let region = Arc::new(Region::new(2, len).expect("region"));
    let staging = Arc::new(Region::staging(RAW_STAGING, len).expect("staging"));
    let ep = TcpEndpoint::connect(s, vec![region.clone(), staging], cq).expect("connect");
    (ep, region, peer.join().expect("raw peer"))
}

#[test]
fn tcp_rejects_hostile_frames() {
    // A valid write, then a bad one.
    for (key, offset, bad_len, words) in [
        (2u32, 60u64, 8u32, "exceed"),
        // A plain write (the key's top bit) is checked the same way.
        (2 | 1 << 31, 60, 8, "exceed"),
        (9, 0, 8, "unknown region"),
        // The staging region exists on this side but is not the peer's to write.
        (RAW_STAGING, 0, 8, "unknown region"),
        (2, u64::MAX, 8, ""),
    ] {
        let cq = TcpQueue::new();
        let (ep, region, mut peer) = endpoint_with_raw_peer(&cq, 64);
        let hostile = std::thread::spawn(move || {
            use std::io::{Read, Write};
            peer.write_all(&frame(2, 0, 4, 1, 7)).expect("good frame");
            peer.write_all(&frame(key, offset, bad_len, 2, 7))
                .expect("bad frame");
            // Hold the connection until the endpoint hangs up on us.
            let mut rest = Vec::new();
            let _ = peer.read_to_end(&mut rest);
        });
        assert_eq!(next(&*cq).imm, 1, "the valid write arrives");
        match cq.wait(Duration::from_secs(10)) {
            Err(TransportError::PeerBroke { endpoint, why }) => {
                assert_eq!(endpoint, ep.id());
                assert!(why.contains(words), "{why}")
            }
            other => panic!("expected a protocol violation, got {other:?}"),
        }
        assert_eq!(read(&region, 0, 4), [7, 7, 7, 7]);
        assert_eq!(
            read(&region, 60, 4),
            [0, 0, 0, 0],
            "nothing written for the rejected frame"
        );
        hostile.join().expect("hostile peer");
        assert_eq!(
            cq.wait(Duration::from_millis(10))
                .expect("after the violation"),
            None,
            "a broken connection is reported once"
        );
    }
}

/// Frames `(offset, len, imm)` laid out one after another in a 4 KiB region, each filled with
/// bytes derived from `seed`.
fn frames_stream(seed: u8) -> (Vec<u8>, Vec<(usize, usize, u32)>) {
    let mut stream = Vec::new();
    let mut frames = Vec::new();
    let mut off = 0;
    for (i, len) in [0usize, 1, 19, 20, 21, 300].into_iter().enumerate() {
        let imm = 0x5000 + i as u32;
        let fill = seed.wrapping_add(i as u8);
        stream.extend(frame(2, off as u64, len as u32, imm, fill));
        frames.push((off, len, imm));
        off += len + 3;
    }
    (stream, frames)
}

/// Checks `got` against the first completions of `frames` and their bytes in `region`.
#[track_caller]
fn check_frames(
    got: &[Completion],
    frames: &[(usize, usize, u32)],
    ep: u32,
    region: &Region,
    seed: u8,
) {
    assert!(got.len() <= frames.len(), "more completions than frames");
    for (i, (c, &(off, len, imm))) in got.iter().zip(frames).enumerate() {
        assert_eq!(
            (c.endpoint, c.imm, c.len as usize),
            (ep, imm, len),
            "frame {i}"
        );
        let fill = seed.wrapping_add(i as u8);
        assert!(
            read(region, off, len).iter().all(|&b| b == fill),
            "frame {i}'s bytes"
        );
    }
}

#[test]
fn tcp_frames_split_at_every_byte_boundary() {
    use std::io::Write;
    let cq = TcpQueue::new();
    let (ep, region, mut peer) = endpoint_with_raw_peer(&cq, 4096);
    let (stream, frames) = frames_stream(0);
    // Where each frame ends in the stream.
    let ends: Vec<usize> = frames
        .iter()
        .scan(0, |at, &(_, len, _)| {
            *at += 20 + len;
            Some(*at)
        })
        .collect();
    assert_eq!(ends.last(), Some(&stream.len()));
    // The stream in two writes, split at every byte; polls in between may deliver only the
    // frames wholly before the split.
    for split in 1..stream.len() {
        let seed = split as u8;
        let (stream, _) = frames_stream(seed);
        peer.write_all(&stream[..split]).expect("first part");
        let mut got = Vec::new();
        while let Some(c) = cq.poll().expect("poll") {
            got.push(c);
        }
        let whole = ends.iter().filter(|&&end| end <= split).count();
        assert!(
            got.len() <= whole,
            "split at {split}: a frame delivered before its end"
        );
        peer.write_all(&stream[split..]).expect("second part");
        while got.len() < frames.len() {
            got.push(next(&*cq));
        }
        check_frames(&got, &frames, ep.id(), &region, seed);
    }
    // And a byte at a time, polling after each.
    let (stream, _) = frames_stream(200);
    let mut got = Vec::new();
    for b in &stream {
        peer.write_all(std::slice::from_ref(b)).expect("byte");
        got.extend(cq.poll().expect("poll"));
    }
    while got.len() < frames.len() {
        got.push(next(&*cq));
    }
    check_frames(&got, &frames, ep.id(), &region, 200);
    assert_eq!(cq.poll().expect("poll"), None);
}

#[test]
fn tcp_wait_gathers_a_frame_that_trickles_in() {
    use std::io::Write;
    let cq = TcpQueue::new();
    let (ep, region, mut peer) = endpoint_with_raw_peer(&cq, 4096);
    let (stream, frames) = frames_stream(9);
    let writer = std::thread::spawn(move || {
        for b in stream {
            peer.write_all(&[b]).expect("byte");
            // Let the waiter fall asleep between bytes (not a timing assertion).
            std::thread::sleep(Duration::from_micros(200));
        }
        peer
    });
    let got: Vec<_> = frames.iter().map(|_| next(&*cq)).collect();
    check_frames(&got, &frames, ep.id(), &region, 9);
    drop(writer.join().expect("writer"));
    match cq.wait(Duration::from_secs(10)) {
        Err(TransportError::PeerGone { endpoint }) => assert_eq!(endpoint, ep.id()),
        other => panic!("expected PeerGone, got {other:?}"),
    }
}

/// Frames that arrive together are read together (a header and what follows it in one
/// `recv`): the frames still come out one per poll, in order, and a frame left in the
/// endpoint's memory rather than the socket's moves the queue's epoch, so waiters asleep on
/// the socket look again.
#[test]
fn tcp_frames_read_together_are_delivered_one_by_one() {
    use std::io::Write;
    let cq = TcpQueue::new();
    let (ep, region, mut peer) = endpoint_with_raw_peer(&cq, 4096);
    // Three small frames (a plain one in the middle) in one segment.
    let mut burst = frame(2, 0, 4, 1, 0x11);
    burst.extend(frame(2 | 1 << 31, 100, 30, 0, 0x22));
    burst.extend(frame(2, 200, 8, 3, 0x33));
    let epoch = cq.epoch();
    peer.write_all(&burst).expect("burst");
    let first = next(&*cq);
    assert_eq!((first.endpoint, first.imm, first.len), (ep.id(), 1, 4));
    assert_ne!(
        cq.epoch(),
        epoch,
        "the next frame's header was read with the first: waiters are told"
    );
    let second = cq
        .poll()
        .expect("poll")
        .expect("the buffered frame, without new bytes");
    assert_eq!((second.imm, second.len), (3, 8));
    assert_eq!(read(&region, 0, 4), [0x11; 4]);
    assert_eq!(read(&region, 100, 30), [0x22; 30]);
    assert_eq!(read(&region, 200, 8), [0x33; 8]);
    assert_eq!(cq.poll().expect("poll"), None);
    drop(peer);
    match cq.wait(Duration::from_secs(10)) {
        Err(TransportError::PeerGone { endpoint }) => assert_eq!(endpoint, ep.id()),
        other => panic!("expected PeerGone, got {other:?}"),
    }
}

/// A peer streaming plain writes (no completions) cannot keep a poller inside the transport:
/// a poll returns after a bounded number of them (telling waiters to look again), and the
/// frame with a completion behind them still arrives.
#[test]
fn tcp_plain_writes_do_not_hold_a_poller() {
    use std::io::Write;
    let cq = TcpQueue::new();
    let (_ep, region, mut peer) = endpoint_with_raw_peer(&cq, 4096);
    let mut burst = Vec::new();
    for i in 0..500u64 {
        burst.extend(frame(2 | 1 << 31, i % 64 * 8, 8, 0, i as u8));
    }
    burst.extend(frame(2, 1000, 4, 9, 0x44));
    peer.write_all(&burst).expect("burst");
    // Wait until the first bytes are there, then count the polls it takes.
    let mut polls = 0;
    let epoch = cq.epoch();
    let c = loop {
        polls += 1;
        match cq.poll().expect("poll") {
            Some(c) => break c,
            None => std::thread::yield_now(),
        }
    };
    assert_eq!((c.imm, c.len), (9, 4));
    assert!(
        polls >= 500 / 64,
        "{polls} polls took 500 plain writes: a poll does not return after a bounded number"
    );
    assert_ne!(cq.epoch(), epoch, "waiters are told to look again");
    assert_eq!(read(&region, 1000, 4), [0x44; 4]);
    drop(peer);
}

#[test]
fn tcp_threads_share_a_queue() {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const FRAMES: usize = 3000;
    let cq = TcpQueue::new();
    let (ep, region, mut peer) = endpoint_with_raw_peer(&cq, 4 * FRAMES);
    let writer = std::thread::spawn(move || {
        let mut stream = Vec::new();
        for i in 0..FRAMES {
            stream.extend(frame(2, 4 * i as u64, 4, i as u32, i as u8));
        }
        // In pieces that split frames.
        for piece in stream.chunks(1000) {
            peer.write_all(piece).expect("frames");
        }
        peer
    });
    let taken = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let (cq, taken) = (cq.clone(), taken.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                while taken.load(Ordering::Acquire) < FRAMES && Instant::now() < deadline {
                    // One thread sleeps in `wait`, the others spin on `poll`.
                    let got = if t == 0 {
                        cq.wait(Duration::from_millis(20))
                    } else {
                        cq.poll()
                    };
                    if let Some(c) = got.expect("completion") {
                        mine.push(c.imm);
                        taken.fetch_add(1, Ordering::AcqRel);
                    }
                }
                cq.interrupt();
                mine
            })
        })
        .collect();
    let per_thread: Vec<Vec<u32>> = threads
        .into_iter()
        .map(|t| t.join().expect("poller"))
        .collect();
    let _peer = writer.join().expect("writer");
    let mut all: Vec<u32> = per_thread.iter().flatten().copied().collect();
    assert_eq!(all.len(), FRAMES, "every frame delivered once, within 30 s");
    all.sort_unstable();
    assert!(
        all.iter().enumerate().all(|(i, &imm)| imm == i as u32),
        "each frame exactly once"
    );
    for mine in &per_thread {
        assert!(mine.is_sorted(), "a thread sees its completions in order");
    }
    for i in 0..FRAMES {
        assert_eq!(read(&region, 4 * i, 4), [i as u8; 4], "frame {i}'s bytes");
    }
    assert_eq!(cq.poll().expect("poll"), None);
    drop(ep);
}

#[test]
fn tcp_one_queue_for_several_endpoints() {
    use std::io::Write;
    let cq = TcpQueue::new();
    let (ep0, region0, mut peer0) = endpoint_with_raw_peer(&cq, 64);
    let (ep1, region1, mut peer1) = endpoint_with_raw_peer(&cq, 64);
    assert_ne!(ep0.id(), ep1.id());
    for i in 0..10u32 {
        peer0.write_all(&frame(2, 0, 8, i, 1)).expect("frame");
        peer1.write_all(&frame(2, 8, 8, 100 + i, 2)).expect("frame");
    }
    let mut seen = [Vec::new(), Vec::new()];
    for _ in 0..20 {
        let c = next(&*cq);
        let which = usize::from(c.endpoint == ep1.id());
        assert_eq!(c.endpoint, [ep0.id(), ep1.id()][which]);
        seen[which].push(c.imm);
    }
    assert_eq!(seen[0], (0..10).collect::<Vec<_>>());
    assert_eq!(seen[1], (100..110).collect::<Vec<_>>());
    assert_eq!(read(&region0, 0, 8), [1; 8]);
    assert_eq!(read(&region1, 8, 8), [2; 8]);
    // One peer hangs up: reported for its endpoint; the other goes on.
    drop(peer0);
    match cq.wait(Duration::from_secs(10)) {
        Err(TransportError::PeerGone { endpoint }) => assert_eq!(endpoint, ep0.id()),
        other => panic!("expected PeerGone for endpoint {}, got {other:?}", ep0.id()),
    }
    peer1.write_all(&frame(2, 0, 1, 7, 3)).expect("frame");
    let c = next(&*cq);
    assert_eq!((c.endpoint, c.imm), (ep1.id(), 7));
}
