#[rfaas::function]
fn f((_a, _b): (u8, u8)) {}

fn main() {}
