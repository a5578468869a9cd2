//! Provided-buffer rings: a pool of receive buffers the kernel picks from.
//!
//! With a plain receive, every idle connection owns a buffer the kernel may
//! fill some day. A [`BufRing`] turns that around: one pool of `entries`
//! buffers of `buf_size` bytes per loop (or per group of sockets), and a
//! receive names the pool instead of a buffer. The kernel takes a buffer
//! only when data arrives, and hands it over with the completion as a
//! [`RingBuf`], which goes back to the pool when dropped. Idle connections
//! then cost no buffer memory at all.
//!
//! On Linux 6.0 and later the pool is registered with the ring
//! (`IORING_REGISTER_PBUF_RING`, 5.19) and fed to multishot receives
//! (`IORING_RECV_MULTISHOT`, 6.0): one submission per connection for as
//! long as data keeps coming. On an older kernel (or with
//! [`BufRingMode::Local`]) the same API works with a pool kept in user
//! space and one plain `IORING_OP_RECV` per buffer.
//!
//! The pool's memory is freed only when nothing can use it any more: every
//! [`RingBuf`], every receive stream and every operation in flight (also
//! one whose stream was dropped, until its final completion is reaped, and
//! at loop shutdown) holds a reference to it, and the kernel's registration
//! is removed before the memory is unmapped.
//!
//! # Safety
//!
//! The `unsafe` here maps anonymous memory for provided-buffer rings (`mmap`,
//! result checked) and registers it with the ring: the mapping (the ring
//! entries and the buffers they name) stays mapped until the ring has
//! unregistered it, and a buffer the kernel picked is read only up to the
//! length its CQE reports, then given back to the ring once.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll, Waker};

use io_uring::opcode;

use super::buf::IoBuf;
use crate::error::{Error, Result};
use crate::runtime::context;
use crate::runtime::event_loop::LoopInner;

/// Whether a [`BufRing`] is registered with the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BufRingMode {
    /// Registered with the kernel where it supports provided-buffer rings
    /// and multishot receives (Linux 6.0), kept in user space otherwise.
    #[default]
    Auto,
    /// Registered with the kernel; [`Error::Unsupported`] where it cannot be.
    Kernel,
    /// Kept in user space, one plain receive per buffer, on any kernel (the
    /// fallback, also to compare with the kernel's ring).
    Local,
}

/// How [`BufRing::with_options`] builds a pool.
#[derive(Clone, Copy, Debug)]
pub struct BufRingOptions {
    entries: u32,
    buf_size: usize,
    mode: BufRingMode,
}

impl BufRingOptions {
    /// `entries` buffers (a power of two, 1 to 32768) of `buf_size` bytes
    /// each, [`BufRingMode::Auto`].
    pub fn new(entries: u32, buf_size: usize) -> BufRingOptions {
        BufRingOptions {
            entries,
            buf_size,
            mode: BufRingMode::Auto,
        }
    }

    /// Registered with the kernel, kept in user space, or whichever the
    /// kernel supports (the default).
    pub fn mode(mut self, mode: BufRingMode) -> BufRingOptions {
        self.mode = mode;
        self
    }
}

/// One `io_uring_buf`: the layout the kernel reads from the ring. The first
/// entry's `resv` is the ring's tail.
#[repr(C)]
struct RawEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<RawEntry>() == 16);

/// The largest provided-buffer ring the kernel takes.
const MAX_ENTRIES: u32 = 32768;

/// A pool of receive buffers the kernel fills as data arrives (see the
/// guide's section 3). Made on a running loop, used by that loop's
/// sockets ([`TcpStream::recv_multishot`](crate::net::TcpStream::recv_multishot),
/// [`UnixStream::recv_multishot`](crate::net::UnixStream::recv_multishot),
/// [`UdpSocket::recv_from_multishot`](crate::net::UdpSocket::recv_from_multishot));
/// cloning it is cheap and shares the pool.
///
/// When the pool runs dry, receives wait (their data stays in the socket,
/// nothing is lost) until a [`RingBuf`] is dropped: code that keeps every
/// buffer it received and waits for more waits forever, so size the pool
/// for the buffers held at once.
#[derive(Clone)]
pub struct BufRing {
    pub(crate) inner: Rc<Inner>,
}

