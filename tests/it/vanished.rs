//! A TCP client whose executor's host vanishes (no FIN, no RST): the lease's connections are
//! held with keepalive and a user timeout, so a call without a timeout fails instead of
//! waiting forever.

use functions_example as fx;
use rfaas::{Error, Lease, LeaseOptions};
use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;
use tests::{Executor, Netns, example_package, executor_binary, ready_address};

const T: Duration = Duration::from_secs(20);

/// The TCP sockets of process `pid` (`self` for this one), by inode, with the descriptor
/// number that holds each.
fn socket_fds(pid: &str) -> HashMap<u64, i32> {
    let mut found = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return found;
    };
    for entry in dir.flatten() {
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        let inode = link
            .strip_prefix("socket:[")
            .and_then(|l| l.strip_suffix(']'))
            .and_then(|n| n.parse().ok());
        let fd = entry.file_name().to_string_lossy().parse().ok();
        if let (Some(inode), Some(fd)) = (inode, fd) {
            found.insert(inode, fd);
        }
    }
    found
}

/// The IPv4 TCP sockets of this network namespace: inode, local port, remote port.
fn tcp_table() -> Vec<(u64, u16, u16)> {
    let text = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some((f.get(9)?.parse().ok()?, port(f.get(1)?)?, port(f.get(2)?)?))
        })
        .collect()
}

/// The value of an `int` socket option of our descriptor `fd`.
fn get_int(fd: i32, level: libc::c_int, name: libc::c_int) -> libc::c_int {
    let mut value: libc::c_int = -1;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live and describe one `c_int`; a descriptor that is no
    // longer a socket is an error, not undefined behaviour.
    let r = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut len) };
    assert_eq!(
        r,
        0,
        "getsockopt on fd {fd}: {}",
        std::io::Error::last_os_error()
    );
    value
}

/// A TCP lease's control connection is held with keepalive and a user timeout, as the
/// executor holds its side; its data connections (one per worker) with keepalive alone (a user
/// timeout would end a session whose worker is busy, the next test). Found through `/proc`:
/// our sockets whose remote port is a local port of one of the executor's sockets.
#[test]
fn a_tcp_leases_connections_are_held_with_keepalive() {
    let exec = Executor::start_tcp(
        "vanished-keepalive",
        "127.0.0.1:0",
        &["--cores", "2", "--hot-timeout-us", "0"],
    );
    let lease = Lease::connect_tcp(&exec.address, &LeaseOptions::default()).expect("lease");
    fx::noop::invoke(&lease).timeout(T).wait().expect("noop");
    let control_port: u16 = exec
        .address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("the executor's port");
    let theirs = socket_fds(&exec.pid().to_string());
    let ours = socket_fds("self");
    let table = tcp_table();
    let exec_ports: HashSet<u16> = table
        .iter()
        .filter(|(inode, _, _)| theirs.contains_key(inode))
        .map(|&(_, local, _)| local)
        .collect();
    let held: Vec<(i32, u16)> = table
        .iter()
        .filter(|(inode, _, remote)| ours.contains_key(inode) && exec_ports.contains(remote))
        .map(|(inode, _, remote)| (ours[inode], *remote))
        .collect();
    assert_eq!(held.len(), 3, "control and two data connections: {held:?}");
    let tcp = libc::IPPROTO_TCP;
    for (fd, remote) in held {
        assert_ne!(
            get_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE),
            0,
            "fd {fd}"
        );
        assert_eq!(get_int(fd, tcp, libc::TCP_KEEPIDLE), 10, "fd {fd}");
        assert_eq!(get_int(fd, tcp, libc::TCP_KEEPINTVL), 5, "fd {fd}");
        assert_eq!(get_int(fd, tcp, libc::TCP_KEEPCNT), 3, "fd {fd}");
        let user_timeout = if remote == control_port { 25_000 } else { 0 };
        assert_eq!(
            get_int(fd, tcp, libc::TCP_USER_TIMEOUT),
            user_timeout,
            "fd {fd} (to port {remote})"
        );
    }
    drop(lease);
}

