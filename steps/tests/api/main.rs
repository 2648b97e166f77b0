//! The API steps against the emulators of Proxmox VE, GitLab and GitHub:
//! create, re-run in sync without writes, drift, teardown, injected faults,
//! and secrets that never show in errors or logs.

mod client;
mod github;
mod gitlab;
mod logs;
mod proxmox;
mod strictness;

use flowrun_engine::host::{Host, HostTable};
use flowrun_engine::step::{Check, Step, StepContext, StepKind};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Build a step from JSON parameters.
pub fn build(kind: &dyn StepKind, params: Value) -> Box<dyn Step> {
    let dir = std::env::temp_dir();
    flowrun_steps::testing::build(kind, params, Value::Object(Map::new()), &dir).expect("build the step")
}

/// A local context whose inventory also holds `hosts` (without addresses).
pub fn context_with_hosts(hosts: &[&str]) -> StepContext {
    let mut cx = flowrun_steps::testing::local_context();
    let mut table = HostTable::default();
    table.hosts.insert("localhost".into(), cx.host.clone());
    for h in hosts {
        table.hosts.insert(
            (*h).to_owned(),
            Arc::new(Host::new(
                (*h).to_owned(),
                vec!["all".into()],
                Map::new(),
                Default::default(),
                None,
            )),
        );
    }
    cx.hosts = Arc::new(table);
    cx
}

/// The check's pending summary, failing the test when in sync.
pub async fn drift(step: &dyn Step, cx: &StepContext) -> String {
    match step.check(cx).await.expect("check") {
        Check::Drift(p) => p.summary,
        Check::InSync(o) => panic!("expected drift, in sync with {o:?}"),
    }
}

/// The check's outputs, failing the test on drift.
pub async fn in_sync(step: &dyn Step, cx: &StepContext) -> Map<String, Value> {
    match step.check(cx).await.expect("check") {
        Check::InSync(o) => o,
        Check::Drift(p) => panic!("expected in sync, drift: {}", p.summary),
    }
}
