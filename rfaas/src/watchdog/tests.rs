//! The name lookup bounded by what is left of a deadline, and the watchdog's connect.

use super::*;
use std::net::TcpListener;

/// Longer than any test here should take: a lookup that was not cut off returns after it.
const HANG: Duration = Duration::from_secs(20);

/// A resolver that does not answer is cut off at the time left, with `TimedOut`, and the caller
/// does not wait for it to finish.
#[test]
fn a_hanging_name_lookup_is_cut_off_at_the_time_left() {
    let (release, gate) = mpsc::channel::<()>();
    let (finished_tx, finished) = mpsc::channel();
    let lookup = move |_: &str| {
        // Stands for a name server that does not answer: returns only when released, or
        // after HANG (then with an address, which the caller must never have seen).
        let _ = gate.recv_timeout(HANG);
        let _ = finished_tx.send(());
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], 9))])
    };
    let e = resolve_with("compute-17.cluster:7000", Duration::from_millis(50), lookup)
        .expect_err("a lookup that never answered gave addresses");
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(e.to_string().contains("compute-17.cluster:7000"), "{e}");
    // The lookup is still running: it was abandoned, not waited for.
    assert_eq!(
        finished.try_recv(),
        Err(mpsc::TryRecvError::Empty),
        "the caller waited for the lookup to end"
    );
    release.send(()).expect("the lookup thread is waiting");
    finished
        .recv_timeout(HANG)
        .expect("the abandoned lookup thread ends once its lookup does");
}

/// What the resolver answers in time, addresses or an error, is what the caller gets.
#[test]
fn a_lookup_answered_in_time_is_passed_on() {
    let addrs = vec![
        SocketAddr::from(([10, 0, 0, 7], 7000)),
        SocketAddr::from(([10, 0, 0, 8], 7000)),
    ];
    let answer = addrs.clone();
    let got = resolve_with("node:7000", HANG, move |name| {
        assert_eq!(name, "node:7000");
        Ok(answer)
    })
    .expect("lookup");
    assert_eq!(got, addrs);
    let e = resolve_with("nowhere:1", HANG, |_| {
        Err(io::Error::new(io::ErrorKind::NotFound, "no such host"))
    })
    .expect_err("an error was lost");
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert_eq!(e.to_string(), "no such host");
    let e = resolve_with("node:7000", Duration::ZERO, |_| {
        panic!("looked up with no time")
    })
    .expect_err("looked up with no time left");
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
}

/// Literal addresses are taken as they are; a host name goes through the system resolver.
#[test]
fn literal_addresses_need_no_lookup() {
    for (text, addr) in [
        ("10.1.2.3:7000", SocketAddr::from(([10, 1, 2, 3], 7000))),
        (
            "[::1]:7001",
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 7001)),
        ),
    ] {
        assert_eq!(resolve_within(text, HANG).expect(text), vec![addr]);
    }
    let local = resolve_within("localhost:7002", HANG).expect("localhost");
    assert!(
        local
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 7002),
        "{local:?}"
    );
    assert!(!local.is_empty());
    let e = resolve_within("no port", HANG).expect_err("an address without a port");
    assert_ne!(e.kind(), io::ErrorKind::TimedOut, "{e}");
}

/// The watchdog's connect reaches a listener by name and by number, and watches what it
/// connected: when the deadline passes, the connection is shut down.
#[test]
fn the_watchdogs_connect_resolves_connects_and_watches() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    for addr in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let dog = Watchdog::start(Duration::from_millis(200)).expect("watchdog");
        let stream = dog.connect_tcp(&addr).expect(&addr);
        let (mut accepted, _) = listener.accept().expect("accept");
        // The watchdog fires: our end reads end-of-stream.
        let mut byte = [0u8; 1];
        use std::io::Read;
        let mut ours = stream;
        ours.set_read_timeout(Some(HANG)).expect("timeout");
        assert_eq!(ours.read(&mut byte).expect("read after the deadline"), 0);
        assert!(dog.expired(false), "the watchdog did not fire");
        assert_eq!(accepted.read(&mut byte).expect("peer read"), 0);
    }
}

