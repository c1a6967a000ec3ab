use std::fmt;

#[derive(Debug)]
struct Empty;

impl fmt::Display for Empty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("empty input")
    }
}

#[rfaas::function]
fn sum(xs: &[u32]) -> Result<u64, Empty> {
    if xs.is_empty() {
        return Err(Empty);
    }
    Ok(xs.iter().map(|&x| u64::from(x)).sum())
}

fn main() {
    assert_eq!(sum::NAME, "sum");
    assert_eq!(sum::SIGNATURE, "fn sum(xs: &[u32]) -> Result<u64, Empty>");
    let _ = sum::call(&[1, 2, 3]);
}
