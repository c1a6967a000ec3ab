//! End-to-end tests: package `functions-example` with the real `cargo xtask package`, load it
//! through the executor library, and call every function through its C ABI.

mod calls;
mod hostile;
mod loader;
mod manager;
mod package;
mod props;
mod registry;
mod shm;
mod tcp;
#[cfg(feature = "verbs")]
mod verbs;
