//! The SSH transport: commands on a remote host over one multiplexed
//! connection per host.
//!
//! The system `ssh` runs as a ControlMaster (through the `openssh` crate's
//! native mux client), so users' `~/.ssh/config`, agent and ProxyJump work as
//! they do on the command line, and a host costs one SSH handshake per run.
//!
//! - The connection opens on first use (or at once with [`SshTransport::connect`])
//!   and is shared by every step on the host; [`Transport::close`] ends it.
//!   If the master is gone when a command starts (idle timeout, the host
//!   rebooted), the transport reconnects once; nothing ran, so that is safe.
//! - Commands do not each open a channel: they are framed requests to a
//!   remote helper, a POSIX shell that stays on its channel and runs one
//!   request after another (`ssh/helper.rs` documents the protocol). A
//!   command then costs one round trip on an open channel, and its script,
//!   environment and stdin never appear in any argv on the host. A request
//!   with `become` goes to a helper started once through `sudo -n -H -u USER`.
//!   The channel's command line, handed to the user's login shell, must
//!   parse as POSIX (sh, bash, dash, zsh, ksh do; csh does not).
//! - Quick requests (probes and file operations, marked by the caller:
//!   [`ExecRequest::quick`]) queue per host and go to a helper in batches,
//!   one write and one round trip for all of them (`ssh/queue.rs`), so a
//!   host usually needs one helper; a user's command gets a helper of its
//!   own (an idle one, or a batch's once it is done, or a new channel).
//! - At most [`SshOptions::max_sessions`] helpers (channels) live and run
//!   commands at once on a host, below sshd's `MaxSessions` (10 channels per
//!   connection).
//! - A command with a timeout runs under the remote `timeout` (which kills it
//!   on the host) and under a local deadline a little longer, for a host that
//!   stops answering.
//! - A failed connect or a connection that drops under a running command is
//!   [`TransportError::Unreachable`], with ssh's reason, and unknown or
//!   changed host keys are said so plainly (see `ssh/connect.rs`).
//!
//! Not supported from the inventory's `ssh_args`: anything but `-o Option=value`
//! and `-J host` (the builder has no pass-through; `-o` options reach `ssh`
//! through a generated config file that includes the user's own).

mod connect;
mod connector;
mod helper;
mod helpers;
mod options;
mod queue;

pub use connector::SshConnector;
pub use options::{default_control_dir, SshOptions, SSHD_MAX_SESSIONS};

use super::{
    shell, Become, ExecOutput, ExecRequest, FileAttrs, FileStat, Program, RemoteStats, StatAndContent, Transport,
    TransportError,
};
use crate::host::Host;
use async_trait::async_trait;
use connect::Target;
use helper::{Failure, Helper, NotStarted, Request};
use helpers::{Helpers, Lease};
use openssh::{Session, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore};

/// How long after the remote `timeout` (and its 5 s kill grace) the local deadline falls.
const LOCAL_GRACE: Duration = Duration::from_secs(7);

/// How long a request waits for the helper of a running batch before it
/// opens a channel of its own (which costs tens of ms).
const BATCH_WAIT: Duration = Duration::from_millis(25);

/// Where the address comes from: fixed at construction, or read from the host
/// when connecting (a host created during the run gets its address late).
#[derive(Debug)]
enum Address {
    Fixed(String),
    FromHost(Arc<Host>),
}

#[derive(Default)]
struct State {
    session: Option<Arc<Session>>,
    /// The last failed connect: its attempt number and error.
    failure: Option<(u64, TransportError)>,
}

/// A connection to one host over SSH.
pub struct SshTransport {
    inner: Arc<Inner>,
}

/// The transport's state, shared with the tasks that drive batches of quick requests.
struct Inner {
    target: Target,
    address: Address,
    opts: SshOptions,
    /// The generated config carrying `ssh_args` (removed on drop).
    config: Option<tempfile::NamedTempFile>,
    state: Mutex<State>,
    attempts: AtomicU64,
    permits: Semaphore,
    helpers: Helpers,
    quick: queue::Queue,
    stats: RemoteStats,
}

