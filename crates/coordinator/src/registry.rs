//! The leader's live view of its workers: who is connected, what they offer, which runs
//! each holds, and when each was last heard from (kept after a disconnect, so that the
//! runs of a worker that vanished can be declared lost once its lease has surely expired).
//!
//! One mutex guards it; no lock is held across an `.await`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use cronfleet_core::run::output_tail;
use cronfleet_proto::v1::CoordinatorMessage;
use tokio::sync::mpsc;

use crate::workers::{WorkerDirectory, WorkerInfo, WorkerState};

/// Where messages for one worker connection go.
pub(crate) type WorkerSender = mpsc::Sender<Result<CoordinatorMessage, tonic::Status>>;

#[derive(Debug)]
struct Connection {
    /// Distinguishes a reconnect from the connection it replaced.
    id: u64,
    info: WorkerInfo,
    runs: HashSet<i64>,
    sender: WorkerSender,
    /// The worker said it drains (it is stopping): no operator can undo that.
    stopping: bool,
    /// When it was last given a run (a sequence number): equally loaded workers take
    /// turns, so the load spreads even when every run ends before the next starts.
    last_assigned: u64,
}

#[derive(Debug, Default)]
struct State {
    next_connection: u64,
    assignments: u64,
    connected: HashMap<String, Connection>,
    last_seen: HashMap<String, DateTime<Utc>>,
    /// The log tail of each running run, from its RunLog chunks.
    outputs: HashMap<i64, String>,
    /// Runs whose log tail grew since it was last written to the store.
    unsaved_outputs: HashSet<i64>,
    /// Runs whose operator cancel was sent to their worker.
    cancels_sent: HashSet<i64>,
    /// Workers an operator drained (`DrainWorker`): they get no new runs, across
    /// reconnects, until the drain is undone.
    drained: HashSet<String>,
    /// When each running run last gave output or progress (the stall check).
    activity: HashMap<i64, DateTime<Utc>>,
    /// Workers whose stream ended without their saying they stop, not connected since:
    /// when they were last heard from and how many runs they held.
    departed: HashMap<String, Departure>,
}

impl Connection {
    /// It takes new runs (not draining) of `handler`, whatever its load.
    fn offers(&self, handler: &str) -> bool {
        self.info.state == WorkerState::Connected && self.info.handlers.iter().any(|h| h == handler)
    }

    /// It carries every one of `labels`.
    fn carries(&self, labels: &BTreeMap<String, String>) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.info.labels.get(k) == Some(v))
    }
}

impl State {
    fn forget_run(&mut self, run_id: i64) {
        self.outputs.remove(&run_id);
        self.unsaved_outputs.remove(&run_id);
        self.cancels_sent.remove(&run_id);
        self.activity.remove(&run_id);
    }
}

/// A worker that went away without saying it stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Departure {
    pub last_heard: DateTime<Utc>,
    pub runs: usize,
}

/// The most departed workers remembered; the longest gone are forgotten first.
const MAX_DEPARTED: usize = 1000;

/// Why no worker could take a run: shown on the pending run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum NoWorker {
    NoHandler(String),
    NoLabels(String, BTreeMap<String, String>),
    AllBusy(String, usize),
}

impl std::fmt::Display for NoWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoWorker::NoHandler(handler) => {
                write!(f, "no connected worker offers handler \"{handler}\"")
            }
            NoWorker::NoLabels(handler, labels) => {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(
                    f,
                    "no connected worker offering handler \"{handler}\" has the labels {}",
                    labels.join(",")
                )
            }
            NoWorker::AllBusy(handler, count) => write!(
                f,
                "all {count} workers offering handler \"{handler}\" are at capacity"
            ),
        }
    }
}

/// A worker chosen for a run, with its capacity already reserved.
#[derive(Debug)]
pub(crate) struct Reservation {
    pub node_id: String,
    pub sender: WorkerSender,
}

