//! `firewall` on a host with its own network namespace: the rules go into
//! its kernel, never this machine's, and the SSH connection that carries the
//! test survives a drop policy that allows it.

use super::lab::lab;
use flowrun_engine::step::{Check, Step};
use flowrun_lab::sshd::SshdOptions;
use flowrun_steps::firewall::FirewallKind;
use flowrun_steps::testing::{assert_idempotent, build, converge};
use serde_json::{json, Value};
use std::path::Path;

fn step(params: Value) -> Result<Box<dyn Step>, flowrun_engine::step::StepError> {
    build(&FirewallKind, params, json!({}), Path::new("."))
}

#[tokio::test]
async fn nftables_table_converges() {
    let Some(lab) = lab("nftables_table_converges", SshdOptions::isolated_network()).await else {
        return;
    };
    let machine_before = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    // The host is reached on its relay port; inside it, sshd listens on 22.
    let rules = json!([
        {"port": 22},
        {"port": lab.host.port()},
        {"port": 9100, "from": "10.1.2.3/8"},
        {"port": "60000-60010", "proto": "udp", "action": "deny"},
        {"direction": "out", "to": "192.0.2.1", "port": 53, "proto": "udp"}
    ]);
    let fw = step(json!({"rules": rules, "input_policy": "drop"})).unwrap();
    let summary = lab.check_reports_drift(fw.as_ref()).await;
    assert_eq!(summary, "create nftables table `inet flowrun` (5 rules)");
    assert_eq!(lab.sh("nft list tables"), "");
    assert_idempotent(fw.as_ref(), &lab.cx).await;
    let listed = lab.sh("nft list table inet flowrun");
    assert!(listed.contains("policy drop;"), "{listed}");
    assert!(listed.contains("ip saddr 10.0.0.0/8 tcp dport 9100 accept"), "{listed}");
    assert!(listed.contains("udp dport 60000-60010 drop"), "{listed}");
    assert!(listed.contains("ip daddr 192.0.2.1 udp dport 53 accept"), "{listed}");
    // The drop policy is live and SSH still works: the step just ran over it, and runs again.
    assert!(matches!(fw.check(&lab.cx).await.unwrap(), Check::InSync(_)));

    // A rule added by hand is drift; the table is put back as declared, with a diff.
    lab.sh("nft add rule inet flowrun input tcp dport 1234 accept");
    let mut diff_cx = lab.cx.clone();
    diff_cx.mode.diff = true;
    let Check::Drift(p) = fw.check(&diff_cx).await.unwrap() else {
        panic!("a rule added by hand was not noticed");
    };
    assert_eq!(p.summary, "replace the rules of nftables table `inet flowrun`");
    let diff = p.diff.unwrap();
    assert!(
        diff.lines()
            .any(|l| l.starts_with('-') && l.contains("tcp dport 1234 accept")),
        "{diff}"
    );
    assert!(converge(fw.as_ref(), &lab.cx).await.unwrap().changed);
    assert!(!lab.sh("nft list table inet flowrun").contains("1234"));

    // Changed rules replace the table in one transaction.
    let fewer = step(json!({"rules": [{"port": 22}, {"port": lab.host.port()}], "input_policy": "drop"})).unwrap();
    assert_idempotent(fewer.as_ref(), &lab.cx).await;
    assert!(!lab.sh("nft list table inet flowrun").contains("9100"));

    // Absent deletes it.
    let gone = step(json!({"state": "absent"})).unwrap();
    let summary = lab.check_reports_drift(gone.as_ref()).await;
    assert_eq!(summary, "delete nftables table `inet flowrun`");
    assert_idempotent(gone.as_ref(), &lab.cx).await;
    assert_eq!(lab.sh("nft list tables"), "");

    let machine_after = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    assert_eq!(machine_before, machine_after, "this machine's ruleset changed");
}

#[tokio::test]
async fn a_drop_policy_that_would_lock_flowrun_out_is_refused() {
    let Some(lab) = lab(
        "a_drop_policy_that_would_lock_flowrun_out_is_refused",
        SshdOptions::isolated_network(),
    )
    .await
    else {
        return;
    };
    let fw = step(json!({"rules": [{"port": 80}], "input_policy": "drop"})).unwrap();
    let err = converge(fw.as_ref(), &lab.cx).await.unwrap_err();
    assert!(
        err.message.contains(&format!(
            "no rule allowing SSH (tcp port {}) would cut flowrun off",
            lab.host.port()
        )),
        "{err}"
    );
    assert_eq!(lab.sh("nft list tables"), "");
    assert!(step(json!({"rules": [{"port": 22, "proto": "sctp"}]})).is_err());
    assert!(step(json!({"rules": [{"port": 22}], "backend": "ufw"})).is_err());
}
