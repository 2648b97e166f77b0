//! `flowrun validate`: load, check and plan workflows without touching any
//! host; every problem of every file is reported together.

use crate::cli::Common;
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::load::{registry, Loaded};
use flowrun_engine::diag::Diagnostics;

pub fn validate(args: &[String], common: &Common) -> Result<ExitStatus, Error> {
    let registry = registry();
    let mut errors = Diagnostics::default();
    for a in args {
        match Loaded::load(a, common, &registry).and_then(|l| l.plan(common.limit.as_deref()).map(|p| (l, p))) {
            Ok((l, p)) => println!(
                "ok: {} ({} steps, {} nodes, {} phases)",
                l.workflow.name,
                l.workflow.steps.len(),
                p.nodes.len(),
                p.phases.len()
            ),
            Err(Error::Invalid(d)) => errors.0.extend(d.0),
            Err(other) => return Err(other),
        }
    }
    errors.into_result(ExitStatus::Success).map_err(Error::Invalid)
}
