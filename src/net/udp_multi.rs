//! `RecvFromStream`: datagrams received into a [`BufRing`]'s buffers, with
//! their sources, as a `Stream` (multishot `IORING_OP_RECVMSG`).
//!
//! With a pool registered with the kernel, the kernel lays each datagram
//! out in one buffer of the pool as `io_uring_recvmsg_out` (16 bytes: the
//! lengths of the name, control data and payload, and the message flags),
//! then the source address in a fixed-size name field, then the payload.
//! That layout is parsed here from the bytes, with every length checked
//! against the buffer, so a malformed completion is an error item, never an
//! out-of-bounds read.
//!
//! Invariants the `unsafe` blocks rely on: the `msghdr` (and, for a plain
//! receive, its iovec and address) lives in a `KernelBox` owned by the op's
//! data, written only before submission and read only after the op's final
//! completion; the buffers the kernel fills belong to the pool, which the
//! op's data keeps alive until that completion; and a caller's buffer that
//! a stashed datagram is copied into is an `IoBufMut`, writable for
//! `bytes_total()` bytes, which cannot overlap the pool's mapping.
//!
//! # Safety
//!
//! Ring submissions (`ops::submit`, `Op::try_submit`) are `unsafe` because
//! the kernel reads and writes the memory an SQE names until the CQE: every
//! SQE here points into heap memory the op owns (moved into its data before
//! submission, handed back with the result, parked in the op table if the
//! future is dropped), or into no memory at all. A multishot `recvmsg` reads
//! its `msghdr` from a `KernelBox` the op owns until the final CQE, and
//! writes only into pool buffers; a datagram is copied out of a pool buffer
//! into a caller's buffer that cannot overlap the pool's mapping.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Deref;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_util::stream::Stream;
use io_uring::types::Fd;
use io_uring::{cqueue, opcode};

use super::addr::from_raw;
use crate::driver::OrphanCleanup;
use crate::error::{Error, Result};
use crate::io::buf_ring::Inner;
use crate::io::ops::{KernelBox, MsgBuf};
use crate::io::{BufRing, IoBufMut, RingBuf};
use crate::runtime::Op;

/// Size of `struct io_uring_recvmsg_out`, at the start of every buffer a
/// multishot `IORING_OP_RECVMSG` fills.
const OUT_HDR: usize = 16;
/// The fixed name field the kernel reserves after the header: room for an
/// IPv6 address (an IPv4 one is shorter and zero-padded).
const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// The smallest buffer a multishot receive can use: the header, the name
/// field and at least one byte of payload.
pub const MIN_DATAGRAM_BUF: usize = OUT_HDR + NAME_LEN + 1;

/// How many received datagrams a multishot receive may hold unread before
/// it is stopped: past that, datagrams wait in the socket's receive queue
/// (or are dropped by the kernel when it is full, as for any UDP socket
/// nobody reads) until the stream is read again, and one unread socket
/// cannot take every buffer of a shared pool.
pub const DATAGRAM_QUEUE_MAX: u32 = 256;

/// One received datagram: its payload, in a buffer of a [`BufRing`] (back
/// to the pool when dropped), and its source address. Dereferences to the
/// payload.
///
/// A datagram longer than the buffer has room for is cut by the kernel;
/// then [`is_truncated`](Datagram::is_truncated) is `true` and
/// [`len_on_wire`](Datagram::len_on_wire) is the length that was sent.
/// Use larger buffers (the payload room is the buffer size less
/// [`Datagram::OVERHEAD`] with a kernel-registered pool) if that matters.
pub struct Datagram {
    buf: RingBuf,
    source: SocketAddr,
    len_on_wire: usize,
}

impl Datagram {
    /// Bytes of each buffer of a kernel-registered pool that go to the
    /// kernel's header and the source address, before the payload.
    pub const OVERHEAD: usize = OUT_HDR + NAME_LEN;

    /// Who sent it.
    pub fn source(&self) -> SocketAddr {
        self.source
    }

