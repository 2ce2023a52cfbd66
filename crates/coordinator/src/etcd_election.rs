//! Leadership through an etcd election (DESIGN §1): the coordinators campaign for
//! [`ELECTION_NAME`] with a lease of the configured TTL; the winner's key `create_revision`
//! is the fencing epoch.
//!
//! The one rule that matters here: **a leader that cannot prove its lease is alive steps
//! down at once**. etcd expires a lease TTL seconds after the last renewal it saw, so a
//! leader must stop leading no later than TTL after it *sent* the last keep-alive etcd
//! confirmed — never after etcd tells it so (it may never hear from etcd again). Concretely,
//! `lost` is cancelled when
//! - no confirmed keep-alive is younger than the TTL (measured from the request's sending),
//! - etcd answers a keep-alive with TTL 0 (the lease was revoked or has expired),
//! - no endpoint accepts a new keep-alive stream after the current one broke (etcd is lost),
//! - the leader key is deleted (resigned or revoked by someone else: watched),
//! - or the [`EtcdElection`] is dropped (its keep-alives stop with it).
//!
//! Every endpoint gets its own lazily connected client, and requests go to the endpoint
//! that answered last, moving to the next on failure. The crate's own multi-endpoint client
//! balances each request across all endpoints at random, and a dead member's connection is
//! never removed from the balance: a third of the requests (and of the long-lived streams)
//! would fail while one member of three is down. Pinning an endpoint and failing over
//! ourselves keeps working, and tells us when *every* endpoint is gone.
//!
//! No request timeout is set on the clients (`ConnectOptions::with_timeout`): tonic applies
//! it to every call, and a `Campaign` call legitimately waits for as long as another node
//! leads. Short calls are bounded here with [`REQUEST_TIMEOUT`] per endpoint instead, which
//! also covers the time spent waiting for a connection.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, LeaderKey, ResignOptions, WatchOptions,
    WatchStream,
};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::election::{Election, ElectionError, LeaderInfo, Leadership};

/// The election every coordinator of a cluster campaigns in.
pub const ELECTION_NAME: &str = "cronfleet/leader";

/// Bound on one short request (grant, get, leader, resign, revoke, opening a watch) to one
/// endpoint. A healthy member answers in milliseconds; a member whose cluster is electing a
/// raft leader can take about a second.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Bound on opening a TCP connection to a member: a refused connection fails at once, an
/// unreachable host must not hold a request for the kernel's minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// HTTP/2 pings detect a member that vanished without closing the connection (a partition,
/// a frozen process) under a long-waiting `Campaign` call. etcd 3.4 answers pings sent more
/// often than `--grpc-keepalive-min-time` (5 s) with GOAWAY "too_many_pings", which would
/// cut every stream of the connection: stay well above it.
const PING_INTERVAL: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause before re-opening the watch of the leader key after it broke.
const WATCH_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Leadership elected through etcd. See the module docs for when it steps down.
///
/// Dropping it stops its keep-alives (like a crash: the lease then expires after the TTL)
/// and cancels the `lost` token of the leadership it holds.
pub struct EtcdElection {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    /// One client per endpoint, index for index.
    clients: Vec<Client>,
    /// The endpoint that answered last: where requests go first.
    preferred: AtomicUsize,
    me: LeaderInfo,
    /// The leader key's value: `{"node_id": …, "url": …}`.
    value: String,
    ttl: Duration,
    /// Cancelled when the [`EtcdElection`] is dropped: background tasks stop without
    /// cleaning up, as a crashed process would.
    closed: CancellationToken,
    /// The leadership won last, for `resign`.
    won: Mutex<Option<Won>>,
}

/// One lease and its keep-alives: a candidacy, and if it wins, a term.
#[derive(Debug)]
struct Term {
    lease: i64,
    /// The leadership's `lost`; cancelling it also ends the keep-alives and the watch.
    lost: CancellationToken,
    /// Set by `resign`, which resigns and revokes itself (in that order); otherwise the
    /// keep-alive task revokes the lease when the term ends, so that its key goes at once.
    resigning: AtomicBool,
}

