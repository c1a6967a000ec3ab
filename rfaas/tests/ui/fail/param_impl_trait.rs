#[rfaas::function]
fn f(_x: impl Copy) {}

fn main() {}
