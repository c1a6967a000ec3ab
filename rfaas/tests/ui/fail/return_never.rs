#[rfaas::function]
fn f() -> ! {
    loop {}
}

fn main() {}
