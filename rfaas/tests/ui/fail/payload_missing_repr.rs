#[derive(Clone, Copy, rfaas::Payload)]
struct P {
    x: u32,
}

fn main() {}
