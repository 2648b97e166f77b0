//! The journal: a SQLite file (WAL, mode 0600, schema versioned with
//! migrations) recording runs, every step instance's result, the last
//! successful state of each instance (its fingerprint and outputs, so a
//! re-run can skip it and restore its outputs), handlers still owed after an
//! interrupted run, and the lock that keeps two runs of one workflow and
//! inventory from overlapping.
//!
//! One connection, owned by a dedicated thread fed by a channel: the executor
//! never blocks on disk while steps run, and writes are batched into
//! transactions (a journaled re-run of 10,000 instances commits a handful).

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Migrations, applied in order; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY, workflow TEXT NOT NULL, inventory TEXT NOT NULL,
        started_at INTEGER NOT NULL, finished_at INTEGER, status TEXT NOT NULL,
        pid INTEGER NOT NULL, mode TEXT NOT NULL, totals TEXT);
     CREATE INDEX runs_by_workflow ON runs (workflow, started_at);
     CREATE TABLE run_steps (
        run_id TEXT NOT NULL, seq INTEGER NOT NULL, step_id TEXT NOT NULL, host TEXT NOT NULL,
        item TEXT NOT NULL, status TEXT NOT NULL, from_journal INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL, message TEXT, PRIMARY KEY (run_id, seq));
     CREATE TABLE records (
        workflow TEXT NOT NULL, step_id TEXT NOT NULL, item TEXT NOT NULL, host TEXT NOT NULL,
        fingerprint TEXT NOT NULL, status TEXT NOT NULL, outputs TEXT, outputs_enc BLOB,
        run_id TEXT NOT NULL, updated_at INTEGER NOT NULL,
        PRIMARY KEY (workflow, step_id, item, host));
     CREATE TABLE pending_handlers (
        workflow TEXT NOT NULL, host TEXT NOT NULL, handler TEXT NOT NULL,
        PRIMARY KEY (workflow, host, handler));
     CREATE TABLE locks (
        workflow TEXT NOT NULL, inventory TEXT NOT NULL, pid INTEGER NOT NULL, pid_start TEXT NOT NULL,
        run_id TEXT NOT NULL, started_at INTEGER NOT NULL, PRIMARY KEY (workflow, inventory));",
];

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
    pub status: String,
    /// Plaintext outputs (JSON), when they hold no secret.
    pub outputs: Option<String>,
    /// Encrypted outputs, when they do.
    pub outputs_enc: Option<Vec<u8>>,
    pub run_id: String,
}

/// A finished step instance, for `history`/`show`.
#[derive(Debug, Clone)]
pub struct RunStep {
    pub step_id: String,
    pub host: String,
    pub item: String,
    pub status: String,
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
    pub status: String,
    pub pid: i64,
    pub mode: String,
    pub totals: Option<String>,
}

/// Who holds a lock.
#[derive(Debug, Clone)]
pub struct LockHolder {
    pub pid: i64,
    pub started_at: i64,
    pub run_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal `{path}`: {message}")]
    Open { path: PathBuf, message: String },
    #[error("journal: {0}")]
    Sql(String),
    #[error("journal: the journal thread stopped")]
    Gone,
}

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e.to_string())
    }
}

type Reply<T> = mpsc::Sender<Result<T, JournalError>>;

