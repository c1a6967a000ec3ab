//! `#[rfaas::function]`: model, checks and code generation.

use crate::errors::Errors;
use crate::text::canonical;
use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{
    FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, PathSegment, ReturnType, Type,
    Visibility,
};

/// Names the generated stub module defines, which parameters must not shadow.
const RESERVED: [&str; 4] = ["NAME", "SIGNATURE", "FINGERPRINT", "Call"];

/// How a parameter travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A payload value, copied into the fixed argument layout.
    Value,
    /// `&[T]`: input bytes, borrowed in place by the executor.
    InSlice,
    /// `&mut [T]`: output bytes in the output buffer, copied back into the caller's slice
    /// (write-only: the caller's contents are not sent, unwritten elements are unspecified).
    OutSlice,
}

impl Kind {
    fn code(self) -> u64 {
        match self {
            Kind::Value => 1,
            Kind::InSlice => 2,
            Kind::OutSlice => 3,
        }
    }
}

/// A type of the signature: what the generated code names, and what the user wrote.
struct Ty {
    /// The type rebased for use inside the stub module (see [`rebase`]); its tokens keep the
    /// user's spans.
    ty: Type,
    /// The canonical text of the type as written (see [`canonical`]): for `SIGNATURE`,
    /// fingerprints and messages.
    text: String,
}

impl Ty {
    fn new(written: &Type) -> Ty {
        Ty {
            ty: rebase(written),
            text: canonical(written),
        }
    }
}

impl ToTokens for Ty {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        self.ty.to_tokens(tokens);
    }
}

struct Param {
    ident: Ident,
    kind: Kind,
    /// The value type, or the slice's element type.
    ty: Ty,
}

enum Ret {
    Unit,
    Value(Ty),
    Result { ok: Option<Ty>, err: Box<Ty> },
}

struct Model {
    vis: Visibility,
    ident: Ident,
    params: Vec<Param>,
    ret: Ret,
}

/// Entry point: the user's item, plus the generated stub module or the errors.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let err = syn::Error::new(
                e.span(),
                "`#[rfaas::function]` applies to free functions (`fn name(..) -> R { .. }`)",
            );
            let err = err.to_compile_error();
            return quote! { #item #err };
        }
    };
    match parse(attr, &func) {
        Ok(model) => {
            let generated = generate(&model);
            quote! { #func #generated }
        }
        Err(errors) => quote! { #func #errors },
    }
}

fn parse(attr: TokenStream, func: &ItemFn) -> Result<Model, TokenStream> {
    let mut errors = Errors::default();
    let sig = &func.sig;
    if !attr.is_empty() {
        errors.at(&attr, "`#[rfaas::function]` takes no arguments");
    }
    if let Some(t) = &sig.asyncness {
        errors.at(t, "remote functions cannot be `async`: the executor runs them to completion on a leased core, and the client side is already asynchronous");
    }
    if let Some(t) = &sig.unsafety {
        errors.at(
            t,
            "remote functions cannot be `unsafe`: a remote caller cannot uphold a safety contract",
        );
    }
    if let Some(t) = &sig.constness {
        errors.at(t, "remote functions cannot be `const`");
    }
    if let Some(abi) = &sig.abi {
        errors.at(
            abi,
            "remote functions use the Rust ABI; the macro generates the `extern \"C\"` trampoline",
        );
    }
    if !sig.generics.params.is_empty() {
        errors.at(&sig.generics, "remote functions cannot be generic: a library exports one concrete function per name, with a fixed layout");
    }
    if let Some(w) = &sig.generics.where_clause {
        errors.at(w, "remote functions cannot have a `where` clause");
    }
    if let Some(v) = &sig.variadic {
        errors.at(v, "remote functions cannot be variadic");
    }
    let mut params = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => errors.at(r, "methods cannot be remote functions: `self` has no address in another process; use a free function"),
            FnArg::Typed(pt) => {
                let ident = match &*pt.pat {
                    Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => pi.ident.clone(),
                    other => {
                        errors.at(other, "parameters of remote functions must be plain identifiers (`name: Type`)");
                        continue;
                    }
                };
                let text = ident.unraw().to_string();
                if text.starts_with("__rfaas") {
                    errors.at(&ident, "names starting with `__rfaas` are reserved for generated code");
                } else if RESERVED.contains(&text.as_str()) {
                    errors.at(&ident, format!("`{text}` is the name of an item of the generated stub module; rename the parameter"));
                }
                if let Some((kind, ty)) = param_type(&pt.ty, &mut errors) {
                    params.push(Param { ident, kind, ty });
                }
            }
        }
    }
    let ret = match &sig.output {
        ReturnType::Default => Some(Ret::Unit),
        ReturnType::Type(_, ty) => return_type(ty, &mut errors),
    };
    errors.finish()?;
    Ok(Model {
        vis: func.vis.clone(),
        ident: sig.ident.clone(),
        params,
        ret: ret.expect("errors reported above"),
    })
}

