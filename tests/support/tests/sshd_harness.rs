//! The sshd harness itself, checked with the system `ssh` client: hosts
//! accept exactly their client key, count commands, die when killed, and
//! isolated hosts keep their writes (files, network rules) to themselves.

use flowrun_lab::sshd::{inventory_yaml, is_root, Isolation, SshdHost, SshdOptions, Sudo};
use std::process::{Command, Output};

fn ssh(host: &SshdHost, user: &str, cmd: &str) -> Output {
    Command::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-F",
            "/dev/null",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", host.known_hosts().display()))
        .arg("-i")
        .arg(host.identity_file())
        .args(["-p", &host.port().to_string(), "-l", user, &host.address(), cmd])
        .output()
        .unwrap()
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("skipping {test}: isolated hosts need root (mount namespaces)");
    true
}

#[test]
fn plain_host_runs_commands_and_counts_them() {
    let mut h = SshdHost::start(SshdOptions::default()).unwrap();
    assert!(h.ip().is_loopback());
    let out = ssh(&h, h.user(), "echo hello");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    ssh(&h, h.user(), "true");
    assert_eq!(h.commands_executed(), 2);
    assert_eq!(h.connections_accepted(), 2);
    h.kill();
    assert!(!h.is_running());
    let out = ssh(&h, h.user(), "true");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"));
}

#[test]
fn many_hosts_get_distinct_addresses_and_an_inventory() {
    let hosts = SshdHost::start_many(3, &SshdOptions::default().name("web")).unwrap();
    let mut addrs: Vec<_> = hosts.iter().map(|h| (h.address(), h.port())).collect();
    addrs.dedup();
    assert_eq!(addrs.len(), 3);
    let yaml = inventory_yaml("web", &hosts);
    assert!(yaml.contains("\"web-01\":"), "{yaml}");
    assert!(yaml.contains(&format!("port: {}", hosts[2].port())), "{yaml}");
    assert!(yaml.contains("known_hosts_file:"), "{yaml}");
    for h in &hosts {
        assert!(ssh(h, h.user(), "true").status.success());
    }
}

#[test]
fn isolated_host_keeps_writes_to_itself() {
    if skip_unless_root("isolated_host_keeps_writes_to_itself") {
        return;
    }
    let mut h = SshdHost::start(SshdOptions::isolated()).unwrap();
    let marker = format!("/etc/flowrun-lab-marker-{}", h.port());
    let out = ssh(&h, "root", &format!("echo inside > {marker} && cat {marker}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the machine's /etc was changed"
    );
    assert_eq!(std::fs::read_to_string(h.host_path(&marker)).unwrap(), "inside\n");
    assert_eq!(h.run_ok(&format!("cat {marker}")).unwrap(), "inside\n");
    // Every write on the host shows in the overlay's upper layer.
    let upper = h.upper_dir().unwrap();
    assert!(upper.join(marker.trim_start_matches('/')).exists());
    // No systemd inside: service steps take the SysV fallback.
    assert!(!h.host_path("/run/systemd/system").exists());
    // Users and sudo rules live in the host only.
    h.add_user("flowrun-nopw", Sudo::NoPassword).unwrap();
    assert!(std::process::Command::new("id")
        .arg("flowrun-nopw")
        .output()
        .is_ok_and(|o| !o.status.success()));
    let out = ssh(&h, "flowrun-nopw", "sudo -n id -un");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "root\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.kill();
    assert!(!ssh(&h, "root", "true").status.success());
}

#[test]
fn isolated_network_host_has_its_own_firewall() {
    if skip_unless_root("isolated_network_host_has_its_own_firewall") {
        return;
    }
    let h = SshdHost::start(SshdOptions::isolated_network()).unwrap();
    assert_eq!(h.isolation(), Isolation::FilesystemAndNetwork);
    let table = format!("flowrun_lab_{}", h.port());
    let out = ssh(&h, "root", &format!("nft add table inet {table} && nft list tables"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&table));
    let mine = Command::new("nft").args(["list", "tables"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&mine.stdout).contains(&table),
        "the machine's ruleset was changed"
    );
}
