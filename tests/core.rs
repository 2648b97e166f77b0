//! The engine core end to end: a DAG with parallel branches, templates,
//! `for_each` and a handler; journaled re-runs that execute nothing; re-runs of
//! exactly what changed; failure and resume; `--check`; locks; signals; reports.

use crate::harness::{on_both_journals, unindent, Journal, Sandbox};
use std::process::Stdio;
use std::time::{Duration, Instant};

const SITE: &str = r#"
    name: site
    description: A demo site, eleven steps
    vars:
      app: demo
      banner_text: welcome
      root: $DIR/out
      users: [alice, bob, carol]
    steps:
      - id: root-dir
        uses: file
        with: { path: "{{root}}", state: directory, mode: "0755" }
      - id: conf-dir
        needs: [root-dir]
        uses: file
        with: { path: "{{root}}/conf", state: directory }
      - id: data-dir
        needs: [root-dir]
        uses: file
        with: { path: "{{root}}/data", state: directory }
      - id: version
        uses: command
        with: { shell: "echo version >> $DIR/side-effects; echo 1.2.3" }
      - id: banner
        needs: [conf-dir]
        uses: copy
        with: { dest: "{{root}}/conf/banner", content: "{{banner_text}}\n", mode: "0644" }
        notify: [reload]
      - id: config
        needs: [conf-dir, version]
        uses: template
        with: { src: templates/app.conf.hbs, dest: "{{root}}/conf/app.conf", mode: "0600" }
        notify: [reload]
      - id: users
        needs: [data-dir]
        uses: file
        for_each: "{{json users}}"
        with: { path: "{{root}}/data/{{item}}", state: directory }
      - id: hosts-line
        needs: [conf-dir]
        uses: line
        with: { path: "{{root}}/conf/hosts", line: "127.0.0.1 {{app}}", create: true }
      - id: marker
        needs: [data-dir]
        uses: command
        with: { shell: "echo marker >> $DIR/side-effects; touch {{root}}/data/marker", creates: "{{root}}/data/marker" }
      - id: check
        needs: [banner, config, users, hosts-line, marker]
        uses: assert
        with: { that: ["{{eq steps.version.outputs.stdout '1.2.3'}}"] }
      - id: summary
        needs: [check, version]
        uses: command
        with: { shell: "echo summary {{steps.version.outputs.stdout}} >> $DIR/side-effects" }
    handlers:
      - id: reload
        uses: command
        with: { shell: "echo reload >> $DIR/side-effects" }
"#;

const APP_CONF: &str = "app = {{app}}\nversion = {{steps.version.outputs.stdout}}\n";

// The tests that involve the journal, on SQLite and on PostgreSQL.
on_both_journals!(
    site_runs_then_rerun_changes_nothing_and_executes_nothing,
    changed_parameter_reruns_only_that_step_and_dependents,
    failure_exits_1_and_the_next_run_resumes,
    check_mode_writes_nothing,
    verify_reruns_checks_and_repairs_drift_only,
    plan_graph_list_and_validate,
    history_show_and_forget,
    concurrent_run_of_the_same_workflow_exits_3,
    sigterm_exits_143_journal_consistent_and_next_run_resumes,
    a_canary_secret_never_leaks,
);

fn site(journal: Journal) -> Sandbox {
    let sb = Sandbox::on(journal);
    sb.write("site.yml", SITE);
    sb.write("templates/app.conf.hbs", APP_CONF);
    sb
}