struct Won {
    epoch: i64,
    key: LeaderKey,
    term: Arc<Term>,
}

impl EtcdElection {
    /// A participant in the election at `endpoints` (`http://host:port`, one per member),
    /// proclaiming `me` when it leads, with leases of `ttl` (whole seconds, rounded up; etcd
    /// grants at least 2 s).
    ///
    /// Does no I/O: a coordinator may start while etcd is still down; `campaign` then fails
    /// and is retried. Fails only on an empty or malformed endpoint list.
    pub async fn connect(
        endpoints: Vec<String>,
        me: LeaderInfo,
        ttl: Duration,
    ) -> Result<EtcdElection, ElectionError> {
        if endpoints.is_empty() {
            return Err(ElectionError::Backend("no etcd endpoint given".into()));
        }
        if ttl.is_zero() {
            return Err(ElectionError::Backend(
                "the election TTL must be positive".into(),
            ));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(PING_INTERVAL, PING_TIMEOUT)
            // etcd 3.4 (default `--grpc-keepalive-min-time`, no permit-without-stream)
            // counts a ping on a connection without streams as abuse.
            .with_keep_alive_while_idle(false)
            // A member cut off from its quorum refuses at once (and ends our streams)
            // instead of holding requests it cannot serve: we move on to another member.
            .with_require_leader(true);
        let mut clients = Vec::with_capacity(endpoints.len());
        for endpoint in &endpoints {
            let client = Client::connect([endpoint.as_str()], Some(options.clone()))
                .await
                .map_err(|error| {
                    ElectionError::Backend(format!("etcd endpoint {endpoint:?}: {error}"))
                })?;
            clients.push(client);
        }
        let value = serde_json::json!({ "node_id": me.node_id, "url": me.url }).to_string();
        Ok(EtcdElection {
            inner: Arc::new(Inner {
                endpoints,
                clients,
                preferred: AtomicUsize::new(0),
                me,
                value,
                ttl,
                closed: CancellationToken::new(),
                won: Mutex::new(None),
            }),
        })
    }

    /// The etcd endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The lease TTL asked for (etcd may grant more).
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }
}

impl fmt::Debug for EtcdElection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdElection")
            .field("endpoints", &self.inner.endpoints)
            .field("me", &self.inner.me)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdElection {
    fn drop(&mut self) {
        self.inner.closed.cancel();
        if let Some(won) = self.inner.won_slot().take() {
            won.term.lost.cancel();
        }
    }
}

#[async_trait]
impl Election for EtcdElection {
    async fn campaign(&self) -> Result<Leadership, ElectionError> {
        let inner = &self.inner;
        // etcd counts in whole seconds: round up, never grant less than asked.
        let ttl_secs = inner.ttl.as_secs() + u64::from(inner.ttl.subsec_nanos() > 0);
        let ttl_secs = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
        let sent = Instant::now();
        let (grant, endpoint) = inner
            .on_any("grant a lease", |mut client| async move {
                client.lease_grant(ttl_secs, None).await
            })
            .await?;
        let granted = u64::try_from(grant.ttl())
            .ok()
            .filter(|&secs| secs > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                ElectionError::Backend(format!(
                    "etcd granted no lease: TTL {} {}",
                    grant.ttl(),
                    grant.error()
                ))
            })?;
        let term = Arc::new(Term {
            lease: grant.id(),
            lost: CancellationToken::new(),
            resigning: AtomicBool::new(false),
        });
        // Until leadership is handed out, any way out of here (an error, or the caller
        // dropping this future) ends the candidacy: the keep-alive task then revokes the
        // lease, which deletes the candidate key.
        let candidacy = term.lost.clone().drop_guard();
        tokio::spawn(keep_alive(
            Arc::clone(inner),
            Arc::clone(&term),
            granted,
            sent + granted,
            endpoint,
        ));

