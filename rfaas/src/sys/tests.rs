//! The memory-file seals that keep a peer from shrinking shared memory under us, the bounded
//! Unix-socket connect, and messages bounded by one deadline.

use super::*;
use std::os::fd::AsFd;

fn truncate(fd: BorrowedFd<'_>, len: libc::off_t) -> io::Result<libc::c_int> {
    // SAFETY: a valid descriptor; `ftruncate` only changes the file's size.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })
}

/// A peer holding one of our descriptors cannot change the file's size (the other side's
/// mapping would fault), nor lift the seals.
#[test]
fn our_memory_files_cannot_change_size() {
    let fd = memfd("rfaas-test", 8192).expect("memfd");
    assert_eq!(file_len(fd.as_fd()).expect("len"), 8192);
    assert!(cannot_shrink(fd.as_fd()).expect("seals"));
    for len in [0, 4096, 16384] {
        let e = truncate(fd.as_fd(), len).expect_err("resized a sealed file");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "to {len}: {e}");
    }
    // SAFETY: a valid memfd; F_ADD_SEALS takes an int.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, 0) };
    assert_eq!(r, -1, "seals can still be changed");
    let map = Mapping::new(fd.as_fd(), 8192).expect("map");
    assert_eq!(map.len(), 8192);
}

/// A memory file a peer sends without the seal is refused before it is mapped; so is a
/// descriptor that is no memory file at all.
#[test]
fn unsealed_or_foreign_files_are_not_mapped() {
    let name = CString::new("rfaas-unsealed").expect("name");
    // SAFETY: a valid NUL-terminated name.
    let raw = cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) }).expect("memfd");
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    truncate(fd.as_fd(), 4096).expect("size");
    let e = Mapping::new(fd.as_fd(), 4096).expect_err("mapped an unsealed file");
    assert!(e.to_string().contains("F_SEAL_SHRINK"), "{e}");
    let (a, _b) = UnixStream::pair().expect("socket pair");
    let e = Mapping::new(a.as_fd(), 4096).expect_err("mapped a socket");
    assert!(e.to_string().contains("not a sealable memory file"), "{e}");
}

/// Descriptors attached to the pieces of one message count together: a peer that attaches the
/// most one piece may carry to each of many pieces is refused, not allowed to fill our
/// descriptor table.
#[test]
fn a_message_carries_at_most_max_fds_descriptors_in_all() {
    let (a, b) = UnixStream::pair().expect("socket pair");
    let file = memfd("rfaas-test-fds", 64).expect("memfd");
    let many = vec![file.as_fd(); MAX_FDS];
    send_with_fds(&a, &[1, 2], &many).expect("first piece");
    send_with_fds(&a, &[3, 4], &many).expect("second piece");
    let mut buf = [0u8; 4];
    let e = recv_with_fds(&b, &mut buf).expect_err("32 descriptors in one message");
    assert!(e.to_string().contains("too many descriptors"), "{e}");
    // One piece with the most allowed is fine.
    let (a, b) = UnixStream::pair().expect("socket pair");
    send_with_fds(&a, &[1, 2, 3, 4], &many).expect("one piece");
    let fds = recv_with_fds(&b, &mut buf).expect("16 descriptors");
    assert_eq!((fds.len(), buf), (MAX_FDS, [1, 2, 3, 4]));
}

