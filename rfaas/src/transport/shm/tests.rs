//! Completion rings: waiters, inline entries, and the end of a peer.

use super::*;

/// A connected pair: `a` (active, one region of key 1) and `b` (passive, region 2 of 4 KiB
/// and staging region 4 of 4 KiB, which `a` is not offered).
#[allow(clippy::type_complexity)]
fn pair() -> (
    (ShmEndpoint, Arc<CompletionQueue>, UnixStream),
    (ShmEndpoint, Arc<CompletionQueue>, Arc<Region>, UnixStream),
) {
    let (sa, sb) = UnixStream::pair().expect("socketpair");
    let rb = Arc::new(Region::new(2, 4096).expect("region"));
    let staging = Arc::new(Region::staging(4, 4096).expect("staging"));
    let rb2 = vec![rb.clone(), staging];
    let passive = std::thread::spawn(move || {
        let cq = CompletionQueue::new().expect("cq");
        let ep = ShmEndpoint::connect(&sb, Side::Passive, rb2, &cq).expect("passive");
        (ep, cq, sb)
    });
    let ra = Arc::new(Region::new(1, 64).expect("region"));
    let cqa = CompletionQueue::new().expect("cq");
    let epa = ShmEndpoint::connect(&sa, Side::Active, vec![ra], &cqa).expect("active");
    let (epb, cqb, sb) = passive.join().expect("passive thread");
    ((epa, cqa, sa), (epb, cqb, rb, sb))
}

/// A thread about to sleep on the queue while another holds the poll flag (taking its own
/// completion, say) still sees a completion that is already there, instead of sleeping on
/// a doorbell nobody will ring. The waiter here sleeps up to an hour at a time, so only
/// its last look before sleeping can find the completion.
#[test]
fn a_waiter_does_not_sleep_past_a_completion_while_another_thread_polls() {
    const BOUND: Duration = Duration::from_secs(20);
    const HOUR: Duration = Duration::from_secs(3600);
    let ((a, _cqa, _sa), (_b, cqb, _region, _sb)) = pair();
    // Another poller holds the flag.
    cqb.lock_busy();
    // The completion arrives while nobody sleeps: the doorbell is not rung.
    a.write_inline(b"x", 2, 0, 11).expect("write_inline");
    let epoch = cqb.epoch();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = {
        let cq = cqb.clone();
        std::thread::spawn(move || {
            let _ = tx.send(cq.wait_ticking(epoch, HOUR, HOUR));
        })
    };
    // The waiter is past its first look (which found the flag taken) and counts itself
    // among the sleepers; give it time to fall asleep if it would.
    let start = Instant::now();
    while cqb.doorbell.sleepers().load(Ordering::SeqCst) == 0 {
        assert!(start.elapsed() < BOUND, "the waiter never got to sleep");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(100));
    // The other poller lets go without having taken anything.
    cqb.busy.store(false, Ordering::Release);
    let got = rx
        .recv_timeout(BOUND)
        .expect("the waiter slept past a completion that was already there");
    let c = got.expect("wait").expect("a completion");
    assert_eq!((c.imm, c.len), (11, 1));
    waiter.join().expect("waiter");
}

#[test]
fn place_words_round_trip_and_refuse_what_they_cannot_say() {
    for (key, off) in [
        (0, 0),
        (2, 64),
        (31, (PLACE_OFFSET_UNITS as usize - 1) * LINE),
    ] {
        let w = place_word(key, off).expect("representable");
        assert_eq!(unplace(w), (key, off));
        assert_ne!(w & PLACE_INLINE, 0);
    }
    assert_eq!(place_word(32, 0), None);
    assert_eq!(place_word(2, 8), None);
    assert_eq!(place_word(2, PLACE_OFFSET_UNITS as usize * LINE), None);
}

/// Entries a hostile producer stamps with inline destinations we never offered: each is
/// reported as that endpoint's peer breaking the protocol, writes nothing, and the ring goes
/// on delivering.
#[test]
fn hostile_inline_entries_are_refused_without_writing() {
    let ((a, _cqa, _sa), (b, cqb, region, _sb)) = pair();
    assert_eq!(
        crate::transport::Endpoint::remote_len(&a, 4),
        None,
        "staging offered"
    );
    let forged = [
        // Region 3 does not exist on the consumer's side.
        (PLACE_INLINE | (3 << PLACE_KEY_SHIFT), 8),
        // Region 4 does, as staging: not the peer's to write.
        (PLACE_INLINE | (4 << PLACE_KEY_SHIFT), 8),
        // Just past the end of the 4 KiB region.
        (PLACE_INLINE | (2 << PLACE_KEY_SHIFT) | 64, 1),
        // More bytes than an entry holds, in bounds.
        (PLACE_INLINE | (2 << PLACE_KEY_SHIFT), MAX_INLINE as u32 + 1),
        // Offset beyond the region.
        (PLACE_INLINE | (2 << PLACE_KEY_SHIFT) | 1000, 1),
    ];
    for (place, len) in forged {
        a.push(7, len as usize, place, |entry| {
            // SAFETY: the entry's inline area holds MAX_INLINE bytes.
            unsafe { std::ptr::write_bytes(entry, 0xee, MAX_INLINE) }
        })
        .expect("push");
        match cqb.poll() {
            Err(TransportError::PeerBroke { endpoint, why }) => {
                assert_eq!(endpoint, b.id());
                assert!(why.contains("inline"), "{why}")
            }
            other => panic!("forged place {place:#x} len {len}: {other:?}"),
        }
    }
    let staging = b.local_region(4).expect("staging kept as a source");
    for r in [&region, staging] {
        let mut all = vec![0u8; r.len()];
        r.read(0, &mut all).expect("read");
        assert!(all.iter().all(|b| *b == 0), "a refused entry wrote bytes");
    }
    // An honest inline write after them still arrives.
    a.write_inline(b"after", 2, 128, 9).expect("write_inline");
    let c = cqb.poll().expect("poll").expect("completion");
    assert_eq!((c.imm, c.len), (9, 5));
    let mut got = [0u8; 5];
    region.read(128, &mut got).expect("read");
    assert_eq!(&got, b"after");
}

