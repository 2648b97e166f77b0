//! `flowrun list`: the workflows in ./workflows with their descriptions.

use crate::error::Error;
use crate::exit::ExitStatus;
use crate::load::{registry, workflow_files, workflows_dir};
use flowrun_engine::inventory::Inventory;
use flowrun_engine::loader::{self, LoadContext};
use serde_json::Map;
use std::path::Path;

pub fn list(names_only: bool) -> Result<ExitStatus, Error> {
    let files = workflow_files();
    if names_only {
        for f in &files {
            if let Some(stem) = f.file_stem() {
                println!("{}", stem.to_string_lossy());
            }
        }
        return Ok(ExitStatus::Success);
    }
    let registry = registry();
    if files.is_empty() {
        println!("no workflows in `{}`", workflows_dir().display());
    }
    let inventory = Inventory::empty();
    let extra = Map::new();
    for f in files {
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Descriptions come from the files; a file that does not load still shows.
        let cx = LoadContext {
            registry: &registry,
            inventory: &inventory,
            extra_vars: &extra,
        };
        let desc = match loader::load(&f, &cx) {
            Ok(w) => w.description.unwrap_or_default(),
            Err(_) => read_description(&f).unwrap_or_else(|| "(needs an inventory to check)".into()),
        };
        println!("{name:<28} {desc}");
    }
    Ok(ExitStatus::Success)
}

fn read_description(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("description:")
            .map(|d| d.trim().trim_matches('"').to_owned())
    })
}
