//! Request/response round trips through two peer libraries, beside which rfaas is compared.
//!
//! Each round trip sends a request carrying `size` bytes and waits for the response echoing
//! them back, as rfaas's `echo` and `pingpong` do, with one call in flight at a time:
//!
//! - `tarpc-tcp`: [tarpc] over TCP loopback, its tokio serde transport with the bincode codec
//!   (the faster of the two it ships; JSON spells bytes as number arrays), the payload a
//!   `serde_bytes::ByteBuf` (serialized as one byte string, not byte by byte), `TCP_NODELAY` on
//!   both ends. The server runs a current-thread tokio runtime in its own thread and answers
//!   each request inline; the client awaits each call on a current-thread runtime. Timed: the
//!   `.await` of the call (building the request vector from the payload is not);
//! - `iceoryx2-spin`: [iceoryx2]'s request-response pattern (`ipc` service: shared memory
//!   between ports, `[u8]` slice payloads loaned from its data segments). The client loans a
//!   request, copies the payload in and sends it, then polls its pending response; the server
//!   polls for requests and answers each with a loaned response copied from the request. Both
//!   busy-poll, as rfaas's hot path and `pingpong`'s `spin` mode do;
//! - `iceoryx2-wait`: the same, but the server sleeps on an iceoryx2 event listener between
//!   requests (`timed_wait_one`; on `ipc` services a Unix datagram socket) and the client
//!   notifies it after each send, then polls for the response: the warm path, compared with
//!   `pingpong`'s `futex` mode. Like that mode, the client idles `--futex-gap-us` (untimed)
//!   before each request so that the server is asleep; the server counts the requests it had
//!   to wait for and the client warns when that is under 95%.
//!
//! The client is the main thread, pinned to `--client-cpu`; the server is a thread pinned to
//! `--server-cpu`. The servers are threads rather than processes (as in iceoryx2's own
//! benchmarks): iceoryx2's `ipc` ports talk through shared memory and tarpc through a socket
//! either way. Every echo is checked (length, the sequence number in its first bytes, its
//! last byte; all of it on the last round trip, untimed); warm-up round trips are not
//! recorded; iteration counts are `pingpong`'s ([`iterations_for`]). No wait is unbounded:
//! polling spins a while, then yields, then sleeps, and every wait fails after
//! [`WAIT_TIMEOUT`].
//!
//! ```text
//! cargo run --release -p benches --bin peers -- [--series tarpc-tcp,iceoryx2-spin,iceoryx2-wait]
//!     [--sizes 8,64,1024,65536,1048576] [--quick] [--json]
//! ```
//!
//! With `--json`, one object per (series, size) on stdout:
//! `{"experiment":"latency","series":"tarpc-tcp","transport":"tcp","x":8,"x_label":"payload
//! bytes","iterations":…,"median_ns":…,"p99_ns":…,"min_ns":…,"mean_ns":…}`.
//!
//! [tarpc]: https://docs.rs/tarpc
//! [iceoryx2]: https://docs.rs/iceoryx2

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use benches::{
    Summary, YIELD_BEFORE_SLEEP, cpu_count, human_size, idle, iterations_for, pin_to_cpu,
    warmup_iterations,
};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use iceoryx2::prelude::{NodeBuilder, ServiceName, SignalHandlingMode, ipc};
use serde::Serialize;
use serde_bytes::ByteBuf;
use tarpc::serde_transport::tcp;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context};

/// Longest any single wait may take (a response, a request, a server starting or finishing).
const WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest payload accepted.
const MAX_SIZE: usize = 64 << 20;
/// Largest tarpc frame: the payload plus room for tarpc's envelope (ids, context).
const MAX_FRAME: usize = MAX_SIZE + 4096;
/// Polls (an iceoryx2 `receive`, some tens of ns each) before a poller starts yielding.
const SPIN_POLLS: u32 = 1 << 16;
/// How long a poller sleeps between polls once it has waited [`YIELD_BEFORE_SLEEP`].
const SLEEP_BETWEEN_POLLS: Duration = Duration::from_micros(200);

