//! A client process for the end-to-end tests, so that what they check happens in a process of
//! its own:
//! - `rfaas-test-client SOCKET slow MS`: leases the executor, starts a slow invocation
//!   (`fault` sleeping MS ms), prints `invoked`, and waits for it (the test kills it meanwhile);
//! - `rfaas-test-client SOCKET leaks`: creates and drops leases, abandoned and dropped
//!   invocations, then prints `fds BEFORE AFTER` (open descriptors of this process);
//! - `rfaas-test-client MANAGER managed PACKAGE`: leases one core from a manager (waiting up to
//!   10 s for one to be free), invokes once, prints `leased 5`, and holds the lease (the test
//!   kills it);
//! - `rfaas-test-client MANAGER managed-slow PACKAGE FABRIC MS`: leases one core over FABRIC
//!   (`shm` or `tcp`) from a manager, invokes once, prints `leased ID` (the manager's lease id),
//!   starts a slow invocation (`fault` sleeping MS ms), prints `invoked`, and waits for it (the
//!   test kills it meanwhile);
//! - `rfaas-test-client ADDRESS tcp-hold`: leases a TCP executor, invokes once, prints
//!   `leased`, and holds the lease (for two minutes, or until the test kills it).

use functions_example as fx;
use rfaas::{Error, Lease};
use std::time::Duration;

fn fail(msg: &str) -> ! {
    eprintln!("rfaas-test-client: {msg}");
    std::process::exit(1);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let socket = args.get(1).unwrap_or_else(|| {
        fail(
            "usage: rfaas-test-client SOCKET slow MS | leaks | managed PACKAGE | managed-slow PACKAGE FABRIC MS | ADDRESS tcp-hold",
        )
    });
    match args.get(2).map(String::as_str) {
        Some("slow") => {
            let ms = args
                .get(3)
                .and_then(|m| m.parse::<u64>().ok())
                .unwrap_or_else(|| fail("slow needs milliseconds"));
            let lease = Lease::connect(socket).unwrap_or_else(|e| fail(&format!("lease: {e}")));
            let inv = lease.invoke(fx::fault::call(2, ms));
            // Report after the invocation is out; the test kills this process meanwhile.
            let handle = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                println!("invoked");
            });
            let r = inv.wait();
            let _ = handle.join();
            println!("result {r:?}");
        }
        Some("leaks") => {
            let t = Duration::from_secs(20);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| fail(&e.to_string()));
            // One round first, so lazily created process-wide descriptors exist before counting.
            let mut before = 0;
            for round in 0..4 {
                if round == 1 {
                    before = open_fds();
                }
                let lease = Lease::connect(socket).unwrap_or_else(|e| fail(&format!("lease: {e}")));
                // A slow invocation abandoned on timeout: its slot returns when the answer does.
                match lease
                    .invoke(fx::fault::call(2, 50))
                    .timeout(Duration::from_millis(1))
                    .wait()
                {
                    Err(Error::Timeout(_)) => {}
                    other => fail(&format!("expected a timeout, got {other:?}")),
                }
                for v in 0..10u64 {
                    let got = lease
                        .invoke(fx::fault::call(0, v))
                        .timeout(t)
                        .wait()
                        .unwrap_or_else(|e| fail(&e.to_string()));
                    if got != v {
                        fail("wrong result after an abandoned invocation");
                    }
                }
                // A pending future dropped before completion.
                rt.block_on(async {
                    let slow = lease.invoke(fx::fault::call(2, 20));
                    let _ = tokio::time::timeout(Duration::from_millis(1), slow).await;
                });
                let got = lease
                    .invoke(fx::fault::call(0, 3))
                    .timeout(t)
                    .wait()
                    .unwrap_or_else(|e| fail(&e.to_string()));
                if got != 3 {
                    fail("wrong result after a dropped future");
                }
            }
            println!("fds {before} {}", open_fds());
        }
        Some("managed") => {
            // SOCKET is a manager address here; lease one core and hold it until killed.
            let package = args
                .get(3)
                .unwrap_or_else(|| fail("managed needs a package directory"));
            // A lease that just ended gives its core back moments after its ledger entry is
            // written: a refusal for capacity is tried again for a while.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let lease = loop {
                match rfaas::managed::lease_from(
                    socket,
                    std::path::Path::new(package),
                    &rfaas::managed::LeaseSpec::default(),
                ) {
                    Ok(lease) => break lease,
                    Err(Error::Refused(why))
                        if why.contains("not enough capacity")
                            && std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => fail(&format!("lease: {e}")),
                }
            };
            let v = lease
                .invoke(fx::fault::call(0, 5))
                .timeout(Duration::from_secs(20))
                .wait()
                .unwrap_or_else(|e| fail(&e.to_string()));
            println!("leased {v}");
            std::thread::sleep(Duration::from_secs(60));
        }
        Some("managed-slow") => {
            let (package, fabric, ms) = match (args.get(3), args.get(4), args.get(5)) {
                (Some(p), Some(f), Some(ms)) => (p, f, ms),
                _ => fail("managed-slow needs PACKAGE FABRIC MS"),
            };
            let mut spec = rfaas::managed::LeaseSpec::default();
            spec.fabric = match fabric.as_str() {
                "shm" => rfaas::wire::Fabric::Shm,
                "tcp" => rfaas::wire::Fabric::Tcp,
                other => fail(&format!("unknown fabric {other}")),
            };
            spec.hot_timeout_us = 0;
            spec.slot_size = Some(4096);
            let ms = ms
                .parse::<u64>()
                .unwrap_or_else(|_| fail("managed-slow needs milliseconds"));
            let lease = rfaas::managed::lease_from(socket, std::path::Path::new(package), &spec)
                .unwrap_or_else(|e| fail(&format!("lease: {e}")));
            let v = lease
                .invoke(fx::fault::call(0, 5))
                .timeout(Duration::from_secs(20))
                .wait()
                .unwrap_or_else(|e| fail(&e.to_string()));
            if v != 5 {
                fail(&format!("fault(0, 5) answered {v}"));
            }
            println!("leased {}", lease.id());
            let inv = lease.invoke(fx::fault::call(2, ms));
            let handle = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                println!("invoked");
            });
            let r = inv.wait();
            let _ = handle.join();
            println!("result {r:?}");
            std::thread::sleep(Duration::from_secs(60));
        }
        Some("tcp-hold") => {
            let lease = Lease::connect_tcp(socket, &rfaas::LeaseOptions::default())
                .unwrap_or_else(|e| fail(&format!("lease: {e}")));
            match lease
                .invoke(fx::fault::call(0, 5))
                .timeout(Duration::from_secs(20))
                .wait()
            {
                Ok(5) => println!("leased"),
                other => fail(&format!("expected 5, got {other:?}")),
            }
            std::thread::sleep(Duration::from_secs(120));
        }
        _ => fail(
            "usage: rfaas-test-client SOCKET slow MS | leaks | managed PACKAGE | managed-slow PACKAGE FABRIC MS | ADDRESS tcp-hold",
        ),
    }
}
