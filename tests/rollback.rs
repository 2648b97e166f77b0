//! Rollback steps end to end (`runs: on_failure`, `runs: always`): a failure
//! rolled back and the run still exit 1; SIGTERM cancels, rolls back, exits
//! 143; SIGKILL leaves an in-flight mark, and the next run rolls back first
//! (`--check` does not), says so in its output, `history` and `show`, then
//! deploys; `plan` and `graph` show the rollback steps.

use crate::harness::{on_both_journals, Journal, Sandbox};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

on_both_journals!(
    a_failure_is_rolled_back_and_the_run_still_fails,
    sigterm_cancels_rolls_back_and_exits_143,
    sigkill_leaves_a_mark_and_the_next_run_rolls_back_first,
);

/// A release switch that takes `secs`, a confirmation that can fail, a
/// rollback that reads only the host (the `current` file), a cleanup.
const RELEASE: &str = r#"
    steps:
      - id: switch
        uses: command
        with: { shell: "echo begin >> log; touch switching; sleep {{default secs 30}}; echo v2 > current; echo end >> log" }
      - id: confirm
        needs: [switch]
        uses: command
        with: { shell: "echo confirm >> log; test -z '{{default fail ''}}'" }
      - id: rollback
        needs: [confirm]
        runs: on_failure
        uses: command
        with:
          env: { STEP: "{{failure.step}}", INT: "{{failure.interrupted}}", RUN: "{{failure.run_id}}" }
          shell: 'echo "rollback $STEP interrupted=$INT run=$RUN" >> log; echo v1 > current'
      - id: cleanup
        needs: [rollback]
        runs: always
        uses: command
        with: { shell: "echo cleanup {{len failures}} >> log" }
"#;

fn sandbox(journal: Journal) -> Sandbox {
    let sb = Sandbox::on(journal);
    sb.write("release.yml", RELEASE);
    sb.write("current", "v1\n");
    sb
}

fn wait_for(sb: &Sandbox, rel: &str) {
    let t0 = Instant::now();
    while !sb.exists(rel) {
        assert!(t0.elapsed() < Duration::from_secs(30), "{rel} never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &Child, sig: i32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// `run release.yml` in the background until `switch` is half done.
fn start_switching(sb: &Sandbox) -> Child {
    let child = sb
        .cmd(&["run", "release.yml"])
        .cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(sb, "switching");
    child
}

fn a_failure_is_rolled_back_and_the_run_still_fails(journal: Journal) {
    let sb = sandbox(journal);
    let r = sb.run(&["run", "release.yml", "-e", "secs=0", "-e", "fail=1"], 1);
    assert_eq!(r.recap("localhost"), "ok=0 changed=3 failed=1 skipped=0 unreachable=0");
    let log = sb.lines("log");
    assert_eq!(&log[..3], ["begin", "end", "confirm"]);
    assert!(log[3].starts_with("rollback confirm interrupted=false run="), "{log:?}");
    assert_eq!(log[4], "cleanup 1");
    assert_eq!(sb.read("current"), "v1\n", "rolled back");
    // Without the failure: no rollback, the cleanup runs.
    let r = sb.run(&["run", "release.yml", "-e", "secs=0"], 0);
    r.stdout_has("skipped: [localhost] rollback - no failure to handle");
    assert_eq!(sb.lines("log").last().unwrap(), "cleanup 0");
    assert_eq!(sb.read("current"), "v2\n");
}

fn sigterm_cancels_rolls_back_and_exits_143(journal: Journal) {
    let sb = sandbox(journal);
    let mut child = start_switching(&sb);
    kill(&child, 15);
    assert_eq!(child.wait().unwrap().code(), Some(143));
    let log = sb.lines("log");
    assert_eq!(log[0], "begin");
    let mut rest = log[1..].to_vec();
    rest.sort();
    assert_eq!(rest.len(), 2, "{log:?}");
    assert_eq!(rest[0], "cleanup 1");
    assert!(rest[1].starts_with("rollback switch interrupted=true"), "{log:?}");
    assert_eq!(sb.read("current"), "v1\n");
    // Handled: the next run does not roll back again; it switches.
    let r = sb.run(&["run", "release.yml", "-e", "secs=0"], 0);
    assert!(!r.stdout.contains("recovery"), "{}", r.stdout);
    assert_eq!(sb.read("current"), "v2\n");
}

fn sigkill_leaves_a_mark_and_the_next_run_rolls_back_first(journal: Journal) {
    let sb = sandbox(journal);
    let mut child = start_switching(&sb);
    kill(&child, 9);
    child.wait().unwrap();
    assert_eq!(sb.lines("log"), ["begin"], "nothing ran after the kill");
    // `--check` writes nothing and rolls nothing back.
    sb.run(&["run", "release.yml", "--check"], 0);
    assert_eq!(sb.lines("log"), ["begin"]);
    let dead = sb
        .run(&["history"], 0)
        .stdout
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();

    let r = sb.run(&["run", "release.yml", "-e", "secs=0"], 0);
    r.stdout_has("changed: [localhost] rollback - recovery of what a run that died left unfinished");
    let log = sb.lines("log");
    assert_eq!(
        log[1],
        format!("rollback switch interrupted=true run={dead}"),
        "{log:?}"
    );
    assert_eq!(&log[2..], ["begin", "end", "confirm", "cleanup 0"]);
    assert_eq!(sb.read("current"), "v2\n");
    let history = sb.run(&["history"], 0);
    history.stdout_has("abandoned").stdout_has("recovered=1");
    let last = history
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    sb.run(&["show", &last], 0).stdout_has(&format!(
        "recovered: `switch` on localhost, left unfinished by run {dead}: rolled back by `rollback`"
    ));
    // Recovered once: the run after that has nothing to recover.
    let r = sb.run(&["run", "release.yml", "-e", "secs=0"], 0);
    assert!(!r.stdout.contains("recovery"), "{}", r.stdout);
}

#[test]
fn plan_graph_and_validate_show_rollback_steps() {
    let sb = sandbox(Journal::Sqlite);
    sb.run(&["validate", "release.yml"], 0);
    sb.run(&["plan", "release.yml"], 0)
        .stdout_has("rollback (command, runs on_failure) on localhost")
        .stdout_has("cleanup (command, runs always) on localhost");
    sb.run(&["run", "release.yml", "-e", "secs=0"], 0);
    sb.run(&["plan", "release.yml", "-e", "secs=0"], 0)
        .stdout_has("rollback (command, runs on_failure) on localhost (only if a step it needs fails)");
    sb.run(&["graph", "release.yml"], 0)
        .stdout_has("\"confirm\" -> \"rollback\" [style=dashed, label=\"on_failure\"];");
    sb.run(&["graph", "release.yml", "--format", "mermaid"], 0)
        .stdout_has("confirm -. on_failure .-> rollback");
}
