//! A bounded soak: four clients, each on a one-core lease of its own from one manager (two
//! over shared memory, two over TCP loopback; of each pair one with an always-warm worker and
//! one hot for 100 µs after each invocation), send 10 000 invocations each: mixed functions and
//! payload sizes, batches of futures in flight together under tokio, invocations abandoned on
//! a timeout and futures dropped while pending. Every invocation must complete exactly once,
//! with the value a local call gives (or, abandoned, with a timeout), and the manager's ledger
//! must count exactly the invocations the clients sent.

use executor::manager::read_ledger;
use functions_example as fx;
use rfaas::managed::{LeaseSpec, ManagedLease, lease_from};
use rfaas::wire::Fabric;
use rfaas::{CallError, Error};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::{
    BOUND, Daemon, Rng, eventually, example_package, ledger_text, manager_config, scratch_dir,
};

/// Invocations each client sends before its final one (which drains the worker).
const PER_CLIENT: usize = 10_000;
/// Each client's fabric and hot timeout (µs).
const CLIENTS: [(Fabric, i64); 4] = [
    (Fabric::Shm, 0),
    (Fabric::Shm, 100),
    (Fabric::Tcp, 0),
    (Fabric::Tcp, 100),
];
/// Futures in flight together in a batch.
const BATCH: usize = 8;
/// Echo payload sizes, bytes.
const SIZES: [usize; 9] = [0, 1, 7, 8, 100, 1000, 4096, 20_000, 65_536];
/// How long an abandoned invocation's function sleeps, ms; it is abandoned after 1 ms.
const SLOW_MS: u64 = 20;

/// How a client's invocations ended.
#[derive(Debug, Default)]
struct Tally {
    /// Invocations sent (the ledger must count exactly these).
    sent: u64,
    /// Answered with the right value.
    values: u64,
    /// Answered with the function's error (the right one).
    function_errors: u64,
    /// Answered with the function's panic (the right message).
    panics: u64,
    /// Abandoned by a blocking wait's timeout.
    timed_out: u64,
    /// Dropped while pending (a tokio timeout).
    dropped: u64,
    /// Of all these, sent as futures in flight together.
    in_batches: u64,
}

/// How one invocation ended, once checked.
enum Outcome {
    Value,
    FunctionError,
    Panic,
}

fn spec(fabric: Fabric, hot_timeout_us: i64) -> LeaseSpec {
    let mut s = LeaseSpec::default();
    s.cores = 1;
    s.memory_mib = 128;
    s.fabric = fabric;
    s.hot_timeout_us = hot_timeout_us;
    s.slots = Some(16);
    s.slot_size = Some(128 << 10);
    s
}

/// Client `c`'s `n`th invocation's value: unique over the run.
fn value(c: usize, n: usize) -> u64 {
    ((c as u64) << 32) | n as u64
}

/// `len` bytes that depend on `v`.
fn pattern(v: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (v as usize).wrapping_mul(31).wrapping_add(i * 7) as u8)
        .collect()
}

