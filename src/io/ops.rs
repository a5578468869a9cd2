//! The ring operations the socket and file types are built from.
//!
//! Each helper moves the memory the kernel will touch (buffer, address,
//! path, statx struct) into the operation's owned data before submitting,
//! builds the SQE from that data's *heap* addresses (which do not move when
//! the data does), and gives the memory back with the result. A deadline in
//! effect (see [`super::timeout`]) adds a linked `IORING_OP_LINK_TIMEOUT`
//! whose timespec is boxed inside the same data.
//!
//! # Safety
//!
//! Ring submissions (`ops::submit`, `Op::try_submit`) are `unsafe` because
//! the kernel reads and writes the memory an SQE names until the CQE: every
//! SQE here points into heap memory the op owns (moved into its data before
//! submission, handed back with the result, parked in the op table if the
//! future is dropped), or into no memory at all. `KernelBox` and `KernelBuf`
//! hold that memory through raw pointers, so that moving the op (into the op
//! table, say) never retags it while the kernel may be writing into it.

use std::any::Any;
use std::ffi::CString;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::time::Instant;

use io_uring::types::{Fd, Timespec};
use io_uring::{opcode, squeue, types};

use super::buf::{BufResult, IoBuf, IoBufMut, KernelBuf, Slice};
use super::buf_ring::{RingBuf, Stash, StashCell};
use super::fd::close_orphan;
use super::timeout::current_deadline;
use crate::driver::OrphanCleanup;
use crate::error::{Error, Result};
use crate::runtime::Op;

/// The largest length one SQE can carry.
pub(crate) const MAX_LEN: usize = u32::MAX as usize;

/// Heap memory the kernel reads or writes while an operation runs (an
/// address, a `msghdr`, a `statx`, a path, a timespec), owned through the
/// raw pointer `Box::into_raw` gives rather than through a `Box`.
///
/// A `Box` asserts unique access each time it moves (into the op, into the
/// op table), which would invalidate, under Stacked Borrows, a pointer
/// handed to the kernel before the move. Every pointer the SQE carries is
/// derived from `ptr` here, which moves with the value but is never
/// retagged, and the value is turned back into a `Box` only once the kernel
/// is done with it (the op's completion, or its drop by the op table after
/// the final CQE).
pub(crate) struct KernelBox<T: ?Sized> {
    ptr: NonNull<T>,
}

impl<T> KernelBox<T> {
    pub(crate) fn new(value: T) -> KernelBox<T> {
        KernelBox::from_box(Box::new(value))
    }
}

impl<T: ?Sized> KernelBox<T> {
    pub(crate) fn from_box(b: Box<T>) -> KernelBox<T> {
        // SAFETY: `Box::into_raw` never returns null.
        KernelBox {
            ptr: unsafe { NonNull::new_unchecked(Box::into_raw(b)) },
        }
    }

    /// Where the value lives, for the SQE (and for reading what the kernel
    /// wrote, once it is done).
    pub(crate) fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// The value back as a `Box`. Only once the kernel is done with it.
    pub(crate) fn into_box(self) -> Box<T> {
        let ptr = self.ptr.as_ptr();
        std::mem::forget(self);
        // SAFETY: `ptr` came from `Box::into_raw` and is given back once.
        unsafe { Box::from_raw(ptr) }
    }
}

impl<T: ?Sized> Drop for KernelBox<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `Box::into_raw` and is freed once; the
        // owner (an op, or the op table) drops it only after the final CQE.
        drop(unsafe { Box::from_raw(self.ptr.as_ptr()) });
    }
}

/// A path as a `KernelBox` of its NUL-terminated bytes, and the pointer
/// the SQE takes.
fn kernel_path(path: CString) -> (KernelBox<[u8]>, *const libc::c_char) {
    let bytes = KernelBox::from_box(path.into_bytes_with_nul().into_boxed_slice());
    let ptr = bytes.as_ptr().cast::<libc::c_char>().cast_const();
    (bytes, ptr)
}

/// Submits `sqe`, owning `data` until its completion, and waits for it.
/// Returns the result, the CQE flags and the data back. Without a running
/// loop, or on a kernel whose ring lacks the opcode, nothing is submitted
/// and the error comes back with the data.
///
/// The SQE is queued when this is called (from inside the caller's poll),
/// not at the future's first poll. A -ECANCELED completion caused by the
/// deadline's linked timeout becomes `Error::Timeout`; one caused by the
/// task's cancellation is `Error::Cancelled` (from `Op`).
///
/// # Safety
///
/// Every pointer in `sqe` must point into heap memory owned by `data`, or to
/// memory valid for the whole life of the operation.
#[inline]
pub(crate) unsafe fn submit<D: 'static>(
    sqe: squeue::Entry,
    data: D,
    cleanup: Option<OrphanCleanup>,
) -> SubmitOp<D> {
    // SAFETY: forwarded from the caller.
    unsafe { SubmitOp::lazy(sqe, data, cleanup) }
}

/// The error of a read into a buffer with no room, or `None` if it has
/// some. `std` gives `Ok(0)` there, but that is also how end of file reads,
/// and a loop that reads into `Vec::new()` would take it for the peer
/// closing; so it is an error that says what to do instead.
fn no_room<B: IoBuf>(buf: &B) -> Option<Error> {
    (buf.bytes_total() == 0).then(|| {
        Error::InvalidArgument(
            "read into a buffer with no capacity: a Vec is read into up to its capacity, \
             not its length, so Vec::new() has no room; use Vec::with_capacity(n)"
                .into(),
        )
    })
}

/// Reads into `buf` (its whole capacity, from its start) from `fd` at
/// `offset` (`u64::MAX`: the file position; sockets ignore it).
///
/// A buffer with no room is `Error::InvalidArgument` (see `no_room`).
pub(crate) fn read_at<B: IoBufMut>(fd: impl Into<Target>, buf: B, offset: u64) -> ReadOp<B> {
    ReadOp::read_at(fd.into(), buf, offset)
}

/// Receives into `buf` from socket `fd` (`IORING_OP_RECV`).
/// A buffer with no room is `Error::InvalidArgument` (see `no_room`).
pub(crate) fn recv<B: IoBufMut>(fd: impl Into<Target>, buf: B, flags: i32) -> ReadOp<B> {
    ReadOp::recv(fd.into(), buf, flags)
}

