//! No allocation on the hot path, on either side: a session served in this process, a lease
//! on it, and every heap allocation counted while invocations run.

use executor::FunctionLibrary;
use executor::worker::{HotTimeout, WorkerConfig, serve_session};
use functions_example as fx;
use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn example_library() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    let o = std::process::Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["build", "-q", "-p", "functions-example", "--lib"])
        .output()
        .expect("cargo build");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    root.join("target/debug/libfunctions_example.so")
}

/// Drives a future to completion on this thread, without a runtime (and without allocating).
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::hint::spin_loop();
    }
}

/// Waits (up to 10 s) until a thread of this process is named `name`.
fn wait_for_thread(name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let named = std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .filter_map(Result::ok)
            .any(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
            });
        if named {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no thread named {name} after 10 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn the_hot_path_does_not_allocate() {
    let lib = Arc::new(FunctionLibrary::open(example_library()).expect("library"));
    /// Removes the socket's directory however the test ends.
    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = TempDir(std::env::temp_dir().join(format!("rfaas-alloc-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let socket = dir.0.join("exec.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).expect("bind");
    let cfg = WorkerConfig {
        workers: 1,
        cpus: executor::cpus::CpuPool::new(Vec::new()),
        slots: 4,
        slot_size: 8192,
        hot_timeout: HotTimeout::For(Duration::from_millis(50)),
        token: None,
    };
    let server = {
        let lib = lib.clone();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            serve_session(&lib, stream, &cfg, || ()).expect("session")
        })
    };
    let lease = rfaas::Lease::connect(&socket).expect("lease");
    let input = [7u8; 64];
    let mut out = [0u8; 64];
    let mut round = |i: u64| {
        assert_eq!(
            lease.invoke(fx::fault::call(0, i)).wait().expect("fault"),
            i
        );
        lease.invoke(fx::noop::call()).wait().expect("noop");
        assert_eq!(
            lease
                .invoke(fx::echo::call(&input, &mut out))
                .wait()
                .expect("echo"),
            64
        );
        assert_eq!(
            block_on(lease.invoke(fx::fault::call(0, i))).expect("async"),
            i
        );
    };
    // The slow paths too: a blocking wait that sleeps on the completion queue, and a future
    // that parks (its first park starts the lease's progress thread).
    let slow = || {
        assert_eq!(lease.invoke(fx::fault::call(2, 2)).wait().expect("slow"), 2);
        assert_eq!(
            block_on(lease.invoke(fx::fault::call(2, 2))).expect("slow async"),
            2
        );
    };
    // Warm-up: lazy initialization (the progress thread, first-use buffers) may allocate once.
    for i in 0..200 {
        round(i);
    }
    slow();
    // The progress thread allocates while it starts (std's per-thread info), after its spawn
    // returned: wait until it runs its own code (it names itself then) before counting.
    wait_for_thread("rfaas-progress");
    let before = ALLOCS.load(Ordering::SeqCst);
    for i in 0..2000 {
        round(i);
        if i % 500 == 0 {
            slow();
        }
    }
    let allocated = ALLOCS.load(Ordering::SeqCst) - before;
    assert_eq!(
        allocated, 0,
        "8008 invocations (client and worker in this process) allocated {allocated} times"
    );
    drop(lease);
    let stats = server.join().expect("server thread");
    assert_eq!(stats.invocations, 4 * 2200 + 2 * 5);
}
