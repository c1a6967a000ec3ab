//! Procedural macros of rfaas: `#[rfaas::function]` and `#[derive(rfaas::Payload)]`.
//!
//! Use them through the `rfaas` crate, which re-exports them at the exact same version.
//! Each entry point is one line calling an `expand` function: parse into a small model, check
//! it (gathering every error), generate. Generated code names only `::rfaas::__private` and
//! its generated items start with `__rfaas_`. On error the user's item is emitted unchanged
//! beside `compile_error!`s so that IDEs keep working.

use proc_macro::TokenStream;

mod errors;
mod function;
mod payload;
mod text;

/// Makes a function remotely invocable; see the `rfaas` crate.
///
/// # Slice parameters
///
/// - `x: &[T]` is an input slice: its elements are copied into the input buffer and the
///   executor borrows them in place.
/// - `y: &mut [T]` is an *output* slice, and it is **write-only**. The caller's slice gives only
///   its length: its contents are not sent, so in a remote call the function starts with
///   unspecified contents in `y` (not the caller's), and must write every element it wants the
///   caller to see. When the call returns `Ok`, the elements the function wrote hold what it
///   wrote and the others hold unspecified values: output slices are copied back whole from the
///   executor's output area, so unwritten elements come back as whatever that area held
///   (with the current executor, bytes left there by earlier invocations of the same
///   session). When every
///   output slice of a call is an `rfaas::Buffer`, the executor writes them in place, and
///   unwritten elements happen to keep the buffer's contents; do not rely on that either. When
///   the call fails (`Err`, panic, rejection), copied output slices are left as they were and
///   in-place buffers may have been partly written. A function that fills only part of an
///   output slice should say how much it wrote (return a count, as
///   `functions_example::echo` does). Called locally, the function is an ordinary Rust
///   function and `y` keeps the caller's contents.
/// - The element type `T` must be a payload aligned to at most 8 bytes: slices are placed on
///   8-byte boundaries of 8-byte aligned buffers, so `&[u128]`, `&mut [i128]` and slices of
///   arrays or structs containing them are refused at compile time. Such types are fine as
///   values and return values, which are copied unaligned.
#[proc_macro_attribute]
pub fn function(attr: TokenStream, item: TokenStream) -> TokenStream {
    function::expand(attr.into(), item.into()).into()
}

/// Derives `rfaas::Payload`; see the `rfaas` crate.
#[proc_macro_derive(Payload)]
pub fn derive_payload(input: TokenStream) -> TokenStream {
    payload::expand(input.into()).into()
}

#[cfg(test)]
mod tests;
