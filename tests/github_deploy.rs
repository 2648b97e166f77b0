//! deploy-with-failover end to end in the GitHub lab: the gate, the deploy
//! on the chosen runner host, health checks, rollback, serialised deploys
//! (one controller and two on a shared PostgreSQL journal), and SIGKILL of
//! the controller at random moments. Every case asserts real state: the
//! `current` symlink on the hosts and the completeness of the release it
//! names, the demo service's answer, the emulator's runner list, node
//! exporter's metrics, the deploy log on the host (the host's clock), and
//! the journal.

use crate::github_runners::{flowrun, provision, start_lab, wait_until, wf, LAB_LOCK};
use flowrun_lab::lab::github::GithubLab;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const APP_DIR: &str = "/srv/demo-app";
const PRIMARY: &str = "lab-gh-primary";
const SECONDARY: &str = "lab-gh-secondary";

/// A test's GitHub lab, provisioned, with release 1.0.0 deployed (on the
/// primary). Dropped in this order: the lab, its directory, then the lock.
struct DeployLab {
    lab: GithubLab,
    dir: tempfile::TempDir,
    /// The first deploy's output (it exited 0).
    first_deploy: String,
    _one: std::sync::MutexGuard<'static, ()>,
}

/// The setup of every lab test here: one lab at a time in this process
/// ([`LAB_LOCK`]), in a fresh directory, with the demo app's releases
/// `versions` built besides the lab's own (1.0.0, 2.0.0 and the failing
/// 3.0.0), both runners provisioned, and 1.0.0 deployed. `None` (the test
/// is skipped) unless root: the lab needs mount namespaces and overlays.
fn deploy_lab(versions: &[&str]) -> Option<DeployLab> {
    if !crate::harness::is_root() {
        eprintln!("skipped: the lab needs root (mount namespaces and overlays)");
        return None;
    }
    let one = LAB_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let lab = start_lab(dir.path());
    for v in versions {
        lab.build_app_release(v, false).unwrap();
    }
    provision(&lab);
    let (code, out) = deploy(&lab, "1.0.0", &[]);
    assert_eq!(code, 0, "{out}");
    Some(DeployLab {
        lab,
        dir,
        first_deploy: out,
        _one: one,
    })
}

/// `flowrun run deploy-with-failover -e version=V ARGS...`: exit code and output.
fn deploy(lab: &GithubLab, version: &str, args: &[&str]) -> (i32, String) {
    let w = wf("deploy-with-failover");
    let v = format!("version={version}");
    let mut all = vec!["run", w.as_str(), "-e", v.as_str()];
    all.extend_from_slice(args);
    let t0 = Instant::now();
    let r = flowrun(lab, &all);
    eprintln!("deploy {version} {args:?}: exit {} in {:.2?}", r.0, t0.elapsed());
    r
}

