//! Sending one outbox row: the bodies (generic webhook JSON, a Slack message, an e-mail)
//! and the transports (HTTP with a timeout, SMTP with STARTTLS and authentication).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cronfleet_core::alert::{AlertKind, AlertState};
use cronfleet_store::Delivery;
use lettre::message::header::ContentType;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;

use super::{AlertChannel, ChannelTarget};

/// How long one attempt may take before it counts as failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The mail server and sender of e-mail alerts. `url` is lettre's form:
/// `smtp://USER:PASSWORD@HOST:587?tls=required` (STARTTLS), `smtps://…:465` (TLS from the
/// start), or `smtp://HOST:25` (plain, for a relay on a trusted network).
#[derive(Clone)]
pub struct SmtpSettings {
    pub url: String,
    pub from: String,
    /// A CA (PEM) to trust for the server's certificate besides the public ones (a private
    /// relay); implies TLS: STARTTLS for `smtp://`, TLS from the start for `smtps://`.
    pub ca: Option<std::path::PathBuf>,
}

// The URL carries the password.
impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

/// Sends outbox rows.
#[derive(Clone)]
pub struct AlertSender {
    http: reqwest::Client,
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, lettre::message::Mailbox)>,
    console_url: String,
}

impl fmt::Debug for AlertSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertSender")
            .field("console_url", &self.console_url)
            .finish_non_exhaustive()
    }
}

impl AlertSender {
    /// A sender whose links point at `console_url`. Fails on an unreadable SMTP URL or
    /// sender address, saying which.
    pub fn new(smtp: Option<&SmtpSettings>, console_url: &str) -> Result<AlertSender, String> {
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(concat!("cronfleet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client for alerts: {e}"))?;
        let smtp = match smtp {
            None => None,
            Some(settings) => {
                let mut transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&settings.url)
                    .map_err(|e| {
                        format!(
                            "invalid --alert-smtp URL: {e}; expected smtp://USER:PASSWORD@HOST:587?tls=required, \
                             smtps://USER:PASSWORD@HOST:465 or smtp://HOST:25"
                        )
                    })?
                    .timeout(Some(ATTEMPT_TIMEOUT));
                if let Some(ca) = &settings.ca {
                    transport = transport.tls(private_ca_tls(&settings.url, ca)?);
                }
                let transport = transport.build();
                let from = settings.from.parse().map_err(|e| {
                    format!(
                        "invalid --alert-email-from {:?}: {e}; expected an address such as cronfleet@example.com",
                        settings.from
                    )
                })?;
                Some((transport, from))
            }
        };
        Ok(AlertSender {
            http,
            smtp,
            console_url: console_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Sends `delivery` to `channel` (at `now`, as the body says), within
    /// [`ATTEMPT_TIMEOUT`] in all: `Err` says why it did not arrive.
    pub async fn send(
        &self,
        channel: &AlertChannel,
        delivery: &Delivery,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let attempt = async {
            match &channel.target {
                ChannelTarget::Webhook(url) => {
                    let body = webhook_body(delivery, &self.link(delivery), now);
                    self.post(url, delivery, &body).await
                }
                ChannelTarget::Slack(url) => {
                    self.post(url, delivery, &slack_body(delivery, &self.link(delivery)))
                        .await
                }
                ChannelTarget::Email(to) => self.mail(to, delivery).await,
            }
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")))
    }

    /// Where the console shows what the alert is about.
    pub fn link(&self, delivery: &Delivery) -> String {
        let alert = &delivery.alert;
        let path = console_path(alert.kind, alert.job_name.as_deref(), alert.run_id);
        format!("{}{path}", self.console_url)
    }

    async fn post(
        &self,
        url: &str,
        delivery: &Delivery,
        body: &serde_json::Value,
    ) -> Result<(), String> {
        let answer = self
            .http
            .post(url)
            .header("Idempotency-Key", idempotency_key(delivery))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("cannot reach the webhook: {}", without_url(e)))?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let text = answer.text().await.unwrap_or_default();
        Err(format!(
            "the webhook answered {status}: {}",
            text.chars().take(200).collect::<String>()
        ))
    }

    async fn mail(&self, to: &str, delivery: &Delivery) -> Result<(), String> {
        let Some((transport, from)) = &self.smtp else {
            return Err("no mail server is configured (--alert-smtp)".to_owned());
        };
        let to = to
            .parse()
            .map_err(|e| format!("invalid recipient {to:?}: {e}"))?;
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(subject(delivery))
            .message_id(Some(format!("<{}@cronfleet>", idempotency_key(delivery))))
            .header(ContentType::TEXT_PLAIN)
            .body(text_body(delivery, &self.link(delivery)))
            .map_err(|e| format!("cannot write the e-mail: {e}"))?;
        transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("the mail server refused or failed: {e}"))
    }
}

/// TLS to the mail server of `url` trusting the CA in the PEM file `ca` too.
fn private_ca_tls(url: &str, ca: &std::path::Path) -> Result<Tls, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid --alert-smtp URL: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or("the --alert-smtp URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let pem = std::fs::read(ca)
        .map_err(|e| format!("cannot read --alert-smtp-ca {}: {e}", ca.display()))?;
    let certificate = Certificate::from_pem(&pem).map_err(|e| {
        format!(
            "--alert-smtp-ca {} holds no PEM certificate ({e}); expected a file with -----BEGIN CERTIFICATE-----",
            ca.display()
        )
    })?;
    let parameters = TlsParameters::builder(host)
        .add_root_certificate(certificate)
        .build_rustls()
        .map_err(|e| format!("cannot set up TLS to the mail server: {e}"))?;
    Ok(if parsed.scheme() == "smtps" {
        Tls::Wrapper(parameters)
    } else {
        Tls::Required(parameters)
    })
}

/// The same for every attempt and every coordinator: receivers drop repeats by it.
pub fn idempotency_key(delivery: &Delivery) -> String {
    format!("cronfleet-alert-{}-{}", delivery.alert.id, delivery.event)
}

fn state_word(state: AlertState) -> &'static str {
    match state {
        AlertState::Firing => "FIRING",
        AlertState::Resolved => "RESOLVED",
    }
}