        let mut client = inner.clients[endpoint].clone();
        let campaign = client.campaign(ELECTION_NAME, inner.value.clone(), term.lease);
        let won = tokio::select! {
            won = campaign => won.map_err(|error| {
                ElectionError::Backend(format!(
                    "campaign through {}: {error}",
                    inner.endpoints[endpoint]
                ))
            })?,
            () = term.lost.cancelled() => {
                return Err(ElectionError::Backend(
                    "lost the lease while campaigning".into(),
                ));
            }
        };
        let key = won.leader().cloned().ok_or_else(|| {
            ElectionError::Backend("etcd answered the campaign without a leader key".into())
        })?;

        // The key may have gone between etcd electing us and this point (the lease revoked
        // or the key deleted by someone else): confirm it, and watch for its deletion from
        // right after the confirmation, so that no deletion goes unseen. (A deletion before
        // the watch is registered is still reported, by etcd's catch-up of lagging watchers
        // within ~100 ms.)
        let (watch_from, confirmed) = inner.read_key(&key).await?;
        if !confirmed || key.lease() != term.lease {
            return Err(ElectionError::Backend(
                "the leader key was gone as soon as it was won".into(),
            ));
        }
        tokio::spawn(watch_leader_key(
            Arc::clone(inner),
            Arc::clone(&term),
            key.clone(),
            watch_from,
        ));

        let epoch = key.rev();
        *inner.won_slot() = Some(Won {
            epoch,
            key,
            term: Arc::clone(&term),
        });
        candidacy.disarm();
        info!(epoch, lease = term.lease, ttl = ?granted, "won the etcd election");
        Ok(Leadership {
            epoch,
            lost: term.lost.clone(),
        })
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>, ElectionError> {
        let value = self
            .inner
            .on_any("ask etcd for the leader", |mut client| async move {
                match client.leader(ELECTION_NAME).await {
                    Ok(answer) => Ok(answer.kv().map(|kv| kv.value().to_vec())),
                    // etcd 3.4 reports an election without a leader as an error (gRPC
                    // Unknown): it is a state, not a failure.
                    Err(etcd_client::Error::GRpcStatus(status))
                        if status.message().contains("election: no leader") =>
                    {
                        Ok(None)
                    }
                    Err(error) => Err(error),
                }
            })
            .await?
            .0;
        value.map(|value| parse_leader(&value)).transpose()
    }

    async fn coordinators(&self) -> Result<Vec<LeaderInfo>, ElectionError> {
        // Every candidate's key lives under the election's prefix while it campaigns; the
        // oldest (lowest create revision) is the leader's.
        let prefix = format!("{ELECTION_NAME}/");
        let (answer, _) = self
            .inner
            .on_any("list the candidates", |mut client| {
                let prefix = prefix.clone();
                async move {
                    client
                        .get(prefix, Some(GetOptions::new().with_prefix()))
                        .await
                }
            })
            .await?;
        let mut keys: Vec<_> = answer.kvs().iter().collect();
        keys.sort_by_key(|kv| kv.create_revision());
        keys.iter().map(|kv| parse_leader(kv.value())).collect()
    }

    async fn resign(&self, leadership: &Leadership) -> Result<(), ElectionError> {
        let won = {
            let mut slot = self.inner.won_slot();
            match slot.as_ref() {
                Some(won) if won.epoch == leadership.epoch => slot.take(),
                _ => None,
            }
        };
        let Some(won) = won else {
            // Not (or no longer) ours to give back: stopping is all there is to do; the
            // keep-alive task of that term revokes its lease.
            leadership.lost.cancel();
            return Ok(());
        };
        won.term.resigning.store(true, Ordering::SeqCst);
        // Stop leading before anybody else can start.
        won.term.lost.cancel();
        let key = won.key.clone();
        let resigned = self
            .inner
            .on_any("resign", |mut client| {
                let key = key.clone();
                async move {
                    client
                        .resign(Some(ResignOptions::new().with_leader(key)))
                        .await
                }
            })
            .await;
        // Revoking removes the lease itself (and the key, had resigning failed).
        let revoked = self.inner.revoke(won.term.lease).await;
        info!(epoch = won.epoch, "resigned from the etcd election");
        resigned.and(revoked).map(|_| ())
    }
}

