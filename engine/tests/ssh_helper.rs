//! The remote helper behind the SSH transport, against real sshd hosts:
//! nothing of a request (script, environment, stdin) appears in the argv of
//! any process on the host while it runs, and a helper killed between or
//! under requests is replaced, the request under it reported as killed.

use flowrun_engine::host::{ConnSpec, Host};
use flowrun_engine::transport::ssh::{SshOptions, SshTransport};
use flowrun_engine::transport::{ExecRequest, Transport};
use flowrun_lab::sshd::{SshdHost, SshdOptions};
use serde_json::Map;
use std::sync::Arc;
use std::time::Duration;

async fn connect(h: &SshdHost, dir: &tempfile::TempDir) -> SshTransport {
    let conn = ConnSpec {
        port: Some(h.port()),
        user: Some(h.user().to_owned()),
        identity_file: Some(h.identity_file()),
        known_hosts_file: Some(h.known_hosts()),
        ..ConnSpec::default()
    };
    let host = Host::new(h.name().to_owned(), vec![], Map::new(), conn, Some(h.address()));
    let opts = SshOptions {
        control_dir: dir.path().join("ctl"),
        ..SshOptions::default()
    };
    SshTransport::connect(&host, &opts).await.expect("connect")
}

/// Every process's argv on this machine (plain test hosts run here).
fn all_cmdlines() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(b) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            out.push((pid, String::from_utf8_lossy(&b).replace('\0', " ")));
        }
    }
    out
}

/// Pids of this host's helpers: their environment names the host's trace file.
fn helpers_of(h: &SshdHost) -> Vec<u32> {
    let mark = format!("FLOWRUN_REMOTE_TRACE={}", h.dir().join("requests.log").display());
    all_cmdlines()
        .into_iter()
        .filter(|(_, c)| c.contains("IFS= read -r n"))
        .filter(|(pid, _)| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|e| String::from_utf8_lossy(&e).split('\0').any(|v| v == mark))
        })
        .map(|(pid, _)| pid)
        .collect()
}

#[tokio::test]
async fn secrets_never_reach_any_argv_on_the_host() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = Arc::new(connect(&h, &tmp).await);
    let secret = "flowrun-argv-secret-7Qz9";
    let mut req = ExecRequest::shell(format!("x='{secret}-script'; sleep 1; cat; printf '%s' \"$S\""))
        .stdin(format!("{secret}-stdin"));
    req.env = vec![("S".into(), format!("{secret}-env"))];
    let running = {
        let t = t.clone();
        tokio::spawn(async move { t.exec(req).await })
    };
    let mut seen = Vec::new();
    for _ in 0..40 {
        seen.extend(all_cmdlines().into_iter().filter(|(_, c)| c.contains(secret)));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = running.await.unwrap().unwrap();
    assert_eq!(out.stdout_str(), format!("{secret}-stdin{secret}-env"));
    assert!(seen.is_empty(), "a secret in argv: {seen:?}");
    // The same with a timeout (the script then runs under `timeout`).
    let mut req = ExecRequest::shell(format!("x='{secret}'; sleep 1; echo ok"));
    req.timeout = Some(Duration::from_secs(30));
    let running = {
        let t = t.clone();
        tokio::spawn(async move { t.exec(req).await })
    };
    for _ in 0..40 {
        seen.extend(all_cmdlines().into_iter().filter(|(_, c)| c.contains(secret)));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(running.await.unwrap().unwrap().stdout_str(), "ok\n");
    assert!(seen.is_empty(), "a secret in argv: {seen:?}");
}

#[tokio::test]
async fn a_killed_helper_is_replaced() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = Arc::new(connect(&h, &tmp).await);
    assert_eq!(t.exec(ExecRequest::argv(["true"])).await.unwrap().rc, 0);
    let pids = helpers_of(&h);
    assert_eq!(pids.len(), 1, "one helper after one command");
    // Killed between requests: the next request starts a new helper.
    for p in &pids {
        unsafe_kill(*p);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = t.exec(ExecRequest::argv(["echo", "again"])).await.unwrap();
    assert_eq!(out.stdout_str(), "again\n");
    assert_eq!(h.helpers_started(), 2);
    // Killed under a request: that request is reported killed, the host stays reachable.
    let running = {
        let t = t.clone();
        tokio::spawn(async move { t.exec(ExecRequest::shell("sleep 2; echo late")).await })
    };
    let mut killed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if h.commands_executed() == 3 {
            for p in helpers_of(&h) {
                unsafe_kill(p);
                killed = true;
            }
            break;
        }
    }
    assert!(killed, "the running helper was not found");
    let out = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("hung")
        .unwrap()
        .unwrap();
    assert_eq!(out.rc, -1, "{out:?}");
    assert!(out.stderr_str().contains("killed"), "{}", out.stderr_str());
    assert_eq!(t.exec(ExecRequest::argv(["true"])).await.unwrap().rc, 0);
    assert_eq!(h.connections_accepted(), 1, "one connection throughout");
}

fn unsafe_kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}
