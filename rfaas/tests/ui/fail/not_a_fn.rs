#[rfaas::function]
struct S;

fn main() {}
