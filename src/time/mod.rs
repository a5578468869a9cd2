//! Time: the loop's timer heap and the sleep futures built on it.

pub(crate) mod heap;
mod sleep;

pub use sleep::{Sleep, SleepWith, sleep, sleep_with};
