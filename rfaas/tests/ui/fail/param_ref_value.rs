#[rfaas::function]
fn f(_x: &u64) {}

fn main() {}
