//! Sets of status codes a step accepts: the exit codes of a command
//! (`expect_rc`) and the HTTP statuses of a request (`expect_status`). Written
//! as an integer, a list of integers, or ranges such as `"200-299"`.

use crate::params::Params;
use flowrun_engine::step::{LiteralProblem, StepError, ValuePath};
use serde_json::{Map, Value};
use std::fmt;

/// Inclusive ranges of accepted codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codes(Vec<(i64, i64)>);

impl Codes {
    pub fn single(code: i64) -> Self {
        Self(vec![(code, code)])
    }

    pub fn range(lo: i64, hi: i64) -> Self {
        Self(vec![(lo, hi)])
    }

    /// The codes given in parameter `name`, or `None` when it is absent.
    pub fn from_param(p: &Params<'_>, name: &str) -> Result<Option<Self>, StepError> {
        Self::parse(p.get(name)).map_err(|e| StepError::param(name, e))
    }

    /// A literal `name` that gives no codes, found when the workflow loads.
    pub fn check_literal(literals: &Map<String, Value>, name: &str) -> Option<LiteralProblem> {
        let v = literals.get(name).filter(|v| !v.is_null());
        let e = Self::parse(v).err()?;
        // In a list, at the item that gives no code.
        let bad_item = v.and_then(Value::as_array).and_then(|items| {
            items
                .iter()
                .position(|i| Self::parse(Some(&Value::Array(vec![i.clone()]))).is_err())
        });
        Some(match bad_item {
            Some(i) => LiteralProblem::new(name, e).within(ValuePath::Index(i)),
            None => LiteralProblem::new(name, e),
        })
    }

    fn parse(v: Option<&Value>) -> Result<Option<Self>, String> {
        let Some(v) = v else { return Ok(None) };
        let bad =
            |what: &str| format!("expected an integer, a list of integers or a range like \"200-299\", got {what}");
        let items: Vec<Value> = match v {
            Value::Array(items) => items.clone(),
            // A list rendered through `{{json x}}` arrives as its JSON text.
            Value::String(s) if s.trim_start().starts_with('[') => match serde_json::from_str(s) {
                Ok(Value::Array(items)) => items,
                _ => return Err(bad(&format!("`{s}`"))),
            },
            other => vec![other.clone()],
        };
        if items.is_empty() {
            return Err("must list at least one code".into());
        }
        let mut ranges = Vec::new();
        for item in &items {
            let range = match item {
                Value::Number(n) => n.as_i64().map(|c| (c, c)),
                Value::String(s) => parse_range(s.trim()),
                _ => None,
            };
            ranges.push(range.ok_or_else(|| bad(&format!("`{item}`")))?);
        }
        Ok(Some(Self(ranges)))
    }

    pub fn contains(&self, code: i64) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code))
    }
}

fn parse_range(s: &str) -> Option<(i64, i64)> {
    match s.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
            (lo <= hi).then_some((lo, hi))
        }
        None => s.parse().ok().map(|c| (c, c)),
    }
}

impl fmt::Display for Codes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self
            .0
            .iter()
            .map(|(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") })
            .collect();
        match words.split_last() {
            Some((last, rest)) if !rest.is_empty() => write!(f, "{} or {last}", rest.join(", ")),
            _ => f.write_str(&words.join("")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codes(v: Value) -> Result<Option<Codes>, StepError> {
        let m = [("c".to_owned(), v)].into_iter().collect();
        Codes::from_param(&Params(&m), "c")
    }

    #[test]
    fn forms() {
        let c = codes(json!([0, "2", "200-299"])).unwrap().unwrap();
        assert!(c.contains(0) && c.contains(2) && c.contains(250) && !c.contains(1));
        assert_eq!(c.to_string(), "0, 2 or 200-299");
        assert_eq!(codes(json!(3)).unwrap().unwrap(), Codes::single(3));
        assert_eq!(codes(json!("[1, 2]")).unwrap().unwrap().to_string(), "1 or 2");
        assert_eq!(Codes::range(200, 299).to_string(), "200-299");
        assert!(codes(Value::Null).unwrap().is_none());
        let e = codes(json!(["x"])).unwrap_err();
        assert!(e.message.starts_with("parameter `c`: expected an integer"), "{e}");
        assert!(codes(json!([])).is_err());
        assert!(codes(json!("299-200")).is_err());
    }
}
