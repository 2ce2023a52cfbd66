//! Wake-ups for the leader's loops: the scheduler and dispatcher sleep until their next
//! deadline or until something changed (a job created or triggered, a worker connected).

use std::sync::Arc;

use tokio::sync::Notify;

/// A cloneable "something changed, look again" signal. Wake-ups that come while nobody
/// waits are kept (one permit), so none is lost between two looks.
#[derive(Clone, Debug, Default)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    pub async fn woken(&self) {
        self.0.notified().await;
    }
}
