//! Property tests of the wire format (`proptest`): fixed-layout types, status numbers and
//! response immediates, the codec's layout rules (client encoding and executor decoding agree;
//! every descriptor is judged exactly by the rules of `docs/protocol.md`), and the JSON control
//! messages (round trips; truncated, oversized and unknown-field frames are errors).

use proptest::prelude::*;
use rfaas::__private::{Encoder, Failure, Input, OutputCursor, OutputLayout};
use rfaas::transport::{MAX_CONTROL_MESSAGE, recv_json, send_json};
use rfaas::wire::*;
use rfaas::{Gather, Payload, Status};
use std::fmt::Debug;
use std::ops::Range;
use zerocopy::{FromBytes, IntoBytes};

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

/// For the cheap rule checks: more cases.
fn many() -> ProptestConfig {
    ProptestConfig::with_cases(2048)
}

// ---------------------------------------------------------------------------------------------
// Fixed-layout types and numbers

fn header() -> impl Strategy<Value = InvocationHeader> {
    any::<[u32; 6]>().prop_map(|f| InvocationHeader {
        id: f[0].into(),
        function: f[1].into(),
        input_len: f[2].into(),
        result_offset: f[3].into(),
        result_cap: f[4].into(),
        flags: f[5].into(),
    })
}

fn status() -> impl Strategy<Value = Status> {
    proptest::sample::select(Status::ALL.to_vec())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn headers_encode_as_six_little_endian_words_and_decode_back(h in header()) {
        let bytes = h.as_bytes();
        prop_assert_eq!(bytes.len(), HEADER_LEN);
        let words = [h.id, h.function, h.input_len, h.result_offset, h.result_cap, h.flags];
        for (i, w) in words.iter().enumerate() {
            prop_assert_eq!(&bytes[4 * i..4 * i + 4], &w.get().to_le_bytes()[..]);
        }
        prop_assert_eq!(InvocationHeader::read_from_bytes(bytes).unwrap(), h);
    }

    #[test]
    fn any_24_bytes_are_a_header_that_re_encodes_to_them(bytes in any::<[u8; 24]>()) {
        let h = InvocationHeader::read_from_bytes(&bytes).unwrap();
        prop_assert_eq!(h.as_bytes(), &bytes[..]);
    }

    #[test]
    fn truncated_or_extended_headers_are_errors(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let exact = InvocationHeader::read_from_bytes(&bytes);
        prop_assert_eq!(exact.is_ok(), bytes.len() == HEADER_LEN);
        let prefix = InvocationHeader::read_from_prefix(&bytes);
        prop_assert_eq!(prefix.is_ok(), bytes.len() >= HEADER_LEN);
        if let Ok((h, rest)) = prefix {
            prop_assert_eq!(h.as_bytes(), &bytes[..HEADER_LEN]);
            prop_assert_eq!(rest, &bytes[HEADER_LEN..]);
        }
    }

    #[test]
    fn slice_descriptors_round_trip(offset: u32, len: u32, extra in 0usize..9) {
        let d = SliceDesc::new(offset, len);
        let mut bytes = d.as_bytes().to_vec();
        prop_assert_eq!(&bytes[..4], &offset.to_le_bytes()[..]);
        prop_assert_eq!(&bytes[4..], &len.to_le_bytes()[..]);
        prop_assert_eq!(SliceDesc::read_from_bytes(&bytes).unwrap(), d);
        bytes.truncate(extra.min(7));
        prop_assert!(SliceDesc::read_from_bytes(&bytes).is_err());
    }

    #[test]
    fn response_immediates_round_trip(id in 0..=MAX_INVOCATION_ID, s in status()) {
        let imm = response_imm(id, s);
        let (rid, raw) = split_response_imm(imm);
        prop_assert_eq!((rid, Status::from_u32(raw)), (id, Some(s)));
    }

    #[test]
    fn every_immediate_splits_into_an_id_and_a_byte(imm: u32) {
        let (id, raw) = split_response_imm(imm);
        prop_assert!(id <= MAX_INVOCATION_ID && raw <= 0xff);
        prop_assert_eq!((id << 8) | raw, imm);
        if let Some(s) = Status::from_u32(raw) {
            prop_assert_eq!(response_imm(id, s), imm);
        }
    }

    #[test]
    fn status_numbers_outside_the_table_are_errors(v: u32) {
        match Status::from_u32(v) {
            Some(s) => {
                prop_assert!(v < Status::ALL.len() as u32);
                prop_assert_eq!(s.as_u32(), v);
            }
            None => prop_assert!(v >= Status::ALL.len() as u32),
        }
    }

    #[test]
    fn align_up_is_the_next_multiple_of_8(n: usize) {
        match align_up(n) {
            Some(m) => prop_assert!(m >= n && m - n < BUFFER_ALIGN && m % BUFFER_ALIGN == 0),
            None => prop_assert!(n > usize::MAX - (BUFFER_ALIGN - 1)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The codec's layout rules

/// An 8-byte-aligned buffer of `len` bytes starting `skew` bytes past a 16-byte boundary.
struct Buf {
    words: Vec<u128>,
    skew: usize,
    len: usize,
}

impl Buf {
    fn new(len: usize, skew: usize) -> Buf {
        Buf {
            words: vec![0; (len + skew).div_ceil(16).max(1)],
            skew,
            len,
        }
    }
    fn bytes(&self) -> &[u8] {
        &rfaas::slice_bytes(&self.words)[self.skew..self.skew + self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        let (s, l) = (self.skew, self.len);
        &mut rfaas::slice_bytes_mut(&mut self.words)[s..s + l]
    }
}

/// A slice argument of one of a few element types, as its bytes.
#[derive(Debug, Clone)]
enum Slice {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    F64(Vec<f64>),
    Triple(Vec<[u8; 3]>),
}

impl Slice {
    fn bytes(&self) -> &[u8] {
        match self {
            Slice::U8(v) => v,
            Slice::U16(v) => rfaas::slice_bytes(v),
            Slice::U32(v) => rfaas::slice_bytes(v),
            Slice::F64(v) => rfaas::slice_bytes(v),
            Slice::Triple(v) => rfaas::slice_bytes(v),
        }
    }
    fn len(&self) -> usize {
        match self {
            Slice::U8(v) => v.len(),
            Slice::U16(v) => v.len(),
            Slice::U32(v) => v.len(),
            Slice::F64(v) => v.len(),
            Slice::Triple(v) => v.len(),
        }
    }
    fn encode<'d>(&'d self, enc: &mut Encoder<'_, 'd>) -> SliceDesc {
        match self {
            Slice::U8(v) => enc.input("s", v),
            Slice::U16(v) => enc.input("s", v),
            Slice::U32(v) => enc.input("s", v),
            Slice::F64(v) => enc.input("s", v),
            Slice::Triple(v) => enc.input("s", v),
        }
        .expect("small input")
    }
    /// Decodes a slice of the same type and returns its bytes.
    fn decode<'i>(&self, input: &Input<'i>, d: SliceDesc) -> Result<&'i [u8], Failure> {
        Ok(match self {
            Slice::U8(_) => input.slice::<u8>(d)?,
            Slice::U16(_) => rfaas::slice_bytes(input.slice::<u16>(d)?),
            Slice::U32(_) => rfaas::slice_bytes(input.slice::<u32>(d)?),
            Slice::F64(_) => rfaas::slice_bytes(input.slice::<f64>(d)?),
            Slice::Triple(_) => rfaas::slice_bytes(input.slice::<[u8; 3]>(d)?),
        })
    }
}

fn slice() -> impl Strategy<Value = Slice> {
    use proptest::collection::vec;
    prop_oneof![
        vec(any::<u8>(), 0..40).prop_map(Slice::U8),
        vec(any::<u16>(), 0..20).prop_map(Slice::U16),
        vec(any::<u32>(), 0..20).prop_map(Slice::U32),
        vec(any::<f64>(), 0..10).prop_map(Slice::F64),
        vec(any::<[u8; 3]>(), 0..10).prop_map(Slice::Triple),
    ]
}

/// Up to 8 slice descriptors in a 64-byte fixed layout.
type Args64 = [u8; 64];

fn status_of<T>(r: Result<T, Failure>) -> Option<Status> {
    match r {
        Ok(_) => None,
        Err(Failure::Status(s)) => Some(s),
        Err(Failure::Function(m)) => panic!("a decoder reported a function error: {m}"),
    }
}

/// What `Input::slice::<T>` must say about `d` in `bytes` after a `fixed`-byte layout.
fn input_rule<T>(bytes: &[u8], fixed: usize, d: SliceDesc) -> Result<Range<usize>, Status> {
    let (off, n) = (d.offset.get() as usize, d.len.get() as usize);
    let end = off + n * size_of::<T>();
    if off < fixed || end > bytes.len() {
        Err(Status::BadSlice)
    } else if !(bytes.as_ptr() as usize + off).is_multiple_of(align_of::<T>()) {
        Err(Status::Misaligned)
    } else {
        Ok(off..end)
    }
}

/// `Input::slice::<T>` on `d` after a 16-byte fixed layout, against [`input_rule`].
fn check_input<T: Payload>(bytes: &[u8], d: SliceDesc) -> Result<(), TestCaseError> {
    let input = match Input::args::<[u8; 16]>(bytes) {
        Ok((_, input)) => input,
        Err(e) => {
            prop_assert!(bytes.len() < 16);
            prop_assert_eq!(status_of(Err::<(), _>(e)), Some(Status::InputTooShort));
            return Ok(());
        }
    };
    match (input.slice::<T>(d), input_rule::<T>(bytes, 16, d)) {
        (Ok(s), Ok(r)) => {
            prop_assert_eq!(s.len(), d.len.get() as usize);
            prop_assert_eq!(rfaas::slice_bytes(s), &bytes[r]);
        }
        (got, want) => prop_assert_eq!(status_of(got), want.err(), "{:?}", d),
    }
    Ok(())
}

/// A descriptor near the interesting places of a buffer of `len` bytes whose elements have
/// `size` bytes: offsets around the fixed layout's end (16), the buffer's end and multiples of
/// 8; counts that end the slice just before, at or just after the buffer's end, or anything.
fn desc(len: usize, size: usize, pick: (u8, u32, u32, i64)) -> SliceDesc {
    let (mode, a, b, delta) = pick;
    let off = match mode % 4 {
        0 => 16 + delta,
        1 => len as i64 + delta,
        2 => i64::from(a % 16) * 8 + delta.signum(),
        _ => i64::from(a),
    }
    .clamp(0, i64::from(u32::MAX)) as usize;
    let count = match (mode / 4) % 3 {
        0 => (len.saturating_sub(off) / size.max(1)) as i64 + delta.signum(),
        1 => i64::from(b % 64),
        _ => i64::from(b),
    }
    .clamp(0, i64::from(u32::MAX)) as u32;
    SliceDesc::new(off as u32, count)
}

fn pick() -> impl Strategy<Value = (u8, u32, u32, i64)> {
    (any::<u8>(), any::<u32>(), any::<u32>(), -2i64..=2)
}

proptest! {
    #![proptest_config(config())]

    /// Whatever a client encodes, an executor decodes to the same bytes: slices on increasing
    /// multiples of 8 after the fixed layout, the input ending with the last one.
    #[test]
    fn encoded_inputs_decode_to_the_same_slices(
        slices in proptest::collection::vec(slice(), 0..8),
        skew in prop_oneof![Just(0usize), Just(8)],
    ) {
        let mut args = [0u8; 64];
        let mut measure = Encoder::new::<Args64>(None).unwrap();
        let want: Vec<SliceDesc> = slices.iter().map(|s| s.encode(&mut measure)).collect();
        let sizes = measure.finish(&args, &OutputLayout::new(0)).unwrap();
        let mut buf = Buf::new(sizes.input_len, skew);
        let mut enc = Encoder::new::<Args64>(Some(buf.bytes_mut())).unwrap();
        let mut end = size_of::<Args64>();
        for (i, s) in slices.iter().enumerate() {
            let d = s.encode(&mut enc);
            prop_assert_eq!(d, want[i]);
            let off = d.offset.get() as usize;
            prop_assert_eq!(off, end.next_multiple_of(8));
            prop_assert_eq!(d.len.get() as usize, s.len());
            end = off + s.bytes().len();
            args[8 * i..8 * i + 8].copy_from_slice(d.as_bytes());
        }
        let encoded = enc.finish(&args, &OutputLayout::new(0)).unwrap();
        prop_assert_eq!(encoded, sizes);
        prop_assert_eq!(encoded.input_len, end);

        let (fixed, input) = Input::args::<Args64>(buf.bytes()).map_err(|_| TestCaseError::fail("args"))?;
        prop_assert_eq!(fixed, args);
        for (i, s) in slices.iter().enumerate() {
            let d = SliceDesc::read_from_bytes(&args[8 * i..8 * i + 8]).unwrap();
            let got = s.decode(&input, d).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(got, s.bytes());
        }
    }

    /// A gathered encoding is the plain one with holes: the first [`Gather::MAX_PIECES`]
    /// slices of at least `min` bytes are left out of the buffer (untouched) and recorded at
    /// their offsets; filling the holes from the pieces gives the plain encoding's bytes.
    #[test]
    fn gathered_encodings_are_the_plain_one_with_holes(
        slices in proptest::collection::vec(slice(), 0..8),
        min in 0usize..40,
    ) {
        let mut args = [0u8; 64];
        let mut plain = {
            let mut measure = Encoder::new::<Args64>(None).unwrap();
            for s in &slices {
                s.encode(&mut measure);
            }
            vec![0xaa_u8; measure.finish(&args, &OutputLayout::new(0)).unwrap().input_len]
        };
        let mut holed = plain.clone();
        let mut enc = Encoder::new::<Args64>(Some(&mut plain)).unwrap();
        for (i, s) in slices.iter().enumerate() {
            args[8 * i..8 * i + 8].copy_from_slice(s.encode(&mut enc).as_bytes());
        }
        let sizes = enc.finish(&args, &OutputLayout::new(0)).unwrap();

        let mut gather = Gather::with_min(min);
        let mut enc = Encoder::gathering::<Args64>(&mut holed, &mut gather).unwrap();
        let mut wanted = Vec::new();
        for (i, s) in slices.iter().enumerate() {
            let d = s.encode(&mut enc);
            prop_assert_eq!(d.as_bytes(), &args[8 * i..8 * i + 8]);
            if s.bytes().len() >= min.max(1) && wanted.len() < Gather::MAX_PIECES {
                wanted.push((d.offset.get() as usize, s.bytes().to_vec()));
            }
        }
        prop_assert_eq!(enc.finish(&args, &OutputLayout::new(0)).unwrap(), sizes);
        let got: Vec<(usize, Vec<u8>)> =
            gather.pieces().iter().map(|(o, b)| (*o, b.to_vec())).collect();
        prop_assert_eq!(&got, &wanted);
        for (at, bytes) in &got {
            let hole = &mut holed[*at..at + bytes.len()];
            prop_assert!(hole.iter().all(|&b| b == 0xaa), "a gathered slice was copied");
            hole.copy_from_slice(bytes);
        }
        prop_assert_eq!(holed, plain);
    }

    /// Output slices laid out by a client are exactly what an executor's cursor hands out, and
    /// one byte less of output makes the last one `OutputTooSmall`.
    #[test]
    fn output_layouts_and_cursors_agree(
        ret in 0usize..24,
        outs in proptest::collection::vec((0usize..3, 0usize..20), 1..6),
    ) {
        let mut layout = OutputLayout::new(ret);
        let descs: Vec<SliceDesc> = outs
            .iter()
            .map(|&(t, n)| match t {
                0 => layout.slice::<u8>("o", 0, n),
                1 => layout.slice::<u32>("o", 0, n),
                _ => layout.slice::<f64>("o", 0, n),
            }.unwrap())
            .collect();
        let end = layout.end();
        for shrink in [0, 1] {
            let Some(cap) = end.checked_sub(shrink) else { continue };
            let mut out = Buf::new(cap, 0);
            let mut cur = match OutputCursor::new(out.bytes_mut(), ret) {
                Ok(c) => c,
                Err(e) => {
                    prop_assert!(cap < ret);
                    prop_assert_eq!(status_of(Err::<(), _>(e)), Some(Status::OutputTooSmall));
                    continue;
                }
            };
            let mut pos = ret;
            for (&(t, n), d) in outs.iter().zip(&descs) {
                let off = d.offset.get() as usize;
                prop_assert_eq!(off, pos.next_multiple_of(8));
                let got = match t {
                    0 => cur.slice::<u8>(*d).map(|s| s.len()),
                    1 => cur.slice::<u32>(*d).map(|s| s.len()),
                    _ => cur.slice::<f64>(*d).map(|s| s.len()),
                };
                if off + [1, 4, 8][t] * n > cap {
                    prop_assert_eq!(status_of(got), Some(Status::OutputTooSmall));
                    break;
                }
                prop_assert_eq!(got.map_err(|e| format!("{e:?}")), Ok(n));
                pos = cur.end();
            }
            if shrink == 0 {
                prop_assert_eq!(cur.end(), end);
            }
        }
    }

}

proptest! {
    #![proptest_config(many())]

    /// Every input descriptor is judged by the rules: after the fixed layout, inside the input,
    /// aligned on its address; then exactly those bytes are borrowed.
    #[test]
    fn input_descriptors_follow_the_rules(
        len in 0usize..96,
        skew in 0usize..16,
        p in pick(),
        ty in 0u8..6,
    ) {
        let mut buf = Buf::new(len, skew);
        for (i, b) in buf.bytes_mut().iter_mut().enumerate() {
            *b = i as u8;
        }
        let bytes = buf.bytes();
        // Element types aligned above 8 cannot be slice elements (refused at compile time);
        // `[u64; 0]` is a zero-sized element that still needs an 8-aligned address.
        let d = desc(len, [1, 4, 8, 3, 2, 0][ty as usize], p);
        match ty {
            0 => check_input::<u8>(bytes, d)?,
            1 => check_input::<u32>(bytes, d)?,
            2 => check_input::<f64>(bytes, d)?,
            3 => check_input::<[u8; 3]>(bytes, d)?,
            4 => check_input::<u16>(bytes, d)?,
            _ => check_input::<[u64; 0]>(bytes, d)?,
        }
    }

    /// Output descriptors: in order, no overlap with the return value or the previous slice,
    /// within the buffer, aligned; a refusal says which rule broke.
    #[test]
    fn output_descriptors_follow_the_rules(
        cap in 0usize..128,
        ret in 0usize..16,
        picks in proptest::collection::vec(pick(), 1..5),
    ) {
        let mut out = Buf::new(cap, 0);
        let base = out.bytes().as_ptr() as usize;
        let Ok(mut cur) = OutputCursor::new(out.bytes_mut(), ret) else {
            prop_assert!(cap < ret);
            return Ok(());
        };
        let mut pos = ret;
        for p in picks {
            let d = desc(cap, 4, p);
            let (off, n) = (d.offset.get() as usize, d.len.get() as usize);
            let end = off + 4 * n;
            let want = if off < pos {
                Some(Status::BadSlice)
            } else if end > cap {
                Some(Status::OutputTooSmall)
            } else if !(base + off).is_multiple_of(4) {
                Some(Status::Misaligned)
            } else {
                None
            };
            let got = cur.slice::<u32>(d);
            if want.is_some() {
                prop_assert_eq!(status_of(got), want);
                break;
            }
            let s = got.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!((s.as_ptr() as usize, s.len()), (base + off, n));
            pos = end;
        }
    }

}

proptest! {
    #![proptest_config(config())]

    /// Each malformed variant of a valid two-slice input is an error with its own status.
    #[test]
    fn malformed_inputs_are_errors(
        a in proptest::collection::vec(any::<f64>(), 1..8),
        b in proptest::collection::vec(any::<u32>(), 1..8),
        variant in 0usize..5,
        cut in 0usize..16,
    ) {
        let layout = |buf| -> (usize, [u8; 16]) {
            let mut enc = Encoder::new::<[u8; 16]>(buf).unwrap();
            let mut args = [0u8; 16];
            args[..8].copy_from_slice(enc.input("a", &a).unwrap().as_bytes());
            args[8..].copy_from_slice(enc.input("b", &b).unwrap().as_bytes());
            (enc.finish(&args, &OutputLayout::new(0)).unwrap().input_len, args)
        };
        let (len, _) = layout(None);
        let mut buf = Buf::new(len, 0);
        let (_, mut args) = layout(Some(buf.bytes_mut()));
        let da = SliceDesc::read_from_bytes(&args[..8]).unwrap();
        let db = SliceDesc::read_from_bytes(&args[8..]).unwrap();
        let mut input_len = len;
        let (which, want) = match variant {
            // Truncated: the last slice no longer fits.
            0 => { input_len = len - 1 - cut.min(len - 17); (1, Status::BadSlice) }
            // Into the fixed layout.
            1 => { args[..8].copy_from_slice(SliceDesc::new(cut.min(15) as u32, da.len.get()).as_bytes()); (0, Status::BadSlice) }
            // Past the end.
            2 => { args[8..].copy_from_slice(SliceDesc::new(db.offset.get(), db.len.get() + 1 + cut as u32).as_bytes()); (1, Status::BadSlice) }
            // Misaligned for f64.
            3 => { args[..8].copy_from_slice(SliceDesc::new(da.offset.get() + 1 + (cut % 7) as u32, 0).as_bytes()); (0, Status::Misaligned) }
            // Overflowing length.
            _ => { args[8..].copy_from_slice(SliceDesc::new(db.offset.get(), u32::MAX).as_bytes()); (1, Status::BadSlice) }
        };
        buf.bytes_mut()[..16].copy_from_slice(&args);
        let bytes = &buf.bytes()[..input_len];
        let (_, input) = Input::args::<[u8; 16]>(bytes).map_err(|_| TestCaseError::fail("args"))?;
        let got = if which == 0 {
            status_of(input.slice::<f64>(SliceDesc::read_from_bytes(&args[..8]).unwrap()))
        } else {
            status_of(input.slice::<u32>(SliceDesc::read_from_bytes(&args[8..]).unwrap()))
        };
        prop_assert_eq!(got, Some(want));
        // And shorter than the fixed layout: `InputTooShort`.
        let short = &buf.bytes()[..cut.min(15)];
        prop_assert_eq!(status_of(Input::args::<[u8; 16]>(short)), Some(Status::InputTooShort));
    }
}

// ---------------------------------------------------------------------------------------------
// Control messages

fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect())
}

