//! Every function of the packaged library, called through encode → trampoline → decode and
//! compared with calling the Rust function directly; then malformed invocations.

use executor::{FunctionLibrary, InvokeError, Outcome, Package};
use functions_example as fx;
use rfaas::wire::SliceDesc;
use rfaas::{CallError, Placement, RemoteCall, Status};
use std::sync::OnceLock;
use tests::{AlignedBuf, Rng, example_package, invoke};

fn lib() -> &'static FunctionLibrary {
    static LIB: OnceLock<FunctionLibrary> = OnceLock::new();
    LIB.get_or_init(|| {
        Package::open(example_package())
            .expect("opening the example package")
            .1
    })
}

#[test]
fn noop_and_fault_without_fault() {
    invoke(lib(), fx::noop::call()).expect("noop");
    for v in [0, 1, u64::MAX] {
        assert_eq!(invoke(lib(), fx::fault::call(0, v)), Ok(fx::fault(0, v)));
    }
    // The memory-hungry mode, within any limit: 3 MiB touched.
    assert_eq!(invoke(lib(), fx::fault::call(3, 3)), Ok(3 << 20));
    assert_eq!(fx::fault(3, 3), 3 << 20);
}

#[test]
fn echo_copies_bytes_of_every_length() {
    let mut rng = Rng::new(7);
    for len in [0usize, 1, 7, 8, 9, 4096, 65_536 + 3] {
        let input: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let mut remote = vec![0u8; len + 5];
        let mut local = remote.clone();
        let n = invoke(lib(), fx::echo::call(&input, &mut remote)).expect("echo");
        assert_eq!(Ok(n), fx::echo(&input, &mut local), "len {len}");
        assert_eq!(remote, local, "len {len}");
    }
}

#[test]
fn axpy_matches_local() {
    let mut rng = Rng::new(11);
    for len in [0usize, 1, 3, 1000] {
        let a = rng.range(-3.0, 3.0);
        let x: Vec<f64> = (0..len).map(|_| rng.range(-1e3, 1e3)).collect();
        let y: Vec<f64> = (0..len).map(|_| rng.range(-1e3, 1e3)).collect();
        let (mut remote, mut local) = (vec![f64::NAN; len], vec![0.0; len]);
        invoke(lib(), fx::axpy::call(a, &x, &y, &mut remote)).expect("axpy");
        fx::axpy(a, &x, &y, &mut local).expect("local axpy");
        assert_eq!(remote, local, "len {len}");
    }
}

fn random_options(rng: &mut Rng, n: usize) -> Vec<fx::OptionData> {
    (0..n)
        .map(|i| fx::OptionData {
            spot: rng.range(10.0, 200.0) as f32,
            strike: rng.range(10.0, 200.0) as f32,
            rate: rng.range(0.0, 0.1) as f32,
            volatility: rng.range(0.05, 0.9) as f32,
            time: rng.range(0.1, 5.0) as f32,
            kind: if i % 2 == 0 {
                fx::OptionData::CALL
            } else {
                fx::OptionData::PUT
            },
        })
        .collect()
}

#[test]
fn black_scholes_matches_local_on_random_options() {
    let mut rng = Rng::new(42);
    for n in [1usize, 17, 10_000] {
        let options = random_options(&mut rng, n);
        let (mut remote, mut local) = (vec![f32::NAN; n], vec![0.0f32; n]);
        invoke(lib(), fx::black_scholes::call(&options, &mut remote)).expect("black_scholes");
        fx::black_scholes(&options, &mut local).expect("local");
        // Same code, same inputs: bit-identical, not merely close.
        assert_eq!(
            remote.iter().map(|p| p.to_bits()).collect::<Vec<_>>(),
            local.iter().map(|p| p.to_bits()).collect::<Vec<_>>()
        );
        assert!(
            remote.iter().all(|p| p.is_finite() && *p >= -1e-3),
            "prices must be finite and non-negative: {remote:?}"
        );
    }
}

