//! How steps reach a host: run a command, stat, read and atomically write a
//! file. The local transport acts on this machine; the SSH transport on a
//! remote host over one multiplexed connection. File operations have default
//! implementations over `exec` (POSIX shell and coreutils on the target), so a
//! transport only has to run commands well.

pub mod local;
pub mod shell;
pub mod ssh;

use async_trait::async_trait;
use std::fmt;
use std::time::Duration;

pub use shell::quote;

/// Opens remote connections (SSH in practice; tests may plug in others).
/// The run's connection pool holds one and asks it per host.
#[async_trait]
pub trait Connector: Send + Sync {
    async fn connect(&self, host: &crate::host::Host) -> Result<std::sync::Arc<dyn Transport>, TransportError>;
}

/// The connector for remote hosts: SSH, with a private socket directory for
/// the run. `None` only when that directory cannot be created.
pub fn default_connector() -> Option<std::sync::Arc<dyn Connector>> {
    match ssh::SshConnector::with_private_control_dir() {
        Ok(c) => Some(std::sync::Arc::new(c)),
        Err(e) => {
            tracing::warn!("cannot create a directory for SSH control sockets: {e}");
            None
        }
    }
}

/// Remote commands (round trips to a host) and helper channels, counted by
/// the transports: per transport, and summed for the process in
/// [`remote_stats`], which the CLI reports in `--metrics` and `-v` logs.
#[derive(Debug, Default)]
pub struct RemoteStats {
    commands: std::sync::atomic::AtomicU64,
    sessions: std::sync::atomic::AtomicU64,
    parent: Option<&'static RemoteStats>,
}

impl RemoteStats {
    /// Counters that also add to `parent`.
    pub const fn with_parent(parent: &'static RemoteStats) -> Self {
        Self {
            commands: std::sync::atomic::AtomicU64::new(0),
            sessions: std::sync::atomic::AtomicU64::new(0),
            parent: Some(parent),
        }
    }

    const fn root() -> Self {
        Self {
            commands: std::sync::atomic::AtomicU64::new(0),
            sessions: std::sync::atomic::AtomicU64::new(0),
            parent: None,
        }
    }

    pub fn add_command(&self) {
        self.commands.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(p) = self.parent {
            p.add_command();
        }
    }

    pub fn add_session(&self) {
        self.sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(p) = self.parent {
            p.add_session();
        }
    }

    /// Commands sent to hosts.
    pub fn commands(&self) -> u64 {
        self.commands.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Channels opened for them (remote helpers started).
    pub fn sessions(&self) -> u64 {
        self.sessions.load(std::sync::atomic::Ordering::Relaxed)
    }
}

static REMOTE: RemoteStats = RemoteStats::root();

/// What every remote transport of this process has sent so far.
pub fn remote_stats() -> &'static RemoteStats {
    &REMOTE
}

/// Run as another user through `sudo -n` (never prompts; a password prompt is an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Become {
    pub user: String,
}

impl Default for Become {
    fn default() -> Self {
        Self { user: "root".into() }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub enum Program {
    /// Executed directly, no shell.
    Argv(Vec<String>),
    /// A script for `sh -c`.
    Shell(String),
}

#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub program: Program,
    /// Bytes fed to the command's stdin (secrets travel here, never in argv).
    pub stdin: Option<Vec<u8>>,
    pub env: Vec<(String, String)>,
    pub chdir: Option<String>,
    pub become_: Option<Become>,
    pub timeout: Option<Duration>,
    /// A short operation by nature (a probe, a file operation: stat, read,
    /// atomic write, mkdir, chmod), never a user's command: a remote
    /// transport may queue it behind other quick requests of the host and
    /// send them in one round trip, instead of giving it a channel of its own.
    pub quick: bool,
}

impl ExecRequest {
    pub fn argv<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(Program::Argv(argv.into_iter().map(Into::into).collect()))
    }

    pub fn shell(script: impl Into<String>) -> Self {
        Self::new(Program::Shell(script.into()))
    }

    fn new(program: Program) -> Self {
        Self {
            program,
            stdin: None,
            env: Vec::new(),
            chdir: None,
            become_: None,
            timeout: None,
            quick: false,
        }
    }

    /// Mark the request [`quick`](Self::quick).
    #[must_use]
    pub fn quick(mut self) -> Self {
        self.quick = true;
        self
    }

    #[must_use]
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    #[must_use]
    pub fn become_(mut self, b: Option<Become>) -> Self {
        self.become_ = b;
        self
    }

