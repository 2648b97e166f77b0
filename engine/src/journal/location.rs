//! Where a journal lives, as users write it: a file path (or `sqlite://PATH`)
//! for a SQLite journal, `postgres://USER@HOST:PORT/DB?…` for a shared
//! PostgreSQL one. Displayed without any password, so it can go in messages.

use super::pgurl::PgTarget;
use super::JournalError;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(Box<PgTarget>),
}

impl Location {
    /// Parse `--journal` / `FLOWRUN_JOURNAL` / `journal copy --from/--to`.
    pub fn parse(text: &str) -> Result<Self, JournalError> {
        if let Some(rest) = text.strip_prefix("sqlite://") {
            if rest.is_empty() {
                return Err(JournalError::Config(
                    "`sqlite://` needs a path: `sqlite:///var/lib/flowrun/journal.db`".into(),
                ));
            }
            return Ok(Self::Sqlite(crate::paths::expand_home(rest)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Self::Postgres(Box::new(PgTarget::parse(text)?)));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(JournalError::Config(format!(
                "unknown journal scheme `{scheme}://`: use a file path, `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`"
            )));
        }
        if text.is_empty() {
            return Err(JournalError::Config("the journal location is empty".into()));
        }
        Ok(Self::Sqlite(crate::paths::expand_home(text)))
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// A name for the default key file of this journal: `<file>.key` beside a
    /// SQLite journal; for PostgreSQL, a file in the state directory named
    /// after the server, database and schema.
    pub fn default_key_file(&self) -> PathBuf {
        match self {
            Self::Sqlite(p) => {
                let mut k = p.clone().into_os_string();
                k.push(".key");
                PathBuf::from(k)
            }
            Self::Postgres(t) => {
                let name: String = format!("journal-{}-{}-{}-{}.key", t.host_label(), t.port, t.dbname, t.schema)
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                crate::paths::state_dir().join(name)
            }
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres(t) => write!(f, "{t}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn paths_and_urls() {
        assert!(matches!(Location::parse("j.db").unwrap(), Location::Sqlite(p) if p == Path::new("j.db")));
        assert!(
            matches!(Location::parse("sqlite:///var/j.db").unwrap(), Location::Sqlite(p) if p == Path::new("/var/j.db"))
        );
        assert!(Location::parse("postgres://u@127.0.0.1:5432/db?sslmode=disable")
            .unwrap()
            .is_postgres());
        let e = Location::parse("mysql://x").unwrap_err().to_string();
        assert!(e.contains("unknown journal scheme `mysql://`"), "{e}");
    }
}
