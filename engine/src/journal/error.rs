//! The journal's one error type, and which of its errors are the user's
//! configuration (exit 2) rather than a failure (exit 1).

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal `{journal}`: {message}")]
    Open { journal: String, message: String },
    /// The journal's address or settings are wrong (a bad URL, a password in argv).
    #[error("journal: {0}")]
    Config(String),
    /// The server refused our credentials.
    #[error("journal `{journal}`: {message}")]
    Auth { journal: String, message: String },
    #[error("journal `{journal}` has schema version {found}, newer than this flowrun knows ({known}): upgrade flowrun on this controller")]
    NewerSchema { journal: String, found: u32, known: u32 },
    #[error("journal `{journal}` was written with another key (key id {journal_key}), not with `{key_file}` (key id {our_key}): use the key file of the controllers that share this journal (--journal-key / FLOWRUN_JOURNAL_KEY_FILE); nothing was run")]
    WrongKey {
        journal: String,
        key_file: String,
        journal_key: String,
        our_key: String,
    },
    #[error("journal `{journal}` was written with key id {journal_key}, and the key file `{key_file}` does not exist: copy it from a controller that shares this journal (--journal-key / FLOWRUN_JOURNAL_KEY_FILE); nothing was run")]
    MissingKey {
        journal: String,
        key_file: String,
        journal_key: String,
    },
    #[error("journal: {0}")]
    Sql(String),
    #[error("journal: the journal thread stopped")]
    Gone,
}

impl JournalError {
    /// Whether this is the user's configuration (exit 2) rather than a failure (exit 1).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::Config(_)
                | Self::Auth { .. }
                | Self::NewerSchema { .. }
                | Self::WrongKey { .. }
                | Self::MissingKey { .. }
        )
    }
}

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e.to_string())
    }
}
