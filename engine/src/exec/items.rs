//! `for_each`: the items a node expands into, each with the key the journal
//! knows it by (its JSON) and the short label people read: the step's
//! `label:` template when it sets one (like Ansible's `loop_control.label`),
//! else an object's `name` (or `id`, `key`), else the label of the item an
//! earlier `for_each` result carries, else its position (`#0`) — never the
//! whole JSON of a record.

use crate::model::StepDef;
use crate::secrets::Masker;
use crate::template::Templates;
use serde_json::Value;

/// One `for_each` item.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub value: Value,
    /// Identity in the journal.
    pub key: String,
    /// What output shows.
    pub label: String,
}

/// The items of a node, rendered in the node's variables.
pub(crate) fn expand(
    templates: &Templates,
    masker: &Masker,
    step: &StepDef,
    spec: &Value,
    vars: &Value,
) -> Result<Vec<Item>, String> {
    let values = values(templates, masker, step, spec, vars)?;
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let label = match &step.label {
                Some(t) => label_from_template(templates, step, t, vars, &value)?,
                None => default_label(&value, index),
            };
            Ok(Item {
                key: key(&value),
                label,
                value,
            })
        })
        .collect()
}

fn values(
    templates: &Templates,
    masker: &Masker,
    step: &StepDef,
    spec: &Value,
    vars: &Value,
) -> Result<Vec<Value>, String> {
    let rendered = templates
        .render_tree(&format!("`for_each` of step `{}`", step.id), spec, vars)
        .map_err(|e| e.message)?;
    match rendered {
        Value::Array(items) => Ok(items),
        Value::String(s) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Array(items)) => Ok(items),
            _ => Err(format!(
                "`for_each` of step `{}` must give a list; it rendered to `{}`",
                step.id,
                masker.mask(&s)
            )),
        },
        Value::Null => Ok(Vec::new()),
        other => Err(format!(
            "`for_each` of step `{}` must give a list, got `{other}`",
            step.id
        )),
    }
}

fn label_from_template(
    templates: &Templates,
    step: &StepDef,
    template: &str,
    vars: &Value,
    item: &Value,
) -> Result<String, String> {
    let mut v = vars.clone();
    if let Value::Object(m) = &mut v {
        m.insert("item".into(), item.clone());
    }
    templates
        .render_text(&format!("`label` of step `{}`", step.id), template, &v)
        .map_err(|e| e.message)
}

/// The journal's key of an item: a string as itself, anything else as JSON.
fn key(item: &Value) -> String {
    match item {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The label of an item known only by its journal key (a mark a dead run left).
pub(crate) fn label_of_key(key: &str) -> String {
    match serde_json::from_str::<Value>(key) {
        Ok(v @ (Value::Object(_) | Value::Array(_))) => default_label(&v, 0),
        _ => key.to_owned(),
    }
}

/// The label of an item when the step sets no `label:`.
fn default_label(item: &Value, index: usize) -> String {
    match item {
        Value::String(s) => s.clone(),
        Value::Object(m) => {
            let named = ["name", "id", "key"]
                .iter()
                .find_map(|k| m.get(*k))
                .and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
                    _ => None,
                });
            // A result of an earlier `for_each` (`{item, outputs, status}`): its item's label.
            let nested = || {
                m.get("item")
                    .filter(|_| m.contains_key("outputs"))
                    .map(|inner| default_label(inner, index))
            };
            named.or_else(nested).unwrap_or_else(|| format!("#{index}"))
        }
        Value::Array(_) => format!("#{index}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_are_short() {
        assert_eq!(default_label(&json!("web"), 0), "web");
        assert_eq!(default_label(&json!(7), 0), "7");
        assert_eq!(default_label(&json!({"name": "vm-1", "cores": 2}), 0), "vm-1");
        assert_eq!(default_label(&json!({"vmid": 101, "cores": 2}), 3), "#3");
        let result = json!({"item": {"name": "vm-1"}, "outputs": {"ip": "x"}, "status": "ok"});
        assert_eq!(default_label(&result, 0), "vm-1");
        assert_eq!(key(&json!({"a": 1})), r#"{"a":1}"#);
    }
}
