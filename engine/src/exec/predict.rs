//! What a run would take from the journal, for `flowrun plan`, without
//! touching any host: the nodes in dependency order, each instance through
//! the same pipeline as a run ([`Instance::prepare`]) in the same variables
//! (built by the same scope), with the outputs of the instances the journal
//! would restore restored, and their `restored` hooks called (a step that
//! fills in a host's address does it here too, so later fingerprints match).
//!
//! A node after one that will run is predicted on a condition: it comes from
//! the journal unless one of those steps changes (a run re-runs what needs a
//! changed step). When its templates need outputs that only running would
//! produce, it is decided at run time.

use super::instance::{Instance, Pipeline, Prepared};
use super::items::{self, Item};
use super::scope::{base_vars, instance_vars, ItemResult, StepResult, StepResults};
use super::RunOptions;
use crate::journal::{Record, RecordKey};
use crate::model::Runs;
use crate::plan::Plan;
use crate::report::Status;
use crate::secrets::{Masker, SecretKey};
use crate::template::Templates;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What the journal would do with a node, in short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// Every instance comes from the journal.
    Skip,
    /// It runs (changed parameters, never journaled, `--force`/`--verify`).
    Run,
    /// `when` is false.
    WhenFalse,
    /// A `for_each` node: how many of its items the journal skips (or `when` does).
    Items { skip: usize, total: usize },
    /// Its parameters depend on outputs of steps that will run first.
    Unknown,
    /// A rollback (`runs: on_failure`): it runs only if a step it needs fails.
    OnFailure,
}

impl Prediction {
    fn skips_all(self) -> bool {
        match self {
            Self::Skip | Self::WhenFalse => true,
            Self::Items { skip, total } => skip == total,
            Self::Run | Self::Unknown | Self::OnFailure => false,
        }
    }
}

/// One instance's prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePrediction {
    /// The item's label (as a run shows it), for `for_each` instances.
    pub item: Option<String>,
    pub from_journal: bool,
    pub when_false: bool,
}

/// A node's prediction in full.
#[derive(Debug, Clone)]
pub struct NodePrediction {
    pub summary: Prediction,
    /// Its instances, when they are known.
    pub instances: Vec<InstancePrediction>,
    /// Steps that run before this node: if one of them changes, this node runs too.
    pub unless_changed: Vec<String>,
}

/// The short prediction of every node (see [`predict`]).
pub fn predict_skips(
    plan: &Plan,
    records: &HashMap<RecordKey, Record>,
    opts: &RunOptions,
    secrets: &Map<String, Value>,
    key: &SecretKey,
    masker: &Arc<Masker>,
) -> Vec<Prediction> {
    predict(plan, records, opts, secrets, key, masker)
        .into_iter()
        .map(|p| p.summary)
        .collect()
}

/// What a run with `opts` would do with each node, journal-wise.
pub fn predict(
    plan: &Plan,
    records: &HashMap<RecordKey, Record>,
    opts: &RunOptions,
    secrets: &Map<String, Value>,
    key: &SecretKey,
    masker: &Arc<Masker>,
) -> Vec<NodePrediction> {
    predict_with_previews(plan, records, opts, secrets, key, masker).0
}

/// [`predict`], and the instances that would run whose kind previews in
/// `plan` ([`crate::step::StepKind::previews_in_plan`]), built, for
/// [`super::run_previews`].
pub fn predict_with_previews(
    plan: &Plan,
    records: &HashMap<RecordKey, Record>,
    opts: &RunOptions,
    secrets: &Map<String, Value>,
    key: &SecretKey,
    masker: &Arc<Masker>,
) -> (Vec<NodePrediction>, Vec<super::preview::Candidate>) {
    let templates = Templates::new();
    let mut walk = Walk {
        plan,
        opts,
        secrets,
        pipeline: Pipeline {
            templates: &templates,
            masker,
            key,
            records,
            use_journal: !opts.force,
        },
        results: StepResults::new(plan.workflow.steps.len()),
        incomplete: HashSet::new(),
        previews: RefCell::new(Vec::new()),
    };
    let mut done: Vec<Option<NodePrediction>> = vec![None; plan.nodes.len()];
    // Phases hold every node once, each after the nodes it needs.
    for &node in plan.phases.iter().flatten() {
        let p = walk.node(node, &done);
        done[node] = Some(p);
    }
    let predictions = done
        .into_iter()
        .map(|p| {
            p.unwrap_or(NodePrediction {
                summary: Prediction::Unknown,
                instances: Vec::new(),
                unless_changed: Vec::new(),
            })
        })
        .collect();
    (predictions, walk.previews.into_inner())
}

