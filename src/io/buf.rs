//! Owned buffers for ring operations.
//!
//! A ring operation hands the kernel a pointer that must stay valid until
//! the operation's completion is reaped, even if the future that asked for
//! it is dropped. So buffers are *moved into* the operation and come back
//! with its result: `(Result<usize>, B)`, a [`BufResult`]. The buffer's bytes
//! must live on the heap, because the operation's owned data may move (into
//! the loop's op table, when its future is dropped) while the kernel writes.
//! While an operation has it, the buffer is held as a `KernelBuf`, so that
//! those moves never invalidate the pointer the kernel was given.
//!
//! # Safety
//!
//! The `unsafe` here is the `IoBuf`/`IoBufMut` contract: a buffer's pointer
//! is to memory that does not move while the buffer is owned by an op (heap
//! memory, a mapping), is valid for `bytes_total()` bytes, and `set_init(n)`
//! is called only once the first `n` bytes were written.

use std::alloc::{self, Layout};
use std::fmt;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ops::{Bound, Deref, DerefMut, RangeBounds};
use std::ptr::NonNull;

use crate::error::{Error, Result};

/// What an owned-buffer operation gives back: its result and the buffer,
/// whatever happened (success, error, timeout or cancellation).
pub type BufResult<T, B> = (Result<T>, B);

/// A buffer the kernel may read from (the source of a write or send).
///
/// # Safety
///
/// `stable_ptr` must point to `bytes_total()` bytes of heap memory (the
/// first `bytes_init()` of them initialised) that stay at the same address
/// when the value is moved, and stay valid until the value is dropped.
pub unsafe trait IoBuf: Unpin + 'static {
    /// Where the bytes start. Stable across moves of `self`.
    fn stable_ptr(&self) -> *const u8;

    /// How many bytes are initialised (what a write sends).
    fn bytes_init(&self) -> usize;

    /// How many bytes the buffer can hold (what a read may fill).
    fn bytes_total(&self) -> usize;

    /// A view of `range` of this buffer that owns it, for writing part of a
    /// buffer or reading into part of it. Get the buffer back with
    /// [`Slice::into_inner`].
    ///
    /// # Panics
    ///
    /// If the range is decreasing or ends past [`IoBuf::bytes_total`], as
    /// slicing `[u8]` does; [`IoBuf::try_slice`] returns an error instead.
    fn slice(self, range: impl RangeBounds<usize>) -> Slice<Self>
    where
        Self: Sized,
    {
        match self.try_slice(range) {
            Ok(s) => s,
            Err((e, _)) => panic!("ringio: {e}"),
        }
    }

    /// Like [`IoBuf::slice`], but gives an error (and the buffer back) for a
    /// range that does not fit.
    fn try_slice(
        self,
        range: impl RangeBounds<usize>,
    ) -> std::result::Result<Slice<Self>, (Error, Self)>
    where
        Self: Sized,
    {
        let total = self.bytes_total();
        let begin = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n.saturating_add(1),
            Bound::Excluded(&n) => n,
            Bound::Unbounded => total,
        };
        if begin > end || end > total {
            return Err((
                Error::InvalidArgument(format!(
                    "buffer range {begin}..{end} does not fit a buffer of {total} bytes"
                )),
                self,
            ));
        }
        Ok(Slice {
            buf: self,
            begin,
            end,
        })
    }
}

/// A buffer the kernel may write into (the target of a read or receive).
///
/// # Safety
///
/// As for [`IoBuf`]; `stable_mut_ptr` must be the same address as
/// `stable_ptr`, writable for `bytes_total()` bytes.
pub unsafe trait IoBufMut: IoBuf {
    /// Where the bytes start, for writing. Stable across moves of `self`.
    fn stable_mut_ptr(&mut self) -> *mut u8;

    /// Records that a read filled the first `n` bytes. For a `Vec<u8>` the
    /// length becomes exactly `n`, so that the vector holds what was read
    /// (and `write_all(buf)` echoes exactly that).
    ///
    /// # Safety
    ///
    /// The first `n` bytes (`n <= bytes_total()`) must be initialised.
    unsafe fn set_init(&mut self, n: usize);
}

