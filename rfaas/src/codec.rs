//! Encoding and decoding of argument layouts, shared by every generated stub and trampoline.
//!
//! Input buffer: `[Args (fixed, alignment 1) | pad to 8 | slice 0 | pad to 8 | slice 1 | ...]`
//! where `Args` holds each value argument's bytes and a [`SliceDesc`] per slice argument.
//! Output buffer: `[return value | pad to 8 | output slice 0 | pad to 8 | ...]`; on an error
//! status the output instead holds a UTF-8 message. Generated code only calls what is here
//! (through `::rfaas::__private`), so the rules live in one place.
//!
//! Slices are placed on multiples of [`BUFFER_ALIGN`] (8) from a buffer's start, and buffers
//! start on 8-byte boundaries, so a slice's address is aligned for its element only if the
//! element is aligned to at most 8. Slice elements aligned above that (`u128`, `i128`, arrays
//! and structs of them) are therefore refused at compile time: by `#[rfaas::function]` with
//! an error on the parameter's type ([`slice_element_fits`]), and, for any other caller of the
//! slice functions below, by a post-monomorphization assertion. Values and return values of
//! such types are fine: they are copied byte by byte, unaligned.

use crate::call::{CallError, EncodeError, Encoded, Gather};
use crate::payload::{self, Payload};
use crate::wire::{BUFFER_ALIGN, PlacedOutputs, SliceDesc, Status, align_up};
use core::fmt::Display;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Compile-time check that `T` is a payload; emitted with the user's span.
pub const fn require_payload<T: Payload>() {}

/// Compile-time check that `E` can be shown as an error message.
pub const fn require_display<E: Display>() {}

/// Whether `T` can be the element of a slice argument: aligned to at most [`BUFFER_ALIGN`].
/// Slices are placed at multiples of 8 in buffers that are only known to be 8-byte aligned,
/// so a slice of a more aligned element would be aligned or not depending on where it falls.
/// `#[rfaas::function]` asserts this for every slice parameter, on the parameter's type.
pub const fn slice_element_fits<T>() -> bool {
    align_of::<T>() <= BUFFER_ALIGN
}

/// The same check inside the slice functions of this module (evaluated when they are
/// instantiated), so that no encoding or decoding of an over-aligned slice can be built even
/// without the macro.
const fn assert_slice_element<T>() {
    assert!(
        slice_element_fits::<T>(),
        "rfaas slice elements must be aligned to at most 8 bytes (`rfaas::wire::BUFFER_ALIGN`)"
    );
}

/// Copies a payload value's bytes into its slot of the argument layout.
pub fn put_value<T: Payload>(slot: &mut [u8], value: &T) {
    slot.copy_from_slice(payload::bytes_of(value));
}

/// Reads a value argument out of its slot of the argument layout.
pub fn get_value<T: Payload>(slot: &[u8]) -> Result<T, Failure> {
    payload::read(slot).ok_or(Failure::Status(Status::BadCall))
}

fn wire_u32(n: usize, arg: &'static str) -> Result<u32, EncodeError> {
    u32::try_from(n).map_err(|_| EncodeError::TooLarge { arg })
}

/// Lays out output slices after the return value (client and executor agree on this).
///
/// Normally each output slice goes to the next 8-byte boundary after the previous one. With a
/// [`Placement`], when every output slice of the call already lies in the executor-visible
/// arena (`rfaas::Buffer`s), in increasing address order, each is placed exactly where it is:
/// the executor then writes the results straight into the caller's buffers.
///
/// On a fabric without a window into the caller's memory ([`Placement::by_writes`]) the
/// output slices are laid out as normally, in the executor's staging, and the layout lists
/// where each goes ([`PlacedOutputs`]): the executor sends them there with plain writes.
#[derive(Debug)]
pub struct OutputLayout {
    end: usize,
    base: usize,
    in_place: bool,
    /// In place: where the first output slice starts, from `base`.
    first: usize,
    /// The list of outputs placed by writes: `Some` exactly when they are in place by writes
    /// (`None` costs nothing to set up).
    placed: Option<PlacedOutputs>,
}

impl OutputLayout {
    /// Starts a layout whose return value takes `ret_size` bytes at offset 0, with no
    /// in-place placement.
    #[inline]
    pub fn new(ret_size: usize) -> Self {
        OutputLayout {
            end: ret_size,
            base: 0,
            in_place: false,
            first: 0,
            placed: None,
        }
    }

