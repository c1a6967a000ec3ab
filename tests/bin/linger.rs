//! `rfaas-test-linger`: a process whose first thread ends while another runs on (for 1000 s),
//! which `/proc` shows as a zombie. Prints `lingering` just before its first thread ends.

use std::io::Write;

fn main() {
    std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(1000)));
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "lingering").and_then(|()| out.flush());
    drop(out);
    // SAFETY: `SYS_exit` ends this thread only (not `exit_group`), and nothing of this thread
    // is used after it: `main` has nothing left to drop, and the other thread holds no
    // reference into this one's stack.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    unreachable!("SYS_exit returned");
}
