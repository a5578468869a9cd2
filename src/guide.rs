//! The ringio guide (`docs/guide.md`): the names, the cancellation rules,
//! owned-buffer I/O, threads and cores, running and shutdown, timers,
//! errors, panics, debug mode. This module has no items; its examples are
//! compiled and run as doctests.
#![doc = include_str!("../docs/guide.md")]
