//! The SQLite backend: one file (WAL, mode 0600) for one controller. Its
//! lock is a row naming the holder's pid (and the pid's start time, so a
//! reused pid is not mistaken for the holder); a holder whose process is gone
//! is taken over. Waiters queue with tickets, first come first served.

mod rows;

use super::backend::{Backend, Item, LockClaim, Pruned, Stats, WorkflowStats, Write};
use super::migrations::MIGRATIONS;
use super::{now, InFlight, JournalError, LockHolder, Record, RecordKey, RunRow, RunStep};
use rows::{export, import_one, run_row, step_row, write_one, RUN_COLS, STEP_COLS};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(crate) struct Sqlite {
    conn: Connection,
    path: PathBuf,
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let open_err = |m: String| JournalError::Open {
            journal: path.display().to_string(),
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
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| open_err(e.to_string()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| open_err(e.to_string()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn take(&self, claim: &LockClaim) -> rusqlite::Result<Option<LockHolder>> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        if let Some(holder) = live_holder(&tx, claim)? {
            return Ok(Some(holder));
        }
        insert_lock(&tx, claim)?;
        tx.commit()?;
        Ok(None)
    }

    /// Queue for the lock with a ticket; take it when it is free and ours is
    /// the oldest live ticket.
    fn wait(&self, claim: &LockClaim, wait: Duration, cancel: &AtomicBool) -> rusqlite::Result<Option<LockHolder>> {
        let deadline = Instant::now() + wait;
        let me = claim.pid;
        let my_start = process_start(me).unwrap_or_default();
        self.conn.execute(
            "INSERT INTO lock_queue (workflow, inventory, pid, pid_start, since) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![claim.workflow, claim.inventory, me, my_start, now()],
        )?;
        let ticket = self.conn.last_insert_rowid();
        let mut told = false;
        let result = loop {
            let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            let holder = live_holder(&tx, claim)?;
            if holder.is_none() && first_live_ticket(&tx, claim)? == Some(ticket) {
                insert_lock(&tx, claim)?;
                tx.execute("DELETE FROM lock_queue WHERE ticket = ?1", [ticket])?;
                tx.commit()?;
                break None;
            }
            tx.commit()?;
            let shown = holder.clone().unwrap_or_else(|| LockHolder {
                host: String::new(),
                pid: 0,
                started_at: 0,
                run_id: String::new(),
            });
            if Instant::now() >= deadline || cancel.load(Ordering::SeqCst) {
                break Some(shown);
            }
            if !told {
                if let Some(h) = &holder {
                    tracing::warn!(
                        "waiting up to {} for the lock of `{}`, held by {h}",
                        humantime::format_duration(wait),
                        claim.workflow
                    );
                    told = true;
                }
            }
            std::thread::sleep((deadline - Instant::now()).min(Duration::from_millis(200)));
        };
        if result.is_some() {
            self.conn
                .execute("DELETE FROM lock_queue WHERE ticket = ?1", [ticket])?;
        }
        Ok(result)
    }
}

/// The current holder of a claim's lock, if its process lives; a dead
/// holder's run is marked abandoned and its row removed.
fn live_holder(tx: &rusqlite::Transaction<'_>, claim: &LockClaim) -> rusqlite::Result<Option<LockHolder>> {
    let held: Option<(i64, String, String, i64, String)> = tx
        .query_row(
            "SELECT pid, pid_start, run_id, started_at, host FROM locks WHERE workflow = ?1 AND inventory = ?2",
            params![claim.workflow, claim.inventory],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((pid, pid_start, run_id, started_at, host)) = held else {
        return Ok(None);
    };
    if process_alive(pid, &pid_start) {
        return Ok(Some(LockHolder {
            host,
            pid,
            started_at,
            run_id,
        }));
    }
    tracing::warn!("taking over the lock of run {run_id}: its process {pid} is gone");
    // The dead run never finished: say so in its record.
    tx.execute(
        "UPDATE runs SET status = 'abandoned' WHERE id = ?1 AND finished_at IS NULL",
        [&run_id],
    )?;
    tx.execute(
        "DELETE FROM locks WHERE workflow = ?1 AND inventory = ?2",
        params![claim.workflow, claim.inventory],
    )?;
    Ok(None)
}

fn insert_lock(tx: &rusqlite::Transaction<'_>, claim: &LockClaim) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO locks (workflow, inventory, pid, pid_start, run_id, started_at, host) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            claim.workflow,
            claim.inventory,
            claim.pid,
            process_start(claim.pid).unwrap_or_default(),
            claim.run_id,
            now(),
            claim.host
        ],
    )?;
    Ok(())
}

/// The oldest ticket of a live waiter; tickets of dead waiters are dropped.
fn first_live_ticket(tx: &rusqlite::Transaction<'_>, claim: &LockClaim) -> rusqlite::Result<Option<i64>> {
    let mut st = tx.prepare(
        "SELECT ticket, pid, pid_start FROM lock_queue WHERE workflow = ?1 AND inventory = ?2 ORDER BY ticket",
    )?;
    let rows: Vec<(i64, i64, String)> = st
        .query_map(params![claim.workflow, claim.inventory], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (ticket, pid, start) in rows {
        if process_alive(pid, &start) {
            return Ok(Some(ticket));
        }
        tx.execute("DELETE FROM lock_queue WHERE ticket = ?1", [ticket])?;
    }
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

impl Backend for Sqlite {
    fn schema_version(&mut self) -> Result<u32, JournalError> {
        let v: i64 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        Ok(u32::try_from(v).unwrap_or(0))
    }

    fn migrate(&mut self) -> Result<(), JournalError> {
        let version = usize::try_from(self.schema_version()?).unwrap_or(usize::MAX);
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.unchecked_transaction()?;
            tx.execute_batch(m.sqlite)?;
            tx.pragma_update(None, "user_version", i64::try_from(i + 1).unwrap_or(0))?;
            tx.commit()?;
        }
        Ok(())
    }

    fn load(&mut self, wf: &str) -> Result<HashMap<RecordKey, Record>, JournalError> {
        let mut st = self.conn.prepare_cached(
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
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn pending_handlers(&mut self, wf: &str) -> Result<Vec<(String, String)>, JournalError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT host, handler FROM pending_handlers WHERE workflow = ?1")?;
        let rows = st.query_map([wf], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn in_flight(&mut self, wf: &str, inventory: &str) -> Result<Vec<InFlight>, JournalError> {
        let mut st = self.conn.prepare_cached(
            "SELECT step_id, item, host, run_id, started_at FROM in_flight WHERE workflow = ?1 AND inventory = ?2
             ORDER BY started_at, rowid",
        )?;
        let rows = st.query_map([wf, inventory], |r| {
            Ok(InFlight {
                key: RecordKey {
                    step_id: r.get(0)?,
                    item: r.get(1)?,
                    host: r.get(2)?,
                },
                run_id: r.get(3)?,
                started_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn lock(
        &mut self,
        claim: &LockClaim,
        wait: Option<Duration>,
        cancel: &AtomicBool,
    ) -> Result<Option<LockHolder>, JournalError> {
        Ok(match wait {
            None => self.take(claim)?,
            Some(w) => self.wait(claim, w, cancel)?,
        })
    }

    fn write(&mut self, batch: &[Write]) -> Result<(), JournalError> {
        let tx = self.conn.unchecked_transaction()?;
        for w in batch {
            write_one(&tx, w)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn history(&mut self, wf: Option<&str>, limit: usize) -> Result<Vec<RunRow>, JournalError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {RUN_COLS} FROM runs WHERE (?1 IS NULL OR workflow = ?1) ORDER BY started_at DESC, rowid DESC LIMIT ?2"
        ))?;
        let rows = st.query_map(params![wf, i64::try_from(limit).unwrap_or(i64::MAX)], run_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn show(&mut self, id: &str) -> Result<Option<(RunRow, Vec<RunStep>)>, JournalError> {
        let Some(run) = self
            .conn
            .query_row(&format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"), [id], run_row)
            .optional()?
        else {
            return Ok(None);
        };
        let mut st = self.conn.prepare(&format!(
            "SELECT {STEP_COLS} FROM run_steps WHERE run_id = ?1 ORDER BY seq"
        ))?;
        let steps = st
            .query_map([id], |r| step_row(r, 0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some((run, steps)))
    }

    fn forget(
        &mut self,
        workflow: Option<&str>,
        step: Option<&str>,
        host: Option<&str>,
    ) -> Result<usize, JournalError> {
        Ok(self.conn.execute(
            "DELETE FROM records WHERE (?1 IS NULL OR workflow = ?1) AND (?2 IS NULL OR step_id = ?2) AND (?3 IS NULL OR host = ?3)",
            params![workflow, step, host],
        )?)
    }

    fn meta_get(&mut self, key: &str) -> Result<Option<String>, JournalError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    fn meta_set(&mut self, key: &str, value: &str) -> Result<(), JournalError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    fn stats(&mut self) -> Result<Stats, JournalError> {
        let count = |sql: &str| -> Result<u64, JournalError> {
            let n: i64 = self.conn.query_row(sql, [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        let mut s = Stats {
            runs: count("SELECT count(*) FROM runs")?,
            run_steps: count("SELECT count(*) FROM run_steps")?,
            records: count("SELECT count(*) FROM records")?,
            pending_handlers: count("SELECT count(*) FROM pending_handlers")?,
            ..Stats::default()
        };
        s.schema_version = self.schema_version()?;
        (s.oldest_run, s.newest_run) =
            self.conn
                .query_row("SELECT min(started_at), max(started_at) FROM runs", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
        s.bytes = ["", "-wal"]
            .iter()
            .map(|suffix| {
                let mut p = self.path.clone().into_os_string();
                p.push(suffix);
                std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
            })
            .sum::<u64>()
            .into();
        let mut st = self.conn.prepare(
            "SELECT w, sum(runs), sum(records), max(last) FROM (
                SELECT workflow AS w, count(*) AS runs, 0 AS records, max(started_at) AS last FROM runs GROUP BY workflow
                UNION ALL SELECT workflow, 0, count(*), NULL FROM records GROUP BY workflow)
             GROUP BY w ORDER BY w",
        )?;
        s.workflows = st
            .query_map([], |r| {
                Ok(WorkflowStats {
                    workflow: r.get(0)?,
                    runs: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    records: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    last_run: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(s)
    }

    fn prune(&mut self, before: i64, dry_run: bool) -> Result<Pruned, JournalError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute_batch("CREATE TEMP TABLE IF NOT EXISTS prune_ids (id TEXT PRIMARY KEY); DELETE FROM prune_ids;")?;
        let old = "started_at < ?1 AND finished_at IS NOT NULL";
        let kept: i64 = tx.query_row(
            &format!("SELECT count(*) FROM runs WHERE {old} AND id IN (SELECT run_id FROM records)"),
            [before],
            |r| r.get(0),
        )?;
        let runs = tx.execute(
            &format!(
                "INSERT INTO prune_ids SELECT id FROM runs WHERE {old} AND id NOT IN (SELECT run_id FROM records)"
            ),
            [before],
        )?;
        let run_steps: i64 = tx.query_row(
            "SELECT count(*) FROM run_steps WHERE run_id IN (SELECT id FROM prune_ids)",
            [],
            |r| r.get(0),
        )?;
        if !dry_run {
            tx.execute_batch(
                "DELETE FROM run_steps WHERE run_id IN (SELECT id FROM prune_ids);
                 DELETE FROM runs WHERE id IN (SELECT id FROM prune_ids);",
            )?;
        }
        tx.execute_batch("DROP TABLE prune_ids")?;
        tx.commit()?;
        if !dry_run && runs > 0 {
            self.conn.execute_batch("VACUUM")?;
        }
        Ok(Pruned {
            runs: runs as u64,
            run_steps: u64::try_from(run_steps).unwrap_or(0),
            kept: u64::try_from(kept).unwrap_or(0),
        })
    }

    fn is_empty(&mut self) -> Result<bool, JournalError> {
        let n: i64 = self.conn.query_row(
            "SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM records)",
            [],
            |r| r.get(0),
        )?;
        Ok(n == 0)
    }

    fn export(&mut self, each: &mut dyn FnMut(Item) -> Result<(), JournalError>) -> Result<(), JournalError> {
        export(&self.conn, each)
    }

    fn import(&mut self, chunks: &mpsc::Receiver<Option<Vec<Item>>>) -> Result<(), JournalError> {
        let tx = self.conn.unchecked_transaction()?;
        loop {
            match chunks.recv() {
                Ok(Some(items)) => {
                    for item in &items {
                        import_one(&tx, item)?;
                    }
                }
                // The end: commit.
                Ok(None) => break,
                // The source failed: dropping `tx` rolls back.
                Err(_) => {
                    return Err(JournalError::Sql(
                        "the copy was interrupted; nothing was imported".into(),
                    ))
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Journal;
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
                status: crate::status::Status::Changed,
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
        assert_eq!(holder.host, super::super::this_host());
        j.unlock("wf", "inv", "r1");
        j.flush().unwrap();
        assert!(j.lock("wf", "inv", "r2").unwrap().is_none());
        // A holder whose process is gone (pid far beyond pid_max) is taken over.
        let conn = Connection::open(dir.path().join("j.db")).unwrap();
        conn.execute("UPDATE locks SET pid = 999999999", []).unwrap();
        assert!(j.lock("wf", "inv", "r3").unwrap().is_none());
    }

    #[test]
    fn a_waiter_takes_the_lock_when_it_is_released_and_gives_up_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.db");
        let j = std::sync::Arc::new(Journal::open(&p).unwrap());
        assert!(j.lock("wf", "inv", "r1").unwrap().is_none());
        let other = Journal::open(&p).unwrap();
        let t0 = Instant::now();
        let held = other
            .lock_wait("wf", "inv", "r2", Some(Duration::from_millis(300)))
            .unwrap()
            .expect("still held at the deadline");
        assert_eq!(held.run_id, "r1");
        assert!(t0.elapsed() >= Duration::from_millis(300));
        let j2 = j.clone();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            j2.unlock("wf", "inv", "r1");
            j2.flush().unwrap();
        });
        let got = other
            .lock_wait("wf", "inv", "r2", Some(Duration::from_secs(20)))
            .unwrap();
        assert!(got.is_none(), "the waiter took the released lock");
        release.join().unwrap();
        let conn = Connection::open(&p).unwrap();
        let queued: i64 = conn
            .query_row("SELECT count(*) FROM lock_queue", [], |r| r.get(0))
            .unwrap();
        assert_eq!(queued, 0, "the ticket is gone");
        let run: String = conn.query_row("SELECT run_id FROM locks", [], |r| r.get(0)).unwrap();
        assert_eq!(run, "r2");
    }
}
