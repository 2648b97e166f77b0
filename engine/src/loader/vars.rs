//! Template references, checked at load time against what will be defined
//! where each template is used: workflow, inventory and `-e` variables, the
//! declared secrets, and the outputs of the steps in `needs` (directly or
//! not) — with `item` inside `for_each` and `outputs` in `changed_when` and
//! `retry.until`. Template files a step renders are checked the same way.
//! Secrets may not be rendered into parameters that end up in a process's
//! argv.

use super::raw::RawStep;
use super::syntax::Text;
use crate::diag::{did_you_mean, Diagnostic, Diagnostics, Pos};
use crate::template;
use crate::yaml::{YValue, Yaml};
use std::collections::{HashMap, HashSet};

/// Names always defined in templates.
const BUILTIN_VARS: &[&str] = &["host", "inventory_hostname", "secrets", "steps", "workflow"];

/// The variables a template may refer to.
pub(super) struct KnownVars {
    globals: HashSet<String>,
    secrets: Vec<String>,
    /// For each step: its transitive `needs`.
    ancestors: HashMap<String, HashSet<String>>,
    /// For each step: its kind's outputs, secret outputs, and whether it runs `for_each`.
    outputs: HashMap<String, (&'static [&'static str], &'static [&'static str], bool)>,
    all_steps: HashSet<String>,
}

impl KnownVars {
    pub fn new(globals: impl Iterator<Item = String>, secrets: Vec<String>, steps: &[RawStep]) -> Self {
        let mut globals: HashSet<String> = globals.collect();
        globals.extend(BUILTIN_VARS.iter().map(|s| (*s).to_owned()));
        let needs: HashMap<&str, &Vec<Text>> = steps.iter().map(|d| (d.id.as_str(), &d.needs)).collect();
        let mut ancestors = HashMap::new();
        for d in steps {
            let mut set = HashSet::new();
            let mut stack: Vec<&str> = d.needs.iter().map(|t| t.value.as_str()).collect();
            while let Some(s) = stack.pop() {
                if set.insert(s.to_owned()) {
                    if let Some(n) = needs.get(s) {
                        stack.extend(n.iter().map(|t| t.value.as_str()));
                    }
                }
            }
            ancestors.insert(d.id.clone(), set);
        }
        let outputs = steps
            .iter()
            .map(|d| {
                let info = d.kind.info();
                (d.id.clone(), (info.outputs, info.secret_outputs, d.for_each.is_some()))
            })
            .collect();
        Self {
            globals,
            secrets,
            ancestors,
            outputs,
            all_steps: steps.iter().map(|d| d.id.clone()).collect(),
        }
    }

    /// `None` when the reference is fine, else the problem.
    fn problem(&self, path: &[String], step: &RawStep, extra: &[&str]) -> Option<String> {
        let root = path[0].as_str();
        if extra.contains(&root) {
            return None;
        }
        match root {
            "secrets" => self.secret_problem(path.get(1)?),
            "steps" => self.step_problem(path, step),
            _ if self.globals.contains(root) => None,
            "failure" | "failures" => Some(format!(
                "`{root}` is defined only in a step with `runs: on_failure` or `runs: always`"
            )),
            _ => {
                let mut m = format!("undefined variable `{root}`");
                let mut candidates: Vec<&str> = self.globals.iter().map(String::as_str).collect();
                candidates.extend(extra.iter().copied());
                candidates.sort_unstable();
                if let Some(s) = did_you_mean(root, candidates) {
                    m.push_str(&format!(" (did you mean `{s}`?)"));
                }
                Some(m)
            }
        }
    }

    fn secret_problem(&self, name: &String) -> Option<String> {
        if self.secrets.contains(name) {
            return None;
        }
        let mut m = format!("secret `{name}` is not defined in `secrets`");
        if let Some(s) = did_you_mean(name, self.secrets.iter().map(String::as_str)) {
            m.push_str(&format!(" (did you mean `{s}`?)"));
        }
        Some(m)
    }

    fn step_problem(&self, path: &[String], step: &RawStep) -> Option<String> {
        let id = path.get(1)?;
        let visible = if step.handler {
            self.all_steps.contains(id)
        } else {
            self.ancestors.get(&step.id).is_some_and(|a| a.contains(id))
        };
        if !visible {
            return Some(if self.all_steps.contains(id) {
                format!(
                    "`steps.{id}` is used but step `{}` does not need `{id}` (add it to `needs`)",
                    step.id
                )
            } else {
                format!("`steps.{id}`: there is no step `{id}`")
            });
        }
        let section = path.get(2)?;
        let (outputs, _, for_each) = self.outputs.get(id.as_str()).copied().unwrap_or((&[], &[], false));
        match section.as_str() {
            "outputs" if for_each => Some(format!(
                "step `{id}` runs `for_each`: use `steps.{id}.results`, a list of each item's `outputs`"
            )),
            "outputs" => {
                let key = path.get(3)?;
                if outputs.is_empty() || outputs.contains(&key.as_str()) {
                    return None;
                }
                let mut m = format!("step `{id}` has no output `{key}`");
                if let Some(s) = did_you_mean(key, outputs.iter().copied()) {
                    m.push_str(&format!(" (did you mean `{s}`?)"));
                }
                m.push_str(&format!("; its outputs: {}", outputs.join(", ")));
                Some(m)
            }
            // `hosts.NAME.outputs...`: per host, for a step that ran on other hosts.
            "results" | "status" | "changed" | "hosts" => None,
            other => Some(format!(
                "`steps.{id}.{other}`: a step has `outputs`, `results`, `status`, `changed` and `hosts`"
            )),
        }
    }