enum Msg {
    Load(String, Reply<HashMap<RecordKey, Record>>),
    Pending(String, Reply<Vec<(String, String)>>),
    Lock {
        workflow: String,
        inventory: String,
        run_id: String,
        reply: Reply<Option<LockHolder>>,
    },
    Unlock {
        workflow: String,
        inventory: String,
        run_id: String,
    },
    BeginRun(RunRow),
    FinishRun {
        id: String,
        status: String,
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
    History(Option<String>, usize, Reply<Vec<RunRow>>),
    Show(String, Reply<Option<(RunRow, Vec<RunStep>)>>),
    Forget {
        workflow: Option<String>,
        step: Option<String>,
        host: Option<String>,
        reply: Reply<usize>,
    },
    Flush(Reply<()>),
}

/// A handle on the journal thread. Writes are queued; `flush` waits for them.
pub struct Journal {
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    pub path: PathBuf,
}

impl Journal {
    /// Open (creating with mode 0600 and migrating) the journal at `path`.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let open_err = |m: String| JournalError::Open {
            path: path.to_path_buf(),
            message: m,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(format!("cannot create its directory: {e}")))?;
        }
        if !path.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| open_err(e.to_string()))?;
        }
        let conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| open_err(e.to_string()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| open_err(e.to_string()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| open_err(e.to_string()))?;
        migrate(&conn).map_err(|e| open_err(e.to_string()))?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || serve(&conn, &rx))
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            path: path.to_path_buf(),
        })
    }

    fn send(&self, m: Msg) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(m);
        }
    }

    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Msg) -> Result<T, JournalError> {
        let (tx, rx) = mpsc::channel();
        self.send(make(tx));
        rx.recv().map_err(|_| JournalError::Gone)?
    }

    /// Successful records of a workflow.
    pub fn load(&self, workflow: &str) -> Result<HashMap<RecordKey, Record>, JournalError> {
        self.ask(|r| Msg::Load(workflow.to_owned(), r))
    }

    /// Handlers owed from earlier runs: (host, handler).
    pub fn pending_handlers(&self, workflow: &str) -> Result<Vec<(String, String)>, JournalError> {
        self.ask(|r| Msg::Pending(workflow.to_owned(), r))
    }

    /// Take the lock of (workflow, inventory); `Some(holder)` when a live process holds it.
    pub fn lock(&self, workflow: &str, inventory: &str, run_id: &str) -> Result<Option<LockHolder>, JournalError> {
        self.ask(|reply| Msg::Lock {
            workflow: workflow.to_owned(),
            inventory: inventory.to_owned(),
            run_id: run_id.to_owned(),
            reply,
        })
    }

    pub fn unlock(&self, workflow: &str, inventory: &str, run_id: &str) {
        self.send(Msg::Unlock {
            workflow: workflow.to_owned(),
            inventory: inventory.to_owned(),
            run_id: run_id.to_owned(),
        });
    }

    pub fn begin_run(&self, row: RunRow) {
        self.send(Msg::BeginRun(row));
    }

    pub fn finish_run(&self, id: &str, status: &str, totals: &Value) {
        self.send(Msg::FinishRun {
            id: id.to_owned(),
            status: status.to_owned(),
            totals: totals.to_string(),
        });
    }

    pub fn step(&self, run_id: &str, seq: u64, step: RunStep) {
        self.send(Msg::Step {
            run_id: run_id.to_owned(),
            seq,
            step,
        });
    }

    pub fn put(&self, workflow: &str, key: RecordKey, record: Record) {
        self.send(Msg::Put {
            workflow: workflow.to_owned(),
            key,
            record,
        });
    }

    pub fn delete(&self, workflow: &str, key: RecordKey) {
        self.send(Msg::Delete {
            workflow: workflow.to_owned(),
            key,
        });
    }

    pub fn notify(&self, workflow: &str, host: &str, handler: &str) {
        self.send(Msg::Notify {
            workflow: workflow.to_owned(),
            host: host.to_owned(),
            handler: handler.to_owned(),
        });
    }

    pub fn notified(&self, workflow: &str, host: &str, handler: &str) {
        self.send(Msg::Notified {
            workflow: workflow.to_owned(),
            host: host.to_owned(),
            handler: handler.to_owned(),
        });
    }

    pub fn history(&self, workflow: Option<&str>, limit: usize) -> Result<Vec<RunRow>, JournalError> {
        self.ask(|r| Msg::History(workflow.map(str::to_owned), limit, r))
    }

    pub fn show(&self, run_id: &str) -> Result<Option<(RunRow, Vec<RunStep>)>, JournalError> {
        self.ask(|r| Msg::Show(run_id.to_owned(), r))
    }

    /// Remove records (so those steps run again); returns how many.
    pub fn forget(
        &self,
        workflow: Option<&str>,
        step: Option<&str>,
        host: Option<&str>,
    ) -> Result<usize, JournalError> {
        self.ask(|reply| Msg::Forget {
            workflow: workflow.map(str::to_owned),
            step: step.map(str::to_owned),
            host: host.map(str::to_owned),
            reply,
        })
    }

    /// Wait until every queued write is committed.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.ask(Msg::Flush)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(0);
    if version > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "schema version {version} is newer than this flowrun knows ({}); upgrade flowrun",
            MIGRATIONS.len()
        )));
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(m)?;
        tx.pragma_update(None, "user_version", i64::try_from(i + 1).unwrap_or(0))?;
        tx.commit()?;
    }
    Ok(())
}

/// The journal thread: answer reads at once; batch writes into one transaction
/// per burst of queued messages.
fn serve(conn: &Connection, rx: &mpsc::Receiver<Msg>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 5000 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut in_tx = false;
        let mut flushes = Vec::new();
        for m in batch {
            match m {
                Msg::Flush(r) => flushes.push(r),
                // A lock is taken in its own IMMEDIATE transaction (other processes race for it).
                Msg::Lock { .. } => {
                    if in_tx {
                        commit(conn);
                        in_tx = false;
                    }
                    if let Err(e) = handle(conn, m) {
                        tracing::error!("journal lock failed: {e}");
                    }
                }
                m => {
                    if !in_tx {
                        in_tx = conn.execute_batch("BEGIN").is_ok();
                    }
                    if let Err(e) = handle(conn, m) {
                        tracing::error!("journal write failed: {e}");
                    }
                }
            }
        }
        if in_tx {
            commit(conn);
        }
        for r in flushes {
            let _ = r.send(Ok(()));
        }
    }
}

