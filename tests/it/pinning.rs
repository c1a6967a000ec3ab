//! Which CPUs workers run on: concurrent leases (of a manager) and sessions (of one `run`
//! executor) spread over the CPUs instead of all pinning their first worker to the first one.

use functions_example as fx;
use rfaas::managed::{LeaseSpec, lease_from};
use rfaas::wire::Fabric;
use rfaas::{Lease, LeaseOptions};
use std::time::Duration;
use tests::{
    Daemon, Executor, eventually, example_package, lease_executor, manager_config, scratch_dir,
    thread_cpus,
};

const T: Duration = Duration::from_secs(20);

/// Whether this machine has the two CPUs these tests spread workers over (else they say so and
/// skip).
fn two_cpus() -> bool {
    let n = rfaas::sys::allowed_cpus().len();
    if n < 2 {
        eprintln!("skipped: needs 2 CPUs to spread workers over, this process may use {n}");
    }
    n >= 2
}

/// The CPUs of process `pid`'s first worker thread, once it exists.
fn first_worker_cpus(pid: u32) -> String {
    let mut cpus = Vec::new();
    eventually("a worker thread", || {
        cpus = thread_cpus(pid, "rfaas-worker-0");
        !cpus.is_empty()
    });
    cpus.swap_remove(0)
}

#[test]
fn a_managers_concurrent_leases_run_on_different_cpus() {
    if !two_cpus() {
        return;
    }
    let dir = scratch_dir("pinning-manager");
    let mgr = Daemon::start("manager", &manager_config(&dir, 2, 1024, ""));
    let mut spec = LeaseSpec::default();
    spec.cores = 1;
    spec.fabric = Fabric::Shm;
    spec.hot_timeout_us = 1000;
    spec.slot_size = Some(65536);
    let a = lease_from(&mgr.address, example_package(), &spec).expect("first lease");
    let b = lease_from(&mgr.address, example_package(), &spec).expect("second lease");
    let mut cpus = Vec::new();
    for lease in [&a, &b] {
        lease
            .invoke(fx::noop::call())
            .timeout(T)
            .wait()
            .expect("noop");
        let pid = lease_executor(mgr.pid(), lease.id()).expect("the lease's executor");
        cpus.push(first_worker_cpus(pid));
    }
    assert_ne!(cpus[0], cpus[1], "both leases' workers on CPU {}", cpus[0]);
    // A CPU comes back with its lease: the next lease takes the one freed (the second: ties
    // go to the first CPU, so giving back the first would prove nothing on two CPUs).
    let freed = cpus.swap_remove(1);
    drop(b);
    let mut c = None;
    eventually("the second lease's core back", || {
        c = lease_from(&mgr.address, example_package(), &spec).ok();
        c.is_some()
    });
    let c = c.expect("third lease");
    let pid = lease_executor(mgr.pid(), c.id()).expect("the lease's executor");
    assert_eq!(first_worker_cpus(pid), freed);
    drop(a);
}

#[test]
fn one_executors_concurrent_sessions_run_on_different_cpus() {
    if !two_cpus() {
        return;
    }
    let exec = Executor::start("pinning-run", &["--cores", "1", "--hot-timeout-us", "1000"]);
    let a = Lease::connect_with(&exec.socket, &LeaseOptions::default()).expect("first session");
    let b = Lease::connect_with(&exec.socket, &LeaseOptions::default()).expect("second session");
    for lease in [&a, &b] {
        lease
            .invoke(fx::noop::call())
            .timeout(T)
            .wait()
            .expect("noop");
    }
    let mut cpus = Vec::new();
    eventually("two worker threads", || {
        cpus = thread_cpus(exec.pid(), "rfaas-worker-0");
        cpus.len() == 2
    });
    assert_ne!(
        cpus[0], cpus[1],
        "both sessions' workers on CPU {}",
        cpus[0]
    );
    drop((a, b));
}

/// A CPU the executor may not run on is refused at start, saying which ones it may use (it
/// used to be a warning per worker per session, with the worker left unpinned).
#[test]
fn a_cpu_outside_the_allowed_set_is_refused_at_start() {
    let allowed = rfaas::sys::allowed_cpus();
    let outside = (0..1024)
        .find(|c| !allowed.contains(c))
        .expect("a CPU outside");
    let out = std::process::Command::new(tests::executor_binary())
        .arg("run")
        .arg("--library")
        .arg(example_package())
        .arg("--socket")
        .arg(scratch_dir("pinning-bad-cpu").join("x.sock"))
        .arg(format!("--cpus={},{outside}", allowed[0]))
        .output()
        .expect("executor");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with CPU {outside}: {err}");
    assert!(
        err.contains(&format!("CPU {outside} is not one this process may run on")),
        "{err}"
    );
}
