#[derive(Clone, Copy, rfaas::Payload)]
#[repr(C)]
struct Call(u32);

#[rfaas::function]
fn f(_c: Call) {}

fn main() {}
