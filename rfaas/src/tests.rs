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
        by_writes: false,
        room: 0x2000,
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
    // The return value and a message must fit the invocation's own room: a larger return
    // value, or a room smaller than the longest message, keeps the outputs out of place
    // (either would run into other invocations' result areas or other buffers).
    assert!(OutputLayout::placed(0x2000, &p, &[(0x20000, 64)]).in_place());
    assert!(!OutputLayout::placed(0x2001, &p, &[(0x20000, 64)]).in_place());
    let small = Placement {
        room: crate::codec::MAX_MESSAGE - 64,
        ..p
    };
    assert!(!OutputLayout::placed(8, &small, &[(0x20000, 64)]).in_place());
    // Placed by writes, the return value and a message are staged by the executor and sent
    // to the result area: the room does not limit them.
    let by_writes = Placement {
        by_writes: true,
        ..small
    };
    assert!(OutputLayout::placed(8, &by_writes, &[(0x20000, 64)]).in_place());
    // In place, offsets are the buffers' distances from the output area.
    let mut l = OutputLayout::placed(8, &p, &[(0x20000, 64), (0x20040, 16)]);
    let a = l.slice::<u64>("a", 0x20000, 8).unwrap();
    let b = l.slice::<u8>("b", 0x20040, 16).unwrap();
    assert_eq!((a.offset.get(), b.offset.get()), (0x10000, 0x10040));
    assert_eq!(l.end(), 0x10050);
}

#[test]
fn outputs_placed_by_writes_are_laid_out_compactly_and_listed() {
    use crate::codec::{Encoder, Placement};
    use crate::wire::PlacedOutputs;
    // Output area at 0x10000; arena [0x20000, 0x30000); the executor writes by writes.
    let p = Placement {
        base: 0x10000,
        arena: (0x20000, 0x30000),
        by_writes: true,
        room: 0x2000,
    };
    // Two buffers (and an empty slice, which needs no write): in place, but the descriptors
    // are the ordinary compact layout, and the list says where each range goes.
    let slices = [(0x20000, 64), (0x20100, 0), (0x20400, 10)];
    let mut l = OutputLayout::placed(4, &p, &slices);
    assert!(l.in_place());
    let a = l.slice::<u64>("a", 0x20000, 8).unwrap();
    let e = l.slice::<u8>("e", 0x20100, 0).unwrap();
    let b = l.slice::<u8>("b", 0x20400, 10).unwrap();
    assert_eq!(
        (a.offset.get(), e.offset.get(), b.offset.get()),
        (8, 72, 72)
    );
    assert_eq!(l.end(), 82);
    let args = [0u8; 16];
    let measured = Encoder::new::<[u8; 16]>(None)
        .unwrap()
        .finish(&args, &l)
        .unwrap();
    // 16 bytes of arguments, then two ranges of 12 bytes and the count.
    assert_eq!(measured.input_len, 16 + 2 * 12 + 4);
    assert!(measured.in_place);
    let mut buf = vec![0xaa; measured.input_len];
    let encoded = Encoder::new::<[u8; 16]>(Some(&mut buf))
        .unwrap()
        .finish(&args, &l)
        .unwrap();
    assert_eq!(encoded, measured);
    let (rest, list) = PlacedOutputs::split(&buf).unwrap();
    assert_eq!(rest, &[0u8; 16]);
    let got: Vec<_> = list
        .ranges()
        .iter()
        .map(|r| (r.at.get(), r.len.get(), r.dest.get()))
        .collect();
    assert_eq!(got, [(8, 64, 0x10000), (72, 10, 0x10400)]);
    // A buffer too short for the list is refused.
    let mut short = vec![0u8; measured.input_len - 1];
    assert!(
        Encoder::new::<[u8; 16]>(Some(&mut short))
            .unwrap()
            .finish(&args, &l)
            .is_err()
    );
    // More non-empty slices than a list holds: copied, as without a placement.
    let five: Vec<_> = (0..5).map(|i| (0x20000 + i * 0x100, 8)).collect();
    assert!(!OutputLayout::placed(0, &p, &five).in_place());
    assert!(OutputLayout::placed(0, &p, &five[..4]).in_place());
    // Outside the arena: copied, and no list.
    let mut l = OutputLayout::placed(4, &p, &[(0x5000, 8)]);
    assert!(!l.in_place());
    l.slice::<u8>("x", 0x5000, 8).unwrap();
    let plain = Encoder::new::<[u8; 16]>(None)
        .unwrap()
        .finish(&args, &l)
        .unwrap();
    assert_eq!(plain.input_len, 16);
}

