//! A step's `with` against its kind: unknown parameters (with the valid
//! ones), missing required ones, exclusive groups, and every parameter that
//! contains no template checked by its declared type — strings, numbers,
//! booleans, lists, durations, choices, octal modes, URLs — so a literal
//! mistake fails when the workflow loads, at the value, before anything runs.

use super::syntax::key_pos;
use crate::diag::{did_you_mean, suggest, Diagnostic, Diagnostics, Source};
use crate::model::parse_duration;
use crate::step::{check_url, parse_mode, ParamType, StepKind, ValuePath};
use crate::template::Templates;
use crate::yaml::{Key, YValue, Yaml};
use serde_json::{Map, Value};
use std::collections::HashSet;

pub(super) fn check_params(
    src: &Source,
    node: &Yaml,
    with: Option<&Yaml>,
    kind: &dyn StepKind,
    id: &str,
    errs: &mut Diagnostics,
) {
    let info = kind.info();
    let start = errs.0.len();
    let names: Vec<&str> = info.params.iter().map(|p| p.name).collect();
    let entries = with.and_then(Yaml::as_map).unwrap_or_default();
    for (k, v) in entries {
        let Some(spec) = info.params.iter().find(|p| p.name == k.name) else {
            errs.push(suggest(
                Diagnostic::at(
                    src,
                    key_pos(k),
                    format!("unknown parameter `{}` for step `{}`", k.name, info.name),
                ),
                &k.name,
                &names,
                "parameters",
            ));
            continue;
        };
        if let Some(problem) = literal_problem(spec.ty, v) {
            errs.push(Diagnostic::at(
                src,
                v.pos,
                format!(
                    "parameter `{}` of step `{id}` must be {}, found {problem}",
                    spec.name, spec.ty
                ),
            ));
        }
    }
    if errs.0.len() == start {
        check_kind_literals(src, entries, kind, id, errs);
    }
    let given: HashSet<&str> = entries.iter().map(|(k, _)| k.name.as_str()).collect();
    let at = with.map_or_else(|| node.get("uses").map_or(node.pos, |u| u.pos), |w| w.pos);
    for spec in info.params.iter().filter(|p| p.required) {
        if !given.contains(spec.name) {
            errs.push(
                Diagnostic::at(
                    src,
                    at,
                    format!(
                        "step `{id}` (`{}`) is missing the required parameter `{}`",
                        info.name, spec.name
                    ),
                )
                .help(format!("`{}`: {}", spec.name, spec.doc)),
            );
        }
    }
    for group in info.one_of {
        let n = group.iter().filter(|g| given.contains(*g)).count();
        if n != 1 {
            let list = group.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(" or ");
            let msg = if n == 0 {
                format!("step `{id}` (`{}`) needs one of {list}", info.name)
            } else {
                format!("step `{id}` (`{}`) takes only one of {list}", info.name)
            };
            errs.push(Diagnostic::at(src, at, msg));
        }
    }
}

/// The kind's own checks of the parameters that contain no template
/// (their types passed), each problem at the value or the part it names.
fn check_kind_literals(src: &Source, entries: &[(Key, Yaml)], kind: &dyn StepKind, id: &str, errs: &mut Diagnostics) {
    let literals: Map<String, Value> = entries
        .iter()
        .filter(|(_, v)| !has_template(v))
        .map(|(k, v)| (k.name.clone(), v.to_json()))
        .collect();
    if literals.is_empty() {
        return;
    }
    for problem in kind.check_literals(&literals) {
        let Some((_, value)) = entries.iter().find(|(k, _)| k.name == problem.param) else {
            continue;
        };
        let at = problem.at.iter().try_fold(value, |v, part| match part {
            ValuePath::Index(i) => v.as_seq().and_then(|s| s.get(*i)),
            ValuePath::Key(k) => v.get(k),
        });
        errs.push(Diagnostic::at(
            src,
            at.unwrap_or(value).pos,
            format!("parameter `{}` of step `{id}`: {}", problem.param, problem.message),
        ));
    }
}

/// Whether any string in the value is a template.
fn has_template(v: &Yaml) -> bool {
    match &v.value {
        YValue::Str(s) => Templates::is_template(s),
        YValue::Seq(items) => items.iter().any(has_template),
        YValue::Map(entries) => entries
            .iter()
            .any(|(k, x)| Templates::is_template(&k.name) || has_template(x)),
        _ => false,
    }
}

/// What is wrong with a literal value for type `ty`, if anything (a value
/// that is a template is checked when it renders).
pub(super) fn literal_problem(ty: ParamType, v: &Yaml) -> Option<String> {
    if v.as_str().is_some_and(Templates::is_template) {
        return None;
    }
    let ok = match (ty, &v.value) {
        (ParamType::Any, _) | (_, YValue::Null) => true,
        (ParamType::Str, YValue::Str(_) | YValue::Int(_) | YValue::Float(_) | YValue::Bool(_)) => true,
        (ParamType::Int, YValue::Int(_)) => true,
        (ParamType::Int, YValue::Str(s)) => s.trim().parse::<i64>().is_ok(),
        (ParamType::Bool, YValue::Bool(_)) => true,
        (ParamType::StrList, YValue::Str(_) | YValue::Int(_)) => true,
        (ParamType::StrList, YValue::Seq(items)) => items.iter().all(|i| i.scalar_text().is_some()),
        (ParamType::List, YValue::Seq(_)) => true,
        (ParamType::Map, YValue::Map(_)) => true,
        (ParamType::Duration, YValue::Int(_) | YValue::Float(_)) => true,
        (ParamType::Duration, YValue::Str(s)) => return parse_duration(s).err(),
        (ParamType::Enum(choices), YValue::Str(s)) => return enum_problem(choices, s),
        (ParamType::Mode, YValue::Str(_) | YValue::Int(_)) => {
            let text = v.scalar_text().unwrap_or_default();
            return parse_mode(&text).err().map(|_| format!("`{text}`"));
        }
        (ParamType::Url, YValue::Str(s)) => return check_url(s).err(),
        _ => false,
    };
    (!ok).then(|| v.kind().to_owned())
}

fn enum_problem(choices: &[&str], s: &str) -> Option<String> {
    if choices.contains(&s) {
        return None;
    }
    let mut m = format!("`{s}`");
    if let Some(c) = did_you_mean(s, choices.iter().copied()) {
        m.push_str(&format!(" (did you mean `{c}`?)"));
    }
    Some(m)
}
