//! Example function library: real kernels made remotely invocable with `#[rfaas::function]`.
//!
//! Built as a `cdylib` it is loaded by executors (`cargo xtask package`); as an `rlib` it gives
//! clients the typed stubs (`functions_example::axpy::call(..)`) and lets them run the same
//! functions locally.

use std::fmt;

/// Does nothing: the floor of invocation latency.
#[rfaas::function]
pub fn noop() {}

/// Copies `input` into the start of `output` and returns how many bytes were copied.
///
/// `output` may be longer; only its first (returned count) bytes are meaningful. The function
/// does not write the rest, so called remotely the rest comes back unspecified: output slices
/// are write-only (see [`rfaas::function`](macro@rfaas::function)), the caller's bytes are not
/// sent and unwritten bytes hold whatever the executor's output area held. Called locally, the
/// rest keeps its contents.
#[rfaas::function]
pub fn echo(input: &[u8], output: &mut [u8]) -> Result<u64, LengthError> {
    let found = output.len();
    let dst = output.get_mut(..input.len()).ok_or(LengthError {
        what: "echo output",
        expected: input.len(),
        found,
    })?;
    dst.copy_from_slice(input);
    Ok(input.len() as u64)
}

/// `out = a * x + y` (BLAS daxpy, out of place).
#[rfaas::function]
pub fn axpy(a: f64, x: &[f64], y: &[f64], out: &mut [f64]) -> Result<(), LengthError> {
    check_len("y", x.len(), y.len())?;
    check_len("out", x.len(), out.len())?;
    for ((o, xi), yi) in out.iter_mut().zip(x).zip(y) {
        *o = a.mul_add(*xi, *yi);
    }
    Ok(())
}

/// `c = a * b` for row-major `n x n` matrices.
#[rfaas::function]
pub fn matmul(n: u32, a: &[f64], b: &[f64], c: &mut [f64]) -> Result<(), LengthError> {
    let n = n as usize;
    let nn = n.checked_mul(n).ok_or(LengthError {
        what: "n * n",
        expected: usize::MAX,
        found: n,
    })?;
    check_len("a", nn, a.len())?;
    check_len("b", nn, b.len())?;
    check_len("c", nn, c.len())?;
    c.fill(0.0);
    // i-k-j order: streams through rows of `b` and `c`.
    for i in 0..n {
        let row = &mut c[i * n..(i + 1) * n];
        for k in 0..n {
            let aik = a[i * n + k];
            for (cij, bkj) in row.iter_mut().zip(&b[k * n..(k + 1) * n]) {
                *cij += aik * bkj;
            }
        }
    }
    Ok(())
}

/// One European option, as in PARSEC's blackscholes input (`OptionData`).
#[derive(Clone, Copy, Debug, PartialEq, rfaas::Payload)]
#[repr(C)]
pub struct OptionData {
    /// Spot price of the underlying.
    pub spot: f32,
    /// Strike price.
    pub strike: f32,
    /// Risk-free interest rate.
    pub rate: f32,
    /// Volatility.
    pub volatility: f32,
    /// Time to maturity in years.
    pub time: f32,
    /// [`OptionData::CALL`] or [`OptionData::PUT`].
    pub kind: u32,
}

impl OptionData {
    /// A call option.
    pub const CALL: u32 = 0;
    /// A put option.
    pub const PUT: u32 = 1;
}

/// Cumulative normal distribution, the polynomial approximation PARSEC's kernel uses
/// (Abramowitz & Stegun 26.2.17).
fn cndf(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let neg = x < 0.0;
    let x = x.abs();
    let k = 1.0 / (1.0 + 0.231_641_9 * x);
    let poly = k
        * (0.319_381_53
            + k * (-0.356_563_78 + k * (1.781_478 + k * (-1.821_256 + k * 1.330_274_4))));
    let n = 1.0 - INV_SQRT_2PI * (-0.5 * x * x).exp() * poly;
    if neg { 1.0 - n } else { n }
}

/// Black-Scholes price of one option (no dividends), as PARSEC's `BlkSchlsEqEuroNoDiv`.
pub fn black_scholes_one(o: &OptionData) -> f32 {
    let sqrt_t = o.time.sqrt();
    let d1 = ((o.spot / o.strike).ln() + (o.rate + 0.5 * o.volatility * o.volatility) * o.time)
        / (o.volatility * sqrt_t);
    let d2 = d1 - o.volatility * sqrt_t;
    let discounted = o.strike * (-o.rate * o.time).exp();
    if o.kind == OptionData::CALL {
        o.spot * cndf(d1) - discounted * cndf(d2)
    } else {
        discounted * cndf(-d2) - o.spot * cndf(-d1)
    }
}

