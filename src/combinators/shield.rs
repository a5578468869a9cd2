//! `shield`: protect an awaitable from the cancellation of its awaiter.

use super::awaitable::Awaitable;
use crate::Promise;

/// Protects `aw` from being cancelled (asyncio's `shield`).
///
/// `aw` runs as a task (a plain future is scheduled as one; a
/// [`Task`](crate::Task), [`Promise`] or [`Gather`](crate::Gather) is used
/// as is, and its value is read by clone, so it stays readable from it
/// afterwards). The returned
/// promise is the outer future: awaiting it gives `aw`'s outcome, like
/// awaiting `aw`, except that if the awaiting task is cancelled — which
/// cancels the outer promise — `aw` is **not** cancelled and keeps running;
/// the awaiter still gets `Err(Cancelled)`.
///
/// If `aw` is cancelled by other means (from within itself), the shield
/// is cancelled too. If `aw` is already done, the promise is settled with
/// its outcome at once. Outside a running loop the promise holds the "no
/// running event loop" error.
///
/// To ignore cancellation completely (not recommended), catch it:
///
/// ```
/// use std::time::Duration;
/// use ringio::Error;
///
/// async fn something() -> ringio::Result<&'static str> {
///     ringio::sleep(Duration::from_millis(20)).await?;
///     Ok("finished anyway")
/// }
///
/// ringio::run(async {
///     let inner = ringio::create_task(something());
///     let waiter = {
///         let inner = inner.clone();
///         ringio::create_task(async move {
///             let res = match ringio::shield(inner).await {
///                 Err(Error::Cancelled { .. }) => None,
///                 other => Some(other?),
///             };
///             Ok::<_, Error>(res)
///         })
///     };
///     ringio::sleep(Duration::from_millis(5)).await.unwrap();
///     waiter.cancel();
///     // The waiter saw the cancellation and swallowed it...
///     assert_eq!(waiter.await.unwrap(), None);
///     // ...while the shielded task ran to its end.
///     assert_eq!(inner.await.unwrap(), "finished anyway");
/// });
/// ```
pub fn shield<A: Awaitable>(aw: A) -> Promise<A::Output> {
    let outer = Promise::new();
    let inner = match aw.into_child() {
        Ok(c) => c,
        Err(e) => {
            let _ = outer.set_exception(e);
            return outer;
        }
    };
    if inner.done() {
        // asyncio returns the inner future itself here; the outer promise
        // settled with its outcome behaves the same.
        let _ = match inner.read() {
            Ok(v) => outer.set_result(v),
            Err(e) => outer.set_exception(e),
        };
        return outer;
    }
    let out = outer.clone();
    let child = inner.clone();
    let id = inner.on_done(Box::new(move || {
        if out.cancelled() {
            // Nobody will read the inner outcome now; mark an exception
            // retrieved so that it is not reported.
            if !child.cancelled() {
                let _ = child.failure();
            }
            return;
        }
        if child.cancelled() {
            out.cancel();
            return;
        }
        let _ = match child.read() {
            Ok(v) => out.set_result(v),
            Err(e) => out.set_exception(e),
        };
    }));
    outer.add_done_callback(move |_| {
        if !inner.done() {
            inner.remove_on_done(id);
        }
    });
    outer
}
