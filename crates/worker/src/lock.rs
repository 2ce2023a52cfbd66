//! Locking the worker's mutexes without giving up on a poisoned one.

use std::sync::{Mutex, MutexGuard};

/// The guard of `mutex`, poisoned or not.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these plain values half-updated in a
    // way that matters more than stopping the worker would.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
