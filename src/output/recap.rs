//! The end of a run's text output: `RECAP`, one line per host in the form
//! operators grep for, and a word about an interruption.

use flowrun_engine::report::{Outcome, RunReport};
use std::fmt::Write as _;

pub fn text(report: &RunReport) -> String {
    let mode = if report.check_mode {
        " (check mode: nothing was changed)"
    } else {
        ""
    };
    let mut out = format!(
        "\nRECAP {} run {}{mode}\n{}",
        report.workflow,
        report.run_id,
        report.recap()
    );
    if let Outcome::Interrupted(sig) = report.outcome {
        let _ = writeln!(
            out,
            "interrupted by signal {sig}: the journal is consistent; the next run resumes"
        );
    }
    out
}