pub(crate) struct Inner {
    /// The loop whose ring the pool is registered with.
    lp: Rc<LoopInner>,
    /// One anonymous mapping: the ring's entries (kernel mode, rounded up
    /// to a page), then the buffers. Written only through raw pointers.
    mem: NonNull<u8>,
    mem_len: usize,
    ring_len: usize,
    entries: u16,
    buf_size: u32,
    /// The buffer group id, in kernel mode.
    bgid: Option<u16>,
    /// Kernel mode: our copy of the ring's tail.
    tail: Cell<u16>,
    /// Buffers the kernel (kernel mode) or the free list (local mode) holds.
    available: Cell<u32>,
    /// Local mode: the free buffer ids.
    free: RefCell<Vec<u16>>,
    /// Receives waiting for a buffer to come back.
    waiters: RefCell<Vec<Waker>>,
}

impl BufRing {
    /// A pool of `entries` buffers (a power of two, 1 to 32768) of
    /// `buf_size` bytes, registered with the kernel if it can be. Needs a
    /// running loop.
    pub fn new(entries: u32, buf_size: usize) -> Result<BufRing> {
        BufRing::with_options(BufRingOptions::new(entries, buf_size))
    }

    /// A pool built as `opts` says.
    pub fn with_options(opts: BufRingOptions) -> Result<BufRing> {
        if opts.entries == 0 || opts.entries > MAX_ENTRIES || !opts.entries.is_power_of_two() {
            return Err(Error::InvalidArgument(format!(
                "a buffer ring needs a power of two from 1 to {MAX_ENTRIES} entries, not {}",
                opts.entries
            )));
        }
        if opts.buf_size == 0 || opts.buf_size > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "a buffer ring's buffers need 1 to {} bytes, not {}",
                u32::MAX,
                opts.buf_size
            )));
        }
        let lp = context::current_loop().ok_or_else(Error::no_running_loop)?;
        let kernel = match opts.mode {
            BufRingMode::Local => false,
            BufRingMode::Auto => kernel_support(&lp).is_ok(),
            BufRingMode::Kernel => {
                kernel_support(&lp)?;
                true
            }
        };
        let entries = opts.entries as u16;
        let entries_len = opts.entries as usize * std::mem::size_of::<RawEntry>();
        let page = page_size();
        let ring_len = if kernel {
            entries_len.div_ceil(page) * page
        } else {
            0
        };
        let bufs_len = (opts.entries as usize)
            .checked_mul(opts.buf_size)
            .and_then(|n| n.checked_add(ring_len))
            .ok_or_else(|| Error::InvalidArgument("buffer ring too large".into()))?;
        let mem_len = bufs_len;
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
        let mem = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| {
            Error::from(std::io::Error::other("mmap returned a null buffer ring"))
        })?;
        let mut inner = Inner {
            lp: lp.clone(),
            mem,
            mem_len,
            ring_len,
            entries,
            buf_size: opts.buf_size as u32,
            bgid: None,
            tail: Cell::new(0),
            available: Cell::new(0),
            free: RefCell::new(Vec::new()),
            waiters: RefCell::new(Vec::new()),
        };
        if kernel {
            for bid in 0..entries {
                inner.write_entry(bid);
            }
            inner.publish_tail();
            let registered = {
                let mut driver = lp.driver.borrow_mut();
                // SAFETY: `mem` is page-aligned (mmap), holds `entries`
                // entries naming buffers inside the same mapping, and is
                // unmapped only after `unregister_buf_ring` (Inner's drop),
                // which runs once no op selecting from the group is in
                // flight (each holds an `Rc<Inner>`).
                unsafe { driver.register_buf_ring(mem.as_ptr() as u64, entries) }
            };
            match registered {
                Ok(bgid) => inner.bgid = Some(bgid),
                Err(e) => {
                    // Dropping `inner` unmaps (not registered: no bgid).
                    drop(inner);
                    return Err(match e.raw_os_error() {
                        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => unsupported(),
                        _ => Error::from(std::io::Error::new(
                            e.kind(),
                            format!("IORING_REGISTER_PBUF_RING failed: {e}"),
                        )),
                    });
                }
            }
        } else {
            *inner.free.get_mut() = (0..entries).rev().collect();
            inner.available.set(u32::from(entries));
        }
        Ok(BufRing {
            inner: Rc::new(inner),
        })
    }

    /// Whether the pool is registered with the kernel (multishot receives)
    /// or kept in user space (one receive per buffer).
    pub fn is_kernel(&self) -> bool {
        self.inner.bgid.is_some()
    }

    /// How many buffers the pool has.
    pub fn entries(&self) -> u32 {
        u32::from(self.inner.entries)
    }

    /// The size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.inner.buf_size as usize
    }

    /// How many buffers are free (not handed out as [`RingBuf`]s).
    pub fn available(&self) -> u32 {
        self.inner.available.get()
    }
}

