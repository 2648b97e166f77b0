//! Reading a workflow and, depth first, the workflows it imports: each file
//! parsed into its top-level parts, import cycles reported as the whole
//! chain (`a.yml -> b.yml -> a.yml`), each file read once.

use super::syntax::{string, unknown_key};
use crate::diag::{Diagnostic, Diagnostics, Source};
use crate::yaml::{self, Key, YValue, Yaml};
use std::collections::HashSet;
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

/// One file's top-level parts, before merging.
pub(super) struct RawFile {
    pub source: Arc<Source>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub vars: Vec<(Key, Yaml)>,
    pub secrets: Vec<(Key, Yaml)>,
    pub steps: Vec<Yaml>,
    pub handlers: Vec<Yaml>,
    pub fail_fast: bool,
    pub max_fail_percentage: Option<f64>,
}

/// The files of a workflow, imports first (in import order), the root last.
pub(super) fn read_all(path: &Path, errs: &mut Diagnostics) -> Vec<RawFile> {
    let mut files = Vec::new();
    read_tree(path, &mut Vec::new(), &mut HashSet::new(), &mut files, errs);
    files
}

fn read_tree(
    path: &Path,
    stack: &mut Vec<PathBuf>,
    seen: &mut HashSet<PathBuf>,
    out: &mut Vec<RawFile>,
    errs: &mut Diagnostics,
) {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let source = match Source::read(path) {
        Ok(s) => s,
        Err(d) => return errs.push(d),
    };
    let root = match yaml::parse(&source) {
        Ok(r) => r,
        Err(d) => return errs.push(d),
    };
    seen.insert(canon.clone());
    stack.push(canon);
    let parts = parse_file(&source, &root, errs);
    let dir = path.parent().unwrap_or(Path::new("."));
    for (target, item) in imports(&source, &root, dir, errs) {
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
    stack.pop();
    if let Some(p) = parts {
        out.push(p);
    }
}

/// The files `imports` names, each with where it was named.
fn imports<'a>(source: &Source, root: &'a Yaml, dir: &Path, errs: &mut Diagnostics) -> Vec<(PathBuf, &'a Yaml)> {
    let Some(imports) = root.get("imports") else {
        return Vec::new();
    };
    let items: Vec<&Yaml> = match &imports.value {
        YValue::Seq(items) => items.iter().collect(),
        YValue::Str(_) => vec![imports],
        YValue::Null => vec![],
        _ => {
            errs.push(Diagnostic::at(
                source,
                imports.pos,
                "`imports` must be a list of workflow files",
            ));
            vec![]
        }
    };
    items
        .into_iter()
        .filter_map(|item| match item.as_str() {
            Some(rel) => Some((dir.join(rel), item)),
            None => {
                errs.push(Diagnostic::at(
                    source,
                    item.pos,
                    format!("an import is a file name, found {}", item.kind()),
                ));
                None
            }
        })
        .collect()
}

fn display_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn parse_file(src: &Arc<Source>, root: &Yaml, errs: &mut Diagnostics) -> Option<RawFile> {
    let Some(entries) = root.as_map() else {
        errs.push(Diagnostic::at(
            src,
            root.pos,
            format!("a workflow is a mapping with `steps`, found {}", root.kind()),
        ));
        return None;
    };
    let mut p = RawFile {
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
        let wrong = |errs: &mut Diagnostics, what: &str| {
            errs.push(Diagnostic::at(
                src,
                v.pos,
                format!("`{}` must be {what}, found {}", k.name, v.kind()),
            ));
        };
        match (k.name.as_str(), &v.value) {
            ("name", _) => p.name = string(src, v, "name", errs),
            ("description", _) => p.description = string(src, v, "description", errs),
            ("imports", _) | ("vars" | "secrets" | "steps" | "handlers", YValue::Null) => {}
            ("vars", YValue::Map(m)) => p.vars.clone_from(m),
            ("secrets", YValue::Map(m)) => p.secrets.clone_from(m),
            ("vars" | "secrets", _) => wrong(errs, "a mapping"),
            ("steps", YValue::Seq(items)) => p.steps.clone_from(items),
            ("handlers", YValue::Seq(items)) => p.handlers.clone_from(items),
            ("steps" | "handlers", _) => wrong(errs, "a list"),
            ("fail_fast", YValue::Bool(b)) => p.fail_fast = *b,
            ("fail_fast", _) => errs.push(Diagnostic::at(src, v.pos, "`fail_fast` must be a boolean")),
            ("max_fail_percentage", YValue::Int(i)) if (0..=100).contains(i) => {
                p.max_fail_percentage = Some(*i as f64);
            }
            ("max_fail_percentage", YValue::Float(f)) if (0.0..=100.0).contains(f) => {
                p.max_fail_percentage = Some(*f);
            }
            ("max_fail_percentage", _) => errs.push(Diagnostic::at(
                src,
                v.pos,
                "`max_fail_percentage` must be a number from 0 to 100",
            )),
            _ => errs.push(unknown_key(src, k, "a workflow", WORKFLOW_KEYS)),
        }
    }
    Some(p)
}
