#[rfaas::function]
fn f(_s: &str) {}

fn main() {}