impl Inner {
    fn won_slot(&self) -> std::sync::MutexGuard<'_, Option<Won>> {
        self.won.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `op` against the endpoints, starting with the preferred one, until one answers
    /// within [`REQUEST_TIMEOUT`]; returns the answer and that endpoint's index. `op` turns
    /// the answers that are states rather than failures into `Ok` itself.
    async fn on_any<T, F, Fut>(&self, what: &str, op: F) -> Result<(T, usize), ElectionError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let first = self.preferred.load(Ordering::Relaxed);
        let count = self.clients.len();
        let mut failures = Vec::with_capacity(count);
        for index in (0..count).map(|i| (first + i) % count) {
            match timeout(REQUEST_TIMEOUT, op(self.clients[index].clone())).await {
                Ok(Ok(answer)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((answer, index));
                }
                Ok(Err(error)) => failures.push(format!("{}: {error}", self.endpoints[index])),
                Err(_) => failures.push(format!(
                    "{}: no answer within {REQUEST_TIMEOUT:?}",
                    self.endpoints[index]
                )),
            }
        }
        Err(ElectionError::Backend(format!(
            "cannot {what}: {}",
            failures.join("; ")
        )))
    }

    /// Whether `key` still exists as created (same create revision), and the revision the
    /// answer was read at.
    async fn read_key(&self, key: &LeaderKey) -> Result<(i64, bool), ElectionError> {
        let name = key.key().to_vec();
        let (answer, _) = self
            .on_any("read the leader key", |mut client| {
                let name = name.clone();
                async move { client.get(name, None).await }
            })
            .await?;
        let revision = answer.header().map_or(0, |header| header.revision());
        let exists = answer
            .kvs()
            .first()
            .is_some_and(|kv| kv.create_revision() == key.rev());
        Ok((revision, exists))
    }

    async fn revoke(&self, lease: i64) -> Result<(), ElectionError> {
        self.on_any("revoke the lease", |mut client| async move {
            match client.lease_revoke(lease).await {
                Ok(_) => Ok(()),
                // Already expired or revoked: what we wanted.
                Err(etcd_client::Error::GRpcStatus(status))
                    if status.code() == tonic::Code::NotFound =>
                {
                    Ok(())
                }
                Err(error) => Err(error),
            }
        })
        .await
        .map(|_| ())
    }
}

fn parse_leader(value: &[u8]) -> Result<LeaderInfo, ElectionError> {
    let invalid = || {
        ElectionError::Backend(format!(
            "the leader key holds {:?}, not {{\"node_id\": …, \"url\": …}}",
            String::from_utf8_lossy(value)
        ))
    };
    let json: serde_json::Value = serde_json::from_slice(value).map_err(|_| invalid())?;
    let field = |name: &str| {
        json.get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(invalid)
    };
    Ok(LeaderInfo {
        node_id: field("node_id")?,
        url: field("url")?,
    })
}

/// Why the keep-alives of a term ended.
enum KeepAliveEnd {
    /// The lease can no longer be shown to be alive.
    Lost(String),
    /// The term ended for another reason (resigned, key deleted, candidacy abandoned).
    Ended,
    /// The election was dropped.
    Closed,
}

