//! A run's frame: a run id, the lock of (workflow, inventory), the journal's
//! run record opened and closed around the execution, the lock released.

use super::schedule::{execute, Start};
use super::{RunEnv, RunError, RunOptions};
use crate::journal::{Journal, LockHolder, RunRow};
use crate::plan::Plan;
use crate::report::RunReport;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// A new run id: UTC time and a random suffix.
pub fn new_run_id() -> Result<String, RunError> {
    let mut r = [0u8; 3];
    getrandom::fill(&mut r).map_err(|e| RunError::Random(std::io::Error::other(e.to_string())))?;
    Ok(format!(
        "{}-{}",
        crate::clock::utc_stamp(SystemTime::now()),
        crate::transport::local::hex(&r)
    ))
}

/// Run a plan: take the lock (waiting for it when `wait_lock` says so), run,
/// record, release. `Err(Locked)` when another live run of the same workflow
/// and inventory holds the lock; `Err(Journal)` when the journal failed (the
/// run stops at once: what was not recorded runs again next time).
pub async fn run(plan: Arc<Plan>, opts: RunOptions, mut env: RunEnv) -> Result<RunReport, RunError> {
    let run_id = new_run_id()?;
    let workflow = plan.workflow.name.clone();
    let inventory = plan.inventory_id.clone();
    let journal = env.journal.clone();
    let mut records = HashMap::new();
    if let Some(j) = &journal {
        if let Some(holder) = take_lock(j, &workflow, &inventory, &run_id, opts.wait_lock, &mut env.interrupt).await? {
            return Err(RunError::Locked(holder));
        }
        records = j.load(&workflow)?;
        j.begin_run(RunRow {
            id: run_id.clone(),
            workflow: workflow.clone(),
            inventory: inventory.clone(),
            started_at: crate::clock::unix_now(),
            finished_at: None,
            status: crate::status::RunStatus::Running,
            host: crate::journal::this_host(),
            pid: i64::from(std::process::id()),
            mode: opts.mode(),
            totals: None,
        });
        env.interrupt = stop_on_journal_failure(env.interrupt.clone(), j.failures());
    }
    let (pending, in_flight) = match &journal {
        Some(j) if !opts.check => (j.pending_handlers(&workflow)?, j.in_flight(&workflow, &inventory)?),
        _ => (Vec::new(), Vec::new()),
    };
    let start = Start {
        records,
        pending,
        in_flight,
    };
    let report = execute(plan, opts, env, run_id.clone(), start).await;
    if let Some(j) = &journal {
        let mut totals = serde_json::to_value(report.totals()).unwrap_or(Value::Null);
        if !report.recovered.is_empty() {
            totals["recovered"] = serde_json::to_value(&report.recovered).unwrap_or(Value::Null);
        }
        j.finish_run(&run_id, report.run_status(), &totals);
        j.unlock(&workflow, &inventory, &run_id);
        j.flush()?;
    }
    Ok(report)
}

/// Take the lock, or wait in line for it off the runtime's threads; a
/// signal while waiting ends the wait and the run.
async fn take_lock(
    j: &Arc<Journal>,
    wf: &str,
    inv: &str,
    run_id: &str,
    wait: Option<Duration>,
    interrupt: &mut watch::Receiver<Option<i32>>,
) -> Result<Option<LockHolder>, RunError> {
    let Some(wait) = wait else {
        return Ok(j.lock(wf, inv, run_id)?);
    };
    let (j2, w, i, r) = (j.clone(), wf.to_owned(), inv.to_owned(), run_id.to_owned());
    let mut task = tokio::task::spawn_blocking(move || j2.lock_wait(&w, &i, &r, Some(wait)));
    let gone = |e: tokio::task::JoinError| RunError::Journal(crate::journal::JournalError::Sql(e.to_string()));
    let mut open = true;
    loop {
        let signal = *interrupt.borrow();
        if let Some(sig) = signal {
            j.cancel_lock_wait();
            if let Ok(Ok(None)) = (&mut task).await {
                // Taken just as the signal came: give it back.
                j.unlock(wf, inv, run_id);
                j.flush()?;
            }
            return Err(RunError::Interrupted(sig));
        }
        tokio::select! {
            r = &mut task => return Ok(r.map_err(gone)??),
            changed = interrupt.changed(), if open => open = changed.is_ok(),
        }
    }
}

/// What `execute` sees as its interrupt: the caller's signals, and a stop
/// (signal 0) as soon as a journal write fails.
fn stop_on_journal_failure(
    mut signals: watch::Receiver<Option<i32>>,
    mut failed: watch::Receiver<Option<String>>,
) -> watch::Receiver<Option<i32>> {
    let (tx, rx) = watch::channel(*signals.borrow());
    tokio::spawn(async move {
        let mut open = true;
        loop {
            tokio::select! {
                changed = signals.changed(), if open => match changed {
                    Ok(()) => {
                        tx.send_replace(*signals.borrow());
                    }
                    Err(_) => open = false,
                },
                changed = failed.changed() => {
                    if changed.is_err() || failed.borrow().is_some() {
                        if changed.is_ok() {
                            tx.send_replace(Some(0));
                        }
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        }
    });
    rx
}
