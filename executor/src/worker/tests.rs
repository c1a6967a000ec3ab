use super::*;

/// An answer that finds no room at the client is sent again until it goes out (nothing of a
/// `QueueFull` try went out); any other outcome ends the tries at once.
#[test]
fn answers_are_tried_again_while_the_client_has_no_room() {
    let mut tries = 0;
    let sent = until_room(|| {
        tries += 1;
        if tries < 5 {
            Err(TransportError::QueueFull)
        } else {
            Ok(tries)
        }
    });
    assert_eq!(sent.expect("sent at last"), 5);
    let mut tries = 0;
    let gone = until_room(|| -> Result<(), TransportError> {
        tries += 1;
        if tries < 3 {
            Err(TransportError::QueueFull)
        } else {
            Err(TransportError::PeerGone { endpoint: 0 })
        }
    });
    assert!(matches!(gone, Err(TransportError::PeerGone { .. })));
    assert_eq!(tries, 3);
}

/// A session of one always-warm worker with one slot of 128 bytes, unpinned.
fn one_warm_worker() -> WorkerConfig {
    WorkerConfig {
        workers: 1,
        cpus: CpuPool::new(Vec::new()),
        slots: 1,
        slot_size: 128,
        hot_timeout: HotTimeout::Never,
        token: None,
    }
}

/// A completion queue that delivers one request to slot 0, then nothing, until the session is
/// ended; then it reports the client gone (and after 10 s anyway, so that a worker that never
/// ends the session fails the test instead of hanging it).
struct OneRequest {
    given: std::sync::atomic::AtomicBool,
    ended: Arc<std::sync::atomic::AtomicBool>,
    since: Instant,
}

impl Queue for OneRequest {
    fn poll(&self) -> Result<Option<Completion>, TransportError> {
        if self.ended.load(Ordering::SeqCst) || self.since.elapsed() > Duration::from_secs(10) {
            return Err(TransportError::PeerGone { endpoint: 0 });
        }
        if !self.given.swap(true, Ordering::SeqCst) {
            return Ok(Some(Completion {
                endpoint: 0,
                imm: 0,
                len: HEADER_LEN as u32,
            }));
        }
        Ok(None)
    }
    fn epoch(&self) -> u64 {
        0
    }
    fn wait_since(&self, _: u64, timeout: Duration) -> Result<Option<Completion>, TransportError> {
        let got = self.poll()?;
        if got.is_none() {
            std::thread::sleep(timeout.min(Duration::from_millis(1)));
        }
        Ok(got)
    }
    fn interrupt(&self) {}
}

/// An endpoint whose sends all fail (a connection broken under the worker, not a client that
/// left).
struct CannotSend;

impl Endpoint for CannotSend {
    fn id(&self) -> u32 {
        0
    }
    fn remote_len(&self, _: u32) -> Option<usize> {
        Some(1 << 20)
    }
    fn write_with_imm(
        &self,
        _: u32,
        _: usize,
        _: usize,
        _: u32,
        _: usize,
        _: u32,
    ) -> Result<(), TransportError> {
        Err(TransportError::Protocol("broken".into()))
    }
    fn write(&self, _: u32, _: usize, _: usize, _: u32, _: usize) -> Result<(), TransportError> {
        Err(TransportError::Protocol("broken".into()))
    }
    fn window(&self, _: u32, _: usize, _: usize) -> Result<Option<*mut u8>, TransportError> {
        Ok(None)
    }
    fn signal(&self, _: u32, _: usize) -> Result<(), TransportError> {
        Err(TransportError::Protocol("broken".into()))
    }
}

/// A worker that cannot answer its client ends the session (the client sees it gone), instead
/// of leaving its client's calls waiting on a worker that stopped.
#[test]
fn a_worker_that_cannot_answer_ends_the_session() {
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cfg = one_warm_worker();
    let workers = [Worker {
        ep: CannotSend,
        cq: Arc::new(OneRequest {
            given: std::sync::atomic::AtomicBool::new(false),
            ended: ended.clone(),
            since: Instant::now(),
        }),
        input: Arc::new(Region::new(INPUT_REGION, 128).expect("region")),
        output: None,
    }];
    let ends = std::sync::atomic::AtomicU32::new(0);
    let end = || {
        ends.fetch_add(1, Ordering::SeqCst);
        ended.store(true, Ordering::SeqCst);
    };
    let lib = Arc::new(FunctionLibrary::empty());
    let stats = run_workers(&lib, &workers, &cfg, &end).expect("session");
    assert_eq!(ends.load(Ordering::SeqCst), 1, "the session was not ended");
    assert_eq!(stats.invocations, 0);
}

/// A completion queue whose poll panics (a bug of ours, say).
struct Panicking;

impl Queue for Panicking {
    fn poll(&self) -> Result<Option<Completion>, TransportError> {
        panic!("a bug in the queue");
    }
    fn epoch(&self) -> u64 {
        0
    }
    fn wait_since(&self, _: u64, _: Duration) -> Result<Option<Completion>, TransportError> {
        panic!("a bug in the queue");
    }
    fn interrupt(&self) {}
}

/// A worker that panics ends its session (its client's calls fail at once) as one that cannot
/// answer does; the session still returns (the panic is logged).
#[test]
fn a_worker_that_panics_ends_the_session() {
    let cfg = one_warm_worker();
    let ends = std::sync::atomic::AtomicU32::new(0);
    let end = || {
        ends.fetch_add(1, Ordering::SeqCst);
    };
    let lib = Arc::new(FunctionLibrary::empty());
    let workers = [Worker {
        ep: CannotSend,
        cq: Arc::new(Panicking),
        input: Arc::new(Region::new(INPUT_REGION, 128).expect("region")),
        output: None,
    }];
    run_workers(&lib, &workers, &cfg, &end).expect("session");
    assert_eq!(ends.load(Ordering::SeqCst), 1, "the session was not ended");
}
