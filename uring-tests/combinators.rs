//! Integration tests: combinators (against a real ring).
