//! Engine overhead at scale, printed as figures (not a timed test):
//! load + analyze + plan of a 10,000-instance workflow (1,000 steps with
//! templates and `needs` chains, on 10 local hosts), then a first run and a
//! fully journaled re-run of those 10,000 instances with a no-op step, so the
//! figures are the engine's own cost per instance. The journaled runs go
//! once per backend: a SQLite file, and PostgreSQL on loopback (a real server
//! the test support starts); a first run without a journal gives the
//! journal's share of a first run.
//!
//! Run: `cargo bench -p flowrun-engine --bench engine`

use async_trait::async_trait;
use flowrun_engine::exec::{self, NoEvents, RunEnv, RunOptions};
use flowrun_engine::inventory::Inventory;
use flowrun_engine::journal::{Journal, Location};
use flowrun_engine::loader::{self, LoadContext};
use flowrun_engine::plan;
use flowrun_engine::pool::Pool;
use flowrun_engine::registry::Registry;
use flowrun_engine::report::RunReport;
use flowrun_engine::secrets::{Masker, SecretKey};
use flowrun_engine::step::*;
use flowrun_lab::postgres::PgServer;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

struct Noop;
static INFO: KindInfo = KindInfo {
    name: "noop",
    version: 1,
    doc: "does nothing, changes",
    params: &[
        ParamSpec::req("msg", ParamType::Str, "a message"),
        ParamSpec::opt("n", ParamType::Int, "a number"),
    ],
    one_of: &[],
    outputs: &["msg"],
    secret_outputs: &[],
    journal: true,
};
struct NoopStep(String);
impl StepKind for Noop {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }
    fn build(&self, p: &Map<String, Value>, _: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        Ok(Box::new(NoopStep(p["msg"].as_str().unwrap_or_default().to_owned())))
    }
}
#[async_trait]
impl Step for NoopStep {
    async fn check(&self, _: &StepContext) -> Result<Check, StepError> {
        Ok(Check::Drift(Pending::new("noop")))
    }
    async fn apply(&self, _: &StepContext, _: Pending) -> Result<Applied, StepError> {
        let mut o = Outputs::new();
        o.insert("msg".into(), json!(self.0));
        Ok(Applied::changed(o))
    }
}

fn main() {
    let steps = 1000;
    let hosts = 10;
    let dir = tempfile::tempdir().unwrap();
    let wf_path = write_workflow(dir.path(), steps, hosts);
    let p = Arc::new(load_and_plan(dir.path(), &wf_path, steps, hosts));
    let n = p.nodes.len();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = SecretKey::load_or_create(&dir.path().join("journal.key")).unwrap();
    let run = |journal: Option<Arc<Journal>>, force: bool| {
        let (_tx, rx) = tokio::sync::watch::channel(None);
        let env = RunEnv {
            journal,
            key: key.clone(),
            masker: Masker::global(),
            secrets: Map::new(),
            pool: Arc::new(Pool::new(None)),
            sink: Arc::new(NoEvents),
            interrupt: rx,
        };
        let t0 = Instant::now();
        let r = rt
            .block_on(exec::run(
                p.clone(),
                RunOptions {
                    force,
                    forks: 10,
                    ..RunOptions::default()
                },
                env,
            ))
            .unwrap();
        (t0.elapsed().as_secs_f64(), r)
    };
    let per = |t: f64| t * 1e6 / n as f64;
    // The engine alone, for the journal's share of a first run.
    let mut bare = f64::MAX;
    for _ in 0..5 {
        let (t, r) = run(None, true);
        assert_eq!(r.totals().changed as usize, n);
        bare = bare.min(t);
    }
    println!(
        "first run without a journal (no-op step, all changed): {:.1} ms, {:.1} µs per instance (best of 5)",
        bare * 1e3,
        per(bare)
    );
    let server = PgServer::start().expect("the benchmark needs PostgreSQL (scripts/deps installs it)");
    let pg_url = server
        .url("bench")
        .replace("flowrun@", &format!("flowrun:{}@", flowrun_lab::postgres::PASSWORD));
    let backends = [
        ("sqlite", Location::Sqlite(dir.path().join("journal.db"))),
        ("postgres (loopback)", Location::parse(&pg_url).unwrap()),
    ];
    for (name, location) in backends {
        let journal = Arc::new(Journal::connect(&location).unwrap());
        journaled_runs(name, &journal, &run, bare, n);
    }
}

