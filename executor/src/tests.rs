//! The process-wide settings of `lib.rs`.

/// After `deny_inspection`, the process is not dumpable. (Checked in a forked child: the
/// setting is the whole process's, and this one runs other tests.)
#[test]
fn an_uninspectable_process_is_not_dumpable() {
    // SAFETY: the child only makes system calls (`prctl`, `_exit`): nothing that could
    // deadlock on a lock another thread of this process held at the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let denied = super::deny_inspection().is_ok();
        // SAFETY: reads the calling process's dumpable flag.
        let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        // SAFETY: ends the child at once, without running the parent's exit handlers.
        unsafe { libc::_exit(if denied && dumpable == 0 { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid place for its status.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child was still dumpable (status {status:#x})"
    );
    // SAFETY: reads this process's dumpable flag.
    let ours = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    assert_eq!(
        ours, 1,
        "a test process is dumpable: the check above proves something"
    );
}
