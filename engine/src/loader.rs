//! Loading and analysis: workflow files (with their imports) become a checked
//! [`Workflow`]. Every problem found is a diagnostic that points at the file,
//! line and column: YAML syntax, unknown keys, unknown step kinds, unknown or
//! missing parameters and literal values of the wrong type, duplicate ids,
//! unknown `needs` and `notify`, dependency and import cycles, bad durations,
//! host patterns naming nothing in the inventory, and template variables that
//! are not defined where they are used. Nothing runs unless all of it passes.

use crate::diag::{did_you_mean, suggest, Diagnostic, Diagnostics, Pos, Source};
use crate::inventory::Inventory;
use crate::model::{parse_duration, Retry, SecretDef, StepDef, Workflow};
use crate::registry::Registry;
use crate::step::{KindInfo, ParamType};
use crate::template::{self, Templates};
use crate::yaml::{self, Key, YValue, Yaml};
use indexmap::IndexMap;
use petgraph::graph::DiGraph;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const WORKFLOW_KEYS: &[&str] = &[
    "name",
    "description",
    "imports",
    "vars",
    "secrets",
    "steps",
    "handlers",
    "fail_fast",
    "max_fail_percentage",
];
const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "hosts",
    "uses",
    "with",
    "needs",
    "notify",
    "when",
    "for_each",
    "retry",
    "timeout",
    "tags",
    "journal",
    "become",
    "become_user",
    "ignore_errors",
    "changed_when",
];
const HANDLER_KEYS: &[&str] = &[
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
const RETRY_KEYS: &[&str] = &["attempts", "delay", "backoff", "until"];
/// Names always defined in templates.
const BUILTIN_VARS: &[&str] = &["host", "inventory_hostname", "secrets", "steps", "workflow"];

/// What loading needs besides the file.
pub struct LoadContext<'a> {
    pub registry: &'a Registry,
    pub inventory: &'a Inventory,
    pub extra_vars: &'a Map<String, Value>,
}

/// One parsed file, before merging.
struct FileParts {
    source: Arc<Source>,
    name: Option<String>,
    description: Option<String>,
    vars: Vec<(Key, Yaml)>,
    secrets: Vec<(Key, Yaml)>,
    steps: Vec<Yaml>,
    handlers: Vec<Yaml>,
    fail_fast: bool,
    max_fail_percentage: Option<f64>,
}

