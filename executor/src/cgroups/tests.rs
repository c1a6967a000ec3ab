use super::*;

/// This container's: cgroup v1 controllers, and a cgroup2 mount with none of them.
const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const HYBRID_CGROUP: &str = "\
8:pids:/
6:freezer:/
4:memory:/process_api/c35
3:cpuset:/
1:cpu:/
0::/
";

#[test]
fn v1_controllers_are_found_where_the_process_is() {
    let found = locate(HYBRID_CGROUP, HYBRID_MOUNTS, |_| Some("hugetlb\n".into())).unwrap();
    assert_eq!(
        found,
        vec![
            (
                Role::Memory,
                PathBuf::from("/sys/fs/cgroup/memory/process_api/c35")
            ),
            (Role::Pids, PathBuf::from("/sys/fs/cgroup/pids")),
            (Role::Cpuset, PathBuf::from("/sys/fs/cgroup/cpuset")),
            (Role::Freezer, PathBuf::from("/sys/fs/cgroup/freezer")),
        ]
    );
}

#[test]
fn v2_is_preferred_where_it_has_the_controllers() {
    let mounts = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    let cgroup = "0::/system.slice/rfaas.service\n";
    let found = locate(cgroup, mounts, |dir| {
        assert_eq!(dir, Path::new("/sys/fs/cgroup/system.slice/rfaas.service"));
        Some("cpuset cpu io memory pids\n".into())
    })
    .unwrap();
    assert_eq!(
        found,
        vec![(
            Role::Unified,
            PathBuf::from("/sys/fs/cgroup/system.slice/rfaas.service")
        )]
    );
    // Without cpuset delegated, and no v1 to fall back on: the error names both.
    let err = locate(cgroup, mounts, |_| Some("cpu memory pids".into())).unwrap_err();
    assert!(err.contains("lacks the cpuset controller"), "{err}");
    assert!(
        err.contains("cgroup v1 lacks the memory, pids, cpuset, freezer"),
        "{err}"
    );
}

#[test]
fn a_hierarchy_mounted_from_a_subtree_maps_paths_below_its_root() {
    // A container that sees only its part of the hierarchy, with a space in the mount point.
    let mounts = "\
40 31 0:32 /kubepods/pod1 /sys/fs/cgroup/memory\\040x rw - cgroup cgroup rw,memory
41 31 0:33 /kubepods/pod1 /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
42 31 0:34 /kubepods/pod1 /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
43 31 0:35 /kubepods/pod1 /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
";
    let cgroup = "\
9:memory:/kubepods/pod1/c
8:pids:/kubepods/pod1
7:cpuset:/kubepods/pod10
6:freezer:/kubepods/pod1/../x
";
    let err = locate(cgroup, mounts, |_| None).unwrap_err();
    // pod10 is not below pod1, and `..` is never followed.
    assert!(err.contains("cgroup v1 lacks the cpuset, freezer"), "{err}");
    let cgroup = "9:memory:/kubepods/pod1/c\n8:pids:/kubepods/pod1\n7:cpuset:/kubepods/pod1\n6:freezer:/kubepods/pod1\n";
    let found = locate(cgroup, mounts, |_| None).unwrap();
    assert_eq!(found[0].1, PathBuf::from("/sys/fs/cgroup/memory x/c"));
    assert_eq!(found[1].1, PathBuf::from("/sys/fs/cgroup/pids"));
}

#[test]
fn flat_keyed_files_are_read_by_key() {
    let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 1\n";
    assert_eq!(keyed(events, "oom_kill"), Some(2));
    assert_eq!(keyed(events, "oom"), Some(3));
    assert_eq!(keyed(events, "missing"), None);
    assert_eq!(keyed("populated 0\nfrozen 1\n", "frozen"), Some(1));
}

/// Root, and a hierarchy with the controllers here: else the tests below say why and skip.
fn usable() -> Option<Cgroups> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: cgroups need root here");
        return None;
    }
    match Cgroups::open() {
        Ok(c) => Some(c),
        Err(why) => {
            eprintln!("skipping: {why}");
            None
        }
    }
}

/// Whether process `pid` is gone (or a zombie, dead and waiting for its parent).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
        .unwrap_or(true)
}

#[test]
fn a_lease_cgroup_holds_its_limits_and_its_end_kills_what_left_the_process_group() {
    let Some(cgroups) = usable() else { return };
    let cpu = *rfaas::sys::allowed_cpus().last().expect("a CPU");
    let limits = Limits {
        memory_bytes: 96 << 20,
        tasks: 64,
        cpus: vec![cpu],
    };
    let id = (u64::from(std::process::id()) << 20) | 1;
    let lease = cgroups.create(id, &limits).expect("a lease cgroup");
    assert_eq!(lease.memory_limit(), Some(96 << 20));
    // A shell in the cgroup starts a process in a session of its own (out of its process
    // group), then reports its allowed CPUs and the pid.
    let fds = lease.join_fds();
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!; grep Cpus_allowed_list /proc/self/status",
    ])
    .stdout(std::process::Stdio::piped());
    use std::os::unix::process::CommandExt;
    // SAFETY: `join` only writes to descriptors `lease` keeps open until after the spawn.
    unsafe { cmd.pre_exec(move || join(&fds)) };
    let out = cmd.output().expect("sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let pid: u32 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a pid");
    let allowed = lines.next().unwrap_or_default();
    assert_eq!(
        allowed.split_whitespace().last(),
        Some(cpu.to_string().as_str()),
        "the cgroup's processes may run on {allowed}, not only CPU {cpu}"
    );
    let of = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("its cgroups");
    assert!(
        of.contains(&format!("/rfaas-{}.", std::process::id()))
            && of.contains(&format!("/lease-{id}\n")),
        "the background process is not in the lease's cgroup: {of}"
    );
    assert!(!gone(pid), "the background process ended early");
    let dirs: Vec<PathBuf> = lease.dirs.iter().map(|(_, d)| d.clone()).collect();
    drop(lease);
    assert!(gone(pid), "process {pid} outlived its lease's cgroup");
    for d in dirs {
        assert!(!d.exists(), "{} was not removed", d.display());
    }
}

#[test]
fn a_managers_directory_names_its_pid_and_start_time() {
    let me = std::process::id();
    let name = own_name(me).expect("our name");
    assert!(name.starts_with(&format!("rfaas-{me}.")), "{name}");
    assert_eq!(dead_manager(&name), Some(false));
    assert_eq!(dead_manager(&format!("{name}.manager")), Some(false));
    // Our pid with another start time: a dead manager whose pid we were given.
    let start = start_time(me).expect("start time");
    assert_eq!(
        dead_manager(&format!("rfaas-{me}.{}", start + 1)),
        Some(true)
    );
    assert_eq!(dead_manager("rfaas-999999999.5"), Some(true));
    // Not a manager's.
    assert_eq!(dead_manager("rfaas-12"), None);
    assert_eq!(dead_manager("lease-3"), None);
    assert_eq!(dead_manager("rfaas-x.1"), None);
}
