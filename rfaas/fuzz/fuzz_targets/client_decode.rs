//! What a client makes of an executor's answer: every `functions-example` stub's `decode` on an
//! arbitrary status and arbitrary output bytes. It never panics; an error status becomes the
//! matching `CallError` (messages decoded lossily); `Ok` gives the value at offset 0 and the
//! output slices copied from their offsets in the layout (each at the next multiple of 8 after
//! the previous one), or `Malformed` exactly when the output is too short for that layout.
//!
//! Input: byte 0 picks the function; byte 1 the status (10 and above: `Ok`); byte 2 the
//! slices' element count; the rest is the output.

#![no_main]

use functions_example as fx;
use libfuzzer_sys::fuzz_target;
use rfaas::{CallError, Placement, RemoteCall, Status};

/// Decodes `call`'s answer and checks it against the expected layout: `outs` are the byte
/// lengths of the output slices in order, `ret` the size of the return value.
fn check<C: RemoteCall>(
    call: C,
    status: Status,
    output: &[u8],
    ret: usize,
    outs: &[usize],
) -> Option<C::Output> {
    let mut at = ret;
    let mut fits = output.len() >= ret;
    for len in outs {
        let off = at.next_multiple_of(8);
        at = off + len;
        fits &= output.len() >= at;
    }
    let got = call.decode(status, output, &Placement::NONE);
    let msg = String::from_utf8_lossy(output).into_owned();
    match (status, got) {
        (Status::Ok, Ok(v)) => {
            assert!(
                fits,
                "decoded {} bytes of output for a longer layout",
                output.len()
            );
            Some(v)
        }
        (Status::Ok, Err(CallError::Malformed(_))) => {
            assert!(
                !fits,
                "refused a {}-byte output that fits the layout",
                output.len()
            );
            None
        }
        (Status::FunctionError, Err(CallError::Function(m))) => {
            assert_eq!(m, msg);
            None
        }
        (Status::Panic, Err(CallError::Panic(m))) => {
            assert_eq!(m, msg);
            None
        }
        (s, Err(CallError::Rejected(r))) if !s.has_message() && s != Status::Ok => {
            assert_eq!(r, s);
            None
        }
        (s, other) => panic!("status {s:?} decoded as {:?}", other.map(|_| ())),
    }
}

/// The output slice at `off` of `output`, as bytes.
fn at(output: &[u8], off: usize, len: usize) -> &[u8] {
    &output[off..off + len]
}

fn u64_at0(output: &[u8]) -> u64 {
    u64::from_ne_bytes(output[..8].try_into().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let [f, s, n, output @ ..] = data else { return };
    let status = Status::ALL
        .get(usize::from(*s))
        .copied()
        .unwrap_or(Status::Ok);
    let n = usize::from(*n % 64);
    let (xs, ys) = (vec![1.0f64; n], vec![2.0f64; n]);
    match f % 8 {
        0 => {
            check(fx::noop::call(), status, output, 0, &[]);
        }
        1 => {
            let mut out = vec![0u8; n];
            if let Some(v) = check(fx::echo::call(&[7; 3], &mut out), status, output, 8, &[n]) {
                assert_eq!(v, u64_at0(output));
                assert_eq!(&out[..], at(output, 8, n));
            }
        }
        2 => {
            let mut out = vec![0.0f64; n];
            if check(
                fx::axpy::call(2.0, &xs, &ys, &mut out),
                status,
                output,
                0,
                &[8 * n],
            )
            .is_some()
            {
                assert_eq!(rfaas::slice_bytes(&out), at(output, 0, 8 * n));
            }
        }
        3 => {
            let mut c = vec![0.0f64; n];
            if check(
                fx::matmul::call(3, &xs, &ys, &mut c),
                status,
                output,
                0,
                &[8 * n],
            )
            .is_some()
            {
                assert_eq!(rfaas::slice_bytes(&c), at(output, 0, 8 * n));
            }
        }
        4 => {
            let options = vec![
                fx::OptionData {
                    spot: 1.0,
                    strike: 1.0,
                    rate: 0.0,
                    volatility: 0.1,
                    time: 1.0,
                    kind: 0
                };
                3
            ];
            let mut prices = vec![0.0f32; n];
            if check(
                fx::black_scholes::call(&options, &mut prices),
                status,
                output,
                0,
                &[4 * n],
            )
            .is_some()
            {
                assert_eq!(rfaas::slice_bytes(&prices), at(output, 0, 4 * n));
            }
        }
        5 => {
            let (mut sin, mut cos) = (vec![0.0f64; n], vec![0.0f64; n]);
            let outs = [8 * n, 8 * n];
            if check(
                fx::sincos::call(&xs, &mut sin, &mut cos),
                status,
                output,
                0,
                &outs,
            )
            .is_some()
            {
                assert_eq!(rfaas::slice_bytes(&sin), at(output, 0, 8 * n));
                assert_eq!(rfaas::slice_bytes(&cos), at(output, 8 * n, 8 * n));
            }
        }
        6 => {
            if let Some(v) = check(fx::parse_decimal::call(b"12"), status, output, 8, &[]) {
                assert_eq!(v, u64_at0(output));
            }
        }
        _ => {
            if let Some(v) = check(fx::fault::call(0, 5), status, output, 8, &[]) {
                assert_eq!(v, u64_at0(output));
            }
        }
    }
});
