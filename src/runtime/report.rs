//! Reports: what the loop tells its exception handler and logger (errors in
//! callbacks, at shutdown, never-retrieved exceptions, slow polls).

use std::fmt;

use crate::error::Error;

/// What a report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportKind {
    /// A callback (`call_soon`, a done callback) panicked.
    CallbackError,
    /// A task failed and nobody ever read its exception.
    ExceptionNeverRetrieved,
    /// A task was dropped while still pending.
    TaskDestroyedPending,
    /// A task left over at `run`'s end failed while being cancelled.
    ShutdownError,
    /// Debug mode: one poll or callback blocked the loop too long.
    SlowCallback,
    /// A report made by user code through `call_exception_handler`.
    Custom,
    /// At `run`'s end, thread-pool work (`to_thread`) did not finish within
    /// the pool's shutdown bound; `run` returned without it.
    ExecutorShutdownTimeout,
}

/// One report: asyncio's exception-handler `context` dict, as a struct.
#[derive(Clone, Debug)]
pub struct Report {
    /// What happened.
    pub kind: ReportKind,
    /// The message, in asyncio's words where asyncio has them.
    pub message: String,
    /// The error involved, if any.
    pub error: Option<Error>,
    /// The task involved (its repr), if any.
    pub task: Option<String>,
}

impl Report {
    pub(crate) fn new(kind: ReportKind, message: impl Into<String>) -> Report {
        Report {
            kind,
            message: message.into(),
            error: None,
            task: None,
        }
    }

    pub(crate) fn error(mut self, e: Error) -> Report {
        self.error = Some(e);
        self
    }

    pub(crate) fn task(mut self, repr: String) -> Report {
        self.task = Some(repr);
        self
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(t) = &self.task {
            write!(f, "\ntask: {t}")?;
        }
        if let Some(e) = &self.error {
            write!(f, "\nerror: {e}")?;
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                write!(f, "\ncaused by: {s}")?;
                src = s.source();
            }
        }
        Ok(())
    }
}

/// Where reports end up when no exception handler takes them.
pub type Logger = std::rc::Rc<dyn Fn(&Report)>;

/// The default logger: one block on stderr per report.
pub(crate) fn stderr_logger(report: &Report) {
    eprintln!("{report}");
}
