//! Tasks and their kin: the Task object, low-level promises, context
//! variables, and the cancellation state that await points consult.

mod builder;
pub(crate) mod context_var;
pub(crate) mod current;
mod handle;
pub(crate) mod outcome;
mod promise;
pub(crate) mod raw;
mod stack;

pub use builder::{TaskBuilder, create_task};
pub use context_var::{Context, ContextVar, Token};
#[allow(unused_imports)]
pub(crate) use handle::Awaited;
pub use handle::{Join, Read, Task, TaskRef, all_tasks, current_task};
pub use promise::Promise;
pub use raw::CallbackId;
pub use stack::Frame;