/// What a receive on a stream socket owns while the kernel runs it: the
/// buffer it receives into (taken out when the future gets the result)
/// and the socket's stash. If the future is dropped, the op table parks
/// this until the completion, and [`stash_dropped_recv`] (or, for the
/// slice a `read_exact` receives into, [`stash_dropped_recv_exact`])
/// moves the bytes into the stash, so that the socket's next read returns
/// them.
struct StreamRecv<B> {
    // Held so that its moves do not invalidate the kernel's pointer
    // (see `KernelBuf`).
    buf: Option<KernelBuf<B>>,
    stash: Stash,
}

impl<B> Drop for StreamRecv<B> {
    fn drop(&mut self) {
        if self.buf.is_some() {
            // Still holding the buffer: its future was dropped, and its
            // completion has gone through `stash_dropped_recv` (or it
            // never reached the kernel). Receives waiting behind it go on.
            self.stash.dropped_receive_done();
        }
    }
}

/// Notes, if dropped, that the future of a stream receive was dropped
/// while its op was in flight: the next receive on the socket waits until
/// that op's bytes are in the stash (see `StashInner::dropped_in_flight`).
/// Forgotten when the op's result comes back.
struct NoteDrop<'a>(&'a StashCell);

impl Drop for NoteDrop<'_> {
    fn drop(&mut self) {
        self.0.get().receive_dropped();
    }
}

/// The orphan cleanup of a `read`'s receive whose future was dropped
/// (the guide's cancellation rule 7: nothing received is lost): copies
/// the `res` bytes it received out of the buffer (which is freed with the
/// op) into the socket's stash, behind what is there already. If the
/// socket was dropped meanwhile, the stash (and so the bytes) goes when
/// the op's data does: nobody can read them any more.
///
/// One function per buffer type, so that it fits [`OrphanCleanup`].
fn stash_dropped_recv<B: IoBufMut>(res: i32, _flags: u32, data: Option<&mut dyn Any>) {
    if let Some((buf, stash)) = data.and_then(stream_data::<B>) {
        stash_received(stash, buf.stable_ptr(), 0, res, buf.bytes_total());
    }
}

/// The same for a `read_exact`'s receive into the slice `begin..` of its
/// buffer: the `begin` bytes before the slice were received earlier (into
/// the buffer, which cannot go back to the caller now) and go first.
fn stash_dropped_recv_exact<B: IoBufMut>(res: i32, _flags: u32, data: Option<&mut dyn Any>) {
    if let Some((slice, stash)) = data.and_then(stream_data::<Slice<B>>) {
        let base = slice.get().get_ref().stable_ptr();
        stash_received(stash, base, slice.get().begin(), res, slice.bytes_total());
    }
}

/// The buffer and stash of a parked [`StreamRecv<B>`], bare or paired
/// with a deadline's timespec (see [`submit`]); `None` once the buffer
/// was taken.
fn stream_data<B: 'static>(data: &mut dyn Any) -> Option<(&KernelBuf<B>, &Stash)> {
    let d = if data.is::<StreamRecv<B>>() {
        data.downcast_mut::<StreamRecv<B>>()
    } else {
        data.downcast_mut::<(StreamRecv<B>, KernelBox<Timespec>)>()
            .map(|(d, _)| d)
    }?;
    Some((d.buf.as_ref()?, &d.stash))
}

/// Copies the `keep` bytes at `base` and the `res` (a completion's result,
/// at most `room`) after them into the stash, as one entry.
fn stash_received(stash: &Stash, base: *const u8, keep: usize, res: i32, room: usize) {
    let n = keep + usize::try_from(res).unwrap_or(0).min(room);
    if n == 0 {
        return;
    }
    // SAFETY: the `keep` bytes at `base` were received into the buffer
    // before this op, and the kernel wrote `res` bytes right after them
    // and is done with them (this is the op's only completion, and it
    // completes once: the bytes are stashed once).
    let bytes = unsafe { std::slice::from_raw_parts(base, n) }.to_vec();
    stash.push_back(RingBuf::from_bytes(bytes));
}

/// How one receive on a stream socket ended (see [`stream_recv_done`]).
enum Recvd<B> {
    /// Its result, and the buffer (holding the bytes received).
    Done(Result<u32>, B),
    /// The stash holds bytes that come first (ours, if any, are behind
    /// them): the caller reads the stash.
    Retry(B),
}

/// Waits (a turn of the loop, usually) while a receive dropped earlier on
/// the socket is still in flight: the kernel may yet hand it bytes that
/// come before any a new receive would get. `true` if it waited (the stash
/// may hold those bytes now).
async fn settle_dropped(rx: &StashCell) -> bool {
    let stash = rx.get();
    if !stash.unsettled() {
        return false;
    }
    std::future::poll_fn(|cx| stash.poll_settled(cx)).await;
    true
}

/// The SQE and the op data of one `IORING_OP_RECV` into `buf` for a
/// stream socket, whose bytes go to the socket's stash if the future is
/// dropped (see [`StreamRecv`]). Submit it with [`stash_dropped_recv`] (or
/// `_exact`) as the cleanup and a [`NoteDrop`] alive across the await.
fn stream_recv<B: IoBufMut>(fd: Target, buf: B, rx: &StashCell) -> (squeue::Entry, StreamRecv<B>) {
    let len = buf.bytes_total().min(MAX_LEN) as u32;
    let mut buf = KernelBuf::new(buf);
    let ptr = buf.stable_mut_ptr();
    let sqe = match fd {
        Target::Fd(fd) => opcode::Recv::new(Fd(fd), ptr, len).build(),
        Target::Fixed(slot) => opcode::Recv::new(types::Fixed(slot), ptr, len).build(),
    };
    let data = StreamRecv {
        buf: Some(buf),
        stash: rx.get(),
    };
    (sqe, data)
}

/// The end of a [`stream_recv`]: the buffer back, with its result.
fn stream_recv_done<B: IoBufMut>(res: Result<u32>, mut data: StreamRecv<B>) -> Recvd<B> {
    let Some(buf) = data.buf.take() else {
        unreachable!("the buffer is taken out once, here")
    };
    let mut buf = buf.into_inner();
    finish_read(&res, &mut buf);
    match res {
        Ok(n) if !data.stash.is_empty() => {
            // A receive dropped earlier on this socket (a receive stream's,
            // which `settle_dropped` does not wait for) completed with
            // bytes before ours, which the loop reaps in order: they came
            // first. Ours go behind them, and the caller serves the stash
            // in order. End of stream (0) is not stashed: the next receive
            // reads it again.
            if n > 0 {
                // SAFETY: the kernel wrote `n` bytes from `buf`'s start.
                let ours = unsafe { std::slice::from_raw_parts(buf.stable_ptr(), n as usize) };
                data.stash.push_back(RingBuf::from_bytes(ours.to_vec()));
            }
            Recvd::Retry(buf)
        }
        res => Recvd::Done(res, buf),
    }
}