/// The same, in the background (output to files in `dir`).
fn spawn_deploy(lab: &GithubLab, version: &str, args: &[&str], dir: &Path, tag: &str) -> Child {
    let w = wf("deploy-with-failover");
    let v = format!("version={version}");
    let mut all = vec!["run", w.as_str(), "-e", v.as_str()];
    all.extend_from_slice(args);
    lab.flowrun(Path::new(env!("CARGO_BIN_EXE_flowrun")), &all)
        .stdout(std::fs::File::create(dir.join(format!("{tag}.out"))).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{tag}.err"))).unwrap())
        .spawn()
        .unwrap()
}

fn output_of(dir: &Path, tag: &str) -> String {
    let read = |ext: &str| std::fs::read_to_string(dir.join(format!("{tag}.{ext}"))).unwrap_or_default();
    format!("{}\n--- stderr\n{}", read("out"), read("err"))
}

/// Wait for a child with a bound; kill it if it overruns.
fn wait_child(child: &mut Child, limit: Duration) -> i32 {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a deploy ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {}", child.id());
}

/// Where `current` points on a runner host (`releases/V`), if anywhere.
fn current(lab: &GithubLab, runner: &str) -> Option<String> {
    lab.run_on(runner, &format!("readlink {APP_DIR}/current || true"))
        .unwrap()
        .lines()
        .next()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
}

/// Whether the release directory `rel` (under APP_DIR) holds every file of its MANIFEST.
fn complete(lab: &GithubLab, runner: &str, rel: &str) -> bool {
    lab.run_on(
        runner,
        &format!("cd {APP_DIR}/{rel} && sha256sum --quiet -c MANIFEST >/dev/null 2>&1 && echo yes || echo no"),
    )
    .unwrap()
    .trim()
        == "yes"
}

/// The demo service's `/version` on a runner host, if it answers.
fn served(lab: &GithubLab, runner: &str) -> Option<Value> {
    match lab.app_get(runner, "/version") {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// The host serves exactly one complete release, `version`: `current` names
/// it, its files match its MANIFEST, nothing is pending, and the service
/// answers from that very directory, complete.
fn assert_serves(lab: &GithubLab, runner: &str, version: &str) {
    let rel = format!("releases/{version}");
    assert_eq!(
        current(lab, runner).as_deref(),
        Some(rel.as_str()),
        "`current` on {runner}"
    );
    assert!(complete(lab, runner, &rel), "{rel} on {runner} is incomplete");
    assert_eq!(
        lab.run_on(runner, &format!("test -e {APP_DIR}/.pending && echo pending || true"))
            .unwrap()
            .trim(),
        "",
        "a switch is still pending on {runner}"
    );
    // A service that was just restarted (by a rollback) may take a moment to listen.
    let t0 = Instant::now();
    let v = loop {
        match served(lab, runner) {
            Some(v) => break v,
            None if t0.elapsed() < Duration::from_secs(10) => std::thread::sleep(Duration::from_millis(100)),
            None => panic!("the service on {runner} does not answer"),
        }
    };
    assert_eq!(v["version"], version, "{runner} serves {v}");
    assert_eq!(v["complete"], true, "{runner} serves an incomplete release: {v}");
    assert_eq!(v["release"], format!("{APP_DIR}/{rel}"), "{v}");
}

/// Where the host's `sync` records its arguments.
const SYNC_LOG: &str = "/var/log/flowrun-test-sync.log";

/// From now on, `sync` on a runner host (first in root's PATH) records what
/// it is asked to flush, one argument per line, and then flushes it.
fn record_syncs(lab: &GithubLab, runner: &str) {
    let real = lab.run_on(runner, "command -v sync").unwrap();
    lab.run_on(
        runner,
        &format!(
            "printf '%s\\n' '#!/bin/sh' 'printf \"%s\\n\" \"$@\" >>{SYNC_LOG}' 'exec {} \"$@\"' >/usr/local/bin/sync \
             && chmod 0755 /usr/local/bin/sync && : >{SYNC_LOG}",
            real.trim()
        ),
    )
    .unwrap();
}

/// The deploy of `version` made it durable in order (see [`record_syncs`]):
/// every file of the release was flushed under its temporary name, then
/// `releases/` after the rename that named it; `.pending` was flushed
/// before it was renamed into place; `current`'s directory after it moved.
fn assert_durable_switch(lab: &GithubLab, runner: &str, version: &str) {
    let log = lab.run_on(runner, &format!("cat {SYNC_LOG}")).unwrap();
    let synced: Vec<&str> = log.lines().collect();
    let files = lab
        .run_on(runner, &format!("cd {APP_DIR}/releases/{version} && find . -type f"))
        .unwrap();
    let named = synced
        .iter()
        .position(|l| *l == "releases")
        .unwrap_or_else(|| panic!("releases/ was never flushed: {synced:?}"));
    for f in files.lines() {
        let f = f.trim_start_matches("./");
        let at = synced.iter().position(|l| {
            l.strip_prefix(&format!("releases/.incoming-{version}."))
                .is_some_and(|rest| rest.ends_with(&format!("/tree/{f}")))
        });
        assert!(
            at.is_some_and(|at| at < named),
            "{f} of {version} was not flushed before the release was named: {synced:?}"
        );
    }
    let pending = synced
        .iter()
        .position(|l| l.starts_with(".pending.new."))
        .unwrap_or_else(|| panic!(".pending was never flushed: {synced:?}"));
    assert!(
        synced[pending..].iter().filter(|l| **l == ".").count() >= 2,
        "the renames of `.pending` and `current` were not flushed: {synced:?}"
    );
}

/// The host's deploy log: (host time, what) per line.
fn deploy_log(lab: &GithubLab, runner: &str) -> Vec<(f64, String)> {
    lab.run_on(runner, &format!("cat {APP_DIR}/deploys.log 2>/dev/null || true"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (t, what) = l.split_once(' ')?;
            Some((t.parse().ok()?, what.to_owned()))
        })
        .collect()
}

/// Each deploy's [begin, end] on the host, with its version and result, in log order.
fn deploy_intervals(log: &[(f64, String)]) -> Vec<(String, f64, f64, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, f64)> = None;
    for (t, what) in log {
        let words: Vec<&str> = what.split_whitespace().collect();
        match words.as_slice() {
            ["begin", v] => {
                assert!(open.is_none(), "a deploy began inside another: {log:?}");
                open = Some(((*v).to_owned(), *t));
            }
            ["end", v, result] => {
                let (began, t0) = open.take().unwrap_or_else(|| panic!("an end without a begin: {log:?}"));
                assert_eq!(began, *v, "{log:?}");
                out.push((began, t0, *t, (*result).to_owned()));
            }
            _ => {}
        }
    }
    out
}

/// `flowrun history --workflow deploy-with-failover` on the lab's journal.
fn history(lab: &GithubLab) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flowrun"))
        .args(["history", "--workflow", "deploy-with-failover"])
        .envs(lab.env())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn metric<'a>(text: &'a str, name_and_labels: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
}

fn nothing_deployed(lab: &GithubLab, runner: &str) {
    let on = lab
        .run_on(runner, &format!("test -e {APP_DIR} && echo yes || echo no"))
        .unwrap();
    assert_eq!(on.trim(), "no", "{runner} was touched");
    assert!(served(lab, runner).is_none(), "a service answers on {runner}");
}

fn stop_runner_service(lab: &GithubLab, role: &str) {
    let name = lab.runner(role).name.clone();
    lab.run_on(role, &format!("service actions.runner.flowrun-lab-app.{name} stop"))
        .unwrap();
    wait_until(&format!("{name} is offline in GitHub"), Duration::from_secs(20), || {
        lab.github.runner_by_name(&name).unwrap().status == "offline"
    });
}

fn start_runner_service(lab: &GithubLab, role: &str) {
    let name = lab.runner(role).name.clone();
    lab.run_on(role, &format!("service actions.runner.flowrun-lab-app.{name} start"))
        .unwrap();
    wait_until(&format!("{name} is online in GitHub"), Duration::from_secs(20), || {
        lab.github.runner_by_name(&name).unwrap().status == "online"
    });
}

/// Cases 1, 2 and 5 on one lab: a healthy primary takes the deploys and the
/// secondary stays untouched; the primary's runner stopped (offline in
/// GitHub): the gate says why and the deploy lands on the secondary; a
/// release whose health check fails is rolled back on the primary, the run
/// exits 1 saying so, the deploy metrics say 0 and the alert rules fire on
/// exactly those series.
#[test]
fn deploys_on_the_primary_fail_over_to_the_secondary_and_roll_back_a_failing_release() {
    let Some(t) = deploy_lab(&[]) else { return };
    let (lab, dir) = (&t.lab, &t.dir);

    // 1. Healthy primary: 1.0.0 then 2.0.0 land there; the secondary is untouched.
    let out = &t.first_deploy;
    assert!(out.contains("chose lab-gh-primary (primary)"), "{out}");
    assert_serves(lab, PRIMARY, "1.0.0");
    record_syncs(lab, PRIMARY);
    let t0 = Instant::now();
    let (code, out) = deploy(lab, "2.0.0", &[]);
    let two_took = t0.elapsed();
    assert_eq!(code, 0, "{out}");
    assert_serves(lab, PRIMARY, "2.0.0");
    assert_eq!(
        lab.run_on(PRIMARY, &format!("readlink {APP_DIR}/previous"))
            .unwrap()
            .trim(),
        "releases/1.0.0",
        "the previous release is kept"
    );
    assert_durable_switch(lab, PRIMARY, "2.0.0");
    nothing_deployed(lab, SECONDARY);
    for r in lab.github.runners() {
        assert_eq!(r.status, "online", "{r:?}");
    }
    let prom = lab.node_exporter_metrics(PRIMARY).unwrap();
    assert_eq!(
        metric(
            &prom,
            "github_deploy_last_success{role=\"primary\",runner=\"lab-gh-primary\",version=\"2.0.0\"}"
        ),
        Some("1"),
        "{prom}"
    );
    let intervals = deploy_intervals(&deploy_log(lab, PRIMARY));
    assert_eq!(
        intervals
            .iter()
            .map(|i| (i.0.as_str(), i.3.as_str()))
            .collect::<Vec<_>>(),
        [("1.0.0", "ok"), ("2.0.0", "ok")]
    );
    // Again: nothing changes on the host, and the journal knows this workflow's runs.
    let (code, out) = deploy(lab, "2.0.0", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        crate::github_runners::recap(&out, PRIMARY).contains("changed=0 failed=0"),
        "{out}"
    );
    assert_serves(lab, PRIMARY, "2.0.0");
    let history = history(lab);
    assert_eq!(
        history.lines().filter(|l| l.contains("success")).count(),
        3,
        "{history}"
    );
    eprintln!("a deploy that switches a release on the primary: {two_took:.2?}");

    // 2. The primary's runner service stops: GitHub lists it offline; the
    //    gate takes the secondary and says why; the deploy lands there.
    stop_runner_service(lab, "primary");
    let t0 = Instant::now();
    let (code, out) = deploy(lab, "2.0.0", &[]);
    let failover_took = t0.elapsed();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("chose lab-gh-secondary (secondary)")
            && out.contains("rejected lab-gh-primary (primary): offline in GitHub"),
        "{out}"
    );
    assert_serves(lab, SECONDARY, "2.0.0");
    assert_serves(lab, PRIMARY, "2.0.0");
    assert_eq!(
        deploy_intervals(&deploy_log(lab, PRIMARY)).len(),
        3,
        "the primary was not deployed to"
    );
    let prom = lab.node_exporter_metrics(SECONDARY).unwrap();
    for (m, want) in [("github_deploy_last_success", "1"), ("github_deploy_failover", "1")] {
        assert_eq!(
            metric(
                &prom,
                &format!("{m}{{role=\"secondary\",runner=\"lab-gh-secondary\",version=\"2.0.0\"}}")
            ),
            Some(want),
            "{prom}"
        );
    }
    eprintln!("a deploy with failover (first deploy on the secondary): {failover_took:.2?}");
    start_runner_service(lab, "primary");

    // 5. 3.0.0 fails its health check: rolled back to 2.0.0 on the primary, exit 1, metrics 0.
    let metrics_file = dir.path().join("flowrun-deploy.prom");
    let t0 = Instant::now();
    let (code, out) = deploy(lab, "3.0.0", &["--metrics", metrics_file.to_str().unwrap()]);
    let rollback_took = t0.elapsed();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("chose lab-gh-primary (primary)"), "{out}");
    assert!(out.contains("failed: [lab-gh-primary] health-check"), "{out}");
    assert!(
        out.contains("the deploy of 3.0.0 failed: `health-check` on lab-gh-primary failed"),
        "{out}"
    );
    assert!(
        out.contains("Rollback on lab-gh-primary: rolled back to 2.0.0 (from 3.0.0)"),
        "{out}"
    );
    assert_serves(lab, PRIMARY, "2.0.0");
    assert_serves(lab, SECONDARY, "2.0.0");
    let last = deploy_intervals(&deploy_log(lab, PRIMARY)).pop().unwrap();
    assert_eq!((last.0.as_str(), last.3.as_str()), ("3.0.0", "failed"));
    let flowrun_metrics = std::fs::read_to_string(&metrics_file).unwrap();
    assert_eq!(
        metric(
            &flowrun_metrics,
            "flowrun_last_run_success{workflow=\"deploy-with-failover\"}"
        ),
        Some("0"),
        "{flowrun_metrics}"
    );
    let primary_prom = lab.node_exporter_metrics(PRIMARY).unwrap();
    let labels = "{role=\"primary\",runner=\"lab-gh-primary\",version=\"3.0.0\"}";
    assert_eq!(
        metric(&primary_prom, &format!("github_deploy_last_success{labels}")),
        Some("0"),
        "{primary_prom}"
    );
    assert!(
        metric(
            &primary_prom,
            &format!("github_deploy_last_success_timestamp_seconds{labels}")
        )
        .is_some(),
        "the last success is kept: {primary_prom}"
    );
    eprintln!("a deploy whose health check fails, rolled back: {rollback_took:.2?}");

    // The shipped alert rules on exactly the series node_exporter serves.
    let secondary_prom = lab.node_exporter_metrics(SECONDARY).unwrap();
    alert_rules_fire_on(&[primary_prom, secondary_prom], dir.path());
}

