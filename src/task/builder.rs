//! Creating tasks: `create_task` and `Task::builder()`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use super::context_var::Context;
use super::handle::Task;
use crate::error::{Error, Result};
use crate::runtime::context;

pin_project_lite::pin_project! {
    /// A task's future with its error turned into `ringio::Error` (a type
    /// of its own rather than an `async` block: no state of its own, so
    /// the task is no bigger than the future it runs).
    struct IntoTaskResult<F> {
        #[pin]
        fut: F,
    }
}

impl<F, T, E> Future for IntoTaskResult<F>
where
    F: Future<Output = std::result::Result<T, E>>,
    E: Into<Error>,
{
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<T>> {
        self.project().fut.poll(cx).map(|r| r.map_err(Into::into))
    }
}

/// Options for a new task; [`spawn`](TaskBuilder::spawn) creates it.
///
/// ```
/// ringio::run(async {
///     let t = ringio::Task::builder()
///         .name("worker")
///         .spawn(async { Ok::<_, ringio::Error>(1) })
///         .unwrap();
///     assert_eq!(t.get_name(), "worker");
///     assert_eq!(t.await.unwrap(), 1);
/// });
/// ```
#[derive(Default, Debug)]
#[must_use = "a builder does nothing until spawn() is called"]
pub struct TaskBuilder {
    name: Option<String>,
    context: Option<Context>,
}

impl Task<()> {
    /// A builder for a task with a name or a given context (the task's
    /// result type comes from the future given to `spawn`).
    pub fn builder() -> TaskBuilder {
        TaskBuilder::default()
    }
}

impl TaskBuilder {
    /// The task's name (default `Task-N`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Runs the task in (a copy of) `context` instead of the current one.
    pub fn context(mut self, context: Context) -> Self {
        self.context = Some(context);
        self
    }

    /// Schedules `fut` as a task on the running loop. Its first poll happens
    /// on a later loop turn. `Err` outside a loop ("no running event loop")
    /// or on a closed loop.
    pub fn spawn<F, T, E>(self, fut: F) -> Result<Task<T>>
    where
        F: Future<Output = std::result::Result<T, E>> + 'static,
        T: 'static,
        E: Into<Error> + 'static,
    {
        let lp = context::current_loop().ok_or_else(Error::no_running_loop)?;
        let ctx = match self.context {
            Some(c) => c.copy(),
            None => Context::current(),
        };
        let fut = IntoTaskResult { fut };
        let raw = super::run::spawn::<F, _, T>(&lp, fut, self.name, ctx)?;
        Ok(Task::from_raw(raw))
    }
}

/// Schedules `fut` as a task on the running loop (asyncio's
/// `create_task`). The future returns `Result<T, E>`: `Ok` is the task's
/// result, `Err` its exception, `Err(Cancelled)` a cancellation.
///
/// # Panics
///
/// Outside a running loop ("no running event loop"), as asyncio raises
/// there; [`Task::builder`]`().spawn(..)` returns the error instead.
///
/// # Naming the error type
///
/// An `async` block has no signature, so when it uses `?` and ends in
/// `Ok(..)` nothing tells the compiler which error type `E` it returns
/// (`?` converts into any type with a `From`, and `E` only has to be
/// `Into<ringio::Error>`): rustc stops with E0283, "type annotations
/// needed ... cannot satisfy `_: Into<ringio::Error>`". End the block with
/// `Ok::<_, ringio::Error>(..)` to name it (or call an `async fn` that
/// returns [`ringio::Result`](crate::Result), as below):
///
/// ```
/// use std::time::Duration;
///
/// ringio::run(async {
///     let task = ringio::create_task(async {
///         ringio::sleep(Duration::from_millis(1)).await?;
///         Ok::<_, ringio::Error>("slept")
///     });
///     assert_eq!(task.await.unwrap(), "slept");
/// });
/// ```
///
/// # Example
///
/// ```
/// use std::time::Duration;
///
/// async fn say_after(delay: Duration, what: &str) -> ringio::Result<()> {
///     ringio::sleep(delay).await?;
///     println!("{what}");
///     Ok(())
/// }
///
/// ringio::run(async {
///     let task1 = ringio::create_task(say_after(Duration::from_millis(10), "hello"));
///     let task2 = ringio::create_task(say_after(Duration::from_millis(20), "world"));
///     task1.await.unwrap();
///     task2.await.unwrap();
/// });
/// ```
#[track_caller]
pub fn create_task<F, T, E>(fut: F) -> Task<T>
where
    F: Future<Output = std::result::Result<T, E>> + 'static,
    T: 'static,
    E: Into<Error> + 'static,
{
    match TaskBuilder::default().spawn(fut) {
        Ok(t) => t,
        Err(e) => panic!("create_task: {e}"),
    }
}
