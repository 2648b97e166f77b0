//! The commands: wiring of loader, planner, journal and executor, and the
//! mapping of every outcome to its exit status (0 success, 1 a step failed or
//! a host was unreachable, 2 invalid input with nothing run, 3 locked by
//! another run, 130/143 interrupted).

use crate::cli::{Cli, Command, Common, GraphFormat, OutputFormat, RunArgs};
use crate::output::LinePrinter;
use flowrun_engine::diag::{Diagnostic, Diagnostics};
use flowrun_engine::exec::{self, RunEnv, RunError, RunOptions};
use flowrun_engine::inventory::Inventory;
use flowrun_engine::journal::Journal;
use flowrun_engine::loader::{self, LoadContext};
use flowrun_engine::model::Workflow;
use flowrun_engine::plan::{self, Plan};
use flowrun_engine::pool::Pool;
use flowrun_engine::registry::Registry;
use flowrun_engine::report::Outcome;
use flowrun_engine::secrets::{self, Masker, SecretKey};
use serde_json::{Map, Value};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const EXIT_FAILED: i32 = 1;
pub const EXIT_INVALID: i32 = 2;
pub const EXIT_LOCKED: i32 = 3;

/// A command's failure: what to print and the exit status.
struct Failure {
    code: i32,
    message: String,
}

impl From<Diagnostics> for Failure {
    fn from(d: Diagnostics) -> Self {
        Self {
            code: EXIT_INVALID,
            message: d.to_string(),
        }
    }
}

impl From<Diagnostic> for Failure {
    fn from(d: Diagnostic) -> Self {
        Diagnostics::from(d).into()
    }
}

fn io_failure(message: String) -> Failure {
    Failure {
        code: EXIT_FAILED,
        message: format!("error: {message}\n"),
    }
}

pub fn main(cli: Cli) -> i32 {
    init_logging(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Run(args) => run(&args, cli.quiet),
        Command::Plan(args) => plan_cmd(&args.workflow, &args.common),
        Command::Validate(args) => validate(&args.workflows, &args.common),
        Command::Graph(args) => graph(&args.workflow, args.format, &args.common),
        Command::List => list(),
        Command::Steps(args) => steps(args.name.as_deref()),
        Command::History(args) => history(args.journal.as_deref(), args.workflow.as_deref(), args.limit),
        Command::Show(args) => show(args.journal.as_deref(), &args.run_id),
        Command::Forget(args) => forget(
            args.journal.as_deref(),
            args.workflow.as_deref(),
            args.step.as_deref(),
            args.host.as_deref(),
        ),
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            let masked = Masker::global().mask(&f.message).into_owned();
            let _ = std::io::stderr().write_all(masked.as_bytes());
            f.code
        }
    }
}

/// Logs on stderr, every line masked.
fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| MaskedStderr)
        .with_target(false)
        .without_time()
        .try_init();
}

struct MaskedStderr;

