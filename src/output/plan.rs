//! `flowrun plan`: phases, each step with its hosts and, when known, what
//! the journal would do with each of them; as text, or as JSON with every
//! node and instance (`--output json`, for scripts and CI).

use flowrun_engine::exec::{NodePrediction, Prediction, Preview, PreviewOutcome};
use flowrun_engine::plan::Plan;
use serde_json::{json, Value};
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

/// The word of a node's prediction in JSON.
fn prediction_word(p: Prediction) -> &'static str {
    match p {
        Prediction::Skip => "skip",
        Prediction::Run => "run",
        Prediction::WhenFalse => "when_false",
        Prediction::Items { .. } => "items",
        Prediction::Unknown => "unknown",
        Prediction::OnFailure => "on_failure",
    }
}

/// `flowrun plan --output json`: `{"workflow", "phases": [[node]], "predicted",
/// "nodes": [{"node", "step", "kind", "host", "needs": [node], "prediction",
/// "items": {"skip","total"}, "instances": [{"item","from_journal","when_false"}],
/// "unless_changed": [step]}], "previews": [...]}`. A node predicted from the
/// journal with `unless_changed` runs after all if one of its needs changes.
pub fn json(plan: &Plan, prediction: Option<&[NodePrediction]>, previews: &[Preview]) -> Value {
    let wf = &plan.workflow;
    let nodes: Vec<Value> = plan
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let step = &wf.steps[node.step];
            let mut v = json!({
                "node": i,
                "step": step.id,
                "kind": step.kind_name(),
                "host": node.host.name,
                "needs": plan.deps[i],
                "prediction": Value::Null,
            });
            if let Some(p) = prediction.and_then(|p| p.get(i)) {
                v["prediction"] = prediction_word(p.summary).into();
                if let Prediction::Items { skip, total } = p.summary {
                    v["items"] = json!({ "skip": skip, "total": total });
                }
                let instances: Vec<Value> = p
                    .instances
                    .iter()
                    .map(|x| json!({ "item": x.item, "from_journal": x.from_journal, "when_false": x.when_false }))
                    .collect();
                v["instances"] = Value::Array(instances);
                v["unless_changed"] = json!(p.unless_changed);
            }
            v
        })
        .collect();
    let previews: Vec<Value> = previews
        .iter()
        .map(|p| {
            let (outcome, summary, diff, error) = match &p.outcome {
                PreviewOutcome::InSync => ("in_sync", None, None, None),
                PreviewOutcome::Change { summary, diff } => ("change", Some(summary), diff.as_ref(), None),
                PreviewOutcome::Failed(e) => ("failed", None, None, Some(e)),
            };
            json!({
                "step": p.step, "host": p.host, "item": p.item, "outcome": outcome,
                "summary": summary, "diff": diff, "error": error,
            })
        })
        .collect();
    json!({
        "workflow": wf.name,
        "phases": plan.phases,
        "predicted": prediction.is_some(),
        "nodes": nodes,
        "handlers": wf.handlers.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        "previews": previews,
    })
}
