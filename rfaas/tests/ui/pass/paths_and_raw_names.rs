mod types {
    #[derive(Clone, Copy, rfaas::Payload)]
    #[repr(C)]
    pub struct Call(pub u32);
}

// `self::` paths mean the function's module, even though the stub lives one level down, and a
// type named `Call` is fine behind a path.
#[rfaas::function]
fn by_path(c: self::types::Call, cs: &[self::types::Call]) -> self::types::Call {
    self::types::Call(c.0 + cs.len() as u32)
}

// Raw identifiers: the manifest name is `type`.
#[rfaas::function]
pub fn r#type(x: u8) -> u8 {
    x
}

fn main() {
    assert_eq!(by_path::NAME, "by_path");
    assert_eq!(r#type::NAME, "type");
    assert_eq!(r#type::SIGNATURE, "fn type(x: u8) -> u8");
    let _ = by_path::call(types::Call(1), &[]);
}
