//! The one error type of ringio, modelled on asyncio's exceptions.
//!
//! asyncio raises `CancelledError`, `TimeoutError`, `InvalidStateError` and
//! friends; ringio returns them as kinds of [`Error`]. `Error` is `Clone`
//! (payloads are shared through `Arc`), so several awaiters of one task each
//! get the same outcome.

use std::fmt;
use std::io;
use std::sync::Arc;

/// `Result<T, ringio::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong: asyncio's exception kinds plus the ones a ring adds.
#[derive(Clone)]
#[non_exhaustive]
pub enum Error {
    /// The task (or the awaited operation) was cancelled; asyncio's
    /// `CancelledError`. `msg` is the message given to `cancel_with`.
    Cancelled {
        /// The cancel message, if one was given.
        msg: Option<String>,
    },
    /// A deadline passed; asyncio's `TimeoutError`.
    Timeout,
    /// The call is not valid in the object's current state; asyncio's
    /// `InvalidStateError` and the `RuntimeError`s of misuse.
    InvalidState(String),
    /// An operating-system error, from the ring or a syscall.
    Io(Arc<io::Error>),
    /// A task (or a `to_thread` closure) panicked; the panic message.
    ///
    /// The panic is caught (the loop goes on, and the task ends with this
    /// error as its exception), but catching does not stop the standard
    /// panic hook, which runs first: a `thread '..' panicked at ..` line
    /// (and a backtrace with `RUST_BACKTRACE=1`) still goes to stderr. To
    /// keep it quiet, install your own hook with [`std::panic::set_hook`]
    /// before running the loop, for example one that prints nothing, or
    /// one that filters and hands the rest on to the previous hook:
    ///
    /// ```
    /// // Silence every panic message of this process...
    /// let default_hook = std::panic::take_hook();
    /// std::panic::set_hook(Box::new(|_| {}));
    ///
    /// ringio::run(async {
    ///     let task = ringio::create_task(async {
    ///         if true {
    ///             panic!("boom");
    ///         }
    ///         Ok::<_, ringio::Error>(())
    ///     });
    ///     let e = task.await.unwrap_err();
    ///     assert!(matches!(&e, ringio::Error::Panic(m) if m == "boom"));
    /// });
    ///
    /// // ...and put the default back when done.
    /// std::panic::set_hook(default_hook);
    /// ```
    ///
    /// The hook is process-wide, and `set_hook` itself panics if called
    /// from a panicking thread; a test harness running tests in parallel
    /// shares it between them.
    Panic(String),
    /// An argument was out of range or otherwise wrong.
    InvalidArgument(String),
    /// The kernel lacks a feature the call needs; says which and what brings it.
    Unsupported(String),
    /// Any other error, such as a task's own exception wrapped by [`Error::other`].
    Other(Arc<dyn std::error::Error + Send + Sync + 'static>),
}

impl Error {
    /// Wraps any error as a task's exception. Every awaiter sees the same `Arc`.
    pub fn other<E: std::error::Error + Send + Sync + 'static>(e: E) -> Error {
        Error::Other(Arc::new(e))
    }

    /// An [`Error::Other`] carrying just a message (asyncio's `RuntimeError("...")`).
    pub fn msg(text: impl Into<String>) -> Error {
        Error::Other(Arc::new(Message(text.into())))
    }

    /// A cancellation with an optional message.
    pub fn cancelled(msg: Option<String>) -> Error {
        Error::Cancelled { msg }
    }

    /// Whether this is [`Error::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled { .. })
    }

    /// Whether this is [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout)
    }

    /// The OS error number, for [`Error::Io`] errors that carry one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// asyncio's "no running event loop", for calls made outside a loop.
    pub(crate) fn no_running_loop() -> Error {
        Error::InvalidState("no running event loop".into())
    }

    /// An `Io` error from a negative CQE result (`-errno`).
    pub(crate) fn from_errno(errno: i32) -> Error {
        Error::Io(Arc::new(io::Error::from_raw_os_error(errno)))
    }
}

impl From<io::Error> for Error {
    /// Wraps an OS error as [`Error::Io`]. An `io::Error` that only carries
    /// a ringio error (as the `AsyncRead`/`AsyncWrite` adapters return for a
    /// cancellation or a timeout) gives that error back, so that `?` keeps a
    /// task's cancellation a cancellation.
    fn from(e: io::Error) -> Error {
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            let kind = e.kind();
            if let Some(inner) = e.into_inner() {
                return match inner.downcast::<Error>() {
                    Ok(err) => *err,
                    Err(other) => Error::Io(Arc::new(io::Error::new(kind, other))),
                };
            }
            return Error::Io(Arc::new(io::Error::from(kind)));
        }
        Error::Io(Arc::new(e))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Cancelled { msg: None } => write!(f, "cancelled"),
            Error::Cancelled { msg: Some(m) } => write!(f, "cancelled: {m}"),
            Error::Timeout => write!(f, "timed out"),
            Error::InvalidState(m) => write!(f, "{m}"),
            Error::Io(e) => write!(f, "{e}"),
            Error::Panic(m) => write!(f, "task panicked: {m}"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::Unsupported(m) => write!(f, "unsupported: {m}"),
            Error::Other(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Cancelled { msg } => f.debug_struct("Cancelled").field("msg", msg).finish(),
            Error::Timeout => write!(f, "Timeout"),
            Error::InvalidState(m) => f.debug_tuple("InvalidState").field(m).finish(),
            Error::Io(e) => f.debug_tuple("Io").field(e).finish(),
            Error::Panic(m) => f.debug_tuple("Panic").field(m).finish(),
            Error::InvalidArgument(m) => f.debug_tuple("InvalidArgument").field(m).finish(),
            Error::Unsupported(m) => f.debug_tuple("Unsupported").field(m).finish(),
            Error::Other(e) => f.debug_tuple("Other").field(e).finish(),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(&**e),
            Error::Other(e) => e.source(),
            _ => None,
        }
    }
}

/// A plain message used as an error (`Error::msg`).
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}