    /// Starts a layout that places the output slices `slices` (address and byte length of
    /// each, in parameter order) in place when `placement` allows it for all of them.
    pub fn placed(ret_size: usize, placement: &Placement, slices: &[(usize, usize)]) -> Self {
        // Written where they are (a window), the return value and an error message stay in
        // the invocation's own room. (Placed by writes, both are produced in the executor's
        // staging and sent to the result area, a slot at most.)
        let mut in_place = placement.base != 0
            && !slices.is_empty()
            && (placement.by_writes
                || (ret_size <= placement.room && MAX_MESSAGE <= placement.room));
        let mut end = placement.base.saturating_add(ret_size);
        if placement.by_writes
            && slices.iter().filter(|&&(_, bytes)| bytes > 0).count() > PlacedOutputs::MAX
        {
            in_place = false;
        }
        for &(addr, bytes) in slices {
            let Some(stop) = addr.checked_add(bytes) else {
                in_place = false;
                break;
            };
            if addr < end
                || addr < placement.arena.0
                || stop > placement.arena.1
                || stop - placement.base > u32::MAX as usize
            {
                in_place = false;
                break;
            }
            end = stop;
        }
        OutputLayout {
            end: ret_size,
            base: placement.base,
            in_place,
            first: match (in_place, slices.first()) {
                (true, Some(&(addr, _))) => addr - placement.base,
                _ => 0,
            },
            placed: (in_place && placement.by_writes).then(PlacedOutputs::default),
        }
    }

    /// Whether output slices are placed in the caller's buffers.
    #[inline]
    pub fn in_place(&self) -> bool {
        self.in_place
    }

    /// In place: where the first output slice starts, from the output area's start
    /// ([`Encoded::in_place_start`]); 0 otherwise.
    #[inline]
    pub fn in_place_start(&self) -> usize {
        self.first
    }

    /// The list of output ranges the executor writes into the caller's buffers, when they are
    /// placed by writes ([`Placement::by_writes`]).
    #[inline]
    fn written_by_executor(&self) -> Option<&PlacedOutputs> {
        self.placed.as_ref()
    }

    /// Places an output slice of `len` elements of `T` whose caller buffer starts at `addr`.
    pub fn slice<T: Payload>(
        &mut self,
        arg: &'static str,
        addr: usize,
        len: usize,
    ) -> Result<SliceDesc, EncodeError> {
        const { assert_slice_element::<T>() };
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or(EncodeError::TooLarge { arg })?;
        let off = if self.in_place && self.placed.is_none() {
            addr - self.base
        } else {
            align_up(self.end).ok_or(EncodeError::TooLarge { arg })?
        };
        let end = off
            .checked_add(bytes)
            .ok_or(EncodeError::TooLarge { arg })?;
        let desc = SliceDesc::new(wire_u32(off, arg)?, wire_u32(len, arg)?);
        wire_u32(end, arg)?;
        if let Some(placed) = &mut self.placed
            && bytes > 0
        {
            // `addr - base` fits a u32 (`placed` checked every slice's end against it), and
            // `placed` counted at most `PlacedOutputs::MAX` non-empty slices.
            let dest = wire_u32(addr - self.base, arg)?;
            if !placed.push(off as u32, bytes as u32, dest) {
                return Err(EncodeError::TooLarge { arg });
            }
        }
        self.end = end;
        Ok(desc)
    }

    /// Bytes of output the layout occupies (from the start of the output area).
    #[inline]
    pub fn end(&self) -> usize {
        self.end
    }
}

/// Where the executor's output for one invocation lands in the caller's address space, and
/// which caller memory it may write directly (see [`OutputLayout::placed`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Caller address of the start of the invocation's output area; 0: no in-place placement.
    pub base: usize,
    /// Caller address range `[start, end)` the executor may write: the lease's buffer arena,
    /// which lies after every output area.
    pub arena: (usize, usize),
    /// The executor cannot write the caller's memory directly (TCP, RDMA): it runs the
    /// function into staging of its own and sends in-place outputs to the caller's buffers with
    /// plain writes, at most [`PlacedOutputs::MAX`] of them (the encoding ends with their list,
    /// see [`crate::wire::FLAG_PLACED`]). `false`: it writes them where they are (shared
    /// memory).
    pub by_writes: bool,
    /// Bytes at `base` that are this invocation's own (its result area). Written in place
    /// (not `by_writes`), the executor's output starts there with the return value, or an
    /// error message (at most [`MAX_MESSAGE`] bytes), and whatever lies beyond, up to the
    /// output buffers, is other invocations' or other buffers'. So outputs go in place only
    /// if both fit.
    pub room: usize,
}

