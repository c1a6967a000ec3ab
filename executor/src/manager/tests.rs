//! Unit tests of the per-lease limits and of the socket directory's checks.

use super::*;

fn request(cores: u32, slots: Option<u32>, slot_size: Option<u32>) -> LeaseRequest {
    LeaseRequest {
        cores,
        memory_mib: 1024,
        hot_timeout_us: 0,
        fabric: Fabric::Shm,
        package_sha256: "ab".repeat(32),
        package_len: None,
        slots,
        slot_size,
        heartbeat_ms: None,
    }
}

fn limited() -> ManagerConfig {
    ManagerConfig {
        cores: 8,
        max_cores_per_lease: Some(4),
        max_slots_per_worker: 16,
        max_slot_size: 1 << 16,
        max_outstanding_per_lease: 32,
        ..ManagerConfig::default()
    }
}

/// The request gets `(slots, slot size)`, or a refusal that says `words`.
#[track_caller]
fn check(cfg: &ManagerConfig, req: LeaseRequest, expect: Result<(u32, u32), &str>) {
    match (cfg.lease_geometry(&req), expect) {
        (Ok(got), Ok(want)) => assert_eq!(got, want, "{req:?}"),
        (Err(why), Err(words)) => assert!(why.contains(words), "{req:?}: {why}"),
        (got, want) => panic!("{req:?}: got {got:?}, expected {want:?}"),
    }
}

#[test]
fn limits_refuse_with_their_names_and_cap_the_defaults() {
    let cfg = limited();
    // Within every limit, as asked.
    check(&cfg, request(4, Some(8), Some(4096)), Ok((8, 4096)));
    check(&cfg, request(2, Some(16), Some(1 << 16)), Ok((16, 1 << 16)));
    // Each limit, one past it.
    check(&cfg, request(5, Some(1), None), Err("max_cores_per_lease"));
    check(
        &cfg,
        request(1, Some(17), None),
        Err("max_slots_per_worker"),
    );
    check(
        &cfg,
        request(1, None, Some((1 << 16) + 64)),
        Err("max_slot_size"),
    );
    check(
        &cfg,
        request(3, Some(11), None),
        Err("33 invocations in flight"),
    );
    check(
        &cfg,
        request(3, Some(11), None),
        Err("max_outstanding_per_lease"),
    );
    // The executor's own shape rules, before anything is spawned.
    check(&cfg, request(1, Some(0), None), Err("at least one slot"));
    check(&cfg, request(1, None, Some(100)), Err("a multiple of 64"));
    check(&cfg, request(1, None, Some(64)), Err("a multiple of 64"));
    check(&cfg, request(0, None, None), Err("at least one core"));
    // Left out: the defaults, capped by the limits.
    check(&cfg, request(1, None, None), Ok((8, 1 << 16)));
    check(&cfg, request(4, None, None), Ok((8, 1 << 16)));
    let tight = ManagerConfig {
        max_outstanding_per_lease: 6,
        max_slot_size: 1000,
        ..limited()
    };
    check(&tight, request(4, None, None), Ok((1, 960)));
    check(&tight, request(2, None, None), Ok((3, 960)));
    check(
        &tight,
        request(4, Some(2), None),
        Err("max_outstanding_per_lease"),
    );
    // Defaults: the whole node, 8 slots of 1 MiB.
    let open = ManagerConfig {
        cores: 4,
        ..ManagerConfig::default()
    };
    check(
        &open,
        request(4, None, None),
        Ok((DEFAULT_SLOTS, DEFAULT_SLOT_SIZE)),
    );
    // No core limit of its own: the node's capacity decides (later, at reservation).
    check(
        &open,
        request(5, None, None),
        Ok((DEFAULT_SLOTS, DEFAULT_SLOT_SIZE)),
    );
    // The executor's limit of 256 workers holds whatever the configuration says.
    check(&open, request(257, Some(1), None), Err("between 1 and 256"));
    // 4 GiB of slots is the executor's limit whatever the configuration says.
    let big = ManagerConfig {
        cores: 64,
        max_slots_per_worker: 256,
        max_slot_size: 1 << 30,
        max_outstanding_per_lease: 1 << 20,
        ..ManagerConfig::default()
    };
    check(
        &big,
        request(64, Some(256), Some(1 << 20)),
        Err("at most 4 GiB"),
    );
}

