#[derive(Clone, Copy, rfaas::Payload)]
#[repr(C)]
enum E {
    A,
    B,
}

fn main() {}
