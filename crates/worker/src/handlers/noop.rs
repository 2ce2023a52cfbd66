//! `noop`: succeeds at once. For testing the pipeline and measuring its overhead.

use async_trait::async_trait;

use crate::{Handler, HandlerError, Outcome, RunContext};

/// Succeeds at once, whatever its args.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopHandler;

#[async_trait]
impl Handler for NoopHandler {
    async fn run(&self, _ctx: RunContext) -> Result<Outcome, HandlerError> {
        Ok(Outcome::success())
    }
}
