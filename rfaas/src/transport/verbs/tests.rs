//! Unit tests of the verbs fabric's logic that needs no device: waking sleepers, the drain
//! budget of dropped endpoints, queue sizing and the checks of a peer's hello. (What needs a
//! device runs in the Soft-RoCE VM: `rfaas/tests/it/verbs.rs`, `tests/it/verbs.rs`.)

use super::wake::{UNSIGNALLED_TICK, Wake};
use super::*;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::process::Command;

/// Whether eventfd `fd` is readable now (a wake-up is pending).
fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the call's duration; no wait.
    let rc = unsafe { libc::poll(&mut p, 1, 0) };
    rc == 1 && p.revents & libc::POLLIN != 0
}

/// Takes the wake-up pending on `fd`, as a sleeper that wakes does.
fn consume(fd: RawFd) {
    let mut b = [0u8; 8];
    // SAFETY: reads at most 8 bytes into `b` from a non-blocking eventfd the caller holds.
    unsafe { libc::read(fd, b.as_mut_ptr().cast(), 8) };
}

/// Two threads asleep at once each get an interrupt, whoever wakes first: with one eventfd for
/// all, the first to wake read it back to zero and the other slept on until its next liveness
/// tick, past the interrupt `Queue::wait_since` promised to return for.
#[test]
fn every_sleeper_gets_every_interrupt() {
    let wake = Wake::new().expect("wake");
    let epoch = wake.epoch();
    let (a, b) = (wake.sleeper(), wake.sleeper());
    assert_ne!(a.fd(), b.fd(), "each sleeper has an eventfd of its own");
    assert!(
        !readable(a.fd()) && !readable(b.fd()),
        "nothing pending yet"
    );
    wake.interrupt();
    assert_ne!(wake.epoch(), epoch);
    assert!(readable(a.fd()), "a is woken");
    consume(a.fd());
    assert!(
        readable(b.fd()),
        "b is still woken after a took its wake-up"
    );
    drop((a, b));
    // A stale wake-up does not carry over to the next sleeper that reuses an eventfd.
    let c = wake.sleeper();
    assert!(
        !readable(c.fd()),
        "a new sleeper starts with nothing pending"
    );
}

/// An interrupt before a sleeper registers is seen in the count it checks after registering
/// (the epoch it waits on is gone); one after registering signals its eventfd.
#[test]
fn an_interrupt_around_registering_is_not_lost() {
    let wake = Wake::new().expect("wake");
    let epoch = wake.epoch();
    wake.interrupt();
    let s = wake.sleeper();
    assert_ne!(
        wake.epoch(),
        epoch,
        "the moved count is seen after registering"
    );
    let epoch = wake.epoch();
    wake.interrupt();
    assert_ne!(wake.epoch(), epoch);
    assert!(readable(s.fd()));
}

/// A nudge wakes the other sleepers without moving the count (a completion-channel event
/// taken by one sleeper, or completions a sender took, make the others look again).
#[test]
fn a_nudge_wakes_the_others_only() {
    let wake = Wake::new().expect("wake");
    let epoch = wake.epoch();
    let (a, b) = (wake.sleeper(), wake.sleeper());
    wake.nudge(Some(a.fd()));
    assert_eq!(wake.epoch(), epoch, "a nudge is no interrupt");
    assert!(!readable(a.fd()), "the nudging sleeper is left alone");
    assert!(readable(b.fd()));
    drop(b);
    // With nobody else asleep there is nobody to signal.
    wake.nudge(Some(a.fd()));
    assert!(!readable(a.fd()));
}

/// Set in the child process a test runs itself again in ([`in_child`]).
const CHILD: &str = "RFAAS_VERBS_TEST_CHILD";

/// Runs test `name` (after `tests::`) again, alone, in a child process, where it may take every
/// descriptor without starving the other tests: true in the child, which goes on with the
/// test; in the parent, checks that the child ran it and passed.
fn in_child(name: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args([&format!("{module}::{name}"), "--exact", "--nocapture"])
        .args(["--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("running the test in a child");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} in a child: {}\n{stdout}\n{stderr}",
        out.status
    );
    false
}

/// Lowers the process's descriptor limit to 64 (if higher) and takes every descriptor left:
/// nothing can open one until the returned ones are dropped.
fn exhaust_descriptors() -> Vec<OwnedFd> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit to `lim`, valid for the call.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = lim.rlim_cur.min(64);
    // SAFETY: setrlimit reads one rlimit from `lim`, valid for the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let mut held = Vec::new();
    loop {
        match std::io::stderr().as_fd().try_clone_to_owned() {
            Ok(fd) => held.push(fd),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return held,
            Err(e) => panic!("taking descriptors: {e}"),
        }
    }
}

