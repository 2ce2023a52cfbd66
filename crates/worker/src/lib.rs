//! The worker SDK and stock handlers (placeholder while it is written).
