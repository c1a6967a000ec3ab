//! Shared support of the fuzz targets: aligned buffers, a panic filter, and a model of the
//! argument-layout rules of every `functions-example` function (what its trampoline must
//! accept, reject and write), used as the oracle the targets compare the real code against;
//! the `auth` target's MAC oracle and input in [`auth`].

pub mod auth;
pub mod session;

use rfaas::wire::{
    BUFFER_ALIGN, FLAG_PLACED, HEADER_LEN, InvocationHeader, KNOWN_FLAGS, PlacedOutputs, SliceDesc,
    Status, align_up,
};
use std::cell::Cell;
use std::ops::Range;
use std::sync::Once;

// -------------------------------------------------------------------------------------------
// Buffers

/// A zeroed byte buffer placed at a chosen distance from a 16-byte boundary (so a target can
/// put executor buffers both on 16-byte boundaries and on odd multiples of 8).
pub struct Buf {
    words: Vec<u128>,
    skew: usize,
    len: usize,
}

impl Buf {
    /// `len` bytes starting `skew` bytes (0..16) past a 16-byte boundary, filled with `fill`.
    pub fn new(len: usize, skew: usize, fill: u8) -> Buf {
        assert!(skew < 16);
        let mut b = Buf {
            words: vec![0; (len + skew).div_ceil(16).max(1)],
            skew,
            len,
        };
        b.bytes_mut().fill(fill);
        b
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &rfaas::slice_bytes(&self.words)[self.skew..self.skew + self.len]
    }

    /// The bytes, mutably.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let (skew, len) = (self.skew, self.len);
        &mut rfaas::slice_bytes_mut(&mut self.words)[skew..skew + len]
    }
}

// -------------------------------------------------------------------------------------------
// Panics

thread_local! {
    static USER_CODE: Cell<bool> = const { Cell::new(false) };
}

/// Replaces libFuzzer's abort-on-every-panic hook by one that lets a panic unwind quietly when
/// it is raised in `functions-example` (user code, which a trampoline must catch and report as
/// `Status::Panic`) while [`user_code`] runs; every other panic (in `rfaas`, in generated code
/// outside the user's body, in the harness) still aborts, which libFuzzer reports as a crash.
pub fn install_panic_filter() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_user_code = USER_CODE.with(Cell::get)
                && info
                    .location()
                    .is_some_and(|l| l.file().ends_with("functions-example/src/lib.rs"));
            if !in_user_code {
                abort(info);
            }
        }));
    });
}

/// Runs `f` with panics of `functions-example` allowed (see [`install_panic_filter`]).
pub fn user_code<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            USER_CODE.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(USER_CODE.with(|c| c.replace(true)));
    f()
}

/// The text `rfaas` reports for a panic payload (same rules as the trampolines).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

// -------------------------------------------------------------------------------------------
// Function shapes

/// Element type of a slice parameter.
#[derive(Clone, Copy, Debug)]
pub struct Elem {
    /// `size_of`.
    pub size: usize,
    /// `align_of`.
    pub align: usize,
}

/// One parameter of a remote function.
#[derive(Clone, Copy, Debug)]
pub enum Param {
    /// A value of this many bytes.
    Value(usize),
    /// `&[T]`.
    In(Elem),
    /// `&mut [T]`.
    Out(Elem),
}

/// The layout-relevant shape of a remote function.
#[derive(Debug)]
pub struct Shape {
    /// Name.
    pub name: &'static str,
    /// Signature text, as the macro records it (checked against the manifest at start-up so
    /// that the table cannot silently drift from `functions-example`).
    pub signature: &'static str,
    /// Parameters in order.
    pub params: &'static [Param],
    /// Bytes of the return value (0 for `()` and `Result<(), E>`).
    pub ret: usize,
}

impl Shape {
    /// Bytes of the fixed argument layout.
    pub fn fixed(&self) -> usize {
        self.params
            .iter()
            .map(|p| match p {
                Param::Value(n) => *n,
                Param::In(_) | Param::Out(_) => size_of::<SliceDesc>(),
            })
            .sum()
    }
}

const U8: Elem = Elem { size: 1, align: 1 };
const F32: Elem = Elem { size: 4, align: 4 };
const F64: Elem = Elem { size: 8, align: 8 };
const OPTION: Elem = Elem {
    size: size_of::<functions_example::OptionData>(),
    align: align_of::<functions_example::OptionData>(),
};