/// Prices every option (the PARSEC blackscholes kernel); `prices[i]` for `options[i]`.
#[rfaas::function]
pub fn black_scholes(options: &[OptionData], prices: &mut [f32]) -> Result<(), LengthError> {
    check_len("prices", options.len(), prices.len())?;
    for (p, o) in prices.iter_mut().zip(options) {
        *p = black_scholes_one(o);
    }
    Ok(())
}

/// Sine and cosine of every element: two output slices from one input.
#[rfaas::function]
pub fn sincos(xs: &[f64], sin: &mut [f64], cos: &mut [f64]) -> Result<(), LengthError> {
    check_len("sin", xs.len(), sin.len())?;
    check_len("cos", xs.len(), cos.len())?;
    for ((x, s), c) in xs.iter().zip(sin.iter_mut()).zip(cos.iter_mut()) {
        (*s, *c) = x.sin_cos();
    }
    Ok(())
}

/// Parses an unsigned decimal number from ASCII digits; rejects anything else.
#[rfaas::function]
pub fn parse_decimal(text: &[u8]) -> Result<u64, String> {
    if text.is_empty() {
        return Err("empty input".to_owned());
    }
    let mut v: u64 = 0;
    for (i, &c) in text.iter().enumerate() {
        if !c.is_ascii_digit() {
            return Err(format!("byte {i} ({c:#04x}) is not a decimal digit"));
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
            .ok_or_else(|| format!("{} digits overflow u64", text.len()))?;
    }
    Ok(v)
}

/// Failure injection for tests and demos of fault handling: `mode` 0 returns `value`,
/// 1 panics with a message naming `value`, 2 sleeps `value` milliseconds (at most 60 s) and
/// returns it (a slow function), 3 allocates and touches `value` MiB (at most 64 GiB) and
/// returns the bytes it touched (a memory-hungry function), 4 starts `sleep value` (seconds)
/// and returns its process id without waiting for it (a function that leaves a process
/// behind; 0 if it could not start one), 5 does the same in a process group of its own (a
/// process that escapes its executor's group), 6 writes `value` MiB (at most 64 GiB) into a
/// memory file and returns the bytes it wrote (memory the executor's `RLIMIT_DATA` does not
/// count, which a lease's cgroup does), 7 asks, from a new thread, to run on every online CPU
/// and returns how many CPUs it may then run on (a function that tries to leave its lease's
/// cores); any other mode panics.
#[rfaas::function]
pub fn fault(mode: u32, value: u64) -> u64 {
    use std::os::unix::process::CommandExt;
    match mode {
        0 => value,
        2 => {
            std::thread::sleep(std::time::Duration::from_millis(value.min(60_000)));
            value
        }
        3 => {
            let bytes = vec![1u8; (value.min(64 << 10) as usize) << 20];
            bytes.iter().map(|&b| u64::from(b)).sum()
        }
        4 | 5 => {
            let mut sleep = std::process::Command::new("sleep");
            sleep
                .arg(value.to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null());
            if mode == 5 {
                sleep.process_group(0);
            }
            sleep.spawn().map_or(0, |c| u64::from(c.id()))
        }
        6 => {
            use std::io::Write;
            let mib = value.min(64 << 10);
            // Sized at once (no pages until written), since its size is sealed.
            let Ok(fd) = rfaas::sys::memfd("rfaas-fault", (mib << 20) as usize) else {
                return 0;
            };
            let mut file = std::fs::File::from(fd);
            let chunk = vec![1u8; 1 << 20];
            let mut wrote = 0;
            for _ in 0..mib {
                if file.write_all(&chunk).is_err() {
                    break;
                }
                wrote += chunk.len() as u64;
            }
            wrote
        }
        7 => std::thread::spawn(|| {
            rfaas::sys::unpin();
            rfaas::sys::allowed_cpus().len() as u64
        })
        .join()
        .unwrap_or(0),
        _ => panic!("fault injected: value {value}"),
    }
}

/// A slice whose length does not match the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LengthError {
    /// Which argument.
    pub what: &'static str,
    /// The length it should have.
    pub expected: usize,
    /// The length it has.
    pub found: usize,
}

impl fmt::Display for LengthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} has length {}, expected {}",
            self.what, self.found, self.expected
        )
    }
}

impl std::error::Error for LengthError {}

fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), LengthError> {
    if expected == found {
        Ok(())
    } else {
        Err(LengthError {
            what,
            expected,
            found,
        })
    }
}