impl fmt::Debug for BufRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufRing")
            .field("kernel", &self.is_kernel())
            .field("entries", &self.entries())
            .field("buf_size", &self.buf_size())
            .field("available", &self.available())
            .finish()
    }
}

/// `Ok` where the kernel has provided-buffer rings and multishot receives.
fn kernel_support(lp: &LoopInner) -> Result<()> {
    // The probe has no bit for either; IORING_OP_SEND_ZC came in the same
    // release as multishot receive (6.0), after PBUF_RING (5.19).
    if lp.driver.borrow().supports(opcode::SendZc::CODE) {
        Ok(())
    } else {
        Err(unsupported())
    }
}

fn unsupported() -> Error {
    Error::Unsupported(
        "provided-buffer rings (IORING_REGISTER_PBUF_RING, Linux 5.19) with multishot \
         receives (IORING_RECV_MULTISHOT, Linux 6.0) are not supported by this kernel's \
         io_uring; use BufRingMode::Local (or Auto) for the user-space pool"
            .into(),
    )
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

impl Inner {
    pub(crate) fn bgid(&self) -> Option<u16> {
        self.bgid
    }

    pub(crate) fn buf_size(&self) -> u32 {
        self.buf_size
    }

    /// Whether this pool belongs to the running loop.
    pub(crate) fn check_loop(&self) -> Result<()> {
        match context::with_loop(|lp| lp.id == self.lp.id) {
            Some(true) => Ok(()),
            Some(false) => Err(Error::InvalidArgument(
                "this BufRing belongs to another loop's ring".into(),
            )),
            None => Err(Error::no_running_loop()),
        }
    }

    /// Where buffer `bid` starts.
    pub(crate) fn buf_ptr(&self, bid: u16) -> *mut u8 {
        let off = self.ring_len + usize::from(bid) * self.buf_size as usize;
        // In bounds: bid < entries, so the buffer lies inside the mapping.
        self.mem.as_ptr().wrapping_add(off)
    }

    /// Kernel mode: puts buffer `bid` at the ring's tail (not yet published).
    fn write_entry(&self, bid: u16) {
        let idx = usize::from(self.tail.get() & (self.entries - 1));
        let entry = self.mem.as_ptr().cast::<RawEntry>().wrapping_add(idx);
        // SAFETY: `entry` lies in the ring area of our mapping (idx <
        // entries); the kernel reads entries only up to the published tail,
        // which this one is past, so nothing reads it now. Fields are
        // written one by one, leaving the first entry's `resv` (the tail)
        // alone.
        unsafe {
            (&raw mut (*entry).addr).write(self.buf_ptr(bid) as u64);
            (&raw mut (*entry).len).write(self.buf_size);
            (&raw mut (*entry).bid).write(bid);
        }
        self.tail.set(self.tail.get().wrapping_add(1));
        self.available.set(self.available.get() + 1);
    }

    /// Kernel mode: makes the entries written so far visible to the kernel.
    fn publish_tail(&self) {
        let entry = self.mem.as_ptr().cast::<RawEntry>();
        // SAFETY: the tail is the first entry's `resv`, a 2-aligned u16 in
        // our mapping that only we write and the kernel reads; a release
        // store orders the entry writes before it, as the kernel expects.
        let tail = unsafe { &*(&raw mut (*entry).resv).cast::<AtomicU16>() };
        tail.store(self.tail.get(), Ordering::Release);
    }

    /// The kernel handed buffer `bid` out with a completion.
    pub(crate) fn took(&self) {
        self.available.set(self.available.get().saturating_sub(1));
    }

    /// Local mode: takes a free buffer.
    pub(crate) fn take_free(&self) -> Option<u16> {
        let bid = self.free.borrow_mut().pop()?;
        self.took();
        Some(bid)
    }

    /// Gives buffer `bid` back to the pool (the kernel's ring or the free
    /// list); with `wake`, wakes the receives waiting for one.
    pub(crate) fn recycle(&self, bid: u16, wake: bool) {
        if self.bgid.is_some() {
            self.write_entry(bid);
            self.publish_tail();
        } else {
            self.free.borrow_mut().push(bid);
            self.available.set(self.available.get() + 1);
        }
        if wake {
            let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
            for w in waiters {
                w.wake();
            }
        }
    }

    /// Wakes `waker` when a buffer comes back.
    pub(crate) fn wait(&self, waker: &Waker) {
        let mut w = self.waiters.borrow_mut();
        if !w.iter().any(|x| x.will_wake(waker)) {
            w.push(waker.clone());
        }
    }

    pub(crate) fn available(&self) -> u32 {
        self.available.get()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(bgid) = self.bgid {
            // Nothing selects from the group any more (every op that could
            // holds an Rc to us). Unregister before unmapping, so that the
            // kernel never reads entries from freed memory.
            let unregistered = match self.lp.driver.try_borrow_mut() {
                Ok(mut d) => d.unregister_buf_ring(bgid).is_ok(),
                Err(_) => false,
            };
            if !unregistered {
                // Cannot tell the kernel: leaking the mapping is the only
                // safe choice.
                return;
            }
        }
        // SAFETY: our own mapping, which nothing uses any more (see above).
        unsafe { libc::munmap(self.mem.as_ptr().cast(), self.mem_len) };
    }
}

/// A buffer of a [`BufRing`] holding received bytes; it goes back to the
/// pool when dropped. Dereferences to the bytes; implements [`IoBuf`], so
/// it can be written to a socket as it is (an echo without a copy).
///
/// A [`RecvStream`](crate::net::RecvStream) may also hand out bytes that a
/// dropped plain `read` on the same socket had received (kept with the
/// socket, see the guide's cancellation section): such a buffer lives on
/// the heap, not in the pool, and its [`id`](RingBuf::id) is `u16::MAX`.
pub struct RingBuf {
    src: Src,
    start: u32,
    len: u32,
}

/// Where a [`RingBuf`]'s bytes live. Two words: the heap variant fits
/// beside the pool variant's non-null `Rc`.
enum Src {
    /// Buffer `bid` of a pool; `quiet`: it goes back without waking the
    /// receives waiting for one (dropped while the loop reaps, from an
    /// orphan cleanup).
    Pool {
        ring: Rc<Inner>,
        bid: u16,
        quiet: bool,
    },
    /// Bytes copied out of a dropped plain read's buffer. Boxed: one word,
    /// so that a `RingBuf` stays three (rare: only such bytes pay for it).
    #[allow(clippy::box_collection)]
    Heap(Box<Vec<u8>>),
}

impl RingBuf {
    /// Buffer `bid` of `ring`, holding `len` bytes the kernel wrote.
    pub(crate) fn new(ring: Rc<Inner>, bid: u16, len: u32) -> RingBuf {
        let len = len.min(ring.buf_size);
        RingBuf {
            src: Src::Pool {
                ring,
                bid,
                quiet: false,
            },
            start: 0,
            len,
        }
    }

    /// Received bytes kept on the heap (from a dropped plain read), at
    /// most `u32::MAX` of them (a receive is at most `MAX_LEN` bytes).
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> RingBuf {
        let len = bytes.len().min(u32::MAX as usize) as u32;
        RingBuf {
            src: Src::Heap(Box::new(bytes)),
            start: 0,
            len,
        }
    }

    /// Drops the buffer back into its pool without waking the receives
    /// waiting for one (for code that runs while the loop reaps; the next
    /// buffer to come back wakes them).
    pub(crate) fn drop_quietly(mut self) {
        if let Src::Pool { quiet, .. } = &mut self.src {
            *quiet = true;
        }
    }

    /// Records that the kernel wrote `len` bytes (at most the buffer size).
    pub(crate) fn set_len(&mut self, len: u32) {
        let max = match &self.src {
            Src::Pool { ring, .. } => ring.buf_size,
            Src::Heap(v) => v.len().min(u32::MAX as usize) as u32,
        };
        self.len = len.min(max);
        self.start = 0;
    }

    /// Drops the first `n` bytes (all of them if `n` is larger).
    pub fn advance(&mut self, n: usize) {
        let n = n.min((self.len - self.start) as usize) as u32;
        self.start += n;
    }

    /// The buffer's id in its pool; `u16::MAX` (never a pool's id) for
    /// bytes kept from a dropped plain read.
    pub fn id(&self) -> u16 {
        match &self.src {
            Src::Pool { bid, .. } => *bid,
            Src::Heap(_) => u16::MAX,
        }
    }

    /// Where the buffer's bytes start (before `start`).
    fn base(&self) -> *const u8 {
        match &self.src {
            Src::Pool { ring, bid, .. } => ring.buf_ptr(*bid).cast_const(),
            Src::Heap(v) => v.as_ptr(),
        }
    }
}

impl Deref for RingBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: a pool buffer: the kernel wrote `len` bytes into it and
        // gave it to us with the completion; it is ours (not in the
        // kernel's ring) until we drop, and the mapping lives as long as
        // `ring`. A heap buffer: `len` is at most the vector's length. In
        // both, `start <= len`.
        unsafe {
            std::slice::from_raw_parts(
                self.base().add(self.start as usize),
                (self.len - self.start) as usize,
            )
        }
    }
}

