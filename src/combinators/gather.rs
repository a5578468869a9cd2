//! `gather`, `gather_settled` and `gather!`: run awaitables concurrently
//! and collect their results in input order (asyncio's `gather`).
//!
//! Built as asyncio builds it: every child gets a done callback (scheduled
//! on the loop when it ends) that counts it and settles the outer
//! [`Promise`] — at the first error in `gather`, once all are done
//! otherwise. Cancelling the gather cancels the children that are not
//! done; the outcome then arrives through the same callbacks.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::future::IntoFuture;
use std::panic::Location;
use std::rc::Rc;
use std::task::Waker;

use super::awaitable::{Awaitable, Child, ErasedChild};
use crate::error::{Error, Result};
use crate::task::Awaited;
use crate::{CallbackId, Join, Promise};

/// Collects the children's values once they are all done.
type Collect<O> = Box<dyn FnOnce() -> Result<O>>;

struct GatherInner<O> {
    /// The outcome, and who waits for it.
    outer: Promise<O>,
    /// The distinct children, in order of first appearance.
    children: Vec<Rc<dyn ErasedChild>>,
    /// `gather_settled` (asyncio's `return_exceptions=True`).
    settled: bool,
    collect: RefCell<Option<Collect<O>>>,
    finished: Cell<usize>,
    /// `cancel()` reached at least one child: the gather fails with
    /// `Cancelled` once every child has ended.
    cancel_requested: Cell<bool>,
    cancel_msg: RefCell<Option<String>>,
}

/// The handle of a running [`gather`] (asyncio's `_GatheringFuture`):
/// await it for the results, or [`cancel`](Gather::cancel) it, ask
/// [`done`](Gather::done), [`cancelled`](Gather::cancelled),
/// [`result`](Gather::result), [`exception`](Gather::exception), and give it
/// done callbacks. Cheap to clone.
///
/// Awaiting it is a ringio await point: if the awaiting task is cancelled,
/// the gather is cancelled (every child not done is cancelled) and the
/// await ends with the outcome that follows, normally `Err(Cancelled)`.
#[must_use = "a gather's children run anyway, but its result is lost unless awaited"]
pub struct Gather<O> {
    inner: Rc<GatherInner<O>>,
}

impl<O> Clone for Gather<O> {
    fn clone(&self) -> Self {
        Gather {
            inner: self.inner.clone(),
        }
    }
}

/// Runs the awaitables concurrently and gives their values in input order
/// (asyncio's `gather(*aws)`).
///
/// Each plain future is scheduled as a task (its first poll is on the next
/// loop turn); a [`Task`](crate::Task) or [`Promise`] is used as is, the
/// same one twice is awaited once (its value appears at both places), and
/// one already done is read, not polled.
///
/// - The first child to fail makes the gather fail at once with that
///   error; the other children are **not** cancelled and keep running.
/// - A child that is cancelled makes the gather fail with
///   `Error::Cancelled`, without cancelling the gather itself or the other
///   children.
/// - Cancelling the gather (or the task awaiting it) cancels every child
///   not done yet.
///
/// Outside a running loop the gather fails with "no running event loop".
///
/// The document's example: three factorials computed concurrently.
///
/// ```
/// use std::time::Duration;
///
/// async fn factorial(name: &str, number: u64) -> ringio::Result<u64> {
///     let mut f = 1;
///     for i in 2..=number {
///         println!("Task {name}: Compute factorial({i})...");
///         ringio::sleep(Duration::from_millis(10)).await?;
///         f *= i;
///     }
///     println!("Task {name}: factorial({number}) = {f}");
///     Ok(f)
/// }
///
/// ringio::run(async {
///     // Schedule three calls *concurrently*:
///     let results = ringio::gather(vec![
///         factorial("A", 2),
///         factorial("B", 3),
///         factorial("C", 4),
///     ])
///     .await
///     .unwrap();
///     assert_eq!(results, [2, 6, 24]);
/// });
/// ```
pub fn gather<I>(aws: I) -> Gather<Vec<<I::Item as Awaitable>::Output>>
where
    I: IntoIterator,
    I::Item: Awaitable,
{
    gather_children(aws, false, |children| {
        children.iter().map(Child::read).collect()
    })
}