/// Load and check a workflow file and its imports.
pub fn load(path: &Path, cx: &LoadContext<'_>) -> Result<Workflow, Diagnostics> {
    let mut errs = Diagnostics::default();
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    read_tree(path, &mut Vec::new(), &mut seen, &mut files, &mut errs);
    if !errs.is_empty() {
        return Err(errs);
    }
    let root = files.last().expect("the root file is read last");
    let name = root.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map_or_else(|| "workflow".into(), |s| s.to_string_lossy().into_owned())
    });
    let description = root.description.clone();
    let fail_fast = root.fail_fast;
    let max_fail_percentage = root.max_fail_percentage;

    let mut vars = Map::new();
    let mut secrets: IndexMap<String, SecretDef> = IndexMap::new();
    for f in &files {
        for (k, v) in &f.vars {
            vars.insert(k.name.clone(), v.to_json());
        }
        for (k, v) in &f.secrets {
            if let Some(def) = parse_secret(&f.source, k, v, &mut errs) {
                secrets.insert(k.name.clone(), def);
            }
        }
    }

    let mut steps: Vec<(StepDef, Arc<Source>, Yaml)> = Vec::new();
    let mut handlers: Vec<(StepDef, Arc<Source>, Yaml)> = Vec::new();
    let mut ids: HashMap<String, (PathBuf, Pos)> = HashMap::new();
    for f in &files {
        for (node, handler) in f
            .steps
            .iter()
            .map(|n| (n, false))
            .chain(f.handlers.iter().map(|n| (n, true)))
        {
            let Some(def) = parse_step(&f.source, node, handler, cx.registry, &mut errs) else {
                continue;
            };
            let key = if handler {
                format!("handler:{}", def.id)
            } else {
                def.id.clone()
            };
            if let Some((file, pos)) = ids.get(&key) {
                let id_pos = node.get("id").map_or(node.pos, |v| v.pos);
                errs.push(Diagnostic::at(
                    &f.source,
                    id_pos,
                    format!(
                        "duplicate {} id `{}` (first defined at {}:{}:{})",
                        if handler { "handler" } else { "step" },
                        def.id,
                        file.display(),
                        pos.line,
                        pos.col
                    ),
                ));
                continue;
            }
            ids.insert(key, (f.source.path.clone(), def.pos));
            if handler {
                handlers.push((def, f.source.clone(), node.clone()));
            } else {
                steps.push((def, f.source.clone(), node.clone()));
            }
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }

    check_references(&steps, &handlers, &mut errs);
    if errs.is_empty() {
        check_cycles(&steps, &mut errs);
    }
    if errs.is_empty() {
        let known = KnownVars::new(&vars, cx, &secrets, &steps);
        for (def, src, node) in &steps {
            check_hosts(def, src, node, cx.inventory, &mut errs);
            check_templates(def, src, node, &known, false, &mut errs);
        }
        for (def, src, node) in &handlers {
            check_templates(def, src, node, &known, true, &mut errs);
        }
    }
    errs.into_result(())?;
    let steps: Vec<StepDef> = steps.into_iter().map(|(d, _, _)| d).collect();
    Ok(Workflow {
        name,
        description,
        path: path.to_path_buf(),
        vars,
        secrets,
        ancestors: Workflow::compute_ancestors(&steps),
        steps,
        handlers: handlers.into_iter().map(|(d, _, _)| d).collect(),
        fail_fast,
        max_fail_percentage,
    })
}

