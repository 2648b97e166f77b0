//! The one interface both journal backends implement, and the values that
//! cross it: batched writes, lock claims, upkeep figures and the items a
//! journal copy streams. The journal thread owns one backend; nothing else
//! touches it.

use super::{JournalError, Location, Record, RecordKey, RunRow, RunStep};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Duration;

/// The `meta` key of the journal key's check value.
pub(crate) const KEY_CHECK: &str = "key_check";

/// A queued write; a burst of them is applied in one transaction.
pub(crate) enum Write {
    BeginRun(RunRow),
    FinishRun {
        id: String,
        status: crate::status::RunStatus,
        totals: String,
    },
    Step {
        run_id: String,
        seq: u64,
        step: RunStep,
    },
    Put {
        workflow: String,
        key: RecordKey,
        record: Record,
    },
    Delete {
        workflow: String,
        key: RecordKey,
    },
    Notify {
        workflow: String,
        host: String,
        handler: String,
    },
    Notified {
        workflow: String,
        host: String,
        handler: String,
    },
    Unlock(LockClaim),
    /// An instance's `apply` starts: mark it in flight.
    Applying {
        mark: Mark,
        run_id: String,
        started_at: i64,
    },
    /// Its result is recorded (or a rollback handled it): unmark it.
    Landed(Mark),
}

/// Which instance of which workflow run with which inventory an in-flight mark is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Mark {
    pub workflow: String,
    pub inventory: String,
    pub key: RecordKey,
}

/// A run asking for the lock of (workflow, inventory).
#[derive(Debug, Clone)]
pub(crate) struct LockClaim {
    pub workflow: String,
    pub inventory: String,
    pub run_id: String,
    pub host: String,
    pub pid: i64,
}

impl LockClaim {
    pub fn new(workflow: &str, inventory: &str, run_id: &str) -> Self {
        Self {
            workflow: workflow.to_owned(),
            inventory: inventory.to_owned(),
            run_id: run_id.to_owned(),
            host: super::this_host(),
            pid: i64::from(std::process::id()),
        }
    }
}

/// One row of a journal, as `flowrun journal copy` moves it.
#[derive(Debug, Clone)]
pub enum Item {
    Run(RunRow),
    Step {
        run_id: String,
        seq: u64,
        step: RunStep,
    },
    Record {
        workflow: String,
        key: RecordKey,
        record: Record,
        updated_at: i64,
    },
    Pending {
        workflow: String,
        host: String,
        handler: String,
    },
    Meta {
        key: String,
        value: String,
    },
}

/// What `flowrun journal stats` prints.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub schema_version: u32,
    pub runs: u64,
    pub run_steps: u64,
    pub records: u64,
    pub pending_handlers: u64,
    pub oldest_run: Option<i64>,
    pub newest_run: Option<i64>,
    /// Bytes on disk (the SQLite file, or the PostgreSQL tables with indexes).
    pub bytes: Option<u64>,
    pub workflows: Vec<WorkflowStats>,
}

#[derive(Debug, Clone, Default)]
pub struct WorkflowStats {
    pub workflow: String,
    pub runs: u64,
    pub records: u64,
    pub last_run: Option<i64>,
}

/// What `flowrun journal prune` removed (or would remove).
#[derive(Debug, Clone, Copy, Default)]
pub struct Pruned {
    pub runs: u64,
    pub run_steps: u64,
    /// Old runs kept because a record still points at them.
    pub kept: u64,
}

pub(crate) trait Backend: Send {
    fn schema_version(&mut self) -> Result<u32, JournalError>;
    fn migrate(&mut self) -> Result<(), JournalError>;
    /// A way to interrupt a blocking lock wait from another thread.
    fn canceller(&self) -> Option<Box<dyn Fn() + Send>> {
        None
    }
    fn load(&mut self, workflow: &str) -> Result<HashMap<RecordKey, Record>, JournalError>;
    fn pending_handlers(&mut self, workflow: &str) -> Result<Vec<(String, String)>, JournalError>;
    /// The in-flight marks of (workflow, inventory).
    fn in_flight(&mut self, workflow: &str, inventory: &str) -> Result<Vec<super::InFlight>, JournalError>;
    /// Take the lock, waiting in line up to `wait`; `Some(holder)` when it stays held.
    fn lock(
        &mut self,
        claim: &LockClaim,
        wait: Option<Duration>,
        cancel: &AtomicBool,
    ) -> Result<Option<super::LockHolder>, JournalError>;
    /// Apply a burst of writes in one transaction.
    fn write(&mut self, batch: &[Write]) -> Result<(), JournalError>;
    fn history(&mut self, workflow: Option<&str>, limit: usize) -> Result<Vec<RunRow>, JournalError>;
    fn show(&mut self, id: &str) -> Result<Option<(RunRow, Vec<RunStep>)>, JournalError>;
    fn forget(&mut self, workflow: Option<&str>, step: Option<&str>, host: Option<&str>)
        -> Result<usize, JournalError>;
    fn meta_get(&mut self, key: &str) -> Result<Option<String>, JournalError>;
    fn meta_set(&mut self, key: &str, value: &str) -> Result<(), JournalError>;
    fn stats(&mut self) -> Result<Stats, JournalError>;
    fn prune(&mut self, before: i64, dry_run: bool) -> Result<Pruned, JournalError>;
    /// No runs and no records.
    fn is_empty(&mut self) -> Result<bool, JournalError>;
    /// Stream every row (runs before their steps).
    fn export(&mut self, each: &mut dyn FnMut(Item) -> Result<(), JournalError>) -> Result<(), JournalError>;
    /// Import chunks until `None`, in one transaction; a stream that ends
    /// without `None` rolls back.
    fn import(&mut self, chunks: &mpsc::Receiver<Option<Vec<Item>>>) -> Result<(), JournalError>;
}

/// Open the backend of a location (and migrate it, unless told not to).
pub(crate) fn open(location: &Location, migrate: bool) -> Result<Box<dyn Backend>, JournalError> {
    let mut b: Box<dyn Backend> = match location {
        Location::Sqlite(path) => Box::new(super::sqlite::Sqlite::open(path)?),
        Location::Postgres(target) => Box::new(super::postgres::Postgres::connect(target)?),
    };
    let version = b.schema_version()?;
    if version > super::migrations::LATEST {
        return Err(JournalError::NewerSchema {
            journal: location.to_string(),
            found: version,
            known: super::migrations::LATEST,
        });
    }
    if migrate {
        b.migrate()?;
    }
    Ok(b)
}
