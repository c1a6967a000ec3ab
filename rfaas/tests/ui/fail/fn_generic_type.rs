#[rfaas::function]
fn f<T: Copy>(_x: T) {}

fn main() {}
