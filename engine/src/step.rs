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
use std::any::Any;
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
    /// Permission bits in octal (`"0644"`, `"0o755"`; an unquoted `644` is read as octal too).
    Mode,
    /// An `http://` or `https://` URL.
    Url,
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
            Self::Mode => f.write_str("an octal mode such as `\"0644\"` (rw-r--r--)"),
            Self::Url => f.write_str("an http(s) URL"),
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
    /// A secret may not be rendered into it (it ends up in a process's
    /// argv, which every user of the machine can read): the loader refuses.
    pub no_secrets: bool,
}

impl ParamSpec {
    pub const fn req(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        Self {
            name,
            ty,
            required: true,
            doc,
            no_secrets: false,
        }
    }
    pub const fn opt(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        Self {
            name,
            ty,
            required: false,
            doc,
            no_secrets: false,
        }
    }

    /// Refuse secrets in this parameter at load time (see [`ParamSpec::no_secrets`]).
    #[must_use]
    pub const fn no_secrets(mut self) -> Self {
        self.no_secrets = true;
        self
    }
}

/// Parse permission bits written in octal (`"0644"`, `"0o755"`, `644`).
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let digits = text.strip_prefix("0o").unwrap_or(text);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("expected an octal mode like \"0644\", got `{text}`"))
}

/// Check an `http(s)` URL: a scheme, a host, no whitespace.
pub fn check_url(text: &str) -> Result<(), String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| format!("`{text}` is not an http(s) URL (it must start with `http://` or `https://`)"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    let name = if host.starts_with('[') {
        host.split(']').next().map_or("", |h| h.trim_start_matches('['))
    } else {
        host.split(':').next().unwrap_or("")
    };
    if name.is_empty() {
        return Err(format!("`{text}` has no host"));
    }
    if text.chars().any(char::is_whitespace) {
        return Err(format!("`{text}` contains whitespace"));
    }
    if let Some(port) = host.rsplit_once(':').map(|(_, p)| p).filter(|p| !p.contains(']')) {
        if port.parse::<u16>().is_err() {
            return Err(format!("`{text}` has an invalid port `{port}`"));
        }
    }
    Ok(())
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

    /// Check the parameters whose values contain no template, when the
    /// workflow loads (after each was checked against its declared
    /// [`ParamType`]): what a type cannot say, such as the shape of a
    /// `k8s_apply` manifest. `literals` holds only those parameters; a
    /// problem is reported at the value (or the part of it `at` names) with
    /// exit 2, before anything runs. The default finds nothing.
    fn check_literals(&self, _literals: &Map<String, Value>) -> Vec<LiteralProblem> {
        Vec::new()
    }
}

/// A problem [`StepKind::check_literals`] found in a literal parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiteralProblem {
    pub param: String,
    /// Where inside the value: list indices and mapping keys from its top
    /// (empty: the value itself).
    pub at: Vec<ValuePath>,
    pub message: String,
}

/// One step into a parameter's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValuePath {
    Index(usize),
    Key(String),
}

impl LiteralProblem {
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: param.into(),
            at: Vec::new(),
            message: message.into(),
        }
    }

    /// The problem is in one part of the value.
    #[must_use]
    pub fn within(mut self, part: ValuePath) -> Self {
        self.at.push(part);
        self
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
#[derive(Default)]
pub struct Pending {
    /// One line: what would change ("create /etc/x", "install docker.io").
    pub summary: String,
    /// A unified diff or a detailed description, shown with `--diff`.
    pub diff: Option<String>,
    /// Outputs known without applying (reported in `--check` mode).
    pub outputs: Outputs,
    /// What the check observed (a stat, a file's content, an API object),
    /// handed to this instance's `apply` so it need not observe again: a
    /// value of the step's own type, taken back with [`Pending::observed`].
    pub observation: Option<Box<dyn Any + Send + Sync>>,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("summary", &self.summary)
            .field("diff", &self.diff)
            .field("outputs", &self.outputs)
            .field("observation", &self.observation.as_ref().map(|_| ".."))
            .finish()
    }
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

    /// Carry what the check observed to `apply`.
    #[must_use]
    pub fn with_observation<T: Any + Send + Sync>(mut self, observed: T) -> Self {
        self.observation = Some(Box::new(observed));
        self
    }

    /// Take what the check observed, if it is a `T` (`None` when the check
    /// carried nothing or something else).
    pub fn observed<T: Any + Send + Sync>(&mut self) -> Option<T> {
        let boxed = self.observation.take()?;
        match boxed.downcast::<T>() {
            Ok(t) => Some(*t),
            Err(other) => {
                self.observation = Some(other);
                None
            }
        }
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
                // A guessable name for a file holding a secret is not acceptable.
                getrandom::fill(&mut r)
                    .map_err(|e| StepError::failed(format!("no randomness for a private script file: {e}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_change_carries_what_the_check_observed_to_apply() {
        #[derive(Debug, PartialEq)]
        struct Seen(u32);
        let mut p = Pending::new("write").with_observation(Seen(7));
        assert!(p.observed::<String>().is_none(), "another type is not taken");
        assert_eq!(p.observed::<Seen>(), Some(Seen(7)));
        assert!(p.observed::<Seen>().is_none(), "taken once");
        assert!(Pending::new("x").observed::<Seen>().is_none());
        assert!(format!("{:?}", Pending::new("x").with_observation(1u8)).contains("observation: Some"));
    }
}
