//! The connection to the coordinator (worker.proto, "Life of a connection"): dial a
//! coordinator, register, follow `NotLeader` to the leader, heartbeat, act on assign /
//! cancel / drain, and reconnect with backoff when anything goes wrong.
//!
//! Runs outlive connections: they keep executing across a reconnect while the lease
//! holds (see `shared.rs`), and report on whichever stream is current. What the messages
//! say is read and written by `protocol.rs`; this loop only moves them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cronfleet_proto::v1::coordinator_message::Kind as Incoming;
use cronfleet_proto::v1::worker_service_client::WorkerServiceClient;
use cronfleet_proto::v1::{CoordinatorMessage, NotLeader, WorkerMessage};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::Endpoint;
use tracing::{debug, info, warn};

use crate::backoff::{Backoff, ELECTION_RETRY, jittered};
use crate::config::BearerToken;
use crate::launcher::{AssignDecision, Launcher};
use crate::protocol::{self, SessionSettings};

/// Longest wait for a TCP + HTTP/2 connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the answer to `Register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker that is exiting waits for the coordinator to close the stream after
/// the worker ended its side (so that the last messages are delivered).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// `NotLeader` redirects followed in a row before backing off (replicas that disagree on
/// the leader during an election would otherwise bounce the worker around at full speed).
const MAX_REDIRECTS: u32 = 3;

/// How a session (one stream) ended.
#[derive(Debug)]
enum SessionEnd {
    /// Could not connect or register.
    Failed(String),
    /// A non-leader named the leader.
    Redirect(String),
    /// A non-leader that knows no leader yet, or a deposed leader.
    NoLeader(String),
    /// The registered stream ended or broke.
    Lost(String),
    /// The coordinator sent `Drain`.
    Drained(String),
    /// Nothing came from the coordinator for the lease TTL.
    LeaseLost,
    /// The worker is exiting.
    Exit,
}

/// Connects, and reconnects, until `exit` is cancelled.
pub(crate) async fn maintain_connection(launcher: Arc<Launcher>, exit: CancellationToken) {
    let shared = &launcher.shared;
    let urls = shared.config.coordinators.clone();
    let mut next_url = 0usize;
    let mut redirect: Option<String> = None;
    let mut redirects_in_a_row = 0u32;
    let mut failures_in_round = 0usize;
    let mut backoff = Backoff::new();
    loop {
        let url = match redirect.take() {
            Some(url) => url,
            None => {
                let url = urls[next_url % urls.len()].clone();
                next_url += 1;
                url
            }
        };
        let (registered, end) = session(&launcher, &url, &exit).await;
        if registered {
            backoff.reset();
            failures_in_round = 0;
            redirects_in_a_row = 0;
        }
        let node = &shared.config.node_id;
        let pause = match end {
            SessionEnd::Exit => return,
            SessionEnd::Redirect(leader) if redirects_in_a_row < MAX_REDIRECTS => {
                info!(worker = %node, coordinator = %url, leader = %leader, "not the leader: following");
                redirects_in_a_row += 1;
                redirect = Some(leader);
                Pause::None
            }
            SessionEnd::Redirect(leader) => {
                warn!(worker = %node, coordinator = %url, leader = %leader, "redirected too often: backing off");
                redirects_in_a_row = 0;
                Pause::Backoff
            }
            SessionEnd::NoLeader(why) => {
                info!(worker = %node, coordinator = %url, %why, "no leader here yet: asking again shortly");
                Pause::Election
            }
            // The leader a replica named is gone (killed, stepping down): an election is
            // under way, and the replicas will name the next one soon.
            SessionEnd::Failed(error) if redirects_in_a_row > 0 => {
                info!(worker = %node, coordinator = %url, %error, "the named leader is out of reach: asking again shortly");
                redirects_in_a_row = 0;
                Pause::Election
            }
            SessionEnd::Failed(error) => {
                warn!(worker = %node, coordinator = %url, %error, "cannot connect to coordinator");
                // Try the other coordinators at once; back off after a full round.
                failures_in_round += 1;
                if failures_in_round >= urls.len() {
                    Pause::Backoff
                } else {
                    Pause::None
                }
            }
            SessionEnd::Lost(why) => {
                warn!(worker = %node, coordinator = %url, %why, "connection to coordinator lost: reconnecting");
                Pause::Backoff
            }
            SessionEnd::Drained(reason) => {
                info!(worker = %node, coordinator = %url, %reason, "coordinator drained this worker: reconnecting");
                Pause::Backoff
            }
            SessionEnd::LeaseLost => Pause::Backoff,
        };
        let delay = match pause {
            Pause::None => continue,
            Pause::Backoff => backoff.next_delay(),
            Pause::Election => jittered(ELECTION_RETRY),
        };
        failures_in_round = 0;
        debug!(worker = %node, delay_ms = delay.as_millis() as u64, "waiting before reconnecting");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = exit.cancelled() => return,
        }
    }
}