#[test]
fn black_scholes_prices_satisfy_put_call_parity() {
    // C - P = S - K e^{-rT}: an independent check of the kernel itself.
    let mut rng = Rng::new(5);
    for _ in 0..50 {
        let mut o = random_options(&mut rng, 1)[0];
        o.kind = fx::OptionData::CALL;
        let c = fx::black_scholes_one(&o) as f64;
        o.kind = fx::OptionData::PUT;
        let p = fx::black_scholes_one(&o) as f64;
        let parity = o.spot as f64 - o.strike as f64 * (-(o.rate as f64) * o.time as f64).exp();
        assert!(
            (c - p - parity).abs() < 1e-2 * (1.0 + parity.abs()),
            "parity violated: {o:?} c={c} p={p}"
        );
    }
}

#[test]
fn matmul_matches_local_on_random_matrices() {
    let mut rng = Rng::new(3);
    for n in [0usize, 1, 2, 7, 64] {
        let a: Vec<f64> = (0..n * n).map(|_| rng.range(-1.0, 1.0)).collect();
        let b: Vec<f64> = (0..n * n).map(|_| rng.range(-1.0, 1.0)).collect();
        let (mut remote, mut local) = (vec![f64::NAN; n * n], vec![0.0; n * n]);
        invoke(lib(), fx::matmul::call(n as u32, &a, &b, &mut remote)).expect("matmul");
        fx::matmul(n as u32, &a, &b, &mut local).expect("local");
        assert_eq!(remote, local, "n {n}");
        // And against the definition, with a tolerance for summation order.
        for i in 0..n {
            for j in 0..n {
                let want: f64 = (0..n).map(|k| a[i * n + k] * b[k * n + j]).sum();
                assert!((remote[i * n + j] - want).abs() < 1e-9, "c[{i}][{j}]");
            }
        }
    }
}

#[test]
fn sincos_fills_two_output_slices() {
    let xs: Vec<f64> = (0..100).map(|i| i as f64 * 0.1 - 5.0).collect();
    let (mut s, mut c) = (vec![0.0; 100], vec![0.0; 100]);
    invoke(lib(), fx::sincos::call(&xs, &mut s, &mut c)).expect("sincos");
    for i in 0..100 {
        assert_eq!((s[i], c[i]), xs[i].sin_cos());
    }
}

#[track_caller]
fn check_function_error<T: std::fmt::Debug>(got: Result<T, CallError>, local: String) {
    match got {
        Err(CallError::Function(msg)) => assert_eq!(msg, local),
        other => panic!("expected a function error `{local}`, got {other:?}"),
    }
}

#[test]
fn function_errors_carry_their_message() {
    for text in [&b""[..], b"12a", b"99999999999999999999999"] {
        check_function_error(
            invoke(lib(), fx::parse_decimal::call(text)),
            fx::parse_decimal(text).unwrap_err(),
        );
    }
    assert_eq!(
        invoke(lib(), fx::parse_decimal::call(b"18446744073709551615")),
        Ok(u64::MAX)
    );
    let (x, y) = ([1.0; 3], [1.0; 2]);
    let mut out = [0.0; 3];
    check_function_error(
        invoke(lib(), fx::axpy::call(1.0, &x, &y, &mut out)),
        fx::axpy(1.0, &x, &y, &mut [0.0; 3])
            .unwrap_err()
            .to_string(),
    );
}

#[test]
fn a_panic_is_a_status_and_the_host_keeps_running() {
    for round in 0..3u64 {
        match invoke(lib(), fx::fault::call(1, round)) {
            Err(CallError::Panic(msg)) => assert!(
                msg.contains(&format!("fault injected: value {round}")),
                "{msg}"
            ),
            other => panic!("expected a panic status, got {other:?}"),
        }
        // The same library keeps serving.
        assert_eq!(invoke(lib(), fx::fault::call(0, round)), Ok(round));
    }
}

