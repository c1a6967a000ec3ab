//! The verbs fabric against a real RDMA device (Soft-RoCE in `cargo xtask rdma-vm`, or real
//! hardware). Without a device each test says why and returns: nothing is ignored.

use rfaas::transport::verbs::{self, VerbsConfig, VerbsEndpoint, VerbsQueue};
use rfaas::transport::{Completion, Endpoint, Region, TransportError};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// One side of a connected pair.
pub struct Half {
    pub ep: VerbsEndpoint,
    pub cq: Arc<VerbsQueue>,
    pub regions: Vec<Arc<Region>>,
    pub control: Option<TcpStream>,
}

fn config() -> VerbsConfig {
    VerbsConfig::from_env().expect("RFAAS_VERBS_* settings")
}

/// Connects two endpoints over loopback TCP, each with its own queue and regions `(key, len)`.
pub fn pair(a: &[(u32, usize)], b: &[(u32, usize)]) -> (Half, Half) {
    let (ra, rb) = (crate::transport::regions(a), crate::transport::regions(b));
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("address");
    let rb2 = rb.clone();
    let passive = std::thread::spawn(move || {
        let (s, _) = listener.accept().expect("accept");
        let ctx = config().open().expect("device");
        let cq = VerbsQueue::new(&ctx, &config(), 4).expect("queue");
        let ep = VerbsEndpoint::connect(&s, rb2, &cq).expect("passive connect");
        (ep, cq, s)
    });
    let s = TcpStream::connect(addr).expect("connect");
    let ctx = config().open().expect("device");
    let cqa = VerbsQueue::new(&ctx, &config(), 4).expect("queue");
    let epa = VerbsEndpoint::connect(&s, ra.clone(), &cqa).expect("active connect");
    let (epb, cqb, sb) = passive.join().expect("passive side");
    (
        Half {
            ep: epa,
            cq: cqa,
            regions: ra,
            control: Some(s),
        },
        Half {
            ep: epb,
            cq: cqb,
            regions: rb,
            control: Some(sb),
        },
    )
}

#[track_caller]
fn next(cq: &VerbsQueue) -> Completion {
    match cq.wait(Duration::from_secs(20)) {
        Ok(Some(c)) => c,
        other => panic!("expected a completion within 20 s, got {other:?}"),
    }
}

fn read(region: &Region, off: usize, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    region.read(off, &mut v).expect("read");
    v
}

#[test]
fn inline_and_large_writes_deliver_bytes_and_immediates() {
    if !verbs::available_or_skip("inline_and_large_writes_deliver_bytes_and_immediates") {
        return;
    }
    let (a, b) = pair(&[(1, 1 << 20)], &[(7, 1 << 20)]);
    let inline = a.ep.max_inline() as usize;
    eprintln!("granted inline data: {inline} bytes");
    // Sizes below, at and above the inline limit, and a large one; each from its own offset.
    let mut off = 0;
    for (i, len) in [0, 1, 8, inline, inline + 1, 4096, 300_000]
        .into_iter()
        .enumerate()
    {
        let bytes: Vec<u8> = (0..len).map(|k| (k * 7 + i) as u8).collect();
        a.regions[0].write(off, &bytes).expect("stage");
        let imm = 0xdead_0000 | i as u32;
        a.ep.write_with_imm(1, off, len, 7, off + 3, imm)
            .expect("write");
        let c = next(&b.cq);
        assert_eq!(
            c,
            Completion {
                endpoint: b.ep.id(),
                imm,
                len: len as u32
            }
        );
        assert_eq!(read(&b.regions[0], off + 3, len), bytes, "{len} bytes");
        off += len + 64;
    }
}