impl AsRef<[u8]> for RingBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for RingBuf {
    fn drop(&mut self) {
        if let Src::Pool { ring, bid, quiet } = &self.src {
            ring.recycle(*bid, !*quiet);
        }
    }
}

impl fmt::Debug for RingBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingBuf")
            .field("id", &self.id())
            .field("len", &self.len())
            .finish()
    }
}

// SAFETY: the bytes live in the pool's mapping, which does not move and
// lives as long as the `Rc` this value holds, and stay out of the kernel's
// hands until the value drops; or in a boxed vector this value owns, whose
// heap memory does not move either.
unsafe impl IoBuf for RingBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.base().wrapping_add(self.start as usize)
    }
    fn bytes_init(&self) -> usize {
        (self.len - self.start) as usize
    }
    fn bytes_total(&self) -> usize {
        (self.len - self.start) as usize
    }
}

/// Received bytes that a receive stream or a plain read took from the
/// kernel but did not hand out before it was dropped: kept with the
/// socket, for its next read or stream, in the order received. Shared by
/// the socket, its streams and their operations in flight (an op parked
/// after its future was dropped holds it until its completion). Bytes of a
/// plain read are copied out of its buffer into a heap [`RingBuf`].
pub(crate) type Stash = Rc<StashQueue>;

