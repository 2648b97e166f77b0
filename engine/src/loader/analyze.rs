//! Analysis of the raw steps as a whole: every `needs` and `notify` names
//! something that exists, the `needs` graph has no cycle (reported as the
//! whole circle), host patterns name something in the inventory, and a
//! `for_each` whose value is known when the workflow loads gives a list.

use super::raw::RawStep;
use super::syntax::Text;
use crate::diag::{did_you_mean, suggest, Diagnostic, Diagnostics};
use crate::inventory::Inventory;
use crate::template::{self, Templates};
use petgraph::graph::DiGraph;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

pub(super) fn check_references(steps: &[RawStep], handlers: &[RawStep], errs: &mut Diagnostics) {
    let ids: Vec<&str> = steps.iter().map(|d| d.id.as_str()).collect();
    let handler_ids: Vec<&str> = handlers.iter().map(|d| d.id.as_str()).collect();
    for step in steps {
        for Text { value: need, pos } in &step.needs {
            if !ids.contains(&need.as_str()) {
                let mut d = Diagnostic::at(
                    &step.source,
                    *pos,
                    format!(
                        "step `{}` needs `{need}`, which is not a step of this workflow",
                        step.id
                    ),
                );
                if let Some(s) = did_you_mean(need, ids.iter().copied()) {
                    d = d.help(format!("did you mean `{s}`?"));
                }
                errs.push(d);
            }
        }
        for Text { value: h, pos } in &step.notify {
            if !handler_ids.contains(&h.as_str()) {
                errs.push(suggest(
                    Diagnostic::at(
                        &step.source,
                        *pos,
                        format!(
                            "step `{}` notifies `{h}`, which is not a handler of this workflow",
                            step.id
                        ),
                    ),
                    h,
                    &handler_ids,
                    "handlers",
                ));
            }
        }
    }
}

pub(super) fn check_cycles(steps: &[RawStep], errs: &mut Diagnostics) {
    let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, d)| (d.id.as_str(), i)).collect();
    let needs = |i: usize| {
        steps[i]
            .needs
            .iter()
            .filter_map(|n| index.get(n.value.as_str()).copied())
    };
    let mut g = DiGraph::<usize, ()>::new();
    let nodes: Vec<_> = (0..steps.len()).map(|i| g.add_node(i)).collect();
    for i in 0..steps.len() {
        for j in needs(i) {
            g.add_edge(nodes[i], nodes[j], ());
        }
    }
    for scc in petgraph::algo::tarjan_scc(&g) {
        let members: HashSet<usize> = scc.iter().map(|n| g[*n]).collect();
        let start = *members.iter().min().expect("an SCC is never empty");
        let self_loop = needs(start).any(|j| j == start);
        if members.len() < 2 && !self_loop {
            continue;
        }
        // Walk `needs` edges inside the component from the first-defined step back to it.
        let mut path = vec![start];
        let mut visited = HashSet::from([start]);
        let mut cur = start;
        while let Some(j) = needs(cur).find(|j| members.contains(j) && (*j == start || !visited.contains(j))) {
            path.push(j);
            if j == start {
                break;
            }
            visited.insert(j);
            cur = j;
        }
        let chain: Vec<&str> = path.iter().map(|i| steps[*i].id.as_str()).collect();
        let step = &steps[start];
        errs.push(
            Diagnostic::at(
                &step.source,
                step.needs_pos.unwrap_or(step.pos),
                format!("dependency cycle: {}", chain.join(" -> ")),
            )
            .help("`a -> b` means step `a` needs step `b`"),
        );
    }
}

pub(super) fn check_hosts(step: &RawStep, inventory: &Inventory, errs: &mut Diagnostics) {
    let pattern = step.hosts_pattern();
    if Templates::is_template(pattern) {
        return;
    }
    if let Err(e) = inventory.resolve(pattern) {
        let pos = step.hosts.as_ref().map_or(step.pos, |h| h.pos);
        errs.push(Diagnostic::at(&step.source, pos, format!("step `{}`: {e}", step.id)));
    }
}

/// A `for_each` that is a plain string, or a template of workflow, inventory
/// and `-e` variables only, is known now: it must give a list on every host
/// the step runs on.
pub(super) fn check_for_each(
    step: &RawStep,
    vars: &Map<String, Value>,
    inventory: &Inventory,
    extra: &Map<String, Value>,
    errs: &mut Diagnostics,
) {
    let Some(spec) = &step.for_each else { return };
    let Some(text) = spec.as_str() else { return };
    let Ok(refs) = template::references(text) else { return };
    let known_now = refs
        .iter()
        .all(|r| !matches!(r.path[0].as_str(), "steps" | "secrets" | "item" | "host"));
    let pattern = step.hosts_pattern();
    if !known_now || Templates::is_template(pattern) {
        return;
    }
    let Ok(hosts) = inventory.resolve(pattern) else { return };
    let table = inventory.host_table();
    let templates = Templates::new();
    for name in hosts {
        let Some(host) = table.get(&name) else { continue };
        let mut scope = vars.clone();
        scope.extend(host.vars.clone());
        scope.insert("inventory_hostname".into(), Value::String(host.name.clone()));
        scope.extend(extra.clone());
        let Ok(rendered) = templates.render_value("`for_each`", text, &Value::Object(scope)) else {
            return;
        };
        let is_list = match &rendered {
            Value::Array(_) | Value::Null => true,
            Value::String(s) => matches!(serde_json::from_str::<Value>(s), Ok(Value::Array(_))),
            _ => false,
        };
        if !is_list {
            let shown = match &rendered {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let on = if name == "localhost" {
                String::new()
            } else {
                format!(" on `{name}`")
            };
            errs.push(
                Diagnostic::at(
                    &step.source,
                    spec.pos,
                    format!(
                        "`for_each` of step `{}` must give a list; it gives `{shown}`{on}",
                        step.id
                    ),
                )
                .help("write a YAML list, or a template of a list variable such as `\"{{json servers}}\"`"),
            );
            return;
        }
    }
}
