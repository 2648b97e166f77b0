//! `flowrun journal ...`: upkeep of a journal. `migrate` brings its schema to
//! this flowrun's version (runs do it too; this does it ahead, and says
//! what it did), `copy` moves a journal into an empty one (SQLite to a
//! shared PostgreSQL), `prune` removes the history of old runs, `stats`
//! says what it holds.

use crate::cli::{CopyArgs, JournalArgs, JournalCommand, PruneArgs};
use crate::error::Error;
use crate::exit::ExitStatus;
use flowrun_engine::clock::utc_text;
use flowrun_engine::journal::{Journal, Location};
use std::path::Path;

pub fn journal(cmd: JournalCommand) -> Result<ExitStatus, Error> {
    match cmd {
        JournalCommand::Migrate(args) => migrate(&args),
        JournalCommand::Copy(args) => copy(&args),
        JournalCommand::Prune(args) => prune(&args),
        JournalCommand::Stats(args) => stats(&args),
    }
}

fn migrate(args: &JournalArgs) -> Result<ExitStatus, Error> {
    let loc = crate::journal::location(args)?;
    let j = Journal::connect_unmigrated(&loc)?;
    let (from, to) = j.migrate()?;
    if from == to {
        println!("journal {loc}: schema version {to}, up to date");
    } else {
        println!("journal {loc}: schema version {from} -> {to}");
    }
    Ok(ExitStatus::Success)
}

fn copy(args: &CopyArgs) -> Result<ExitStatus, Error> {
    let from = crate::journal::parse(&args.from, true)?;
    let to = crate::journal::parse(&args.to, true)?;
    // The source's key: checked, so the copy is readable with it.
    let key_file = args.journal_key.clone().unwrap_or_else(|| from.default_key_file());
    let (src, key) = crate::journal::open_at(&from, Some(&key_file))?;
    let dst = Journal::connect(&to)?;
    let n = src.copy_to(&dst)?;
    dst.flush()?;
    println!("copied {n} rows from {from} to {to}");
    let dest_key = to.default_key_file();
    if args.journal_key.is_none() && !dest_key.exists() {
        write_key_copy(&key_file, &dest_key)?;
        println!("the key `{}` is now also `{}`", key_file.display(), dest_key.display());
    }
    let id: String = key.check_value().chars().take(12).collect();
    println!(
        "every controller of {to} needs this key (key id {id}): pass `--journal-key {}` or set FLOWRUN_JOURNAL_KEY_FILE",
        key_file.display()
    );
    Ok(ExitStatus::Success)
}

/// Copy a key file, mode 0600, never over an existing one.
fn write_key_copy(from: &Path, to: &Path) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e| Error::io(format!("cannot copy the key to `{}`", to.display()), e);
    let bytes = std::fs::read(from).map_err(fail)?;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(fail)?;
    f.write_all(&bytes).map_err(fail)
}

fn prune(args: &PruneArgs) -> Result<ExitStatus, Error> {
    let (j, _) = crate::journal::open(&args.journal)?;
    let age = i64::try_from(args.older_than.as_secs()).unwrap_or(i64::MAX);
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
    .unwrap_or(0);
    let before = now.saturating_sub(age);
    let p = j.prune(before, args.dry_run)?;
    let verb = if args.dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} run(s) and {} step result(s) that started before {}",
        p.runs,
        p.run_steps,
        utc_text(before)
    );
    if p.kept > 0 {
        println!(
            "kept {} older run(s): they hold the last success of step instances still journaled",
            p.kept
        );
    }
    Ok(ExitStatus::Success)
}

fn stats(args: &JournalArgs) -> Result<ExitStatus, Error> {
    let loc = crate::journal::location(args)?;
    let (j, key) = crate::journal::open_at(&loc, args.journal_key.as_deref())?;
    let s = j.stats()?;
    let backend = match loc {
        Location::Sqlite(_) => "sqlite",
        Location::Postgres(_) => "postgres",
    };
    let when = |t: Option<i64>| t.map_or_else(|| "-".to_owned(), utc_text);
    println!("journal {loc} ({backend}), schema version {}", s.schema_version);
    println!("key id {}", key.check_value().chars().take(12).collect::<String>());
    println!(
        "runs {}  step results {}  records {}  owed handlers {}",
        s.runs, s.run_steps, s.records, s.pending_handlers
    );
    println!("oldest run {}  newest run {}", when(s.oldest_run), when(s.newest_run));
    if let Some(b) = s.bytes {
        println!("size {:.1} MiB", b as f64 / 1_048_576.0);
    }
    for w in &s.workflows {
        println!(
            "  {:<28} runs {:<6} records {:<7} last run {}",
            w.workflow,
            w.runs,
            w.records,
            when(w.last_run)
        );
    }
    Ok(ExitStatus::Success)
}
