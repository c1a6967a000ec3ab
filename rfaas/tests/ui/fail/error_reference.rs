#[rfaas::function]
fn f() -> Result<u8, &'static str> {
    Err("no")
}

fn main() {}
