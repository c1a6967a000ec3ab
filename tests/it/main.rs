//! End-to-end tests: package `functions-example` with the real `cargo xtask package`, load it
//! through the executor library, and call every function through its C ABI.

mod auth;
mod calls;
mod faults;
mod hostile;
mod loader;
mod manager;
mod package;
mod pinning;
mod props;
mod registry;
mod rogue;
mod shm;
mod soak;
mod tcp;
mod vanished;
#[cfg(feature = "verbs")]
mod verbs;