impl Placement {
    /// No in-place placement: outputs are copied into the caller's slices.
    pub const NONE: Placement = Placement {
        base: 0,
        arena: (0, 0),
        by_writes: false,
        room: 0,
    };
}

/// Writes (or, without a buffer, measures) an input encoding. Input slices borrowed for `'d`
/// may be left out of the buffer, for a [`Gather`] to send from where they are.
#[derive(Debug)]
pub struct Encoder<'b, 'd> {
    buf: Option<&'b mut [u8]>,
    gather: Option<&'b mut Gather<'d>>,
    fixed: usize,
    end: usize,
}

impl<'b, 'd> Encoder<'b, 'd> {
    /// Starts an encoding whose fixed argument layout `A` sits at offset 0.
    pub fn new<A>(buf: Option<&'b mut [u8]>) -> Result<Self, EncodeError> {
        let fixed = size_of::<A>();
        if let Some(b) = &buf
            && b.len() < fixed
        {
            return Err(EncodeError::BufferTooSmall {
                need: fixed,
                have: b.len(),
            });
        }
        Ok(Encoder {
            buf,
            gather: None,
            fixed,
            end: fixed,
        })
    }

    /// Starts an encoding into `buf` that leaves the input slices `gather` takes out of it
    /// (see [`crate::RemoteCall::encode_gather`]).
    pub fn gathering<A>(
        buf: &'b mut [u8],
        gather: &'b mut Gather<'d>,
    ) -> Result<Self, EncodeError> {
        let mut enc = Self::new::<A>(Some(buf))?;
        enc.gather = Some(gather);
        Ok(enc)
    }

    /// Copies an input slice to the next 8-byte boundary (or leaves it to the gather) and
    /// returns its descriptor.
    pub fn input<T: Payload>(
        &mut self,
        arg: &'static str,
        data: &'d [T],
    ) -> Result<SliceDesc, EncodeError> {
        const { assert_slice_element::<T>() };
        let bytes = payload::slice_bytes(data);
        let off = align_up(self.end).ok_or(EncodeError::TooLarge { arg })?;
        let end = off
            .checked_add(bytes.len())
            .ok_or(EncodeError::TooLarge { arg })?;
        let desc = SliceDesc::new(wire_u32(off, arg)?, wire_u32(data.len(), arg)?);
        wire_u32(end, arg)?;
        if let Some(buf) = self.buf.as_deref_mut() {
            let have = buf.len();
            let dst = buf
                .get_mut(off..end)
                .ok_or(EncodeError::BufferTooSmall { need: end, have })?;
            if !self.gather.as_mut().is_some_and(|g| g.take(off, bytes)) {
                dst.copy_from_slice(bytes);
            }
        }
        self.end = end;
        Ok(desc)
    }

    /// Writes the fixed layout at offset 0 (and, for outputs placed by writes, their list
    /// after the input slices) and returns the sizes.
    #[inline]
    pub fn finish<A: IntoBytes + Immutable>(
        self,
        args: &A,
        outputs: &OutputLayout,
    ) -> Result<Encoded, EncodeError> {
        if let Some(placed) = outputs.written_by_executor() {
            return self.finish_placed(args.as_bytes(), placed, outputs);
        }
        // The common case (every call on shared memory): the argument layout alone.
        if let Some(buf) = self.buf {
            buf[..self.fixed].copy_from_slice(args.as_bytes());
        }
        Ok(Encoded {
            input_len: self.end,
            output_len: outputs.end(),
            in_place: outputs.in_place(),
            in_place_start: outputs.in_place_start(),
        })
    }

