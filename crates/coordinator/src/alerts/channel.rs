//! Alert channels as configured: `[KEY=VALUE,…:]TARGET`, the target a webhook URL, a
//! Slack incoming-webhook URL or an e-mail address; the labels before the colon route the
//! channel to the jobs that carry all of them.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

/// Where alerts go.
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelTarget {
    /// A generic webhook: a JSON body per event.
    Webhook(String),
    /// A Slack-compatible incoming webhook.
    Slack(String),
    /// An e-mail address.
    Email(String),
}

// Webhook URLs are credentials: never in logs.
impl fmt::Debug for ChannelTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelTarget::Email(to) => write!(f, "Email({to})"),
            other => write!(f, "{}(…)", other.kind()),
        }
    }
}

impl ChannelTarget {
    fn kind(&self) -> &'static str {
        match self {
            ChannelTarget::Webhook(_) => "webhook",
            ChannelTarget::Slack(_) => "slack",
            ChannelTarget::Email(_) => "email",
        }
    }

    fn target(&self) -> &str {
        match self {
            ChannelTarget::Webhook(t) | ChannelTarget::Slack(t) | ChannelTarget::Email(t) => t,
        }
    }
}

/// One channel: its target, and the labels a job must carry for its alerts to go there
/// (none: every alert).
#[derive(Clone, PartialEq, Eq)]
pub struct AlertChannel {
    pub target: ChannelTarget,
    pub only_labels: BTreeMap<String, String>,
}

// Slack and webhook URLs are credentials: never in logs.
impl fmt::Debug for AlertChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertChannel")
            .field("key", &self.key())
            .field("only_labels", &self.only_labels)
            .finish_non_exhaustive()
    }
}

/// A channel that cannot be read: what was given and what is valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid alert channel {given:?}: {problem}; expected {expected}")]
pub struct ChannelError {
    pub given: String,
    pub problem: String,
    pub expected: &'static str,
}

const URL_FORM: &str =
    "[KEY=VALUE,...:]http(s)://HOST/PATH, e.g. team=payments:https://hooks.example.com/cron";
const EMAIL_FORM: &str = "[KEY=VALUE,...:]NAME@DOMAIN, e.g. team=payments:oncall@example.com";

impl AlertChannel {
    pub fn parse_webhook(spec: &str) -> Result<AlertChannel, ChannelError> {
        Self::parse_url(spec).map(|(only_labels, url)| AlertChannel {
            target: ChannelTarget::Webhook(url),
            only_labels,
        })
    }

    pub fn parse_slack(spec: &str) -> Result<AlertChannel, ChannelError> {
        Self::parse_url(spec).map(|(only_labels, url)| AlertChannel {
            target: ChannelTarget::Slack(url),
            only_labels,
        })
    }

    pub fn parse_email(spec: &str) -> Result<AlertChannel, ChannelError> {
        let error = |problem: &str| ChannelError {
            given: spec.to_owned(),
            problem: problem.to_owned(),
            expected: EMAIL_FORM,
        };
        let (labels, address) = match spec.rsplit_once(':') {
            Some((labels, address)) => (parse_labels(labels).map_err(|p| error(&p))?, address),
            None => (BTreeMap::new(), spec),
        };
        match address.split_once('@') {
            Some((name, domain)) if !name.is_empty() && domain.contains('.') => {}
            _ => return Err(error("not an e-mail address")),
        }
        address
            .parse::<lettre::Address>()
            .map_err(|e| error(&e.to_string()))?;
        Ok(AlertChannel {
            target: ChannelTarget::Email(address.to_owned()),
            only_labels: labels,
        })
    }