fn site_runs_then_rerun_changes_nothing_and_executes_nothing(journal: Journal) {
    let sb = site(journal);
    let r = sb.run(&["run", "site.yml"], 0);
    assert_eq!(
        r.recap("localhost"),
        "ok=1 changed=13 failed=0 skipped=0 unreachable=0",
        "{}",
        r.stdout
    );
    assert_eq!(sb.read("out/conf/app.conf"), "app = demo\nversion = 1.2.3\n");
    assert_eq!(sb.read("out/conf/banner"), "welcome\n");
    assert!(sb.path("out/data/carol").is_dir());
    let effects = sb.lines("side-effects");
    assert_eq!(
        effects.iter().filter(|l| *l == "reload").count(),
        1,
        "handler once: {effects:?}"
    );
    assert_eq!(
        effects.last().unwrap(),
        "reload",
        "handler after the steps: {effects:?}"
    );
    assert!(effects.contains(&"summary 1.2.3".to_owned()));

    // Second run: nothing executes (the side-effects file is untouched), outputs
    // are restored (summary's parameters render from version's journaled stdout).
    let r2 = sb.run(&["run", "site.yml"], 0);
    assert!(r2.recap("localhost").contains("changed=0 failed=0"), "{}", r2.stdout);
    assert_eq!(sb.lines("side-effects"), effects, "a command ran again");
    r2.stdout_has("ok: [localhost] summary (journal)");
    r2.stdout_has("ok: [localhost] users (item=bob) (journal)");
}

fn changed_parameter_reruns_only_that_step_and_dependents(journal: Journal) {
    let sb = site(journal);
    sb.run(&["run", "site.yml"], 0);
    let before = sb.lines("side-effects");
    let r = sb.run(&["run", "site.yml", "-e", "banner_text=hello"], 0);
    assert_eq!(sb.read("out/conf/banner"), "hello\n");
    r.stdout_has("changed: [localhost] banner");
    // banner changed → its handler; nothing else executed.
    assert_eq!(
        r.recap("localhost"),
        "ok=12 changed=2 failed=0 skipped=0 unreachable=0",
        "{}",
        r.stdout
    );
    let after = sb.lines("side-effects");
    assert_eq!(&after[before.len()..], ["reload"]);
}

fn failure_exits_1_and_the_next_run_resumes(journal: Journal) {
    let sb = Sandbox::on(journal);
    sb.write(
        "wf.yml",
        r#"
        steps:
          - id: one
            uses: command
            with: { shell: "echo one >> side" }
          - id: two
            needs: [one]
            uses: command
            with: { shell: "test ! -e broken && echo two >> side" }
          - id: three
            needs: [two]
            uses: command
            with: { shell: "echo three >> side" }
          - id: other
            uses: command
            with: { shell: "echo other >> side" }
        "#,
    );
    std::fs::write(sb.path("broken"), "").unwrap();
    let r = sb.run(&["run", "wf.yml"], 1);
    r.stdout_has("failed: [localhost] two");
    r.stdout_has("skipped: [localhost] three - not run: `two` did not succeed");
    assert_eq!(r.recap("localhost"), "ok=0 changed=2 failed=1 skipped=1 unreachable=0");
    std::fs::remove_file(sb.path("broken")).unwrap();
    let r = sb.run(&["run", "wf.yml"], 0);
    assert_eq!(r.recap("localhost"), "ok=2 changed=2 failed=0 skipped=0 unreachable=0");
    let mut side = sb.lines("side");
    side.sort();
    assert_eq!(side, ["one", "other", "three", "two"], "one and other ran once");
}

fn check_mode_writes_nothing(journal: Journal) {
    let sb = site(journal);
    let r = sb.run(&["run", "site.yml", "--check", "--diff"], 0);
    r.stdout_has("check mode: nothing was changed");
    assert!(!sb.exists("out"), "--check created files");
    assert!(!sb.exists("side-effects"), "--check ran a command");
    // The journal learnt nothing: a real run still changes everything.
    let r = sb.run(&["run", "site.yml"], 0);
    assert!(r.recap("localhost").contains("changed=13"));
}

