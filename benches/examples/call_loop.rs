//! A hot `noop` loop against a running executor, for counting instructions per call (see
//! docs/performance.md, "How to run"): the client under callgrind, or the executor under it
//! with this client native.
//!
//! ```text
//! call_loop SOCKET [CALLS]     # 1,000 untimed warm-up calls, then CALLS (default 20,000)
//! ```

use anyhow::{Context, Result};
use functions_example as fx;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let socket = args.next().context("usage: call_loop SOCKET [CALLS]")?;
    let calls: usize = match args.next() {
        Some(n) => n.parse().context("CALLS must be a number")?,
        None => 20_000,
    };
    let lease = rfaas::Lease::connect(std::path::Path::new(&socket))?;
    for _ in 0..1_000 + calls {
        fx::noop::invoke(&lease).wait()?;
    }
    Ok(())
}