    /// [`Encoder::finish`] with a placement list (TCP and RDMA, outputs in `Buffer`s): out of
    /// line, so that the common case stays a copy of the arguments.
    #[cold]
    #[inline(never)]
    fn finish_placed(
        self,
        args: &[u8],
        placed: &PlacedOutputs,
        outputs: &OutputLayout,
    ) -> Result<Encoded, EncodeError> {
        const ARG: &str = "placed outputs";
        let input_len = self
            .end
            .checked_add(placed.wire_len())
            .ok_or(EncodeError::TooLarge { arg: ARG })?;
        wire_u32(input_len, ARG)?;
        if let Some(buf) = self.buf {
            let have = buf.len();
            let buf = buf
                .get_mut(..input_len)
                .ok_or(EncodeError::BufferTooSmall {
                    need: input_len,
                    have,
                })?;
            buf[..self.fixed].copy_from_slice(args);
            placed.write(&mut buf[self.end..]);
        }
        Ok(Encoded {
            input_len,
            output_len: outputs.end(),
            in_place: outputs.in_place(),
            in_place_start: outputs.in_place_start(),
        })
    }
}

/// Client-side reading of an executor's answer.
#[derive(Debug)]
pub struct Decoder<'o> {
    output: &'o [u8],
}

impl<'o> Decoder<'o> {
    /// Turns an error status into the matching [`CallError`]; keeps the output on success.
    pub fn new(status: Status, output: &'o [u8]) -> Result<Self, CallError> {
        match status {
            Status::Ok => Ok(Decoder { output }),
            Status::FunctionError => Err(CallError::Function(message(output))),
            Status::Panic => Err(CallError::Panic(message(output))),
            other => Err(CallError::Rejected(other)),
        }
    }

    /// Copies the next output slice into the caller's buffer (nothing to copy when the
    /// executor wrote it in place).
    pub fn output_into<T: Payload>(
        &self,
        layout: &mut OutputLayout,
        arg: &'static str,
        dst: &mut [T],
    ) -> Result<(), CallError> {
        let desc = layout
            .slice::<T>(arg, dst.as_ptr() as usize, dst.len())
            .map_err(|_| CallError::Malformed("output slice outside the wire format"))?;
        if layout.in_place() {
            return Ok(());
        }
        let off = desc.offset.get() as usize;
        let dst = payload::slice_bytes_mut(dst);
        let src = self
            .output
            .get(off..off + dst.len())
            .ok_or(CallError::Malformed(
                "output shorter than the result layout",
            ))?;
        dst.copy_from_slice(src);
        Ok(())
    }

    /// Reads the return value at offset 0.
    pub fn value<T: Payload>(&self) -> Result<T, CallError> {
        payload::read(self.output)
            .ok_or(CallError::Malformed("output shorter than the return value"))
    }
}

/// An error message from the executor's output, invalid UTF-8 replaced. The bytes are copied
/// once and the copy is checked: over shared memory `output` is the peer's memory, which it may
/// change between a check and a second read (`from_utf8_lossy(..).into_owned()` would read
/// valid bytes twice and could keep changed ones in a `String`).
fn message(output: &[u8]) -> String {
    String::from_utf8(output.to_vec())
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Why a trampoline body stopped without a result.
#[derive(Debug)]
pub enum Failure {
    /// The input or output was rejected.
    Status(Status),
    /// The function returned `Err` with this text.
    Function(String),
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Failure::Status(s)
    }
}

/// Executor-side view of a validated input buffer.
#[derive(Debug, Clone, Copy)]
pub struct Input<'i> {
    bytes: &'i [u8],
    fixed: usize,
}

impl<'i> Input<'i> {
    /// Reads the fixed argument layout at offset 0, copied out with a volatile read;
    /// `InputTooShort` if it does not fit.
    ///
    /// A copy, not a reference into `bytes`: over shared memory the input is the client's
    /// memory, which it may write while the function runs. Every slice descriptor is checked
    /// and then used from this one copy, so the compiler cannot read a descriptor again after
    /// its check (which it could through a shared reference it may assume unchanging), and a
    /// client that rewrites them meanwhile changes nothing.
    pub fn args<A: FromBytes + KnownLayout + Immutable + zerocopy::Unaligned>(
        bytes: &'i [u8],
    ) -> Result<(A, Self), Failure> {
        if bytes.len() < size_of::<A>() {
            return Err(Status::InputTooShort.into());
        }
        // An empty layout (a function without value parameters) has nothing to read: no
        // zero-sized load (AddressSanitizer trips over one from an empty input's pointer).
        let args = if size_of::<A>() == 0 {
            A::new_zeroed()
        } else {
            // SAFETY: `bytes` holds at least `size_of::<A>()` readable bytes (checked above),
            // `A` is `Unaligned` (alignment 1: any address is aligned for it) and `FromBytes`
            // (every byte pattern is a valid `A`).
            unsafe { core::ptr::read_volatile(bytes.as_ptr().cast::<A>()) }
        };
        Ok((
            args,
            Input {
                bytes,
                fixed: size_of::<A>(),
            },
        ))
    }

