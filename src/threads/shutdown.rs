//! Graceful shutdown of a [`MultiRuntime`](crate::MultiRuntime): stop
//! accepting, let what is in flight finish up to a deadline, then cancel
//! the rest on every core.
//!
//! [`Shutdown::shutdown`] can be called from any thread (a signal
//! listener, an admin endpoint). At once, every core's
//! [`Shutdown::requested`] resolves, so accept loops stop taking new
//! connections. Once the grace period has passed, every task still pending
//! on every core — except each core's main future — is cancelled, as
//! `run` cancels what is left at its end (the guide's cancellation rules
//! apply: each task sees `Err(Cancelled)` at its await point and may clean
//! up). The main futures then see their children end and return, and
//! [`run_on_each`](crate::MultiRuntime::run_on_each) returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use crate::runtime::LoopHandle;

/// The message of the cancellations a shutdown sends at its deadline.
pub const SHUTDOWN_CANCEL_MESSAGE: &str = "runtime shutdown";

/// A graceful shutdown of every core of a `MultiRuntime`. `Send + Sync`
/// and cheap to clone; from [`MultiRuntime::shutdown_handle`] or
/// [`Core::shutdown`](crate::Core::shutdown).
///
/// [`MultiRuntime::shutdown_handle`]: crate::MultiRuntime::shutdown_handle
///
/// ```
/// use std::time::Duration;
///
/// # fn main() -> ringio::Result<()> {
/// let mut rt = ringio::Runtime::builder().cores(2).build_multi()?;
/// let stop = rt.shutdown_handle();
/// std::thread::spawn(move || {
///     std::thread::sleep(Duration::from_millis(50));
///     stop.shutdown(Duration::from_millis(100));
/// });
/// let ends = rt.run_on_each(|core| async move {
///     // A request that would take an hour: cancelled at the deadline.
///     let request = ringio::create_task(async {
///         ringio::sleep(Duration::from_secs(3600)).await?;
///         Ok::<_, ringio::Error>("served")
///     });
///     core.shutdown().requested().await; // stop accepting here
///     request.await.map_err(|e| e.is_cancelled())
/// })?;
/// assert_eq!(ends, vec![Err(true), Err(true)]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<State>,
}

struct State {
    handles: Arc<[LoopHandle]>,
    requested: AtomicBool,
    /// Tasks waiting in `requested()`.
    waiters: Mutex<Vec<Waker>>,
    /// Each core's main task (by id), spared at the deadline.
    mains: Mutex<Vec<Option<u64>>>,
}

impl Shutdown {
    pub(crate) fn new(handles: Arc<[LoopHandle]>) -> Shutdown {
        let n = handles.len();
        Shutdown {
            inner: Arc::new(State {
                handles,
                requested: AtomicBool::new(false),
                waiters: Mutex::new(Vec::new()),
                mains: Mutex::new(vec![None; n]),
            }),
        }
    }

    /// Starts the shutdown (once; later calls do nothing): wakes every
    /// core's [`requested`](Shutdown::requested) now, and after `grace`
    /// cancels, on every core, each task still pending but the core's main
    /// future, with the message "runtime shutdown".
    pub fn shutdown(&self, grace: Duration) {
        if self.inner.requested.swap(true, Ordering::AcqRel) {
            return;
        }
        for w in std::mem::take(&mut *lock(&self.inner.waiters)) {
            w.wake();
        }
        for (core, handle) in self.inner.handles.iter().enumerate() {
            let state = self.inner.clone();
            // A closed loop (not running) has nothing to cancel.
            let _ = handle.call_soon_threadsafe(move || {
                let Ok(lp) = crate::get_running_loop() else {
                    return;
                };
                lp.call_later(grace, move || {
                    let main = lock(&state.mains).get(core).copied().flatten();
                    for task in crate::all_tasks() {
                        if Some(task.id()) != main {
                            task.cancel_with(SHUTDOWN_CANCEL_MESSAGE);
                        }
                    }
                });
            });
        }
    }

    /// Whether a shutdown was asked for.
    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::Acquire)
    }

    /// Resolves once a shutdown is asked for (at once if it was): the
    /// moment to stop accepting new work.
    pub fn requested(&self) -> Requested {
        Requested {
            shutdown: self.clone(),
        }
    }

    /// Core `core`'s main task for this run (`None` between runs).
    pub(crate) fn set_main(&self, core: usize, task: Option<u64>) {
        if let Some(slot) = lock(&self.inner.mains).get_mut(core) {
            *slot = task;
        }
    }

    /// Ready for another run: no shutdown asked.
    pub(crate) fn reset(&self) {
        self.inner.requested.store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<Shutdown requested={}>", self.is_requested())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The future of [`Shutdown::requested`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Requested {
    shutdown: Shutdown,
}

impl Future for Requested {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.shutdown.is_requested() {
            return Poll::Ready(());
        }
        let mut waiters = lock(&self.shutdown.inner.waiters);
        // Checked again under the lock: `shutdown` sets the flag before it
        // takes the list, so a request cannot slip between the two.
        if self.shutdown.is_requested() {
            return Poll::Ready(());
        }
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
