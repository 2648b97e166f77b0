//! The checked workflow model. Only the loader builds these, after every
//! check passed, so the planner and executor never see an invalid workflow.

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
}

impl Workflow {
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }
    pub fn handler_index(&self, id: &str) -> Option<usize> {
        self.handlers.iter().position(|s| s.id == id)
    }
}

/// One place a secret's value may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    /// A path as written: `~` and `$VAR` are expanded when the secret is resolved.
    File(String),
    Command(String),
}

/// A secret: its sources in the order they are tried (the first that is
/// set wins), and whether none being set is fine (the value is then empty).
#[derive(Debug, Clone)]
pub struct SecretDef {
    pub name: String,
    pub sources: Vec<SecretSource>,
    pub optional: bool,
    pub file: PathBuf,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct Retry {
    pub attempts: u32,
    pub delay: Duration,
    pub backoff: f64,
    pub until: Option<String>,
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
    pub notify: Vec<String>,
    pub when: Option<String>,
    pub for_each: Option<Value>,
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
