//! Integration tests: net (against a real ring).
