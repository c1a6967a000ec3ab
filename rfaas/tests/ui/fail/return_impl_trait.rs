#[rfaas::function]
fn f() -> impl Copy {
    0u8
}

fn main() {}