/// Read a file and, depth first, its imports; files are pushed imports first.
fn read_tree(
    path: &Path,
    stack: &mut Vec<PathBuf>,
    seen: &mut HashSet<PathBuf>,
    out: &mut Vec<FileParts>,
    errs: &mut Diagnostics,
) {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let source = match Source::read(path) {
        Ok(s) => s,
        Err(d) => {
            errs.push(d);
            return;
        }
    };
    let root = match yaml::parse(&source) {
        Ok(r) => r,
        Err(d) => {
            errs.push(d);
            return;
        }
    };
    seen.insert(canon.clone());
    stack.push(canon);
    let parts = parse_file(&source, &root, errs);
    if let Some(imports) = root.get("imports") {
        let items: Vec<&Yaml> = match &imports.value {
            YValue::Seq(items) => items.iter().collect(),
            YValue::Str(_) => vec![imports],
            YValue::Null => vec![],
            _ => {
                errs.push(Diagnostic::at(
                    &source,
                    imports.pos,
                    "`imports` must be a list of workflow files",
                ));
                vec![]
            }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        for item in items {
            let Some(rel) = item.as_str() else {
                errs.push(Diagnostic::at(
                    &source,
                    item.pos,
                    format!("an import is a file name, found {}", item.kind()),
                ));
                continue;
            };
            let target = dir.join(rel);
            let canon = target.canonicalize().unwrap_or_else(|_| target.clone());
            if let Some(i) = stack.iter().position(|p| *p == canon) {
                let mut chain: Vec<String> = stack[i..].iter().map(|p| display_name(p)).collect();
                chain.push(display_name(&canon));
                errs.push(Diagnostic::at(
                    &source,
                    item.pos,
                    format!("import cycle: {}", chain.join(" -> ")),
                ));
                continue;
            }
            if seen.contains(&canon) {
                continue;
            }
            if !target.is_file() {
                errs.push(Diagnostic::at(
                    &source,
                    item.pos,
                    format!("imported workflow `{}` does not exist", target.display()),
                ));
                continue;
            }
            read_tree(&target, stack, seen, out, errs);
        }
    }
    stack.pop();
    if let Some(p) = parts {
        out.push(p);
    }
}

fn display_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn key_pos(k: &Key) -> Pos {
    k.pos.with_len(u32::try_from(k.name.chars().count()).unwrap_or(1))
}

fn unknown_key(src: &Source, k: &Key, what: &str, valid: &[&str]) -> Diagnostic {
    suggest(
        Diagnostic::at(src, key_pos(k), format!("unknown key `{}` in {what}", k.name)),
        &k.name,
        valid,
        "keys",
    )
}

fn parse_file(src: &Arc<Source>, root: &Yaml, errs: &mut Diagnostics) -> Option<FileParts> {
    let Some(entries) = root.as_map() else {
        errs.push(Diagnostic::at(
            src,
            root.pos,
            format!("a workflow is a mapping with `steps`, found {}", root.kind()),
        ));
        return None;
    };
    let mut p = FileParts {
        source: src.clone(),
        name: None,
        description: None,
        vars: Vec::new(),
        secrets: Vec::new(),
        steps: Vec::new(),
        handlers: Vec::new(),
        fail_fast: false,
        max_fail_percentage: None,
    };
    for (k, v) in entries {
        match k.name.as_str() {
            "name" => p.name = expect_str(src, v, "name", errs),
            "description" => p.description = expect_str(src, v, "description", errs),
            "imports" => {}
            "vars" | "secrets" => match &v.value {
                YValue::Map(m) => {
                    if k.name == "vars" {
                        p.vars.clone_from(m);
                    } else {
                        p.secrets.clone_from(m);
                    }
                }
                YValue::Null => {}
                _ => errs.push(Diagnostic::at(
                    src,
                    v.pos,
                    format!("`{}` must be a mapping, found {}", k.name, v.kind()),
                )),
            },
            "steps" | "handlers" => match &v.value {
                YValue::Seq(items) => {
                    if k.name == "steps" {
                        p.steps.clone_from(items);
                    } else {
                        p.handlers.clone_from(items);
                    }
                }
                YValue::Null => {}
                _ => errs.push(Diagnostic::at(
                    src,
                    v.pos,
                    format!("`{}` must be a list, found {}", k.name, v.kind()),
                )),
            },
            "fail_fast" => match v.value {
                YValue::Bool(b) => p.fail_fast = b,
                _ => errs.push(Diagnostic::at(src, v.pos, "`fail_fast` must be a boolean")),
            },
            "max_fail_percentage" => match v.value {
                YValue::Int(i) if (0..=100).contains(&i) => p.max_fail_percentage = Some(i as f64),
                YValue::Float(f) if (0.0..=100.0).contains(&f) => p.max_fail_percentage = Some(f),
                _ => errs.push(Diagnostic::at(
                    src,
                    v.pos,
                    "`max_fail_percentage` must be a number from 0 to 100",
                )),
            },
            _ => errs.push(unknown_key(src, k, "a workflow", WORKFLOW_KEYS)),
        }
    }
    Some(p)
}

fn expect_str(src: &Source, v: &Yaml, what: &str, errs: &mut Diagnostics) -> Option<String> {
    let s = v.scalar_text();
    if s.is_none() {
        errs.push(Diagnostic::at(
            src,
            v.pos,
            format!("`{what}` must be a string, found {}", v.kind()),
        ));
    }
    s
}

fn str_list(src: &Source, v: &Yaml, what: &str, errs: &mut Diagnostics) -> Vec<(String, Pos)> {
    match &v.value {
        YValue::Seq(items) => items
            .iter()
            .filter_map(|i| match i.scalar_text() {
                Some(s) => Some((s, i.pos)),
                None => {
                    errs.push(Diagnostic::at(
                        src,
                        i.pos,
                        format!("`{what}` must be a list of strings, found {}", i.kind()),
                    ));
                    None
                }
            })
            .collect(),
        YValue::Null => Vec::new(),
        _ => match v.scalar_text() {
            Some(s) => vec![(s, v.pos)],
            None => {
                errs.push(Diagnostic::at(
                    src,
                    v.pos,
                    format!("`{what}` must be a list of strings, found {}", v.kind()),
                ));
                Vec::new()
            }
        },
    }
}

fn parse_secret(src: &Source, k: &Key, v: &Yaml, errs: &mut Diagnostics) -> Option<SecretDef> {
    crate::secrets::parse_def(src, k, v, errs)
}

fn parse_step(
    src: &Source,
    node: &Yaml,
    handler: bool,
    registry: &Registry,
    errs: &mut Diagnostics,
) -> Option<StepDef> {
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
            let place = if handler && STEP_KEYS.contains(&k.name.as_str()) {
                Diagnostic::at(src, key_pos(k), format!("`{}` is not allowed in a handler", k.name))
            } else {
                unknown_key(src, k, &format!("a {what}"), valid)
            };
            errs.push(place);
        }
    }
    let id = match node.get("id") {
        Some(v) => match v.scalar_text() {
            Some(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => Some(s),
            _ => {
                errs.push(Diagnostic::at(src, v.pos, "an id is letters, digits, `-` and `_`"));
                None
            }
        },
        None => {
            errs.push(Diagnostic::at(src, node.pos, format!("this {what} has no `id`")));
            None
        }
    };
    let kind = match node.get("uses") {
        Some(v) => match v.as_str().and_then(|n| registry.get(n).map(|k| (n, k))) {
            Some((_, k)) => Some(k.clone()),
            None => {
                let name = v.scalar_text().unwrap_or_default();
                errs.push(suggest(
                    Diagnostic::at(src, v.pos, format!("unknown step `{name}`")),
                    &name,
                    &registry.names(),
                    "steps",
                ));
                None
            }
        },
        None => {
            errs.push(Diagnostic::at(
                src,
                node.pos,
                format!("this {what} has no `uses` (the built-in step it runs)"),
            ));
            None
        }
    };
    let with_node = node.get("with");
    let with = match with_node {
        Some(w) => match &w.value {
            YValue::Map(_) => w.to_json().as_object().cloned().unwrap_or_default(),
            YValue::Null => Map::new(),
            _ => {
                errs.push(Diagnostic::at(
                    src,
                    w.pos,
                    format!("`with` must be a mapping of parameters, found {}", w.kind()),
                ));
                Map::new()
            }
        },
        None => Map::new(),
    };
    if let (Some(kind), Some(id)) = (&kind, &id) {
        check_params(src, node, with_node, kind.info(), id, errs);
    }
    let mut retry = None;
    if let Some(r) = node.get("retry") {
        retry = parse_retry(src, r, errs);
    }
    let timeout = node.get("timeout").and_then(|v| duration(src, v, errs));
    let journal = match node.get("journal").map(|v| &v.value) {
        None => kind.as_ref().is_none_or(|k| k.info().journal),
        Some(YValue::Bool(b)) => *b,
        Some(_) => {
            errs.push(Diagnostic::at(
                src,
                node.get("journal").map_or(node.pos, |v| v.pos),
                "`journal` must be a boolean",
            ));
            true
        }
    };
    let bool_key = |key: &str, errs: &mut Diagnostics| match node.get(key) {
        None => None,
        Some(Yaml {
            value: YValue::Bool(b), ..
        }) => Some(*b),
        Some(v) => {
            errs.push(Diagnostic::at(src, v.pos, format!("`{key}` must be a boolean")));
            None
        }
    };
    let become_ = bool_key("become", errs);
    let ignore_errors = bool_key("ignore_errors", errs).unwrap_or(false);
    let changed_when = node.get("changed_when").and_then(|v| match &v.value {
        YValue::Bool(b) => Some(b.to_string()),
        _ => expect_str(src, v, "changed_when", errs),
    });
    let become_user = node
        .get("become_user")
        .and_then(|v| expect_str(src, v, "become_user", errs));
    let hosts = node
        .get("hosts")
        .and_then(|v| expect_str(src, v, "hosts", errs))
        .unwrap_or_else(|| "localhost".into());
    let when = node.get("when").and_then(|v| match &v.value {
        YValue::Bool(b) => Some(b.to_string()),
        _ => expect_str(src, v, "when", errs),
    });
    let for_each = node.get("for_each").map(|v| match &v.value {
        YValue::Seq(_) | YValue::Str(_) => v.to_json(),
        _ => {
            errs.push(Diagnostic::at(
                src,
                v.pos,
                "`for_each` must be a list or a template that renders to one",
            ));
            Value::Null
        }
    });
    let needs = node
        .get("needs")
        .map(|v| str_list(src, v, "needs", errs))
        .unwrap_or_default();
    let notify = node
        .get("notify")
        .map(|v| str_list(src, v, "notify", errs))
        .unwrap_or_default();
    let tags = node
        .get("tags")
        .map(|v| str_list(src, v, "tags", errs))
        .unwrap_or_default();
    let name = node.get("name").and_then(|v| expect_str(src, v, "name", errs));
    if errs.0.len() > before {
        return None;
    }
    Some(StepDef {
        id: id?,
        name,
        kind: kind?,
        hosts,
        with,
        needs: needs.into_iter().map(|(s, _)| s).collect(),
        notify: notify.into_iter().map(|(s, _)| s).collect(),
        when,
        for_each,
        label: None,
        retry,
        timeout,
        tags: tags.into_iter().map(|(s, _)| s).collect(),
        journal,
        become_,
        become_user,
        ignore_errors,
        changed_when,
        dir: src.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        file: src.path.clone(),
        pos: node.get("id").map_or(node.pos, |v| v.pos),
    })
}