#[derive(Debug, Default)]
pub struct Registry {
    state: Mutex<State>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a connection, replacing (and closing) an older one of the same node.
    /// Returns the connection id.
    pub(crate) fn connect(
        &self,
        info: WorkerInfo,
        runs: HashSet<i64>,
        sender: WorkerSender,
    ) -> u64 {
        let mut state = self.lock();
        state.next_connection += 1;
        let id = state.next_connection;
        let stopping = info.state == WorkerState::Draining;
        let mut info = info;
        if state.drained.contains(&info.node_id) {
            info.state = WorkerState::Draining;
        }
        state
            .last_seen
            .insert(info.node_id.clone(), info.connected_at);
        state.departed.remove(&info.node_id);
        state.connected.insert(
            info.node_id.clone(),
            Connection {
                id,
                info,
                runs,
                sender,
                stopping,
                last_assigned: 0,
            },
        );
        id
    }

    /// Removes a connection, unless a newer one of the same node replaced it.
    pub(crate) fn disconnect(&self, node_id: &str, connection: u64) {
        let mut state = self.lock();
        if state
            .connected
            .get(node_id)
            .is_some_and(|c| c.id == connection)
            && let Some(gone) = state.connected.remove(node_id)
        {
            if gone.stopping {
                return;
            }
            if state.departed.len() >= MAX_DEPARTED
                && let Some(oldest) = state
                    .departed
                    .iter()
                    .min_by_key(|(_, d)| d.last_heard)
                    .map(|(id, _)| id.clone())
            {
                state.departed.remove(&oldest);
            }
            state.departed.insert(
                node_id.to_owned(),
                Departure {
                    last_heard: gone.info.last_heartbeat_at,
                    runs: gone.runs.len(),
                },
            );
        }
    }

    /// The workers that went away without saying they stop and have not come back.
    pub(crate) fn departed(&self) -> Vec<(String, Departure)> {
        self.lock()
            .departed
            .iter()
            .map(|(id, d)| (id.clone(), *d))
            .collect()
    }

    /// Whether a connected worker that takes new runs (not draining) offers `handler` and
    /// carries all of `labels`, busy or not (full workers are a different problem from a
    /// handler nobody offers).
    pub(crate) fn offers(&self, handler: &str, labels: &BTreeMap<String, String>) -> bool {
        self.lock()
            .connected
            .values()
            .any(|c| c.offers(handler) && c.carries(labels))
    }

    /// Forgets what this node keeps of a run that is over elsewhere (declared lost): its
    /// log tail, activity and cancel. A worker that still reports on it is refused anyway.
    pub(crate) fn forget_run(&self, run_id: i64) {
        self.lock().forget_run(run_id);
    }

    /// Records that a run reported progress at `now` (output is recorded with it).
    pub(crate) fn run_active(&self, run_id: i64, now: DateTime<Utc>) {
        self.lock().activity.insert(run_id, now);
    }

    /// When a run last gave output or progress, as this node saw it.
    pub(crate) fn last_activity(&self, run_id: i64) -> Option<DateTime<Utc>> {
        self.lock().activity.get(&run_id).copied()
    }

    /// Drops every connection (the streams end): on losing leadership or shutting down.
    pub(crate) fn disconnect_all(&self) -> Vec<WorkerSender> {
        let mut state = self.lock();
        // Drains, departures and run activity are the term's: a node that leads again
        // starts with none, as any new leader does.
        state.drained.clear();
        state.departed.clear();
        state.activity.clear();
        state.connected.drain().map(|(_, c)| c.sender).collect()
    }

    /// Records that the lease of `node_id` was renewed on `connection` at `now` (a
    /// heartbeat it answers). `false` when that connection is no longer the node's
    /// session (replaced by a newer one): its heartbeats renew nothing.
    pub(crate) fn lease_renewed(&self, node_id: &str, connection: u64, now: DateTime<Utc>) -> bool {
        let mut state = self.lock();
        let Some(current) = state.connected.get_mut(node_id) else {
            return false;
        };
        if current.id != connection {
            return false;
        }
        current.info.last_heartbeat_at = now;
        state.last_seen.insert(node_id.to_owned(), now);
        true
    }

