//! The journal's schema, as numbered migrations kept side by side for both
//! backends: version N means the same tables and columns in SQLite and in
//! PostgreSQL (types differ, meaning does not), so a journal can be copied
//! from one to the other. SQLite counts applied migrations in
//! `PRAGMA user_version`, PostgreSQL in the `schema_version` table. A journal
//! whose version is above [`LATEST`] was written by a newer flowrun and is
//! refused.

pub(crate) struct Migration {
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

pub(crate) const MIGRATIONS: &[Migration] = &[
    // 1: the initial schema.
    Migration {
        sqlite: "CREATE TABLE runs (
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
        postgres: "CREATE TABLE runs (
            ord BIGSERIAL UNIQUE, id TEXT PRIMARY KEY, workflow TEXT NOT NULL, inventory TEXT NOT NULL,
            started_at BIGINT NOT NULL, finished_at BIGINT, status TEXT NOT NULL,
            pid BIGINT NOT NULL, mode TEXT NOT NULL, totals TEXT);
         CREATE INDEX runs_by_workflow ON runs (workflow, started_at);
         CREATE TABLE run_steps (
            run_id TEXT NOT NULL, seq BIGINT NOT NULL, step_id TEXT NOT NULL, host TEXT NOT NULL,
            item TEXT NOT NULL, status TEXT NOT NULL, from_journal BOOLEAN NOT NULL,
            duration_ms BIGINT NOT NULL, message TEXT, PRIMARY KEY (run_id, seq));
         CREATE TABLE records (
            workflow TEXT NOT NULL, step_id TEXT NOT NULL, item TEXT NOT NULL, host TEXT NOT NULL,
            fingerprint TEXT NOT NULL, status TEXT NOT NULL, outputs TEXT, outputs_enc BYTEA,
            run_id TEXT NOT NULL, updated_at BIGINT NOT NULL,
            PRIMARY KEY (workflow, step_id, item, host));
         CREATE TABLE pending_handlers (
            workflow TEXT NOT NULL, host TEXT NOT NULL, handler TEXT NOT NULL,
            PRIMARY KEY (workflow, host, handler));
         CREATE TABLE locks (
            workflow TEXT NOT NULL, inventory TEXT NOT NULL, pid BIGINT NOT NULL, pid_start TEXT NOT NULL,
            run_id TEXT NOT NULL, started_at BIGINT NOT NULL, PRIMARY KEY (workflow, inventory));",
    },
    // 2: shared journals. Runs and locks name the controller's host; `meta`
    // holds the journal key's check value; SQLite queues lock waiters
    // (PostgreSQL's lock manager queues them itself) and PostgreSQL notes the
    // server session that holds a lock.
    Migration {
        sqlite: "ALTER TABLE runs ADD COLUMN host TEXT NOT NULL DEFAULT '';
         ALTER TABLE locks ADD COLUMN host TEXT NOT NULL DEFAULT '';
         CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE lock_queue (
            ticket INTEGER PRIMARY KEY AUTOINCREMENT, workflow TEXT NOT NULL, inventory TEXT NOT NULL,
            pid INTEGER NOT NULL, pid_start TEXT NOT NULL, since INTEGER NOT NULL);
         CREATE INDEX records_by_run ON records (run_id);",
        postgres: "ALTER TABLE runs ADD COLUMN host TEXT NOT NULL DEFAULT '';
         ALTER TABLE locks ADD COLUMN host TEXT NOT NULL DEFAULT '';
         ALTER TABLE locks ADD COLUMN backend_pid INTEGER NOT NULL DEFAULT 0;
         CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE INDEX records_by_run ON records (run_id);",
    },
    // 3: in-flight marks. An instance that a rollback (`runs: on_failure`)
    // may have to undo is marked when its `apply` starts and unmarked when
    // its result is recorded; a mark left by a run that died tells the next
    // run what to roll back first.
    Migration {
        sqlite: "CREATE TABLE in_flight (
            workflow TEXT NOT NULL, inventory TEXT NOT NULL, step_id TEXT NOT NULL, item TEXT NOT NULL,
            host TEXT NOT NULL, run_id TEXT NOT NULL, started_at INTEGER NOT NULL,
            PRIMARY KEY (workflow, inventory, step_id, item, host));",
        postgres: "CREATE TABLE in_flight (
            workflow TEXT NOT NULL, inventory TEXT NOT NULL, step_id TEXT NOT NULL, item TEXT NOT NULL,
            host TEXT NOT NULL, run_id TEXT NOT NULL, started_at BIGINT NOT NULL,
            PRIMARY KEY (workflow, inventory, step_id, item, host));",
    },
];

/// The schema version this flowrun writes.
pub(crate) const LATEST: u32 = MIGRATIONS.len() as u32;