/// Keeps `term`'s lease alive until the term ends, cancels `lost` when it cannot, and
/// revokes the lease when the term ends (unless `resign` does it, or the election was
/// dropped: a crash revokes nothing).
async fn keep_alive(
    inner: Arc<Inner>,
    term: Arc<Term>,
    granted: Duration,
    expires: Instant,
    endpoint: usize,
) {
    match keep_alive_until_lost(&inner, &term, granted, expires, endpoint).await {
        KeepAliveEnd::Closed => return,
        KeepAliveEnd::Lost(why) => {
            warn!(lease = term.lease, "etcd lease lost, stepping down: {why}");
            term.lost.cancel();
        }
        KeepAliveEnd::Ended => {}
    }
    // Dropping the election cancels `closed` before the term's `lost`, but this task may
    // see `lost` first: a dropped (crashed) election must still revoke nothing.
    if inner.closed.is_cancelled() {
        return;
    }
    if !term.resigning.load(Ordering::SeqCst)
        && let Err(error) = inner.revoke(term.lease).await
    {
        // It expires by itself within the TTL.
        debug!(lease = term.lease, %error, "could not revoke an ended lease");
    }
}

/// Sends a keep-alive every third of the TTL. `expires` is when etcd may expire the lease
/// at the earliest: the sending time of the last confirmed keep-alive plus the TTL.
async fn keep_alive_until_lost(
    inner: &Inner,
    term: &Term,
    granted: Duration,
    mut expires: Instant,
    mut endpoint: usize,
) -> KeepAliveEnd {
    let interval = granted / 3;
    // A stream that takes longer than this to open is treated as a failure of that
    // endpoint, so that the others still get their turn before the lease expires.
    let attempt_timeout = (granted / 4).max(Duration::from_millis(250));
    let count = inner.clients.len();
    loop {
        // (Re)open the keep-alive stream: every endpoint once, the current one first (it
        // may just have sent GOAWAY). Opening sends a keep-alive and waits for its answer.
        let mut opened = None;
        let mut failures = Vec::new();
        for index in (0..count).map(|i| (endpoint + i) % count) {
            let sent = Instant::now();
            if sent >= expires {
                return KeepAliveEnd::Lost(format!(
                    "no keep-alive confirmed within the TTL ({granted:?}); {}",
                    failures.join("; ")
                ));
            }
            let mut client = inner.clients[index].clone();
            let attempt = tokio::select! {
                () = inner.closed.cancelled() => return KeepAliveEnd::Closed,
                () = term.lost.cancelled() => return KeepAliveEnd::Ended,
                attempt = timeout_at(
                    expires.min(sent + attempt_timeout),
                    client.lease_keep_alive(term.lease),
                ) => attempt,
            };
            match attempt {
                Ok(Ok(stream)) => {
                    expires = expires.max(sent + granted);
                    endpoint = index;
                    opened = Some(stream);
                    break;
                }
                // The crate's one answer to a keep-alive etcd answered with TTL 0.
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(why))) => {
                    return KeepAliveEnd::Lost(format!(
                        "etcd refused the keep-alive through {}: {why}",
                        inner.endpoints[index]
                    ));
                }
                Ok(Err(error)) => failures.push(format!("{}: {error}", inner.endpoints[index])),
                Err(_) => failures.push(format!("{}: no answer in time", inner.endpoints[index])),
            }
        }
        let Some((mut keeper, mut stream)) = opened else {
            return KeepAliveEnd::Lost(format!(
                "no etcd endpoint renews the lease: {}",
                failures.join("; ")
            ));
        };
        if !failures.is_empty() {
            debug!(
                lease = term.lease,
                endpoint = %inner.endpoints[endpoint],
                "keep-alives failed over: {}",
                failures.join("; ")
            );
        }
        inner.preferred.store(endpoint, Ordering::Relaxed);

        // Answers come in the order of the requests: each confirms the renewal made when
        // the oldest unanswered request was sent.
        let mut unanswered: VecDeque<Instant> = VecDeque::new();
        let mut next_send = Instant::now() + interval;
        loop {
            tokio::select! {
                () = inner.closed.cancelled() => return KeepAliveEnd::Closed,
                () = term.lost.cancelled() => return KeepAliveEnd::Ended,
                () = sleep_until(expires) => {
                    return KeepAliveEnd::Lost(format!(
                        "no keep-alive confirmed within the TTL ({granted:?}) through {}",
                        inner.endpoints[endpoint]
                    ));
                }
                () = sleep_until(next_send) => {
                    let now = Instant::now();
                    next_send = (next_send + interval).max(now);
                    if keeper.keep_alive().await.is_err() {
                        break;
                    }
                    unanswered.push_back(now);
                }
                answer = stream.message() => match answer {
                    Ok(Some(answer)) if answer.ttl() > 0 => {
                        if let Some(sent) = unanswered.pop_front() {
                            let ttl = Duration::from_secs(answer.ttl().unsigned_abs());
                            expires = expires.max(sent + ttl);
                        }
                    }
                    Ok(Some(_)) => {
                        return KeepAliveEnd::Lost(
                            "etcd answered a keep-alive with TTL 0: the lease expired or \
                             was revoked"
                                .into(),
                        );
                    }
                    // The stream broke (member gone, GOAWAY): open another one.
                    Ok(None) | Err(_) => break,
                },
            }
        }
    }
}