/// [`gather`] with asyncio's `return_exceptions=True`: every child's
/// outcome, value or error (a cancelled child gives `Err(Cancelled)`), in
/// input order. The outer `Err` is only the gather itself being cancelled.
///
/// ```
/// use ringio::Error;
///
/// ringio::run(async {
///     let results = ringio::gather_settled(vec![
///         ringio::create_task(async { Ok::<_, Error>(1) }),
///         ringio::create_task(async { Err(Error::msg("boom")) }),
///     ])
///     .await
///     .unwrap();
///     assert_eq!(results[0].as_ref().unwrap(), &1);
///     assert_eq!(results[1].as_ref().unwrap_err().to_string(), "boom");
/// });
/// ```
pub fn gather_settled<I>(aws: I) -> Gather<Vec<Result<<I::Item as Awaitable>::Output>>>
where
    I: IntoIterator,
    I::Item: Awaitable,
{
    gather_children(aws, true, |children| {
        Ok(children.iter().map(Child::read).collect())
    })
}

/// Makes children of `aws` and starts a gather over them whose outcome
/// `collect` builds once they are all done (`settled`: errors are values).
fn gather_children<I, O: 'static>(
    aws: I,
    settled: bool,
    collect: impl Fn(&[Child<<I::Item as Awaitable>::Output>]) -> Result<O> + 'static,
) -> Gather<O>
where
    I: IntoIterator,
    I::Item: Awaitable,
{
    let children = match to_children(aws) {
        Ok(c) => c,
        Err(e) => return Gather::failed(e),
    };
    let erased = erase(&children);
    Gather::start(erased, settled, Box::new(move || collect(&children)))
}

/// Makes every input a child; on an error, cancels the tasks already
/// created for the inputs before it (nobody would await them).
fn to_children<I>(aws: I) -> Result<Vec<Child<<I::Item as Awaitable>::Output>>>
where
    I: IntoIterator,
    I::Item: Awaitable,
{
    let mut children: Vec<Child<_>> = Vec::new();
    for aw in aws {
        match aw.into_child() {
            Ok(c) => children.push(c),
            Err(e) => {
                for c in children.iter().filter(|c| c.is_owned()) {
                    c.cancel();
                }
                return Err(e);
            }
        }
    }
    Ok(children)
}

fn erase<T: 'static>(children: &[Child<T>]) -> Vec<Rc<dyn ErasedChild>> {
    children
        .iter()
        .map(|c| Rc::new(c.clone()) as Rc<dyn ErasedChild>)
        .collect()
}

impl<O: 'static> Gather<O> {
    /// A gather that failed before it started (bad input, no loop).
    fn failed(e: Error) -> Gather<O> {
        let outer = Promise::new();
        let _ = outer.set_exception(e);
        Gather {
            inner: Rc::new(GatherInner {
                outer,
                children: Vec::new(),
                settled: false,
                collect: RefCell::new(None),
                finished: Cell::new(0),
                cancel_requested: Cell::new(false),
                cancel_msg: RefCell::new(None),
            }),
        }
    }

    /// Starts gathering `children` (one per input, duplicates included).
    pub(crate) fn start(
        children: Vec<Rc<dyn ErasedChild>>,
        settled: bool,
        collect: Collect<O>,
    ) -> Gather<O> {
        let mut seen = HashSet::new();
        let unique: Vec<_> = children
            .into_iter()
            .filter(|c| seen.insert(c.key()))
            .collect();
        let inner = Rc::new(GatherInner {
            outer: Promise::new(),
            children: unique,
            settled,
            collect: RefCell::new(Some(collect)),
            finished: Cell::new(0),
            cancel_requested: Cell::new(false),
            cancel_msg: RefCell::new(None),
        });
        if inner.children.is_empty() {
            // asyncio: `gather()` of nothing is done at once.
            inner.finish();
        }
        for (i, child) in inner.children.iter().enumerate() {
            let me = inner.clone();
            child.on_done(Box::new(move || me.child_done(i)));
        }
        Gather { inner }
    }

    /// Cancels the gather (asyncio's `gather(...).cancel()`): every child
    /// not done yet is cancelled, and the gather fails with
    /// `Error::Cancelled` once they have finished (with `gather`, as soon
    /// as the first one ends cancelled). As in asyncio, the gather does not
    /// end [`cancelled`](Self::cancelled): the `Cancelled` error is its
    /// [`exception`](Self::exception). `false` if the gather is done or no
    /// child could be cancelled — so, as in asyncio, cancelling a gather
    /// that already failed does not cancel the children still running.
    pub fn cancel(&self) -> bool {
        self.inner.cancel(None)
    }

    /// [`cancel`](Self::cancel) with a message, which the children and
    /// the gather's `Error::Cancelled` carry.
    pub fn cancel_with(&self, msg: impl Into<String>) -> bool {
        self.inner.cancel(Some(msg.into()))
    }

    /// Identity: the address of the shared state (the same gather given
    /// twice to a combinator is one child).
    pub(crate) fn cell_addr(&self) -> usize {
        Rc::as_ptr(&self.inner) as *const () as usize
    }

    /// Whether the gather has its outcome.
    pub fn done(&self) -> bool {
        self.inner.outer.done()
    }

    /// Always `false`, as for asyncio's `_GatheringFuture`: a gather is
    /// never cancelled itself. Cancelling it ([`cancel`](Self::cancel), or
    /// cancelling the task awaiting it) cancels its children, and once they
    /// have ended the gather *fails* with `Error::Cancelled`: that error is
    /// its [`exception`](Self::exception), and awaiting it or asking its
    /// [`result`](Self::result) gives `Err(Cancelled)`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// ringio::run(async {
    ///     let g = ringio::gather(vec![ringio::sleep(Duration::from_secs(3600))]);
    ///     ringio::sleep(Duration::ZERO).await.unwrap();
    ///     assert!(g.cancel());
    ///     assert!(g.clone().await.unwrap_err().is_cancelled());
    ///     assert!(g.done() && !g.cancelled());
    ///     assert!(g.exception().unwrap().unwrap().is_cancelled());
    /// });
    /// ```
    pub fn cancelled(&self) -> bool {
        false
    }

    /// The results (cloned); the error the gather failed with; or
    /// `Err(InvalidState)` while pending (asyncio's `result()`).
    pub fn result(&self) -> Result<O>
    where
        O: Clone,
    {
        self.inner.outer.result()
    }

    /// `Ok(None)` after results, `Ok(Some(e))` after a failure — a
    /// child's cancellation or the gather's own included (then `e` is
    /// `Error::Cancelled`, as asyncio's `exception()` returns the
    /// `CancelledError`) — and `Err(InvalidState)` while pending.
    pub fn exception(&self) -> Result<Option<Error>> {
        match self.inner.outer.exception() {
            // The outer promise holds a cancellation as "cancelled"; the
            // gather shows it as the exception it failed with.
            Err(e) if e.is_cancelled() => Ok(Some(e)),
            other => other,
        }
    }

    /// Runs `f(&gather)` soon after the gather is done (scheduled on the
    /// loop, never inline; at once if done already).
    pub fn add_done_callback(&self, f: impl FnOnce(&Gather<O>) + 'static) -> CallbackId {
        let me = self.clone();
        self.inner.outer.add_done_callback(move |_| f(&me))
    }

    /// Removes the done callbacks registered under `id`; how many.
    pub fn remove_done_callback(&self, id: CallbackId) -> usize {
        self.inner.outer.remove_done_callback(id)
    }
}

