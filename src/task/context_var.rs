//! Context variables: asyncio's `contextvars`, for tasks.
//!
//! A [`Context`] maps variables to values. Each task runs in its own copy
//! of the context that was current when it was created, so a value a task
//! sets is seen by the tasks it creates afterwards, never by its parent or
//! its siblings. `call_soon` callbacks and `to_thread` closures carry the
//! context of their caller the same way.
//!
//! ```
//! use ringio::ContextVar;
//!
//! let request_id: ContextVar<u32> = ContextVar::new("request_id");
//! ringio::run(async move {
//!     let token = request_id.set(7);
//!     let rid = request_id.clone();
//!     let child = ringio::create_task(async move { Ok::<_, ringio::Error>(rid.get()) });
//!     assert_eq!(child.await.unwrap(), Some(7));
//!     request_id.reset(token).unwrap();
//!     assert_eq!(request_id.get(), None);
//! });
//! ```

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

type Value = Arc<dyn Any + Send + Sync>;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static CURRENT: RefCell<Context> = const { RefCell::new(Context { id: 0, values: None }) };
    /// `false` only while `CURRENT` is known to be empty (no value, no
    /// identity). A plain flag with no destructor: every task poll checks
    /// it, and most find the current context empty and leave it so,
    /// without touching `CURRENT` itself.
    static CURRENT_USED: Cell<bool> = const { Cell::new(false) };
}

/// A context's values, without its identity: what a task keeps in its
/// header (the identity, rarely drawn, goes with its cold fields).
pub(crate) type ContextValues = Option<Arc<HashMap<u64, Value>>>;

/// A set of context-variable values (asyncio's `contextvars.Context`).
///
/// Cheap to clone (copy-on-write): setting a variable in one copy never
/// shows in another. `Send`, so it can travel to another thread.
#[derive(Clone, Default)]
pub struct Context {
    /// Which logical context this is, for checking a `Token` belongs here.
    id: u64,
    values: Option<Arc<HashMap<u64, Value>>>,
}

impl Context {
    /// A copy of the current context (asyncio's `copy_context()`).
    pub fn current() -> Context {
        CURRENT.with(|c| c.borrow().copy())
    }

    /// A copy of this context with its own identity. (The identity is
    /// drawn lazily, at the copy's first `set`: tokens of the original are
    /// never valid in the copy, and tasks that never set a variable pay
    /// nothing for it.)
    pub fn copy(&self) -> Context {
        Context {
            id: 0,
            values: self.values.clone(),
        }
    }

    /// Runs `f` with this context current; changes `f` makes to variables
    /// are kept in `self` (asyncio's `Context.run`).
    pub fn run<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let ctx = std::mem::take(self);
        let (ctx, r) = ctx.enter_returning(f);
        *self = ctx;
        r
    }

    /// The context's identity (`0` until drawn) and its values.
    pub(crate) fn into_parts(self) -> (u64, ContextValues) {
        (self.id, self.values)
    }

    /// The context [`Context::into_parts`] took apart.
    pub(crate) fn from_parts(id: u64, values: ContextValues) -> Context {
        Context { id, values }
    }

    /// No variable set and no identity drawn: the context of a task that
    /// never set a variable.
    fn is_empty(&self) -> bool {
        self.id == 0 && self.values.is_none()
    }

    /// Runs `f` in this context, discarding the changes it makes.
    pub(crate) fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        self.clone().enter_returning(f).1
    }

    /// Runs `f` in this context; returns the context as `f` left it.
    pub(crate) fn enter_returning<R>(self, f: impl FnOnce() -> R) -> (Context, R) {
        if self.is_empty() && !CURRENT_USED.get() {
            // The usual poll of a task that never set a variable, on a
            // loop with none set: nothing to swap in or back. What `f`
            // sets, if anything, is this context's; the current one is
            // left empty again.
            let r = f();
            if !CURRENT_USED.get() {
                return (Context::default(), r);
            }
            let ctx = CURRENT.with(|c| std::mem::take(&mut *c.borrow_mut()));
            CURRENT_USED.set(false);
            return (ctx, r);
        }
        CURRENT.with(|c| {
            let prev = std::mem::replace(&mut *c.borrow_mut(), self);
            CURRENT_USED.set(true);
            let r = f();
            let prev_empty = prev.is_empty();
            let ctx = std::mem::replace(&mut *c.borrow_mut(), prev);
            CURRENT_USED.set(!prev_empty);
            (ctx, r)
        })
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("vars", &self.values.as_ref().map_or(0, |v| v.len()))
            .finish()
    }
}

