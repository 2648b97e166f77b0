//! The journal end to end: waiting for the lock (`--wait-lock`) so runs
//! queue instead of failing, the journal key, and journal upkeep
//! (`flowrun journal migrate|copy|prune|stats`).

use crate::harness::{on_both_journals, Journal, Sandbox};
use flowrun_lab::postgres::PgServer;
use std::process::Stdio;
use std::time::{Duration, Instant};

const SLOW: &str = r#"
    steps:
      - id: first
        uses: command
        with: { shell: "echo first >> side; touch started" }
      - id: slow
        needs: [first]
        uses: command
        with: { shell: "sleep {{default secs 2}}; echo slow >> side" }
      - id: last
        needs: [slow]
        uses: command
        with: { shell: "echo last >> side" }
"#;

fn wait_for_file(sb: &Sandbox, rel: &str) {
    let t0 = Instant::now();
    while !sb.exists(rel) {
        assert!(t0.elapsed() < Duration::from_secs(30), "{rel} never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

on_both_journals!(
    a_second_run_waits_in_line_for_the_lock_and_then_finds_the_work_done,
    a_wait_that_runs_out_exits_3_naming_the_holder,
    a_signal_ends_a_wait_for_the_lock_and_nothing_runs,
);

fn a_second_run_waits_in_line_for_the_lock_and_then_finds_the_work_done(journal: Journal) {
    let sb = Sandbox::on(journal);
    sb.write("wf.yml", SLOW);
    let first = sb.cmd(&["run", "wf.yml"]).cmd.stdout(Stdio::null()).spawn().unwrap();
    wait_for_file(&sb, "started");
    let r = sb.run(&["run", "wf.yml", "--wait-lock", "60s"], 0);
    r.stderr_has("waiting up to 1m for the lock of `wf`, held by host ");
    // It ran after the first one finished: everything came from the journal.
    assert!(r.recap("localhost").contains("ok=3 changed=0"), "{}", r.stdout);
    assert_eq!(sb.lines("side"), ["first", "slow", "last"], "nothing ran twice");
    let mut first = first;
    assert_eq!(first.wait().unwrap().code(), Some(0));
}

fn a_wait_that_runs_out_exits_3_naming_the_holder(journal: Journal) {
    let sb = Sandbox::on(journal);
    sb.write("wf.yml", SLOW);
    let mut first = sb
        .cmd(&["run", "wf.yml", "-e", "secs=6"])
        .cmd
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&sb, "started");
    let t0 = Instant::now();
    let r = sb.run(&["run", "wf.yml", "--wait-lock", "1s"], 3);
    assert!(t0.elapsed() >= Duration::from_secs(1), "it waited");
    r.stderr_has("already running")
        .stderr_has(&format!("pid {}", first.id()))
        .stderr_has("host ")
        .stderr_has(" since ");
    assert_eq!(first.wait().unwrap().code(), Some(0));
    assert_eq!(sb.lines("side"), ["first", "slow", "last"]);
}

fn a_signal_ends_a_wait_for_the_lock_and_nothing_runs(journal: Journal) {
    let sb = Sandbox::on(journal);
    sb.write("wf.yml", SLOW);
    let mut first = sb
        .cmd(&["run", "wf.yml", "-e", "secs=5"])
        .cmd
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&sb, "started");
    let waiter = sb
        .cmd(&["run", "wf.yml", "-e", "secs=0", "--wait-lock", "10m"])
        .cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let t0 = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &waiter.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = waiter.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(t0.elapsed() < Duration::from_secs(4), "the wait ended at once");
    assert!(
        stderr.contains("while waiting for the lock: nothing was run"),
        "{stderr}"
    );
    assert_eq!(first.wait().unwrap().code(), Some(0));
    // The waiter did not take the lock on its way out: a new run gets it.
    sb.run(&["run", "wf.yml", "-e", "secs=5"], 0);
    assert_eq!(sb.lines("side"), ["first", "slow", "last"]);
}

#[test]
fn journal_stats_prune_and_migrate_on_sqlite() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yml",
        "steps:\n  - id: a\n    uses: command\n    with: { shell: \"echo a >> side\" }\n",
    );
    for _ in 0..3 {
        sb.run(&["run", "wf.yml"], 0);
    }
    sb.run(&["journal", "migrate"], 0)
        .stdout_has("schema version 3, up to date");
    let s = sb.run(&["journal", "stats"], 0);
    s.stdout_has("schema version 3")
        .stdout_has("runs 3  step results 3  records 1")
        .stdout_has("  wf ");
    // Every run is older than 0s: a prune removes the two re-runs and keeps
    // the first, whose record is the last success of `a`.
    std::thread::sleep(Duration::from_millis(1100));
    sb.run(&["journal", "prune", "--older-than", "0s", "--dry-run"], 0)
        .stdout_has("would remove 2 run(s) and 2 step result(s)")
        .stdout_has("kept 1 older run(s)");
    sb.run(&["journal", "stats"], 0).stdout_has("runs 3 ");
    sb.run(&["journal", "prune", "--older-than", "0s"], 0)
        .stdout_has("removed 2 run(s)");
    sb.run(&["journal", "stats"], 0)
        .stdout_has("runs 1  step results 1  records 1");
    // The record survived: the next run still takes `a` from the journal.
    sb.run(&["run", "wf.yml"], 0).stdout_has("ok: [localhost] a (journal)");
    assert_eq!(sb.lines("side"), ["a"]);
}

