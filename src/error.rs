//! The one error type of the CLI: typed until it reaches `main`, rendered
//! once (masked), and mapped to its exit status once.

use crate::exit::ExitStatus;
use flowrun_engine::diag::{Diagnostic, Diagnostics};
use flowrun_engine::journal::{JournalError, LockHolder};
use flowrun_engine::secrets::Masker;
use std::fmt;
use std::io::Write as _;

#[derive(Debug)]
pub enum Error {
    /// Invalid input, with where it was found: nothing ran.
    Invalid(Diagnostics),
    /// Another live run of the workflow with this inventory holds the lock.
    Locked {
        workflow: String,
        holder: LockHolder,
    },
    Journal(JournalError),
    /// The operating system refused something (a file, the runtime).
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// Invalid input with no position (arguments).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(Diagnostic::new(message).into())
    }

    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Invalid(_) => ExitStatus::Invalid,
            Self::Locked { .. } => ExitStatus::Locked,
            Self::Journal(e) if e.is_config() => ExitStatus::Invalid,
            Self::Journal(_) | Self::Io { .. } => ExitStatus::Failed,
        }
    }

    /// Print the error on stderr (masked) and give its exit status.
    pub fn report(self) -> ExitStatus {
        let mut text = Masker::global().mask(&self.to_string()).into_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let _ = std::io::stderr().write_all(text.as_bytes());
        self.exit_status()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(d) => write!(f, "{d}"),
            Self::Locked { workflow, holder } => write!(
                f,
                "error: workflow `{workflow}` is already running with this inventory: {holder}; not starting a second run (`--wait-lock DURATION` waits for it)"
            ),
            Self::Journal(e) => write!(f, "error: {e}"),
            Self::Io { what, source } => write!(f, "error: {what}: {source}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Diagnostics> for Error {
    fn from(d: Diagnostics) -> Self {
        Self::Invalid(d)
    }
}

impl From<Diagnostic> for Error {
    fn from(d: Diagnostic) -> Self {
        Self::Invalid(d.into())
    }
}

impl From<JournalError> for Error {
    fn from(e: JournalError) -> Self {
        Self::Journal(e)
    }
}
