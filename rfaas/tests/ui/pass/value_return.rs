use rfaas::RemoteCall;

#[rfaas::function]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn main() {
    assert_eq!(add(1, 2), 3);
    assert_eq!(add::NAME, "add");
    assert_eq!(add::SIGNATURE, "fn add(a: u64, b: u64) -> u64");
    let call = add::call(1, 2);
    assert_eq!((call.a, call.b), (1, 2));
    assert_eq!(call.layout(&rfaas::Placement::NONE).unwrap().output_len, 8);
}
