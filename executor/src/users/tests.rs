use super::*;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

#[test]
fn ranges_parse_and_bad_ones_are_refused_with_the_reason() {
    assert_eq!(
        "61000-61063".parse::<UidRange>(),
        Ok(UidRange {
            first: 61000,
            last: 61063
        })
    );
    assert_eq!("61000-61063".parse::<UidRange>().unwrap().len(), 64);
    assert_eq!(
        " 70000 ".parse::<UidRange>(),
        Ok(UidRange {
            first: 70000,
            last: 70000
        })
    );
    for (text, says) in [
        ("", "FIRST-LAST"),
        ("61000-", "FIRST-LAST"),
        ("a-b", "FIRST-LAST"),
        ("-5", "FIRST-LAST"),
        ("61063-61000", "above the last"),
        ("0-10", "root"),
        ("0", "root"),
        ("65000-66000", "nobody"),
        ("100000-4294967295", "not a user id"),
        ("100000-200000", "more than 65536"),
    ] {
        let err = text.parse::<UidRange>().expect_err(text);
        assert!(err.contains(says), "{text:?}: {err}");
        assert!(err.contains("executor_uids"), "{text:?}: {err}");
    }
}

#[test]
fn only_a_root_manager_outside_the_range_may_use_it() {
    let range: UidRange = "61000-61063".parse().unwrap();
    assert_eq!(check_manager(range, 0, 0), Ok(()));
    let err = check_manager(range, 1000, 1000).unwrap_err();
    assert!(err.contains("root") && err.contains("1000"), "{err}");
    let err = check_manager(range, 0, 61005).unwrap_err();
    assert!(err.contains("own user (61005)"), "{err}");
}

#[test]
fn accounts_are_known_by_id() {
    assert!(has_account(0), "root has no account here");
    // One of the ids the tests run processes as: no account here.
    assert!(!has_account(64_246));
    let root = accounts_in(UidRange { first: 0, last: 0 });
    assert!(root.iter().any(|a| a.contains("(user 0)")), "{root:?}");
    assert!(
        accounts_in(UidRange {
            first: 64_246,
            last: 64_247
        })
        .is_empty()
    );
}

#[test]
fn this_process_is_found_under_its_user() {
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    let found = processes_of(|u| u == me).expect("/proc");
    assert!(
        found
            .iter()
            .any(|p| p.pid == std::process::id() && p.uid == me),
        "{found:?}"
    );
    assert!(
        !processes_of(|u| u == me.wrapping_add(12_345))
            .expect("/proc")
            .iter()
            .any(|p| p.pid == std::process::id())
    );
}

/// Whether these tests may start processes as the users `first` to `last` and kill them (as
/// root, on ids nobody else uses here); says why not.
fn root_or_skip(first: u32, last: u32) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: starting processes as other users needs root");
        return false;
    }
    let others = others_in(UidRange { first, last });
    if !others.is_empty() {
        eprintln!("skipped: users {first}-{last} are in use here: {others:?}");
        return false;
    }
    true
}

/// `sleep 1000` as user `uid`, in a process group of its own (none of ours to kill it by).
fn sleeper(uid: u32) -> Child {
    Command::new("sleep")
        .arg("1000")
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("sleep as another user")
}

/// Sweeps the users `0` to `1` when dropped: a failed test leaves nothing of them running.
struct Swept(u32, u32);

impl Drop for Swept {
    fn drop(&mut self) {
        for uid in self.0..=self.1 {
            sweep(uid);
        }
    }
}

fn ended(child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A sweep kills every process of its user, wherever it runs, and nothing of another user.
#[test]
fn a_sweep_kills_exactly_its_users_processes() {
    let (a, b) = (64_201, 64_202);
    if !root_or_skip(a, b) {
        return;
    }
    let _swept = Swept(a, b);
    let mut of_a = [sleeper(a), sleeper(a)];
    let mut of_b = sleeper(b);
    assert_eq!(processes_of(|u| u == a).expect("/proc").len(), 2);
    assert!(sweep(a), "user {a}'s processes survived the sweep");
    for c in &mut of_a {
        assert!(ended(c), "a process of user {a} survived");
    }
    assert!(
        of_b.try_wait().expect("wait").is_none(),
        "the sweep of user {a} killed user {b}'s process"
    );
    assert!(sweep(b));
    assert!(ended(&mut of_b));
    // Nobody left: a sweep finds nothing to do.
    assert!(sweep(a));
}

/// A pool hands out each id to one lease at a time, sets aside ids with processes (a real
/// user's, a lease's leftovers) until they have none, and a lease's end kills its processes.
#[test]
fn a_pool_gives_each_lease_a_user_and_kills_its_processes_at_the_end() {
    if !root_or_skip(64_210, 64_211) {
        return;
    }
    let range: UidRange = "64210-64211".parse().unwrap();
    let _swept = Swept(64_210, 64_211);
    // User 64211 runs something before the pool exists: set aside.
    let mut stranger = sleeper(64_211);
    let pool = UserPool::new(range, None).expect("a pool");
    assert_eq!(pool.free(), 2);
    let first = pool.take().expect("a clean id");
    assert_eq!(first.uid(), 64_210);
    let err = pool.take().err().expect("the other id is busy");
    assert!(
        err.contains("no free executor user")
            && err.contains("64211")
            && err.contains("64210-64211"),
        "{err}"
    );
    // What the lease leaves behind goes with it.
    let mut left = sleeper(first.uid());
    drop(first);
    assert!(
        ended(&mut left),
        "a lease's process outlived its user's return"
    );
    assert!(
        stranger.try_wait().expect("wait").is_none(),
        "a set-aside id's process was killed"
    );
    let again = pool.take().expect("the returned id");
    assert_eq!(again.uid(), 64_210);
    // Something that runs as a free id again (a set-user-id file a lease left, run by someone
    // else) is swept when the id is handed out.
    drop(again);
    let mut revenant = sleeper(64_210);
    let again = pool.take().expect("the returned id, swept");
    assert_eq!(again.uid(), 64_210);
    assert!(
        ended(&mut revenant),
        "a free id was handed out with a process running as it"
    );
    // Once the set-aside id has no processes, it is handed out.
    stranger.kill().expect("kill");
    stranger.wait().expect("wait");
    let other = pool.take().expect("the set-aside id, now free");
    assert_eq!(other.uid(), 64_211);
    drop((again, other));
    assert_eq!(pool.free(), 2);
}

/// `/tmp`'s device as `stat` reports it; `None` if it cannot be read.
fn tmp_device() -> Option<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a NUL-terminated path and writable storage for one `stat` (read only on success).
    (unsafe { libc::stat(c"/tmp".as_ptr(), st.as_mut_ptr()) } == 0)
        // SAFETY: stat succeeded, so it filled `st`.
        .then(|| unsafe { st.assume_init() }.st_dev)
}

