//! The executor: runs a [`Plan`]. Nodes start as soon as the nodes they need
//! are done (no phase barriers), bounded by `--forks`; each node expands its
//! `for_each` items into instances that run concurrently. For each instance
//! the engine owns the state machine: `when` → render → build → fingerprint →
//! journal (skip with outputs restored) → `check` → `apply` (unless
//! `--check`), under `retry` and `timeout`, and records the result. A failure
//! on one host blocks that host's dependents while other hosts go on.
//! Handlers run once per host at the end, and stay owed in the journal until
//! they succeed. SIGINT/SIGTERM stop the run with the journal consistent.

use crate::host::Host;
use crate::journal::{Journal, LockHolder, Record, RecordKey, RunRow, RunStep};
use crate::model::StepDef;
use crate::plan::Plan;
use crate::pool::Pool;
use crate::report::{Counters, InstanceResult, Outcome, RunReport, Status};
use crate::secrets::{Masker, SecretKey};
use crate::step::{BuildContext, Check, Mode, Outputs, StepContext, StepError, StepErrorKind};
use crate::template::{truthy, Templates};
use crate::transport::Become;
use indexmap::IndexMap;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub check: bool,
    pub diff: bool,
    pub verify: bool,
    pub force: bool,
    pub forks: usize,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub extra_vars: Map<String, Value>,
    /// Wait this long for another run's lock instead of giving up at once.
    pub wait_lock: Option<Duration>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            check: false,
            diff: false,
            verify: false,
            force: false,
            forks: 10,
            tags: Vec::new(),
            skip_tags: Vec::new(),
            extra_vars: Map::new(),
            wait_lock: None,
        }
    }
}

/// Receives results as they happen (the CLI prints them).
pub trait EventSink: Send + Sync {
    fn started(&self, _step: &str, _host: &str, _item: Option<&str>) {}
    fn finished(&self, result: &InstanceResult);
}

/// A sink that drops everything.
pub struct NoEvents;
impl EventSink for NoEvents {
    fn finished(&self, _: &InstanceResult) {}
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("another run of this workflow and inventory is in progress: {0}")]
    Locked(LockHolder),
    /// A signal came while the run waited for the lock: nothing ran.
    #[error("interrupted by signal {0} while waiting for the lock; nothing was run")]
    Interrupted(i32),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The operating system's random source failed.
    #[error("no randomness available: {0}")]
    Random(std::io::Error),
}