/// Receives into `buf` from stream socket `fd` (`IORING_OP_RECV`), taking
/// bytes kept in the socket's stash (by a dropped receive stream or read)
/// first. If the future is dropped while the receive runs, what it
/// receives goes to the stash (see [`StreamRecv`]).
/// A buffer with no room is `Error::InvalidArgument` (see `no_room`).
pub(crate) async fn recv_stream<B: IoBufMut>(
    fd: impl Into<Target>,
    mut buf: B,
    rx: &StashCell,
) -> BufResult<usize, B> {
    let fd = fd.into();
    if let Some(e) = no_room(&buf) {
        return (Err(e), buf);
    }
    loop {
        if let Some(n) = rx.read_into(&mut buf) {
            return (Ok(n), buf);
        }
        if !settle_dropped(rx).await {
            break;
        }
    }
    let (sqe, data) = stream_recv(fd, buf, rx);
    let note = NoteDrop(rx);
    // SAFETY: the SQE points into the buffer's stable heap memory, owned
    // by the op (inside `data`).
    let (res, _, data) = unsafe { submit(sqe, data, Some(stash_dropped_recv::<B>)) }.await;
    std::mem::forget(note);
    match stream_recv_done(res, data) {
        Recvd::Done(res, buf) => (res.map(|n| n as usize), buf),
        Recvd::Retry(mut buf) => {
            let n = rx.read_into(&mut buf).unwrap_or(0);
            (Ok(n), buf)
        }
    }
}

/// Receives until `buf`'s whole capacity is filled (from its start), one
/// `IORING_OP_RECV` after another, taking bytes stashed by a dropped
/// receive stream or read first. End of stream before that is an
/// `UnexpectedEof` error saying how many bytes came; the buffer comes back
/// holding them (a `Vec`'s length is that count), as on any other error.
/// If the future is dropped while a receive runs, the bytes received so
/// far (into `buf`, and by that receive) go to the socket's stash.
pub(crate) async fn recv_exact<B: IoBufMut>(
    fd: impl Into<Target>,
    mut buf: B,
    rx: &StashCell,
) -> BufResult<(), B> {
    let fd = fd.into();
    if let Some(e) = no_room(&buf) {
        return (Err(e), buf);
    }
    let total = buf.bytes_total();
    let mut done = 0;
    while done < total {
        let mut slice = buf.slice(done..);
        let res = match rx.read_into(&mut slice) {
            Some(n) => Ok(n as u32),
            // Only before the first byte: what is waited for is a read
            // dropped before this one began, and a future dropped while it
            // waits would lose the bytes already in the buffer (no op
            // holds them).
            None if done == 0 && settle_dropped(rx).await => {
                buf = slice.into_inner();
                continue;
            }
            None => {
                let (sqe, data) = stream_recv(fd, slice, rx);
                let note = NoteDrop(rx);
                // SAFETY: the SQE points into the slice's part of the
                // buffer's stable heap memory, owned by the op (in `data`).
                let (res, _, data) =
                    unsafe { submit(sqe, data, Some(stash_dropped_recv_exact::<B>)) }.await;
                std::mem::forget(note);
                match stream_recv_done(res, data) {
                    Recvd::Done(res, s) => {
                        slice = s;
                        res
                    }
                    Recvd::Retry(s) => {
                        buf = s.into_inner();
                        continue;
                    }
                }
            }
        };
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                let e = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "end of stream after {done} of {total} bytes: the peer closed before \
                         read_exact was done (the buffer holds the {done} bytes read)"
                    ),
                );
                return (Err(e.into()), buf);
            }
            Ok(n) => done += n as usize,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

pub(crate) fn finish_read<B: IoBufMut>(res: &Result<u32>, buf: &mut B) {
    if let Ok(n) = *res {
        // SAFETY: the kernel wrote `n <= bytes_total` bytes from the start.
        unsafe { buf.set_init(n as usize) };
    }
}

/// What an operation names: a descriptor, or a slot of the ring's
/// fixed-file table (`IOSQE_FIXED_FILE`, for `DirectStream`/`DirectFile`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    Fd(RawFd),
    Fixed(u32),
}

impl From<RawFd> for Target {
    fn from(fd: RawFd) -> Target {
        Target::Fd(fd)
    }
}

/// Builds the SQE of opcode `$op` on `$target`, a descriptor or a fixed
/// slot (the crate's builders take either type, not an enum of them).
macro_rules! on_target {
    ($target:expr, $op:ident :: new ( $($arg:expr),* ) $(. $m:ident ( $($marg:expr),* ))* ) => {
        match $target {
            Target::Fd(fd) => opcode::$op::new(Fd(fd), $($arg),*) $(.$m($($marg),*))* .build(),
            Target::Fixed(slot) => {
                opcode::$op::new(types::Fixed(slot), $($arg),*) $(.$m($($marg),*))* .build()
            }
        }
    };
}

/// How a write reaches its target.
#[derive(Clone, Copy)]
pub(crate) enum WriteTo {
    /// `IORING_OP_SEND` on a socket, with these flags (MSG_NOSIGNAL added).
    Socket(i32),
    /// `IORING_OP_WRITE` at this offset (`u64::MAX`: the file position).
    File(u64),
}

fn write_sqe(to_fd: Target, ptr: *const u8, len: usize, to: WriteTo, done: usize) -> squeue::Entry {
    let len = len.min(MAX_LEN) as u32;
    match to {
        WriteTo::Socket(flags) => {
            on_target!(to_fd, Send::new(ptr, len).flags(flags | libc::MSG_NOSIGNAL))
        }
        WriteTo::File(off) => {
            let off = if off == u64::MAX {
                off
            } else {
                off + done as u64
            };
            on_target!(to_fd, Write::new(ptr, len).offset(off))
        }
    }
}

/// Writes the initialised bytes of `buf` once; returns how many went.
pub(crate) async fn write<B: IoBuf>(
    fd: impl Into<Target>,
    buf: B,
    to: WriteTo,
) -> BufResult<usize, B> {
    let buf = KernelBuf::new(buf);
    let sqe = write_sqe(fd.into(), buf.stable_ptr(), buf.bytes_init(), to, 0);
    // SAFETY: the SQE points into `buf`'s stable heap memory, owned by the op.
    let (res, _, buf) = unsafe { submit(sqe, buf, None) }.await;
    (res.map(|n| n as usize), buf.into_inner())
}