    /// Whether the kernel cut the datagram to fit the buffer (`MSG_TRUNC`).
    pub fn is_truncated(&self) -> bool {
        self.len_on_wire > self.buf.len()
    }

    /// The datagram's length as sent (larger than `len()` if truncated).
    pub fn len_on_wire(&self) -> usize {
        self.len_on_wire
    }

    /// The buffer holding the payload (it can be sent as it is).
    pub fn into_buf(self) -> RingBuf {
        self.buf
    }
}

impl Deref for Datagram {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl AsRef<[u8]> for Datagram {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Datagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datagram")
            .field("source", &self.source)
            .field("len", &self.len())
            .field("len_on_wire", &self.len_on_wire)
            .finish()
    }
}

/// Datagrams a dropped stream had received but not handed out, kept with
/// the socket for its next `recv_from`, `recv` or stream.
pub(crate) type DgramStash = Rc<RefCell<VecDeque<Datagram>>>;

/// A socket's [`DgramStash`], made on first use.
#[derive(Default)]
pub(crate) struct DgramStashCell(Cell<Option<DgramStash>>);

impl DgramStashCell {
    pub(crate) fn get(&self) -> DgramStash {
        let s = self.0.take().unwrap_or_default();
        self.0.set(Some(s.clone()));
        s
    }

    /// The oldest stashed datagram, if any.
    fn pop(&self) -> Option<Datagram> {
        let s = self.0.take()?;
        let d = s.borrow_mut().pop_front();
        self.0.set(Some(s));
        d
    }

    /// Copies the oldest stashed datagram into `buf` (from its start, cut
    /// to its capacity, as `recvfrom` does): its copied length and source.
    pub(crate) fn recv_into<B: IoBufMut>(&self, buf: &mut B) -> Option<(usize, SocketAddr)> {
        let d = self.pop()?;
        let n = d.len().min(buf.bytes_total());
        // SAFETY: `buf` is writable for `bytes_total() >= n` bytes at
        // `stable_mut_ptr` (IoBufMut) and cannot overlap the pool's mapping
        // (only RingBufs point into it, and a RingBuf is not IoBufMut).
        unsafe {
            std::ptr::copy_nonoverlapping(d.as_ptr(), buf.stable_mut_ptr(), n);
            buf.set_init(n);
        }
        // The buffer goes back to the pool here, outside any borrow.
        Some((n, d.source))
    }
}

/// A little-endian-agnostic read of the `i`th native-endian `u32`.
fn word(b: &[u8], i: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[i * 4..i * 4 + 4]);
    u32::from_ne_bytes(w)
}

/// An IP socket address from the name bytes the kernel wrote (a
/// `sockaddr_in` or `sockaddr_in6`), read field by field.
fn addr_from_name(name: &[u8]) -> Result<SocketAddr> {
    let bad = || {
        Error::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "a received datagram's source address is not IPv4 or IPv6 ({} bytes)",
                name.len()
            ),
        ))
    };
    if name.len() < 2 {
        return Err(bad());
    }
    let family = i32::from(u16::from_ne_bytes([name[0], name[1]]));
    let port = |n: &[u8]| u16::from_be_bytes([n[2], n[3]]);
    match family {
        libc::AF_INET if name.len() >= std::mem::size_of::<libc::sockaddr_in>() => {
            let ip = Ipv4Addr::new(name[4], name[5], name[6], name[7]);
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, port(name))))
        }
        libc::AF_INET6 if name.len() >= std::mem::size_of::<libc::sockaddr_in6>() => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&name[8..24]);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port(name),
                word(name, 1),
                word(name, 6),
            )))
        }
        _ => Err(bad()),
    }
}

