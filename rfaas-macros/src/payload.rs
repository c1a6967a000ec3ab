//! `#[derive(rfaas::Payload)]`: checks `#[repr(C)]`, field payloads and padding.

use crate::errors::Errors;
use crate::text::canonical;
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields};

/// Entry point of the derive.
pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    match generate(&input) {
        Ok(t) | Err(t) => t,
    }
}

fn generate(input: &DeriveInput) -> Result<TokenStream, TokenStream> {
    let mut errors = Errors::default();
    let ident = &input.ident;
    let mut repr_ok = false;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("repr")) {
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("C") || meta.path.is_ident("transparent") {
                repr_ok = true;
            }
            // Items with arguments (`align(8)`, `packed(2)`): their group is consumed, or the
            // items after it (`#[repr(align(8), C)]`) would not be read.
            if meta.input.peek(syn::token::Paren) {
                let args;
                syn::parenthesized!(args in meta.input);
                args.parse::<TokenStream>()?;
            }
            Ok(())
        });
        if let Err(e) = parsed {
            // A `repr` rustc accepts always parses; this one is malformed (rustc reports it
            // too), and its items cannot be trusted to include `C`.
            errors.push(e);
        }
    }
    if !repr_ok {
        errors.at(
            ident,
            "`rfaas::Payload` needs a fixed layout: add `#[repr(C)]` (or `#[repr(transparent)]`)",
        );
    }
    if !input.generics.params.is_empty() {
        errors.at(
            &input.generics,
            "`rfaas::Payload` cannot be derived for generic types",
        );
    }
    let fields = match &input.data {
        Data::Struct(s) => Some(&s.fields),
        Data::Enum(e) => {
            errors.at(e.enum_token, "`rfaas::Payload` cannot be derived for enums: not every bit pattern is a valid variant; use an integer field");
            None
        }
        Data::Union(u) => {
            errors.at(
                u.union_token,
                "`rfaas::Payload` cannot be derived for unions",
            );
            None
        }
    };
    errors.finish()?;
    let fields: Vec<(String, &syn::Type)> = match fields.expect("checked above") {
        Fields::Named(n) => n
            .named
            .iter()
            .map(|f| (f.ident.as_ref().expect("named").to_string(), &f.ty))
            .collect(),
        Fields::Unnamed(u) => u
            .unnamed
            .iter()
            .enumerate()
            .map(|(i, f)| (i.to_string(), &f.ty))
            .collect(),
        Fields::Unit => Vec::new(),
    };
    let p = quote!(::rfaas::__private);
    let name = ident.to_string();
    let checks = fields
        .iter()
        .map(|(_, ty)| quote_spanned! {ty.span()=> #p::require_payload::<#ty>(); });
    let sizes = fields.iter().map(|(_, ty)| quote!(#p::size_of::<#ty>()));
    let mut shape = quote!(#p::Fingerprint::new().str(#name));
    for (fname, ty) in &fields {
        let text = canonical(ty);
        shape = quote!(#shape.str(#fname).ty(#text, #p::size_of::<#ty>(), ::core::mem::align_of::<#ty>(), <#ty as #p::Payload>::SHAPE));
    }
    let padding_msg = format!(
        "`{name}` has padding bytes, which would leak uninitialized memory onto the wire: reorder its fields or add explicit padding fields"
    );
    let padding_check = quote_spanned! {ident.span()=>
        ::core::assert!(#p::size_of::<#ident>() == 0 #(+ #sizes)*, #padding_msg);
    };
    Ok(quote! {
        const _: () = {
            #(#checks)*
            #padding_check
        };
        // SAFETY: `#[repr(C)]`/`#[repr(transparent)]` (checked by the derive), every field is a
        // `Payload` (checked above) and the size equals the sum of the field sizes, so there is
        // no padding and every bit pattern is valid.
        unsafe impl ::rfaas::Payload for #ident {
            const SHAPE: u64 = #shape.finish();
        }
    })
}
