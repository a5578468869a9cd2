//! # ringio
//!
//! An async runtime for Linux on io_uring — one event loop per thread, one
//! ring per loop — whose task layer has the semantics of Python asyncio's
//! "Coroutines and Tasks": `run`, `create_task`, `sleep`, the Task object
//! with `cancel()`, done callbacks and introspection, low-level promises
//! and context variables.
//!
//! Cancellation is a request, not a kill: the cancelled task sees
//! `Err(Error::Cancelled)` at the await point it is suspended in, after any
//! ring operation in flight there was cancelled with
//! `IORING_OP_ASYNC_CANCEL` and its completion reaped. It may clean up,
//! await more, and re-raise or suppress the cancellation.
//!
//! **Start with the [guide]**: asyncio's names and ringio's side by side,
//! the cancellation rules (numbered; code cites them as "guide,
//! cancellation rule N"), owned-buffer I/O, threads and cores, what `run`
//! does at the end, timers, errors, panics and debug mode. It is also
//! `docs/guide.md` in the repository. For imports, see the [`prelude`].
//!
//! ```
//! use std::time::Duration;
//!
//! async fn cancel_me() -> ringio::Result<()> {
//!     println!("cancel_me(): before sleep");
//!     let r = ringio::sleep(Duration::from_secs(3600)).await;
//!     if let Err(e) = &r {
//!         assert!(e.is_cancelled());
//!         println!("cancel_me(): cancel sleep");
//!     }
//!     println!("cancel_me(): after sleep");
//!     r
//! }
//!
//! ringio::run(async {
//!     let task = ringio::create_task(cancel_me());
//!     ringio::sleep(Duration::from_millis(10)).await.unwrap();
//!     task.cancel();
//!     assert!(task.clone().await.unwrap_err().is_cancelled());
//!     assert!(task.cancelled());
//! });
//! ```
#![warn(missing_docs)]

pub mod combinators;
#[cfg(any(feature = "tokio-io", feature = "hyper"))]
pub mod compat;
mod driver;
mod error;
pub mod fs;
pub mod guide;
pub mod io;
pub mod net;
pub mod prelude;
mod runtime;
pub mod signal;
mod sync;
mod task;
mod threads;
mod time;

pub use combinators::{
    AsCompleted, Awaitable, Child, Gather, ReturnWhen, WaitFor, as_completed, gather,
    gather_settled, shield, wait, wait_for,
};
/// Fault injection for tests (feature `fault-injection`, test-only): make
/// the real ring's submissions fail, completions come back as errors or
/// short, and cross-loop wake-ups fail or get lost.
#[cfg(feature = "fault-injection")]
pub use driver::fault;
pub use driver::{DriverStats, MAX_RING_ENTRIES};
pub use error::{Error, Result};
pub use runtime::{
    Builder, CallbackHandle, DEFAULT_RING_ENTRIES, Logger, Loop, LoopHandle, LoopStats, Op,
    OpOutput, Report, ReportKind, Runtime, get_running_loop, run,
};
pub use task::{
    CallbackId, Context, ContextVar, Frame, Join, Promise, Read, Task, TaskBuilder, TaskRef, Token,
    all_tasks, create_task, current_task,
};
pub use threads::{
    ConcurrentFuture, Core, DEFAULT_KEEP_ALIVE, DEFAULT_SHUTDOWN_TIMEOUT, MultiRuntime, PoolStats,
    Requested, SHUTDOWN_CANCEL_MESSAGE, Shutdown, ThreadPool, ThreadPoolBuilder, ToThread,
    WaitConcurrent, run_coroutine_threadsafe, to_thread,
};
pub use time::{Sleep, SleepWith, sleep, sleep_with};