impl std::io::Write for MaskedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(Masker::global().mask(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn registry() -> Registry {
    Registry::new(flowrun_steps::registry())
}

/// A workflow argument: a file, or a name in ./workflows.
fn workflow_path(arg: &str) -> Result<PathBuf, Failure> {
    let p = Path::new(arg);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    let dir = workflows_dir();
    for ext in ["yml", "yaml"] {
        let candidate = dir.join(format!("{arg}.{ext}"));
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let names = workflow_files()
        .into_iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect::<Vec<_>>();
    let mut d = Diagnostic::new(format!(
        "no workflow `{arg}`: not a file, and not in `{}`",
        dir.display()
    ));
    if let Some(s) = flowrun_engine::diag::did_you_mean(arg, names.iter().map(String::as_str)) {
        d = d.help(format!("did you mean `{s}`?"));
    }
    if !names.is_empty() {
        d = d.help(format!("workflows: {}", names.join(", ")));
    }
    Err(d.into())
}

fn workflows_dir() -> PathBuf {
    std::env::var_os("FLOWRUN_WORKFLOWS").map_or_else(|| PathBuf::from("workflows"), PathBuf::from)
}

fn workflow_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workflows_dir())
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

struct Loaded {
    workflow: Arc<Workflow>,
    inventory: Inventory,
    extra: Map<String, Value>,
}

fn load(arg: &str, common: &Common, registry: &Registry) -> Result<Loaded, Failure> {
    let path = workflow_path(arg)?;
    let inventory = match &common.inventory {
        Some(p) => Inventory::load(p)?,
        None => Inventory::empty(),
    };
    let extra = loader::parse_extra_vars(&common.extra_vars)?;
    let cx = LoadContext {
        registry,
        inventory: &inventory,
        extra_vars: &extra,
    };
    let workflow = Arc::new(loader::load(&path, &cx)?);
    Ok(Loaded {
        workflow,
        inventory,
        extra,
    })
}

fn make_plan(l: &Loaded, limit: Option<&str>) -> Result<Plan, Failure> {
    Ok(plan::plan(l.workflow.clone(), &l.inventory, &l.extra, limit)?)
}

fn journal_path(arg: Option<&Path>) -> PathBuf {
    arg.map_or_else(
        || flowrun_engine::paths::state_dir().join("journal.db"),
        Path::to_path_buf,
    )
}

fn open_journal(arg: Option<&Path>) -> Result<(Arc<Journal>, SecretKey), Failure> {
    let path = journal_path(arg);
    let journal = Journal::open(&path).map_err(|e| io_failure(e.to_string()))?;
    let mut key_path = path.clone().into_os_string();
    key_path.push(".key");
    let key = SecretKey::load_or_create(Path::new(&key_path)).map_err(|e| io_failure(format!("journal key: {e}")))?;
    Ok((Arc::new(journal), key))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| io_failure(format!("cannot start the runtime: {e}")))
}

fn run(args: &RunArgs, quiet: bool) -> Result<i32, Failure> {
    let registry = registry();
    let loaded = load(&args.workflow, &args.common, &registry)?;
    let plan = Arc::new(make_plan(&loaded, args.common.limit.as_deref())?);
    let masker = Masker::global();
    let secret_values = secrets::resolve(&loaded.workflow.secrets, &masker)?;
    let (journal, key) = open_journal(args.common.journal.as_deref())?;
    let opts = RunOptions {
        check: args.check,
        diff: args.diff,
        verify: args.verify,
        force: args.force,
        forks: usize::from(args.forks),
        tags: args.tags.clone(),
        skip_tags: args.skip_tags.clone(),
        extra_vars: loaded.extra.clone(),
    };
    let json = args.output == OutputFormat::Json;
    let rt = runtime()?;
    let report = rt.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(None);
        spawn_signal_listener(tx);
        let env = RunEnv {
            journal: Some(journal.clone()),
            key,
            masker: masker.clone(),
            secrets: secret_values,
            pool: Arc::new(Pool::new(flowrun_engine::transport::default_connector())),
            sink: Arc::new(LinePrinter::new(args.diff, quiet, json)),
            interrupt: rx,
        };
        exec::run(plan, opts, env).await
    });
    let report = match report {
        Ok(r) => r,
        Err(RunError::Locked(h)) => {
            return Err(Failure {
                code: EXIT_LOCKED,
                message: format!(
                    "error: workflow `{}` is already running with this inventory: pid {} started {} (run {}); not starting a second run\n",
                    loaded.workflow.name,
                    h.pid,
                    exec::utc_text(h.started_at),
                    h.run_id
                ),
            })
        }
        Err(RunError::Journal(e)) => return Err(io_failure(e.to_string())),
    };
    let code = match report.outcome {
        Outcome::Success => 0,
        Outcome::Failed => EXIT_FAILED,
        Outcome::Interrupted(sig) => 128 + sig,
    };
    if let Some(path) = &args.junit {
        write_atomic(path, report.to_junit(&masker).as_bytes())?;
    }
    let remote = flowrun_engine::transport::remote_stats();
    tracing::info!(
        "{} remote commands over {} helper channels",
        remote.commands(),
        remote.sessions()
    );
    if let Some(path) = &args.metrics {
        let mut text = report.to_metrics(code);
        text.push_str(&flowrun_engine::report::remote_metrics(&report.workflow, remote));
        write_atomic(path, masker.mask(&text).as_bytes())?;
    }
    let mut out = std::io::stdout().lock();
    if json {
        let doc = serde_json::to_string_pretty(&report.to_json(&masker)).unwrap_or_default();
        let _ = writeln!(out, "{}", masker.mask(&doc));
    } else if !quiet || code != 0 {
        let mut tail = String::new();
        if let Outcome::Interrupted(sig) = report.outcome {
            tail.push_str(&format!(
                "interrupted by signal {sig}: the journal is consistent; the next run resumes\n"
            ));
        }
        let mode = if report.check_mode {
            " (check mode: nothing was changed)"
        } else {
            ""
        };
        let _ = write!(
            out,
            "\nRECAP {} run {}{mode}\n{}{tail}",
            report.workflow,
            report.run_id,
            report.recap()
        );
    }
    Ok(code)
}

