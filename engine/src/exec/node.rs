//! One node (a step on a host): whether it may run at all (its needs
//! succeeded, the host is reachable, the run is not stopping, its tags are
//! selected), its `for_each` items run concurrently, their statuses added up,
//! the result published for later steps, and its handlers notified.

use super::context::{ForkTicket, NodeEnd, Phase, RunContext};
use super::instance::{run_instance, InstanceOutcome};
use super::items::{self, Item};
use super::record::restore_outputs;
use super::rescue::{insert_failure_vars, Failure};
use super::scope::{ItemResult, StepResult};
use super::RunOptions;
use crate::journal::RecordKey;
use crate::model::{Runs, StepDef};
use crate::report::Status;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

/// Why a node or instance did not start after `fail_fast` or `max_fail_percentage` stopped the run.
pub(crate) const STOPPING: &str = "not run: the run is stopping after a failure (fail_fast / max_fail_percentage)";

pub(crate) async fn run_node(ctx: &Arc<RunContext>, node: usize, ticket: ForkTicket) -> NodeEnd {
    let Ok(permit) = ticket.await else {
        return NodeEnd::Blocked;
    };
    let plan_node = ctx.plan.nodes[node].clone();
    let step = &ctx.workflow().steps[plan_node.step];
    let host = &plan_node.host.name;
    let skip = |why: &str| {
        ctx.emit(
            ctx.result(step, host, None, Status::Skipped, Instant::now())
                .message(why),
        );
    };
    if let Some(why) = blocked(ctx, node) {
        skip(&why);
        return NodeEnd::Blocked;
    }
    if !tag_selected(step, &ctx.opts) {
        not_selected(ctx, plan_node.step, host);
        return NodeEnd::Done(Status::Skipped);
    }
    let failures = match failures_to_handle(ctx, node, step.runs) {
        Ok(failures) => failures,
        Err(why) => {
            skip(why);
            // Later steps see it as skipped, with no outputs.
            let result = StepResult::Single {
                outputs: crate::step::Outputs::new(),
                status: Status::Skipped,
            };
            ctx.state().results.insert(plan_node.step, host, &result);
            return NodeEnd::Done(Status::Skipped);
        }
    };
    let need_changed = {
        let state = ctx.state();
        ctx.plan.deps[node]
            .iter()
            .any(|&d| state.ends[d] == Some(NodeEnd::Done(Status::Changed)))
    };
    // Always: a step may render files with these variables even when its parameters have no template.
    let mut vars = ctx.vars(host, &ctx.workflow().ancestors[plan_node.step]);
    if let Some(failures) = &failures {
        insert_failure_vars(&mut vars, failures);
    }
    let Ok(items) = node_items(ctx, node, step, host, &vars) else {
        return NodeEnd::Done(Status::Failed);
    };
    let vars = Arc::new(vars);
    let result = match items {
        None => {
            let out = run_instance(ctx.clone(), node, None, vars, need_changed, Some(permit)).await;
            StepResult::Single {
                outputs: out.outputs,
                status: out.status,
            }
        }
        Some(items) => {
            // Each item takes a fork of its own.
            drop(permit);
            run_items(ctx, node, items, vars, need_changed).await
        }
    };
    finish(ctx, node, step, host, &result).await
}

/// The `for_each` items of a node (`None` without `for_each`); `Err` when
/// they cannot be had, which fails the node (reported here).
fn node_items(
    ctx: &RunContext,
    node: usize,
    step: &StepDef,
    host: &str,
    vars: &serde_json::Value,
) -> Result<Option<Vec<Item>>, ()> {
    let Some(spec) = &step.for_each else { return Ok(None) };
    match items::expand(&ctx.templates, &ctx.env.masker, step, spec, vars) {
        Ok(items) => Ok(Some(items)),
        Err(message) => {
            ctx.instance_failed(node, None, Status::Failed, &message);
            ctx.emit(
                ctx.result(step, host, None, Status::Failed, Instant::now())
                    .message(message),
            );
            Err(())
        }
    }
}

/// Publish a node's result for later steps, notify its handlers when it
/// changed something, and say how it ended.
async fn finish(ctx: &Arc<RunContext>, node: usize, step: &StepDef, host: &str, result: &StepResult) -> NodeEnd {
    let plan_step = ctx.plan.nodes[node].step;
    let status = match result {
        StepResult::Single { status, .. } | StepResult::Items { status, .. } => *status,
    };
    let changed = match result {
        StepResult::Single { status, .. } => *status == Status::Changed,
        StepResult::Items { results, .. } => results.iter().any(|r| r.status == Status::Changed),
    };
    ctx.state().results.insert(plan_step, host, result);
    if changed {
        notify(ctx, step, host);
    }
    if step.runs == Runs::OnFailure && status != Status::Skipped {
        ctx.forget_handled(node).await;
    }
    if status == Status::Failed && step.ignore_errors {
        return NodeEnd::Done(Status::Ok);
    }
    NodeEnd::Done(status)
}