struct Walk<'a> {
    plan: &'a Plan,
    opts: &'a RunOptions,
    secrets: &'a Map<String, Value>,
    pipeline: Pipeline<'a>,
    /// Results of the nodes that would come entirely from the journal.
    results: StepResults,
    /// Steps with a node whose results are not known in advance.
    incomplete: HashSet<usize>,
    /// Instances that would run and can preview their change.
    previews: RefCell<Vec<super::preview::Candidate>>,
}

impl Walk<'_> {
    fn node(&mut self, node: usize, done: &[Option<NodePrediction>]) -> NodePrediction {
        let plan_node = &self.plan.nodes[node];
        let step = &self.plan.workflow.steps[plan_node.step];
        let unless_changed = self.conditions(node, done);
        let mut p = NodePrediction {
            summary: Prediction::Unknown,
            instances: Vec::new(),
            unless_changed,
        };
        if step.runs == Runs::OnFailure {
            p.summary = Prediction::OnFailure;
        } else if !step.journal || self.opts.force || self.opts.verify {
            p.summary = Prediction::Run;
        } else if let Some((summary, instances, result)) = self.instances(node) {
            p.summary = summary;
            p.instances = instances;
            if let Some(result) = result {
                self.results.insert(plan_node.step, &plan_node.host.name, &result);
            }
        }
        if !p.summary.skips_all() {
            self.incomplete.insert(plan_node.step);
        }
        p
    }

    /// The steps whose change would make `node` run: needs that will run,
    /// and what the needs that would not are conditional on.
    fn conditions(&self, node: usize, done: &[Option<NodePrediction>]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for &d in &self.plan.deps[node] {
            let Some(need) = &done[d] else { continue };
            let mut add = |id: &String| {
                if !out.contains(id) {
                    out.push(id.clone());
                }
            };
            if !need.summary.skips_all() {
                add(&self.plan.workflow.steps[self.plan.nodes[d].step].id);
            }
            need.unless_changed.iter().for_each(add);
        }
        out
    }

    /// Every instance of a node, or `None` when one of them cannot be known.
    fn instances(&self, node: usize) -> Option<(Prediction, Vec<InstancePrediction>, Option<StepResult>)> {
        let plan_node = &self.plan.nodes[node];
        let step = &self.plan.workflow.steps[plan_node.step];
        let host = &plan_node.host;
        let vars = self.vars(plan_node.step, host);
        let when_reads_hidden = self.when_reads_hidden(plan_node.step, &host.name);
        let items: Option<Vec<Item>> = match &step.for_each {
            None => None,
            Some(spec) => Some(items::expand(self.pipeline.templates, self.pipeline.masker, step, spec, &vars).ok()?),
        };
        let one = |item: Option<&Item>| -> Option<(InstancePrediction, Status, crate::step::Outputs)> {
            let instance = Instance {
                step,
                host,
                item,
                handler: false,
            };
            let label = item.map(|i| i.label.clone());
            match instance.prepare(&self.pipeline, vars.clone()).ok()? {
                Prepared::WhenFalse if when_reads_hidden => None,
                Prepared::WhenFalse => Some((predicted(label, false, true), Status::Skipped, Map::new())),
                Prepared::Ready(ready) => {
                    if let Some(outputs) = ready.journaled_outputs(false, false) {
                        ready.built.restored(outputs, &self.plan.hosts);
                        return Some((predicted(label, true, false), Status::Ok, outputs.clone()));
                    }
                    if step.kind.previews_in_plan() {
                        let ready = *ready;
                        self.previews.borrow_mut().push(super::preview::Candidate {
                            step: step.id.clone(),
                            host: host.clone(),
                            item: label.clone(),
                            timeout: step.timeout,
                            built: ready.built,
                            become_: ready.become_,
                            previous: ready.previous,
                        });
                    }
                    Some((predicted(label, false, false), Status::Changed, Map::new()))
                }
            }
        };
        let Some(items) = items else {
            let (instance, status, outputs) = one(None)?;
            let summary = match (instance.from_journal, instance.when_false) {
                (true, _) => Prediction::Skip,
                (_, true) => Prediction::WhenFalse,
                _ => Prediction::Run,
            };
            let result = summary.skips_all().then_some(StepResult::Single { outputs, status });
            return Some((summary, vec![instance], result));
        };
        let mut instances = Vec::with_capacity(items.len());
        let mut results = Vec::with_capacity(items.len());
        for item in &items {
            let (instance, status, outputs) = one(Some(item))?;
            instances.push(instance);
            results.push(ItemResult {
                item: item.value.clone(),
                outputs,
                status,
            });
        }
        let skip = instances.iter().filter(|i| i.from_journal || i.when_false).count();
        let summary = Prediction::Items {
            skip,
            total: items.len(),
        };
        let status = results
            .iter()
            .map(|r| r.status)
            .max_by_key(|s| s.severity())
            .unwrap_or(Status::Skipped);
        let result = summary.skips_all().then_some(StepResult::Items { results, status });
        Some((summary, instances, result))
    }

    /// Whether `steps.*` of `host` shows ancestor `a`: a step whose results
    /// on other hosts are not all known is left out rather than shown partly.
    fn visible(&self, a: usize, host: &str) -> bool {
        self.results.has(a, host) || !self.incomplete.contains(&a)
    }

    /// Whether the `when` of `step` reads a step left out of its scope: one
    /// whose outputs only running gives (then the run decides it).
    fn when_reads_hidden(&self, step: usize, host: &str) -> bool {
        self.plan.workflow.steps[step]
            .when
            .as_deref()
            .is_some_and(|when| self.hidden(step, host).any(|id| mentions(when, id)))
    }

    /// The ids of the ancestors of `step` that [`Self::vars`] leaves out.
    fn hidden<'s>(&'s self, step: usize, host: &'s str) -> impl Iterator<Item = &'s str> + 's {
        let workflow = &self.plan.workflow;
        workflow.ancestors[step]
            .iter()
            .copied()
            .filter(move |&a| !self.visible(a, host))
            .map(move |a| workflow.steps[a].id.as_str())
    }

    /// The node's variables, as a run builds them (see [`Self::visible`]).
    fn vars(&self, step: usize, host: &crate::host::Host) -> Value {
        let workflow = &self.plan.workflow;
        let base = base_vars(&workflow.vars, host, &self.opts.extra_vars, self.secrets);
        let visible = workflow.ancestors[step]
            .iter()
            .copied()
            .filter(|&a| self.visible(a, &host.name))
            .map(|a| (a, workflow.steps[a].id.as_str()));
        let steps = self.results.scope(visible, &host.name, &self.plan.hosts);
        instance_vars(Some(&base), Some(host), steps)
    }
}

/// Whether template `text` names step `id` (`steps.ID`, `"ID"`): `id` not
/// inside a longer id.
fn mentions(text: &str, id: &str) -> bool {
    let part_of_id = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    text.match_indices(id).any(|(at, _)| {
        !text[..at].chars().next_back().is_some_and(part_of_id)
            && !text[at + id.len()..].chars().next().is_some_and(part_of_id)
    })
}

fn predicted(item: Option<String>, from_journal: bool, when_false: bool) -> InstancePrediction {
    InstancePrediction {
        item,
        from_journal,
        when_false,
    }
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn a_template_mentions_a_step_by_its_whole_id() {
        let when = "{{#if steps.select-runner.outputs.runner}}{{eq inventory_hostname steps.select-runner.outputs.runner}}{{/if}}";
        assert!(mentions(when, "select-runner"));
        assert!(!mentions(when, "select"));
        assert!(!mentions(when, "elect-runner"));
        assert!(mentions("{{lookup steps \"probe\"}}", "probe"));
        assert!(!mentions("{{steps.probe2.outputs.x}}", "probe"));
    }
}
