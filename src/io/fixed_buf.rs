//! Registered buffers: a set of buffers the ring knows in advance, for
//! `IORING_OP_READ_FIXED` / `WRITE_FIXED` (the kernel maps them once
//! instead of on every operation).
//!
//! # Safety
//!
//! The `unsafe` here maps anonymous memory for registered buffers (`mmap`,
//! result checked), registers it with the ring, and hands out slices of it:
//! the mapping stays mapped until the ring has unregistered it, and each
//! buffer is leased to one owner at a time.

use std::cell::RefCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::rc::Rc;

use super::buf::{IoBuf, IoBufMut};
use crate::error::{Error, Result};
use crate::runtime::context;
use crate::runtime::event_loop::LoopInner;

/// A set of buffers registered with the running loop's ring
/// (`IORING_REGISTER_BUFFERS`, Linux 5.1), handed out as [`FixedBuf`]s for
/// [`File::read_fixed_at`](crate::fs::File::read_fixed_at) and
/// [`File::write_fixed_at`](crate::fs::File::write_fixed_at). Each buffer
/// starts on a page boundary and its size is rounded up to whole pages, so
/// the buffers suit `O_DIRECT`. A ring has one set at a time; it is
/// unregistered when the last `FixedBufs` clone and [`FixedBuf`] are gone
/// (operations in flight hold their buffer, so never before they end).
#[derive(Clone)]
pub struct FixedBufs {
    inner: Rc<Inner>,
}

struct Inner {
    lp: Rc<LoopInner>,
    mem: NonNull<u8>,
    mem_len: usize,
    size: usize,
    free: RefCell<Vec<u16>>,
}

impl FixedBufs {
    /// Registers `count` buffers (1 to 16384) of `size` bytes (rounded up
    /// to whole pages) with the running loop's ring. Errors: bad sizes, a
    /// ring that already has a set (`Error::InvalidState`), or the kernel's
    /// refusal (`RLIMIT_MEMLOCK` on older kernels) with its reason.
    pub fn register(count: u16, size: usize) -> Result<FixedBufs> {
        if count == 0 || count > 16384 || size == 0 || size > 1 << 30 {
            return Err(Error::InvalidArgument(format!(
                "registered buffers: 1 to 16384 buffers of 1 byte to 1 GiB, not {count} of {size}"
            )));
        }
        let lp = context::current_loop().ok_or_else(Error::no_running_loop)?;
        // SAFETY: sysconf has no memory effects.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as usize,
            _ => 4096,
        };
        let size = size.div_ceil(page) * page;
        let mem_len = size * usize::from(count);
        // SAFETY: an anonymous private mapping; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mem_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        let Some(mem) = NonNull::new(ptr.cast::<u8>()) else {
            return Err(std::io::Error::other("mmap returned null").into());
        };
        let iovecs: Vec<libc::iovec> = (0..usize::from(count))
            .map(|i| libc::iovec {
                iov_base: mem.as_ptr().wrapping_add(i * size).cast(),
                iov_len: size,
            })
            .collect();
        let registered = {
            let mut d = lp.driver.borrow_mut();
            // SAFETY: the iovecs name our mapping, which stays mapped until
            // `Inner::drop` has unregistered them.
            unsafe { d.register_buffers(&iovecs) }
        };
        if let Err(e) = registered {
            // SAFETY: our own mapping, never registered.
            unsafe { libc::munmap(ptr, mem_len) };
            return Err(e);
        }
        Ok(FixedBufs {
            inner: Rc::new(Inner {
                lp,
                mem,
                mem_len,
                size,
                free: RefCell::new((0..count).rev().collect()),
            }),
        })
    }

    /// A free buffer (its length 0, its capacity the buffer size), or
    /// `None` if all are handed out.
    pub fn get(&self) -> Option<FixedBuf> {
        let index = self.inner.free.borrow_mut().pop()?;
        Some(FixedBuf {
            pool: self.inner.clone(),
            index,
            len: 0,
        })
    }

    /// How many buffers are free.
    pub fn available(&self) -> usize {
        self.inner.free.borrow().len()
    }

    /// The size of each buffer (a whole number of pages).
    pub fn buf_size(&self) -> usize {
        self.inner.size
    }
}

impl fmt::Debug for FixedBufs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBufs")
            .field("buf_size", &self.inner.size)
            .field("available", &self.available())
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // No op can use the buffers any more (each holds its FixedBuf).
        let unregistered = match self.lp.driver.try_borrow_mut() {
            Ok(mut d) => d.unregister_buffers().is_ok(),
            Err(_) => false,
        };
        if unregistered {
            // SAFETY: our own mapping, no longer registered or used.
            unsafe { libc::munmap(self.mem.as_ptr().cast(), self.mem_len) };
        }
        // Otherwise leak the mapping: the kernel may still have it pinned.
    }
}

/// One registered buffer of a [`FixedBufs`] set; goes back to the set when
/// dropped. Like a `Vec` with fixed capacity: reads fill it from the start
/// and set its length; writes send its first `len()` bytes.
pub struct FixedBuf {
    pool: Rc<Inner>,
    index: u16,
    len: usize,
}

impl FixedBuf {
    /// Its index in the ring's registered buffers (the SQE's `buf_index`).
    pub fn buf_index(&self) -> u16 {
        self.index
    }

    /// Sets how many bytes count as written (at most the buffer size);
    /// the bytes are whatever the buffer holds.
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.pool.size);
    }

    /// Copies `data` into the buffer (as much as fits) and sets the length.
    pub fn fill_from(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.pool.size);
        // SAFETY: `n` bytes fit in this buffer, ours while we hold it, and
        // `data` cannot overlap it (no reference into it is outstanding
        // while `&mut self` is held).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr(), n) };
        self.len = n;
        n
    }

    pub(crate) fn belongs_to(&self, loop_id: u64) -> bool {
        self.pool.lp.id == loop_id
    }

    fn ptr(&self) -> *mut u8 {
        self.pool
            .mem
            .as_ptr()
            .wrapping_add(usize::from(self.index) * self.pool.size)
    }
}

impl Deref for FixedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of our buffer (mapped memory is
        // zero-filled, so initialised); ours until drop.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len) }
    }
}

impl DerefMut for FixedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and we hold the buffer mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len) }
    }
}

impl Drop for FixedBuf {
    fn drop(&mut self) {
        self.pool.free.borrow_mut().push(self.index);
    }
}

impl fmt::Debug for FixedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBuf")
            .field("index", &self.index)
            .field("len", &self.len)
            .finish()
    }
}

// SAFETY: the bytes live in the set's mapping, which does not move and
// lives as long as the Rc this value holds.
unsafe impl IoBuf for FixedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr().cast_const()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.pool.size
    }
}

// SAFETY: as for IoBuf; the same address, writable for the buffer size.
unsafe impl IoBufMut for FixedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr()
    }
    unsafe fn set_init(&mut self, n: usize) {
        self.len = n.min(self.pool.size);
    }
}
