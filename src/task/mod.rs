//! Tasks and their kin: the Task object, low-level promises, context
//! variables, and the cancellation state that await points consult.
//!
//! `raw` is the single allocation of a task and its waker; `core` the
//! asyncio fields in its header; `run` how the loop polls and ends it;
//! `handle` the public `Task`/`TaskRef`; `await_point` the cancellation
//! rules as every await point applies them.

pub(crate) mod await_point;
mod builder;
pub(crate) mod context_var;
pub(crate) mod core;
mod handle;
pub(crate) mod outcome;
mod promise;
pub(crate) mod raw;
pub(crate) mod run;
mod stack;
pub(crate) mod waiters;

pub use builder::{TaskBuilder, create_task};
pub use context_var::{Context, ContextVar, Token};
#[allow(unused_imports)]
pub(crate) use handle::Awaited;
pub use handle::{Join, Read, Task, TaskRef, all_tasks, current_task};
pub use promise::Promise;
pub use stack::Frame;
pub use waiters::CallbackId;
