//! The DAG walk: a node starts as soon as every node it needs is done, at
//! most `--forks` instances at once; an interrupt cancels what runs (nothing
//! of a cancelled instance was journaled, so the next run does it again);
//! handlers follow the steps; the report adds everything up per host.

use super::context::{fork_ticket, NodeEnd, Phase, RunContext};
use super::handlers::run_handlers;
use super::node::run_node;
use super::recover::{after_interrupt, recover};
use super::rescue::Failure;
use super::scope::base_vars;
use super::{RunEnv, RunOptions};
use crate::journal::{InFlight, Record, RecordKey};
use crate::plan::Plan;
use crate::report::{Counters, Outcome, RunReport};
use indexmap::IndexMap;
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::task::JoinSet;

/// What a run starts from besides the plan: the journal's records, the
/// handlers still owed, and the in-flight marks that runs which died left.
pub(crate) struct Start {
    pub records: HashMap<RecordKey, Record>,
    pub pending: Vec<(String, String)>,
    pub in_flight: Vec<InFlight>,
}

pub(crate) async fn execute(plan: Arc<Plan>, opts: RunOptions, env: RunEnv, run_id: String, start: Start) -> RunReport {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let pending = start.pending;
    let host_base = host_base(&plan, &opts, &env, &pending);
    let mut interrupt = env.interrupt.clone();
    let ctx = Arc::new(RunContext::new(
        plan.clone(),
        opts,
        env,
        run_id.clone(),
        start.records,
        host_base,
    ));
    let mut signal = recover(&ctx, &start.in_flight, &mut interrupt).await;
    if signal.is_none() {
        let all: Vec<usize> = (0..plan.nodes.len()).collect();
        signal = walk(&ctx, &all, &mut interrupt).await;
    }
    match signal {
        None => run_handlers(&ctx, &pending).await,
        Some(sig) => after_interrupt(&ctx, sig, &mut interrupt).await,
    }
    ctx.env.pool.close_all().await;
    let recovered = std::mem::take(&mut ctx.state().recovered);
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
        recovered,
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

/// Run `nodes` (a part of the plan, in plan order) in dependency order,
/// needs outside them counting as done; the signal that stopped the walk, if
/// one did. A signal that came before the walk stops it at once in the main
/// phase; after a signal, only a further one stops the rescue phase. What
/// a signal cancels is noted as failures for the rescue steps.
pub(crate) async fn walk(
    ctx: &Arc<RunContext>,
    nodes: &[usize],
    interrupt: &mut tokio::sync::watch::Receiver<Option<i32>>,
) -> Option<i32> {
    let plan = ctx.plan.clone();
    let mut inside = vec![false; plan.nodes.len()];
    for &n in nodes {
        inside[n] = true;
    }
    let mut remaining: Vec<usize> = plan
        .deps
        .iter()
        .map(|deps| deps.iter().filter(|&&d| inside[d]).count())
        .collect();
    let mut ready: VecDeque<usize> = nodes.iter().copied().filter(|&n| remaining[n] == 0).collect();
    let mut set: JoinSet<(usize, NodeEnd)> = JoinSet::new();
    let before = *interrupt.borrow_and_update();
    if before.is_some() && !matches!(ctx.phase(), Phase::Interrupted(_)) {
        return before;
    }
    let mut open = true;
    let signal = loop {
        while let Some(node) = ready.pop_front() {
            let ticket = fork_ticket(&ctx.forks);
            let ctx = ctx.clone();
            set.spawn(async move { (node, run_node(&ctx, node, ticket).await) });
        }
        tokio::select! {
            done = set.join_next() => match done {
                None => break None,
                Some(Ok((node, end))) => {
                    ctx.state().ends[node] = Some(end);
                    for &d in &plan.dependents[node] {
                        if inside[d] {
                            remaining[d] -= 1;
                            if remaining[d] == 0 {
                                ready.push_back(d);
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::error!("internal error: a step task failed: {e}");
                    ctx.stop.store(true, Ordering::SeqCst);
                }
            },
            changed = interrupt.changed(), if open => match changed {
                Ok(()) => break *interrupt.borrow_and_update(),
                // No sender: no signal can come any more.
                Err(_) => open = false,
            }
        }
    };
    if let Some(sig) = signal {
        cancel_running(ctx, &mut set, sig).await;
    }
    signal
}

/// Cancel what runs: its commands are killed and nothing of it was
/// journaled, so the next run does it again. The rescue steps learn what
/// was cancelled.
async fn cancel_running(ctx: &RunContext, set: &mut JoinSet<(usize, NodeEnd)>, sig: i32) {
    {
        let mut state = ctx.state();
        let mut running: Vec<(usize, Option<String>)> = state.running.values().cloned().collect();
        running.sort();
        for (node, item) in running {
            let plan_node = &ctx.plan.nodes[node];
            state.failures.push(Failure {
                node,
                step: ctx.workflow().steps[plan_node.step].id.clone(),
                host: plan_node.host.name.clone(),
                item,
                message: format!("cancelled by signal {sig}"),
                interrupted: true,
                run_id: ctx.run_id.clone(),
            });
            if state.ends[node].is_none() {
                state.ends[node] = Some(NodeEnd::Cancelled);
            }
        }
    }
    set.abort_all();
    while set.join_next().await.is_some() {}
}
