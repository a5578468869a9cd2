//! Integration tests: core (against a real ring).
