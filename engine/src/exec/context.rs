//! What one run shares among its tasks: the plan, options, environment and
//! journal records (read-only), and the state that changes as nodes finish
//! (behind one mutex, held only for short updates).

use super::instance::Pipeline;
use super::scope::StepResults;
use super::{RunEnv, RunOptions};
use crate::journal::{Record, RecordKey};
use crate::model::Workflow;
use crate::plan::Plan;
use crate::report::{InstanceResult, Status};
use crate::template::Templates;
use indexmap::IndexMap;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// A place in the queue for a fork, taken when the node became ready, so
/// that nodes start in the order they became ready (with `--forks 1`, plan
/// order) whichever task the runtime polls first.
pub(crate) type ForkTicket =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// Take a ticket: the semaphore queues the request now.
pub(crate) fn fork_ticket(forks: &Arc<Semaphore>) -> ForkTicket {
    let mut ticket: ForkTicket = Box::pin(forks.clone().acquire_owned());
    // One poll registers the request; the task's own polls later replace the no-op waker.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match ticket.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(permit) => Box::pin(std::future::ready(permit)),
        std::task::Poll::Pending => ticket,
    }
}

/// How a node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeEnd {
    /// It ran (or was skipped by `when` or tags); the status its instances add up to.
    Done(Status),
    /// It never started: something it needs did not succeed, or the run is stopping.
    Blocked,
}

impl NodeEnd {
    /// Whether dependents on the same host may run after it.
    pub fn lets_dependents_run(self) -> bool {
        matches!(self, Self::Done(s) if !s.is_failure())
    }
}

/// The part of a run that changes as nodes finish.
pub(crate) struct State {
    pub ends: Vec<Option<NodeEnd>>,
    pub results: StepResults,
    pub dead_hosts: HashSet<String>,
    pub failed_hosts: HashSet<String>,
    /// host → handler indices notified in this run.
    pub notified: IndexMap<String, Vec<usize>>,
    pub reported: Vec<InstanceResult>,
}

pub(crate) struct RunContext {
    pub plan: Arc<Plan>,
    pub opts: RunOptions,
    pub run_id: String,
    pub templates: Templates,
    pub env: RunEnv,
    pub records: HashMap<RecordKey, Record>,
    /// Each host's variables before any step ran.
    pub host_base: HashMap<String, Arc<Map<String, Value>>>,
    pub forks: Arc<Semaphore>,
    /// Sequence number of the next result in the journal's run record.
    pub sequence: AtomicU64,
    /// Set when `fail_fast` or `max_fail_percentage` stops the run.
    pub stop: AtomicBool,
    state: Mutex<State>,
}

impl RunContext {
    pub fn new(
        plan: Arc<Plan>,
        opts: RunOptions,
        env: RunEnv,
        run_id: String,
        records: HashMap<RecordKey, Record>,
        host_base: HashMap<String, Arc<Map<String, Value>>>,
    ) -> Self {
        let nodes = plan.nodes.len();
        let steps = plan.workflow.steps.len();
        Self {
            forks: Arc::new(Semaphore::new(opts.forks.max(1))),
            plan,
            opts,
            run_id,
            templates: Templates::new(),
            env,
            records,
            host_base,
            sequence: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            state: Mutex::new(State {
                ends: vec![None; nodes],
                results: StepResults::new(steps),
                dead_hosts: HashSet::new(),
                failed_hosts: HashSet::new(),
                notified: IndexMap::new(),
                reported: Vec::new(),
            }),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn workflow(&self) -> &Workflow {
        &self.plan.workflow
    }

    /// The instance pipeline as this run configures it.
    pub fn pipeline(&self) -> Pipeline<'_> {
        Pipeline {
            templates: &self.templates,
            masker: &self.env.masker,
            key: &self.env.key,
            records: &self.records,
            use_journal: self.env.journal.is_some() && !self.opts.force,
        }
    }

    /// Variables of an instance of `step` on `host`: the host's base and the
    /// results of `visible` steps.
    pub fn vars(&self, host: &str, visible: &[usize]) -> Value {
        let workflow = self.workflow();
        let steps = self.state().results.scope(
            visible.iter().map(|&i| (i, workflow.steps[i].id.as_str())),
            host,
            &self.plan.hosts,
        );
        super::scope::instance_vars(
            self.host_base.get(host).map(|b| &**b),
            self.plan.hosts.get(host).map(|h| &**h),
            steps,
        )
    }
}