/// Writes every initialised byte of `buf`, one operation after another.
pub(crate) fn write_all<B: IoBuf>(fd: impl Into<Target>, buf: B, to: WriteTo) -> WriteAllOp<B> {
    WriteAllOp::new(fd.into(), buf, to)
}

/// Sends the initialised bytes of `buf` once with `IORING_OP_SEND_ZC`
/// (Linux 6.0): the kernel sends from the buffer itself instead of copying
/// it. The op has two completions: the send's result, then (if it sent)
/// a notification that the kernel no longer reads the buffer; the buffer
/// comes back only after that one. Where the ring lacks the opcode it is
/// a plain `IORING_OP_SEND`.
pub(crate) async fn send_zc<B: IoBuf>(fd: RawFd, buf: B) -> BufResult<usize, B> {
    use std::cell::Cell;
    use std::rc::Rc;
    if Op::<()>::require(opcode::SendZc::CODE).is_err() {
        return write(fd, buf, WriteTo::Socket(0)).await;
    }
    let len = buf.bytes_init().min(MAX_LEN) as u32;
    let buf = KernelBuf::new(buf);
    let sqe = opcode::SendZc::new(Fd(fd), buf.stable_ptr(), len)
        .flags(libc::MSG_NOSIGNAL)
        .build();
    // The buffer lives in a cell shared by this future and the op: the op's
    // copy keeps it alive if this future is dropped before the
    // notification (the op table parks it until the final completion); at
    // the notification this future takes it back.
    let cell: Rc<Cell<Option<KernelBuf<B>>>> = Rc::new(Cell::new(Some(buf)));
    // SAFETY: the SQE points into the buffer's stable heap memory; the
    // buffer is owned through `cell`, a clone of which the op holds until
    // its final completion (the notification), also when orphaned.
    let op = unsafe { Op::try_submit(sqe, None, cell.clone(), None, None) };
    let mut op = match op {
        Ok(op) => op,
        Err((e, c)) => {
            drop(c);
            let buf = cell.take().expect("the buffer is in its cell");
            return (Err(e), buf.into_inner());
        }
    };
    let mut result: Option<Result<u32>> = None;
    loop {
        match std::future::poll_fn(|cx| op.poll_next(cx)).await {
            None => break,
            Some((res, flags)) => {
                if io_uring::cqueue::notif(flags) {
                    // The kernel is done with the buffer.
                } else {
                    result = Some(res);
                }
                if !io_uring::cqueue::more(flags) {
                    break;
                }
            }
        }
    }
    drop(op);
    let buf = cell.take().expect("the buffer is in its cell").into_inner();
    let res = result.unwrap_or_else(|| {
        Err(Error::from(std::io::Error::other(
            "IORING_OP_SEND_ZC ended without a result",
        )))
    });
    (res.map(|n| n as usize), buf)
}

fn fixed_on_this_loop(buf: &super::FixedBuf) -> Result<()> {
    match crate::runtime::context::with_loop(|lp| buf.belongs_to(lp.id)) {
        Some(true) => Ok(()),
        Some(false) => Err(Error::InvalidArgument(
            "this FixedBuf is registered with another loop's ring".into(),
        )),
        None => Err(Error::no_running_loop()),
    }
}

/// `IORING_OP_READ_FIXED` into registered buffer `buf` at `offset`.
pub(crate) async fn read_fixed_at(
    fd: RawFd,
    mut buf: super::FixedBuf,
    offset: u64,
) -> BufResult<usize, super::FixedBuf> {
    if let Err(e) = fixed_on_this_loop(&buf) {
        return (Err(e), buf);
    }
    let len = buf.bytes_total().min(MAX_LEN) as u32;
    let sqe = opcode::ReadFixed::new(Fd(fd), buf.stable_mut_ptr(), len, buf.buf_index())
        .offset(offset)
        .build();
    // SAFETY: the SQE points into the registered buffer, owned by the op.
    let (res, _, mut buf) = unsafe { submit(sqe, buf, None) }.await;
    finish_read(&res, &mut buf);
    (res.map(|n| n as usize), buf)
}

/// `IORING_OP_WRITE_FIXED` of registered buffer `buf`'s bytes at `offset`.
pub(crate) async fn write_fixed_at(
    fd: RawFd,
    buf: super::FixedBuf,
    offset: u64,
) -> BufResult<usize, super::FixedBuf> {
    if let Err(e) = fixed_on_this_loop(&buf) {
        return (Err(e), buf);
    }
    let len = buf.bytes_init().min(MAX_LEN) as u32;
    let sqe = opcode::WriteFixed::new(Fd(fd), buf.stable_ptr(), len, buf.buf_index())
        .offset(offset)
        .build();
    // SAFETY: the SQE points into the registered buffer, owned by the op.
    let (res, _, buf) = unsafe { submit(sqe, buf, None) }.await;
    (res.map(|n| n as usize), buf)
}

/// Bytes per splice into the pipe: a pipe holds 64 KiB by default.
const SPLICE_CHUNK: u32 = 64 * 1024;