/// Round trips through peer libraries (tarpc over TCP, iceoryx2 request-response).
#[derive(Parser, Debug)]
#[command(name = "peers")]
struct Args {
    /// Which series to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "tarpc-tcp,iceoryx2-spin,iceoryx2-wait"
    )]
    series: Vec<Series>,
    /// Payload sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,64,1024,65536,1048576")]
    sizes: Vec<usize>,
    /// Measured iterations per size (default: 20000 up to 64 KiB, proportionally fewer above,
    /// at least 1000); warm-up iterations come on top.
    #[arg(long)]
    iterations: Option<usize>,
    /// CI smoke run: 200 iterations per size.
    #[arg(long)]
    quick: bool,
    /// CPU the client (this thread) is pinned to.
    #[arg(long, default_value_t = 0)]
    client_cpu: usize,
    /// CPU the server thread is pinned to.
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
    /// For `iceoryx2-wait`, idle time (µs) before each request so the server is asleep when it
    /// arrives (not timed).
    #[arg(long, default_value_t = 20)]
    futex_gap_us: u64,
    /// Print one JSON object per (series, size) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Series {
    /// tarpc, bincode over TCP loopback.
    #[value(name = "tarpc-tcp")]
    TarpcTcp,
    /// iceoryx2 request-response, both sides polling.
    #[value(name = "iceoryx2-spin")]
    Iceoryx2Spin,
    /// iceoryx2 request-response, the server asleep on an event listener.
    #[value(name = "iceoryx2-wait")]
    Iceoryx2Wait,
}

impl Series {
    fn name(self) -> &'static str {
        match self {
            Series::TarpcTcp => "tarpc-tcp",
            Series::Iceoryx2Spin => "iceoryx2-spin",
            Series::Iceoryx2Wait => "iceoryx2-wait",
        }
    }

    fn transport(self) -> &'static str {
        match self {
            Series::TarpcTcp => "tcp",
            Series::Iceoryx2Spin | Series::Iceoryx2Wait => "shm",
        }
    }
}

/// One line of `--json` output.
#[derive(Serialize)]
struct Row {
    experiment: &'static str,
    series: &'static str,
    transport: &'static str,
    x: usize,
    x_label: &'static str,
    #[serde(flatten)]
    summary: Summary,
}

/// What one (series, size) run needs to know.
#[derive(Clone, Copy, Debug)]
struct Run {
    series: Series,
    size: usize,
    warmup: usize,
    iterations: usize,
    /// `Some(cpu)` to pin the server thread.
    server_cpu: Option<usize>,
    /// `iceoryx2-wait`: idle time before each request.
    gap: Duration,
}