/// Where the payload lies in a multishot receive's buffer of `bytes` (the
/// completion's count of bytes written), its length on the wire, and the
/// source address.
fn parse_out(bytes: &[u8]) -> Result<(usize, usize, SocketAddr)> {
    if bytes.len() < OUT_HDR + NAME_LEN {
        return Err(Error::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "a multishot IORING_OP_RECVMSG completion of {} bytes is shorter than its \
                 header and name field ({} bytes)",
                bytes.len(),
                OUT_HDR + NAME_LEN
            ),
        )));
    }
    let namelen = word(bytes, 0) as usize;
    let controllen = word(bytes, 1) as usize;
    let payloadlen = word(bytes, 2) as usize;
    let flags = word(bytes, 3);
    // We ask for no control data; the kernel reserves none.
    let start = OUT_HDR + NAME_LEN;
    let _ = controllen;
    let name = &bytes[OUT_HDR..OUT_HDR + namelen.min(NAME_LEN)];
    let source = addr_from_name(name)?;
    let copied = bytes.len() - start;
    let mut on_wire = payloadlen.max(copied);
    if flags & libc::MSG_TRUNC as u32 != 0 && on_wire == copied {
        // Cut, but the kernel did not say by how much: at least one more.
        on_wire = copied + 1;
    }
    Ok((start, on_wire, source))
}

/// A datagram from buffer `bid`, which a multishot receive filled with
/// `res` bytes (header, name, payload).
fn from_multishot(
    ring: &Rc<Inner>,
    bid: u16,
    res: u32,
) -> std::result::Result<Datagram, (Error, RingBuf)> {
    let mut buf = RingBuf::new(ring.clone(), bid, res);
    match parse_out(&buf) {
        Ok((start, len_on_wire, source)) => {
            buf.advance(start);
            Ok(Datagram {
                buf,
                source,
                len_on_wire,
            })
        }
        Err(e) => Err((e, buf)),
    }
}

/// A datagram from leased buffer `bid`, which a plain receive filled:
/// `res` is the length on the wire (`MSG_TRUNC`), the address is in `msg`.
fn from_single(
    ring: &Rc<Inner>,
    bid: u16,
    res: u32,
    msg: &MsgBuf,
) -> std::result::Result<Datagram, (Error, RingBuf)> {
    let buf = RingBuf::new(ring.clone(), bid, res);
    match from_raw(&msg.addr, msg.hdr.msg_namelen) {
        Ok(source) => Ok(Datagram {
            buf,
            source,
            len_on_wire: res as usize,
        }),
        Err(e) => Err((e, buf)),
    }
}

/// What a receive into the pool owns while the kernel runs it: the pool,
/// the socket's stash (for datagrams that complete once the stream is
/// gone), the `msghdr` the kernel reads (and, for a plain receive, writes
/// the source into), and for a plain receive the leased buffer.
struct RecvFromData {
    ring: Rc<Inner>,
    stash: DgramStash,
    msg: KernelBox<MsgBuf>,
    lease: Option<u16>,
}

impl RecvFromData {
    /// The header once the kernel is done with it (the op's final
    /// completion was reaped).
    fn msg_done(&self) -> &MsgBuf {
        // SAFETY: only called after the op's final completion, when the
        // kernel no longer reads or writes the header; the box is live as
        // long as `self`.
        unsafe { &*self.msg.as_ptr() }
    }
}

impl Drop for RecvFromData {
    fn drop(&mut self) {
        if let Some(bid) = self.lease.take() {
            self.ring.recycle(bid, true);
        }
    }
}

/// A completion of a receive whose stream was dropped: the datagram goes
/// to the socket's stash (nothing completed is lost), an unused buffer
/// back to the pool. Runs while the loop reaps: no waking from here.
fn stash_orphan(res: i32, flags: u32, data: Option<&mut dyn std::any::Any>) {
    let Some(d) = data.and_then(|d| d.downcast_mut::<RecvFromData>()) else {
        return;
    };
    if let Some(bid) = cqueue::buffer_select(flags) {
        d.ring.took();
        if res > 0 {
            match from_multishot(&d.ring, bid, res as u32) {
                Ok(dg) => d.stash.borrow_mut().push_back(dg),
                Err((_, buf)) => buf.drop_quietly(),
            }
        } else {
            d.ring.recycle(bid, false);
        }
        return;
    }
    if res >= 0 {
        if let Some(bid) = d.lease.take() {
            // A plain receive is single-shot: this is its final
            // completion, the kernel is done with the header.
            match from_single(&d.ring, bid, res as u32, d.msg_done()) {
                Ok(dg) => d.stash.borrow_mut().push_back(dg),
                Err((_, buf)) => buf.drop_quietly(),
            }
        }
    }
}

