//! Time: the loop's timer heap and the sleep futures built on it.

pub(crate) mod heap;
mod sleep;

pub use sleep::{Sleep, SleepWith, sleep, sleep_with};

/// `now + delay`, or a deadline about 30 years away when `delay` is too
/// long for an `Instant` (`Duration::MAX` means "never", not a panic).
pub(crate) fn deadline_after(delay: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(delay).unwrap_or_else(|| {
        now.checked_add(std::time::Duration::from_secs(86_400 * 365 * 30))
            .unwrap_or(now)
    })
}
