//! rfaas: typed, microsecond remote function invocations for HPC.
//!
//! Annotate an ordinary function with [`#[rfaas::function]`](macro@function) to make it
//! remotely invocable. The macro keeps the function as it is and adds, next to it, a module of
//! the same name holding the client stub (`axpy::call(..)` builds a typed [`RemoteCall`]), the
//! argument layout, and the C-ABI trampoline that executors run. A crate of such functions
//! built as a `cdylib` is a *function library*; it exports exactly one symbol,
//! `rfaas_manifest` (see [`abi`]).
//!
//! ```
//! #[rfaas::function]
//! pub fn scale(factor: f64, xs: &[f64], out: &mut [f64]) -> Result<(), String> {
//!     if xs.len() != out.len() {
//!         return Err(format!("{} inputs but {} outputs", xs.len(), out.len()));
//!     }
//!     for (o, x) in out.iter_mut().zip(xs) {
//!         *o = factor * x;
//!     }
//!     Ok(())
//! }
//!
//! fn main() {
//!     // Locally it is still an ordinary function.
//!     let mut out = [0.0; 2];
//!     scale(2.0, &[1.0, 2.0], &mut out).unwrap();
//!     assert_eq!(out, [2.0, 4.0]);
//!     // The stub module describes the remote function.
//!     assert_eq!(scale::NAME, "scale");
//! }
//! ```
//!
//! Annotated functions must be module-level items (the stub module names them through
//! `super::`), which is also where a library's exported functions belong.

extern crate self as rfaas;

pub mod abi;
pub mod auth;
pub mod call;
mod codec;
mod fingerprint;
pub mod lease;
pub mod managed;
mod payload;
pub mod registry;
pub mod sys;
pub mod transport;
mod watchdog;
pub mod wire;

pub use auth::Secret;
pub use call::{CallError, EncodeError, Encoded, Gather, Placement, RemoteCall};
pub use fingerprint::Fingerprint;
pub use lease::{Buffer, Error, Invocation, Lease, LeaseOptions};
pub use payload::{
    CastError, Payload, bytes_of, cast_slice, cast_slice_mut, read, slice_bytes, slice_bytes_mut,
};
pub use wire::Status;

/// Makes a function remotely invocable. See the crate documentation and `docs/functions.md`.
///
/// Accepted parameters: payload values (numbers, arrays, `#[derive(Payload)]` structs), input
/// slices `&[T]` and output slices `&mut [T]` of payloads. Accepted returns: nothing, a
/// payload, or `Result<payload or (), E: Display>`.
pub use rfaas_macros::function;

/// Derives [`Payload`] for a `#[repr(C)]` struct whose fields are all payloads and which has
/// no padding (both checked at compile time).
pub use rfaas_macros::Payload;

/// Items used by generated code. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::abi::{FUNCTIONS, FunctionEntry, Trampoline};
    pub use crate::call::{CallError, EncodeError, Encoded, Gather, MAX_TEXT, RemoteCall};
    pub use crate::codec::*;
    pub use crate::fingerprint::Fingerprint;
    pub use crate::lease::{Invocation, Lease};
    pub use crate::payload::Payload;
    pub use crate::wire::{SliceDesc, Status};
    pub use core::mem::size_of;
    pub use core::option::Option::{self, None, Some};
    pub use core::result::Result::{self, Err, Ok};
    pub use linkme;
    pub use zerocopy;
}

#[cfg(test)]
mod tests;