    /// Whether `connection` is still the session of `node_id`.
    pub(crate) fn is_session(&self, node_id: &str, connection: u64) -> bool {
        self.lock()
            .connected
            .get(node_id)
            .is_some_and(|c| c.id == connection)
    }

    /// Whether session `connection` of `node_id` holds `run_id` (it was assigned the run,
    /// or adopted it when it registered): only then may it report on it.
    pub(crate) fn holds(&self, node_id: &str, connection: u64, run_id: i64) -> bool {
        self.lock()
            .connected
            .get(node_id)
            .is_some_and(|c| c.id == connection && c.runs.contains(&run_id))
    }

    /// Whether the current session of `node_id` holds `run_id`.
    pub(crate) fn session_holds(&self, node_id: &str, run_id: i64) -> bool {
        self.lock()
            .connected
            .get(node_id)
            .is_some_and(|c| c.runs.contains(&run_id))
    }

    /// When the live session of `node_id` last renewed its lease, if it did at or after
    /// `since`: a second registration under that id meanwhile is another process.
    pub(crate) fn live_session_renewed(
        &self,
        node_id: &str,
        since: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.lock()
            .connected
            .get(node_id)
            .map(|c| c.info.last_heartbeat_at)
            .filter(|renewed| *renewed >= since)
    }

    /// The worker said it drains (it is stopping).
    pub(crate) fn set_draining(&self, node_id: &str) {
        if let Some(connection) = self.lock().connected.get_mut(node_id) {
            connection.stopping = true;
            connection.info.state = WorkerState::Draining;
        }
    }

    /// Forgets the workers not connected and not heard from since `before` (their
    /// last-seen time and departure): with worker ids that change on every restart (a
    /// Kubernetes pod's name), the maps would otherwise grow for ever. Safe for the
    /// monitor as long as `before` is older than the worker timeout: a run of a worker
    /// silent that long is lost whichever time it counts from.
    pub(crate) fn forget_silent_before(&self, before: DateTime<Utc>) {
        let mut state = self.lock();
        let State {
            connected,
            last_seen,
            departed,
            ..
        } = &mut *state;
        last_seen.retain(|id, seen| connected.contains_key(id) || *seen >= before);
        departed.retain(|_, departure| departure.last_heard >= before);
    }

    /// When the node was last heard from, connected or not.
    pub(crate) fn last_seen(&self, node_id: &str) -> Option<DateTime<Utc>> {
        self.lock().last_seen.get(node_id).copied()
    }

    pub(crate) fn is_connected(&self, node_id: &str) -> bool {
        self.lock().connected.contains_key(node_id)
    }

    /// Connected workers not heard from since `before`: their streams are half dead.
    pub(crate) fn silent_since(&self, before: DateTime<Utc>) -> Vec<(String, u64)> {
        self.lock()
            .connected
            .values()
            .filter(|c| c.info.last_heartbeat_at < before)
            .map(|c| (c.info.node_id.clone(), c.id))
            .collect()
    }

