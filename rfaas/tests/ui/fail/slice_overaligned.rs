// Slices are placed on 8-byte boundaries: elements aligned above 8 are refused, wherever the
// slice would fall (the first parameter's slice would have worked by chance, the second's not).
#[derive(Clone, Copy, rfaas::Payload)]
#[repr(C)]
struct Wide {
    v: u128,
}

#[rfaas::function]
fn first(x: &[u128]) -> u64 {
    x.len() as u64
}

#[rfaas::function]
fn after_a_value(a: u64, x: &[i128]) -> u64 {
    a + x.len() as u64
}

#[rfaas::function]
fn output(out: &mut [Wide]) {
    let _ = out;
}

#[rfaas::function]
fn array(xs: &[[u128; 2]]) {
    let _ = xs;
}

fn main() {}
