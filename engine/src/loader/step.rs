//! One step or handler mapping → a [`RawStep`]: its keys checked against
//! what a step (or a handler) may have, its step kind found in the registry,
//! its parameters checked against the kind, and every other key read into
//! its type, each problem reported where it was written.

use super::params::check_params;
use super::raw::RawStep;
use super::syntax::{boolean, condition, duration, key_pos, string, text, text_list, unknown_key, Text};
use crate::diag::{did_you_mean, suggest, Diagnostic, Diagnostics, Source};
use crate::model::{Retry, Runs};
use crate::registry::Registry;
use crate::step::StepKind;
use crate::yaml::{YValue, Yaml};
use std::sync::Arc;

pub(super) const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "hosts",
    "uses",
    "with",
    "needs",
    "runs",
    "notify",
    "when",
    "for_each",
    "label",
    "retry",
    "timeout",
    "tags",
    "journal",
    "become",
    "become_user",
    "ignore_errors",
    "changed_when",
];
pub(super) const HANDLER_KEYS: &[&str] = &[
    "id",
    "name",
    "uses",
    "with",
    "when",
    "retry",
    "timeout",
    "become",
    "become_user",
    "ignore_errors",
    "changed_when",
];
pub(super) const RETRY_KEYS: &[&str] = &[
    "attempts",
    "delay",
    "backoff",
    "max_delay",
    "jitter",
    "deadline",
    "until",
];

/// Parse a step (or handler); `None` when it has errors (they are in `errs`).
pub(super) fn parse_step(
    src: &Arc<Source>,
    node: &Yaml,
    handler: bool,
    registry: &Registry,
    errs: &mut Diagnostics,
) -> Option<RawStep> {
    let what = if handler { "handler" } else { "step" };
    let Some(entries) = node.as_map() else {
        errs.push(Diagnostic::at(
            src,
            node.pos,
            format!("a {what} is a mapping with `id` and `uses`, found {}", node.kind()),
        ));
        return None;
    };
    let before = errs.0.len();
    let valid = if handler { HANDLER_KEYS } else { STEP_KEYS };
    for (k, _) in entries {
        if !valid.contains(&k.name.as_str()) {
            errs.push(if handler && STEP_KEYS.contains(&k.name.as_str()) {
                Diagnostic::at(src, key_pos(k), format!("`{}` is not allowed in a handler", k.name))
            } else {
                unknown_key(src, k, &format!("a {what}"), valid)
            });
        }
    }
    let id = parse_id(src, node, what, errs);
    let kind = parse_kind(src, node, what, registry, errs);
    let with = parse_with(src, node, errs);
    if let (Some(kind), Some(id)) = (&kind, &id) {
        check_params(src, node, with.as_ref(), kind.as_ref(), id, errs);
    }
    let step = fields(src, node, handler, id?, kind?, with, errs);
    (errs.0.len() == before).then_some(step)
}