fn fabric() -> impl Strategy<Value = Fabric> {
    proptest::sample::select(vec![Fabric::Shm, Fabric::Tcp, Fabric::Auto, Fabric::Verbs])
}

fn node_info() -> impl Strategy<Value = NodeInfo> {
    (text(), text(), any::<u32>(), any::<u64>(), any::<bool>()).prop_map(
        |(id, address, cores, memory_mib, rdma)| NodeInfo {
            id,
            address,
            cores,
            memory_mib,
            rdma,
        },
    )
}

fn welcome() -> impl Strategy<Value = Welcome> {
    let f =
        (any::<u32>(), text(), any::<u64>()).prop_map(|(index, name, fingerprint)| FunctionInfo {
            index,
            name,
            fingerprint,
        });
    (
        any::<[u32; 5]>(),
        proptest::collection::vec(f, 0..4),
        proptest::option::of(text()),
    )
        .prop_map(|(n, functions, data)| Welcome {
            protocol: n[0],
            abi_version: n[1],
            functions,
            workers: n[2],
            slots: n[3],
            slot_size: n[4],
            data,
        })
}

fn lease_request() -> impl Strategy<Value = LeaseRequest> {
    (
        (any::<u32>(), any::<u64>(), any::<i64>(), fabric(), text()),
        (
            any::<Option<u64>>(),
            any::<Option<u32>>(),
            any::<Option<u32>>(),
            any::<Option<u64>>(),
        ),
    )
        .prop_map(
            |((cores, memory_mib, hot, fabric, sha), (plen, slots, slot_size, hb))| LeaseRequest {
                cores,
                memory_mib,
                hot_timeout_us: hot,
                fabric,
                package_sha256: sha,
                package_len: plen,
                slots,
                slot_size,
                heartbeat_ms: hb,
            },
        )
}