fn spawn_signal_listener(tx: tokio::sync::watch::Sender<Option<i32>>) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        let sig = tokio::select! {
            _ = int.recv() => libc_sig::SIGINT,
            _ = term.recv() => libc_sig::SIGTERM,
        };
        tracing::warn!("signal {sig} received: stopping the running steps; the journal stays consistent");
        let _ = tx.send(Some(sig));
        // A second signal ends the process at once.
        tokio::select! {
            _ = int.recv() => std::process::exit(128 + libc_sig::SIGINT),
            _ = term.recv() => std::process::exit(128 + libc_sig::SIGTERM),
        }
    });
}

mod libc_sig {
    pub const SIGINT: i32 = 2;
    pub const SIGTERM: i32 = 15;
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| io_failure(format!("cannot write `{}`: {e}", path.display()));
    let mut tmp = tempfile::Builder::new()
        .prefix(".flowrun.")
        .tempfile_in(dir)
        .map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644)).map_err(fail)?;
    }
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

fn plan_cmd(arg: &str, common: &Common) -> Result<i32, Failure> {
    let registry = registry();
    let loaded = load(arg, common, &registry)?;
    let plan = make_plan(&loaded, common.limit.as_deref())?;
    let masker = Masker::global();
    // Secrets are only needed to predict fingerprints; without them, say "unknown".
    let secret_values = secrets::resolve(&loaded.workflow.secrets, &masker).ok();
    let path = journal_path(common.journal.as_deref());
    let prediction = match (&secret_values, path.exists()) {
        (Some(sv), true) => {
            let (journal, key) = open_journal(common.journal.as_deref())?;
            let records = journal
                .load(&loaded.workflow.name)
                .map_err(|e| io_failure(e.to_string()))?;
            let opts = RunOptions {
                extra_vars: loaded.extra.clone(),
                ..RunOptions::default()
            };
            Some(exec::predict_skips(&plan, &records, &opts, sv, &key, &masker))
        }
        _ => None,
    };
    let wf = &plan.workflow;
    let mut out = String::new();
    out.push_str(&format!(
        "workflow {} ({} steps, {} nodes, {} phases)\n",
        wf.name,
        wf.steps.len(),
        plan.nodes.len(),
        plan.phases.len()
    ));
    for (i, phase) in plan.phases.iter().enumerate() {
        out.push_str(&format!("phase {}:\n", i + 1));
        let mut seen: Vec<usize> = Vec::new();
        for &n in phase {
            let s = plan.nodes[n].step;
            if seen.contains(&s) {
                continue;
            }
            seen.push(s);
            let step = &wf.steps[s];
            let nodes: Vec<usize> = phase.iter().copied().filter(|&m| plan.nodes[m].step == s).collect();
            let hosts: Vec<String> = nodes
                .iter()
                .map(|&m| {
                    let h = plan.nodes[m].host.name.clone();
                    match prediction.as_ref().map(|p| p[m]) {
                        Some(exec::Prediction::Skip) => format!("{h} (journal: skip)"),
                        Some(exec::Prediction::Run) => format!("{h} (run)"),
                        Some(exec::Prediction::WhenFalse) => format!("{h} (skipped: `when` is false)"),
                        Some(exec::Prediction::Items { skip, total }) if skip == total => {
                            format!("{h} (journal: skip, {total} items)")
                        }
                        Some(exec::Prediction::Items { skip, total }) => {
                            format!("{h} (journal: skip {skip} of {total} items, run {})", total - skip)
                        }
                        Some(exec::Prediction::Unknown) => format!("{h} (decided at run time)"),
                        None => h,
                    }
                })
                .collect();
            let each = if step.for_each.is_some() { " for_each" } else { "" };
            out.push_str(&format!(
                "  {} ({}{each}) on {}\n",
                step.id,
                step.kind_name(),
                hosts.join(", ")
            ));
        }
    }
    if !wf.handlers.is_empty() {
        let names: Vec<&str> = wf.handlers.iter().map(|h| h.id.as_str()).collect();
        out.push_str(&format!("handlers (when notified): {}\n", names.join(", ")));
    }
    if prediction.is_none() {
        out.push_str("journal: no prediction (no journal yet, or secrets unavailable)\n");
    }
    print!("{}", masker.mask(&out));
    Ok(0)
}

