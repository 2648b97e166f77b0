//! Rollback and cleanup steps (`runs: on_failure | always`): after a failure
//! on their host, after a signal, and first thing after a run that died
//! (its in-flight marks); and retry backoff, jitter and deadline against a
//! clock that moves only when the executor sleeps. The journal tests run
//! on both backends.

mod common;

use common::*;
use flowrun_engine::clock::Clock;
use flowrun_engine::exec::RunOptions;
use flowrun_engine::journal::RecordKey;
use flowrun_engine::report::{Outcome, RunReport, Status};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

on_both_journals!(
    a_rollback_runs_only_where_a_need_failed_and_sees_the_failure,
    a_signal_cancels_then_the_rollback_and_cleanup_run_and_the_marks_are_cleared,
    a_second_signal_stops_the_rollback_and_the_next_run_recovers_first,
    marks_of_a_dead_run_are_rolled_back_first_then_the_run_proceeds,
    a_failing_recovery_stops_that_host,
);

fn result<'a>(r: &'a RunReport, step: &str, host: &str) -> &'a flowrun_engine::report::InstanceResult {
    r.results
        .iter()
        .find(|x| x.step_id == step && x.host == host)
        .unwrap_or_else(|| panic!("no result of `{step}` on `{host}`: {:?}", r.results))
}

const TWO_HOSTS: &str =
    "all:\n  children:\n    g:\n      hosts:\n        a: { connection: local }\n        b: { connection: local }\n";

fn a_rollback_runs_only_where_a_need_failed_and_sees_the_failure(backend: Backend) {
    let env = Env::on(backend);
    std::fs::write(env.path("hosts.yml"), TWO_HOSTS).unwrap();
    let wf = env.write(
        "wf.yml",
        r#"
steps:
  - id: deploy
    hosts: g
    uses: log
    with: { file: LOG, text: "deploy {{inventory_hostname}}", fail: "{{eq inventory_hostname 'a'}}" }
  - id: confirm
    needs: [deploy]
    hosts: g
    uses: log
    with: { file: LOG, text: "confirm {{inventory_hostname}}" }
  - id: rollback
    needs: [confirm]
    runs: on_failure
    hosts: g
    uses: log
    with: { file: LOG, text: "rollback {{inventory_hostname}}: {{failure.step}} on {{failure.host}} ({{failure.message}}) interrupted={{failure.interrupted}}" }
  - id: after
    needs: [rollback]
    hosts: g
    uses: log
    with: { file: LOG, text: "after {{inventory_hostname}}" }
  - id: cleanup
    needs: [rollback]
    runs: always
    hosts: g
    uses: log
    with: { file: LOG, text: "cleanup {{inventory_hostname}} {{#if failure}}after a failure{{else}}after success{{/if}}" }
"#,
    );
    let r = env.run(&wf);
    assert_eq!(r.outcome, Outcome::Failed, "a handled failure still fails the run");
    let mut log = env.log();
    log.sort();
    assert_eq!(
        log,
        [
            "after a",
            "after b",
            "cleanup a after a failure",
            "cleanup b after success",
            "confirm b",
            "deploy b",
            "rollback a: deploy on a (failing on purpose: deploy a) interrupted=false",
        ]
    );
    assert_eq!(result(&r, "rollback", "a").status, Status::Changed);
    let skipped = result(&r, "rollback", "b");
    assert_eq!(skipped.status, Status::Skipped);
    assert_eq!(skipped.message.as_deref(), Some("no failure to handle"));
    assert_eq!(result(&r, "confirm", "a").status, Status::Skipped);

    // The rollback is never taken from the journal: a second failure rolls back again.
    let r = env.run(&wf);
    assert_eq!(result(&r, "rollback", "a").status, Status::Changed);
    assert!(!result(&r, "rollback", "a").from_journal);
    assert_eq!(env.log().iter().filter(|l| l.starts_with("rollback a")).count(), 2);
}

const SLOW: &str = r#"
steps:
  - id: slow
    uses: log
    with: { file: LOG, text: slow, sleep_ms: "{{default slow_ms 20000}}", started: STARTED }
  - id: rollback
    needs: [slow]
    runs: on_failure
    uses: log
    with: { file: LOG, text: "rollback {{failure.step}} interrupted={{failure.interrupted}} {{failure.message}} run={{failure.run_id}}", sleep_ms: "{{default rollback_ms 0}}", started: ROLLING }
  - id: cleanup
    needs: [slow]
    runs: always
    uses: log
    with: { file: LOG, text: "cleanup {{len failures}}" }
"#;

fn slow_workflow(env: &Env) -> std::path::PathBuf {
    let text = SLOW
        .replace("STARTED", env.path("started").to_str().unwrap())
        .replace("ROLLING", env.path("rolling").to_str().unwrap());
    env.write("wf.yml", &text)
}