fn commit(conn: &Connection) {
    if let Err(e) = conn.execute_batch("COMMIT") {
        tracing::error!("journal commit failed: {e}");
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

fn handle(conn: &Connection, m: Msg) -> rusqlite::Result<()> {
    match m {
        Msg::Load(wf, reply) => {
            let _ = reply.send(load(conn, &wf).map_err(Into::into));
        }
        Msg::Pending(wf, reply) => {
            let r = (|| {
                let mut st = conn.prepare_cached("SELECT host, handler FROM pending_handlers WHERE workflow = ?1")?;
                let rows = st.query_map([&wf], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })();
            let _ = reply.send(r.map_err(Into::into));
        }
        Msg::Lock {
            workflow,
            inventory,
            run_id,
            reply,
        } => {
            let _ = reply.send(lock(conn, &workflow, &inventory, &run_id).map_err(Into::into));
        }
        Msg::Unlock {
            workflow,
            inventory,
            run_id,
        } => {
            conn.execute(
                "DELETE FROM locks WHERE workflow = ?1 AND inventory = ?2 AND run_id = ?3",
                params![workflow, inventory, run_id],
            )?;
        }
        Msg::BeginRun(r) => {
            conn.execute(
                "INSERT INTO runs (id, workflow, inventory, started_at, status, pid, mode) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![r.id, r.workflow, r.inventory, r.started_at, r.status, r.pid, r.mode],
            )?;
        }
        Msg::FinishRun { id, status, totals } => {
            conn.execute(
                "UPDATE runs SET finished_at = ?2, status = ?3, totals = ?4 WHERE id = ?1",
                params![id, now(), status, totals],
            )?;
        }
        Msg::Step { run_id, seq, step } => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO run_steps (run_id, seq, step_id, host, item, status, from_journal, duration_ms, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                run_id,
                i64::try_from(seq).unwrap_or(i64::MAX),
                step.step_id,
                step.host,
                step.item,
                step.status,
                step.from_journal,
                i64::try_from(step.duration_ms).unwrap_or(i64::MAX),
                step.message
            ])?;
        }
        Msg::Put { workflow, key, record } => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO records (workflow, step_id, item, host, fingerprint, status, outputs, outputs_enc, run_id, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                workflow,
                key.step_id,
                key.item,
                key.host,
                record.fingerprint,
                record.status,
                record.outputs,
                record.outputs_enc,
                record.run_id,
                now()
            ])?;
        }
        Msg::Delete { workflow, key } => {
            conn.prepare_cached(
                "DELETE FROM records WHERE workflow = ?1 AND step_id = ?2 AND item = ?3 AND host = ?4",
            )?
            .execute(params![workflow, key.step_id, key.item, key.host])?;
        }
        Msg::Notify {
            workflow,
            host,
            handler,
        } => {
            conn.execute(
                "INSERT OR IGNORE INTO pending_handlers (workflow, host, handler) VALUES (?1, ?2, ?3)",
                params![workflow, host, handler],
            )?;
        }
        Msg::Notified {
            workflow,
            host,
            handler,
        } => {
            conn.execute(
                "DELETE FROM pending_handlers WHERE workflow = ?1 AND host = ?2 AND handler = ?3",
                params![workflow, host, handler],
            )?;
        }
        Msg::History(wf, limit, reply) => {
            let _ = reply.send(history(conn, wf.as_deref(), limit).map_err(Into::into));
        }
        Msg::Show(id, reply) => {
            let _ = reply.send(show(conn, &id).map_err(Into::into));
        }
        Msg::Forget {
            workflow,
            step,
            host,
            reply,
        } => {
            let n = conn.execute(
                "DELETE FROM records WHERE (?1 IS NULL OR workflow = ?1) AND (?2 IS NULL OR step_id = ?2) AND (?3 IS NULL OR host = ?3)",
                params![workflow, step, host],
            );
            let _ = reply.send(n.map_err(Into::into));
        }
        Msg::Flush(reply) => {
            let _ = reply.send(Ok(()));
        }
    }
    Ok(())
}

fn load(conn: &Connection, wf: &str) -> rusqlite::Result<HashMap<RecordKey, Record>> {
    let mut st = conn.prepare_cached(
        "SELECT step_id, item, host, fingerprint, status, outputs, outputs_enc, run_id FROM records WHERE workflow = ?1",
    )?;
    let rows = st.query_map([wf], |r| {
        Ok((
            RecordKey {
                step_id: r.get(0)?,
                item: r.get(1)?,
                host: r.get(2)?,
            },
            Record {
                fingerprint: r.get(3)?,
                status: r.get(4)?,
                outputs: r.get(5)?,
                outputs_enc: r.get(6)?,
                run_id: r.get(7)?,
            },
        ))
    })?;
    rows.collect()
}

