//! The journal: runs, every step instance's result, the last successful state
//! of each instance (its fingerprint and outputs, so a re-run can skip it and
//! restore its outputs), handlers still owed after an interrupted run, and the
//! lock that keeps two runs of one workflow and inventory from overlapping.
//!
//! Two backends keep the same schema and semantics behind one [`Backend`]
//! trait: a SQLite file for one controller, and PostgreSQL for several
//! controllers sharing one journal and one lock (an advisory lock, released
//! by the server when a controller dies).
//!
//! Whatever the backend, one connection is owned by a dedicated thread fed
//! by a channel: the executor never blocks on the database while steps run,
//! and writes are batched into transactions (a journaled re-run of 10,000
//! instances commits a handful). A write that fails is not retried: the
//! journal reports the failure to the run, which stops.

mod actor;
mod backend;
mod error;
mod location;
mod migrations;
mod pgurl;
mod postgres;
mod records;
mod sqlite;
mod tls;
mod words;

pub use backend::{Item, Pruned, Stats, WorkflowStats};
pub use error::JournalError;
pub use location::Location;
pub use pgurl::{PgTarget, SslMode};
pub use records::{InFlight, LockHolder, Record, RecordKey, RunRow, RunStep};

use crate::secrets::SecretKey;
pub use crate::status::{RunMode, RunStatus, Status};
use actor::{serve, Cancel, Msg};
use backend::{Backend, LockClaim, Mark, Write};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// A handle on the journal thread. Writes are queued; `flush` waits for them.
pub struct Journal {
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    location: Location,
    cancel: Arc<Cancel>,
    failed: tokio::sync::watch::Receiver<Option<String>>,
}

