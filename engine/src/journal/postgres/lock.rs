//! The lock of a (workflow, inventory) on PostgreSQL: a session-level
//! advisory lock whose key hashes the schema, the workflow and the
//! inventory. The `locks` table only names the holder (host, pid, run,
//! since, and its server session) for the message a second run prints; the
//! advisory lock alone decides. Waiting uses the server's own lock queue
//! (`pg_advisory_lock` under `lock_timeout`), so waiters are served in order.

use super::Postgres;
use crate::journal::backend::LockClaim;
use crate::journal::{now, JournalError, LockHolder};
use postgres::error::SqlState;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The advisory lock key of a claim in a schema.
fn key(schema: &str, claim: &LockClaim) -> i64 {
    let mut h = Sha256::new();
    for part in ["flowrun-lock", schema, &claim.workflow, &claim.inventory] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

pub(super) fn lock(
    pg: &mut Postgres,
    claim: &LockClaim,
    wait: Option<Duration>,
    cancel: &AtomicBool,
) -> Result<Option<LockHolder>, JournalError> {
    let k = key(&pg.schema, claim);
    let got: bool = pg
        .client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&k])
        .map_err(|e| pg.err(&e))?
        .get(0);
    if got {
        return taken(pg, claim, k).map(|()| None);
    }
    let current = holder(pg, claim, k)?;
    let Some(wait) = wait.filter(|w| !w.is_zero()) else {
        return Ok(Some(current));
    };
    if cancel.load(Ordering::SeqCst) {
        return Ok(Some(current));
    }
    tracing::warn!(
        "waiting up to {} for the lock of `{}`, held by {current}",
        humantime::format_duration(wait),
        claim.workflow
    );
    let t0 = Instant::now();
    let ms = wait.as_millis().clamp(1, i32::MAX as u128);
    pg.client
        .batch_execute(&format!("SET lock_timeout = {ms}"))
        .map_err(|e| pg.err(&e))?;
    let waited = pg.client.query_one("SELECT pg_advisory_lock($1)", &[&k]);
    let reset = pg.client.batch_execute("SET lock_timeout = 0");
    match waited {
        Ok(_) => {
            reset.map_err(|e| pg.err(&e))?;
            tracing::info!(
                "took the lock of `{}` after {:.1}s",
                claim.workflow,
                t0.elapsed().as_secs_f64()
            );
            taken(pg, claim, k).map(|()| None)
        }
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) || e.code() == Some(&SqlState::QUERY_CANCELED) => {
            reset.map_err(|e| pg.err(&e))?;
            holder(pg, claim, k).map(Some)
        }
        Err(e) => Err(pg.err(&e)),
    }
}

/// We hold the advisory lock: say who we are in `locks`.
fn taken(pg: &mut Postgres, claim: &LockClaim, k: i64) -> Result<(), JournalError> {
    pg.held.push(k);
    pg.client
        .execute(
            "INSERT INTO locks (workflow, inventory, pid, pid_start, run_id, started_at, host, backend_pid)
             VALUES ($1, $2, $3, '', $4, $5, $6, pg_backend_pid())
             ON CONFLICT (workflow, inventory) DO UPDATE SET pid = excluded.pid, run_id = excluded.run_id,
                started_at = excluded.started_at, host = excluded.host, backend_pid = excluded.backend_pid",
            &[
                &claim.workflow,
                &claim.inventory,
                &claim.pid,
                &claim.run_id,
                &now(),
                &claim.host,
            ],
        )
        .map_err(|e| pg.err(&e))?;
    // A run the previous holder never finished (its session died) is abandoned.
    pg.client
        .execute(
            "UPDATE runs SET status = 'abandoned' WHERE workflow = $1 AND inventory = $2 AND finished_at IS NULL AND id <> $3",
            &[&claim.workflow, &claim.inventory, &claim.run_id],
        )
        .map_err(|e| pg.err(&e))?;
    Ok(())
}

/// Who holds the lock: the `locks` row, when it belongs to the session that
/// holds the advisory lock (a holder that just took it may not have written
/// its row yet: we look again for a moment).
fn holder(pg: &mut Postgres, claim: &LockClaim, k: i64) -> Result<LockHolder, JournalError> {
    let (classid, objid) = split(k);
    for attempt in 0..10 {
        let row = pg
            .client
            .query_opt(
                "SELECT l.host, l.pid, l.run_id, l.started_at FROM locks l
                 WHERE l.workflow = $1 AND l.inventory = $2 AND l.backend_pid IN (
                    SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
                      AND classid = $3 AND objid = $4 AND objsubid = 1)",
                &[&claim.workflow, &claim.inventory, &classid, &objid],
            )
            .map_err(|e| pg.err(&e))?;
        if let Some(r) = row {
            return Ok(LockHolder {
                host: r.get(0),
                pid: r.get(1),
                run_id: r.get(2),
                started_at: r.get(3),
            });
        }
        if attempt < 9 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(LockHolder {
        host: String::new(),
        pid: 0,
        started_at: 0,
        run_id: String::new(),
    })
}

/// An advisory lock on one bigint shows in `pg_locks` as (high 32 bits, low 32 bits).
fn split(k: i64) -> (postgres::types::Oid, postgres::types::Oid) {
    let u = k as u64;
    ((u >> 32) as u32, (u & 0xffff_ffff) as u32)
}

/// Give the lock back (after the run's last writes are committed).
pub(super) fn release(pg: &mut Postgres, claim: &LockClaim) -> Result<(), JournalError> {
    let k = key(&pg.schema, claim);
    if let Some(i) = pg.held.iter().position(|&h| h == k) {
        pg.held.remove(i);
        pg.client
            .execute("SELECT pg_advisory_unlock($1)", &[&k])
            .map_err(|e| pg.err(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_schema_workflow_and_inventory_and_split_for_pg_locks() {
        let c = LockClaim::new("wf", "inv", "r");
        let other = LockClaim::new("wf", "inv2", "r");
        assert_ne!(key("flowrun", &c), key("flowrun", &other));
        assert_ne!(key("flowrun", &c), key("other", &c));
        assert_eq!(key("flowrun", &c), key("flowrun", &LockClaim::new("wf", "inv", "r2")));
        assert_eq!(split(0x0000_0001_0000_0002), (1, 2));
        assert_eq!(split(-1), (u32::MAX, u32::MAX));
    }
}
