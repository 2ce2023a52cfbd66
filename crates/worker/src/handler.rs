//! What a handler is: the [`Handler`] trait, the [`Outcome`] of a successful run, and the
//! adapter that lets an async closure be a handler.

use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;

use crate::context::RunContext;
use crate::error::HandlerError;

/// Code that executes runs of the jobs naming it (`handler = "billing.send_reminders"`).
///
/// `run` returns when the work is done (`Ok`), has failed (`Err`: the run is `failed` with
/// the error's message), or has stopped because [`RunContext::cancelled`] fired (the run
/// is then `timed_out` or `cancelled`, whatever `run` returns). A handler that ignores
/// cancellation is abandoned (its future dropped) a grace period after it was asked to stop.
///
/// ```
/// use cronfleet_worker::{async_trait, Handler, HandlerError, Outcome, RunContext};
///
/// struct SendReminders;
///
/// #[async_trait]
/// impl Handler for SendReminders {
///     async fn run(&self, ctx: RunContext) -> Result<Outcome, HandlerError> {
///         let batch = ctx.args()["batch"].as_u64().unwrap_or(100);
///         ctx.log(format!("sending {batch} reminders\n"));
///         Ok(Outcome::success())
///     }
/// }
/// ```
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Executes one run.
    async fn run(&self, ctx: RunContext) -> Result<Outcome, HandlerError>;
}

/// How a successful run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    remaining: Option<u64>,
}

impl Outcome {
    /// Done; the work left is what the handler last reported with
    /// [`RunContext::progress`] (none if it never did).
    pub fn success() -> Self {
        Outcome::default()
    }

    /// Done with this batch, `remaining` items left: a value above 0 asks the coordinator
    /// for a continuation run at once (DESIGN §3).
    pub fn with_remaining(remaining: u64) -> Self {
        Outcome {
            remaining: Some(remaining),
        }
    }

    /// The work left, if the handler said so explicitly.
    pub fn remaining(&self) -> Option<u64> {
        self.remaining
    }
}

impl From<()> for Outcome {
    fn from((): ()) -> Self {
        Outcome::success()
    }
}

/// An async closure as a [`Handler`] (see [`crate::WorkerBuilder::handler_fn`]).
pub(crate) struct FnHandler<F, Fut, R> {
    function: F,
    // The closure's future and result types, without owning either (`fn() -> …` keeps the
    // adapter `Send + Sync` whatever they are).
    _types: PhantomData<fn() -> (Fut, R)>,
}

impl<F, Fut, R> FnHandler<F, Fut, R> {
    pub(crate) fn new(function: F) -> Self {
        FnHandler {
            function,
            _types: PhantomData,
        }
    }
}

#[async_trait]
impl<F, Fut, R> Handler for FnHandler<F, Fut, R>
where
    F: Fn(RunContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    R: Into<Outcome> + Send + 'static,
{
    async fn run(&self, ctx: RunContext) -> Result<Outcome, HandlerError> {
        (self.function)(ctx).await.map(Into::into)
    }
}
