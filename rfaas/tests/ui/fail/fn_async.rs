#[rfaas::function]
async fn f(_x: u8) {}

fn main() {}