/// Everything a run needs besides the plan.
pub struct RunEnv {
    pub journal: Option<Arc<Journal>>,
    pub key: SecretKey,
    pub masker: Arc<Masker>,
    /// Resolved secret values by name (`secrets.NAME` in templates).
    pub secrets: Map<String, Value>,
    pub pool: Arc<Pool>,
    pub sink: Arc<dyn EventSink>,
    /// Becomes `Some(signal)` when the run must stop.
    pub interrupt: watch::Receiver<Option<i32>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeStatus {
    Ok,
    Changed,
    Failed,
    Unreachable,
    Skipped,
    /// Not run because something it needs failed (or the run is stopping).
    Blocked,
}

struct State {
    status: Vec<Option<NodeStatus>>,
    /// (step index, host) → `{outputs, results, status, changed}` as templates see it.
    outputs: HashMap<(usize, String), Value>,
    dead_hosts: HashSet<String>,
    failed_hosts: HashSet<String>,
    /// host → handler indices notified in this run.
    notified: IndexMap<String, Vec<usize>>,
    results: Vec<InstanceResult>,
}

struct Ctx {
    plan: Arc<Plan>,
    opts: RunOptions,
    run_id: String,
    templates: Templates,
    env: RunEnv,
    records: HashMap<RecordKey, Record>,
    host_base: HashMap<String, Arc<Map<String, Value>>>,
    /// Per step: its transitive `needs`, as step indices.
    ancestors: Vec<Vec<usize>>,
    needs_render: Vec<bool>,
    forks: Semaphore,
    seq: AtomicU64,
    stop: AtomicBool,
    state: Mutex<State>,
}

impl Ctx {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn wf(&self) -> &crate::model::Workflow {
        &self.plan.workflow
    }
}

/// A new run id: UTC time and a random suffix.
pub fn new_run_id() -> Result<String, RunError> {
    let mut r = [0u8; 3];
    getrandom::fill(&mut r).map_err(|e| RunError::Random(std::io::Error::other(e.to_string())))?;
    Ok(format!(
        "{}-{}",
        crate::clock::utc_stamp(SystemTime::now()),
        crate::transport::local::hex(&r)
    ))
}

/// Run a plan: take the lock (waiting for it when `wait_lock` says so), run,
/// record, release. `Err(Locked)` when another live run of the same workflow
/// and inventory holds the lock; `Err(Journal)` when the journal failed (the
/// run stops at once: what was not recorded runs again next time).
pub async fn run(plan: Arc<Plan>, opts: RunOptions, mut env: RunEnv) -> Result<RunReport, RunError> {
    let run_id = new_run_id()?;
    let wf_name = plan.workflow.name.clone();
    let inv = plan.inventory_id.clone();
    let journal = env.journal.clone();
    let mut records = HashMap::new();
    if let Some(j) = &journal {
        if let Some(holder) = take_lock(j, &wf_name, &inv, &run_id, opts.wait_lock, &mut env.interrupt).await? {
            return Err(RunError::Locked(holder));
        }
        records = j.load(&wf_name)?;
        let mode = if opts.check {
            "check"
        } else if opts.verify {
            "verify"
        } else if opts.force {
            "force"
        } else {
            "run"
        };
        j.begin_run(RunRow {
            id: run_id.clone(),
            workflow: wf_name.clone(),
            inventory: inv.clone(),
            started_at: i64::try_from(
                SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            )
            .unwrap_or(0),
            finished_at: None,
            status: "running".into(),
            host: crate::journal::this_host(),
            pid: i64::from(std::process::id()),
            mode: mode.into(),
            totals: None,
        });
        env.interrupt = stop_on_journal_failure(env.interrupt.clone(), j.failures());
    }
    let pending = match &journal {
        Some(j) if !opts.check => j.pending_handlers(&wf_name)?,
        _ => Vec::new(),
    };
    let report = execute(plan, opts, env, run_id.clone(), records, pending).await;
    if let Some(j) = &journal {
        let totals = serde_json::to_value(report.totals()).unwrap_or(Value::Null);
        j.finish_run(&run_id, report.status_word(), &totals);
        j.unlock(&wf_name, &inv, &run_id);
        j.flush()?;
    }
    Ok(report)
}

/// Take the lock, or wait in line for it off the runtime's threads; a
/// signal while waiting ends the wait and the run.
async fn take_lock(
    j: &Arc<Journal>,
    wf: &str,
    inv: &str,
    run_id: &str,
    wait: Option<Duration>,
    interrupt: &mut watch::Receiver<Option<i32>>,
) -> Result<Option<LockHolder>, RunError> {
    let Some(wait) = wait else {
        return Ok(j.lock(wf, inv, run_id)?);
    };
    let (j2, w, i, r) = (j.clone(), wf.to_owned(), inv.to_owned(), run_id.to_owned());
    let mut task = tokio::task::spawn_blocking(move || j2.lock_wait(&w, &i, &r, Some(wait)));
    let gone = |e: tokio::task::JoinError| RunError::Journal(crate::journal::JournalError::Sql(e.to_string()));
    let mut open = true;
    loop {
        let signal = *interrupt.borrow();
        if let Some(sig) = signal {
            j.cancel_lock_wait();
            if let Ok(Ok(None)) = (&mut task).await {
                // Taken just as the signal came: give it back.
                j.unlock(wf, inv, run_id);
                j.flush()?;
            }
            return Err(RunError::Interrupted(sig));
        }
        tokio::select! {
            r = &mut task => return Ok(r.map_err(gone)??),
            changed = interrupt.changed(), if open => open = changed.is_ok(),
        }
    }
}

/// What `execute` sees as its interrupt: the caller's signals, and a stop
/// (signal 0) as soon as a journal write fails.
fn stop_on_journal_failure(
    mut signals: watch::Receiver<Option<i32>>,
    mut failed: watch::Receiver<Option<String>>,
) -> watch::Receiver<Option<i32>> {
    let (tx, rx) = watch::channel(*signals.borrow());
    tokio::spawn(async move {
        let mut open = true;
        loop {
            tokio::select! {
                changed = signals.changed(), if open => match changed {
                    Ok(()) => {
                        tx.send_replace(*signals.borrow());
                    }
                    Err(_) => open = false,
                },
                changed = failed.changed() => {
                    if changed.is_err() || failed.borrow().is_some() {
                        if changed.is_ok() {
                            tx.send_replace(Some(0));
                        }
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        }
    });
    rx
}

async fn execute(
    plan: Arc<Plan>,
    opts: RunOptions,
    env: RunEnv,
    run_id: String,
    records: HashMap<RecordKey, Record>,
    pending: Vec<(String, String)>,
) -> RunReport {
    let started_at = SystemTime::now();
    let t0 = Instant::now();
    let wf = plan.workflow.clone();
    let host_base = plan
        .active_hosts
        .iter()
        .chain(
            plan.hosts
                .hosts
                .values()
                .filter(|h| pending.iter().any(|(p, _)| *p == h.name)),
        )
        .map(|h| {
            (
                h.name.clone(),
                Arc::new(base_vars(&wf.vars, h, &opts.extra_vars, &env.secrets)),
            )
        })
        .collect();
    let ancestors = wf
        .steps
        .iter()
        .map(|s| {
            let mut out: Vec<usize> = Vec::new();
            let mut stack: Vec<&String> = s.needs.iter().collect();
            while let Some(id) = stack.pop() {
                if let Some(i) = wf.step_index(id) {
                    if !out.contains(&i) {
                        out.push(i);
                        stack.extend(wf.steps[i].needs.iter());
                    }
                }
            }
            out
        })
        .collect();
    let needs_render = wf.steps.iter().map(step_needs_render).collect();
    let n = plan.nodes.len();
    let mut interrupt = env.interrupt.clone();
    let ctx = Arc::new(Ctx {
        forks: Semaphore::new(opts.forks.max(1)),
        plan: plan.clone(),
        opts,
        run_id: run_id.clone(),
        templates: Templates::new(),
        env,
        records,
        host_base,
        ancestors,
        needs_render,
        seq: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        state: Mutex::new(State {
            status: vec![None; n],
            outputs: HashMap::new(),
            dead_hosts: HashSet::new(),
            failed_hosts: HashSet::new(),
            notified: IndexMap::new(),
            results: Vec::new(),
        }),
    });

    let mut remaining: Vec<usize> = plan.deps.iter().map(Vec::len).collect();
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    let mut set: JoinSet<(usize, NodeStatus)> = JoinSet::new();
    let mut signal = *interrupt.borrow();
    while signal.is_none() {
        while let Some(node) = ready.pop_front() {
            let c = ctx.clone();
            set.spawn(async move { (node, run_node(&c, node).await) });
        }
        tokio::select! {
            done = set.join_next() => match done {
                None => break,
                Some(Ok((node, status))) => {
                    node_done(&ctx, node, status);
                    for &d in &plan.dependents[node] {
                        remaining[d] -= 1;
                        if remaining[d] == 0 {
                            ready.push_back(d);
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::error!("internal error: a step task failed: {e}");
                    ctx.stop.store(true, Ordering::SeqCst);
                }
            },
            _ = interrupt.changed() => {
                signal = *interrupt.borrow();
            }
        }
    }
    if signal.is_some() {
        // Running instances are cancelled: their commands are killed and nothing
        // of theirs was journaled, so the next run does them again.
        set.abort_all();
        while set.join_next().await.is_some() {}
    } else {
        run_handlers(&ctx, &pending).await;
    }
    ctx.env.pool.close_all().await;

    let mut state = ctx.state();
    let results = std::mem::take(&mut state.results);
    let mut hosts: IndexMap<String, Counters> = IndexMap::new();
    for h in plan.hosts.hosts.keys() {
        if results.iter().any(|r| r.host == *h) {
            hosts.insert(h.clone(), Counters::default());
        }
    }
    for r in &results {
        hosts.entry(r.host.clone()).or_default().add(r.status);
    }
    let failed = results
        .iter()
        .any(|r| matches!(r.status, Status::Failed | Status::Unreachable));
    let outcome = match signal {
        Some(sig) => Outcome::Interrupted(sig),
        None if failed => Outcome::Failed,
        None => Outcome::Success,
    };
    RunReport {
        run_id,
        workflow: wf.name.clone(),
        outcome,
        check_mode: ctx.opts.check,
        started_at,
        duration: t0.elapsed(),
        results,
        hosts,
    }
}

fn step_needs_render(s: &StepDef) -> bool {
    Templates::tree_has_template(&Value::Object(s.with.clone()))
        || s.when.is_some()
        || s.for_each.as_ref().is_some_and(Templates::tree_has_template)
        || s.retry.as_ref().is_some_and(|r| r.until.is_some())
}

/// Variables of a host before any step ran: workflow vars < inventory vars < `-e`.
fn base_vars(
    wf_vars: &Map<String, Value>,
    host: &Host,
    extra: &Map<String, Value>,
    secrets: &Map<String, Value>,
) -> Map<String, Value> {
    let mut v = wf_vars.clone();
    v.extend(host.vars.clone());
    v.insert("host".into(), host.template_value());
    v.insert("inventory_hostname".into(), Value::String(host.name.clone()));
    v.insert("secrets".into(), Value::Object(secrets.clone()));
    v.extend(extra.clone());
    v
}

fn node_done(ctx: &Ctx, node: usize, status: NodeStatus) {
    let host = ctx.plan.nodes[node].host.name.clone();
    let mut st = ctx.state();
    st.status[node] = Some(status);
    if matches!(status, NodeStatus::Failed | NodeStatus::Unreachable) {
        st.failed_hosts.insert(host);
        let wf = ctx.wf();
        let total = ctx.plan.active_hosts.len().max(1);
        let over = wf
            .max_fail_percentage
            .is_some_and(|p| (st.failed_hosts.len() as f64) * 100.0 / (total as f64) > p);
        if wf.fail_fast || over {
            ctx.stop.store(true, Ordering::SeqCst);
        }
    }
}

/// Whether a step is selected by `--tags`/`--skip-tags` (`always` always runs).
fn tag_selected(step: &StepDef, opts: &RunOptions) -> bool {
    let has = |t: &String| step.tags.contains(t);
    if opts.skip_tags.iter().any(has) {
        return false;
    }
    opts.tags.is_empty() || step.tags.iter().any(|t| t == "always") || opts.tags.iter().any(has)
}

/// Variables for an instance: the host's base, `steps` from its ancestors, and `item`.
fn instance_vars(ctx: &Ctx, step: usize, host: &str, all_steps: bool) -> Value {
    let mut v = ctx.host_base.get(host).map(|b| (**b).clone()).unwrap_or_default();
    // `host.address` as it is now: a step may have filled it in during the run.
    if let Some(h) = ctx.plan.hosts.get(host) {
        let now = h.address();
        if v.get("host").and_then(|x| x.get("address")).and_then(Value::as_str) != Some(now.as_str()) {
            v.insert("host".into(), h.template_value());
        }
    }
    let st = ctx.state();
    let mut steps = Map::new();
    let visible: Vec<usize> = if all_steps {
        (0..ctx.wf().steps.len()).collect()
    } else {
        ctx.ancestors[step].clone()
    };
    for a in visible {
        let id = &ctx.wf().steps[a].id;
        if let Some(o) = st.outputs.get(&(a, host.to_owned())) {
            steps.insert(id.clone(), o.clone());
        } else {
            // A step that ran on other hosts (e.g. an API step on localhost): its first host's outputs.
            let mut others: Vec<(&String, &Value)> = st
                .outputs
                .iter()
                .filter(|((s, _), _)| *s == a)
                .map(|((_, h), o)| (h, o))
                .collect();
            others.sort_by_key(|(h, _)| ctx.plan.hosts.hosts.get_index_of(h.as_str()));
            if let Some((_, o)) = others.first() {
                let mut o = (*o).clone();
                let by_host: Map<String, Value> = others.iter().map(|(h, o)| ((*h).clone(), (*o).clone())).collect();
                if let Value::Object(m) = &mut o {
                    m.insert("hosts".into(), Value::Object(by_host));
                }
                steps.insert(id.clone(), o);
            }
        }
    }
    v.insert("steps".into(), Value::Object(steps));
    Value::Object(v)
}

/// The key, and the text shown, of a `for_each` item.
fn item_key(item: &Value) -> (String, String) {
    match item {
        Value::String(s) => (s.clone(), s.clone()),
        Value::Object(m) => {
            let key = item.to_string();
            let shown = ["name", "id", "key"].iter().find_map(|k| m.get(*k)).map_or_else(
                || key.clone(),
                |v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            );
            (key, shown)
        }
        other => (other.to_string(), other.to_string()),
    }
}

async fn run_node(ctx: &Arc<Ctx>, node: usize) -> NodeStatus {
    let pn = ctx.plan.nodes[node].clone();
    let step = &ctx.wf().steps[pn.step];
    let blocked = {
        let st = ctx.state();
        if st.dead_hosts.contains(&pn.host.name) {
            Some(format!("not run: host `{}` is unreachable", pn.host.name))
        } else {
            ctx.plan.deps[node].iter().find_map(|&d| match st.status[d] {
                Some(NodeStatus::Failed | NodeStatus::Unreachable | NodeStatus::Blocked) => {
                    let dn = &ctx.plan.nodes[d];
                    Some(format!(
                        "not run: `{}` did not succeed on `{}`",
                        ctx.wf().steps[dn.step].id,
                        dn.host.name
                    ))
                }
                _ => None,
            })
        }
    };
    let blocked = blocked.or_else(|| {
        ctx.stop
            .load(Ordering::SeqCst)
            .then(|| "not run: the run is stopping after a failure (fail_fast / max_fail_percentage)".to_owned())
    });
    if let Some(msg) = blocked {
        emit_skipped(ctx, step, &pn.host.name, msg);
        return NodeStatus::Blocked;
    }
    if !tag_selected(step, &ctx.opts) {
        // Not selected: outputs of its last successful run stay available to later steps.
        if let Some(rec) = ctx.records.get(&RecordKey {
            step_id: step.id.clone(),
            item: String::new(),
            host: pn.host.name.clone(),
        }) {
            if let Some(o) = restore_outputs(ctx, step, rec) {
                ctx.state().outputs.insert(
                    (pn.step, pn.host.name.clone()),
                    json!({"outputs": o, "status": "skipped", "changed": false}),
                );
            }
        }
        emit_skipped(ctx, step, &pn.host.name, "not selected by --tags/--skip-tags".into());
        return NodeStatus::Skipped;
    }
    let dep_changed = {
        let st = ctx.state();
        ctx.plan.deps[node]
            .iter()
            .any(|&d| st.status[d] == Some(NodeStatus::Changed))
    };
    // Always: a step may render files with these variables even when its parameters have no template.
    let vars = instance_vars(ctx, pn.step, &pn.host.name, false);
    let items = match &step.for_each {
        None => None,
        Some(spec) => match expand_items(ctx, step, spec, &vars) {
            Ok(items) => Some(items),
            Err(msg) => {
                emit(
                    ctx,
                    step,
                    &pn.host.name,
                    None,
                    Status::Failed,
                    false,
                    Duration::ZERO,
                    Some(msg),
                    None,
                );
                return NodeStatus::Failed;
            }
        },
    };
    let vars = Arc::new(vars);
    let mut results: Vec<(Option<Value>, InstanceOutcome)> = Vec::new();
    match items {
        None => results.push((None, run_instance(ctx.clone(), node, None, vars, dep_changed).await)),
        Some(items) => {
            let mut set = JoinSet::new();
            for (i, item) in items.into_iter().enumerate() {
                let (c, v) = (ctx.clone(), vars.clone());
                set.spawn(async move {
                    let out = run_instance(c, node, Some(item.clone()), v, dep_changed).await;
                    (i, item, out)
                });
            }
            let mut done = Vec::new();
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(x) => done.push(x),
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => tracing::error!("internal error: an item task failed: {e}"),
                }
            }
            done.sort_by_key(|(i, _, _)| *i);
            results.extend(done.into_iter().map(|(_, item, out)| (Some(item), out)));
        }
    }
    let mut status = NodeStatus::Skipped;
    let rank = |s: NodeStatus| match s {
        NodeStatus::Unreachable => 5,
        NodeStatus::Failed => 4,
        NodeStatus::Changed => 3,
        NodeStatus::Ok => 2,
        NodeStatus::Skipped => 1,
        NodeStatus::Blocked => 0,
    };
    for (_, r) in &results {
        if rank(r.status) > rank(status) {
            status = r.status;
        }
    }
    let changed = results.iter().any(|(_, r)| r.status == NodeStatus::Changed);
    let value = if step.for_each.is_some() {
        let list: Vec<Value> = results
            .iter()
            .map(|(item, r)| json!({"item": item, "outputs": r.outputs, "status": status_word(r.status), "changed": r.status == NodeStatus::Changed}))
            .collect();
        json!({"results": list, "status": status_word(status), "changed": changed})
    } else {
        let outputs = results.first().map(|(_, r)| r.outputs.clone()).unwrap_or_default();
        json!({"outputs": outputs, "status": status_word(status), "changed": changed})
    };
    {
        let mut st = ctx.state();
        st.outputs.insert((pn.step, pn.host.name.clone()), value);
        if changed && !step.notify.is_empty() {
            for h in &step.notify {
                if let Some(hi) = ctx.wf().handler_index(h) {
                    let list = st.notified.entry(pn.host.name.clone()).or_default();
                    if !list.contains(&hi) {
                        list.push(hi);
                    }
                    if !ctx.opts.check {
                        if let Some(j) = &ctx.env.journal {
                            j.notify(&ctx.wf().name, &pn.host.name, h);
                        }
                    }
                }
            }
        }
    }
    if status == NodeStatus::Failed && step.ignore_errors {
        return NodeStatus::Ok;
    }
    status
}

fn status_word(s: NodeStatus) -> &'static str {
    match s {
        NodeStatus::Ok => "ok",
        NodeStatus::Changed => "changed",
        NodeStatus::Failed => "failed",
        NodeStatus::Unreachable => "unreachable",
        NodeStatus::Skipped | NodeStatus::Blocked => "skipped",
    }
}

fn expand_items(ctx: &Ctx, step: &StepDef, spec: &Value, vars: &Value) -> Result<Vec<Value>, String> {
    let rendered = ctx
        .templates
        .render_tree(&format!("`for_each` of step `{}`", step.id), spec, vars)
        .map_err(|e| e.message)?;
    match rendered {
        Value::Array(items) => Ok(items),
        Value::String(s) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Array(items)) => Ok(items),
            _ => Err(format!(
                "`for_each` of step `{}` must give a list; it rendered to `{}`",
                step.id,
                ctx.env.masker.mask(&s)
            )),
        },
        Value::Null => Ok(Vec::new()),
        other => Err(format!(
            "`for_each` of step `{}` must give a list, got `{other}`",
            step.id
        )),
    }
}

struct InstanceOutcome {
    status: NodeStatus,
    outputs: Outputs,
}

impl InstanceOutcome {
    fn of(status: NodeStatus) -> Self {
        Self {
            status,
            outputs: Outputs::new(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn emit(
    ctx: &Ctx,
    step: &StepDef,
    host: &str,
    item: Option<String>,
    status: Status,
    from_journal: bool,
    duration: Duration,
    message: Option<String>,
    diff: Option<String>,
) {
    emit_result(
        ctx,
        InstanceResult {
            step_id: step.id.clone(),
            host: host.to_owned(),
            item,
            status,
            from_journal,
            duration,
            message: message.map(|m| ctx.env.masker.mask(&m).into_owned()),
            diff: diff.map(|d| ctx.env.masker.mask(&d).into_owned()),
            handler: false,
        },
    );
}

/// A node that did not run at all (blocked, or not selected).
fn emit_skipped(ctx: &Ctx, step: &StepDef, host: &str, msg: String) {
    emit(
        ctx,
        step,
        host,
        None,
        Status::Skipped,
        false,
        Duration::ZERO,
        Some(msg),
        None,
    );
}

fn emit_result(ctx: &Ctx, r: InstanceResult) {
    ctx.env.sink.finished(&r);
    if !ctx.opts.check {
        if let Some(j) = &ctx.env.journal {
            let seq = ctx.seq.fetch_add(1, Ordering::Relaxed);
            j.step(
                &ctx.run_id,
                seq,
                RunStep {
                    step_id: if r.handler {
                        format!("handler:{}", r.step_id)
                    } else {
                        r.step_id.clone()
                    },
                    host: r.host.clone(),
                    item: r.item.clone().unwrap_or_default(),
                    status: r.status.as_str().into(),
                    from_journal: r.from_journal,
                    duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
                    message: r.message.clone(),
                },
            );
        }
    }
    ctx.state().results.push(r);
}

fn restore_outputs(ctx: &Ctx, step: &StepDef, rec: &Record) -> Option<Outputs> {
    let text = match (&rec.outputs, &rec.outputs_enc) {
        (Some(t), _) => t.clone(),
        (None, Some(enc)) => String::from_utf8(ctx.env.key.decrypt(enc)?).ok()?,
        (None, None) => return Some(Outputs::new()),
    };
    let outputs: Outputs = serde_json::from_str(&text).ok()?;
    // Only the kind's secret outputs become secrets. A record is also stored
    // encrypted when an output merely contains a secret (a command's stdout
    // echoing a token); that secret is masked because it is registered where it
    // came from, and the rest of the document stays readable.
    register_secret_outputs(&ctx.env.masker, step.kind.info(), &outputs);
    Some(outputs)
}

/// Register the values of a kind's secret outputs with the masker: those, and
/// nothing else of a step's outputs, are secrets.
fn register_secret_outputs(masker: &Masker, info: &crate::step::KindInfo, outputs: &Outputs) {
    for name in info.secret_outputs {
        if let Some(v) = outputs.get(*name) {
            register_secret_values(masker, v);
        }
    }
}

fn register_secret_values(masker: &Masker, v: &Value) {
    match v {
        Value::String(s) => masker.add(s),
        Value::Array(a) => a.iter().for_each(|x| register_secret_values(masker, x)),
        Value::Object(m) => m.values().for_each(|x| register_secret_values(masker, x)),
        _ => {}
    }
}

/// What determines an instance's effect, hashed; secrets enter as keyed hashes.
#[allow(clippy::too_many_arguments)]
fn fingerprint(
    masker: &Masker,
    key: &SecretKey,
    step: &StepDef,
    params: &Map<String, Value>,
    extra: Option<String>,
    host: &Host,
    item: &str,
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
    let info = step.kind.info();
    let material = serde_json::to_string(&Material {
        kind: info.name,
        version: info.version,
        params,
        extra,
        host: host.identity(),
        item,
        become_: become_.map(|b| b.user.as_str()),
    })
    .unwrap_or_default();
    let material = if masker.is_empty() {
        material
    } else {
        masker.hash_secrets(&material, key)
    };
    crate::transport::local::hex(&Sha256::digest(material.as_bytes()))
}

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

async fn run_instance(
    ctx: Arc<Ctx>,
    node: usize,
    item: Option<Value>,
    vars: Arc<Value>,
    dep_changed: bool,
) -> InstanceOutcome {
    let Ok(_permit) = ctx.forks.acquire().await else {
        return InstanceOutcome::of(NodeStatus::Blocked);
    };
    let pn = &ctx.plan.nodes[node];
    let host = pn.host.clone();
    let wf = ctx.plan.workflow.clone();
    let step = &wf.steps[pn.step];
    let t0 = Instant::now();
    let (ikey, ishow) = item.as_ref().map(item_key).unzip();
    let ikey = ikey.unwrap_or_default();
    // The node's variables, shared by its items: taken over when this is the only user.
    let mut vars: Value = Arc::try_unwrap(vars).unwrap_or_else(|shared| (*shared).clone());
    if let (Some(it), Value::Object(m)) = (&item, &mut vars) {
        m.insert("item".into(), it.clone());
    }
    // One render context per instance: every parameter renders against it.
    let hctx = Templates::context(vars);
    let vars = hctx.data();
    let fail = |msg: String, t0: Instant| {
        let (status, node, msg) = if ctx.opts.check && dep_changed {
            // In --check, a step that needs a step that would change cannot know its inputs.
            (
                Status::Skipped,
                NodeStatus::Skipped,
                format!("cannot check: it needs a step that would change first ({msg})"),
            )
        } else {
            (Status::Failed, NodeStatus::Failed, msg)
        };
        emit(
            &ctx,
            step,
            &host.name,
            ishow.clone(),
            status,
            false,
            t0.elapsed(),
            Some(msg),
            None,
        );
        InstanceOutcome::of(node)
    };
    if let Some(cond) = &step.when {
        match ctx
            .templates
            .render_value_in(&format!("`when` of step `{}`", step.id), cond, &hctx)
        {
            Ok(v) if !truthy(&v) => {
                emit(
                    &ctx,
                    step,
                    &host.name,
                    ishow.clone(),
                    Status::Skipped,
                    false,
                    t0.elapsed(),
                    Some("condition `when` is false".into()),
                    None,
                );
                return InstanceOutcome::of(NodeStatus::Skipped);
            }
            Ok(_) => {}
            Err(e) => return fail(e.message, t0),
        }
    }
    let params = if ctx.needs_render[pn.step] {
        match ctx.templates.render_tree_in(
            &format!("step `{}`, `with`", step.id),
            &Value::Object(step.with.clone()),
            &hctx,
        ) {
            Ok(Value::Object(m)) => m,
            Ok(_) => Map::new(),
            Err(e) => return fail(e.message, t0),
        }
    } else {
        step.with.clone()
    };
    let built = {
        let bcx = BuildContext {
            workflow_dir: &step.dir,
            templates: &ctx.templates,
            vars,
            host: &host,
        };
        match step.kind.build(&params, &bcx) {
            Ok(b) => b,
            Err(e) => {
                return fail(
                    format!("step `{}` (`{}`): {}", step.id, step.kind_name(), e.message),
                    t0,
                )
            }
        }
    };
    let become_ = resolve_become(step, &host);
    let fp = fingerprint(
        &ctx.env.masker,
        &ctx.env.key,
        step,
        &params,
        built.fingerprint_extra(),
        &host,
        &ikey,
        become_.as_ref(),
    );
    let key = RecordKey {
        step_id: step.id.clone(),
        item: ikey.clone(),
        host: host.name.clone(),
    };
    let record = if step.journal && ctx.env.journal.is_some() && !ctx.opts.force {
        ctx.records.get(&key)
    } else {
        None
    };
    // What the journal last recorded for this instance, parsed once: the step's
    // previous state, and its outputs when the fingerprint still matches.
    let previous = ctx.records.get(&key).and_then(|r| restore_outputs(&ctx, step, r));
    let fingerprint_matches = record.is_some_and(|r| r.fingerprint == fp);
    if fingerprint_matches && previous.is_some() && !ctx.opts.verify && !dep_changed {
        let outputs = previous.unwrap_or_default();
        built.restored(&outputs, &ctx.plan.hosts);
        emit(
            &ctx,
            step,
            &host.name,
            ishow,
            Status::Ok,
            true,
            t0.elapsed(),
            None,
            None,
        );
        return InstanceOutcome {
            status: NodeStatus::Ok,
            outputs,
        };
    }
    let journal_outputs = if fingerprint_matches { previous.clone() } else { None };
    ctx.env.sink.started(&step.id, &host.name, ishow.as_deref());
    // Connected on first use: an API step that runs "on" a host never opens SSH to it.
    let transport: Arc<dyn crate::transport::Transport> =
        Arc::new(crate::pool::LazyTransport::new(ctx.env.pool.clone(), host.clone()));
    let cx = StepContext {
        host: host.clone(),
        transport,
        become_,
        mode: Mode {
            check: ctx.opts.check,
            diff: ctx.opts.diff,
        },
        timeout: step.timeout,
        masker: ctx.env.masker.clone(),
        hosts: ctx.plan.hosts.clone(),
        previous,
    };
    let result = attempt(&ctx, step, built.as_ref(), &cx, vars).await;
    let info = step.kind.info();
    match result {
        Ok(done) => {
            let mut outputs = journal_outputs.unwrap_or_default();
            outputs.extend(done.outputs);
            register_secret_outputs(&ctx.env.masker, info, &outputs);
            let status = if done.changed { Status::Changed } else { Status::Ok };
            if !ctx.opts.check && step.journal {
                if let Some(j) = &ctx.env.journal {
                    let text = Value::Object(outputs.clone()).to_string();
                    let secret = !info.secret_outputs.is_empty() || ctx.env.masker.contains_secret(&text);
                    let (plain, enc) = if secret {
                        (None, Some(ctx.env.key.encrypt(text.as_bytes())))
                    } else {
                        (Some(text), None)
                    };
                    j.put(
                        &ctx.wf().name,
                        key,
                        Record {
                            fingerprint: fp,
                            status: status.as_str().into(),
                            outputs: plain,
                            outputs_enc: enc,
                            run_id: ctx.run_id.clone(),
                        },
                    );
                }
            }
            emit(
                &ctx,
                step,
                &host.name,
                ishow,
                status,
                false,
                t0.elapsed(),
                done.message,
                done.diff,
            );
            InstanceOutcome {
                status: if done.changed {
                    NodeStatus::Changed
                } else {
                    NodeStatus::Ok
                },
                outputs,
            }
        }
        Err(e) => {
            if !ctx.opts.check {
                if let Some(j) = &ctx.env.journal {
                    j.delete(&ctx.wf().name, key);
                }
            }
            let unreachable = e.kind == StepErrorKind::Unreachable;
            if unreachable {
                ctx.state().dead_hosts.insert(host.name.clone());
                ctx.env.pool.drop_host(&host.name).await;
            }
            let status = if unreachable {
                Status::Unreachable
            } else {
                Status::Failed
            };
            emit(
                &ctx,
                step,
                &host.name,
                ishow,
                status,
                false,
                t0.elapsed(),
                Some(e.message),
                None,
            );
            InstanceOutcome::of(if unreachable {
                NodeStatus::Unreachable
            } else {
                NodeStatus::Failed
            })
        }
    }
}

struct Done {
    changed: bool,
    outputs: Outputs,
    message: Option<String>,
    diff: Option<String>,
}

/// check → apply under `retry` (attempts, delay, backoff, `until`) and `timeout`.
async fn attempt(
    ctx: &Ctx,
    step: &StepDef,
    built: &dyn crate::step::Step,
    cx: &StepContext,
    vars: &Value,
) -> Result<Done, StepError> {
    let attempts = step.retry.as_ref().map_or(1, |r| r.attempts.max(1));
    let mut delay = step.retry.as_ref().map_or(Duration::ZERO, |r| r.delay);
    let mut last_err = None;
    for n in 1..=attempts {
        let once = async {
            match built.check(cx).await? {
                Check::InSync(outputs) => Ok(Done {
                    changed: false,
                    outputs,
                    message: None,
                    diff: None,
                }),
                Check::Drift(p) if ctx.opts.check => Ok(Done {
                    changed: true,
                    outputs: p.outputs,
                    message: Some(format!("would {}", p.summary)),
                    diff: p.diff,
                }),
                Check::Drift(p) => {
                    let summary = p.summary.clone();
                    let diff = p.diff.clone();
                    let a = built.apply(cx, p).await?;
                    Ok(Done {
                        changed: a.changed,
                        outputs: a.outputs,
                        message: a.message.or(Some(summary)).filter(|m| !m.is_empty()),
                        diff,
                    })
                }
            }
        };
        let r = match step.timeout {
            Some(t) => tokio::time::timeout(t, once).await.unwrap_or_else(|_| {
                Err(StepError::failed(format!(
                    "timed out after {}",
                    humantime::format_duration(t)
                )))
            }),
            None => once.await,
        };
        let r = match r {
            Ok(done) => changed_when(ctx, step, vars, done),
            Err(e) => Err(e),
        };
        match r {
            Ok(done) => {
                let Some(until) = step.retry.as_ref().and_then(|r| r.until.as_ref()) else {
                    return Ok(done);
                };
                let mut v = vars.clone();
                if let Value::Object(m) = &mut v {
                    m.insert("outputs".into(), Value::Object(done.outputs.clone()));
                }
                match ctx
                    .templates
                    .render_value(&format!("`retry.until` of step `{}`", step.id), until, &v)
                {
                    Ok(c) if truthy(&c) => return Ok(done),
                    Ok(_) => {
                        last_err = Some(StepError::failed(format!(
                            "`until` condition `{until}` still false after {n} attempt(s)"
                        )))
                    }
                    Err(e) => return Err(StepError::failed(e.message)),
                }
            }
            Err(e) => last_err = Some(e),
        }
        if n < attempts {
            tracing::info!(
                "step `{}` on `{}`: attempt {n} of {attempts} did not succeed; retrying in {}",
                step.id,
                cx.host.name,
                humantime::format_duration(delay)
            );
            tokio::time::sleep(delay).await;
            let backoff = step.retry.as_ref().map_or(1.0, |r| r.backoff);
            delay = delay.mul_f64(backoff).min(Duration::from_secs(300));
        }
    }
    Err(last_err.unwrap_or_else(|| StepError::failed("no attempt was made")))
}

/// `changed_when`: after a real run (not `--check`), whether it counts as a change.
fn changed_when(ctx: &Ctx, step: &StepDef, vars: &Value, mut done: Done) -> Result<Done, StepError> {
    let (Some(cond), false, true) = (&step.changed_when, ctx.opts.check, done.changed) else {
        return Ok(done);
    };
    let mut v = vars.clone();
    if let Value::Object(m) = &mut v {
        m.insert("outputs".into(), Value::Object(done.outputs.clone()));
    }
    let c = ctx
        .templates
        .render_value(&format!("`changed_when` of step `{}`", step.id), cond, &v)
        .map_err(|e| StepError::failed(e.message))?;
    done.changed = truthy(&c);
    Ok(done)
}

/// Handlers: once per host, in definition order, for what was notified in this
/// run or is still owed from an earlier one.
async fn run_handlers(ctx: &Arc<Ctx>, pending: &[(String, String)]) {
    let wf = ctx.wf();
    if wf.handlers.is_empty() {
        return;
    }
    let mut owed: IndexMap<String, Vec<usize>> = ctx.state().notified.clone();
    for (host, h) in pending {
        if let Some(hi) = wf.handler_index(h) {
            let list = owed.entry(host.clone()).or_default();
            if !list.contains(&hi) {
                list.push(hi);
            }
        }
    }
    let mut set = JoinSet::new();
    for (host_name, mut list) in owed {
        let Some(host) = ctx.plan.hosts.get(&host_name).cloned() else {
            continue;
        };
        if ctx.state().dead_hosts.contains(&host_name) || !ctx.host_base.contains_key(&host_name) {
            continue;
        }
        list.sort_unstable();
        let c = ctx.clone();
        set.spawn(async move {
            for hi in list {
                run_handler(&c, &host, hi).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
}

async fn run_handler(ctx: &Arc<Ctx>, host: &Arc<Host>, hi: usize) {
    let Ok(_permit) = ctx.forks.acquire().await else { return };
    let wf = ctx.wf();
    let h = &wf.handlers[hi];
    let t0 = Instant::now();
    let vars = instance_vars(ctx, 0, &host.name, true);
    let result = handler_once(ctx, h, host, &vars).await;
    let (status, message, diff) = match result {
        Ok(None) => (Status::Skipped, Some("condition `when` is false".to_owned()), None),
        Ok(Some(done)) => {
            if !ctx.opts.check {
                if let Some(j) = &ctx.env.journal {
                    j.notified(&wf.name, &host.name, &h.id);
                }
            }
            (
                if done.changed { Status::Changed } else { Status::Ok },
                done.message,
                done.diff,
            )
        }
        Err(e) if e.kind == StepErrorKind::Unreachable => (Status::Unreachable, Some(e.message), None),
        Err(e) => (Status::Failed, Some(e.message), None),
    };
    emit_result(
        ctx,
        InstanceResult {
            step_id: h.id.clone(),
            host: host.name.clone(),
            item: None,
            status,
            from_journal: false,
            duration: t0.elapsed(),
            message: message.map(|m| ctx.env.masker.mask(&m).into_owned()),
            diff: diff.map(|d| ctx.env.masker.mask(&d).into_owned()),
            handler: true,
        },
    );
}

async fn handler_once(ctx: &Ctx, h: &StepDef, host: &Arc<Host>, vars: &Value) -> Result<Option<Done>, StepError> {
    if let Some(cond) = &h.when {
        let v = ctx
            .templates
            .render_value(&format!("`when` of handler `{}`", h.id), cond, vars)
            .map_err(|e| StepError::failed(e.message))?;
        if !truthy(&v) {
            return Ok(None);
        }
    }
    let params = match ctx.templates.render_tree(
        &format!("handler `{}`, `with`", h.id),
        &Value::Object(h.with.clone()),
        vars,
    ) {
        Ok(Value::Object(m)) => m,
        Ok(_) => Map::new(),
        Err(e) => return Err(StepError::failed(e.message)),
    };
    let built = {
        let bcx = BuildContext {
            workflow_dir: &h.dir,
            templates: &ctx.templates,
            vars,
            host,
        };
        h.kind.build(&params, &bcx)?
    };
    let transport: Arc<dyn crate::transport::Transport> =
        Arc::new(crate::pool::LazyTransport::new(ctx.env.pool.clone(), host.clone()));
    let cx = StepContext {
        host: host.clone(),
        transport,
        become_: resolve_become(h, host),
        mode: Mode {
            check: ctx.opts.check,
            diff: ctx.opts.diff,
        },
        timeout: h.timeout,
        masker: ctx.env.masker.clone(),
        hosts: ctx.plan.hosts.clone(),
        previous: None,
    };
    attempt(ctx, h, built.as_ref(), &cx, vars).await.map(Some)
}

/// What the journal would do with a node, for `flowrun plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// Every instance comes from the journal.
    Skip,
    /// It runs (changed parameters, never journaled, `--force`/`--verify`).
    Run,
    /// `when` is false.
    WhenFalse,
    /// A `for_each` node: how many of its items the journal skips.
    Items { skip: usize, total: usize },
    /// Its parameters depend on outputs of steps that will run first.
    Unknown,
}

impl Prediction {
    fn skips_all(self) -> bool {
        match self {
            Self::Skip | Self::WhenFalse => true,
            Self::Items { skip, total } => skip == total,
            Self::Run | Self::Unknown => false,
        }
    }
}

/// Outputs a record holds (decrypted when needed).
fn record_outputs(r: &Record, key: &SecretKey) -> Outputs {
    r.outputs
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .or_else(|| {
            r.outputs_enc
                .as_ref()
                .and_then(|e| key.decrypt(e))
                .and_then(|b| serde_json::from_slice(&b).ok())
        })
        .unwrap_or_default()
}

/// What a run would do with each node, journal-wise, without touching any
/// host: the same rendering and fingerprints as a run, with the outputs of
/// steps that would be skipped restored from the journal.
pub fn predict_skips(
    plan: &Plan,
    records: &HashMap<RecordKey, Record>,
    opts: &RunOptions,
    secrets: &Map<String, Value>,
    key: &SecretKey,
    masker: &Arc<Masker>,
) -> Vec<Prediction> {
    let wf = &plan.workflow;
    let templates = Templates::new();
    let mut result = vec![Prediction::Unknown; plan.nodes.len()];
    let mut outputs: HashMap<(usize, String), Value> = HashMap::new();
    for phase in &plan.phases {
        for &n in phase {
            let pn = &plan.nodes[n];
            let step = &wf.steps[pn.step];
            if !step.journal || opts.force || opts.verify {
                result[n] = Prediction::Run;
                continue;
            }
            if !plan.deps[n].iter().all(|&d| result[d].skips_all()) {
                continue;
            }
            let mut vars = base_vars(&wf.vars, &pn.host, &opts.extra_vars, secrets);
            let mut steps = Map::new();
            for ((s, h), o) in &outputs {
                if *h == pn.host.name || !steps.contains_key(&wf.steps[*s].id) {
                    steps.insert(wf.steps[*s].id.clone(), o.clone());
                }
            }
            vars.insert("steps".into(), Value::Object(steps));
            let vars = Value::Object(vars);
            // One instance: Some((skipped, outputs)); None when it cannot be known.
            let predict_one = |vars: &Value, item: Option<&Value>| -> Option<(bool, Outputs)> {
                let mut v = vars.clone();
                if let (Some(it), Value::Object(m)) = (item, &mut v) {
                    m.insert("item".into(), it.clone());
                }
                if let Some(cond) = &step.when {
                    if !truthy(&templates.render_value("plan", cond, &v).ok()?) {
                        return Some((true, Outputs::new()));
                    }
                }
                let Value::Object(params) = templates
                    .render_tree("plan", &Value::Object(step.with.clone()), &v)
                    .ok()?
                else {
                    return None;
                };
                let bcx = BuildContext {
                    workflow_dir: &step.dir,
                    templates: &templates,
                    vars: &v,
                    host: &pn.host,
                };
                let built = step.kind.build(&params, &bcx).ok()?;
                let ikey = item.map(|i| item_key(i).0).unwrap_or_default();
                let become_ = resolve_become(step, &pn.host);
                let fp = fingerprint(
                    masker,
                    key,
                    step,
                    &params,
                    built.fingerprint_extra(),
                    &pn.host,
                    &ikey,
                    become_.as_ref(),
                );
                let rk = RecordKey {
                    step_id: step.id.clone(),
                    item: ikey,
                    host: pn.host.name.clone(),
                };
                match records.get(&rk).filter(|r| r.fingerprint == fp) {
                    Some(r) => Some((true, record_outputs(r, key))),
                    None => Some((false, Outputs::new())),
                }
            };
            match &step.for_each {
                None => {
                    if let Some(cond) = &step.when {
                        if matches!(templates.render_value("plan", cond, &vars), Ok(c) if !truthy(&c)) {
                            result[n] = Prediction::WhenFalse;
                            continue;
                        }
                    }
                    let Some((skip, o)) = predict_one(&vars, None) else {
                        continue;
                    };
                    result[n] = if skip { Prediction::Skip } else { Prediction::Run };
                    if skip {
                        outputs.insert(
                            (pn.step, pn.host.name.clone()),
                            json!({"outputs": o, "status": "ok", "changed": false}),
                        );
                    }
                }
                Some(spec) => {
                    let items = match templates.render_tree("plan", spec, &vars) {
                        Ok(Value::Array(items)) => items,
                        Ok(Value::String(text)) => match serde_json::from_str::<Value>(&text) {
                            Ok(Value::Array(items)) => items,
                            _ => continue,
                        },
                        _ => continue,
                    };
                    let mut skip = 0;
                    let mut results = Vec::new();
                    let mut known = true;
                    for item in &items {
                        match predict_one(&vars, Some(item)) {
                            Some((s, o)) => {
                                skip += usize::from(s);
                                results.push(json!({"item": item, "outputs": o, "status": "ok", "changed": false}));
                            }
                            None => known = false,
                        }
                    }
                    if !known {
                        continue;
                    }
                    result[n] = Prediction::Items {
                        skip,
                        total: items.len(),
                    };
                    if skip == items.len() {
                        outputs.insert(
                            (pn.step, pn.host.name.clone()),
                            json!({"results": results, "status": "ok", "changed": false}),
                        );
                    }
                }
            }
        }
    }
    result
}
