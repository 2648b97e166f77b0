//! The journal's own contract, on both backends (`sqlite::…`, `postgres::…`
//! against a real PostgreSQL server): records, history, locks, the key
//! check, schema versions, copy, prune and stats.

use flowrun_engine::journal::{
    Journal, JournalError, Location, Record, RecordKey, RunMode, RunRow, RunStatus, RunStep, Status,
};
use flowrun_engine::secrets::SecretKey;
use flowrun_lab::postgres::{PgServer, PASSWORD};
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

macro_rules! on_both_journals {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(super::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(super::Backend::Postgres) } )*
        }
    };
}

on_both_journals!(
    records_history_and_handlers_roundtrip,
    the_lock_is_exclusive_and_names_its_holder,
    a_journal_refuses_a_key_it_was_not_written_with,
    a_newer_schema_is_refused,
    prune_keeps_the_last_success_of_each_instance,
);

/// A fresh journal on a backend; the directory holds its file (SQLite).
struct Place {
    dir: tempfile::TempDir,
    location: Location,
    schema: String,
}

impl Place {
    fn new(b: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let schema = PgServer::fresh_schema();
        let location = match b {
            Backend::Sqlite => Location::Sqlite(dir.path().join("j.db")),
            Backend::Postgres => pg_location(&schema),
        };
        Self { dir, location, schema }
    }
    fn open(&self) -> Journal {
        Journal::connect(&self.location).unwrap()
    }
    /// Set the stored schema version behind the journal's back.
    fn set_version(&self, v: u32) {
        match &self.location {
            Location::Sqlite(p) => {
                let c = rusqlite::Connection::open(p).unwrap();
                c.pragma_update(None, "user_version", v).unwrap();
            }
            Location::Postgres(_) => {
                PgServer::shared()
                    .sql(&format!("UPDATE {}.schema_version SET version = {v}", self.schema))
                    .unwrap();
            }
        }
    }
}

fn pg_location(schema: &str) -> Location {
    let url = PgServer::shared()
        .url(schema)
        .replace("flowrun@", &format!("flowrun:{PASSWORD}@"));
    Location::parse(&url).unwrap()
}

fn key(step: &str) -> RecordKey {
    RecordKey {
        step_id: step.into(),
        item: String::new(),
        host: "localhost".into(),
    }
}

fn record(run: &str, enc: Option<Vec<u8>>) -> Record {
    Record {
        fingerprint: format!("fp-{run}"),
        status: Status::Changed,
        outputs: enc.is_none().then(|| "{\"x\":1}".into()),
        outputs_enc: enc,
        run_id: run.into(),
    }
}

fn run_row(id: &str, started_at: i64) -> RunRow {
    RunRow {
        id: id.into(),
        workflow: "wf".into(),
        inventory: "inv".into(),
        started_at,
        finished_at: None,
        status: RunStatus::Running,
        host: "controller-1".into(),
        pid: 42,
        mode: RunMode::Run,
        totals: None,
    }
}

fn step(id: &str) -> RunStep {
    RunStep {
        step_id: id.into(),
        host: "localhost".into(),
        item: String::new(),
        status: Status::Changed,
        from_journal: false,
        duration_ms: 7,
        message: Some("done".into()),
    }
}

/// Two finished runs: r1 long ago (its record of `a` is the last success),
/// r2 recently (it re-did `b`).
fn fill(j: &Journal) {
    j.begin_run(run_row("r1", 1_000));
    j.step("r1", 0, step("a"));
    j.step("r1", 1, step("b"));
    j.put("wf", key("a"), record("r1", None));
    j.put("wf", key("b"), record("r1", Some(vec![1, 2, 3, 255])));
    j.finish_run("r1", RunStatus::Success, &serde_json::json!({"changed": 2}));
    j.begin_run(run_row("r2", 2_000));
    j.step("r2", 0, step("b"));
    j.put("wf", key("b"), record("r2", Some(vec![9, 9])));
    j.finish_run("r2", RunStatus::Success, &serde_json::json!({"changed": 1}));
    j.flush().unwrap();
}

fn records_history_and_handlers_roundtrip(b: Backend) {
    let place = Place::new(b);
    let j = place.open();
    fill(&j);
    let records = j.load("wf").unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[&key("a")].outputs.as_deref(), Some("{\"x\":1}"));
    assert_eq!(records[&key("b")].outputs_enc.as_deref(), Some(&[9u8, 9][..]));
    assert_eq!(records[&key("b")].run_id, "r2");
    let h = j.history(None, 10).unwrap();
    assert_eq!(h.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["r2", "r1"]);
    assert_eq!(h[0].host, "controller-1");
    assert!(h[0].finished_at.is_some());
    let (run, steps) = j.show("r1").unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Success);
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1].message.as_deref(), Some("done"));
    j.notify("wf", "localhost", "restart");
    j.notify("wf", "localhost", "restart");
    j.flush().unwrap();
    assert_eq!(
        j.pending_handlers("wf").unwrap(),
        [("localhost".to_owned(), "restart".to_owned())]
    );
    j.notified("wf", "localhost", "restart");
    j.delete("wf", key("a"));
    j.flush().unwrap();
    assert!(j.pending_handlers("wf").unwrap().is_empty());
    assert_eq!(j.forget(Some("wf"), Some("b"), None).unwrap(), 1);
    assert!(j.load("wf").unwrap().is_empty());
    // A second controller sees the same journal.
    drop(j);
    assert_eq!(place.open().history(Some("wf"), 1).unwrap()[0].id, "r2");
}

