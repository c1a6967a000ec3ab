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
