#[rfaas::function]
fn f(_x: u8)
where
    u8: Copy,
{
}

fn main() {}