/// Scratch, entered in a child, puts a file system of its own on `/tmp` there and leaves ours
/// as it was.
#[test]
fn scratch_gives_a_tmp_of_its_own_and_leaves_ours() {
    if let Err(why) = Scratch::available() {
        eprintln!("skipped: no scratch of its own here ({why})");
        return;
    }
    let ours = tmp_device().expect("stat /tmp");
    let scratch = Scratch::new(8);
    // SAFETY: the child runs only system calls (`unshare`, `mount`, `stat`, `_exit`) on memory
    // made before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = match (scratch.enter(), tmp_device()) {
            (Ok(()), Some(dev)) if dev != ours => 0,
            (Ok(()), _) => 1,
            (Err(_), _) => 2,
        };
        // SAFETY: ends the child at once, without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let status = wait_child(pid).expect("wait");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child's /tmp was ours (1) or its scratch failed (2): status {status:#x}"
    );
    assert_eq!(tmp_device(), Some(ours), "our /tmp changed");
}

/// A second pool on one record (a second manager on the same ledger) is refused: it would
/// sweep the first one's running leases.
#[test]
fn a_record_is_one_pools_at_a_time() {
    let dir = std::env::temp_dir().join(format!("rfaas-users-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let record = dir.join("ledger.jsonl.users");
    let range: UidRange = "64230-64231".parse().unwrap();
    let first = UserPool::new(range, Some(record.clone())).expect("the first pool");
    let err = UserPool::new(range, Some(record.clone()))
        .err()
        .expect("a second pool on the record");
    assert!(err.contains("locked"), "{err}");
    drop(first);
    UserPool::new(range, Some(record)).expect("the record's lock is free again");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A record's ids are swept at start only if it is of this boot of the node: after a restart
/// of the node nothing of a lease is left, and the ids may be others' by then.
#[test]
fn only_a_record_of_this_boot_is_swept() {
    if !root_or_skip(64_240, 64_240) {
        return;
    }
    let _swept = Swept(64_240, 64_240);
    let dir = std::env::temp_dir().join(format!("rfaas-users-boot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let record = dir.join("ledger.jsonl.users");
    let range: UidRange = "64240".parse().unwrap();
    let mut left = sleeper(64_240);
    std::fs::write(&record, "boot 00000000-another-boot\n64240\n").expect("record");
    let pool = UserPool::new(range, Some(record.clone())).expect("a pool");
    assert!(
        left.try_wait().expect("wait").is_none(),
        "a record of another boot was swept"
    );
    assert!(
        pool.take().is_err(),
        "an id with a stranger's process was handed out"
    );
    drop(pool);
    std::fs::write(&record, format!("{}\n64240\n", boot_line())).expect("record");
    let pool = UserPool::new(range, Some(record)).expect("a pool");
    assert!(ended(&mut left), "this boot's record was not swept");
    assert_eq!(pool.take().expect("the swept id").uid(), 64_240);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A record's ids that the configured range no longer holds (it shrank between two runs of
/// the manager) are swept at start all the same: they were an earlier manager's leases'.
#[test]
fn recorded_ids_the_range_no_longer_holds_are_swept() {
    if !root_or_skip(64_245, 64_246) {
        return;
    }
    let _swept = Swept(64_245, 64_246);
    let dir = std::env::temp_dir().join(format!("rfaas-users-shrunk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let record = dir.join("ledger.jsonl.users");
    let mut left = sleeper(64_246);
    std::fs::write(&record, format!("{}\n64246\n", boot_line())).expect("record");
    let pool = UserPool::new("64245".parse().unwrap(), Some(record.clone())).expect("a pool");
    assert!(
        ended(&mut left),
        "an id the range no longer holds was not swept"
    );
    assert_eq!(pool.take().expect("the range's id").uid(), 64_245);
    drop(pool);
    let _ = std::fs::remove_dir_all(&dir);
}
