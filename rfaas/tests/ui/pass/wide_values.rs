// Types aligned above 8 are fine as values and return values: they are copied byte by byte,
// unaligned, wherever they fall in the argument layout. Only slices of them are refused.
use rfaas::RemoteCall;

#[derive(Clone, Copy, rfaas::Payload)]
#[repr(C)]
struct Wide {
    v: u128,
}

#[rfaas::function]
fn widen(tag: u8, a: u128, b: i128, w: Wide, xs: &[u64]) -> Wide {
    let sum = xs.iter().map(|&x| u128::from(x)).sum::<u128>();
    Wide {
        v: u128::from(tag) + a + b as u128 + w.v + sum,
    }
}

fn main() {
    let call = widen::call(1, u128::MAX / 3, -2, Wide { v: 7 }, &[5, 6]);
    let layout = call.layout(&rfaas::Placement::NONE).unwrap();
    assert_eq!(layout.output_len, 16);
    // The layout of `Args`: 1 + 16 + 16 + 16 bytes of values, then a slice descriptor.
    assert_eq!(layout.input_len, 64 + 16);
}
