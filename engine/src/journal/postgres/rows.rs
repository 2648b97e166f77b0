//! Rows in and out of PostgreSQL. A burst of writes becomes a few
//! statements in one transaction: step results and records go as arrays
//! (`INSERT … SELECT FROM unnest(…)`), so a 10,000-instance run costs a
//! handful of round trips, not 10,000. Writes to different tables do not
//! depend on each other; within a table their order is kept.

use super::{describe, Postgres};
use crate::journal::backend::{Item, LockClaim, Pruned, Stats, WorkflowStats, Write, KEY_CHECK};
use crate::journal::{now, JournalError, RunRow, RunStep};
use postgres::{Row, Transaction};
use std::collections::HashMap;
use std::sync::mpsc;

pub(super) const RUN_COLS: &str = "id, workflow, inventory, started_at, finished_at, status, pid, mode, totals, host";
pub(super) const STEP_COLS: &str = "step_id, host, item, status, from_journal, duration_ms, message";

/// A run row; a status or mode word it does not know is an error.
pub(super) fn run_row(r: &Row) -> Result<RunRow, postgres::Error> {
    Ok(RunRow {
        id: r.get(0),
        workflow: r.get(1),
        inventory: r.get(2),
        started_at: r.get(3),
        finished_at: r.get(4),
        status: r.try_get(5)?,
        pid: r.get(6),
        mode: r.try_get(7)?,
        totals: r.get(8),
        host: r.get(9),
    })
}

pub(super) fn step_row(r: &Row, at: usize) -> Result<RunStep, postgres::Error> {
    Ok(RunStep {
        step_id: r.get(at),
        host: r.get(at + 1),
        item: r.get(at + 2),
        status: r.try_get(at + 3)?,
        from_journal: r.get(at + 4),
        duration_ms: u64::try_from(r.get::<_, i64>(at + 5)).unwrap_or(0),
        message: r.get(at + 6),
    })
}

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

type Sql = Result<(), postgres::Error>;

/// Apply a burst of writes in one transaction; the unlocks to do after it.
pub(super) fn write(pg: &mut Postgres, batch: &[Write]) -> Result<Vec<LockClaim>, JournalError> {
    let (mut runs, mut steps, mut records, mut pending, mut unlocks) = (vec![], vec![], vec![], vec![], vec![]);
    let mut marks = vec![];
    for w in batch {
        match w {
            Write::BeginRun(_) | Write::FinishRun { .. } => runs.push(w),
            Write::Step { .. } => steps.push(w),
            Write::Put { .. } | Write::Delete { .. } => records.push(w),
            Write::Notify { .. } | Write::Notified { .. } => pending.push(w),
            Write::Unlock(c) => unlocks.push(c.clone()),
            Write::Applying { .. } | Write::Landed(_) => marks.push(w),
        }
    }
    let result = (|| -> Sql {
        let mut tx = pg.client.transaction()?;
        for w in runs {
            run_write(&mut tx, w)?;
        }
        insert_steps(
            &mut tx,
            steps.iter().filter_map(|w| match w {
                Write::Step { run_id, seq, step } => Some((run_id.as_str(), *seq, step)),
                _ => None,
            }),
        )?;
        record_writes(&mut tx, &records)?;
        for w in pending {
            pending_write(&mut tx, w)?;
        }
        for w in marks {
            mark_write(&mut tx, w)?;
        }
        for c in &unlocks {
            tx.execute(
                "DELETE FROM locks WHERE workflow = $1 AND inventory = $2 AND run_id = $3",
                &[&c.workflow, &c.inventory, &c.run_id],
            )?;
        }
        tx.commit()
    })();
    result.map_err(|e| pg.err(&e))?;
    Ok(unlocks)
}

fn run_write(tx: &mut Transaction<'_>, w: &Write) -> Sql {
    match w {
        Write::BeginRun(r) => tx.execute(
            "INSERT INTO runs (id, workflow, inventory, started_at, status, pid, mode, host) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[&r.id, &r.workflow, &r.inventory, &r.started_at, &r.status.as_str(), &r.pid, &r.mode.as_str(), &r.host],
        )?,
        Write::FinishRun { id, status, totals } => tx.execute(
            "UPDATE runs SET finished_at = $2, status = $3, totals = $4 WHERE id = $1",
            &[id, &now(), &status.as_str(), totals],
        )?,
        _ => 0,
    };
    Ok(())
}

fn pending_write(tx: &mut Transaction<'_>, w: &Write) -> Sql {
    match w {
        Write::Notify {
            workflow,
            host,
            handler,
        } => tx.execute(
            "INSERT INTO pending_handlers (workflow, host, handler) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[workflow, host, handler],
        )?,
        Write::Notified {
            workflow,
            host,
            handler,
        } => tx.execute(
            "DELETE FROM pending_handlers WHERE workflow = $1 AND host = $2 AND handler = $3",
            &[workflow, host, handler],
        )?,
        _ => 0,
    };
    Ok(())
}