impl Run {
    fn total(&self) -> Result<u32> {
        u32::try_from(self.warmup + self.iterations).context("too many iterations")
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(!args.series.is_empty(), "--series is empty");
    ensure!(!args.sizes.is_empty(), "--sizes is empty");
    for &size in &args.sizes {
        ensure!(
            (1..=MAX_SIZE).contains(&size),
            "payload size {size} is out of range (1..={MAX_SIZE})"
        );
    }
    ensure!(args.iterations != Some(0), "--iterations must be positive");

    let cpus = cpu_count();
    let two_cpus = cpus >= 2 && args.client_cpu != args.server_cpu;
    if two_cpus {
        pin_to_cpu(args.client_cpu)
            .with_context(|| format!("pinning the client to cpu {}", args.client_cpu))?;
    } else {
        eprintln!(
            "peers: {cpus} cpu(s) available, client cpu {}, server cpu {}: not pinning, \
             skipping iceoryx2-spin (two pollers on one core take milliseconds per round trip)",
            args.client_cpu, args.server_cpu
        );
    }
    if !args.json {
        println!(
            "peers: client cpu {}, server cpu {}{}; round trips in µs",
            args.client_cpu,
            args.server_cpu,
            if two_cpus { "" } else { " (not pinned)" }
        );
        println!(
            "{:<14} {:>8} {:>7} {:>10} {:>10} {:>10} {:>10}",
            "series", "size", "iters", "median", "p99", "min", "mean"
        );
    }
    for &series in &args.series {
        if series == Series::Iceoryx2Spin && !two_cpus {
            continue;
        }
        for &size in &args.sizes {
            let iterations = iterations_for(size, args.iterations, args.quick);
            let run = Run {
                series,
                size,
                warmup: warmup_iterations(iterations, args.quick),
                iterations,
                server_cpu: two_cpus.then_some(args.server_cpu),
                gap: Duration::from_micros(args.futex_gap_us),
            };
            let mut samples = match series {
                Series::TarpcTcp => tarpc_run(run),
                Series::Iceoryx2Spin | Series::Iceoryx2Wait => iceoryx2_run(run),
            }
            .with_context(|| format!("{} round trips of {size} bytes", series.name()))?;
            let summary = Summary::from_samples(&mut samples);
            report(series, size, &summary, args.json)?;
        }
    }
    Ok(())
}

fn report(series: Series, size: usize, summary: &Summary, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let row = Row {
            experiment: "latency",
            series: series.name(),
            transport: series.transport(),
            x: size,
            x_label: "payload bytes",
            summary: *summary,
        };
        serde_json::to_writer(&mut out, &row)?;
        writeln!(out)?;
    } else {
        let us = |ns: f64| ns / 1_000.0;
        writeln!(
            out,
            "{:<14} {:>8} {:>7} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            series.name(),
            human_size(size),
            summary.iterations,
            us(summary.median_ns),
            us(summary.p99_ns),
            us(summary.min_ns),
            us(summary.mean_ns),
        )?;
    }
    out.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shared by both libraries

/// The request payload of round trip `seq`: the sequence number in the first (up to 4) bytes
/// and a byte derived from it in the last, so every echo differs from the previous one.
fn tag(payload: &mut [u8], seq: u32) {
    let n = payload.len().min(4);
    payload[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
    if let Some(last) = payload.last_mut() {
        *last = (seq as u8) ^ 0xa5;
    }
}

/// The samples of one run: checks each echo and keeps its time once the warm-up is over.
struct Recorder {
    warmup: usize,
    total: u32,
    samples: Vec<u64>,
}

impl Recorder {
    fn new(run: &Run) -> Result<Self> {
        Ok(Self {
            warmup: run.warmup,
            total: run.total()?,
            samples: Vec::with_capacity(run.iterations),
        })
    }

    /// Checks the echo of round trip `seq` (length, first bytes, last byte; everything on the
    /// last round trip) and records `elapsed` unless it is a warm-up round trip.
    fn record(&mut self, seq: u32, echoed: &[u8], payload: &[u8], elapsed: Duration) -> Result<()> {
        ensure!(
            echoed.len() == payload.len(),
            "response {seq} holds {} bytes, not {}",
            echoed.len(),
            payload.len()
        );
        let n = payload.len().min(4);
        ensure!(
            echoed[..n] == payload[..n] && echoed.last() == payload.last(),
            "response {seq} is not the echo"
        );
        if seq == self.total {
            ensure!(echoed == payload, "the last response is not the echo");
        }
        if seq as usize > self.warmup {
            self.samples
                .push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        }
        Ok(())
    }
}

/// Pins the calling (server) thread if asked to.
fn pin_server(cpu: Option<usize>) -> Result<()> {
    if let Some(cpu) = cpu {
        pin_to_cpu(cpu).with_context(|| format!("pinning the server to cpu {cpu}"))?;
    }
    Ok(())
}

/// Waits for the server thread's startup message (`Ok(T)` once it is ready for requests).
fn await_ready<T>(ready: &mpsc::Receiver<Result<T>>) -> Result<T> {
    match ready.recv_timeout(WAIT_TIMEOUT) {
        Ok(result) => result.context("starting the server"),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            bail!("the server was not ready within {WAIT_TIMEOUT:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the server thread died at startup"),
    }
}

/// Waits (bounded) for the server thread to send its result, then joins it.
fn finish_server<T>(done: &mpsc::Receiver<Result<T>>, server: thread::JoinHandle<()>) -> Result<T> {
    let result = match done.recv_timeout(WAIT_TIMEOUT) {
        Ok(result) => result.context("server"),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // Leave the thread behind: the process exits with the error anyway.
            bail!("the server did not finish within {WAIT_TIMEOUT:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(anyhow!("the server thread died")),
    };
    server
        .join()
        .map_err(|_| anyhow!("the server thread panicked"))?;
    result
}

/// Calls `poll` until it yields a value: busy for [`SPIN_POLLS`] polls, then yielding the CPU
/// between polls, then (after [`YIELD_BEFORE_SLEEP`]) sleeping between them; fails once
/// [`WAIT_TIMEOUT`] has passed after the busy phase. The busy phase reads no clock.
fn poll_until<T>(what: &str, mut poll: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let mut polls: u32 = 0;
    let mut start = None;
    loop {
        if let Some(value) = poll()? {
            return Ok(value);
        }
        if polls < SPIN_POLLS {
            polls += 1;
            std::hint::spin_loop();
            continue;
        }
        let now = Instant::now();
        let waited = now.duration_since(*start.get_or_insert(now));
        ensure!(waited < WAIT_TIMEOUT, "no {what} within {WAIT_TIMEOUT:?}");
        if waited >= YIELD_BEFORE_SLEEP {
            thread::sleep(SLEEP_BETWEEN_POLLS);
        } else {
            thread::yield_now();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// tarpc

/// The service: one call echoing its argument.
#[tarpc::service]
trait Echo {
    /// Returns `payload` unchanged.
    async fn echo(payload: ByteBuf) -> ByteBuf;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: context::Context, payload: ByteBuf) -> ByteBuf {
        payload
    }
}

/// A current-thread tokio runtime with I/O and timers.
fn current_thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")
}

fn tarpc_run(run: Run) -> Result<Vec<u64>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let server = thread::Builder::new()
        .name("tarpc-server".into())
        .spawn(move || {
            let result = tarpc_server(run.server_cpu, &ready_tx);
            if let Err(error) = &result {
                // Startup failures go to whoever is still waiting for `ready`.
                let _ = ready_tx.send(Err(anyhow!("{error:#}")));
            }
            let _ = done_tx.send(result);
        })
        .context("spawning the tarpc server thread")?;
    let port = await_ready(&ready_rx)?;
    let samples = tarpc_client(run, port);
    // The client's connection is closed by now, which ends the server.
    let served = finish_server(&done_rx, server);
    let samples = samples?;
    served?;
    Ok(samples)
}

/// Listens on an ephemeral loopback port (sent through `ready`), serves one connection until
/// the client closes it.
fn tarpc_server(cpu: Option<usize>, ready: &mpsc::Sender<Result<u16>>) -> Result<()> {
    pin_server(cpu)?;
    current_thread_runtime()?.block_on(async {
        let mut incoming = tcp::listen((Ipv4Addr::LOCALHOST, 0), Bincode::default)
            .await
            .context("listening on 127.0.0.1")?;
        incoming.config_mut().max_frame_length(MAX_FRAME);
        let _ = ready.send(Ok(incoming.local_addr().port()));
        let transport = tokio::time::timeout(WAIT_TIMEOUT, incoming.next())
            .await
            .with_context(|| format!("no connection within {WAIT_TIMEOUT:?}"))?
            .context("the listener closed")?
            .context("accepting the client's connection")?;
        transport.get_ref().set_nodelay(true)?;
        // One call in flight at a time: run each response future inline, no task per call.
        BaseChannel::with_defaults(transport)
            .execute(EchoServer.serve())
            .for_each(|respond| respond)
            .await;
        Ok(())
    })
}

fn tarpc_client(run: Run, port: u16) -> Result<Vec<u64>> {
    let mut recorder = Recorder::new(&run)?;
    let total = recorder.total;
    current_thread_runtime()?.block_on(async {
        let mut connect = tcp::connect((Ipv4Addr::LOCALHOST, port), Bincode::default);
        connect.config_mut().max_frame_length(MAX_FRAME);
        let transport = tokio::time::timeout(WAIT_TIMEOUT, connect)
            .await
            .with_context(|| format!("no connection within {WAIT_TIMEOUT:?}"))?
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        transport.get_ref().set_nodelay(true)?;
        let client = EchoClient::new(client::Config::default(), transport).spawn();
        let mut payload: Vec<u8> = (0..run.size).map(|i| i as u8).collect();
        for seq in 1..=total {
            tag(&mut payload, seq);
            let request = ByteBuf::from(payload.clone());
            let mut ctx = context::current();
            ctx.deadline = Instant::now() + WAIT_TIMEOUT;
            let start = Instant::now();
            let echoed = client
                .echo(ctx, request)
                .await
                .with_context(|| format!("call {seq}"))?;
            let elapsed = start.elapsed();
            recorder.record(seq, &echoed, &payload, elapsed)?;
        }
        anyhow::Ok(())
    })?;
    Ok(recorder.samples)
}

// ---------------------------------------------------------------------------------------------
// iceoryx2

/// An iceoryx2 node of our own, without signal handlers (this is a benchmark, not a daemon).
fn iceoryx2_node() -> Result<iceoryx2::node::Node<ipc::Service>> {
    NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .map_err(|error| anyhow!("creating an iceoryx2 node: {error:?}"))
}

fn service_name(name: &str) -> Result<ServiceName> {
    ServiceName::new(name).map_err(|error| anyhow!("service name {name:?}: {error:?}"))
}

fn iceoryx2_run(run: Run) -> Result<Vec<u64>> {
    // Unique per process and case, so concurrent runs never meet.
    let name = format!(
        "rfaas-peers/{}/{}/{}",
        std::process::id(),
        run.series.name(),
        run.size
    );
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let server = {
        let name = name.clone();
        thread::Builder::new()
            .name("iceoryx2-server".into())
            .spawn(move || {
                let result = iceoryx2_server(run, &name, &ready_tx);
                if let Err(error) = &result {
                    let _ = ready_tx.send(Err(anyhow!("{error:#}")));
                }
                let _ = done_tx.send(result);
            })
            .context("spawning the iceoryx2 server thread")?
    };
    await_ready(&ready_rx)?;
    let samples = iceoryx2_client(run, &name);
    let waited_for = finish_server(&done_rx, server);
    let samples = samples?;
    let waited_for = waited_for?;
    if run.series == Series::Iceoryx2Wait {
        let total = run.total()?;
        if u64::from(waited_for) * 100 < u64::from(total) * 95 {
            eprintln!(
                "peers: iceoryx2-wait {} B: the server found {} of {total} requests already \
                 posted and did not wait for them",
                run.size,
                total - waited_for
            );
        }
    }
    Ok(samples)
}

/// Serves `run.total()` requests and returns how many it found missing at first (so it waited
/// for them); startup errors and readiness go through `ready`.
fn iceoryx2_server(run: Run, name: &str, ready: &mpsc::Sender<Result<()>>) -> Result<u32> {
    pin_server(run.server_cpu)?;
    let total = run.total()?;
    let wait = run.series == Series::Iceoryx2Wait;
    let node = iceoryx2_node()?;
    let service = node
        .service_builder(&service_name(name)?)
        .request_response::<[u8], [u8]>()
        .create()
        .map_err(|error| anyhow!("creating request-response service {name}: {error:?}"))?;
    let server = service
        .server_builder()
        .initial_max_slice_len(run.size)
        .create()
        .map_err(|error| anyhow!("creating the server port: {error:?}"))?;
    let event_name = format!("{name}/requests");
    let event = node
        .service_builder(&service_name(&event_name)?)
        .event()
        .create()
        .map_err(|error| anyhow!("creating event service {event_name}: {error:?}"))?;
    let listener = event
        .listener_builder()
        .create()
        .map_err(|error| anyhow!("creating the listener: {error:?}"))?;
    let _ = ready.send(Ok(()));

    let mut waited_for = 0;
    for seq in 1..=total {
        let receive = || {
            server
                .receive()
                .map_err(|error| anyhow!("receiving request {seq}: {error:?}"))
        };
        let request = if wait {
            let deadline = Instant::now() + WAIT_TIMEOUT;
            let mut waited = false;
            loop {
                if let Some(request) = receive()? {
                    waited_for += u32::from(waited);
                    break request;
                }
                waited = true;
                let remaining = deadline
                    .checked_duration_since(Instant::now())
                    .filter(|remaining| !remaining.is_zero())
                    .with_context(|| format!("no request {seq} within {WAIT_TIMEOUT:?}"))?;
                listener
                    .timed_wait_one(remaining)
                    .map_err(|error| anyhow!("waiting for request {seq}: {error:?}"))?;
            }
        } else {
            poll_until("request", receive)?
        };
        let len = request.payload().len();
        let response = request
            .loan_slice_uninit(len)
            .map_err(|error| anyhow!("loaning response {seq}: {error:?}"))?
            .write_from_slice(request.payload());
        response
            .send()
            .map_err(|error| anyhow!("sending response {seq}: {error:?}"))?;
    }
    Ok(waited_for)
}

fn iceoryx2_client(run: Run, name: &str) -> Result<Vec<u64>> {
    let mut recorder = Recorder::new(&run)?;
    let total = recorder.total;
    let wait = run.series == Series::Iceoryx2Wait;
    let node = iceoryx2_node()?;
    let service = node
        .service_builder(&service_name(name)?)
        .request_response::<[u8], [u8]>()
        .open()
        .map_err(|error| anyhow!("opening request-response service {name}: {error:?}"))?;
    let client = service
        .client_builder()
        .initial_max_slice_len(run.size)
        .create()
        .map_err(|error| anyhow!("creating the client port: {error:?}"))?;
    let event_name = format!("{name}/requests");
    let event = node
        .service_builder(&service_name(&event_name)?)
        .event()
        .open()
        .map_err(|error| anyhow!("opening event service {event_name}: {error:?}"))?;
    let notifier = event
        .notifier_builder()
        .create()
        .map_err(|error| anyhow!("creating the notifier: {error:?}"))?;

    let mut payload: Vec<u8> = (0..run.size).map(|i| i as u8).collect();
    for seq in 1..=total {
        tag(&mut payload, seq);
        if wait {
            idle(run.gap);
        }
        let start = Instant::now();
        let request = client
            .loan_slice_uninit(run.size)
            .map_err(|error| anyhow!("loaning request {seq}: {error:?}"))?
            .write_from_slice(&payload);
        let pending = request
            .send()
            .map_err(|error| anyhow!("sending request {seq}: {error:?}"))?;
        if wait {
            notifier
                .notify()
                .map_err(|error| anyhow!("notifying request {seq}: {error:?}"))?;
        }
        let response = poll_until("response", || {
            pending
                .receive()
                .map_err(|error| anyhow!("receiving response {seq}: {error:?}"))
        })?;
        let elapsed = start.elapsed();
        recorder.record(seq, response.payload(), &payload, elapsed)?;
    }
    Ok(recorder.samples)
}
