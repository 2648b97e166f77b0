//! The remote helper behind the SSH transport, against real sshd hosts:
//! nothing of a request (script, environment, stdin) appears in the argv of
//! any process on the host while it runs; a helper killed between or under
//! requests is replaced, the request under it reported as killed; a request
//! past its timeout is killed on the host and its helper serves on (or, when
//! it stops answering, is replaced); quick requests share a helper in
//! batches; written content arrives byte for byte; `become` a plain user
//! runs through that user's own helper.

use flowrun_engine::host::{ConnSpec, Host};
use flowrun_engine::transport::ssh::{SshOptions, SshTransport};
use flowrun_engine::transport::{Become, ExecRequest, FileAttrs, Transport, TransportError};
use flowrun_lab::sshd::{SshdHost, SshdOptions, Sudo};
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

/// A transport logged in as `user` (on an isolated host, one `add_user` made).
async fn connect_as(h: &SshdHost, dir: &tempfile::TempDir, user: &str) -> SshTransport {
    let conn = ConnSpec {
        port: Some(h.port()),
        user: Some(user.to_owned()),
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

/// Bound a wait for something that must not hang (not a timing assertion).
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("hung")
}

#[tokio::test]
async fn a_request_past_its_timeout_is_killed_and_the_helper_serves_on() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = Arc::new(connect(&h, &tmp).await);
    let pidfile = tmp.path().join("pid");
    // The remote `timeout` kills the command; its helper goes on with the next request.
    let mut req = ExecRequest::shell(format!("echo $$ > {}; exec sleep 60", pidfile.display()));
    req.timeout = Some(Duration::from_secs(1));
    let err = bounded(t.exec(req)).await.unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout(d) if d == Duration::from_secs(1)),
        "{err}"
    );
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    assert!(gone(&pid, "sleep").await, "the remote `sleep` outlived its timeout");
    assert_eq!(
        t.exec(ExecRequest::argv(["echo", "next"])).await.unwrap().stdout_str(),
        "next\n"
    );
    assert_eq!(h.helpers_started(), 1, "the same helper served the next request");

    // A quick request past its timeout: killed as well, and the quick request
    // queued behind it in the same batch is still answered.
    let mut slow = ExecRequest::shell("sleep 60").quick();
    slow.timeout = Some(Duration::from_secs(1));
    let behind = ExecRequest::shell("echo behind").quick();
    let (a, b) = {
        let (t1, t2) = (t.clone(), t.clone());
        let a = tokio::spawn(async move { t1.exec(slow).await });
        let b = tokio::spawn(async move { t2.exec(behind).await });
        (bounded(a).await.unwrap(), bounded(b).await.unwrap())
    };
    assert!(matches!(a, Err(TransportError::Timeout(_))), "{a:?}");
    assert_eq!(b.unwrap().stdout_str(), "behind\n");

    // A helper that stops answering (here: stopped by its own request) is
    // given up at the local deadline and replaced; the host stays reachable.
    let before = h.helpers_started();
    let mut stop = ExecRequest::shell(format!(
        "p=$(awk '{{print $4}}' /proc/$PPID/stat); echo $p > {}; kill -STOP $p",
        pidfile.display()
    ));
    stop.timeout = Some(Duration::from_secs(1));
    let err = bounded(t.exec(stop)).await.unwrap_err();
    assert!(matches!(err, TransportError::Timeout(_)), "{err}");
    assert_eq!(
        t.exec(ExecRequest::argv(["echo", "again"])).await.unwrap().stdout_str(),
        "again\n"
    );
    assert_eq!(h.helpers_started(), before + 1, "a new helper replaced the stopped one");
    let stopped = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    unsafe_kill(stopped.parse().unwrap());
    assert_eq!(h.connections_accepted(), 1, "one connection throughout");
}

