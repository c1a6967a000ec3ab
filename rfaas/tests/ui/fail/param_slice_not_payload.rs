#[rfaas::function]
fn f(_flags: &[bool]) {}

fn main() {}
