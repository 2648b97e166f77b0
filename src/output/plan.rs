//! `flowrun plan`: phases, each step with its hosts and, when known, what
//! the journal would do with each of them.

use flowrun_engine::exec::{Prediction, Preview, PreviewOutcome};
use flowrun_engine::plan::Plan;
use std::fmt::Write as _;

pub fn text(plan: &Plan, prediction: Option<&[Prediction]>) -> String {
    let wf = &plan.workflow;
    let mut out = format!(
        "workflow {} ({} steps, {} nodes, {} phases)\n",
        wf.name,
        wf.steps.len(),
        plan.nodes.len(),
        plan.phases.len()
    );
    for (i, phase) in plan.phases.iter().enumerate() {
        let _ = writeln!(out, "phase {}:", i + 1);
        let mut seen: Vec<usize> = Vec::new();
        for &n in phase {
            let s = plan.nodes[n].step;
            if seen.contains(&s) {
                continue;
            }
            seen.push(s);
            let step = &wf.steps[s];
            let hosts: Vec<String> = phase
                .iter()
                .copied()
                .filter(|&m| plan.nodes[m].step == s)
                .map(|m| host_text(&plan.nodes[m].host.name, prediction.map(|p| p[m])))
                .collect();
            let each = if step.for_each.is_some() { " for_each" } else { "" };
            let runs = if step.runs.handles_failures() {
                format!(", runs {}", step.runs.as_str())
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {} ({}{each}{runs}) on {}",
                step.id,
                step.kind_name(),
                hosts.join(", ")
            );
        }
    }
    if !wf.handlers.is_empty() {
        let names: Vec<&str> = wf.handlers.iter().map(|h| h.id.as_str()).collect();
        let _ = writeln!(out, "handlers (when notified): {}", names.join(", "));
    }
    if prediction.is_none() {
        out.push_str("journal: no prediction (no journal yet, or secrets unavailable)\n");
    }
    out
}

fn host_text(host: &str, prediction: Option<Prediction>) -> String {
    match prediction {
        Some(Prediction::Skip) => format!("{host} (journal: skip)"),
        Some(Prediction::Run) => format!("{host} (run)"),
        Some(Prediction::WhenFalse) => format!("{host} (skipped: `when` is false)"),
        Some(Prediction::Items { skip, total }) if skip == total => {
            format!("{host} (journal: skip, {total} items)")
        }
        Some(Prediction::Items { skip, total }) => {
            format!("{host} (journal: skip {skip} of {total} items, run {})", total - skip)
        }
        Some(Prediction::Unknown) => format!("{host} (decided at run time)"),
        Some(Prediction::OnFailure) => format!("{host} (only if a step it needs fails)"),
        None => host.to_owned(),
    }
}

/// The previews: what each instance that would run would change, with its diff.
pub fn previews(previews: &[Preview]) -> String {
    let mut out = String::from("preview (the checks of the steps that would run and can preview):\n");
    for p in previews {
        let item = p.item.as_deref().map(|i| format!(" [{i}]")).unwrap_or_default();
        let head = format!("  {}{item} on {}", p.step, p.host);
        match &p.outcome {
            PreviewOutcome::InSync => {
                let _ = writeln!(out, "{head}: in sync, nothing to change");
            }
            PreviewOutcome::Change { summary, diff } => {
                let _ = writeln!(out, "{head}: would {summary}");
                for line in diff.as_deref().unwrap_or("").lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
            PreviewOutcome::Failed(e) => {
                let _ = writeln!(out, "{head}: cannot preview: {e}");
            }
        }
    }
    out
}
