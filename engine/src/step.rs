//! The contract between the engine and the built-in steps.
//!
//! A step kind (`apt`, `template`, `proxmox_vm`, ...) declares its parameters
//! and outputs so the loader can reject typos before anything runs, and builds
//! a [`Step`] from rendered parameters for each instance. The engine owns the
//! state machine: it calls the read-only [`Step::check`] and, only when that
//! reports drift and the run is not `--check`, [`Step::apply`] with the
//! [`Pending`] change the check produced. Steps never see the DAG, the journal
//! or a raw connection: they reach hosts through the [`StepContext`] facade.

use crate::host::Host;
use crate::secrets::Masker;
use crate::template::Templates;
use crate::transport::{
    Become, ExecOutput, ExecRequest, FileAttrs, FileStat, Program, StatAndContent, Transport, TransportError,
};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Outputs of a step instance: available to later steps as `steps.ID.outputs.K`.
pub type Outputs = Map<String, Value>;

/// The type of a parameter, checked at load time when the value is literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// A string; integers and booleans written in YAML are accepted as text.
    Str,
    Int,
    Bool,
    /// A list of strings (a single string is accepted as a one-element list).
    StrList,
    List,
    Map,
    /// A duration such as `30s`, `5m`, `1h30m` (or an integer number of seconds).
    Duration,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    Any,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str => f.write_str("a string"),
            Self::Int => f.write_str("an integer"),
            Self::Bool => f.write_str("a boolean"),
            Self::StrList => f.write_str("a list of strings"),
            Self::List => f.write_str("a list"),
            Self::Map => f.write_str("a mapping"),
            Self::Duration => f.write_str("a duration (e.g. `30s`, `5m`)"),
            Self::Enum(v) => write!(
                f,
                "one of {}",
                v.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
            ),
            Self::Any => f.write_str("any value"),
        }
    }
}

/// One parameter of a step kind.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub required: bool,
    pub doc: &'static str,
}

impl ParamSpec {
    pub const fn req(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        Self {
            name,
            ty,
            required: true,
            doc,
        }
    }
    pub const fn opt(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        Self {
            name,
            ty,
            required: false,
            doc,
        }
    }
}

/// What a step kind declares about itself.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    pub name: &'static str,
    /// Bump when the step's effect for the same parameters changes: journaled
    /// records of older versions then no longer match.
    pub version: u32,
    pub doc: &'static str,
    pub params: &'static [ParamSpec],
    /// Groups of parameters of which exactly one must be given (e.g. `argv`/`shell`).
    pub one_of: &'static [&'static [&'static str]],
    /// Output names; `steps.ID.outputs.K` is checked against these at load time.
    pub outputs: &'static [&'static str],
    /// Outputs that are secrets: masked everywhere, encrypted in the journal.
    pub secret_outputs: &'static [&'static str],
    /// Whether instances are journaled (skipped on re-run) unless the workflow says otherwise.
    /// Probes such as `assert` and `wait_for` are not.
    pub journal: bool,
}

/// A step kind: a factory of step instances from rendered parameters.
pub trait StepKind: Send + Sync {
    fn info(&self) -> &'static KindInfo;

    /// Build an instance from its rendered parameters (a JSON object whose keys
    /// were checked against [`KindInfo::params`]). Wrong values are a
    /// [`StepError`] that names the parameter.
    fn build(&self, params: &Map<String, Value>, cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError>;

    /// Whether `flowrun plan` may run this kind's `check` to show what a run
    /// would change: only for kinds whose check is read-only, needs no
    /// connection to the host and no output of an earlier step, and asks an
    /// API that can answer a preview itself (`k8s_apply`'s dry-run diff).
    fn previews_in_plan(&self) -> bool {
        false
    }
}

/// What a step kind may use while building an instance.
pub struct BuildContext<'a> {
    /// The directory of the workflow file that defined the step (`src` paths are relative to it).
    pub workflow_dir: &'a Path,
    /// The template engine and this instance's variables, for steps that render files.
    pub templates: &'a Templates,
    pub vars: &'a Value,
    pub host: &'a Host,
}

impl BuildContext<'_> {
    /// Render a template text with this instance's variables; `name` appears in errors.
    pub fn render(&self, name: &str, text: &str) -> Result<String, StepError> {
        self.templates
            .render_text(name, text, self.vars)
            .map_err(|e| StepError::failed(e.to_string()))
    }

    /// Resolve a path given in a workflow (relative to the workflow's directory).
    pub fn workflow_path(&self, p: &str) -> PathBuf {
        let p = crate::paths::expand_home(p);
        if p.is_absolute() {
            p
        } else {
            self.workflow_dir.join(p)
        }
    }
}

