//! Command-line pieces shared by the server commands (`coordinator`, `dev`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use cronfleet_coordinator::alerts::{AlertChannel, AlertSettings, ChannelError, SmtpSettings};
use cronfleet_core::duration::parse_fixed_duration;

/// Where a coordinator listens.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Where the gRPC services (worker protocol, admin API) listen.
    #[arg(
        long,
        env = "CRONFLEET_GRPC",
        default_value = "127.0.0.1:50051",
        value_name = "ADDR"
    )]
    pub grpc: SocketAddr,
    /// Where the REST API (/api/v1, OpenAPI document at /api/v1/openapi.json), /healthz,
    /// /readyz and /metrics are served.
    #[arg(
        long,
        env = "CRONFLEET_HTTP",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub http: SocketAddr,
}

/// The web console (served at / on the --http port).
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// A Jaeger UI's base URL (e.g. http://jaeger:16686): the web console links each run's
    /// trace id to URL/trace/ID. Without it the trace id is shown as text.
    #[arg(long, env = "CRONFLEET_JAEGER_URL", value_name = "URL", value_parser = parse_http_url)]
    pub jaeger_url: Option<String>,
}

fn parse_http_url(text: &str) -> Result<String, String> {
    if text.starts_with("http://") || text.starts_with("https://") {
        Ok(text.trim_end_matches('/').to_owned())
    } else {
        Err(format!(
            "{text:?} is not an http:// or https:// URL; expected e.g. http://jaeger:16686"
        ))
    }
}

/// The contents of a secret's file (`--database-url-file`, `--worker-token-file`…), its
/// surrounding whitespace trimmed; the error names the flag and the file, never the
/// contents.
pub fn read_secret_file(flag: &str, path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("cannot read {flag} {}: {error}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        anyhow::bail!(
            "{flag} {} is empty; expected the secret on its first line",
            path.display()
        );
    }
    Ok(secret.to_owned())
}

/// Tokens from a file: one per line (or comma-separated), blank lines skipped.
pub fn read_token_file(flag: &str, path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    Ok(read_secret_file(flag, path)?
        .split(['\n', ','])
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Alerts: where they go, and when conditions count (see README, "Alerts").
#[derive(Debug, Args)]
pub struct AlertArgs {
    /// Send alerts as JSON to this webhook (repeatable). `team=payments:URL` sends only the
    /// alerts of jobs labelled team=payments there.
    #[arg(
        long = "alert-webhook",
        env = "CRONFLEET_ALERT_WEBHOOK",
        value_delimiter = ' ',
        value_name = "[LABELS:]URL",
        hide_env_values = true
    )]
    pub webhooks: Vec<String>,
    /// Send alerts to this Slack-compatible incoming webhook (repeatable, routed like
    /// --alert-webhook).
    #[arg(
        long = "alert-slack",
        env = "CRONFLEET_ALERT_SLACK",
        value_delimiter = ' ',
        value_name = "[LABELS:]URL",
        hide_env_values = true
    )]
    pub slack: Vec<String>,
    /// Mail alerts to this address (repeatable, routed like --alert-webhook); needs
    /// --alert-smtp.
    #[arg(
        long = "alert-email",
        env = "CRONFLEET_ALERT_EMAIL",
        value_delimiter = ' ',
        value_name = "[LABELS:]ADDRESS"
    )]
    pub emails: Vec<String>,
    /// The mail server: smtp://USER:PASSWORD@HOST:587?tls=required (STARTTLS),
    /// smtps://USER:PASSWORD@HOST:465 (TLS), or smtp://HOST:25 (plain, a trusted relay).
    #[arg(
        long = "alert-smtp",
        env = "CRONFLEET_ALERT_SMTP",
        value_name = "URL",
        hide_env_values = true
    )]
    pub smtp: Option<String>,
    /// A CA certificate (PEM file) to trust for the mail server besides the public ones (a
    /// private relay); implies TLS — STARTTLS for smtp://, TLS for smtps://.
    #[arg(
        long = "alert-smtp-ca",
        env = "CRONFLEET_ALERT_SMTP_CA",
        value_name = "FILE",
        requires = "smtp"
    )]
    pub smtp_ca: Option<std::path::PathBuf>,
    /// The sender of alert e-mails.
    #[arg(
        long = "alert-email-from",
        env = "CRONFLEET_ALERT_EMAIL_FROM",
        default_value = "cronfleet@localhost",
        value_name = "ADDRESS"
    )]
    pub email_from: String,
    /// How often the leader evaluates the alert conditions.
    #[arg(long = "alert-interval", env = "CRONFLEET_ALERT_INTERVAL", default_value = "5s", value_parser = parse_fixed_duration, value_name = "DUR")]
    pub interval: Duration,
    /// Runs waiting this long for a handler (with labels) no live worker offers alert
    /// (no_worker).
    #[arg(long = "alert-no-worker-after", env = "CRONFLEET_ALERT_NO_WORKER_AFTER", default_value = "1m", value_parser = parse_fixed_duration, value_name = "DUR")]
    pub no_worker_after: Duration,
    /// A worker gone this long without saying it stops alerts (worker_lost).
    #[arg(long = "alert-worker-lost-after", env = "CRONFLEET_ALERT_WORKER_LOST_AFTER", default_value = "30s", value_parser = parse_fixed_duration, value_name = "DUR")]
    pub worker_lost_after: Duration,
    /// A run with no output and no progress for this long is stalled [default: only runs
    /// past their job's --expected-duration are].
    #[arg(long = "alert-silent-after", env = "CRONFLEET_ALERT_SILENT_AFTER", value_parser = parse_fixed_duration, value_name = "DUR")]
    pub silent_after: Option<Duration>,
    /// The web console's address as users reach it, for the links in alerts
    /// [default: http://<--http>].
    #[arg(long = "console-url", env = "CRONFLEET_CONSOLE_URL", value_name = "URL", value_parser = parse_http_url)]
    pub console_url: Option<String>,
}

impl AlertArgs {
    /// The settings, or which channel cannot be read. Channels are read here rather than
    /// by clap, whose error would repeat the whole value — a webhook's secret URL.
    pub fn settings(&self) -> Result<AlertSettings, ChannelError> {
        let mut channels = Vec::new();
        for spec in &self.webhooks {
            channels.push(AlertChannel::parse_webhook(spec)?);
        }
        for spec in &self.slack {
            channels.push(AlertChannel::parse_slack(spec)?);
        }
        for spec in &self.emails {
            channels.push(AlertChannel::parse_email(spec)?);
        }
        Ok(AlertSettings {
            channels,
            smtp: self.smtp.as_ref().map(|url| SmtpSettings {
                url: url.clone(),
                from: self.email_from.clone(),
                ca: self.smtp_ca.clone(),
            }),
            evaluate_every: self.interval,
            no_worker_after: self.no_worker_after,
            worker_lost_after: self.worker_lost_after,
            silent_after: self.silent_after,
            console_url: self.console_url.clone(),
            ..AlertSettings::default()
        })
    }
}
