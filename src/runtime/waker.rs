//! The waker of a task: `Send + Sync`, safe to wake from any thread.
//!
//! It holds no pointer to the task (which is `!Send`), only its slot and id
//! in the loop's task table. Woken on the loop's own thread it pushes onto
//! the run queue directly; woken elsewhere it goes through the loop's remote
//! queue and eventfd. (monoio's non-atomic waker refcount, mo#120, is the
//! trap this avoids.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::task::ArcWake;

use super::context;
use super::event_loop::Runnable;
use super::shared::{LoopShared, Remote};

pub(crate) struct TaskWaker {
    pub(crate) shared: Arc<LoopShared>,
    pub(crate) id: u64,
    /// The task's slot (`u32`: with the flag below, the state fits in 24
    /// bytes, one small allocation per task).
    pub(crate) key: u32,
    /// Already on a run queue: further wakes are no-ops until it runs.
    pub(crate) scheduled: AtomicBool,
}

impl ArcWake for TaskWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        if arc_self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let loop_id = arc_self.shared.id;
        let local = context::with_loop(|lp| {
            if lp.id == loop_id {
                lp.schedule(Runnable::Task {
                    key: arc_self.key as usize,
                    id: arc_self.id,
                });
                true
            } else {
                false
            }
        });
        if local != Some(true) {
            // A closed loop has no task to wake: dropping the wake is right.
            let _ = arc_self.shared.push(Remote::Wake {
                key: arc_self.key as usize,
                id: arc_self.id,
            });
        }
    }
}
