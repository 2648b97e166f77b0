//! The journal's run history: `flowrun history`, `show RUN_ID`, and `forget`
//! (records removed so those steps run again). Journal upkeep
//! (`flowrun journal ...`) is `commands/journal.rs`.

use crate::cli::{JournalArgs, OutputFormat};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::journal::open as open_journal;

pub fn history(
    journal: &JournalArgs,
    workflow: Option<&str>,
    limit: usize,
    output: OutputFormat,
) -> Result<ExitStatus, Error> {
    let (j, _) = open_journal(journal)?;
    let rows = j.history(workflow, limit)?;
    match output {
        OutputFormat::Text => print!("{}", crate::output::history::runs(&rows)),
        OutputFormat::Json => println!("{}", crate::output::history::runs_json(&rows)),
    }
    Ok(ExitStatus::Success)
}

pub fn show(journal: &JournalArgs, run_id: &str, output: OutputFormat) -> Result<ExitStatus, Error> {
    let (j, _) = open_journal(journal)?;
    let Some((run, steps)) = j.show(run_id)? else {
        return Err(Error::invalid(format!("no run `{run_id}` in the journal")));
    };
    match output {
        OutputFormat::Text => print!("{}", crate::output::history::run(&run, &steps)),
        OutputFormat::Json => println!("{}", crate::output::history::run_json(&run, &steps)),
    }
    Ok(ExitStatus::Success)
}

pub fn forget(
    journal: &JournalArgs,
    workflow: Option<&str>,
    step: Option<&str>,
    host: Option<&str>,
) -> Result<ExitStatus, Error> {
    if workflow.is_none() && step.is_none() && host.is_none() {
        return Err(Error::invalid(
            "`forget` needs --workflow, --step or --host (to forget everything, remove the journal file)",
        ));
    }
    let (j, _) = open_journal(journal)?;
    let n = j.forget(workflow, step, host)?;
    println!("forgot {n} journal record(s); those steps run again on the next run");
    Ok(ExitStatus::Success)
}
