#[derive(Clone, Copy, rfaas::Payload)]
#[repr(C)]
struct P {
    flag: bool,
}

fn main() {}