fn lease_reply() -> impl Strategy<Value = LeaseReply> {
    prop_oneof![
        (any::<u64>(), text(), fabric(), proptest::option::of(text())).prop_map(
            |(lease_id, endpoint, fabric, token)| LeaseReply::Granted {
                lease_id,
                endpoint,
                fabric,
                token,
            }
        ),
        Just(LeaseReply::NeedPackage),
        text().prop_map(LeaseReply::Refused),
    ]
}

fn registry_request() -> impl Strategy<Value = RegistryRequest> {
    prop_oneof![
        node_info().prop_map(RegistryRequest::Register),
        (
            text(),
            proptest::option::of(text()),
            any::<u32>(),
            any::<u64>()
        )
            .prop_map(|(id, address, free_cores, free_memory_mib)| {
                RegistryRequest::Heartbeat {
                    id,
                    address,
                    free_cores,
                    free_memory_mib,
                }
            }),
        text().prop_map(|id| RegistryRequest::Deregister { id }),
        Just(RegistryRequest::List),
    ]
}

fn registry_response() -> impl Strategy<Value = RegistryResponse> {
    let status = (node_info(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
        |(info, free_cores, free_memory_mib, age_ms)| NodeStatus {
            info,
            free_cores,
            free_memory_mib,
            age_ms,
        },
    );
    prop_oneof![
        Just(RegistryResponse::Ok),
        proptest::collection::vec(status, 0..3).prop_map(RegistryResponse::Nodes),
        text().prop_map(RegistryResponse::Error),
    ]
}

/// A message goes through a frame and comes back equal; every proper prefix of the frame is an
/// error; so is the frame with an unknown field added (objects) or a length above the limit.
fn check_message<T>(v: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + Debug,
{
    let mut frame = Vec::new();
    send_json(&mut frame, v).unwrap();
    prop_assert_eq!(
        u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize,
        frame.len() - 4
    );
    let back: T = recv_json(&mut &frame[..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, v);
    for cut in [0, 1, 3, 4, 5, frame.len() / 2, frame.len() - 1] {
        prop_assert!(
            recv_json::<T>(&mut &frame[..cut.min(frame.len() - 1)]).is_err(),
            "prefix {}",
            cut
        );
    }
    let mut big = frame.clone();
    big[..4].copy_from_slice(&(MAX_CONTROL_MESSAGE as u32 + 1).to_le_bytes());
    big.resize(4 + MAX_CONTROL_MESSAGE + 1, b' ');
    prop_assert!(recv_json::<T>(&mut &big[..]).is_err());
    // Unknown fields are refused: at the top of an object, and inside a variant's content.
    let json: serde_json::Value = serde_json::from_slice(&frame[4..]).unwrap();
    if let serde_json::Value::Object(m) = json {
        let mut top = m.clone();
        top.insert("rfaas_unknown".into(), 1.into());
        prop_assert!(
            !accepts::<T>(&top.into()),
            "unknown top-level field accepted"
        );
        if let Some((tag, serde_json::Value::Object(inner))) =
            m.iter().next().filter(|_| m.len() == 1)
        {
            let mut inner = inner.clone();
            inner.insert("rfaas_unknown".into(), 1.into());
            let mut outer = serde_json::Map::new();
            outer.insert(tag.clone(), inner.into());
            prop_assert!(
                !accepts::<T>(&outer.into()),
                "unknown field in `{}` accepted",
                tag
            );
        }
    }
    Ok(())
}

/// Whether `recv_json` reads `json` (sent as a frame) as a `T`.
fn accepts<T: serde::de::DeserializeOwned>(json: &serde_json::Value) -> bool {
    let mut f = Vec::new();
    send_json(&mut f, json).unwrap();
    recv_json::<T>(&mut &f[..]).is_ok()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn welcomes_round_trip(v in welcome()) { check_message(&v)?; }

    #[test]
    fn hellos_round_trip(protocol: u32, result_len: u64, token in proptest::option::of(text())) {
        check_message(&Hello { protocol, result_len, token })?;
    }

    #[test]
    fn verdicts_and_attaches_round_trip(reason in proptest::option::of(text()), token in proptest::option::of(text())) {
        check_message(&reason.map_or(Verdict::Accepted, Verdict::Refused))?;
        check_message(&Attach { token })?;
    }

    #[test]
    fn offers_round_trip(regions in proptest::collection::vec(any::<(u32, u64)>(), 0..9), control: bool) {
        check_message(&Offer { regions, control })?;
    }

    #[test]
    fn lease_requests_round_trip(v in lease_request()) { check_message(&v)?; }

    #[test]
    fn lease_replies_round_trip(v in lease_reply()) { check_message(&v)?; }

    #[test]
    fn registry_requests_round_trip(v in registry_request()) { check_message(&v)?; }

    #[test]
    fn registry_responses_round_trip(v in registry_response()) { check_message(&v)?; }

    /// Arbitrary bytes as a frame body never panic and, when accepted, were valid JSON.
    #[test]
    fn arbitrary_bodies_are_errors_or_valid_json(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        if recv_json::<Welcome>(&mut &frame[..]).is_ok() || recv_json::<RegistryRequest>(&mut &frame[..]).is_ok() {
            prop_assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
        }
    }
}
