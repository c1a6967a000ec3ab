#[rfaas::function]
fn f<const N: usize>(_x: [u8; N]) {}

fn main() {}
