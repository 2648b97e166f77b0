//! The GitHub runner job end to end in the lab: the shipped workflows against
//! the GitHub emulator, two runner hosts (primary, secondary) that are real
//! sshd hosts with private overlays of `/`, the stand-in runner release and a
//! real demo service to deploy. Each test asserts real state: the emulator's
//! runner list and its requests, files and processes on the hosts, the
//! service's answers, the journal.

use flowrun_lab::lab::github::{GithubLab, GithubLabOptions};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One GitHub lab at a time in this process: each has two VMs and runners
/// polling, and the machine has two cores.
pub static LAB_LOCK: Mutex<()> = Mutex::new(());

pub fn start_lab(dir: &Path) -> GithubLab {
    GithubLab::start(&GithubLabOptions {
        dir: dir.join("lab"),
        project: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        offline_after: Duration::from_secs(3),
    })
    .expect("the GitHub lab starts")
}

pub fn wf(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("workflows")
        .join(format!("{name}.yml"))
        .display()
        .to_string()
}

/// Run flowrun in the lab: exit code and all output. No lab secret may show.
pub fn flowrun(lab: &GithubLab, args: &[&str]) -> (i32, String) {
    let out = lab
        .flowrun(Path::new(env!("CARGO_BIN_EXE_flowrun")), args)
        .output()
        .expect("flowrun runs");
    let text = format!(
        "{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secret(lab, &text, "the output");
    (out.status.code().unwrap_or(-1), text)
}

/// Neither the lab's token nor any runner token GitHub handed out is in `text`.
pub fn assert_no_secret(lab: &GithubLab, text: &str, what: &str) {
    assert!(!text.contains(&lab.token), "the GitHub token is in {what}:\n{text}");
    for t in lab.github.issued_runner_tokens() {
        assert!(!text.contains(&t), "a runner token is in {what}:\n{text}");
    }
}

pub fn recap<'a>(out: &'a str, host: &str) -> &'a str {
    out.lines()
        .find(|l| l.split(" : ").next().is_some_and(|h| h.trim() == host) && l.contains("ok="))
        .and_then(|l| l.split(" : ").nth(1))
        .unwrap_or_else(|| panic!("no recap for {host}:\n{out}"))
}

pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {limit:?} waiting until {what}");
}

/// Every process's command line on this machine (the lab's hosts share its
/// pid namespace tree, so theirs are here too).
fn cmdlines() -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
                out.push(String::from_utf8_lossy(&raw).replace('\0', " "));
            }
        }
    }
    out
}

