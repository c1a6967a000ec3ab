#[derive(Clone, Copy, rfaas::Payload)]
#[repr(C)]
struct P {
    a: u8,
    b: u64,
}

fn main() {}