/// What to wait before the next attempt.
enum Pause {
    None,
    /// The growing delay of [`Backoff`]: something is wrong.
    Backoff,
    /// A short fixed delay: the coordinators are electing a leader.
    Election,
}

/// One stream: returns whether the worker got registered on it, and how it ended.
async fn session(launcher: &Launcher, url: &str, exit: &CancellationToken) -> (bool, SessionEnd) {
    let shared = &launcher.shared;
    let id = shared.new_session_id();
    let (tx, rx) = mpsc::unbounded_channel::<WorkerMessage>();
    // The Register snapshot is taken before dialling; runs finishing meanwhile are
    // listed in it anyway (finished-but-unreported runs are held too).
    let _ = tx.send(launcher.register_message());
    // The lease that Registered grants runs from here: no later than the coordinator's
    // view of it, which starts when the Register arrives.
    let register_sent = Instant::now();
    // Log bytes queued on this stream and not yet taken by the transport.
    let queued_log_bytes = Arc::new(AtomicUsize::new(0));
    let opened = tokio::select! {
        opened = open(url, shared.config.token.as_ref(), rx, queued_log_bytes.clone()) => opened,
        () = exit.cancelled() => return (false, SessionEnd::Exit),
    };
    let mut inbound = match opened {
        Ok(opened) => opened,
        Err(error) => return (false, SessionEnd::Failed(error)),
    };
    let first = tokio::select! {
        first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message()) => first,
        () = exit.cancelled() => return (false, SessionEnd::Exit),
    };
    let registered = match first {
        Err(_) => {
            return (
                false,
                SessionEnd::Failed(format!("no answer to Register within {REGISTER_TIMEOUT:?}")),
            );
        }
        Ok(Err(status)) => return (false, SessionEnd::Failed(describe_status(&status))),
        Ok(Ok(None)) => {
            return (
                false,
                SessionEnd::Failed(
                    "the coordinator closed the stream before answering Register".to_owned(),
                ),
            );
        }
        Ok(Ok(Some(CoordinatorMessage {
            kind: Some(Incoming::Registered(registered)),
        }))) => registered,
        Ok(Ok(Some(CoordinatorMessage {
            kind: Some(Incoming::NotLeader(not_leader)),
        }))) => {
            return (false, not_leader_end(not_leader));
        }
        Ok(Ok(Some(other))) => {
            return (
                false,
                SessionEnd::Failed(format!(
                    "protocol error: expected Registered or NotLeader first, got {}",
                    kind_name(other.kind.as_ref())
                )),
            );
        }
    };
    let (mut settings, lease_lost) =
        match shared.on_registered(id, url, &tx, &queued_log_bytes, &registered, register_sent) {
            Ok(registration) => registration,
            Err(highest) => {
                return (
                    false,
                    SessionEnd::NoLeader(format!(
                        "deposed leader: its epoch {} is older than epoch {highest} seen before",
                        registered.epoch
                    )),
                );
            }
        };
    info!(
        worker = %shared.config.node_id,
        coordinator = %url,
        coordinator_id = %registered.coordinator_id,
        epoch = registered.epoch,
        heartbeat_ms = settings.heartbeat.as_millis() as u64,
        lease_ttl_ms = settings.lease_ttl.as_millis() as u64,
        "registered with the leader"
    );
    let end = serve(
        launcher,
        Session {
            id,
            url,
            tx: &tx,
            queued_log_bytes: &queued_log_bytes,
        },
        &mut inbound,
        &mut settings,
        &lease_lost,
        exit,
    )
    .await;
    shared.unlink(id);
    if let SessionEnd::Exit = end {
        // Close our side; the coordinator sees the end of the stream after everything
        // queued before it, then ends its side.
        drop(tx);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
    }
    (true, end)
}

/// What identifies a stream to the shared state.
struct Session<'a> {
    id: u64,
    url: &'a str,
    tx: &'a mpsc::UnboundedSender<WorkerMessage>,
    queued_log_bytes: &'a Arc<AtomicUsize>,
}

