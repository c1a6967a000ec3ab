#[rfaas::function]
fn f(__rfaas_x: u8) {}

fn main() {}
