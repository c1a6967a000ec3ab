//! An executor session served in this process over TCP loopback (the real
//! `executor::worker::serve_tcp_session`, with `functions-example` loaded by the real
//! `FunctionLibrary::open`), and a raw client that writes arbitrary slot bytes into it.

use executor::FunctionLibrary;
use executor::worker::{HotTimeout, WorkerConfig, serve_tcp_session};
use rfaas::transport::tcp::{TcpEndpoint, TcpQueue};
use rfaas::transport::{Completion, Endpoint, Queue, Region, recv_json, send_json};
use rfaas::wire::{
    Attach, HEADER_LEN, Hello, INPUT_REGION, RESULT_REGION, SEND_REGION, SESSION_PROTOCOL, Verdict,
    Welcome,
};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Slots of the one worker.
pub const SLOTS: u32 = 4;
/// Bytes per slot.
pub const SLOT_SIZE: u32 = 2048;
/// Client arena after the result areas (result offsets may point there).
pub const ARENA: usize = 4096;
/// Bytes of the client's result region.
pub const RESULT_LEN: usize = (SLOTS * SLOT_SIZE) as usize + ARENA;

/// The client half of a live session.
pub struct Session {
    /// The executor's functions (names in index order).
    pub functions: Vec<String>,
    /// Data endpoint to the worker.
    pub ep: TcpEndpoint,
    /// Its completion queue.
    pub cq: Arc<TcpQueue>,
    /// Our result region (key 2).
    pub result: Arc<Region>,
    /// Our send staging (key 3), one slot's worth per slot.
    pub send: Arc<Region>,
    _control: TcpStream,
}

/// The `functions-example` library built next to this fuzz target (cargo builds a dependency's
/// `cdylib` along with its `rlib`, with the same instrumentation).
pub fn example_library() -> PathBuf {
    if let Some(p) = std::env::var_os("RFAAS_FUZZ_LIBRARY") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let lib = exe
        .parent()
        .expect("target dir")
        .join("deps/libfunctions_example.so");
    assert!(
        lib.exists(),
        "{} is missing (build with `cargo xtask fuzz`, or set RFAAS_FUZZ_LIBRARY)",
        lib.display()
    );
    lib
}

impl Session {
    /// Loads the library, serves one session on a loopback listener in a thread of this
    /// process (one warm worker), and connects to it.
    pub fn start() -> Session {
        let lib = Arc::new(FunctionLibrary::open(example_library()).expect("loading the library"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cfg = WorkerConfig {
            workers: 1,
            cpus: executor::cpus::CpuPool::new(Vec::new()),
            slots: SLOTS,
            slot_size: SLOT_SIZE,
            hot_timeout: HotTimeout::Never,
            token: None,
        };
        cfg.validate().expect("worker config");
        std::thread::spawn(move || {
            let (control, _) = listener.accept().expect("accept");
            let r = serve_tcp_session(&lib, control, &cfg, || ());
            panic!("the executor session ended: {r:?}");
        });
        let mut control = TcpStream::connect(addr).expect("connect");
        control.set_nodelay(true).expect("nodelay");
        let welcome: Welcome = recv_json(&mut control).expect("welcome");
        assert_eq!((welcome.slots, welcome.slot_size), (SLOTS, SLOT_SIZE));
        send_json(
            &mut control,
            &Hello {
                protocol: SESSION_PROTOCOL,
                result_len: RESULT_LEN as u64,
                token: None,
            },
        )
        .expect("hello");
        let verdict: Verdict = recv_json(&mut control).expect("verdict");
        assert_eq!(verdict, Verdict::Accepted);
        let mut data = TcpStream::connect(welcome.data.as_deref().expect("data address"))
            .expect("data connection");
        send_json(&mut data, &Attach { token: None }).expect("attach");
        let result = Arc::new(Region::new(RESULT_REGION, RESULT_LEN).expect("region"));
        let send =
            Arc::new(Region::staging(SEND_REGION, (SLOTS * SLOT_SIZE) as usize).expect("region"));
        let cq = TcpQueue::new();
        let ep =
            TcpEndpoint::connect(data, vec![result.clone(), send.clone()], &cq).expect("endpoint");
        assert_eq!(
            ep.remote_len(INPUT_REGION),
            Some((SLOTS * SLOT_SIZE) as usize)
        );
        let mut functions = welcome.functions;
        functions.sort_by_key(|f| f.index);
        Session {
            functions: functions.into_iter().map(|f| f.name).collect(),
            ep,
            cq,
            result,
            send,
            _control: control,
        }
    }

    /// Writes `bytes` into slot `slot` of the worker's input region, delivered with immediate
    /// `imm` (the worker takes the immediate as the slot number).
    pub fn write(&self, slot: u32, bytes: &[u8], imm: u32) {
        let off = (slot * SLOT_SIZE) as usize;
        self.send.write(off, bytes).expect("staging");
        self.ep
            .write_with_imm(SEND_REGION, off, bytes.len(), INPUT_REGION, off, imm)
            .expect("write to the worker");
    }

    /// The next completion from the worker, within 10 s.
    pub fn next(&self) -> Completion {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no answer from the worker within 10 s");
            match self.cq.wait(left) {
                Ok(Some(c)) => return c,
                Ok(None) => {}
                Err(e) => panic!("session broken: {e}"),
            }
        }
    }

    /// The bytes of our result region at `[off, off + len)`.
    pub fn result(&self, off: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.result.read(off, &mut v).expect("result range");
        v
    }
}

/// A header followed by input, as bytes.
pub fn invocation(h: &rfaas::wire::InvocationHeader, input: &[u8]) -> Vec<u8> {
    use zerocopy::IntoBytes;
    let mut v = Vec::with_capacity(HEADER_LEN + input.len());
    v.extend_from_slice(h.as_bytes());
    v.extend_from_slice(input);
    v
}