fn lock(conn: &Connection, workflow: &str, inventory: &str, run_id: &str) -> rusqlite::Result<Option<LockHolder>> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let held: Option<(i64, String, String, i64)> = tx
        .query_row(
            "SELECT pid, pid_start, run_id, started_at FROM locks WHERE workflow = ?1 AND inventory = ?2",
            params![workflow, inventory],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    if let Some((pid, pid_start, holder_run, started_at)) = held {
        if process_alive(pid, &pid_start) {
            return Ok(Some(LockHolder {
                pid,
                started_at,
                run_id: holder_run,
            }));
        }
        tracing::warn!("taking over the lock of run {holder_run}: its process {pid} is gone");
        // The dead run never finished: say so in its record.
        tx.execute(
            "UPDATE runs SET status = 'abandoned' WHERE id = ?1 AND finished_at IS NULL",
            [&holder_run],
        )?;
    }
    let me = std::process::id();
    tx.execute(
        "INSERT OR REPLACE INTO locks (workflow, inventory, pid, pid_start, run_id, started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![workflow, inventory, me, process_start(i64::from(me)).unwrap_or_default(), run_id, now()],
    )?;
    tx.commit()?;
    Ok(None)
}

/// The start time of a process (field 22 of /proc/PID/stat), to tell a reused pid apart.
fn process_start(pid: i64) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19).map(str::to_owned)
}

fn process_alive(pid: i64, start: &str) -> bool {
    match process_start(pid) {
        Some(s) => start.is_empty() || s == start,
        None => false,
    }
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        workflow: r.get(1)?,
        inventory: r.get(2)?,
        started_at: r.get(3)?,
        finished_at: r.get(4)?,
        status: r.get(5)?,
        pid: r.get(6)?,
        mode: r.get(7)?,
        totals: r.get(8)?,
    })
}

const RUN_COLS: &str = "id, workflow, inventory, started_at, finished_at, status, pid, mode, totals";

fn history(conn: &Connection, wf: Option<&str>, limit: usize) -> rusqlite::Result<Vec<RunRow>> {
    let mut st = conn.prepare(&format!(
        "SELECT {RUN_COLS} FROM runs WHERE (?1 IS NULL OR workflow = ?1) ORDER BY started_at DESC, rowid DESC LIMIT ?2"
    ))?;
    let rows = st.query_map(params![wf, i64::try_from(limit).unwrap_or(i64::MAX)], run_row)?;
    rows.collect()
}

fn show(conn: &Connection, id: &str) -> rusqlite::Result<Option<(RunRow, Vec<RunStep>)>> {
    let Some(run) = conn
        .query_row(&format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"), [id], run_row)
        .optional()?
    else {
        return Ok(None);
    };
    let mut st = conn.prepare(
        "SELECT step_id, host, item, status, from_journal, duration_ms, message FROM run_steps WHERE run_id = ?1 ORDER BY seq",
    )?;
    let steps = st
        .query_map([id], |r| {
            Ok(RunStep {
                step_id: r.get(0)?,
                host: r.get(1)?,
                item: r.get(2)?,
                status: r.get(3)?,
                from_journal: r.get(4)?,
                duration_ms: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                message: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some((run, steps)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn records_roundtrip_and_file_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.db");
        let j = Journal::open(&p).unwrap();
        let key = RecordKey {
            step_id: "a".into(),
            item: String::new(),
            host: "localhost".into(),
        };
        j.put(
            "wf",
            key.clone(),
            Record {
                fingerprint: "f".into(),
                status: "changed".into(),
                outputs: Some("{}".into()),
                outputs_enc: None,
                run_id: "r".into(),
            },
        );
        j.flush().unwrap();
        assert_eq!(j.load("wf").unwrap()[&key].fingerprint, "f");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(j.forget(Some("wf"), None, None).unwrap(), 1);
        assert!(j.load("wf").unwrap().is_empty());
    }

    #[test]
    fn lock_is_exclusive_and_dead_holders_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        assert!(j.lock("wf", "inv", "r1").unwrap().is_none());
        let holder = j.lock("wf", "inv", "r2").unwrap().expect("held by this live process");
        assert_eq!(holder.run_id, "r1");
        j.unlock("wf", "inv", "r1");
        j.flush().unwrap();
        assert!(j.lock("wf", "inv", "r2").unwrap().is_none());
        // A holder whose process is gone (pid far beyond pid_max) is taken over.
        let conn = Connection::open(dir.path().join("j.db")).unwrap();
        conn.execute("UPDATE locks SET pid = 999999999", []).unwrap();
        assert!(j.lock("wf", "inv", "r3").unwrap().is_none());
    }
}