fn validate(args: &[String], common: &Common) -> Result<i32, Failure> {
    let registry = registry();
    let mut errors = Diagnostics::default();
    for a in args {
        match load(a, common, &registry).and_then(|l| make_plan(&l, common.limit.as_deref()).map(|p| (l, p))) {
            Ok((l, p)) => println!(
                "ok: {} ({} steps, {} nodes, {} phases)",
                l.workflow.name,
                l.workflow.steps.len(),
                p.nodes.len(),
                p.phases.len()
            ),
            Err(f) if f.code == EXIT_INVALID => errors.push(Diagnostic::new(
                f.message.trim_start_matches("error: ").trim_end().to_owned(),
            )),
            Err(f) => return Err(f),
        }
    }
    if errors.is_empty() {
        Ok(0)
    } else {
        let text: Vec<String> = errors.0.iter().map(|d| format!("error: {}\n", d.message)).collect();
        Err(Failure {
            code: EXIT_INVALID,
            message: text.join("\n"),
        })
    }
}

fn graph(arg: &str, format: GraphFormat, common: &Common) -> Result<i32, Failure> {
    let registry = registry();
    let loaded = load(arg, common, &registry)?;
    let plan = make_plan(&loaded, common.limit.as_deref())?;
    print!("{}", plan.graph(matches!(format, GraphFormat::Mermaid)));
    Ok(0)
}

fn list() -> Result<i32, Failure> {
    let registry = registry();
    let files = workflow_files();
    if files.is_empty() {
        println!("no workflows in `{}`", workflows_dir().display());
    }
    let inventory = Inventory::empty();
    let extra = Map::new();
    for f in files {
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Descriptions come from the files; a file that does not load still shows.
        let cx = LoadContext {
            registry: &registry,
            inventory: &inventory,
            extra_vars: &extra,
        };
        let desc = match loader::load(&f, &cx) {
            Ok(w) => w.description.unwrap_or_default(),
            Err(_) => read_description(&f).unwrap_or_else(|| "(needs an inventory to check)".into()),
        };
        println!("{name:<28} {desc}");
    }
    Ok(0)
}

