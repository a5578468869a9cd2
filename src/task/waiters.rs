//! `Waiters<C>`: who is told when a task or promise ends — the wakers of
//! its awaiters and its done callbacks — in one list, in registration
//! order.
//!
//! asyncio keeps a single list of callbacks on a future; an awaiting task's
//! wake-up is itself a callback, added when it starts awaiting. One list
//! keeps that order observable: a done callback added before an awaiter
//! runs before the awaiter resumes, one added after runs after.

use std::cell::Cell;
use std::task::Waker;

/// Identifies a done callback, for `remove_done_callback`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallbackId(pub(crate) u64);

/// One entry of the list: an awaiter to wake or a done callback `C`.
pub(crate) enum Waiter<C> {
    Wake(Waker),
    Call(CallbackId, C),
}

/// The list itself. Most tasks have exactly one awaiter and no callback,
/// so one waker is kept without an allocation; anything more goes to the
/// heap. Two variants, so the whole list is the size of one `Waker`: the
/// tag lives in the waker's never-null vtable pointer (it is in every
/// task's header).
enum List<C> {
    One(Waker),
    /// `None` when empty.
    #[allow(clippy::box_collection)]
    Many(Option<Box<Vec<Waiter<C>>>>),
}

impl<C> Default for List<C> {
    fn default() -> Self {
        List::Many(None)
    }
}

/// Awaiters and done callbacks, in the order they were registered.
/// (A `Cell`, taken and put back: the list is only ever changed, never
/// lent out, so no borrow flag is needed.)
pub(crate) struct Waiters<C> {
    list: Cell<List<C>>,
}

impl<C> Default for Waiters<C> {
    fn default() -> Self {
        Waiters {
            list: Cell::new(List::Many(None)),
        }
    }
}

impl<C> Waiters<C> {
    /// Registers `waker` (once: a waker that would wake the same task as
    /// one already listed is not added again).
    pub(crate) fn add_waker(&self, waker: &Waker) {
        let list = match self.list.take() {
            List::Many(None) => List::One(waker.clone()),
            List::One(w) if w.will_wake(waker) => List::One(w),
            List::One(first) => List::Many(Some(Box::new(vec![
                Waiter::Wake(first),
                Waiter::Wake(waker.clone()),
            ]))),
            List::Many(Some(mut all)) => {
                let listed = all
                    .iter()
                    .any(|e| matches!(e, Waiter::Wake(w) if w.will_wake(waker)));
                if !listed {
                    all.push(Waiter::Wake(waker.clone()));
                }
                List::Many(Some(all))
            }
        };
        self.list.set(list);
    }

    /// Whether nothing is listed.
    pub(crate) fn is_empty(&self) -> bool {
        let list = self.list.take();
        let empty = matches!(list, List::Many(None));
        self.list.set(list);
        empty
    }

    /// Registers a done callback after everything listed so far.
    pub(crate) fn add_callback(&self, id: CallbackId, callback: C) {
        let mut all = match self.list.take() {
            List::Many(None) => Box::new(Vec::with_capacity(1)),
            List::One(w) => Box::new(vec![Waiter::Wake(w)]),
            List::Many(Some(all)) => all,
        };
        all.push(Waiter::Call(id, callback));
        self.list.set(List::Many(Some(all)));
    }

    /// Removes every callback registered under `id`; how many there were.
    pub(crate) fn remove_callback(&self, id: CallbackId) -> usize {
        let list = self.list.take();
        let (list, removed) = match list {
            List::Many(Some(mut all)) => {
                let before = all.len();
                all.retain(|e| !matches!(e, Waiter::Call(i, _) if *i == id));
                let removed = before - all.len();
                (List::Many(Some(all)), removed)
            }
            other => (other, 0),
        };
        self.list.set(list);
        removed
    }

    /// Takes the whole list and hands each entry to `f`, in registration
    /// order (the task or promise has ended: each entry is told once).
    pub(crate) fn drain(&self, mut f: impl FnMut(Waiter<C>)) {
        match self.list.take() {
            List::Many(None) => {}
            List::One(w) => f(Waiter::Wake(w)),
            List::Many(Some(all)) => all.into_iter().for_each(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn order(w: &Waiters<&'static str>) -> Vec<String> {
        let mut names = Vec::new();
        w.drain(|e| match e {
            Waiter::Wake(_) => names.push("wake".to_string()),
            Waiter::Call(_, name) => names.push(name.to_string()),
        });
        names
    }

    #[test]
    fn the_list_is_one_waker_wide() {
        assert_eq!(
            std::mem::size_of::<Waiters<Box<dyn FnOnce()>>>(),
            std::mem::size_of::<Waker>()
        );
    }

    #[test]
    fn callbacks_and_wakers_keep_registration_order() {
        let w: Waiters<&'static str> = Waiters::default();
        let a = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let b = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        w.add_callback(CallbackId(1), "before");
        w.add_waker(&a);
        w.add_callback(CallbackId(2), "after");
        w.add_waker(&b);
        assert_eq!(order(&w), ["before", "wake", "after", "wake"]);
        assert_eq!(order(&w), Vec::<String>::new(), "taken once");
    }

    #[test]
    // `Waker::will_wake` compares vtable addresses, which Miri does not
    // keep unique: the dedup it allows is best effort there.
    #[cfg_attr(miri, ignore)]
    fn the_same_waker_is_listed_once() {
        let w: Waiters<&'static str> = Waiters::default();
        let a = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        w.add_waker(&a);
        w.add_waker(&a);
        w.add_callback(CallbackId(1), "cb");
        w.add_waker(&a);
        assert_eq!(order(&w), ["wake", "cb"]);
    }

    #[test]
    fn remove_callback_counts_and_keeps_the_rest() {
        let w: Waiters<&'static str> = Waiters::default();
        let a = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        w.add_waker(&a);
        w.add_callback(CallbackId(7), "x");
        w.add_callback(CallbackId(8), "y");
        w.add_callback(CallbackId(7), "x again");
        assert_eq!(w.remove_callback(CallbackId(7)), 2);
        assert_eq!(w.remove_callback(CallbackId(9)), 0);
        assert_eq!(order(&w), ["wake", "y"]);
    }
}