/// The result of a read-only check.
#[must_use]
#[derive(Debug)]
pub enum Check {
    /// Already in the desired state; the outputs describe it.
    InSync(Outputs),
    /// Not in state: applying would make this change.
    Drift(Pending),
}

/// A change that a check found necessary.
#[derive(Debug, Default)]
pub struct Pending {
    /// One line: what would change ("create /etc/x", "install docker.io").
    pub summary: String,
    /// A unified diff or a detailed description, shown with `--diff`.
    pub diff: Option<String>,
    /// Outputs known without applying (reported in `--check` mode).
    pub outputs: Outputs,
}

impl Pending {
    pub fn new(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            ..Self::default()
        }
    }
    #[must_use]
    pub fn with_diff(mut self, diff: impl Into<String>) -> Self {
        self.diff = Some(diff.into());
        self
    }
}

/// The result of an apply.
#[derive(Debug, Default)]
pub struct Applied {
    /// Whether anything changed (a command guarded by nothing always changes).
    pub changed: bool,
    pub outputs: Outputs,
    pub message: Option<String>,
}

impl Applied {
    pub fn changed(outputs: Outputs) -> Self {
        Self {
            changed: true,
            outputs,
            message: None,
        }
    }
    #[must_use]
    pub fn message(mut self, m: impl Into<String>) -> Self {
        self.message = Some(m.into());
        self
    }
}

/// Why a step instance did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepErrorKind {
    Failed,
    /// The host could not be reached (or dropped): reported `unreachable`.
    Unreachable,
}

#[derive(Debug, Clone)]
pub struct StepError {
    pub kind: StepErrorKind,
    pub message: String,
}

impl StepError {
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            kind: StepErrorKind::Failed,
            message: message.into(),
        }
    }
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self {
            kind: StepErrorKind::Unreachable,
            message: message.into(),
        }
    }
    /// An invalid parameter value (found while building).
    pub fn param(name: &str, message: impl fmt::Display) -> Self {
        Self::failed(format!("parameter `{name}`: {message}"))
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StepError {}

impl From<TransportError> for StepError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Unreachable(m) => Self::unreachable(m),
            other => Self::failed(other.to_string()),
        }
    }
}

/// A step instance, built for one (step, host, item).
#[async_trait]
pub trait Step: Send + Sync {
    /// Read-only: is the target in the desired state? Must not change anything.
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError>;

    /// Make the change a check found necessary.
    async fn apply(&self, cx: &StepContext, pending: Pending) -> Result<Applied, StepError>;

    /// Anything beyond the rendered parameters that determines the effect
    /// (the rendered content of a template file, the hash of a `src` file).
    /// It joins the journal fingerprint.
    fn fingerprint_extra(&self) -> Option<String> {
        None
    }

    /// Called instead of `check`/`apply` when the journal restores this
    /// instance's outputs: re-publish what the run needs from them (a step
    /// that fills in a host's address does it again, so later steps reach it).
    fn restored(&self, _outputs: &Outputs, _hosts: &crate::host::HostTable) {}
}

/// Mode flags of the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    pub check: bool,
    pub diff: bool,
}

/// Everything a step instance may use while it checks and applies: the target
/// host through its transport, the run's mode, and a way to publish facts.
#[derive(Clone)]
pub struct StepContext {
    pub host: Arc<Host>,
    pub transport: Arc<dyn Transport>,
    /// `become` as resolved for this instance (step, then host settings).
    pub become_: Option<Become>,
    pub mode: Mode,
    pub timeout: Option<Duration>,
    pub masker: Arc<Masker>,
    pub hosts: Arc<crate::host::HostTable>,
    /// This instance's outputs as the journal last recorded them (even when its
    /// parameters changed since): what the step made last time, e.g. the id
    /// and token of a runner it registered. `None` on a first run.
    pub previous: Option<Outputs>,
}

