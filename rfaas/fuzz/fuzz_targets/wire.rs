//! The fixed-layout wire types: `InvocationHeader` (24 bytes), `SliceDesc` (8 bytes), status
//! numbers, response immediates and `align_up`. Decoding never panics, accepts exactly the
//! inputs of the right length, reads little-endian fields in declaration order, and what
//! decodes re-encodes to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rfaas::Status;
use rfaas::wire::{
    HEADER_LEN, InvocationHeader, MAX_INVOCATION_ID, SliceDesc, align_up, response_imm,
    split_response_imm,
};
use zerocopy::{FromBytes, IntoBytes};

fn le32(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap())
}

fuzz_target!(|data: &[u8]| {
    // Invocation header: a prefix read, an exact read and a reference all agree.
    match InvocationHeader::read_from_prefix(data) {
        Ok((h, rest)) => {
            assert!(data.len() >= HEADER_LEN);
            assert_eq!(rest.len(), data.len() - HEADER_LEN);
            let fields = [
                h.id.get(),
                h.function.get(),
                h.input_len.get(),
                h.result_offset.get(),
                h.result_cap.get(),
                h.flags.get(),
            ];
            for (i, f) in fields.iter().enumerate() {
                assert_eq!(*f, le32(data, i), "field {i}");
            }
            assert_eq!(h.as_bytes(), &data[..HEADER_LEN]);
            assert_eq!(InvocationHeader::read_from_bytes(h.as_bytes()).unwrap(), h);
            assert_eq!(
                *InvocationHeader::ref_from_bytes(&data[..HEADER_LEN]).unwrap(),
                h
            );
            assert!(InvocationHeader::read_from_bytes(data).is_ok() == (data.len() == HEADER_LEN));
        }
        Err(_) => {
            assert!(data.len() < HEADER_LEN);
            assert!(InvocationHeader::read_from_bytes(data).is_err());
            assert!(InvocationHeader::ref_from_prefix(data).is_err());
        }
    }

    // Slice descriptors.
    match SliceDesc::read_from_prefix(data) {
        Ok((d, _)) => {
            assert_eq!(
                (d.offset.get(), d.len.get()),
                (le32(data, 0), le32(data, 1))
            );
            assert_eq!(d.as_bytes(), &data[..8]);
            assert_eq!(SliceDesc::new(d.offset.get(), d.len.get()), d);
        }
        Err(_) => assert!(data.len() < 8),
    }

    if data.len() < 8 {
        return;
    }
    let (a, b) = (le32(data, 0), le32(data, 1));

    // Status numbers: exactly the table's, each round-tripping.
    match Status::from_u32(a) {
        Some(s) => {
            assert!(a < Status::ALL.len() as u32);
            assert_eq!(s.as_u32(), a);
            assert_eq!(Status::ALL[a as usize], s);
            assert!(!s.describe().is_empty());
            assert_eq!(
                s.has_message(),
                matches!(s, Status::FunctionError | Status::Panic)
            );
        }
        None => assert!(a >= Status::ALL.len() as u32),
    }

    // Response immediates: `id << 8 | status` splits back for every id and status.
    let id = b & MAX_INVOCATION_ID;
    let status = Status::ALL[a as usize % Status::ALL.len()];
    let imm = response_imm(id, status);
    assert_eq!(split_response_imm(imm), (id, status.as_u32()));
    let (rid, rst) = split_response_imm(a);
    assert!(rid <= MAX_INVOCATION_ID && rst <= 0xff);
    assert_eq!((rid << 8) | rst, a);
    if let Some(s) = Status::from_u32(rst) {
        assert_eq!(response_imm(rid, s), a);
    }

    // align_up: the next multiple of 8, or None past the top.
    let n = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
    match align_up(n) {
        Some(m) => assert!(m >= n && m - n < 8 && m % 8 == 0),
        None => assert!(n > usize::MAX - 7),
    }
});