/// In-flight marks, in order (a few per run: only instances a rollback may undo).
fn mark_write(tx: &mut Transaction<'_>, w: &Write) -> Sql {
    match w {
        Write::Applying {
            mark,
            run_id,
            started_at,
        } => tx.execute(
            "INSERT INTO in_flight (workflow, inventory, step_id, item, host, run_id, started_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (workflow, inventory, step_id, item, host) DO UPDATE SET run_id = excluded.run_id,
                started_at = excluded.started_at",
            &[
                &mark.workflow,
                &mark.inventory,
                &mark.key.step_id,
                &mark.key.item,
                &mark.key.host,
                run_id,
                started_at,
            ],
        )?,
        Write::Landed(mark) => tx.execute(
            "DELETE FROM in_flight WHERE workflow = $1 AND inventory = $2 AND step_id = $3 AND item = $4 AND host = $5",
            &[
                &mark.workflow,
                &mark.inventory,
                &mark.key.step_id,
                &mark.key.item,
                &mark.key.host,
            ],
        )?,
        _ => 0,
    };
    Ok(())
}

/// Step results as one statement.
fn insert_steps<'a>(tx: &mut Transaction<'_>, rows: impl Iterator<Item = (&'a str, u64, &'a RunStep)>) -> Sql {
    let (mut run, mut seqs, mut ids, mut hosts, mut items, mut statuses) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut journaled, mut durations, mut messages): (Vec<bool>, Vec<i64>, Vec<Option<&str>>) =
        (vec![], vec![], vec![]);
    for (run_id, seq, s) in rows {
        run.push(run_id);
        seqs.push(big(seq));
        ids.push(s.step_id.as_str());
        hosts.push(s.host.as_str());
        items.push(s.item.as_str());
        statuses.push(s.status.as_str());
        journaled.push(s.from_journal);
        durations.push(big(s.duration_ms));
        messages.push(s.message.as_deref());
    }
    if run.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO run_steps (run_id, seq, step_id, host, item, status, from_journal, duration_ms, message)
         SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::int8[], $9::text[])
         ON CONFLICT (run_id, seq) DO UPDATE SET step_id = excluded.step_id, host = excluded.host, item = excluded.item,
            status = excluded.status, from_journal = excluded.from_journal, duration_ms = excluded.duration_ms,
            message = excluded.message",
        &[&run, &seqs, &ids, &hosts, &items, &statuses, &journaled, &durations, &messages],
    )?;
    Ok(())
}

/// A record row as the array insert takes it.
struct RecordRow<'a> {
    workflow: &'a str,
    step_id: &'a str,
    item: &'a str,
    host: &'a str,
    fingerprint: &'a str,
    status: &'a str,
    outputs: Option<&'a str>,
    outputs_enc: Option<&'a [u8]>,
    run_id: &'a str,
    updated_at: i64,
}

/// Records as one upsert; a key that occurs twice keeps its last row (one
/// statement cannot update a row twice).
fn upsert_records(tx: &mut Transaction<'_>, rows: &[RecordRow<'_>]) -> Sql {
    let mut last: HashMap<(&str, &str, &str, &str), usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        last.insert((r.workflow, r.step_id, r.item, r.host), i);
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    let (mut w, mut s, mut it, mut h, mut fp, mut st, mut run) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for &i in &keep {
        let r = &rows[i];
        w.push(r.workflow);
        s.push(r.step_id);
        it.push(r.item);
        h.push(r.host);
        fp.push(r.fingerprint);
        st.push(r.status);
        run.push(r.run_id);
    }
    let outputs: Vec<Option<&str>> = keep.iter().map(|&i| rows[i].outputs).collect();
    let enc: Vec<Option<&[u8]>> = keep.iter().map(|&i| rows[i].outputs_enc).collect();
    let at: Vec<i64> = keep.iter().map(|&i| rows[i].updated_at).collect();
    tx.execute(
        "INSERT INTO records (workflow, step_id, item, host, fingerprint, status, outputs, outputs_enc, run_id, updated_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[], $9::text[], $10::int8[])
         ON CONFLICT (workflow, step_id, item, host) DO UPDATE SET fingerprint = excluded.fingerprint,
            status = excluded.status, outputs = excluded.outputs, outputs_enc = excluded.outputs_enc,
            run_id = excluded.run_id, updated_at = excluded.updated_at",
        &[&w, &s, &it, &h, &fp, &st, &outputs, &enc, &run, &at],
    )?;
    Ok(())
}

