//! trybuild suites for `#[rfaas::function]` and `#[derive(rfaas::Payload)]`: every rejected
//! shape fails with the snapshot in `tests/ui/fail/*.stderr`, every accepted shape compiles
//! and runs. Regenerate snapshots with `TRYBUILD=overwrite cargo test -p rfaas --test it ui`.

#[test]
fn compile_fail() {
    trybuild::TestCases::new().compile_fail("tests/ui/fail/*.rs");
}

#[test]
fn compile_pass() {
    trybuild::TestCases::new().pass("tests/ui/pass/*.rs");
}