impl std::fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTransport")
            .field("host", &self.inner.target.name)
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}

impl SshTransport {
    /// One stat probe (with the file's hash when `hash`) in the remote
    /// helper's own shell.
    async fn probe(
        &self,
        path: &str,
        hash: bool,
        become_: Option<&Become>,
    ) -> Result<Option<FileStat>, TransportError> {
        let out = self
            .inner
            .exec(own(shell::stat_script(path, hash), become_), true)
            .await?;
        shell::parse_stat(path, &out)
    }

    /// Connect to `host` now; its address is read once, here.
    pub async fn connect(host: &Host, opts: &SshOptions) -> Result<Self, TransportError> {
        let t = Self::build(host, Address::Fixed(host.address()), opts)?;
        t.inner.session().await?;
        Ok(t)
    }

    /// A transport that connects on first use, reading the host's address then
    /// (so a step earlier in the run may still fill it in).
    pub fn lazy(host: Arc<Host>, opts: &SshOptions) -> Result<Self, TransportError> {
        Self::build(&host.clone(), Address::FromHost(host), opts)
    }

    fn build(host: &Host, address: Address, opts: &SshOptions) -> Result<Self, TransportError> {
        if opts.max_sessions == 0 || opts.max_sessions >= SSHD_MAX_SESSIONS {
            return Err(TransportError::Failed(format!(
                "SSH `max_sessions` must be between 1 and {} (sshd allows {SSHD_MAX_SESSIONS} channels per \
                 connection), got {}",
                SSHD_MAX_SESSIONS - 1,
                opts.max_sessions
            )));
        }
        let target = Target::from_host(host)?;
        let config = if target.extra.options.is_empty() {
            None
        } else {
            Some(write_config(&target, opts)?)
        };
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                address,
                opts: opts.clone(),
                config,
                state: Mutex::new(State::default()),
                attempts: AtomicU64::new(0),
                permits: Semaphore::new(opts.max_sessions),
                helpers: Helpers::default(),
                quick: queue::Queue::default(),
                stats: RemoteStats::with_parent(super::remote_stats()),
            }),
        })
    }

    /// Remote commands this transport sent (requests to its helpers).
    pub fn commands_sent(&self) -> u64 {
        self.inner.stats.commands()
    }
}

impl Inner {
    fn address(&self) -> String {
        match &self.address {
            Address::Fixed(a) => a.clone(),
            Address::FromHost(h) => h.address(),
        }
    }

    /// The open session, connecting if there is none. Callers queued behind a
    /// failed attempt get its error instead of each trying again.
    async fn session(&self) -> Result<Arc<Session>, TransportError> {
        let seen = self.attempts.load(Ordering::Acquire);
        let mut st = self.state.lock().await;
        if let Some(s) = &st.session {
            return Ok(s.clone());
        }
        if let Some((n, e)) = &st.failure {
            if *n > seen {
                return Err(e.clone());
            }
        }
        let n = self.attempts.fetch_add(1, Ordering::AcqRel) + 1;
        let config = self.config.as_ref().map(tempfile::NamedTempFile::path);
        let t0 = Instant::now();
        match connect::open(&self.target, &self.address(), &self.opts, config).await {
            Ok(s) => {
                tracing::debug!("`{}`: connected in {:?}", self.target.name, t0.elapsed());
                let s = Arc::new(s);
                st.session = Some(s.clone());
                st.failure = None;
                Ok(s)
            }
            Err(e) => {
                st.failure = Some((n, e.clone()));
                Err(e)
            }
        }
    }

    /// Forget `dead` (if it is still the current session) so the next command reconnects.
    async fn invalidate(&self, dead: &Arc<Session>) {
        let mut st = self.state.lock().await;
        if st.session.as_ref().is_some_and(|s| Arc::ptr_eq(s, dead)) {
            st.session = None;
        }
    }

    fn dropped(&self, what: &str) -> TransportError {
        TransportError::Unreachable(format!(
            "connection to `{}` ({}) dropped {what}",
            self.target.name,
            self.address()
        ))
    }