enum RecvOp {
    /// A multishot `IORING_OP_RECVMSG` selecting from the kernel's ring.
    Multi(Op<RecvFromData>),
    /// A plain `IORING_OP_RECVMSG` into one buffer of a user-space pool.
    Single(Op<RecvFromData>),
}

/// The datagrams arriving on a UDP socket, each in a buffer of a
/// [`BufRing`] with its source address: a `futures` `Stream` of
/// `Result<Datagram>`, from
/// [`UdpSocket::recv_from_multishot`](crate::net::UdpSocket::recv_from_multishot).
///
/// With a pool registered with the kernel, one multishot
/// `IORING_OP_RECVMSG` (Linux 6.0) delivers datagram after datagram; when
/// the kernel ends it (the pool ran dry: `ENOBUFS`, the datagrams wait in
/// the socket's receive queue) the stream arms a new one as soon as a
/// buffer comes back. It holds at most [`DATAGRAM_QUEUE_MAX`] datagrams
/// unread before it stops receiving until it is read again. With a
/// user-space pool (an older kernel, or `BufRingMode::Local`), each item
/// is one plain `IORING_OP_RECVMSG`, a `recv_from` loop, with the same
/// items.
///
/// The stream never ends (UDP has no end of stream); an error is an item,
/// and the next poll receives again. A kernel-registered pool's buffers
/// must be larger than [`Datagram::OVERHEAD`] (the kernel's header and the
/// source address come first); a longer datagram than fits is delivered
/// cut, flagged by [`Datagram::is_truncated`].
///
/// Cancellation follows the guide's rules: a task cancelled while it waits
/// here gets the datagrams that completed before the kernel confirmed the
/// cancel, then `Err(Cancelled)`. Dropping the stream cancels the receive;
/// datagrams the kernel had already completed are kept with the socket and
/// returned first by its next `recv_from`, `recv` or stream.
#[must_use = "streams do nothing unless polled"]
pub struct RecvFromStream<'a> {
    fd: RawFd,
    ring: BufRing,
    stash: DgramStash,
    op: Option<RecvOp>,
    _socket: PhantomData<&'a ()>,
}

