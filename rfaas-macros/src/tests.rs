//! Expansion snapshots of the accepted shapes (regenerate with `UPDATE_EXPECT=1`).

use expect_test::{ExpectFile, expect_file};
use proc_macro2::TokenStream;

#[track_caller]
fn check(attr: &str, item: &str, expected: ExpectFile) {
    let attr: TokenStream = attr.parse().expect("attribute tokens");
    let item: TokenStream = item.parse().expect("item tokens");
    let out = crate::function::expand(attr, item);
    let file: syn::File =
        syn::parse2(out.clone()).unwrap_or_else(|e| panic!("expansion does not parse: {e}\n{out}"));
    expected.assert_eq(&prettyplease::unparse(&file));
}

#[test]
fn no_arguments_unit_return() {
    check(
        "",
        "pub fn noop() {}",
        expect_file!["../snapshots/noop.rs.txt"],
    );
}

#[test]
fn values_and_value_return() {
    check(
        "",
        "fn add(a: u64, b: i32) -> u64 { a + b as u64 }",
        expect_file!["../snapshots/values.rs.txt"],
    );
}

#[test]
fn slices_and_result_unit() {
    check(
        "",
        "pub(crate) fn axpy(a: f64, x: &[f64], y: &[f64], out: &mut [f64]) -> Result<(), String> { Ok(()) }",
        expect_file!["../snapshots/slices.rs.txt"],
    );
}

#[test]
fn struct_slices_and_result_value() {
    check(
        "",
        "pub fn price(options: &[OptionData], prices: &mut [f32]) -> Result<u32, PriceError> { Ok(0) }",
        expect_file!["../snapshots/result_value.rs.txt"],
    );
}

#[test]
fn rejected_shapes_keep_the_item() {
    let out = crate::function::expand(
        TokenStream::new(),
        "async fn f<T>(x: &T) -> impl Sized {}".parse().unwrap(),
    )
    .to_string();
    assert!(out.contains("async fn f"), "user item missing: {out}");
    assert_eq!(
        out.matches("compile_error").count(),
        4,
        "one error per problem expected: {out}"
    );
}

#[test]
fn payload_derive_emits_checks() {
    let out = crate::payload::expand("#[repr(C)] struct P { a: u32, b: f32 }".parse().unwrap())
        .to_string();
    assert!(
        out.contains("unsafe impl :: rfaas :: Payload for P"),
        "{out}"
    );
    assert!(out.contains("has padding bytes"), "{out}");
    let out = crate::payload::expand("struct P { a: u32 }".parse().unwrap()).to_string();
    assert!(
        out.contains("compile_error") && out.contains("repr(C)"),
        "{out}"
    );
}

/// The canonical text of a type, from its source.
#[track_caller]
fn check_text(source: &str, expected: &str) {
    let ty: syn::Type = syn::parse_str(source).unwrap_or_else(|e| panic!("{source}: {e}"));
    assert_eq!(crate::text::canonical(&ty), expected, "text of `{source}`");
}

