//! What a TCP peer sends to an endpoint: its region offer, then arbitrary bytes as
//! write-with-immediate frames (`key u32 | offset u64 | len u32 | imm u32 | bytes`). The real
//! `TcpEndpoint` and `TcpQueue` must agree with a model of the framing: connecting fails
//! exactly on a repeated region key; only offered regions are offered (the staging region, key
//! 3, is not, and a frame addressed to it is a bad header); each whole frame whose key names an
//! offered local region and whose range lies inside it is one completion `(imm, len)` with its bytes in the region (a plain
//! write, the key's bit 31 set, places its bytes and is no completion); the first
//! bad header ends the connection as a protocol violation and nothing after it is read; the end
//! of the stream ends it as `PeerGone` (a partial payload already in the region, no completion).
//!
//! Input: byte 0, bit 0: the offer is built from the next byte's count of `(key u8, len u16)`
//! pairs (else a fixed valid offer); the rest is the byte stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rfaas::transport::tcp::{TcpEndpoint, TcpQueue};
use rfaas::transport::{Completion, Endpoint, Queue, Region, TransportError, recv_json, send_json};
use rfaas::wire::Offer;
use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The endpoint's regions: key, length, offered (else staging).
const LOCAL: [(u32, usize, bool); 3] = [(1, 256, true), (4, 64, true), (3, 64, false)];

static LISTENER: OnceLock<TcpListener> = OnceLock::new();

/// Closing resets the connection instead of leaving it in TIME_WAIT (thousands of
/// connections a second would exhaust loopback ports).
fn no_linger(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a live `linger` of the size passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER");
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Gone,
    Broken,
}

/// The framing model: completions, how the stream ends, and the regions' final bytes.
fn model(stream: &[u8], regions: &mut [Vec<u8>]) -> (Vec<(u32, u32)>, End) {
    let mut done = Vec::new();
    let mut at = 0;
    loop {
        let Some(h) = stream.get(at..at + 20) else {
            return (done, End::Gone);
        };
        at += 20;
        let word = u32::from_le_bytes(h[0..4].try_into().unwrap());
        let (key, silent) = (word & !(1 << 31), word & 1 << 31 != 0);
        let offset = u64::from_le_bytes(h[4..12].try_into().unwrap());
        let len = u32::from_le_bytes(h[12..16].try_into().unwrap());
        let imm = u32::from_le_bytes(h[16..20].try_into().unwrap());
        let Some(r) = LOCAL
            .iter()
            .position(|(k, _, offered)| *k == key && *offered)
        else {
            return (done, End::Broken);
        };
        let fits = offset
            .checked_add(u64::from(len))
            .is_some_and(|end| end <= LOCAL[r].1 as u64);
        if !fits {
            return (done, End::Broken);
        }
        let got = (stream.len() - at).min(len as usize);
        let off = offset as usize;
        regions[r][off..off + got].copy_from_slice(&stream[at..at + got]);
        at += got;
        if got < len as usize {
            return (done, End::Gone);
        }
        if !silent {
            done.push((imm, len));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&b0, mut rest)) = data.split_first() else {
        return;
    };
    let mut peer_regions = vec![(2u32, 4096u64), (3, 4096)];
    if b0 & 1 != 0 {
        let Some((&n, r)) = rest.split_first() else {
            return;
        };
        let n = usize::from(n % 6).min(r.len() / 3);
        peer_regions = r[..3 * n]
            .chunks_exact(3)
            .map(|c| (u32::from(c[0]), u64::from(u16::from_le_bytes([c[1], c[2]]))))
            .collect();
        rest = &r[3 * n..];
    }
    let listener = LISTENER.get_or_init(|| TcpListener::bind("127.0.0.1:0").expect("bind"));
    let mut peer = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (mine, _) = listener.accept().expect("accept");
    no_linger(&peer);
    no_linger(&mine);
    let offer = Offer {
        regions: peer_regions.clone(),
        control: false,
    };
    send_json(&mut peer, &offer).expect("offer");

    let local: Vec<_> = LOCAL
        .iter()
        .map(|&(k, l, offered)| {
            Arc::new(if offered {
                Region::new(k, l).expect("region")
            } else {
                Region::staging(k, l).expect("staging")
            })
        })
        .collect();
    let cq = TcpQueue::new();
    let repeated = peer_regions
        .iter()
        .enumerate()
        .any(|(i, (k, _))| peer_regions[..i].iter().any(|(j, _)| j == k));
    let ep = match TcpEndpoint::connect(mine, local.clone(), &cq) {
        Ok(ep) => {
            assert!(
                !repeated,
                "accepted an offer with a repeated key: {peer_regions:?}"
            );
            ep
        }
        Err(e) => {
            assert!(repeated, "refused the offer {peer_regions:?}: {e}");
            return;
        }
    };
    for (k, l) in &peer_regions {
        assert_eq!(ep.remote_len(*k), Some(*l as usize));
    }
    assert_eq!(ep.remote_len(1000), None); // offered keys are below 256
    let theirs: Offer = recv_json(&mut peer).expect("endpoint's offer");
    let want: Vec<_> = LOCAL
        .iter()
        .filter(|&&(_, _, offered)| offered)
        .map(|&(k, l, _)| (k, l as u64))
        .collect();
    assert_eq!(
        theirs,
        Offer {
            regions: want,
            control: false
        }
    );

    peer.write_all(rest).expect("stream");
    peer.shutdown(Shutdown::Write).expect("shutdown");

    let mut regions: Vec<Vec<u8>> = LOCAL.iter().map(|&(_, l, _)| vec![0; l]).collect();
    let (frames, end) = model(rest, &mut regions);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let ended = loop {
        assert!(
            Instant::now() < deadline,
            "the queue did not end within 10 s"
        );
        match cq.wait(Duration::from_millis(100)) {
            Ok(Some(Completion { endpoint, imm, len })) => {
                assert_eq!(endpoint, ep.id());
                got.push((imm, len));
            }
            Ok(None) => {}
            Err(TransportError::PeerGone { .. }) => break End::Gone,
            Err(TransportError::PeerBroke { endpoint, .. }) => {
                assert_eq!(endpoint, ep.id());
                break End::Broken;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    };
    assert_eq!(got, frames, "completions");
    assert_eq!(ended, end, "how the stream ended");
    for (r, want) in local.iter().zip(&regions) {
        let mut have = vec![0; r.len()];
        r.read(0, &mut have).unwrap();
        assert_eq!(&have, want, "contents of region {}", r.key());
    }
    drop(ep);
});
