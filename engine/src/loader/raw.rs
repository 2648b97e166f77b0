//! The raw model: what the files say, parsed and typed, every part that a
//! later check may point at still carrying its position. Analysis reads
//! these; only when it passed are they resolved into the checked
//! [`StepDef`]s of the model, which carry no positions a run would need.

use super::syntax::Text;
use crate::diag::{Pos, Source};
use crate::model::{Retry, Runs, StepDef};
use crate::step::StepKind;
use crate::yaml::Yaml;
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A step or handler as written.
pub(super) struct RawStep {
    pub source: Arc<Source>,
    pub handler: bool,
    /// Where the step is named: its `id` (or the mapping, without one).
    pub pos: Pos,
    pub id: String,
    pub name: Option<String>,
    pub kind: Arc<dyn StepKind>,
    pub hosts: Option<Text>,
    pub with: Option<Yaml>,
    pub needs: Vec<Text>,
    /// The `needs` list itself (a cycle is reported there).
    pub needs_pos: Option<Pos>,
    pub runs: Runs,
    pub notify: Vec<Text>,
    pub when: Option<Text>,
    pub for_each: Option<Yaml>,
    pub label: Option<Text>,
    pub retry: Option<Retry>,
    /// `retry.until`, with where it was written.
    pub until: Option<Text>,
    pub changed_when: Option<Text>,
    pub timeout: Option<Duration>,
    pub tags: Vec<String>,
    pub journal: bool,
    pub become_: Option<bool>,
    pub become_user: Option<String>,
    pub ignore_errors: bool,
}

impl RawStep {
    pub fn kind_name(&self) -> &'static str {
        self.kind.info().name
    }

    pub fn hosts_pattern(&self) -> &str {
        self.hosts.as_ref().map_or("localhost", |h| h.value.as_str())
    }

    /// The directory of the file that defined the step.
    pub fn dir(&self) -> &Path {
        self.source.path.parent().unwrap_or(Path::new("."))
    }

    pub fn with_json(&self) -> Map<String, Value> {
        self.with
            .as_ref()
            .and_then(|w| w.to_json().as_object().cloned())
            .unwrap_or_default()
    }

    /// The checked definition (analysis passed).
    pub fn resolve(self) -> StepDef {
        let with = self.with_json();
        let dir = self.dir().to_path_buf();
        let mut retry = self.retry;
        if let Some(r) = &mut retry {
            r.until = self.until.map(|t| t.value);
        }
        StepDef {
            id: self.id,
            name: self.name,
            kind: self.kind,
            hosts: self.hosts.map_or_else(|| "localhost".to_owned(), |h| h.value),
            with,
            needs: self.needs.into_iter().map(|t| t.value).collect(),
            runs: self.runs,
            notify: self.notify.into_iter().map(|t| t.value).collect(),
            when: self.when.map(|t| t.value),
            for_each: self.for_each.map(|v| v.to_json()),
            label: self.label.map(|t| t.value),
            retry,
            timeout: self.timeout,
            tags: self.tags,
            journal: self.journal,
            become_: self.become_,
            become_user: self.become_user,
            ignore_errors: self.ignore_errors,
            changed_when: self.changed_when.map(|t| t.value),
            dir,
            file: self.source.path.clone(),
            pos: self.pos,
        }
    }
}
