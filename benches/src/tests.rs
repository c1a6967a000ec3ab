//! Unit tests of the benchmark harness: statistics, pinning, shared regions and futexes.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::*;

/// Long enough never to expire on a loaded machine; only reached if the test is broken.
const DEADLINE: Duration = Duration::from_secs(10);

#[track_caller]
fn check_summary(samples: &[u64], expected: Summary) {
    let mut samples = samples.to_vec();
    let summary = Summary::from_samples(&mut samples);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(
        summary.iterations == expected.iterations
            && close(summary.median_ns, expected.median_ns)
            && close(summary.p99_ns, expected.p99_ns)
            && close(summary.min_ns, expected.min_ns)
            && close(summary.mean_ns, expected.mean_ns),
        "samples {samples:?}:\n got {summary:?}\nwant {expected:?}"
    );
}

fn summary(iterations: usize, median: f64, p99: f64, min: f64, mean: f64) -> Summary {
    Summary {
        iterations,
        median_ns: median,
        p99_ns: p99,
        min_ns: min,
        mean_ns: mean,
    }
}

#[test]
fn summary_statistics() {
    check_summary(&[], summary(0, 0.0, 0.0, 0.0, 0.0));
    check_summary(&[42], summary(1, 42.0, 42.0, 42.0, 42.0));
    // Unsorted input; odd count: the middle sample.
    check_summary(&[30, 10, 20], summary(3, 20.0, 29.8, 10.0, 20.0));
    // Even count: the mean of the middle two.
    check_summary(&[4, 1, 3, 2], summary(4, 2.5, 3.97, 1.0, 2.5));
    // 1..=100 shuffled: p99 sits at position 98.01 between 99 and 100.
    let hundred: Vec<u64> = (1..=100).map(|i| (i * 37) % 101).collect();
    check_summary(&hundred, summary(100, 50.5, 99.01, 1.0, 50.5));
    // 1..=1000 with one outlier: the median ignores it, p99 is near the top of the bulk.
    let mut thousand: Vec<u64> = (1..=999).collect();
    thousand.push(1_000_000);
    check_summary(
        &thousand,
        summary(1000, 500.5, 990.01, 1.0, (499_500.0 + 1_000_000.0) / 1000.0),
    );
    // Large values do not overflow the mean.
    check_summary(&[u64::MAX, u64::MAX], {
        let max = u64::MAX as f64;
        summary(2, max, max, max, max)
    });
}

#[test]
fn human_sizes() {
    for (size, text) in [
        (0, "0 B"),
        (8, "8 B"),
        (1000, "1000 B"),
        (1024, "1 KiB"),
        (65536, "64 KiB"),
        (65537, "65537 B"),
        (1 << 20, "1 MiB"),
        (3 << 20, "3 MiB"),
        ((1 << 20) + 1024, "1025 KiB"),
    ] {
        assert_eq!(human_size(size), text, "human_size({size})");
    }
}

#[test]
fn iteration_counts() {
    for (size, explicit, quick, iterations) in [
        (8, None, false, DEFAULT_ITERATIONS),
        (FULL_ITERATIONS_UP_TO, None, false, DEFAULT_ITERATIONS),
        (
            2 * FULL_ITERATIONS_UP_TO,
            None,
            false,
            DEFAULT_ITERATIONS / 2,
        ),
        (1 << 20, None, false, 1_250),
        (1 << 30, None, false, MIN_DEFAULT_ITERATIONS),
        (1 << 20, None, true, QUICK_ITERATIONS),
        (1 << 20, Some(7), true, 7),
        (8, Some(7), false, 7),
    ] {
        assert_eq!(
            iterations_for(size, explicit, quick),
            iterations,
            "iterations_for({size}, {explicit:?}, {quick})"
        );
    }
    assert_eq!(warmup_iterations(20_000, false), 1_000);
    assert_eq!(warmup_iterations(1_250, false), 125);
    assert_eq!(warmup_iterations(7, false), 10);
    assert_eq!(warmup_iterations(20_000, true), 20);
}

