//! `rfaas-test-reaper PROGRAM ARGS...`: runs PROGRAM as a child subreaper, the way init would
//! on a real node, so that a test can kill a manager and then see its orphaned executors
//! reaped (this VM's init leaves orphans as zombies forever).
//!
//! The reaper marks itself `PR_SET_CHILD_SUBREAPER`, forbids core dumps (a test's crashing
//! executor must not leave a `core` file in the working tree), starts PROGRAM with stdout and
//! stderr inherited (and `PR_SET_PDEATHSIG` = SIGKILL, so killing the reaper kills PROGRAM),
//! then reaps every child and orphan until it has none left, and exits 0. It writes nothing.

use std::os::unix::process::CommandExt;

fn fail(msg: &str) -> ! {
    eprintln!("rfaas-test-reaper: {msg}");
    std::process::exit(1);
}

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let Some((program, rest)) = args.split_first() else {
        fail("usage: rfaas-test-reaper PROGRAM ARGS...")
    };
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes plain integers and only changes an
    // attribute of this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) } != 0 {
        fail(&format!(
            "cannot become a subreaper: {}",
            std::io::Error::last_os_error()
        ));
    }
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `no_core` is a valid rlimit that lives across the call; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) } != 0 {
        fail(&format!(
            "cannot forbid core dumps: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    // SAFETY: the closure runs in the forked child before exec and only calls `prctl`, which
    // is async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", program.to_string_lossy())));
    // PROGRAM first: until it ends, its children are its own; then the orphans it left.
    let _ = child.wait();
    loop {
        let mut status = 0;
        // SAFETY: waitpid only writes the exit status into `status`, a live local.
        if unsafe { libc::waitpid(-1, &mut status, 0) } < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                // ECHILD: no orphan left.
                _ => break,
            }
        }
    }
}