/// Every function of `functions-example`, in manifest (name) order.
pub const SHAPES: &[Shape] = &[
    Shape {
        name: "axpy",
        signature: "fn axpy(a: f64, x: &[f64], y: &[f64], out: &mut [f64]) -> Result<(), LengthError>",
        params: &[
            Param::Value(8),
            Param::In(F64),
            Param::In(F64),
            Param::Out(F64),
        ],
        ret: 0,
    },
    Shape {
        name: "black_scholes",
        signature: "fn black_scholes(options: &[OptionData], prices: &mut [f32]) -> Result<(), LengthError>",
        params: &[Param::In(OPTION), Param::Out(F32)],
        ret: 0,
    },
    Shape {
        name: "echo",
        signature: "fn echo(input: &[u8], output: &mut [u8]) -> Result<u64, LengthError>",
        params: &[Param::In(U8), Param::Out(U8)],
        ret: 8,
    },
    Shape {
        name: "fault",
        signature: "fn fault(mode: u32, value: u64) -> u64",
        params: &[Param::Value(4), Param::Value(8)],
        ret: 8,
    },
    Shape {
        name: "matmul",
        signature: "fn matmul(n: u32, a: &[f64], b: &[f64], c: &mut [f64]) -> Result<(), LengthError>",
        params: &[
            Param::Value(4),
            Param::In(F64),
            Param::In(F64),
            Param::Out(F64),
        ],
        ret: 0,
    },
    Shape {
        name: "noop",
        signature: "fn noop()",
        params: &[],
        ret: 0,
    },
    Shape {
        name: "parse_decimal",
        signature: "fn parse_decimal(text: &[u8]) -> Result<u64, String>",
        params: &[Param::In(U8)],
        ret: 8,
    },
    Shape {
        name: "sincos",
        signature: "fn sincos(xs: &[f64], sin: &mut [f64], cos: &mut [f64]) -> Result<(), LengthError>",
        params: &[Param::In(F64), Param::Out(F64), Param::Out(F64)],
        ret: 0,
    },
];

/// The functions linked into this binary (`functions-example`'s distributed slice), checked
/// against [`SHAPES`]: same names, same order, same signatures.
pub fn registered() -> Vec<&'static rfaas::abi::FunctionEntry> {
    let entries = rfaas::abi::registered_functions();
    let names: Vec<_> = entries.iter().map(|e| (e.name, e.signature)).collect();
    let shapes: Vec<_> = SHAPES.iter().map(|s| (s.name, s.signature)).collect();
    assert_eq!(
        names, shapes,
        "the shape table of rfaas/fuzz/src/lib.rs no longer matches functions-example"
    );
    entries
}

// -------------------------------------------------------------------------------------------
// The layout model

/// What the trampoline of a function must do with an input and an output buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Refuse with this status and no output.
    Reject(Status),
    /// Run the function on these arguments.
    Run(Args),
}

/// Where each argument of an accepted call lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Per parameter: the bytes of a value or an input slice (in the input buffer), or of an
    /// output slice (in the output buffer).
    pub ranges: Vec<Range<usize>>,
    /// End of the last output slice (or of the return value): the output length on `Ok`.
    pub end: usize,
}

/// The argument-layout rules of `docs/protocol.md`, checked in the order a generated
/// trampoline checks them. `in_addr` and `out_addr` are the buffers' addresses (alignment is a
/// property of the address, not only of the offset), also when a buffer is empty: a trampoline
/// keeps the caller's pointer for an empty buffer.
pub fn model(shape: &Shape, input: &[u8], in_addr: usize, out_addr: usize, cap: usize) -> Verdict {
    let fixed = shape.fixed();
    if input.len() < fixed {
        return Verdict::Reject(Status::InputTooShort);
    }
    if cap < shape.ret {
        return Verdict::Reject(Status::OutputTooSmall);
    }
    let mut at = 0;
    let mut pos = shape.ret;
    let mut ranges = Vec::new();
    for p in shape.params {
        match *p {
            Param::Value(n) => {
                ranges.push(at..at + n);
                at += n;
            }
            Param::In(e) | Param::Out(e) => {
                let off = u32::from_le_bytes(input[at..at + 4].try_into().unwrap()) as usize;
                let len = u32::from_le_bytes(input[at + 4..at + 8].try_into().unwrap()) as usize;
                at += 8;
                let end = off + len * e.size; // < 2^37: no overflow on 64-bit targets
                if let Param::In(_) = p {
                    if off < fixed || end > input.len() {
                        return Verdict::Reject(Status::BadSlice);
                    }
                    if !(in_addr + off).is_multiple_of(e.align) {
                        return Verdict::Reject(Status::Misaligned);
                    }
                } else {
                    if off < pos {
                        return Verdict::Reject(Status::BadSlice);
                    }
                    if end > cap {
                        return Verdict::Reject(Status::OutputTooSmall);
                    }
                    if !(out_addr + off).is_multiple_of(e.align) {
                        return Verdict::Reject(Status::Misaligned);
                    }
                    pos = end;
                }
                ranges.push(off..end);
            }
        }
    }
    Verdict::Run(Args { ranges, end: pos })
}

