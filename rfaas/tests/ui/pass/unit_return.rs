#[rfaas::function]
fn noop() {}

#[rfaas::function]
fn explicit_unit(x: u32) -> () {
    let _ = x;
}

fn main() {
    noop();
    assert_eq!(noop::NAME, "noop");
    assert_eq!(noop::SIGNATURE, "fn noop()");
    let _call: noop::Call = noop::call();
    assert_eq!(explicit_unit::SIGNATURE, "fn explicit_unit(x: u32)");
    let _ = explicit_unit::call(1);
}