/// Threads of this process named `name` (from /proc).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// Many exchanges at once share one watchdog thread, and each is cut off at its own deadline:
/// the one that expires shuts down its socket and no other's.
#[test]
fn exchanges_share_one_thread_and_each_keeps_its_own_deadline() {
    use std::io::Read;
    let dogs: Vec<Watchdog> = (0..16)
        .map(|_| Watchdog::start(HANG).expect("watchdog"))
        .collect();
    let short = Watchdog::start(Duration::from_millis(100)).expect("watchdog");
    // A new thread takes its name a moment after it starts: wait for it. Then one, or for a
    // moment two (a thread that lingered idle may be on its way out as the first of these
    // started the next).
    let named = Instant::now() + HANG;
    let mut threads = threads_named("rfaas-watchdog");
    while threads == 0 && Instant::now() < named {
        std::thread::sleep(Duration::from_millis(1));
        threads = threads_named("rfaas-watchdog");
    }
    assert!(
        (1..=2).contains(&threads),
        "{threads} watchdog threads for 17 exchanges"
    );

    let pairs: Vec<(UnixStream, UnixStream)> =
        (0..2).map(|_| UnixStream::pair().expect("pair")).collect();
    short.watch_unix(&pairs[0].0).expect("watch");
    dogs[0].watch_unix(&pairs[1].0).expect("watch");
    let mut byte = [0u8; 1];
    let mut cut = &pairs[0].0;
    cut.set_read_timeout(Some(HANG)).expect("timeout");
    assert_eq!(cut.read(&mut byte).expect("read after the deadline"), 0);
    assert!(short.expired(false), "the short watchdog did not fire");

    // The long exchange's socket is still open: its peer's byte arrives.
    use std::io::Write;
    (&pairs[1].1).write_all(b"x").expect("write");
    let mut open = &pairs[1].0;
    open.set_read_timeout(Some(HANG)).expect("timeout");
    assert_eq!(open.read(&mut byte).expect("read"), 1);
    for dog in dogs {
        assert!(!dog.expired(false), "a long exchange was cut off");
    }
}

/// A socket watched after the deadline passed is shut down at once, and an exchange that
/// ended in time is not reported as expired even if its deadline passes later.
#[test]
fn a_socket_watched_too_late_is_shut_and_a_finished_exchange_stays_finished() {
    use std::io::Read;
    let dog = Watchdog::start(Duration::from_millis(20)).expect("watchdog");
    let (first, _peer) = UnixStream::pair().expect("pair");
    dog.watch_unix(&first).expect("watch");
    let mut byte = [0u8; 1];
    let mut r = &first;
    r.set_read_timeout(Some(HANG)).expect("timeout");
    assert_eq!(r.read(&mut byte).expect("read after the deadline"), 0);
    let (late, _late_peer) = UnixStream::pair().expect("pair");
    dog.watch_unix(&late).expect("watch");
    let mut r = &late;
    r.set_read_timeout(Some(HANG)).expect("timeout");
    assert_eq!(r.read(&mut byte).expect("read of the late socket"), 0);
    assert!(dog.expired(false));

    // (A deadline a loaded machine cannot miss before `finish`, then a sleep past it.)
    let done = Watchdog::start(Duration::from_millis(500)).expect("watchdog");
    let (kept, _kept_peer) = UnixStream::pair().expect("pair");
    done.watch_unix(&kept).expect("watch");
    assert_eq!(done.finish(Ok::<u8, Error>(7), "late").expect("in time"), 7);
    std::thread::sleep(Duration::from_millis(600));
    let mut r = &kept;
    r.set_nonblocking(true).expect("nonblocking");
    let e = r
        .read(&mut byte)
        .expect_err("the finished exchange's socket is still open");
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
}
