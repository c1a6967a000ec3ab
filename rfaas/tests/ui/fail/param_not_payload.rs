#[rfaas::function]
fn f(_v: Vec<u8>) {}

fn main() {}