/// The outcome of a call as the trampoline reports it: status and the whole output buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Status number.
    pub status: u32,
    /// `*output_len`.
    pub len: usize,
}

/// Writes as much of `msg` as fits at the start of `out`, cut at a character boundary.
pub fn write_message(out: &mut [u8], msg: &str) -> usize {
    let mut n = msg.len().min(out.len());
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    out[..n].copy_from_slice(&msg.as_bytes()[..n]);
    n
}

fn typed<T: rfaas::Payload>(bytes: &[u8]) -> Vec<T> {
    bytes
        .chunks_exact(size_of::<T>())
        .map(|c| rfaas::read(c).expect("whole element"))
        .collect()
}

fn put<T: rfaas::Payload>(out: &mut [u8], r: &Range<usize>, v: &[T]) {
    out[r.clone()].copy_from_slice(rfaas::slice_bytes(v));
}

fn value<T: rfaas::Payload>(input: &[u8], r: &Range<usize>) -> T {
    rfaas::read(&input[r.clone()]).expect("value slot of the right size")
}

/// Calls function `name` directly (not through its trampoline) on the arguments `args` names in
/// `input`, applying its effects to `out` (a copy of the output buffer) as the trampoline
/// should: output slices written in place, then the return value or the message at offset 0.
pub fn call_direct(name: &str, input: &[u8], args: &Args, out: &mut [u8]) -> Outcome {
    use functions_example as fx;
    let r = &args.ranges;
    let end = args.end;
    // Each arm returns Ok(return value bytes) or Err(message), after writing output slices.
    let run = || -> Result<Vec<u8>, String> {
        match name {
            "noop" => {
                fx::noop();
                Ok(Vec::new())
            }
            "echo" => {
                let mut o = out[r[1].clone()].to_vec();
                let res = fx::echo(&input[r[0].clone()], &mut o);
                out[r[1].clone()].copy_from_slice(&o);
                res.map(|v| v.to_ne_bytes().to_vec())
                    .map_err(|e| e.to_string())
            }
            "axpy" => {
                let (x, y) = (
                    typed::<f64>(&input[r[1].clone()]),
                    typed(&input[r[2].clone()]),
                );
                let mut o = typed::<f64>(&out[r[3].clone()]);
                let res = fx::axpy(value(input, &r[0]), &x, &y, &mut o);
                put(out, &r[3], &o);
                res.map(|()| Vec::new()).map_err(|e| e.to_string())
            }
            "matmul" => {
                let (a, b) = (
                    typed::<f64>(&input[r[1].clone()]),
                    typed(&input[r[2].clone()]),
                );
                let mut c = typed::<f64>(&out[r[3].clone()]);
                let res = fx::matmul(value(input, &r[0]), &a, &b, &mut c);
                put(out, &r[3], &c);
                res.map(|()| Vec::new()).map_err(|e| e.to_string())
            }
            "black_scholes" => {
                let o = typed::<fx::OptionData>(&input[r[0].clone()]);
                let mut p = typed::<f32>(&out[r[1].clone()]);
                let res = fx::black_scholes(&o, &mut p);
                put(out, &r[1], &p);
                res.map(|()| Vec::new()).map_err(|e| e.to_string())
            }
            "sincos" => {
                let xs = typed::<f64>(&input[r[0].clone()]);
                let (mut s, mut c) = (typed::<f64>(&out[r[1].clone()]), typed(&out[r[2].clone()]));
                let res = fx::sincos(&xs, &mut s, &mut c);
                put(out, &r[1], &s);
                put(out, &r[2], &c);
                res.map(|()| Vec::new()).map_err(|e| e.to_string())
            }
            "parse_decimal" => {
                fx::parse_decimal(&input[r[0].clone()]).map(|v| v.to_ne_bytes().to_vec())
            }
            "fault" => {
                let v = fx::fault(value(input, &r[0]), value(input, &r[1]));
                Ok(v.to_ne_bytes().to_vec())
            }
            other => panic!("no direct call for `{other}`"),
        }
    };
    match user_code(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))) {
        Ok(Ok(ret)) => {
            out[..ret.len()].copy_from_slice(&ret);
            Outcome {
                status: Status::Ok.as_u32(),
                len: end,
            }
        }
        Ok(Err(msg)) => Outcome {
            status: Status::FunctionError.as_u32(),
            len: write_message(out, &msg),
        },
        Err(p) => Outcome {
            status: Status::Panic.as_u32(),
            len: write_message(out, &panic_message(&*p)),
        },
    }
}