/// The queue behind a [`Stash`]: empty (one word, no allocation) on the
/// many sockets that never stash anything, boxed once something is
/// stashed or a read is dropped mid-flight.
#[derive(Default)]
pub(crate) struct StashQueue(RefCell<Option<Box<StashInner>>>);

/// The boxed part of a [`StashQueue`].
#[derive(Default)]
struct StashInner {
    queue: VecDeque<RingBuf>,
    /// Plain receives whose future was dropped while the kernel still had
    /// them: until each one's completion is in the queue (its data is
    /// dropped after that), a new receive waits, so that it cannot take
    /// bytes that come after the ones the dropped receive holds. Signed:
    /// the data of a receive that had completed is dropped (`-1`) just
    /// before its future notes the drop (`+1`).
    dropped_in_flight: i32,
    /// Receives waiting for `dropped_in_flight` to reach 0.
    waiters: Vec<Waker>,
}

impl StashQueue {
    pub(crate) fn push_back(&self, buf: RingBuf) {
        self.0
            .borrow_mut()
            .get_or_insert_default()
            .queue
            .push_back(buf);
    }

    /// Puts back bytes that come before everything queued (taken out
    /// earlier and not all handed out).
    pub(crate) fn push_front(&self, buf: RingBuf) {
        self.0
            .borrow_mut()
            .get_or_insert_default()
            .queue
            .push_front(buf);
    }

    pub(crate) fn pop_front(&self) -> Option<RingBuf> {
        self.0.borrow_mut().as_mut()?.queue.pop_front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.borrow().as_ref().is_none_or(|q| q.queue.is_empty())
    }

    /// A plain receive's future was dropped while its op was in flight.
    pub(crate) fn receive_dropped(&self) {
        self.0
            .borrow_mut()
            .get_or_insert_default()
            .dropped_in_flight += 1;
    }

