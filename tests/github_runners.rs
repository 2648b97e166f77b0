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
                ["self-hosted", "Linux", "X64", "production", "primary", "lab-gh-primary", "lab"]
                    .map(String::from)
                    .to_vec()
            ),
            (
                "lab-gh-secondary".into(),
                "online".into(),
                ["self-hosted", "Linux", "X64", "production", "secondary", "lab-gh-secondary", "lab"]
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
    assert!(on_host.contains("actions.runner.flowrun-lab-app.lab-gh-primary.service"), "{on_host}");
    assert!(on_host.trim_end().ends_with("actions-runner"), "{on_host}");

    // The token never in any process's argv (sampled while config.sh ran), nor in the journal.
    assert!(
        argvs.iter().any(|a| a.contains("Runner.Listener configure")),
        "the sampler never saw config.sh run"
    );
    for t in lab.github.issued_runner_tokens() {
        assert!(!argvs.iter().any(|a| a.contains(&t)), "a registration token was in an argv");
    }
    let journal = String::from_utf8_lossy(&std::fs::read(lab.journal()).unwrap()).into_owned();
    assert_no_secret(&lab, &journal, "the journal");

    // Again: changed=0, everything from the journal, not one request to GitHub.
    lab.github.clear_requests();
    let out = provision(&lab);
    for h in ["lab-gh-primary", "lab-gh-secondary", "localhost"] {
        assert!(recap(&out, h).contains("changed=0 failed=0"), "{out}");
    }
    assert!(lab.github.requests().is_empty(), "{:?}", lab.github.requests());
    assert_eq!(lab.github.registration_tokens_issued(), 0);
}
