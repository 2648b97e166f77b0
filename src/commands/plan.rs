//! `flowrun plan`: the DAG as parallel phases and, when a journal and the
//! secrets are at hand, what a run would take from the journal (predicted by
//! the same instance pipeline a run uses); for the instances that would run
//! and whose kind previews safely (`k8s_apply`), their check's diff. A
//! preview that fails makes the exit status 1: the run would fail too.

use crate::cli::{Common, OutputFormat};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::load::{registry, Loaded};
use flowrun_engine::exec::{self, RunOptions};
use flowrun_engine::journal::Location;
use flowrun_engine::secrets::{Masker, SecretKey};
use std::collections::HashMap;

pub fn plan(arg: &str, common: &Common, output: OutputFormat) -> Result<ExitStatus, Error> {
    let registry = registry();
    let loaded = Loaded::load(arg, common, &registry)?;
    let plan = loaded.plan(common.limit.as_deref())?;
    let masker = Masker::global();
    // Secrets are only needed to predict fingerprints; without them, say "unknown".
    let secret_values = flowrun_engine::model::secret::resolve(&loaded.workflow.secrets, &masker).ok();
    let location = crate::journal::location(&common.journal)?;
    // A journal file that does not exist yet predicts nothing (and is not created).
    let exists = match &location {
        Location::Sqlite(path) => path.exists(),
        Location::Postgres(_) => true,
    };
    let opts = RunOptions {
        extra_vars: loaded.extra.clone(),
        ..RunOptions::default()
    };
    let (prediction, candidates) = match (&secret_values, exists) {
        (Some(sv), true) => {
            let (journal, key) = crate::journal::open_at(&location, common.journal.journal_key.as_deref())?;
            let records = journal.load(&loaded.workflow.name)?;
            let (nodes, candidates) = exec::predict_with_previews(&plan, &records, &opts, sv, &key, &masker);
            (Some(nodes), candidates)
        }
        // No journal yet: everything would run; previews still show what.
        (Some(sv), false) => {
            let key = SecretKey::ephemeral().map_err(|e| Error::io("a key for the previews", e))?;
            let (_, candidates) = exec::predict_with_previews(&plan, &HashMap::new(), &opts, sv, &key, &masker);
            (None, candidates)
        }
        _ => (None, Vec::new()),
    };
    let previews = if candidates.is_empty() {
        Vec::new()
    } else {
        crate::load::runtime()?.block_on(exec::run_previews(candidates, plan.hosts.clone(), masker.clone()))
    };
    let status = if previews
        .iter()
        .any(|p| matches!(p.outcome, exec::PreviewOutcome::Failed(_)))
    {
        ExitStatus::Failed
    } else {
        ExitStatus::Success
    };
    let text = match output {
        OutputFormat::Json => format!(
            "{}\n",
            crate::output::plan::json(&plan, prediction.as_deref(), &previews)
        ),
        OutputFormat::Text => {
            let summaries: Option<Vec<_>> = prediction.map(|p| p.iter().map(|n| n.summary).collect());
            let mut text = crate::output::plan::text(&plan, summaries.as_deref());
            if !previews.is_empty() {
                text.push_str(&crate::output::plan::previews(&previews));
            }
            text
        }
    };
    print!("{}", masker.mask(&text));
    Ok(status)
}
