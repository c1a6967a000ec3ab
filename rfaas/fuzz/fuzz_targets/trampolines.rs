//! Arbitrary bytes as the input of every `functions-example` trampoline (the generated
//! `__rfaas_trampoline`s, called through the C ABI as an executor calls them), with arbitrary
//! output capacities and buffer placements. Each call must return exactly what the layout
//! rules of `docs/protocol.md` say (the model in `src/lib.rs`): the rejection status with no
//! output and the output buffer untouched, or, for an accepted layout, what a direct call of
//! the function on the decoded arguments produces, byte for byte across the whole output
//! buffer (return value, output slices, or the error or panic message). A panic anywhere but
//! in the functions' own code aborts.
//!
//! Input: byte 0 picks the function; bytes 1-2 the output capacity (0..2047) and the
//! placement flags (bit 3/4 of byte 2: input/output on an odd multiple of 8; bit 5/6:
//! input/output not 8-byte aligned; bit 7: a null `output_len`); byte 3 fills the output
//! buffer; the rest is the input buffer.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rfaas::Status;
use rfaas::abi::FunctionEntry;
use rfaas_fuzz::{Buf, SHAPES, Verdict};
use std::sync::OnceLock;

static LOCAL: OnceLock<Vec<&'static FunctionEntry>> = OnceLock::new();

fuzz_target!(
    init: {
        rfaas_fuzz::install_panic_filter();
        LOCAL.get_or_init(rfaas_fuzz::registered);
    },
    |data: &[u8]| {
        let [b0, b1, b2, fill, rest @ ..] = data else { return };
        let f = *b0 as usize % SHAPES.len();
        let (shape, entry) = (&SHAPES[f], LOCAL.get().unwrap()[f]);
        let cap = (usize::from(*b1) << 3) | usize::from(b2 & 7);
        let skew = |aligned_odd: u8, misaligned: u8| {
            if b2 & misaligned != 0 {
                1 + usize::from(b1 % 7)
            } else if b2 & aligned_odd != 0 {
                8
            } else {
                0
            }
        };
        let mut input = Buf::new(rest.len(), skew(1 << 3, 1 << 5), 0);
        input.bytes_mut().copy_from_slice(rest);
        rfaas_fuzz::defuse(shape.name, input.bytes_mut());
        let mut output = Buf::new(cap, skew(1 << 4, 1 << 6), *fill);
        let before = output.bytes().to_vec();
        let (in_addr, out_addr) = (input.bytes().as_ptr() as usize, output.bytes().as_ptr() as usize);

        if b2 & 0x80 != 0 {
            // SAFETY: live buffers valid for their lengths; a null `output_len` is what is
            // being checked (the trampoline must refuse it without writing).
            let status = rfaas_fuzz::user_code(|| unsafe {
                (entry.trampoline)(
                    input.bytes().as_ptr(),
                    rest.len(),
                    output.bytes_mut().as_mut_ptr(),
                    cap,
                    std::ptr::null_mut(),
                )
            });
            assert_eq!(status, Status::BadCall.as_u32());
            assert_eq!(output.bytes(), &before[..], "output written despite BadCall");
            return;
        }

        let got = rfaas_fuzz::call_trampoline(entry.trampoline, input.bytes(), output.bytes_mut());
        rfaas_fuzz::check_outcome(&got, cap, output.bytes());
        if in_addr % 8 != 0 || out_addr % 8 != 0 {
            assert_eq!((got.status, got.len), (Status::Misaligned.as_u32(), 0));
            assert_eq!(output.bytes(), &before[..]);
            return;
        }
        match rfaas_fuzz::model(shape, input.bytes(), in_addr, out_addr, cap) {
            Verdict::Reject(status) => {
                assert_eq!(
                    (got.status, got.len),
                    (status.as_u32(), 0),
                    "`{}` should refuse with {status:?}",
                    shape.name
                );
                assert_eq!(output.bytes(), &before[..], "output written despite {status:?}");
            }
            Verdict::Run(args) => {
                let mut expected = before.clone();
                let want = rfaas_fuzz::call_direct(shape.name, input.bytes(), &args, &mut expected);
                assert_eq!(
                    (got.status, got.len),
                    (want.status, want.len),
                    "`{}` on {args:?}",
                    shape.name
                );
                rfaas_fuzz::assert_same_output(shape, Some(&args), &expected, output.bytes());
            }
        }
    }
);
