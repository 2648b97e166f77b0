//! What a run produced, and its renderings: the per-host recap operators grep
//! for, the JSON document, a JUnit XML report for CI systems, and Prometheus
//! text-format metrics for node_exporter's textfile collector. Every text
//! goes through the masker before it leaves the process.

use crate::secrets::Masker;
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::Duration;

pub use crate::status::{RunStatus, Status};

/// The result of one step instance (or handler run).
#[derive(Debug, Clone)]
pub struct InstanceResult {
    pub step_id: String,
    pub host: String,
    /// The item as shown (for `for_each` instances).
    pub item: Option<String>,
    pub status: Status,
    pub from_journal: bool,
    pub duration: Duration,
    pub message: Option<String>,
    pub diff: Option<String>,
    pub handler: bool,
}

impl InstanceResult {
    #[must_use]
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    pub ok: u64,
    pub changed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub unreachable: u64,
}

impl Counters {
    pub fn add(&mut self, s: Status) {
        match s {
            Status::Ok => self.ok += 1,
            Status::Changed => self.changed += 1,
            Status::Failed => self.failed += 1,
            Status::Skipped => self.skipped += 1,
            Status::Unreachable => self.unreachable += 1,
        }
    }
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failed,
    /// Stopped by a signal (its number).
    Interrupted(i32),
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub workflow: String,
    pub outcome: Outcome,
    pub check_mode: bool,
    pub started_at: std::time::SystemTime,
    pub duration: Duration,
    pub results: Vec<InstanceResult>,
    /// Hosts in inventory order, each with its counters.
    pub hosts: IndexMap<String, Counters>,
    /// What this run rolled back first, of what runs that died left unfinished.
    pub recovered: Vec<Recovered>,
}

/// An instance a run that died left in flight, and what its recovery did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Recovered {
    pub step: String,
    pub host: String,
    pub item: String,
    /// The run that died.
    pub run_id: String,
    /// The rollback steps that ran for it.
    pub by: Vec<String>,
    /// Whether they all succeeded (else the host was stopped and the mark kept).
    pub succeeded: bool,
}

impl RunReport {
    pub fn totals(&self) -> Counters {
        let mut t = Counters::default();
        for r in &self.results {
            t.add(r.status);
        }
        t
    }

    /// How the run ended, as the journal records it.
    pub fn run_status(&self) -> RunStatus {
        match self.outcome {
            Outcome::Success => RunStatus::Success,
            Outcome::Failed => RunStatus::Failed,
            Outcome::Interrupted(_) => RunStatus::Interrupted,
        }
    }

    /// `HOST : ok=N changed=N failed=N skipped=N unreachable=N`, one line per host.
    pub fn recap(&self) -> String {
        let width = self.hosts.keys().map(String::len).max().unwrap_or(0);
        let mut out = String::new();
        for (h, c) in &self.hosts {
            let _ = writeln!(
                out,
                "{h:<width$} : ok={} changed={} failed={} skipped={} unreachable={}",
                c.ok, c.changed, c.failed, c.skipped, c.unreachable
            );
        }
        out
    }

    pub fn to_json(&self, masker: &Masker) -> Value {
        let t = self.totals();
        let steps: Vec<Value> = self
            .results
            .iter()
            .map(|r| {
                json!({
                    "id": r.step_id,
                    "host": r.host,
                    "item": r.item.as_deref().map(|i| masker.mask(i).into_owned()),
                    "status": r.status.as_str(),
                    "from_journal": r.from_journal,
                    "duration_ms": u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
                    "message": r.message.as_deref().map(|m| masker.mask(m).into_owned()),
                    "handler": r.handler,
                })
            })
            .collect();
        let mut doc = json!({
            "run_id": self.run_id,
            "workflow": self.workflow,
            "status": self.run_status().as_str(),
            "check_mode": self.check_mode,
            "duration_ms": u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            "totals": t,
            "hosts": self.hosts,
            "steps": steps,
        });
        if !self.recovered.is_empty() {
            doc["recovered"] = json!(self.recovered);
        }
        doc
    }

