struct Oops;

#[rfaas::function]
fn f() -> Result<u8, Oops> {
    Err(Oops)
}

fn main() {}
