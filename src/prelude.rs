//! What a ringio program usually wants in scope, in one import.
//!
//! ```
//! use ringio::prelude::*;
//! ```
//!
//! brings the buffer traits, whose methods (`.slice(..)`,
//! `.try_slice(..)`) are only callable with the trait in scope, the
//! [`Awaitable`] trait (`.into_child()`), and the error and result types.
//! Note that the glob import shadows the standard `Result` with
//! [`ringio::Result`](crate::Result); its error type defaults to
//! [`Error`] but can still be named (`Result<T, MyError>`).
//!
//! ```
//! use ringio::prelude::*;
//!
//! // `.slice()` comes from `IoBuf`: a view of part of an owned buffer, to
//! // write only those bytes or read into only that room.
//! let buf = b"hello world".to_vec();
//! let hello: Slice<Vec<u8>> = buf.slice(..5);
//! assert_eq!(&hello[..], b"hello");
//! let buf = hello.into_inner();
//!
//! // Its fallible twin gives the buffer back with the error.
//! let (e, buf) = buf.try_slice(3..100).unwrap_err();
//! assert!(matches!(e, Error::InvalidArgument(_)));
//!
//! fn total(r: Result<usize>) -> usize {
//!     r.unwrap_or(0)
//! }
//! assert_eq!(total(Ok(buf.len())), 11);
//! ```

pub use crate::combinators::Awaitable;
pub use crate::error::{Error, Result};
pub use crate::io::{BufResult, IoBuf, IoBufMut, Slice};
