//! The executor against a test step kind whose every apply appends a line to
//! a log file, so tests can prove what ran and what the journal skipped.
//! The tests that involve the journal run on both backends (`sqlite::…` and
//! `postgres::…`, the latter against a real PostgreSQL server).

mod common;

use common::*;
use flowrun_engine::exec::{RunError, RunOptions};
use flowrun_engine::report::{Outcome, Status};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

on_both_journals!(
    runs_dag_then_rerun_skips_everything_and_restores_outputs,
    changed_parameter_reruns_that_step_and_its_dependents_only,
    failure_stops_dependents_and_the_next_run_resumes,
    check_mode_writes_nothing_and_reports_would_change,
    force_ignores_the_journal_and_verify_rechecks,
    a_second_run_is_refused_while_the_first_holds_the_lock,
    a_second_run_waits_for_the_lock_then_runs,
);

const DIAMOND: &str = r#"
name: diamond
vars: { greeting: hello }
steps:
  - id: a
    uses: log
    with: { file: LOG, text: "a {{greeting}}" }
  - id: b
    needs: [a]
    uses: log
    with: { file: LOG, text: "b after {{steps.a.outputs.text}}" }
  - id: c
    needs: [a]
    uses: log
    with: { file: LOG, text: "c {{item}}" }
    for_each: [x, y]
  - id: d
    needs: [b, c]
    uses: log
    with: { file: LOG, text: "d {{steps.b.outputs.len}} {{json steps.c.results.0.item}}" }
    notify: [h]
  - id: e
    uses: log
    with: { file: LOG, text: e }
    when: "{{eq greeting 'nope'}}"
handlers:
  - id: h
    uses: log
    with: { file: LOG, text: handler }
"#;

fn runs_dag_then_rerun_skips_everything_and_restores_outputs(backend: Backend) {
    let env = Env::on(backend);
    let wf = env.write("wf.yml", DIAMOND);
    let r = env.run(&wf);
    assert_eq!(r.outcome, Outcome::Success, "{:?}", r.results);
    let log = env.log();
    assert_eq!(log[0], "a hello");
    assert!(log.contains(&"b after a hello".to_owned()));
    assert!(log.contains(&"d 15 \"x\"".to_owned()), "{log:?}");
    assert_eq!(log.last().unwrap(), "handler");
    assert_eq!(log.len(), 6);
    assert_eq!(count(&r, Status::Changed), 6);
    assert_eq!(count(&r, Status::Skipped), 1);

    let r2 = env.run(&wf);
    assert_eq!(r2.outcome, Outcome::Success);
    assert_eq!(env.log().len(), 6, "nothing ran again");
    assert_eq!(count(&r2, Status::Changed), 0);
    assert!(r2
        .results
        .iter()
        .filter(|x| x.status == Status::Ok)
        .all(|x| x.from_journal));
    assert_eq!(count(&r2, Status::Ok), 5);
}

fn changed_parameter_reruns_that_step_and_its_dependents_only(backend: Backend) {
    let env = Env::on(backend);
    let wf = env.write("wf.yml", DIAMOND);
    env.run(&wf);
    let before = env.log().len();
    let mut opts = RunOptions::default();
    opts.extra_vars.insert("greeting".into(), json!("hi"));
    let r = env.run_with(&wf, opts).unwrap();
    let ran: Vec<String> = env.log()[before..].to_vec();
    // a changed → b, c (both items), d re-run; the handler runs once more.
    assert_eq!(ran.len(), 6, "{ran:?}");
    assert!(ran.contains(&"a hi".to_owned()));
    assert_eq!(count(&r, Status::Changed), 6);
}

fn failure_stops_dependents_and_the_next_run_resumes(backend: Backend) {
    let env = Env::on(backend);
    let text = r#"
steps:
  - id: one
    uses: log
    with: { file: LOG, text: one }
  - id: two
    needs: [one]
    uses: log
    with: { file: LOG, text: two, fail: "{{default fail_two false}}" }
  - id: three
    needs: [two]
    uses: log
    with: { file: LOG, text: three }
  - id: other
    uses: log
    with: { file: LOG, text: other }
"#;
    let wf = env.write("wf.yml", text);
    let mut opts = RunOptions::default();
    opts.extra_vars.insert("fail_two".into(), json!(true));
    let r = env.run_with(&wf, opts).unwrap();
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(count(&r, Status::Failed), 1);
    let three = r.results.iter().find(|x| x.step_id == "three").unwrap();
    assert_eq!(three.status, Status::Skipped);
    assert!(three.message.as_deref().unwrap().contains("`two` did not succeed"));
    let mut log = env.log();
    log.sort();
    assert_eq!(log, ["one", "other"], "{:?}", r.results);
    let r2 = env.run(&wf);
    assert_eq!(r2.outcome, Outcome::Success);
    let log = env.log();
    assert_eq!(log.len(), 4, "one and other were not run again: {log:?}");
    assert_eq!(&log[2..], ["two", "three"]);
}

