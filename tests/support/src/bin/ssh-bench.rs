//! SSH benchmark: starts N real sshd hosts on loopback (default 10 and 50),
//! runs the ten-step workflow of `tests/data/web.yml` on all of them with the
//! `flowrun` binary, and prints the wall time of the first run, of the
//! journaled re-run and of the `--verify` re-run, plus the cost of one command
//! on a warm multiplexed connection. The hosts' sshd sets `SetEnv SHLVL=1`
//! so that a login shell's start-up files (root's .bashrc runs pyenv here)
//! do not dominate the figures.
//!
//! Run: `tests/bench/ssh.sh [N...]` (builds release binaries first).

use flowrun_lab::sshd::{write_inventory, SshdHost, SshdOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn flowrun_bin() -> PathBuf {
    std::env::var_os("FLOWRUN_BIN").map_or_else(
        || {
            let me = std::env::current_exe().expect("own path");
            me.parent().expect("bin dir").join("flowrun")
        },
        PathBuf::from,
    )
}

fn run(dir: &Path, args: &[&str]) -> f64 {
    let t0 = Instant::now();
    let out = Command::new(flowrun_bin())
        .args(args)
        .current_dir(dir)
        .env("FLOWRUN_JOURNAL", dir.join("journal.db"))
        .output()
        .expect("run flowrun");
    let secs = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        eprintln!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        panic!("flowrun {args:?} failed");
    }
    secs
}

fn main() {
    let counts: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() { vec![10, 50] } else { counts };
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
    for n in counts {
        let dir = tempfile::tempdir().unwrap();
        let wf = std::fs::read_to_string(data.join("web.yml"))
            .unwrap()
            .replace("$DIR", dir.path().to_str().unwrap());
        std::fs::write(dir.path().join("web.yml"), wf).unwrap();
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        std::fs::copy(
            data.join("templates/app.conf.hbs"),
            dir.path().join("templates/app.conf.hbs"),
        )
        .unwrap();
        let t0 = Instant::now();
        let hosts = SshdHost::start_many(
            n,
            &SshdOptions {
                name: Some("web".into()),
                ..SshdOptions::default()
            },
        )
        .expect("sshd hosts");
        let started = t0.elapsed().as_secs_f64();
        write_inventory(&dir.path().join("hosts.yml"), "web", &hosts).unwrap();
        let forks = (n * 4).clamp(10, 400).to_string();
        let args = ["run", "web.yml", "-i", "hosts.yml", "-q", "--forks", forks.as_str()];
        let first = run(dir.path(), &args);
        let cmds_before: usize = hosts.iter().map(SshdHost::commands_executed).sum();
        let journaled = run(dir.path(), &args);
        let cmds_after: usize = hosts.iter().map(SshdHost::commands_executed).sum();
        let mut verify_args = args.to_vec();
        verify_args.push("--verify");
        let verify = run(dir.path(), &verify_args);
        let verify_cmds: usize = hosts.iter().map(SshdHost::commands_executed).sum::<usize>() - cmds_after;
        println!(
            "{n:>3} hosts x 10 steps: first run {first:.2} s, journaled re-run {journaled:.3} s ({} SSH commands), \
             --verify re-run {verify:.2} s ({verify_cmds} SSH commands); {n} sshd started in {started:.1} s",
            cmds_after - cmds_before
        );
    }
    per_command();
}

/// One command on a warm multiplexed connection, through flowrun's transport.
fn per_command() {
    use flowrun_engine::host::{ConnSpec, Host, HostKeyPolicy};
    use flowrun_engine::pool::Connector;
    use flowrun_engine::transport::ssh::SshConnector;
    use flowrun_engine::transport::ExecRequest;
    let h = SshdHost::start(SshdOptions::default()).unwrap();
    let conn = ConnSpec {
        port: Some(h.port()),
        user: Some(h.user().to_owned()),
        identity_file: Some(h.identity_file()),
        known_hosts_file: Some(h.known_hosts()),
        host_key_policy: HostKeyPolicy::Strict,
        ..ConnSpec::default()
    };
    let host = Host::new("bench".into(), vec![], serde_json::Map::new(), conn, Some(h.address()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let connector = SshConnector::with_private_control_dir().unwrap();
        let t0 = Instant::now();
        let t = connector.connect(&host).await.unwrap();
        let connect = t0.elapsed();
        t.exec(ExecRequest::argv(["true"])).await.unwrap();
        let t0 = Instant::now();
        for _ in 0..100 {
            t.exec(ExecRequest::argv(["true"])).await.unwrap();
        }
        println!(
            "warm multiplexed connection: {:.1} ms per command (100 sequential); connect {:.0} ms",
            t0.elapsed().as_secs_f64() * 10.0,
            connect.as_secs_f64() * 1e3
        );
        t.close().await;
    });
}