/// Cancels the term's `lost` as soon as its leader key is deleted (resigned or revoked
/// elsewhere, or expired). The watch only makes the news faster: losing etcd is detected
/// by the keep-alives, so a watch that cannot be re-opened is simply retried.
async fn watch_leader_key(inner: Arc<Inner>, term: Arc<Term>, key: LeaderKey, from: i64) {
    let mut endpoint = inner.preferred.load(Ordering::Relaxed);
    let mut from = from;
    loop {
        let mut client = inner.clients[endpoint].clone();
        let options = WatchOptions::new().with_start_revision(from);
        let opened = tokio::select! {
            () = inner.closed.cancelled() => return,
            () = term.lost.cancelled() => return,
            opened = timeout(REQUEST_TIMEOUT, client.watch(key.key(), Some(options))) => opened,
        };
        // A watch that cannot be opened is retried on the next endpoint.
        if let Ok(Ok(mut stream)) = opened {
            match watch_until_deleted(&inner, &term, &key, &mut stream).await {
                WatchEnd::Deleted => {
                    warn!(
                        epoch = key.rev(),
                        "the leader key was deleted, stepping down"
                    );
                    term.lost.cancel();
                    return;
                }
                WatchEnd::Ended => return,
                WatchEnd::Compacted => {
                    // History before `from` is gone: read the key again instead.
                    match inner.read_key(&key).await {
                        Ok((_, false)) => {
                            warn!(epoch = key.rev(), "the leader key is gone, stepping down");
                            term.lost.cancel();
                            return;
                        }
                        Ok((revision, true)) => from = revision + 1,
                        Err(_) => {}
                    }
                }
                WatchEnd::Broken => {}
            }
        }
        endpoint = (endpoint + 1) % inner.clients.len();
        tokio::select! {
            () = inner.closed.cancelled() => return,
            () = term.lost.cancelled() => return,
            () = tokio::time::sleep(WATCH_RETRY_PAUSE) => {}
        }
    }
}

enum WatchEnd {
    Deleted,
    Ended,
    Compacted,
    Broken,
}

async fn watch_until_deleted(
    inner: &Inner,
    term: &Term,
    key: &LeaderKey,
    stream: &mut WatchStream,
) -> WatchEnd {
    loop {
        let answer = tokio::select! {
            () = inner.closed.cancelled() => return WatchEnd::Ended,
            () = term.lost.cancelled() => return WatchEnd::Ended,
            answer = stream.message() => answer,
        };
        let answer = match answer {
            Ok(Some(answer)) => answer,
            Ok(None) | Err(_) => return WatchEnd::Broken,
        };
        if answer
            .events()
            .iter()
            .any(|event| event.event_type() == EventType::Delete)
        {
            return WatchEnd::Deleted;
        }
        if answer.canceled() {
            // Compacted history, or (with require-leader) a member that lost its raft leader.
            debug!(
                epoch = key.rev(),
                reason = answer.cancel_reason(),
                "watch of the leader key cancelled"
            );
            return if answer.compact_revision() > 0 {
                WatchEnd::Compacted
            } else {
                WatchEnd::Broken
            };
        }
    }
}