fn vars(pairs: &[(&str, u64)]) -> RunOptions {
    let mut opts = RunOptions::default();
    for (k, v) in pairs {
        opts.extra_vars.insert((*k).into(), json!(v));
    }
    opts
}

fn marks(env: &Env, workflow: &str) -> Vec<flowrun_engine::journal::InFlight> {
    env.journal().in_flight(workflow, "-").unwrap()
}

fn a_signal_cancels_then_the_rollback_and_cleanup_run_and_the_marks_are_cleared(backend: Backend) {
    let env = Env::on(backend);
    let wf = slow_workflow(&env);
    let r = env
        .run_signalled(&wf, RunOptions::default(), &[env.path("started")])
        .unwrap();
    assert_eq!(r.outcome, Outcome::Interrupted(15));
    // The rollback and the cleanup run side by side.
    let mut log = env.log();
    log.sort();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0], "cleanup 1");
    assert!(
        log[1].starts_with("rollback slow interrupted=true cancelled by signal 15 run="),
        "{log:?}"
    );
    assert!(log[1].ends_with(&r.run_id), "{log:?}");
    assert!(
        marks(&env, "wf").is_empty(),
        "the rollback handled the cancelled instance"
    );
    // Nothing of the cancelled instance was journaled: the next run does it.
    let r = env.run_with(&wf, vars(&[("slow_ms", 0)])).unwrap();
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(result(&r, "slow", "localhost").status, Status::Changed);
    assert_eq!(result(&r, "rollback", "localhost").status, Status::Skipped);
    assert!(r.recovered.is_empty());
}

fn a_second_signal_stops_the_rollback_and_the_next_run_recovers_first(backend: Backend) {
    let env = Env::on(backend);
    let wf = slow_workflow(&env);
    let first = env
        .run_signalled(
            &wf,
            vars(&[("rollback_ms", 20000)]),
            &[env.path("started"), env.path("rolling")],
        )
        .unwrap();
    assert_eq!(first.outcome, Outcome::Interrupted(15));
    // The cleanup was quick; the rollback was stopped by the second signal.
    assert_eq!(env.log(), ["cleanup 1"]);
    std::fs::remove_file(env.path("log.txt")).unwrap();
    let left = marks(&env, "wf");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].key.step_id, "slow");
    assert_eq!(left[0].run_id, first.run_id);

    // The next run rolls back first, then runs `slow` again.
    let r = env.run_with(&wf, vars(&[("slow_ms", 0)])).unwrap();
    assert_eq!(r.outcome, Outcome::Success, "{:?}", r.results);
    let log = env.log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        log[0].starts_with("rollback slow interrupted=true left unfinished by run"),
        "{log:?}"
    );
    assert!(log[0].ends_with(&format!("run={}", first.run_id)), "{log:?}");
    assert_eq!(log[1], "slow");
    assert_eq!(log[2], "cleanup 0");
    assert_eq!(r.recovered.len(), 1);
    assert!(r.recovered[0].succeeded);
    assert_eq!(r.recovered[0].run_id, first.run_id);
    assert_eq!(r.recovered[0].by, ["rollback"]);
    let recovery = &r.results[0];
    assert_eq!(
        (recovery.step_id.as_str(), recovery.status),
        ("rollback", Status::Changed)
    );
    assert!(
        recovery.message.as_deref().unwrap().starts_with("recovery"),
        "{recovery:?}"
    );
    assert!(marks(&env, "wf").is_empty());
}

/// A mark as a controller killed during the apply leaves it.
fn leave_mark(env: &Env, workflow: &str, step: &str, run_id: &str) {
    let key = RecordKey {
        step_id: step.into(),
        item: String::new(),
        host: "localhost".into(),
    };
    env.journal().applying(workflow, "-", &key, run_id).unwrap();
}

fn marks_of_a_dead_run_are_rolled_back_first_then_the_run_proceeds(backend: Backend) {
    let env = Env::on(backend);
    let wf = slow_workflow(&env);
    leave_mark(&env, "wf", "slow", "20261202T000000Z-dead01");
    // A mark of another inventory is not this run's business.
    env.journal()
        .applying(
            "wf",
            "other/inventory",
            &RecordKey {
                step_id: "slow".into(),
                item: String::new(),
                host: "localhost".into(),
            },
            "x",
        )
        .unwrap();
    let r = env.run_with(&wf, vars(&[("slow_ms", 0)])).unwrap();
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(
        env.log()[0],
        "rollback slow interrupted=true left unfinished by run `20261202T000000Z-dead01`, which did not finish (its controller died or was killed) run=20261202T000000Z-dead01"
    );
    assert_eq!(&env.log()[1..], ["slow", "cleanup 0"]);
    assert!(marks(&env, "wf").is_empty());
    assert_eq!(env.journal().in_flight("wf", "other/inventory").unwrap().len(), 1);
}

