//! Loading a function library (cdylib) and calling its trampolines through the checked C ABI.

use rfaas::Status;
use rfaas::abi::{Manifest, RawEntry, Trampoline};
use rfaas::wire::{
    ABI_VERSION, BUFFER_ALIGN, MANIFEST_MAGIC, MANIFEST_SYMBOL, PANIC_STRATEGY_SYMBOL,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Most functions one library may declare.
pub const MAX_FUNCTIONS: u32 = 65_536;
/// Longest accepted function name or signature text, in bytes.
pub use rfaas::call::MAX_TEXT;

/// Why a library could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file does not exist or cannot be read.
    #[error("{path}: cannot read")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a shared library for this machine at all, by its ELF header (checked
    /// before the dynamic loader sees it): no ELF header, another word size, byte order or
    /// machine, an executable or object file. Its bytes are at fault, wherever it is loaded.
    #[error("{path}: not a shared library for this machine: {reason}")]
    NotElf {
        /// The file.
        path: PathBuf,
        /// What its header says instead.
        reason: String,
    },
    /// The dynamic loader refused a file whose ELF header is right for this machine (a
    /// dependency missing here, segments that do not fit the memory limit, unresolved symbols,
    /// a damaged file).
    #[error("{path}: not a loadable shared library: {reason}")]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// What the dynamic loader said.
        reason: String,
    },
    /// The library does not export `rfaas_manifest`.
    #[error(
        "{path}: not an rfaas function library: no `{symbol}` symbol (was it built with `#[rfaas::function]`?)"
    )]
    MissingManifest {
        /// The file.
        path: PathBuf,
        /// The symbol looked for.
        symbol: &'static str,
    },
    /// The manifest pointer is null or its magic number is wrong.
    #[error("{path}: `rfaas_manifest` returned an invalid manifest ({reason})")]
    BadManifest {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The library was built for another ABI version.
    #[error(
        "{path}: built for rfaas ABI version {found}, this executor speaks version {expected}: \
         rebuild the library against this executor's rfaas (`cargo xtask package`)"
    )]
    AbiVersion {
        /// The file.
        path: PathBuf,
        /// Version in the library.
        found: u32,
        /// Version of this executor.
        expected: u32,
    },
    /// An entry has a null pointer, an over-long or non-UTF-8 name.
    #[error("{path}: manifest entry {index} is invalid: {reason}")]
    BadEntry {
        /// The file.
        path: PathBuf,
        /// Position in the manifest.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Two functions share a name.
    #[error(
        "{path}: function name `{name}` appears more than once (rename one: names identify functions on the wire)"
    )]
    DuplicateFunction {
        /// The file.
        path: PathBuf,
        /// The repeated name.
        name: String,
    },
}

/// One function of a loaded library.
#[derive(Debug, Clone)]
pub struct Function {
    /// Index in the manifest: the function index on the wire.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Rust signature text.
    pub signature: String,
    /// Layout fingerprint.
    pub fingerprint: u64,
    trampoline: Trampoline,
}

impl Function {
    /// Address of the trampoline (for diagnostics: which image it lives in).
    pub fn trampoline_address(&self) -> usize {
        self.trampoline as usize
    }
}

/// A loaded, validated function library. Never unloaded.
#[derive(Debug)]
pub struct FunctionLibrary {
    path: PathBuf,
    functions: Vec<Function>,
    unwinds: Option<bool>,
}

/// Why the executor did not call a function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvokeError {
    /// The index names no function.
    #[error("function index {index} out of range (library has {count})")]
    UnknownFunction {
        /// Requested index.
        index: u32,
        /// Number of functions.
        count: usize,
    },
    /// A buffer does not start on an 8-byte boundary.
    #[error("{which} buffer is not 8-byte aligned")]
    Misaligned {
        /// `"input"` or `"output"`.
        which: &'static str,
    },
    /// The input and output buffers overlap.
    #[error("input and output buffers overlap")]
    Overlap,
    /// The trampoline broke the ABI: it reported a status that does not exist.
    #[error("library broke the ABI: unknown status {0}")]
    UnknownStatus(u32),
    /// The trampoline broke the ABI: it reported more output than the buffer holds.
    #[error("library broke the ABI: output length {len} exceeds the {cap}-byte buffer")]
    LengthPastBuffer {
        /// The length it reported.
        len: usize,
        /// The output buffer's length.
        cap: usize,
    },
}

