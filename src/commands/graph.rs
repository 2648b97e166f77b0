//! `flowrun graph`: the step graph in Graphviz dot or Mermaid.

use crate::cli::{Common, GraphFormat};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::load::{registry, Loaded};

pub fn graph(arg: &str, format: GraphFormat, common: &Common) -> Result<ExitStatus, Error> {
    let registry = registry();
    let loaded = Loaded::load(arg, common, &registry)?;
    let plan = loaded.plan(common.limit.as_deref())?;
    print!("{}", plan.graph(matches!(format, GraphFormat::Mermaid)));
    Ok(ExitStatus::Success)
}
