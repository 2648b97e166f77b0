//! `flowrun plan`: the DAG as parallel phases and, when a journal and the
//! secrets are at hand, what a run would take from the journal (predicted by
//! the same instance pipeline a run uses).

use crate::cli::Common;
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::load::{registry, Loaded};
use flowrun_engine::exec::{self, RunOptions};
use flowrun_engine::journal::Location;
use flowrun_engine::secrets::{self, Masker};

pub fn plan(arg: &str, common: &Common) -> Result<ExitStatus, Error> {
    let registry = registry();
    let loaded = Loaded::load(arg, common, &registry)?;
    let plan = loaded.plan(common.limit.as_deref())?;
    let masker = Masker::global();
    // Secrets are only needed to predict fingerprints; without them, say "unknown".
    let secret_values = secrets::resolve(&loaded.workflow.secrets, &masker).ok();
    let location = crate::journal::location(&common.journal)?;
    // A journal file that does not exist yet predicts nothing (and is not created).
    let exists = match &location {
        Location::Sqlite(path) => path.exists(),
        Location::Postgres(_) => true,
    };
    let prediction = match (&secret_values, exists) {
        (Some(sv), true) => {
            let (journal, key) = crate::journal::open_at(&location, common.journal.journal_key.as_deref())?;
            let records = journal.load(&loaded.workflow.name)?;
            let opts = RunOptions {
                extra_vars: loaded.extra.clone(),
                ..RunOptions::default()
            };
            Some(exec::predict_skips(&plan, &records, &opts, sv, &key, &masker))
        }
        _ => None,
    };
    let text = crate::output::plan::text(&plan, prediction.as_deref());
    print!("{}", masker.mask(&text));
    Ok(ExitStatus::Success)
}
