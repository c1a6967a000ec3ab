#[rfaas::function]
extern "C" fn f(_x: u8) {}

fn main() {}
