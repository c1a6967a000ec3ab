#[rfaas::function]
fn f() -> String {
    String::new()
}

fn main() {}