fn verify_reruns_checks_and_repairs_drift_only(journal: Journal) {
    let sb = site(journal);
    sb.run(&["run", "site.yml"], 0);
    std::fs::write(sb.path("out/conf/banner"), "tampered\n").unwrap();
    let r = sb.run(&["run", "site.yml"], 0);
    assert!(
        r.recap("localhost").contains("changed=0"),
        "the journal alone does not see drift"
    );
    let r = sb.run(&["run", "site.yml", "--verify"], 0);
    r.stdout_has("changed: [localhost] banner");
    assert_eq!(sb.read("out/conf/banner"), "welcome\n");
    r.stdout_has("changed: [localhost] handler reload");
    assert!(!r.stdout.contains("changed: [localhost] config"), "{}", r.stdout);
}

fn plan_graph_list_and_validate(journal: Journal) {
    let sb = site(journal);
    sb.run(&["validate", "site.yml"], 0)
        .stdout_has("ok: site (11 steps, 11 nodes");
    let r = sb.run(&["plan", "site.yml"], 0);
    r.stdout_has("phase 1:").stdout_has("  root-dir (file) on localhost");
    sb.run(&["run", "site.yml"], 0);
    sb.run(&["plan", "site.yml"], 0)
        .stdout_has("root-dir (file) on localhost (journal: skip)")
        .stdout_has("users (file for_each) on localhost (journal: skip, 3 items)");
    sb.run(
        &[
            "plan",
            "site.yml",
            "-e",
            r#"users=["alice","dave"]"#,
            "-e",
            "banner_text=hi",
        ],
        0,
    )
    .stdout_has("users (file for_each) on localhost (journal: skip 1 of 2 items, run 1)")
    .stdout_has("banner (copy) on localhost (run)")
    .stdout_has("conf-dir (file) on localhost (journal: skip)");
    sb.run(&["graph", "site.yml"], 0)
        .stdout_has("\"conf-dir\" -> \"banner\";");
    sb.run(&["graph", "site.yml", "--format", "mermaid"], 0)
        .stdout_has("conf_dir --> banner");
    std::fs::create_dir_all(sb.path("workflows")).unwrap();
    std::fs::copy(sb.path("site.yml"), sb.path("workflows/site.yml")).unwrap();
    sb.run(&["list"], 0)
        .stdout_has("site")
        .stdout_has("A demo site, eleven steps");
}

#[test]
fn json_junit_and_metrics() {
    let sb = site(Journal::Sqlite);
    let r = sb.run(
        &[
            "run",
            "site.yml",
            "--output",
            "json",
            "--junit",
            "report.xml",
            "--metrics",
            "flowrun.prom",
        ],
        0,
    );
    let doc = r.json();
    assert_eq!(doc["status"], "success");
    assert_eq!(doc["workflow"], "site");
    assert_eq!(doc["totals"]["changed"], 13);
    assert_eq!(doc["hosts"]["localhost"]["changed"], 13);
    let step = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "users" && s["item"] == "bob")
        .unwrap();
    assert_eq!(step["status"], "changed");
    assert_eq!(step["from_journal"], false);
    assert!(step["duration_ms"].is_u64());
    let junit = sb.read("report.xml");
    assert!(
        junit.contains("<testsuite name=\"site\" tests=\"14\" failures=\"0\""),
        "{junit}"
    );
    assert!(junit.contains("name=\"users [carol]\""), "{junit}");
    let metrics = sb.read("flowrun.prom");
    assert!(
        metrics.contains("flowrun_last_run_success{workflow=\"site\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flowrun_last_run_steps{workflow=\"site\",status=\"changed\"} 13"),
        "{metrics}"
    );
    // A failing run says so in all three. (An undefined top-level variable
    // is caught when the workflow loads; a missing attribute only when the
    // template renders.)
    std::fs::write(sb.path("templates/app.conf.hbs"), "{{root.undefined_var}}\n").unwrap();
    let r = sb.run(
        &[
            "run",
            "site.yml",
            "--output",
            "json",
            "--junit",
            "report.xml",
            "--metrics",
            "flowrun.prom",
        ],
        1,
    );
    assert_eq!(r.json()["status"], "failed");
    assert!(sb.read("report.xml").contains("<failure message="));
    assert!(sb.read("report.xml").contains("undefined_var"));
    assert!(sb
        .read("flowrun.prom")
        .contains("flowrun_last_run_success{workflow=\"site\"} 0"));
}