#[test]
fn limits_that_no_lease_could_meet_are_configuration_errors() {
    for (cfg, words) in [
        (
            ManagerConfig {
                max_cores_per_lease: Some(0),
                ..ManagerConfig::default()
            },
            "must be positive",
        ),
        (
            ManagerConfig {
                max_slots_per_worker: 257,
                ..ManagerConfig::default()
            },
            "max_slots_per_worker must be 1 to 256",
        ),
        (
            ManagerConfig {
                max_slot_size: 64,
                ..ManagerConfig::default()
            },
            "max_slot_size must be at least 128",
        ),
        (
            ManagerConfig {
                memory_mib: 0,
                ..ManagerConfig::default()
            },
            "no lease fits (the smallest needs 20 MiB)",
        ),
        (
            ManagerConfig {
                registry: Some("127.0.0.1".into()),
                ..ManagerConfig::default()
            },
            "give host:port",
        ),
        (
            ManagerConfig {
                registry: Some(":7000".into()),
                ..ManagerConfig::default()
            },
            "give host:port",
        ),
    ] {
        let err = cfg.check_limits().expect_err(words);
        assert!(err.contains(words), "{err}");
    }
    ManagerConfig::default()
        .check_limits()
        .expect("the defaults are consistent");
    for registry in ["registry.cluster:7000", "10.0.0.7:7000", "[::1]:7000"] {
        ManagerConfig {
            registry: Some(registry.into()),
            ..ManagerConfig::default()
        }
        .check_limits()
        .expect(registry);
    }
}

/// The socket directory is created private, and one others may write to is refused.
#[test]
fn the_socket_directory_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let base = std::env::temp_dir().join(format!("rfaas-private-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let dir = base.join("a/b");
    private_dir(&dir).expect("a new private directory");
    let mode = std::fs::metadata(&dir).expect("made").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    for shared in [0o777, 0o1777, 0o770] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(shared)).expect("chmod");
        let e = private_dir(&dir).expect_err("a directory others may write to");
        assert!(e.contains("others may write to it"), "{shared:o}: {e}");
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    private_dir(&dir).expect("others may read and enter, not write");
    let file = base.join("file");
    std::fs::write(&file, b"").expect("file");
    assert!(private_dir(&file).is_err(), "a file taken for a directory");
    let _ = std::fs::remove_dir_all(&base);
}

/// Sets `path`'s modification time `age` into the past.
fn age(path: &Path, age: Duration) {
    let t = SystemTime::now() - age;
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .expect("set mtime");
}

