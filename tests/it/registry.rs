//! The cluster registry as a real process: registration, heartbeats and expiry, bad requests,
//! and a restart that keeps the node table.

use rfaas::registry::{RegistryClient, RegistryError};
use rfaas::wire::NodeInfo;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tests::{executor_binary, scratch_dir};

struct Registry {
    child: Child,
    address: String,
}

impl Registry {
    fn start(config: &Path) -> Registry {
        let mut child = Command::new(executor_binary())
            .arg("registry")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning the registry");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("registry output");
        let address = line
            .trim()
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("registry did not start: {line:?}"))
            .to_owned();
        Registry { child, address }
    }

    fn client(&self) -> RegistryClient {
        RegistryClient::new(self.address.clone())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(id: &str, cores: u32) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        address: format!("127.0.0.1:{}", 9000 + cores),
        cores,
        memory_mib: 1024,
        rdma: cores >= 8,
    }
}

fn config(dir: &Path, timeout_ms: u64) -> std::path::PathBuf {
    let path = dir.join("registry.toml");
    let state = dir.join("nodes.json");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nheartbeat_timeout_ms = {timeout_ms}\nstate_file = \"{}\"\n",
            state.display()
        ),
    )
    .expect("config");
    path
}

/// Waits (at most 10 s) until `cond` holds for the registry's node list.
#[track_caller]
fn eventually(
    client: &RegistryClient,
    what: &str,
    cond: impl Fn(&[rfaas::wire::NodeStatus]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nodes = client.list().expect("list");
        if cond(&nodes) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {nodes:?} after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nodes_register_heartbeat_and_expire() {
    let dir = scratch_dir("registry-expire");
    let reg = Registry::start(&config(&dir, 400));
    let c = reg.client();
    c.register(&node("a", 4)).expect("register a");
    c.register(&node("b", 8)).expect("register b");
    let nodes = c.list().expect("list");
    assert_eq!(
        nodes.iter().map(|n| n.info.id.as_str()).collect::<Vec<_>>(),
        ["b", "a"],
        "most free cores first"
    );
    assert_eq!((nodes[0].free_cores, nodes[0].free_memory_mib), (8, 1024));
    // Everything a node registered comes back, whether it offers RDMA included.
    assert_eq!(
        nodes.iter().map(|n| n.info.clone()).collect::<Vec<_>>(),
        [node("b", 8), node("a", 4)]
    );
    assert!(nodes[0].info.rdma && !nodes[1].info.rdma);
    // `a` keeps heart-beating with less free capacity; `b` goes silent and disappears.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.heartbeat(&node("a", 4), 3, 512).expect("heartbeat");
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        eventually(&c, "b expires", |n| {
            n.len() == 1 && n[0].info.id == "a" && n[0].free_cores == 3
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    // Bad heartbeats and registrations are refused with a reason.
    let refused = |r: Result<(), RegistryError>, words: &str| match r {
        Err(RegistryError::Refused(msg)) => assert!(msg.contains(words), "{msg}"),
        other => panic!("expected a refusal mentioning `{words}`, got {other:?}"),
    };
    refused(c.heartbeat(&node("nobody", 1), 1, 1), "unknown node");
    refused(c.heartbeat(&node("a", 4), 5, 1), "more than");
    refused(
        c.register(&NodeInfo {
            id: String::new(),
            ..node("x", 1)
        }),
        "node id",
    );
    refused(c.register(&node("zero", 0)), "at least one core");
    c.deregister("a").expect("deregister");
    assert!(c.list().expect("list").is_empty());
}

#[test]
fn malformed_requests_are_answered_and_the_registry_keeps_serving() {
    let dir = scratch_dir("registry-bad");
    let reg = Registry::start(&config(&dir, 5000));
    let bodies: [&[u8]; 4] = [
        b"not json",
        br#"{"list":1,"extra":2}"#,
        br#"{"register":{"id":"x","address":"a","cores":1,"memory_mib":1,"oops":0}}"#,
        b"{}",
    ];
    for body in bodies {
        let mut s = std::net::TcpStream::connect(&reg.address).expect("connect");
        s.write_all(&(body.len() as u32).to_le_bytes())
            .expect("write");
        s.write_all(body).expect("write");
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).expect("answer");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.contains("error") && text.contains("bad request"),
            "{}: {text}",
            String::from_utf8_lossy(body)
        );
    }
    // An oversize length prefix and an abrupt close.
    let mut s = std::net::TcpStream::connect(&reg.address).expect("connect");
    s.write_all(&u32::MAX.to_le_bytes()).expect("write");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("answer");
    assert!(String::from_utf8_lossy(&answer).contains("bad request"));
    drop(std::net::TcpStream::connect(&reg.address).expect("connect"));
    reg.client()
        .register(&node("after", 2))
        .expect("still serving");
    assert_eq!(reg.client().list().expect("list").len(), 1);
}

#[test]
fn the_node_table_survives_a_restart() {
    let dir = scratch_dir("registry-restart");
    let cfg = config(&dir, 5000);
    let mut reg = Registry::start(&cfg);
    reg.client()
        .register(&node("durable", 6))
        .expect("register");
    reg.client()
        .heartbeat(&node("durable", 6), 2, 100)
        .expect("heartbeat");
    // SIGKILL: nothing gets a chance to flush; what was acknowledged must be on disk.
    let _ = reg.child.kill();
    let _ = reg.child.wait();
    let reg = Registry::start(&cfg);
    let nodes = reg.client().list().expect("list");
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        (
            nodes[0].info.id.as_str(),
            nodes[0].free_cores,
            nodes[0].free_memory_mib
        ),
        ("durable", 2, 100)
    );
    // A corrupt table is a clear start-up error, not an empty registry.
    drop(reg);
    std::fs::write(dir.join("nodes.json"), "{ not a table").expect("corrupt");
    check_start_fails(&cfg, "corrupt node table");
    // So is an unknown configuration key.
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nbogus = 1\n").expect("config");
    check_start_fails(&cfg, "bogus");
}

/// The registry refuses to start with `config`, saying `words` on stderr.
#[track_caller]
fn check_start_fails(config: &Path, words: &str) {
    let err = tests::refused_start(
        Command::new(executor_binary())
            .arg("registry")
            .arg("--config")
            .arg(config),
    );
    assert!(
        err.contains(words),
        "expected a start-up failure mentioning `{words}`: {err}"
    );
}

/// A registry address where something else answers (a web server) gives an error that says
/// where the client looked and what it expected, not only the length it read.
#[test]
fn something_else_at_the_registrys_address_is_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let err = RegistryClient::new(address.clone())
        .list()
        .expect_err("not a registry");
    let text = err.to_string();
    assert!(
        text.contains(&format!("is {address} an rfaas registry?")),
        "{text}"
    );
    server.join().expect("server");
}