    fn parse_url(spec: &str) -> Result<(BTreeMap<String, String>, String), ChannelError> {
        let error = |problem: &str| ChannelError {
            given: redact(spec),
            problem: problem.to_owned(),
            expected: URL_FORM,
        };
        let at = spec
            .find("http://")
            .or_else(|| spec.find("https://"))
            .ok_or_else(|| error("no http:// or https:// URL"))?;
        let (prefix, url) = spec.split_at(at);
        let labels = match prefix {
            "" => BTreeMap::new(),
            prefix => match prefix.strip_suffix(':') {
                Some(labels) => parse_labels(labels).map_err(|p| error(&p))?,
                None => return Err(error("the labels must end with ':' before the URL")),
            },
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| error(&format!("bad URL: {e}")))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(error("the URL has no host"));
        }
        Ok((labels, url.to_owned()))
    }

    /// The channel's name in the outbox: its kind and a digest of its target and routing.
    pub fn key(&self) -> String {
        let mut digest = Sha256::new();
        digest.update(self.target.target().as_bytes());
        for (k, v) in &self.only_labels {
            digest.update(format!("\n{k}={v}").as_bytes());
        }
        let hex: String = digest.finalize()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{}:{hex}", self.target.kind())
    }

    /// Whether an alert about a job with `labels` (or about no job) goes here.
    pub fn takes(&self, labels: &BTreeMap<String, String>, about_a_job: bool) -> bool {
        if self.only_labels.is_empty() {
            return true;
        }
        about_a_job
            && self
                .only_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
    }
}

fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(format!("label {pair:?} is not KEY=VALUE")),
        })
        .collect()
}

/// `spec` with what may be a secret hidden: a URL's user and password, path and query
/// (Slack and most webhook URLs carry their secret there); without a scheme, all from the
/// first `/`, `?` or `@` on.
fn redact(spec: &str) -> String {
    let Some(at) = spec.find("://") else {
        return match spec.find(['/', '?', '@']) {
            Some(end) => format!("{}…", &spec[..end]),
            None => spec.to_owned(),
        };
    };
    let (scheme, rest) = spec.split_at(at + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let hidden = if authority_end < rest.len() || host.len() < authority.len() {
        "/…"
    } else {
        ""
    };
    format!("{scheme}{host}{hidden}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_parse_with_or_without_labels() {
        let plain = AlertChannel::parse_webhook("https://hooks.example/x?token=1").unwrap();
        assert!(plain.only_labels.is_empty());
        let routed =
            AlertChannel::parse_slack("team=payments,env=prod:https://hooks.slack.com/T/B/x")
                .unwrap();
        assert_eq!(routed.only_labels.len(), 2);
        assert_eq!(
            routed.target,
            ChannelTarget::Slack("https://hooks.slack.com/T/B/x".to_owned())
        );
        assert!(routed.key().starts_with("slack:"));
        assert_ne!(
            routed.key(),
            AlertChannel::parse_slack("https://hooks.slack.com/T/B/x")
                .unwrap()
                .key()
        );
        let email = AlertChannel::parse_email("team=ops:oncall@example.com").unwrap();
        assert_eq!(
            email.target,
            ChannelTarget::Email("oncall@example.com".to_owned())
        );
    }

    #[test]
    fn bad_channels_say_what_is_wrong_without_showing_the_secret() {
        let error = AlertChannel::parse_webhook("hooks.example/T0/secret").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "invalid alert channel \"hooks.example…\": no http:// or https:// URL; expected {URL_FORM}"
            )
        );
        let error =
            AlertChannel::parse_webhook("x=1;https://user:pw@h.example/secret").unwrap_err();
        assert!(
            error.to_string().contains("\"x=1;https://h.example/…\""),
            "{error}"
        );
        let error = AlertChannel::parse_webhook("team:https://hooks.example/secret").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("label \"team\" is not KEY=VALUE"),
            "{error}"
        );
        assert!(!error.to_string().contains("secret"), "{error}");
        assert!(AlertChannel::parse_email("oncall").is_err());
        let debug = format!(
            "{:?}",
            AlertChannel::parse_webhook("https://h.example/secret").unwrap()
        );
        assert!(!debug.contains("secret"), "{debug}");
    }
}
