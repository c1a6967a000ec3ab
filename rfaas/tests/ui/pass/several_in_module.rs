#[rfaas::function]
fn inc(x: u8) -> u8 {
    x.wrapping_add(1)
}

#[rfaas::function]
fn dec(x: u8) -> u8 {
    x.wrapping_sub(1)
}

#[rfaas::function]
fn reset() {}

fn main() {
    assert_eq!(inc::NAME, "inc");
    assert_eq!(dec::NAME, "dec");
    assert_eq!(reset::NAME, "reset");
    assert_ne!(inc::FINGERPRINT, dec::FINGERPRINT);
    let _ = (inc::call(1), dec::call(1), reset::call());
}
