//! The rfaas executor side: loading function libraries and packages.
//!
//! User code only ever runs in executor processes, never in the manager. A library is opened
//! with `RTLD_NOW | RTLD_LOCAL`, checked (magic, ABI version, entries, duplicate names), and
//! never unloaded: ending the executor process is the unload.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod library;
pub mod manager;
pub mod package;
pub mod registry;
pub mod worker;

pub use library::{Function, FunctionLibrary, InvokeError, LoadError, Outcome};
pub use package::{Package, PackageError};
