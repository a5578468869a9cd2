//! Timestamps for the tour's output.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static START: OnceLock<Instant> = OnceLock::new();

/// Seconds since the tour started, as `[  0.300]`.
pub fn stamp() -> String {
    let t = START.get_or_init(Instant::now).elapsed();
    format!("[{:7.3}]", t.as_secs_f64())
}

/// Prints a line with a timestamp.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        // Format first: an argument may await, and the stamp is the time
        // the line is printed.
        let line = format!($($arg)*);
        println!("{} {}", $crate::clock::stamp(), line)
    }};
}

/// The document's seconds, scaled to tenths.
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s / 10.0)
}