    /// The data of a dropped plain receive is freed: its completion (and
    /// its bytes) went through the orphan cleanup. Wakes the receives
    /// waiting for that.
    pub(crate) fn dropped_receive_done(&self) {
        let waiters = {
            let mut q = self.0.borrow_mut();
            let q = q.get_or_insert_default();
            q.dropped_in_flight -= 1;
            if q.dropped_in_flight > 0 {
                return;
            }
            std::mem::take(&mut q.waiters)
        };
        for w in waiters {
            w.wake();
        }
    }

    /// `Ready` once no dropped receive is in flight any more (its bytes,
    /// if any, are in the queue); else registers `cx`'s waker.
    pub(crate) fn poll_settled(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut q = self.0.borrow_mut();
        match q.as_mut() {
            Some(q) if q.dropped_in_flight > 0 => {
                if !q.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    q.waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }

    /// Whether a dropped receive is still in flight.
    pub(crate) fn unsettled(&self) -> bool {
        self.0
            .borrow()
            .as_ref()
            .is_some_and(|q| q.dropped_in_flight > 0)
    }
}

/// A socket's [`Stash`], made on first use (a `Cell`, so one word per socket).
#[derive(Default)]
pub(crate) struct StashCell(Cell<Option<Stash>>);

impl StashCell {
    pub(crate) fn get(&self) -> Stash {
        let s = self.0.take().unwrap_or_default();
        self.0.set(Some(s.clone()));
        s
    }

    /// Copies stashed bytes into `buf` (from its start, up to its
    /// capacity): `Some(count)` if there were any.
    pub(crate) fn read_into<B: super::IoBufMut>(&self, buf: &mut B) -> Option<usize> {
        let s = self.0.take()?;
        let out = {
            let mut q = s.0.borrow_mut();
            match q.as_mut().and_then(|q| q.queue.front_mut()) {
                None => None,
                Some(front) => {
                    let n = front.len().min(buf.bytes_total());
                    // SAFETY: `buf` is writable for `bytes_total() >= n`
                    // bytes at `stable_mut_ptr` (IoBufMut), and cannot
                    // overlap `front`'s bytes: those are in the pool's
                    // mapping or a vector the stash owns, which only
                    // RingBufs point into (and a RingBuf is not IoBufMut).
                    unsafe {
                        std::ptr::copy_nonoverlapping(front.as_ptr(), buf.stable_mut_ptr(), n);
                        buf.set_init(n);
                    }
                    front.advance(n);
                    let used = if front.is_empty() {
                        q.as_mut().and_then(|q| q.queue.pop_front())
                    } else {
                        None
                    };
                    Some((n, used))
                }
            }
        };
        self.0.set(Some(s));
        // A used-up buffer goes back to its pool (waking receives) only
        // once the stash is no longer borrowed.
        out.map(|(n, _used)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A received buffer stays three words with its heap variant (the
    /// `Box` fits beside the pool variant's `Rc`), and a socket's stash is
    /// one word until something is stashed.
    #[test]
    fn a_ring_buf_is_24_bytes_and_an_empty_stash_queue_16() {
        assert_eq!(std::mem::size_of::<RingBuf>(), 24);
        assert_eq!(std::mem::size_of::<StashQueue>(), 16);
        assert_eq!(std::mem::size_of::<StashCell>(), 8);
    }

    #[test]
    fn stashed_bytes_are_read_in_order_across_entries() {
        let cell = StashCell::default();
        let stash = cell.get();
        stash.push_back(RingBuf::from_bytes(b"hello".to_vec()));
        stash.push_back(RingBuf::from_bytes(b" world".to_vec()));
        let mut out = Vec::with_capacity(3);
        assert_eq!(cell.read_into(&mut out), Some(3));
        assert_eq!(out, b"hel");
        let mut out = Vec::with_capacity(64);
        assert_eq!(cell.read_into(&mut out), Some(2));
        assert_eq!(out, b"lo");
        assert_eq!(cell.read_into(&mut out), Some(6));
        assert_eq!(out, b" world");
        assert!(stash.is_empty());
        assert_eq!(cell.read_into(&mut out), None);
        let buf = RingBuf::from_bytes(vec![1, 2, 3]);
        assert_eq!(buf.id(), u16::MAX);
        assert_eq!(crate::io::IoBuf::bytes_init(&buf), 3);
    }
}
