//! The rfaas executor side: loading function libraries and packages.
//!
//! User code only ever runs in executor processes, never in the manager. A library is opened
//! with `RTLD_NOW | RTLD_LOCAL`, checked (magic, ABI version, entries, duplicate names), and
//! never unloaded: ending the executor process is the unload.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cgroups;
pub mod conn;
pub mod cpus;
pub mod library;
pub mod manager;
pub mod package;
pub mod registry;
pub mod stop;
pub mod users;
pub mod worker;

pub use library::{Function, FunctionLibrary, InvokeError, LoadError, Outcome};
pub use package::{Package, PackageError};

use std::path::{Path, PathBuf};

/// Where a file is written aside before it is renamed over `path` (so that a reader sees whole
/// records): `path` with `.tmp` appended.
pub fn aside_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Takes the `flock` of the file beside `path` (`path` with `.lock` appended; made 0600, never
/// opened through a symlink), held for as long as the file returned is open. Waits up to
/// `patience` for another holder to let go (a killed process's forked children hold it until
/// their exec). `Err` with the lock file's path and, if it could be opened, `None` for the
/// error: held by another process.
pub fn lock_beside(
    path: &Path,
    patience: std::time::Duration,
) -> Result<std::fs::File, (PathBuf, Option<std::io::Error>)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o600)
        .open(&lock_path)
    {
        Ok(f) => f,
        Err(e) => return Err((lock_path, Some(e))),
    };
    let until = std::time::Instant::now() + patience;
    loop {
        // SAFETY: flock on a descriptor we own; no memory involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        if std::time::Instant::now() >= until {
            return Err((lock_path, None));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Keeps other processes of this user from inspecting this one: marks it not dumpable, so
/// that its `/proc/<pid>/environ` (a session token), `fd/` (the memory files of its sessions),
/// `mem` and `ptrace` are the owner's (root's) alone, not every process of the user, such as
/// the functions of another lease on the node. It also turns off core dumps. Called by the
/// manager, the registry (they hold the cluster's secret) and a lease's executor.
pub fn deny_inspection() -> std::io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes an integer argument and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