fn a_failing_recovery_stops_that_host(backend: Backend) {
    let env = Env::on(backend);
    let wf = env.write(
        "wf.yml",
        r#"
steps:
  - id: switch
    uses: log
    with: { file: LOG, text: switch }
  - id: rollback
    needs: [switch]
    runs: on_failure
    uses: log
    with: { file: LOG, text: rollback, fail: true }
"#,
    );
    leave_mark(&env, "wf", "switch", "dead");
    let r = env.run(&wf);
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(env.log().is_empty(), "{:?}", env.log());
    let switch = result(&r, "switch", "localhost");
    assert_eq!(switch.status, Status::Skipped);
    assert!(
        switch.message.as_deref().unwrap().contains("the rollback of `switch`"),
        "{switch:?}"
    );
    assert!(!r.recovered[0].succeeded);
    assert_eq!(marks(&env, "wf").len(), 1, "kept for the next run");
}

/// A clock that moves only when the executor sleeps, and remembers how long.
#[derive(Debug)]
struct VirtualClock {
    start: Instant,
    now: Mutex<Duration>,
    sleeps: Mutex<Vec<Duration>>,
}

impl VirtualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            now: Mutex::new(Duration::ZERO),
            sleeps: Mutex::new(Vec::new()),
        })
    }
    fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Clock for VirtualClock {
    fn now(&self) -> Instant {
        self.start + *self.now.lock().unwrap()
    }
    async fn sleep(&self, d: Duration) {
        *self.now.lock().unwrap() += d;
        self.sleeps.lock().unwrap().push(d);
        tokio::task::yield_now().await;
    }
}

fn retry_run(retry: &str) -> (RunReport, Arc<VirtualClock>, usize) {
    let env = Env::new();
    let wf = env.write(
        "wf.yml",
        &format!(
            "steps:\n  - id: try\n    uses: log\n    with: {{ file: LOG, text: try }}\n    retry: {{ {retry}, until: \"{{{{eq outputs.text 'never'}}}}\" }}\n"
        ),
    );
    let clock = VirtualClock::new();
    let opts = RunOptions {
        clock: clock.clone(),
        ..RunOptions::default()
    };
    let r = env.run_with(&wf, opts).unwrap();
    let attempts = env.log().len();
    (r, clock, attempts)
}

fn secs(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|s| Duration::from_secs(*s)).collect()
}

#[test]
fn retry_waits_grow_exponentially_up_to_max_delay() {
    let (r, clock, attempts) = retry_run("attempts: 7, delay: 1s, backoff: 2, max_delay: 5s");
    assert_eq!(attempts, 7);
    assert_eq!(clock.sleeps(), secs(&[1, 2, 4, 5, 5, 5]));
    let m = r.results[0].message.as_deref().unwrap();
    assert!(m.contains("still false after 7 attempt(s)"), "{m}");
    // Without max_delay the cap is 5 minutes.
    let (_, clock, _) = retry_run("attempts: 4, delay: 100s, backoff: 3");
    assert_eq!(clock.sleeps(), secs(&[100, 300, 300]));
}

#[test]
fn retry_jitter_shortens_each_wait_by_up_to_its_fraction() {
    let (_, clock, attempts) = retry_run("attempts: 9, delay: 8s, jitter: 0.5");
    assert_eq!(attempts, 9);
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 8);
    assert!(
        sleeps
            .iter()
            .all(|d| *d >= Duration::from_secs(4) && *d <= Duration::from_secs(8)),
        "{sleeps:?}"
    );
    assert!(sleeps.iter().any(|d| *d != sleeps[0]), "jittered: {sleeps:?}");
    let (_, clock, _) = retry_run("attempts: 3, delay: 8s, jitter: true");
    assert!(clock.sleeps().iter().all(|d| *d >= Duration::from_secs(4)));
}

#[test]
fn retry_deadline_bounds_all_attempts_together() {
    // Waits of 4 s: attempts at 0, 4 and 8 s; the next would start past 10 s.
    let (r, clock, attempts) = retry_run("attempts: 10, delay: 4s, deadline: 10s");
    assert_eq!(attempts, 3);
    assert_eq!(clock.sleeps(), secs(&[4, 4]));
    let m = r.results[0].message.as_deref().unwrap();
    assert!(m.contains("retry deadline of 10s reached after 3 attempt(s)"), "{m}");
}

#[test]
fn retry_deadline_cuts_an_attempt_short() {
    let env = Env::new();
    let wf = env.write(
        "wf.yml",
        "steps:\n  - id: hang\n    uses: log\n    with: { file: LOG, text: hang, sleep_ms: 60000 }\n    timeout: 1h\n    retry: { attempts: 3, deadline: 300ms }\n",
    );
    let started = Instant::now();
    let r = env.run(&wf);
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the deadline ended the attempt"
    );
    let m = r.results[0].message.as_deref().unwrap();
    assert!(m.contains("retry deadline reached"), "{m}");
    assert!(env.log().is_empty());
}
