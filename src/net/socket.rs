//! The socket calls that need no ring: creating, binding, listening and
//! options (they never block), plus borrowing a socket as its `std` type
//! for address and option getters.
//!
//! # Safety
//!
//! The `unsafe` here is plain socket system calls (`socket`, `setsockopt`,
//! `getsockopt`, ...) on descriptors the socket types own, with option values
//! that are live integers of the size passed, and the adoption of the
//! descriptor `socket(2)` returns. Adopting a descriptor (`RingFd::from_raw`,
//! `OwnedFd::from_raw_fd`) is `unsafe` because the new owner closes it: it is
//! only ever done with a descriptor the kernel has just created for us, or
//! one a std type gave up, so nothing else owns it.

use std::io;
use std::mem::{self, ManuallyDrop};
use std::os::fd::{FromRawFd, RawFd};

use crate::error::{Error, Result};
use crate::io::fd::RingFd;

/// A syscall's return value: `Err` with `errno` when it is negative.
fn check(rc: libc::c_int) -> Result<libc::c_int> {
    if rc < 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(rc)
}

/// Creates a close-on-exec socket.
pub(crate) fn socket(domain: i32, ty: i32) -> Result<RingFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = check(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { RingFd::from_raw(fd) })
}

/// `setsockopt` with an `int` value.
pub(crate) fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) -> Result<()> {
    // SAFETY: the option value is a live `int` of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    check(rc).map(drop)
}

/// `getsockopt` of an `int` value.
pub(crate) fn get_int_opt(fd: RawFd, level: i32, name: i32) -> Result<i32> {
    let mut value: i32 = 0;
    let mut len = mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `value`.
    let rc =
        unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) };
    check(rc)?;
    Ok(value)
}

/// `bind(2)`.
pub(crate) fn bind(fd: RawFd, addr: &(libc::sockaddr_storage, libc::socklen_t)) -> Result<()> {
    // SAFETY: `addr` is a valid sockaddr of the given length.
    check(unsafe { libc::bind(fd, sockaddr_ptr(addr), addr.1) }).map(drop)
}

/// The `sockaddr` pointer of a raw address.
fn sockaddr_ptr(addr: &(libc::sockaddr_storage, libc::socklen_t)) -> *const libc::sockaddr {
    (&addr.0 as *const libc::sockaddr_storage).cast()
}

/// `listen(2)`.
pub(crate) fn listen(fd: RawFd, backlog: i32) -> Result<()> {
    // SAFETY: listen(2) on a descriptor we own.
    check(unsafe { libc::listen(fd, backlog) }).map(drop)
}

/// `connect(2)` for datagram sockets (it only records the peer).
pub(crate) fn connect_now(
    fd: RawFd,
    addr: &(libc::sockaddr_storage, libc::socklen_t),
) -> Result<()> {
    // SAFETY: `addr` is a valid sockaddr of the given length.
    check(unsafe { libc::connect(fd, sockaddr_ptr(addr), addr.1) }).map(drop)
}

/// Runs `f` on `fd` seen as the `std` socket type `T`, without taking
/// ownership (for getters such as `local_addr` that `std` already has).
pub(crate) fn with_std<T: FromRawFd, R>(
    fd: RawFd,
    f: impl FnOnce(&T) -> io::Result<R>,
) -> Result<R> {
    // SAFETY: `fd` is open for the duration of the call (the caller owns
    // it), and `ManuallyDrop` keeps the borrowed `T` from closing it.
    let sock = ManuallyDrop::new(unsafe { T::from_raw_fd(fd) });
    f(&sock).map_err(Error::from)
}
