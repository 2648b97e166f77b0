//! The instance pipeline, shared by runs, handlers and `plan`:
//! `when` → render `with` → build → resolve `become` → fingerprint → journal
//! lookup. [`Instance::prepare`] does all of it without touching a host;
//! what follows (check, apply, record) is the run's alone (`run_instance`).

use super::context::RunContext;
use super::converge::{converge, Converged};
use super::items::Item;
use super::record::{register_secret_outputs, restore_outputs};
use crate::host::Host;
use crate::journal::{Record, RecordKey};
use crate::model::StepDef;
use crate::report::Status;
use crate::secrets::{Masker, SecretKey};
use crate::step::{BuildContext, Mode, Outputs, Step, StepContext, StepError, StepErrorKind};
use crate::template::{truthy, Templates};
use crate::transport::Become;
use handlebars::Context;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// What preparing needs: the template engine, secrets, and the journal's records.
pub(crate) struct Pipeline<'a> {
    pub templates: &'a Templates,
    pub masker: &'a Masker,
    pub key: &'a SecretKey,
    pub records: &'a HashMap<RecordKey, Record>,
    /// Whether a matching record may stand in for running (a journal, no `--force`).
    pub use_journal: bool,
}

/// One step (or handler) on one host, for one item.
pub(crate) struct Instance<'a> {
    pub step: &'a StepDef,
    pub host: &'a Arc<Host>,
    pub item: Option<&'a Item>,
    pub handler: bool,
}

/// An instance after preparation.
pub(crate) enum Prepared {
    /// `when` rendered false: skipped.
    WhenFalse,
    Ready(Box<Ready>),
}

/// An instance built and fingerprinted, ready to be restored or converged.
pub(crate) struct Ready {
    /// The instance's variables, for `retry.until` and `changed_when`.
    pub context: Context,
    pub built: Box<dyn Step>,
    pub become_: Option<Become>,
    pub fingerprint: String,
    pub key: RecordKey,
    /// This instance's outputs as the journal last recorded them (whatever the fingerprint).
    pub previous: Option<Outputs>,
    /// The journal holds a success of exactly this instance (same fingerprint).
    pub fingerprint_matches: bool,
}

impl Ready {
    /// The outputs to restore when the journal stands in for running: a
    /// success with the same fingerprint, no `--verify`, no need that changed.
    pub fn journaled_outputs(&self, verify: bool, need_changed: bool) -> Option<&Outputs> {
        (self.fingerprint_matches && !verify && !need_changed)
            .then_some(self.previous.as_ref())
            .flatten()
    }
}