// SAFETY: a Vec's buffer is on the heap (or dangling with capacity 0, which
// the kernel never dereferences for a length of 0) and does not move when the
// Vec does; nothing here reallocates it.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: as for `IoBuf`; `as_mut_ptr` is the same address as `as_ptr`.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, n: usize) {
        // SAFETY: the caller says the first `n <= capacity` bytes are
        // initialised.
        unsafe { self.set_len(n) };
    }
}

// SAFETY: a boxed slice's bytes are on the heap and do not move with the box.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: as for `IoBuf`.
unsafe impl IoBufMut for Box<[u8]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, _n: usize) {
        // Every byte of a boxed slice is always initialised; the count comes
        // back as the operation's result.
    }
}

// SAFETY: static data never moves and is never freed.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: static data never moves and is never freed.
unsafe impl IoBuf for &'static str {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

/// A user buffer while an op has it: what the op owns instead of the
/// buffer itself, from before the SQE's pointer is taken until the kernel
/// is done.
///
/// A `Box<[u8]>` (or a [`Slice`] of one) asserts unique access to its
/// bytes each time it moves — into the op, into the op table when the
/// future is dropped — which under Stacked Borrows invalidates a pointer
/// taken from it before the move, the one the kernel writes through; LLVM's
/// `noalias` on `Box` arguments makes the same promise. Inside a
/// `MaybeUninit` (a union, which moves as plain bytes and is never
/// retagged) the buffer does not assert anything when the op's data moves.
/// The SQE's pointer is taken from the wrapped buffer (through this type's
/// `IoBuf`/`IoBufMut`), and the buffer comes out with [`into_inner`] once
/// the kernel is done. No allocation: it is the buffer's own size.
///
/// [`into_inner`]: KernelBuf::into_inner
pub(crate) struct KernelBuf<B> {
    /// Always initialised: emptied only by `into_inner` and `drop`.
    buf: MaybeUninit<B>,
}

impl<B> KernelBuf<B> {
    pub(crate) fn new(buf: B) -> KernelBuf<B> {
        KernelBuf {
            buf: MaybeUninit::new(buf),
        }
    }

    /// The buffer, to read (an op's cleanup, once the kernel is done).
    pub(crate) fn get(&self) -> &B {
        // SAFETY: initialised from `new` until `into_inner` or `drop`.
        unsafe { self.buf.assume_init_ref() }
    }

    fn get_mut(&mut self) -> &mut B {
        // SAFETY: as in `get`.
        unsafe { self.buf.assume_init_mut() }
    }

    /// The buffer back. Only once the kernel is done with it: the move out
    /// asserts unique access again.
    pub(crate) fn into_inner(self) -> B {
        let this = ManuallyDrop::new(self);
        // SAFETY: initialised, and read once: `this` is never dropped.
        unsafe { this.buf.assume_init_read() }
    }
}

impl<B> Drop for KernelBuf<B> {
    fn drop(&mut self) {
        // SAFETY: initialised, and dropped once (`into_inner` forgets it).
        // The op or the op table drops it only after the final CQE.
        unsafe { self.buf.assume_init_drop() }
    }
}

// SAFETY: forwarded to the wrapped buffer, whose bytes stay where they
// are: the wrapper moves only the buffer's handle (pointer and length).
unsafe impl<B: IoBuf> IoBuf for KernelBuf<B> {
    fn stable_ptr(&self) -> *const u8 {
        self.get().stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.get().bytes_init()
    }
    fn bytes_total(&self) -> usize {
        self.get().bytes_total()
    }
}

// SAFETY: as for `IoBuf`.
unsafe impl<B: IoBufMut> IoBufMut for KernelBuf<B> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.get_mut().stable_mut_ptr()
    }
    unsafe fn set_init(&mut self, n: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { self.get_mut().set_init(n) }
    }
}

