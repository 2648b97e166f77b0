//! The journal end to end: waiting for the lock (`--wait-lock`) so runs
//! queue instead of failing, the journal key, and journal upkeep
//! (`flowrun journal migrate|copy|prune|stats`).

use crate::harness::Sandbox;
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

#[test]
fn a_second_run_waits_in_line_for_the_lock_and_then_finds_the_work_done() {
    let sb = Sandbox::new();
    sb.write("wf.yml", SLOW);
    let first = sb.cmd(&["run", "wf.yml"]).cmd.stdout(Stdio::null()).spawn().unwrap();
    wait_for_file(&sb, "started");
    let r = sb.run(&["run", "wf.yml", "--wait-lock", "60s"], 0);
    r.stderr_has("waiting for the lock of `wf`");
    // It ran after the first one finished: everything came from the journal.
    assert!(r.recap("localhost").contains("ok=3 changed=0"), "{}", r.stdout);
    assert_eq!(sb.lines("side"), ["first", "slow", "last"], "nothing ran twice");
    let mut first = first;
    assert_eq!(first.wait().unwrap().code(), Some(0));
}

#[test]
fn a_wait_that_runs_out_exits_3_naming_the_holder() {
    let sb = Sandbox::new();
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
        .stdout_has("schema version 2, up to date");
    let s = sb.run(&["journal", "stats"], 0);
    s.stdout_has("schema version 2")
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
