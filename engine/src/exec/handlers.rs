//! Handlers: once per host after the steps, in definition order, for what
//! was notified in this run or is still owed from an earlier one (the
//! journal keeps them owed until they succeed). They go through the same
//! instance pipeline as steps, seeing every step's results.

use super::context::RunContext;
use super::converge::converge;
use super::instance::{step_context, Instance, Prepared};
use crate::host::Host;
use crate::report::Status;
use crate::step::StepErrorKind;
use indexmap::IndexMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

pub(crate) async fn run_handlers(ctx: &Arc<RunContext>, pending: &[(String, String)]) {
    let workflow = ctx.workflow();
    if workflow.handlers.is_empty() {
        return;
    }
    let mut owed: IndexMap<String, Vec<usize>> = ctx.state().notified.clone();
    for (host, handler) in pending {
        if let Some(index) = workflow.handler_index(handler) {
            let list = owed.entry(host.clone()).or_default();
            if !list.contains(&index) {
                list.push(index);
            }
        }
    }
    let mut set = JoinSet::new();
    for (host_name, mut list) in owed {
        let Some(host) = ctx.plan.hosts.get(&host_name).cloned() else {
            continue;
        };
        if ctx.state().dead_hosts.contains(&host_name) || !ctx.host_base.contains_key(&host_name) {
            continue;
        }
        list.sort_unstable();
        let ctx = ctx.clone();
        set.spawn(async move {
            for index in list {
                run_handler(&ctx, &host, index).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
}

async fn run_handler(ctx: &Arc<RunContext>, host: &Arc<Host>, index: usize) {
    let Ok(_permit) = ctx.forks.acquire().await else { return };
    let workflow = ctx.workflow();
    let handler = &workflow.handlers[index];
    let started = Instant::now();
    let every_step: Vec<usize> = (0..workflow.steps.len()).collect();
    let vars = ctx.vars(&host.name, &every_step);
    let instance = Instance {
        step: handler,
        host,
        item: None,
        handler: true,
    };
    let mut result = ctx.result(handler, &host.name, None, Status::Skipped, started);
    result.handler = true;
    let outcome = match instance.prepare(&ctx.pipeline(), vars) {
        Ok(Prepared::WhenFalse) => Ok(None),
        Ok(Prepared::Ready(mut ready)) => {
            let cx = step_context(ctx, handler, host, &mut ready);
            converge(ctx, handler, ready.built.as_ref(), &cx, ready.context.data(), None)
                .await
                .map(Some)
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(None) => result.message = Some("condition `when` is false".to_owned()),
        Ok(Some(done)) => {
            if !ctx.opts.check {
                if let Some(journal) = &ctx.env.journal {
                    journal.notified(&workflow.name, &host.name, &handler.id);
                }
            }
            result.status = if done.changed { Status::Changed } else { Status::Ok };
            result.message = done.message;
            result.diff = done.diff;
        }
        Err(e) => {
            result.status = if e.kind == StepErrorKind::Unreachable {
                Status::Unreachable
            } else {
                Status::Failed
            };
            result.message = Some(e.message);
        }
    }
    result.duration = started.elapsed();
    ctx.emit(result);
}