/// The registered part of a session: heartbeats out, coordinator messages in.
async fn serve(
    launcher: &Launcher,
    session: Session<'_>,
    inbound: &mut Streaming<CoordinatorMessage>,
    settings: &mut SessionSettings,
    lease_lost: &CancellationToken,
    exit: &CancellationToken,
) -> SessionEnd {
    let shared = &launcher.shared;
    let mut heartbeat = heartbeat_timer(settings.heartbeat);
    loop {
        tokio::select! {
            biased;
            () = exit.cancelled() => return SessionEnd::Exit,
            () = lease_lost.cancelled() => return SessionEnd::LeaseLost,
            message = inbound.message() => {
                let message = match message {
                    Ok(Some(message)) => message,
                    Ok(None) => return SessionEnd::Lost("the coordinator closed the stream".to_owned()),
                    Err(status) => return SessionEnd::Lost(describe_status(&status)),
                };
                // Only LeaseRenewed extends the lease (below); nothing is acted on once the
                // lease is gone.
                if !shared.lease_held(session.id) {
                    return SessionEnd::LeaseLost;
                }
                match message.kind {
                    Some(Incoming::Registered(registered)) => {
                        // A repeated Registered is a keep-alive; it may carry new settings.
                        let renewed = shared.on_registered(
                            session.id,
                            session.url,
                            session.tx,
                            session.queued_log_bytes,
                            &registered,
                            Instant::now(),
                        );
                        match renewed {
                            Ok((new, _)) => {
                                if new.heartbeat != settings.heartbeat {
                                    heartbeat = heartbeat_timer(new.heartbeat);
                                }
                                *settings = new;
                            }
                            Err(highest) => {
                                return SessionEnd::NoLeader(format!(
                                    "coordinator went back to epoch {}, older than {highest}",
                                    registered.epoch
                                ));
                            }
                        }
                    }
                    Some(Incoming::Assign(assign)) => {
                        let run_id = assign.run_id;
                        if let AssignDecision::Duplicate = launcher.on_assign(session.tx, assign) {
                            warn!(run_id, worker = %shared.config.node_id, "assign for a run already executing here: ignored");
                        }
                    }
                    Some(Incoming::Cancel(cancel)) => shared.on_cancel(cancel.run_id, cancel.reason),
                    Some(Incoming::LeaseRenewed(renewed)) => {
                        // A deposed leader's renewal renews nothing.
                        if let Err(highest) = shared.observe_epoch(renewed.epoch) {
                            return SessionEnd::NoLeader(format!(
                                "deposed leader: lease renewed with epoch {}, older than {highest}",
                                renewed.epoch
                            ));
                        }
                        if !shared.renew_lease(session.id, renewed.seq) {
                            return SessionEnd::LeaseLost;
                        }
                    }
                    Some(Incoming::Drain(drain)) => return SessionEnd::Drained(drain.reason),
                    Some(Incoming::NotLeader(not_leader)) => return not_leader_end(not_leader),
                    None => debug!(worker = %shared.config.node_id, "message of a kind this worker does not know: ignored"),
                }
            }
            _ = heartbeat.tick() => {
                let _ = session.tx.send(shared.heartbeat_message());
            }
        }
    }
}

/// Dials `url` and opens the stream whose messages come from `rx`; the transport takes
/// the bytes of each log chunk it sends off `queued_log_bytes`.
async fn open(
    url: &str,
    token: Option<&BearerToken>,
    rx: mpsc::UnboundedReceiver<WorkerMessage>,
    queued_log_bytes: Arc<AtomicUsize>,
) -> Result<Streaming<CoordinatorMessage>, String> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| format!("invalid URL: {error}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
        .map_err(|error| describe_error(&error))?;
    let outbound = UnboundedReceiverStream::new(rx).map(move |message: WorkerMessage| {
        let log_bytes = protocol::log_bytes(&message);
        if log_bytes > 0 {
            queued_log_bytes.fetch_sub(log_bytes, Ordering::Relaxed);
        }
        message
    });
    let mut client = WorkerServiceClient::new(channel);
    let mut request = tonic::Request::new(outbound);
    if let Some(BearerToken(token)) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the worker token is not a valid header value".to_owned())?;
        request.metadata_mut().insert("authorization", value);
    }
    let response = tokio::time::timeout(REGISTER_TIMEOUT, client.connect(request))
        .await
        .map_err(|_| format!("no answer to Connect within {REGISTER_TIMEOUT:?}"))?
        .map_err(|status| describe_status(&status))?;
    Ok(response.into_inner())
}

fn heartbeat_timer(period: Duration) -> tokio::time::Interval {
    let mut timer = tokio::time::interval_at(Instant::now() + period, period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}

fn not_leader_end(not_leader: NotLeader) -> SessionEnd {
    if not_leader.leader_url.is_empty() {
        SessionEnd::NoLeader("the coordinator is not the leader and knows no leader yet".to_owned())
    } else {
        SessionEnd::Redirect(not_leader.leader_url)
    }
}

fn kind_name(kind: Option<&Incoming>) -> &'static str {
    match kind {
        Some(Incoming::Registered(_)) => "Registered",
        Some(Incoming::Assign(_)) => "Assign",
        Some(Incoming::Cancel(_)) => "Cancel",
        Some(Incoming::Drain(_)) => "Drain",
        Some(Incoming::NotLeader(_)) => "NotLeader",
        Some(Incoming::LeaseRenewed(_)) => "LeaseRenewed",
        None => "a message of unknown kind",
    }
}

fn describe_status(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}

/// An error with its causes ("transport error: tcp connect error: Connection refused").
fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
