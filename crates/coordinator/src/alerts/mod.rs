//! Alerts: where they go and how they are sent. What fires is decided in
//! `cronfleet_core::alert`; the leader's evaluator and delivery loops
//! (`leader/alerting.rs`) read this module's [`AlertSettings`], route each alert to the
//! [`AlertChannel`]s that take it, and send outbox rows through an [`AlertSender`].
//!
//! A channel is named in the outbox by a stable key (`webhook:3fa2…`, a digest of its
//! target), so every coordinator of one deployment — configured alike — delivers the
//! same rows, and no secret of a channel (a Slack URL, an SMTP password) is stored.

mod channel;
mod send;

use std::time::Duration;

pub use channel::{AlertChannel, ChannelError, ChannelTarget};
pub use send::{AlertSender, SmtpSettings, console_path};

/// How alerts are evaluated and delivered.
#[derive(Clone, Debug)]
pub struct AlertSettings {
    pub channels: Vec<AlertChannel>,
    /// The mail server for e-mail channels.
    pub smtp: Option<SmtpSettings>,
    /// How often the leader evaluates the alert conditions.
    pub evaluate_every: Duration,
    /// Runs waiting this long for a handler (and labels) no live worker offers alert.
    pub no_worker_after: Duration,
    /// A worker gone this long without saying it stops alerts.
    pub worker_lost_after: Duration,
    /// A run with no output and no progress for this long is stalled; `None`: only a run
    /// past its job's expected duration is.
    pub silent_after: Option<Duration>,
    /// The web console's address as users reach it, for the links in alerts
    /// (`https://cronfleet.example.com`); `None`: the coordinator's own HTTP address.
    pub console_url: Option<String>,
    /// A delivery still failing this long after its alert changed is given up.
    pub give_up_after: Duration,
}

impl Default for AlertSettings {
    fn default() -> AlertSettings {
        AlertSettings {
            channels: Vec::new(),
            smtp: None,
            evaluate_every: Duration::from_secs(5),
            no_worker_after: Duration::from_secs(60),
            worker_lost_after: Duration::from_secs(30),
            silent_after: None,
            console_url: None,
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl AlertSettings {
    /// The keys of the channels an alert about a job with `labels` (or about no job) goes
    /// to.
    pub fn route(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
        about_a_job: bool,
    ) -> Vec<String> {
        self.channels
            .iter()
            .filter(|channel| channel.takes(labels, about_a_job))
            .map(AlertChannel::key)
            .collect()
    }

    /// Rejects settings that cannot work, saying which.
    pub fn validate(&self) -> Result<(), String> {
        let needs_smtp = self
            .channels
            .iter()
            .any(|c| matches!(c.target, ChannelTarget::Email(_)));
        if needs_smtp && self.smtp.is_none() {
            return Err(
                "an --alert-email channel needs a mail server: set --alert-smtp (smtp://USER:PASSWORD@HOST:587) \
                 and --alert-email-from"
                    .to_owned(),
            );
        }
        if self.evaluate_every.is_zero() {
            return Err("--alert-interval must be positive".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_go_to_unrouted_channels_and_to_channels_whose_labels_the_job_carries() {
        let settings = AlertSettings {
            channels: vec![
                AlertChannel::parse_webhook("https://hooks.example/all").unwrap(),
                AlertChannel::parse_webhook("team=payments:https://hooks.example/pay").unwrap(),
            ],
            ..AlertSettings::default()
        };
        let all = settings.channels[0].key();
        let payments = settings.channels[1].key();
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            settings.route(&labels(&[("team", "payments"), ("env", "prod")]), true),
            vec![all.clone(), payments]
        );
        assert_eq!(
            settings.route(&labels(&[("team", "ops")]), true),
            vec![all.clone()]
        );
        // An alert about no job (a lost worker) goes to the unrouted channels only.
        assert_eq!(settings.route(&labels(&[]), false), vec![all]);
    }

    #[test]
    fn email_channels_need_a_mail_server() {
        let settings = AlertSettings {
            channels: vec![AlertChannel::parse_email("ops@example.com").unwrap()],
            ..AlertSettings::default()
        };
        assert!(settings.validate().unwrap_err().contains("--alert-smtp"));
    }
}
