//! The C ABI between a function library (cdylib) and the executor that loads it.
//!
//! A library built with `#[rfaas::function]` exports exactly one symbol,
//! [`MANIFEST_SYMBOL`](crate::wire::MANIFEST_SYMBOL) (`rfaas_manifest`), an `extern "C"` function
//! returning a pointer to a [`Manifest`]. The manifest is built from a linkme distributed slice
//! that lives inside the library's own image: the host's statics are never consulted.
//!
//! Calling convention of a [`Trampoline`]:
//! `status = trampoline(input, input_len, output, output_cap, &mut output_len)`.
//! The trampoline validates the input layout itself, never unwinds, and returns a
//! [`Status`](crate::wire::Status) number.

use crate::wire::{ABI_VERSION, MANIFEST_MAGIC};
use std::sync::OnceLock;

/// Signature of a generated trampoline.
///
/// # Safety
///
/// The caller guarantees that `input` points to `input_len` readable bytes and `output` to
/// `output_cap` writable bytes, that the two ranges do not overlap and that nothing else in
/// this process accesses them during the call, and that `output_len` is valid for a write.
/// Alignment and every byte of the input are checked by the trampoline. The input may be a
/// peer's shared memory that the peer writes during the call: the trampoline copies the fixed
/// argument block out with a volatile read and checks and uses only that copy (slice
/// descriptors included), so such writes can change the bytes of input slices the function
/// reads (documented in docs/functions.md), never where the trampoline reads or writes.
pub type Trampoline = unsafe extern "C" fn(
    input: *const u8,
    input_len: usize,
    output: *mut u8,
    output_cap: usize,
    output_len: *mut usize,
) -> u32;

/// One registered function, as the macro records it in the library's distributed slice.
#[derive(Debug)]
pub struct FunctionEntry {
    /// The function's name (its Rust identifier).
    pub name: &'static str,
    /// The Rust signature as text, for humans (`inspect`, package manifests).
    pub signature: &'static str,
    /// The layout fingerprint the client must present.
    pub fingerprint: u64,
    /// The C-ABI entry point.
    pub trampoline: Trampoline,
}

/// Every function of the image this code is linked into (filled by `#[rfaas::function]`).
#[linkme::distributed_slice]
pub static FUNCTIONS: [FunctionEntry];

/// The manifest a library hands its executor. `#[repr(C)]`; only `magic` and `abi_version`
/// are read before the version is known to match.
#[repr(C)]
#[derive(Debug)]
pub struct Manifest {
    /// [`MANIFEST_MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`] the library was built with.
    pub abi_version: u32,
    /// Number of entries behind `entries`.
    pub count: u32,
    /// `count` entries, sorted by name; the index in this array is the function index.
    pub entries: *const RawEntry,
}

/// One function in the C-ABI manifest.
#[repr(C)]
#[derive(Debug)]
pub struct RawEntry {
    /// UTF-8 name.
    pub name: *const u8,
    /// Length of `name` in bytes.
    pub name_len: usize,
    /// UTF-8 signature text.
    pub signature: *const u8,
    /// Length of `signature` in bytes.
    pub signature_len: usize,
    /// Layout fingerprint.
    pub fingerprint: u64,
    /// Entry point (never null in a library built by rfaas; checked by the loader).
    pub trampoline: Option<Trampoline>,
}

struct Built {
    manifest: Manifest,
    _entries: Vec<RawEntry>,
}

// SAFETY: `Built` is immutable after construction; its raw pointers point into `_entries`
// (owned, never modified) and into `'static` strings, so sharing it across threads is sound.
unsafe impl Sync for Built {}
// SAFETY: as above; nothing in `Built` is tied to the thread that built it.
unsafe impl Send for Built {}

/// The functions of this image, sorted by name (the order that defines function indices).
pub fn registered_functions() -> Vec<&'static FunctionEntry> {
    let mut all: Vec<&'static FunctionEntry> = FUNCTIONS.iter().collect();
    all.sort_by(|a, b| a.name.cmp(b.name));
    all
}

fn build() -> Built {
    let entries: Vec<RawEntry> = registered_functions()
        .into_iter()
        .map(|e| RawEntry {
            name: e.name.as_ptr(),
            name_len: e.name.len(),
            signature: e.signature.as_ptr(),
            signature_len: e.signature.len(),
            fingerprint: e.fingerprint,
            trampoline: Some(e.trampoline),
        })
        .collect();
    Built {
        manifest: Manifest {
            magic: MANIFEST_MAGIC,
            abi_version: ABI_VERSION,
            count: u32::try_from(entries.len()).unwrap_or(u32::MAX),
            entries: entries.as_ptr(),
        },
        _entries: entries,
    }
}

/// The exported panic strategy of every function library
/// ([`PANIC_STRATEGY_SYMBOL`](crate::wire::PANIC_STRATEGY_SYMBOL)): the whole build's, since
/// `panic` is a profile setting of every crate in it.
#[unsafe(no_mangle)]
pub static rfaas_panic_unwinds: u8 = cfg!(panic = "unwind") as u8;

/// The exported manifest symbol of every function library.
///
/// Returns a pointer to a manifest that lives as long as the library stays loaded (forever:
/// executors never unload). Never unwinds.
#[unsafe(no_mangle)]
pub extern "C" fn rfaas_manifest() -> *const Manifest {
    static BUILT: OnceLock<Built> = OnceLock::new();
    &BUILT.get_or_init(build).manifest
}
