//! Property tests of the codec with the real `functions-example` functions (`proptest`): any
//! arguments encoded by a generated stub, run by that function's generated trampoline (the code
//! a library exports, called through its C ABI in this process, with the input placed as in an
//! executor's slot) and decoded by the stub give what a direct call gives; and every malformed
//! variant of a valid encoding (truncated, descriptors before the fixed layout, past the end,
//! overflowing, misaligned, overlapping, output too small) is refused with its status.

use functions_example::{self as fx, OptionData};
use proptest::collection::vec;
use proptest::prelude::*;
use rfaas::wire::SliceDesc;
use rfaas::{CallError, Placement, RemoteCall, Status};
use zerocopy::{FromBytes, IntoBytes};

/// Room for error and panic messages after the result layout.
const MESSAGE_ROOM: usize = 512;

/// `len` zero bytes `skew` bytes past a 16-byte boundary (executor inputs sit at slot + 24).
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

/// The trampoline of `name`, from this binary's copy of the library's function table.
fn trampoline(name: &str, fingerprint: u64) -> rfaas::abi::Trampoline {
    let e = rfaas::abi::registered_functions()
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("`{name}` is not registered in this binary"));
    assert_eq!(e.fingerprint, fingerprint, "fingerprint of `{name}`");
    e.trampoline
}

/// Calls `name`'s trampoline on `input` with `cap` bytes of output: (status, output bytes).
fn run(name: &str, fingerprint: u64, input: &[u8], skew: usize, cap: usize) -> (Status, Vec<u8>) {
    let mut inp = Buf::new(input.len(), skew);
    inp.bytes_mut().copy_from_slice(input);
    let mut out = Buf::new(cap, 0);
    let mut len = 0;
    // SAFETY: live, distinct buffers valid for their lengths; `len` is a local.
    let raw = unsafe {
        trampoline(name, fingerprint)(
            inp.bytes().as_ptr(),
            input.len(),
            out.bytes_mut().as_mut_ptr(),
            cap,
            &mut len,
        )
    };
    let status = Status::from_u32(raw).expect("a known status");
    assert!(len <= cap);
    (status, out.bytes()[..len].to_vec())
}

/// Encodes `call`, runs it as an executor would, decodes the answer.
fn remote<C: RemoteCall>(call: C, skew: usize) -> Result<C::Output, CallError> {
    let layout = call.layout(&Placement::NONE).expect("layout");
    let mut input = vec![0; layout.input_len];
    let encoded = call.encode(&mut input, &Placement::NONE).expect("encode");
    assert_eq!(encoded, layout, "layout() and encode() disagree");
    let cap = layout.output_len + MESSAGE_ROOM;
    let (status, output) = run(C::NAME, C::FINGERPRINT, &input, skew, cap);
    call.decode(status, &output, &Placement::NONE)
}

/// Equal as bits, or both NaN.
fn same_f64(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || x.is_nan() && y.is_nan())
}

fn same_f32(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || x.is_nan() && y.is_nan())
}

/// The remote result is the local one, an error being its `Display` text.
fn same_result<T: PartialEq + std::fmt::Debug, E: std::fmt::Display>(
    remote: Result<T, CallError>,
    local: Result<T, E>,
) -> Result<(), TestCaseError> {
    let local = local.map_err(|e| CallError::Function(e.to_string()));
    prop_assert_eq!(remote, local);
    Ok(())
}

/// A length that is `n` most of the time and otherwise off by one (a mismatch the function
/// reports as its error).
fn near(n: usize, off: i8) -> usize {
    match off {
        -1 => n.saturating_sub(1),
        1 => n + 1,
        _ => n,
    }
}

fn mismatch() -> impl Strategy<Value = i8> {
    prop_oneof![6 => Just(0i8), 1 => Just(-1), 1 => Just(1)]
}

fn skew() -> impl Strategy<Value = usize> {
    prop_oneof![Just(8usize), Just(0)]
}

fn option() -> impl Strategy<Value = OptionData> {
    let price = prop_oneof![4 => 1.0f32..200.0, 1 => any::<f32>()];
    (
        price.clone(),
        price,
        0.0f32..0.2,
        0.01f32..1.0,
        0.1f32..5.0,
        0u32..3,
    )
        .prop_map(|(spot, strike, rate, volatility, time, kind)| OptionData {
            spot,
            strike,
            rate,
            volatility,
            time,
            kind,
        })
}

