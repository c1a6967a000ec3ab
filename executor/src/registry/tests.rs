//! The node table's store: durable writes outside the table's lock, never older over newer.

use super::*;

fn snap(version: u64, text: &str) -> Snapshot {
    Snapshot {
        version,
        body: text.as_bytes().to_vec(),
    }
}

/// A snapshot is written whole; one older than what is on disk is skipped (the newer table
/// includes its change); a state file named `*.tmp` is not clobbered by its own aside copy.
#[test]
fn the_store_never_writes_an_older_table_over_a_newer_one() {
    let dir = std::env::temp_dir().join(format!("rfaas-registry-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    for name in ["nodes.json", "nodes.tmp"] {
        let store = Store::new(dir.join(name));
        store.write(snap(2, "[2]")).expect("write 2");
        assert_eq!(std::fs::read(&store.path).expect("read"), b"[2]");
        store
            .write(snap(1, "[1]"))
            .expect("an older one is no error");
        assert_eq!(std::fs::read(&store.path).expect("read"), b"[2]", "{name}");
        store.write(snap(3, "[3]")).expect("write 3");
        assert_eq!(std::fs::read(&store.path).expect("read"), b"[3]", "{name}");
        assert!(
            !crate::aside_path(&store.path).exists(),
            "{name}: the aside copy was left"
        );
    }
    // A failed write says so in the answer.
    let store = Store::new(dir.join("missing-dir").join("nodes.json"));
    match store.answer(RegistryResponse::Ok, Some(snap(1, "[]"))) {
        RegistryResponse::Error(why) => assert!(why.contains("cannot persist"), "{why}"),
        other => panic!("a failed write answered {other:?}"),
    }
    assert!(matches!(
        store.answer(RegistryResponse::Ok, None),
        RegistryResponse::Ok
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Changes queued behind a write are committed together: three writers that offer their
/// snapshots while another write is in progress get one write of the newest between them,
/// and each returns with its change on disk. (Each used to write its own snapshot in turn,
/// an fsync'd file per heartbeat, so heartbeats beyond the disk's fsync rate queued up.)
#[test]
fn queued_changes_are_written_together() {
    let dir = std::env::temp_dir().join(format!("rfaas-registry-group-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let store = Arc::new(Store::new(dir.join("nodes.json")));
    // A write in progress: its writer holds `written`.
    let in_progress = store.written.lock().expect("lock");
    let writers: Vec<_> = (1..=3)
        .map(|v| {
            let store = store.clone();
            std::thread::spawn(move || store.write(snap(v, &format!("[{v}]"))))
        })
        .collect();
    // Until all three have offered theirs (bounded: a writer that never offers fails it).
    let mut waited = 0;
    while store.offers.load(Ordering::Relaxed) < 3 {
        waited += 1;
        assert!(waited < 20_000, "the writers never offered their snapshots");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        store
            .offered
            .lock()
            .expect("offered")
            .as_ref()
            .map(|o| o.version),
        Some(3),
        "the newest offer is kept"
    );
    // All three wait for `written`: one writes the newest, the others find theirs on disk.
    drop(in_progress);
    for w in writers {
        w.join().expect("writer").expect("written");
    }
    assert_eq!(std::fs::read(&store.path).expect("read"), b"[3]");
    assert_eq!(
        store.writes.load(Ordering::Relaxed),
        1,
        "one write for three changes"
    );
    // A failed write keeps the snapshot for the next writer, which reports the failure too.
    let broken = Store::new(dir.join("missing").join("nodes.json"));
    broken.write(snap(1, "[1]")).expect_err("no directory");
    assert_eq!(
        broken
            .offered
            .lock()
            .expect("offered")
            .as_ref()
            .map(|o| o.version),
        Some(1)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node registers an address clients elsewhere can connect to: not a wildcard, not port 0
/// (a manager listening on `0.0.0.0` used to register `0.0.0.0:PORT`, and remote clients
/// connected to themselves). Host names pass as they are.
#[test]
fn a_node_address_must_be_reachable() {
    let node = |address: &str| NodeInfo {
        id: "n".into(),
        address: address.into(),
        cores: 1,
        memory_mib: 1024,
        rdma: false,
    };
    for bad in ["0.0.0.0:7800", "[::]:7800", "10.0.0.1:0"] {
        let e = validate(&node(bad)).expect_err(bad);
        assert!(e.contains("advertise"), "{e}");
    }
    for good in ["10.0.0.1:7800", "[fe80::1]:7800", "node17.cluster:7800"] {
        validate(&node(good)).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}