/// Moves `len` bytes of file `file` from `offset` to socket `sock` with
/// `IORING_OP_SPLICE` (Linux 5.7), through a pipe: file → pipe, then
/// pipe → socket, until done or the file ends. The bytes never enter user
/// space. Returns the result and how many bytes reached the socket (also
/// on error or cancellation).
pub(crate) async fn splice_to_socket(
    file: RawFd,
    sock: RawFd,
    offset: u64,
    len: u64,
) -> (Result<()>, u64) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`; the result is checked.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return (Err(std::io::Error::last_os_error().into()), 0);
    }
    // SAFETY: fresh descriptors nobody else owns. RingFd closes them after
    // the loop's queued SQEs (which may name them) went to the kernel.
    let (rd, wr) = unsafe {
        (
            super::fd::RingFd::from_raw(fds[0]),
            super::fd::RingFd::from_raw(fds[1]),
        )
    };
    let mut sent = 0u64;
    while sent < len {
        let chunk = (len - sent).min(u64::from(SPLICE_CHUNK)) as u32;
        let Ok(off) = i64::try_from(offset + sent) else {
            return (
                Err(Error::InvalidArgument("splice offset past i64::MAX".into())),
                sent,
            );
        };
        let sqe = opcode::Splice::new(Fd(file), off, Fd(wr.raw()), -1, chunk).build();
        // SAFETY: the SQE points to no memory.
        let (res, _, ()) = unsafe { submit(sqe, (), None) }.await;
        let mut in_pipe = match res {
            Ok(0) => break, // end of file
            Ok(n) => n,
            Err(e) => return (Err(e), sent),
        };
        while in_pipe > 0 {
            let sqe = opcode::Splice::new(Fd(rd.raw()), -1, Fd(sock), -1, in_pipe).build();
            // SAFETY: the SQE points to no memory.
            let (res, _, ()) = unsafe { submit(sqe, (), None) }.await;
            match res {
                Ok(0) => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        "the socket took 0 bytes of a splice: the peer takes no more",
                    );
                    return (Err(e.into()), sent);
                }
                Ok(n) => {
                    in_pipe -= n;
                    sent += u64::from(n);
                }
                Err(e) => return (Err(e), sent),
            }
        }
    }
    (Ok(()), sent)
}

/// A socket address the kernel reads or writes, boxed with its length.
pub(crate) struct SockAddrBuf {
    pub(crate) storage: libc::sockaddr_storage,
    pub(crate) len: libc::socklen_t,
}

impl SockAddrBuf {
    pub(crate) fn empty() -> Box<SockAddrBuf> {
        Box::new(SockAddrBuf {
            // SAFETY: all-zero is a valid `sockaddr_storage`.
            storage: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        })
    }
}

/// Accepts one connection on listening socket `fd`: the new descriptor
/// (close-on-exec) and the peer's address. A connection accepted after the
/// future was dropped is closed, not leaked.
pub(crate) async fn accept(fd: RawFd) -> Result<(RawFd, Box<SockAddrBuf>)> {
    let addr = KernelBox::from_box(SockAddrBuf::empty());
    let p = addr.as_ptr();
    // SAFETY: `p` points to a live `SockAddrBuf`; only field addresses are
    // taken, no reference is made.
    let (storage, len) = unsafe { (&raw mut (*p).storage, &raw mut (*p).len) };
    let sqe = opcode::Accept::new(Fd(fd), storage.cast(), len)
        .flags(libc::SOCK_CLOEXEC)
        .build();
    // SAFETY: the SQE points into the address's heap memory, owned by the op.
    let (res, _, addr) = unsafe { submit(sqe, addr, Some(close_orphan as OrphanCleanup)) }.await;
    res.map(|n| (n as RawFd, addr.into_box()))
}

/// Connects socket `fd` to `addr`.
pub(crate) async fn connect(fd: RawFd, addr: Box<SockAddrBuf>) -> Result<()> {
    let len = addr.len;
    let addr = KernelBox::from_box(addr);
    // SAFETY: the address is live; only a field address is taken.
    let storage = unsafe { &raw const (*addr.as_ptr()).storage };
    let sqe = opcode::Connect::new(Fd(fd), storage.cast(), len).build();
    // SAFETY: the SQE points into the address's heap memory, owned by the op.
    let (res, _, _) = unsafe { submit(sqe, addr, None) }.await;
    res.map(|_| ())
}

/// Shuts down part of a full-duplex connection (`IORING_OP_SHUTDOWN`).
pub(crate) async fn shutdown(fd: RawFd, how: i32) -> Result<()> {
    // SAFETY: the SQE points to no memory.
    let (res, _, _) = unsafe { submit(opcode::Shutdown::new(Fd(fd), how).build(), (), None) }.await;
    res.map(|_| ())
}

/// Closes `fd` on the ring (`IORING_OP_CLOSE`); the caller gave it up.
///
/// A close always closes: it is submitted even while the task has a
/// cancellation pending (which is then delivered at the next await point),
/// it takes no deadline, and where the ring cannot run it (no running loop,
/// a kernel without `IORING_OP_CLOSE`, or the kernel cancelled it before it
/// ran) the descriptor is closed with `close(2)` instead.
pub(crate) async fn close(fd: RawFd) -> Result<()> {
    // SAFETY: the SQE points to no memory.
    let op = unsafe { Op::try_submit(opcode::Close::new(Fd(fd)).build(), None, (), None, None) };
    let mut op = match op {
        Ok(op) => op,
        Err(_) => return close_now(fd),
    };
    op.start_now();
    match op.await.result {
        Ok(_) => Ok(()),
        Err(e) if e.is_cancelled() || e.raw_os_error() == Some(libc::ECANCELED) => {
            // The kernel cancelled the close before it ran (it was waiting
            // in a worker): the descriptor is still open.
            close_now(fd)?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// `close(2)`, for a descriptor the caller gave up.
fn close_now(fd: RawFd) -> Result<()> {
    // SAFETY: the caller owns `fd` and gives it up here.
    if unsafe { libc::close(fd) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// A `sendmsg`/`recvmsg` header with its one iovec and its address, in a
/// `KernelBox` so that the header's pointers into itself stay valid when
/// the op's data moves.
pub(crate) struct MsgBuf {
    pub(crate) hdr: libc::msghdr,
    pub(crate) iov: libc::iovec,
    pub(crate) addr: libc::sockaddr_storage,
}

/// Sends `buf` to `addr` (or the connected peer when `addr` is `None`).
pub(crate) async fn send_msg<B: IoBuf>(
    fd: RawFd,
    buf: B,
    addr: Option<(libc::sockaddr_storage, libc::socklen_t)>,
) -> BufResult<usize, B> {
    let buf = KernelBuf::new(buf);
    let msg = new_msg();
    let p = msg.as_ptr();
    // SAFETY: `p` points to a live, zeroed `MsgBuf` that nothing else
    // uses yet; its fields are written through `p` alone, and the header's
    // pointers into it are derived from `p`.
    unsafe {
        (*p).iov.iov_base = buf.stable_ptr() as *mut libc::c_void;
        (*p).iov.iov_len = buf.bytes_init();
        if let Some((storage, len)) = addr {
            (*p).addr = storage;
            (*p).hdr.msg_name = (&raw mut (*p).addr).cast();
            (*p).hdr.msg_namelen = len;
        }
        (*p).hdr.msg_iov = &raw mut (*p).iov;
        (*p).hdr.msg_iovlen = 1;
    }
    // SAFETY: as above, only the header's address is taken.
    let hdr = unsafe { &raw const (*p).hdr };
    let sqe = opcode::SendMsg::new(Fd(fd), hdr)
        .flags(libc::MSG_NOSIGNAL as u32)
        .build();
    // SAFETY: the header, iovec and address are in `msg`'s heap memory, and
    // the iovec points into `buf`'s stable heap memory; the op owns both.
    let (res, _, (_msg, buf)) = unsafe { submit(sqe, (msg, buf), None) }.await;
    (res.map(|n| n as usize), buf.into_inner())
}

/// Receives one datagram into `buf`; gives its length and sender address.
/// A buffer with no room is `Error::InvalidArgument` (see `no_room`).
pub(crate) async fn recv_msg<B: IoBufMut>(
    fd: RawFd,
    buf: B,
) -> BufResult<(usize, libc::sockaddr_storage, libc::socklen_t), B> {
    if let Some(e) = no_room(&buf) {
        return (Err(e), buf);
    }
    let mut buf = KernelBuf::new(buf);
    let msg = new_msg();
    let p = msg.as_ptr();
    // SAFETY: as in `send_msg`.
    unsafe {
        (*p).iov.iov_base = buf.stable_mut_ptr().cast();
        (*p).iov.iov_len = buf.bytes_total();
        (*p).hdr.msg_name = (&raw mut (*p).addr).cast();
        (*p).hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        (*p).hdr.msg_iov = &raw mut (*p).iov;
        (*p).hdr.msg_iovlen = 1;
    }
    // SAFETY: as in `send_msg`.
    let hdr = unsafe { &raw mut (*p).hdr };
    let sqe = opcode::RecvMsg::new(Fd(fd), hdr).build();
    // SAFETY: as in `send_msg`.
    let (res, _, (msg, mut buf)) = unsafe { submit(sqe, (msg, buf), None) }.await;
    finish_read(&res, &mut buf);
    // The kernel is done with the header: own it as a Box again.
    let msg = msg.into_box();
    (
        res.map(|n| (n as usize, msg.addr, msg.hdr.msg_namelen)),
        buf.into_inner(),
    )
}

fn new_msg() -> KernelBox<MsgBuf> {
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths),
    // iovec and sockaddr_storage.
    KernelBox::new(unsafe { std::mem::zeroed() })
}

/// A path as the kernel wants it: NUL-terminated, on the heap.
pub(crate) fn c_path(path: &std::path::Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("path {} contains a NUL byte", path.display())))
}

/// Opens `path` (`IORING_OP_OPENAT` relative to the working directory).
/// A file opened after the future was dropped is closed, not leaked.
pub(crate) async fn open_at(path: CString, flags: i32, mode: u32) -> Result<RawFd> {
    let (path, ptr) = kernel_path(path);
    let sqe = opcode::OpenAt::new(Fd(libc::AT_FDCWD), ptr)
        .flags(flags | libc::O_CLOEXEC)
        .mode(mode)
        .build();
    // SAFETY: the SQE points into the path's heap bytes, owned by the op.
    let (res, _, _) = unsafe { submit(sqe, path, Some(close_orphan as OrphanCleanup)) }.await;
    res.map(|fd| fd as RawFd)
}

/// `statx(2)` of `fd` (with `path` empty) or of `path`.
pub(crate) async fn statx(fd: RawFd, path: CString, flags: i32) -> Result<libc::statx> {
    // SAFETY: all-zero is a valid statx struct.
    let out: KernelBox<libc::statx> = KernelBox::new(unsafe { std::mem::zeroed() });
    let (path, ptr) = kernel_path(path);
    let sqe = opcode::Statx::new(Fd(fd), ptr, out.as_ptr().cast::<types::statx>())
        .flags(flags)
        .mask(libc::STATX_BASIC_STATS | libc::STATX_BTIME)
        .build();
    // SAFETY: the SQE points into the path's and the statx's heap memory,
    // both owned by the op.
    let (res, _, (_, out)) = unsafe { submit(sqe, (path, out), None) }.await;
    res.map(|_| *out.into_box())
}

/// `fsync(2)` (or `fdatasync(2)` when `data_only`).
pub(crate) async fn fsync(fd: RawFd, data_only: bool) -> Result<()> {
    let mut sqe = opcode::Fsync::new(Fd(fd));
    if data_only {
        sqe = sqe.flags(types::FsyncFlags::DATASYNC);
    }
    // SAFETY: the SQE points to no memory.
    let (res, _, _) = unsafe { submit(sqe.build(), (), None) }.await;
    res.map(|_| ())
}

/// `unlinkat(2)` relative to the working directory.
pub(crate) async fn unlink_at(path: CString, flags: i32) -> Result<()> {
    let (path, ptr) = kernel_path(path);
    let sqe = opcode::UnlinkAt::new(Fd(libc::AT_FDCWD), ptr)
        .flags(flags)
        .build();
    // SAFETY: the SQE points into the path's heap bytes, owned by the op.
    let (res, _, _) = unsafe { submit(sqe, path, None) }.await;
    res.map(|_| ())
}

/// `renameat(2)` relative to the working directory.
pub(crate) async fn rename_at(from: CString, to: CString) -> Result<()> {
    let (from, from_ptr) = kernel_path(from);
    let (to, to_ptr) = kernel_path(to);
    let sqe =
        opcode::RenameAt::new(Fd(libc::AT_FDCWD), from_ptr, Fd(libc::AT_FDCWD), to_ptr).build();
    // SAFETY: the SQE points into both paths' heap bytes, owned by the op.
    let (res, _, _) = unsafe { submit(sqe, (from, to), None) }.await;
    res.map(|_| ())
}

/// `mkdirat(2)` relative to the working directory.
pub(crate) async fn mkdir_at(path: CString, mode: u32) -> Result<()> {
    let (path, ptr) = kernel_path(path);
    let sqe = opcode::MkDirAt::new(Fd(libc::AT_FDCWD), ptr)
        .mode(mode)
        .build();
    // SAFETY: the SQE points into the path's heap bytes, owned by the op.
    let (res, _, _) = unsafe { submit(sqe, path, None) }.await;
    res.map(|_| ())
}

/// The future of [`submit`]: the operation is handed to the ring when
/// this is made ([`SubmitOp::new`]) or at its first poll
/// ([`SubmitOp::lazy`]), with a linked timeout if a deadline is in effect
/// then, and the future gives `(result, CQE flags, data)`. A named type, so a state
/// machine that keeps an operation in a field (`io::Compat`) holds one in
/// place, and the I/O calls built on it are one future deep instead of
/// two `async fn`s. Dropping it drops the `Op`: the operation is
/// cancelled, and its SQE issued, as for any dropped op.
pub(crate) struct SubmitOp<D: 'static> {
    state: SubmitState<D>,
}

enum SubmitState<D: 'static> {
    /// Made by [`SubmitOp::lazy`] and not polled yet.
    Unsubmitted(Option<Unsubmitted<D>>),
    Plain(Op<D>),
    /// With the deadline's linked timeout, whose timespec the op owns.
    Timed(Op<(D, KernelBox<Timespec>)>),
    /// Never submitted (no running loop, an opcode the ring lacks, a
    /// deadline already past, a bad argument): the error and the data,
    /// until the first poll.
    Failed(Option<(Error, D)>),
}

/// What a lazy [`SubmitOp`] submits at its first poll.
struct Unsubmitted<D> {
    sqe: squeue::Entry,
    data: D,
    cleanup: Option<OrphanCleanup>,
}

impl<D: 'static> SubmitOp<D> {
    /// Submits `sqe` as [`submit`] does, under the deadline in effect now.
    ///
    /// # Safety
    ///
    /// As for [`submit`]: every pointer in `sqe` points into heap memory
    /// owned by `data`, or memory valid for the whole operation.
    #[inline]
    pub(crate) unsafe fn new(
        sqe: squeue::Entry,
        data: D,
        cleanup: Option<OrphanCleanup>,
    ) -> SubmitOp<D> {
        SubmitOp {
            // SAFETY: forwarded from the caller.
            state: unsafe { Self::start(sqe, data, cleanup, None) },
        }
    }

    /// Submits `sqe` at the first poll, under the deadline in effect then,
    /// with the poller's waker registered at once: that poll then answers
    /// `Pending` without looking the op up again (one op-table look-up and
    /// one driver borrow fewer per operation). Dropped unpolled, it never
    /// reaches the ring. For a future that is awaited where it is made
    /// (every `submit(..).await`): one kept to be polled later should start
    /// at once ([`SubmitOp::new`]).
    ///
    /// # Safety
    ///
    /// As for [`SubmitOp::new`].
    #[inline]
    pub(crate) unsafe fn lazy(
        sqe: squeue::Entry,
        data: D,
        cleanup: Option<OrphanCleanup>,
    ) -> SubmitOp<D> {
        SubmitOp {
            state: SubmitState::Unsubmitted(Some(Unsubmitted { sqe, data, cleanup })),
        }
    }

    /// Submits `sqe` under the deadline in effect now; `poller` as for
    /// [`Op::try_submit`].
    ///
    /// # Safety
    ///
    /// As for [`SubmitOp::new`].
    #[inline]
    unsafe fn start(
        sqe: squeue::Entry,
        data: D,
        cleanup: Option<OrphanCleanup>,
        poller: Option<&std::task::Waker>,
    ) -> SubmitState<D> {
        match current_deadline() {
            None => {
                // SAFETY: forwarded from the caller.
                match unsafe { Op::try_submit(sqe, None, data, cleanup, poller) } {
                    Ok(op) => SubmitState::Plain(op),
                    Err(failed) => SubmitState::Failed(Some(failed)),
                }
            }
            Some(deadline) => {
                let now = Instant::now();
                if deadline <= now {
                    // Already late: do not start an operation the kernel
                    // would cancel at once.
                    SubmitState::Failed(Some((Error::Timeout, data)))
                } else {
                    let left = deadline - now;
                    let ts = KernelBox::new(
                        Timespec::new()
                            .sec(left.as_secs())
                            .nsec(left.subsec_nanos()),
                    );
                    let link = opcode::LinkTimeout::new(ts.as_ptr().cast_const()).build();
                    // SAFETY: `sqe` points into `data` (caller), the link
                    // timeout into the boxed timespec; the op owns both.
                    match unsafe { Op::try_submit(sqe, Some(link), (data, ts), cleanup, poller) } {
                        Ok(op) => SubmitState::Timed(op),
                        Err((e, (data, _))) => SubmitState::Failed(Some((e, data))),
                    }
                }
            }
        }
    }

    /// A future that gives `e` and `data` back at its first poll, without
    /// touching the ring.
    pub(crate) fn failed(e: Error, data: D) -> SubmitOp<D> {
        SubmitOp {
            state: SubmitState::Failed(Some((e, data))),
        }
    }
}

impl<D: 'static> Unpin for SubmitOp<D> {}

impl<D: 'static> std::future::Future for SubmitOp<D> {
    type Output = (Result<u32>, u32, D);

    #[inline]
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::{Poll, ready};
        if let SubmitState::Unsubmitted(unsubmitted) = &mut self.state {
            let Unsubmitted { sqe, data, cleanup } = unsubmitted
                .take()
                .expect("an unsubmitted op is submitted once");
            // SAFETY: as promised to `lazy`: the SQE points into `data`.
            let started = unsafe { Self::start(sqe, data, cleanup, Some(cx.waker())) };
            // What is replaced is `Unsubmitted(None)`, which owns nothing:
            // forgetting it skips the drop glue of the whole enum.
            std::mem::forget(std::mem::replace(&mut self.state, started));
            let registered = match &self.state {
                SubmitState::Plain(op) => op.waits_registered(),
                SubmitState::Timed(op) => op.waits_registered(),
                SubmitState::Unsubmitted(_) | SubmitState::Failed(_) => false,
            };
            if registered {
                return Poll::Pending;
            }
        }
        match &mut self.state {
            SubmitState::Unsubmitted(_) => unreachable!("submitted above"),
            SubmitState::Plain(op) => {
                let out = ready!(std::pin::Pin::new(op).poll(cx));
                Poll::Ready((out.result, out.flags, out.data))
            }
            SubmitState::Timed(op) => {
                let out = ready!(std::pin::Pin::new(op).poll(cx));
                let result = match out.result {
                    // Not the task's cancel (that is `Cancelled`), so the
                    // linked timeout fired.
                    Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => Err(Error::Timeout),
                    r => r,
                };
                Poll::Ready((result, out.flags, out.data.0))
            }
            SubmitState::Failed(failed) => {
                let (e, data) = failed.take().expect("SubmitOp polled after completion");
                Poll::Ready((Err(e), 0, data))
            }
        }
    }
}

/// The future of [`recv`] (on a socket) and [`read_at`] (on anything
/// else), started at its first poll: gives the count and the buffer, whose
/// initialised length is set to the count.
pub(crate) struct ReadOp<B: IoBufMut> {
    // The buffer held so that its move into the op (and the op table)
    // does not invalidate the kernel's pointer (see `KernelBuf`).
    op: SubmitOp<KernelBuf<B>>,
}

impl<B: IoBufMut> ReadOp<B> {
    /// `IORING_OP_RECV` into `buf` (its whole capacity, from its start).
    pub(crate) fn recv(fd: Target, buf: B, flags: i32) -> ReadOp<B> {
        Self::start(buf, |ptr, len| {
            on_target!(fd, Recv::new(ptr, len).flags(flags))
        })
    }

    /// `IORING_OP_READ` into `buf` at `offset` (`u64::MAX`: the file
    /// position).
    pub(crate) fn read_at(fd: Target, buf: B, offset: u64) -> ReadOp<B> {
        Self::start(buf, |ptr, len| {
            on_target!(fd, Read::new(ptr, len).offset(offset))
        })
    }

    /// Submits the SQE `read` builds for `buf`'s memory (a pointer to its
    /// start and its whole capacity), or fails at once if it has no room.
    fn start(buf: B, read: impl FnOnce(*mut u8, u32) -> squeue::Entry) -> ReadOp<B> {
        let mut buf = KernelBuf::new(buf);
        if let Some(e) = no_room(&buf) {
            return ReadOp {
                op: SubmitOp::failed(e, buf),
            };
        }
        let len = buf.bytes_total().min(MAX_LEN) as u32;
        let sqe = read(buf.stable_mut_ptr(), len);
        // SAFETY: the SQE points into `buf`'s stable heap memory, owned by
        // the op.
        ReadOp {
            op: unsafe { SubmitOp::lazy(sqe, buf, None) },
        }
    }
}

impl<B: IoBufMut> std::future::Future for ReadOp<B> {
    type Output = BufResult<usize, B>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let (res, _, mut buf) = std::task::ready!(std::pin::Pin::new(&mut self.op).poll(cx));
        finish_read(&res, &mut buf);
        std::task::Poll::Ready((res.map(|n| n as usize), buf.into_inner()))
    }
}

/// The future of [`write_all`], its first operation started when made:
/// every initialised byte of the buffer, one send (or write) after another
/// until all went, then `Ok(())` and the buffer.
pub(crate) struct WriteAllOp<B: IoBuf> {
    fd: Target,
    to: WriteTo,
    total: usize,
    done: usize,
    state: WriteState<B>,
}

enum WriteState<B: IoBuf> {
    /// The operation in flight (its buffer held as in `ReadOp`).
    Running(SubmitOp<KernelBuf<B>>),
    /// Nothing to write: the buffer, for the first poll.
    Empty(Option<B>),
}

impl<B: IoBuf> WriteAllOp<B> {
    /// Starts writing `buf`'s initialised bytes to `fd`.
    pub(crate) fn new(fd: Target, buf: B, to: WriteTo) -> WriteAllOp<B> {
        let total = buf.bytes_init();
        let state = if total == 0 {
            WriteState::Empty(Some(buf))
        } else {
            WriteState::Running(Self::start(fd, buf, to, 0, total))
        };
        WriteAllOp {
            fd,
            to,
            total,
            done: 0,
            state,
        }
    }

    /// Whether the first operation went to the ring: `false` when it ends
    /// at its first poll without touching the kernel (nothing to write, no
    /// running loop, an opcode the ring lacks, a deadline already past).
    pub(crate) fn submitted(&self) -> bool {
        matches!(
            &self.state,
            WriteState::Running(SubmitOp {
                state: SubmitState::Plain(_) | SubmitState::Timed(_)
            })
        )
    }

    /// Submits the write of `buf[done..total]`.
    fn start(fd: Target, buf: B, to: WriteTo, done: usize, total: usize) -> SubmitOp<KernelBuf<B>> {
        let buf = KernelBuf::new(buf);
        // In bounds: done < total <= the buffer's length.
        let ptr = buf.stable_ptr().wrapping_add(done);
        let sqe = write_sqe(fd, ptr, total - done, to, done);
        // SAFETY: the SQE points into `buf`'s stable heap memory, owned by
        // the op until its completion.
        unsafe { SubmitOp::new(sqe, buf, None) }
    }
}

impl<B: IoBuf> std::future::Future for WriteAllOp<B> {
    type Output = BufResult<(), B>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::{Poll, ready};
        let this = &mut *self;
        loop {
            let op = match &mut this.state {
                WriteState::Running(op) => op,
                WriteState::Empty(buf) => {
                    let buf = buf.take().expect("WriteAllOp polled after completion");
                    return Poll::Ready((Ok(()), buf));
                }
            };
            let (res, _, buf) = ready!(std::pin::Pin::new(op).poll(cx));
            let buf = buf.into_inner();
            match res {
                Ok(0) => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        "the kernel accepted 0 bytes of a write: the peer or device takes no more",
                    );
                    return Poll::Ready((Err(e.into()), buf));
                }
                Ok(n) => this.done += n as usize,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Poll::Ready((Err(e), buf)),
            }
            if this.done >= this.total {
                return Poll::Ready((Ok(()), buf));
            }
            // The rest, from inside this poll: under the same deadline and
            // task as the first part.
            this.state =
                WriteState::Running(Self::start(this.fd, buf, this.to, this.done, this.total));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::any::Any;

    /// The kernel's side modelled as a write through the pointer the SQE
    /// carries, made after the op's data moved (into the op, then into the
    /// op table as `Box<dyn Any>`). Run under Miri (`cargo +nightly miri
    /// test --lib kernel_box`) this checks the pointer is still valid under
    /// Stacked Borrows; with a plain `Box` in place of `KernelBox`, Miri
    /// reports the write as undefined behaviour.
    #[test]
    fn kernel_box_pointers_survive_moves_of_the_owner() {
        let addr = KernelBox::from_box(SockAddrBuf::empty());
        // SAFETY: a field address of a live value; no reference is made.
        let len = unsafe { &raw mut (*addr.as_ptr()).len };
        let in_op = (addr, 1u8);
        let parked: Box<dyn Any> = Box::new(in_op);
        // SAFETY: the memory is alive (owned by `parked`) and nothing else
        // accesses it now, as the kernel's write at completion.
        unsafe { len.write(7) };
        let (addr, _) = *parked.downcast::<(KernelBox<SockAddrBuf>, u8)>().unwrap();
        assert_eq!(addr.into_box().len, 7);

        let msg = new_msg();
        let p = msg.as_ptr();
        // SAFETY: as above.
        unsafe { (*p).hdr.msg_iov = &raw mut (*p).iov };
        let parked: Box<dyn Any> = Box::new(msg);
        // SAFETY: as above: the header's pointer into its own box.
        unsafe { (*(*p).hdr.msg_iov).iov_len = 3 };
        let msg = parked.downcast::<KernelBox<MsgBuf>>().unwrap().into_box();
        assert_eq!(msg.iov.iov_len, 3);
    }
}
