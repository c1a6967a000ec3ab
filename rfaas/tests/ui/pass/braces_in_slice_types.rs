// Braces in a slice element's type (a block as an array length, a string with `{}`) are text,
// not a format string, in the generated alignment check.
#![allow(unused_braces)]

#[rfaas::function]
fn blocks(x: &[[u8; { 2 + 2 }]], y: &mut [[u16; { "{}".len() }]]) {
    let _ = (x, y);
}

fn main() {
    assert_eq!(
        blocks::SIGNATURE,
        "fn blocks(x: &[[u8; { 2 + 2 }]], y: &mut [[u16; { \"{}\".len() }]])"
    );
    let _ = blocks::call(&[[0; 4]], &mut [[0; 2]]);
}
