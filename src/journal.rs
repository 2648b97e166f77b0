//! Opening the journal a command names: `--journal` or `$FLOWRUN_JOURNAL`
//! (a file, or a `postgres://` URL whose password never comes from argv),
//! and the key that goes with it (`--journal-key` or
//! `$FLOWRUN_JOURNAL_KEY_FILE`), checked against the journal's key check
//! value so that a controller with the wrong key stops before running
//! anything rather than re-running everything.

use crate::cli::JournalArgs;
use crate::error::Error;
use flowrun_engine::journal::{Journal, JournalError, Location};
use flowrun_engine::secrets::{Masker, SecretKey};
use std::path::Path;
use std::sync::Arc;

/// The journal's location: the flag, else `$FLOWRUN_JOURNAL`, else the default file.
pub fn location(args: &JournalArgs) -> Result<Location, Error> {
    let (text, from_argv) = match &args.journal {
        Some(t) => (t.clone(), true),
        None => match std::env::var("FLOWRUN_JOURNAL").ok().filter(|v| !v.is_empty()) {
            Some(t) => (t, false),
            None => return Ok(Location::Sqlite(flowrun_engine::journal::default_path())),
        },
    };
    parse(&text, from_argv)
}

/// Parse a journal location given on the command line (`from_argv`) or in the environment.
pub fn parse(text: &str, from_argv: bool) -> Result<Location, Error> {
    let loc =
        Location::parse(text).map_err(|e| Error::invalid(e.to_string().trim_start_matches("journal: ").to_owned()))?;
    if let Location::Postgres(t) = &loc {
        if t.has_url_password() {
            // Whatever happens next, it is never printed.
            if let Ok(Some(pw)) = t.password() {
                Masker::global().add(&pw);
            }
            if from_argv {
                return Err(Error::invalid(format!(
                    "the journal URL `{t}` on the command line carries a password, which any user can read in the process list: put it in PGPASSWORD, FLOWRUN_JOURNAL_PASSWORD_FILE or ~/.pgpass"
                )));
            }
        }
    }
    Ok(loc)
}

/// The journal (migrated to this version) and its checked key.
pub fn open(args: &JournalArgs) -> Result<(Arc<Journal>, SecretKey), Error> {
    let loc = location(args)?;
    open_at(&loc, args.journal_key.as_deref())
}

pub fn open_at(loc: &Location, key_file: Option<&Path>) -> Result<(Arc<Journal>, SecretKey), Error> {
    let journal = Journal::connect(loc)?;
    let key_file = key_file.map_or_else(|| loc.default_key_file(), Path::to_path_buf);
    let key = load_key(&journal, &key_file)?;
    journal.check_key(&key, &key_file)?;
    Ok((Arc::new(journal), key))
}

/// The key file: read it, or create it (0600) for a journal that knows no key yet.
fn load_key(journal: &Journal, file: &Path) -> Result<SecretKey, Error> {
    if !file.exists() {
        if let Some(journal_key) = journal.key_id()? {
            return Err(JournalError::MissingKey {
                journal: journal.location().to_string(),
                key_file: file.display().to_string(),
                journal_key,
            }
            .into());
        }
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("cannot create `{}`", dir.display()), e))?;
        }
    }
    SecretKey::load_or_create(file).map_err(|e| Error::io(format!("journal key `{}`", file.display()), e))
}
