//! Helpers for the steps' own tests: build an instance from JSON parameters
//! and drive it through the engine's check → apply state machine, asserting
//! idempotency the way the engine relies on it.

use flowrun_engine::host::{Host, HostTable};
use flowrun_engine::secrets::Masker;
use flowrun_engine::step::{Applied, BuildContext, Check, Mode, Step, StepContext, StepError, StepKind};
use flowrun_engine::template::Templates;
use flowrun_engine::transport::local::LocalTransport;
use flowrun_engine::transport::Transport;
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Arc;

/// A context on this machine (the implicit `localhost`).
pub fn local_context() -> StepContext {
    context(Arc::new(Host::localhost(Map::new())), Arc::new(LocalTransport))
}

/// A context for `host` reached through `transport`.
pub fn context(host: Arc<Host>, transport: Arc<dyn Transport>) -> StepContext {
    let mut table = HostTable::default();
    table.hosts.insert(host.name.clone(), host.clone());
    StepContext {
        host,
        transport,
        become_: None,
        mode: Mode::default(),
        timeout: None,
        masker: Masker::global(),
        hosts: Arc::new(table),
        previous: None,
    }
}

/// Build a step of `kind` from `params` (a JSON object), templates rendered against `vars`.
pub fn build(kind: &dyn StepKind, params: Value, vars: Value, workflow_dir: &Path) -> Result<Box<dyn Step>, StepError> {
    let templates = Templates::new();
    let Value::Object(params) = templates
        .render_tree("test", &params, &vars)
        .map_err(|e| StepError::failed(e.to_string()))?
    else {
        panic!("params must be a JSON object");
    };
    let host = Host::localhost(Map::new());
    let cx = BuildContext {
        workflow_dir,
        templates: &templates,
        vars: &vars,
        host: &host,
    };
    kind.build(&params, &cx)
}

/// check → apply (when drifted) as the engine does; returns whether it changed.
pub async fn converge(step: &dyn Step, cx: &StepContext) -> Result<Applied, StepError> {
    match step.check(cx).await? {
        Check::InSync(outputs) => Ok(Applied {
            changed: false,
            outputs,
            message: None,
        }),
        Check::Drift(p) => step.apply(cx, p).await,
    }
}

/// The idempotency contract: the first converge changes, a check afterwards is in sync,
/// and a second converge changes nothing.
pub async fn assert_idempotent(step: &dyn Step, cx: &StepContext) -> Applied {
    let first = converge(step, cx).await.expect("first apply");
    assert!(first.changed, "first apply should change something");
    match step.check(cx).await.expect("check after apply") {
        Check::InSync(_) => {}
        Check::Drift(p) => panic!("not idempotent: after apply, check still finds drift: {}", p.summary),
    }
    let second = converge(step, cx).await.expect("second apply");
    assert!(!second.changed, "second apply changed again");
    first
}
