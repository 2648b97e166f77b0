//! The DAG walk: a node starts as soon as every node it needs is done, at
//! most `--forks` instances at once; an interrupt cancels what runs (nothing
//! of a cancelled instance was journaled, so the next run does it again);
//! handlers follow the steps; the report adds everything up per host.

use super::context::{fork_ticket, NodeEnd, RunContext};
use super::handlers::run_handlers;
use super::node::run_node;
use super::scope::base_vars;
use super::{RunEnv, RunOptions};
use crate::journal::{Record, RecordKey};
use crate::plan::Plan;
use crate::report::{Counters, Outcome, RunReport};
use indexmap::IndexMap;
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::task::JoinSet;

pub(crate) async fn execute(
    plan: Arc<Plan>,
    opts: RunOptions,
    env: RunEnv,
    run_id: String,
    records: HashMap<RecordKey, Record>,
    pending: Vec<(String, String)>,
) -> RunReport {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let host_base = host_base(&plan, &opts, &env, &pending);
    let mut interrupt = env.interrupt.clone();
    let ctx = Arc::new(RunContext::new(
        plan.clone(),
        opts,
        env,
        run_id.clone(),
        records,
        host_base,
    ));
    let signal = walk(&ctx, &mut interrupt).await;
    if signal.is_none() {
        run_handlers(&ctx, &pending).await;
    }
    ctx.env.pool.close_all().await;
    let results = std::mem::take(&mut ctx.state().reported);
    let mut hosts: IndexMap<String, Counters> = IndexMap::new();
    for h in plan.hosts.hosts.keys() {
        if results.iter().any(|r| r.host == *h) {
            hosts.insert(h.clone(), Counters::default());
        }
    }
    for r in &results {
        hosts.entry(r.host.clone()).or_default().add(r.status);
    }
    let failed = results.iter().any(|r| r.status.is_failure());
    let outcome = match signal {
        Some(sig) => Outcome::Interrupted(sig),
        None if failed => Outcome::Failed,
        None => Outcome::Success,
    };
    RunReport {
        run_id,
        workflow: plan.workflow.name.clone(),
        outcome,
        check_mode: ctx.opts.check,
        started_at,
        duration: started.elapsed(),
        results,
        hosts,
    }
}

/// Base variables of every host the run touches (hosts with owed handlers included).
fn host_base(
    plan: &Plan,
    opts: &RunOptions,
    env: &RunEnv,
    pending: &[(String, String)],
) -> HashMap<String, Arc<Map<String, Value>>> {
    let workflow = &plan.workflow;
    plan.active_hosts
        .iter()
        .chain(
            plan.hosts
                .hosts
                .values()
                .filter(|h| pending.iter().any(|(p, _)| *p == h.name)),
        )
        .map(|h| {
            (
                h.name.clone(),
                Arc::new(base_vars(&workflow.vars, h, &opts.extra_vars, &env.secrets)),
            )
        })
        .collect()
}

/// Run every node in dependency order; the signal that stopped the walk, if one did.
async fn walk(ctx: &Arc<RunContext>, interrupt: &mut tokio::sync::watch::Receiver<Option<i32>>) -> Option<i32> {
    let plan = ctx.plan.clone();
    let mut remaining: Vec<usize> = plan.deps.iter().map(Vec::len).collect();
    let mut ready: VecDeque<usize> = (0..plan.nodes.len()).filter(|&i| remaining[i] == 0).collect();
    let mut set: JoinSet<(usize, NodeEnd)> = JoinSet::new();
    let mut signal = *interrupt.borrow();
    while signal.is_none() {
        while let Some(node) = ready.pop_front() {
            let ticket = fork_ticket(&ctx.forks);
            let ctx = ctx.clone();
            set.spawn(async move { (node, run_node(&ctx, node, ticket).await) });
        }
        tokio::select! {
            done = set.join_next() => match done {
                None => break,
                Some(Ok((node, end))) => {
                    node_done(ctx, node, end);
                    for &d in &plan.dependents[node] {
                        remaining[d] -= 1;
                        if remaining[d] == 0 {
                            ready.push_back(d);
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::error!("internal error: a step task failed: {e}");
                    ctx.stop.store(true, Ordering::SeqCst);
                }
            },
            _ = interrupt.changed() => {
                signal = *interrupt.borrow();
            }
        }
    }
    if signal.is_some() {
        // Running instances are cancelled: their commands are killed and nothing
        // of theirs was journaled, so the next run does them again.
        set.abort_all();
        while set.join_next().await.is_some() {}
    }
    signal
}

/// A node finished: remember how, and stop the run when `fail_fast` or
/// `max_fail_percentage` says so.
fn node_done(ctx: &RunContext, node: usize, end: NodeEnd) {
    let host = ctx.plan.nodes[node].host.name.clone();
    let mut state = ctx.state();
    state.ends[node] = Some(end);
    if matches!(end, NodeEnd::Done(s) if s.is_failure()) {
        state.failed_hosts.insert(host);
        let workflow = ctx.workflow();
        let total = ctx.plan.active_hosts.len().max(1);
        let over = workflow
            .max_fail_percentage
            .is_some_and(|p| (state.failed_hosts.len() as f64) * 100.0 / (total as f64) > p);
        if workflow.fail_fast || over {
            ctx.stop.store(true, Ordering::SeqCst);
        }
    }
}
