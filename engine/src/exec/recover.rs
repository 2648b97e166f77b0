//! The two moments a rollback runs outside the normal order of a run.
//!
//! Recovery, before anything else: a run that died (SIGKILL, power loss)
//! left in-flight marks in the journal for the instances whose `apply` it
//! started and never recorded. For each, the `runs: on_failure` steps that
//! handle it on its host run first, with `failure.interrupted` true and
//! `failure.run_id` the dead run; when they succeed the marks are cleared
//! and the run proceeds (the interrupted instance was never recorded as
//! done, so it runs again); when they fail, nothing more runs on that host.
//!
//! After a signal: what the signal cancelled, and what failed before it, is
//! handed to the `on_failure` and `always` steps that handle it, each under
//! its own `timeout` (5 minutes by default); a further signal stops them.

use super::context::{NodeEnd, Phase, RunContext};
use super::items::label_of_key;
use super::record::restore_outputs;
use super::rescue::{handled_nodes, Failure};
use super::schedule::walk;
use super::scope::{StepResult, StepResults};
use crate::journal::{InFlight, RecordKey};
use crate::model::Runs;
use crate::report::{Recovered, Status};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::watch;

type Interrupt = watch::Receiver<Option<i32>>;

/// Roll back what runs that died left in flight; the signal that stopped
/// the recovery, if one did.
pub(crate) async fn recover(ctx: &Arc<RunContext>, marks: &[InFlight], interrupt: &mut Interrupt) -> Option<i32> {
    if ctx.opts.check {
        return None;
    }
    let marked = marked_nodes(ctx, marks);
    if marked.is_empty() {
        return None;
    }
    let plan = &ctx.plan;
    let workflow = ctx.workflow();
    let rescuers: Vec<usize> = (0..plan.nodes.len())
        .filter(|&r| workflow.steps[plan.nodes[r].step].runs == Runs::OnFailure)
        .filter(|&r| {
            let handled = handled_nodes(plan, r);
            marked.iter().any(|(n, _, _)| handled.contains(n))
        })
        .collect();
    {
        let mut state = ctx.state();
        state.phase = Phase::Recovery;
        state.failures = marked.iter().map(|(_, f, _)| f.clone()).collect();
    }
    if !rescuers.is_empty() {
        tracing::warn!(
            "{} instance(s) were left unfinished by a run that did not finish; rolling back first",
            marked.len()
        );
        restore_needs(ctx, &rescuers);
    }
    let signal = walk(ctx, &rescuers, interrupt).await;
    settle(ctx, &marked, &rescuers, signal.is_none());
    let mut state = ctx.state();
    state.phase = Phase::Main;
    state.ends.iter_mut().for_each(|e| *e = None);
    state.results = StepResults::new(workflow.steps.len());
    state.failures.clear();
    signal
}

/// Each mark of a dead run as the failure of its node in this plan. A mark
/// of a step the workflow no longer has is cleared; one on a host this run
/// does not touch (`--limit`) is left for a run that does.
fn marked_nodes(ctx: &RunContext, marks: &[InFlight]) -> Vec<(usize, Failure, RecordKey)> {
    let workflow = ctx.workflow();
    let mut out = Vec::new();
    for m in marks.iter().filter(|m| m.run_id != ctx.run_id) {
        let node = ctx
            .plan
            .nodes
            .iter()
            .position(|n| workflow.steps[n.step].id == m.key.step_id && n.host.name == m.key.host);
        match node {
            Some(node) => out.push((
                node,
                Failure {
                    node,
                    step: m.key.step_id.clone(),
                    host: m.key.host.clone(),
                    item: (!m.key.item.is_empty()).then(|| label_of_key(&m.key.item)),
                    message: format!(
                        "left unfinished by run `{}`, which did not finish (its controller died or was killed)",
                        m.run_id
                    ),
                    interrupted: true,
                    run_id: m.run_id.clone(),
                },
                m.key.clone(),
            )),
            None if workflow.step_index(&m.key.step_id).is_none() => ctx.landed(&m.key),
            None => {}
        }
    }
    out
}

