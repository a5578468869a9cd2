//! Integration tests: threads (against a real ring).