fn rfc3339(time: Option<DateTime<Utc>>) -> serde_json::Value {
    time.map_or(serde_json::Value::Null, |t| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into()
    })
}

/// The generic webhook's body.
pub fn webhook_body(delivery: &Delivery, url: &str, now: DateTime<Utc>) -> serde_json::Value {
    let alert = &delivery.alert;
    json!({
        "id": idempotency_key(delivery),
        "alert_id": alert.id,
        "kind": alert.kind.as_str(),
        "state": delivery.event.as_str(),
        "subject": alert.subject,
        "job": alert.job_name,
        "job_id": alert.job_id,
        "run_id": alert.run_id,
        "labels": alert.labels,
        "message": alert.message,
        "url": url,
        "fired_at": rfc3339(Some(alert.fired_at)),
        "resolved_at": rfc3339(alert.resolved_at),
        "sent_at": rfc3339(Some(now)),
        "attempt": delivery.attempts,
    })
}

/// A Slack incoming webhook's body (also read by Mattermost and Rocket.Chat).
pub fn slack_body(delivery: &Delivery, url: &str) -> serde_json::Value {
    let icon = match delivery.event {
        AlertState::Firing => ":rotating_light:",
        AlertState::Resolved => ":white_check_mark:",
    };
    json!({
        "text": format!("{icon} *{}* {} — {} (<{url}|open in cronfleet>)",
            state_word(delivery.event), delivery.alert.kind, delivery.alert.message),
    })
}

fn subject(delivery: &Delivery) -> String {
    let alert = &delivery.alert;
    let about = alert.job_name.as_deref().unwrap_or(&alert.subject);
    format!(
        "[cronfleet] {} {}: {about}",
        state_word(delivery.event),
        alert.kind
    )
}

fn text_body(delivery: &Delivery, url: &str) -> String {
    let alert = &delivery.alert;
    let mut body = format!(
        "{} {}\n\n{}\n\nOpen: {url}\n\nalert:    {}\nsubject:  {}\nfired at: {}\n",
        state_word(delivery.event),
        alert.kind,
        alert.message,
        alert.id,
        alert.subject,
        alert
            .fired_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    if let Some(resolved) = alert.resolved_at {
        body.push_str(&format!(
            "resolved: {}\n",
            resolved.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    if let Some(run) = alert.run_id {
        body.push_str(&format!("run:      {run}\n"));
    }
    body
}

/// A reqwest error without its URL (a webhook's URL is its secret).
fn without_url(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The console page of what an alert is about: a stalled run's page, a job's page, or
/// the cluster page (workers, handlers).
pub fn console_path(kind: AlertKind, job: Option<&str>, run_id: Option<i64>) -> String {
    match (job, run_id) {
        (_, Some(run)) if kind == AlertKind::Stalled => format!("/runs/{run}"),
        // Job names are DNS-label-like (`core::job::validate_name`): a path segment as they are.
        (Some(job), _) => format!("/jobs/{job}"),
        _ => "/cluster".to_owned(),
    }
}