// ---- several controllers on one PostgreSQL journal ----

/// Like SLOW, with its side effects in one file both controllers see.
fn shared_workflow(side: &std::path::Path) -> String {
    SLOW.replace(">> side", &format!(">> {}", side.display()))
}

fn pg() -> &'static PgServer {
    PgServer::shared()
}

/// Poll SQL until it answers `want` (the journal thread commits asynchronously).
fn wait_for_sql(server: &PgServer, sql: &str, want: &str) {
    let t0 = Instant::now();
    loop {
        if server.sql(sql).is_ok_and(|v| v == want) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "`{sql}` never gave {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two controllers: A in one directory, B in another, one journal and one key.
fn two_controllers() -> (Sandbox, Sandbox) {
    let a = Sandbox::on(Journal::Postgres);
    let b = Sandbox::sharing(&a);
    let wf = shared_workflow(&a.path("side"));
    for sb in [&a, &b] {
        sb.write("wf.yml", &wf);
        sb.write("hosts.yml", "all:\n  hosts:\n    localhost: { connection: local }\n");
    }
    (a, b)
}

fn b_cmd(a: &Sandbox, b: &Sandbox, args: &[&str]) -> crate::harness::Cmd {
    b.cmd(args)
        .env("FLOWRUN_JOURNAL_KEY_FILE", a.path("journal.key").to_str().unwrap())
}

#[test]
fn two_controllers_one_runs_the_other_exits_3_or_waits_and_nothing_runs_twice() {
    let (a, b) = two_controllers();
    let mut first = a
        .cmd(&["run", "wf.yml", "-i", "hosts.yml", "-e", "secs=4"])
        .cmd
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&a, "started");
    let r = b_cmd(&a, &b, &["run", "wf.yml", "-i", "hosts.yml", "-e", "secs=4"]).expect(3);
    r.stderr_has("already running")
        .stderr_has(&format!("pid {}", first.id()))
        .stderr_has(&format!("host {}", flowrun_engine::journal::this_host()));
    // With --wait-lock, B queues behind A and then finds A's work done.
    let r = b_cmd(
        &a,
        &b,
        &["run", "wf.yml", "-i", "hosts.yml", "-e", "secs=4", "--wait-lock", "2m"],
    )
    .expect(0);
    r.stderr_has("waiting up to 2m for the lock of `wf`");
    assert!(r.recap("localhost").contains("ok=3 changed=0"), "{}", r.stdout);
    assert_eq!(first.wait().unwrap().code(), Some(0));
    assert_eq!(a.lines("side"), ["first", "slow", "last"], "nothing ran twice");
    let h = b_cmd(&a, &b, &["history"]).expect(0);
    assert_eq!(h.stdout.lines().count(), 2, "A's run and B's: {}", h.stdout);
}

#[test]
fn kill_9_of_the_lock_holder_frees_the_lock_at_once_and_the_next_run_resumes() {
    let (a, b) = two_controllers();
    let mut holder = a
        .cmd(&["run", "wf.yml", "-i", "hosts.yml", "-e", "secs=60"])
        .cmd
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let schema = a.pg_schema().unwrap().to_owned();
    wait_for_sql(
        pg(),
        &format!("SELECT count(*) FROM {schema}.records WHERE step_id = 'first'"),
        "1",
    );
    let waiter = b_cmd(
        &a,
        &b,
        &["run", "wf.yml", "-i", "hosts.yml", "-e", "secs=0", "--wait-lock", "5m"],
    )
    .cmd
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // The waiter is in the server's lock queue.
    wait_for_sql(
        pg(),
        "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        "t",
    );
    let killed = Instant::now();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = waiter.wait_with_output().unwrap();
    let took = killed.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < Duration::from_secs(10),
        "the waiter took {took:?} after the kill"
    );
    // It resumed: `first` from the journal, the rest ran.
    assert!(stdout.contains("ok: [localhost] first (journal)"), "{stdout}");
    assert_eq!(a.lines("side"), ["first", "slow", "last"]);
    let h = b_cmd(&a, &b, &["history"]).expect(0);
    assert!(h.stdout.contains("abandoned"), "the killed run is marked: {}", h.stdout);
    b_cmd(&a, &b, &["run", "wf.yml", "-i", "hosts.yml", "-e", "secs=0"])
        .expect(0)
        .stdout_has("ok: [localhost] last (journal)");
}

