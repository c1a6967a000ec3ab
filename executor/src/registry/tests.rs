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
        let store = Store {
            path: dir.join(name),
            written: Mutex::new(0),
        };
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
    let store = Store {
        path: dir.join("missing-dir").join("nodes.json"),
        written: Mutex::new(0),
    };
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
