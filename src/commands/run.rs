//! `flowrun run`: load, plan, resolve secrets, take the lock, run, report
//! (text or JSON on stdout, JUnit and metrics files), exit with the outcome.

use crate::cli::{OutputFormat, RunArgs};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::load::{registry, runtime, Loaded};
use crate::output::lines::LinePrinter;
use flowrun_engine::exec::{self, RunEnv, RunError, RunOptions};
use flowrun_engine::pool::Pool;
use flowrun_engine::report::{Outcome, RunReport};
use flowrun_engine::secrets::Masker;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

/// Each host of the plan with its number of steps (for the progress bars).
fn host_totals(plan: &flowrun_engine::plan::Plan) -> Vec<(String, u64)> {
    plan.active_hosts
        .iter()
        .map(|h| {
            let n = plan.nodes.iter().filter(|n| n.host.name == h.name).count();
            (h.name.clone(), u64::try_from(n).unwrap_or(0))
        })
        .collect()
}

pub fn run(args: &RunArgs, quiet: bool) -> Result<ExitStatus, Error> {
    let registry = registry();
    let loaded = Loaded::load(&args.workflow, &args.common, &registry)?;
    let plan = Arc::new(loaded.plan(args.common.limit.as_deref())?);
    let masker = Masker::global();
    let secret_values = flowrun_engine::model::secret::resolve(&loaded.workflow.secrets, &masker)?;
    let (journal, key) = crate::journal::open(&args.common.journal)?;
    let opts = RunOptions {
        check: args.check,
        diff: args.diff,
        verify: args.verify,
        force: args.force,
        forks: usize::from(args.forks),
        tags: args.tags.clone(),
        skip_tags: args.skip_tags.clone(),
        extra_vars: loaded.extra.clone(),
        wait_lock: args.wait_lock,
        ..RunOptions::default()
    };
    let json = args.output == OutputFormat::Json;
    let printer = Arc::new(LinePrinter::new(args.diff, quiet, json).with_progress(&host_totals(&plan)));
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
            sink: printer.clone(),
            interrupt: rx,
        };
        exec::run(plan.clone(), opts, env).await
    });
    printer.finish();
    let report = match report {
        Ok(r) => r,
        Err(RunError::Locked(holder)) => {
            return Err(Error::Locked {
                workflow: loaded.workflow.name.clone(),
                holder,
            })
        }
        Err(RunError::Interrupted(sig)) => {
            eprintln!("interrupted by signal {sig} while waiting for the lock: nothing was run");
            return Ok(ExitStatus::Interrupted(sig));
        }
        Err(RunError::Journal(e)) => return Err(e.into()),
        Err(RunError::Random(e)) => return Err(Error::io("cannot draw a run id", e)),
    };
    let status = match report.outcome {
        Outcome::Success => ExitStatus::Success,
        Outcome::Failed => ExitStatus::Failed,
        Outcome::Interrupted(sig) => ExitStatus::Interrupted(sig),
    };
    write_reports(args, &report, &masker, status)?;
    let mut out = std::io::stdout().lock();
    if json {
        let doc = serde_json::to_string_pretty(&report.to_json(&masker)).unwrap_or_default();
        let _ = writeln!(out, "{}", masker.mask(&doc));
    } else if !quiet || status != ExitStatus::Success {
        let _ = write!(out, "{}", crate::output::recap::text(&report));
    }
    Ok(status)
}

/// `--junit` and `--metrics` files.
fn write_reports(args: &RunArgs, report: &RunReport, masker: &Masker, status: ExitStatus) -> Result<(), Error> {
    if let Some(path) = &args.junit {
        write_atomic(path, report.to_junit(masker).as_bytes())?;
    }
    let remote = flowrun_engine::transport::remote_stats();
    tracing::info!(
        "{} remote commands over {} helper channels",
        remote.commands(),
        remote.sessions()
    );
    if let Some(path) = &args.metrics {
        let mut text = report.to_metrics(status.code());
        text.push_str(&flowrun_engine::report::remote_metrics(&report.workflow, remote));
        write_atomic(path, masker.mask(&text).as_bytes())?;
    }
    Ok(())
}

fn spawn_signal_listener(tx: tokio::sync::watch::Sender<Option<i32>>) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        let sig = tokio::select! {
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
        };
        tracing::warn!("signal {sig} received: stopping the running steps; the journal stays consistent");
        let _ = tx.send(Some(sig));
        // A second signal stops the rollback and cleanup steps that run after the first.
        let again = tokio::select! {
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
        };
        let _ = tx.send(Some(again));
        // A third ends the process at once.
        tokio::select! {
            _ = int.recv() => std::process::exit(ExitStatus::Interrupted(libc::SIGINT).code()),
            _ = term.recv() => std::process::exit(ExitStatus::Interrupted(libc::SIGTERM).code()),
        }
    });
}

mod libc {
    pub const SIGINT: i32 = 2;
    pub const SIGTERM: i32 = 15;
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| Error::io(format!("cannot write `{}`", path.display()), e);
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