/// Whether process `pid` no longer runs `what` (waits a bounded while).
async fn gone(pid: &str, what: &str) -> bool {
    for _ in 0..100 {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmdline.starts_with(what) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn quick_requests_share_one_helper_in_batches() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = Arc::new(connect(&h, &tmp).await);
    let dir = tmp.path().join("files");
    std::fs::create_dir(&dir).unwrap();
    let before = h.commands_executed();
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let t = t.clone();
            let p = dir.join(format!("f{i}")).to_string_lossy().into_owned();
            tokio::spawn(async move {
                let content = format!("file {i}\n");
                t.write_file(&p, content.as_bytes(), &FileAttrs::default(), None)
                    .await?;
                let st = t.stat(&p, None).await?.expect("written");
                Ok::<_, TransportError>((st.size, t.read_file(&p, None).await?))
            })
        })
        .collect();
    // A request that cannot be framed fails alone; its batch goes on.
    let bad = bounded(t.exec(ExecRequest::shell("echo a\0b").quick()))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("NUL"), "{bad}");
    for (i, task) in tasks.into_iter().enumerate() {
        let (size, content) = bounded(task).await.unwrap().unwrap();
        let want = format!("file {i}\n");
        assert_eq!((size, content), (want.len() as u64, Some(want.into_bytes())));
    }
    assert_eq!(h.commands_executed() - before, 90, "every request ran once");
    assert!(
        h.helpers_started() <= 2,
        "{} helpers for quick requests",
        h.helpers_started()
    );
}

#[tokio::test]
async fn written_content_arrives_byte_for_byte() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = connect(&h, &tmp).await;
    t.exec(ExecRequest::argv(["true"])).await.unwrap();
    let big: String = (0..3000).map(|i| format!("line {i}\n")).collect();
    let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let cases: Vec<Vec<u8>> = vec![
        b"it's \"quoted\" $HOME `x` \\n\\\\ %s %%\n".to_vec(),
        "no newline at the end: \u{e9}\r".as_bytes().to_vec(),
        b"\n\n trailing newlines\n\n\n".to_vec(),
        Vec::new(),
        big.into_bytes(),
        binary,
    ];
    let p = tmp.path().join("f");
    let p = p.to_str().unwrap();
    for c in &cases {
        let attrs = FileAttrs {
            mode: Some(0o640),
            ..FileAttrs::default()
        };
        t.write_file(p, c, &attrs, None).await.unwrap();
        assert_eq!(&std::fs::read(p).unwrap(), c);
        assert_eq!(t.stat(p, None).await.unwrap().unwrap().mode, 0o640);
    }
}

#[tokio::test]
async fn become_a_plain_user_through_its_own_helper() {
    if !flowrun_lab::sshd::is_root() {
        eprintln!("skipping become_a_plain_user_through_its_own_helper: needs root (an isolated host)");
        return;
    }
    let h = SshdHost::start(SshdOptions::isolated()).unwrap();
    h.add_user("flowrun-app", Sudo::None).unwrap();
    h.add_user("flowrun-sudo", Sudo::NoPassword).unwrap();
    h.run_ok("echo secret > /etc/only-root; chmod 600 /etc/only-root")
        .unwrap();
    let app = Some(Become {
        user: "flowrun-app".into(),
    });
    for login in ["root", "flowrun-sudo"] {
        let tmp = tempfile::tempdir().unwrap();
        let t = Arc::new(connect_as(&h, &tmp, login).await);
        let out = t
            .exec(ExecRequest::argv(["id", "-un"]).become_(app.clone()))
            .await
            .unwrap();
        assert_eq!(out.stdout_str(), "flowrun-app\n", "logged in as {login}");
        assert_eq!(
            t.exec(ExecRequest::argv(["id", "-un"])).await.unwrap().stdout_str(),
            format!("{login}\n")
        );
        // Quick requests as the target user, in batches through its helper.
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let (t, app) = (t.clone(), app.clone());
                tokio::spawn(async move {
                    let p = format!("/home/flowrun-app/{login}-{i}");
                    let attrs = FileAttrs {
                        mode: Some(0o600),
                        ..FileAttrs::default()
                    };
                    t.write_file(&p, b"mine\n", &attrs, app.as_ref()).await?;
                    t.stat(&p, app.as_ref()).await
                })
            })
            .collect();
        for task in tasks {
            let st = bounded(task).await.unwrap().unwrap().expect("written");
            assert_eq!((st.owner.as_str(), st.mode), ("flowrun-app", 0o600));
        }
        // What only root may read stays closed to the target user: an error, not "absent".
        let err = t.read_file("/etc/only-root", app.as_ref()).await.unwrap_err();
        assert!(err.to_string().contains("Permission denied"), "{err}");
        assert!(t.stat("/etc/only-root/x", app.as_ref()).await.unwrap().is_none());
    }
    let owner = h.run_ok("stat -c %U /home/flowrun-app/root-3").unwrap();
    assert_eq!(owner.trim(), "flowrun-app");
}
