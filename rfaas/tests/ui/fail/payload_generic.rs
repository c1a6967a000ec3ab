#[derive(Clone, Copy, rfaas::Payload)]
#[repr(C)]
struct P<T> {
    x: T,
}

fn main() {}
