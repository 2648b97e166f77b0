//! The SSH transport against real sshd hosts on loopback: command lines
//! arrive intact, stdin/env/chdir/timeouts work, file operations cost one
//! command each, one connection serves a host, become goes through sudo, host
//! keys are checked (unknown refused, changed refused loudly, accept-new adds),
//! and a dead host is `unreachable`.

use flowrun_engine::host::{ConnSpec, Host, HostKeyPolicy};
use flowrun_engine::transport::ssh::{SshOptions, SshTransport};
use flowrun_engine::transport::{Become, ExecRequest, FileAttrs, FileKind, Transport, TransportError};
use flowrun_lab::sshd::{is_root, keygen, known_hosts_name, public_key, SshdHost, SshdOptions, Sudo};
use serde_json::Map;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A private control directory per test.
fn options(dir: &tempfile::TempDir) -> SshOptions {
    SshOptions {
        control_dir: dir.path().join("ctl"),
        connect_timeout: Duration::from_secs(5),
        ..SshOptions::default()
    }
}

fn spec(h: &SshdHost) -> ConnSpec {
    ConnSpec {
        port: Some(h.port()),
        user: Some(h.user().to_owned()),
        identity_file: Some(h.identity_file()),
        known_hosts_file: Some(h.known_hosts()),
        ..ConnSpec::default()
    }
}

fn host(h: &SshdHost, conn: ConnSpec) -> Host {
    Host::new(
        h.name().to_owned(),
        vec!["all".into()],
        Map::new(),
        conn,
        Some(h.address()),
    )
}

async fn connect(h: &SshdHost, dir: &tempfile::TempDir) -> SshTransport {
    SshTransport::connect(&host(h, spec(h)), &options(dir))
        .await
        .expect("connect")
}

/// Bound a test's wait for something that must not hang (not a timing assertion).
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("hung")
}

#[tokio::test]
async fn command_lines_arrive_intact() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = connect(&h, &tmp).await;
    let tricky = [
        "a b",
        "it's",
        "$HOME",
        "`id`",
        "line1\nline2",
        "*",
        ";",
        "\"q\"",
        "\\",
        "",
        "$(echo x)",
    ];
    let mut argv = vec!["printf".to_owned(), "[%s]\\n".to_owned()];
    argv.extend(tricky.iter().map(|s| (*s).to_owned()));
    let out = t.exec(ExecRequest::argv(argv)).await.unwrap();
    let expected: String = tricky.iter().map(|s| format!("[{s}]\n")).collect();
    assert_eq!(out.stdout_str(), expected);

    let script = "x='it'\"'\"'s'; echo \"$x\"; echo '$HOME'\nprintf '%s\\n' \"multi\nline\"; exit 3";
    let out = t.exec(ExecRequest::shell(script)).await.unwrap();
    assert_eq!(out.rc, 3);
    assert_eq!(out.stdout_str(), "it's\n$HOME\nmulti\nline\n");

    let mut req = ExecRequest::shell("printf '%s|' \"$FOO\" \"$BAR\"; pwd");
    req.env = vec![("FOO".into(), "a b $x 'q' \"d\"".into()), ("BAR".into(), "\n".into())];
    req.chdir = Some("/usr/share".into());
    let out = t.exec(req).await.unwrap();
    assert_eq!(out.stdout_str(), "a b $x 'q' \"d\"|\n|/usr/share\n");

    let out = t
        .exec(ExecRequest::shell("flowrun-no-such-command; echo after >&2; exit 127"))
        .await
        .unwrap();
    assert_eq!(out.rc, 127);
    assert!(out.stderr_str().contains("not found") && out.stderr_str().contains("after"));
    t.close().await;
}

#[tokio::test]
async fn stdin_is_fed_byte_for_byte() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = connect(&h, &tmp).await;
    let small: Vec<u8> = (0..=255u8).collect();
    let out = t.exec(ExecRequest::argv(["cat"]).stdin(small.clone())).await.unwrap();
    assert_eq!(out.stdout, small);
    let big: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 251) as u8).collect();
    let out = t
        .exec(ExecRequest::shell("sha256sum | cut -c1-64").stdin(big.clone()))
        .await
        .unwrap();
    let mine = std::process::Command::new("sh")
        .args(["-c", "sha256sum | cut -c1-64"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(&big)?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(out.stdout, mine.stdout);
    // A command that does not read its stdin still finishes.
    let out = t.exec(ExecRequest::shell("echo done").stdin(big)).await.unwrap();
    assert_eq!(out.stdout_str(), "done\n");
    // Without stdin the command sees end of input at once.
    let out = t.exec(ExecRequest::argv(["cat"])).await.unwrap();
    assert_eq!((out.rc, out.stdout.len()), (0, 0));
}

#[tokio::test]
async fn timeout_kills_the_remote_command() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = connect(&h, &tmp).await;
    let pidfile = tmp.path().join("pid");
    let mut req = ExecRequest::shell(format!("echo $$ > {}; exec sleep 60", pidfile.display()));
    req.timeout = Some(Duration::from_secs(1));
    let err = bounded(t.exec(req)).await.unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout(d) if d == Duration::from_secs(1)),
        "{err}"
    );
    // The plain host runs on this machine: the remote process is ours to see.
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    let mut alive = true;
    for _ in 0..100 {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        alive = cmdline.starts_with("sleep");
        if !alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive, "the remote `sleep` still runs after the timeout");
    // The connection is still good.
    assert_eq!(t.exec(ExecRequest::argv(["true"])).await.unwrap().rc, 0);
}