fn history_show_and_forget(journal: Journal) {
    let sb = site(journal);
    sb.run(&["run", "site.yml"], 0);
    sb.run(&["run", "site.yml"], 0);
    let h = sb.run(&["history"], 0);
    let lines: Vec<&str> = h.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", h.stdout);
    assert!(
        lines[0].contains("success") && lines[0].contains("changed=0"),
        "{}",
        h.stdout
    );
    let run_id = lines[1].split_whitespace().next().unwrap();
    sb.run(&["show", run_id], 0).stdout_has("changed: [localhost] banner");
    sb.run(&["forget", "--workflow", "site", "--step", "version"], 0)
        .stdout_has("forgot 1 journal record");
    let r = sb.run(&["run", "site.yml"], 0);
    r.stdout_has("changed: [localhost] version - run `");
    assert!(!r.stdout.contains("version (journal)"));
    sb.run(&["show", "nope"], 2).stderr_has("no run `nope`");
    sb.run(&["forget"], 2);
}

fn wait_for_file(sb: &Sandbox, rel: &str) {
    let t0 = Instant::now();
    while !sb.exists(rel) {
        assert!(t0.elapsed() < Duration::from_secs(30), "{rel} never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const SLOW: &str = r#"
    steps:
      - id: first
        uses: command
        with: { shell: "echo first >> side; touch started" }
      - id: slow
        needs: [first]
        uses: command
        with: { shell: "touch slow-started; sleep {{default secs 30}}; echo slow >> side" }
      - id: last
        needs: [slow]
        uses: command
        with: { shell: "echo last >> side" }
"#;

fn concurrent_run_of_the_same_workflow_exits_3(journal: Journal) {
    let sb = Sandbox::on(journal);
    sb.write("wf.yml", SLOW);
    let mut first = sb
        .cmd(&["run", "wf.yml", "-e", "secs=3"])
        .cmd
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&sb, "started");
    let r = sb.run(&["run", "wf.yml", "-e", "secs=3"], 3);
    r.stderr_has("already running")
        .stderr_has(&format!("pid {}", first.id()));
    assert_eq!(first.wait().unwrap().code(), Some(0));
    // After it finished, the lock is free again.
    sb.run(&["run", "wf.yml", "-e", "secs=3"], 0);
}

fn sigterm_exits_143_journal_consistent_and_next_run_resumes(journal: Journal) {
    let sb = Sandbox::on(journal);
    sb.write("wf.yml", SLOW);
    let mut child = sb.cmd(&["run", "wf.yml"]).cmd.stdout(Stdio::piped()).spawn().unwrap();
    wait_for_file(&sb, "slow-started");
    let t0 = Instant::now();
    // SAFETY: sending a signal to our own child process.
    unsafe_kill(child.id(), 15);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the slow step was not cancelled"
    );
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(out.contains("interrupted by signal 15"), "{out}");
    sb.run(&["history"], 0).stdout_has("interrupted");
    let r = sb.run(&["run", "wf.yml", "-e", "secs=0"], 0);
    r.stdout_has("ok: [localhost] first (journal)");
    assert_eq!(sb.lines("side"), ["first", "slow", "last"]);
}

fn unsafe_kill(pid: u32, sig: i32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn unindent_helper() {
    assert_eq!(unindent("\n  a\n    b\n"), "a\n  b\n");
}

fn a_canary_secret_never_leaks(journal: Journal) {
    const CANARY: &str = "canary-8f3a1c9e77d2";
    let sb = Sandbox::on(journal);
    sb.write(
        "wf.yml",
        r#"
        secrets:
          token: { env: FLOWRUN_CANARY }
        steps:
          - id: echo
            uses: command
            with: { argv: [cat], stdin: "{{secrets.token}}" }
          - id: write
            needs: [echo]
            uses: copy
            with: { dest: "$DIR/secret.txt", content: "{{steps.echo.outputs.stdout}} {{default suffix ''}}\n", mode: "0600" }
          - id: fail
            needs: [write]
            uses: command
            with: { shell: "cat secret.txt >&2; test -z '{{default fail ''}}'" }
        "#,
    );
    let mut seen = String::new();
    for args in [
        vec!["run", "wf.yml", "--diff", "--junit", "r.xml", "--metrics", "m.prom"],
        vec![
            "run",
            "wf.yml",
            "--diff",
            "-e",
            "suffix=x",
            "-e",
            "fail=1",
            "--junit",
            "r.xml",
            "--metrics",
            "m.prom",
            "-vv",
        ],
        vec!["run", "wf.yml", "--output", "json", "--junit", "r.xml"],
    ] {
        let out = sb.cmd(&args).env("FLOWRUN_CANARY", CANARY).output();
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
        seen.push_str(&String::from_utf8_lossy(&out.stderr));
        seen.push_str(&sb.read("r.xml"));
        seen.push_str(&sb.read("m.prom"));
    }
    assert!(
        seen.contains("****"),
        "the secret was used and masked somewhere:\n{seen}"
    );
    assert!(!seen.contains(CANARY), "the secret leaked:\n{seen}");
    // The file the workflow wrote has it, as it should.
    assert!(sb.read("secret.txt").contains(CANARY));
    for f in [
        "journal.db",
        "journal.db-wal",
        "journal.db-shm",
        "journal.db.key",
        "journal.key",
    ] {
        let bytes = std::fs::read(sb.path(f)).unwrap_or_default();
        assert!(
            !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "{f} contains the secret"
        );
    }
    if let Some(schema) = sb.pg_schema() {
        let pg = flowrun_lab::postgres::PgServer::shared();
        let mut rows = 0;
        for table in ["runs", "run_steps", "records", "pending_handlers", "locks", "meta"] {
            let dump = pg
                .sql(&format!("SELECT row_to_json(t)::text FROM {schema}.{table} t"))
                .unwrap();
            rows += dump.lines().count();
            assert!(!dump.contains(CANARY), "{table} contains the secret:\n{dump}");
        }
        let enc = pg
            .sql(&format!(
                "SELECT encode(outputs_enc, 'escape') FROM {schema}.records WHERE outputs_enc IS NOT NULL"
            ))
            .unwrap();
        assert!(!enc.is_empty(), "the secret output is journaled, encrypted");
        assert!(!enc.contains(CANARY), "an encrypted record holds the secret in clear");
        assert!(rows > 10, "the journal was written");
    }
}

#[test]
fn template_with_literal_parameters_still_sees_variables_and_changed_when_decides() {
    let sb = Sandbox::new();
    sb.write("t.hbs", "app={{app}} host={{host.name}}\n");
    sb.write(
        "wf.yml",
        r#"
        vars: { app: demo }
        steps:
          - id: render
            uses: template
            with: { src: t.hbs, dest: $DIR/out.conf }
          - id: probe
            uses: command
            with: { argv: [echo, read-only] }
            changed_when: false
          - id: maybe
            uses: command
            with: { shell: "echo {{default what ''}}" }
            changed_when: "{{ne outputs.stdout ''}}"
        "#,
    );
    let r = sb.run(&["run", "wf.yml"], 0);
    assert_eq!(sb.read("out.conf"), "app=demo host=localhost\n");
    r.stdout_has("ok: [localhost] probe")
        .stdout_has("ok: [localhost] maybe");
    sb.run(&["run", "wf.yml", "-e", "what=x"], 0)
        .stdout_has("changed: [localhost] maybe");
    // `outputs` exists only in `changed_when` and `retry.until`.
    sb.write(
        "bad.yml",
        "steps:\n  - id: a\n    uses: command\n    with: { argv: [echo, \"{{outputs.rc}}\"] }\n",
    );
    sb.run(&["validate", "bad.yml"], 2)
        .stderr_has("undefined variable `outputs`");
}
