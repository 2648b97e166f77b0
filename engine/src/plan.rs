//! The planner: a checked workflow and an inventory become a DAG of step
//! nodes (one per step and host; `for_each` items expand when the node runs,
//! since they may come from earlier outputs) and its parallel phases. Only a
//! loaded [`Workflow`] can be planned, so a `Plan` is always valid.

use crate::diag::Diagnostic;
use crate::host::{Host, HostTable};
use crate::inventory::Inventory;
use crate::model::{Runs, Workflow};
use crate::template::Templates;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;

/// One step on one host.
#[derive(Debug, Clone)]
pub struct PlanNode {
    pub step: usize,
    pub host: Arc<Host>,
}

pub struct Plan {
    pub workflow: Arc<Workflow>,
    pub hosts: Arc<HostTable>,
    /// Identifies the inventory for locks (its path, or `-`).
    pub inventory_id: String,
    pub nodes: Vec<PlanNode>,
    pub deps: Vec<Vec<usize>>,
    pub dependents: Vec<Vec<usize>>,
    /// Nodes grouped so that each phase depends only on earlier ones.
    pub phases: Vec<Vec<usize>>,
    /// Hosts with at least one node, in inventory order.
    pub active_hosts: Vec<Arc<Host>>,
}

/// Variables visible before any step ran (for host patterns that are templates).
fn global_vars(wf: &Workflow, extra: &Map<String, Value>) -> Value {
    let mut v = wf.vars.clone();
    v.extend(extra.clone());
    Value::Object(v)
}

pub fn plan(
    workflow: Arc<Workflow>,
    inventory: &Inventory,
    extra_vars: &Map<String, Value>,
    limit: Option<&str>,
) -> Result<Plan, Diagnostic> {
    let hosts = Arc::new(inventory.host_table());
    let limit_set = match limit {
        Some(l) => Some(
            inventory
                .resolve(l)
                .map_err(|e| Diagnostic::new(format!("--limit: {e}")))?,
        ),
        None => None,
    };
    let (nodes, by_step) = expand_nodes(&workflow, inventory, &hosts, extra_vars, limit_set.as_deref())?;
    let deps = link_needs(&workflow, &nodes, &by_step);
    let dependents = dependents_of(&deps);
    let phases = layer_phases(&deps, &dependents)?;
    let mut active_hosts: Vec<Arc<Host>> = Vec::new();
    for h in hosts.hosts.values() {
        if nodes.iter().any(|n| Arc::ptr_eq(&n.host, h)) {
            active_hosts.push(h.clone());
        }
    }
    let inventory_id = inventory
        .path
        .as_deref()
        .map_or_else(|| "-".to_owned(), inventory_identity);
    Ok(Plan {
        workflow,
        hosts,
        inventory_id,
        nodes,
        deps,
        dependents,
        phases,
        active_hosts,
    })
}

/// One node per step and host its pattern selects (within `--limit`), and
/// each step's nodes.
fn expand_nodes(
    workflow: &Workflow,
    inventory: &Inventory,
    hosts: &HostTable,
    extra_vars: &Map<String, Value>,
    limit: Option<&[String]>,
) -> Result<(Vec<PlanNode>, Vec<Vec<usize>>), Diagnostic> {
    let templates = Templates::new();
    let globals = global_vars(workflow, extra_vars);
    let mut nodes = Vec::new();
    let mut by_step: Vec<Vec<usize>> = Vec::with_capacity(workflow.steps.len());
    for (si, step) in workflow.steps.iter().enumerate() {
        let pattern = templates
            .render_text(&format!("step `{}` hosts", step.id), &step.hosts, &globals)
            .map_err(|e| Diagnostic::in_file(&step.file, e.to_string()))?;
        let names = inventory
            .resolve(&pattern)
            .map_err(|e| Diagnostic::in_file(&step.file, format!("step `{}`: {e}", step.id)))?;
        let mut mine = Vec::new();
        for name in names {
            if limit.is_some_and(|l| !l.contains(&name)) {
                continue;
            }
            let host = hosts
                .get(&name)
                .cloned()
                .ok_or_else(|| Diagnostic::new(format!("no host `{name}`")))?;
            mine.push(nodes.len());
            nodes.push(PlanNode { step: si, host });
        }
        by_step.push(mine);
    }
    Ok((nodes, by_step))
}

