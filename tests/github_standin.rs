//! The lab's stand-in of the GitHub Actions runner release against the GitHub
//! emulator, without flowrun: the tarball builds, `config.sh` takes its
//! options (the token too) from ACTIONS_RUNNER_INPUT_* and registers the
//! runner, writes `.runner` and `svc.sh`, refuses a second configure; the
//! running listener makes the runner `online`, `busy` while it runs a job
//! that matches its labels, and `offline` a few seconds after it stops;
//! `config.sh remove` with a remove token deletes it.

use flowrun_lab::emulators::github::{GitHubEmulator, GitHubOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Build the release and unpack it into `dir`.
fn unpack(dir: &Path) {
    let out = Command::new(project().join("tests/lab/build-runner-release.sh"))
        .arg(dir.join("release"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tarball = String::from_utf8(out.stdout).unwrap();
    let sum = std::fs::read_to_string(format!("{}.sha256", tarball.trim())).unwrap();
    assert_eq!(sum.trim().len(), 64);
    std::fs::create_dir_all(dir.join("runner")).unwrap();
    let st = Command::new("tar")
        .args(["-xzf", tarball.trim(), "-C"])
        .arg(dir.join("runner"))
        .status()
        .unwrap();
    assert!(st.success());
}

fn config(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(dir.join("runner/config.sh"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUNNER_ALLOW_RUNASROOT", "1")
        .env("FLOWRUN_LAB_CONFIGURE_DELAY", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting until {what}");
}

struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stand_in_runner_registers_heartbeats_runs_a_job_and_is_removed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gh = rt
        .block_on(GitHubEmulator::start_with(GitHubOptions {
            offline_after: Duration::from_secs(2),
            ..GitHubOptions::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    unpack(dir.path());
    let url = gh.repo_url("acme/app");
    let token = gh.create_registration_token("acme/app");

    // Everything through the environment, as the workflow passes it.
    let env = [
        ("ACTIONS_RUNNER_INPUT_URL", url.as_str()),
        ("ACTIONS_RUNNER_INPUT_TOKEN", token.as_str()),
        ("ACTIONS_RUNNER_INPUT_NAME", "runner-a"),
        ("ACTIONS_RUNNER_INPUT_LABELS", "production,primary"),
        ("ACTIONS_RUNNER_INPUT_UNATTENDED", "true"),
        ("ACTIONS_RUNNER_INPUT_REPLACE", "true"),
    ];
    let (ok, text) = config(dir.path(), &[], &env);
    assert!(ok, "{text}");
    assert!(!text.contains(&token), "the token was printed:\n{text}");
    let raw = std::fs::read(dir.path().join("runner/.runner")).unwrap();
    assert!(raw.starts_with(b"\xef\xbb\xbf"), "the real .runner has a BOM");
    let runner: serde_json::Value = serde_json::from_slice(&raw[3..]).unwrap();
    assert_eq!(runner["agentName"], "runner-a");
    assert_eq!(runner["gitHubUrl"], url.as_str());
    let svc = std::fs::read_to_string(dir.path().join("runner/svc.sh")).unwrap();
    assert!(svc.contains("SVC_NAME=\"actions.runner.acme-app.runner-a.service\""));
    let r = gh.runner_by_name("runner-a").expect("registered");
    assert_eq!(r.labels, ["self-hosted", "Linux", "X64", "production", "primary"]);
    assert_eq!(r.status, "offline", "registered, but not running yet");

    // Configured already: refused, as the real runner refuses.
    let (ok, text) = config(dir.path(), &[], &env);
    assert!(!ok && text.contains("already configured"), "{text}");

    // Running: online; a job for labels it lacks stays queued, one it matches makes it busy.
    let child = Command::new(dir.path().join("runner/run.sh"))
        .env("FLOWRUN_LAB_HEARTBEAT", "0.2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut listener = Listener(child);
    wait_until("the runner is online", Duration::from_secs(10), || {
        gh.runner_by_name("runner-a").unwrap().status == "online"
    });
    let other = gh.queue_job("acme/app", &["self-hosted", "production", "secondary"], 0.1);
    let job = gh.queue_job("acme/app", &["self-hosted", "production", "primary"], 1.5);
    wait_until("the runner is busy", Duration::from_secs(10), || {
        gh.runner_by_name("runner-a").unwrap().busy
    });
    assert_eq!(gh.job(job).unwrap().runner.as_deref(), Some("runner-a"));
    wait_until("the job completed", Duration::from_secs(10), || {
        gh.job(job).unwrap().status == "completed"
    });
    assert!(!gh.runner_by_name("runner-a").unwrap().busy);
    assert_eq!(gh.job(other).unwrap().status, "queued", "labels alone never fail over");

    // Stopped: offline once it has been silent for `offline_after`.
    let _ = Command::new("kill").arg(listener.0.id().to_string()).status();
    let _ = listener.0.wait();
    let stopped = Instant::now();
    wait_until("the runner is offline", Duration::from_secs(10), || {
        gh.runner_by_name("runner-a").unwrap().status == "offline"
    });
    assert!(stopped.elapsed() >= Duration::from_millis(1000), "offline too early");
    drop(listener);

    // Removed with a remove token (through the environment too).
    let remove = rt.block_on(post_token(&gh, "acme/app", "remove-token"));
    let (ok, text) = Command::new(dir.path().join("runner/config.sh"))
        .arg("remove")
        .env("ACTIONS_RUNNER_INPUT_TOKEN", &remove)
        .env("RUNNER_ALLOW_RUNASROOT", "1")
        .output()
        .map(|o| (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned()))
        .unwrap();
    assert!(ok, "{text}");
    assert!(gh.runner_by_name("runner-a").is_none());
    assert!(!dir.path().join("runner/.runner").exists());
}

/// `POST /repos/{repo}/actions/runners/{kind}` with a raw HTTP/1.1 request
/// (the test crate has no HTTP client of its own); returns the token.
async fn post_token(gh: &GitHubEmulator, repo: &str, kind: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let admin = gh.add_token(&[repo]);
    let addr = gh.url().trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "POST /repos/{repo}/actions/runners/{kind} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\
         Accept: application/vnd.github+json\r\nX-GitHub-Api-Version: 2022-11-28\r\n\
         Authorization: Bearer {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    v["token"].as_str().unwrap().to_owned()
}
