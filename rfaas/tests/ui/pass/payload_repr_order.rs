// `repr(C)` is found wherever it stands among the repr items, after items with arguments too;
// the padding check still holds for aligned and packed structs.
#[derive(Clone, Copy, rfaas::Payload)]
#[repr(align(8), C)]
struct Aligned {
    a: u32,
    b: u32,
}

#[derive(Clone, Copy, rfaas::Payload)]
#[repr(packed(1), C)]
struct Packed {
    a: u8,
    b: u32,
}

#[derive(Clone, Copy, rfaas::Payload)]
#[repr(C, align(4))]
struct AfterC(u16, u16);

#[derive(Clone, Copy, rfaas::Payload)]
#[repr(packed)]
#[repr(C)]
struct Split {
    a: u8,
    b: u16,
}

#[rfaas::function]
fn take(a: Aligned, p: Packed, c: AfterC, s: Split) -> u64 {
    let (pb, sb) = (p.b, s.b);
    u64::from(a.a + a.b) + u64::from(pb) + u64::from(c.0) + u64::from(sb)
}

fn main() {
    assert_eq!(size_of::<Packed>(), 5);
    assert_eq!(size_of::<Split>(), 3);
    let _ = take::call(
        Aligned { a: 1, b: 2 },
        Packed { a: 1, b: 2 },
        AfterC(1, 2),
        Split { a: 1, b: 2 },
    );
}
