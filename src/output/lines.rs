//! Printing results as they come: one plain line per step instance (the
//! format CI logs and cron mails keep), diffs with `--diff`, and, on a
//! terminal, a live status line on stderr naming the steps still running.

use flowrun_engine::exec::EventSink;
use flowrun_engine::report::{InstanceResult, Status};
use std::io::{IsTerminal, Write as _};
use std::sync::Mutex;

pub struct LinePrinter {
    pub diff: bool,
    pub quiet: bool,
    /// Nothing at all (JSON output owns stdout).
    pub silent: bool,
    /// Live status line: on when stderr is a terminal and not in CI.
    live: bool,
    running: Mutex<Vec<String>>,
}

impl LinePrinter {
    pub fn new(diff: bool, quiet: bool, silent: bool) -> Self {
        let live = !quiet && std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        Self {
            diff,
            quiet,
            silent,
            live,
            running: Mutex::new(Vec::new()),
        }
    }

    fn label(step: &str, host: &str, item: Option<&str>) -> String {
        match item {
            Some(i) => format!("{step} [{host}] ({i})"),
            None => format!("{step} [{host}]"),
        }
    }

    /// Redraw the status line (or clear it when nothing runs).
    fn draw(&self, running: &[String]) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        if !running.is_empty() {
            let mut line = format!("running {}: {}", running.len(), running.join(", "));
            if line.chars().count() > 100 {
                line = line.chars().take(97).collect::<String>() + "...";
            }
            let _ = write!(err, "{line}");
        }
        let _ = err.flush();
    }
}

impl EventSink for LinePrinter {
    fn started(&self, step: &str, host: &str, item: Option<&str>) {
        if self.live && !self.silent {
            let mut running = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            running.push(Self::label(step, host, item));
            self.draw(&running);
        }
    }

    fn finished(&self, r: &InstanceResult) {
        let mut running = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.live {
            let label = Self::label(&r.step_id, &r.host, r.item.as_deref());
            if let Some(i) = running.iter().position(|x| *x == label) {
                running.remove(i);
            }
            self.draw(&[]);
        }
        if !(self.silent || (self.quiet && !matches!(r.status, Status::Failed | Status::Unreachable))) {
            print_result(r, self.diff);
        }
        if self.live && !self.silent {
            self.draw(&running);
        }
    }
}

fn print_result(r: &InstanceResult, diff: bool) {
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
    if diff {
        if let Some(d) = &r.diff {
            let _ = writeln!(out, "{}", d.trim_end());
        }
    }
}