fn unparen(ty: &Type) -> &Type {
    match ty {
        Type::Paren(p) => unparen(&p.elem),
        Type::Group(g) => unparen(&g.elem),
        other => other,
    }
}

/// Classifies a parameter type, reporting unsupported shapes.
fn param_type(ty: &Type, errors: &mut Errors) -> Option<(Kind, Ty)> {
    match unparen(ty) {
        Type::Reference(r) => {
            if let Some(lt) = &r.lifetime {
                errors.at(lt, "explicit lifetimes are not supported: slices are borrowed for the duration of the call");
                return None;
            }
            match unparen(&r.elem) {
                Type::Slice(s) => {
                    let elem = value_type(&s.elem, errors, "slice elements")?;
                    let kind = if r.mutability.is_some() {
                        Kind::OutSlice
                    } else {
                        Kind::InSlice
                    };
                    Some((kind, elem))
                }
                Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => {
                    errors.at(ty, "`&str` is not supported: pass UTF-8 as `&[u8]` and validate it in the function");
                    None
                }
                _ if r.mutability.is_some() => {
                    errors.at(ty, "`&mut T` parameters are not supported: return the value, or use an output slice `&mut [T]`");
                    None
                }
                _ => {
                    errors.at(ty, "references to values are not supported: take payload values by value (`T`) or slices (`&[T]`)");
                    None
                }
            }
        }
        _ => Some((Kind::Value, value_type(ty, errors, "parameters")?)),
    }
}

/// Rewrites a type written in the function's module so that it means the same inside the
/// stub module, one level deeper: in every path of it (generic arguments, array lengths and
/// qualified paths included), a leading `self::` becomes `super::` and a leading `super::`
/// gets one more `super::`. Paths inside macro invocations are left as they are.
fn rebase(ty: &Type) -> Type {
    /// Rebases the head of `path`; whether a segment was added in front.
    fn rebase_head(path: &mut syn::Path) -> bool {
        if path.leading_colon.is_none()
            && let Some(first) = path.segments.first_mut()
        {
            let span = first.ident.span();
            if first.ident == "self" {
                first.ident = Ident::new("super", span);
            } else if first.ident == "super" {
                path.segments
                    .insert(0, PathSegment::from(Ident::new("super", span)));
                return true;
            }
        }
        false
    }
    struct Rebase;
    impl Rebase {
        /// A qualified path `<T as Trait>::Item` (or `<T>::Item`): `T` is rebased as a type,
        /// the trait's path (the first `position` segments) at its head, keeping `position`
        /// on the trait's last segment; `<T>::Item` has no module path to rebase.
        fn qualified(&mut self, qself: &mut Option<syn::QSelf>, path: &mut syn::Path) {
            match qself {
                Some(q) => {
                    self.visit_type_mut(&mut q.ty);
                    if q.position > 0 && rebase_head(path) {
                        q.position += 1;
                    }
                    for segment in &mut path.segments {
                        self.visit_path_arguments_mut(&mut segment.arguments);
                    }
                }
                None => self.visit_path_mut(path),
            }
        }
    }
    impl VisitMut for Rebase {
        fn visit_path_mut(&mut self, path: &mut syn::Path) {
            rebase_head(path);
            syn::visit_mut::visit_path_mut(self, path);
        }
        fn visit_type_path_mut(&mut self, tp: &mut syn::TypePath) {
            self.qualified(&mut tp.qself, &mut tp.path);
        }
        fn visit_expr_path_mut(&mut self, ep: &mut syn::ExprPath) {
            for attr in &mut ep.attrs {
                self.visit_attribute_mut(attr);
            }
            self.qualified(&mut ep.qself, &mut ep.path);
        }
    }
    let mut ty = ty.clone();
    Rebase.visit_type_mut(&mut ty);
    ty
}