/// An owned view of `begin..end` of a buffer: write part of a buffer, or
/// read into part of it (for example its spare capacity:
/// `vec.slice(vec.len()..)`). [`Slice::into_inner`] gives the buffer back.
///
/// Reading into a slice of a `Vec<u8>` sets the vector's length to where
/// the read ended (`begin + n`).
pub struct Slice<T> {
    buf: T,
    begin: usize,
    end: usize,
}

impl<T: IoBuf> Slice<T> {
    /// Where the view starts in the buffer.
    pub fn begin(&self) -> usize {
        self.begin
    }

    /// Where the view ends in the buffer (exclusive).
    pub fn end(&self) -> usize {
        self.end
    }

    /// The whole buffer, by reference.
    pub fn get_ref(&self) -> &T {
        &self.buf
    }

    /// The buffer back.
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: IoBuf> Deref for Slice<T> {
    type Target = [u8];

    /// The initialised bytes of the view.
    fn deref(&self) -> &[u8] {
        let len = self.bytes_init();
        // SAFETY: the view lies inside the buffer's allocation and its first
        // `len` bytes are initialised (`bytes_init` clamps to both).
        unsafe { std::slice::from_raw_parts(self.stable_ptr(), len) }
    }
}

impl<T: IoBufMut> DerefMut for Slice<T> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.bytes_init();
        // SAFETY: as in `deref`, and we own the buffer mutably.
        unsafe { std::slice::from_raw_parts_mut(self.stable_mut_ptr(), len) }
    }
}

impl<T: IoBuf> fmt::Debug for Slice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slice")
            .field("begin", &self.begin)
            .field("end", &self.end)
            .field("init", &self.bytes_init())
            .finish()
    }
}

// SAFETY: the view points inside the owned buffer's stable heap memory.
unsafe impl<T: IoBuf> IoBuf for Slice<T> {
    fn stable_ptr(&self) -> *const u8 {
        // In bounds: `begin <= end <= bytes_total` was checked at creation.
        self.buf.stable_ptr().wrapping_add(self.begin)
    }
    fn bytes_init(&self) -> usize {
        self.buf
            .bytes_init()
            .min(self.end)
            .saturating_sub(self.begin)
    }
    fn bytes_total(&self) -> usize {
        self.end - self.begin
    }
}

// SAFETY: as for `IoBuf`.
unsafe impl<T: IoBufMut> IoBufMut for Slice<T> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.buf.stable_mut_ptr().wrapping_add(self.begin)
    }
    unsafe fn set_init(&mut self, n: usize) {
        let init = self.buf.bytes_init();
        if init < self.begin {
            // The view starts past the buffer's initialised bytes: zero the
            // gap so that every byte before `begin + n` is initialised.
            // SAFETY: `init..begin` lies inside the allocation (begin <=
            // bytes_total) and the kernel does not touch it.
            unsafe {
                std::ptr::write_bytes(self.buf.stable_mut_ptr().add(init), 0, self.begin - init)
            };
        }
        // SAFETY: bytes before `begin` are initialised (above), and the
        // caller says the `n` bytes from `begin` are.
        unsafe { self.buf.set_init(self.begin + n) };
    }
}

/// A heap buffer aligned to a power of two, for `O_DIRECT` files (which
/// need buffers, offsets and lengths aligned to the device's block size,
/// usually 512 or 4096 bytes). Zero-filled at creation; all bytes count as
/// initialised.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl AlignedBuf {
    /// `len` zeroed bytes aligned to `align` (a power of two).
    pub fn new(len: usize, align: usize) -> Result<AlignedBuf> {
        let layout = Layout::from_size_align(len.max(1), align).map_err(|_| {
            Error::InvalidArgument(format!(
                "an aligned buffer needs a power-of-two alignment and a size that fits (got {len} bytes aligned to {align})"
            ))
        })?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            alloc::handle_alloc_error(layout)
        };
        Ok(AlignedBuf {
            ptr,
            layout: Layout::from_size_align(len, align).unwrap_or(layout),
        })
    }

    /// The buffer's length in bytes.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Whether the buffer has no bytes.
    pub fn is_empty(&self) -> bool {
        self.layout.size() == 0
    }

    /// The alignment the buffer was made with.
    pub fn align(&self) -> usize {
        self.layout.align()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.layout.size().max(1), self.layout.align())
            .unwrap_or(self.layout);
        // SAFETY: allocated in `new` with this (size >= 1) layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` zero-initialised bytes we own.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len()) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, owned mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len()) }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len())
            .field("align", &self.align())
            .finish()
    }
}