#[test]
fn type_text_is_canonical() {
    for (sources, expected) in [
        (&["[f64;3]", "[ f64 ; 3 ]", "[f64; 3]"][..], "[f64; 3]"),
        (&["&[u8]", "& [ u8 ]"], "&[u8]"),
        (&["&'a mut [T]", "& 'a mut[T]"], "&'a mut [T]"),
        (&["&&u8", "& &u8", "& & u8"], "&&u8"),
        (&["Result<u32,E>", "Result < u32 , E >"], "Result<u32, E>"),
        (&["Vec<Vec<u8>>", "Vec<Vec<u8> >"], "Vec<Vec<u8>>"),
        (
            &["::std::string::String", ":: std :: string :: String"],
            "::std::string::String",
        ),
        (&["<T as Tr>::X", "< T as Tr > :: X"], "<T as Tr>::X"),
        (&["<Vec<u8> as Tr>::X"], "<Vec<u8> as Tr>::X"),
        (&["[u8;{2+2}]", "[u8; { 2 + 2 }]"], "[u8; { 2 + 2 }]"),
        (&["[u8;N*2]", "[u8; N * 2]"], "[u8; N * 2]"),
        (
            &["[u8;size_of::<u64>()]", "[u8; size_of :: < u64 > ()]"],
            "[u8; size_of::<u64>()]",
        ),
        (
            &["[u8;{\"{}\".len()}]", "[u8; { \"{}\" . len ( ) }]"],
            "[u8; { \"{}\".len() }]",
        ),
        (&["[u8;m!(1+1)]", "[u8; m! ( 1 + 1 )]"], "[u8; m!(1 + 1)]"),
        (
            &["[u8;m!(a;b,c)]", "[u8; m!( a ; b , c )]"],
            "[u8; m!(a; b, c)]",
        ),
        (&["[u8;!0]", "[u8; ! 0]"], "[u8; !0]"),
        (
            &["[u8;{-1i8 as usize}]", "[u8; { - 1i8 as usize }]"],
            "[u8; { -1i8 as usize }]",
        ),
        (
            &["*const*const u8", "* const * const u8"],
            "*const *const u8",
        ),
        (&["fn(u8)->u8", "fn (u8) -> u8"], "fn(u8) -> u8"),
        (
            &["Box<dyn Fn(&u8)->u8+Send>"],
            "Box<dyn Fn(&u8) -> u8 + Send>",
        ),
        (
            &["Foo<'_,Item=u8>", "Foo < '_ , Item = u8 >"],
            "Foo<'_, Item = u8>",
        ),
        (&["Foo<u8,>", "Foo<u8 , >"], "Foo<u8,>"),
        (&["(u8,)", "( u8 , )"], "(u8,)"),
        (&["[u8;0..=3]"], "[u8; 0..=3]"),
    ] {
        for source in sources {
            check_text(source, expected);
        }
    }
}

/// `self::` and `super::` paths mean the same inside the stub module, one level down, and the
/// signature shows them as written.
#[test]
fn paths_relative_to_the_module_are_rebased() {
    let out = crate::function::expand(
        TokenStream::new(),
        "pub fn f(p: super::P, q: self::Q, a: [u8; super::N + self::M], xs: &[super::super::P], t: <super::T as super::Tr>::X, u: [u8; <super::T as self::Tr>::N], v: <super::T>::Y) -> Result<super::R<self::Q>, super::E> { Err(super::E) }"
            .parse()
            .unwrap(),
    )
    .to_string();
    for rebased in [
        "require_payload :: < super :: super :: P >",
        "require_payload :: < super :: Q >",
        "[u8 ; super :: super :: N + super :: M]",
        "require_payload :: < super :: super :: super :: P >",
        "require_payload :: < super :: super :: R < super :: Q > >",
        "require_display :: < super :: super :: E >",
        "require_payload :: < < super :: super :: T as super :: super :: Tr > :: X >",
        "[u8 ; < super :: super :: T as super :: Tr > :: N]",
        "require_payload :: < < super :: super :: T > :: Y >",
    ] {
        assert!(out.contains(rebased), "`{rebased}` missing: {out}");
    }
    assert!(
        out.contains(
            "\"fn f(p: super::P, q: self::Q, a: [u8; super::N + self::M], xs: &[super::super::P], t: <super::T as super::Tr>::X, u: [u8; <super::T as self::Tr>::N], v: <super::T>::Y) -> Result<super::R<self::Q>, super::E>\""
        ),
        "signature not as written: {out}"
    );
}

#[test]
fn payload_repr_items_are_all_read() {
    for item in [
        "#[repr(align(8), C)] struct P { a: u64 }",
        "#[repr(packed(2), C)] struct P { a: u64 }",
        "#[repr(C, align(8))] struct P { a: u64 }",
        "#[repr(packed)] #[repr(C)] struct P { a: u64 }",
        "#[repr(transparent)] struct P { a: u64 }",
    ] {
        let out = crate::payload::expand(item.parse().unwrap()).to_string();
        assert!(
            !out.contains("compile_error") && out.contains("unsafe impl"),
            "{item}: {out}"
        );
    }
    for item in [
        "#[repr(align(8))] struct P { a: u64 }",
        "#[repr(C = 1)] struct P { a: u64 }",
    ] {
        let out = crate::payload::expand(item.parse().unwrap()).to_string();
        assert!(out.contains("compile_error"), "{item} accepted: {out}");
    }
}