/// Checks that a type can be a payload value syntactically; rustc checks `Payload` itself.
/// Returns it with its form for use inside the stub module.
fn value_type(ty: &Type, errors: &mut Errors, what: &str) -> Option<Ty> {
    match unparen(ty) {
        Type::Path(p) => {
            if p.qself.is_none() && p.path.segments.len() == 1 && p.path.segments[0].ident == "Call"
            {
                errors.at(ty, "a type named `Call` clashes with the generated stub's `Call`; name it by a path (`crate::..::Call`) or rename it");
                return None;
            }
            if p.path.segments.iter().any(|s| has_lifetime(&s.arguments)) {
                errors.at(
                    ty,
                    "types with lifetimes are not supported in remote functions",
                );
                return None;
            }
            Some(Ty::new(ty))
        }
        Type::Array(a) => {
            value_type(&a.elem, errors, what)?;
            Some(Ty::new(ty))
        }
        Type::ImplTrait(_) => {
            errors.at(ty, format!("`impl Trait` is not supported in {what}: remote functions need one concrete, fixed layout"));
            None
        }
        Type::Reference(_) => {
            errors.at(
                ty,
                format!("references are not supported in {what}: payloads are plain data"),
            );
            None
        }
        Type::Tuple(t) if t.elems.is_empty() => {
            errors.at(ty, format!("`()` is not supported in {what}"));
            None
        }
        Type::Tuple(_) => {
            errors.at(ty, format!("tuples are not supported in {what}: their layout is unspecified; use a `#[repr(C)]` struct deriving `rfaas::Payload`"));
            None
        }
        Type::Ptr(_) => {
            errors.at(ty, format!("raw pointers are not supported in {what}: an address means nothing in another process"));
            None
        }
        Type::Slice(_) => {
            errors.at(
                ty,
                format!(
                    "unsized slices are not supported in {what}; borrow them as `&[T]` parameters"
                ),
            );
            None
        }
        _ => {
            errors.at(ty, format!("this type is not supported in {what}: use a number, an array, or a `#[derive(rfaas::Payload)]` struct"));
            None
        }
    }
}

fn has_lifetime(args: &PathArguments) -> bool {
    match args {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .any(|g| matches!(g, GenericArgument::Lifetime(_))),
        _ => false,
    }
}