fn duration(src: &Source, v: &Yaml, errs: &mut Diagnostics) -> Option<std::time::Duration> {
    let text = v.scalar_text().unwrap_or_default();
    match parse_duration(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            errs.push(Diagnostic::at(src, v.pos, e));
            None
        }
    }
}

fn parse_retry(src: &Source, r: &Yaml, errs: &mut Diagnostics) -> Option<Retry> {
    let Some(entries) = r.as_map() else {
        errs.push(Diagnostic::at(
            src,
            r.pos,
            "`retry` must be a mapping: `{ attempts: 5, delay: 2s, backoff: 2.0, until: \"...\" }`",
        ));
        return None;
    };
    let mut retry = Retry::default();
    for (k, v) in entries {
        match k.name.as_str() {
            "attempts" => match v.value {
                YValue::Int(n) if (1..=1000).contains(&n) => retry.attempts = u32::try_from(n).unwrap_or(1),
                _ => errs.push(Diagnostic::at(
                    src,
                    v.pos,
                    "`attempts` must be an integer from 1 to 1000",
                )),
            },
            "delay" => {
                if let Some(d) = duration(src, v, errs) {
                    retry.delay = d;
                }
            }
            "backoff" => match v.value {
                YValue::Int(n) if (1..=10).contains(&n) => retry.backoff = n as f64,
                YValue::Float(f) if (1.0..=10.0).contains(&f) => retry.backoff = f,
                _ => errs.push(Diagnostic::at(
                    src,
                    v.pos,
                    "`backoff` must be a number from 1.0 to 10.0",
                )),
            },
            "until" => retry.until = expect_str(src, v, "until", errs),
            _ => errs.push(unknown_key(src, k, "`retry`", RETRY_KEYS)),
        }
    }
    Some(retry)
}