/// Out of descriptors, a thread that must sleep still sleeps, and wakes (finding 60): the
/// first sleeper has the eventfd made with the queue; another, which cannot make one, sleeps
/// without (briefly, looking at the count) instead of failing its wait (an executor worker
/// whose wait failed ended its session).
#[test]
fn sleepers_out_of_descriptors_still_sleep_and_wake() {
    if !in_child("sleepers_out_of_descriptors_still_sleep_and_wake") {
        return;
    }
    let wake = Wake::new().expect("wake");
    let held = exhaust_descriptors();
    let epoch = wake.epoch();
    let a = wake.sleeper();
    assert!(
        a.fd() >= 0,
        "the first sleeper has the eventfd made up front"
    );
    assert_eq!(a.longest_sleep(), Duration::MAX);
    let b = wake.sleeper();
    assert_eq!(b.fd(), -1, "no descriptor is left for a second one");
    assert_eq!(
        b.longest_sleep(),
        UNSIGNALLED_TICK,
        "a sleeper nobody can signal looks again soon"
    );
    // The channel's event taken by the one without an eventfd still has the others look.
    wake.nudge(Some(b.fd()));
    assert!(readable(a.fd()));
    consume(a.fd());
    wake.interrupt();
    assert!(readable(a.fd()), "a is woken");
    assert_ne!(wake.epoch(), epoch, "b sees the interrupt when it looks");
    drop((a, b));
    // The eventfd made up front serves the next sleeper; with descriptors free again, a second
    // one is made.
    let c = wake.sleeper();
    assert!(c.fd() >= 0 && !readable(c.fd()));
    drop(held);
    let d = wake.sleeper();
    assert!(d.fd() >= 0 && d.fd() != c.fd());
}

