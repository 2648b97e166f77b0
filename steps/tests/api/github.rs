//! `github_runner` against the GitHub emulator.

use super::{build, context_with_hosts, drift, in_sync, logs};
use flowrun_lab::emulators::github::GitHubEmulator;
use flowrun_steps::github_runner::GithubRunnerKind;
use flowrun_steps::testing::converge;
use serde_json::{json, Value};

fn params(gh: &GitHubEmulator, token: &str, extra: Value) -> Value {
    let mut p = json!({"api_url": gh.url(), "token": token, "repo": "acme/app", "name": "runner-a"});
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

#[tokio::test]
async fn token_register_list_and_delete() {
    let gh = GitHubEmulator::start().await.unwrap();
    let token = gh.add_token(&["acme/app"]);
    let cx = context_with_hosts(&[]);

    let step = build(&GithubRunnerKind, params(&gh, &token, json!({"state": "token"})));
    assert_eq!(
        drift(&*step, &cx).await,
        "create a runner registration token for `acme/app`"
    );
    let out = converge(&*step, &cx).await.unwrap();
    let reg = out.outputs["registration_token"].as_str().unwrap().to_owned();
    assert!(out.outputs["expires_at"].as_str().unwrap().ends_with('Z'));
    // What config.sh does with it on the runner's machine.
    let id = gh.register_runner(&reg, "runner-a", &["proxmox"]).unwrap();

    let present = build(&GithubRunnerKind, params(&gh, &token, json!({})));
    let o = in_sync(&*present, &cx).await;
    assert_eq!(o["online"], json!(true));
    assert_eq!(o["runner"]["id"], json!(id));
    assert_eq!(o["runner"]["labels"], json!(["self-hosted", "Linux", "X64", "proxmox"]));
    assert_eq!(o["runners"].as_array().unwrap().len(), 1);
    gh.set_runner_state(id, "offline", false);
    assert_eq!(in_sync(&*present, &cx).await["online"], json!(false));

    let absent = build(&GithubRunnerKind, params(&gh, &token, json!({"state": "absent"})));
    assert_eq!(
        drift(&*absent, &cx).await,
        format!("delete runner `runner-a` (id {id}) from `acme/app`")
    );
    assert!(converge(&*absent, &cx).await.unwrap().changed);
    assert!(gh.runners().is_empty());
    gh.clear_requests();
    in_sync(&*absent, &cx).await;
    assert!(gh.writes().is_empty());
}

#[tokio::test]
async fn lists_every_page() {
    let gh = GitHubEmulator::start().await.unwrap();
    let token = gh.add_token(&["acme/app"]);
    let cx = context_with_hosts(&[]);
    let out = converge(
        &*build(&GithubRunnerKind, params(&gh, &token, json!({"state": "token"}))),
        &cx,
    )
    .await
    .unwrap();
    let reg = out.outputs["registration_token"].as_str().unwrap();
    for i in 0..150 {
        gh.register_runner(reg, &format!("r{i:03}"), &[]).unwrap();
    }
    let o = in_sync(
        &*build(&GithubRunnerKind, params(&gh, &token, json!({"name": "r149"}))),
        &cx,
    )
    .await;
    assert_eq!(o["runners"].as_array().unwrap().len(), 150);
    assert_eq!(o["runner"]["name"], json!("r149"));
    assert_eq!(gh.requests().iter().filter(|r| r.method == "GET").count(), 2);
}

#[tokio::test]
async fn bad_credentials_and_unknown_repo() {
    logs::capture();
    let gh = GitHubEmulator::start().await.unwrap();
    let cx = context_with_hosts(&[]);
    let canary = "ghp_CANARYgithub0123456789abcdef";
    let err = build(&GithubRunnerKind, params(&gh, canary, json!({})))
        .check(&cx)
        .await
        .unwrap_err();
    assert!(err.message.contains("401 Bad credentials"), "{err}");
    assert!(!err.message.contains(canary) && !logs::text().contains(canary));

    let token = gh.add_token(&["acme/other"]);
    let err = build(&GithubRunnerKind, params(&gh, &token, json!({})))
        .check(&cx)
        .await
        .unwrap_err();
    assert!(err.message.contains("404 Not Found"), "{err}");
}

#[tokio::test]
async fn present_reports_busy_and_missing_labels() {
    let gh = GitHubEmulator::start().await.unwrap();
    let token = gh.add_read_token(&["acme/app"]);
    let reg = gh.create_registration_token("acme/app");
    let id = gh
        .register_runner(&reg, "runner-a", &["production", "primary"])
        .unwrap();
    gh.set_runner_state(id, "online", true);
    let cx = context_with_hosts(&[]);
    let o = in_sync(
        &*build(
            &GithubRunnerKind,
            params(&gh, &token, json!({"labels": "production,primary,gpu"})),
        ),
        &cx,
    )
    .await;
    assert_eq!(o["busy"], json!(true));
    assert_eq!(o["labels_ok"], json!(false));
    assert_eq!(o["missing_labels"], json!(["gpu"]));
    // A read-only token lists, but cannot create tokens or delete.
    let err = converge(
        &*build(&GithubRunnerKind, params(&gh, &token, json!({"state": "token"}))),
        &cx,
    )
    .await
    .unwrap_err();
    assert!(err.message.contains("403 Resource not accessible"), "{err}");
}

/// A candidate as a `probe` on its host reports it.
fn candidate(name: &str, role: &str, reachable: bool, service: &str, free: u64) -> Value {
    json!({"outputs": {
        "reachable": reachable, "error": if reachable { Value::Null } else { json!("connection refused") },
        "facts": {"name": name, "role": role, "labels": format!("production,{role}"), "label": role,
                  "authorized_for_prod": true},
        "values": {"service_active": service, "service": format!("actions.runner.acme-app.{name}"),
                   "free_disk": free.to_string()},
    }})
}

const GIB: u64 = 1 << 30;

async fn gate(gh: &GitHubEmulator, token: &str, candidates: Value, extra: Value) -> Result<Value, String> {
    let mut p = params(
        gh,
        token,
        json!({"state": "select", "candidates": candidates, "min_free_disk": "2G"}),
    );
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    let cx = context_with_hosts(&[]);
    converge(&*build(&GithubRunnerKind, p), &cx)
        .await
        .map(|a| {
            assert!(!a.changed, "the gate changes nothing");
            let mut o = Value::Object(a.outputs);
            o["message"] = json!(a.message);
            o
        })
        .map_err(|e| e.message)
}

#[tokio::test]
async fn the_gate_prefers_the_primary_and_fails_over_saying_why() {
    let gh = GitHubEmulator::start().await.unwrap();
    let token = gh.add_read_token(&["acme/app"]);
    let reg = gh.create_registration_token("acme/app");
    let p = gh
        .register_runner(&reg, "gh-primary", &["production", "primary"])
        .unwrap();
    let s = gh
        .register_runner(&reg, "gh-secondary", &["production", "secondary"])
        .unwrap();
    let healthy = json!({
        "lab-2": candidate("gh-secondary", "secondary", true, "yes", 5 * GIB),
        "lab-1": candidate("gh-primary", "primary", true, "yes", 5 * GIB),
    });
    let o = gate(&gh, &token, healthy.clone(), json!({})).await.unwrap();
    assert_eq!(
        (o["runner"].as_str(), o["label"].as_str()),
        (Some("lab-1"), Some("primary"))
    );
    assert_eq!(o["failover"], json!(false));

    // Offline in GitHub: the secondary, and the reason.
    gh.set_runner_state(p, "offline", false);
    let o = gate(&gh, &token, healthy.clone(), json!({})).await.unwrap();
    assert_eq!(o["runner"], json!("lab-2"));
    assert_eq!(o["failover"], json!(true));
    assert_eq!(o["reasons"], json!(["lab-1 (primary): offline in GitHub"]));
    assert!(o["message"]
        .as_str()
        .unwrap()
        .contains("rejected lab-1 (primary): offline in GitHub"));

    // Every health criterion, and no healthy runner: one line per candidate.
    gh.set_runner_state(p, "online", false);
    let mut bad = json!({
        "lab-1": candidate("gh-primary", "primary", true, "no", GIB),
        "lab-2": candidate("gh-secondary", "secondary", false, "", 0),
    });
    bad["lab-1"]["outputs"]["facts"]["labels"] = json!("production,primary,gpu");
    let e = gate(&gh, &token, bad.clone(), json!({})).await.unwrap_err();
    assert_eq!(
        e,
        "no healthy runner for production:\n  \
         lab-1 (primary): lacks label(s) `gpu`; runner service `actions.runner.acme-app.gh-primary` is not active; \
         free disk 1.0 GiB is below min_free_disk 2.0 GiB\n  \
         lab-2 (secondary): not reachable over SSH (connection refused)"
    );
    bad["lab-2"] = candidate("gh-secondary", "secondary", true, "yes", 5 * GIB);
    bad["lab-2"]["outputs"]["facts"]["authorized_for_prod"] = json!(false);
    gh.set_runner_state(s, "offline", false);
    let e = gate(&gh, &token, bad, json!({})).await.unwrap_err();
    assert!(
        e.ends_with(
            "lab-2 (secondary): not authorized for production (`authorized_for_prod` is false); offline in GitHub"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn the_gate_waits_for_a_busy_runner_within_busy_wait() {
    let gh = std::sync::Arc::new(GitHubEmulator::start().await.unwrap());
    let token = gh.add_read_token(&["acme/app"]);
    let reg = gh.create_registration_token("acme/app");
    let p = gh
        .register_runner(&reg, "gh-primary", &["production", "primary"])
        .unwrap();
    gh.register_runner(&reg, "gh-secondary", &["production", "secondary"])
        .unwrap();
    let both = json!([
        candidate("gh-primary", "primary", true, "yes", 5 * GIB),
        candidate("gh-secondary", "secondary", true, "yes", 5 * GIB),
    ]);
    // Busy for 1.5 s: waited for, and chosen.
    gh.set_runner_state(p, "online", true);
    let g = gh.clone();
    let freer = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        g.set_runner_state(p, "online", false);
    });
    let t0 = std::time::Instant::now();
    let o = gate(&gh, &token, both.clone(), json!({"busy_wait": "20s"}))
        .await
        .unwrap();
    freer.await.unwrap();
    assert_eq!(o["runner"], json!("gh-primary"));
    assert!(t0.elapsed() >= std::time::Duration::from_millis(1400));
    // Busy beyond busy_wait: rejected, the secondary takes it, within the bound.
    gh.set_runner_state(p, "online", true);
    let t0 = std::time::Instant::now();
    let o = gate(&gh, &token, both, json!({"busy_wait": "2s"})).await.unwrap();
    assert!(t0.elapsed() < std::time::Duration::from_secs(6));
    assert_eq!(o["runner"], json!("gh-secondary"));
    assert!(
        o["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("gh-primary (primary): busy running a job"),
        "{o}"
    );
}

/// The stand-in runner release (tests/lab/actions-runner) unpacked in `dir`.
fn unpack_release(dir: &std::path::Path) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lab/build-runner-release.sh");
    let out = std::process::Command::new(script)
        .arg(dir.join("rel"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tarball = String::from_utf8(out.stdout).unwrap();
    std::fs::create_dir_all(dir.join("runner")).unwrap();
    let st = std::process::Command::new("tar")
        .args(["-xzf", tarball.trim(), "-C"])
        .arg(dir.join("runner"))
        .status()
        .unwrap();
    assert!(st.success());
}

#[tokio::test]
async fn configured_registers_once_sets_labels_and_re_registers_when_needed() {
    // config.sh runs as root here (`run_as: root`): the test cannot switch users otherwise.
    if !flowrun_lab::sshd::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let gh = GitHubEmulator::start().await.unwrap();
    let token = gh.add_token(&["acme/app"]);
    let dir = tempfile::tempdir().unwrap();
    unpack_release(dir.path());
    let runner_dir = dir.path().join("runner").display().to_string();
    let cx = context_with_hosts(&[]);
    let step = |name: &str, labels: &str| {
        build(
            &GithubRunnerKind,
            params(
                &gh,
                &token,
                json!({"state": "configured", "name": name, "labels": labels, "runner_dir": runner_dir, "run_as": "root"}),
            ),
        )
    };

    let first = step("runner-a", "production,primary");
    assert!(drift(&*first, &cx).await.contains("does not exist"));
    let out = converge(&*first, &cx).await.unwrap();
    assert!(out.changed);
    assert_eq!(out.outputs["service"], json!("actions.runner.acme-app.runner-a"));
    let r = gh.runner_by_name("runner-a").unwrap();
    assert_eq!(r.labels, ["self-hosted", "Linux", "X64", "production", "primary"]);
    assert_eq!(gh.registration_tokens_issued(), 1);
    let runner_file = std::fs::read_to_string(dir.path().join("runner/.runner")).unwrap();
    assert!(runner_file.contains("\"agentName\": \"runner-a\""), "{runner_file}");

    // In state: no write, no token.
    gh.clear_requests();
    in_sync(&*first, &cx).await;
    assert!(gh.writes().is_empty(), "{:?}", gh.writes());

    // Labels changed: set through the API, the runner keeps its id, no token.
    let relabel = step("runner-a", "production,primary,gpu");
    assert!(drift(&*relabel, &cx)
        .await
        .starts_with("set the labels of runner `runner-a`"));
    converge(&*relabel, &cx).await.unwrap();
    let r2 = gh.runner_by_name("runner-a").unwrap();
    assert_eq!((r2.id, r2.labels.last().map(String::as_str)), (r.id, Some("gpu")));
    assert_eq!(gh.registration_tokens_issued(), 0);

    // Deleted in GitHub: registered again over the stale local settings.
    gh.clear_requests();
    let cx2 = context_with_hosts(&[]);
    let del = build(
        &GithubRunnerKind,
        params(&gh, &token, json!({"state": "absent", "name": "runner-a"})),
    );
    converge(&*del, &cx2).await.unwrap();
    assert!(drift(&*relabel, &cx)
        .await
        .contains("GitHub has no runner named `runner-a`"));
    converge(&*relabel, &cx).await.unwrap();
    assert!(gh.runner_by_name("runner-a").is_some());
    assert_eq!(gh.registration_tokens_issued(), 1);

    // Renamed: the old runner goes, the new one comes.
    let renamed = step("runner-b", "production");
    assert!(drift(&*renamed, &cx).await.contains("configured as `runner-a`"));
    converge(&*renamed, &cx).await.unwrap();
    let names: Vec<String> = gh.runners().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["runner-b"]);
}

#[tokio::test]
async fn health_judges_every_candidate_and_never_fails() {
    let gh = GitHubEmulator::start().await.unwrap();
    let token = gh.add_read_token(&["acme/app"]);
    let reg = gh.create_registration_token("acme/app");
    let p = gh
        .register_runner(&reg, "gh-primary", &["production", "primary"])
        .unwrap();
    gh.set_runner_state(p, "offline", true);
    let candidates = json!({
        "lab-1": candidate("gh-primary", "primary", true, "no", 5 * GIB),
        "lab-2": candidate("gh-secondary", "secondary", false, "", 0),
    });
    let p = params(&gh, &token, json!({"state": "health", "candidates": candidates}));
    let o = in_sync(&*build(&GithubRunnerKind, p), &context_with_hosts(&[])).await;
    assert_eq!(o["healthy"], json!(0));
    let c = &o["candidates"];
    assert_eq!(c[0]["runner"], json!("lab-1"));
    assert_eq!(
        (c[0]["online"].clone(), c[0]["busy"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(c[0]["service_active"], json!(false));
    assert_eq!(c[1]["registered"], json!(false));
    assert_eq!(c[1]["reachable"], json!(false));
    assert_eq!(
        c[1]["reasons"],
        json!([
            "GitHub has no runner named `gh-secondary`",
            "not reachable over SSH (connection refused)"
        ])
    );
}