    /// The secret a reference reads, if it reads one: `secrets.NAME`, or a
    /// secret output of a step (`steps.ID.outputs.K`).
    fn secret_read(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "secrets" => Some(format!("secret `{}`", path.get(1)?)),
            "steps" if path.get(2).map(String::as_str) == Some("outputs") => {
                let (id, key) = (path.get(1)?, path.get(3)?);
                let (_, secret, _) = self.outputs.get(id.as_str())?;
                secret
                    .contains(&key.as_str())
                    .then(|| format!("secret output `steps.{id}.outputs.{key}`"))
            }
            _ => None,
        }
    }
}

/// Every template of a step: its references, and secrets kept off argv.
pub(super) fn check_templates(step: &RawStep, known: &KnownVars, errs: &mut Diagnostics) {
    let mut scope: Vec<&str> = Vec::new();
    if step.for_each.is_some() {
        scope.push("item");
    }
    if step.runs.handles_failures() {
        scope.extend(["failure", "failures"]);
    }
    let item = scope.as_slice();
    let with_outputs: Vec<&str> = std::iter::once("outputs").chain(item.iter().copied()).collect();
    let mut check = |v: &Yaml, place: &str, extra: &[&str]| {
        visit_strings(v, &mut |s, pos| check_one(step, known, s, pos, place, extra, errs));
    };
    let entries = step.with.as_ref().and_then(Yaml::as_map).unwrap_or_default();
    for (k, v) in entries {
        check(v, &format!("`with.{}`", k.name), item);
    }
    let text = |t: &Text| Yaml {
        pos: t.pos,
        value: YValue::Str(t.value.clone()),
    };
    if let Some(t) = &step.when {
        check(&text(t), "`when`", item);
    }
    if let Some(v) = &step.for_each {
        let failures: &[&str] = if step.runs.handles_failures() {
            &["failure", "failures"]
        } else {
            &[]
        };
        check(v, "`for_each`", failures);
    }
    if let Some(t) = &step.label {
        check(&text(t), "`label`", &["item"]);
    }
    if let Some(t) = &step.hosts {
        check(&text(t), "`hosts`", &[]);
    }
    if let Some(t) = &step.changed_when {
        check(&text(t), "`changed_when`", &with_outputs);
    }
    if let Some(t) = &step.until {
        check(&text(t), "`retry.until`", &with_outputs);
    }
    check_no_secrets(step, known, errs);
    check_template_file(step, known, item, errs);
}

fn check_one(
    step: &RawStep,
    known: &KnownVars,
    text: &str,
    pos: Pos,
    place: &str,
    extra: &[&str],
    errs: &mut Diagnostics,
) {
    match template::references(text) {
        Err(e) => errs.push(Diagnostic::at(
            &step.source,
            pos,
            format!("{place} of step `{}`: {}", step.id, e.message),
        )),
        Ok(refs) => {
            for r in refs {
                if let Some(problem) = known.problem(&r.path, step, extra) {
                    errs.push(Diagnostic::at(
                        &step.source,
                        pos,
                        format!("{problem}, in {place} of step `{}`", step.id),
                    ));
                }
            }
        }
    }
}

/// Parameters whose value ends up in a process's argv may not carry a secret.
fn check_no_secrets(step: &RawStep, known: &KnownVars, errs: &mut Diagnostics) {
    let info = step.kind.info();
    for (k, v) in step.with.as_ref().and_then(Yaml::as_map).unwrap_or_default() {
        if !info.params.iter().any(|p| p.name == k.name && p.no_secrets) {
            continue;
        }
        visit_strings(v, &mut |s, pos| {
            let Ok(refs) = template::references(s) else { return };
            if let Some(what) = refs.iter().find_map(|r| known.secret_read(&r.path)) {
                errs.push(
                    Diagnostic::at(
                        &step.source,
                        pos,
                        format!(
                            "{what} in `with.{}` of step `{}`: a command's argv is visible to every user of the machine",
                            k.name, step.id
                        ),
                    )
                    .help("pass it through `env` (read as `$NAME` in a `shell` command) or `stdin`"),
                );
            }
        });
    }
}

/// The variables a step's template file reads (`template`'s `src`), checked
/// like those of its parameters; errors point at `src` and name the file's line.
fn check_template_file(step: &RawStep, known: &KnownVars, item: &[&str], errs: &mut Diagnostics) {
    use crate::template_files::{check, Checked, TEMPLATE_FILE_PARAMS};
    let Some((_, param)) = TEMPLATE_FILE_PARAMS.iter().find(|(k, _)| *k == step.kind_name()) else {
        return;
    };
    let Some(v) = step.with.as_ref().and_then(|w| w.get(param)) else {
        return;
    };
    let Some(file) = v.as_str() else { return };
    match check(step.dir(), file) {
        Checked::Skipped => {}
        Checked::Invalid(e) => errs.push(Diagnostic::at(
            &step.source,
            v.pos,
            format!("template of step `{}`: {}", step.id, e.message),
        )),
        Checked::Refs(refs) => {
            for r in refs {
                if let Some(problem) = known.problem(&r.var.path, step, item) {
                    let at = r.line.map_or_else(|| file.to_owned(), |l| format!("{file}:{l}"));
                    errs.push(Diagnostic::at(
                        &step.source,
                        v.pos,
                        format!("{problem}, in template `{at}` of step `{}`", step.id),
                    ));
                }
            }
        }
    }
}

fn visit_strings(v: &Yaml, f: &mut dyn FnMut(&str, Pos)) {
    match &v.value {
        YValue::Str(s) => f(s, v.pos),
        YValue::Seq(items) => items.iter().for_each(|i| visit_strings(i, f)),
        YValue::Map(entries) => entries.iter().for_each(|(_, x)| visit_strings(x, f)),
        _ => {}
    }
}
