//! `flowrun history` (one line per run) and `flowrun show` (one run, step
//! by step), as text or as JSON (`--output json`, the shape of a run's own
//! `--output json` where the journal keeps the same facts).

use flowrun_engine::clock::utc_text;
use flowrun_engine::journal::{RunRow, RunStep};
use serde_json::{json, Value};
use std::fmt::Write as _;

pub fn runs(rows: &[RunRow]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no runs recorded\n");
    }
    for r in rows {
        let totals = r
            .totals
            .as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .map_or_else(String::new, |t| {
                let recovered = t["recovered"]
                    .as_array()
                    .filter(|r| !r.is_empty())
                    .map_or_else(String::new, |r| format!(" recovered={}", r.len()));
                format!(
                    "ok={} changed={} failed={} skipped={} unreachable={}{recovered}",
                    t["ok"], t["changed"], t["failed"], t["skipped"], t["unreachable"]
                )
            });
        let took = r
            .finished_at
            .map_or_else(|| "-".into(), |f| format!("{}s", f - r.started_at));
        let _ = writeln!(
            out,
            "{}  {:<28} {:<11} {:<7} {:>5}  {}  {}",
            r.id,
            r.workflow,
            r.status,
            r.mode,
            took,
            utc_text(r.started_at),
            totals
        );
    }
    out
}

pub fn run(run: &RunRow, steps: &[RunStep]) -> String {
    let mut out = format!(
        "run {} of {} ({}), {}, started {}, pid {}\ninventory: {}\n",
        run.id,
        run.workflow,
        run.mode,
        run.status,
        utc_text(run.started_at),
        run.pid,
        run.inventory
    );
    out.push_str(&recovered(run));
    for s in steps {
        let item = if s.item.is_empty() {
            String::new()
        } else {
            format!(" (item={})", s.item)
        };
        let journal = if s.from_journal { " (journal)" } else { "" };
        let msg = s
            .message
            .as_ref()
            .map(|m| format!(" - {}", m.lines().next().unwrap_or("")))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}: [{}] {}{item}{journal} {}ms{msg}",
            s.status, s.host, s.step_id, s.duration_ms
        );
    }
    out
}

/// What the run rolled back first of what runs that died left unfinished.
fn recovered(run: &RunRow) -> String {
    let totals = run
        .totals
        .as_deref()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .unwrap_or(Value::Null);
    let mut out = String::new();
    for r in totals["recovered"].as_array().into_iter().flatten() {
        let by: Vec<String> = r["by"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|s| format!("`{s}`"))
            .collect();
        let item = r["item"]
            .as_str()
            .filter(|i| !i.is_empty())
            .map(|i| format!(" (item={i})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "recovered: `{}`{item} on {}, left unfinished by run {}: {} by {}",
            r["step"].as_str().unwrap_or(""),
            r["host"].as_str().unwrap_or(""),
            r["run_id"].as_str().unwrap_or(""),
            if r["succeeded"] == Value::Bool(true) {
                "rolled back"
            } else {
                "rollback failed"
            },
            if by.is_empty() {
                "nothing".to_owned()
            } else {
                by.join(", ")
            }
        );
    }
    out
}

/// A run as JSON: `{"run_id", "workflow", "inventory", "status", "mode", "controller", "pid", "started_at", "finished_at", "totals"}`.
fn run_value(r: &RunRow) -> Value {
    json!({
        "run_id": r.id,
        "workflow": r.workflow,
        "inventory": r.inventory,
        "status": r.status.as_str(),
        "mode": r.mode.as_str(),
        "controller": r.host,
        "pid": r.pid,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "totals": r.totals.as_deref().and_then(|t| serde_json::from_str::<Value>(t).ok()),
    })
}

/// `flowrun history --output json`: the runs, newest first.
pub fn runs_json(rows: &[RunRow]) -> Value {
    json!({ "runs": rows.iter().map(run_value).collect::<Vec<_>>() })
}

/// `flowrun show --output json`: the run and each instance's result in order.
pub fn run_json(run: &RunRow, steps: &[RunStep]) -> Value {
    let mut doc = run_value(run);
    let steps: Vec<Value> = steps
        .iter()
        .map(|s| {
            let (handler, id) = match s.step_id.strip_prefix("handler:") {
                Some(id) => (true, id),
                None => (false, s.step_id.as_str()),
            };
            json!({
                "id": id,
                "host": s.host,
                "item": (!s.item.is_empty()).then_some(s.item.as_str()),
                "status": s.status.as_str(),
                "from_journal": s.from_journal,
                "duration_ms": s.duration_ms,
                "message": s.message,
                "handler": handler,
            })
        })
        .collect();
    doc["steps"] = Value::Array(steps);
    doc
}
