//! What the commands share before they differ: finding a workflow by file or
//! name, loading it with its inventory and `-e` variables, and planning it
//! (opening the journal is `journal.rs`).

use crate::cli::Common;
use crate::error::Error;
use flowrun_engine::diag::{did_you_mean, Diagnostic};
use flowrun_engine::inventory::Inventory;
use flowrun_engine::loader::{self, LoadContext};
use flowrun_engine::model::Workflow;
use flowrun_engine::plan::{self, Plan};
use flowrun_engine::registry::Registry;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn registry() -> Registry {
    Registry::new(flowrun_steps::registry())
}

/// A workflow argument: a file, or a name in ./workflows.
pub fn workflow_path(arg: &str) -> Result<PathBuf, Error> {
    let p = Path::new(arg);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    let dir = workflows_dir();
    for ext in ["yml", "yaml"] {
        let candidate = dir.join(format!("{arg}.{ext}"));
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let names = workflow_files()
        .into_iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect::<Vec<_>>();
    let mut d = Diagnostic::new(format!(
        "no workflow `{arg}`: not a file, and not in `{}`",
        dir.display()
    ));
    if let Some(s) = did_you_mean(arg, names.iter().map(String::as_str)) {
        d = d.help(format!("did you mean `{s}`?"));
    }
    if !names.is_empty() {
        d = d.help(format!("workflows: {}", names.join(", ")));
    }
    Err(d.into())
}

pub fn workflows_dir() -> PathBuf {
    std::env::var_os("FLOWRUN_WORKFLOWS").map_or_else(|| PathBuf::from("workflows"), PathBuf::from)
}

pub fn workflow_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workflows_dir())
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A checked workflow with what it was checked against.
pub struct Loaded {
    pub workflow: Arc<Workflow>,
    pub inventory: Inventory,
    pub extra: Map<String, Value>,
}

impl Loaded {
    pub fn load(arg: &str, common: &Common, registry: &Registry) -> Result<Self, Error> {
        let path = workflow_path(arg)?;
        let inventory = match &common.inventory {
            Some(p) => Inventory::load(p)?,
            None => Inventory::empty(),
        };
        let extra = loader::parse_extra_vars(&common.extra_vars)?;
        let cx = LoadContext {
            registry,
            inventory: &inventory,
            extra_vars: &extra,
        };
        let workflow = Arc::new(loader::load(&path, &cx)?);
        Ok(Self {
            workflow,
            inventory,
            extra,
        })
    }

    pub fn plan(&self, limit: Option<&str>) -> Result<Plan, Error> {
        Ok(plan::plan(self.workflow.clone(), &self.inventory, &self.extra, limit)?)
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the runtime", e))
}
