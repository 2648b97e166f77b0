//! An emulator of GitHub for self-hosted runners of a repository, in two
//! parts. The REST API ([`rest`]): registration and remove tokens (valid one
//! hour), the runner list (the `name` filter, `per_page` capped at 100,
//! `page`, `Link` headers), one runner, its labels, deletion. It insists on
//! what GitHub insists on (a `User-Agent`, credentials, an
//! `X-GitHub-Api-Version` it knows, permissions: a read-only token lists but
//! does not create tokens or delete) and, stricter than GitHub, on `Accept:
//! application/vnd.github+json`, so a client that forgets the documented
//! headers fails here. Paths are served at `/` (as `api.github.com`) and under
//! `/api/v3` (as GitHub Enterprise Server).
//!
//! The runner's side ([`actions`]): `POST /api/v3/actions/runner-registration`
//! with `Authorization: RemoteAuth <registration token>`, as the real
//! `config.sh` calls it, then a small stand-in of the Actions service (the
//! real one is an undocumented protocol) where the runner adds itself, opens
//! a session and polls for jobs. A runner is `online` while it polls and
//! `offline` once it has been silent for [`GitHubOptions::offline_after`];
//! it is `busy` while it runs a job the test queued ([`GitHubEmulator::queue_job`]),
//! which goes, as on GitHub, only to a runner that has all the job's labels.

mod actions;
mod rest;

use super::server::{lock, Handler, Recorded, Reply, Request, Server};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const API_VERSIONS: &[&str] = &["2022-11-28", "2026-03-10"];
const TOKEN_LIFETIME: u64 = 3600;
const DOCS: &str = "https://docs.github.com/rest";
/// Labels every Linux x64 runner gets unless configured with `--no-default-labels`.
const DEFAULT_LABELS: &[&str] = &["self-hosted", "Linux", "X64"];
const BUILTIN_LABELS: &[&str] = &["self-hosted", "Linux", "X64", "ARM64", "macOS", "Windows"];

/// A runner as the REST API shows it.
#[derive(Debug, Clone)]
pub struct GhRunner {
    pub id: u64,
    pub repo: String,
    pub name: String,
    pub os: String,
    pub status: String,
    pub busy: bool,
    pub labels: Vec<String>,
}

impl GhRunner {
    fn json(&self) -> Value {
        let labels: Vec<Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| json!({"id": i + 1, "name": l, "type": label_type(l)}))
            .collect();
        json!({"id": self.id, "name": self.name, "os": self.os, "status": self.status,
               "busy": self.busy, "ephemeral": false, "runner_group_id": 1, "labels": labels})
    }
}

fn label_type(l: &str) -> &'static str {
    if BUILTIN_LABELS.contains(&l) {
        "read-only"
    } else {
        "custom"
    }
}

/// A job queued by a test, and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct GhJob {
    pub id: u64,
    pub repo: String,
    /// The job's `runs-on` labels: only a runner with all of them takes it.
    pub labels: Vec<String>,
    pub seconds: f64,
    /// `queued`, `in_progress`, `completed`.
    pub status: String,
    /// The runner that took it.
    pub runner: Option<String>,
}

/// Options of the emulator.
#[derive(Debug, Clone)]
pub struct GitHubOptions {
    pub tls: bool,
    /// A runner silent for this long is `offline`.
    pub offline_after: Duration,
}

impl Default for GitHubOptions {
    fn default() -> Self {
        Self {
            tls: false,
            offline_after: Duration::from_secs(3),
        }
    }
}

/// What a token may do on its repositories.
#[derive(Debug, Clone)]
struct Access {
    repos: Vec<String>,
    /// Administration write: tokens, deletion, labels. Read-only tokens only list.
    write: bool,
}

/// A runner's full record.
#[derive(Debug, Clone)]
struct Runner {
    id: u64,
    repo: String,
    name: String,
    labels: Vec<String>,
    /// Set by a test ([`GitHubEmulator::set_runner_state`]); else from heartbeats.
    forced_status: Option<String>,
    forced_busy: bool,
    last_contact: Option<Instant>,
    /// The runner's own credential for the Actions service (in its `.credentials`).
    credential: String,
    session: Option<String>,
    /// The job it runs.
    job: Option<u64>,
}

#[derive(Default)]
struct State {
    tokens: BTreeMap<String, Access>,
    /// Registration and remove tokens → (repository, kind, expiry).
    runner_tokens: BTreeMap<String, (String, &'static str, u64)>,
    /// Tenant credentials handed out by runner-registration → (repository, expiry).
    tenant_tokens: BTreeMap<String, (String, u64)>,
    runners: BTreeMap<u64, Runner>,
    jobs: Vec<GhJob>,
    next_id: u64,
    offline_after: Duration,
    /// `http` or `https`, for the links the API writes.
    scheme: &'static str,
}

impl State {
    fn status(&self, r: &Runner) -> String {
        if let Some(s) = &r.forced_status {
            return s.clone();
        }
        let alive = r.last_contact.is_some_and(|t| t.elapsed() < self.offline_after);
        if alive { "online" } else { "offline" }.into()
    }