#[test]
fn placed_output_lists_from_a_peer_are_checked() {
    use crate::wire::{PlacedOutput, PlacedOutputs};
    use zerocopy::IntoBytes;
    let list = |ranges: &[(u32, u32, u32)], count: u32| {
        let mut v = b"args".to_vec();
        for &(at, len, dest) in ranges {
            let r = PlacedOutput {
                at: at.into(),
                len: len.into(),
                dest: dest.into(),
            };
            v.extend_from_slice(r.as_bytes());
        }
        v.extend_from_slice(&count.to_le_bytes());
        v
    };
    let ok = list(&[(0, 8, 100), (8, 8, 0), (24, 1, 7)], 3);
    let (args, l) = PlacedOutputs::split(&ok).unwrap();
    assert_eq!(args, b"args");
    assert_eq!(l.ranges().len(), 3);
    assert_eq!(l.wire_len(), 40);
    let mut back = vec![0u8; l.wire_len()];
    l.write(&mut back);
    assert_eq!(back, ok[4..]);
    assert_eq!(PlacedOutputs::split(&list(&[], 0)).unwrap().1.ranges(), []);
    for (bytes, why) in [
        (list(&[(0, 8, 0), (4, 8, 0)], 2), "overlapping"),
        (list(&[(8, 8, 0), (0, 8, 0)], 2), "out of order"),
        (list(&[(0, 0, 0)], 1), "empty"),
        (list(&[(u32::MAX, 2, 0), (0, 1, 0)], 2), "wrapping"),
        (list(&[(0, 1, 0); 5], 5), "too many"),
        (list(&[(0, 8, 0)], 2), "count past the input"),
        (list(&[(0, 8, 0)], u32::MAX), "huge count"),
        (vec![1, 0, 0], "no count"),
    ] {
        assert!(PlacedOutputs::split(&bytes).is_err(), "{why} accepted");
    }
}

// ---------------------------------------------------------------------------------------------
// Trampolines, called through the C ABI as an executor calls them

use crate::call::{Placement, RemoteCall};

/// Fills its output with ones; `x` only gives the input a slice.
#[rfaas::function]
fn ones_after(x: &[u16], out: &mut [f64]) -> Result<(), String> {
    let _ = x;
    out.fill(1.0);
    Ok(())
}

/// Takes values aligned to 16 at positions that are not multiples of 16 in the input.
#[rfaas::function]
fn wide_sum(tag: u8, a: u128, b: i128, xs: &[u64]) -> u128 {
    let sum = xs.iter().map(|&x| u128::from(x)).sum::<u128>();
    (a + u128::from(tag) + sum).wrapping_add_signed(b)
}

/// A function without parameters: its input is empty.
#[rfaas::function]
fn forty_two() -> u64 {
    42
}

/// The trampoline of a function registered in this test binary.
fn trampoline_of(name: &str) -> crate::abi::Trampoline {
    crate::abi::registered_functions()
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("`{name}` is not registered"))
        .trampoline
}

/// 8-byte aligned storage for a buffer starting `skew` bytes past a 16-byte boundary.
#[repr(C, align(16))]
struct Slab([u8; 256]);

/// Encodes `call`, places its input `in_skew` bytes past a 16-byte boundary, runs the
/// trampoline with `cap` bytes of output (`out_null`: a null output pointer, for `cap == 0`),
/// and decodes the answer.
fn run_local<C: RemoteCall>(
    call: C,
    in_skew: usize,
    cap: usize,
    out_null: bool,
) -> (Status, Result<C::Output, crate::CallError>) {
    let layout = call.layout(&Placement::NONE).unwrap();
    let mut input = Slab([0; 256]);
    let input = &mut input.0[in_skew..in_skew + layout.input_len];
    call.encode(input, &Placement::NONE).unwrap();
    let mut output = Slab([0xa5; 256]);
    let out_ptr = if out_null {
        core::ptr::null_mut()
    } else {
        output.0.as_mut_ptr()
    };
    let mut len = usize::MAX;
    // SAFETY: `input` and `output` are live, distinct buffers valid for their lengths (or a
    // null output of capacity 0); `len` is a local.
    let raw =
        unsafe { trampoline_of(C::NAME)(input.as_ptr(), input.len(), out_ptr, cap, &mut len) };
    let status = Status::from_u32(raw).expect("a known status");
    assert!(len <= cap);
    (
        status,
        call.decode(status, &output.0[..len], &Placement::NONE),
    )
}

