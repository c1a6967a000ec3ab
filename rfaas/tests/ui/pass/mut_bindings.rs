#[rfaas::function]
fn countdown(mut n: u32, mut out: &mut [u32]) -> u32 {
    let mut steps = 0;
    while n > 0 && !out.is_empty() {
        out[0] = n;
        out = &mut out[1..];
        n -= 1;
        steps += 1;
    }
    steps
}

fn main() {
    assert_eq!(countdown::NAME, "countdown");
    let mut out = [0; 3];
    let _ = countdown::call(3, &mut out);
}
