//! A just-style test builder: a sandbox directory with files (unindented),
//! the binary run in it with its own journal and state directory, and
//! assertions on exit status and output that print everything on failure.
//! A sandbox's journal is a SQLite file, or a schema of its own on the
//! shared test PostgreSQL server ([`Sandbox::on`]); `on_both_journals!`
//! runs a test once per backend.

use flowrun_lab::postgres::PgServer;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Which journal backend a sandbox's runs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    Sqlite,
    Postgres,
}

/// Each named test `fn NAME(journal: Journal)`, once per backend:
/// `MODULE::sqlite::NAME` and `MODULE::postgres::NAME`.
macro_rules! on_both_journals {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name($crate::harness::Journal::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name($crate::harness::Journal::Postgres) } )*
        }
    };
}
pub(crate) use on_both_journals;

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// The PostgreSQL journal's URL and schema, when not SQLite.
    pg: Option<(String, String)>,
}

/// Remove the common leading indentation (so tests can indent file contents).
pub fn unindent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| {
            if l.len() >= indent {
                &l[indent..]
            } else {
                l.trim_start()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

impl Sandbox {
    pub fn new() -> Self {
        Self::on(Journal::Sqlite)
    }

    pub fn on(journal: Journal) -> Self {
        let pg = (journal == Journal::Postgres).then(|| {
            let schema = PgServer::fresh_schema();
            (PgServer::shared().url(&schema), schema)
        });
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            pg,
        }
    }

    /// A sandbox whose journal is a fresh schema on `server`.
    pub fn on_server(server: &PgServer) -> Self {
        let schema = PgServer::fresh_schema();
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            pg: Some((server.url(&schema), schema)),
        }
    }

    /// A second controller: its own directory, the same journal as `other`.
    pub fn sharing(other: &Self) -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            pg: other.pg.clone(),
        }
    }

    /// The journal as `--journal` and `FLOWRUN_JOURNAL` take it.
    pub fn journal(&self) -> String {
        match &self.pg {
            Some((url, _)) => url.clone(),
            None => self.path("journal.db").display().to_string(),
        }
    }

    /// The PostgreSQL schema of this sandbox's journal.
    pub fn pg_schema(&self) -> Option<&str> {
        self.pg.as_ref().map(|(_, s)| s.as_str())
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write a file (parents created); `$DIR` in the text becomes the sandbox path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, unindent(text).replace("$DIR", self.dir.path().to_str().unwrap())).unwrap();
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    pub fn lines(&self, rel: &str) -> Vec<String> {
        self.read(rel).lines().map(str::to_owned).collect()
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    pub fn cmd(&self, args: &[&str]) -> Cmd {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flowrun"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("FLOWRUN_JOURNAL", self.journal())
            .env("XDG_STATE_HOME", self.path("state"))
            .env_remove("FLOWRUN_JOURNAL_KEY_FILE")
            .env_remove("PGPASSWORD")
            .env_remove("FLOWRUN_INVENTORY")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        if self.pg.is_some() {
            c.env("PGPASSWORD", flowrun_lab::postgres::PASSWORD)
                .env("FLOWRUN_JOURNAL_KEY_FILE", self.path("journal.key"));
        }
        Cmd { cmd: c, checked: true }
    }

    /// Run and expect `code`.
    pub fn run(&self, args: &[&str], code: i32) -> Ran {
        self.cmd(args).expect(code)
    }
}

pub struct Cmd {
    pub cmd: Command,
    /// A `run` is checked against what `plan` predicts for it (see
    /// `plan_matches_run`): every end-to-end test's run is a case of the
    /// property "plan's from-journal set equals the run's".
    checked: bool,
}

impl Cmd {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }

    /// Not checked against `plan`: for a test whose assertions count what
    /// the extra `plan` also does (a secret's `command:` source runs again,
    /// a preview asks a server).
    pub fn unchecked(mut self) -> Self {
        self.checked = false;
        self
    }

    pub fn output(mut self) -> Output {
        if !self.checked {
            return self.cmd.output().expect("run flowrun");
        }
        let (out, verdict) = crate::plan_matches_run::run_checked(self.cmd);
        if let Err(e) = verdict {
            panic!(
                "plan disagreed with the run: {e}\n--- stdout\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }

    pub fn expect(self, code: i32) -> Ran {
        let out = self.output();
        let ran = Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert_eq!(
            ran.code, code,
            "unexpected exit status\n--- stdout\n{}\n--- stderr\n{}",
            ran.stdout, ran.stderr
        );
        ran
    }
}

#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    #[track_caller]
    pub fn stdout_has(&self, s: &str) -> &Self {
        assert!(
            self.stdout.contains(s),
            "stdout lacks {s:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, s: &str) -> &Self {
        assert!(
            self.stderr.contains(s),
            "stderr lacks {s:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// The recap line of a host.
    #[track_caller]
    pub fn recap(&self, host: &str) -> String {
        self.stdout
            .lines()
            .find(|l| l.split(" : ").next().is_some_and(|h| h.trim() == host) && l.contains("ok="))
            .unwrap_or_else(|| panic!("no recap line for {host}\n{}", self.stdout))
            .split(" : ")
            .nth(1)
            .unwrap()
            .to_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

#[allow(dead_code)]
pub fn is_root() -> bool {
    Path::new("/proc/self").exists()
        && std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false)
}
