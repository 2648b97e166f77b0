//! The vocabulary of results, one type each, used from the executor to the
//! journal and the output: how an instance ended ([`Status`]), how a run
//! ended ([`RunStatus`]) and what kind of run it was ([`RunMode`]). The
//! journal stores each as its word (`as_str`); a word it does not know is an
//! error when read back, never a silent default.

use serde::Serialize;
use std::fmt;

/// Implements the word form of an enum: `as_str`, `parse`, `Display` (padded
/// like `str`), and `WORDS`.
macro_rules! words {
    ($ty:ident $what:literal { $($variant:ident => $word:literal),* $(,)? }) => {
        impl $ty {
            /// Every word, in declaration order.
            pub const WORDS: &'static [&'static str] = &[$($word),*];

            /// The word the journal stores and the output prints.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word),*
                }
            }

            /// Parse a stored word.
            pub fn parse(word: &str) -> Option<Self> {
                match word {
                    $($word => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                Self::parse(s).ok_or_else(|| UnknownWord {
                    what: $what,
                    word: s.to_owned(),
                    known: Self::WORDS,
                })
            }
        }
    };
}

/// A stored word that names no variant (a journal written by something else).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{word}` (known: {})", known.join(", "))]
pub struct UnknownWord {
    pub what: &'static str,
    pub word: String,
    pub known: &'static [&'static str],
}

/// How one step instance (or handler run) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Changed,
    Failed,
    Skipped,
    Unreachable,
}

words!(Status "step status" {
    Ok => "ok",
    Changed => "changed",
    Failed => "failed",
    Skipped => "skipped",
    Unreachable => "unreachable",
});

impl Status {
    /// Whether the instance did not succeed (dependents on that host do not run).
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Unreachable)
    }

    /// Which status a group of instances (a `for_each` node) reports: the worst.
    pub fn severity(self) -> u8 {
        match self {
            Self::Skipped => 1,
            Self::Ok => 2,
            Self::Changed => 3,
            Self::Failed => 4,
            Self::Unreachable => 5,
        }
    }
}

/// How a run ended, as its journal record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Started and not finished (or still going).
    Running,
    Success,
    Failed,
    /// Stopped by SIGINT/SIGTERM with the journal consistent.
    Interrupted,
    /// Its controller died; a later run took its lock over.
    Abandoned,
}

words!(RunStatus "run status" {
    Running => "running",
    Success => "success",
    Failed => "failed",
    Interrupted => "interrupted",
    Abandoned => "abandoned",
});

/// What kind of run it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    Run,
    /// `--check`: nothing written.
    Check,
    /// `--verify`: journaled steps checked for drift.
    Verify,
    /// `--force`: the journal ignored.
    Force,
}

words!(RunMode "run mode" {
    Run => "run",
    Check => "check",
    Verify => "verify",
    Force => "force",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_parses_back() {
        for w in Status::WORDS {
            assert_eq!(Status::parse(w).map(Status::as_str), Some(*w));
        }
        for w in RunStatus::WORDS {
            assert_eq!(RunStatus::parse(w).map(RunStatus::as_str), Some(*w));
        }
        for w in RunMode::WORDS {
            assert_eq!(RunMode::parse(w).map(RunMode::as_str), Some(*w));
        }
        let e = "done".parse::<RunStatus>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown run status `done` (known: running, success, failed, interrupted, abandoned)"
        );
        assert_eq!(format!("[{:<8}]", Status::Ok), "[ok      ]");
    }
}
