//! What the executor tests share: a test step kind whose every apply
//! appends a line to a log file (so a test proves what ran and what the
//! journal skipped), a test directory with a journal on either backend, and
//! runs of a workflow in it, optionally interrupted by a signal.
#![allow(dead_code)]

use async_trait::async_trait;
use flowrun_engine::exec::{self, NoEvents, RunEnv, RunError, RunOptions};
use flowrun_engine::inventory::Inventory;
use flowrun_engine::journal::{Journal, Location};
use flowrun_engine::loader::{self, LoadContext};
use flowrun_engine::plan;
use flowrun_engine::pool::Pool;
use flowrun_engine::registry::Registry;
use flowrun_engine::report::{RunReport, Status};
use flowrun_engine::secrets::{Masker, SecretKey};
use flowrun_engine::step::*;
use flowrun_lab::postgres::PgServer;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `log`: appends `text` to `file` on apply; in sync when `state_file` (optional) exists.
pub struct LogKind;
static LOG_INFO: KindInfo = KindInfo {
    name: "log",
    version: 1,
    doc: "test step",
    params: &[
        ParamSpec::req("file", ParamType::Str, "log file"),
        ParamSpec::req("text", ParamType::Str, "line to append"),
        ParamSpec::opt("fail", ParamType::Bool, "fail instead"),
        ParamSpec::opt("sleep_ms", ParamType::Int, "sleep first"),
        ParamSpec::opt("started", ParamType::Str, "a file created when apply starts"),
    ],
    one_of: &[],
    outputs: &["text", "len"],
    secret_outputs: &[],
    journal: true,
};

struct LogStep {
    file: PathBuf,
    text: String,
    fail: bool,
    sleep_ms: u64,
    started: Option<PathBuf>,
}

impl StepKind for LogKind {
    fn info(&self) -> &'static KindInfo {
        &LOG_INFO
    }
    fn build(&self, p: &Map<String, Value>, _: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        Ok(Box::new(LogStep {
            file: PathBuf::from(p["file"].as_str().unwrap()),
            text: p["text"].as_str().map_or_else(|| p["text"].to_string(), str::to_owned),
            fail: p.get("fail").is_some_and(|v| v == &json!(true) || v == &json!("true")),
            sleep_ms: p
                .get("sleep_ms")
                .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
                .unwrap_or(0),
            started: p.get("started").and_then(Value::as_str).map(PathBuf::from),
        }))
    }
}

#[async_trait]
impl Step for LogStep {
    async fn check(&self, _: &StepContext) -> Result<Check, StepError> {
        Ok(Check::Drift(Pending::new(format!("log `{}`", self.text))))
    }
    async fn apply(&self, _: &StepContext, _: Pending) -> Result<Applied, StepError> {
        if let Some(f) = &self.started {
            std::fs::write(f, "").unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(self.sleep_ms)).await;
        if self.fail {
            return Err(StepError::failed(format!("failing on purpose: {}", self.text)));
        }
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .unwrap();
        f.write_all(format!("{}\n", self.text).as_bytes()).unwrap();
        let mut o = Outputs::new();
        o.insert("text".into(), json!(self.text));
        o.insert("len".into(), json!(self.text.len()));
        Ok(Applied::changed(o))
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Each journal test, once per backend.
#[macro_export]
macro_rules! on_both_journals {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(super::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(super::Backend::Postgres) } )*
        }
    };
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub journal: Location,
}

impl Env {
    pub fn new() -> Self {
        Self::on(Backend::Sqlite)
    }
    /// A test directory, and a journal of its own on `backend` (for
    /// PostgreSQL, a fresh schema on the shared test server; the password is
    /// in the URL, which only the CLI refuses).
    pub fn on(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let journal = match backend {
            Backend::Sqlite => Location::Sqlite(dir.path().join("journal.db")),
            Backend::Postgres => {
                let pg = PgServer::shared();
                let url = pg
                    .fresh_url()
                    .replace("flowrun@", &format!("flowrun:{}@", flowrun_lab::postgres::PASSWORD));
                Location::parse(&url).unwrap()
            }
        };
        Self { dir, journal }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text.replace("LOG", self.path("log.txt").to_str().unwrap())).unwrap();
        p
    }
    pub fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("log.txt"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
    pub fn run_with(&self, wf: &Path, opts: RunOptions) -> Result<RunReport, RunError> {
        self.run_signalled(wf, opts, &[])
    }

    /// A run that receives SIGTERM (15) as soon as each of the files
    /// `signals` exists, one after the other (each wait bounded by 60 s).
    pub fn run_signalled(&self, wf: &Path, opts: RunOptions, signals: &[PathBuf]) -> Result<RunReport, RunError> {
        let registry = Registry::new(vec![Box::new(LogKind)]);
        // A test that needs hosts writes `hosts.yml` beside the workflow.
        let hosts = self.path("hosts.yml");
        let inv = if hosts.exists() {
            Inventory::load(&hosts).unwrap()
        } else {
            Inventory::empty()
        };
        let extra = opts.extra_vars.clone();
        let w = Arc::new(
            loader::load(
                wf,
                &LoadContext {
                    registry: &registry,
                    inventory: &inv,
                    extra_vars: &extra,
                },
            )
            .unwrap_or_else(|e| panic!("{e}")),
        );
        let p = Arc::new(plan::plan(w, &inv, &extra, None).unwrap());
        let journal = Arc::new(Journal::connect(&self.journal).unwrap());
        let key = SecretKey::load_or_create(&self.path("journal.key")).unwrap();
        journal.check_key(&key, &self.path("journal.key")).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (tx, rx) = tokio::sync::watch::channel(None);
        let at = signals.to_vec();
        rt.spawn(async move {
            for file in at {
                for _ in 0..6000 {
                    if file.exists() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                let _ = tx.send(Some(15));
            }
            // Keep the sender: a closed channel is not a signal.
            std::future::pending::<()>().await;
        });
        rt.block_on(exec::run(
            p,
            opts,
            RunEnv {
                journal: Some(journal),
                key,
                masker: Masker::global(),
                secrets: Map::new(),
                pool: Arc::new(Pool::new(None)),
                sink: Arc::new(NoEvents),
                interrupt: rx,
            },
        ))
    }
    /// The test's journal, opened beside the runs.
    pub fn journal(&self) -> Journal {
        Journal::connect(&self.journal).unwrap()
    }

    pub fn run(&self, wf: &Path) -> RunReport {
        self.run_with(wf, RunOptions::default()).unwrap()
    }
}

pub fn count(r: &RunReport, s: Status) -> usize {
    r.results.iter().filter(|x| x.status == s).count()
}
