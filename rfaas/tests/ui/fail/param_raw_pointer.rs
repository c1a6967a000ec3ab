#[rfaas::function]
fn f(_p: *const u8) {}

fn main() {}
