#[rfaas::function]
fn f<'a>(_x: &'a [u8]) {}

fn main() {}
