//! Integration tests: cancel (against a real ring).
