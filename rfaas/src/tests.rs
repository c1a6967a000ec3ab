//! Unit tests of the wire format, payload helpers and codec.

use crate::codec::{Input, OutputCursor, OutputLayout};
use crate::wire::{SliceDesc, Status, align_up};

#[test]
fn status_round_trips_and_rejects_unknown_numbers() {
    for s in Status::ALL {
        assert_eq!(Status::from_u32(s.as_u32()), Some(s));
    }
    assert_eq!(Status::from_u32(Status::ALL.len() as u32), None);
    assert_eq!(Status::from_u32(u32::MAX), None);
}

#[test]
fn align_up_rounds_and_detects_overflow() {
    for (n, want) in [
        (0, Some(0)),
        (1, Some(8)),
        (8, Some(8)),
        (9, Some(16)),
        (usize::MAX, None),
    ] {
        assert_eq!(align_up(n), want, "align_up({n})");
    }
}

#[repr(C, align(8))]
struct Aligned([u8; 64]);

#[test]
fn input_slices_are_bounds_and_alignment_checked() {
    let buf = Aligned([0; 64]);
    let bytes = &buf.0[..];
    let (_, input) = Input::args::<[u8; 8]>(bytes).map_err(|_| ()).unwrap();
    let cases: [(u32, u32, Option<Status>); 6] = [
        (8, 2, None),                      // fits
        (8, 7, None),                      // exactly to the end
        (8, 8, Some(Status::BadSlice)),    // one past the end
        (0, 1, Some(Status::BadSlice)),    // overlaps the fixed layout
        (12, 1, Some(Status::Misaligned)), // u64 at offset 12
        (8, u32::MAX, Some(Status::BadSlice)),
    ];
    for (off, len, want) in cases {
        let got = input
            .slice::<u64>(SliceDesc::new(off, len))
            .err()
            .map(|f| match f {
                crate::codec::Failure::Status(s) => s,
                other => panic!("unexpected {other:?}"),
            });
        assert_eq!(got, want, "slice at {off} len {len}");
    }
}

#[test]
fn output_slices_cannot_overlap_or_leave_the_buffer() {
    let mut buf = Aligned([0; 64]);
    let mut cur = OutputCursor::new(&mut buf.0[..], 8)
        .map_err(|_| ())
        .unwrap();
    assert!(cur.slice::<u64>(SliceDesc::new(8, 2)).is_ok());
    // Starts inside the previous slice: would alias.
    assert!(cur.slice::<u64>(SliceDesc::new(16, 1)).is_err());
    assert!(cur.slice::<u64>(SliceDesc::new(24, 5)).is_ok());
    assert!(cur.slice::<u64>(SliceDesc::new(64, 1)).is_err());
    assert_eq!(cur.end(), 64);
}

#[test]
fn output_layout_places_slices_on_eight_byte_boundaries() {
    let mut l = OutputLayout::new(4);
    let a = l.slice::<u8>("a", 0, 3).unwrap();
    let b = l.slice::<f64>("b", 0, 2).unwrap();
    assert_eq!((a.offset.get(), a.len.get()), (8, 3));
    assert_eq!((b.offset.get(), b.len.get()), (16, 2));
    assert_eq!(l.end(), 32);
    assert!(l.slice::<u64>("c", 0, usize::MAX / 4).is_err());
}

#[test]
fn output_slices_go_in_place_only_when_all_of_them_can() {
    use crate::codec::Placement;
    // Output area at 0x10000; arena [0x20000, 0x30000).
    let p = Placement {
        base: 0x10000,
        arena: (0x20000, 0x30000),
    };
    let check = |slices: &[(usize, usize)], want: bool| {
        let l = OutputLayout::placed(8, &p, slices);
        assert_eq!(l.in_place(), want, "{slices:x?}");
    };
    check(&[(0x20000, 64)], true);
    check(&[(0x20000, 64), (0x20040, 64)], true);
    check(&[(0x20040, 64), (0x20000, 64)], false); // not increasing
    check(&[(0x20000, 64), (0x5000, 8)], false); // second outside the arena
    check(&[(0x2fff0, 64)], false); // runs past the arena
    check(&[], false);
    assert!(!OutputLayout::placed(8, &Placement::NONE, &[(0x20000, 64)]).in_place());
    // In place, offsets are the buffers' distances from the output area.
    let mut l = OutputLayout::placed(8, &p, &[(0x20000, 64), (0x20040, 16)]);
    let a = l.slice::<u64>("a", 0x20000, 8).unwrap();
    let b = l.slice::<u8>("b", 0x20040, 16).unwrap();
    assert_eq!((a.offset.get(), b.offset.get()), (0x10000, 0x10040));
    assert_eq!(l.end(), 0x10050);
}