    /// Borrows an input slice in place after checking bounds, overflow and alignment.
    pub fn slice<T: Payload>(&self, desc: SliceDesc) -> Result<&'i [T], Failure> {
        const { assert_slice_element::<T>() };
        let off = desc.offset.get() as usize;
        let count = desc.len.get() as usize;
        let bytes = count.checked_mul(size_of::<T>()).ok_or(Status::BadSlice)?;
        let end = off.checked_add(bytes).ok_or(Status::BadSlice)?;
        if off < self.fixed || end > self.bytes.len() {
            return Err(Status::BadSlice.into());
        }
        let region = &self.bytes[off..end];
        if !(region.as_ptr() as usize).is_multiple_of(align_of::<T>()) {
            return Err(Status::Misaligned.into());
        }
        // SAFETY: `region` is `count * size_of::<T>()` in-bounds bytes borrowed for `'i`,
        // its start is aligned for `T` (checked above), and every bit pattern is a valid
        // `T: Payload`. For zero-sized `T` any aligned pointer is valid for `count` elements.
        Ok(unsafe { core::slice::from_raw_parts(region.as_ptr().cast::<T>(), count) })
    }
}

/// Executor-side allocation of output slices: in order, non-overlapping, after the return
/// value, inside the output buffer.
#[derive(Debug)]
pub struct OutputCursor<'o> {
    rest: &'o mut [u8],
    pos: usize,
}

impl<'o> OutputCursor<'o> {
    /// Reserves `ret_size` bytes at the start of `output` for the return value.
    pub fn new(output: &'o mut [u8], ret_size: usize) -> Result<Self, Failure> {
        if output.len() < ret_size {
            return Err(Status::OutputTooSmall.into());
        }
        let (_, rest) = output.split_at_mut(ret_size);
        Ok(OutputCursor {
            rest,
            pos: ret_size,
        })
    }

    /// Borrows the output slice `desc` names, which must start at or after the previous one's
    /// end (so no two `&mut` slices alias) and fit in the buffer.
    pub fn slice<T: Payload>(&mut self, desc: SliceDesc) -> Result<&'o mut [T], Failure> {
        const { assert_slice_element::<T>() };
        let off = desc.offset.get() as usize;
        let count = desc.len.get() as usize;
        let bytes = count.checked_mul(size_of::<T>()).ok_or(Status::BadSlice)?;
        let end = off.checked_add(bytes).ok_or(Status::BadSlice)?;
        if off < self.pos {
            return Err(Status::BadSlice.into());
        }
        if end - self.pos > self.rest.len() {
            return Err(Status::OutputTooSmall.into());
        }
        let rest = core::mem::take(&mut self.rest);
        let (_, rest) = rest.split_at_mut(off - self.pos);
        let (mine, rest) = rest.split_at_mut(bytes);
        self.rest = rest;
        self.pos = end;
        if !(mine.as_ptr() as usize).is_multiple_of(align_of::<T>()) {
            return Err(Status::Misaligned.into());
        }
        // SAFETY: `mine` is an exclusive, in-bounds borrow of exactly `count * size_of::<T>()`
        // bytes for `'o`, aligned for `T` (checked above); the cursor never hands out these
        // bytes again; any bytes are a valid `T: Payload`.
        Ok(unsafe { core::slice::from_raw_parts_mut(mine.as_mut_ptr().cast::<T>(), count) })
    }

    /// End of the last output slice (or of the return value): the successful output length.
    pub fn end(&self) -> usize {
        self.pos
    }
}

/// Finishes a function returning `()`.
pub fn finish_unit(end: usize) -> Result<usize, Failure> {
    Ok(end)
}

/// Finishes a function returning a payload: writes it at offset 0.
pub fn finish_value<T: Payload>(output: &mut [u8], end: usize, value: T) -> Result<usize, Failure> {
    let bytes = payload::bytes_of(&value);
    output
        .get_mut(..bytes.len())
        .ok_or(Status::OutputTooSmall)?
        .copy_from_slice(bytes);
    Ok(end)
}

