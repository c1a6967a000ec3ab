#[rfaas::function]
const fn f(_x: u8) {}

fn main() {}