/// Each node's needs: the needed step's node on the same host, or all of
/// that step's nodes when it has none there.
fn link_needs(workflow: &Workflow, nodes: &[PlanNode], by_step: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut deps = vec![Vec::new(); nodes.len()];
    for (ni, node) in nodes.iter().enumerate() {
        for need in &workflow.steps[node.step].needs {
            let Some(si) = workflow.step_index(need) else { continue };
            let same_host: Vec<usize> = by_step[si]
                .iter()
                .copied()
                .filter(|&d| nodes[d].host.name == node.host.name)
                .collect();
            deps[ni].extend(if same_host.is_empty() {
                by_step[si].clone()
            } else {
                same_host
            });
        }
    }
    deps
}

/// The reverse edges of `deps`.
fn dependents_of(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut dependents = vec![Vec::new(); deps.len()];
    for (ni, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(ni);
        }
    }
    dependents
}

/// Longest-path layering (Kahn's algorithm); the loader already rejected cycles.
fn layer_phases(deps: &[Vec<usize>], dependents: &[Vec<usize>]) -> Result<Vec<Vec<usize>>, Diagnostic> {
    let mut phase_of = vec![0usize; deps.len()];
    let mut remaining: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut queue: VecDeque<usize> = (0..deps.len()).filter(|&n| remaining[n] == 0).collect();
    let mut seen = 0;
    while let Some(n) = queue.pop_front() {
        seen += 1;
        for &d in &dependents[n] {
            phase_of[d] = phase_of[d].max(phase_of[n] + 1);
            remaining[d] -= 1;
            if remaining[d] == 0 {
                queue.push_back(d);
            }
        }
    }
    if seen != deps.len() {
        return Err(Diagnostic::new(
            "internal error: the step graph has a cycle the loader did not report",
        ));
    }
    let depth = phase_of.iter().copied().max().map_or(0, |m| m + 1);
    let mut phases = vec![Vec::new(); depth];
    for (n, p) in phase_of.iter().enumerate() {
        phases[*p].push(n);
    }
    Ok(phases)
}

impl Plan {
    /// Steps per phase with their hosts, for `flowrun plan`.
    pub fn describe_phases(&self) -> Vec<Vec<(String, Vec<String>)>> {
        self.phases
            .iter()
            .map(|phase| {
                let mut steps: Vec<(usize, Vec<String>)> = Vec::new();
                for &n in phase {
                    let node = &self.nodes[n];
                    match steps.iter_mut().find(|(s, _)| *s == node.step) {
                        Some((_, hosts)) => hosts.push(node.host.name.clone()),
                        None => steps.push((node.step, vec![node.host.name.clone()])),
                    }
                }
                steps
                    .into_iter()
                    .map(|(s, h)| (self.workflow.steps[s].id.clone(), h))
                    .collect()
            })
            .collect()
    }

    /// The step graph in Graphviz dot or Mermaid.
    pub fn graph(&self, mermaid: bool) -> String {
        let wf = &self.workflow;
        let mut out = String::new();
        if mermaid {
            out.push_str("flowchart TD\n");
            for s in &wf.steps {
                let _ = writeln!(out, "    {}[\"{} ({})\"]", mermaid_id(&s.id), s.id, s.kind_name());
            }
            for s in &wf.steps {
                for n in &s.needs {
                    let _ = match s.runs {
                        Runs::OnSuccess => writeln!(out, "    {} --> {}", mermaid_id(n), mermaid_id(&s.id)),
                        r => writeln!(out, "    {} -. {} .-> {}", mermaid_id(n), r.as_str(), mermaid_id(&s.id)),
                    };
                }
            }
        } else {
            let _ = writeln!(out, "digraph \"{}\" {{\n    rankdir=LR;", wf.name.replace('"', "\\\""));
            for s in &wf.steps {
                let _ = writeln!(out, "    \"{}\" [label=\"{}\\n({})\"];", s.id, s.id, s.kind_name());
            }
            for s in &wf.steps {
                for n in &s.needs {
                    let _ = match s.runs {
                        Runs::OnSuccess => writeln!(out, "    \"{n}\" -> \"{}\";", s.id),
                        r => writeln!(
                            out,
                            "    \"{n}\" -> \"{}\" [style=dashed, label=\"{}\"];",
                            s.id,
                            r.as_str()
                        ),
                    };
                }
            }
            out.push_str("}\n");
        }
        out
    }
}

fn mermaid_id(id: &str) -> String {
    id.replace('-', "_")
}

/// The inventory as the lock and the journal know it: the path as the user
/// gave it, relative to the working directory when it lies inside it. So
/// controllers that share a journal (each in its own checkout, at different
/// absolute paths) lock the same `-i inventory/site` as one.
fn inventory_identity(p: &std::path::Path) -> String {
    let abs = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let cwd = std::env::current_dir().ok().and_then(|d| d.canonicalize().ok());
    match cwd.as_deref().and_then(|d| abs.strip_prefix(d).ok()) {
        Some(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => abs.display().to_string(),
    }
}