    /// Picks the least-loaded connected worker that offers `handler`, carries all of
    /// `labels` and has free capacity, and reserves a slot on it for `run_id`.
    pub(crate) fn reserve(
        &self,
        run_id: i64,
        handler: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Reservation, NoWorker> {
        let mut state = self.lock();
        state.assignments += 1;
        let sequence = state.assignments;
        let offering: Vec<&mut Connection> = state
            .connected
            .values_mut()
            .filter(|c| c.offers(handler))
            .collect();
        if offering.is_empty() {
            return Err(NoWorker::NoHandler(handler.to_owned()));
        }
        let matching: Vec<&mut Connection> =
            offering.into_iter().filter(|c| c.carries(labels)).collect();
        if matching.is_empty() {
            return Err(NoWorker::NoLabels(handler.to_owned(), labels.clone()));
        }
        let count = matching.len();
        // Least loaded: the lowest share of capacity in use, then the fewest runs, then the
        // one that waited longest for work.
        let chosen = matching
            .into_iter()
            .filter(|c| (c.runs.len() as u64) < u64::from(c.info.capacity))
            .min_by(|a, b| {
                let load = |c: &Connection| c.runs.len() as f64 / f64::from(c.info.capacity.max(1));
                load(a)
                    .total_cmp(&load(b))
                    .then(a.runs.len().cmp(&b.runs.len()))
                    .then(a.last_assigned.cmp(&b.last_assigned))
            })
            .ok_or_else(|| NoWorker::AllBusy(handler.to_owned(), count))?;
        chosen.runs.insert(run_id);
        chosen.last_assigned = sequence;
        chosen.info.busy = u32::try_from(chosen.runs.len()).unwrap_or(u32::MAX);
        Ok(Reservation {
            node_id: chosen.info.node_id.clone(),
            sender: chosen.sender.clone(),
        })
    }

    /// Whether some connected worker that takes new runs has a free slot.
    pub(crate) fn has_free_capacity(&self) -> bool {
        self.lock().connected.values().any(|c| {
            c.info.state == WorkerState::Connected
                && (c.runs.len() as u64) < u64::from(c.info.capacity)
        })
    }

    /// Whether an operator's cancel of `run_id` is still to be sent (true once).
    pub(crate) fn first_cancel(&self, run_id: i64) -> bool {
        self.lock().cancels_sent.insert(run_id)
    }

    /// Frees the slot a run held on a worker (it finished, was lost, or never started).
    pub(crate) fn release(&self, node_id: &str, run_id: i64) {
        let mut state = self.lock();
        state.forget_run(run_id);
        if let Some(connection) = state.connected.get_mut(node_id) {
            connection.runs.remove(&run_id);
            connection.info.busy = u32::try_from(connection.runs.len()).unwrap_or(u32::MAX);
        }
    }

    /// The sender of the worker holding `run_id`, if it is connected.
    pub(crate) fn sender_of(&self, node_id: &str) -> Option<WorkerSender> {
        self.lock().connected.get(node_id).map(|c| c.sender.clone())
    }

    /// Appends to a run's log tail, keeping the last `limit` bytes; the run was active at
    /// `now`.
    pub(crate) fn append_output(&self, run_id: i64, text: &str, limit: usize, now: DateTime<Utc>) {
        let mut state = self.lock();
        state.activity.insert(run_id, now);
        let output = state.outputs.entry(run_id).or_default();
        output.push_str(text);
        // Trimmed once twice the limit is reached, so appending stays amortised O(1).
        if output.len() > 2 * limit {
            *output = output_tail(output, limit).to_owned();
        }
        state.unsaved_outputs.insert(run_id);
    }

    pub(crate) fn take_output(&self, run_id: i64, limit: usize) -> Option<String> {
        let mut state = self.lock();
        state.unsaved_outputs.remove(&run_id);
        state.activity.remove(&run_id);
        state
            .outputs
            .remove(&run_id)
            .map(|output| output_tail(&output, limit).to_owned())
    }

    /// The log tails that grew since the last call (their last `limit` bytes), to write
    /// to the store.
    pub(crate) fn unsaved_outputs(&self, limit: usize) -> Vec<(i64, String)> {
        let mut state = self.lock();
        let unsaved: Vec<i64> = state.unsaved_outputs.drain().collect();
        unsaved
            .into_iter()
            .filter_map(|run_id| {
                let output = state.outputs.get(&run_id)?;
                Some((run_id, output_tail(output, limit).to_owned()))
            })
            .collect()
    }
}

impl WorkerDirectory for Registry {
    fn workers(&self) -> Vec<WorkerInfo> {
        let mut workers: Vec<WorkerInfo> = self
            .lock()
            .connected
            .values()
            .map(|c| c.info.clone())
            .collect();
        workers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        workers
    }

