//! `user` and `group` on an isolated host: real shadow tools, real
//! `/etc/passwd` and `/etc/group` (the host's, never this machine's).

use super::lab::lab;
use flowrun_engine::step::Step;
use flowrun_lab::sshd::SshdOptions;
use flowrun_steps::testing::{assert_idempotent, build};
use flowrun_steps::user::{GroupKind, UserKind};
use serde_json::{json, Value};
use std::path::Path;

fn step(kind: &dyn flowrun_engine::step::StepKind, params: Value) -> Box<dyn Step> {
    build(kind, params, json!({}), Path::new(".")).unwrap()
}

#[tokio::test]
async fn users_and_groups_converge() {
    let Some(lab) = lab("users_and_groups_converge", SshdOptions::isolated()).await else {
        return;
    };
    let group = step(&GroupKind, json!({"name": "flowrun-ci", "gid": 4711}));
    assert_eq!(
        lab.check_reports_drift(group.as_ref()).await,
        "create group `flowrun-ci`"
    );
    let first = assert_idempotent(group.as_ref(), &lab.cx).await;
    assert_eq!(first.outputs["gid"], json!(4711));
    assert_eq!(lab.sh("getent group flowrun-ci"), "flowrun-ci:x:4711:\n");
    let moved = step(&GroupKind, json!({"name": "flowrun-ci", "gid": 4712}));
    assert_eq!(
        lab.check_reports_drift(moved.as_ref()).await,
        "group `flowrun-ci`: gid 4711 -> 4712"
    );
    assert_idempotent(moved.as_ref(), &lab.cx).await;

    let user = step(
        &UserKind,
        json!({"name": "flowrun-runner", "uid": 4800, "groups": ["flowrun-ci", "adm"], "shell": "/bin/bash",
               "comment": "CI runner"}),
    );
    assert_eq!(
        lab.check_reports_drift(user.as_ref()).await,
        "create user `flowrun-runner`"
    );
    let first = assert_idempotent(user.as_ref(), &lab.cx).await;
    assert_eq!(first.outputs["home"], json!("/home/flowrun-runner"));
    assert_eq!(
        lab.sh("getent passwd flowrun-runner"),
        "flowrun-runner:x:4800:4800:CI runner:/home/flowrun-runner:/bin/bash\n"
    );
    assert_eq!(lab.sh("id -Gn flowrun-runner"), "flowrun-runner adm flowrun-ci\n");
    assert!(lab.host.host_path("/home/flowrun-runner").is_dir());

    // Someone adds a group by hand: exact `groups` take it away again; `append` would not.
    lab.sh("usermod -a -G users flowrun-runner");
    let appending = step(
        &UserKind,
        json!({"name": "flowrun-runner", "groups": ["flowrun-ci"], "append": true}),
    );
    assert!(matches!(
        appending.check(&lab.cx).await.unwrap(),
        flowrun_engine::step::Check::InSync(_)
    ));
    let summary = lab.check_reports_drift(user.as_ref()).await;
    assert!(summary.contains("groups "), "{summary}");
    assert_idempotent(user.as_ref(), &lab.cx).await;
    assert_eq!(lab.sh("id -Gn flowrun-runner"), "flowrun-runner adm flowrun-ci\n");

    let gone = step(
        &UserKind,
        json!({"name": "flowrun-runner", "state": "absent", "remove": true}),
    );
    assert_idempotent(gone.as_ref(), &lab.cx).await;
    assert!(!lab.host.host_path("/home/flowrun-runner").exists());
    let gone = step(&GroupKind, json!({"name": "flowrun-ci", "state": "absent"}));
    assert_idempotent(gone.as_ref(), &lab.cx).await;
    assert!(!std::fs::read_to_string("/etc/group").unwrap().contains("flowrun-ci"));
}