impl<O: 'static> GatherInner<O> {
    fn cancel(&self, msg: Option<String>) -> bool {
        if self.outer.done() {
            return false;
        }
        let mut any = false;
        for child in &self.children {
            if child.cancel_msg(msg.clone()) {
                any = true;
            }
        }
        if any {
            self.cancel_requested.set(true);
            *self.cancel_msg.borrow_mut() = msg;
        }
        any
    }

    /// A child's done callback (asyncio's `_done_callback`).
    fn child_done(&self, i: usize) {
        self.finished.set(self.finished.get() + 1);
        let child = &self.children[i];
        if self.outer.done() {
            // The gather already has its outcome; read this child's
            // exception so that it is not reported as never retrieved.
            if !child.cancelled() {
                let _ = child.failure();
            }
            return;
        }
        if !self.settled {
            if let Some(e) = child.failure() {
                let _ = self.outer.set_exception(e);
                return;
            }
        }
        if self.finished.get() == self.children.len() {
            self.finish();
        }
    }

    /// Every child is done: settle the outer promise.
    fn finish(&self) {
        if self.cancel_requested.get() {
            // asyncio (bpo-32684): a cancelled gather fails with
            // `Cancelled` even with `return_exceptions=True`.
            let msg = self.cancel_msg.borrow().clone();
            let _ = self.outer.set_exception(Error::Cancelled { msg });
            return;
        }
        let Some(collect) = self.collect.borrow_mut().take() else {
            return;
        };
        let _ = match collect() {
            Ok(v) => self.outer.set_result(v),
            Err(e) => self.outer.set_exception(e),
        };
    }
}

impl<O: 'static> Awaited for Gather<O> {
    type Output = Result<O>;
    fn awaited_id(&self) -> Option<u64> {
        None
    }
    fn is_done(&self) -> bool {
        self.done()
    }
    fn cancel_with(&self, msg: Option<String>) -> bool {
        self.inner.cancel(msg)
    }
    fn add_waiter(&self, waker: &Waker) {
        Awaited::add_waiter(&self.inner.outer, waker)
    }
    fn take(&self) -> Result<O> {
        Awaited::take(&self.inner.outer)
    }
}

// Only `Rc`s inside; nothing is pinned.
impl<O> Unpin for Gather<O> {}