#[test]
fn many_outstanding_writes_arrive_in_order() {
    if !verbs::available_or_skip("many_outstanding_writes_arrive_in_order") {
        return;
    }
    let (a, b) = pair(&[(1, 64 * 1024)], &[(2, 64 * 1024)]);
    // More writes than the send queue and the receive queue hold: senders retry on a full
    // send queue (polling retires completions), receivers re-post receives as they go.
    let total = 3000u32;
    let sender = std::thread::spawn(move || {
        for i in 0..total {
            let off = (i as usize % 1024) * 64;
            a.regions[0].write(off, &i.to_le_bytes()).expect("stage");
            loop {
                match a.ep.write_with_imm(1, off, 4, 2, off, i) {
                    Ok(()) => break,
                    Err(TransportError::QueueFull) => {
                        let _ = a.cq.poll().expect("retire send completions");
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("write {i}: {e}"),
                }
            }
        }
        a
    });
    for i in 0..total {
        let c = next(&b.cq);
        assert_eq!(c.imm, i, "in order");
        assert_eq!(c.len, 4);
    }
    let a = sender.join().expect("sender");
    // The last 1024 slots hold the last 1024 values.
    for i in total - 1024..total {
        let off = (i as usize % 1024) * 64;
        assert_eq!(read(&b.regions[0], off, 4), i.to_le_bytes());
    }
    drop(a);
}

#[test]
fn invalid_descriptors_are_rejected_before_posting() {
    if !verbs::available_or_skip("invalid_descriptors_are_rejected_before_posting") {
        return;
    }
    let (a, b) = pair(&[(1, 4096)], &[(2, 4096)]);
    let bad = [
        a.ep.write_with_imm(9, 0, 8, 2, 0, 1),    // unknown local key
        a.ep.write_with_imm(1, 4090, 8, 2, 0, 1), // local overrun
        a.ep.write_with_imm(1, 0, 8, 3, 0, 1),    // unknown remote key
        a.ep.write_with_imm(1, 0, 8, 2, 4089, 1), // remote overrun
        a.ep.write_with_imm(1, 0, 8, 2, usize::MAX - 2, 1), // offset overflow
        a.ep.write_with_imm(1, 0, usize::MAX, 2, 0, 1), // length overflow
    ];
    for (i, r) in bad.iter().enumerate() {
        assert!(
            matches!(
                r,
                Err(TransportError::UnknownRegion { .. } | TransportError::OutOfBounds { .. })
            ),
            "case {i}: {r:?}"
        );
    }
    assert!(a.ep.window(2, 4000, 200).is_err());
    // Nothing was posted, and the queue pair still works.
    assert_eq!(b.cq.poll().expect("poll"), None);
    a.regions[0].write(0, b"fine").expect("stage");
    a.ep.write_with_imm(1, 0, 4, 2, 10, 5).expect("valid write");
    assert_eq!(next(&b.cq).imm, 5);
    assert_eq!(read(&b.regions[0], 10, 4), b"fine");
}

#[test]
fn a_sleeping_waiter_is_woken_by_a_write_and_by_interrupt() {
    if !verbs::available_or_skip("a_sleeping_waiter_is_woken_by_a_write_and_by_interrupt") {
        return;
    }
    let (a, b) = pair(&[(1, 4096)], &[(2, 4096)]);
    let cq = b.cq.clone();
    // Warm: the waiter sleeps on the completion channel until the write arrives.
    let waiter = std::thread::spawn(move || cq.wait(Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(300));
    a.ep.write_with_imm(1, 0, 16, 2, 0, 77).expect("write");
    let got = waiter.join().expect("waiter").expect("wait");
    assert_eq!(got.map(|c| c.imm), Some(77));
    // Interrupt: a waiter returns early with nothing.
    let cq = b.cq.clone();
    let waiter = std::thread::spawn(move || cq.wait(Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(300));
    b.cq.interrupt();
    assert_eq!(waiter.join().expect("waiter").expect("wait"), None);
    drop(a);
}

#[test]
fn a_peer_that_hangs_up_is_reported_once_after_its_writes() {
    if !verbs::available_or_skip("a_peer_that_hangs_up_is_reported_once_after_its_writes") {
        return;
    }
    let (mut a, b) = pair(&[(1, 4096)], &[(2, 4096)]);
    a.ep.write_with_imm(1, 0, 8, 2, 0, 1).expect("write");
    // Wait until it is delivered, then hang up (drop the queue pair and the control
    // connection, as a dying process would).
    let c = next(&b.cq);
    assert_eq!(c.imm, 1);
    a.control.take();
    drop(a);
    match b.cq.wait(Duration::from_secs(20)) {
        Err(TransportError::PeerGone { endpoint }) => assert_eq!(endpoint, b.ep.id()),
        other => panic!("expected PeerGone, got {other:?}"),
    }
    // Reported once.
    assert!(matches!(b.cq.wait(Duration::from_millis(100)), Ok(None)));
    // Writing to the gone peer fails (at once, or as a failed completion) rather than hangs.
    let _ = b.ep.write_with_imm(2, 0, 8, 1, 0, 2);
}

/// A peer whose control connection ends while its queue pair lives on (a process that is
/// half gone, or misbehaves) can no longer write into our regions once we reported it gone: a
/// lease acts on the report by handing out again the memory that peer could write.
#[test]
fn a_peer_reported_gone_can_no_longer_write() {
    if !verbs::available_or_skip("a_peer_reported_gone_can_no_longer_write") {
        return;
    }
    let (a, mut b) = pair(&[(1, 4096)], &[(2, 4096)]);
    // Writes before the hang-up land, as usual.
    b.regions[0].write(0, &[7; 128]).expect("source bytes");
    b.ep.write_with_imm(2, 0, 8, 1, 0, 1).expect("write");
    assert_eq!(next(&a.cq).imm, 1);
    // `b` stops talking on its control connection; its endpoint and queue pair stay.
    b.control
        .take()
        .expect("control")
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    match a.cq.wait(Duration::from_secs(20)) {
        Err(TransportError::PeerGone { endpoint }) => assert_eq!(endpoint, a.ep.id()),
        other => panic!("expected PeerGone, got {other:?}"),
    }
    // Now `b` writes again, a plain write and an announced one.
    b.ep.write(2, 0, 64, 1, 64).expect("plain write posted");
    b.ep.write_with_imm(2, 0, 64, 1, 128, 2)
        .expect("write posted");
    // Before the report stopped our queue pair, they landed within milliseconds (the
    // Soft-RoCE VM); now nothing arrives (`b`'s device retries, or fails them, as it likes).
    assert!(
        matches!(a.cq.wait(Duration::from_secs(1)), Ok(None)),
        "a completion after the report"
    );
    assert_eq!(read(&a.regions[0], 0, 8), [7; 8], "the write before");
    assert_eq!(
        read(&a.regions[0], 8, 4096 - 8),
        vec![0; 4096 - 8],
        "writes after the report landed"
    );
}

#[test]
fn a_bad_hello_is_refused() {
    if !verbs::available_or_skip("a_bad_hello_is_refused") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("address");
    let hostile = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        // Read the real hello, answer with nine regions.
        let _: serde_json::Value = rfaas::transport::recv_json(&mut s).expect("hello");
        let regions: Vec<_> = (0..9)
            .map(|k| serde_json::json!({"key": k, "addr": 4096, "len": 4096, "rkey": 1}))
            .collect();
        let hello = serde_json::json!({
            "qp": {"lid": 0, "qpn": 1, "psn": 1, "gid": vec![0u8; 16], "mtu": 3},
            "regions": regions,
        });
        rfaas::transport::send_json(&mut s, &hello).expect("send");
        s
    });
    let s = TcpStream::connect(addr).expect("connect");
    let ctx = config().open().expect("device");
    let cq = VerbsQueue::new(&ctx, &config(), 1).expect("queue");
    let region = Arc::new(Region::new(1, 4096).expect("region"));
    match VerbsEndpoint::connect(&s, vec![region], &cq) {
        Err(TransportError::Protocol(why)) => assert!(why.contains("regions"), "{why}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    drop(hostile.join());
}