fn check_mode_writes_nothing_and_reports_would_change(backend: Backend) {
    let env = Env::on(backend);
    let wf = env.write("wf.yml", DIAMOND);
    let r = env.run_with(
        &wf,
        RunOptions {
            check: true,
            ..RunOptions::default()
        },
    );
    let r = r.unwrap();
    assert!(env.log().is_empty());
    assert_eq!(
        r.results.iter().find(|x| x.step_id == "a").unwrap().status,
        Status::Changed
    );
    // and the journal learnt nothing: a real run changes everything.
    let r2 = env.run(&wf);
    assert_eq!(count(&r2, Status::Changed), 6);
}

fn force_ignores_the_journal_and_verify_rechecks(backend: Backend) {
    let env = Env::on(backend);
    let wf = env.write("wf.yml", DIAMOND);
    env.run(&wf);
    env.run_with(
        &wf,
        RunOptions {
            force: true,
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(env.log().len(), 12);
    // `log` always reports drift, so --verify re-applies.
    let r = env
        .run_with(
            &wf,
            RunOptions {
                verify: true,
                ..RunOptions::default()
            },
        )
        .unwrap();
    assert!(r.results.iter().all(|x| !x.from_journal));
}

fn a_second_run_is_refused_while_the_first_holds_the_lock(backend: Backend) {
    let env = Env::on(backend);
    let wf = env.write(
        "wf.yml",
        "steps:\n  - id: slow\n    uses: log\n    with: { file: LOG, text: slow, sleep_ms: 1500 }\n",
    );
    let wf2 = wf.clone();
    // Two runs of the same workflow against one journal from two threads.
    let env = Arc::new(env);
    let e1 = env.clone();
    let t = std::thread::spawn(move || e1.run(&wf2));
    std::thread::sleep(std::time::Duration::from_millis(400));
    let second = env.run_with(&wf, RunOptions::default());
    assert!(matches!(second, Err(RunError::Locked(_))), "second run must be refused");
    assert_eq!(t.join().unwrap().outcome, Outcome::Success);
}

fn a_second_run_waits_for_the_lock_then_runs(backend: Backend) {
    let env = Arc::new(Env::on(backend));
    let wf = env.write(
        "wf.yml",
        "steps:\n  - id: slow\n    uses: log\n    with: { file: LOG, text: \"slow {{n}}\", sleep_ms: 800 }\n",
    );
    let with_n = |n: u32, wait: Option<std::time::Duration>| {
        let mut opts = RunOptions {
            wait_lock: wait,
            ..RunOptions::default()
        };
        opts.extra_vars.insert("n".into(), json!(n));
        opts
    };
    let (e1, wf1) = (env.clone(), wf.clone());
    let t = std::thread::spawn(move || e1.run_with(&wf1, with_n(1, None)).unwrap());
    // The first run takes the lock, then writes its line 800 ms later.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = env
        .run_with(&wf, with_n(2, Some(std::time::Duration::from_secs(60))))
        .unwrap();
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(t.join().unwrap().outcome, Outcome::Success);
    assert_eq!(
        env.log(),
        ["slow 1", "slow 2"],
        "the second ran after the first, not beside it"
    );
}

#[test]
fn retry_until_and_timeout() {
    let env = Env::new();
    let text = r#"
steps:
  - id: slow
    uses: log
    with: { file: LOG, text: slow, sleep_ms: 2000 }
    timeout: 200ms
  - id: until
    uses: log
    with: { file: LOG, text: try }
    retry: { attempts: 3, delay: 10ms, backoff: 2, until: "{{eq outputs.text 'never'}}" }
"#;
    let wf = env.write("wf.yml", text);
    let r = env.run(&wf);
    let slow = r.results.iter().find(|x| x.step_id == "slow").unwrap();
    assert_eq!(slow.status, Status::Failed);
    assert!(slow.message.as_deref().unwrap().contains("timed out"), "{slow:?}");
    let until = r.results.iter().find(|x| x.step_id == "until").unwrap();
    assert_eq!(until.status, Status::Failed);
    assert_eq!(env.log().iter().filter(|l| *l == "try").count(), 3);
}

mod secrets_stay_out_of_argv {
    use flowrun_engine::host::{Host, HostTable};
    use flowrun_engine::secrets::Masker;
    use flowrun_engine::step::{Mode, StepContext};
    use flowrun_engine::transport::local::LocalTransport;
    use flowrun_engine::transport::ExecRequest;
    use serde_json::Map;
    use std::sync::Arc;

    fn cx(masker: Arc<Masker>) -> StepContext {
        StepContext {
            host: Arc::new(Host::localhost(Map::new())),
            transport: Arc::new(LocalTransport),
            become_: None,
            mode: Mode::default(),
            timeout: None,
            masker,
            hosts: Arc::new(HostTable::default()),
            previous: None,
        }
    }

    #[tokio::test]
    async fn a_secret_in_a_script_goes_through_stdin_or_a_private_file() {
        let masker = Arc::new(Masker::default());
        masker.add("s3cr3t-value");
        let cx = cx(masker);
        // The script prints its own argv: the secret must not be in it, yet it runs.
        let out = cx
            .exec(ExecRequest::shell(
                "echo \"$0 $*\" | grep -c s3cr3t-value; echo s3cr3t-value",
            ))
            .await
            .unwrap();
        assert_eq!(out.stdout_str(), "0\ns3cr3t-value\n");
        let out = cx
            .exec(ExecRequest::shell("cat; echo; echo s3cr3t-value").stdin("data"))
            .await
            .unwrap();
        assert_eq!(out.stdout_str(), "data\ns3cr3t-value\n");
        let mut r = ExecRequest::argv(["sh", "-c", "echo $TOKEN"]);
        r.env.push(("TOKEN".into(), "s3cr3t-value".into()));
        assert_eq!(cx.exec(r).await.unwrap().stdout_str(), "s3cr3t-value\n");
    }
}

#[test]
fn fail_fast_stops_the_run_and_max_fail_percentage_stops_past_the_threshold() {
    let env = Env::new();
    let hosts = "all:\n  children:\n    g:\n      hosts:\n        a: { connection: local }\n        b: { connection: local }\n        c: { connection: local }\n        d: { connection: local }\n";
    std::fs::write(env.path("hosts.yml"), hosts).unwrap();
    let body = |head: &str| {
        format!(
            "{head}steps:\n  - id: first\n    hosts: g\n    uses: log\n    with: {{ file: LOG, text: \"first {{{{inventory_hostname}}}}\", fail: \"{{{{eq inventory_hostname 'a'}}}}\" }}\n  - id: second\n    needs: [first]\n    hosts: g\n    uses: log\n    with: {{ file: LOG, text: \"second {{{{inventory_hostname}}}}\", sleep_ms: 50 }}\n"
        )
    };
    let run = |wf: &Path| {
        env.run_with(
            wf,
            RunOptions {
                forks: 1,
                ..RunOptions::default()
            },
        )
        .unwrap()
    };
    // Without either, a failure on `a` stops only `a`'s dependents.
    let r = run(&env.write("plain.yml", &body("")));
    assert_eq!(count(&r, Status::Failed), 1);
    assert_eq!(env.log().iter().filter(|l| l.starts_with("second")).count(), 3);
    // fail_fast: nothing new starts after the first failure.
    clear_log(&env);
    let r = run(&env.write("ff.yml", &body("fail_fast: true\n")));
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(env.log().iter().all(|l| !l.starts_with("second")), "{:?}", env.log());
    assert!(r.results.iter().any(|x| x
        .message
        .as_deref()
        .is_some_and(|m| m.contains("stopping after a failure"))));
    // 1 failed host of 4 is 25%: a 20% threshold stops the run, a 50% one does not.
    clear_log(&env);
    run(&env.write("p20.yml", &body("max_fail_percentage: 20\n")));
    assert!(env.log().iter().all(|l| !l.starts_with("second")), "{:?}", env.log());
    clear_log(&env);
    run(&env.write("p50.yml", &body("max_fail_percentage: 50\n")));
    assert_eq!(env.log().iter().filter(|l| l.starts_with("second")).count(), 3);
}

/// Start a fresh log (a run that stopped at once may have written none).
fn clear_log(env: &Env) {
    let _ = std::fs::remove_file(env.path("log.txt"));
}
