//! Printing results as they come: one plain line per step instance (the
//! format CI logs and cron mails keep), diffs with `--diff`, and the recap.

use flowrun_engine::exec::EventSink;
use flowrun_engine::report::{InstanceResult, Status};
use std::io::Write as _;

pub struct LinePrinter {
    pub diff: bool,
    pub quiet: bool,
    /// Nothing at all (JSON output owns stdout).
    pub silent: bool,
}

impl EventSink for LinePrinter {
    fn finished(&self, r: &InstanceResult) {
        if self.silent || (self.quiet && !matches!(r.status, Status::Failed | Status::Unreachable)) {
            return;
        }
        let mut line = format!("{}: [{}] ", r.status.as_str(), r.host);
        if r.handler {
            line.push_str("handler ");
        }
        line.push_str(&r.step_id);
        if let Some(item) = &r.item {
            line.push_str(&format!(" (item={item})"));
        }
        if r.from_journal {
            line.push_str(" (journal)");
        }
        if let Some(m) = &r.message {
            let mut lines = m.lines();
            if let Some(first) = lines.next() {
                line.push_str(" - ");
                line.push_str(first);
            }
            for l in lines {
                line.push_str("\n    ");
                line.push_str(l);
            }
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        if self.diff {
            if let Some(d) = &r.diff {
                let _ = writeln!(out, "{}", d.trim_end());
            }
        }
    }
}
