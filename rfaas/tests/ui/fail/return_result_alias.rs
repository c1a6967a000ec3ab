type Result<T> = std::result::Result<T, String>;

#[rfaas::function]
fn f() -> Result<u8> {
    Ok(0)
}

fn main() {}