/// A flood of connections that send nothing fills the registry's pending connections, so it
/// turns away everything else, heartbeats too; it used to drop every node whose heartbeats
/// were turned away for a timeout's length, leaving clients no node at all. Silence now
/// counts only from the last connection turned away: the nodes are still listed after the
/// flood, and expire a timeout after it if they stay silent.
#[test]
fn a_flood_of_idle_connections_does_not_expire_the_nodes() {
    let dir = scratch_dir("registry-flood");
    let timeout = Duration::from_millis(2000);
    let reg = Registry::start(&config(&dir, timeout.as_millis() as u64));
    let c = reg.client();
    c.register(&node("quiet", 2)).expect("register");
    // Every pending place taken (and some turned away), for longer than the timeout.
    let mut flood: Vec<std::net::TcpStream> = Vec::new();
    let until = Instant::now() + timeout + timeout / 2;
    while Instant::now() < until {
        while flood.len() < executor::conn::MAX_PENDING + 8 {
            flood.push(std::net::TcpStream::connect(&reg.address).expect("connect"));
        }
        // The ones turned away are closed by the registry: open others in their place.
        flood.retain(|s| {
            let mut byte = [0u8; 1];
            s.set_nonblocking(true).expect("nonblocking");
            !matches!(Read::read(&mut &*s, &mut byte), Ok(0))
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(flood);
    // The first list the registry answers (it may turn a few more away while its pending
    // connections see their ends).
    let deadline = Instant::now() + Duration::from_secs(10);
    let nodes = loop {
        match c.list() {
            Ok(nodes) => break nodes,
            Err(e) => assert!(Instant::now() < deadline, "no list after the flood: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        nodes.iter().any(|n| n.info.id == "quiet"),
        "the silent node was dropped during the flood: {nodes:?}"
    );
    eventually(&c, "the silent node expires a timeout later", |n| {
        n.is_empty()
    });
}

/// A live node's id is its own: registered or heart-beaten from another address (another
/// process taking it over, to send its clients elsewhere), refused, and its entry stays; from
/// its own address it registers again (a restarted node). A heartbeat without an address (an
/// older manager) is not checked.
#[test]
fn a_live_nodes_id_cannot_be_taken_from_another_address() {
    let dir = scratch_dir("registry-take-over");
    let reg = Registry::start(&config(&dir, 600_000));
    let c = reg.client();
    c.register(&node("a", 4)).expect("register a");
    c.heartbeat(&node("a", 4), 3, 512).expect("heartbeat");
    let refused = |r: Result<(), RegistryError>, words: &str| match r {
        Err(RegistryError::Refused(msg)) => assert!(msg.contains(words), "{msg}"),
        other => panic!("expected a refusal mentioning `{words}`, got {other:?}"),
    };
    let other = NodeInfo {
        address: "127.0.0.1:9".into(),
        ..node("a", 64)
    };
    refused(c.register(&other), "is registered at 127.0.0.1:9004");
    refused(
        c.heartbeat(&other, 1, 1),
        "another process registered this id",
    );
    let listed = c.list().expect("list");
    assert_eq!(
        (listed[0].info.address.as_str(), listed[0].free_cores),
        ("127.0.0.1:9004", 3),
        "{listed:?}"
    );
    c.register(&node("a", 4)).expect("register a again");
    // The older form of a heartbeat (no address: the field is left out), by hand.
    let mut stream = std::net::TcpStream::connect(&reg.address).expect("connect");
    rfaas::transport::send_json(
        &mut stream,
        &rfaas::wire::RegistryRequest::Heartbeat {
            id: "a".into(),
            address: None,
            free_cores: 2,
            free_memory_mib: 100,
        },
    )
    .expect("send");
    let answer: rfaas::wire::RegistryResponse =
        rfaas::transport::recv_json(&mut stream).expect("answer");
    assert_eq!(answer, rfaas::wire::RegistryResponse::Ok);
}
