//! The core workflows over SSH against real sshd hosts on loopback: many
//! hosts at once, journaled re-runs that open no connection, `--verify` that
//! connects and finds no drift, and a host that dies in the middle of a run.

use crate::harness::Sandbox;
use flowrun_lab::sshd::{SshdHost, SshdOptions};
use std::time::{Duration, Instant};

/// Ten steps on every host of `web` (shared with the SSH benchmark).
const WEB: &str = include_str!("data/web.yml");

fn web(n: usize) -> (Sandbox, Vec<SshdHost>) {
    let sb = Sandbox::new();
    sb.write("web.yml", WEB);
    sb.write(
        "templates/app.conf.hbs",
        "name = {{inventory_hostname}}\nport = {{host.port}}\n",
    );
    let hosts = SshdHost::start_many(
        n,
        &SshdOptions {
            name: Some("web".into()),
            ..SshdOptions::default()
        },
    )
    .expect("sshd hosts");
    flowrun_lab::sshd::write_inventory(&sb.path("hosts.yml"), "web", &hosts).unwrap();
    (sb, hosts)
}

fn commands(hosts: &[SshdHost]) -> Vec<usize> {
    hosts.iter().map(SshdHost::commands_executed).collect()
}

#[test]
fn ten_hosts_converge_then_rerun_opens_no_connection_and_verify_finds_no_drift() {
    let (sb, hosts) = web(10);
    let r = sb.run(&["run", "web.yml", "-i", "hosts.yml"], 0);
    for h in &hosts {
        assert_eq!(
            r.recap(h.name()),
            "ok=0 changed=11 failed=0 skipped=0 unreachable=0",
            "{}",
            r.stdout
        );
        assert_eq!(sb.read(&format!("hosts/{}/done", h.name())), "ok\n");
        assert_eq!(
            sb.lines(&format!("hosts/{}/runs", h.name())),
            ["init", "slow", "restart"]
        );
    }
    // One multiplexed connection per host served the whole run.
    assert!(
        hosts.iter().all(|h| h.connections_accepted() == 1),
        "{:?}",
        hosts.iter().map(SshdHost::connections_accepted).collect::<Vec<_>>()
    );

    // At most one round trip to check and one to apply per step instance
    // (11 on each host, the handler included), counted on the hosts.
    let first = commands(&hosts);
    assert!(
        first.iter().all(|&c| c <= 2 * 11),
        "remote commands per host: {first:?}"
    );
    let before = commands(&hosts);
    let r = sb.run(&["run", "web.yml", "-i", "hosts.yml"], 0);
    for h in &hosts {
        assert_eq!(
            r.recap(h.name()),
            "ok=10 changed=0 failed=0 skipped=0 unreachable=0",
            "{}",
            r.stdout
        );
    }
    assert_eq!(commands(&hosts), before, "a journaled re-run ran SSH commands");
    assert!(
        hosts.iter().all(|h| h.connections_accepted() == 1),
        "a journaled re-run connected"
    );

    let r = sb.run(&["run", "web.yml", "-i", "hosts.yml", "--verify"], 0);
    for h in &hosts {
        // `slow` is an unguarded command: it runs again under --verify, by design.
        assert_eq!(
            r.recap(h.name()),
            "ok=9 changed=1 failed=0 skipped=0 unreachable=0",
            "{}",
            r.stdout
        );
    }
    // --verify probes each of the 10 instances once; nothing had drifted.
    let verify: Vec<usize> = commands(&hosts).iter().zip(&before).map(|(a, b)| a - b).collect();
    assert!(
        verify.iter().all(|&c| (1..=10).contains(&c)),
        "--verify's remote commands per host: {verify:?}"
    );
    r.stdout_has("ok: [web-01] app-conf\n");
}

#[test]
fn a_host_that_dies_mid_run_is_unreachable_others_finish_and_the_next_run_resumes_it() {
    let (sb, mut hosts) = web(4);
    let child = sb
        .cmd(&["run", "web.yml", "-i", "hosts.yml", "-e", "pause=3"])
        .cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until web-03 is inside its slow step, then kill it.
    let t0 = Instant::now();
    while !sb.read("hosts/web-03/runs").contains("init") || !sb.exists("hosts/web-03/data/.init") {
        assert!(t0.elapsed() < Duration::from_secs(30), "web-03 never reached `slow`");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    hosts[2].kill();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("unreachable: [web-03] slow"), "{stdout}");
    let recap = |host: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{host} ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(recap("web-03").contains("unreachable=1"), "{stdout}");
    assert!(recap("web-03").contains("failed=0"), "{stdout}");
    for h in ["web-01", "web-02", "web-04"] {
        assert!(
            recap(h).contains("changed=11 failed=0 skipped=0 unreachable=0"),
            "{stdout}"
        );
    }

    hosts[2].restart(&[]).unwrap();
    let others: Vec<usize> = [0, 1, 3].iter().map(|&i| hosts[i].commands_executed()).collect();
    let r = sb.run(&["run", "web.yml", "-i", "hosts.yml", "-e", "pause=3"], 0);
    assert!(
        r.recap("web-03").contains("changed=3 failed=0"),
        "only slow, done and the handler: {}",
        r.stdout
    );
    for h in ["web-01", "web-02", "web-04"] {
        assert_eq!(r.recap(h), "ok=10 changed=0 failed=0 skipped=0 unreachable=0");
    }
    assert_eq!(
        [0, 1, 3]
            .iter()
            .map(|&i| hosts[i].commands_executed())
            .collect::<Vec<_>>(),
        others,
        "healthy hosts were contacted"
    );
}