/// Sends one invocation of a function chosen by `rng` with argument `v`, waits for it, and
/// checks its result against the same function called here.
#[track_caller]
fn call_and_check(lease: &ManagedLease, rng: &mut Rng, v: u64) -> Outcome {
    let pick = rng.next_u64() % 1000;
    match pick {
        0..400 => {
            let got = lease
                .invoke(fx::fault::call(0, v))
                .timeout(BOUND)
                .wait()
                .expect("fault");
            assert_eq!(got, v);
            Outcome::Value
        }
        400..600 => {
            let len = SIZES[(rng.next_u64() % SIZES.len() as u64) as usize];
            let input = pattern(v, len);
            let mut out = vec![0u8; len];
            let n = fx::echo::invoke(lease, &input, &mut out)
                .timeout(BOUND)
                .wait()
                .expect("echo");
            assert_eq!(n, len as u64);
            assert!(
                out == input,
                "echo of {len} bytes for {v} came back different"
            );
            Outcome::Value
        }
        600..700 => {
            let n = 1 + (rng.next_u64() % 256) as usize;
            let a = rng.range(-2.0, 2.0);
            let x: Vec<f64> = (0..n).map(|_| rng.range(-1.0, 1.0)).collect();
            let y: Vec<f64> = (0..n).map(|_| rng.range(-1.0, 1.0)).collect();
            let (mut remote, mut local) = (vec![0.0; n], vec![0.0; n]);
            fx::axpy::invoke(lease, a, &x, &y, &mut remote)
                .timeout(BOUND)
                .wait()
                .expect("axpy");
            fx::axpy(a, &x, &y, &mut local).expect("local axpy");
            assert_eq!(remote, local);
            Outcome::Value
        }
        700..780 => {
            let mut text = (v % 1_000_000_000_000).to_string().into_bytes();
            let bad = rng.next_u64().is_multiple_of(2);
            if bad {
                let at = (rng.next_u64() % text.len() as u64) as usize;
                text[at] = b'x';
            }
            let remote = fx::parse_decimal::invoke(lease, &text)
                .timeout(BOUND)
                .wait();
            match (remote, fx::parse_decimal(&text)) {
                (Ok(r), Ok(l)) if r == l => Outcome::Value,
                (Err(Error::Call(CallError::Function(r))), Err(l)) if r == l => {
                    Outcome::FunctionError
                }
                (r, l) => panic!("parse_decimal: remote {r:?}, local {l:?}"),
            }
        }
        780..800 => {
            let n = 1 + (rng.next_u64() % 64) as usize;
            let options: Vec<fx::OptionData> = (0..n)
                .map(|i| fx::OptionData {
                    spot: rng.range(50.0, 150.0) as f32,
                    strike: rng.range(50.0, 150.0) as f32,
                    rate: rng.range(0.0, 0.1) as f32,
                    volatility: rng.range(0.05, 0.6) as f32,
                    time: rng.range(0.1, 2.0) as f32,
                    kind: (i % 2) as u32,
                })
                .collect();
            let mut prices = vec![0f32; n];
            fx::black_scholes::invoke(lease, &options, &mut prices)
                .timeout(BOUND)
                .wait()
                .expect("black_scholes");
            let local: Vec<f32> = options.iter().map(fx::black_scholes_one).collect();
            assert_eq!(prices, local);
            Outcome::Value
        }
        800..805 => match lease.invoke(fx::fault::call(1, v)).timeout(BOUND).wait() {
            Err(Error::Call(CallError::Panic(m))) if m.contains(&format!("value {v}")) => {
                Outcome::Panic
            }
            other => panic!("expected the panic of {v}, got {other:?}"),
        },
        805..900 => {
            let n = 2 + (rng.next_u64() % 7) as usize;
            let a: Vec<f64> = (0..n * n).map(|_| rng.range(-1.0, 1.0)).collect();
            let b: Vec<f64> = (0..n * n).map(|_| rng.range(-1.0, 1.0)).collect();
            let (mut remote, mut local) = (vec![0.0; n * n], vec![0.0; n * n]);
            fx::matmul::invoke(lease, n as u32, &a, &b, &mut remote)
                .timeout(BOUND)
                .wait()
                .expect("matmul");
            fx::matmul(n as u32, &a, &b, &mut local).expect("local matmul");
            assert_eq!(remote, local);
            Outcome::Value
        }
        _ => {
            let n = 1 + (rng.next_u64() % 100) as usize;
            let xs: Vec<f64> = (0..n).map(|_| rng.range(-10.0, 10.0)).collect();
            let (mut s, mut c) = (vec![0.0; n], vec![0.0; n]);
            fx::sincos::invoke(lease, &xs, &mut s, &mut c)
                .timeout(BOUND)
                .wait()
                .expect("sincos");
            for i in 0..n {
                assert_eq!((s[i], c[i]), xs[i].sin_cos());
            }
            Outcome::Value
        }
    }
}

/// Invocations `first..first + BATCH` of client `c` as futures in flight together (half
/// `fault`, half `echo` of assorted sizes); returns the numbers of those answered right, or
/// what went wrong.
fn batch(
    rt: &tokio::runtime::Runtime,
    lease: &Arc<ManagedLease>,
    c: usize,
    first: usize,
) -> Vec<Result<usize, String>> {
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for k in 0..BATCH {
            let (lease, n) = (lease.clone(), first + k);
            let v = value(c, n);
            set.spawn(async move {
                if k % 2 == 0 {
                    match lease.invoke(fx::fault::call(0, v)).timeout(BOUND).await {
                        Ok(got) if got == v => Ok(n),
                        other => Err(format!("fault({v}) in a batch: {other:?}")),
                    }
                } else {
                    let input = pattern(v, SIZES[(n / 2) % SIZES.len()]);
                    let mut out = vec![0u8; input.len()];
                    match fx::echo::invoke(&lease, &input, &mut out)
                        .timeout(BOUND)
                        .await
                    {
                        Ok(len) if len == input.len() as u64 && out == input => Ok(n),
                        other => Err(format!(
                            "echo of {} bytes for {v} in a batch: {other:?}",
                            input.len()
                        )),
                    }
                }
            });
        }
        set.join_all().await
    })
}

