//! `sleep`: `{"ms": N}` sleeps N milliseconds, or until the run is cancelled. For tests,
//! demos and placeholders.

use std::time::Duration;

use async_trait::async_trait;

use super::args::Args;
use crate::{Handler, HandlerError, Outcome, RunContext};

const EXAMPLE: &str = r#"{"ms": 1500}"#;

/// Sleeps for `args.ms` milliseconds, honouring cancellation.
#[derive(Debug, Clone, Copy, Default)]
pub struct SleepHandler;

#[async_trait]
impl Handler for SleepHandler {
    async fn run(&self, ctx: RunContext) -> Result<Outcome, HandlerError> {
        let duration = parse(ctx.args())?;
        tokio::select! {
            () = tokio::time::sleep(duration) => Ok(Outcome::success()),
            () = ctx.cancelled() => Err(HandlerError::new("sleep interrupted")),
        }
    }
}

fn parse(args: &serde_json::Value) -> Result<Duration, HandlerError> {
    let args = Args::new("sleep", args, &["ms"], EXAMPLE)?;
    let ms = args.get("ms").ok_or_else(|| args.missing("ms", EXAMPLE))?;
    ms.as_u64()
        .map(Duration::from_millis)
        .ok_or_else(|| args.invalid("ms", "a non-negative integer (milliseconds)", ms))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ms_must_be_a_non_negative_integer() {
        assert_eq!(
            parse(&json!({"ms": 250})).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse(&json!({"ms": 0})).unwrap(), Duration::ZERO);
        let error = |args| parse(&args).unwrap_err().to_string();
        assert_eq!(
            error(json!({"ms": -5})),
            "invalid args for the sleep handler: args.ms must be a non-negative integer (milliseconds), got -5"
        );
        assert!(error(json!({"ms": 1.5})).contains("args.ms must be"));
        assert!(error(json!({"ms": "10"})).contains("got \"10\""));
        assert_eq!(
            error(json!({})),
            r#"invalid args for the sleep handler: args.ms is required, e.g. {"ms": 1500}"#
        );
        assert!(error(json!({"ms": 1, "seconds": 2})).contains("unknown field \"seconds\""));
        assert!(error(json!([1])).contains("expected a JSON object"));
    }
}