    fn drain(&self, node_id: &str, draining: bool) -> Option<WorkerInfo> {
        let mut state = self.lock();
        let connection = state.connected.get_mut(node_id)?;
        connection.info.state = if draining || connection.stopping {
            WorkerState::Draining
        } else {
            WorkerState::Connected
        };
        let info = connection.info.clone();
        if draining {
            state.drained.insert(node_id.to_owned());
        } else {
            state.drained.remove(node_id);
        }
        Some(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(
        node_id: &str,
        handlers: &[&str],
        capacity: u32,
        labels: &[(&str, &str)],
    ) -> WorkerInfo {
        WorkerInfo {
            node_id: node_id.to_owned(),
            handlers: handlers.iter().map(|h| (*h).to_owned()).collect(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            capacity,
            busy: 0,
            connected_at: DateTime::UNIX_EPOCH,
            last_heartbeat_at: DateTime::UNIX_EPOCH,
            state: WorkerState::Connected,
            version: String::new(),
        }
    }

    fn registry_with(workers: Vec<WorkerInfo>) -> Registry {
        let registry = Registry::default();
        for info in workers {
            let (sender, _) = mpsc::channel(1);
            registry.connect(info, HashSet::new(), sender);
        }
        registry
    }

    #[test]
    fn a_drained_worker_gets_no_runs_across_reconnects_until_undone() {
        let registry = registry_with(vec![worker("a", &["noop"], 2, &[])]);
        let none = BTreeMap::new();
        let drained = registry.drain("a", true).expect("connected");
        assert_eq!(drained.state, WorkerState::Draining);
        assert!(matches!(
            registry.reserve(1, "noop", &none),
            Err(NoWorker::NoHandler(_))
        ));
        assert!(!registry.has_free_capacity());
        // It reconnects: still drained.
        let (sender, _) = mpsc::channel(1);
        registry.connect(worker("a", &["noop"], 2, &[]), HashSet::new(), sender);
        assert!(registry.reserve(2, "noop", &none).is_err());
        assert_eq!(
            registry.drain("a", false).unwrap().state,
            WorkerState::Connected
        );
        assert_eq!(registry.reserve(3, "noop", &none).unwrap().node_id, "a");
        // A worker that is stopping stays draining whatever the operator says.
        registry.set_draining("a");
        assert_eq!(
            registry.drain("a", false).unwrap().state,
            WorkerState::Draining
        );
        assert!(registry.drain("nobody", true).is_none());
        // The term ends: its drains go with it.
        registry.drain("a", true);
        registry.disconnect_all();
        let (sender, _) = mpsc::channel(1);
        registry.connect(worker("a", &["noop"], 2, &[]), HashSet::new(), sender);
        assert_eq!(registry.reserve(4, "noop", &none).unwrap().node_id, "a");
    }

    #[test]
    fn the_least_loaded_matching_worker_is_chosen() {
        let registry = registry_with(vec![
            worker("a", &["noop"], 2, &[]),
            worker("b", &["noop"], 4, &[]),
        ]);
        let none = BTreeMap::new();
        let picks: Vec<String> = (0..6)
            .map(|run| registry.reserve(run, "noop", &none).unwrap().node_id)
            .collect();
        // b has twice the capacity, so it takes twice the runs.
        assert_eq!(picks.iter().filter(|p| *p == "a").count(), 2);
        assert_eq!(picks.iter().filter(|p| *p == "b").count(), 4);
        assert_eq!(
            registry.reserve(6, "noop", &none).unwrap_err().to_string(),
            "all 2 workers offering handler \"noop\" are at capacity"
        );
        // The first pick between two idle workers is either: free a run that a holds.
        let on_a = picks.iter().position(|p| p == "a").expect("a took runs");
        registry.release("a", i64::try_from(on_a).expect("small"));
        assert_eq!(registry.reserve(7, "noop", &none).unwrap().node_id, "a");
    }

    #[test]
    fn idle_workers_take_turns() {
        let registry = registry_with(vec![
            worker("a", &["noop"], 4, &[]),
            worker("b", &["noop"], 4, &[]),
        ]);
        let none = BTreeMap::new();
        let picks: Vec<String> = (0..4)
            .map(|run| {
                let node = registry.reserve(run, "noop", &none).unwrap().node_id;
                registry.release(&node, run);
                node
            })
            .collect();
        assert_eq!(picks.iter().filter(|p| *p == "a").count(), 2, "{picks:?}");
        assert_eq!(picks.iter().filter(|p| *p == "b").count(), 2, "{picks:?}");
    }

    #[test]
    fn handlers_and_labels_must_match_and_say_why_not() {
        let registry = registry_with(vec![worker("eu", &["shell"], 1, &[("region", "eu")])]);
        let us = BTreeMap::from([("region".to_owned(), "us".to_owned())]);
        assert_eq!(
            registry
                .reserve(1, "http", &BTreeMap::new())
                .unwrap_err()
                .to_string(),
            "no connected worker offers handler \"http\""
        );
        assert_eq!(
            registry.reserve(1, "shell", &us).unwrap_err().to_string(),
            "no connected worker offering handler \"shell\" has the labels region=us"
        );
        let eu = BTreeMap::from([("region".to_owned(), "eu".to_owned())]);
        assert_eq!(registry.reserve(1, "shell", &eu).unwrap().node_id, "eu");
    }

    #[test]
    fn draining_workers_take_nothing_new() {
        let registry = registry_with(vec![worker("a", &["noop"], 4, &[])]);
        registry.set_draining("a");
        assert!(registry.reserve(1, "noop", &BTreeMap::new()).is_err());
    }

    #[test]
    fn a_reconnect_replaces_the_old_connection_and_last_seen_survives() {
        let registry = Registry::default();
        let (sender, _) = mpsc::channel(1);
        let old = registry.connect(
            worker("a", &["noop"], 1, &[]),
            HashSet::new(),
            sender.clone(),
        );
        let new = registry.connect(worker("a", &["noop"], 1, &[]), HashSet::new(), sender);
        registry.disconnect("a", old);
        assert!(
            registry.is_connected("a"),
            "the old connection's end does not remove the new one"
        );
        let seen = DateTime::UNIX_EPOCH + chrono::TimeDelta::seconds(5);
        assert!(
            !registry.lease_renewed("a", old, seen),
            "the replaced session renews nothing"
        );
        assert!(registry.lease_renewed("a", new, seen));
        assert_eq!(
            registry.live_session_renewed("a", seen),
            Some(seen),
            "renewed at `seen`: live since then"
        );
        assert_eq!(
            registry.live_session_renewed("a", seen + chrono::TimeDelta::milliseconds(1)),
            None
        );
        registry.disconnect("a", new);
        assert!(!registry.is_connected("a"));
        assert_eq!(registry.last_seen("a"), Some(seen));
        assert_eq!(registry.departed().len(), 1, "it went without saying so");

        // Long gone workers are forgotten; a connected one is not, however old.
        let (sender, _) = mpsc::channel(1);
        registry.connect(worker("b", &["noop"], 1, &[]), HashSet::new(), sender);
        registry.forget_silent_before(seen);
        assert_eq!(registry.last_seen("a"), Some(seen), "not before `seen`");
        registry.forget_silent_before(seen + chrono::TimeDelta::seconds(1));
        assert_eq!(registry.last_seen("a"), None);
        assert!(registry.departed().is_empty());
        assert!(registry.last_seen("b").is_some(), "connected: kept");
    }
}