    fn view(&self, r: &Runner) -> GhRunner {
        GhRunner {
            id: r.id,
            repo: r.repo.clone(),
            name: r.name.clone(),
            os: "Linux".into(),
            status: self.status(r),
            busy: r.forced_busy || r.job.is_some(),
            labels: r.labels.clone(),
        }
    }

    fn by_name(&self, repo: &str, name: &str) -> Option<u64> {
        self.runners
            .values()
            .find(|r| r.repo == repo && r.name.eq_ignore_ascii_case(name))
            .map(|r| r.id)
    }

    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Add (or, with `replace`, update in place) a runner named `name`.
    fn add_runner(&mut self, repo: &str, name: &str, labels: Vec<String>, replace: bool) -> Result<u64, String> {
        if let Some(id) = self.by_name(repo, name) {
            if !replace {
                return Err(format!("A runner exists with the same name {name}."));
            }
            let r = self.runners.get_mut(&id).expect("the runner exists");
            r.labels = labels;
            r.credential = super::random_hex(40);
            r.session = None;
            return Ok(id);
        }
        let id = self.next();
        self.runners.insert(
            id,
            Runner {
                id,
                repo: repo.to_owned(),
                name: name.to_owned(),
                labels,
                forced_status: None,
                forced_busy: false,
                last_contact: None,
                credential: super::random_hex(40),
                session: None,
                job: None,
            },
        );
        Ok(id)
    }

    fn remove_runner(&mut self, id: u64) {
        self.runners.remove(&id);
        for j in &mut self.jobs {
            if j.status == "in_progress" && self.runners.values().all(|r| r.job != Some(j.id)) {
                j.status = "completed".into();
            }
        }
    }
}

fn msg(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"message": message, "documentation_url": DOCS, "status": status.to_string()}),
    )
}

struct Api {
    state: Arc<Mutex<State>>,
}

impl Handler for Api {
    fn handle(&self, req: &Request) -> Reply {
        let segs = req.segments();
        let mut segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        // GitHub Enterprise Server serves the REST API under /api/v3.
        if segs.starts_with(&["api", "v3"]) {
            segs.drain(..2);
        }
        let result = match segs.first() {
            Some(&"actions") | Some(&"_services") => actions::route(&self.state, req, &segs),
            _ => rest::route(&self.state, req, &segs),
        };
        result.unwrap_or_else(|e| e)
    }

    fn auth_present(&self, req: &Request) -> bool {
        req.headers.contains_key("authorization")
    }

    fn unavailable(&self) -> Reply {
        msg(503, "Service Unavailable")
    }
}

/// A running GitHub emulator; stops when dropped.
pub struct GitHubEmulator {
    server: Server,
    state: Arc<Mutex<State>>,
}

