#[rfaas::function]
fn f(_x: &mut u64) {}

fn main() {}