/// Unknown, missing, exclusive and literally mistyped parameters.
fn check_params(src: &Source, node: &Yaml, with: Option<&Yaml>, info: &KindInfo, id: &str, errs: &mut Diagnostics) {
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
        if let Some(problem) = literal_type_problem(spec.ty, v) {
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

/// A description of what was found, when a literal value cannot be of type `ty`.
fn literal_type_problem(ty: ParamType, v: &Yaml) -> Option<String> {
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
        (ParamType::Duration, YValue::Str(s)) => {
            if let Err(e) = parse_duration(s) {
                return Some(e);
            }
            true
        }
        (ParamType::Enum(choices), YValue::Str(s)) => {
            if !choices.contains(&s.as_str()) {
                let mut m = format!("`{s}`");
                if let Some(c) = did_you_mean(s, choices.iter().copied()) {
                    m.push_str(&format!(" (did you mean `{c}`?)"));
                }
                return Some(m);
            }
            true
        }
        _ => false,
    };
    (!ok).then(|| v.kind().to_owned())
}

fn check_references(
    steps: &[(StepDef, Arc<Source>, Yaml)],
    handlers: &[(StepDef, Arc<Source>, Yaml)],
    errs: &mut Diagnostics,
) {
    let ids: Vec<&str> = steps.iter().map(|(d, _, _)| d.id.as_str()).collect();
    let handler_ids: Vec<&str> = handlers.iter().map(|(d, _, _)| d.id.as_str()).collect();
    for (def, src, node) in steps {
        let list_items = |key: &str| -> Vec<(String, Pos)> {
            node.get(key)
                .map(|v| str_list(src, v, key, &mut Diagnostics::default()))
                .unwrap_or_default()
        };
        for (need, pos) in list_items("needs") {
            if !ids.contains(&need.as_str()) {
                errs.push(suggest(
                    Diagnostic::at(
                        src,
                        pos,
                        format!("step `{}` needs `{need}`, which is not a step of this workflow", def.id),
                    ),
                    &need,
                    &[],
                    "steps",
                ));
                if let Some(s) = did_you_mean(&need, ids.iter().copied()) {
                    let last = errs.0.pop().expect("just pushed");
                    errs.push(last.help(format!("did you mean `{s}`?")));
                }
            }
        }
        for (h, pos) in list_items("notify") {
            if !handler_ids.contains(&h.as_str()) {
                errs.push(suggest(
                    Diagnostic::at(
                        src,
                        pos,
                        format!(
                            "step `{}` notifies `{h}`, which is not a handler of this workflow",
                            def.id
                        ),
                    ),
                    &h,
                    &handler_ids,
                    "handlers",
                ));
            }
        }
    }
}

fn check_cycles(steps: &[(StepDef, Arc<Source>, Yaml)], errs: &mut Diagnostics) {
    let mut g = DiGraph::<usize, ()>::new();
    let nodes: Vec<_> = (0..steps.len()).map(|i| g.add_node(i)).collect();
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, (d, _, _))| (d.id.as_str(), i))
        .collect();
    for (i, (def, _, _)) in steps.iter().enumerate() {
        for n in &def.needs {
            if let Some(&j) = index.get(n.as_str()) {
                g.add_edge(nodes[i], nodes[j], ());
            }
        }
    }
    for scc in petgraph::algo::tarjan_scc(&g) {
        let members: HashSet<usize> = scc.iter().map(|n| g[*n]).collect();
        let start = *members.iter().min().expect("an SCC is never empty");
        let self_loop = steps[start].0.needs.iter().any(|n| *n == steps[start].0.id);
        if members.len() < 2 && !self_loop {
            continue;
        }
        // Walk `needs` edges inside the component from the first-defined step back to it.
        let mut path = vec![start];
        let mut cur = start;
        let mut visited = HashSet::from([start]);
        loop {
            let next = steps[cur]
                .0
                .needs
                .iter()
                .filter_map(|n| index.get(n.as_str()).copied())
                .find(|j| members.contains(j) && (*j == start || !visited.contains(j)));
            match next {
                Some(j) if j == start => {
                    path.push(start);
                    break;
                }
                Some(j) => {
                    visited.insert(j);
                    path.push(j);
                    cur = j;
                }
                None => break,
            }
        }
        let chain: Vec<&str> = path.iter().map(|i| steps[*i].0.id.as_str()).collect();
        let (def, src, node) = &steps[start];
        let pos = node.get("needs").map_or(def.pos, |v| v.pos);
        errs.push(
            Diagnostic::at(src, pos, format!("dependency cycle: {}", chain.join(" -> ")))
                .help("`a -> b` means step `a` needs step `b`"),
        );
    }
}

