//! Loading and analysis: workflow files (with their imports) become a
//! checked [`Workflow`] in three phases, each in its own file:
//!
//! 1. parse (`read.rs`, `step.rs`, `params.rs`): YAML syntax, the files and
//!    imports, unknown keys, step kinds, parameters against their kind (every
//!    literal value by its type), each into a raw model (`raw.rs`) that keeps
//!    the position of everything a later check may point at;
//! 2. analyze (`analyze.rs`, `vars.rs`): duplicate ids, `needs`/`notify`
//!    references, dependency cycles, host patterns, `for_each` values known
//!    now, template variables defined where they are used, secrets kept off
//!    argv;
//! 3. resolve: only when all of it passed, the raw steps become the model's
//!    `StepDef`s.
//!
//! Every problem is a diagnostic at file, line and column; nothing runs
//! unless all of it passes.

mod analyze;
mod params;
mod raw;
mod read;
mod step;
mod syntax;
mod vars;

use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::inventory::Inventory;
use crate::model::{SecretDef, StepDef, Workflow};
use crate::registry::Registry;
use indexmap::IndexMap;
use raw::RawStep;
use read::RawFile;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What loading needs besides the file.
pub struct LoadContext<'a> {
    pub registry: &'a Registry,
    pub inventory: &'a Inventory,
    pub extra_vars: &'a Map<String, Value>,
}

/// Load and check a workflow file and its imports.
pub fn load(path: &Path, cx: &LoadContext<'_>) -> Result<Workflow, Diagnostics> {
    let mut errs = Diagnostics::default();
    let files = read::read_all(path, &mut errs);
    if !errs.is_empty() {
        return Err(errs);
    }
    let root = files.last().expect("the root file is read last");
    let name = root.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map_or_else(|| "workflow".into(), |s| s.to_string_lossy().into_owned())
    });
    let (vars, secrets) = vars_and_secrets(&files, &mut errs);
    let (steps, handlers) = parse_steps(&files, cx.registry, &mut errs);
    errs.into_result(())?;
    analyze(&steps, &handlers, &vars, &secrets, cx)?;
    let root = files.last().expect("the root file is read last");
    let steps: Vec<StepDef> = steps.into_iter().map(RawStep::resolve).collect();
    Ok(Workflow {
        name,
        description: root.description.clone(),
        path: path.to_path_buf(),
        vars,
        secrets,
        ancestors: Workflow::compute_ancestors(&steps),
        steps,
        handlers: handlers.into_iter().map(RawStep::resolve).collect(),
        fail_fast: root.fail_fast,
        max_fail_percentage: root.max_fail_percentage,
    })
}

/// `vars` and `secrets` of every file, later files overriding earlier ones.
fn vars_and_secrets(files: &[RawFile], errs: &mut Diagnostics) -> (Map<String, Value>, IndexMap<String, SecretDef>) {
    let mut vars = Map::new();
    let mut secrets = IndexMap::new();
    for f in files {
        for (k, v) in &f.vars {
            vars.insert(k.name.clone(), v.to_json());
        }
        for (k, v) in &f.secrets {
            if let Some(def) = crate::model::secret::parse_def(&f.source, k, v, errs) {
                secrets.insert(k.name.clone(), def);
            }
        }
    }
    (vars, secrets)
}

/// Every step and handler of every file, ids unique among steps and among handlers.
fn parse_steps(files: &[RawFile], registry: &Registry, errs: &mut Diagnostics) -> (Vec<RawStep>, Vec<RawStep>) {
    let mut steps = Vec::new();
    let mut handlers = Vec::new();
    let mut ids: HashMap<String, (PathBuf, Pos)> = HashMap::new();
    for f in files {
        let all = f
            .steps
            .iter()
            .map(|n| (n, false))
            .chain(f.handlers.iter().map(|n| (n, true)));
        for (node, handler) in all {
            let Some(step) = step::parse_step(&f.source, node, handler, registry, errs) else {
                continue;
            };
            let what = if handler { "handler" } else { "step" };
            let key = format!("{what}:{}", step.id);
            if let Some((file, pos)) = ids.get(&key) {
                errs.push(Diagnostic::at(
                    &f.source,
                    step.pos,
                    format!(
                        "duplicate {what} id `{}` (first defined at {}:{}:{})",
                        step.id,
                        file.display(),
                        pos.line,
                        pos.col
                    ),
                ));
                continue;
            }
            ids.insert(key, (f.source.path.clone(), step.pos));
            if handler {
                handlers.push(step);
            } else {
                steps.push(step);
            }
        }
    }
    (steps, handlers)
}

fn analyze(
    steps: &[RawStep],
    handlers: &[RawStep],
    vars: &Map<String, Value>,
    secrets: &IndexMap<String, SecretDef>,
    cx: &LoadContext<'_>,
) -> Result<(), Diagnostics> {
    let mut errs = Diagnostics::default();
    analyze::check_references(steps, handlers, &mut errs);
    if errs.is_empty() {
        analyze::check_cycles(steps, &mut errs);
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let globals = vars
        .keys()
        .cloned()
        .chain(cx.inventory.all_var_names().map(str::to_owned))
        .chain(cx.extra_vars.keys().cloned());
    let known = vars::KnownVars::new(globals, secrets.keys().cloned().collect(), steps);
    for step in steps {
        analyze::check_hosts(step, cx.inventory, &mut errs);
        vars::check_templates(step, &known, &mut errs);
        analyze::check_for_each(step, vars, cx.inventory, cx.extra_vars, &mut errs);
    }
    for handler in handlers {
        vars::check_templates(handler, &known, &mut errs);
    }
    errs.into_result(())
}

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