#[test]
fn the_server_stopped_mid_run_fails_the_run_and_the_next_run_resumes() {
    let server = PgServer::start().unwrap();
    let sb = Sandbox::on_server(&server);
    sb.write(
        "wf.yml",
        r#"
        steps:
          - id: first
            uses: command
            with: { shell: "echo first >> side" }
          - id: slow
            needs: [first]
            uses: command
            with: { shell: "sleep 2; echo slow >> side" }
          - id: last
            needs: [slow]
            uses: command
            with: { shell: "sleep 8; echo last >> side" }
        "#,
    );
    let schema = sb.pg_schema().unwrap().to_owned();
    let run = sb
        .cmd(&["run", "wf.yml"])
        .cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_sql(&server, &format!("SELECT count(*) FROM {schema}.records"), "1");
    server.stop().unwrap();
    let t0 = Instant::now();
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "the run stopped at the failure, not after `last`"
    );
    assert!(stderr.contains("error: journal"), "{stderr}");
    assert!(stderr.contains("were not recorded and run again next time"), "{stderr}");
    assert!(!sb.lines("side").contains(&"last".to_owned()), "`last` was stopped");
    server.restart().unwrap();
    // Only what finished and was committed is recorded.
    let recorded = server
        .sql(&format!("SELECT step_id FROM {schema}.records ORDER BY step_id"))
        .unwrap();
    assert_eq!(recorded, "first");
    let r = sb.run(&["run", "wf.yml"], 0);
    r.stdout_has("ok: [localhost] first (journal)");
    assert_eq!(
        sb.lines("side"),
        ["first", "slow", "slow", "last"],
        "slow ran again: it was not recorded"
    );
}

const ONE_STEP: &str = "steps:\n  - id: a\n    uses: command\n    with: { shell: \"echo a >> side\" }\n";

