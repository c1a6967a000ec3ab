//! The [`Payload`] marker: types that may be written straight into registered memory.
//!
//! Like iceoryx2's `ZeroCopySend`, it is an `unsafe trait` implemented here for the primitive
//! numbers and arrays of payloads, and derived with `#[derive(rfaas::Payload)]` for `#[repr(C)]`
//! structs whose fields are all payloads and that have no padding. The byte helpers below are
//! the only place that turns payloads into bytes and back.

use crate::fingerprint::Fingerprint;

/// A plain-data type that can travel between processes as raw bytes.
///
/// # Safety
///
/// Implementors guarantee that:
/// - every bit pattern of `size_of::<Self>()` bytes is a valid value (no `bool`, `char`,
///   enums, references or pointers inside);
/// - the type has no padding bytes, so all of its bytes are initialized;
/// - the layout is fixed (`#[repr(C)]` or `#[repr(transparent)]`, or a primitive).
///
/// `#[derive(rfaas::Payload)]` checks all three at compile time; do not implement it by hand.
///
/// Any payload can be a value argument or a return value (they are copied byte by byte,
/// unaligned). A slice argument's element must also be aligned to at most 8 bytes
/// ([`BUFFER_ALIGN`](crate::wire::BUFFER_ALIGN)), since slices are placed on 8-byte
/// boundaries: `&[u128]`, `&mut [i128]` and slices of arrays or structs containing them are
/// refused at compile time by `#[rfaas::function]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an rfaas payload",
    label = "not a payload: it cannot be written into another process's memory as raw bytes",
    note = "payloads are numbers, arrays of payloads, and `#[repr(C)]` structs with `#[derive(Clone, Copy, rfaas::Payload)]`; pass bytes as `&[u8]`"
)]
pub unsafe trait Payload: Copy + Send + Sync + 'static {
    /// A fingerprint of the type's structure (field names, types, sizes), folded into function
    /// fingerprints so that a changed struct is detected across the wire.
    const SHAPE: u64;
}

macro_rules! primitive_payload {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: primitive integers and floats have no padding, no invalid bit patterns and a
        // fixed layout.
        unsafe impl Payload for $t {
            const SHAPE: u64 = Fingerprint::new()
                .ty(stringify!($t), size_of::<$t>(), align_of::<$t>(), 0)
                .finish();
        }
    )*};
}

primitive_payload!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64
);

// SAFETY: an array of payloads has no padding (an element's size is a multiple of its
// alignment) and every bit pattern of it is valid because every element's is.
unsafe impl<T: Payload, const N: usize> Payload for [T; N] {
    const SHAPE: u64 = Fingerprint::new()
        .str("array")
        .u64(T::SHAPE)
        .u64(N as u64)
        .finish();
}

/// The bytes of a payload value.
pub fn bytes_of<T: Payload>(value: &T) -> &[u8] {
    // SAFETY: `T: Payload` has no padding, so all `size_of::<T>()` bytes behind the reference
    // are initialized; u8 has alignment 1 and the lifetime is tied to `value`.
    unsafe { core::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

/// The bytes of a slice of payloads.
pub fn slice_bytes<T: Payload>(values: &[T]) -> &[u8] {
    // SAFETY: as in `bytes_of`; a slice of `T` occupies exactly `size_of_val(values)` bytes
    // with no gaps between elements.
    unsafe { core::slice::from_raw_parts(values.as_ptr().cast::<u8>(), size_of_val(values)) }
}

/// The bytes of a mutable slice of payloads; any bytes written keep the values valid.
pub fn slice_bytes_mut<T: Payload>(values: &mut [T]) -> &mut [u8] {
    let len = size_of_val(values);
    // SAFETY: as in `slice_bytes`; writing any bytes is fine because every bit pattern is a
    // valid `T: Payload`; the exclusive borrow of `values` is carried by the result.
    unsafe { core::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), len) }
}

/// Reads a payload from the start of `bytes` (any alignment). `None` if too short.
pub fn read<T: Payload>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: at least `size_of::<T>()` readable bytes (checked above); `read_unaligned`
    // needs no alignment; every bit pattern is a valid `T: Payload`.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Why a byte range cannot be viewed as a slice of payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastError {
    /// The start is not aligned for the element type.
    Misaligned,
    /// The byte length is not a multiple of the element size.
    Length,
}

/// Views bytes as a slice of payloads in place (no copy).
pub fn cast_slice<T: Payload>(bytes: &[u8]) -> Result<&[T], CastError> {
    let (ptr, len) = check_cast::<T>(bytes.as_ptr(), bytes.len())?;
    // SAFETY: `check_cast` verified alignment and that `len` elements fill `bytes` exactly;
    // every bit pattern is a valid `T: Payload`; the lifetime is tied to `bytes`.
    Ok(unsafe { core::slice::from_raw_parts(ptr.cast::<T>(), len) })
}

/// Views bytes as a mutable slice of payloads in place (no copy).
pub fn cast_slice_mut<T: Payload>(bytes: &mut [u8]) -> Result<&mut [T], CastError> {
    let (_, len) = check_cast::<T>(bytes.as_ptr(), bytes.len())?;
    // SAFETY: as in `cast_slice`; the exclusive borrow of `bytes` moves into the result, and
    // any value written through it is a valid byte pattern.
    Ok(unsafe { core::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<T>(), len) })
}

fn check_cast<T>(ptr: *const u8, byte_len: usize) -> Result<(*const u8, usize), CastError> {
    if size_of::<T>() == 0 {
        return if byte_len == 0 {
            Ok((ptr, 0))
        } else {
            Err(CastError::Length)
        };
    }
    if !(ptr as usize).is_multiple_of(align_of::<T>()) {
        return Err(CastError::Misaligned);
    }
    if !byte_len.is_multiple_of(size_of::<T>()) {
        return Err(CastError::Length);
    }
    Ok((ptr, byte_len / size_of::<T>()))
}