/// `promtool test rules` on the shipped alert rules, with the deploy series
/// the hosts' node_exporters serve (as Prometheus would scrape them, with
/// `job` and `instance`): GitHubDeployFailed fires for 3.0.0 on the primary,
/// GitHubDeployFailover for the secondary's deploy.
fn alert_rules_fire_on(scrapes: &[String], dir: &Path) {
    let mut series = String::new();
    for text in scrapes {
        for line in text.lines().filter(|l| l.starts_with("github_deploy_")) {
            let (name_labels, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = name_labels.split_once('{').unwrap();
            let runner = labels.split("runner=\"").nth(1).unwrap().split('"').next().unwrap();
            let value: f64 = value.parse().unwrap();
            series.push_str(&format!(
                "      - series: '{name}{{job=\"node\",instance=\"{runner}\",{labels}'\n        values: '{value}x10'\n"
            ));
        }
    }
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/files/github-runner-alerts.yml");
    let test = format!(
        "rule_files: ['{}']\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{series}\
         \x20   alert_rule_test:\n\
         \x20     - eval_time: 5m\n\
         \x20       alertname: GitHubDeployFailed\n\
         \x20       exp_alerts:\n\
         \x20         - exp_labels: {{severity: critical, job: node, instance: lab-gh-primary, runner: lab-gh-primary, role: primary, version: \"3.0.0\"}}\n\
         \x20           exp_annotations:\n\
         \x20             summary: \"The deploy of 3.0.0 on lab-gh-primary failed\"\n\
         \x20             description: \"The last production deploy (3.0.0 on lab-gh-primary, primary) failed and was rolled back. The run's output says which check failed.\"\n\
         \x20     - eval_time: 5m\n\
         \x20       alertname: GitHubDeployFailover\n\
         \x20       exp_alerts:\n\
         \x20         - exp_labels: {{severity: warning, job: node, instance: lab-gh-secondary, runner: lab-gh-secondary, role: secondary, version: \"2.0.0\"}}\n\
         \x20           exp_annotations:\n\
         \x20             summary: \"A deploy failed over to lab-gh-secondary\"\n\
         \x20             description: \"Version 2.0.0 was deployed on the secondary runner lab-gh-secondary because the health gate rejected the primary. See why in the deploy's output, and fix the primary.\"\n",
        rules.display()
    );
    let file = dir.join("deploy-alerts.test.yml");
    std::fs::write(&file, &test).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs (Debian package prometheus)");
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}\n{test}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Case 3: deploys started together never overlap on the host (its own
/// clock in the deploy log): with `--wait-lock` the second queues and then
/// runs; without it a deploy exits 3 while one runs. Then the same across
/// two controllers (their own directories and inventory copies) on one
/// PostgreSQL journal.
#[test]
fn deploys_started_together_never_overlap_on_one_controller_or_two() {
    let Some(t) = deploy_lab(&["2.1.0"]) else { return };
    let (lab, dir) = (&t.lab, &t.dir);

    // One controller, its SQLite journal.
    let spawn = |v: &str, args: &[&str], tag: &str| spawn_deploy(lab, v, args, dir.path(), tag);
    let together = [("2.0.0", "a"), ("2.1.0", "b")];
    let runs: Vec<(String, Child)> = together
        .iter()
        .map(|(v, tag)| ((*v).to_owned(), spawn(v, &["--wait-lock", "2m"], tag)))
        .collect();
    let refused = hold_and_try(lab, &runs, || {
        let mut c = spawn("2.1.0", &[], "c");
        let code = wait_child(&mut c, Duration::from_secs(60));
        (code, output_of(dir.path(), "c"))
    });
    assert_eq!(refused.0, 3, "{}", refused.1);
    assert!(refused.1.contains("already running"), "{}", refused.1);
    for ((_, mut child), (_, tag)) in runs.into_iter().zip(together) {
        assert_eq!(
            wait_child(&mut child, Duration::from_secs(120)),
            0,
            "{}",
            output_of(dir.path(), tag)
        );
    }
    let done = no_overlap(lab, 3);
    assert_eq!(
        done.iter().map(|d| d.3.as_str()).collect::<Vec<_>>(),
        ["ok", "ok", "ok"]
    );
    let last = done[2].0.clone();
    assert_serves(lab, PRIMARY, &last);

    // Two controllers: each its own directory with a copy of the inventory
    // at the same relative path (so they take the same lock), one journal.
    let pg = flowrun_lab::postgres::PgServer::shared();
    let url = pg.url(&flowrun_lab::postgres::PgServer::fresh_schema());
    let key = dir.path().join("journal.key");
    let controllers: Vec<std::path::PathBuf> = ["ctl-1", "ctl-2"]
        .iter()
        .map(|c| {
            let d = dir.path().join(c);
            copy_dir(lab.inventory().parent().unwrap(), &d.join("inventory"));
            d
        })
        .collect();
    let pg_deploy = |ctl: &Path, v: &str, args: &[&str], tag: &str| -> Child {
        let w = wf("deploy-with-failover");
        let ver = format!("version={v}");
        Command::new(env!("CARGO_BIN_EXE_flowrun"))
            .args(["run", w.as_str(), "-i", "inventory", "-e", ver.as_str()])
            .args(args)
            .current_dir(ctl)
            .envs(lab.env())
            .env("FLOWRUN_JOURNAL", &url)
            .env("PGPASSWORD", flowrun_lab::postgres::PASSWORD)
            .env("FLOWRUN_JOURNAL_KEY_FILE", &key)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join(format!("{tag}.out"))).unwrap())
            .stderr(std::fs::File::create(dir.path().join(format!("{tag}.err"))).unwrap())
            .spawn()
            .unwrap()
    };
    // The first run on the new journal creates its key; then both at once.
    let mut first = pg_deploy(&controllers[0], &last, &[], "pg0");
    assert_eq!(
        wait_child(&mut first, Duration::from_secs(120)),
        0,
        "{}",
        output_of(dir.path(), "pg0")
    );
    let next = if last == "2.0.0" {
        ["2.1.0", "2.0.0"]
    } else {
        ["2.0.0", "2.1.0"]
    };
    let runs: Vec<(String, Child)> = next
        .iter()
        .zip(&controllers)
        .enumerate()
        .map(|(i, (v, ctl))| {
            (
                (*v).to_owned(),
                pg_deploy(ctl, v, &["--wait-lock", "2m"], &format!("pg{}", i + 1)),
            )
        })
        .collect();
    let refused = hold_and_try(lab, &runs, || {
        let mut c = pg_deploy(&controllers[1], "2.0.0", &[], "pg3");
        let code = wait_child(&mut c, Duration::from_secs(60));
        (code, output_of(dir.path(), "pg3"))
    });
    assert_eq!(refused.0, 3, "{}", refused.1);
    assert!(refused.1.contains("already running"), "{}", refused.1);
    for (i, (_, mut child)) in runs.into_iter().enumerate() {
        assert_eq!(
            wait_child(&mut child, Duration::from_secs(120)),
            0,
            "{}",
            output_of(dir.path(), &format!("pg{}", i + 1))
        );
    }
    let done = no_overlap(lab, 6);
    assert!(done.iter().all(|d| d.3 == "ok"), "{done:?}");
    assert_serves(lab, PRIMARY, &done[5].0);
    nothing_deployed(lab, SECONDARY);
}

