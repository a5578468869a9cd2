//! Tour section: combinators.

/// Runs this section's examples.
pub fn run() {}