impl Journal {
    /// Open (creating with mode 0600 and migrating) the SQLite journal at `path`.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        Self::connect(&Location::Sqlite(path.to_path_buf()))
    }

    /// Open the journal at `location`, migrating its schema to this version.
    pub fn connect(location: &Location) -> Result<Self, JournalError> {
        Self::start(location, true)
    }

    /// Open without migrating (for `flowrun journal migrate`, which reports first).
    pub fn connect_unmigrated(location: &Location) -> Result<Self, JournalError> {
        Self::start(location, false)
    }

    fn start(location: &Location, migrate: bool) -> Result<Self, JournalError> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (fail_tx, failed) = tokio::sync::watch::channel(None);
        let cancel = Arc::new(Cancel::default());
        let loc = location.clone();
        let c = cancel.clone();
        // The backend is created on its own thread: PostgreSQL's client runs a
        // runtime of its own, which must not start inside the caller's.
        let thread = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || {
                let backend = backend::open(&loc, migrate);
                match backend {
                    Ok(mut b) => {
                        if let Some(canceller) = b.canceller() {
                            *c.server.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(canceller);
                        }
                        let _ = ready_tx.send(Ok(()));
                        serve(b.as_mut(), &rx, &fail_tx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| JournalError::Open {
                journal: location.to_string(),
                message: e.to_string(),
            })?;
        ready_rx.recv().map_err(|_| JournalError::Gone)??;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            location: location.clone(),
            cancel,
            failed,
        })
    }

    /// Where this journal is (never with a password).
    pub fn location(&self) -> &Location {
        &self.location
    }

    fn send(&self, m: Msg) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(m);
        }
    }

    fn write(&self, w: Write) {
        self.send(Msg::Write(w));
    }

    fn ask<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let (tx, rx) = mpsc::channel();
        self.send(Msg::Ask(Box::new(move |b| {
            let _ = tx.send(f(b));
        })));
        rx.recv().map_err(|_| JournalError::Gone)?
    }

    /// Becomes `Some(message)` when a write failed: the run must stop.
    pub fn failures(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.failed.clone()
    }

    /// Successful records of a workflow.
    pub fn load(&self, workflow: &str) -> Result<HashMap<RecordKey, Record>, JournalError> {
        let wf = workflow.to_owned();
        self.ask(move |b| b.load(&wf))
    }

    /// Handlers owed from earlier runs: (host, handler).
    pub fn pending_handlers(&self, workflow: &str) -> Result<Vec<(String, String)>, JournalError> {
        let wf = workflow.to_owned();
        self.ask(move |b| b.pending_handlers(&wf))
    }

    /// Take the lock of (workflow, inventory); `Some(holder)` when another live run holds it.
    pub fn lock(&self, workflow: &str, inventory: &str, run_id: &str) -> Result<Option<LockHolder>, JournalError> {
        self.lock_wait(workflow, inventory, run_id, None)
    }

    /// Take the lock, waiting in line up to `wait` for it (`None`: do not wait).
    /// `Some(holder)` when it is still held at the end. Blocks: call it off
    /// the async runtime; [`cancel_lock_wait`](Self::cancel_lock_wait) ends the wait.
    pub fn lock_wait(
        &self,
        workflow: &str,
        inventory: &str,
        run_id: &str,
        wait: Option<Duration>,
    ) -> Result<Option<LockHolder>, JournalError> {
        let claim = LockClaim::new(workflow, inventory, run_id);
        let cancel = self.cancel.clone();
        cancel.flag.store(false, Ordering::SeqCst);
        self.ask(move |b| b.lock(&claim, wait, &cancel.flag))
    }

    /// End a lock wait in progress (on SIGINT/SIGTERM).
    pub fn cancel_lock_wait(&self) {
        self.cancel.flag.store(true, Ordering::SeqCst);
        let server = self
            .cancel
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = server.as_ref() {
            c();
        }
    }

    pub fn unlock(&self, workflow: &str, inventory: &str, run_id: &str) {
        self.write(Write::Unlock(LockClaim::new(workflow, inventory, run_id)));
    }

    /// Mark an instance in flight (its `apply` starts) and wait until the
    /// mark is committed: a controller killed during the apply leaves it
    /// behind for the next run, which rolls back first.
    pub fn applying(&self, workflow: &str, inventory: &str, key: &RecordKey, run_id: &str) -> Result<(), JournalError> {
        self.write(Write::Applying {
            mark: mark(workflow, inventory, key),
            run_id: run_id.to_owned(),
            started_at: now(),
        });
        self.flush()
    }

    /// Unmark an instance: its result is recorded, or a rollback handled it.
    pub fn landed(&self, workflow: &str, inventory: &str, key: &RecordKey) {
        self.write(Write::Landed(mark(workflow, inventory, key)));
    }

    /// The in-flight marks of (workflow, inventory), oldest first.
    pub fn in_flight(&self, workflow: &str, inventory: &str) -> Result<Vec<InFlight>, JournalError> {
        let (wf, inv) = (workflow.to_owned(), inventory.to_owned());
        self.ask(move |b| b.in_flight(&wf, &inv))
    }

    pub fn begin_run(&self, row: RunRow) {
        self.write(Write::BeginRun(row));
    }

    pub fn finish_run(&self, id: &str, status: RunStatus, totals: &Value) {
        self.write(Write::FinishRun {
            id: id.to_owned(),
            status,
            totals: totals.to_string(),
        });
    }

    pub fn step(&self, run_id: &str, seq: u64, step: RunStep) {
        self.write(Write::Step {
            run_id: run_id.to_owned(),
            seq,
            step,
        });
    }

    pub fn put(&self, workflow: &str, key: RecordKey, record: Record) {
        self.write(Write::Put {
            workflow: workflow.to_owned(),
            key,
            record,
        });
    }

    pub fn delete(&self, workflow: &str, key: RecordKey) {
        self.write(Write::Delete {
            workflow: workflow.to_owned(),
            key,
        });
    }

    pub fn notify(&self, workflow: &str, host: &str, handler: &str) {
        self.write(Write::Notify {
            workflow: workflow.to_owned(),
            host: host.to_owned(),
            handler: handler.to_owned(),
        });
    }

    pub fn notified(&self, workflow: &str, host: &str, handler: &str) {
        self.write(Write::Notified {
            workflow: workflow.to_owned(),
            host: host.to_owned(),
            handler: handler.to_owned(),
        });
    }

    pub fn history(&self, workflow: Option<&str>, limit: usize) -> Result<Vec<RunRow>, JournalError> {
        let wf = workflow.map(str::to_owned);
        self.ask(move |b| b.history(wf.as_deref(), limit))
    }

    pub fn show(&self, run_id: &str) -> Result<Option<(RunRow, Vec<RunStep>)>, JournalError> {
        let id = run_id.to_owned();
        self.ask(move |b| b.show(&id))
    }

    /// Remove records (so those steps run again); returns how many.
    pub fn forget(
        &self,
        workflow: Option<&str>,
        step: Option<&str>,
        host: Option<&str>,
    ) -> Result<usize, JournalError> {
        let (w, s, h) = (
            workflow.map(str::to_owned),
            step.map(str::to_owned),
            host.map(str::to_owned),
        );
        self.ask(move |b| b.forget(w.as_deref(), s.as_deref(), h.as_deref()))
    }

    /// Make sure `key` is the key this journal's secrets and fingerprints were
    /// made with: the journal keeps a check value of its key (a keyed hash,
    /// which tells nothing about the key). A new journal learns ours.
    pub fn check_key(&self, key: &SecretKey, key_file: &Path) -> Result<(), JournalError> {
        let ours = key.check_value();
        let journal = self.location.to_string();
        let key_file = key_file.display().to_string();
        self.ask(move |b| match b.meta_get(backend::KEY_CHECK)? {
            None => b.meta_set(backend::KEY_CHECK, &ours),
            Some(theirs) if theirs == ours => Ok(()),
            Some(theirs) => Err(JournalError::WrongKey {
                journal,
                key_file,
                journal_key: key_id(&theirs),
                our_key: key_id(&ours),
            }),
        })
    }

    /// The key id this journal was written with, if it knows one.
    pub fn key_id(&self) -> Result<Option<String>, JournalError> {
        self.ask(|b| Ok(b.meta_get(backend::KEY_CHECK)?.map(|v| key_id(&v))))
    }

    /// The schema version in the journal, and the one this flowrun knows.
    pub fn schema_version(&self) -> Result<(u32, u32), JournalError> {
        self.ask(|b| Ok((b.schema_version()?, migrations::LATEST)))
    }

    /// Apply the migrations this journal lacks; returns (from, to).
    pub fn migrate(&self) -> Result<(u32, u32), JournalError> {
        self.ask(|b| {
            let from = b.schema_version()?;
            b.migrate()?;
            Ok((from, b.schema_version()?))
        })
    }

    pub fn stats(&self) -> Result<Stats, JournalError> {
        self.ask(|b| b.stats())
    }

    /// Remove finished runs that started before `before` (unix seconds), with
    /// their step results, except runs that hold the last success of an
    /// instance. `dry_run` counts without removing.
    pub fn prune(&self, before: i64, dry_run: bool) -> Result<Pruned, JournalError> {
        self.ask(move |b| b.prune(before, dry_run))
    }

    /// Copy every run, step result, record, owed handler and the key check
    /// value into `dest`, which must hold no runs or records. Returns the
    /// number of items copied.
    pub fn copy_to(&self, dest: &Journal) -> Result<u64, JournalError> {
        if !dest.ask(|b| b.is_empty())? {
            return Err(JournalError::Config(format!(
                "`{}` already holds runs or records: copy only into an empty journal",
                dest.location
            )));
        }
        // The destination imports in one transaction while the source streams;
        // `None` ends the stream, and a stream that ends without it rolls back.
        let (tx, rx) = mpsc::sync_channel::<Option<Vec<Item>>>(4);
        let (done_tx, done_rx) = mpsc::channel();
        dest.send(Msg::Ask(Box::new(move |b| {
            let _ = done_tx.send(b.import(&rx));
        })));
        let exported = self.ask(move |b| {
            let mut chunk = Vec::with_capacity(1000);
            let mut n = 0u64;
            let gone = || JournalError::Sql("the destination stopped importing".into());
            b.export(&mut |item| {
                n += 1;
                chunk.push(item);
                if chunk.len() >= 1000 {
                    tx.send(Some(std::mem::take(&mut chunk))).map_err(|_| gone())?;
                }
                Ok(())
            })?;
            tx.send(Some(chunk)).map_err(|_| gone())?;
            tx.send(None).map_err(|_| gone())?;
            Ok(n)
        });
        let imported = done_rx.recv().map_err(|_| JournalError::Gone)?;
        let n = exported?;
        imported?;
        Ok(n)
    }

    /// Wait until every queued write is committed; the first write error, if any.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.ask_flush()
    }

    fn ask_flush(&self) -> Result<(), JournalError> {
        let (tx, rx) = mpsc::channel();
        self.send(Msg::Flush(tx));
        rx.recv().map_err(|_| JournalError::Gone)?
    }
}

fn mark(workflow: &str, inventory: &str, key: &RecordKey) -> Mark {
    Mark {
        workflow: workflow.to_owned(),
        inventory: inventory.to_owned(),
        key: key.clone(),
    }
}

/// The short form of a key check value shown to users.
fn key_id(check: &str) -> String {
    check.chars().take(12).collect()
}

impl Drop for Journal {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The controller's host name, recorded with runs and locks.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Unix time in seconds.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// The default SQLite journal: a file in the user's state directory.
pub fn default_path() -> PathBuf {
    crate::paths::state_dir().join("journal.db")
}
