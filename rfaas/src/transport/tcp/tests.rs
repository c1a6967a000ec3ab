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
