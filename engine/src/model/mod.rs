//! The checked workflow model. Only the loader builds these, after every
//! check passed, so the planner and executor never see an invalid workflow.
//! Secrets are declared here too (`secret`): where each comes from and how
//! it is resolved, beside the workflow that declares them.

pub mod secret;

pub use secret::{SecretDef, SecretSource};

use crate::diag::Pos;
use crate::step::StepKind;
use indexmap::IndexMap;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A workflow with its imports merged in.
pub struct Workflow {
    pub name: String,
    pub description: Option<String>,
    /// The root file.
    pub path: PathBuf,
    pub vars: Map<String, Value>,
    pub secrets: IndexMap<String, SecretDef>,
    /// Steps in definition order (imports first, in import order).
    pub steps: Vec<StepDef>,
    pub handlers: Vec<StepDef>,
    pub fail_fast: bool,
    pub max_fail_percentage: Option<f64>,
    /// Per step (by index): its transitive `needs`, as step indices.
    pub ancestors: Vec<Vec<usize>>,
}

impl Workflow {
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }
    pub fn handler_index(&self, id: &str) -> Option<usize> {
        self.handlers.iter().position(|s| s.id == id)
    }

    /// The transitive `needs` of each step, as indices (the loader checked
    /// every reference and that there is no cycle).
    pub fn compute_ancestors(steps: &[StepDef]) -> Vec<Vec<usize>> {
        let index: std::collections::HashMap<&str, usize> =
            steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        steps
            .iter()
            .map(|s| {
                let mut out: Vec<usize> = Vec::new();
                let mut stack: Vec<&String> = s.needs.iter().collect();
                while let Some(id) = stack.pop() {
                    if let Some(&i) = index.get(id.as_str()) {
                        if !out.contains(&i) {
                            out.push(i);
                            stack.extend(steps[i].needs.iter());
                        }
                    }
                }
                out
            })
            .collect()
    }
}

/// `retry`: how often and how patiently an instance is tried again.
#[derive(Debug, Clone)]
pub struct Retry {
    pub attempts: u32,
    /// The wait before the second attempt.
    pub delay: Duration,
    /// Each further wait is the previous one times this.
    pub backoff: f64,
    /// No wait is longer than this.
    pub max_delay: Duration,
    /// A wait is drawn from `[wait·(1−jitter), wait]`; 0 is none.
    pub jitter: f64,
    /// An overall bound on all attempts and waits together.
    pub deadline: Option<Duration>,
    pub until: Option<String>,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 3,
            delay: Duration::from_secs(1),
            backoff: 1.0,
            max_delay: Duration::from_secs(300),
            jitter: 0.0,
            deadline: None,
            until: None,
        }
    }
}

impl Retry {
    /// The wait before attempt `attempt` (2, 3, ...): `delay·backoff^(attempt−2)`
    /// capped by `max_delay`, minus up to `jitter` of it (`sample` in [0, 1)).
    pub fn delay_before(&self, attempt: u32, sample: f64) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(2)).unwrap_or(i32::MAX);
        let secs = self.delay.as_secs_f64() * self.backoff.powi(exponent);
        let cap = self.max_delay.as_secs_f64();
        let wait = if secs.is_finite() { secs.min(cap) } else { cap };
        let jitter = self.jitter.clamp(0.0, 1.0) * sample.clamp(0.0, 1.0);
        Duration::from_secs_f64((wait * (1.0 - jitter)).max(0.0))
    }
}

/// When a step runs with respect to the steps it needs (`runs:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runs {
    /// When every step it needs succeeded (the default).
    #[default]
    OnSuccess,
    /// Only when a step it needs failed, was unreachable or was cancelled on
    /// its host in this run, or was left unfinished by a run that died: a
    /// rollback.
    OnFailure,
    /// Whether its needs succeeded or not: a cleanup, like `finally`.
    Always,
}

impl Runs {
    pub const WORDS: &'static [&'static str] = &["on_success", "on_failure", "always"];

    pub fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "on_success" => Self::OnSuccess,
            "on_failure" => Self::OnFailure,
            "always" => Self::Always,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnSuccess => "on_success",
            Self::OnFailure => "on_failure",
            Self::Always => "always",
        }
    }

    /// A rollback or cleanup step: it runs after failures of its needs and
    /// sees them as `failure` and `failures`.
    pub fn handles_failures(self) -> bool {
        self != Self::OnSuccess
    }
}

/// A step (or handler) definition.
#[derive(Clone)]
pub struct StepDef {
    pub id: String,
    pub name: Option<String>,
    pub kind: Arc<dyn StepKind>,
    /// Host pattern (`localhost` when not given).
    pub hosts: String,
    pub with: Map<String, Value>,
    pub needs: Vec<String>,
    /// After which outcomes of its needs it runs.
    pub runs: Runs,
    pub notify: Vec<String>,
    pub when: Option<String>,
    pub for_each: Option<Value>,
    /// How a `for_each` item is shown (a template with `item` in scope).
    pub label: Option<String>,
    pub retry: Option<Retry>,
    pub timeout: Option<Duration>,
    pub tags: Vec<String>,
    pub journal: bool,
    pub become_: Option<bool>,
    pub become_user: Option<String>,
    pub ignore_errors: bool,
    /// A condition (with `outputs` in scope) deciding whether a run that happened counts as a change.
    pub changed_when: Option<String>,
    /// Directory of the file that defined the step (`src` paths are relative to it).
    pub dir: PathBuf,
    pub file: PathBuf,
    pub pos: Pos,
}

impl StepDef {
    pub fn kind_name(&self) -> &'static str {
        self.kind.info().name
    }
}

/// Parse a duration: `500ms`, `30s`, `5m`, `1h30m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if secs >= 0.0 && secs.is_finite() {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(t)
        .map_err(|_| format!("invalid duration `{text}` (expected e.g. `500ms`, `30s`, `5m`, `1h30m`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_exponential_capped_and_jittered_downwards() {
        let r = Retry {
            delay: Duration::from_secs(2),
            backoff: 3.0,
            max_delay: Duration::from_secs(40),
            ..Retry::default()
        };
        let waits: Vec<u64> = (2..=6).map(|a| r.delay_before(a, 0.0).as_secs()).collect();
        assert_eq!(waits, [2, 6, 18, 40, 40]);
        let jittered = Retry { jitter: 0.5, ..r };
        assert_eq!(jittered.delay_before(3, 0.0), Duration::from_secs(6));
        assert_eq!(jittered.delay_before(3, 0.5), Duration::from_secs_f64(4.5));
        assert!(jittered.delay_before(3, 0.999) > Duration::from_secs(3));
        let huge = Retry {
            backoff: 10.0,
            ..Retry::default()
        };
        assert_eq!(huge.delay_before(1000, 0.0), Duration::from_secs(300));
    }
}