#[tokio::test]
async fn file_operations_take_one_command_each() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = connect(&h, &tmp).await;
    let p = tmp.path().join("dir with space/f'1.txt");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let path = p.to_str().unwrap();

    let before = h.commands_executed();
    assert!(t.stat(path, None).await.unwrap().is_none());
    assert_eq!(h.commands_executed() - before, 1, "stat");

    let before = h.commands_executed();
    let attrs = FileAttrs {
        mode: Some(0o640),
        owner: Some("nobody".into()),
        group: Some("nogroup".into()),
    };
    t.write_file(path, b"hello\n", &attrs, None).await.unwrap();
    assert_eq!(h.commands_executed() - before, 1, "write");
    let meta = std::fs::metadata(&p).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"hello\n");
    assert_eq!(meta.mode() & 0o7777, 0o640);
    if is_root() {
        assert_eq!(meta.uid(), 65534, "owner nobody");
    }

    let before = h.commands_executed();
    let st = t.stat(path, None).await.unwrap().unwrap();
    assert_eq!(h.commands_executed() - before, 1, "stat");
    assert_eq!((st.kind, st.mode, st.size), (FileKind::File, 0o640, 6));
    assert_eq!(
        st.sha256.as_deref(),
        Some("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
    );

    let before = h.commands_executed();
    assert_eq!(t.read_file(path, None).await.unwrap().unwrap(), b"hello\n");
    assert!(t.read_file("/nonexistent/flowrun", None).await.unwrap().is_none());
    assert_eq!(h.commands_executed() - before, 2, "two reads");

    // Atomic replace: a new inode, the old attributes kept when none are given.
    let inode = meta.ino();
    t.write_file(path, b"bye\n", &FileAttrs::default(), None).await.unwrap();
    let meta = std::fs::metadata(&p).unwrap();
    assert_ne!(meta.ino(), inode);
    assert_eq!(
        (meta.mode() & 0o7777, std::fs::read(&p).unwrap()),
        (0o640, b"bye\n".to_vec())
    );
    let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".flowrun."))
        .collect();
    assert!(leftovers.is_empty());
    let err = t
        .write_file("/nonexistent/dir/x", b"", &FileAttrs::default(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot write `/nonexistent/dir/x`"), "{err}");
}

#[tokio::test]
async fn one_connection_serves_many_concurrent_commands() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = Arc::new(SshTransport::lazy(Arc::new(host(&h, spec(&h))), &options(&tmp)).unwrap());
    assert_eq!(
        h.connections_accepted(),
        0,
        "lazy: no connection before the first command"
    );
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move { t.exec(ExecRequest::shell(format!("sleep 0.05; echo {i}"))).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let out = bounded(task).await.unwrap().unwrap();
        assert_eq!(out.stdout_str(), format!("{i}\n"));
    }
    // A burst of short commands: sshd may briefly count closing channels, the transport asks again.
    let burst: Vec<_> = (0..100)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move { t.exec(ExecRequest::argv(["true"])).await })
        })
        .collect();
    for task in burst {
        assert_eq!(bounded(task).await.unwrap().unwrap().rc, 0);
    }
    assert_eq!(h.connections_accepted(), 1);
    assert_eq!(h.commands_executed(), 140);
    t.close().await;
}

#[tokio::test]
async fn address_can_be_filled_in_during_the_run() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let late = Arc::new(Host::new("new-vm".into(), vec![], Map::new(), spec(&h), None));
    let t = SshTransport::lazy(late.clone(), &options(&tmp)).unwrap();
    late.set_address(&h.address());
    assert_eq!(t.exec(ExecRequest::argv(["true"])).await.unwrap().rc, 0);
}

#[tokio::test]
async fn unknown_host_key_is_refused() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("known_hosts");
    std::fs::write(&empty, "").unwrap();
    let conn = ConnSpec {
        known_hosts_file: Some(empty.clone()),
        ..spec(&h)
    };
    let err = SshTransport::connect(&host(&h, conn), &options(&tmp))
        .await
        .unwrap_err();
    let TransportError::Unreachable(m) = &err else {
        panic!("{err}")
    };
    assert!(m.contains("is not trusted") && m.contains("accept-new"), "{m}");
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "", "nothing was added");
    assert_eq!(h.commands_executed(), 0);
}