fn numbers(n: usize) -> impl Strategy<Value = Vec<f64>> {
    vec(prop_oneof![8 => -1e3f64..1e3, 1 => any::<f64>()], n)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn noop_round_trips(skew in skew()) {
        same_result(remote(fx::noop::call(), skew), Ok::<_, String>(()))?;
    }

    #[test]
    fn echo_round_trips(input in vec(any::<u8>(), 0..64), out_len in 0usize..80, skew in skew()) {
        let (mut r, mut l) = (vec![0xa5; out_len], vec![0xa5; out_len]);
        let ok = fx::echo(&input, &mut l).is_ok();
        same_result(remote(fx::echo::call(&input, &mut r), skew), fx::echo(&input, &mut l))?;
        // Output slices are write-only: after `Ok`, bytes the function leaves alone are
        // unspecified (they come back as whatever the executor's output buffer held, not as the
        // caller's; docs/functions.md). After an error nothing is copied back.
        let k = if ok { input.len() } else { out_len };
        prop_assert_eq!(&r[..k], &l[..k]);
    }

    #[test]
    fn axpy_round_trips(
        (a, x, y) in (0usize..24).prop_flat_map(|n| (any::<f64>(), numbers(n), numbers(n))),
        m in mismatch(),
        skew in skew(),
    ) {
        let n = near(x.len(), m);
        let (mut r, mut l) = (vec![0.5; n], vec![0.5; n]);
        same_result(remote(fx::axpy::call(a, &x, &y, &mut r), skew), fx::axpy(a, &x, &y, &mut l))?;
        prop_assert!(same_f64(&r, &l), "{:?} != {:?}", r, l);
    }

    #[test]
    fn matmul_round_trips(
        (n, a, b) in (0u32..5).prop_flat_map(|n| (Just(n), numbers((n * n) as usize), numbers((n * n) as usize))),
        m in mismatch(),
        skew in skew(),
    ) {
        let len = near((n * n) as usize, m);
        let (mut r, mut l) = (vec![0.0; len], vec![0.0; len]);
        same_result(remote(fx::matmul::call(n, &a, &b, &mut r), skew), fx::matmul(n, &a, &b, &mut l))?;
        prop_assert!(same_f64(&r, &l), "{:?} != {:?}", r, l);
    }

    #[test]
    fn black_scholes_round_trips(options in vec(option(), 0..12), m in mismatch(), skew in skew()) {
        let n = near(options.len(), m);
        let (mut r, mut l) = (vec![0.0f32; n], vec![0.0f32; n]);
        same_result(
            remote(fx::black_scholes::call(&options, &mut r), skew),
            fx::black_scholes(&options, &mut l),
        )?;
        prop_assert!(same_f32(&r, &l), "{:?} != {:?}", r, l);
    }

    #[test]
    fn sincos_round_trips(xs in (0usize..16).prop_flat_map(numbers), m in mismatch(), skew in skew()) {
        let n = near(xs.len(), m);
        let (mut rs, mut rc) = (vec![0.0; n], vec![0.0; xs.len()]);
        let (mut ls, mut lc) = (vec![0.0; n], vec![0.0; xs.len()]);
        same_result(
            remote(fx::sincos::call(&xs, &mut rs, &mut rc), skew),
            fx::sincos(&xs, &mut ls, &mut lc),
        )?;
        prop_assert!(same_f64(&rs, &ls) && same_f64(&rc, &lc));
    }

    #[test]
    fn parse_decimal_round_trips(
        text in prop_oneof![vec(b'0'..=b'9', 0..24), vec(any::<u8>(), 0..24)],
        skew in skew(),
    ) {
        same_result(remote(fx::parse_decimal::call(&text), skew), fx::parse_decimal(&text))?;
    }

    #[test]
    fn fault_returns_its_value(value: u64, skew in skew()) {
        same_result(remote(fx::fault::call(0, value), skew), Ok::<_, String>(value))?;
    }
}