/// Makes an input safe to run: `fault` modes 2 (sleep `value` ms), 3 (allocate `value` MiB)
/// and 6 (fill a memory file of `value` MiB) get `value` 0, so a fuzzer cannot make an input
/// sleep a minute or take 64 GiB; modes 4 and 5 (start a process, return its pid: a different
/// answer every call, and a process per run) and 7 (a thread asking for every CPU: the
/// answer depends on where the fuzzer runs) become mode 0.
pub fn defuse(name: &str, input: &mut [u8]) {
    if name == "fault" && input.len() >= 12 {
        let mode = u32::from_ne_bytes(input[0..4].try_into().unwrap());
        if matches!(mode, 2 | 3 | 6) {
            input[4..12].fill(0);
        }
        if matches!(mode, 4 | 5 | 7) {
            input[0..4].fill(0);
        }
    }
}

/// Calls a trampoline on `input` and `output` (the buffers the caller placed), returning what
/// it reported.
pub fn call_trampoline(
    trampoline: rfaas::abi::Trampoline,
    input: &[u8],
    output: &mut [u8],
) -> Outcome {
    let mut len = usize::MAX;
    // SAFETY: `input` and `output` are live, distinct borrows valid for their lengths; `len`
    // is a local: the `Trampoline` contract.
    let status = user_code(|| unsafe {
        trampoline(
            input.as_ptr(),
            input.len(),
            output.as_mut_ptr(),
            output.len(),
            &mut len,
        )
    });
    Outcome { status, len }
}

// -------------------------------------------------------------------------------------------
// The executor's invocation rules

/// What an executor worker must do with one completion (a write of `len` bytes to slot `imm`
/// of its input region), over TCP (outputs staged in a slot, so at most `slot_size` bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Drop it: it names no invocation.
    Drop,
    /// Answer invocation `id` with `status` and no output, before running anything.
    Refuse {
        /// The header's id.
        id: u32,
        /// The status.
        status: Status,
    },
    /// Run function `function` on `input_len` bytes after the header (less the placement
    /// list, if any), with `cap` bytes of output at `result_offset` of the client's result
    /// region.
    Invoke {
        /// The header.
        header: InvocationHeader,
        /// Bytes of argument layout the function sees.
        args_len: usize,
        /// The output ranges placed by writes (`FLAG_PLACED`).
        placed: Option<PlacedOutputs>,
    },
}

/// The list a `FLAG_PLACED` input ends with, if the worker accepts it: well formed, every
/// range inside the `cap` bytes of output, every destination inside the `result_len` bytes of
/// the client's region.
pub fn placed_list(
    input: &[u8],
    off: usize,
    cap: usize,
    result_len: usize,
) -> Option<(usize, PlacedOutputs)> {
    let (args, list) = PlacedOutputs::split(input).ok()?;
    list.ranges()
        .iter()
        .all(|r| {
            let (at, len, dest) = (r.at.get() as usize, r.len.get() as usize, r.dest.get());
            at + len <= cap && off + dest as usize + len <= result_len
        })
        .then_some((args.len(), list))
}

/// What the executor answers for a placed invocation whose function returned `Ok` with `len`
/// bytes of output: `Ok` with the bytes before the first range, or `BadCall` with nothing when
/// the output does not cover every range.
pub fn placed_answer(list: &PlacedOutputs, len: usize) -> (Status, usize) {
    let ranges = list.ranges();
    match ranges.last() {
        Some(r) if r.at.get() as usize + r.len.get() as usize > len => (Status::BadCall, 0),
        _ => (
            Status::Ok,
            ranges.first().map_or(len, |r| r.at.get() as usize),
        ),
    }
}

