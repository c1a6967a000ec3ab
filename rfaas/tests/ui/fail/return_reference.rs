#[rfaas::function]
fn f() -> &'static [u8] {
    &[]
}

fn main() {}