/// The failures a rescue node (`runs: on_failure | always`) handles
/// (`None` for any other node), or why it has nothing to do.
fn failures_to_handle(ctx: &RunContext, node: usize, runs: Runs) -> Result<Option<Vec<Failure>>, &'static str> {
    if !runs.handles_failures() {
        return Ok(None);
    }
    let failures = ctx.failures_for(node);
    match rescue_not_needed(ctx, runs, &failures) {
        Some(why) => Err(why),
        None => Ok(Some(failures)),
    }
}

/// Why a rescue node (`runs: on_failure | always`) has nothing to do, if it has not.
fn rescue_not_needed(ctx: &RunContext, runs: Runs, failures: &[Failure]) -> Option<&'static str> {
    match ctx.phase() {
        Phase::Interrupted(_) if failures.is_empty() => Some("not run: the run was interrupted"),
        _ if runs == Runs::OnFailure && failures.is_empty() => Some("no failure to handle"),
        _ => None,
    }
}

/// Why a node cannot run, if it cannot. A rescue step runs after needs
/// that failed and while the run stops; not on a host that is gone.
fn blocked(ctx: &RunContext, node: usize) -> Option<String> {
    let plan_node = &ctx.plan.nodes[node];
    let state = ctx.state();
    if state.dead_hosts.contains(&plan_node.host.name) {
        return Some(format!("not run: host `{}` is unreachable", plan_node.host.name));
    }
    if let Some(why) = state.stopped_hosts.get(&plan_node.host.name) {
        return Some(why.clone());
    }
    if ctx.workflow().steps[plan_node.step].runs.handles_failures() {
        return None;
    }
    let failed_need = ctx.plan.deps[node].iter().find_map(|&d| match state.ends[d] {
        Some(end) if !end.lets_dependents_run() => {
            let need = &ctx.plan.nodes[d];
            Some(format!(
                "not run: `{}` did not succeed on `{}`",
                ctx.workflow().steps[need.step].id,
                need.host.name
            ))
        }
        _ => None,
    });
    failed_need.or_else(|| ctx.stop.load(Ordering::SeqCst).then(|| STOPPING.to_owned()))
}

/// Whether a step is selected by `--tags`/`--skip-tags` (`always` always runs).
fn tag_selected(step: &StepDef, opts: &RunOptions) -> bool {
    let has = |t: &String| step.tags.contains(t);
    if opts.skip_tags.iter().any(has) {
        return false;
    }
    opts.tags.is_empty() || step.tags.iter().any(|t| t == "always") || opts.tags.iter().any(has)
}

/// A step not selected by tags: the outputs of its last success stay available to later steps.
fn not_selected(ctx: &RunContext, step_index: usize, host: &str) {
    let step = &ctx.workflow().steps[step_index];
    let key = RecordKey {
        step_id: step.id.clone(),
        item: String::new(),
        host: host.to_owned(),
    };
    if let Some(record) = ctx.records.get(&key) {
        if let Some(outputs) = restore_outputs(&ctx.env.masker, &ctx.env.key, step, record) {
            let result = StepResult::Single {
                outputs,
                status: Status::Skipped,
            };
            ctx.state().results.insert(step_index, host, &result);
        }
    }
    let r = ctx.result(step, host, None, Status::Skipped, Instant::now());
    ctx.emit(r.message("not selected by --tags/--skip-tags"));
}

/// A `for_each` node's items, concurrently; results in item order.
async fn run_items(
    ctx: &Arc<RunContext>,
    node: usize,
    items: Vec<Item>,
    vars: Arc<serde_json::Value>,
    need_changed: bool,
) -> StepResult {
    let mut set = JoinSet::new();
    for (index, item) in items.into_iter().enumerate() {
        let (ctx, vars) = (ctx.clone(), vars.clone());
        set.spawn(async move {
            let value = item.value.clone();
            let out: InstanceOutcome = run_instance(ctx, node, Some(item), vars, need_changed, None).await;
            (index, value, out)
        });
    }
    let mut done = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(x) => done.push(x),
            Err(e) if e.is_cancelled() => {}
            Err(e) => tracing::error!("internal error: an item task failed: {e}"),
        }
    }
    done.sort_by_key(|(index, _, _)| *index);
    let status = done
        .iter()
        .map(|(_, _, out)| out.status)
        .max_by_key(|s| s.severity())
        .unwrap_or(Status::Skipped);
    let results = done
        .into_iter()
        .map(|(_, item, out)| ItemResult {
            item,
            outputs: out.outputs,
            status: out.status,
        })
        .collect();
    StepResult::Items { results, status }
}

/// Remember (and journal) the handlers a changed node notifies on its host.
fn notify(ctx: &RunContext, step: &StepDef, host: &str) {
    let mut state = ctx.state();
    for handler in &step.notify {
        let Some(index) = ctx.workflow().handler_index(handler) else {
            continue;
        };
        let list = state.notified.entry(host.to_owned()).or_default();
        if !list.contains(&index) {
            list.push(index);
        }
        if !ctx.opts.check {
            if let Some(journal) = &ctx.env.journal {
                journal.notify(&ctx.workflow().name, host, handler);
            }
        }
    }
}