/// The cache is trimmed to its limit, least recently leased first, sparing the package just
/// cached and, while the rest fits, any leased recently; other files are not its business.
#[test]
fn the_package_cache_is_trimmed_least_recently_leased_first() {
    let dir = std::env::temp_dir().join(format!("rfaas-cache-trim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let hour = Duration::from_secs(3600);
    let file = |name: &str, len: usize, hours: u32| {
        let p = dir.join(name);
        std::fs::write(&p, vec![0u8; len]).expect("write");
        age(&p, hour * hours);
        p
    };
    let oldest = file("a.so", 100, 5);
    let old = file("b.so", 100, 4);
    let kept = file("c.so", 100, 3);
    let new = file("d.so", 100, 6);
    let recent = file("e.so", 100, 0);
    let other = file("ledger.jsonl", 1000, 9);
    // 500 bytes of packages, at most 300: the two least recently leased go; `new` is spared
    // though older, `recent` is spared and others are not packages.
    let removed = trim_cache(&dir, 300, &new, Duration::from_secs(600));
    assert_eq!(removed, vec![oldest.clone(), old.clone()]);
    for (p, there) in [
        (&oldest, false),
        (&old, false),
        (&kept, true),
        (&new, true),
        (&recent, true),
        (&other, true),
    ] {
        assert_eq!(p.exists(), there, "{}", p.display());
    }
    // Under the limit: nothing goes, recent or not.
    assert!(trim_cache(&dir, 300, &new, Duration::from_secs(600)).is_empty());
    assert!(trim_cache(&dir, 300, &new, hour * 10).is_empty());
    // Touching marks a package as just leased: with room for two, the other recent one
    // (leased a minute ago, say) goes.
    age(&recent, Duration::from_secs(60));
    touch(&kept);
    let removed = trim_cache(&dir, 200, &new, Duration::from_secs(600));
    assert_eq!(removed, vec![recent.clone()]);
    assert!(kept.exists() && new.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Recent packages bound the cache too: when it cannot fit by removing the others, they go,
/// least recently leased first, the package just cached never; so uploads of ever new
/// packages cannot grow the cache past its limit. (They used to be spared for 10 minutes
/// whatever the cache's size: twelve 8 MiB uploads left 97 MiB in an 8 MiB cache.)
#[test]
fn recent_packages_go_when_the_cache_cannot_fit_otherwise() {
    let dir = std::env::temp_dir().join(format!("rfaas-cache-recent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let minute = Duration::from_secs(60);
    let file = |name: &str, len: usize, minutes: u32| {
        let p = dir.join(name);
        std::fs::write(&p, vec![0u8; len]).expect("write");
        age(&p, minute * minutes);
        p
    };
    let stale = file("a.so", 100, 60);
    let r4 = file("b.so", 100, 4);
    let r3 = file("c.so", 100, 3);
    let r2 = file("d.so", 100, 2);
    let r1 = file("e.so", 100, 1);
    // The one being leased, the oldest of the recent ones: spared all the same.
    let keep = file("f.so", 100, 5);
    // 600 bytes, at most 250: the stale one first, then the recent ones oldest first until
    // 200 are left (`keep` and the most recent).
    let removed = trim_cache(&dir, 250, &keep, minute * 10);
    assert_eq!(
        removed,
        vec![stale.clone(), r4.clone(), r3.clone(), r2.clone()]
    );
    for (p, there) in [
        (&stale, false),
        (&r4, false),
        (&r3, false),
        (&r2, false),
        (&r1, true),
        (&keep, true),
    ] {
        assert_eq!(p.exists(), there, "{}", p.display());
    }
    // A limit that only `keep` fits: every other package goes, however recent.
    let removed = trim_cache(&dir, 100, &keep, minute * 10);
    assert_eq!(removed, vec![r1.clone()]);
    assert!(keep.exists());
    // A package being leased over the limit by itself (the limit is at least the largest
    // package, so only in this test) stays; nothing else is left to remove.
    assert!(trim_cache(&dir, 0, &keep, minute * 10).is_empty());
    assert!(keep.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

fn entry(lease_id: u64) -> LedgerEntry {
    LedgerEntry {
        lease_id,
        node_id: "n".into(),
        package_sha256: "ab".repeat(32),
        cores: 1,
        memory_mib: 64,
        fabric: Fabric::Shm,
        started_ms: 1,
        allocated_ms: 2,
        hot_poll_us: 3,
        exec_us: 4,
        invocations: 5,
        executor_exit: None,
        cpu_us: None,
        memory_peak_bytes: None,
        ended_by_manager: None,
        times_unknown: false,
    }
}

fn line(e: &LedgerEntry) -> Vec<u8> {
    let mut l = serde_json::to_vec(e).expect("json");
    l.push(b'\n');
    l
}

/// A write cut short just before its newline that could not be cut off leaves a whole entry
/// without its newline: written again (with those that waited after it), it is counted once.
/// A torn line that is not such an entry is ended, reported as damaged, and not counted.
#[test]
fn an_entry_cut_short_before_its_newline_is_not_written_twice() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("rfaas-ledger-cut-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("ledger.jsonl");
    let raw = |bytes: &[u8]| {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(bytes))
            .expect("raw append");
    };
    append_line(&path, &line(&entry(1))).expect("first");
    let second = line(&entry(2));
    raw(&second[..second.len() - 1]);
    let waited: Vec<u8> = [second.clone(), line(&entry(3))].concat();
    append_line(&path, &waited).expect("again, with the next");
    raw(b"{\"lease_id\": 9");
    append_line(&path, &line(&entry(4))).expect("after a torn line");
    let lines = read_ledger_lines(&path).expect("read");
    let ids: Vec<Option<u64>> = lines
        .iter()
        .map(|l| l.as_ref().ok().map(|e| e.lease_id))
        .collect();
    assert_eq!(ids, [Some(1), Some(2), Some(3), None, Some(4)], "{lines:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An entry with a field this version does not know (a newer manager's) reads, with the fields
/// it knows; one that lacks a field every entry has is damaged.
#[test]
fn entries_of_a_newer_manager_read_and_incomplete_ones_do_not() {
    let dir = std::env::temp_dir().join(format!("rfaas-ledger-newer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("ledger.jsonl");
    let mut newer = serde_json::to_value(entry(7)).expect("json");
    newer["gpu_us"] = serde_json::json!(12);
    let mut incomplete = serde_json::to_value(entry(8)).expect("json");
    incomplete
        .as_object_mut()
        .expect("an object")
        .remove("invocations");
    let text = format!("{newer}\n{incomplete}\n");
    std::fs::write(&path, text).expect("write");
    let lines = read_ledger_lines(&path).expect("read");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].as_ref().expect("the newer entry"), &entry(7));
    let damaged = lines[1].as_ref().expect_err("the incomplete entry");
    assert!(damaged.contains("invocations"), "{damaged}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A torn last line (a full disk, a crash mid-write) is ended before the next entry, which gets
/// a line of its own; reading reports the damaged line and keeps the entries around it; the
/// next lease id comes after every whole entry.
#[test]
fn a_torn_ledger_line_does_not_hide_or_swallow_entries() {
    let dir = std::env::temp_dir().join(format!("rfaas-ledger-torn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("ledger.jsonl");
    append_line(&path, &line(&entry(1))).expect("first");
    let torn = line(&entry(2));
    let mut bytes = std::fs::read(&path).expect("read");
    bytes.extend_from_slice(&torn[..torn.len() / 2]);
    std::fs::write(&path, &bytes).expect("tear");
    append_line(&path, &line(&entry(3))).expect("after the tear");
    let lines = read_ledger_lines(&path).expect("read");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0].as_ref().expect("whole").lease_id, 1);
    let damaged = lines[1].as_ref().expect_err("the torn line");
    // One position, the ledger's: serde's own (always its line 1) is not repeated.
    assert!(
        damaged.contains("line 2, column ") && !damaged.contains("at line"),
        "{damaged}"
    );
    assert_eq!(lines[2].as_ref().expect("whole").lease_id, 3);
    assert!(
        read_ledger(&path).is_err(),
        "the strict reader passed a torn line"
    );
    assert_eq!(first_lease_id(&path), 4);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Uploads a killed manager left in the cache are removed at start; those of a running
/// manager, and packages, are not.
#[test]
fn uploads_of_dead_managers_are_removed() {
    let dir = std::env::temp_dir().join(format!("rfaas-stale-uploads-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut child = Command::new("true").spawn().expect("spawn");
    let dead = child.id();
    child.wait().expect("wait");
    let sha = "ab".repeat(32);
    let gone = dir.join(format!("{sha}.{dead}.0.tmp"));
    let live = dir.join(format!("{sha}.{}.3.tmp", std::process::id()));
    let package = dir.join(format!("{sha}.so"));
    for f in [&gone, &live, &package] {
        std::fs::write(f, b"x").expect("write");
    }
    remove_stale_uploads(&dir);
    assert!(!gone.exists(), "a dead manager's upload was kept");
    assert!(live.exists(), "a running manager's upload was removed");
    assert!(package.exists(), "a package was removed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The address registered for clients elsewhere: a wildcard listen address is refused with a
/// registry unless `advertise` names the host; `advertise` takes a host name or an IP address
/// without a port, and the listener's port is added.
#[test]
fn the_registered_address_is_one_clients_can_reach() {
    let bound: std::net::SocketAddr = "0.0.0.0:7801".parse().expect("address");
    let mut cfg = ManagerConfig {
        listen: "0.0.0.0:7801".into(),
        registry: Some("10.0.0.1:7900".into()),
        ..ManagerConfig::default()
    };
    let e = advertised_address(&cfg, bound).expect_err("a wildcard registered");
    assert!(e.contains("set `advertise`"), "{e}");
    for (advertise, want) in [
        ("node17.cluster", "node17.cluster:7801"),
        ("10.1.2.3", "10.1.2.3:7801"),
        ("fe80::1", "[fe80::1]:7801"),
    ] {
        cfg.advertise = Some(advertise.into());
        assert_eq!(advertised_address(&cfg, bound).as_deref(), Ok(want));
    }
    for bad in [
        "0.0.0.0",
        "::",
        "node17:7800",
        "10.1.2.3:7800",
        "",
        "a b",
        "a/b",
    ] {
        cfg.advertise = Some(bad.into());
        assert!(
            advertised_address(&cfg, bound).is_err(),
            "advertise = {bad:?} accepted"
        );
    }
    // Without a registry nothing is registered: a wildcard listen address is fine.
    cfg.advertise = None;
    cfg.registry = None;
    assert_eq!(
        advertised_address(&cfg, bound).as_deref(),
        Ok("0.0.0.0:7801")
    );
    // A specific one is registered as it is.
    let bound: std::net::SocketAddr = "10.0.0.2:7801".parse().expect("address");
    cfg.registry = Some("10.0.0.1:7900".into());
    assert_eq!(
        advertised_address(&cfg, bound).as_deref(),
        Ok("10.0.0.2:7801")
    );
}

/// Everything `OutputLines` emits for `chunks`, then its finish.
fn relayed(chunks: &[&[u8]]) -> Vec<String> {
    let mut lines = OutputLines::new(7);
    let mut out = Vec::new();
    for c in chunks {
        lines.push(c, |l| out.push(String::from_utf8(l.to_vec()).unwrap()));
    }
    lines.finish(|l| out.push(String::from_utf8(l.to_vec()).unwrap()));
    out
}

#[test]
fn executor_output_is_relayed_in_tagged_lines_with_control_characters_escaped() {
    // Lines split across reads, a last line without its newline.
    assert_eq!(
        relayed(&[b"hel", b"lo\nwor", b"ld\n\nend"]),
        [
            "lease 7 | hello\n",
            "lease 7 | world\n",
            "lease 7 | \n",
            "lease 7 | end\n"
        ]
    );
    // A line that imitates the manager's log, with a carriage return and terminal escapes:
    // it stays one tagged line, its control characters visible.
    assert_eq!(
        relayed(&[b"x\r2026-11-25T00:00:00Z  INFO manager: lease granted\x1b[2K\tok\n"]),
        ["lease 7 | x\\r2026-11-25T00:00:00Z  INFO manager: lease granted\\u{1b}[2K\tok\n"]
    );
    // A line longer than the limit goes in pieces, the later ones tagged as continuations.
    let long = vec![b'a'; OUTPUT_LINE_MAX * 2 + 10];
    let mut input = long.clone();
    input.extend_from_slice(b"\nnext\n");
    let out = relayed(&[&input[..100], &input[100..]]);
    assert_eq!(
        out.len(),
        4,
        "{:?}",
        out.iter().map(String::len).collect::<Vec<_>>()
    );
    assert!(out[0].starts_with("lease 7 | aaa"));
    assert!(out[1].starts_with("lease 7 + aaa"));
    assert_eq!(out[2], format!("lease 7 + {}\n", "a".repeat(10)));
    assert_eq!(out[3], "lease 7 | next\n");
    let total: usize = out[..3]
        .iter()
        .map(|l| l.len() - "lease 7 | \n".len())
        .sum();
    assert_eq!(total, long.len());
    // Not UTF-8: replaced, not passed on.
    assert_eq!(
        relayed(&[b"\xff\xfe ok"]),
        ["lease 7 | \u{fffd}\u{fffd} ok\n"]
    );
    // A line of exactly the limit is one line, however its newline arrives.
    let exact = vec![b'b'; OUTPUT_LINE_MAX];
    let whole = format!("lease 7 | {}\n", "b".repeat(OUTPUT_LINE_MAX));
    assert_eq!(relayed(&[&exact, b"\n"]), std::slice::from_ref(&whole));
    assert_eq!(relayed(&[&[exact.as_slice(), b"\n"].concat()]), [whole]);
    // A character across the cut is not broken: the cut comes before it, at any split.
    let mut wide = vec![b'a'; OUTPUT_LINE_MAX - 1];
    wide.extend_from_slice("\u{e9}\u{1f600}z\n".as_bytes());
    for split in [1, OUTPUT_LINE_MAX - 1, OUTPUT_LINE_MAX, OUTPUT_LINE_MAX + 2] {
        let out = relayed(&[&wide[..split], &wide[split..]]);
        assert_eq!(out.len(), 2, "{split}");
        assert!(!out.concat().contains('\u{fffd}'), "{split}: {:?}", &out[1]);
        assert_eq!(out[1], "lease 7 + \u{e9}\u{1f600}z\n", "{split}");
    }
}