    /// The whole request as one POSIX shell command line: `cd`, environment,
    /// `timeout`, `sudo`, then the program. Used by transports that hand a
    /// string to a remote shell.
    pub fn to_shell_command(&self) -> String {
        shell::command_line(self)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub rc: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// A one-paragraph error for a failed command: what ran, its status, the tail of stderr.
    pub fn failure_message(&self, what: &str) -> String {
        let what = what.lines().next().unwrap_or(what);
        let what = if what.len() > 80 {
            format!("{}...", &what[..what.floor_char_boundary(77)])
        } else {
            what.to_owned()
        };
        let err = self.stderr_str();
        let err = err.trim();
        let tail: Vec<&str> = err
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if tail.is_empty() {
            format!("`{what}` exited with status {}", self.rc)
        } else {
            format!("`{what}` exited with status {}: {}", self.rc, tail.join("\n"))
        }
    }
}

/// Metadata of a file on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    pub kind: FileKind,
    /// Permission bits, e.g. `0o644`.
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub size: u64,
    /// Numeric owner and group (a step may name them by number).
    pub uid: u32,
    pub gid: u32,
    /// Hex SHA-256 of a regular file's content (not computed by [`Transport::metadata`]).
    pub sha256: Option<String>,
}

/// A file's metadata and, for a regular file, its content; `None` when absent.
pub type StatAndContent = Option<(FileStat, Option<Vec<u8>>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Other,
}

/// Attributes to set on a written file; `None` leaves them as they are (or as umask makes them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileAttrs {
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Clone)]
pub enum TransportError {
    /// Cannot connect, or the connection dropped.
    Unreachable(String),
    /// The command did not finish in time (it was killed).
    Timeout(Duration),
    /// Anything else (a file operation failed on the host, sudo wants a password, ...).
    Failed(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(m) => write!(f, "unreachable: {m}"),
            Self::Timeout(d) => write!(f, "timed out after {}", humantime::format_duration(*d)),
            Self::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for TransportError {}

/// A connection to one host.
#[async_trait]
pub trait Transport: Send + Sync {
    /// `local` or `ssh`, for messages.
    fn kind(&self) -> &'static str;

    async fn exec(&self, req: ExecRequest) -> Result<ExecOutput, TransportError>;

    /// Metadata of `path` with a regular file's SHA-256, or `None` when it does not exist.
    async fn stat(&self, path: &str, become_: Option<&Become>) -> Result<Option<FileStat>, TransportError> {
        let out = self
            .exec(
                ExecRequest::shell(shell::stat_script(path, true))
                    .quick()
                    .become_(become_.cloned()),
            )
            .await?;
        shell::parse_stat(path, &out)
    }

    /// Metadata of `path` without hashing its content (cheaper), or `None` when it does not exist.
    async fn metadata(&self, path: &str, become_: Option<&Become>) -> Result<Option<FileStat>, TransportError> {
        let out = self
            .exec(
                ExecRequest::shell(shell::stat_script(path, false))
                    .quick()
                    .become_(become_.cloned()),
            )
            .await?;
        shell::parse_stat(path, &out)
    }

    /// Metadata (with SHA-256) and, for a regular file, content of `path`, in
    /// one round trip; `None` when it does not exist.
    async fn read_with_stat(&self, path: &str, become_: Option<&Become>) -> Result<StatAndContent, TransportError> {
        let out = self
            .exec(
                ExecRequest::shell(shell::read_stat_script(path))
                    .quick()
                    .become_(become_.cloned()),
            )
            .await?;
        shell::parse_read_stat(path, out)
    }

    /// Content of `path`, or `None` when it does not exist.
    async fn read_file(&self, path: &str, become_: Option<&Become>) -> Result<Option<Vec<u8>>, TransportError> {
        let out = self
            .exec(
                ExecRequest::shell(shell::read_script(path))
                    .quick()
                    .become_(become_.cloned()),
            )
            .await?;
        shell::parse_read(path, out)
    }

    /// Write `content` to `path` atomically: a temp file in the same directory,
    /// attributes set on it, then renamed over the target. Content travels on stdin.
    async fn write_file(
        &self,
        path: &str,
        content: &[u8],
        attrs: &FileAttrs,
        become_: Option<&Become>,
    ) -> Result<(), TransportError> {
        let req = ExecRequest::shell(shell::write_script(path, attrs, None)?)
            .stdin(content.to_vec())
            .quick()
            .become_(become_.cloned());
        let out = self.exec(req).await?;
        if out.rc != 0 {
            return Err(TransportError::Failed(format!(
                "cannot write `{path}`: {}",
                out.stderr_str().trim()
            )));
        }
        Ok(())
    }

    /// Close the connection at the end of the run.
    async fn close(&self) {}
}
