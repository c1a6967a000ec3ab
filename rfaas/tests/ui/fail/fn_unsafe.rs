#[rfaas::function]
unsafe fn f(_x: u8) {}

fn main() {}
