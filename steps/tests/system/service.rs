//! `service` on an isolated host, which runs no systemd: the SysV path, with
//! a real init script (start-stop-daemon) and `update-rc.d` links.

use super::lab::{lab, Lab};
use flowrun_engine::step::{Check, Step};
use flowrun_lab::sshd::SshdOptions;
use flowrun_steps::service::ServiceKind;
use flowrun_steps::testing::{assert_idempotent, build, converge};
use serde_json::{json, Value};
use std::path::Path;

const SCRIPT: &str = r#"#!/bin/sh
### BEGIN INIT INFO
# Provides:          flowrun-lab-daemon
# Required-Start:
# Required-Stop:
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: flowrun's test daemon
### END INIT INFO
PIDFILE=/run/flowrun-lab-daemon.pid
case "$1" in
  start) start-stop-daemon --start --quiet --background --make-pidfile --pidfile $PIDFILE --exec /usr/bin/sleep -- 100000 ;;
  stop) start-stop-daemon --stop --quiet --oknodo --remove-pidfile --pidfile $PIDFILE ;;
  restart) "$0" stop; "$0" start ;;
  reload|force-reload) date +%s%N >> /run/flowrun-lab-daemon.reloads ;;
  status) start-stop-daemon --status --pidfile $PIDFILE ;;
  *) echo "usage: $0 start|stop|restart|reload|status" >&2; exit 3 ;;
esac
"#;

fn step(params: Value) -> Box<dyn Step> {
    build(&ServiceKind, params, json!({}), Path::new(".")).unwrap()
}

fn pid(lab: &Lab) -> Option<String> {
    lab.file("/run/flowrun-lab-daemon.pid").map(|p| p.trim().to_owned())
}

fn running(lab: &Lab) -> bool {
    lab.host
        .run("start-stop-daemon --status --pidfile /run/flowrun-lab-daemon.pid")
        .unwrap()
        .status
        .success()
}

fn enabled_links(lab: &Lab) -> String {
    lab.sh("ls /etc/rc2.d /etc/rc0.d | grep flowrun-lab-daemon || true")
}

#[tokio::test]
async fn sysv_service_converges() {
    let Some(lab) = lab("sysv_service_converges", SshdOptions::isolated()).await else {
        return;
    };
    std::fs::write(lab.host.dir().join("init-script"), SCRIPT).unwrap();
    lab.sh(&format!(
        "install -m 0755 {}/init-script /etc/init.d/flowrun-lab-daemon",
        lab.host.dir().display()
    ));

    let up = step(json!({"name": "flowrun-lab-daemon", "state": "started", "enabled": true}));
    let summary = lab.check_reports_drift(up.as_ref()).await;
    assert_eq!(summary, "enable `flowrun-lab-daemon`; start `flowrun-lab-daemon`");
    assert!(!running(&lab));
    let first = assert_idempotent(up.as_ref(), &lab.cx).await;
    assert_eq!(first.outputs["manager"], json!("sysv"));
    assert_eq!(first.outputs["running"], json!(true));
    assert!(running(&lab));
    assert!(
        enabled_links(&lab).contains("S01flowrun-lab-daemon"),
        "{}",
        enabled_links(&lab)
    );

    // restarted always restarts: a new process.
    let before = pid(&lab);
    let restart = step(json!({"name": "flowrun-lab-daemon", "state": "restarted"}));
    assert!(converge(restart.as_ref(), &lab.cx).await.unwrap().changed);
    assert!(running(&lab));
    assert_ne!(pid(&lab), before);

    // reloaded always reloads.
    let reload = step(json!({"name": "flowrun-lab-daemon", "state": "reloaded"}));
    assert!(converge(reload.as_ref(), &lab.cx).await.unwrap().changed);
    assert_eq!(lab.file("/run/flowrun-lab-daemon.reloads").unwrap().lines().count(), 1);

    // Stopped and disabled.
    let down = step(json!({"name": "flowrun-lab-daemon", "state": "stopped", "enabled": false}));
    let summary = lab.check_reports_drift(down.as_ref()).await;
    assert_eq!(summary, "disable `flowrun-lab-daemon`; stop `flowrun-lab-daemon`");
    assert_idempotent(down.as_ref(), &lab.cx).await;
    assert!(!running(&lab));
    let links = enabled_links(&lab);
    assert!(
        !links.contains("S01") && links.contains("K01flowrun-lab-daemon"),
        "{links}"
    );

    // Someone starts it by hand: drift, repaired.
    lab.sh("service flowrun-lab-daemon start");
    assert!(matches!(down.check(&lab.cx).await.unwrap(), Check::Drift(_)));
    assert!(converge(down.as_ref(), &lab.cx).await.unwrap().changed);
    assert!(!running(&lab));
}

#[tokio::test]
async fn a_missing_service_fails_but_a_dry_run_only_reports_it() {
    let Some(lab) = lab(
        "a_missing_service_fails_but_a_dry_run_only_reports_it",
        SshdOptions::isolated(),
    )
    .await
    else {
        return;
    };
    let s = step(json!({"name": "flowrun-lab-none", "state": "started"}));
    let err = converge(s.as_ref(), &lab.cx).await.unwrap_err();
    assert!(
        err.message
            .contains("service `flowrun-lab-none` is not installed (no /etc/init.d/flowrun-lab-none script)"),
        "{err}"
    );
    let summary = lab.check_reports_drift(s.as_ref()).await;
    assert!(summary.contains("not installed yet"), "{summary}");
}

#[tokio::test]
async fn a_daemon_that_dies_at_start_is_a_failure() {
    let Some(lab) = lab("a_daemon_that_dies_at_start_is_a_failure", SshdOptions::isolated()).await else {
        return;
    };
    // `start` succeeds, but nothing keeps running.
    let broken = SCRIPT.replace("--exec /usr/bin/sleep -- 100000", "--exec /usr/bin/true");
    std::fs::write(lab.host.dir().join("init-script"), broken).unwrap();
    lab.sh(&format!(
        "install -m 0755 {}/init-script /etc/init.d/flowrun-lab-daemon",
        lab.host.dir().display()
    ));
    let up = step(json!({"name": "flowrun-lab-daemon", "state": "started"}));
    let err = converge(up.as_ref(), &lab.cx).await.unwrap_err();
    assert!(err.message.contains("is not running after `start`"), "{err}");
}
