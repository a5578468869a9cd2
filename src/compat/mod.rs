//! Other ecosystems' I/O and runtime traits on ringio, behind cargo
//! features.
//!
//! - `tokio-io` ([`tokio_io`]): `tokio::io::{AsyncRead, AsyncWrite}` for
//!   [`io::Compat`](crate::io::Compat), so `tokio-util` codecs,
//!   `tokio-rustls` and other code written against tokio's I/O traits run
//!   over ringio's sockets and files. No tokio runtime is involved.
//! - `hyper` ([`hyper`](mod@self::hyper)): hyper 1.x's `rt` traits — I/O on
//!   [`io::Compat`](crate::io::Compat), an executor that makes ringio
//!   tasks, a timer on ringio's timer heap — so hyper's HTTP/1.1 and HTTP/2
//!   servers and clients run on a ringio loop.
//!
//! Both build on the one owned-buffer adapter, `io::Compat`: its write-behind
//! and cancellation rules (described there and in each module) are the
//! same whichever trait drives it.

#[cfg(feature = "hyper")]
pub mod hyper;
#[cfg(feature = "tokio-io")]
pub mod tokio_io;