#[tokio::test]
async fn accept_new_adds_an_unknown_key() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kh = tmp.path().join("known_hosts");
    let conn = ConnSpec {
        known_hosts_file: Some(kh.clone()),
        host_key_policy: HostKeyPolicy::AcceptNew,
        ..spec(&h)
    };
    let t = SshTransport::connect(&host(&h, conn.clone()), &options(&tmp))
        .await
        .unwrap();
    assert_eq!(t.exec(ExecRequest::argv(["true"])).await.unwrap().rc, 0);
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(text.contains(h.host_key()), "{text}");
    // From now on the key is known: a strict connection works.
    let strict = ConnSpec {
        host_key_policy: HostKeyPolicy::Strict,
        ..conn
    };
    SshTransport::connect(&host(&h, strict), &options(&tmp)).await.unwrap();
}

#[tokio::test]
async fn changed_host_key_is_refused_even_with_accept_new() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("other_key");
    keygen(&other, "impostor").unwrap();
    let kh = tmp.path().join("known_hosts");
    let line = format!(
        "{} {}\n",
        known_hosts_name(h.ip(), h.port()),
        public_key(&PathBuf::from(format!("{}.pub", other.display()))).unwrap()
    );
    std::fs::write(&kh, &line).unwrap();
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let conn = ConnSpec {
            known_hosts_file: Some(kh.clone()),
            host_key_policy: policy,
            ..spec(&h)
        };
        let err = SshTransport::connect(&host(&h, conn), &options(&tmp))
            .await
            .unwrap_err();
        let TransportError::Unreachable(m) = &err else {
            panic!("{err}")
        };
        assert!(m.contains(&format!("host key for `{}`", h.name())), "{m}");
        assert!(
            m.contains("has CHANGED") && m.contains("never accepts a changed key"),
            "{m}"
        );
        assert_eq!(std::fs::read_to_string(&kh).unwrap(), line, "known_hosts untouched");
    }
    assert_eq!(h.commands_executed(), 0);
}

#[tokio::test]
async fn refused_login_and_closed_port_are_unreachable() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let stranger = tmp.path().join("stranger");
    keygen(&stranger, "stranger").unwrap();
    let conn = ConnSpec {
        identity_file: Some(stranger),
        ..spec(&h)
    };
    let err = SshTransport::connect(&host(&h, conn), &options(&tmp))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::Unreachable(m) if m.contains("cannot log in") && m.contains("Permission denied")),
        "{err}"
    );
    let mut h = h;
    let conn = spec(&h);
    h.kill();
    let err = SshTransport::connect(&host(&h, conn), &options(&tmp))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::Unreachable(m) if m.contains("Connection refused")),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_that_never_speaks_ssh_is_unreachable() {
    // Accepts TCP connections and says nothing: only the connect timeout ends the wait.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _holder = std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(2).collect();
        std::thread::sleep(Duration::from_secs(10));
        drop(held);
    });
    let tmp = tempfile::tempdir().unwrap();
    let conn = ConnSpec {
        port: Some(port),
        user: Some("root".into()),
        ..ConnSpec::default()
    };
    let silent = Host::new("silent".into(), vec![], Map::new(), conn, Some("127.0.0.1".into()));
    let opts = SshOptions {
        connect_timeout: Duration::from_secs(1),
        ..options(&tmp)
    };
    let err = bounded(SshTransport::connect(&silent, &opts)).await.unwrap_err();
    assert!(
        matches!(&err, TransportError::Unreachable(m) if m.starts_with("cannot connect to `silent`") && m.contains("timed out")),
        "{err}"
    );
}