// SAFETY: `AlignedBuf` owns its allocation like a `Box<[u8]>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads.
unsafe impl Sync for AlignedBuf {}

// SAFETY: heap memory owned by the value, stable across moves.
unsafe impl IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: as for `IoBuf`.
unsafe impl IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    unsafe fn set_init(&mut self, _n: usize) {
        // Always fully initialised (zeroed at creation).
    }
}

#[cfg(test)]
mod tests {
    use std::any::Any;

    use super::*;

    /// What an op does with a user buffer: it takes the pointer the SQE
    /// carries, then the buffer moves into the op's data (an `Option` in
    /// the `Op`) and, when the future is dropped mid-flight, into the op
    /// table as a `Box<dyn Any>`; the kernel writes through the pointer at
    /// completion. Run under Miri (`ci/miri.sh`), this checks the pointer
    /// is still valid then under Stacked Borrows: the ops hand the kernel a
    /// `KernelBuf`. (With the `Box<[u8]>` moved as itself, as the ops did
    /// before, Miri reports the write as undefined behaviour.)
    #[test]
    fn kernel_buf_pointer_survives_moves_of_a_boxed_slice() {
        let buf: Box<[u8]> = vec![0u8; 8].into_boxed_slice();
        let mut buf = KernelBuf::new(buf);
        let ptr = buf.stable_mut_ptr();
        let in_op = Some((buf, 1u8));
        let parked: Box<dyn Any> = Box::new(in_op);
        // SAFETY: the bytes are alive (owned by `parked`) and nothing else
        // touches them now: the kernel's write at completion.
        unsafe { ptr.add(3).write(7) };
        let (buf, _) = parked
            .downcast::<Option<(KernelBuf<Box<[u8]>>, u8)>>()
            .unwrap()
            .unwrap();
        assert_eq!(buf.into_inner()[3], 7);
    }

    /// The wrapper costs nothing: no allocation, no extra bytes.
    #[test]
    fn kernel_buf_is_the_size_of_the_buffer() {
        use std::mem::size_of;
        assert_eq!(size_of::<KernelBuf<Vec<u8>>>(), size_of::<Vec<u8>>());
        assert_eq!(size_of::<KernelBuf<Box<[u8]>>>(), size_of::<Box<[u8]>>());
    }

    /// The same for a slice of a boxed slice (`recv_exact`), and a buffer
    /// dropped by the op table without being taken back is dropped once.
    #[test]
    fn kernel_buf_pointer_survives_moves_of_a_slice() {
        let buf: Box<[u8]> = vec![0u8; 8].into_boxed_slice();
        let mut buf = KernelBuf::new(buf.slice(2..));
        let ptr = buf.stable_mut_ptr();
        let parked: Box<dyn Any> = Box::new(Some(buf));
        // SAFETY: as above.
        unsafe { ptr.add(1).write(9) };
        let buf = parked
            .downcast::<Option<KernelBuf<Slice<Box<[u8]>>>>>()
            .unwrap()
            .unwrap()
            .into_inner()
            .into_inner();
        assert_eq!(&buf[..], &[0, 0, 0, 9, 0, 0, 0, 0]);

        let mut buf = KernelBuf::new(vec![1u8; 4].into_boxed_slice());
        let ptr = buf.stable_mut_ptr();
        let parked: Box<dyn Any> = Box::new(buf);
        // SAFETY: as above.
        unsafe { ptr.write(2) };
        // The op table drops an orphaned op's data after its final CQE;
        // Miri reports a leak or a double free.
        drop(parked);
    }
}