/// A TCP session whose worker runs a function for longer than the keepalive's 25 s while
/// more requests queue behind it lives on, and every call completes. The executor reads a
/// data connection only between calls, so its receive window stays shut meanwhile, which
/// Linux counts against a user timeout: with one on the client's data connections (from
/// finding 75 until the diff review that followed it), the session ended after 25 s with
/// every call failing `ExecutorGone`.
#[test]
fn a_tcp_session_busy_for_longer_than_the_keepalive_lives_on() {
    let exec = Executor::start_tcp(
        "vanished-busy",
        "127.0.0.1:0",
        &[
            "--cores",
            "1",
            "--slots",
            "8",
            "--slot-size",
            "2097152",
            "--hot-timeout-us",
            "0",
        ],
    );
    let lease = Lease::connect_tcp(&exec.address, &LeaseOptions::default()).expect("lease");
    // 30 s: past the 25 s a user timeout allows. Sent first (an invocation's first poll sends
    // it), so that the worker runs it while the echoes queue behind it on the connection.
    let mut slow = fx::fault::invoke(&lease, 2, 30_000);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        Future::poll(std::pin::Pin::new(&mut slow), &mut cx).is_pending(),
        "a 30 s call finished at once"
    );
    // 7 MiB: more than the executor's kernel takes while its worker reads nothing, so its
    // receive window shuts and the senders wait for room.
    let inputs: Vec<Vec<u8>> = (0..7u8).map(|k| vec![k; 1 << 20]).collect();
    let mut outs: Vec<Vec<u8>> = (0..7).map(|_| vec![0u8; 1 << 20]).collect();
    std::thread::scope(|s| {
        let lease = &lease;
        let echoes: Vec<_> = inputs
            .iter()
            .zip(outs.iter_mut())
            .map(|(input, out)| s.spawn(move || fx::echo::invoke(lease, input, out).wait()))
            .collect();
        assert_eq!(slow.wait().expect("the slow call"), 30_000);
        for echo in echoes {
            assert_eq!(
                echo.join()
                    .expect("echo thread")
                    .expect("a call queued behind it"),
                1 << 20
            );
        }
    });
    for (input, out) in inputs.iter().zip(&outs) {
        assert!(input == out, "an echo came back wrong");
    }
}

/// A managed lease's control connection to its manager is held the same way: a manager whose
/// host vanished ends the lease within about 25 s instead of its heartbeats queueing unsent.
#[test]
fn a_managed_leases_control_connection_is_held_with_keepalive() {
    let dir = tests::scratch_dir("vanished-managed");
    let manager = tests::Daemon::start("manager", &tests::manager_config(&dir, 1, 1024, ""));
    let mut spec = rfaas::managed::LeaseSpec::default();
    spec.fabric = rfaas::wire::Fabric::Shm;
    let lease =
        rfaas::managed::lease_from(&manager.address, example_package(), &spec).expect("lease");
    let port: u16 = manager
        .address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("the manager's port");
    let ours = socket_fds("self");
    let held: Vec<i32> = tcp_table()
        .iter()
        .filter(|(inode, _, remote)| ours.contains_key(inode) && *remote == port)
        .map(|(inode, _, _)| ours[inode])
        .collect();
    assert_eq!(held.len(), 1, "one control connection: {held:?}");
    let tcp = libc::IPPROTO_TCP;
    assert_ne!(get_int(held[0], libc::SOL_SOCKET, libc::SO_KEEPALIVE), 0);
    assert_eq!(get_int(held[0], tcp, libc::TCP_KEEPIDLE), 10);
    assert_eq!(get_int(held[0], tcp, libc::TCP_USER_TIMEOUT), 25_000);
    drop(lease);
}

/// A process killed and reaped when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP client whose executor's host vanishes (its network link is gone: no FIN, no RST)
/// after a first call: a call without a timeout fails with `ExecutorGone` within about 25 s
/// (the keepalive's user timeout: the request is never acknowledged). It used to wait as long
/// as the process lived.
#[test]
fn a_call_to_an_executor_whose_host_vanished_fails() {
    let ns = match Netns::create(4) {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!(
                "skipping: cannot simulate a second host with a network namespace here ({why})"
            );
            return;
        }
    };
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(executor_binary())
        .arg("run")
        .arg("--library")
        .arg(example_package())
        .args(["--listen", &format!("{}:0", ns.there)])
        .args(["--cores", "1", "--hot-timeout-us", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("executor in the namespace");
    let address = ready_address(&mut child, "the executor in the namespace");
    let _exec = Killed(child);
    let lease = Lease::connect_tcp(&address, &LeaseOptions::default()).expect("lease");
    fx::noop::invoke(&lease).timeout(T).wait().expect("noop");
    // The executor's host drops off the network: the link goes, the process stays.
    let gone = Command::new("ip")
        .args(["link", "del", &ns.veth])
        .status()
        .expect("ip");
    assert!(gone.success(), "removing the link");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(fx::noop::invoke(&lease).wait());
    });
    match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(Err(Error::ExecutorGone)) => {}
        Ok(other) => panic!("a call to a vanished executor: {other:?}"),
        Err(_) => panic!("a call without timeout to a vanished executor still waits after 90 s"),
    }
}
