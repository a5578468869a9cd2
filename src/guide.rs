// The guide, `docs/guide.md`, published as this module's documentation:
// the names, the cancellation rules, owned-buffer I/O, threads and cores,
// running and shutdown, timers, errors, panics, debug mode, signals. The
// module has no items; the guide's examples run as doctests.
#![doc = include_str!("../docs/guide.md")]