impl StepContext {
    /// Run a command on the target (with this instance's `become`). A command
    /// line that contains a secret never goes into argv: the script travels on
    /// stdin (`sh -s`), or through a temp file of mode 0600 when stdin carries data.
    pub async fn exec(&self, mut req: ExecRequest) -> Result<ExecOutput, StepError> {
        if req.become_.is_none() {
            req.become_.clone_from(&self.become_);
        }
        if req.timeout.is_none() {
            req.timeout = self.timeout;
        }
        let script = match &req.program {
            Program::Shell(s) => s.clone(),
            Program::Argv(a) => a
                .iter()
                .map(|w| crate::transport::quote(w))
                .collect::<Vec<_>>()
                .join(" "),
        };
        let env_has_secret = req.env.iter().any(|(_, v)| self.masker.contains_secret(v));
        if !self.masker.contains_secret(&script) && !env_has_secret {
            return Ok(self.transport.exec(req).await?);
        }
        // Environment values with secrets become exports inside the script.
        let mut body = String::new();
        for (k, v) in std::mem::take(&mut req.env) {
            body.push_str(&format!("export {}={}\n", k, crate::transport::quote(&v)));
        }
        body.push_str(&script);
        body.push('\n');
        match req.stdin.take() {
            None => {
                req.program = Program::Argv(vec!["sh".into(), "-s".into()]);
                req.stdin = Some(body.into_bytes());
                Ok(self.transport.exec(req).await?)
            }
            Some(data) => {
                let mut r = [0u8; 8];
                let _ = getrandom::fill(&mut r);
                let path = format!("/tmp/.flowrun-{}.sh", crate::transport::local::hex(&r));
                let attrs = FileAttrs {
                    mode: Some(0o600),
                    ..FileAttrs::default()
                };
                self.transport
                    .write_file(&path, body.as_bytes(), &attrs, req.become_.as_ref())
                    .await?;
                let p = crate::transport::quote(&path);
                req.program = Program::Shell(format!("sh {p}; rc=$?; rm -f {p}; exit $rc"));
                req.stdin = Some(data);
                Ok(self.transport.exec(req).await?)
            }
        }
    }

    /// Run a shell script on the target; a non-zero exit is an error carrying stderr.
    pub async fn sh(&self, script: &str) -> Result<ExecOutput, StepError> {
        self.sh_request(ExecRequest::shell(script), script).await
    }

    /// As [`sh`](Self::sh), for a short probe or file operation (never a
    /// user's command): a remote transport may send it together with other
    /// quick requests of the host ([`ExecRequest::quick`]).
    pub async fn sh_quick(&self, script: &str) -> Result<ExecOutput, StepError> {
        self.sh_request(ExecRequest::shell(script).quick(), script).await
    }

    async fn sh_request(&self, req: ExecRequest, script: &str) -> Result<ExecOutput, StepError> {
        let out = self.exec(req).await?;
        if out.rc != 0 {
            return Err(StepError::failed(out.failure_message(script)));
        }
        Ok(out)
    }

    pub async fn stat(&self, path: &str) -> Result<Option<FileStat>, StepError> {
        Ok(self.transport.stat(path, self.become_.as_ref()).await?)
    }

    pub async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, StepError> {
        Ok(self.transport.read_file(path, self.become_.as_ref()).await?)
    }

    /// Metadata without the content hash (one cheaper probe).
    pub async fn metadata(&self, path: &str) -> Result<Option<FileStat>, StepError> {
        Ok(self.transport.metadata(path, self.become_.as_ref()).await?)
    }

    /// Metadata and, for a regular file, its content, in one round trip.
    pub async fn read_with_stat(&self, path: &str) -> Result<StatAndContent, StepError> {
        Ok(self.transport.read_with_stat(path, self.become_.as_ref()).await?)
    }

    /// Write a file atomically (temp file in the same directory, then rename).
    pub async fn write_file(&self, path: &str, content: &[u8], attrs: &FileAttrs) -> Result<(), StepError> {
        Ok(self
            .transport
            .write_file(path, content, attrs, self.become_.as_ref())
            .await?)
    }

    /// Set a host's address for the rest of the run (a step that created the host knows it).
    pub fn set_host_address(&self, host: &str, address: &str) -> Result<(), StepError> {
        self.hosts.set_address(host, address).map_err(StepError::failed)
    }

    /// Say which machine `host` is (e.g. a VM's generation id): a re-created
    /// machine then counts as a new host, and the journal skips nothing of the old one.
    pub fn set_host_instance(&self, host: &str, instance: &str) -> Result<(), StepError> {
        self.hosts.set_instance(host, instance).map_err(StepError::failed)
    }

    /// Register a value (e.g. a token an API returned) as a secret from now on.
    pub fn add_secret(&self, value: &str) {
        self.masker.add(value);
    }
}
