//! A peer's offer bounded before it is looked at, and a send's patience shared between the
//! wait for the send lock and the wait for room.

use super::*;
use std::net::TcpListener;

/// A connected pair of loopback sockets: ours, and the raw peer's.
fn sockets() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let ours = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    let (theirs, _) = listener.accept().expect("accept");
    (ours, theirs)
}

/// Connects an endpoint (one offered region, key 2, and staging, key 3) to a raw peer that
/// offers `regions`; returns the outcome and the peer's socket.
fn connect_to_offer(
    regions: Vec<(u32, u64)>,
) -> (
    Result<TcpEndpoint, TransportError>,
    TcpStream,
    Arc<TcpQueue>,
) {
    let (ours, theirs) = sockets();
    let peer = {
        let theirs = theirs.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut s = &theirs;
            let _: Offer = super::super::recv_json(&mut s).expect("our offer");
            // The endpoint may refuse before reading all of it: a failed write is fine.
            let _ = super::super::send_json(
                &mut s,
                &Offer {
                    regions,
                    control: false,
                },
            );
        })
    };
    let cq = TcpQueue::new();
    let local = vec![
        Arc::new(Region::new(2, 4096).expect("region")),
        Arc::new(Region::staging(3, 4096).expect("staging")),
    ];
    let r = TcpEndpoint::connect(ours, local, &cq);
    // A refusing endpoint drops its socket, so a peer still writing is released.
    peer.join().expect("peer");
    (r, theirs, cq)
}

/// An offer of more regions than any endpoint has is refused, and at once however many it
/// names (the duplicate check is quadratic: a 16 MiB offer of a million regions used to take
/// minutes, and 100 000 distinct keys were accepted after seconds).
#[test]
fn an_offer_of_too_many_regions_is_refused_before_it_is_examined() {
    let (ok, _peer, _cq) = connect_to_offer((1..=MAX_REGIONS as u32).map(|k| (k, 64)).collect());
    let ep = ok.expect("as many regions as allowed");
    assert_eq!(ep.remote_len(MAX_REGIONS as u32), Some(64));
    for n in [MAX_REGIONS as u32 + 1, 100_000] {
        let (r, _peer, _cq) = connect_to_offer((1..=n).map(|k| (k, 64)).collect());
        match r {
            Err(TransportError::Protocol(why)) => {
                assert!(why.contains(&format!("offered {n} regions")), "{why}")
            }
            other => panic!("an offer of {n} regions: {other:?}"),
        }
    }
}

/// Fills the socket of `ep`, whose peer reads nothing, with bytes the peer will never parse,
/// until it takes not one more byte, even after a pause (the kernel grows a send buffer once
/// the peer acknowledges what it holds: room appears again within some 100 ms).
fn fill(ep: &TcpEndpoint) {
    let junk = vec![0u8; 64 << 10];
    for _ in 0..100 {
        let mut took = 0;
        for size in [64 << 10, 4096, 256, 16, 1] {
            while let Ok(n) = send_nowait(ep.conn.fd(), &[IoSlice::new(&junk[..size])]) {
                took += n;
            }
        }
        if took == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the socket kept taking bytes its peer never read");
}

/// A send's patience covers its wait for the send lock and its wait for room together: one
/// that waited for the lock gives the socket only what is left. Here the socket is full, the
/// lock is held for most of the patience, and the peer starts reading well after what is left
/// of it has passed but before the whole patience has passed again: a send that gave the
/// socket the whole patience afresh (as it used to) saw the room and went out.
#[test]
fn a_send_that_waited_for_the_lock_gives_the_socket_only_what_is_left() {
    // Margins of a second either way: a sender or reader late by less still decides the same.
    const PATIENCE: Duration = Duration::from_millis(3000);
    const HOLD: Duration = Duration::from_millis(2000);
    const READ_AFTER: Duration = Duration::from_millis(2000);
    let (r, mut peer, _cq) = connect_to_offer(vec![(1, 4096)]);
    let ep = r.expect("endpoint");
    fill(&ep);
    let done = AtomicBool::new(false);
    let (held_tx, held) = std::sync::mpsc::channel();
    let (start, start_rx) = std::sync::mpsc::channel();
    let r = std::thread::scope(|s| {
        let (ep, done) = (&ep, &done);
        s.spawn(move || {
            let guard = lock(&ep.send);
            held_tx.send(()).expect("held");
            start_rx.recv().expect("start");
            std::thread::sleep(HOLD);
            drop(guard);
            std::thread::sleep(READ_AFTER);
            peer.set_read_timeout(Some(Duration::from_millis(10)))
                .expect("timeout");
            let mut buf = vec![0u8; 1 << 20];
            while !done.load(Ordering::Acquire) {
                let _ = io::Read::read(&mut peer, &mut buf);
            }
        });
        held.recv().expect("the lock is held");
        start.send(()).expect("start");
        let r = ep.write_gather(3, 0, 8, &[], 1, 0, 5, Some(PATIENCE));
        done.store(true, Ordering::Release);
        r
    });
    assert!(
        matches!(r, Err(TransportError::QueueFull)),
        "a send given the whole patience after waiting for the lock: {r:?}"
    );
}