impl InvokeError {
    /// The wire status an executor answers with for this refusal.
    pub fn status(&self) -> Status {
        match self {
            InvokeError::UnknownFunction { .. } => Status::UnknownFunction,
            InvokeError::Misaligned { .. } => Status::Misaligned,
            InvokeError::Overlap
            | InvokeError::UnknownStatus(_)
            | InvokeError::LengthPastBuffer { .. } => Status::BadCall,
        }
    }
}

/// What a trampoline reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The function's status.
    pub status: Status,
    /// Bytes of the output buffer that hold the result or message.
    pub output_len: usize,
}

impl FunctionLibrary {
    /// Loads `path` with `RTLD_NOW | RTLD_LOCAL`, reads and validates its manifest.
    ///
    /// A file whose ELF header is not that of a shared library for this machine is refused
    /// ([`LoadError::NotElf`]) before the dynamic loader sees it.
    ///
    /// The library stays mapped for the rest of the process. Loading runs the library's
    /// initializers: only load libraries you would run.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref().to_path_buf();
        // A clear error for missing or unreadable files, and for files that are no shared
        // library for this machine, before the loader's terse one.
        let file = std::fs::File::open(&path).map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        check_elf_header(&path, &file)?;
        drop(file);
        // dlopen searches the library path for names without a slash; always pass a path.
        let load_path = if path.components().count() == 1 {
            Path::new(".").join(&path)
        } else {
            path.clone()
        };
        Self::load(path, &load_path)
    }

    /// [`FunctionLibrary::open`] of the file open as `file` (found at `path`, the name errors
    /// and [`FunctionLibrary::path`] give): the very bytes read through `file` (to check their
    /// hash, say) are the ones loaded, whatever happens to `path` meanwhile. Loaded through
    /// `/proc/self/fd`; the descriptor stays open for the rest of the process (the loader knows
    /// the library by that name, which must never name another file), as the library stays
    /// loaded. Without `/proc`, `path` is loaded.
    pub fn open_file(file: std::fs::File, path: impl AsRef<Path>) -> Result<Self, LoadError> {
        use std::os::fd::IntoRawFd;
        let path = path.as_ref().to_path_buf();
        if !Path::new("/proc/self/fd").is_dir() {
            return Self::open(path);
        }
        check_elf_header(&path, &file)?;
        let fd = file.into_raw_fd();
        Self::load(path, Path::new(&format!("/proc/self/fd/{fd}")))
    }

    /// Loads `load_path`, naming it `path`.
    fn load(path: PathBuf, load_path: &Path) -> Result<Self, LoadError> {
        let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
        // SAFETY: loading a library runs its initializers; the caller chose to load this file
        // (documented on `open`). Nothing is assumed about the library until it is validated.
        let lib = unsafe { libloading::os::unix::Library::open(Some(load_path), flags) }.map_err(
            |e| LoadError::NotALibrary {
                path: path.clone(),
                reason: loader_reason(&e),
            },
        )?;
        // Never unloaded (never dropped): trampolines and manifest strings must stay valid for
        // the process. Not leaked on the heap either (a leak checker would report it): the
        // handle is not needed past the manifest and the symbols read below.
        let lib = std::mem::ManuallyDrop::new(lib);
        let symbol = format!("{MANIFEST_SYMBOL}\0");
        // A library exporting this name with another type is not an rfaas library and is
        // outside what we can defend against.
        let manifest_fn: libloading::os::unix::Symbol<extern "C" fn() -> *const Manifest> =
            // SAFETY: `rfaas::abi` declares the symbol as `extern "C" fn() -> *const Manifest`.
            unsafe { lib.get(symbol.as_bytes()) }.map_err(|_| LoadError::MissingManifest {
                path: path.clone(),
                symbol: MANIFEST_SYMBOL,
            })?;
        let manifest = manifest_fn();
        let functions = read_manifest(&path, manifest)?;
        let strategy = format!("{PANIC_STRATEGY_SYMBOL}\0");
        // SAFETY: `rfaas::abi` declares the symbol as a `u8` static, which lives as long as
        // the library (never unloaded); a byte has no invalid values.
        let unwinds = unsafe { lib.get::<*const u8>(strategy.as_bytes()) }
            .ok()
            .map(|byte| {
                // SAFETY: as above: the symbol's address is a live, aligned `u8`.
                unsafe { **byte != 0 }
            });
        if unwinds == Some(false) {
            tracing::warn!(
                library = %path.display(),
                "built with panic = \"abort\": a panicking function ends the executor process \
                 (and its lease) instead of answering `Panic`; build with panic = \"unwind\" \
                 to keep the executor serving"
            );
        }
        Ok(FunctionLibrary {
            path,
            functions,
            unwinds,
        })
    }

    /// A library of no functions, for unit tests of the serving loop.
    #[cfg(test)]
    pub(crate) fn empty() -> Self {
        FunctionLibrary {
            path: PathBuf::new(),
            functions: Vec::new(),
            unwinds: None,
        }
    }

    /// Whether a panicking function of this library is caught and answered `Panic`
    /// (`Some(true)`, built with `panic = "unwind"`), or ends the executor process
    /// (`Some(false)`, `panic = "abort"`); `None` for a library that does not say (not built
    /// with rfaas, such as a hand-written C library).
    pub fn unwinds(&self) -> Option<bool> {
        self.unwinds
    }

    /// The file this library was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every function, in manifest (index) order.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// Looks a function up by name.
    pub fn find(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// Calls function `index` on `input`, writing its result into `output`.
    ///
    /// Both buffers must be 8-byte aligned and must not overlap. A refusal comes back as
    /// `Err`, a function failure as an [`Outcome`] with an error status. Nothing is allocated,
    /// refusals included: a serving loop can afford the error on its hot path.
    #[inline]
    pub fn invoke(
        &self,
        index: u32,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<Outcome, InvokeError> {
        let f = self
            .functions
            .get(index as usize)
            .ok_or(InvokeError::UnknownFunction {
                index,
                count: self.functions.len(),
            })?;
        if !(input.as_ptr() as usize).is_multiple_of(BUFFER_ALIGN) {
            return Err(InvokeError::Misaligned { which: "input" });
        }
        if !(output.as_ptr() as usize).is_multiple_of(BUFFER_ALIGN) {
            return Err(InvokeError::Misaligned { which: "output" });
        }
        let (i0, i1) = (
            input.as_ptr() as usize,
            input.as_ptr() as usize + input.len(),
        );
        let (o0, o1) = (
            output.as_ptr() as usize,
            output.as_ptr() as usize + output.len(),
        );
        if i0 < o1 && o0 < i1 {
            return Err(InvokeError::Overlap);
        }
        let mut output_len = 0usize;
        // SAFETY: `input` and `output` are live, non-overlapping (checked above) borrows valid
        // for their lengths, `output` exclusively; `output_len` is a local. That is the
        // `Trampoline` contract. The trampoline pointer was checked non-null at load time.
        let raw = unsafe {
            (f.trampoline)(
                input.as_ptr(),
                input.len(),
                output.as_mut_ptr(),
                output.len(),
                &mut output_len,
            )
        };
        let status = Status::from_u32(raw).ok_or(InvokeError::UnknownStatus(raw))?;
        if output_len > output.len() {
            return Err(InvokeError::LengthPastBuffer {
                len: output_len,
                cap: output.len(),
            });
        }
        Ok(Outcome { status, output_len })
    }

    /// [`FunctionLibrary::invoke`] for a serving loop: a refusal becomes the status the
    /// executor answers with ([`InvokeError::status`]) and an empty output.
    #[inline]
    pub fn call(&self, index: u32, input: &[u8], output: &mut [u8]) -> Outcome {
        self.invoke(index, input, output)
            .unwrap_or_else(|e| Outcome {
                status: e.status(),
                output_len: 0,
            })
    }
}

/// Bytes of an ELF header of this target's word size (`Elf64_Ehdr`, `Elf32_Ehdr`).
#[cfg(target_pointer_width = "64")]
const ELF_HEADER_LEN: usize = 64;
#[cfg(target_pointer_width = "32")]
const ELF_HEADER_LEN: usize = 52;
/// `EI_CLASS` of this target: `ELFCLASS64` or `ELFCLASS32`.
#[cfg(target_pointer_width = "64")]
const ELF_CLASS: u8 = 2;
#[cfg(target_pointer_width = "32")]
const ELF_CLASS: u8 = 1;
/// `EI_DATA` of this target: `ELFDATA2LSB` or `ELFDATA2MSB`.
#[cfg(target_endian = "little")]
const ELF_DATA: u8 = 1;
#[cfg(target_endian = "big")]
const ELF_DATA: u8 = 2;
/// `e_machine` of this target, where known (`EM_X86_64`, `EM_AARCH64`); elsewhere the machine
/// is left to the dynamic loader.
#[cfg(target_arch = "x86_64")]
const ELF_MACHINE: Option<u16> = Some(62);
#[cfg(target_arch = "aarch64")]
const ELF_MACHINE: Option<u16> = Some(183);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ELF_MACHINE: Option<u16> = None;
/// `ET_DYN`: a shared object.
const ET_DYN: u16 = 3;

/// Checks that `file` (at `path`, for errors) starts with the ELF header of a shared library
/// for this machine: what the dynamic loader would refuse on any node of this kind, told
/// apart from its refusals that may be this process's circumstances (a missing dependency,
/// too little memory). Reads at offset 0 without moving the file's position.
fn check_elf_header(path: &Path, file: &std::fs::File) -> Result<(), LoadError> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; ELF_HEADER_LEN];
    let mut len = 0;
    while len < header.len() {
        match file.read_at(&mut header[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(LoadError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    elf_header_fault(&header[..len]).map_or(Ok(()), |reason| {
        Err(LoadError::NotElf {
            path: path.to_path_buf(),
            reason,
        })
    })
}

/// What makes `header` (a file's first bytes, up to [`ELF_HEADER_LEN`]) not the header of a
/// shared library for this machine, if anything.
fn elf_header_fault(header: &[u8]) -> Option<String> {
    if header.is_empty() {
        return Some("an empty file".to_owned());
    }
    if !header.starts_with(b"\x7fELF") {
        return Some(if header.len() < 4 && b"\x7fELF".starts_with(header) {
            format!("file too short ({} bytes)", header.len())
        } else {
            "no ELF header (a text file?)".to_owned()
        });
    }
    if header.len() < ELF_HEADER_LEN {
        return Some(format!(
            "file too short for an ELF header ({} bytes, the header is {ELF_HEADER_LEN})",
            header.len()
        ));
    }
    match header[4] {
        c if c == ELF_CLASS => {}
        1 => return Some("a 32-bit ELF file".to_owned()),
        2 => return Some("a 64-bit ELF file".to_owned()),
        c => return Some(format!("an ELF file of unknown class {c}")),
    }
    match header[5] {
        d if d == ELF_DATA => {}
        1 => return Some("a little-endian ELF file".to_owned()),
        2 => return Some("a big-endian ELF file".to_owned()),
        d => return Some(format!("an ELF file of unknown byte order {d}")),
    }
    // Same byte order as this machine's (checked above).
    let half = |at: usize| u16::from_ne_bytes([header[at], header[at + 1]]);
    match half(16) {
        ET_DYN => {}
        1 => return Some("an ELF object file (.o), not a shared library".to_owned()),
        2 => return Some("an ELF executable, not a shared library".to_owned()),
        4 => return Some("an ELF core dump, not a shared library".to_owned()),
        t => return Some(format!("an ELF file of type {t}, not a shared library")),
    }
    let machine = half(18);
    match ELF_MACHINE {
        Some(ours) if machine != ours => Some(format!(
            "built for another machine (e_machine {machine}, this one's is {ours})"
        )),
        _ => None,
    }
}

fn loader_reason(e: &libloading::Error) -> String {
    match e {
        libloading::Error::DlOpen { desc } => format!("{desc:?}").trim_matches('"').to_owned(),
        other => other.to_string(),
    }
}

fn read_manifest(path: &Path, manifest: *const Manifest) -> Result<Vec<Function>, LoadError> {
    let bad = |reason: &str| LoadError::BadManifest {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    if manifest.is_null() {
        return Err(bad("null pointer"));
    }
    if !(manifest as usize).is_multiple_of(align_of::<Manifest>()) {
        return Err(bad("misaligned pointer"));
    }
    // SAFETY: non-null and aligned (checked); the library promises a `Manifest` that lives as
    // long as it is loaded (forever). Only `magic` and `abi_version` are interpreted before the
    // version is known to match.
    let m = unsafe { &*manifest };
    if m.magic != MANIFEST_MAGIC {
        return Err(bad(&format!("magic {:#018x}", m.magic)));
    }
    if m.abi_version != ABI_VERSION {
        return Err(LoadError::AbiVersion {
            path: path.to_path_buf(),
            found: m.abi_version,
            expected: ABI_VERSION,
        });
    }
    if m.count > MAX_FUNCTIONS {
        return Err(bad(&format!(
            "{} entries (at most {MAX_FUNCTIONS})",
            m.count
        )));
    }
    let raw: &[RawEntry] = if m.count == 0 {
        &[]
    } else {
        if m.entries.is_null() || !(m.entries as usize).is_multiple_of(align_of::<RawEntry>()) {
            return Err(bad("null or misaligned entry array"));
        }
        // SAFETY: non-null, aligned, `count` entries as the ABI defines; lives forever.
        unsafe { std::slice::from_raw_parts(m.entries, m.count as usize) }
    };
    let mut seen = HashSet::new();
    let mut functions = Vec::with_capacity(raw.len());
    for (index, e) in raw.iter().enumerate() {
        let bad_entry = |reason: String| LoadError::BadEntry {
            path: path.to_path_buf(),
            index,
            reason,
        };
        let name = text(e.name, e.name_len).map_err(|r| bad_entry(format!("name: {r}")))?;
        let signature =
            text(e.signature, e.signature_len).map_err(|r| bad_entry(format!("signature: {r}")))?;
        let trampoline = e
            .trampoline
            .ok_or_else(|| bad_entry("null trampoline".to_owned()))?;
        if name.is_empty() {
            return Err(bad_entry("empty name".to_owned()));
        }
        if !seen.insert(name.clone()) {
            return Err(LoadError::DuplicateFunction {
                path: path.to_path_buf(),
                name,
            });
        }
        functions.push(Function {
            index: index as u32,
            name,
            signature,
            fingerprint: e.fingerprint,
            trampoline,
        });
    }
    Ok(functions)
}

fn text(ptr: *const u8, len: usize) -> Result<String, String> {
    if len > MAX_TEXT {
        return Err(format!("{len} bytes long (at most {MAX_TEXT})"));
    }
    if len == 0 {
        return Ok(String::new());
    }
    if ptr.is_null() {
        return Err("null pointer".to_owned());
    }
    // SAFETY: non-null, `len` bytes of a `'static` string in the never-unloaded library (ABI).
    let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|e| format!("not UTF-8: {e}"))
}

#[cfg(test)]
mod tests;
