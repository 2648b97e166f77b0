//! What the journal holds and hands back: an instance's identity and last
//! successful state, an instance left in flight, a run and its steps (for
//! `history`/`show`), the holder of a lock.

use super::{RunMode, RunStatus, Status};

/// Identity of a step instance in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    pub step_id: String,
    pub item: String,
    pub host: String,
}

/// The last successful state of a step instance.
#[derive(Debug, Clone)]
pub struct Record {
    pub fingerprint: String,
    pub status: Status,
    /// Plaintext outputs (JSON), when they hold no secret.
    pub outputs: Option<String>,
    /// Encrypted outputs, when they do.
    pub outputs_enc: Option<Vec<u8>>,
    pub run_id: String,
}

/// An instance whose `apply` started and whose result was never recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub key: RecordKey,
    /// The run that started it.
    pub run_id: String,
    pub started_at: i64,
}

/// A finished step instance, for `history`/`show`.
#[derive(Debug, Clone)]
pub struct RunStep {
    pub step_id: String,
    pub host: String,
    pub item: String,
    pub status: Status,
    pub from_journal: bool,
    pub duration_ms: u64,
    pub message: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: String,
    pub workflow: String,
    pub inventory: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub status: RunStatus,
    /// The controller: the machine the run ran on.
    pub host: String,
    pub pid: i64,
    pub mode: RunMode,
    pub totals: Option<String>,
}

/// Who holds a lock.
#[derive(Debug, Clone)]
pub struct LockHolder {
    /// The controller's host name.
    pub host: String,
    pub pid: i64,
    pub started_at: i64,
    pub run_id: String,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.run_id.is_empty() {
            return f.write_str("another controller (it is still starting)");
        }
        write!(
            f,
            "host {} pid {} run {} since {}",
            if self.host.is_empty() { "?" } else { &self.host },
            self.pid,
            self.run_id,
            crate::clock::utc_text(self.started_at)
        )
    }
}
