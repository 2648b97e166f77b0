//! Rollback and cleanup steps (`runs: on_failure`, `runs: always`) need to
//! know what went wrong before them. This file keeps the run's failures in
//! the order they happened — instances that failed or found their host
//! unreachable, instances a signal cancelled, and (in the recovery phase)
//! instances a run that died left in flight — decides which of them a rescue
//! node handles, and turns them into the `failure` and `failures` its
//! templates see. It also stops the run for `fail_fast` and
//! `max_fail_percentage` at the moment of the failure, before the failed
//! instance hands its fork on.

use super::context::RunContext;
use crate::plan::Plan;
use crate::report::Status;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::Ordering;

/// One instance that did not succeed.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The plan node it belongs to.
    pub node: usize,
    pub step: String,
    pub host: String,
    /// The item's label, for a `for_each` instance.
    pub item: Option<String>,
    pub message: String,
    /// Cancelled by a signal, or left unfinished by a run that died.
    pub interrupted: bool,
    /// The run it failed in (a dead run's id in the recovery phase).
    pub run_id: String,
}

impl Failure {
    /// `{step, host, item, message, interrupted, run_id}`, as templates see it.
    pub fn to_value(&self) -> Value {
        json!({
            "step": self.step,
            "host": self.host,
            "item": self.item,
            "message": self.message,
            "interrupted": self.interrupted,
            "run_id": self.run_id,
        })
    }
}

/// The nodes whose failures the rescue node `start` handles: what it needs
/// on its own host, directly or through other steps on that host; and, for
/// a need on a step that does not run on its host (a `localhost` cleanup
/// after steps on the runners), that step's nodes on every host and all
/// they need. A step on the rescue's host that needs something elsewhere
/// does not make that a failure of this host.
pub(crate) fn handled_nodes(plan: &Plan, start: usize) -> HashSet<usize> {
    let host = &plan.nodes[start].host.name;
    let mut seen = HashSet::new();
    let mut stack = vec![start];
    while let Some(n) = stack.pop() {
        let on_host = plan.nodes[n].host.name == *host;
        for &d in &plan.deps[n] {
            let elsewhere = plan.nodes[d].host.name != *host;
            if elsewhere && on_host && n != start {
                continue;
            }
            if seen.insert(d) {
                stack.push(d);
            }
        }
    }
    seen
}

impl RunContext {
    /// An instance of `node` did not succeed: remember it for the rescue
    /// steps, and, unless the step ignores its errors, count its host as
    /// failed and stop the run now when `fail_fast` or `max_fail_percentage`
    /// says so.
    pub fn instance_failed(&self, node: usize, item: Option<String>, status: Status, message: &str) {
        let plan_node = &self.plan.nodes[node];
        let step = &self.workflow().steps[plan_node.step];
        let host = plan_node.host.name.clone();
        let mut state = self.state();
        if step.ignore_errors && status == Status::Failed {
            return;
        }
        state.failures.push(Failure {
            node,
            step: step.id.clone(),
            host: host.clone(),
            item,
            message: self.env.masker.mask(message).into_owned(),
            interrupted: false,
            run_id: self.run_id.clone(),
        });
        state.failed_hosts.insert(host);
        let workflow = self.workflow();
        let total = self.plan.active_hosts.len().max(1);
        let over = workflow
            .max_fail_percentage
            .is_some_and(|p| (state.failed_hosts.len() as f64) * 100.0 / (total as f64) > p);
        if workflow.fail_fast || over {
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    /// A rollback ran: it undid what it handles, so the journal's records of
    /// those steps no longer describe the hosts. They are forgotten, and
    /// the next run does them again.
    pub async fn forget_handled(&self, node: usize) {
        let Some(journal) = self.env.journal.clone() else {
            return;
        };
        if self.opts.check {
            return;
        }
        let mut forget: Vec<(String, String)> = handled_nodes(&self.plan, node)
            .into_iter()
            .map(|n| {
                let plan_node = &self.plan.nodes[n];
                (
                    self.workflow().steps[plan_node.step].id.clone(),
                    plan_node.host.name.clone(),
                )
            })
            .collect();
        forget.sort();
        forget.dedup();
        let workflow = self.workflow().name.clone();
        let done = tokio::task::spawn_blocking(move || {
            forget
                .iter()
                .try_for_each(|(step, host)| journal.forget(Some(&workflow), Some(step), Some(host)).map(|_| ()))
        })
        .await;
        if let Ok(Err(e)) = done {
            tracing::error!("the records of the steps a rollback undid cannot be forgotten: {e}");
        }
    }

    /// The failures the rescue node `node` handles, in the order they happened.
    pub fn failures_for(&self, node: usize) -> Vec<Failure> {
        let handled = handled_nodes(&self.plan, node);
        self.state()
            .failures
            .iter()
            .filter(|f| handled.contains(&f.node))
            .cloned()
            .collect()
    }
}

/// `failure` (the first, or null) and `failures` (all) in a rescue step's variables.
pub(crate) fn insert_failure_vars(vars: &mut Value, failures: &[Failure]) {
    if let Value::Object(m) = vars {
        m.insert(
            "failure".into(),
            failures.first().map_or(Value::Null, Failure::to_value),
        );
        m.insert(
            "failures".into(),
            Value::Array(failures.iter().map(Failure::to_value).collect()),
        );
    }
}
