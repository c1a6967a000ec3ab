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

/// Every connection of a TCP lease (the control connection and one per worker) is held with
/// keepalive and a user timeout, as the executor holds its side. Found through `/proc`: our
/// sockets whose remote port is a local port of one of the executor's sockets.
#[test]
fn a_tcp_leases_connections_are_held_with_keepalive() {
    let exec = Executor::start_tcp(
        "vanished-keepalive",
        "127.0.0.1:0",
        &["--cores", "2", "--hot-timeout-us", "0"],
    );
    let lease = Lease::connect_tcp(&exec.address, &LeaseOptions::default()).expect("lease");
    fx::noop::invoke(&lease).timeout(T).wait().expect("noop");
    let theirs = socket_fds(&exec.pid().to_string());
    let ours = socket_fds("self");
    let table = tcp_table();
    let exec_ports: HashSet<u16> = table
        .iter()
        .filter(|(inode, _, _)| theirs.contains_key(inode))
        .map(|&(_, local, _)| local)
        .collect();
    let held: Vec<i32> = table
        .iter()
        .filter(|(inode, _, remote)| ours.contains_key(inode) && exec_ports.contains(remote))
        .map(|(inode, _, _)| ours[inode])
        .collect();
    assert_eq!(held.len(), 3, "control and two data connections: {held:?}");
    let tcp = libc::IPPROTO_TCP;
    for fd in held {
        assert_ne!(
            get_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE),
            0,
            "fd {fd}"
        );
        assert_eq!(get_int(fd, tcp, libc::TCP_KEEPIDLE), 10, "fd {fd}");
        assert_eq!(get_int(fd, tcp, libc::TCP_KEEPINTVL), 5, "fd {fd}");
        assert_eq!(get_int(fd, tcp, libc::TCP_KEEPCNT), 3, "fd {fd}");
        assert_eq!(get_int(fd, tcp, libc::TCP_USER_TIMEOUT), 25_000, "fd {fd}");
    }
    drop(lease);
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
