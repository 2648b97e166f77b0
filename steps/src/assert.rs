//! `assert`: fail the run unless conditions hold — the validation workflows
//! that must fail a CI job when a runner is unhealthy are built on it. The
//! engine renders the conditions before the step is built, so the step sees
//! their values and judges them with the engine's own truthiness.

use crate::params::Params;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, Outputs, ParamSpec, ParamType, Pending, Step, StepContext, StepError,
    StepKind,
};
use flowrun_engine::template::truthy;
use serde_json::{Map, Value};

pub struct AssertKind;

static INFO: KindInfo = KindInfo {
    name: "assert",
    version: 1,
    doc: "Fail unless every condition is true (never changes anything; not journaled)",
    params: &[
        ParamSpec::req(
            "that",
            ParamType::Any,
            "a condition or a list of conditions, e.g. \"{{eq steps.health.outputs.status 200}}\"; false, 0, \
             empty, `no`, `off` and `null` are false",
        ),
        ParamSpec::opt("message", ParamType::Str, "what to say when a condition is false"),
    ],
    one_of: &[],
    outputs: &[],
    secret_outputs: &[],
    journal: false,
};

impl StepKind for AssertKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    fn build(&self, params: &Map<String, Value>, _cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        let conditions = match p.get("that") {
            None => return Err(StepError::param("that", "is required")),
            Some(Value::Array(items)) => items.clone(),
            Some(other) => vec![other.clone()],
        };
        if conditions.is_empty() {
            return Err(StepError::param(
                "that",
                "expected at least one condition, got an empty list",
            ));
        }
        Ok(Box::new(AssertStep {
            conditions,
            message: p.opt_str("message")?,
        }))
    }
}

struct AssertStep {
    conditions: Vec<Value>,
    message: Option<String>,
}

impl AssertStep {
    /// The failed conditions, as `that[i]` with the value they rendered to.
    fn failures(&self) -> Vec<String> {
        let many = self.conditions.len() > 1;
        self.conditions
            .iter()
            .enumerate()
            .filter(|(_, v)| !truthy(v))
            .map(|(i, v)| {
                let name = if many {
                    format!("`that[{i}]`")
                } else {
                    "`that`".to_owned()
                };
                let shown = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                format!("{name} is `{shown}`")
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Step for AssertStep {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let failures = self.failures();
        if failures.is_empty() {
            return Ok(Check::InSync(Outputs::new()));
        }
        let detail = failures.join(", ");
        let text = match &self.message {
            Some(m) => format!("assertion failed: {m} ({detail})"),
            None => format!("assertion failed: {detail}"),
        };
        Err(StepError::failed(cx.masker.mask(&text).into_owned()))
    }

    async fn apply(&self, _cx: &StepContext, _pending: Pending) -> Result<Applied, StepError> {
        // `check` never reports drift, so there is nothing to apply.
        Ok(Applied::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{build, converge, local_context};
    use serde_json::json;
    use std::path::Path;

    fn step(params: Value, vars: Value) -> Result<Box<dyn Step>, StepError> {
        build(&AssertKind, params, vars, Path::new("/"))
    }

    #[tokio::test]
    async fn true_conditions_are_in_sync() {
        let s = step(
            json!({"that": ["{{eq status 200}}", "{{ready}}", true, 1, "yes"]}),
            json!({"status": 200, "ready": ["x"]}),
        )
        .unwrap();
        let cx = local_context();
        assert!(matches!(s.check(&cx).await.unwrap(), Check::InSync(_)));
        assert!(!converge(s.as_ref(), &cx).await.unwrap().changed);
    }

    #[tokio::test]
    async fn false_conditions_fail_naming_them() {
        let s = step(
            json!({"that": ["{{eq status 200}}", "ok", "{{count}}"], "message": "runner unhealthy"}),
            json!({"status": 503, "count": 0}),
        )
        .unwrap();
        let e = s.check(&local_context()).await.unwrap_err();
        assert_eq!(
            e.message,
            "assertion failed: runner unhealthy (`that[0]` is `false`, `that[2]` is `0`)"
        );
        let s = step(json!({"that": "{{up}}"}), json!({"up": "no"})).unwrap();
        let e = s.check(&local_context()).await.unwrap_err();
        assert_eq!(e.message, "assertion failed: `that` is `no`");
    }

    #[test]
    fn empty_list_is_an_error() {
        let e = step(json!({"that": []}), json!({})).err().unwrap();
        assert!(e.message.starts_with("parameter `that`: expected at least one"), "{e}");
    }
}