impl Instance<'_> {
    fn what(&self) -> &'static str {
        if self.handler {
            "handler"
        } else {
            "step"
        }
    }

    /// Render, build and fingerprint the instance, and look it up in the
    /// journal. `vars` are the node's variables (`item` is added here).
    pub fn prepare(&self, pipe: &Pipeline<'_>, mut vars: Value) -> Result<Prepared, StepError> {
        let step = self.step;
        if let (Some(item), Value::Object(m)) = (self.item, &mut vars) {
            m.insert("item".into(), item.value.clone());
        }
        // One render context per instance: every template renders against it.
        let context = Templates::context(vars);
        if let Some(condition) = &step.when {
            let name = format!("`when` of {} `{}`", self.what(), step.id);
            let v = pipe
                .templates
                .render_value_in(&name, condition, &context)
                .map_err(|e| StepError::failed(e.message))?;
            if !truthy(&v) {
                return Ok(Prepared::WhenFalse);
            }
        }
        let params = match pipe.templates.render_tree_in(
            &format!("{} `{}`, `with`", self.what(), step.id),
            &Value::Object(step.with.clone()),
            &context,
        ) {
            Ok(Value::Object(m)) => m,
            Ok(_) => Map::new(),
            Err(e) => return Err(StepError::failed(e.message)),
        };
        let built = self.build(pipe, &params, context.data())?;
        let become_ = resolve_become(step, self.host);
        let fingerprint = self.fingerprint(pipe, &params, built.fingerprint_extra(), become_.as_ref());
        let key = RecordKey {
            step_id: step.id.clone(),
            item: self.item.map(|i| i.key.clone()).unwrap_or_default(),
            host: self.host.name.clone(),
        };
        let (previous, fingerprint_matches) = if self.handler {
            (None, false)
        } else {
            let record = pipe.records.get(&key);
            let matches = pipe.use_journal && step.journal && record.is_some_and(|r| r.fingerprint == fingerprint);
            (
                record.and_then(|r| restore_outputs(pipe.masker, pipe.key, step, r)),
                matches,
            )
        };
        Ok(Prepared::Ready(Box::new(Ready {
            context,
            built,
            become_,
            fingerprint,
            key,
            previous,
            fingerprint_matches,
        })))
    }

    fn build(
        &self,
        pipe: &Pipeline<'_>,
        params: &Map<String, Value>,
        vars: &Value,
    ) -> Result<Box<dyn Step>, StepError> {
        let step = self.step;
        let cx = BuildContext {
            workflow_dir: &step.dir,
            templates: pipe.templates,
            vars,
            host: self.host,
        };
        step.kind.build(params, &cx).map_err(|e| {
            if self.handler {
                e
            } else {
                StepError::failed(format!("step `{}` (`{}`): {}", step.id, step.kind_name(), e.message))
            }
        })
    }

    /// What determines the instance's effect, hashed; secrets enter as keyed hashes.
    fn fingerprint(
        &self,
        pipe: &Pipeline<'_>,
        params: &Map<String, Value>,
        extra: Option<String>,
        become_: Option<&Become>,
    ) -> String {
        #[derive(serde::Serialize)]
        struct Material<'a> {
            kind: &'a str,
            version: u32,
            params: &'a Map<String, Value>,
            extra: Option<String>,
            host: String,
            item: &'a str,
            become_: Option<&'a str>,
        }
        let info = self.step.kind.info();
        let material = serde_json::to_string(&Material {
            kind: info.name,
            version: info.version,
            params,
            extra,
            host: self.host.identity(),
            item: self.item.map_or("", |i| i.key.as_str()),
            become_: become_.map(|b| b.user.as_str()),
        })
        .unwrap_or_default();
        let material = if pipe.masker.is_empty() {
            material
        } else {
            pipe.masker.hash_secrets(&material, pipe.key)
        };
        crate::transport::local::hex(&Sha256::digest(material.as_bytes()))
    }
}

/// `become` of an instance: the step's, else the host's.
fn resolve_become(step: &StepDef, host: &Host) -> Option<Become> {
    let on = step.become_.unwrap_or(host.conn.become_);
    on.then(|| Become {
        user: step
            .become_user
            .clone()
            .or_else(|| host.conn.become_user.clone())
            .unwrap_or_else(|| "root".into()),
    })
}

/// The context a step instance checks and applies in.
pub(crate) fn step_context(ctx: &RunContext, step: &StepDef, host: &Arc<Host>, ready: &mut Ready) -> StepContext {
    // Connected on first use: an API step that runs "on" a host never opens SSH to it.
    let transport: Arc<dyn crate::transport::Transport> =
        Arc::new(crate::pool::LazyTransport::new(ctx.env.pool.clone(), host.clone()));
    StepContext {
        host: host.clone(),
        transport,
        become_: ready.become_.take(),
        mode: Mode {
            check: ctx.opts.check,
            diff: ctx.opts.diff,
        },
        timeout: ctx.timeout_of(step),
        masker: ctx.env.masker.clone(),
        hosts: ctx.plan.hosts.clone(),
        previous: ready.previous.clone(),
    }
}

/// How one instance of a node ended.
pub(crate) struct InstanceOutcome {
    pub status: Status,
    pub outputs: Outputs,
}

impl InstanceOutcome {
    fn of(status: Status) -> Self {
        Self {
            status,
            outputs: Outputs::new(),
        }
    }
}

