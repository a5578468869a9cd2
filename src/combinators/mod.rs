//! Combinators: run several awaitables and wait for them in various ways
//! (asyncio's "Running Tasks Concurrently", "Shielding From
//! Cancellation", "Timeouts" and "Waiting Primitives").
//!
//! - [`gather`], [`gather_settled`], [`gather!`](crate::gather!): run
//!   concurrently, collect the results in input order.
//! - [`shield`]: keep an awaitable running when its awaiter is cancelled.
//! - [`wait_for`]: await with a timeout that cancels.
//! - [`wait`]: wait until the first completes, the first fails, or all are
//!   done; never cancels.
//! - [`as_completed`]: the results in completion order.
//!
//! Each takes [`Awaitable`]s: plain futures (scheduled as tasks), or a
//! [`Task`](crate::Task), [`Promise`](crate::Promise),
//! [`TaskRef`](crate::TaskRef) or [`Gather`] used as is. Every combinator future is a
//! ringio await point: it sees the awaiting task's cancellation and acts on
//! it as asyncio's does.

mod as_completed;
mod awaitable;
mod gather;
mod shield;
mod wait;
mod wait_for;

pub use as_completed::{AsCompleted, Next, as_completed};
pub use awaitable::{Awaitable, Child, Spawned, WaitTarget};
#[doc(hidden)]
pub use gather::{__child, __gather_tuple, ChildTuple};
pub use gather::{Gather, gather, gather_settled};
pub use shield::shield;
pub use wait::{ReturnWhen, Wait, WaitResult, wait};
pub use wait_for::{WaitFor, wait_for};
