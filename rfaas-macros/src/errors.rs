//! Gathers every error of one expansion so they are reported together.

use proc_macro2::TokenStream;

/// A growing list of spanned errors.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn at(&mut self, tokens: impl quote::ToTokens, msg: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, msg));
    }

    /// `Ok` when nothing was reported, else the `compile_error!` tokens.
    pub(crate) fn finish(self) -> Result<(), TokenStream> {
        match self.0 {
            None => Ok(()),
            Some(e) => Err(e.to_compile_error()),
        }
    }
}
