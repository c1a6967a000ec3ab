// `align(..)` before `C` is understood, and the padding it adds is refused.
#[derive(Clone, Copy, rfaas::Payload)]
#[repr(align(16), C)]
struct P {
    a: u64,
}

fn main() {}