    /// Start a channel running `remote`; reconnect once if the master has gone away.
    async fn spawn(&self, remote: &str) -> Result<(Arc<Session>, openssh::Child<Arc<Session>>), TransportError> {
        let session = self.session().await?;
        match start_retrying(&session, remote).await {
            Ok(child) => Ok((session, child)),
            Err(e) if is_disconnect(&e) => {
                self.invalidate(&session).await;
                let session = self.session().await?;
                match start_retrying(&session, remote).await {
                    Ok(child) => Ok((session, child)),
                    Err(e) => Err(self.after_error(&session, &e, "before the command started").await),
                }
            }
            Err(e) => Err(self.after_error(&session, &e, "before the command started").await),
        }
    }

    /// Unreachable when the master is gone, else a plain failure with ssh's reason.
    async fn after_error(&self, session: &Arc<Session>, e: &openssh::Error, when: &str) -> TransportError {
        if is_disconnect(e) || session.check().await.is_err() {
            self.invalidate(session).await;
            return self.dropped(when);
        }
        TransportError::Failed(format!("ssh to `{}`: {}", self.target.name, connect::describe(e)))
    }

    /// An idle helper running as `user` on the current session, or a new one.
    async fn lease(&self, user: Option<&str>) -> Result<Lease<'_>, TransportError> {
        let session = self.session().await?;
        if let Some(h) = self.helpers.take_idle(&session, user, self.opts.max_sessions) {
            return Ok(Lease::new(&self.helpers, h));
        }
        let reserved = Lease::reserve(&self.helpers);
        let (session, child) = self.spawn(&helper::start_command(user)).await?;
        let facts = self.helpers.facts();
        let known = facts.as_ref().map(|f| (f, user.unwrap_or(&f.login_user)));
        match Helper::start(session.clone(), child, user.map(str::to_owned), known).await {
            Ok(h) => {
                self.stats.add_session();
                if user.is_none() && facts.is_none() {
                    self.helpers.set_facts(h.facts());
                }
                tracing::debug!("`{}`: remote helper started as `{}`", self.target.name, h.whoami);
                Ok(reserved.fill(h))
            }
            Err(NotStarted { output }) => {
                if user.is_some() {
                    if let Some(e) = shell::sudo_refusal(&output) {
                        return Err(e);
                    }
                }
                if session.check().await.is_err() {
                    self.invalidate(&session).await;
                    return Err(self.dropped("before the command started"));
                }
                Err(TransportError::Failed(format!(
                    "ssh to `{}`: cannot start a shell on the host: {}",
                    self.target.name,
                    output.failure_message("sh")
                )))
            }
        }
    }

    /// Run one request on a helper of its own. A helper that died before the
    /// request started ran nothing: the request goes to a new one, once.
    async fn run_request(&self, user: Option<&str>, req: Request<'_>) -> Result<ExecOutput, TransportError> {
        if self.quick.driving(user) {
            // A batch's helper is back in a few ms: cheaper than a new channel.
            self.helpers.wait_idle(user, BATCH_WAIT).await;
        }
        for attempt in 0..2 {
            let mut lease = self.lease(user).await?;
            self.stats.add_command();
            let h = lease.helper();
            let session = h.session.clone();
            match h.run(req).await {
                Ok(out) => {
                    lease.release();
                    return Ok(out);
                }
                Err(Failure::Invalid(m)) => {
                    lease.release();
                    return Err(TransportError::Failed(m));
                }
                Err(Failure::Died { started }) => {
                    drop(lease);
                    if let Some(end) = self.after_death(&session, started, attempt).await {
                        return end;
                    }
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// What a request whose helper died comes to: `None` to try again on a new helper.
    async fn after_death(
        &self,
        session: &Arc<Session>,
        started: bool,
        attempt: u32,
    ) -> Option<Result<ExecOutput, TransportError>> {
        if session.check().await.is_err() {
            self.invalidate(session).await;
            if started || attempt == 1 {
                let when = if started {
                    "while running a command"
                } else {
                    "before the command started"
                };
                return Some(Err(self.dropped(when)));
            }
            return None;
        }
        if started {
            return Some(Ok(ExecOutput {
                rc: -1,
                stdout: Vec::new(),
                stderr: b"(the remote command was killed by a signal)\n".to_vec(),
            }));
        }
        if attempt == 1 {
            return Some(Err(TransportError::Failed(format!(
                "ssh to `{}`: the shell on the host exited before running the command",
                self.target.name
            ))));
        }
        None
    }

    /// The `become` user a request needs a helper for: `None` when it is the login user.
    async fn helper_user(&self, b: Option<&Become>) -> Result<Option<String>, TransportError> {
        let Some(b) = b else { return Ok(None) };
        if self.helpers.login_user().is_none() {
            // Learn who we log in as (that helper serves later plain requests).
            self.lease(None).await?.release();
        }
        Ok((self.helpers.login_user().as_deref() != Some(b.user.as_str())).then(|| b.user.clone()))
    }

    /// One request, on a helper of its own or (quick ones) in a batch; under
    /// the request's remote and local deadlines. `shared`: the request is one
    /// of the transport's own scripts, written to run in the helper's own
    /// shell (see `ssh/helper.rs`), not a user's command.
    async fn exec(self: &Arc<Self>, req: ExecRequest, shared: bool) -> Result<ExecOutput, TransportError> {
        if matches!(&req.program, Program::Argv(a) if a.is_empty()) {
            return Err(TransportError::Failed("empty command".into()));
        }
        let closed = || TransportError::Failed("the SSH transport is closed".into());
        // A quick request waits for a batch's helper instead of holding a channel.
        let permit = if req.quick {
            None
        } else {
            Some(self.permits.acquire().await.map_err(|_| closed())?)
        };
        let user = if req.quick && req.become_.is_some() && self.helpers.login_user().is_none() {
            let _first = self.permits.acquire().await.map_err(|_| closed())?;
            self.helper_user(req.become_.as_ref()).await?
        } else {
            self.helper_user(req.become_.as_ref()).await?
        };
        let script = shell::helper_script(&req);
        // The remote `timeout` counts whole seconds (at least one).
        let remote_t = req.timeout.map(|t| Duration::from_secs(t.as_secs().max(1)));
        let started = Instant::now();
        let r = Request {
            script: &script,
            stdin: req.stdin.as_deref(),
            timeout: remote_t.map_or(0, |t| t.as_secs()),
            // `cd` and exports would stay behind in the helper's shell.
            shared: shared && req.env.is_empty() && req.chdir.is_none(),
        };
        let run = async {
            if permit.is_some() {
                self.run_request(user.as_deref(), r).await
            } else {
                self.run_quick(user.as_deref(), r).await
            }
        };
        let out = match (req.timeout, remote_t) {
            (Some(t), Some(remote_t)) => {
                // Dropping the request on the local deadline drops its helper (and channel).
                let out = tokio::time::timeout(remote_t + LOCAL_GRACE, run)
                    .await
                    .map_err(|_| TransportError::Timeout(t))??;
                // 124: `timeout` stopped the command; 137: it had to kill it.
                if matches!(out.rc, 124 | 137) && started.elapsed() >= remote_t {
                    return Err(TransportError::Timeout(t));
                }
                out
            }
            _ => run.await?,
        };
        drop(permit);
        tracing::trace!(
            "`{}`: {} request in {:?}",
            self.target.name,
            if req.quick { "quick" } else { "plain" },
            started.elapsed()
        );
        shell::check_sudo(&req, &out)?;
        Ok(out)
    }
}

async fn start(session: &Arc<Session>, remote: &str) -> Result<openssh::Child<Arc<Session>>, openssh::Error> {
    session
        .clone()
        .arc_raw_command(remote)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .await
}

/// How often a channel that sshd refused is asked for again.
const OPEN_RETRIES: u32 = 40;

/// [`start`], asking again when sshd refuses the channel. A command's exit
/// status arrives before its channel is closed on the server, so right after
/// a burst of short commands sshd may still count more than `MaxSessions`
/// open channels for a moment. A refused channel ran nothing: asking again is safe.
async fn start_retrying(session: &Arc<Session>, remote: &str) -> Result<openssh::Child<Arc<Session>>, openssh::Error> {
    let mut tries = 0;
    loop {
        match start(session, remote).await {
            Err(e) if tries < OPEN_RETRIES && connect::describe(&e).contains("open refused by peer") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(u64::from(tries.min(10)) * 5)).await;
            }
            other => return other,
        }
    }
}

/// A quick request for one of the transport's own scripts.
fn own(script: String, become_: Option<&Become>) -> ExecRequest {
    ExecRequest::shell(script).quick().become_(become_.cloned())
}

fn is_disconnect(e: &openssh::Error) -> bool {
    matches!(e, openssh::Error::Disconnected)
}

fn write_config(target: &Target, opts: &SshOptions) -> Result<tempfile::NamedTempFile, TransportError> {
    use std::io::Write as _;
    options::ensure_control_dir(&opts.control_dir).map_err(TransportError::Failed)?;
    let text = options::render_config(&target.name, &target.extra.options, target.ssh_config_file.as_deref());
    let err =
        |e: std::io::Error| TransportError::Failed(format!("cannot write the ssh config for `{}`: {e}", target.name));
    let mut f = tempfile::Builder::new()
        .prefix("ssh-config-")
        .tempfile_in(&opts.control_dir)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.flush().map_err(err)?;
    Ok(f)
}

#[async_trait]
impl Transport for SshTransport {
    fn kind(&self) -> &'static str {
        "ssh"
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecOutput, TransportError> {
        self.inner.exec(req, false).await
    }

    /// As the default, run in the remote helper's own shell (no process for the probe itself).
    async fn stat(&self, path: &str, become_: Option<&Become>) -> Result<Option<FileStat>, TransportError> {
        self.probe(path, true, become_).await
    }

    /// As the default, run in the remote helper's own shell.
    async fn metadata(&self, path: &str, become_: Option<&Become>) -> Result<Option<FileStat>, TransportError> {
        self.probe(path, false, become_).await
    }

    /// As the default, run in the remote helper's own shell.
    async fn read_with_stat(&self, path: &str, become_: Option<&Become>) -> Result<StatAndContent, TransportError> {
        let out = self
            .inner
            .exec(own(shell::read_stat_script(path), become_), true)
            .await?;
        shell::parse_read_stat(path, out)
    }

    /// As the default, run in the remote helper's own shell.
    async fn read_file(&self, path: &str, become_: Option<&Become>) -> Result<Option<Vec<u8>>, TransportError> {
        let out = self.inner.exec(own(shell::read_script(path), become_), true).await?;
        shell::parse_read(path, out)
    }

    /// As the default, but small text content travels inline in the script
    /// (written by the shell's `printf` builtin, where the host's `sh` has
    /// one), which spares the host the processes that read stdin.
    async fn write_file(
        &self,
        path: &str,
        content: &[u8],
        attrs: &FileAttrs,
        become_: Option<&Become>,
    ) -> Result<(), TransportError> {
        let builtin = self.inner.helpers.facts().is_some_and(|f| f.printf_builtin);
        let inline = if builtin { shell::inline_text(content) } else { None };
        let mut req = ExecRequest::shell(shell::write_script(path, attrs, inline)?)
            .quick()
            .become_(become_.cloned());
        if inline.is_none() {
            req = req.stdin(content.to_vec());
        }
        let out = self.inner.exec(req, true).await?;
        if out.rc != 0 {
            return Err(TransportError::Failed(format!(
                "cannot write `{path}`: {}",
                out.stderr_str().trim()
            )));
        }
        Ok(())
    }

    async fn close(&self) {
        let this = &self.inner;
        drop(this.helpers.take_all());
        let (n, m) = (this.stats.commands(), this.stats.sessions());
        if n > 0 {
            tracing::info!("`{}`: {n} remote commands over {m} helper channels", this.target.name);
        }
        let session = this.state.lock().await.session.take();
        if let Some(s) = session {
            match Arc::try_unwrap(s) {
                Ok(s) => {
                    let _ = s.close().await;
                }
                // Commands still hold it: the last one to finish drops it, which stops the master.
                Err(s) => drop(s),
            }
        }
    }
}
