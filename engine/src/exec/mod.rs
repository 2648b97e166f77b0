//! The executor: runs a [`Plan`](crate::plan::Plan). Nodes (a step on a host)
//! start as soon as the nodes they need are done (no phase barriers), bounded
//! by `--forks`; each node expands its `for_each` items into instances that
//! run concurrently. A failure on one host blocks that host's dependents
//! while other hosts go on. Handlers run once per host at the end and stay
//! owed in the journal until they succeed. SIGINT/SIGTERM stop the run with
//! the journal consistent.
//!
//! Every instance goes through one pipeline, [`instance::Instance::prepare`]:
//! `when` → render `with` → build → resolve `become` → fingerprint → journal
//! lookup. Runs, handlers and `flowrun plan`'s prediction all use it, so a
//! plan cannot predict what a run would not do. The files:
//!
//! - `run.rs`: lock, run record, execute, release;
//! - `schedule.rs`: the DAG walk, interrupts, the final report;
//! - `context.rs`: what a run shares (`RunContext`) and its mutable state;
//! - `node.rs`: one node: blocked or not, tags, items, aggregation, notify;
//! - `items.rs`: `for_each` expansion and item labels;
//! - `instance.rs`: the instance pipeline and one instance's run;
//! - `converge.rs`: check → apply under `retry` and `timeout`;
//! - `handlers.rs`: handlers;
//! - `scope.rs`: the variables templates see, `steps.*` built from typed results;
//! - `record.rs`: results to the sink and the journal, outputs restored;
//! - `predict.rs`: what a run would take from the journal, for `plan`;
//! - `preview.rs`: `plan`'s previews (the checks of kinds that preview safely).

mod context;
mod converge;
mod handlers;
mod instance;
mod items;
mod node;
mod predict;
mod preview;
mod record;
mod recover;
mod rescue;
mod run;
mod schedule;
mod scope;

pub use predict::{predict, predict_skips, predict_with_previews, InstancePrediction, NodePrediction, Prediction};
pub use preview::{run_previews, Candidate, Preview, PreviewOutcome};
pub use run::{new_run_id, run};

use crate::clock::{Clock, SystemClock};
use crate::journal::{Journal, LockHolder};
use crate::pool::Pool;
use crate::report::InstanceResult;
use crate::secrets::{Masker, SecretKey};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub check: bool,
    pub diff: bool,
    pub verify: bool,
    pub force: bool,
    pub forks: usize,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub extra_vars: Map<String, Value>,
    /// Wait this long for another run's lock instead of giving up at once.
    pub wait_lock: Option<Duration>,
    /// What retries wait on and measure their `deadline` by.
    pub clock: Arc<dyn Clock>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            check: false,
            diff: false,
            verify: false,
            force: false,
            forks: 10,
            tags: Vec::new(),
            skip_tags: Vec::new(),
            extra_vars: Map::new(),
            wait_lock: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl RunOptions {
    /// This run's mode, as the journal records it.
    pub fn mode(&self) -> crate::status::RunMode {
        use crate::status::RunMode;
        if self.check {
            RunMode::Check
        } else if self.verify {
            RunMode::Verify
        } else if self.force {
            RunMode::Force
        } else {
            RunMode::Run
        }
    }
}

/// Receives results as they happen (the CLI prints them).
pub trait EventSink: Send + Sync {
    fn started(&self, _step: &str, _host: &str, _item: Option<&str>) {}
    fn finished(&self, result: &InstanceResult);
}

/// A sink that drops everything.
pub struct NoEvents;
impl EventSink for NoEvents {
    fn finished(&self, _: &InstanceResult) {}
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("another run of this workflow and inventory is in progress: {0}")]
    Locked(LockHolder),
    /// A signal came while the run waited for the lock: nothing ran.
    #[error("interrupted by signal {0} while waiting for the lock; nothing was run")]
    Interrupted(i32),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The operating system's random source failed.
    #[error("no randomness available: {0}")]
    Random(std::io::Error),
}

/// Everything a run needs besides the plan.
pub struct RunEnv {
    pub journal: Option<Arc<Journal>>,
    pub key: SecretKey,
    pub masker: Arc<Masker>,
    /// Resolved secret values by name (`secrets.NAME` in templates).
    pub secrets: Map<String, Value>,
    pub pool: Arc<Pool>,
    pub sink: Arc<dyn EventSink>,
    /// Becomes `Some(signal)` when the run must stop.
    pub interrupt: watch::Receiver<Option<i32>>,
}
