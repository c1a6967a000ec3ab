#[rfaas::function(foo)]
fn f() {}

fn main() {}
