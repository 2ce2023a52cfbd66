//! A conformance harness for the worker protocol: an in-test coordinator that speaks
//! `proto/cronfleet/v1/worker.proto` over real gRPC on 127.0.0.1, records everything a
//! worker sends (in order, with arrival times) and sends whatever a test tells it to.
//!
//! It plays a leader (answers `Register` with `Registered`, each `Heartbeat` with
//! `LeaseRenewed`) or a non-leader (answers `NotLeader` and closes), can go silent
//! (keeps the stream open, sends nothing) and can drop the stream. It knows nothing of the
//! worker SDK, so the end-to-end tests of the `cronfleet worker` binary use it too
//! (`tests/tests/worker_process.rs` includes this file).

#![allow(dead_code)] // each test binary uses a different part

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cronfleet_proto::v1::coordinator_message::Kind as ToWorker;
use cronfleet_proto::v1::worker_message::Kind as FromWorker;
use cronfleet_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use cronfleet_proto::v1::{
    Assign, Cancel, CoordinatorMessage, LeaseRenewed, NotLeader, Register, Registered, RunFinished,
    RunOutcome, RunStarted, WorkerMessage,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// How long a test waits for something the worker should send.
pub const WAIT: Duration = Duration::from_secs(10);

/// How the harness answers.
#[derive(Debug, Clone)]
pub enum Role {
    /// Registers workers with these settings.
    Leader {
        coordinator_id: String,
        epoch: i64,
        lease_ttl_ms: u32,
        heartbeat_interval_ms: u32,
    },
    /// Answers `NotLeader` with this URL (empty: no leader known).
    NotLeader { leader_url: String },
}

impl Role {
    /// A leader at `epoch` with a 1 s heartbeat and a 5 s lease.
    pub fn leader(epoch: i64) -> Role {
        Role::Leader {
            coordinator_id: format!("harness-{epoch}"),
            epoch,
            lease_ttl_ms: 5_000,
            heartbeat_interval_ms: 1_000,
        }
    }

    /// A leader with the given heartbeat and lease settings.
    pub fn leader_with(epoch: i64, heartbeat_interval_ms: u32, lease_ttl_ms: u32) -> Role {
        Role::Leader {
            coordinator_id: format!("harness-{epoch}"),
            epoch,
            lease_ttl_ms,
            heartbeat_interval_ms,
        }
    }
}

/// Something the harness saw.
#[derive(Debug, Clone)]
pub enum Event {
    /// A worker opened stream number `conn`.
    Connected { conn: u64 },
    /// A message on stream `conn`.
    Message {
        conn: u64,
        at: Instant,
        kind: FromWorker,
    },
    /// Stream `conn` ended (the worker closed it or the transport broke).
    Disconnected { conn: u64 },
}

type Sender = mpsc::UnboundedSender<Result<CoordinatorMessage, Status>>;

struct Shared {
    role: Mutex<Role>,
    silent: AtomicBool,
    /// Heartbeats go unanswered (everything else as usual).
    ignore_heartbeats: AtomicBool,
    /// Answers heartbeats as a coordinator older than `LeaseRenewed.seq` did (seq 0).
    without_seq: AtomicBool,
    next_conn: AtomicU64,
    /// The stream of the registered worker, to send to.
    current: Mutex<Option<(u64, Sender)>>,
    /// Streams whose `Register` came while silent: answered when the harness speaks again.
    unanswered: Mutex<Vec<(u64, Sender)>>,
    events: mpsc::UnboundedSender<Event>,
}

struct Service {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl WorkerService for Service {
    type ConnectStream = UnboundedReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = self.shared.clone();
        let conn = shared.next_conn.fetch_add(1, Ordering::SeqCst);
        let _ = shared.events.send(Event::Connected { conn });
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while let Ok(Some(message)) = inbound.message().await {
                let Some(kind) = message.kind else { continue };
                let at = Instant::now();
                answer(&shared, conn, &kind, &mut tx);
                // Recorded after the answer, so a test that saw `Register` can send to the
                // registered stream at once.
                let _ = shared.events.send(Event::Message { conn, at, kind });
            }
            let mut current = shared.current.lock().unwrap();
            if current.as_ref().is_some_and(|(id, _)| *id == conn) {
                *current = None;
            }
            drop(current);
            let _ = shared.events.send(Event::Disconnected { conn });
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

/// What a coordinator in the harness's role answers to `kind` on stream `conn`; `tx` is
/// dropped to close the stream.
fn answer(shared: &Shared, conn: u64, kind: &FromWorker, tx: &mut Option<Sender>) {
    if shared.silent.load(Ordering::SeqCst) {
        if let (FromWorker::Register(_), Some(tx)) = (kind, &tx) {
            shared.unanswered.lock().unwrap().push((conn, tx.clone()));
        }
        return;
    }
    match kind {
        FromWorker::Register(_) => {
            let stays_open = tx
                .as_ref()
                .is_some_and(|open| answer_register(shared, conn, open));
            if !stays_open {
                *tx = None; // NotLeader: close the stream
            }
        }
        FromWorker::Heartbeat(_) if shared.ignore_heartbeats.load(Ordering::SeqCst) => {}
        FromWorker::Heartbeat(heartbeat) => {
            let role = shared.role.lock().unwrap().clone();
            if let (Some(tx), Role::Leader { epoch, .. }) = (&tx, role) {
                let seq = if shared.without_seq.load(Ordering::SeqCst) {
                    0
                } else {
                    heartbeat.seq
                };
                let _ = tx.send(Ok(message_of(ToWorker::LeaseRenewed(LeaseRenewed {
                    epoch,
                    seq,
                }))));
            }
        }
        _ => {}
    }
}

/// Answers a `Register` on stream `conn` as the role says; `false` when the stream must
/// close (`NotLeader`).
fn answer_register(shared: &Shared, conn: u64, tx: &Sender) -> bool {
    let role = shared.role.lock().unwrap().clone();
    match role {
        Role::NotLeader { leader_url } => {
            let _ = tx.send(Ok(message_of(ToWorker::NotLeader(NotLeader {
                leader_url,
                leader_node_id: String::new(),
            }))));
            false
        }
        Role::Leader {
            coordinator_id,
            epoch,
            lease_ttl_ms,
            heartbeat_interval_ms,
        } => {
            let _ = tx.send(Ok(message_of(ToWorker::Registered(Registered {
                coordinator_id,
                epoch,
                lease_ttl_ms,
                heartbeat_interval_ms,
                log_limit_bytes: 0,
            }))));
            *shared.current.lock().unwrap() = Some((conn, tx.clone()));
            true
        }
    }
}

fn message_of(kind: ToWorker) -> CoordinatorMessage {
    CoordinatorMessage { kind: Some(kind) }
}

/// An in-test coordinator on a free loopback port.
pub struct Harness {
    addr: SocketAddr,
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<Event>,
    server: JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Harness {
    /// Starts serving on 127.0.0.1:0.
    pub async fn start(role: Role) -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let (events_tx, events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            role: Mutex::new(role),
            silent: AtomicBool::new(false),
            ignore_heartbeats: AtomicBool::new(false),
            without_seq: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            current: Mutex::new(None),
            unanswered: Mutex::new(Vec::new()),
            events: events_tx,
        });
        let service = WorkerServiceServer::new(Service {
            shared: shared.clone(),
        });
        let server = tokio::spawn(async move {
            let _ = Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        Harness {
            addr,
            shared,
            events,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes how later `Register`s are answered.
    pub fn set_role(&self, role: Role) {
        *self.shared.role.lock().unwrap() = role;
    }

    /// Silent: keep every stream open but send nothing at all (no `Registered`, no
    /// `LeaseRenewed`; [`Harness::send`] is dropped too). Speaking again answers the
    /// `Register`s that came meanwhile.
    pub fn set_silent(&self, silent: bool) {
        self.shared.silent.store(silent, Ordering::SeqCst);
        if !silent {
            let unanswered = std::mem::take(&mut *self.shared.unanswered.lock().unwrap());
            for (conn, tx) in unanswered {
                if !tx.is_closed() {
                    answer_register(&self.shared, conn, &tx);
                }
            }
        }
    }

    /// Leaves heartbeats unanswered (no `LeaseRenewed`) while other messages still go
    /// out: a coordinator whose answers are lost, or one that forgot the worker.
    pub fn set_ignore_heartbeats(&self, ignore: bool) {
        self.shared
            .ignore_heartbeats
            .store(ignore, Ordering::SeqCst);
    }

    /// Answers heartbeats without their seq, as a coordinator older than it does.
    pub fn set_without_seq(&self, without: bool) {
        self.shared.without_seq.store(without, Ordering::SeqCst);
    }

    /// Sends `kind` on the registered worker's stream.
    ///
    /// # Panics
    ///
    /// When no worker is registered.
    pub fn send(&self, kind: ToWorker) {
        if self.shared.silent.load(Ordering::SeqCst) {
            return;
        }
        let current = self.shared.current.lock().unwrap();
        let (_, tx) = current.as_ref().expect("a registered worker to send to");
        tx.send(Ok(message_of(kind)))
            .expect("the worker's stream is open");
    }

    /// Sends `kind` on the registered worker's stream if there is one still open.
    pub fn send_if_open(&self, kind: ToWorker) {
        if let Some((_, tx)) = self.shared.current.lock().unwrap().as_ref() {
            let _ = tx.send(Ok(message_of(kind)));
        }
    }

    /// Sends an `Assign`.
    pub fn assign(&self, assign: Assign) {
        self.send(ToWorker::Assign(assign));
    }

    /// Sends a `Cancel`.
    pub fn cancel(&self, run_id: i64, reason: &str) {
        self.send(ToWorker::Cancel(Cancel {
            run_id,
            reason: reason.to_owned(),
        }));
    }

    /// Ends the registered worker's stream with an error, as a crashed or restarted
    /// coordinator would.
    pub fn drop_connection(&self) {
        if let Some((_, tx)) = self.shared.current.lock().unwrap().take() {
            let _ = tx.send(Err(Status::unavailable("harness dropped the stream")));
        }
    }

    /// Stops accepting connections and drops the registered worker's stream.
    pub fn stop(&self) {
        self.drop_connection();
        self.server.abort();
    }

    /// The next event, within [`WAIT`].
    pub async fn next_event(&mut self) -> Event {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("the worker did nothing within the wait")
            .expect("harness event channel open")
    }

    /// Skips events until `pick` returns `Some` (within `within`), and returns it.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv()).await;
            match event {
                Ok(Some(event)) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                    seen.push(describe(&event));
                }
                Ok(None) => panic!("harness closed while waiting for {what}"),
                Err(_) => panic!(
                    "no {what} within {within:?}; saw instead: {}",
                    seen.join(", ")
                ),
            }
        }
    }

    /// The next message of the worker that is not a heartbeat, progress or log.
    pub async fn next_report(&mut self) -> (u64, FromWorker) {
        self.wait_for("report", WAIT, |event| match event {
            Event::Message { conn, kind, .. }
                if !matches!(
                    kind,
                    FromWorker::Heartbeat(_) | FromWorker::RunProgress(_) | FromWorker::RunLog(_)
                ) =>
            {
                Some((*conn, kind.clone()))
            }
            _ => None,
        })
        .await
    }

    /// Waits for a `Register`; returns its stream number and contents.
    pub async fn expect_register(&mut self) -> (u64, Register) {
        self.wait_for("Register", WAIT, |event| match event {
            Event::Message {
                conn,
                kind: FromWorker::Register(register),
                ..
            } => Some((*conn, register.clone())),
            _ => None,
        })
        .await
    }

    /// Waits for `RunStarted` of `run_id`; panics if its `RunFinished` comes first.
    pub async fn expect_started(&mut self, run_id: i64) -> RunStarted {
        self.wait_for("RunStarted", WAIT, |event| match event {
            Event::Message {
                kind: FromWorker::RunStarted(started),
                ..
            } if started.run_id == run_id => Some(*started),
            Event::Message {
                kind: FromWorker::RunFinished(finished),
                ..
            } if finished.run_id == run_id => {
                panic!("RunFinished before RunStarted for run {run_id}: {finished:?}")
            }
            _ => None,
        })
        .await
    }

    /// Waits (up to `within`) for `RunFinished` of `run_id`; returns it with its stream.
    pub async fn expect_finished_within(
        &mut self,
        run_id: i64,
        within: Duration,
    ) -> (u64, RunFinished) {
        self.wait_for("RunFinished", within, |event| match event {
            Event::Message {
                conn,
                kind: FromWorker::RunFinished(finished),
                ..
            } if finished.run_id == run_id => Some((*conn, finished.clone())),
            _ => None,
        })
        .await
    }

    /// Waits for `RunFinished` of `run_id`.
    pub async fn expect_finished(&mut self, run_id: i64) -> RunFinished {
        self.expect_finished_within(run_id, WAIT).await.1
    }

    /// Waits for the end of stream `conn`.
    pub async fn expect_disconnected(&mut self, conn: u64) {
        self.wait_for("disconnect", WAIT, |event| match event {
            Event::Disconnected { conn: ended } if *ended == conn => Some(()),
            _ => None,
        })
        .await;
    }

    /// Asserts that nothing but heartbeats arrives for `quiet`.
    pub async fn expect_quiet(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(event) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            match event {
                Some(Event::Message {
                    kind: FromWorker::Heartbeat(_),
                    ..
                }) => {}
                Some(other) => panic!("expected quiet, got {}", describe(&other)),
                None => return,
            }
        }
    }
}

/// A short description of an event for failure messages.
pub fn describe(event: &Event) -> String {
    match event {
        Event::Connected { conn } => format!("connected #{conn}"),
        Event::Disconnected { conn } => format!("disconnected #{conn}"),
        Event::Message { conn, kind, .. } => match kind {
            FromWorker::Register(_) => format!("Register #{conn}"),
            FromWorker::Heartbeat(beat) => {
                format!("Heartbeat({} running) #{conn}", beat.running.len())
            }
            FromWorker::RunStarted(started) => format!("RunStarted({}) #{conn}", started.run_id),
            FromWorker::RunProgress(progress) => {
                format!("RunProgress({}) #{conn}", progress.run_id)
            }
            FromWorker::RunLog(log) => format!("RunLog({}, {:?}) #{conn}", log.run_id, log.text),
            FromWorker::RunFinished(finished) => format!(
                "RunFinished({}, {:?}, {:?}) #{conn}",
                finished.run_id,
                RunOutcome::try_from(finished.outcome),
                finished.error
            ),
        },
    }
}

/// An `Assign` for `run_id` with `handler` and `args`: job `job-<run_id>`, slot now,
/// attempt 1, epoch 1, deadline in a minute.
pub fn assign(run_id: i64, handler: &str, args: serde_json::Value) -> Assign {
    let now = chrono::Utc::now();
    Assign {
        run_id,
        job: format!("job-{run_id}"),
        slot: Some(cronfleet_proto::timestamp(now)),
        attempt: 1,
        handler: handler.to_owned(),
        args_json: args.to_string(),
        deadline: Some(cronfleet_proto::timestamp(
            now + chrono::Duration::minutes(1),
        )),
        epoch: 1,
        trigger: "schedule".to_owned(),
        trace_context: Default::default(),
        // As an older coordinator: timed by `deadline` (tests set `timeout_ms` to time by
        // duration).
        timeout_ms: 0,
    }
}

/// The outcome of a `RunFinished`.
pub fn outcome(finished: &RunFinished) -> RunOutcome {
    RunOutcome::try_from(finished.outcome).expect("a known outcome")
}

/// Whether process `pid` is running. A zombie is not: it is dead and only waits for its
/// parent (possibly init) to collect its exit status.
pub fn alive(pid: i32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    if rustix::process::test_kill_process(pid).is_err() {
        return false;
    }
    let stat =
        std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    !matches!(state, Some('Z') | None)
}

/// Whether process `pid` is gone within 500 ms. SIGKILL is asynchronous: a killed process
/// still shows as running until the kernel has torn it down, a moment later.
pub async fn gone_soon(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_millis(500);
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Reads the pid a script wrote to `path`, waiting (up to [`WAIT`]) for it to appear.
pub async fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} was never written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Something running in the background until told to stop (a worker's `run`).
pub struct Background {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Background {
    /// Spawns `start(shutdown)`; `shutdown` completes when [`Background::stop`] is called.
    pub fn spawn<F, Fut>(start: F) -> Background
    where
        F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        Background {
            stop: Some(stop),
            task: Some(tokio::spawn(start(shutdown))),
        }
    }

    /// Signals shutdown and waits (up to `within`) for the task to end; returns how long
    /// that took.
    pub async fn stop(mut self, within: Duration) -> Duration {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("not stopped yet");
        tokio::time::timeout(within, task)
            .await
            .expect("stopped in time")
            .expect("the task did not panic");
        started.elapsed()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
