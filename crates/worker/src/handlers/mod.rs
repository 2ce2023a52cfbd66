//! The stock handlers of the `cronfleet worker` binary (DESIGN §3): `shell`, `http`,
//! `noop` and `sleep`. None is on by default in the SDK; the binary enables those listed
//! in `--handlers`.

mod args;
mod http;
mod noop;
mod shell;
mod sleep;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use self::http::HttpHandler;
pub use self::noop::NoopHandler;
pub use self::shell::ShellHandler;
pub use self::sleep::SleepHandler;
use crate::error::WorkerError;
use crate::handler::Handler;

/// One of the stock handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StockHandler {
    /// `{"script": "…"}` run by `/bin/sh -c` in its own process group.
    Shell,
    /// `{"url", "method", "headers", "body", "expect_status"}`.
    Http,
    /// Succeeds at once.
    Noop,
    /// `{"ms": N}`: sleeps, honouring cancellation.
    Sleep,
}

impl StockHandler {
    /// Every stock handler.
    pub const ALL: [StockHandler; 4] = [
        StockHandler::Shell,
        StockHandler::Http,
        StockHandler::Noop,
        StockHandler::Sleep,
    ];

    /// The name jobs use (`handler = "shell"`).
    pub fn name(self) -> &'static str {
        match self {
            StockHandler::Shell => "shell",
            StockHandler::Http => "http",
            StockHandler::Noop => "noop",
            StockHandler::Sleep => "sleep",
        }
    }

    /// A fresh instance of the handler.
    pub fn handler(self) -> Arc<dyn Handler> {
        match self {
            StockHandler::Shell => Arc::new(ShellHandler),
            StockHandler::Http => Arc::new(HttpHandler::new()),
            StockHandler::Noop => Arc::new(NoopHandler),
            StockHandler::Sleep => Arc::new(SleepHandler),
        }
    }

    /// Parses a comma-separated list (`shell,http`): names trimmed, repeats ignored, at
    /// least one required, unknown names an error listing the valid ones.
    pub fn parse_list(list: &str) -> Result<Vec<StockHandler>, WorkerError> {
        let mut handlers = Vec::new();
        for name in list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let handler = name.parse()?;
            if !handlers.contains(&handler) {
                handlers.push(handler);
            }
        }
        if handlers.is_empty() {
            return Err(WorkerError::NoStockHandlers {
                valid: valid_names(),
            });
        }
        Ok(handlers)
    }
}

fn valid_names() -> String {
    StockHandler::ALL.map(StockHandler::name).join(", ")
}

impl fmt::Display for StockHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StockHandler {
    type Err = WorkerError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        StockHandler::ALL
            .into_iter()
            .find(|handler| handler.name() == name)
            .ok_or_else(|| WorkerError::UnknownStockHandler {
                name: name.to_owned(),
                valid: valid_names(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_unknown_names_list_the_valid_ones() {
        assert_eq!(
            StockHandler::parse_list(" shell, http,shell ").unwrap(),
            [StockHandler::Shell, StockHandler::Http]
        );
        let error = StockHandler::parse_list("noop,bash")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "unknown stock handler \"bash\": valid handlers are shell, http, noop, sleep"
        );
        let error = StockHandler::parse_list(" , ").unwrap_err().to_string();
        assert!(error.contains("no stock handlers listed"), "{error}");
    }
}
