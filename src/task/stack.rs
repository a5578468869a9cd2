//! Stack frames of a task, for `get_stack` and `print_stack`.

use std::fmt;
use std::panic::Location;

/// One frame of a task's stack.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// A source location: where a task is suspended (its ringio await
    /// point) or, for the running task, where `get_stack` was called.
    Location {
        /// Source file.
        file: &'static str,
        /// Line number.
        line: u32,
        /// Column number.
        column: u32,
    },
    /// One error of a failed task: the error itself, then its `source()`
    /// chain.
    Error(String),
}

impl Frame {
    pub(crate) fn at(loc: &'static Location<'static>) -> Frame {
        Frame::Location {
            file: loc.file(),
            line: loc.line(),
            column: loc.column(),
        }
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::Location { file, line, column } => {
                write!(f, "  File \"{file}\", line {line}, column {column}")
            }
            Frame::Error(e) => write!(f, "  {e}"),
        }
    }
}
