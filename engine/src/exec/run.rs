//! A run's frame: a run id, the lock of (workflow, inventory), the journal's
//! run record opened and closed around the execution, the lock released.

use super::schedule::execute;
use super::{RunEnv, RunError, RunOptions};
use crate::journal::RunRow;
use crate::plan::Plan;
use crate::report::RunReport;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

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

/// Run a plan: take the lock, run, record, release. `Err(Locked)` when another
/// live run of the same workflow and inventory holds the lock.
pub async fn run(plan: Arc<Plan>, opts: RunOptions, env: RunEnv) -> Result<RunReport, RunError> {
    let run_id = new_run_id()?;
    let workflow = plan.workflow.name.clone();
    let inventory = plan.inventory_id.clone();
    let journal = env.journal.clone();
    let mut records = HashMap::new();
    if let Some(j) = &journal {
        if let Some(holder) = j.lock(&workflow, &inventory, &run_id)? {
            return Err(RunError::Locked(holder));
        }
        records = j.load(&workflow)?;
        j.begin_run(RunRow {
            id: run_id.clone(),
            workflow: workflow.clone(),
            inventory: inventory.clone(),
            started_at: crate::clock::unix_now(),
            finished_at: None,
            status: "running".into(),
            pid: i64::from(std::process::id()),
            mode: opts.mode_word().into(),
            totals: None,
        });
    }
    let pending = match &journal {
        Some(j) if !opts.check => j.pending_handlers(&workflow)?,
        _ => Vec::new(),
    };
    let report = execute(plan, opts, env, run_id.clone(), records, pending).await;
    if let Some(j) = &journal {
        let totals = serde_json::to_value(report.totals()).unwrap_or(Value::Null);
        j.finish_run(&run_id, report.status_word(), &totals);
        j.unlock(&workflow, &inventory, &run_id);
        j.flush()?;
    }
    Ok(report)
}
