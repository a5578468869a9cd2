//! Tour section: threads.

/// Runs this section's examples.
pub fn run() {}