impl<'a> RecvFromStream<'a> {
    pub(crate) fn new(fd: RawFd, ring: &BufRing, stash: DgramStash) -> RecvFromStream<'a> {
        RecvFromStream {
            fd,
            ring: ring.clone(),
            stash,
            op: None,
            _socket: PhantomData,
        }
    }

    /// The next datagram (never `None`).
    pub async fn next(&mut self) -> Option<Result<Datagram>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Submits the next receive, or `Ok(false)` if the pool has no free
    /// buffer (the waker is woken when one comes back).
    fn arm(&mut self, cx: &mut Context<'_>) -> Result<bool> {
        let inner = &self.ring.inner;
        inner.check_loop()?;
        if inner.bgid().is_some() && (inner.buf_size() as usize) < MIN_DATAGRAM_BUF {
            return Err(Error::InvalidArgument(format!(
                "a multishot UDP receive needs buffers of at least {MIN_DATAGRAM_BUF} bytes \
                 ({} for the kernel's header and the source address), not {}",
                Datagram::OVERHEAD,
                inner.buf_size()
            )));
        }
        if inner.available() == 0 {
            inner.wait(cx.waker());
            return Ok(false);
        }
        // SAFETY: all-zero is a valid msghdr, iovec and sockaddr_storage.
        let msg = KernelBox::new(unsafe { std::mem::zeroed::<MsgBuf>() });
        let p = msg.as_ptr();
        let cleanup = Some(stash_orphan as OrphanCleanup);
        self.op = Some(match inner.bgid() {
            Some(bgid) => {
                // SAFETY: `p` points to a live, zeroed `MsgBuf` nothing else
                // uses yet. No iovec (the kernel fills a whole buffer), a
                // name field for an IPv6 address, no control data.
                let hdr = unsafe {
                    (*p).hdr.msg_namelen = NAME_LEN as libc::socklen_t;
                    &raw const (*p).hdr
                };
                let data = RecvFromData {
                    ring: inner.clone(),
                    stash: self.stash.clone(),
                    msg,
                    lease: None,
                };
                let sqe = opcode::RecvMsgMulti::new(Fd(self.fd), hdr, bgid)
                    .flags(libc::MSG_TRUNC as u32)
                    .build();
                // SAFETY: the SQE points to the header in `data`'s heap
                // memory and selects buffers of the pool, whose memory
                // `data` keeps alive (an Rc) until the op's final
                // completion, also if the op is orphaned.
                let mut op = unsafe { Op::submit_with(sqe, None, data, cleanup) }?;
                op.limit_queued(DATAGRAM_QUEUE_MAX);
                RecvOp::Multi(op)
            }
            None => {
                let Some(bid) = inner.take_free() else {
                    inner.wait(cx.waker());
                    return Ok(false);
                };
                // SAFETY: as above; the iovec names buffer `bid` of the
                // pool, leased to the op's data below, and the header's
                // pointers are derived from `p`.
                let hdr = unsafe {
                    (*p).iov.iov_base = inner.buf_ptr(bid).cast();
                    (*p).iov.iov_len = inner.buf_size() as usize;
                    (*p).hdr.msg_name = (&raw mut (*p).addr).cast();
                    (*p).hdr.msg_namelen =
                        std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                    (*p).hdr.msg_iov = &raw mut (*p).iov;
                    (*p).hdr.msg_iovlen = 1;
                    &raw mut (*p).hdr
                };
                let data = RecvFromData {
                    ring: inner.clone(),
                    stash: self.stash.clone(),
                    msg,
                    lease: Some(bid),
                };
                // MSG_TRUNC: the result is the datagram's length on the
                // wire, so that a cut one is told from a full one.
                let sqe = opcode::RecvMsg::new(Fd(self.fd), hdr)
                    .flags(libc::MSG_TRUNC as u32)
                    .build();
                // SAFETY: the SQE points to the header, iovec and address in
                // `data`'s heap memory, and into buffer `bid`, leased to
                // `data` (which returns it on drop) and kept alive by its
                // Rc until the op's final completion.
                RecvOp::Single(unsafe { Op::submit_with(sqe, None, data, cleanup) }?)
            }
        });
        Ok(true)
    }
}