/// Sample every command line on the machine until `stop` is set (bounded).
fn watch_argv(stop: Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<BTreeSet<String>> {
    std::thread::spawn(move || {
        let mut seen = BTreeSet::new();
        let t0 = Instant::now();
        while !stop.load(std::sync::atomic::Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(300) {
            seen.extend(cmdlines());
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    })
}

pub fn provision(lab: &GithubLab) -> String {
    let (code, out) = flowrun(lab, &["run", &wf("provision-github-runner")]);
    assert_eq!(code, 0, "{out}");
    out
}

/// Case 7: provision twice; the second run is `changed=0` and asks GitHub for
/// nothing; the registration token is never in output, journal or any argv.
#[test]
fn provision_registers_both_runners_once_and_never_exposes_the_token() {
    if !crate::harness::is_root() {
        eprintln!("skipped: the lab needs root (mount namespaces and overlays)");
        return;
    }
    let _one = LAB_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let lab = start_lab(dir.path());

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_argv(stop.clone());
    let out = provision(&lab);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let argvs = watcher.join().unwrap();
    for h in ["lab-gh-primary", "lab-gh-secondary"] {
        assert!(recap(&out, h).contains("failed=0"), "{out}");
    }

    // GitHub: both runners online with their labels; two registration tokens.
    let mut names: Vec<(String, String, Vec<String>)> = lab
        .github
        .runners()
        .into_iter()
        .map(|r| (r.name, r.status, r.labels))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            (
                "lab-gh-primary".into(),
                "online".into(),
                [
                    "self-hosted",
                    "Linux",
                    "X64",
                    "production",
                    "primary",
                    "lab-gh-primary",
                    "lab"
                ]
                .map(String::from)
                .to_vec()
            ),
            (
                "lab-gh-secondary".into(),
                "online".into(),
                [
                    "self-hosted",
                    "Linux",
                    "X64",
                    "production",
                    "secondary",
                    "lab-gh-secondary",
                    "lab"
                ]
                .map(String::from)
                .to_vec()
            ),
        ]
    );
    assert_eq!(lab.github.registration_tokens_issued(), 2);

    // The hosts: .runner names the runner, the service runs as the service user.
    let on_host = lab
        .run_on(
            "primary",
            "sed 's/^\\xef\\xbb\\xbf//' /opt/actions-runner/.runner; echo; cat /opt/actions-runner/.service; \
             ps -o user= -p \"$(cat /run/actions.runner.flowrun-lab-app.lab-gh-primary.pid)\"",
        )
        .unwrap();
    assert!(on_host.contains("\"agentName\": \"lab-gh-primary\""), "{on_host}");
    assert!(
        on_host.contains("actions.runner.flowrun-lab-app.lab-gh-primary.service"),
        "{on_host}"
    );
    assert!(on_host.trim_end().ends_with("actions-runner"), "{on_host}");

    // The token never in any process's argv (sampled while config.sh ran), nor in the journal.
    assert!(
        argvs.iter().any(|a| a.contains("Runner.Listener configure")),
        "the sampler never saw config.sh run"
    );
    for t in lab.github.issued_runner_tokens() {
        assert!(
            !argvs.iter().any(|a| a.contains(&t)),
            "a registration token was in an argv"
        );
    }
    let journal = String::from_utf8_lossy(&std::fs::read(lab.journal()).unwrap()).into_owned();
    assert_no_secret(&lab, &journal, "the journal");

    // Again: changed=0, everything from the journal, not one request to GitHub.
    lab.github.clear_requests();
    let out = provision(&lab);
    for h in ["lab-gh-primary", "lab-gh-secondary", "localhost"] {
        assert!(recap(&out, h).contains("changed=0 failed=0"), "{out}");
    }
    // The runners' own heartbeats go on meanwhile; flowrun sends nothing.
    let sent = lab.github.api_requests();
    assert!(sent.is_empty(), "{sent:?}");
    assert_eq!(lab.github.registration_tokens_issued(), 0);
}

pub use flowrun_lab::lab::github_story::junit_failures;

/// The gate and the validation: the primary while healthy; its service
/// stopped (offline in GitHub) or its host down: the secondary, saying why,
/// and validation failing on the primary's checks; nothing healthy: exit 1
/// with one reason per candidate.
#[test]
fn gate_prefers_the_primary_fails_over_and_validation_names_the_broken_runner() {
    if !crate::harness::is_root() {
        eprintln!("skipped: the lab needs root (mount namespaces and overlays)");
        return;
    }
    let _one = LAB_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let lab = start_lab(dir.path());
    provision(&lab);
    let (select, validate) = (wf("select-github-runner"), wf("validate-github-runner"));
    let junit = dir.path().join("validate.xml");
    let metrics = dir.path().join("github-runners.prom");
    let validate_args = [
        "run",
        validate.as_str(),
        "--junit",
        junit.to_str().unwrap(),
        "-e",
        &format!("github_metrics_file={}", metrics.display()),
    ];

    // Healthy: validation passes, the metrics say so, the gate takes the primary.
    let (code, out) = flowrun(&lab, &validate_args);
    assert_eq!(code, 0, "{out}");
    let report = std::fs::read_to_string(&junit).unwrap();
    assert!(junit_failures(&report).is_empty(), "{report}");
    for check in [
        "runner-online",
        "runner-labels",
        "runner-service-active",
        "node-exporter-metrics",
    ] {
        assert_eq!(
            report.matches(&format!("name=\"{check}")).count(),
            2,
            "{check}: {report}"
        );
    }
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("github_runner_online{runner=\"lab-gh-primary\",role=\"primary\"} 1"),
        "{prom}"
    );
    assert!(
        prom.contains("github_runner_healthy{runner=\"lab-gh-secondary\",role=\"secondary\"} 1"),
        "{prom}"
    );
    let gh_output = dir.path().join("github_output");
    std::fs::write(&gh_output, "").unwrap();
    let out = lab
        .flowrun(Path::new(env!("CARGO_BIN_EXE_flowrun")), &["run", &select])
        .env("GITHUB_OUTPUT", &gh_output)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("select-runner - chose lab-gh-primary (primary) (label `lab-gh-primary`)"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&gh_output).unwrap(),
        "runner=lab-gh-primary\nlabel=lab-gh-primary\nrole=primary\nfailover=false\n"
    );

    // The primary's runner service stops: GitHub shows it offline a few seconds later.
    lab.run_on("primary", "service actions.runner.flowrun-lab-app.lab-gh-primary stop")
        .unwrap();
    wait_until("the primary is offline in GitHub", Duration::from_secs(20), || {
        lab.github.runner_by_name("lab-gh-primary").unwrap().status == "offline"
    });
    let (code, out) = flowrun(&lab, &["run", &select]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("chose lab-gh-secondary (secondary) (label `lab-gh-secondary`)"),
        "{out}"
    );
    assert!(
        out.contains(
            "rejected lab-gh-primary (primary): offline in GitHub; runner service \
             `actions.runner.flowrun-lab-app.lab-gh-primary` is not active"
        ),
        "{out}"
    );
    let (code, out) = flowrun(&lab, &validate_args);
    assert_eq!(code, 1, "{out}");
    let report = std::fs::read_to_string(&junit).unwrap();
    let mut failed = junit_failures(&report);
    failed.sort();
    assert!(
        failed.iter().all(|f| f.contains("lab-gh-primary")) && failed.len() == 2,
        "{failed:?}\n{report}"
    );
    assert!(
        out.contains("GitHub reports runner `lab-gh-primary` (primary) as `offline`"),
        "{out}"
    );
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("github_runner_online{runner=\"lab-gh-primary\",role=\"primary\"} 0"),
        "{prom}"
    );
    assert!(
        prom.contains("github_runner_service_active{runner=\"lab-gh-primary\",role=\"primary\"} 0"),
        "{prom}"
    );

    // The primary's host is down altogether: a reason, not a failure of the gate.
    lab.power("primary", false).unwrap();
    let (code, out) = flowrun(&lab, &["run", &select]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("rejected lab-gh-primary (primary): offline in GitHub; not reachable over SSH"),
        "{out}"
    );

    // Nothing healthy: exit 1, one line per candidate.
    lab.run_on(
        "secondary",
        "service actions.runner.flowrun-lab-app.lab-gh-secondary stop",
    )
    .unwrap();
    wait_until("the secondary is offline in GitHub", Duration::from_secs(20), || {
        lab.github.runner_by_name("lab-gh-secondary").unwrap().status == "offline"
    });
    let (code, out) = flowrun(&lab, &["run", &select]);
    assert_eq!(code, 1, "{out}");
    let reasons: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.contains("no healthy runner for production:"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect();
    assert_eq!(reasons.len(), 2, "{out}");
    assert!(
        reasons[0]
            .trim_start()
            .starts_with("lab-gh-primary (primary): offline in GitHub; not reachable over SSH"),
        "{out}"
    );
    assert!(
        reasons[1]
            .trim_start()
            .starts_with("lab-gh-secondary (secondary): offline in GitHub; runner service"),
        "{out}"
    );
}
