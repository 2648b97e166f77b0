//! What templates see. A host's base variables (workflow `vars` < inventory
//! < `-e`, plus `host`, `inventory_hostname`, `secrets`), then `steps.*`:
//! each visible step's result on this host, or, for a step that ran on other
//! hosts (an API step on `localhost`), the first of them in inventory order
//! with all of them under `hosts`. Results are typed ([`StepResult`]) and
//! turned into template values in one place, the same way for runs,
//! handlers and `plan`.

use crate::host::{Host, HostTable};
use crate::report::Status;
use crate::step::Outputs;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// One item's result within a `for_each` node.
#[derive(Debug, Clone)]
pub(crate) struct ItemResult {
    pub item: Value,
    pub outputs: Outputs,
    pub status: Status,
}

/// A node's result as later steps see it.
#[derive(Debug, Clone)]
pub(crate) enum StepResult {
    Single { outputs: Outputs, status: Status },
    Items { results: Vec<ItemResult>, status: Status },
}

impl StepResult {
    /// `{outputs, status, changed}`, or `{results: [{item, outputs, status, changed}], status, changed}`.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        match self {
            Self::Single { outputs, status } => {
                m.insert("outputs".into(), Value::Object(outputs.clone()));
                m.insert("status".into(), status.as_str().into());
                m.insert("changed".into(), (*status == Status::Changed).into());
            }
            Self::Items { results, status } => {
                let list = results
                    .iter()
                    .map(|r| {
                        let mut e = Map::new();
                        e.insert("item".into(), r.item.clone());
                        e.insert("outputs".into(), Value::Object(r.outputs.clone()));
                        e.insert("status".into(), r.status.as_str().into());
                        e.insert("changed".into(), (r.status == Status::Changed).into());
                        Value::Object(e)
                    })
                    .collect();
                let changed = results.iter().any(|r| r.status == Status::Changed);
                m.insert("results".into(), Value::Array(list));
                m.insert("status".into(), status.as_str().into());
                m.insert("changed".into(), changed.into());
            }
        }
        Value::Object(m)
    }
}

/// Results of the nodes done so far, by step index and host, kept as the
/// template values they render to (built once, read by many instances).
#[derive(Debug, Default)]
pub(crate) struct StepResults {
    by_step: Vec<HashMap<String, Value>>,
}

impl StepResults {
    pub fn new(steps: usize) -> Self {
        Self {
            by_step: vec![HashMap::new(); steps],
        }
    }

    pub fn insert(&mut self, step: usize, host: &str, result: &StepResult) {
        self.by_step[step].insert(host.to_owned(), result.to_value());
    }

    pub fn has(&self, step: usize, host: &str) -> bool {
        self.by_step[step].contains_key(host)
    }

    /// `steps.*` for an instance on `host` that may see `visible` (step indices, with their ids).
    pub fn scope<'a>(
        &self,
        visible: impl Iterator<Item = (usize, &'a str)>,
        host: &str,
        hosts: &HostTable,
    ) -> Map<String, Value> {
        let mut steps = Map::new();
        for (index, id) in visible {
            let results = &self.by_step[index];
            if let Some(v) = results.get(host) {
                steps.insert(id.to_owned(), v.clone());
                continue;
            }
            let mut others: Vec<(&String, &Value)> = results.iter().collect();
            if others.is_empty() {
                continue;
            }
            others.sort_by_key(|(h, _)| hosts.hosts.get_index_of(h.as_str()));
            let mut first = others[0].1.clone();
            let by_host: Map<String, Value> = others.iter().map(|(h, v)| ((*h).clone(), (*v).clone())).collect();
            if let Value::Object(m) = &mut first {
                m.insert("hosts".into(), Value::Object(by_host));
            }
            steps.insert(id.to_owned(), first);
        }
        steps
    }
}

/// Variables of a host before any step ran: workflow vars < inventory vars < `-e`.
pub(crate) fn base_vars(
    workflow_vars: &Map<String, Value>,
    host: &Host,
    extra: &Map<String, Value>,
    secrets: &Map<String, Value>,
) -> Map<String, Value> {
    let mut v = workflow_vars.clone();
    v.extend(host.vars.clone());
    v.insert("host".into(), host.template_value());
    v.insert("inventory_hostname".into(), Value::String(host.name.clone()));
    v.insert("secrets".into(), Value::Object(secrets.clone()));
    v.extend(extra.clone());
    v
}

/// An instance's variables: the host's base with `host` as it is now (a step
/// may have filled in its address during the run), and `steps`.
pub(crate) fn instance_vars(
    base: Option<&Map<String, Value>>,
    host: Option<&Host>,
    steps: Map<String, Value>,
) -> Value {
    let mut v = base.cloned().unwrap_or_default();
    if let Some(h) = host {
        let now = h.address();
        if v.get("host").and_then(|x| x.get("address")).and_then(Value::as_str) != Some(now.as_str()) {
            v.insert("host".into(), h.template_value());
        }
    }
    v.insert("steps".into(), Value::Object(steps));
    Value::Object(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_render_as_templates_see_them() {
        let single = StepResult::Single {
            outputs: json!({"a": 1}).as_object().cloned().unwrap(),
            status: Status::Changed,
        };
        assert_eq!(
            single.to_value(),
            json!({"outputs": {"a": 1}, "status": "changed", "changed": true})
        );
        let items = StepResult::Items {
            results: vec![ItemResult {
                item: json!("x"),
                outputs: Outputs::new(),
                status: Status::Ok,
            }],
            status: Status::Ok,
        };
        assert_eq!(
            items.to_value(),
            json!({"results": [{"item": "x", "outputs": {}, "status": "ok", "changed": false}], "status": "ok", "changed": false})
        );
    }

    #[test]
    fn a_step_on_other_hosts_shows_the_first_in_inventory_order() {
        let mut table = HostTable::default();
        for name in ["b", "a"] {
            let h = Host::new(name.into(), vec![], Map::new(), Default::default(), None);
            table.hosts.insert(name.into(), std::sync::Arc::new(h));
        }
        let mut r = StepResults::new(1);
        let out = |v: i64| StepResult::Single {
            outputs: json!({"v": v}).as_object().cloned().unwrap(),
            status: Status::Ok,
        };
        r.insert(0, "a", &out(1));
        r.insert(0, "b", &out(2));
        let s = r.scope([(0, "s")].into_iter(), "localhost", &table);
        assert_eq!(s["s"]["outputs"]["v"], 2, "`b` comes first in the inventory");
        assert_eq!(s["s"]["hosts"]["a"]["outputs"]["v"], 1);
    }
}