impl<O: 'static> IntoFuture for Gather<O> {
    type Output = Result<O>;
    type IntoFuture = Join<Gather<O>>;

    /// The results moved out (a later `result()` gives `InvalidState`).
    #[track_caller]
    fn into_future(self) -> Join<Gather<O>> {
        Join::new(self, Location::caller())
    }
}

impl<O: Clone + 'static> Awaitable for Gather<O> {
    type Output = O;
    type Target = Child<O>;

    /// A gather given to a combinator is used as is, as asyncio uses a
    /// `_GatheringFuture`: its value is read by clone, so it stays readable
    /// from the gather afterwards (`shield(g)`, `gather([g, ..])`); the same
    /// gather given twice is one child.
    fn into_child(self) -> Result<Child<O>> {
        Ok(Child::gather(self))
    }

    fn into_target(self) -> Result<Child<O>> {
        self.into_child()
    }
}

impl<O: 'static> fmt::Debug for Gather<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never "cancelled": a cancelled gather is finished with the
        // Cancelled error, as asyncio's `_GatheringFuture`.
        let state = if self.inner.outer.done() {
            "finished"
        } else {
            "pending"
        };
        write!(f, "<Gather {state} children={}>", self.inner.children.len())
    }
}

/// A tuple of children of mixed types, for [`gather!`](crate::gather!).
#[doc(hidden)]
pub trait ChildTuple {
    /// The tuple of values.
    type Output: 'static;
    /// Starts the gather.
    fn start(self) -> Gather<Self::Output>;
}

macro_rules! child_tuple {
    ($($T:ident $c:ident),+) => {
        impl<$($T: 'static),+> ChildTuple for ($(Result<Child<$T>>,)+) {
            type Output = ($($T,)+);

            fn start(self) -> Gather<Self::Output> {
                let ($($c,)+) = self;
                // A child that could not be made: cancel the others we
                // created, fail the gather with its error.
                let mut first_err = None;
                $(
                    if let Err(e) = &$c {
                        first_err.get_or_insert_with(|| e.clone());
                    }
                )+
                if let Some(e) = first_err {
                    $(
                        if let Ok(c) = &$c {
                            if c.is_owned() {
                                c.cancel();
                            }
                        }
                    )+
                    return Gather::failed(e);
                }
                $( let $c = $c.expect("checked above"); )+
                let erased: Vec<Rc<dyn ErasedChild>> =
                    vec![$(Rc::new($c.clone()) as Rc<dyn ErasedChild>),+];
                Gather::start(
                    erased,
                    false,
                    Box::new(move || Ok(($($c.read()?,)+))),
                )
            }
        }
    };
}

child_tuple!(A a);
child_tuple!(A a, B b);
child_tuple!(A a, B b, C c);
child_tuple!(A a, B b, C c, D d);
child_tuple!(A a, B b, C c, D d, E e);
child_tuple!(A a, B b, C c, D d, E e, F f);
child_tuple!(A a, B b, C c, D d, E e, F f, G g);
child_tuple!(A a, B b, C c, D d, E e, F f, G g, H h);
child_tuple!(A a, B b, C c, D d, E e, F f, G g, H h, I i);
child_tuple!(A a, B b, C c, D d, E e, F f, G g, H h, I i, J j);
child_tuple!(A a, B b, C c, D d, E e, F f, G g, H h, I i, J j, K k);
child_tuple!(A a, B b, C c, D d, E e, F f, G g, H h, I i, J j, K k, L l);

/// Makes one input of [`gather!`](crate::gather!) a child.
#[doc(hidden)]
pub fn __child<A: Awaitable>(aw: A) -> Result<Child<A::Output>> {
    aw.into_child()
}

/// Starts the gather of [`gather!`](crate::gather!).
#[doc(hidden)]
pub fn __gather_tuple<C: ChildTuple>(children: C) -> Gather<C::Output> {
    children.start()
}

/// [`gather`] over awaitables of different types (up to 12): the values
/// come back as a tuple, in argument order. Same rules as [`gather`]: the
/// first error propagates at once, the others keep running; cancelling
/// the gather cancels every child not done.
///
/// ```
/// use std::time::Duration;
/// use ringio::Error;
///
/// ringio::run(async {
///     let name = ringio::create_task(async { Ok::<_, Error>("answer".to_string()) });
///     let (n, s, ()) = ringio::gather!(
///         async { Ok::<_, Error>(42) },
///         name,
///         ringio::sleep(Duration::from_millis(10)),
///     )
///     .await
///     .unwrap();
///     assert_eq!((n, s.as_str()), (42, "answer"));
/// });
/// ```
#[macro_export]
macro_rules! gather {
    ($($aw:expr),+ $(,)?) => {
        $crate::combinators::__gather_tuple(($($crate::combinators::__child($aw),)+))
    };
}
