//! The PostgreSQL backend: one journal shared by several controllers. Its
//! tables live in their own schema (`flowrun` unless the URL says
//! `schema=`); its lock is a session-level advisory lock, which the server
//! releases when the controller's session ends, however it ends (kill -9, a
//! lost network), so no lock ever goes stale. The client is the synchronous
//! `postgres` crate: the journal thread is synchronous already, and the
//! crate runs its own small runtime for the connection.

mod lock;
mod rows;

use super::backend::{Backend, Item, LockClaim, Pruned, Stats, Write};
use super::migrations::MIGRATIONS;
use super::pgurl::{PgHost, PgTarget};
use super::{InFlight, JournalError, LockHolder, Record, RecordKey, RunRow, RunStep};
use postgres::error::SqlState;
use postgres::{Client, NoTls};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The key of the advisory lock held while migrating (any schema).
const MIGRATION_LOCK: i64 = 0x666c_6f77_7275_6e00; // "flowrun\0"

pub(crate) struct Postgres {
    client: Client,
    /// The URL without password, for messages.
    label: String,
    schema: String,
    tls: Option<rustls::ClientConfig>,
    /// Advisory lock keys this session holds.
    held: Vec<i64>,
}

/// A PostgreSQL error in words: the server's message (with its detail and
/// hint) or the client's, with its cause.
pub(crate) fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_owned();
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(c) = source {
        s.push_str(&format!(": {c}"));
        source = c.source();
    }
    s
}

impl Postgres {
    pub fn connect(t: &PgTarget) -> Result<Self, JournalError> {
        let label = t.to_string();
        let mut cfg = postgres::Config::new();
        cfg.user(&t.user)
            .dbname(&t.dbname)
            .port(t.port)
            .connect_timeout(t.connect_timeout)
            .application_name(&t.application_name)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .notice_callback(|_| {});
        match &t.host {
            PgHost::Tcp(h) => cfg.host(h),
            PgHost::Unix(dir) => cfg.host_path(dir),
        };
        if let Some(pw) = t.password()? {
            crate::secrets::Masker::global().add(&pw);
            cfg.password(pw);
        }
        let tls = match &t.host {
            PgHost::Unix(_) => None,
            PgHost::Tcp(_) => super::tls::client_config(t)?,
        };
        cfg.ssl_mode(if tls.is_some() {
            postgres::config::SslMode::Require
        } else {
            postgres::config::SslMode::Disable
        });
        let client = match &tls {
            Some(c) => cfg.connect(MakeRustlsConnect::new(c.clone())),
            None => cfg.connect(NoTls),
        }
        .map_err(|e| connect_error(&label, t, &e))?;
        let mut pg = Self {
            client,
            label,
            schema: t.schema.clone(),
            tls,
            held: Vec::new(),
        };
        pg.use_schema()?;
        Ok(pg)
    }

    fn err(&self, e: &postgres::Error) -> JournalError {
        if e.is_closed() || e.as_db_error().is_none() && e.to_string().contains("communicating") {
            return JournalError::Sql(format!("lost the connection to `{}`: {}", self.label, describe(e)));
        }
        JournalError::Sql(format!("`{}`: {}", self.label, describe(e)))
    }

    /// Create the journal's schema when missing, and work in it.
    fn use_schema(&mut self) -> Result<(), JournalError> {
        let exists = self
            .client
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&self.schema])
            .map_err(|e| self.err(&e))?
            .is_some();
        if !exists {
            // The name is a checked identifier (lowercase letters, digits, `_`).
            let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", self.schema);
            self.client.batch_execute(&sql).map_err(|e| JournalError::Open {
                journal: self.label.clone(),
                message: format!("cannot create the schema `{}`: {}", self.schema, describe(&e)),
            })?;
        }
        let sql = format!("SET search_path TO {}", self.schema);
        self.client.batch_execute(&sql).map_err(|e| self.err(&e))
    }

    fn version(&mut self) -> Result<u32, JournalError> {
        let has: bool = self
            .client
            .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
            .map_err(|e| self.err(&e))?
            .get(0);
        if !has {
            return Ok(0);
        }
        let v: Option<i32> = self
            .client
            .query_opt("SELECT version FROM schema_version", &[])
            .map_err(|e| self.err(&e))?
            .map(|r| r.get(0));
        Ok(v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0))
    }
}

