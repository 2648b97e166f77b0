//! Rows in and out of SQLite: one prepared (cached) statement per write in
//! the burst's transaction, and the rows a journal copy streams.

use super::super::backend::{Item, Write, KEY_CHECK};
use super::super::{now, JournalError, Record, RecordKey, RunRow, RunStep};
use rusqlite::{params, Connection};

pub(super) fn write_one(tx: &rusqlite::Transaction<'_>, w: &Write) -> rusqlite::Result<()> {
    match w {
        Write::Unlock(c) => {
            tx.execute(
                "DELETE FROM locks WHERE workflow = ?1 AND inventory = ?2 AND run_id = ?3",
                params![c.workflow, c.inventory, c.run_id],
            )?;
        }
        Write::BeginRun(r) => {
            tx.execute(
                "INSERT INTO runs (id, workflow, inventory, started_at, status, pid, mode, host) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![r.id, r.workflow, r.inventory, r.started_at, r.status, r.pid, r.mode, r.host],
            )?;
        }
        Write::FinishRun { id, status, totals } => {
            tx.execute(
                "UPDATE runs SET finished_at = ?2, status = ?3, totals = ?4 WHERE id = ?1",
                params![id, now(), status, totals],
            )?;
        }
        Write::Step { run_id, seq, step } => insert_step(tx, run_id, *seq, step)?,
        Write::Put { workflow, key, record } => insert_record(tx, workflow, key, record, now())?,
        Write::Delete { workflow, key } => {
            tx.prepare_cached("DELETE FROM records WHERE workflow = ?1 AND step_id = ?2 AND item = ?3 AND host = ?4")?
                .execute(params![workflow, key.step_id, key.item, key.host])?;
        }
        Write::Notify {
            workflow,
            host,
            handler,
        } => {
            tx.execute(
                "INSERT OR IGNORE INTO pending_handlers (workflow, host, handler) VALUES (?1, ?2, ?3)",
                params![workflow, host, handler],
            )?;
        }
        Write::Notified {
            workflow,
            host,
            handler,
        } => {
            tx.execute(
                "DELETE FROM pending_handlers WHERE workflow = ?1 AND host = ?2 AND handler = ?3",
                params![workflow, host, handler],
            )?;
        }
        Write::Applying {
            mark,
            run_id,
            started_at,
        } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO in_flight (workflow, inventory, step_id, item, host, run_id, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                mark.workflow,
                mark.inventory,
                mark.key.step_id,
                mark.key.item,
                mark.key.host,
                run_id,
                started_at
            ])?;
        }
        Write::Landed(mark) => {
            tx.prepare_cached(
                "DELETE FROM in_flight WHERE workflow = ?1 AND inventory = ?2 AND step_id = ?3 AND item = ?4 AND host = ?5",
            )?
            .execute(params![
                mark.workflow,
                mark.inventory,
                mark.key.step_id,
                mark.key.item,
                mark.key.host
            ])?;
        }
    }
    Ok(())
}

fn insert_step(tx: &rusqlite::Transaction<'_>, run_id: &str, seq: u64, step: &RunStep) -> rusqlite::Result<()> {
    tx.prepare_cached(
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
    Ok(())
}

fn insert_record(
    tx: &rusqlite::Transaction<'_>,
    workflow: &str,
    key: &RecordKey,
    record: &Record,
    updated_at: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
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
        updated_at
    ])?;
    Ok(())
}

pub(super) fn import_one(tx: &rusqlite::Transaction<'_>, item: &Item) -> rusqlite::Result<()> {
    match item {
        Item::Run(r) => {
            tx.prepare_cached(&format!(
                "INSERT INTO runs ({RUN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ))?
            .execute(params![
                r.id,
                r.workflow,
                r.inventory,
                r.started_at,
                r.finished_at,
                r.status,
                r.pid,
                r.mode,
                r.totals,
                r.host
            ])?;
        }
        Item::Step { run_id, seq, step } => insert_step(tx, run_id, *seq, step)?,
        Item::Record {
            workflow,
            key,
            record,
            updated_at,
        } => insert_record(tx, workflow, key, record, *updated_at)?,
        Item::Pending {
            workflow,
            host,
            handler,
        } => {
            tx.execute(
                "INSERT OR IGNORE INTO pending_handlers (workflow, host, handler) VALUES (?1, ?2, ?3)",
                params![workflow, host, handler],
            )?;
        }
        Item::Meta { key, value } => {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )?;
        }
    }
    Ok(())
}

pub(super) fn export(
    conn: &Connection,
    each: &mut dyn FnMut(Item) -> Result<(), JournalError>,
) -> Result<(), JournalError> {
    let mut st = conn.prepare("SELECT key, value FROM meta WHERE key = ?1")?;
    let mut rows = st.query([KEY_CHECK])?;
    while let Some(r) = rows.next()? {
        each(Item::Meta {
            key: r.get(0)?,
            value: r.get(1)?,
        })?;
    }
    let mut st = conn.prepare(&format!("SELECT {RUN_COLS} FROM runs ORDER BY rowid"))?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        each(Item::Run(run_row(r)?))?;
    }
    let mut st = conn.prepare(&format!(
        "SELECT run_id, seq, {STEP_COLS} FROM run_steps ORDER BY run_id, seq"
    ))?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        each(Item::Step {
            run_id: r.get(0)?,
            seq: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            step: step_row(r, 2)?,
        })?;
    }
    let mut st = conn.prepare(
        "SELECT workflow, step_id, item, host, fingerprint, status, outputs, outputs_enc, run_id, updated_at FROM records",
    )?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        each(Item::Record {
            workflow: r.get(0)?,
            key: RecordKey {
                step_id: r.get(1)?,
                item: r.get(2)?,
                host: r.get(3)?,
            },
            record: Record {
                fingerprint: r.get(4)?,
                status: r.get(5)?,
                outputs: r.get(6)?,
                outputs_enc: r.get(7)?,
                run_id: r.get(8)?,
            },
            updated_at: r.get(9)?,
        })?;
    }
    let mut st = conn.prepare("SELECT workflow, host, handler FROM pending_handlers")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        each(Item::Pending {
            workflow: r.get(0)?,
            host: r.get(1)?,
            handler: r.get(2)?,
        })?;
    }
    Ok(())
}

pub(super) const RUN_COLS: &str = "id, workflow, inventory, started_at, finished_at, status, pid, mode, totals, host";
pub(super) const STEP_COLS: &str = "step_id, host, item, status, from_journal, duration_ms, message";

pub(super) fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
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
        host: r.get(9)?,
    })
}

pub(super) fn step_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<RunStep> {
    Ok(RunStep {
        step_id: r.get(at)?,
        host: r.get(at + 1)?,
        item: r.get(at + 2)?,
        status: r.get(at + 3)?,
        from_journal: r.get(at + 4)?,
        duration_ms: u64::try_from(r.get::<_, i64>(at + 5)?).unwrap_or(0),
        message: r.get(at + 6)?,
    })
}
