//! The executor-side decoders of `rfaas::codec` with arbitrary descriptors and element types
//! (every alignment a slice element may have, 1 to 8, and zero-sized arrays; an element aligned
//! above 8 cannot be a slice element, which is refused at compile time): `Input::args` and
//! `Input::slice` must accept exactly the descriptors that lie after the fixed layout, inside
//! the input, on an address aligned for the element, and then borrow exactly those bytes;
//! `OutputCursor` must hand out, in order, exactly the slices that start at or after the
//! previous one's end (or the return value's), end inside the buffer and are aligned, so no two
//! of them overlap.
//!
//! Input: byte 0 the fixed layout size; byte 1 the placements (skews from a 16-byte boundary);
//! byte 2 the output capacity; byte 3 the return value's size; byte 4 the input length; then
//! operations of 9 bytes (kind and element type, then a descriptor) until 64 bytes before the
//! end, and the rest is input content.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rfaas::__private::{Failure, Input, OutputCursor};
use rfaas::Payload;
use rfaas::Status;
use rfaas::wire::SliceDesc;
use rfaas_fuzz::Buf;
use std::ops::Range;

fn status(r: Result<impl Sized, Failure>) -> Option<Status> {
    match r {
        Ok(_) => None,
        Err(Failure::Status(s)) => Some(s),
        Err(Failure::Function(m)) => panic!("a decoder reported a function error: {m}"),
    }
}

/// Decodes one input slice of `T`, checks it against the rules, returns its byte range.
fn input_slice<T: Payload>(
    input: &Input<'_>,
    bytes: &[u8],
    fixed: usize,
    desc: SliceDesc,
) -> Option<Range<usize>> {
    let (off, count) = (desc.offset.get() as usize, desc.len.get() as usize);
    let end = off + count * size_of::<T>();
    let want = if off < fixed || end > bytes.len() {
        Some(Status::BadSlice)
    } else if !(bytes.as_ptr() as usize + off).is_multiple_of(align_of::<T>()) {
        Some(Status::Misaligned)
    } else {
        None
    };
    match input.slice::<T>(desc) {
        Ok(s) => {
            assert_eq!(
                want,
                None,
                "accepted {desc:?} of {}",
                std::any::type_name::<T>()
            );
            assert_eq!(s.len(), count);
            if size_of::<T>() != 0 {
                assert_eq!(s.as_ptr() as usize, bytes.as_ptr() as usize + off);
            }
            assert_eq!(rfaas::slice_bytes(s), &bytes[off..end]);
            Some(off..end)
        }
        Err(e) => {
            assert_eq!(
                status(Err::<(), _>(e)),
                want,
                "{desc:?} of {}",
                std::any::type_name::<T>()
            );
            None
        }
    }
}

/// Takes one output slice of `T` from the cursor, checks it against the rules; `Err` when the
/// cursor refused (a trampoline stops there).
fn output_slice<T: Payload>(
    cur: &mut OutputCursor<'_>,
    base: usize,
    cap: usize,
    pos: &mut usize,
    desc: SliceDesc,
    taken: &mut Vec<(Range<usize>, u8)>,
) -> Result<(), ()> {
    let (off, count) = (desc.offset.get() as usize, desc.len.get() as usize);
    let end = off + count * size_of::<T>();
    let want = if off < *pos {
        Some(Status::BadSlice)
    } else if end > cap {
        Some(Status::OutputTooSmall)
    } else if !(base + off).is_multiple_of(align_of::<T>()) {
        Some(Status::Misaligned)
    } else {
        None
    };
    match cur.slice::<T>(desc) {
        Ok(s) => {
            assert_eq!(
                want,
                None,
                "cursor at {pos} accepted {desc:?} of {}",
                std::any::type_name::<T>()
            );
            assert_eq!(s.len(), count);
            if size_of::<T>() != 0 {
                assert_eq!(s.as_ptr() as usize, base + off);
            }
            assert_eq!(cur.end(), end);
            let mark = (taken.len() % 255) as u8 + 1;
            rfaas::slice_bytes_mut(s).fill(mark);
            taken.push((off..end, mark));
            *pos = end;
            Ok(())
        }
        Err(e) => {
            assert_eq!(
                status(Err::<(), _>(e)),
                want,
                "cursor at {pos}: {desc:?} of {}",
                std::any::type_name::<T>()
            );
            Err(())
        }
    }
}

