//! A test host for system steps: an isolated sshd host (its own overlay of
//! `/`, optionally its own network), the SSH transport to it, and a step
//! context — plus a way to prove that a check wrote nothing.

use flowrun_engine::host::{ConnSpec, Host};
use flowrun_engine::step::{Check, Step, StepContext};
use flowrun_engine::transport::ssh::{SshOptions, SshTransport};
use flowrun_lab::sshd::{is_root, SshdHost, SshdOptions};
use flowrun_steps::testing::context;
use serde_json::Map;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

pub struct Lab {
    pub host: SshdHost,
    pub cx: StepContext,
    _tmp: tempfile::TempDir,
}

/// An isolated host, or `None` (the test is skipped) when not running as root.
pub async fn lab(test: &str, opts: SshdOptions) -> Option<Lab> {
    if !is_root() {
        eprintln!("skipping {test}: system steps run on isolated hosts, which need root (mount namespaces)");
        return None;
    }
    let host = SshdHost::start(opts).expect("start an isolated sshd host");
    let cx = connect(&host, None).await;
    Some(Lab {
        host,
        cx,
        _tmp: tempfile::tempdir().unwrap(),
    })
}

/// A context on `h` logged in as `user` (default: the host's root login).
pub async fn connect(h: &SshdHost, user: Option<&str>) -> StepContext {
    let conn = ConnSpec {
        port: Some(h.port()),
        user: Some(user.unwrap_or(h.user()).to_owned()),
        identity_file: Some(h.identity_file()),
        known_hosts_file: Some(h.known_hosts()),
        ..ConnSpec::default()
    };
    let host = Arc::new(Host::new(
        h.name().to_owned(),
        vec!["all".into()],
        Map::new(),
        conn,
        Some(h.address()),
    ));
    let opts = SshOptions {
        control_dir: h.dir().join(format!("ctl-{}", user.unwrap_or("root"))),
        ..SshOptions::default()
    };
    let t = SshTransport::connect(&host, &opts).await.expect("connect");
    context(host, Arc::new(t))
}

impl Lab {
    /// The same context in `--check` mode.
    pub fn check_mode(&self) -> StepContext {
        let mut cx = self.cx.clone();
        cx.mode.check = true;
        cx.mode.diff = true;
        cx
    }

    /// Every file written on the host so far (the overlay's upper layer), with size and time.
    pub fn written(&self) -> BTreeMap<PathBuf, (u64, SystemTime)> {
        let mut out = BTreeMap::new();
        walk(&self.host.upper_dir().expect("isolated host"), &mut out);
        out
    }

    /// Check in `--check` mode: it must find drift, and write nothing on the host.
    pub async fn check_reports_drift(&self, step: &dyn Step) -> String {
        let before = self.written();
        let summary = match step.check(&self.check_mode()).await.expect("check") {
            Check::Drift(p) => p.summary,
            Check::InSync(_) => panic!("check found the host in sync"),
        };
        assert_eq!(before, self.written(), "the check wrote on the host");
        summary
    }

    /// Run a script on the host (not over SSH); its stdout.
    pub fn sh(&self, script: &str) -> String {
        self.host.run_ok(script).unwrap()
    }

    pub fn file(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.host.host_path(path)).ok()
    }
}

fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (u64, SystemTime)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        out.insert(
            e.path(),
            (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
        );
        if meta.is_dir() {
            walk(&e.path(), out);
        }
    }
}