#[test]
fn pinning() {
    assert!(cpu_count() >= 1);
    // Pin a scratch thread, not the test harness thread.
    let pinned = std::thread::spawn(|| pin_to_cpu(0).map(|()| cpu_count()))
        .join()
        .expect("pinning thread panicked");
    assert_eq!(pinned.expect("pin to cpu 0"), 1);
    let error = pin_to_cpu(1 << 20).expect_err("cpu out of range");
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn shared_region_is_shared_through_its_fd() {
    let first = SharedRegion::create("rfaas-benches-test", 10_000).expect("create region");
    assert_eq!(first.len(), 10_000);
    assert!(!first.is_empty());
    assert!((first.as_ptr() as usize).is_multiple_of(4096));

    let inheritable = first.inheritable_fd().expect("duplicate fd");
    // SAFETY: F_GETFD only reads the flags of an open descriptor.
    let flags = unsafe { libc::fcntl(inheritable.as_raw_fd(), libc::F_GETFD) };
    assert_eq!(
        flags & libc::FD_CLOEXEC,
        0,
        "inheritable fd is close-on-exec"
    );
    // SAFETY: as above.
    let flags = unsafe { libc::fcntl(first.fd().as_raw_fd(), libc::F_GETFD) };
    assert_ne!(
        flags & libc::FD_CLOEXEC,
        0,
        "the region's own fd leaks to children"
    );

    let second = SharedRegion::from_fd(inheritable).expect("map the duplicate");
    assert_eq!(second.len(), 10_000);
    assert_ne!(first.as_ptr(), second.as_ptr());
    // SAFETY: both mappings are 10 000 bytes long and alive; no other code touches them.
    unsafe {
        first.as_ptr().add(9_999).write(0xA5);
        assert_eq!(second.as_ptr().add(9_999).read(), 0xA5);
        assert_eq!(second.as_ptr().read(), 0, "a new region is zero-filled");
    }
}

#[test]
fn shared_region_rejects_bad_input() {
    let error = SharedRegion::create("empty", 0).expect_err("empty region");
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    let error = SharedRegion::create("nul\0name", 64).expect_err("name with NUL");
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn futex_wait_outcomes() {
    let word = AtomicU32::new(7);
    assert_eq!(
        futex_wait(&word, 8, Some(DEADLINE)).expect("wait"),
        FutexWait::ValueChanged
    );
    assert_eq!(
        futex_wait(&word, 7, Some(Duration::from_millis(1))).expect("wait"),
        FutexWait::TimedOut
    );
    assert_eq!(futex_wake(&word, 1).expect("wake"), 0);
}

#[test]
fn bounded_waits_time_out() {
    let word = AtomicU32::new(0);
    let short = Duration::from_millis(5);
    let error = spin_until_ne(&word, 0, short).expect_err("spin wait on a still word");
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    let error = futex_until_ne(&word, 0, short).expect_err("futex wait on a still word");
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert_eq!(spin_until_ne(&word, 1, short).expect("changed word"), 0);
    assert_eq!(futex_until_ne(&word, 1, short).expect("changed word"), 0);
}

/// The atomic word at `offset` in `region`.
fn word_at(region: &SharedRegion, offset: usize) -> &AtomicU32 {
    assert!(offset.is_multiple_of(4) && offset + 4 <= region.len());
    // SAFETY: the word is aligned and inside the mapping (checked above), which lives as long as
    // the borrow of `region`; the tests only access it atomically.
    unsafe { &*region.as_ptr().add(offset).cast::<AtomicU32>() }
}

/// Two threads ping-pong on a shared region: the server sleeps in the futex, the client spins.
#[test]
fn waits_see_the_other_side() {
    const REQUEST: usize = 0;
    const RESPONSE: usize = 128;
    const ROUNDS: u32 = 1000;
    let region = Arc::new(SharedRegion::create("rfaas-benches-pingpong", 4096).expect("region"));
    let server = std::thread::spawn({
        let region = Arc::clone(&region);
        move || -> io::Result<()> {
            let (request, response) = (word_at(&region, REQUEST), word_at(&region, RESPONSE));
            for round in 1..=ROUNDS {
                assert_eq!(futex_until_ne(request, round - 1, DEADLINE)?, round);
                response.store(round, Ordering::Release);
            }
            Ok(())
        }
    });
    let (request, response) = (word_at(&region, REQUEST), word_at(&region, RESPONSE));
    for round in 1..=ROUNDS {
        request.store(round, Ordering::Release);
        futex_wake(request, 1).expect("wake");
        let seen = spin_until_ne(response, round - 1, DEADLINE).expect("response");
        assert_eq!(seen, round);
    }
    let served = server.join().expect("server thread panicked");
    served.expect("server waits");
}
