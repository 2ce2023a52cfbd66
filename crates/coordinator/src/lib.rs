//! The coordinator (placeholder while it is written).