/// Puts and deletes in order: each run of consecutive puts is one upsert.
fn record_writes(tx: &mut Transaction<'_>, writes: &[&Write]) -> Sql {
    let stamp = now();
    let mut puts: Vec<RecordRow<'_>> = Vec::new();
    for w in writes {
        match w {
            Write::Put { workflow, key, record } => puts.push(RecordRow {
                workflow,
                step_id: &key.step_id,
                item: &key.item,
                host: &key.host,
                fingerprint: &record.fingerprint,
                status: record.status.as_str(),
                outputs: record.outputs.as_deref(),
                outputs_enc: record.outputs_enc.as_deref(),
                run_id: &record.run_id,
                updated_at: stamp,
            }),
            Write::Delete { workflow, key } => {
                if !puts.is_empty() {
                    upsert_records(tx, &std::mem::take(&mut puts))?;
                }
                tx.execute(
                    "DELETE FROM records WHERE workflow = $1 AND step_id = $2 AND item = $3 AND host = $4",
                    &[workflow, &key.step_id, &key.item, &key.host],
                )?;
            }
            _ => {}
        }
    }
    if !puts.is_empty() {
        upsert_records(tx, &puts)?;
    }
    Ok(())
}

pub(super) fn stats(pg: &mut Postgres) -> Result<Stats, JournalError> {
    let schema = pg.schema.clone();
    let version = pg.version()?;
    let r = (|| -> Result<Stats, postgres::Error> {
        let c = &mut pg.client;
        let row = c.query_one(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM run_steps), (SELECT count(*) FROM records),
                    (SELECT count(*) FROM pending_handlers), (SELECT min(started_at) FROM runs), (SELECT max(started_at) FROM runs),
                    (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8 FROM pg_class c
                       JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r')",
            &[&schema],
        )?;
        let n = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        let workflows = c
            .query(
                "SELECT w, sum(runs)::int8, sum(records)::int8, max(last) FROM (
                    SELECT workflow AS w, count(*) AS runs, 0 AS records, max(started_at) AS last FROM runs GROUP BY workflow
                    UNION ALL SELECT workflow, 0, count(*), NULL FROM records GROUP BY workflow) t
                 GROUP BY w ORDER BY w",
                &[],
            )?
            .iter()
            .map(|r| WorkflowStats {
                workflow: r.get(0),
                runs: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                records: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                last_run: r.get(3),
            })
            .collect();
        Ok(Stats {
            schema_version: version,
            runs: n(0),
            run_steps: n(1),
            records: n(2),
            pending_handlers: n(3),
            oldest_run: row.get(4),
            newest_run: row.get(5),
            bytes: Some(n(6)),
            workflows,
        })
    })();
    r.map_err(|e| pg.err(&e))
}

pub(super) fn prune(pg: &mut Postgres, before: i64, dry_run: bool) -> Result<Pruned, JournalError> {
    let r = (|| -> Result<Pruned, postgres::Error> {
        let mut tx = pg.client.transaction()?;
        let old = "started_at < $1 AND finished_at IS NOT NULL";
        let kept: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM runs WHERE {old} AND id IN (SELECT run_id FROM records)"),
                &[&before],
            )?
            .get(0);
        let ids: Vec<String> = tx
            .query(
                &format!("SELECT id FROM runs WHERE {old} AND id NOT IN (SELECT run_id FROM records)"),
                &[&before],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let steps: i64 = tx
            .query_one("SELECT count(*) FROM run_steps WHERE run_id = ANY($1)", &[&ids])?
            .get(0);
        if !dry_run {
            tx.execute("DELETE FROM run_steps WHERE run_id = ANY($1)", &[&ids])?;
            tx.execute("DELETE FROM runs WHERE id = ANY($1)", &[&ids])?;
        }
        tx.commit()?;
        Ok(Pruned {
            runs: ids.len() as u64,
            run_steps: u64::try_from(steps).unwrap_or(0),
            kept: u64::try_from(kept).unwrap_or(0),
        })
    })();
    r.map_err(|e| pg.err(&e))
}

