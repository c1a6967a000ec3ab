#[derive(Clone, Copy, rfaas::Payload)]
#[repr(C)]
union U {
    a: u32,
    b: f32,
}

fn main() {}