impl GitHubEmulator {
    /// Plain HTTP on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(GitHubOptions::default()).await
    }

    /// HTTPS with a fresh CA (see [`GitHubEmulator::ca_file`]).
    pub async fn start_tls() -> std::io::Result<Self> {
        Self::start_with(GitHubOptions {
            tls: true,
            ..GitHubOptions::default()
        })
        .await
    }

    pub async fn start_with(opts: GitHubOptions) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State {
            offline_after: opts.offline_after,
            scheme: if opts.tls { "https" } else { "http" },
            ..State::default()
        }));
        let server = Server::start(Arc::new(Api { state: state.clone() }), opts.tls.then_some("github")).await?;
        Ok(Self { server, state })
    }

    /// The REST API base URL as on api.github.com (`api_url`).
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// The same API as GitHub Enterprise Server serves it (`URL/api/v3`).
    pub fn enterprise_api_url(&self) -> String {
        format!("{}/api/v3", self.server.url())
    }

    /// The web URL of a repository, what `config.sh --url` takes: `URL/OWNER/NAME`.
    pub fn repo_url(&self, repo: &str) -> String {
        format!("{}/{repo}", self.server.url())
    }

    pub fn ca_file(&self) -> Option<&Path> {
        self.server.ca().map(|ca| ca.ca_file())
    }

    /// A new access token administering `repos` (`OWNER/NAME`).
    pub fn add_token(&self, repos: &[&str]) -> String {
        self.token(repos, true)
    }

    /// A token that may only read the runners of `repos` (no tokens, no deletion).
    pub fn add_read_token(&self, repos: &[&str]) -> String {
        self.token(repos, false)
    }

    fn token(&self, repos: &[&str], write: bool) -> String {
        let token = format!("ghp_{}", super::random_hex(36));
        lock(&self.state).tokens.insert(
            token.clone(),
            Access {
                repos: repos.iter().map(|s| (*s).to_owned()).collect(),
                write,
            },
        );
        token
    }

    /// A registration token for `repo`, as `POST .../registration-token` would
    /// hand out (for tests that run the stand-in runner without a workflow).
    pub fn create_registration_token(&self, repo: &str) -> String {
        let token = format!("A{}", super::random_hex(28).to_ascii_uppercase());
        let expires = super::now_secs() + TOKEN_LIFETIME;
        lock(&self.state)
            .runner_tokens
            .insert(token.clone(), (repo.to_owned(), "registration", expires));
        token
    }

    /// What `config.sh --unattended --token T --name N --labels L --replace` does,
    /// without a runner process: redeem a registration token; a runner of the same
    /// name is replaced. The runner shows `online` until [`Self::set_runner_state`]
    /// says otherwise. Returns the runner id.
    pub fn register_runner(&self, registration_token: &str, name: &str, labels: &[&str]) -> Result<u64, String> {
        let mut state = lock(&self.state);
        let Some((repo, kind, expires)) = state.runner_tokens.get(registration_token).cloned() else {
            return Err("invalid registration token".into());
        };
        if kind != "registration" || super::now_secs() > expires {
            return Err("the registration token has expired".into());
        }
        let mut all: Vec<String> = DEFAULT_LABELS.iter().map(|s| (*s).to_owned()).collect();
        all.extend(labels.iter().map(|l| (*l).to_owned()));
        let id = state.add_runner(&repo, name, all, true)?;
        if let Some(r) = state.runners.get_mut(&id) {
            r.forced_status = Some("online".into());
        }
        Ok(id)
    }

    /// Every runner, as the REST API shows it now.
    pub fn runners(&self) -> Vec<GhRunner> {
        let state = lock(&self.state);
        state.runners.values().map(|r| state.view(r)).collect()
    }

    pub fn runner_by_name(&self, name: &str) -> Option<GhRunner> {
        self.runners().into_iter().find(|r| r.name == name)
    }

    /// Force a runner's `status` (`online`/`offline`) and `busy`, whatever its heartbeats say.
    pub fn set_runner_state(&self, id: u64, status: &str, busy: bool) {
        if let Some(r) = lock(&self.state).runners.get_mut(&id) {
            r.forced_status = Some(status.to_owned());
            r.forced_busy = busy;
        }
    }

    /// Let heartbeats decide a runner's status and busyness again.
    pub fn clear_runner_state(&self, id: u64) {
        if let Some(r) = lock(&self.state).runners.get_mut(&id) {
            r.forced_status = None;
            r.forced_busy = false;
        }
    }

    /// How long a silent runner stays `online`.
    pub fn set_offline_after(&self, d: Duration) {
        lock(&self.state).offline_after = d;
    }

    /// Queue a job of `repo` with these `runs-on` labels that runs `seconds`;
    /// an online, idle runner with all the labels takes it when it next polls.
    pub fn queue_job(&self, repo: &str, labels: &[&str], seconds: f64) -> u64 {
        let mut state = lock(&self.state);
        let id = state.next();
        state.jobs.push(GhJob {
            id,
            repo: repo.to_owned(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            seconds,
            status: "queued".into(),
            runner: None,
        });
        id
    }

    pub fn job(&self, id: u64) -> Option<GhJob> {
        lock(&self.state).jobs.iter().find(|j| j.id == id).cloned()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// The requests of API clients (flowrun, config.sh): every request but
    /// the runner services' own traffic behind `/_services/` (sessions,
    /// heartbeats every second, jobs), which goes on whatever flowrun does.
    pub fn api_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| !r.path.starts_with("/_services/"))
            .collect()
    }

    pub fn writes(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(Recorded::is_write).collect()
    }

    /// Every registration and remove token handed out so far (to look for leaks).
    pub fn issued_runner_tokens(&self) -> Vec<String> {
        lock(&self.state).runner_tokens.keys().cloned().collect()
    }

    /// How many registration tokens were handed out since the last [`Self::clear_requests`].
    pub fn registration_tokens_issued(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/registration-token") && r.status == 201)
            .count()
    }

    pub fn clear_requests(&self) {
        self.server.clear_requests();
    }

    pub fn fail_next_requests(&self, n: u32) {
        self.server.fail_next_requests(n);
    }

    /// Answer the next `n` requests with 429 and `Retry-After: retry_after_secs`.
    pub fn throttle_next_requests(&self, n: u32, retry_after_secs: u32) {
        self.server.throttle_next_requests(n, retry_after_secs);
    }
}