#[tokio::test]
async fn a_host_that_dies_is_unreachable() {
    let mut h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = Arc::new(connect(&h, &tmp).await);
    assert_eq!(t.exec(ExecRequest::argv(["true"])).await.unwrap().rc, 0);
    let running = {
        let t = t.clone();
        tokio::spawn(async move { t.exec(ExecRequest::shell("echo started; sleep 60")).await })
    };
    // Wait (bounded) until the command runs on the host, then kill the host under it.
    for _ in 0..200 {
        if h.commands_executed() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.kill();
    let err = bounded(running).await.unwrap().unwrap_err();
    assert!(
        matches!(&err, TransportError::Unreachable(m) if m.contains("dropped while running a command")),
        "{err}"
    );
    let err = bounded(t.exec(ExecRequest::argv(["true"]))).await.unwrap_err();
    assert!(matches!(&err, TransportError::Unreachable(_)), "{err}");
}

#[tokio::test]
async fn ssh_args_reach_ssh() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let conn = ConnSpec {
        ssh_args: vec!["-o".into(), "ServerAliveCountMax=2".into(), "-oCompression=yes".into()],
        ..spec(&h)
    };
    let t = SshTransport::connect(&host(&h, conn), &options(&tmp)).await.unwrap();
    assert_eq!(t.exec(ExecRequest::argv(["true"])).await.unwrap().rc, 0);
    // An option that breaks the connection proves the file is read.
    let conn = ConnSpec {
        ssh_args: vec!["-o".into(), "Port=1".into()],
        port: None,
        ..spec(&h)
    };
    let err = SshTransport::connect(&host(&h, conn), &options(&tmp))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("port 1"), "{err}");
    let conn = ConnSpec {
        ssh_args: vec!["-v".into()],
        ..spec(&h)
    };
    let err = SshTransport::connect(&host(&h, conn), &options(&tmp))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`-v` is not supported"), "{err}");
    let too_many = SshOptions {
        max_sessions: 10,
        ..options(&tmp)
    };
    assert!(SshTransport::connect(&host(&h, spec(&h)), &too_many).await.is_err());
}

#[tokio::test]
async fn become_goes_through_sudo() {
    if !is_root() {
        eprintln!("skipping become_goes_through_sudo: needs root (an isolated host with sudo users)");
        return;
    }
    let h = SshdHost::start(SshdOptions::isolated()).unwrap();
    h.add_user("flowrun-sudo", Sudo::NoPassword).unwrap();
    h.add_user("flowrun-pw", Sudo::Password).unwrap();
    h.run_ok("echo secret > /etc/only-root; chmod 600 /etc/only-root")
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let as_user = |user: &str| ConnSpec {
        user: Some(user.into()),
        ..spec(&h)
    };
    let t = SshTransport::connect(&host(&h, as_user("flowrun-sudo")), &options(&tmp))
        .await
        .unwrap();
    let root = Some(Become::default());
    let out = t.exec(ExecRequest::argv(["id", "-un"])).await.unwrap();
    assert_eq!(out.stdout_str(), "flowrun-sudo\n");
    let out = t
        .exec(ExecRequest::argv(["id", "-un"]).become_(root.clone()))
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "root\n");
    assert_eq!(
        t.read_file("/etc/only-root", root.as_ref()).await.unwrap().unwrap(),
        b"secret\n"
    );
    assert!(t.read_file("/etc/only-root", None).await.is_err());
    t.write_file(
        "/etc/flowrun-become",
        b"x\n",
        &FileAttrs {
            mode: Some(0o600),
            ..FileAttrs::default()
        },
        root.as_ref(),
    )
    .await
    .unwrap();
    let st = t.stat("/etc/flowrun-become", root.as_ref()).await.unwrap().unwrap();
    assert_eq!((st.owner.as_str(), st.mode), ("root", 0o600));
    assert!(!std::path::Path::new("/etc/flowrun-become").exists());

    // A user whose sudo wants a password fails at once with a clear error.
    let t = SshTransport::connect(&host(&h, as_user("flowrun-pw")), &options(&tmp))
        .await
        .unwrap();
    let err = bounded(t.exec(ExecRequest::argv(["id"]).become_(root)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::Failed(m) if m.contains("sudo asks for a password")),
        "{err}"
    );
}

/// Not a test: prints what a connection and a command cost (run with `--ignored --nocapture`).
#[tokio::test]
#[ignore = "measurement"]
async fn measure_ssh_costs() {
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut connects = Vec::new();
    for _ in 0..5 {
        let start = std::time::Instant::now();
        let t = connect(&h, &tmp).await;
        connects.push(start.elapsed());
        t.close().await;
    }
    let t = connect(&h, &tmp).await;
    t.exec(ExecRequest::argv(["true"])).await.unwrap();
    let start = std::time::Instant::now();
    for _ in 0..100 {
        t.exec(ExecRequest::argv(["true"])).await.unwrap();
    }
    let sequential = start.elapsed() / 100;
    let t = Arc::new(t);
    let start = std::time::Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move { t.exec(ExecRequest::argv(["true"])).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let parallel = start.elapsed() / 100;
    let p = tmp.path().join("f");
    let p = p.to_str().unwrap();
    let start = std::time::Instant::now();
    for _ in 0..20 {
        t.write_file(p, b"x", &FileAttrs::default(), None).await.unwrap();
        t.stat(p, None).await.unwrap();
    }
    let file_ops = start.elapsed() / 40;
    let t = Arc::try_unwrap(t).ok().unwrap();
    let start = std::time::Instant::now();
    t.close().await;
    println!("close: {:?}", start.elapsed());
    println!("connect: {connects:?}");
    println!("command on a warm connection: {sequential:?} sequential, {parallel:?} per command with 100 in parallel (8 at a time)");
    println!("file op (write/stat): {file_ops:?}");
}