/// A bounded connect reaches a listener, refuses a path no socket address can hold, reports a
/// missing socket as such, and leaves the connection without a send timeout.
#[test]
fn a_bounded_unix_connect_says_what_went_wrong() {
    let dir = std::env::temp_dir().join(format!("rfaas-sys-connect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("listener.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let s = unix_connect_timeout(&path, Duration::from_secs(1)).expect("connect");
    assert!(listener.accept().is_ok(), "the listener saw no connection");
    assert_eq!(
        s.write_timeout().expect("timeout"),
        None,
        "send timeout left set"
    );

    let long = std::path::PathBuf::from("/".repeat(200));
    let e = unix_connect_timeout(&long, Duration::from_secs(1)).expect_err("200-byte path");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    let e = unix_connect_timeout(std::path::Path::new(""), Duration::from_secs(1))
        .expect_err("empty path");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");

    let e = unix_connect_timeout(&dir.join("absent.sock"), Duration::from_secs(1))
        .expect_err("no socket there");
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A message with a deadline ends at the deadline however the peer paces its bytes: a reader
/// facing a peer that drips one byte at a time, and a writer facing a peer that reads nothing,
/// both fail with `TimedOut` (a timeout per read or write would wait as long as the peer keeps
/// dripping, and forever on a peer that reads nothing without one).
#[test]
fn a_deadline_bounds_a_whole_message_however_the_peer_paces_it() {
    use std::io::Write;
    let (a, b) = UnixStream::pair().expect("socket pair");
    let dripper = std::thread::spawn(move || {
        let mut a = a;
        // A byte every 50 ms for up to 5 s, until the reader hangs up.
        for _ in 0..100 {
            if a.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let e = recv_with_fds_by(&b, &mut buf, Some(started + Duration::from_millis(300)))
        .expect_err("a dripped message completed");
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    // A timeout per read would have let the 64th byte (at ~3.2 s) complete the message.
    drop(b);
    dripper.join().expect("dripper");

    let (a, _b) = UnixStream::pair().expect("socket pair");
    let big = vec![0u8; 16 << 20];
    let e = send_with_fds_by(
        &a,
        &big,
        &[],
        Some(Instant::now() + Duration::from_millis(200)),
    )
    .expect_err("16 MiB went into a socket nobody reads");
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    // Without a deadline the same message goes through to a reader.
    let (a, b) = UnixStream::pair().expect("socket pair");
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; 1 << 20];
        recv_with_fds(&b, &mut got).map(|_| got.len())
    });
    send_with_fds_by(
        &a,
        &big[..1 << 20],
        &[],
        Some(Instant::now() + Duration::from_secs(60)),
    )
    .expect("a read message");
    assert_eq!(reader.join().expect("reader").expect("read"), 1 << 20);
}

/// A sealed memory file that is not shared memory is refused before it is mapped: a hugetlbfs
/// memfd takes every seal, but a hole punched in it gives its pages back under the mapping.
/// Where the host cannot make one (no hugetlbfs), the test says so and checks our own files.
#[test]
fn a_sealed_hugetlb_memory_file_is_not_mapped() {
    let ours = memfd("rfaas-shmem", 4096).expect("memfd");
    assert!(
        is_shared_memory(ours.as_fd()).expect("statfs"),
        "memfd not on shmem"
    );
    let name = CString::new("rfaas-hugetlb").expect("name");
    // SAFETY: a valid NUL-terminated name.
    let raw = unsafe {
        libc::memfd_create(
            name.as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | libc::MFD_HUGETLB | libc::MFD_HUGE_2MB,
        )
    };
    if raw < 0 {
        eprintln!(
            "skipping the hugetlbfs case: memfd_create(MFD_HUGETLB): {}",
            io::Error::last_os_error()
        );
        return;
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let len = 2 << 20;
    if let Err(e) = truncate(fd.as_fd(), len) {
        eprintln!("skipping the hugetlbfs case: sizing a 2 MiB huge-page file: {e}");
        return;
    }
    // SAFETY: a valid memfd created with sealing allowed; F_ADD_SEALS takes an int.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) }).expect("seals");
    assert!(cannot_shrink(fd.as_fd()).expect("seals"));
    assert!(!is_shared_memory(fd.as_fd()).expect("statfs"));
    let e = Mapping::new(fd.as_fd(), len as usize).expect_err("mapped a hugetlbfs file");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("not a shared-memory file"), "{e}");
}

/// The value of an `int` socket option.
fn get_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
    let mut value: libc::c_int = -1;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket; `value` and `len` are live and describe one `c_int`.
    cvt(unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut len) })
        .expect("getsockopt");
    value
}

/// A held connection is probed when quiet and ends when its sent data stays unacknowledged:
/// the same settings as the executor's and the manager's (`executor::conn::hold_keepalive`).
#[test]
fn a_held_connection_has_keepalive_and_a_user_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let s = std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    let fd = s.as_raw_fd();
    assert_eq!(
        get_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE),
        0,
        "the default"
    );
    hold_keepalive(&s).expect("keepalive");
    let tcp = libc::IPPROTO_TCP;
    assert_ne!(get_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 0);
    assert_eq!(get_int(fd, tcp, libc::TCP_KEEPIDLE), 10);
    assert_eq!(get_int(fd, tcp, libc::TCP_KEEPINTVL), 5);
    assert_eq!(get_int(fd, tcp, libc::TCP_KEEPCNT), 3);
    assert_eq!(get_int(fd, tcp, libc::TCP_USER_TIMEOUT), 25_000);
}
