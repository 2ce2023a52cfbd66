//! End-to-end tests: drive the real `cronfleet` binary and real services.