/// The checks of `docs/protocol.md` ("The worker validates"), over TCP.
pub fn handling(
    imm: u32,
    len: usize,
    slot: &[u8],
    slots: u32,
    slot_size: usize,
    result_len: usize,
    functions: usize,
) -> Handling {
    use zerocopy::FromBytes;
    if imm >= slots || len < HEADER_LEN || len > slot_size {
        return Handling::Drop;
    }
    let h = InvocationHeader::read_from_bytes(&slot[..HEADER_LEN]).expect("24 bytes");
    let id = h.id.get();
    if id > rfaas::wire::MAX_INVOCATION_ID {
        return Handling::Drop;
    }
    let (off, cap) = (h.result_offset.get() as usize, h.result_cap.get() as usize);
    let refuse = |status| Handling::Refuse { id, status };
    let input_len = h.input_len.get() as usize;
    // `FLAG_SMALL_RESULT` changes nothing over TCP (the output is staged anyway); other bits
    // but `FLAG_PLACED` are refused.
    if off + cap > result_len || cap > slot_size || h.flags.get() & !KNOWN_FLAGS != 0 {
        return refuse(Status::BadCall);
    } else if input_len > slot_size - HEADER_LEN {
        return refuse(Status::InputTooLarge);
    } else if HEADER_LEN + input_len > len {
        return refuse(Status::InputTooShort);
    }
    let input = &slot[HEADER_LEN..HEADER_LEN + input_len];
    let (args_len, placed) = if h.flags.get() & FLAG_PLACED == 0 {
        (input_len, None)
    } else {
        match placed_list(input, off, cap, result_len) {
            Some((args_len, list)) => (args_len, Some(list)),
            None => return refuse(Status::BadCall),
        }
    };
    if h.function.get() as usize >= functions {
        refuse(Status::UnknownFunction)
    } else {
        Handling::Invoke {
            header: h,
            args_len,
            placed,
        }
    }
}

/// Asserts the calling-convention facts every outcome must satisfy, whatever the input.
pub fn check_outcome(o: &Outcome, cap: usize, output: &[u8]) {
    let status = Status::from_u32(o.status)
        .unwrap_or_else(|| panic!("trampoline returned unknown status {}", o.status));
    assert!(o.len <= cap, "output length {} above capacity {cap}", o.len);
    if status.has_message() {
        std::str::from_utf8(&output[..o.len])
            .unwrap_or_else(|e| panic!("{status:?} message is not UTF-8: {e}"));
    } else if status != Status::Ok {
        assert_eq!(o.len, 0, "{status:?} with {} bytes of output", o.len);
    }
}

/// `align_up` for the model (re-exported so targets need not name `rfaas::wire`).
pub fn next_slot(n: usize) -> usize {
    align_up(n).expect("small")
}

/// [`BUFFER_ALIGN`], for targets.
pub const ALIGN: usize = BUFFER_ALIGN;

/// Asserts `actual == expected` byte for byte, except that two NaNs in a floating-point output
/// slice are equal whatever their payloads (NaN payloads may depend on how code was compiled).
pub fn assert_same_output(shape: &Shape, args: Option<&Args>, expected: &[u8], actual: &[u8]) {
    assert_eq!(expected.len(), actual.len());
    if expected == actual {
        return;
    }
    let mut float_ranges = Vec::new();
    if let Some(args) = args {
        for (p, r) in shape.params.iter().zip(&args.ranges) {
            if let Param::Out(e) = p
                && (e.size == 4 || e.size == 8)
                && shape.name != "echo"
            {
                float_ranges.push((r.clone(), e.size));
            }
        }
    }
    let mut i = 0;
    while i < expected.len() {
        if let Some((r, size)) = float_ranges.iter().find(|(r, _)| r.contains(&i)) {
            let at = i - (i - r.start) % size;
            let (e, a) = (&expected[at..at + size], &actual[at..at + size]);
            let both_nan = if *size == 8 {
                f64::from_ne_bytes(e.try_into().unwrap()).is_nan()
                    && f64::from_ne_bytes(a.try_into().unwrap()).is_nan()
            } else {
                f32::from_ne_bytes(e.try_into().unwrap()).is_nan()
                    && f32::from_ne_bytes(a.try_into().unwrap()).is_nan()
            };
            assert!(
                e == a || both_nan,
                "`{}`: output bytes {at}..{} are {a:?}, expected {e:?}",
                shape.name,
                at + size
            );
            i = at + size;
        } else {
            assert_eq!(
                actual[i], expected[i],
                "`{}`: output byte {i} differs",
                shape.name
            );
            i += 1;
        }
    }
}
