//! Socket addresses to and from the kernel's `sockaddr` structs.
//!
//! # Safety
//!
//! The `unsafe` here converts socket addresses to and from
//! `sockaddr_storage`: all-zero is a valid value of each `sockaddr` type, the
//! storage is larger than and aligned for all of them, and the family field
//! decides which one is read.

use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::ops::SockAddrBuf;

/// `addr` as a `sockaddr_storage` and its length.
pub(crate) fn to_raw(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for any
            // sockaddr type.
            unsafe { *(&mut storage as *mut _ as *mut libc::sockaddr_in) = sin };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { *(&mut storage as *mut _ as *mut libc::sockaddr_in6) = sin6 };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// `addr` boxed for an operation that reads it.
pub(crate) fn to_boxed(addr: &SocketAddr) -> Box<SockAddrBuf> {
    let (storage, len) = to_raw(addr);
    Box::new(SockAddrBuf { storage, len })
}

/// An IP socket address from what the kernel wrote.
pub(crate) fn from_raw(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Result<SocketAddr> {
    match storage.ss_family as i32 {
        libc::AF_INET if len as usize >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says it is a sockaddr_in, and it fits.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says it is a sockaddr_in6, and it fits.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        family => Err(Error::InvalidArgument(format!(
            "the kernel returned a socket address of family {family}, not IPv4 or IPv6"
        ))),
    }
}

/// Resolves `addr` (a name lookup blocks; IP literals do not) to at least
/// one address.
pub(crate) fn resolve(addr: impl ToSocketAddrs) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(Error::InvalidArgument(
            "the address resolved to no socket address".into(),
        ));
    }
    Ok(addrs)
}

/// A Unix-domain socket address for `path`.
pub(crate) fn unix_raw(path: &Path) -> Result<(libc::sockaddr_storage, libc::socklen_t)> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut sun: libc::sockaddr_un = unsafe { mem::zeroed() };
    if bytes.len() >= sun.sun_path.len() {
        return Err(Error::InvalidArgument(format!(
            "Unix socket path {} is {} bytes; the kernel takes at most {}",
            path.display(),
            bytes.len(),
            sun.sun_path.len() - 1
        )));
    }
    if bytes.contains(&0) {
        return Err(Error::InvalidArgument(format!(
            "Unix socket path {} contains a NUL byte",
            path.display()
        )));
    }
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in sun.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_un.
    unsafe { *(&mut storage as *mut _ as *mut libc::sockaddr_un) = sun };
    Ok((storage, len as libc::socklen_t))
}