fn check_hosts(def: &StepDef, src: &Source, node: &Yaml, inv: &Inventory, errs: &mut Diagnostics) {
    if Templates::is_template(&def.hosts) {
        return;
    }
    if let Err(e) = inv.resolve(&def.hosts) {
        let pos = node.get("hosts").map_or(def.pos, |v| v.pos);
        errs.push(Diagnostic::at(src, pos, format!("step `{}`: {e}", def.id)));
    }
}

/// The variables a template may refer to.
struct KnownVars {
    globals: HashSet<String>,
    secrets: Vec<String>,
    /// For each step: its transitive `needs`.
    ancestors: HashMap<String, HashSet<String>>,
    outputs: HashMap<String, (&'static [&'static str], bool)>,
    all_steps: HashSet<String>,
}

impl KnownVars {
    fn new(
        vars: &Map<String, Value>,
        cx: &LoadContext<'_>,
        secrets: &IndexMap<String, SecretDef>,
        steps: &[(StepDef, Arc<Source>, Yaml)],
    ) -> Self {
        let mut globals: HashSet<String> = vars.keys().cloned().collect();
        globals.extend(cx.inventory.all_var_names().map(str::to_owned));
        globals.extend(cx.extra_vars.keys().cloned());
        globals.extend(BUILTIN_VARS.iter().map(|s| (*s).to_owned()));
        let needs: HashMap<&str, &Vec<String>> = steps.iter().map(|(d, _, _)| (d.id.as_str(), &d.needs)).collect();
        let mut ancestors = HashMap::new();
        for (d, _, _) in steps {
            let mut set = HashSet::new();
            let mut stack: Vec<&str> = d.needs.iter().map(String::as_str).collect();
            while let Some(s) = stack.pop() {
                if set.insert(s.to_owned()) {
                    if let Some(n) = needs.get(s) {
                        stack.extend(n.iter().map(String::as_str));
                    }
                }
            }
            ancestors.insert(d.id.clone(), set);
        }
        let outputs = steps
            .iter()
            .map(|(d, _, _)| (d.id.clone(), (d.kind.info().outputs, d.for_each.is_some())))
            .collect();
        let all_steps = steps.iter().map(|(d, _, _)| d.id.clone()).collect();
        Self {
            globals,
            secrets: secrets.keys().cloned().collect(),
            ancestors,
            outputs,
            all_steps,
        }
    }