/// Raw invocation of function `name` with hand-made input bytes.
fn raw(name: &str, input: &[u8], output_cap: usize) -> Result<(Status, Vec<u8>), InvokeError> {
    let f = lib().find(name).expect("function exists");
    let mut inb = AlignedBuf::new(input.len());
    inb.bytes_mut().copy_from_slice(input);
    let mut out = AlignedBuf::new(output_cap);
    let got = lib().invoke(f.index, inb.bytes(), out.bytes_mut());
    // The serving loop's entry point agrees: the same outcome and bytes, a refusal as the
    // status the executor answers it with.
    let mut served = AlignedBuf::new(output_cap);
    let c = lib().call(f.index, inb.bytes(), served.bytes_mut());
    match &got {
        Ok(o) => {
            assert_eq!(c, *o, "call and invoke differ on {name}");
            assert_eq!(served.bytes()[..c.output_len], out.bytes()[..o.output_len]);
        }
        Err(e) => assert_eq!(
            c,
            Outcome {
                status: e.status(),
                output_len: 0
            }
        ),
    }
    let o = got?;
    Ok((o.status, out.bytes()[..o.output_len].to_vec()))
}

/// Encodes `call` into bytes.
fn encoded(call: &impl RemoteCall) -> Vec<u8> {
    let layout = call.layout(&Placement::NONE).expect("layout");
    let mut b = vec![0u8; layout.input_len];
    call.encode(&mut b, &Placement::NONE).expect("encode");
    b
}

#[test]
fn truncated_input_is_rejected() {
    let x = [1.0f64; 4];
    let mut out = [0.0; 4];
    let full = encoded(&fx::axpy::call(2.0, &x, &x, &mut out));
    // Shorter than the fixed layout (8 + 3 * 8 bytes): InputTooShort.
    for cut in [0, 1, 8, 31] {
        assert_eq!(
            raw("axpy", &full[..cut], 64).map(|r| r.0),
            Ok(Status::InputTooShort),
            "cut at {cut}"
        );
    }
    // Fixed layout intact but slice data cut: BadSlice.
    for cut in [32, 40, full.len() - 1] {
        assert_eq!(
            raw("axpy", &full[..cut], 64).map(|r| r.0),
            Ok(Status::BadSlice),
            "cut at {cut}"
        );
    }
    assert_eq!(raw("axpy", &full, 64).map(|r| r.0), Ok(Status::Ok));
}

/// Overwrites the slice descriptor at byte `at` of an encoded input.
fn patch_desc(bytes: &mut [u8], at: usize, desc: SliceDesc) {
    bytes[at..at + 8].copy_from_slice(rfaas::slice_bytes(&[desc.offset.get(), desc.len.get()]));
}

#[test]
fn hostile_descriptors_are_rejected() {
    let x = [1.0f64; 4];
    let mut out = [0.0; 4];
    let good = encoded(&fx::axpy::call(2.0, &x, &x, &mut out));
    // axpy layout: a (8 bytes), x desc @8, y desc @16, out desc @24.
    let cases: [(usize, SliceDesc, Status); 7] = [
        (8, SliceDesc::new(36, 4), Status::Misaligned), // x at a 4-byte offset
        (8, SliceDesc::new(32, 1 << 29), Status::BadSlice), // x far past the input
        (8, SliceDesc::new(u32::MAX, u32::MAX), Status::BadSlice), // offset + length overflow
        (8, SliceDesc::new(0, 4), Status::BadSlice),    // x overlapping the fixed layout
        (24, SliceDesc::new(0, 4), Status::OutputTooSmall), // out 4 f64 > 16-byte output
        (24, SliceDesc::new(4, 1), Status::Misaligned), // out at a 4-byte offset
        (24, SliceDesc::new(8, u32::MAX), Status::OutputTooSmall), // out far past the output
    ];
    for (at, desc, want) in cases {
        let mut bytes = good.clone();
        patch_desc(&mut bytes, at, desc);
        let got = raw("axpy", &bytes, 16).map(|r| r.0);
        assert_eq!(got, Ok(want), "descriptor {desc:?} at {at}");
    }
}

#[test]
fn overlapping_output_slices_are_rejected() {
    let xs = [0.5f64; 4];
    let (mut s, mut c) = ([0.0; 4], [0.0; 4]);
    let mut bytes = encoded(&fx::sincos::call(&xs, &mut s, &mut c));
    // sincos layout: xs desc @0, sin desc @8, cos desc @16; outputs at 0 and 32.
    patch_desc(&mut bytes, 16, SliceDesc::new(16, 4)); // cos starts inside sin
    assert_eq!(
        raw("sincos", &bytes, 128).map(|r| r.0),
        Ok(Status::BadSlice)
    );
    patch_desc(&mut bytes, 16, SliceDesc::new(32, 4)); // back to disjoint: accepted
    assert_eq!(raw("sincos", &bytes, 128).map(|r| r.0), Ok(Status::Ok));
}

