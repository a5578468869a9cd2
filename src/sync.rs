//! The synchronization primitives of the cross-thread wake protocol: the
//! task header's counts and flag (`task::raw`) and the loop's remote queue
//! (`runtime::shared`) take them from here, not from `std`.
//!
//! In a normal build they are `std`'s. In the model checks
//! (`RUSTFLAGS="--cfg loom" cargo test --lib loom`, see `ci/loom.sh`) they
//! are `loom`'s, which runs every interleaving of the threads and every
//! outcome the memory model allows for each atomic access, so the models
//! in `task/raw/loom_tests.rs` check the real code, not a copy of it.
//!
//! Only what the protocol's own state needs comes from here: statistics
//! counters and `Arc`s stay `std`'s (a model that swapped them would check
//! `std`, not ringio).

#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::Mutex;
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, fence};

#[cfg(all(test, loom))]
pub(crate) use loom::sync::Mutex;
#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, fence};

/// What the models stand in for the kernel with.
#[cfg(all(test, loom))]
pub(crate) mod model {
    use loom::sync::{Condvar, Mutex};

    /// The loop's eventfd and the read of it armed on the ring, as loom
    /// sees them: a write adds to a counter and wakes a waiter; the loop
    /// blocked in `io_uring_enter` until that read completes is a wait for
    /// the counter to leave zero, which takes it (an eventfd read returns
    /// and zeroes the counter). The kernel's locks in `eventfd_write` and
    /// the CQ ring's acquire/release order the write before the completion
    /// the loop reaps; the mutex gives the model that same order and no
    /// more. A MSG_RING wake-up (a CQE posted into the ring) is the same
    /// thing to the protocol and is modelled by the same counter. What the
    /// model leaves out: the bounded wait of a MSG_RING loop (a model loop
    /// waits without a bound, so a lost wake-up is a deadlock loom reports,
    /// not a one-second delay) and the ring itself.
    pub(crate) struct EventFd {
        count: Mutex<u64>,
        ready: Condvar,
    }

    impl EventFd {
        pub(crate) fn new() -> EventFd {
            EventFd {
                count: Mutex::new(0),
                ready: Condvar::new(),
            }
        }

        /// `write(eventfd, 1)`.
        pub(crate) fn write(&self) {
            *self.count.lock().unwrap() += 1;
            self.ready.notify_one();
        }

        /// The loop blocks in the ring until its armed eventfd read
        /// completes.
        pub(crate) fn wait(&self) {
            let mut count = self.count.lock().unwrap();
            while *count == 0 {
                count = self.ready.wait(count).unwrap();
            }
            *count = 0;
        }
    }
}