/// The inventory (`hosts` local hosts) and the workflow (`steps` steps in
/// chains of ten, each reading the one before) in `dir`; the workflow's path.
fn write_workflow(dir: &std::path::Path, steps: usize, hosts: usize) -> std::path::PathBuf {
    let mut inv = String::from("all:\n  vars: { site: bench }\n  children:\n    nodes:\n      hosts:\n");
    for h in 0..hosts {
        let _ = writeln!(inv, "        node-{h:02}: {{ connection: local, idx: {h} }}");
    }
    std::fs::write(dir.join("hosts.yml"), inv).unwrap();
    let mut wf = String::from("name: bench\nvars: { prefix: step }\nsteps:\n");
    for s in 0..steps {
        let _ = write!(wf, "  - id: s{s}\n    hosts: nodes\n    uses: noop\n");
        if s % 10 != 0 {
            let _ = write!(wf, "    needs: [s{}]\n    with: {{ msg: \"{{{{prefix}}}} {s} on {{{{inventory_hostname}}}} after {{{{steps.s{}.outputs.msg}}}}\", n: {s} }}\n", s - 1, s - 1);
        } else {
            let _ = writeln!(wf, "    with: {{ msg: \"{{{{prefix}}}} {s} {{{{site}}}}\", n: {s} }}");
        }
    }
    let wf_path = dir.join("bench.yml");
    std::fs::write(&wf_path, wf).unwrap();
    wf_path
}

/// Load, analyze and plan the workflow five times; the figure, and the plan.
fn load_and_plan(dir: &std::path::Path, wf_path: &std::path::Path, steps: usize, hosts: usize) -> plan::Plan {
    let registry = Registry::new(vec![Box::new(Noop)]);
    let extra = Map::new();
    let mut best = f64::MAX;
    let mut planned = None;
    for _ in 0..5 {
        let t0 = Instant::now();
        let inventory = Inventory::load(&dir.join("hosts.yml")).unwrap();
        let w = loader::load(
            wf_path,
            &LoadContext {
                registry: &registry,
                inventory: &inventory,
                extra_vars: &extra,
            },
        )
        .unwrap();
        let p = plan::plan(Arc::new(w), &inventory, &extra, None).unwrap();
        best = best.min(t0.elapsed().as_secs_f64());
        planned = Some(p);
    }
    let p = planned.unwrap();
    println!(
        "load + analyze + plan: {} instances ({steps} steps x {hosts} hosts, {} phases): {:.1} ms (best of 5)",
        p.nodes.len(),
        p.phases.len(),
        best * 1e3
    );
    p
}

/// A first run (forced: all changed, all journaled) and fully journaled
/// re-runs on one backend, printed beside the run without a journal (`bare`).
fn journaled_runs(
    name: &str,
    journal: &Arc<Journal>,
    run: &dyn Fn(Option<Arc<Journal>>, bool) -> (f64, RunReport),
    bare: f64,
    n: usize,
) {
    let per = |t: f64| t * 1e6 / n as f64;
    // `--force` runs everything and journals all of it, as a first run does.
    let mut first = f64::MAX;
    for _ in 0..3 {
        let (t, r) = run(Some(journal.clone()), true);
        assert_eq!(r.totals().changed as usize, n);
        first = first.min(t);
    }
    println!(
        "{name}: first run (all changed, all journaled): {:.1} ms, {:.1} µs per instance (best of 3); the journal's share {:.1} µs per instance",
        first * 1e3,
        per(first),
        per(first - bare)
    );
    let mut best = f64::MAX;
    for _ in 0..5 {
        let (t, r) = run(Some(journal.clone()), false);
        assert_eq!(r.totals().ok as usize, n);
        assert!(r.results.iter().all(|x| x.from_journal));
        best = best.min(t);
    }
    println!(
        "{name}: journaled re-run (all skipped, outputs restored): {:.1} ms, {:.1} µs per instance (best of 5)",
        best * 1e3,
        per(best)
    );
}