#[test]
fn misaligned_buffers_and_unknown_indices_are_refused() {
    let lib = lib();
    let noop = lib.find("noop").expect("noop").index;
    let input = AlignedBuf::new(16);
    let mut output = AlignedBuf::new(16);
    assert_eq!(
        lib.invoke(noop, &input.bytes()[1..], output.bytes_mut()),
        Err(InvokeError::Misaligned { which: "input" })
    );
    assert_eq!(
        lib.invoke(noop, input.bytes(), &mut output.bytes_mut()[3..]),
        Err(InvokeError::Misaligned { which: "output" })
    );
    let count = lib.functions().len();
    for index in [count as u32, count as u32 + 1, u32::MAX] {
        let got = lib.invoke(index, input.bytes(), output.bytes_mut());
        assert_eq!(got, Err(InvokeError::UnknownFunction { index, count }));
        assert_eq!(got.unwrap_err().status(), Status::UnknownFunction);
    }
    let mut shared = AlignedBuf::new(64);
    let (a, b) = shared.bytes_mut().split_at_mut(32);
    assert!(lib.invoke(noop, a, b).is_ok(), "adjacent buffers are fine");
    // The serving loop's entry point answers the same refusals with their statuses.
    let refused = |status| Outcome {
        status,
        output_len: 0,
    };
    assert_eq!(
        lib.call(noop, &input.bytes()[1..], output.bytes_mut()),
        refused(Status::Misaligned)
    );
    assert_eq!(
        lib.call(noop, input.bytes(), &mut output.bytes_mut()[3..]),
        refused(Status::Misaligned)
    );
    assert_eq!(
        lib.call(count as u32, input.bytes(), output.bytes_mut()),
        refused(Status::UnknownFunction)
    );
    let (a, b) = shared.bytes_mut().split_at_mut(32);
    assert_eq!(
        lib.call(noop, a, b),
        refused(Status::Ok),
        "adjacent buffers"
    );
}

#[test]
fn too_small_output_is_a_status() {
    let input = [7u8; 64];
    let mut out = [0u8; 64];
    let bytes = encoded(&fx::echo::call(&input, &mut out));
    // Return value (8 bytes) fits, the 64-byte output slice does not.
    assert_eq!(
        raw("echo", &bytes, 16).map(|r| r.0),
        Ok(Status::OutputTooSmall)
    );
    // Not even the return value fits.
    assert_eq!(
        raw("echo", &bytes, 4).map(|r| r.0),
        Ok(Status::OutputTooSmall)
    );
    let (status, output) = raw("echo", &bytes, 72).expect("invoke");
    assert_eq!(status, Status::Ok);
    assert_eq!(output.len(), 72);
    assert_eq!(&output[8..], &input[..]);
}

#[test]
fn stub_fingerprints_match_the_library() {
    let pairs = [
        (fx::noop::NAME, fx::noop::FINGERPRINT),
        (fx::echo::NAME, fx::echo::FINGERPRINT),
        (fx::axpy::NAME, fx::axpy::FINGERPRINT),
        (fx::matmul::NAME, fx::matmul::FINGERPRINT),
        (fx::black_scholes::NAME, fx::black_scholes::FINGERPRINT),
        (fx::sincos::NAME, fx::sincos::FINGERPRINT),
        (fx::parse_decimal::NAME, fx::parse_decimal::FINGERPRINT),
        (fx::fault::NAME, fx::fault::FINGERPRINT),
    ];
    let mut fps: Vec<u64> = pairs.iter().map(|p| p.1).collect();
    fps.sort_unstable();
    fps.dedup();
    assert_eq!(
        fps.len(),
        pairs.len(),
        "fingerprints must differ between functions"
    );
    for (name, fp) in pairs {
        assert_eq!(lib().find(name).map(|f| f.fingerprint), Some(fp), "{name}");
    }
}
