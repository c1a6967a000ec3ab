//! Compile-time layout fingerprints: a 64-bit FNV-1a hash built in `const` context.
//!
//! The `#[rfaas::function]` macro folds the function name, every parameter's name, kind, type
//! text, size, alignment and [`Payload::SHAPE`](crate::Payload::SHAPE), and the return type into
//! one of these. Client and executor compare fingerprints before calling, so a client built
//! against a different version of a function library is refused instead of misreading memory.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// An incremental FNV-1a hasher usable in `const` items.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// Starts a fingerprint seeded with what makes raw bytes portable between two peers:
    /// endianness and pointer width of the target.
    pub const fn new() -> Self {
        let seed = if cfg!(target_endian = "little") {
            1u64
        } else {
            2u64
        };
        Fingerprint(FNV_OFFSET).u64(seed).u64(usize::BITS as u64)
    }

    /// Folds in raw bytes.
    pub const fn bytes(mut self, bytes: &[u8]) -> Self {
        let mut i = 0;
        while i < bytes.len() {
            self.0 ^= bytes[i] as u64;
            self.0 = self.0.wrapping_mul(FNV_PRIME);
            i += 1;
        }
        self
    }

    /// Folds in a string, length-prefixed so that `("ab", "c")` and `("a", "bc")` differ.
    pub const fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }

    /// Folds in an integer (little-endian bytes, whatever the target).
    pub const fn u64(self, v: u64) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Folds in a type's text, size, alignment and shape.
    pub const fn ty(self, text: &str, size: usize, align: usize, shape: u64) -> Self {
        self.str(text).u64(size as u64).u64(align as u64).u64(shape)
    }

    /// The finished 64-bit value.
    pub const fn finish(self) -> u64 {
        self.0
    }
}

impl Default for Fingerprint {
    fn default() -> Self {
        Self::new()
    }
}