fn return_type(ty: &Type, errors: &mut Errors) -> Option<Ret> {
    match unparen(ty) {
        Type::Tuple(t) if t.elems.is_empty() => Some(Ret::Unit),
        Type::Reference(_) => {
            errors.at(ty, "remote functions return by value: a borrowed return (with its lifetime) cannot outlive the call");
            None
        }
        Type::ImplTrait(_) => {
            errors.at(ty, "`impl Trait` return types are not supported: the result needs one concrete, fixed layout");
            None
        }
        Type::Never(_) => {
            errors.at(ty, "remote functions must return: `!` is not supported");
            None
        }
        Type::Path(p)
            if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "Result") =>
        {
            let last = p.path.segments.last().expect("checked non-empty");
            let args: Vec<&Type> = match &last.arguments {
                PathArguments::AngleBracketed(a) => a
                    .args
                    .iter()
                    .filter_map(|g| match g {
                        GenericArgument::Type(t) => Some(t),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            if args.len() != 2 {
                errors.at(ty, "write the result type as `Result<T, E>` with `E: Display`: an alias hides the error type from the macro");
                return None;
            }
            if has_lifetime(&last.arguments) {
                errors.at(ty, "lifetimes in return types are not supported");
                return None;
            }
            let ok = match unparen(args[0]) {
                Type::Tuple(t) if t.elems.is_empty() => None,
                other => Some(value_type(other, errors, "return types")?),
            };
            if let Type::Reference(_) | Type::ImplTrait(_) = unparen(args[1]) {
                errors.at(
                    args[1],
                    "the error type must be an owned type implementing `Display`",
                );
                return None;
            }
            Some(Ret::Result {
                ok,
                err: Box::new(Ty::new(args[1])),
            })
        }
        other => Some(Ret::Value(value_type(other, errors, "return types")?)),
    }
}

fn signature_text(m: &Model) -> String {
    let params: Vec<String> = m
        .params
        .iter()
        .map(|p| {
            let t = &p.ty.text;
            match p.kind {
                Kind::Value => format!("{}: {t}", p.ident),
                Kind::InSlice => format!("{}: &[{t}]", p.ident),
                Kind::OutSlice => format!("{}: &mut [{t}]", p.ident),
            }
        })
        .collect();
    let ret = match &m.ret {
        Ret::Unit => String::new(),
        Ret::Value(t) => format!(" -> {}", t.text),
        Ret::Result { ok, err } => {
            let ok = ok.as_ref().map_or("()", |t| &t.text);
            format!(" -> Result<{ok}, {}>", err.text)
        }
    };
    format!("fn {}({}){ret}", m.ident.unraw(), params.join(", "))
}

/// The visibility, seen from inside the stub module, that matches the function's own: items
/// of the stub are exactly as reachable as the function (so a private return type is fine for
/// a private function).
fn inner_visibility(vis: &Visibility) -> TokenStream {
    match vis {
        Visibility::Public(_) => quote!(pub),
        Visibility::Inherited => quote!(pub(super)),
        Visibility::Restricted(r) => {
            let path = &r.path;
            let first = path.segments.first().map(|s| s.ident.to_string());
            match first.as_deref() {
                Some("crate") if path.segments.len() == 1 => quote!(pub(crate)),
                Some("self") if path.segments.len() == 1 => quote!(pub(super)),
                Some("super") => quote!(pub(in super::#path)),
                Some("self") => {
                    let rest = path.segments.iter().skip(1);
                    quote!(pub(in super #(::#rest)*))
                }
                _ => quote!(pub(in #path)),
            }
        }
    }
}

fn generate(m: &Model) -> TokenStream {
    let p = quote!(::rfaas::__private);
    let name = m.ident.unraw().to_string();
    let fn_ident = &m.ident;
    let vis = &m.vis;
    let inner_vis = inner_visibility(&m.vis);
    let signature = signature_text(m);
    let has_slices = m.params.iter().any(|x| x.kind != Kind::Value);
    let lt = if has_slices {
        quote!(<'__rfaas_a>)
    } else {
        quote!()
    };
    let lt_anon = if has_slices { quote!(<'_>) } else { quote!() };

    // Spanned checks, so that rustc reports a missing `Payload`/`Display` on the user's tokens.
    let mut checks = Vec::new();
    for x in &m.params {
        let ty = &x.ty;
        checks.push(quote_spanned! {ty.span()=> #p::require_payload::<#ty>(); });
        if x.kind != Kind::Value {
            // Slices sit at multiples of 8 in 8-byte aligned buffers: a more aligned element
            // would be aligned or not depending on its position (values are copied unaligned).
            // The message goes through `"{}"`: type text may hold braces (`[u8; { 2 + 2 }]`).
            let msg = format!(
                "`{}` cannot be the element of a slice parameter: it is aligned to more than 8 bytes, and rfaas places slices on 8-byte boundaries; take it by value, or use elements aligned to at most 8 (`[u64; 2]` in place of `u128`, for instance)",
                ty.text
            );
            checks.push(quote_spanned! {ty.span()=>
                ::core::assert!(#p::slice_element_fits::<#ty>(), "{}", #msg);
            });
        }
    }
    let (ret_ty, output_ty) = match &m.ret {
        Ret::Unit => (None, quote!(())),
        Ret::Value(t) => (Some(t), quote!(#t)),
        Ret::Result { ok: Some(t), .. } => (Some(t), quote!(#t)),
        Ret::Result { ok: None, .. } => (None, quote!(())),
    };
    if let Some(t) = ret_ty {
        checks.push(quote_spanned! {t.span()=> #p::require_payload::<#t>(); });
    }
    if let Ret::Result { err, .. } = &m.ret {
        checks.push(quote_spanned! {err.span()=> #p::require_display::<#err>(); });
    }
    let ret_size = match ret_ty {
        Some(t) => quote!(#p::size_of::<#t>()),
        None => quote!(0usize),
    };

    // Fingerprint: name, then each parameter, then the return.
    let mut fp = quote!(#p::Fingerprint::new().str(#name));
    for x in &m.params {
        let (pname, ty, code, text) = (x.ident.to_string(), &x.ty, x.kind.code(), &x.ty.text);
        fp = quote!(#fp.str(#pname).u64(#code).ty(#text, #p::size_of::<#ty>(), ::core::mem::align_of::<#ty>(), <#ty as #p::Payload>::SHAPE));
    }
    fp = match &m.ret {
        Ret::Unit => quote!(#fp.str("->").u64(0)),
        Ret::Value(t) | Ret::Result { ok: Some(t), .. } => {
            let text = &t.text;
            let kind = if matches!(m.ret, Ret::Value(_)) {
                1u64
            } else {
                2u64
            };
            quote!(#fp.str("->").u64(#kind).ty(#text, #p::size_of::<#t>(), ::core::mem::align_of::<#t>(), <#t as #p::Payload>::SHAPE))
        }
        Ret::Result { ok: None, err } => {
            let _ = err;
            quote!(#fp.str("->").u64(3))
        }
    };

    // The fixed argument layout.
    let arg_fields = m.params.iter().map(|x| {
        let (id, ty) = (&x.ident, &x.ty);
        match x.kind {
            Kind::Value => quote!(pub #id: [u8; #p::size_of::<#ty>()]),
            _ => quote!(pub #id: #p::SliceDesc),
        }
    });

    // The typed call.
    let call_fields = m.params.iter().map(|x| {
        let (id, ty) = (&x.ident, &x.ty);
        match x.kind {
            Kind::Value => quote!(pub #id: #ty),
            Kind::InSlice => quote!(pub #id: &'__rfaas_a [#ty]),
            Kind::OutSlice => quote!(pub #id: &'__rfaas_a mut [#ty]),
        }
    });
    let call_params = m
        .params
        .iter()
        .map(|x| {
            let (id, ty) = (&x.ident, &x.ty);
            match x.kind {
                Kind::Value => quote!(#id: #ty),
                Kind::InSlice => quote!(#id: &'__rfaas_a [#ty]),
                Kind::OutSlice => quote!(#id: &'__rfaas_a mut [#ty]),
            }
        })
        .collect::<Vec<_>>();
    let idents: Vec<&Ident> = m.params.iter().map(|x| &x.ident).collect();

    let encode_steps = m.params.iter().map(|x| {
        let (id, ty, s) = (&x.ident, &x.ty, x.ident.to_string());
        match x.kind {
            Kind::Value => quote!(#p::put_value::<#ty>(&mut __rfaas_args.#id, &self.#id);),
            Kind::InSlice => quote!(__rfaas_args.#id = __rfaas_enc.input::<#ty>(#s, self.#id)?;),
            Kind::OutSlice => {
                quote!(__rfaas_args.#id = __rfaas_out.slice::<#ty>(#s, self.#id.as_ptr() as usize, self.#id.len())?;)
            }
        }
    });
    let out_slices: Vec<TokenStream> = m
        .params
        .iter()
        .filter(|x| x.kind == Kind::OutSlice)
        .map(|x| {
            let id = &x.ident;
            quote!((self.#id.as_ptr() as usize, ::core::mem::size_of_val(&*self.#id)))
        })
        .collect();
    let out_layout = if out_slices.is_empty() {
        quote!({ let _ = __rfaas_placement; #p::OutputLayout::new(#ret_size) })
    } else {
        quote!(#p::OutputLayout::placed(#ret_size, __rfaas_placement, &[#(#out_slices),*]))
    };
    let decode_steps = m
        .params
        .iter()
        .filter(|x| x.kind == Kind::OutSlice)
        .map(|x| {
            let (id, ty, s) = (&x.ident, &x.ty, x.ident.to_string());
            quote!(__rfaas_dec.output_into::<#ty>(&mut __rfaas_out, #s, self.#id)?;)
        });
    let decode_value = match ret_ty {
        Some(t) => quote!(__rfaas_dec.value::<#t>()),
        None => quote!(#p::Ok(())),
    };

    // Trampoline locals get generated names: a parameter named like a constant in scope
    // would otherwise be read as a constant pattern.
    let locals: Vec<Ident> = (0..m.params.len())
        .map(|i| format_ident!("__rfaas_p{i}"))
        .collect();
    let unpack = m.params.iter().zip(&locals).map(|(x, local)| {
        let (id, ty) = (&x.ident, &x.ty);
        match x.kind {
            Kind::Value => quote!(let #local: #ty = #p::get_value::<#ty>(&__rfaas_args.#id)?;),
            Kind::InSlice => {
                quote!(let #local: &[#ty] = __rfaas_in.slice::<#ty>(__rfaas_args.#id)?;)
            }
            Kind::OutSlice => {
                quote!(let #local: &mut [#ty] = __rfaas_cur.slice::<#ty>(__rfaas_args.#id)?;)
            }
        }
    });
    let finish = match &m.ret {
        Ret::Unit => quote!({ let () = __rfaas_ret; #p::finish_unit(__rfaas_end) }),
        Ret::Value(t) => quote!(#p::finish_value::<#t>(__rfaas_output, __rfaas_end, __rfaas_ret)),
        Ret::Result { ok: Some(t), err } => {
            quote!(#p::finish_result::<#t, #err>(__rfaas_output, __rfaas_end, __rfaas_ret))
        }
        Ret::Result { ok: None, err } => {
            quote!(#p::finish_result_unit::<#err>(__rfaas_end, __rfaas_ret))
        }
    };
    // Executors refuse to load longer texts; the name is part of the signature, so this
    // bounds it too. Checked where `MAX_TEXT` lives, in `rfaas`.
    let too_long = format!(
        "the signature of `{name}` is {} bytes long, more than an executor loads (`rfaas::call::MAX_TEXT`): shorten its parameter names or type paths (`use` the types)",
        signature.len()
    );
    let text_check = quote_spanned! {fn_ident.span()=>
        const _: () = ::core::assert!(SIGNATURE.len() <= #p::MAX_TEXT, #too_long);
    };
    let stub_doc = format!("Remote stub of [`{name}`](fn@{name}): `{signature}`.");
    let call_doc = format!("A typed invocation of `{name}`, built by [`call`].");

    quote! {
        #[doc = #stub_doc]
        #[allow(non_camel_case_types, non_snake_case, unused_imports, unused_mut, clippy::all)]
        #vis mod #fn_ident {
            use super::*;

            const _: () = { #(#checks)* };

            /// Name of the function in the library manifest.
            #inner_vis const NAME: &str = #name;
            /// The function's Rust signature.
            #inner_vis const SIGNATURE: &str = #signature;
            #text_check
            /// Layout fingerprint: names, kinds, types, sizes, alignments and shapes.
            #inner_vis const FINGERPRINT: u64 = #fp.finish();

            /// The fixed argument layout at the start of the input buffer.
            #[derive(#p::zerocopy::FromBytes, #p::zerocopy::IntoBytes, #p::zerocopy::Immutable, #p::zerocopy::KnownLayout, #p::zerocopy::Unaligned)]
            #[zerocopy(crate = "::rfaas::__private::zerocopy")]
            #[repr(C)]
            #inner_vis struct __rfaas_Args {
                #(#arg_fields,)*
            }

            #[doc = #call_doc]
            #inner_vis struct Call #lt {
                #(#call_fields,)*
            }

            /// Builds a typed invocation with the function's own parameters.
            #inner_vis fn call #lt (#(#call_params),*) -> Call #lt {
                Call { #(#idents),* }
            }

            /// Invokes the function on `lease`: the returned invocation is a future (`.await`)
            /// with a blocking `wait()`.
            #inner_vis fn invoke<'__rfaas_a>(__rfaas_lease: &'__rfaas_a #p::Lease, #(#call_params),*) -> #p::Invocation<'__rfaas_a, Call #lt> {
                __rfaas_lease.invoke(Call { #(#idents),* })
            }

            impl Call #lt_anon {
                fn __rfaas_outputs(&self, __rfaas_placement: &#p::Placement) -> #p::OutputLayout {
                    #out_layout
                }

                fn __rfaas_encode<'__rfaas_s>(&'__rfaas_s self, mut __rfaas_enc: #p::Encoder<'_, '__rfaas_s>, __rfaas_placement: &#p::Placement) -> #p::Result<#p::Encoded, #p::EncodeError> {
                    let mut __rfaas_out = self.__rfaas_outputs(__rfaas_placement);
                    let mut __rfaas_args = <__rfaas_Args as #p::zerocopy::FromZeros>::new_zeroed();
                    #(#encode_steps)*
                    __rfaas_enc.finish(&__rfaas_args, &__rfaas_out)
                }
            }

            // SAFETY: the `RemoteCall` contract. Only the call's `&mut [T]` fields, borrowed for
            // `'__rfaas_a` (longer than the call lives), are ever placed in place, and only when
            // `OutputLayout::placed` finds all of them inside `placement.arena`, in increasing
            // address order, after the return value; their descriptors (or the placed-outputs
            // list) are written from that same layout, and `Encoder::finish` reports the
            // encoding's own `input_len` and the layout's end as `output_len`. `layout` is
            // `encode` without a buffer. `decode` rebuilds the layout from the same placement and,
            // in place, skips the output slices (`Decoder::output_into`) and reads only the
            // return value at the start of `output` (`Decoder::value`) or the error message.
            unsafe impl #p::RemoteCall for Call #lt_anon {
                type Output = #output_ty;
                const NAME: &'static str = NAME;
                const FINGERPRINT: u64 = FINGERPRINT;

                fn layout(&self, __rfaas_placement: &#p::Placement) -> #p::Result<#p::Encoded, #p::EncodeError> {
                    self.__rfaas_encode(#p::Encoder::new::<__rfaas_Args>(#p::None)?, __rfaas_placement)
                }

                fn encode(&self, __rfaas_buf: &mut [u8], __rfaas_placement: &#p::Placement) -> #p::Result<#p::Encoded, #p::EncodeError> {
                    self.__rfaas_encode(#p::Encoder::new::<__rfaas_Args>(#p::Some(__rfaas_buf))?, __rfaas_placement)
                }

                fn encode_gather<'__rfaas_s>(&'__rfaas_s self, __rfaas_buf: &mut [u8], __rfaas_placement: &#p::Placement, __rfaas_gather: &mut #p::Gather<'__rfaas_s>) -> #p::Result<#p::Encoded, #p::EncodeError> {
                    self.__rfaas_encode(#p::Encoder::gathering::<__rfaas_Args>(__rfaas_buf, __rfaas_gather)?, __rfaas_placement)
                }

                fn decode(self, __rfaas_status: #p::Status, __rfaas_output: &[u8], __rfaas_placement: &#p::Placement) -> #p::Result<Self::Output, #p::CallError> {
                    let __rfaas_dec = #p::Decoder::new(__rfaas_status, __rfaas_output)?;
                    let mut __rfaas_out = self.__rfaas_outputs(__rfaas_placement);
                    #(#decode_steps)*
                    #decode_value
                }
            }

            unsafe extern "C" fn __rfaas_trampoline(
                __rfaas_in_ptr: *const u8,
                __rfaas_in_len: usize,
                __rfaas_out_ptr: *mut u8,
                __rfaas_out_cap: usize,
                __rfaas_out_len: *mut usize,
            ) -> u32 {
                // SAFETY: the executor calls trampolines under the `Trampoline` contract, which
                // is exactly what `run_trampoline` requires.
                unsafe {
                    #p::run_trampoline(__rfaas_in_ptr, __rfaas_in_len, __rfaas_out_ptr, __rfaas_out_cap, __rfaas_out_len,
                        |__rfaas_input: &[u8], __rfaas_output: &mut [u8]| -> #p::Result<usize, #p::Failure> {
                            let (__rfaas_args, __rfaas_in) = #p::Input::args::<__rfaas_Args>(__rfaas_input)?;
                            let _ = &__rfaas_in;
                            let mut __rfaas_cur = #p::OutputCursor::new(&mut *__rfaas_output, #ret_size)?;
                            #(#unpack)*
                            let __rfaas_end = __rfaas_cur.end();
                            let __rfaas_ret = super::#fn_ident(#(#locals),*);
                            #finish
                        })
                }
            }

            #[#p::linkme::distributed_slice(#p::FUNCTIONS)]
            #[linkme(crate = #p::linkme)]
            static __RFAAS_ENTRY: #p::FunctionEntry = #p::FunctionEntry {
                name: NAME,
                signature: SIGNATURE,
                fingerprint: FINGERPRINT,
                trampoline: __rfaas_trampoline,
            };
        }
    }
}
