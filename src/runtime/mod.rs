//! The event loop layer: one loop per thread, one ring per loop.
//!
//! `event_loop` is the loop and its turn; `op` the future of one ring
//! operation; `shared` the part other threads may touch (how a task is
//! woken from another thread); `handle` the public `Loop`/`LoopHandle`;
//! `builder` the `Runtime` and `run`.

mod builder;
pub(crate) mod context;
pub(crate) mod event_loop;
mod handle;
mod op;
pub(crate) mod report;
pub(crate) mod shared;

pub use builder::{Builder, DEFAULT_RING_ENTRIES, Runtime, run};
pub use handle::{CallbackHandle, Loop, LoopHandle, LoopStats, get_running_loop};
pub use op::{Op, OpOutput};
pub use report::{Logger, Report, ReportKind};