/// Found by the `trampolines` fuzz target (docs/reliability.md): an output buffer of capacity
/// 0 used to be replaced by `&mut []` at address 1, so a zero-length output slice of an element
/// aligned above 1 was refused as `Misaligned`.
#[test]
fn zero_capacity_outputs_hold_zero_length_slices() {
    for out_null in [false, true] {
        for in_skew in [0, 8] {
            let (status, result) = run_local(ones_after::call(&[], &mut []), in_skew, 0, out_null);
            assert_eq!(
                (status, result),
                (Status::Ok, Ok(())),
                "null output: {out_null}"
            );
            let (status, result) =
                run_local(ones_after::call(&[1, 2], &mut []), in_skew, 0, out_null);
            assert_eq!(
                (status, result),
                (Status::Ok, Ok(())),
                "null output: {out_null}"
            );
        }
    }
    // The same call with a non-empty output still needs room for it.
    let mut out = [0.0; 2];
    let (status, _) = run_local(ones_after::call(&[], &mut out), 0, 8, false);
    assert_eq!(status, Status::OutputTooSmall);
    let (status, result) = run_local(ones_after::call(&[], &mut out), 0, 16, false);
    assert_eq!((status, result), (Status::Ok, Ok(())));
    assert_eq!(out, [1.0, 1.0]);
}

/// An empty input keeps the caller's pointer too (or stands for a null one); either way a
/// function without parameters runs.
#[test]
fn empty_inputs_run_functions_without_parameters() {
    let f = trampoline_of(forty_two::NAME);
    let mut out = [0u64; 1];
    for input in [core::ptr::null(), out.as_ptr().cast::<u8>()] {
        let mut len = 0;
        // SAFETY: an empty input (null or a live pointer), a live 8-byte output distinct from
        // it (a zero-length input overlaps nothing), `len` a local.
        let raw = unsafe { f(input, 0, out.as_mut_ptr().cast(), 8, &mut len) };
        assert_eq!(
            (Status::from_u32(raw), len, out[0]),
            (Some(Status::Ok), 8, 42)
        );
        out[0] = 0;
    }
}

/// Values aligned to 16 are copied unaligned: they work wherever they fall in the argument
/// layout and wherever the input starts (an executor's input is at slot + 24).
#[test]
fn values_aligned_above_eight_work_at_any_position() {
    for in_skew in [0, 8] {
        let (status, result) = run_local(
            wide_sum::call(1, u128::MAX / 3, -2, &[5, 6]),
            in_skew,
            64,
            false,
        );
        assert_eq!(status, Status::Ok);
        assert_eq!(result, Ok(1 + u128::MAX / 3 - 2 + 11));
    }
}

/// Slice elements must be aligned to at most 8 (`#[rfaas::function]` asserts it at compile
/// time; `tests/ui/fail/slice_overaligned.rs`).
#[test]
fn slice_elements_are_aligned_to_at_most_eight() {
    use crate::codec::slice_element_fits;
    assert!(slice_element_fits::<u8>() && slice_element_fits::<f64>());
    assert!(slice_element_fits::<[u64; 0]>() && slice_element_fits::<[u32; 3]>());
    assert!(!slice_element_fits::<u128>() && !slice_element_fits::<i128>());
    assert!(!slice_element_fits::<[u128; 0]>());
}

/// Fails with a message of `n` bytes (`n` times `é`, two bytes each, halved: a message cut in
/// the middle of a character is cut before it).
#[rfaas::function]
fn long_error(n: u32) -> Result<u64, String> {
    Err("é".repeat(n as usize / 2))
}

/// An error message is cut at `MAX_MESSAGE` bytes whatever room the output has (in place, the
/// room beyond the invocation's own result area is other memory), at a character boundary.
#[test]
fn error_messages_are_cut_at_the_longest_message() {
    use crate::codec::MAX_MESSAGE;
    let n = 3 * MAX_MESSAGE as u32;
    let mut out = vec![0u64; 3 * MAX_MESSAGE / 8 + 8];
    let out = zerocopy::IntoBytes::as_mut_bytes(out.as_mut_slice());
    let mut len = usize::MAX;
    let call = long_error::call(n);
    let layout = call.layout(&Placement::NONE).unwrap();
    let mut input = Slab([0; 256]);
    let input = &mut input.0[..layout.input_len];
    call.encode(input, &Placement::NONE).unwrap();
    // SAFETY: `input` and `out` are live, distinct buffers valid for their lengths; `len` is a
    // local.
    let raw = unsafe {
        trampoline_of("long_error")(
            input.as_ptr(),
            input.len(),
            out.as_mut_ptr(),
            out.len(),
            &mut len,
        )
    };
    assert_eq!(Status::from_u32(raw), Some(Status::FunctionError));
    assert_eq!(len, MAX_MESSAGE);
    assert!(
        out[len..].iter().all(|&b| b == 0),
        "written past the message"
    );
    let msg = std::str::from_utf8(&out[..len]).expect("cut at a character boundary");
    assert_eq!(msg, "é".repeat(MAX_MESSAGE / 2));
    // Within a smaller output, the output bounds it, still at a character boundary.
    let (status, got) = run_local(long_error::call(n), 0, 101, false);
    assert_eq!(status, Status::FunctionError);
    match got {
        Err(crate::CallError::Function(m)) => assert_eq!(m, "é".repeat(50)),
        other => panic!("expected the function's error, got {other:?}"),
    }
}
