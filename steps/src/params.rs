//! Typed access to a step's rendered parameters, with errors that name the
//! parameter. The loader has already rejected unknown names and literal values
//! of the wrong type; what reaches here may still come from a template.

use flowrun_engine::step::{LiteralProblem, StepError};
use serde_json::{Map, Value};
use std::time::Duration;

pub struct Params<'a>(pub &'a Map<String, Value>);

impl<'a> Params<'a> {
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn opt_str(&self, name: &str) -> Result<Option<String>, StepError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(StepError::param(
                name,
                format!("expected a string, got {}", kind(other)),
            )),
        }
    }

    pub fn str(&self, name: &str) -> Result<String, StepError> {
        self.opt_str(name)?.ok_or_else(|| StepError::param(name, "is required"))
    }

    pub fn str_or(&self, name: &str, default: &str) -> Result<String, StepError> {
        Ok(self.opt_str(name)?.unwrap_or_else(|| default.to_owned()))
    }

    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, StepError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(Some(true)),
                "false" | "no" | "off" | "0" | "" => Ok(Some(false)),
                _ => Err(StepError::param(name, format!("expected a boolean, got `{s}`"))),
            },
            Some(Value::Number(n)) => Ok(Some(n.as_f64() != Some(0.0))),
            Some(other) => Err(StepError::param(
                name,
                format!("expected a boolean, got {}", kind(other)),
            )),
        }
    }

    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, StepError> {
        Ok(self.opt_bool(name)?.unwrap_or(default))
    }

    pub fn opt_i64(&self, name: &str) -> Result<Option<i64>, StepError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| StepError::param(name, format!("expected an integer, got {n}"))),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| StepError::param(name, format!("expected an integer, got `{s}`"))),
            Some(other) => Err(StepError::param(
                name,
                format!("expected an integer, got {}", kind(other)),
            )),
        }
    }

    /// A list of strings; a single string (or a comma-free scalar) is a one-element list.
    pub fn str_list(&self, name: &str) -> Result<Vec<String>, StepError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    Value::Bool(b) => Ok(b.to_string()),
                    other => Err(StepError::param(
                        name,
                        format!("expected a list of strings, found {}", kind(other)),
                    )),
                })
                .collect(),
            Some(Value::String(s)) => {
                // A list rendered through `{{json x}}` arrives as its JSON text.
                if s.trim_start().starts_with('[') {
                    if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(s) {
                        let map: Map<String, Value> = [(name.to_owned(), Value::Array(items))].into_iter().collect();
                        return Params(&map).str_list(name);
                    }
                }
                Ok(vec![s.clone()])
            }
            Some(Value::Number(n)) => Ok(vec![n.to_string()]),
            Some(other) => Err(StepError::param(
                name,
                format!("expected a list of strings, got {}", kind(other)),
            )),
        }
    }

    pub fn opt_map(&self, name: &str) -> Result<Option<&'a Map<String, Value>>, StepError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(other) => Err(StepError::param(
                name,
                format!("expected a mapping, got {}", kind(other)),
            )),
        }
    }

    pub fn opt_duration(&self, name: &str) -> Result<Option<Duration>, StepError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|f| *f >= 0.0)
                .map(|f| Some(Duration::from_secs_f64(f)))
                .ok_or_else(|| StepError::param(name, format!("expected a duration, got {n}"))),
            Some(Value::String(s)) => flowrun_engine::model::parse_duration(s)
                .map(Some)
                .map_err(|e| StepError::param(name, e)),
            Some(other) => Err(StepError::param(
                name,
                format!("expected a duration, got {}", kind(other)),
            )),
        }
    }

    /// A file mode written as an octal string (`"0644"`, `"644"`) or an integer
    /// whose digits are octal (`644`, as YAML users write it).
    pub fn opt_mode(&self, name: &str) -> Result<Option<u32>, StepError> {
        let text = match self.get(name) {
            None => return Ok(None),
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(StepError::param(
                    name,
                    format!("expected an octal mode like \"0644\", got {}", kind(other)),
                ))
            }
        };
        // The loader checks literal modes by the same rule.
        flowrun_engine::step::parse_mode(&text)
            .map(Some)
            .map_err(|e| StepError::param(name, e))
    }

    /// One of `choices`, or `default` when absent.
    pub fn choice(&self, name: &str, choices: &[&str], default: &str) -> Result<String, StepError> {
        let v = self.str_or(name, default)?;
        if choices.contains(&v.as_str()) {
            Ok(v)
        } else {
            Err(StepError::param(
                name,
                format!(
                    "`{v}` is not one of {}",
                    choices.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
                ),
            ))
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A build error of parameter `name` as a load-time [`LiteralProblem`]: the
/// loader names the parameter and the step itself.
pub fn literal_problem(name: &str, e: &StepError) -> LiteralProblem {
    let prefix = format!("parameter `{name}`: ");
    LiteralProblem::new(name, e.message.strip_prefix(&prefix).unwrap_or(&e.message))
}
