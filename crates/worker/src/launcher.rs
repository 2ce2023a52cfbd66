//! Starting runs: the [`Launcher`] owns the worker's handlers, takes each `Assign` through
//! admission (`shared.rs`) and starts the admitted run's task (`run.rs`) with its
//! handler.

use std::collections::BTreeMap;
use std::sync::Arc;

use cronfleet_proto::v1::{Assign, WorkerMessage};
use tokio::sync::mpsc;

use crate::context::RunContext;
use crate::handler::Handler;
use crate::protocol;
use crate::shared::{Admission, Shared};

/// Whether an `Assign` is taken.
#[derive(Debug)]
pub(crate) enum AssignDecision {
    Started,
    Rejected,
    /// A second `Assign` for a run already executing here: starting it again would run
    /// it twice, and rejecting it would tell the coordinator it is not running.
    Duplicate,
}

/// The handlers of one worker, by name, and the state the runs they start report to.
pub(crate) struct Launcher {
    pub(crate) shared: Arc<Shared>,
    handlers: BTreeMap<String, Arc<dyn Handler>>,
    /// The handlers' names in order, as `Register` announces them.
    handler_names: Vec<String>,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The handlers themselves need not be `Debug`: their names say which they are.
        f.debug_struct("Launcher")
            .field("handlers", &self.handler_names)
            .finish_non_exhaustive()
    }
}

impl Launcher {
    pub(crate) fn new(shared: Arc<Shared>, handlers: BTreeMap<String, Arc<dyn Handler>>) -> Self {
        let handler_names = handlers.keys().cloned().collect();
        Launcher {
            shared,
            handlers,
            handler_names,
        }
    }

    pub(crate) fn handler_names(&self) -> &[String] {
        &self.handler_names
    }

    /// The first message of a stream: who this worker is and which runs it still holds
    /// (executing, or finished with their `RunFinished` not yet delivered).
    pub(crate) fn register_message(&self) -> WorkerMessage {
        protocol::register(
            &self.shared.config,
            &self.handler_names,
            self.shared.register_snapshot(),
        )
    }

    /// Takes or refuses an `Assign` (see [`Shared::admit`]); a taken run's task is
    /// started after its `RunStarted` is on `tx`, so it is sent before anything the task
    /// sends.
    pub(crate) fn on_assign(
        &self,
        tx: &mpsc::UnboundedSender<WorkerMessage>,
        assign: Assign,
    ) -> AssignDecision {
        let handler = self.handlers.get(&assign.handler).cloned();
        let unknown_handler = handler.is_none().then(|| {
            format!(
                "unknown handler {:?}: this worker runs {}",
                assign.handler,
                self.handler_names.join(", ")
            )
        });
        match self.shared.admit(tx, assign, unknown_handler) {
            Admission::Admitted(run) => {
                let handler = handler.expect("admitted runs have a handler");
                let ctx = RunContext::new(run, self.shared.clone());
                tokio::spawn(crate::run::execute(self.shared.clone(), ctx, handler));
                AssignDecision::Started
            }
            Admission::Rejected => AssignDecision::Rejected,
            Admission::Duplicate => AssignDecision::Duplicate,
        }
    }
}
