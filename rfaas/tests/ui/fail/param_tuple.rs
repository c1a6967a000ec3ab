#[rfaas::function]
fn f(_x: (u8, u16)) {}

fn main() {}
