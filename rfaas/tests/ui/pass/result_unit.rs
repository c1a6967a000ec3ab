#[rfaas::function]
fn scale(factor: f64, xs: &[f64], out: &mut [f64]) -> Result<(), String> {
    for (o, x) in out.iter_mut().zip(xs) {
        *o = factor * x;
    }
    Ok(())
}

fn main() {
    assert_eq!(scale::NAME, "scale");
    assert_eq!(
        scale::SIGNATURE,
        "fn scale(factor: f64, xs: &[f64], out: &mut [f64]) -> Result<(), String>"
    );
    let mut out = [0.0; 2];
    let _ = scale::call(2.0, &[1.0, 2.0], &mut out);
}