proptest! {
    // A panic prints its message through the default hook: a few cases are enough.
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn fault_panics_become_the_panic_status(value: u64) {
        prop_assert_eq!(
            remote(fx::fault::call(1, value), 8),
            Err(CallError::Panic(format!("fault injected: value {value}")))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed encodings

/// Where a function's slice descriptors sit in its fixed layout.
struct Layout {
    name: &'static str,
    fingerprint: u64,
    fixed: usize,
    /// (byte position of the descriptor, output?, element size, element alignment).
    slices: &'static [(usize, bool, usize, usize)],
}

const LAYOUTS: &[Layout] = &[
    Layout {
        name: "axpy",
        fingerprint: fx::axpy::FINGERPRINT,
        fixed: 32,
        slices: &[(8, false, 8, 8), (16, false, 8, 8), (24, true, 8, 8)],
    },
    Layout {
        name: "black_scholes",
        fingerprint: fx::black_scholes::FINGERPRINT,
        fixed: 16,
        slices: &[(0, false, 24, 4), (8, true, 4, 4)],
    },
    Layout {
        name: "echo",
        fingerprint: fx::echo::FINGERPRINT,
        fixed: 16,
        slices: &[(0, false, 1, 1), (8, true, 1, 1)],
    },
    Layout {
        name: "fault",
        fingerprint: fx::fault::FINGERPRINT,
        fixed: 12,
        slices: &[],
    },
    Layout {
        name: "matmul",
        fingerprint: fx::matmul::FINGERPRINT,
        fixed: 28,
        slices: &[(4, false, 8, 8), (12, false, 8, 8), (20, true, 8, 8)],
    },
    Layout {
        name: "parse_decimal",
        fingerprint: fx::parse_decimal::FINGERPRINT,
        fixed: 8,
        slices: &[(0, false, 1, 1)],
    },
    Layout {
        name: "sincos",
        fingerprint: fx::sincos::FINGERPRINT,
        fixed: 24,
        slices: &[(0, false, 8, 8), (8, true, 8, 8), (16, true, 8, 8)],
    },
];

/// A valid encoding of a call of `name` with slices of `n` elements: (input, output length).
fn encoding(name: &str, n: usize) -> (Vec<u8>, usize) {
    fn enc<C: RemoteCall>(c: C) -> (Vec<u8>, usize) {
        let l = c.layout(&Placement::NONE).unwrap();
        let mut input = vec![0; l.input_len];
        c.encode(&mut input, &Placement::NONE).unwrap();
        (input, l.output_len)
    }
    let (xs, bytes) = (vec![1.5; n], vec![b'7'; n]);
    let (mut o1, mut o2, mut ob) = (vec![0.0; n], vec![0.0; n], vec![0u8; n]);
    let options = vec![
        OptionData {
            spot: 1.0,
            strike: 1.0,
            rate: 0.0,
            volatility: 0.1,
            time: 1.0,
            kind: 0
        };
        n
    ];
    let mut prices = vec![0.0f32; n];
    match name {
        "axpy" => enc(fx::axpy::call(2.0, &xs, &xs, &mut o1)),
        "black_scholes" => enc(fx::black_scholes::call(&options, &mut prices)),
        "echo" => enc(fx::echo::call(&bytes, &mut ob)),
        "fault" => enc(fx::fault::call(0, 1)),
        "matmul" => enc(fx::matmul::call(n as u32, &xs, &xs, &mut o1)),
        "parse_decimal" => enc(fx::parse_decimal::call(&bytes)),
        "sincos" => enc(fx::sincos::call(&xs, &mut o1, &mut o2)),
        other => unreachable!("{other}"),
    }
}

fn desc_at(input: &[u8], pos: usize) -> (usize, usize) {
    let d = SliceDesc::read_from_bytes(&input[pos..pos + 8]).unwrap();
    (d.offset.get() as usize, d.len.get() as usize)
}

fn set_desc(input: &mut [u8], pos: usize, off: usize, len: usize) {
    let d = SliceDesc::new(off as u32, len as u32);
    input[pos..pos + 8].copy_from_slice(d.as_bytes());
}

/// Mutates slice `which` of a valid encoding according to `kind` and returns the status the
/// rules require (`None` when the mutation does not apply to that slice).
fn mutate(
    l: &Layout,
    input: &mut [u8],
    cap: usize,
    which: usize,
    kind: u8,
    k: usize,
) -> Option<Status> {
    let &(pos, out, size, align) = l.slices.get(which)?;
    let (off, len) = desc_at(input, pos);
    // The end of the previous output slice (or of the return value) for outputs.
    let prev_end = l.slices[..which]
        .iter()
        .rev()
        .find(|s| s.1)
        .map(|s| {
            let (o, n) = desc_at(input, s.0);
            o + n * s.2
        })
        .unwrap_or(if ["echo", "parse_decimal", "fault"].contains(&l.name) {
            8
        } else {
            0
        });
    let limit = if out { cap } else { input.len() };
    match (kind % 5, out) {
        // Before the fixed layout (inputs) or overlapping what comes before (outputs).
        (0, false) => {
            set_desc(input, pos, k % l.fixed.max(1), len);
            (l.fixed > 0).then_some(Status::BadSlice)
        }
        (0, true) => {
            let start = prev_end.checked_sub(1 + k % prev_end.max(1))?;
            set_desc(input, pos, start, len);
            Some(Status::BadSlice)
        }
        // Ending past the buffer.
        (1, _) => {
            let n = (limit - off) / size + 1 + k % 4;
            set_desc(input, pos, off, n);
            Some(if out {
                Status::OutputTooSmall
            } else {
                Status::BadSlice
            })
        }
        // A length whose byte size overflows 32 bits.
        (2, _) => {
            set_desc(input, pos, off, u32::MAX as usize);
            Some(if out {
                Status::OutputTooSmall
            } else {
                Status::BadSlice
            })
        }
        // Misaligned for the element (an empty slice, so bounds hold when it still fits).
        (3, _) if align > 1 => {
            let moved = off + 1 + k % (align - 1);
            set_desc(input, pos, moved, 0);
            Some(if moved > limit {
                if out {
                    Status::OutputTooSmall
                } else {
                    Status::BadSlice
                }
            } else {
                Status::Misaligned
            })
        }
        // Offset far past the buffer.
        (4, _) => {
            set_desc(input, pos, limit + 1 + k, len.min(1));
            Some(if out {
                Status::OutputTooSmall
            } else {
                Status::BadSlice
            })
        }
        _ => None,
    }
}

/// A call whose result layout is empty runs with an output buffer of capacity 0: its
/// zero-length output slices are at the caller's (aligned) pointer, not refused as
/// `Misaligned` (found by the `trampolines` fuzz target with `black_scholes(&[], &mut [])`).
#[test]
fn empty_results_fit_a_zero_capacity_output() {
    for l in LAYOUTS {
        let (input, out_len) = encoding(l.name, 0);
        if out_len != 0 {
            continue;
        }
        for skew in [0, 8] {
            let (status, output) = run(l.name, l.fingerprint, &input, skew, 0);
            assert_eq!(
                (status, output.len()),
                (Status::Ok, 0),
                "{} at skew {skew}",
                l.name
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any shorter input than the encoding is refused: `InputTooShort` below the fixed layout,
    /// `BadSlice` once the last slice no longer fits.
    #[test]
    fn truncated_inputs_are_refused(f in 0..LAYOUTS.len(), n in 0usize..6, cut in any::<prop::sample::Index>()) {
        let l = &LAYOUTS[f];
        let (input, out_len) = encoding(l.name, n);
        prop_assume!(!input.is_empty());
        let len = cut.index(input.len());
        let (status, output) = run(l.name, l.fingerprint, &input[..len], 8, out_len + MESSAGE_ROOM);
        let want = if len < l.fixed { Status::InputTooShort } else { Status::BadSlice };
        prop_assert_eq!((status, output.len()), (want, 0), "{} cut to {} of {}", l.name, len, input.len());
    }

    /// An output buffer smaller than the result layout is refused with `OutputTooSmall`.
    #[test]
    fn short_outputs_are_refused(f in 0..LAYOUTS.len(), n in 0usize..6, cut in any::<prop::sample::Index>()) {
        let l = &LAYOUTS[f];
        let (input, out_len) = encoding(l.name, n);
        prop_assume!(out_len > 0);
        let cap = cut.index(out_len);
        let (status, output) = run(l.name, l.fingerprint, &input, 8, cap);
        prop_assert_eq!((status, output.len()), (Status::OutputTooSmall, 0), "{} with {} of {} bytes", l.name, cap, out_len);
    }

    /// Each malformed descriptor is refused with the status its rule names.
    #[test]
    fn malformed_descriptors_are_refused(
        f in 0..LAYOUTS.len(),
        n in 0usize..6,
        which in 0usize..3,
        kind in 0u8..5,
        k in 0usize..64,
        skew in skew(),
    ) {
        let l = &LAYOUTS[f];
        let (mut input, out_len) = encoding(l.name, n);
        let cap = out_len + MESSAGE_ROOM;
        let Some(want) = mutate(l, &mut input, cap, which, kind, k) else { return Ok(()) };
        let (status, output) = run(l.name, l.fingerprint, &input, skew, cap);
        prop_assert_eq!((status, output.len()), (want, 0), "{} slice {} mutation {}", l.name, which, kind);
    }
}
