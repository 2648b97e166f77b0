//! Printing results as they come: one plain line per step instance (the
//! format CI logs and cron mails keep), diffs with `--diff`, and, on a
//! terminal, live per-host progress bars on stderr (see `progress`) and
//! colour (see `paint`). Lines are printed with the bars out of the way,
//! so neither garbles the other.

use super::{paint, progress::Progress};
use flowrun_engine::exec::EventSink;
use flowrun_engine::report::{InstanceResult, Status};
use std::io::Write as _;
use std::sync::Mutex;

pub struct LinePrinter {
    pub diff: bool,
    pub quiet: bool,
    /// Nothing at all (JSON output owns stdout).
    pub silent: bool,
    colour: bool,
    progress: Option<Progress>,
    /// One line at a time, whole.
    out: Mutex<()>,
}

impl LinePrinter {
    pub fn new(diff: bool, quiet: bool, silent: bool) -> Self {
        Self {
            diff,
            quiet,
            silent,
            colour: !silent && paint::wanted(),
            progress: None,
            out: Mutex::new(()),
        }
    }

    /// Live bars for these hosts (with their numbers of steps), when on a
    /// terminal and neither `-q` nor JSON output.
    #[must_use]
    pub fn with_progress(mut self, hosts: &[(String, u64)]) -> Self {
        if !self.quiet && !self.silent && !hosts.is_empty() && super::progress::wanted() {
            self.progress = Some(Progress::new(hosts));
        }
        self
    }

    /// The run is over: the bars go, the recap follows on a clean screen.
    pub fn finish(&self) {
        if let Some(p) = &self.progress {
            p.finish();
        }
    }
}

impl EventSink for LinePrinter {
    fn started(&self, step: &str, host: &str, item: Option<&str>) {
        if let Some(p) = &self.progress {
            p.started(step, host, item);
        }
    }

    fn finished(&self, r: &InstanceResult) {
        if let Some(p) = &self.progress {
            p.finished(&r.step_id, &r.host, r.item.as_deref(), r.handler);
        }
        if self.silent || (self.quiet && !matches!(r.status, Status::Failed | Status::Unreachable)) {
            return;
        }
        let text = render(r, self.diff, self.colour);
        let _guard = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let write = || {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        };
        match &self.progress {
            Some(p) => p.print(write),
            None => write(),
        }
    }
}

/// The line (and diff) of one result.
fn render(r: &InstanceResult, diff: bool, colour: bool) -> String {
    let mut line = format!("{}: [{}] ", paint::status(colour, r.status), r.host);
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
    line.push('\n');
    if diff {
        if let Some(d) = r.diff.as_deref().filter(|d| !d.trim().is_empty()) {
            line.push_str(&paint::diff(colour, d));
        }
    }
    line
}