fn parse_id(src: &Source, node: &Yaml, what: &str, errs: &mut Diagnostics) -> Option<String> {
    let Some(v) = node.get("id") else {
        errs.push(Diagnostic::at(src, node.pos, format!("this {what} has no `id`")));
        return None;
    };
    match v.scalar_text() {
        Some(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => Some(s),
        _ => {
            errs.push(Diagnostic::at(src, v.pos, "an id is letters, digits, `-` and `_`"));
            None
        }
    }
}

fn parse_kind(
    src: &Source,
    node: &Yaml,
    what: &str,
    registry: &Registry,
    errs: &mut Diagnostics,
) -> Option<Arc<dyn StepKind>> {
    let Some(v) = node.get("uses") else {
        errs.push(Diagnostic::at(
            src,
            node.pos,
            format!("this {what} has no `uses` (the built-in step it runs)"),
        ));
        return None;
    };
    if let Some(k) = v.as_str().and_then(|n| registry.get(n)) {
        return Some(k.clone());
    }
    let name = v.scalar_text().unwrap_or_default();
    errs.push(suggest(
        Diagnostic::at(src, v.pos, format!("unknown step `{name}`")),
        &name,
        &registry.names(),
        "steps",
    ));
    None
}

fn parse_with(src: &Source, node: &Yaml, errs: &mut Diagnostics) -> Option<Yaml> {
    let w = node.get("with")?;
    match &w.value {
        YValue::Map(_) => Some(w.clone()),
        YValue::Null => None,
        _ => {
            errs.push(Diagnostic::at(
                src,
                w.pos,
                format!("`with` must be a mapping of parameters, found {}", w.kind()),
            ));
            None
        }
    }
}

/// Every other key of the step.
fn fields(
    src: &Arc<Source>,
    node: &Yaml,
    handler: bool,
    id: String,
    kind: Arc<dyn StepKind>,
    with: Option<Yaml>,
    errs: &mut Diagnostics,
) -> RawStep {
    let get = |key: &str| node.get(key);
    let (retry, until) = get("retry").map_or((None, None), |r| parse_retry(src, r, errs));
    let journal = match get("journal") {
        None => kind.info().journal,
        Some(v) => boolean(src, v, "journal", errs).unwrap_or(true),
    };
    // A rollback or cleanup must run whenever it is called for.
    let journal = journal
        && !get("runs")
            .and_then(Yaml::as_str)
            .and_then(Runs::parse)
            .is_some_and(Runs::handles_failures);
    let (for_each, label) = for_each_and_label(src, node, errs);
    let list = |key: &str, errs: &mut Diagnostics| get(key).map(|v| text_list(src, v, key, errs)).unwrap_or_default();
    let needs = list("needs", errs);
    let runs = parse_runs(src, node, needs.is_empty(), errs);
    check_journal_with_runs(src, node, runs, errs);
    RawStep {
        source: src.clone(),
        handler,
        pos: get("id").map_or(node.pos, |v| v.pos),
        id,
        name: get("name").and_then(|v| string(src, v, "name", errs)),
        hosts: get("hosts").and_then(|v| text(src, v, "hosts", errs)),
        needs,
        needs_pos: get("needs").map(|v| v.pos),
        runs,
        notify: list("notify", errs),
        tags: list("tags", errs).into_iter().map(|t| t.value).collect(),
        when: get("when").and_then(|v| condition(src, v, "when", errs)),
        changed_when: get("changed_when").and_then(|v| condition(src, v, "changed_when", errs)),
        for_each,
        label,
        retry,
        until,
        timeout: get("timeout").and_then(|v| duration(src, v, errs)),
        journal,
        become_: get("become").and_then(|v| boolean(src, v, "become", errs)),
        become_user: get("become_user").and_then(|v| string(src, v, "become_user", errs)),
        ignore_errors: get("ignore_errors")
            .and_then(|v| boolean(src, v, "ignore_errors", errs))
            .unwrap_or(false),
        kind,
        with,
    }
}

/// `for_each` (a list, or a template that renders to one) and `label`
/// (which needs it).
fn for_each_and_label(src: &Arc<Source>, node: &Yaml, errs: &mut Diagnostics) -> (Option<Yaml>, Option<Text>) {
    let for_each = node.get("for_each").and_then(|v| match &v.value {
        YValue::Seq(_) | YValue::Str(_) => Some(v.clone()),
        _ => {
            errs.push(Diagnostic::at(
                src,
                v.pos,
                "`for_each` must be a list or a template that renders to one",
            ));
            None
        }
    });
    let label = node.get("label").and_then(|v| text(src, v, "label", errs));
    if let (Some(l), None) = (&label, node.get("for_each")) {
        errs.push(
            Diagnostic::at(
                src,
                l.pos,
                "`label` names the items of `for_each`, and this step has none",
            )
            .help("remove `label`, or add `for_each`"),
        );
    }
    (for_each, label)
}

/// `journal: true` cannot hold on a step that runs on failure or always.
fn check_journal_with_runs(src: &Source, node: &Yaml, runs: Runs, errs: &mut Diagnostics) {
    if runs.handles_failures()
        && node
            .get("journal")
            .is_some_and(|v| matches!(v.value, YValue::Bool(true)))
    {
        errs.push(Diagnostic::at(
            src,
            node.get("journal").map_or(node.pos, |v| v.pos),
            format!(
                "a `runs: {}` step always runs when it runs: it is never taken from the journal, so `journal: true` cannot hold",
                runs.as_str()
            ),
        ));
    }
}

/// `runs`: `on_success` (default), `on_failure` or `always`; the last two
/// only on a step that needs others (they are about what those did).
fn parse_runs(src: &Source, node: &Yaml, no_needs: bool, errs: &mut Diagnostics) -> Runs {
    let Some(v) = node.get("runs") else {
        return Runs::OnSuccess;
    };
    let word = v.scalar_text().unwrap_or_default();
    let Some(runs) = Runs::parse(&word) else {
        let mut d = Diagnostic::at(
            src,
            v.pos,
            format!("`runs` must be `on_success`, `on_failure` or `always`, found `{word}`"),
        );
        if let Some(s) = did_you_mean(&word, Runs::WORDS.iter().copied()) {
            d = d.help(format!("did you mean `{s}`?"));
        }
        errs.push(d);
        return Runs::OnSuccess;
    };
    if runs.handles_failures() && no_needs {
        errs.push(
            Diagnostic::at(
                src,
                v.pos,
                format!("a `runs: {word}` step acts on the steps it needs, and this one needs none"),
            )
            .help("add `needs: [...]` with the steps whose failure it handles"),
        );
    }
    runs
}

/// `retry`: `{ attempts, delay, backoff, max_delay, jitter, deadline, until }`.
fn parse_retry(src: &Source, r: &Yaml, errs: &mut Diagnostics) -> (Option<Retry>, Option<Text>) {
    let Some(entries) = r.as_map() else {
        errs.push(Diagnostic::at(
            src,
            r.pos,
            "`retry` must be a mapping: `{ attempts: 5, delay: 2s, backoff: 2.0, until: \"...\" }`",
        ));
        return (None, None);
    };
    let mut retry = Retry::default();
    let mut until = None;
    let number = |v: &Yaml| match v.value {
        YValue::Int(n) => Some(n as f64),
        YValue::Float(f) => Some(f),
        _ => None,
    };
    for (k, v) in entries {
        let bad = |errs: &mut Diagnostics, m: &str| errs.push(Diagnostic::at(src, v.pos, m.to_owned()));
        match k.name.as_str() {
            "attempts" => match v.value {
                YValue::Int(n) if (1..=1000).contains(&n) => retry.attempts = u32::try_from(n).unwrap_or(1),
                _ => bad(errs, "`attempts` must be an integer from 1 to 1000"),
            },
            "delay" => retry.delay = duration(src, v, errs).unwrap_or(retry.delay),
            "max_delay" => retry.max_delay = duration(src, v, errs).unwrap_or(retry.max_delay),
            "deadline" => retry.deadline = duration(src, v, errs).or(retry.deadline),
            "backoff" => match number(v) {
                Some(f) if (1.0..=10.0).contains(&f) => retry.backoff = f,
                _ => bad(errs, "`backoff` must be a number from 1.0 to 10.0"),
            },
            "jitter" => match (&v.value, number(v)) {
                (YValue::Bool(b), _) => retry.jitter = if *b { 0.5 } else { 0.0 },
                (_, Some(f)) if (0.0..=1.0).contains(&f) => retry.jitter = f,
                _ => bad(errs, "`jitter` must be a boolean or a fraction from 0 to 1"),
            },
            "until" => until = text(src, v, "until", errs),
            _ => errs.push(unknown_key(src, k, "`retry`", RETRY_KEYS)),
        }
    }
    (Some(retry), until)
}