/// While one of `runs` holds the lock (its deploy began on the host and has
/// not ended), freeze it, so that the lock is surely held; run `attempt`;
/// let it go on. `attempt`'s result. Any moment inside either deploy will
/// do: the first may begin and end between two looks at the log, and the
/// second then holds the lock.
fn hold_and_try<T>(lab: &GithubLab, runs: &[(String, Child)], attempt: impl FnOnce() -> T) -> T {
    let is_begin = |w: &str| w.starts_with("begin ");
    let begins_before = deploy_log(lab, PRIMARY).iter().filter(|(_, w)| is_begin(w)).count();
    let mut holder = None;
    wait_until("one of the deploys begins on the host", Duration::from_secs(60), || {
        let log = deploy_log(lab, PRIMARY);
        let began = log.iter().filter(|(_, w)| is_begin(w)).count() > begins_before;
        // The last begin or end: a begin is a deploy under way.
        let last = log.iter().rev().find_map(|(_, w)| {
            w.strip_prefix("begin ")
                .map(|v| Some(v.to_owned()))
                .or_else(|| w.starts_with("end ").then_some(None))
        });
        match last {
            Some(Some(v)) if began => {
                holder = Some(v);
                true
            }
            _ => false,
        }
    });
    let holder = holder.unwrap();
    let (_, child) = runs
        .iter()
        .find(|(v, _)| *v == holder)
        .unwrap_or_else(|| panic!("no run deploys {holder}"));
    signal(child, "STOP");
    let result = attempt();
    signal(child, "CONT");
    result
}