#[test]
fn wrong_password_unreachable_server_wrong_key_and_newer_schema_are_clear_errors_and_nothing_runs() {
    let sb = Sandbox::on(Journal::Postgres);
    sb.write("wf.yml", ONE_STEP);
    let schema = sb.pg_schema().unwrap().to_owned();
    sb.cmd(&["run", "wf.yml"])
        .env("PGPASSWORD", "not-the-password")
        .expect(2)
        .stderr_has("the server refused user `flowrun`")
        .stderr_has("password authentication failed");
    // A password in a URL on the command line is refused before any connection, and masked.
    let with_pw = sb.journal().replace("flowrun@", "flowrun:hunter2-secret@");
    let r = sb.run(&["run", "wf.yml", "--journal", &with_pw], 2);
    r.stderr_has("carries a password");
    assert!(!r.stderr.contains("hunter2-secret"), "{}", r.stderr);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("postgres://flowrun@127.0.0.1:{port}/flowrun?sslmode=disable");
    sb.run(&["run", "wf.yml", "--journal", &nowhere], 1)
        .stderr_has(&format!(
            "journal `postgres://flowrun@127.0.0.1:{port}/flowrun?sslmode=disable`: cannot connect"
        ));
    sb.run(
        &[
            "run",
            "wf.yml",
            "--journal",
            "postgres://flowrun@192.0.2.1/flowrun?sslmode=disable",
        ],
        2,
    )
    .stderr_has("only allowed for a server on loopback");
    assert!(!sb.exists("side"), "nothing ran");

    sb.run(&["run", "wf.yml"], 0);
    // Another controller with its own key: refused, not a re-run of everything.
    std::fs::write(sb.path("other.key"), [7u8; 32]).unwrap();
    sb.cmd(&["run", "wf.yml"])
        .env("FLOWRUN_JOURNAL_KEY_FILE", sb.path("other.key").to_str().unwrap())
        .expect(2)
        .stderr_has("was written with another key")
        .stderr_has("nothing was run");
    pg().sql(&format!("UPDATE {schema}.schema_version SET version = 99"))
        .unwrap();
    sb.run(&["run", "wf.yml"], 2)
        .stderr_has("has schema version 99, newer than this flowrun knows (3): upgrade flowrun");
    pg().sql(&format!("UPDATE {schema}.schema_version SET version = 3"))
        .unwrap();
    assert_eq!(sb.lines("side"), ["a"], "only the good run ran");
    sb.run(&["run", "wf.yml"], 0).stdout_has("ok: [localhost] a (journal)");
}

#[test]
fn sqlite_a_wrong_key_file_is_refused_too() {
    let sb = Sandbox::new();
    sb.write("wf.yml", ONE_STEP);
    sb.run(&["run", "wf.yml"], 0);
    std::fs::write(sb.path("journal.db.key"), [7u8; 32]).unwrap();
    sb.run(&["run", "wf.yml"], 2).stderr_has("was written with another key");
    std::fs::remove_file(sb.path("journal.db.key")).unwrap();
    sb.run(&["run", "wf.yml"], 2)
        .stderr_has("does not exist: copy it from a controller");
    assert!(
        !sb.exists("journal.db.key"),
        "no new key was made for a journal that has one"
    );
    assert_eq!(sb.lines("side"), ["a"]);
}

#[test]
fn tls_verify_full_against_the_servers_ca_and_a_foreign_ca_is_refused() {
    let sb = Sandbox::on(Journal::Postgres);
    sb.write("wf.yml", ONE_STEP);
    let schema = sb.pg_schema().unwrap();
    let app = format!("tls_{schema}");
    let tls = format!("{}&application_name={app}", pg().tls_url(schema));
    sb.run(&["run", "wf.yml", "--journal", &tls], 0);
    // The server logged the session as encrypted.
    let log = pg().log();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("application_name={app} SSL enabled"))),
        "{log}"
    );
    sb.run(&["run", "wf.yml", "--journal", &tls], 0)
        .stdout_has("ok: [localhost] a (journal)");
    let other = flowrun_lab::emulators::tls::TestCa::generate("someone else").unwrap();
    let foreign = tls.replace(
        &pg().ca_file().display().to_string(),
        &other.ca_file().display().to_string(),
    );
    sb.run(&["run", "wf.yml", "--journal", &foreign], 1)
        .stderr_has("cannot connect")
        .stderr_has("certificate");
    assert_eq!(sb.lines("side"), ["a"]);
}