macro_rules! by_type {
    ($k:expr, $f:ident ($($a:expr),*)) => {
        match $k % 11 {
            0 => $f::<u8>($($a),*),
            1 => $f::<u16>($($a),*),
            2 => $f::<u32>($($a),*),
            3 => $f::<u64>($($a),*),
            4 => $f::<[u32; 3]>($($a),*),
            5 => $f::<f32>($($a),*),
            6 => $f::<f64>($($a),*),
            7 => $f::<[u8; 3]>($($a),*),
            8 => $f::<[u8; 0]>($($a),*),
            9 => $f::<[u16; 3]>($($a),*),
            _ => $f::<[u64; 0]>($($a),*),
        }
    };
}

fn run<const FIXED: usize>(data: &[u8]) {
    let [_, place, cap, ret, in_len, rest @ ..] = data else {
        return;
    };
    let split = rest.len().saturating_sub(64) / 9 * 9;
    let (ops, content) = rest.split_at(split);
    let mut ibuf = Buf::new(usize::from(*in_len), usize::from(place & 15), 0);
    for (b, c) in ibuf.bytes_mut().iter_mut().zip(content.iter().cycle()) {
        *b = *c;
    }
    let (cap, ret) = (usize::from(*cap) * 4, usize::from(*ret) % 64);
    let mut obuf = Buf::new(cap, usize::from(place >> 4), 0);
    let obase = obuf.bytes().as_ptr() as usize;
    let bytes = ibuf.bytes();

    let input = match Input::args::<[u8; FIXED]>(bytes) {
        Ok((args, input)) => {
            assert!(bytes.len() >= FIXED);
            // A copy of the fixed layout (not a reference into the client's memory).
            assert_eq!(&args[..], &bytes[..FIXED]);
            Some(input)
        }
        Err(e) => {
            assert!(bytes.len() < FIXED);
            assert_eq!(status(Err::<(), _>(e)), Some(Status::InputTooShort));
            None
        }
    };
    let mut cursor = match OutputCursor::new(obuf.bytes_mut(), ret) {
        Ok(c) => {
            assert!(cap >= ret);
            assert_eq!(c.end(), ret);
            Some(c)
        }
        Err(e) => {
            assert!(cap < ret);
            assert_eq!(status(Err::<(), _>(e)), Some(Status::OutputTooSmall));
            None
        }
    };
    let mut pos = ret;
    let mut taken = Vec::new();
    for op in ops.chunks_exact(9) {
        let desc = SliceDesc::new(
            u32::from_le_bytes(op[1..5].try_into().unwrap()),
            u32::from_le_bytes(op[5..9].try_into().unwrap()),
        );
        let kind = op[0] >> 4;
        if op[0] & 1 == 0 {
            if let Some(input) = &input {
                by_type!(kind, input_slice(input, bytes, FIXED, desc));
            }
        } else if let Some(cur) = &mut cursor
            && by_type!(
                kind,
                output_slice(cur, obase, cap, &mut pos, desc, &mut taken)
            )
            .is_err()
        {
            // A trampoline stops at the first refusal.
            cursor = None;
        }
    }
    // Every slice handed out is exactly where it was said to be, and none overlapped another.
    let out = obuf.bytes();
    for (r, mark) in &taken {
        assert!(
            out[r.clone()].iter().all(|b| b == mark),
            "output slice {r:?} overwritten"
        );
    }
    let covered: usize = taken.iter().map(|(r, _)| r.len()).sum();
    assert_eq!(out.iter().filter(|&&b| b != 0).count(), covered);
}

fuzz_target!(|data: &[u8]| {
    match data.first().map(|b| b % 6) {
        Some(0) => run::<0>(data),
        Some(1) => run::<8>(data),
        Some(2) => run::<12>(data),
        Some(3) => run::<16>(data),
        Some(4) => run::<24>(data),
        Some(_) => run::<40>(data),
        None => {}
    }
});