/// What the rollbacks may read of the steps they need: their last
/// successes, from the journal (a step of the dead run that never finished
/// has none; a rollback reads the host's state instead).
fn restore_needs(ctx: &RunContext, rescuers: &[usize]) {
    let workflow = ctx.workflow();
    for &r in rescuers {
        let host = &ctx.plan.nodes[r].host.name;
        for &a in &workflow.ancestors[ctx.plan.nodes[r].step] {
            let step = &workflow.steps[a];
            let key = RecordKey {
                step_id: step.id.clone(),
                item: String::new(),
                host: host.clone(),
            };
            let restored = (step.for_each.is_none())
                .then(|| ctx.records.get(&key))
                .flatten()
                .and_then(|record| restore_outputs(&ctx.env.masker, &ctx.env.key, step, record));
            if let Some(outputs) = restored {
                let result = StepResult::Single {
                    outputs,
                    status: Status::Ok,
                };
                ctx.state().results.insert(a, host, &result);
            }
        }
    }
}

/// After the recovery: clear the marks whose rollbacks all succeeded (or
/// that no rollback handles any more); stop the hosts where one failed.
fn settle(ctx: &RunContext, marked: &[(usize, Failure, RecordKey)], rescuers: &[usize], finished: bool) {
    let workflow = ctx.workflow();
    for (node, failure, key) in marked {
        let by: Vec<usize> = rescuers
            .iter()
            .copied()
            .filter(|&r| handled_nodes(&ctx.plan, r).contains(node))
            .collect();
        let mut state = ctx.state();
        let succeeded = finished
            && by
                .iter()
                .all(|&r| matches!(state.ends[r], Some(NodeEnd::Done(s)) if !s.is_failure()));
        if succeeded {
            ctx.landed(key);
        } else {
            state.stopped_hosts.insert(
                failure.host.clone(),
                format!(
                    "not run: the rollback of `{}`, which run `{}` left unfinished on `{}`, did not succeed",
                    failure.step, failure.run_id, failure.host
                ),
            );
        }
        state.recovered.push(Recovered {
            step: failure.step.clone(),
            host: failure.host.clone(),
            item: key.item.clone(),
            run_id: failure.run_id.clone(),
            by: by
                .iter()
                .map(|&r| workflow.steps[ctx.plan.nodes[r].step].id.clone())
                .collect(),
            succeeded,
        });
    }
}

/// After a signal: the rollbacks and cleanups of what it cancelled and of
/// what failed before it, then the marks they handled cleared.
pub(crate) async fn after_interrupt(ctx: &Arc<RunContext>, sig: i32, interrupt: &mut Interrupt) {
    ctx.state().phase = Phase::Interrupted(sig);
    let workflow = ctx.workflow();
    let candidates: Vec<usize> = (0..ctx.plan.nodes.len())
        .filter(|&n| workflow.steps[ctx.plan.nodes[n].step].runs.handles_failures())
        .filter(|&n| ctx.state().ends[n].is_none() && !ctx.failures_for(n).is_empty())
        .collect();
    if candidates.is_empty() {
        return;
    }
    tracing::warn!(
        "signal {sig}: running {} rollback and cleanup step instance(s) first (another signal stops them)",
        candidates.len()
    );
    if let Some(again) = walk(ctx, &candidates, interrupt).await {
        tracing::warn!("signal {again}: the rollback and cleanup steps were stopped");
        return;
    }
    let marks: Vec<RecordKey> = ctx.state().marks.iter().cloned().collect();
    for key in marks {
        let Some(node) = ctx
            .plan
            .nodes
            .iter()
            .position(|n| n.host.name == key.host && workflow.steps[n.step].id == key.step_id)
        else {
            continue;
        };
        let by: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&r| workflow.steps[ctx.plan.nodes[r].step].runs == Runs::OnFailure)
            .filter(|&r| handled_nodes(&ctx.plan, r).contains(&node))
            .collect();
        let done: HashSet<bool> = {
            let state = ctx.state();
            by.iter()
                .map(|&r| matches!(state.ends[r], Some(NodeEnd::Done(s)) if !s.is_failure()))
                .collect()
        };
        if !by.is_empty() && !done.contains(&false) {
            ctx.unmark(&key);
        }
    }
}