#[test]
fn journal_copy_from_sqlite_to_postgres_then_the_next_run_changes_nothing() {
    let sb = Sandbox::new();
    sb.write("wf.yml", SLOW);
    sb.run(&["run", "wf.yml", "-e", "secs=0"], 0);
    let url = pg().fresh_url();
    let r = sb
        .cmd(&["journal", "copy", "--from", "sqlite://journal.db", "--to", &url])
        .env("PGPASSWORD", flowrun_lab::postgres::PASSWORD)
        .expect(0);
    r.stdout_has("copied ").stdout_has("every controller of");
    // The key came along to this controller's default key for the new journal.
    let on_pg = |args: &[&str]| {
        sb.cmd(args)
            .env("FLOWRUN_JOURNAL", &url)
            .env("PGPASSWORD", flowrun_lab::postgres::PASSWORD)
    };
    let r = on_pg(&["run", "wf.yml", "-e", "secs=0"]).expect(0);
    assert!(r.recap("localhost").contains("ok=3 changed=0"), "{}", r.stdout);
    assert_eq!(sb.lines("side"), ["first", "slow", "last"], "nothing ran again");
    let h = on_pg(&["history"]).expect(0);
    assert_eq!(h.stdout.lines().count(), 2, "the copied run and this one: {}", h.stdout);
    on_pg(&["journal", "stats"])
        .expect(0)
        .stdout_has("(postgres), schema version 3")
        .stdout_has("runs 2  step results 6  records 3");
    // A second copy into the same journal is refused.
    sb.cmd(&["journal", "copy", "--from", "sqlite://journal.db", "--to", &url])
        .env("PGPASSWORD", flowrun_lab::postgres::PASSWORD)
        .expect(2)
        .stderr_has("copy only into an empty journal");
}

#[test]
fn the_password_comes_from_a_file_or_pgpass_and_a_url_password_from_the_environment_is_masked() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::on(Journal::Postgres);
    sb.write("wf.yml", ONE_STEP);
    std::fs::write(sb.path("pw"), format!("{}\n", flowrun_lab::postgres::PASSWORD)).unwrap();
    sb.cmd(&["run", "wf.yml"])
        .env_remove("PGPASSWORD")
        .env("FLOWRUN_JOURNAL_PASSWORD_FILE", sb.path("pw").to_str().unwrap())
        .expect(0);
    // libpq's password file, in the home directory, mode 0600.
    let home = sb.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let pgpass = home.join(".pgpass");
    std::fs::write(
        &pgpass,
        format!("127.0.0.1:*:flowrun:flowrun:{}\n", flowrun_lab::postgres::PASSWORD),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    sb.cmd(&["run", "wf.yml"])
        .env_remove("PGPASSWORD")
        .env("HOME", home.to_str().unwrap())
        .expect(0)
        .stdout_has("ok: [localhost] a (journal)");
    // A URL with a (wrong) password in FLOWRUN_JOURNAL: accepted, and never printed.
    let url = sb.journal().replace("flowrun@", "flowrun:wrong-pw-7c41e9@");
    let r = sb.cmd(&["run", "wf.yml", "-vv"]).env("FLOWRUN_JOURNAL", &url).expect(2);
    r.stderr_has("password authentication failed");
    assert!(
        !r.stderr.contains("wrong-pw-7c41e9") && !r.stdout.contains("wrong-pw-7c41e9"),
        "{}",
        r.stderr
    );
    assert_eq!(sb.lines("side"), ["a"]);
}

#[test]
fn a_server_on_a_unix_socket_and_journal_migrate_on_postgres() {
    let sb = Sandbox::on(Journal::Postgres);
    sb.write("wf.yml", ONE_STEP);
    let schema = sb.pg_schema().unwrap();
    let dir = pg().ca_file().parent().unwrap().display().to_string();
    let socket = format!(
        "postgres://flowrun@/flowrun?host={dir}&port={}&schema={schema}",
        pg().port()
    );
    sb.run(&["journal", "migrate", "--journal", &socket], 0)
        .stdout_has("schema version 0 -> 3");
    sb.run(&["journal", "migrate", "--journal", &socket], 0)
        .stdout_has("schema version 3, up to date");
    sb.run(&["run", "wf.yml", "--journal", &socket], 0);
    // The same journal over TCP.
    sb.run(&["run", "wf.yml"], 0).stdout_has("ok: [localhost] a (journal)");
}