fn the_lock_is_exclusive_and_names_its_holder(b: Backend) {
    let place = Place::new(b);
    let (j1, j2) = (place.open(), place.open());
    assert!(j1.lock("wf", "inv", "r1").unwrap().is_none());
    let holder = j2.lock("wf", "inv", "r2").unwrap().expect("held");
    assert_eq!(holder.run_id, "r1");
    assert_eq!(holder.pid, i64::from(std::process::id()));
    assert_eq!(holder.host, flowrun_engine::journal::this_host());
    assert!(holder.started_at > 0);
    assert!(
        j2.lock("wf", "other-inventory", "r2").unwrap().is_none(),
        "one lock per inventory"
    );
    // A wait that runs out names the holder too.
    let held = j2
        .lock_wait("wf", "inv", "r2", Some(Duration::from_millis(300)))
        .unwrap();
    assert_eq!(held.unwrap().run_id, "r1");
    j1.unlock("wf", "inv", "r1");
    j1.flush().unwrap();
    assert!(j2.lock("wf", "inv", "r2").unwrap().is_none());
}

#[test]
fn postgres_a_lock_holder_whose_session_ends_releases_the_lock() {
    let place = Place::new(Backend::Postgres);
    let j1 = place.open();
    let j2 = place.open();
    assert!(j1.lock("wf", "inv", "r1").unwrap().is_none());
    assert!(j2.lock("wf", "inv", "r2").unwrap().is_some());
    // No unlock: the session ends (as when a controller dies), the server releases.
    drop(j1);
    let t0 = std::time::Instant::now();
    let got = j2.lock_wait("wf", "inv", "r2", Some(Duration::from_secs(20))).unwrap();
    assert!(got.is_none(), "the lock came free with the session");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

fn a_journal_refuses_a_key_it_was_not_written_with(b: Backend) {
    let place = Place::new(b);
    let (k1, k2) = (place.dir.path().join("k1"), place.dir.path().join("k2"));
    let (key1, key2) = (
        SecretKey::load_or_create(&k1).unwrap(),
        SecretKey::load_or_create(&k2).unwrap(),
    );
    let j = place.open();
    j.check_key(&key1, &k1).unwrap();
    j.check_key(&key1, &k1).unwrap();
    let other = place.open();
    match other.check_key(&key2, &k2) {
        Err(e @ JournalError::WrongKey { .. }) => {
            assert!(e.is_config());
            let text = e.to_string();
            assert!(text.contains("written with another key"), "{text}");
            assert!(
                text.contains(&key1.check_value()[..12]),
                "names the journal's key id: {text}"
            );
        }
        other => panic!("expected a wrong-key error, got {other:?}"),
    }
    assert_eq!(other.key_id().unwrap().unwrap(), key1.check_value()[..12]);
}

fn a_newer_schema_is_refused(b: Backend) {
    let place = Place::new(b);
    let (found, known) = place.open().schema_version().unwrap();
    assert_eq!(found, known);
    place.set_version(known + 7);
    match Journal::connect(&place.location) {
        Err(JournalError::NewerSchema { found, known: k, .. }) => assert_eq!((found, k), (known + 7, known)),
        Err(e) => panic!("expected NewerSchema, got {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

fn prune_keeps_the_last_success_of_each_instance(b: Backend) {
    let place = Place::new(b);
    let j = place.open();
    fill(&j);
    j.begin_run(run_row("r0", 500));
    j.step("r0", 0, step("old"));
    j.finish_run("r0", RunStatus::Failed, &serde_json::json!({}));
    // Still running: never pruned.
    j.begin_run(run_row("r-live", 10));
    j.flush().unwrap();
    let dry = j.prune(1_500, true).unwrap();
    assert_eq!((dry.runs, dry.run_steps, dry.kept), (1, 1, 1));
    assert_eq!(j.history(None, 10).unwrap().len(), 4, "a dry run removes nothing");
    let p = j.prune(1_500, false).unwrap();
    assert_eq!((p.runs, p.run_steps, p.kept), (1, 1, 1));
    let ids: Vec<String> = j.history(None, 10).unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["r2", "r1", "r-live"], "r1 holds the last success of `a`");
    assert_eq!(j.load("wf").unwrap().len(), 2);
    let s = j.stats().unwrap();
    assert_eq!((s.runs, s.run_steps, s.records), (3, 3, 2));
    assert_eq!(s.workflows[0].workflow, "wf");
    assert!(s.bytes.unwrap() > 0);
}

#[test]
fn copy_from_sqlite_to_postgres_keeps_everything() {
    let src_place = Place::new(Backend::Sqlite);
    let src = src_place.open();
    fill(&src);
    let k = src_place.dir.path().join("k");
    let key = SecretKey::load_or_create(&k).unwrap();
    src.check_key(&key, &k).unwrap();
    src.notify("wf", "localhost", "restart");
    src.flush().unwrap();
    let dst_place = Place::new(Backend::Postgres);
    let dst = dst_place.open();
    let n = src.copy_to(&dst).unwrap();
    assert_eq!(n, 1 + 2 + 3 + 2 + 1, "key check, runs, steps, records, owed handler");
    let (a, b) = (src.load("wf").unwrap(), dst.load("wf").unwrap());
    assert_eq!(a.len(), b.len());
    for (k, r) in &a {
        assert_eq!(b[k].fingerprint, r.fingerprint);
        assert_eq!(b[k].outputs, r.outputs);
        assert_eq!(b[k].outputs_enc, r.outputs_enc);
    }
    let ids = |j: &Journal| {
        j.history(None, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&src), ids(&dst));
    assert_eq!(dst.show("r1").unwrap().unwrap().1.len(), 2);
    assert_eq!(dst.pending_handlers("wf").unwrap().len(), 1);
    dst.check_key(&key, &k).expect("the key check value came along");
    // Copying again into a journal that holds runs is refused.
    let e = src.copy_to(&dst).unwrap_err().to_string();
    assert!(e.contains("copy only into an empty journal"), "{e}");
}

#[test]
fn sqlite_a_version_1_journal_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute_batch(
            "CREATE TABLE runs (id TEXT PRIMARY KEY, workflow TEXT NOT NULL, inventory TEXT NOT NULL,
                started_at INTEGER NOT NULL, finished_at INTEGER, status TEXT NOT NULL,
                pid INTEGER NOT NULL, mode TEXT NOT NULL, totals TEXT);
             CREATE INDEX runs_by_workflow ON runs (workflow, started_at);
             CREATE TABLE run_steps (run_id TEXT NOT NULL, seq INTEGER NOT NULL, step_id TEXT NOT NULL, host TEXT NOT NULL,
                item TEXT NOT NULL, status TEXT NOT NULL, from_journal INTEGER NOT NULL,
                duration_ms INTEGER NOT NULL, message TEXT, PRIMARY KEY (run_id, seq));
             CREATE TABLE records (workflow TEXT NOT NULL, step_id TEXT NOT NULL, item TEXT NOT NULL, host TEXT NOT NULL,
                fingerprint TEXT NOT NULL, status TEXT NOT NULL, outputs TEXT, outputs_enc BLOB,
                run_id TEXT NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (workflow, step_id, item, host));
             CREATE TABLE pending_handlers (workflow TEXT NOT NULL, host TEXT NOT NULL, handler TEXT NOT NULL,
                PRIMARY KEY (workflow, host, handler));
             CREATE TABLE locks (workflow TEXT NOT NULL, inventory TEXT NOT NULL, pid INTEGER NOT NULL, pid_start TEXT NOT NULL,
                run_id TEXT NOT NULL, started_at INTEGER NOT NULL, PRIMARY KEY (workflow, inventory));
             INSERT INTO runs VALUES ('r1', 'wf', 'inv', 5, 6, 'success', 1, 'run', '{}');
             INSERT INTO records VALUES ('wf', 'a', '', 'localhost', 'fp', 'ok', '{}', NULL, 'r1', 6);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let j = Journal::connect_unmigrated(&Location::Sqlite(p.clone())).unwrap();
    assert_eq!(j.migrate().unwrap(), (1, 3));
    assert_eq!(j.load("wf").unwrap()[&key("a")].fingerprint, "fp");
    assert_eq!(j.history(None, 5).unwrap()[0].host, "", "old runs name no controller");
}

/// Statuses are typed: a word the journal does not know (written by
/// something else) is an error naming it, not a status guessed.
#[test]
fn sqlite_an_unknown_status_word_is_an_error_not_a_default() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j.db");
    let j = Journal::open(&p).unwrap();
    fill(&j);
    assert_eq!(j.show("r1").unwrap().unwrap().1[0].status, Status::Changed);
    drop(j);
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute("UPDATE runs SET status = 'done' WHERE id = 'r2'", [])
        .unwrap();
    drop(c);
    let j = Journal::open(&p).unwrap();
    let e = j.history(None, 5).unwrap_err().to_string();
    assert!(e.contains("unknown run status `done`"), "{e}");
}
