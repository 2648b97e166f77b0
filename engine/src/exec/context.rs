//! What one run shares among its tasks: the plan, options, environment and
//! journal records (read-only), and the state that changes as nodes finish
//! (behind one mutex, held only for short updates).

use super::instance::Pipeline;
use super::rescue::Failure;
use super::scope::StepResults;
use super::{RunEnv, RunOptions};
use crate::journal::{Record, RecordKey};
use crate::model::{Runs, StepDef, Workflow};
use crate::plan::Plan;
use crate::report::{InstanceResult, Recovered, Status};
use crate::template::Templates;
use indexmap::IndexMap;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
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

/// How long a rollback or cleanup may take after a signal or in recovery, unless it sets a `timeout`.
pub(crate) const RESCUE_TIMEOUT: Duration = Duration::from_secs(300);

/// Removes a running instance from [`State::running`] when it ends (or is cancelled).
pub(crate) struct RunningGuard<'a> {
    ctx: &'a RunContext,
    id: u64,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.ctx.state().running.remove(&self.id);
    }
}

/// How a node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeEnd {
    /// It ran (or was skipped by `when` or tags); the status its instances add up to.
    Done(Status),
    /// It never started: something it needs did not succeed, or the run is stopping.
    Blocked,
    /// A signal cancelled it while it ran.
    Cancelled,
}

impl NodeEnd {
    /// Whether dependents on the same host may run after it.
    pub fn lets_dependents_run(self) -> bool {
        matches!(self, Self::Done(s) if !s.is_failure())
    }
}

/// Which part of a run is going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Rolling back what a run that died left in flight, before anything else.
    Recovery,
    /// The run proper.
    Main,
    /// A signal (its number) stopped the run: rollbacks and cleanups of what
    /// it cancelled or what failed.
    Interrupted(i32),
}

/// The part of a run that changes as nodes finish.
pub(crate) struct State {
    pub phase: Phase,
    pub ends: Vec<Option<NodeEnd>>,
    pub results: StepResults,
    pub dead_hosts: HashSet<String>,
    pub failed_hosts: HashSet<String>,
    /// Hosts whose recovery failed, with why: nothing more runs there.
    pub stopped_hosts: HashMap<String, String>,
    /// Every instance that did not succeed, in order.
    pub failures: Vec<Failure>,
    /// Instances running now (an id of each → its node and item label).
    pub running: HashMap<u64, (usize, Option<String>)>,
    /// In-flight marks this run set and has not cleared.
    pub marks: HashSet<RecordKey>,
    /// host → handler indices notified in this run.
    pub notified: IndexMap<String, Vec<usize>>,
    pub reported: Vec<InstanceResult>,
    pub recovered: Vec<Recovered>,
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
    /// Per step: whether a rollback (`runs: on_failure`) needs it, directly
    /// or not, so that its `apply` is marked in flight.
    pub guarded: Vec<bool>,
    /// Ids for [`State::running`].
    pub next_running: AtomicU64,
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
        let mut guarded = vec![false; steps];
        for (i, step) in plan.workflow.steps.iter().enumerate() {
            if step.runs == Runs::OnFailure {
                for &a in &plan.workflow.ancestors[i] {
                    guarded[a] = true;
                }
            }
        }
        Self {
            guarded,
            next_running: AtomicU64::new(0),
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
                phase: Phase::Main,
                ends: vec![None; nodes],
                results: StepResults::new(steps),
                dead_hosts: HashSet::new(),
                failed_hosts: HashSet::new(),
                stopped_hosts: HashMap::new(),
                failures: Vec::new(),
                running: HashMap::new(),
                marks: HashSet::new(),
                notified: IndexMap::new(),
                reported: Vec::new(),
                recovered: Vec::new(),
            }),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn workflow(&self) -> &Workflow {
        &self.plan.workflow
    }

    /// Note an instance of `node` as running until the guard drops (a
    /// signal cancels what is running: the rescue steps must know what).
    pub fn running(&self, node: usize, item: Option<String>) -> RunningGuard<'_> {
        let id = self.next_running.fetch_add(1, Ordering::Relaxed);
        self.state().running.insert(id, (node, item));
        RunningGuard { ctx: self, id }
    }

    /// The phase the run is in.
    pub fn phase(&self) -> Phase {
        self.state().phase
    }

    /// A step's timeout: its own; for a rescue step after a signal or in
    /// recovery, 5 minutes when it sets none (nothing waits forever then).
    pub fn timeout_of(&self, step: &StepDef) -> Option<Duration> {
        step.timeout
            .or_else(|| (step.runs.handles_failures() && self.phase() != Phase::Main).then_some(RESCUE_TIMEOUT))
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
