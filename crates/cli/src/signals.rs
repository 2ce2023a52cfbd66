//! Waiting for the signals that ask a server process to stop.

use tokio::signal::unix::{SignalKind, signal};

/// Returns on SIGTERM (Kubernetes, systemd) or SIGINT (Ctrl-C).
pub async fn until_terminated() {
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