fn steps(name: Option<&str>) -> Result<i32, Failure> {
    let registry = registry();
    let Some(name) = name else {
        for k in registry.kinds() {
            let info = k.info();
            println!("{:<14} {}", info.name, info.doc);
        }
        return Ok(0);
    };
    let Some(kind) = registry.get(name) else {
        let d = flowrun_engine::diag::suggest(
            Diagnostic::new(format!("unknown step `{name}`")),
            name,
            &registry.names(),
            "steps",
        );
        return Err(d.into());
    };
    let info = kind.info();
    println!("{}: {}\n", info.name, info.doc);
    println!("parameters:");
    for p in info.params {
        let req = if p.required { "required" } else { "optional" };
        println!("  {:<18} {req}, {}: {}", p.name, p.ty, p.doc);
    }
    for group in info.one_of {
        println!("  (exactly one of: {})", group.join(", "));
    }
    if !info.outputs.is_empty() {
        let outs: Vec<String> = info
            .outputs
            .iter()
            .map(|o| {
                if info.secret_outputs.contains(o) {
                    format!("{o} (secret)")
                } else {
                    (*o).to_owned()
                }
            })
            .collect();
        println!("outputs: {}", outs.join(", "));
    }
    if !info.journal {
        println!("not journaled by default: it runs on every run (a probe)");
    }
    Ok(0)
}

fn read_description(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("description:")
            .map(|d| d.trim().trim_matches('"').to_owned())
    })
}

fn history(journal: Option<&Path>, workflow: Option<&str>, limit: usize) -> Result<i32, Failure> {
    let (j, _) = open_journal(journal)?;
    let rows = j.history(workflow, limit).map_err(|e| io_failure(e.to_string()))?;
    if rows.is_empty() {
        println!("no runs recorded");
    }
    for r in rows {
        let totals = r
            .totals
            .as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .map_or_else(String::new, |t| {
                format!(
                    "ok={} changed={} failed={} skipped={} unreachable={}",
                    t["ok"], t["changed"], t["failed"], t["skipped"], t["unreachable"]
                )
            });
        let took = r
            .finished_at
            .map_or_else(|| "-".into(), |f| format!("{}s", f - r.started_at));
        println!(
            "{}  {:<28} {:<11} {:<7} {:>5}  {}  {}",
            r.id,
            r.workflow,
            r.status,
            r.mode,
            took,
            exec::utc_text(r.started_at),
            totals
        );
    }
    Ok(0)
}

fn show(journal: Option<&Path>, run_id: &str) -> Result<i32, Failure> {
    let (j, _) = open_journal(journal)?;
    let Some((run, steps)) = j.show(run_id).map_err(|e| io_failure(e.to_string()))? else {
        return Err(Failure {
            code: EXIT_INVALID,
            message: format!("error: no run `{run_id}` in the journal\n"),
        });
    };
    println!(
        "run {} of {} ({}), {}, started {}, pid {}",
        run.id,
        run.workflow,
        run.mode,
        run.status,
        exec::utc_text(run.started_at),
        run.pid
    );
    println!("inventory: {}", run.inventory);
    for s in steps {
        let item = if s.item.is_empty() {
            String::new()
        } else {
            format!(" (item={})", s.item)
        };
        let journal = if s.from_journal { " (journal)" } else { "" };
        let msg = s
            .message
            .map(|m| format!(" - {}", m.lines().next().unwrap_or("")))
            .unwrap_or_default();
        println!(
            "{}: [{}] {}{item}{journal} {}ms{msg}",
            s.status, s.host, s.step_id, s.duration_ms
        );
    }
    Ok(0)
}

fn forget(
    journal: Option<&Path>,
    workflow: Option<&str>,
    step: Option<&str>,
    host: Option<&str>,
) -> Result<i32, Failure> {
    if workflow.is_none() && step.is_none() && host.is_none() {
        return Err(Failure {
            code: EXIT_INVALID,
            message:
                "error: `forget` needs --workflow, --step or --host (to forget everything, remove the journal file)\n"
                    .into(),
        });
    }
    let (j, _) = open_journal(journal)?;
    let n = j.forget(workflow, step, host).map_err(|e| io_failure(e.to_string()))?;
    println!("forgot {n} journal record(s); those steps run again on the next run");
    Ok(0)
}