/// Finishes a function returning `Result<T, E>`.
pub fn finish_result<T: Payload, E: Display>(
    output: &mut [u8],
    end: usize,
    result: Result<T, E>,
) -> Result<usize, Failure> {
    match result {
        Ok(v) => finish_value(output, end, v),
        Err(e) => Err(Failure::Function(e.to_string())),
    }
}

/// Finishes a function returning `Result<(), E>`.
pub fn finish_result_unit<E: Display>(end: usize, result: Result<(), E>) -> Result<usize, Failure> {
    match result {
        Ok(()) => Ok(end),
        Err(e) => Err(Failure::Function(e.to_string())),
    }
}

/// Runs a trampoline body: checks the calling convention, catches panics, writes the status
/// message, and never unwinds.
///
/// # Safety
///
/// The caller upholds the [`Trampoline`](crate::abi::Trampoline) contract: `input` is valid for
/// `input_len` reads, `output` for `output_cap` writes, they do not overlap, nothing else
/// touches them during the call, and `output_len` is null or valid for a write.
pub unsafe fn run_trampoline(
    input: *const u8,
    input_len: usize,
    output: *mut u8,
    output_cap: usize,
    output_len: *mut usize,
    body: impl FnOnce(&[u8], &mut [u8]) -> Result<usize, Failure>,
) -> u32 {
    if output_len.is_null()
        || (input.is_null() && input_len != 0)
        || (output.is_null() && output_cap != 0)
    {
        return Status::BadCall.as_u32();
    }
    if !(input as usize).is_multiple_of(BUFFER_ALIGN)
        || !(output as usize).is_multiple_of(BUFFER_ALIGN)
    {
        // SAFETY: `output_len` is non-null (checked) and valid for writes (caller contract).
        unsafe { output_len.write(0) };
        return Status::Misaligned.as_u32();
    }
    // An empty buffer keeps the caller's (8-byte aligned) pointer, so zero-length slices in it
    // sit at the address the caller chose, as in any other buffer: substituting `&[]` (address
    // 1) would make a zero-length slice of a `u16` or `f64` "misaligned". Only a null pointer,
    // allowed for an empty buffer, is replaced, by a dangling one aligned like a buffer.
    let input = if input.is_null() {
        core::ptr::without_provenance::<u8>(BUFFER_ALIGN)
    } else {
        input
    };
    let output = if output.is_null() {
        core::ptr::without_provenance_mut::<u8>(BUFFER_ALIGN)
    } else {
        output
    };
    // SAFETY: `input` is non-null and aligned for u8; it is valid for `input_len` reads and
    // unaliased by writers (contract), or `input_len` is 0, for which any non-null pointer is
    // valid (a null one was replaced above, and a null one with a length was refused).
    let input: &[u8] = unsafe { core::slice::from_raw_parts(input, input_len) };
    // SAFETY: as for `input`: non-null, valid for `output_cap` writes and exclusive for the
    // call (contract), or `output_cap` is 0; u8 has no invalid values.
    let output: &mut [u8] = unsafe { core::slice::from_raw_parts_mut(output, output_cap) };
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(input, &mut *output)));
    let (status, len) = match result {
        Ok(Ok(len)) => (Status::Ok, len.min(output.len())),
        Ok(Err(Failure::Status(s))) => (s, 0),
        Ok(Err(Failure::Function(msg))) => (Status::FunctionError, write_message(output, &msg)),
        Err(panic) => {
            let msg = panic_message(&*panic);
            // Dropping a panic payload can itself panic; never let that unwind out of here.
            if let Err(inner) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(panic)))
            {
                core::mem::forget(inner);
            }
            (Status::Panic, write_message(output, &msg))
        }
    };
    // SAFETY: `output_len` is non-null (checked) and valid for writes (caller contract).
    unsafe { output_len.write(len) };
    status.as_u32()
}

fn panic_message(payload: &(dyn core::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// The longest error or panic message an answer carries, in bytes: a longer one is cut (at a
/// character boundary). Bounded so that a message never runs past an in-place invocation's
/// own result area (see [`Placement::room`]) into memory that is not the invocation's.
pub const MAX_MESSAGE: usize = 1024;

/// Writes as much of `msg` as fits (at most [`MAX_MESSAGE`] bytes), cut at a character
/// boundary; returns the bytes written.
fn write_message(output: &mut [u8], msg: &str) -> usize {
    let mut n = msg.len().min(output.len()).min(MAX_MESSAGE);
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    output[..n].copy_from_slice(&msg.as_bytes()[..n]);
    n
}
