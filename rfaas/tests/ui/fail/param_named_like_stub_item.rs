#[allow(non_snake_case)]
#[rfaas::function]
fn f(NAME: u32, SIGNATURE: u8) -> u32 {
    NAME + SIGNATURE as u32
}

fn main() {}
