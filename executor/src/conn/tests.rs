//! The accept loop's bound on pending connections, the whole-exchange deadline, keepalive.

use super::*;
use std::os::fd::AsRawFd;
use std::sync::mpsc;

const BOUND: Duration = Duration::from_secs(20);

/// A peer that sends a byte every 50 ms never lets a 300 ms read timeout pass, but cannot
/// stretch a 300 ms deadline: the exchange fails with `TimedOut` well before its 40 bytes.
#[test]
fn a_dripping_peer_is_cut_off_at_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (sent_tx, sent) = mpsc::channel();
    let dripper = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        let mut n = 0;
        for _ in 0..40 {
            if s.write_all(b"x").is_err() {
                break;
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = sent_tx.send(n);
    });
    let (stream, _) = listener.accept().expect("accept");
    let mut d = Deadlined::new(&stream, Duration::from_millis(300));
    let mut buf = [0u8; 40];
    let e = d.read_exact(&mut buf).expect_err("read 40 dripped bytes");
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(e.to_string().contains("took longer than 300ms"), "{e}");
    drop(stream);
    dripper.join().expect("dripper");
    let n = sent.recv_timeout(BOUND).expect("dripper's count");
    assert!(n < 40, "the peer sent all its bytes before the cut: {n}");
}

/// Within its deadline an exchange reads and writes as a plain stream would.
#[test]
fn an_exchange_within_its_deadline_goes_through() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peer = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"ping").expect("write");
        let mut back = [0u8; 4];
        s.read_exact(&mut back).expect("read");
        back
    });
    let (stream, _) = listener.accept().expect("accept");
    let mut d = Deadlined::new(&stream, BOUND);
    let mut got = [0u8; 4];
    d.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"ping");
    d.write_all(b"pong").expect("write");
    assert_eq!(&peer.join().expect("peer"), b"pong");
}

/// Beyond `max_pending` connections still reading their request, a new one is closed at once
/// (end of stream, nothing served); once one of them is done, new ones are served again.
#[test]
fn connections_beyond_the_pending_bound_are_closed_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (release_tx, release) = mpsc::channel::<()>();
    let release = std::sync::Mutex::new(release);
    let (served_tx, served) = mpsc::channel();
    let served_tx = std::sync::Mutex::new(served_tx);
    let (done_tx, done) = mpsc::channel();
    let done_tx = std::sync::Mutex::new(done_tx);
    std::thread::spawn(move || {
        accept_loop(
            &listener,
            "test-conn",
            PendingLimit::new(2),
            move |mut stream, token| {
                let _ = served_tx.lock().expect("lock").send(());
                // Reading "its request" until the test lets one go.
                let _ = release.lock().expect("lock").recv_timeout(BOUND);
                drop(token);
                let _ = stream.write_all(b"served");
                let _ = done_tx.lock().expect("lock").send(());
            },
        );
    });
    let _held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    for _ in 0..2 {
        served
            .recv_timeout(BOUND)
            .expect("a pending connection served");
    }
    let mut third = TcpStream::connect(addr).expect("connect");
    third.set_read_timeout(Some(BOUND)).expect("timeout");
    let mut buf = [0u8; 16];
    let n = third.read(&mut buf).expect("the refused connection's end");
    assert_eq!(n, 0, "a connection beyond the bound was served");
    assert!(
        served.try_recv().is_err(),
        "a connection beyond the bound reached the handler"
    );
    // One request is in: there is room again.
    release_tx.send(()).expect("release");
    done.recv_timeout(BOUND)
        .expect("a released connection's handler ends");
    let _fourth = TcpStream::connect(addr).expect("connect");
    served
        .recv_timeout(BOUND)
        .expect("a new connection is served once there is room");
    release_tx.send(()).expect("release");
    release_tx.send(()).expect("release");
}

/// A held connection has keepalive on, with the periods documented, and the user timeout.
#[test]
fn a_held_connection_has_keepalive_and_a_user_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let s = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    hold_keepalive(&s).expect("keepalive");
    let get = |level, name| {
        let mut v: libc::c_int = -1;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket; `v` and `len` are live and sized for an int option.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                level,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
        v
    };
    assert_ne!(get(libc::SOL_SOCKET, libc::SO_KEEPALIVE), 0);
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 10);
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 5);
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 3);
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 25_000);
}