/// The host's deploys, `n` of them, one after another: each began after
/// the one before it ended.
fn no_overlap(lab: &GithubLab, n: usize) -> Vec<(String, f64, f64, String)> {
    let done = deploy_intervals(&deploy_log(lab, PRIMARY));
    assert_eq!(done.len(), n, "{done:?}");
    for pair in done.windows(2) {
        assert!(pair[1].1 >= pair[0].2, "deploys overlapped: {pair:?}");
    }
    done
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(e.file_name()));
        } else {
            std::fs::copy(&path, to.join(e.file_name())).unwrap();
        }
    }
}

/// A small seeded generator (xorshift64*), so a failing trial can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Case 4: the controller is killed (SIGKILL) at random moments of a
/// deploy, 10 times. At every kill `current` names a complete release; the
/// next run rolls back what the dead one left in flight (when it left
/// something) and finishes, and then the service serves exactly the one
/// complete release `current` names. The journal records the dead runs as
/// abandoned and what the next runs recovered.
#[test]
fn sigkill_of_the_controller_at_random_moments_never_leaves_a_half_switched_release() {
    let Some(t) = deploy_lab(&["2.1.0"]) else { return };
    let (lab, dir) = (&t.lab, &t.dir);
    // How long the host's part of a switching deploy takes (its log's
    // begin to end): the kills fall within it, after the gate.
    let (code, out) = deploy(lab, "2.0.0", &[]);
    assert_eq!(code, 0, "{out}");
    let reference = deploy_intervals(&deploy_log(lab, PRIMARY)).pop().unwrap();
    let span = ((reference.2 - reference.1) * 1000.0) as u64;

    let seed = std::env::var("FLOWRUN_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_u64);
    eprintln!("kill trials: seed {seed:#x} (FLOWRUN_KILL_SEED replays), kills within {span} ms of the host's begin");
    let mut rng = Rng(seed);
    let mut recovered = 0;
    let mut serving = "2.0.0".to_owned();
    for trial in 0..10 {
        let version = if serving == "2.0.0" { "2.1.0" } else { "2.0.0" };
        let at = Duration::from_millis(rng.below(span));
        let logged = deploy_log(lab, PRIMARY).len();
        let mut child = spawn_deploy(lab, version, &[], dir.path(), &format!("kill{trial}"));
        let t0 = Instant::now();
        while !deploy_log(lab, PRIMARY)[logged..]
            .iter()
            .any(|(_, w)| w.starts_with("begin "))
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "trial {trial}: the deploy never began"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(at);
        signal(&child, "KILL");
        let _ = child.wait();
        let log = deploy_log(lab, PRIMARY);
        let last_event = log.last().map(|(_, w)| w.clone()).unwrap_or_default();
        // At the moment of the kill: `current` names a complete release.
        let now = current(lab, PRIMARY).expect("`current` exists");
        assert!(complete(lab, PRIMARY, &now), "trial {trial}: {now} incomplete");

        let (code, out) = deploy(lab, version, &[]);
        assert_eq!(code, 0, "trial {trial} (killed at {at:?}):\n{out}");
        let rolled_back = out.contains("recovery of what a run that died left unfinished");
        if rolled_back {
            recovered += 1;
            assert!(out.contains("changed: [lab-gh-primary] rollback"), "{out}");
        }
        assert_serves(lab, PRIMARY, version);
        eprintln!(
            "trial {trial}: killed {at:?} after the begin (last logged: {last_event}), `current` on {now}; the next run {}",
            if rolled_back {
                "rolled back first, then deployed"
            } else {
                "deployed"
            }
        );
        serving = version.to_owned();
    }
    nothing_deployed(lab, SECONDARY);
    let history = history(lab);
    let abandoned = history.lines().filter(|l| l.contains("abandoned")).count();
    assert!(
        (recovered..=10).contains(&abandoned),
        "the killed runs are abandoned in the journal ({recovered} recovered):\n{history}"
    );
    assert_eq!(history.matches("recovered=1").count(), recovered, "{history}");
    eprintln!("{recovered} of 10 kills left a step in flight that the next run rolled back");
}

/// The deploy workflows load and plan against both GitHub inventories.
#[test]
fn deploy_workflows_validate_against_both_github_inventories() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for inventory in ["inventory/github-example", "inventory/lab-github"] {
        for w in ["deploy-release", "deploy-with-failover"] {
            let out = Command::new(env!("CARGO_BIN_EXE_flowrun"))
                .current_dir(root)
                .args([
                    "validate",
                    &format!("workflows/{w}.yml"),
                    "-i",
                    inventory,
                    "-e",
                    "version=1.0.0",
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{w} against {inventory}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
