//! Crossing threads: blocking work on a pool (`to_thread`,
//! `Loop::run_in_executor`), work handed to a loop from any thread
//! (`run_coroutine_threadsafe`, `LoopHandle::spawn`, `ConcurrentFuture`),
//! and thread-per-core runtimes (`Builder::cores`, `MultiRuntime`).
//!
//! asyncio's "Running in Threads" and "Scheduling From Other Threads".
//! Everything that reaches a loop from outside goes through the loop's
//! remote queue and wakes it through its ring: `IORING_OP_MSG_RING` from
//! another loop's ring, else an eventfd read kept armed on the ring.

mod concurrent;
pub(crate) mod multi;
mod pool;
mod shutdown;
mod to_thread;

pub use concurrent::{ConcurrentFuture, WaitConcurrent, run_coroutine_threadsafe};
pub use multi::{Core, MultiRuntime};
pub use pool::{
    DEFAULT_KEEP_ALIVE, DEFAULT_SHUTDOWN_TIMEOUT, PoolStats, ThreadPool, ThreadPoolBuilder,
};
pub use shutdown::{Requested, SHUTDOWN_CANCEL_MESSAGE, Shutdown};
pub use to_thread::{ToThread, to_thread};
