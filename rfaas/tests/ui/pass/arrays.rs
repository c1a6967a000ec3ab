#[rfaas::function]
fn transpose(m: [[f32; 2]; 2], rows: &[[u8; 4]]) -> [[f32; 2]; 2] {
    let _ = rows;
    [[m[0][0], m[1][0]], [m[0][1], m[1][1]]]
}

fn main() {
    assert_eq!(transpose::NAME, "transpose");
    assert_eq!(
        transpose::SIGNATURE,
        "fn transpose(m: [[f32; 2]; 2], rows: &[[u8; 4]]) -> [[f32; 2]; 2]"
    );
    let _ = transpose::call([[1.0, 2.0], [3.0, 4.0]], &[[0; 4]]);
}