fn connect_error(label: &str, t: &PgTarget, e: &postgres::Error) -> JournalError {
    let message = describe(e);
    let auth = matches!(
        e.code(),
        Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    ) || message.contains("password missing");
    if auth {
        return JournalError::Auth {
            journal: label.to_owned(),
            message: format!(
                "the server refused user `{}`: {message} (the password comes from PGPASSWORD, FLOWRUN_JOURNAL_PASSWORD_FILE or ~/.pgpass)",
                t.user
            ),
        };
    }
    if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) {
        return JournalError::Config(format!("`{label}`: {message}: create the database first"));
    }
    let hint = if message.contains("TLS") || message.contains("certificate") {
        "; check `sslrootcert` and the server's certificate"
    } else if t.sslmode != super::SslMode::Disable && message.contains("server does not support TLS") {
        "; for a server on loopback without TLS, say `sslmode=disable`"
    } else {
        ""
    };
    JournalError::Open {
        journal: label.to_owned(),
        message: format!("cannot connect: {message}{hint}"),
    }
}

impl Backend for Postgres {
    fn schema_version(&mut self) -> Result<u32, JournalError> {
        self.version()
    }

    fn migrate(&mut self) -> Result<(), JournalError> {
        let label = self.label.clone();
        let fail = |e: postgres::Error| JournalError::Sql(format!("`{label}`: migrating: {}", describe(&e)));
        let mut tx = self.client.transaction().map_err(fail)?;
        // One controller migrates at a time; the others wait, then find nothing to do.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(fail)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .map_err(fail)?;
        let current: Option<i32> = tx
            .query_opt("SELECT version FROM schema_version", &[])
            .map_err(fail)?
            .map(|r| r.get(0));
        if current.is_none() {
            tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])
                .map_err(fail)?;
        }
        let current = usize::try_from(current.unwrap_or(0)).unwrap_or(0);
        for (i, m) in MIGRATIONS.iter().enumerate().skip(current) {
            tx.batch_execute(m.postgres).map_err(fail)?;
            let v = i32::try_from(i + 1).unwrap_or(i32::MAX);
            tx.execute("UPDATE schema_version SET version = $1", &[&v])
                .map_err(fail)?;
        }
        tx.commit().map_err(fail)
    }

    fn canceller(&self) -> Option<Box<dyn Fn() + Send>> {
        let token = self.client.cancel_token();
        let tls = self.tls.clone();
        Some(Box::new(move || {
            let (token, tls) = (token.clone(), tls.clone());
            // The client's cancel starts a runtime: not on the caller's.
            let _ = std::thread::spawn(move || match tls {
                Some(c) => token.cancel_query(MakeRustlsConnect::new(c)),
                None => token.cancel_query(NoTls),
            })
            .join();
        }))
    }

    fn load(&mut self, wf: &str) -> Result<HashMap<RecordKey, Record>, JournalError> {
        let rows = self
            .client
            .query(
                "SELECT step_id, item, host, fingerprint, status, outputs, outputs_enc, run_id FROM records WHERE workflow = $1",
                &[&wf],
            )
            .map_err(|e| self.err(&e))?;
        rows.iter()
            .map(|r| {
                Ok((
                    RecordKey {
                        step_id: r.get(0),
                        item: r.get(1),
                        host: r.get(2),
                    },
                    Record {
                        fingerprint: r.get(3),
                        status: r.try_get(4)?,
                        outputs: r.get(5),
                        outputs_enc: r.get(6),
                        run_id: r.get(7),
                    },
                ))
            })
            .collect::<Result<_, postgres::Error>>()
            .map_err(|e| self.err(&e))
    }

    fn pending_handlers(&mut self, wf: &str) -> Result<Vec<(String, String)>, JournalError> {
        let rows = self
            .client
            .query("SELECT host, handler FROM pending_handlers WHERE workflow = $1", &[&wf])
            .map_err(|e| self.err(&e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn in_flight(&mut self, wf: &str, inventory: &str) -> Result<Vec<InFlight>, JournalError> {
        let rows = self
            .client
            .query(
                "SELECT step_id, item, host, run_id, started_at FROM in_flight WHERE workflow = $1 AND inventory = $2
                 ORDER BY started_at, step_id, item, host",
                &[&wf, &inventory],
            )
            .map_err(|e| self.err(&e))?;
        Ok(rows
            .iter()
            .map(|r| InFlight {
                key: RecordKey {
                    step_id: r.get(0),
                    item: r.get(1),
                    host: r.get(2),
                },
                run_id: r.get(3),
                started_at: r.get(4),
            })
            .collect())
    }

    fn lock(
        &mut self,
        claim: &LockClaim,
        wait: Option<Duration>,
        cancel: &AtomicBool,
    ) -> Result<Option<LockHolder>, JournalError> {
        lock::lock(self, claim, wait, cancel)
    }

    fn write(&mut self, batch: &[Write]) -> Result<(), JournalError> {
        let unlocks = rows::write(self, batch)?;
        for claim in unlocks {
            lock::release(self, &claim)?;
        }
        Ok(())
    }

    fn history(&mut self, wf: Option<&str>, limit: usize) -> Result<Vec<RunRow>, JournalError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT {} FROM runs WHERE ($1::text IS NULL OR workflow = $1) ORDER BY started_at DESC, ord DESC LIMIT $2",
                    rows::RUN_COLS
                ),
                &[&wf, &limit],
            )
            .map_err(|e| self.err(&e))?;
        rows.iter()
            .map(rows::run_row)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(&e))
    }

    fn show(&mut self, id: &str) -> Result<Option<(RunRow, Vec<RunStep>)>, JournalError> {
        let run = self
            .client
            .query_opt(&format!("SELECT {} FROM runs WHERE id = $1", rows::RUN_COLS), &[&id])
            .map_err(|e| self.err(&e))?;
        let Some(run) = run else {
            return Ok(None);
        };
        let steps = self
            .client
            .query(
                &format!(
                    "SELECT {} FROM run_steps WHERE run_id = $1 ORDER BY seq",
                    rows::STEP_COLS
                ),
                &[&id],
            )
            .map_err(|e| self.err(&e))?;
        let steps = steps
            .iter()
            .map(|r| rows::step_row(r, 0))
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(&e))?;
        Ok(Some((rows::run_row(&run).map_err(|e| self.err(&e))?, steps)))
    }

    fn forget(
        &mut self,
        workflow: Option<&str>,
        step: Option<&str>,
        host: Option<&str>,
    ) -> Result<usize, JournalError> {
        let n = self
            .client
            .execute(
                "DELETE FROM records WHERE ($1::text IS NULL OR workflow = $1) AND ($2::text IS NULL OR step_id = $2) AND ($3::text IS NULL OR host = $3)",
                &[&workflow, &step, &host],
            )
            .map_err(|e| self.err(&e))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn meta_get(&mut self, key: &str) -> Result<Option<String>, JournalError> {
        let row = self
            .client
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
            .map_err(|e| self.err(&e))?;
        Ok(row.map(|r| r.get(0)))
    }

    fn meta_set(&mut self, key: &str, value: &str) -> Result<(), JournalError> {
        self.client
            .execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )
            .map_err(|e| self.err(&e))?;
        Ok(())
    }

    fn stats(&mut self) -> Result<Stats, JournalError> {
        rows::stats(self)
    }

    fn prune(&mut self, before: i64, dry_run: bool) -> Result<Pruned, JournalError> {
        rows::prune(self, before, dry_run)
    }

    fn is_empty(&mut self) -> Result<bool, JournalError> {
        let n: i64 = self
            .client
            .query_one(
                "SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM records)",
                &[],
            )
            .map_err(|e| self.err(&e))?
            .get(0);
        Ok(n == 0)
    }

    fn export(&mut self, each: &mut dyn FnMut(Item) -> Result<(), JournalError>) -> Result<(), JournalError> {
        rows::export(self, each)
    }

    fn import(&mut self, chunks: &mpsc::Receiver<Option<Vec<Item>>>) -> Result<(), JournalError> {
        rows::import(self, chunks)
    }
}
