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

/// Makes a function remotely invocable; see the `rfaas` crate.
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