/// The same through a queue's warm waits, on a device: out of descriptors, three threads
/// asleep at once (one with the queue's eventfd, two without) all return for an interrupt,
/// instead of their waits failing at once.
#[test]
fn warm_waits_out_of_descriptors_are_interrupted() {
    let name = "warm_waits_out_of_descriptors_are_interrupted";
    if !available_or_skip(name) || !in_child(name) {
        return;
    }
    let config = VerbsConfig::from_env().expect("RFAAS_VERBS_* settings");
    let ctx = config.open().expect("device");
    let cq = VerbsQueue::new(&ctx, &config, 1).expect("queue");
    let held = exhaust_descriptors();
    let epoch = cq.epoch();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let cq = cq.clone();
            std::thread::spawn(move || {
                let got = cq.wait_since(epoch, Duration::from_secs(20));
                (got, Instant::now())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let interrupted = Instant::now();
    cq.interrupt();
    for w in waiters {
        let (got, at) = w.join().expect("waiter");
        assert!(
            matches!(got, Ok(None)),
            "a wait out of descriptors: {got:?}"
        );
        let took = at.saturating_duration_since(interrupted);
        assert!(
            took < Duration::from_secs(1),
            "woken {took:?} after the interrupt"
        );
    }
    drop(held);
}

#[track_caller]
fn check_drain(budget: &DrainBudget, at: Instant, want: Option<Instant>) {
    assert_eq!(budget.start(at), want, "drain starting at {at:?}");
}

/// The endpoints of a queue dropped one after another (a lease's workers) share one drain
/// deadline: after a drain that did not complete (a vanished peer host), the next ones do not
/// wait at all instead of a full DRAIN each; a quiet DRAIN later, or a drain that succeeds,
/// gives a fresh one.
#[test]
fn dropped_endpoints_share_one_drain_deadline() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let budget = DrainBudget::default();
    // Four endpoints dropped in turn, each drain failing at the deadline.
    check_drain(&budget, t0, Some(t0 + DRAIN));
    budget.finish(false);
    check_drain(&budget, t0 + DRAIN, None);
    check_drain(&budget, t0 + DRAIN + ms(1), None);
    check_drain(&budget, t0 + DRAIN + ms(2), None);
    // Overlapping drains (endpoints dropped on several threads) end at the same deadline.
    let budget = DrainBudget::default();
    check_drain(&budget, t0, Some(t0 + DRAIN));
    check_drain(&budget, t0 + ms(300), Some(t0 + DRAIN));
    budget.finish(true);
    // One drain is still under way: the deadline stays.
    check_drain(&budget, t0 + ms(400), Some(t0 + DRAIN));
    budget.finish(true);
    budget.finish(true);
    // All drained: the next drop gets a full budget.
    check_drain(&budget, t0 + ms(500), Some(t0 + ms(500) + DRAIN));
    budget.finish(false);
    // A failed drain's deadline holds until a quiet DRAIN after it.
    let end = t0 + ms(500) + DRAIN;
    check_drain(&budget, end + DRAIN - ms(1), None);
    check_drain(&budget, end + DRAIN, Some(end + DRAIN + DRAIN));
}

#[track_caller]
fn check_sizes(
    send_depth: u32,
    recv_depth: u32,
    endpoints: usize,
    limits: (u32, u32, u32),
    want: Result<(u32, u32, u32), &str>,
) {
    let config = VerbsConfig {
        send_depth,
        recv_depth,
        ..VerbsConfig::default()
    };
    let got = queue_sizes(&config, endpoints, limits);
    match (&got, want) {
        (Ok(got), Ok(want)) => assert_eq!(*got, want),
        (Err(why), Err(part)) => assert!(why.contains(part), "{why}"),
        _ => panic!(
            "queue_sizes({send_depth}, {recv_depth}, {endpoints}, {limits:?}) = {got:?}, want {want:?}"
        ),
    }
}

/// Completion queues hold the worst case: every receive, and every queue pair's whole send
/// queue flushed (each work request completes in error, signalled or not) plus its fence.
#[test]
fn completion_queues_hold_every_flushed_send() {
    let big = (16384, 4_194_303, 16384);
    // An executor worker's queue: 512 receives, one queue pair of 128 (+ fence).
    check_sizes(128, 512, 1, big, Ok((512, 128, 512 + 16 + 129)));
    // A client's queue for up to 256 workers.
    check_sizes(128, 512, 256, big, Ok((512, 128, 512 + 16 + 256 * 129)));
    // A device of 32768 entries per completion queue: the send depth is lowered to fit.
    let small = (16384, 32768, 16384);
    let fit = (32768 - 512 - 16) / 256 - 1;
    check_sizes(
        128,
        512,
        256,
        small,
        Ok((512, fit, 512 + 16 + 256 * (fit + 1))),
    );
    // Depths are clamped to what the device and the signalling allow.
    check_sizes(4, 1, 1, big, Ok((16, 32, 16 + 16 + 33)));
    check_sizes(
        1 << 20,
        1 << 20,
        1,
        big,
        Ok((16384, 16383, 16384 + 16 + 16384)),
    );
    // Too many endpoints for even the smallest send queues.
    check_sizes(128, 512, 4096, small, Err("completion entries"));
}

fn hello(f: impl FnOnce(&mut Hello)) -> Hello {
    let mut h = Hello {
        qp: QpAddress {
            lid: 0,
            qpn: 17,
            psn: 0x12_3456,
            gid: [
                0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x12, 0x34, 0x56,
            ],
            mtu: 3,
        },
        regions: vec![RegionDesc {
            key: 1,
            addr: 0x7f00_0000_0000,
            len: 4096,
            rkey: 0x1234,
        }],
    };
    f(&mut h);
    h
}

#[track_caller]
fn check_hello(h: Hello, ethernet: bool, refused_for: Option<&str>) {
    let port = PortInfo {
        lid: 1,
        active_mtu: 3,
        ethernet,
        active: true,
        max_msg: 1 << 30,
    };
    match (validate(&h, &port), refused_for) {
        (Ok(()), None) => {}
        (Err(TransportError::Protocol(why)), Some(part)) => {
            assert!(why.contains(part), "{why:?} should mention {part:?}")
        }
        (got, want) => panic!("{h:?}: got {got:?}, want refusal for {want:?}"),
    }
}

/// A peer's hello names a queue pair we connect ours to: its number, sequence number, GID and
/// (InfiniBand) LID must be ones a real queue pair can have.
#[test]
fn a_hello_with_an_impossible_address_is_refused() {
    check_hello(hello(|_| {}), true, None);
    check_hello(hello(|h| h.qp.lid = 7), false, None);
    check_hello(hello(|h| h.qp.qpn = 0), true, Some("queue pair number"));
    check_hello(hello(|h| h.qp.qpn = 1), true, Some("queue pair number"));
    check_hello(
        hello(|h| h.qp.qpn = 1 << 24),
        true,
        Some("queue pair number"),
    );
    check_hello(hello(|h| h.qp.psn = 1 << 24), true, Some("sequence number"));
    check_hello(hello(|h| h.qp.gid = [0; 16]), true, Some("GID"));
    check_hello(hello(|h| h.qp.gid[0] = 0xff), true, Some("GID"));
    check_hello(hello(|h| h.qp.mtu = 6), true, Some("MTU"));
    // InfiniBand routes by LID: 0 and multicast LIDs are no peer.
    check_hello(hello(|h| h.qp.lid = 0), false, Some("LID"));
    check_hello(hello(|h| h.qp.lid = 0xc000), false, Some("LID"));
    // The region checks stay.
    check_hello(
        hello(|h| h.regions[0].len = MAX_REGION + 1),
        true,
        Some("not acceptable"),
    );
    check_hello(hello(|h| h.regions.push(h.regions[0])), true, Some("twice"));
}
