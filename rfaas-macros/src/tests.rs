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