    /// `None` when the reference is fine, else the problem.
    fn problem(&self, path: &[String], step: &StepDef, handler: bool, extra: &[&str]) -> Option<String> {
        let root = path[0].as_str();
        if extra.contains(&root) {
            return None;
        }
        if root == "secrets" {
            let name = path.get(1)?;
            if self.secrets.contains(name) {
                return None;
            }
            let mut m = format!("secret `{name}` is not defined in `secrets`");
            if let Some(s) = did_you_mean(name, self.secrets.iter().map(String::as_str)) {
                m.push_str(&format!(" (did you mean `{s}`?)"));
            }
            return Some(m);
        }
        if root == "steps" {
            let id = path.get(1)?;
            let visible = if handler {
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
            let (outputs, for_each) = self.outputs.get(id.as_str()).copied().unwrap_or((&[], false));
            match section.as_str() {
                "outputs" if for_each => {
                    return Some(format!(
                        "step `{id}` runs `for_each`: use `steps.{id}.results`, a list of each item's `outputs`"
                    ))
                }
                "outputs" => {
                    let key = path.get(3)?;
                    if !outputs.is_empty() && !outputs.contains(&key.as_str()) {
                        let mut m = format!("step `{id}` has no output `{key}`");
                        if let Some(s) = did_you_mean(key, outputs.iter().copied()) {
                            m.push_str(&format!(" (did you mean `{s}`?)"));
                        }
                        m.push_str(&format!("; its outputs: {}", outputs.join(", ")));
                        return Some(m);
                    }
                    return None;
                }
                // `hosts.NAME.outputs...`: per host, for a step that ran on other hosts.
                "results" | "status" | "changed" | "hosts" => return None,
                other => {
                    return Some(format!(
                        "`steps.{id}.{other}`: a step has `outputs`, `results`, `status`, `changed` and `hosts`"
                    ))
                }
            }
        }
        if self.globals.contains(root) {
            return None;
        }
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

fn check_templates(def: &StepDef, src: &Source, node: &Yaml, known: &KnownVars, handler: bool, errs: &mut Diagnostics) {
    let item: &[&str] = if def.for_each.is_some() { &["item"] } else { &[] };
    let mut check = |v: &Yaml, place: &str, extra: &[&str]| {
        visit_strings(v, &mut |s: &str, pos: Pos| match template::references(s) {
            Err(e) => errs.push(Diagnostic::at(
                src,
                pos,
                format!("{place} of step `{}`: {}", def.id, e.message),
            )),
            Ok(refs) => {
                for r in refs {
                    if let Some(problem) = known.problem(&r.path, def, handler, extra) {
                        errs.push(Diagnostic::at(
                            src,
                            pos,
                            format!("{problem}, in {place} of step `{}`", def.id),
                        ));
                    }
                }
            }
        });
    };
    if let Some(w) = node.get("with") {
        if let Some(entries) = w.as_map() {
            for (k, v) in entries {
                check(v, &format!("`with.{}`", k.name), item);
            }
        }
    }
    if let Some(v) = node.get("when") {
        check(v, "`when`", item);
    }
    if let Some(v) = node.get("for_each") {
        check(v, "`for_each`", &[]);
    }
    if let Some(v) = node.get("hosts") {
        check(v, "`hosts`", &[]);
    }
    if let Some(cw) = node.get("changed_when") {
        let mut extra = vec!["outputs"];
        extra.extend_from_slice(item);
        check(cw, "`changed_when`", &extra);
    }
    if let Some(until) = node.get("retry").and_then(|r| r.get("until")) {
        let mut extra = vec!["outputs"];
        extra.extend_from_slice(item);
        check(until, "`retry.until`", &extra);
    }
    check_template_file(def, src, node, known, handler, item, errs);
}

/// The variables a step's template file reads (`template`'s `src`), checked
/// like those of its parameters; errors point at `src` and name the file's line.
fn check_template_file(
    def: &StepDef,
    src: &Source,
    node: &Yaml,
    known: &KnownVars,
    handler: bool,
    item: &[&str],
    errs: &mut Diagnostics,
) {
    use crate::template_files::{check, Checked, TEMPLATE_FILE_PARAMS};
    let Some((_, param)) = TEMPLATE_FILE_PARAMS.iter().find(|(k, _)| *k == def.kind_name()) else {
        return;
    };
    let Some(v) = node.get("with").and_then(|w| w.get(param)) else {
        return;
    };
    let Some(file) = v.as_str() else { return };
    match check(&def.dir, file) {
        Checked::Skipped => {}
        Checked::Invalid(e) => errs.push(Diagnostic::at(
            src,
            v.pos,
            format!("template of step `{}`: {}", def.id, e.message),
        )),
        Checked::Refs(refs) => {
            for r in refs {
                if let Some(problem) = known.problem(&r.var.path, def, handler, item) {
                    let at = r.line.map_or_else(|| file.to_owned(), |l| format!("{file}:{l}"));
                    errs.push(Diagnostic::at(
                        src,
                        v.pos,
                        format!("{problem}, in template `{at}` of step `{}`", def.id),
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

/// Parse `-e KEY=VALUE` arguments (a value that is a JSON list or object is taken as such).
pub fn parse_extra_vars(args: &[String]) -> Result<Map<String, Value>, Diagnostic> {
    let mut out = Map::new();
    for a in args {
        let Some((k, v)) = a.split_once('=') else {
            return Err(Diagnostic::new(format!("`-e {a}`: expected KEY=VALUE")));
        };
        if k.is_empty() {
            return Err(Diagnostic::new(format!("`-e {a}`: the key is empty")));
        }
        let value = if v.starts_with('[') || v.starts_with('{') {
            serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()))
        } else {
            Value::String(v.to_owned())
        };
        out.insert(k.to_owned(), value);
    }
    Ok(out)
}
