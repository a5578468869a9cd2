//! Integration tests: fs (against a real ring).