    /// JUnit XML: one testsuite per run, one testcase per step instance.
    pub fn to_junit(&self, masker: &Masker) -> String {
        let t = self.totals();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let counts = format!(
            "name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\"",
            xml(&self.workflow),
            self.results.len(),
            t.failed,
            t.unreachable,
            t.skipped,
            junit_secs(self.duration)
        );
        let _ = writeln!(out, "<testsuites {counts}>");
        let _ = writeln!(out, "  <testsuite {counts}>");
        for r in &self.results {
            self.junit_case(&mut out, r, masker);
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }

    /// One `<testcase>`: ok (with its message, or that it came from the
    /// journal), a failure, an error (unreachable) or skipped.
    fn junit_case(&self, out: &mut String, r: &InstanceResult, masker: &Masker) {
        let mut name = r.step_id.clone();
        if let Some(i) = &r.item {
            let _ = write!(name, " [{i}]");
        }
        let name = masker.mask(&name).into_owned();
        let _ = write!(
            out,
            "    <testcase classname=\"{}.{}\" name=\"{}\" time=\"{}\"",
            xml(&self.workflow),
            xml(&r.host),
            xml(&name),
            junit_secs(r.duration)
        );
        let msg = r
            .message
            .as_deref()
            .map(|m| masker.mask(m).into_owned())
            .unwrap_or_default();
        match r.status {
            Status::Ok | Status::Changed => {
                if r.from_journal {
                    out.push_str(">\n      <system-out>ok (from the journal)</system-out>\n    </testcase>\n");
                } else if msg.is_empty() {
                    out.push_str("/>\n");
                } else {
                    let _ = write!(
                        out,
                        ">\n      <system-out>{}</system-out>\n    </testcase>\n",
                        xml(&msg)
                    );
                }
            }
            Status::Failed | Status::Unreachable => {
                // JUnit: a failure is a check that failed, an error one that could not run.
                let (tag, kind) = if r.status == Status::Failed {
                    ("failure", "failed")
                } else {
                    ("error", "unreachable")
                };
                let _ = write!(
                    out,
                    ">\n      <{tag} message=\"{}\" type=\"{kind}\">{}</{tag}>\n    </testcase>\n",
                    xml(first_line(&msg)),
                    xml(&msg)
                );
            }
            Status::Skipped => {
                let _ = write!(
                    out,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                    xml(first_line(&msg))
                );
            }
        }
    }

    /// Prometheus text format, for node_exporter's textfile collector.
    pub fn to_metrics(&self, exit_code: i32) -> String {
        let wf = prom_label(&self.workflow);
        let ts = self
            .started_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let end = ts + self.duration.as_secs_f64();
        let mut out = String::new();
        let base = format!("workflow=\"{wf}\"");
        let success = matches!(self.outcome, Outcome::Success);
        let gauge = |out: &mut String, name: &str, help: &str, value: String| {
            metric(out, name, help, vec![(base.clone(), value)]);
        };
        gauge(
            &mut out,
            "flowrun_last_run_success",
            "1 if the last run of the workflow succeeded, else 0.",
            u8::from(success).to_string(),
        );
        gauge(
            &mut out,
            "flowrun_last_run_exit_code",
            "Exit status of the last run.",
            exit_code.to_string(),
        );
        gauge(
            &mut out,
            "flowrun_last_run_timestamp_seconds",
            "When the last run finished (Unix time).",
            format!("{end:.3}"),
        );
        if success {
            gauge(
                &mut out,
                "flowrun_last_success_timestamp_seconds",
                "When the last successful run finished (Unix time).",
                format!("{end:.3}"),
            );
        }
        gauge(
            &mut out,
            "flowrun_last_run_duration_seconds",
            "Wall time of the last run.",
            format!("{:.3}", self.duration.as_secs_f64()),
        );
        metric(
            &mut out,
            "flowrun_last_run_steps",
            "Step instances of the last run, by status.",
            by_status(&self.totals())
                .iter()
                .map(|(s, n)| (format!("{base},status=\"{s}\""), n.to_string()))
                .collect(),
        );
        let mut host_lines = Vec::new();
        for (h, c) in &self.hosts {
            for (s, n) in by_status(c) {
                host_lines.push((
                    format!("{base},host=\"{}\",status=\"{s}\"", prom_label(h)),
                    n.to_string(),
                ));
            }
        }
        metric(
            &mut out,
            "flowrun_last_run_host_steps",
            "Step instances of the last run, by host and status.",
            host_lines,
        );
        out
    }
}

/// One gauge in Prometheus text format: its help, its type, a line per label set.
fn metric(out: &mut String, name: &str, help: &str, lines: Vec<(String, String)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in lines {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// Counters by status word, in the order the metrics list them.
fn by_status(c: &Counters) -> [(&'static str, u64); 5] {
    [
        ("ok", c.ok),
        ("changed", c.changed),
        ("failed", c.failed),
        ("skipped", c.skipped),
        ("unreachable", c.unreachable),
    ]
}

/// A duration as JUnit writes it: seconds, to the millisecond.
fn junit_secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Metrics of the run's remote traffic: commands sent to hosts (round trips)
/// and the helper channels opened for them, as the transports counted them.
pub fn remote_metrics(workflow: &str, stats: &crate::transport::RemoteStats) -> String {
    let wf = prom_label(workflow);
    format!(
        "# HELP flowrun_last_run_remote_commands Commands sent to remote hosts in the last run (one round trip each).\n\
         # TYPE flowrun_last_run_remote_commands gauge\n\
         flowrun_last_run_remote_commands{{workflow=\"{wf}\"}} {}\n\
         # HELP flowrun_last_run_remote_channels SSH channels opened for remote helpers in the last run.\n\
         # TYPE flowrun_last_run_remote_channels gauge\n\
         flowrun_last_run_remote_channels{{workflow=\"{wf}\"}} {}\n",
        stats.commands(),
        stats.sessions()
    )
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Escape text for XML attributes and content (control characters dropped).
pub fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn prom_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