impl Stream for RecvFromStream<'_> {
    type Item = Result<Datagram>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let stashed = this.stash.borrow_mut().pop_front();
            if let Some(d) = stashed {
                return Poll::Ready(Some(Ok(d)));
            }
            match this.op.as_mut() {
                None => match this.arm(cx) {
                    Ok(true) => continue,
                    Ok(false) => return Poll::Pending,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
                Some(RecvOp::Multi(op)) => match op.poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => {
                        this.op = None;
                        continue;
                    }
                    Poll::Ready(Some((res, flags))) => {
                        let more = cqueue::more(flags);
                        if !more {
                            // The kernel ended the receive: a dry pool, the
                            // bound, or (seen on 6.18) a zero-length
                            // datagram, after which it stops even with more
                            // waiting. The next poll arms a new one.
                            this.op = None;
                        }
                        let bid = cqueue::buffer_select(flags).inspect(|_| {
                            this.ring.inner.took();
                        });
                        match (res, bid) {
                            (Ok(n), Some(bid)) => {
                                return Poll::Ready(Some(
                                    from_multishot(&this.ring.inner, bid, n).map_err(|(e, _)| e),
                                ));
                            }
                            (res, Some(bid)) => {
                                // An error that still carries a buffer: it
                                // goes back to the pool.
                                drop(RingBuf::new(this.ring.inner.clone(), bid, 0));
                                if let Err(e) = res {
                                    return Poll::Ready(Some(Err(e)));
                                }
                            }
                            (Ok(_), None) => {
                                return Poll::Ready(Some(Err(Error::from(std::io::Error::other(
                                    "a multishot IORING_OP_RECVMSG completed without a buffer",
                                )))));
                            }
                            // The pool ran dry; the datagrams wait in the
                            // socket. Re-arm (once a buffer is back).
                            (Err(e), None) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                            // Stopped at DATAGRAM_QUEUE_MAX unread (not the
                            // task's cancel, which is `Error::Cancelled`):
                            // all of it has been read now, receive again.
                            (Err(e), None)
                                if !more && e.raw_os_error() == Some(libc::ECANCELED) => {}
                            (Err(e), None) => return Poll::Ready(Some(Err(e))),
                        }
                    }
                },
                Some(RecvOp::Single(op)) => match Pin::new(op).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(out) => {
                        this.op = None;
                        let mut data = out.data;
                        let n = match out.result {
                            Ok(n) => n,
                            // The lease goes back with `data`.
                            Err(e) => return Poll::Ready(Some(Err(e))),
                        };
                        let Some(bid) = data.lease.take() else {
                            continue;
                        };
                        let dg = from_single(&this.ring.inner, bid, n, data.msg_done());
                        return Poll::Ready(Some(dg.map_err(|(e, _)| e)));
                    }
                },
            }
        }
    }
}

impl fmt::Debug for RecvFromStream<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvFromStream")
            .field("fd", &self.fd)
            .field("ring", &self.ring)
            .field("armed", &self.op.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(namelen: u32, payloadlen: u32, flags: u32, name: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [namelen, 0, payloadlen, flags] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        let mut field = name.to_vec();
        field.resize(NAME_LEN, 0);
        b.extend_from_slice(&field);
        b.extend_from_slice(payload);
        b
    }

    fn v4_name(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut n = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        n.extend_from_slice(&port.to_be_bytes());
        n.extend_from_slice(&ip);
        n.resize(16, 0);
        n
    }

    #[test]
    fn parses_the_kernels_layout_and_flags_truncation() {
        let b = out(16, 5, 0, &v4_name([127, 0, 0, 1], 4242), b"hello");
        let (start, wire, src) = parse_out(&b).unwrap();
        assert_eq!(&b[start..], b"hello");
        assert_eq!(wire, 5);
        assert_eq!(src, "127.0.0.1:4242".parse().unwrap());
        // Cut: 3 bytes copied of 9 sent.
        let b = out(
            16,
            9,
            libc::MSG_TRUNC as u32,
            &v4_name([10, 0, 0, 2], 1),
            b"abc",
        );
        let (_, wire, _) = parse_out(&b).unwrap();
        assert_eq!(wire, 9);
    }

    #[test]
    fn malformed_layouts_are_errors_not_panics() {
        // Shorter than the header and name field.
        assert!(parse_out(&[0u8; 20]).is_err());
        // A family that is neither IPv4 nor IPv6, and a name too short.
        assert!(parse_out(&out(2, 0, 0, &[1, 0], b"")).is_err());
        assert!(parse_out(&out(3, 0, 0, &v4_name([1, 2, 3, 4], 5)[..3], b"")).is_err());
        // A name length larger than the field is read within the field.
        let b = out(200, 1, 0, &v4_name([1, 2, 3, 4], 5), b"x");
        assert!(parse_out(&b).is_ok());
    }
}