/// One client: sends [`PER_CLIENT`] checked invocations and a final one on `lease`, drops it;
/// returns its id and the tally.
fn client(lease: ManagedLease, c: usize) -> (u64, Tally) {
    let lease = Arc::new(lease);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut rng = Rng::new(0x50a4 + c as u64);
    let mut tally = Tally::default();
    // How many times each invocation completed.
    let mut done = vec![0u8; PER_CLIENT];
    let mut n = 0;
    while n < PER_CLIENT {
        let roll = rng.next_u64() % 1000;
        if roll < 30 && n + BATCH <= PER_CLIENT {
            for r in batch(&rt, &lease, c, n) {
                let k = r.unwrap_or_else(|e| panic!("client {c}: {e}"));
                done[k] += 1;
            }
            tally.sent += BATCH as u64;
            tally.values += BATCH as u64;
            tally.in_batches += BATCH as u64;
            n += BATCH;
            continue;
        }
        tally.sent += 1;
        if roll < 35 {
            // Abandoned on its timeout (or, if this thread was held up longer than the
            // function slept, answered first).
            match lease
                .invoke(fx::fault::call(2, SLOW_MS))
                .timeout(Duration::from_millis(1))
                .wait()
            {
                Err(Error::Timeout(_)) => tally.timed_out += 1,
                Ok(SLOW_MS) => tally.values += 1,
                other => panic!("client {c}: an abandoned invocation ended as {other:?}"),
            }
        } else if roll < 40 {
            // A future dropped while pending.
            let slow = lease.invoke(fx::fault::call(2, SLOW_MS));
            match rt.block_on(async { tokio::time::timeout(Duration::from_millis(1), slow).await })
            {
                Err(_) => tally.dropped += 1,
                Ok(Ok(SLOW_MS)) => tally.values += 1,
                Ok(other) => panic!("client {c}: a dropped future ended as {other:?}"),
            }
        } else {
            match call_and_check(&lease, &mut rng, value(c, n)) {
                Outcome::Value => tally.values += 1,
                Outcome::FunctionError => tally.function_errors += 1,
                Outcome::Panic => tally.panics += 1,
            }
        }
        done[n] += 1;
        n += 1;
    }
    // One worker takes its invocations in order: when this is answered, so is every
    // abandoned one before it, and the ledger must count them all.
    let last = u64::MAX - c as u64;
    assert_eq!(
        lease
            .invoke(fx::fault::call(0, last))
            .timeout(BOUND)
            .wait()
            .expect("final invocation"),
        last
    );
    tally.sent += 1;
    tally.values += 1;
    let bad: Vec<usize> = (0..PER_CLIENT).filter(|&k| done[k] != 1).collect();
    assert!(
        bad.is_empty(),
        "client {c}: invocations not completed exactly once: {bad:?}"
    );
    assert_eq!(lease.protocol_violations(), 0, "client {c}");
    let id = lease.id();
    drop(lease);
    (id, tally)
}

#[test]
fn four_clients_over_shm_and_tcp_every_invocation_answered_once_and_counted() {
    let dir = scratch_dir("soak");
    // Panics are expected here: no backtraces from the executors.
    let manager = Daemon::start_env(
        "manager",
        &manager_config(&dir, CLIENTS.len() as u32, 4096, ""),
        &[("RUST_BACKTRACE", "0")],
    );
    // Leased all at once, on a manager that has never seen the package: every client ships
    // it, concurrently (bug B5 in docs/reliability.md broke the cached library this way).
    let leases: Vec<ManagedLease> = std::thread::scope(|s| {
        let handles: Vec<_> = CLIENTS
            .iter()
            .map(|&(fabric, hot)| {
                let address = &manager.address;
                s.spawn(move || lease_from(address, example_package(), &spec(fabric, hot)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("leasing thread").expect("lease"))
            .collect()
    });
    let started = Instant::now();
    let results: Vec<(u64, Tally)> = std::thread::scope(|s| {
        let handles: Vec<_> = leases
            .into_iter()
            .enumerate()
            .map(|(c, lease)| s.spawn(move || client(lease, c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    eprintln!("soak: {} clients in {:?}", CLIENTS.len(), started.elapsed());
    let ledger = dir.join("ledger.jsonl");
    eventually("a ledger entry for every client's lease", || {
        read_ledger(&ledger).is_ok_and(|e| e.len() == CLIENTS.len())
    });
    let entries = read_ledger(&ledger).expect("ledger");
    for ((id, tally), (fabric, _)) in results.iter().zip(CLIENTS) {
        eprintln!("soak: lease {id} over {fabric:?}: {tally:?}");
        let e = entries
            .iter()
            .find(|e| e.lease_id == *id)
            .unwrap_or_else(|| panic!("no entry for lease {id}: {entries:?}"));
        assert_eq!(
            (e.invocations, e.fabric, e.executor_exit.as_deref()),
            (tally.sent, fabric, None),
            "lease {id}: the ledger against the client's count {tally:?}"
        );
        assert_eq!(
            tally.values + tally.function_errors + tally.panics + tally.timed_out + tally.dropped,
            tally.sent,
            "every invocation ends one way"
        );
        assert!(
            tally.sent == PER_CLIENT as u64 + 1 && tally.in_batches > 0 && tally.panics > 0,
            "{tally:?}"
        );
    }
    let total: u64 = results.iter().map(|(_, t)| t.sent).sum();
    let text = ledger_text(&ledger);
    assert!(
        text.contains(&format!("{} leases, {total} invocations", CLIENTS.len())),
        "{text}"
    );
}