/// Run one instance of a node (holding `permit`, else taking a fork):
/// prepare, restore from the journal or converge, record.
pub(crate) async fn run_instance(
    ctx: Arc<RunContext>,
    node: usize,
    item: Option<Item>,
    vars: Arc<Value>,
    need_changed: bool,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> InstanceOutcome {
    let _permit = match permit {
        Some(p) => p,
        None => match ctx.forks.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return InstanceOutcome::of(Status::Skipped),
        },
    };
    let host = ctx.plan.nodes[node].host.clone();
    let workflow = ctx.plan.workflow.clone();
    let step = &workflow.steps[ctx.plan.nodes[node].step];
    let started = Instant::now();
    let instance = Instance {
        step,
        host: &host,
        item: item.as_ref(),
        handler: false,
    };
    let label = item.as_ref().map(|i| i.label.clone());
    let result = |status| ctx.result(step, &host.name, label.clone(), status, started);
    // Waiting for a fork is not having started: a run that stopped meanwhile
    // starts nothing new (but its rollbacks and cleanups).
    if ctx.stop.load(std::sync::atomic::Ordering::SeqCst) && !step.runs.handles_failures() {
        ctx.emit(result(Status::Skipped).message(super::node::STOPPING));
        return InstanceOutcome::of(Status::Skipped);
    }
    // The node's variables, shared by its items: taken over when this is the only user.
    let vars = Arc::try_unwrap(vars).unwrap_or_else(|shared| (*shared).clone());
    let mut ready = match instance.prepare(&ctx.pipeline(), vars) {
        Ok(Prepared::WhenFalse) => {
            ctx.emit(result(Status::Skipped).message("condition `when` is false"));
            return InstanceOutcome::of(Status::Skipped);
        }
        Ok(Prepared::Ready(ready)) => ready,
        Err(e) => return prepare_failed(&ctx, node, result(Status::Failed), e.message, need_changed),
    };
    if let Some(outputs) = ready.journaled_outputs(ctx.opts.verify, need_changed) {
        let outputs = outputs.clone();
        ready.built.restored(&outputs, &ctx.plan.hosts);
        let mut r = result(Status::Ok);
        r.from_journal = true;
        ctx.emit(r);
        return InstanceOutcome {
            status: Status::Ok,
            outputs,
        };
    }
    let journal_outputs = if ready.fingerprint_matches {
        ready.previous.clone()
    } else {
        None
    };
    ctx.env.sink.started(&step.id, &host.name, label.as_deref());
    let _running = ctx.running(node, label.clone());
    let cx = step_context(&ctx, step, &host, &mut ready);
    let mark = ctx.guarded[ctx.plan.nodes[node].step].then_some(&ready.key);
    let converged = converge(&ctx, step, ready.built.as_ref(), &cx, ready.context.data(), mark).await;
    match converged {
        Ok(done) => succeeded(&ctx, step, *ready, journal_outputs, done, result),
        Err(e) => failed(&ctx, node, label.clone(), ready.key, e, result).await,
    }
}

/// Rendering or building failed. In `--check`, a step that needs a step that
/// would change cannot know its inputs: that is a skip, not a failure.
fn prepare_failed(
    ctx: &RunContext,
    node: usize,
    result: crate::report::InstanceResult,
    message: String,
    need_changed: bool,
) -> InstanceOutcome {
    let (status, message) = if ctx.opts.check && need_changed {
        (
            Status::Skipped,
            format!("cannot check: it needs a step that would change first ({message})"),
        )
    } else {
        ctx.instance_failed(node, result.item.clone(), Status::Failed, &message);
        (Status::Failed, message)
    };
    let mut r = result.message(message);
    r.status = status;
    ctx.emit(r);
    InstanceOutcome::of(status)
}

fn succeeded(
    ctx: &RunContext,
    step: &StepDef,
    ready: Ready,
    journal_outputs: Option<Outputs>,
    done: Converged,
    result: impl Fn(Status) -> crate::report::InstanceResult,
) -> InstanceOutcome {
    let mut outputs = journal_outputs.unwrap_or_default();
    outputs.extend(done.outputs);
    register_secret_outputs(&ctx.env.masker, step.kind.info(), &outputs);
    let status = if done.changed { Status::Changed } else { Status::Ok };
    // The mark goes first: were the record written and the mark not, the
    // next run would roll back a success.
    ctx.unmark(&ready.key);
    if !ctx.opts.check && step.journal {
        ctx.put_record(step, ready.key, ready.fingerprint, status, &outputs);
    }
    let mut r = result(status);
    r.message = done.message;
    r.diff = done.diff;
    ctx.emit(r);
    InstanceOutcome { status, outputs }
}

async fn failed(
    ctx: &RunContext,
    node: usize,
    item: Option<String>,
    key: RecordKey,
    error: StepError,
    result: impl Fn(Status) -> crate::report::InstanceResult,
) -> InstanceOutcome {
    let host = &ctx.plan.nodes[node].host;
    ctx.unmark(&key);
    ctx.delete_record(key);
    let status = if error.kind == StepErrorKind::Unreachable {
        ctx.state().dead_hosts.insert(host.name.clone());
        ctx.env.pool.drop_host(&host.name).await;
        Status::Unreachable
    } else {
        Status::Failed
    };
    // Before this instance gives its fork back: a run that stops starts nothing more.
    ctx.instance_failed(node, item, status, &error.message);
    ctx.emit(result(status).message(error.message));
    InstanceOutcome::of(status)
}