pub(super) fn export(
    pg: &mut Postgres,
    each: &mut dyn FnMut(Item) -> Result<(), JournalError>,
) -> Result<(), JournalError> {
    let label = pg.label.clone();
    let fail = |e: postgres::Error| JournalError::Sql(format!("`{label}`: {}", describe(&e)));
    // One snapshot for the whole copy.
    let mut tx = pg
        .client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(fail)?;
    for r in tx
        .query("SELECT key, value FROM meta WHERE key = $1", &[&KEY_CHECK])
        .map_err(fail)?
    {
        each(Item::Meta {
            key: r.get(0),
            value: r.get(1),
        })?;
    }
    let none: [&str; 0] = [];
    let mut rows = tx
        .query_raw(&format!("SELECT {RUN_COLS} FROM runs ORDER BY ord"), none)
        .map_err(fail)?;
    while let Some(r) = postgres::fallible_iterator::FallibleIterator::next(&mut rows).map_err(fail)? {
        each(Item::Run(run_row(&r).map_err(fail)?))?;
    }
    drop(rows);
    let mut rows = tx
        .query_raw(
            &format!("SELECT run_id, seq, {STEP_COLS} FROM run_steps ORDER BY run_id, seq"),
            none,
        )
        .map_err(fail)?;
    while let Some(r) = postgres::fallible_iterator::FallibleIterator::next(&mut rows).map_err(fail)? {
        each(Item::Step {
            run_id: r.get(0),
            seq: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
            step: step_row(&r, 2).map_err(fail)?,
        })?;
    }
    drop(rows);
    export_records(&mut tx, each, &fail)?;
    for r in tx
        .query("SELECT workflow, host, handler FROM pending_handlers", &[])
        .map_err(fail)?
    {
        each(Item::Pending {
            workflow: r.get(0),
            host: r.get(1),
            handler: r.get(2),
        })?;
    }
    tx.commit().map_err(fail)
}

/// The `records` table, for [`export`].
fn export_records(
    tx: &mut postgres::Transaction<'_>,
    each: &mut dyn FnMut(Item) -> Result<(), JournalError>,
    fail: &dyn Fn(postgres::Error) -> JournalError,
) -> Result<(), JournalError> {
    let none: [&str; 0] = [];
    let mut rows = tx
        .query_raw(
            "SELECT workflow, step_id, item, host, fingerprint, status, outputs, outputs_enc, run_id, updated_at FROM records",
            none,
        )
        .map_err(fail)?;
    while let Some(r) = postgres::fallible_iterator::FallibleIterator::next(&mut rows).map_err(fail)? {
        each(Item::Record {
            workflow: r.get(0),
            key: crate::journal::RecordKey {
                step_id: r.get(1),
                item: r.get(2),
                host: r.get(3),
            },
            record: crate::journal::Record {
                fingerprint: r.get(4),
                status: r.try_get(5).map_err(fail)?,
                outputs: r.get(6),
                outputs_enc: r.get(7),
                run_id: r.get(8),
            },
            updated_at: r.get(9),
        })?;
    }
    drop(rows);
    Ok(())
}

pub(super) fn import(pg: &mut Postgres, chunks: &mpsc::Receiver<Option<Vec<Item>>>) -> Result<(), JournalError> {
    let label = pg.label.clone();
    let fail = |e: postgres::Error| JournalError::Sql(format!("`{label}`: {}", describe(&e)));
    let mut tx = pg.client.transaction().map_err(fail)?;
    loop {
        match chunks.recv() {
            Ok(Some(items)) => import_chunk(&mut tx, &items).map_err(fail)?,
            Ok(None) => break,
            // The source failed: dropping `tx` rolls back.
            Err(_) => {
                return Err(JournalError::Sql(
                    "the copy was interrupted; nothing was imported".into(),
                ))
            }
        }
    }
    tx.commit().map_err(fail)
}

fn import_chunk(tx: &mut Transaction<'_>, items: &[Item]) -> Sql {
    let mut records = Vec::new();
    let mut steps = Vec::new();
    for item in items {
        match item {
            Item::Run(r) => {
                tx.execute(
                    &format!("INSERT INTO runs ({RUN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
                    &[
                        &r.id,
                        &r.workflow,
                        &r.inventory,
                        &r.started_at,
                        &r.finished_at,
                        &r.status.as_str(),
                        &r.pid,
                        &r.mode.as_str(),
                        &r.totals,
                        &r.host,
                    ],
                )?;
            }
            Item::Step { run_id, seq, step } => steps.push((run_id.as_str(), *seq, step)),
            Item::Record {
                workflow,
                key,
                record,
                updated_at,
            } => records.push(RecordRow {
                workflow,
                step_id: &key.step_id,
                item: &key.item,
                host: &key.host,
                fingerprint: &record.fingerprint,
                status: record.status.as_str(),
                outputs: record.outputs.as_deref(),
                outputs_enc: record.outputs_enc.as_deref(),
                run_id: &record.run_id,
                updated_at: *updated_at,
            }),
            Item::Pending {
                workflow,
                host,
                handler,
            } => {
                tx.execute(
                    "INSERT INTO pending_handlers (workflow, host, handler) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[workflow, host, handler],
                )?;
            }
            Item::Meta { key, value } => {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[key, value],
                )?;
            }
        }
    }
    insert_steps(tx, steps.into_iter())?;
    if !records.is_empty() {
        upsert_records(tx, &records)?;
    }
    Ok(())
}