/// A peer that publishes a completion and then hangs up: the completion is delivered before
/// the end is reported, wherever the consumer's looks fall between the two. The end used to
/// be looked for after the ring was found empty, so a completion published in between was
/// reported as the peer gone (in about one round in thirty here), and a lease failed a call
/// that had been answered.
#[test]
fn a_completion_published_before_the_hang_up_comes_before_the_end() {
    const ROUNDS: usize = 1000;
    // One producer thread for every round (a thread per round costs more than the round).
    let (to_producer, sockets) =
        std::sync::mpsc::channel::<(UnixStream, std::sync::mpsc::Receiver<()>)>();
    let producer = std::thread::spawn(move || {
        let region = Arc::new(Region::new(1, 64).expect("region"));
        for (sa, go) in sockets {
            let cq = CompletionQueue::new().expect("cq");
            let a =
                ShmEndpoint::connect(&sa, Side::Active, vec![region.clone()], &cq).expect("active");
            go.recv().expect("go");
            a.write_inline(b"x", 2, 0, 11).expect("write_inline");
            sa.shutdown(std::net::Shutdown::Both).expect("shutdown");
        }
    });
    let region = Arc::new(Region::new(2, 4096).expect("region"));
    for round in 0..ROUNDS {
        let (sa, sb) = UnixStream::pair().expect("socketpair");
        let (go, went) = std::sync::mpsc::channel();
        to_producer.send((sa, went)).expect("producer");
        let cq = CompletionQueue::new().expect("cq");
        let b =
            ShmEndpoint::connect(&sb, Side::Passive, vec![region.clone()], &cq).expect("passive");
        go.send(()).expect("go");
        let c = loop {
            match cq.wait(Duration::ZERO) {
                Ok(Some(c)) => break c,
                Ok(None) => std::hint::spin_loop(),
                Err(e) => panic!("round {round}: {e:?} before the completion"),
            }
        };
        assert_eq!((c.endpoint, c.imm, c.len), (b.id(), 11, 1));
        // The hang-up follows, once the producer has made it.
        let gone = loop {
            match cq.wait(Duration::ZERO) {
                Ok(None) => std::hint::spin_loop(),
                other => break other,
            }
        };
        assert!(
            matches!(gone, Err(TransportError::PeerGone { endpoint }) if endpoint == b.id()),
            "round {round}: after the completion, {gone:?}"
        );
    }
    drop(to_producer);
    producer.join().expect("producer");
}

/// The descriptors attached to a message's length and those attached to its body count
/// together: 16 on each (each within what one read takes) make 32, refused.
#[test]
fn a_message_carries_at_most_max_fds_descriptors_over_length_and_body() {
    let file = sys::memfd("rfaas-test-fds", 64).expect("memfd");
    let many = vec![file.as_fd(); sys::MAX_FDS];
    let body = serde_json::to_vec(&Offer {
        regions: Vec::new(),
        control: false,
    })
    .expect("json");
    let send = |a: &UnixStream, on_length: &[std::os::fd::BorrowedFd<'_>]| {
        sys::send_with_fds(a, &(body.len() as u32).to_le_bytes(), on_length).expect("length");
        sys::send_with_fds(a, &body, &many).expect("body");
    };
    let (a, b) = UnixStream::pair().expect("socket pair");
    send(&a, &many);
    match recv_message::<Offer>(&b) {
        Err(TransportError::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
            assert!(e.to_string().contains("too many descriptors"), "{e}");
        }
        other => panic!("32 descriptors in one message: {other:?}"),
    }
    // The most allowed, all on the body, are taken.
    let (a, b) = UnixStream::pair().expect("socket pair");
    send(&a, &[]);
    let (_, fds) = recv_message::<Offer>(&b).expect("16 descriptors");
    assert_eq!(fds.len(), sys::MAX_FDS);
}
