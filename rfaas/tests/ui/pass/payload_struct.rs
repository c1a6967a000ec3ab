// Private on purpose: the stub's items are exactly as visible as the function.
#[derive(Clone, Copy, rfaas::Payload)]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
}

#[derive(Clone, Copy, rfaas::Payload)]
#[repr(C)]
struct Pair(u32, [u16; 2]);

#[rfaas::function]
fn norm2(p: Point, ps: &[Point], pair: Pair) -> Point {
    let _ = (ps, pair);
    Point {
        x: p.x * p.x,
        y: p.y * p.y,
    }
}

fn main() {
    assert_eq!(norm2::NAME, "norm2");
    let p = Point { x: 1.0, y: 2.0 };
    let _ = norm2::call(p, &[p], Pair(1, [2, 3]));
}