/// A context variable (asyncio's `contextvars.ContextVar`).
///
/// Values must be `Clone + Send + Sync` so that a context can be copied
/// into tasks and carried to other threads (`to_thread`).
pub struct ContextVar<T> {
    id: u64,
    name: Arc<str>,
    default: Option<T>,
}

impl<T: Clone> Clone for ContextVar<T> {
    fn clone(&self) -> Self {
        ContextVar {
            id: self.id,
            name: self.name.clone(),
            default: self.default.clone(),
        }
    }
}

impl<T> fmt::Debug for ContextVar<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<ContextVar name='{}'>", self.name)
    }
}

/// What [`ContextVar::set`] returns: [`ContextVar::reset`] takes it to
/// restore the previous value. Used once by construction (it is moved).
#[must_use = "a Token is how the previous value is restored"]
pub struct Token<T> {
    var: u64,
    context: u64,
    old: Option<Value>,
    _t: PhantomData<fn() -> T>,
}

impl<T: Clone + Send + Sync + 'static> ContextVar<T> {
    /// A variable with no default: `get()` gives `None` until it is set.
    pub fn new(name: impl Into<String>) -> ContextVar<T> {
        ContextVar {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: name.into().into(),
            default: None,
        }
    }

    /// A variable whose `get()` gives `default` until it is set.
    pub fn with_default(name: impl Into<String>, default: T) -> ContextVar<T> {
        ContextVar {
            default: Some(default),
            ..ContextVar::new(name)
        }
    }

    /// The variable's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value in the current context, else the default, else `None`
    /// (asyncio raises `LookupError` there).
    pub fn get(&self) -> Option<T> {
        CURRENT.with(|c| {
            c.borrow()
                .values
                .as_ref()
                .and_then(|m| m.get(&self.id))
                .and_then(|v| v.downcast_ref::<T>().cloned())
                .or_else(|| self.default.clone())
        })
    }

    /// Sets the value in the current context.
    pub fn set(&self, value: T) -> Token<T> {
        CURRENT_USED.set(true);
        CURRENT.with(|c| {
            let mut ctx = c.borrow_mut();
            if ctx.id == 0 {
                ctx.id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            }
            let map = Arc::make_mut(ctx.values.get_or_insert_with(Default::default));
            let old = map.insert(self.id, Arc::new(value));
            Token {
                var: self.id,
                context: ctx.id,
                old,
                _t: PhantomData,
            }
        })
    }

    /// Restores the value the variable had before the `set` that made
    /// `token`. A token of another variable or context is
    /// `Error::InvalidArgument` (asyncio's `ValueError`).
    pub fn reset(&self, token: Token<T>) -> Result<()> {
        if token.var != self.id {
            return Err(Error::InvalidArgument(format!(
                "{self:?}: the Token was created by a different ContextVar"
            )));
        }
        CURRENT_USED.set(true);
        CURRENT.with(|c| {
            let mut ctx = c.borrow_mut();
            if ctx.id != token.context {
                return Err(Error::InvalidArgument(format!(
                    "{self:?}: the Token was created in a different Context"
                )));
            }
            let map = Arc::make_mut(ctx.values.get_or_insert_with(Default::default));
            match token.old {
                Some(v) => map.insert(self.id, v),
                None => map.remove(&self.id),
            };
            Ok(())
        })
    }
}
