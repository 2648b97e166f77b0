//! An emulator of the parts of the GitLab REST API (`/api/v4`) that the
//! `gitlab_runner` step uses: runner creation with an access token (the flow
//! that replaced registration tokens), runner details, verification with the
//! runner's own token, deletion; personal access tokens with scopes, and the
//! error bodies GitLab sends (401, 403 `insufficient_scope`, 404, 410 for
//! legacy registration). A stand-in `gitlab-runner` makes a runner `online`
//! through [`GitLabEmulator::contact`] or `POST /runners/verify` with a `system_id`.

use super::server::{lock, parse_form, Handler, Recorded, Reply, Request, Server};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A runner counts as online when it contacted GitLab within this many seconds.
const ONLINE_WINDOW: u64 = 2 * 3600;

/// A runner as the emulator keeps it.
#[derive(Debug, Clone)]
pub struct Runner {
    pub id: u64,
    pub token: String,
    pub runner_type: String,
    pub group_id: Option<u64>,
    pub project_id: Option<u64>,
    pub description: String,
    pub tag_list: Vec<String>,
    pub run_untagged: bool,
    pub locked: bool,
    pub paused: bool,
    pub access_level: String,
    pub contacted_at: Option<u64>,
    /// Set by tests: overrides the status computed from `contacted_at`.
    pub status_override: Option<String>,
    pub system_ids: Vec<String>,
}

impl Runner {
    pub fn status(&self) -> String {
        if let Some(s) = &self.status_override {
            return s.clone();
        }
        match self.contacted_at {
            None => "never_contacted".into(),
            Some(t) if super::now_secs().saturating_sub(t) <= ONLINE_WINDOW => "online".into(),
            Some(_) => "offline".into(),
        }
    }

    fn details(&self) -> Value {
        json!({
            "id": self.id,
            "description": self.description,
            "ip_address": null,
            "active": !self.paused,
            "paused": self.paused,
            "is_shared": self.runner_type == "instance_type",
            "runner_type": self.runner_type,
            "name": "gitlab-runner",
            "online": self.status() == "online",
            "status": self.status(),
            "tag_list": self.tag_list,
            "run_untagged": self.run_untagged,
            "locked": self.locked,
            "access_level": self.access_level,
            "maximum_timeout": null,
            "contacted_at": self.contacted_at.map(super::rfc3339),
            "maintenance_note": null,
            "projects": self.project_id.map(|p| vec![json!({"id": p})]).unwrap_or_default(),
            "groups": self.group_id.map(|g| vec![json!({"id": g})]).unwrap_or_default(),
        })
    }
}

#[derive(Default)]
struct State {
    /// Personal/project/group access tokens and their scopes.
    tokens: BTreeMap<String, Vec<String>>,
    runners: BTreeMap<u64, Runner>,
    next_id: u64,
}

struct Api {
    state: Arc<Mutex<State>>,
}

fn msg(status: u16, message: &str) -> Reply {
    Reply::json(status, &json!({ "message": message }))
}

fn insufficient_scope(scopes: &[&str]) -> Reply {
    Reply::json(
        403,
        &json!({
            "error": "insufficient_scope",
            "error_description": "The request requires higher privileges than provided by the access token.",
            "scope": scopes.join(" "),
        }),
    )
}

/// Request parameters from the query string and a JSON or form body.
fn params(req: &Request) -> Result<Map<String, Value>, Reply> {
    let mut out = Map::new();
    let mut add = |pairs: Vec<(String, String)>| {
        for (k, v) in pairs {
            if let Some(k) = k.strip_suffix("[]") {
                let entry = out.entry(k.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = entry {
                    a.push(Value::String(v));
                }
            } else {
                out.insert(k, Value::String(v));
            }
        }
    };
    add(parse_form(req.query.as_bytes()));
    if !req.body.is_empty() {
        if req.content_type() == "application/json" {
            match serde_json::from_slice::<Value>(&req.body) {
                Ok(Value::Object(m)) => out.extend(m),
                _ => return Err(msg(400, "400 Bad request - malformed JSON")),
            }
        } else {
            add(parse_form(&req.body));
        }
    }
    Ok(out)
}

fn as_bool(v: Option<&Value>, name: &str) -> Result<Option<bool>, Reply> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" || s == "1" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" || s == "0" => Ok(Some(false)),
        Some(_) => Err(Reply::json(400, &json!({"error": format!("{name} is invalid")}))),
    }
}

fn as_id(v: Option<&Value>, name: &str) -> Result<Option<u64>, Reply> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(Value::String(s)) if s.parse::<u64>().is_ok() => Ok(s.parse().ok()),
        Some(_) => Err(Reply::json(400, &json!({"error": format!("{name} is invalid")}))),
    }
}

fn as_str(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

impl Api {
    /// The caller's scopes, or the 401 GitLab sends.
    fn scopes(&self, req: &Request) -> Result<Vec<String>, Reply> {
        let token = req.header("private-token").map(str::to_owned).or_else(|| {
            req.header("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .map(str::to_owned)
        });
        let state = lock(&self.state);
        token
            .and_then(|t| state.tokens.get(&t).cloned())
            .ok_or_else(|| msg(401, "401 Unauthorized"))
    }

    fn require(&self, req: &Request, any_of: &[&str]) -> Result<(), Reply> {
        let scopes = self.scopes(req)?;
        if scopes.iter().any(|s| any_of.contains(&s.as_str())) {
            Ok(())
        } else {
            Err(insufficient_scope(any_of))
        }
    }

    fn route(&self, req: &Request) -> Result<Reply, Reply> {
        let segs = req.segments();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let Some(rest) = segs.strip_prefix(&["api", "v4"]) else {
            return Ok(Reply::json(404, &json!({"error": "404 Not Found"})));
        };
        match (req.method.as_str(), rest) {
            ("POST", ["user", "runners"]) => {
                self.require(req, &["create_runner", "api"])?;
                self.create(&params(req)?)
            }
            // Registration with a registration token: disabled, and removed in GitLab 20.0.
            ("POST", ["runners"]) => Ok(msg(410, "410 Gone - runner registration disallowed")),
            ("POST", ["runners", "verify"]) => {
                let p = params(req)?;
                let token = as_str(p.get("token")).unwrap_or_default();
                let system_id = as_str(p.get("system_id"));
                let mut state = lock(&self.state);
                let Some(r) = state.runners.values_mut().find(|r| r.token == token) else {
                    return Ok(msg(403, "403 Forbidden"));
                };
                if let Some(sid) = system_id {
                    // What `gitlab-runner register`/`run` do: the runner manager checks in.
                    r.contacted_at = Some(super::now_secs());
                    if !r.system_ids.contains(&sid) {
                        r.system_ids.push(sid);
                    }
                }
                Ok(Reply::json(
                    200,
                    &json!({"id": r.id, "token": r.token, "token_expires_at": null}),
                ))
            }
            ("DELETE", ["runners"]) => {
                let token = as_str(params(req)?.get("token")).unwrap_or_default();
                let mut state = lock(&self.state);
                let id = state.runners.values().find(|r| r.token == token).map(|r| r.id);
                match id {
                    Some(id) => {
                        state.runners.remove(&id);
                        Ok(Reply::empty(204))
                    }
                    None => Ok(msg(403, "403 Forbidden")),
                }
            }
            ("GET", ["runners", id]) => {
                self.require(req, &["read_api", "manage_runner", "api"])?;
                let state = lock(&self.state);
                match id.parse::<u64>().ok().and_then(|id| state.runners.get(&id)) {
                    Some(r) => Ok(Reply::json(200, &r.details())),
                    None => Ok(msg(404, "404 Not found")),
                }
            }
            ("DELETE", ["runners", id]) => {
                self.require(req, &["manage_runner", "api"])?;
                let mut state = lock(&self.state);
                match id.parse::<u64>().ok().and_then(|id| state.runners.remove(&id)) {
                    Some(_) => Ok(Reply::empty(204)),
                    None => Ok(msg(404, "404 Not found")),
                }
            }
            _ => Ok(Reply::json(404, &json!({"error": "404 Not Found"}))),
        }
    }

    fn create(&self, p: &Map<String, Value>) -> Result<Reply, Reply> {
        let bad = |e: &str| Reply::json(400, &json!({ "error": e }));
        let runner_type = match as_str(p.get("runner_type")) {
            None => return Err(bad("runner_type is missing")),
            Some(t) if ["instance_type", "group_type", "project_type"].contains(&t.as_str()) => t,
            Some(_) => return Err(bad("runner_type does not have a valid value")),
        };
        let group_id = as_id(p.get("group_id"), "group_id")?;
        let project_id = as_id(p.get("project_id"), "project_id")?;
        match runner_type.as_str() {
            "group_type" if group_id.is_none() => return Err(bad("group_id is missing")),
            "project_type" if project_id.is_none() => return Err(bad("project_id is missing")),
            _ => {}
        }
        let access_level = as_str(p.get("access_level")).unwrap_or_else(|| "not_protected".into());
        if !["not_protected", "ref_protected"].contains(&access_level.as_str()) {
            return Err(bad("access_level does not have a valid value"));
        }
        let tag_list = match p.get("tag_list") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.iter().filter_map(|v| as_str(Some(v))).collect(),
            Some(Value::String(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            Some(_) => return Err(bad("tag_list is invalid")),
        };
        let mut state = lock(&self.state);
        state.next_id += 1;
        let runner = Runner {
            id: state.next_id,
            token: format!("glrt-{}", super::random_hex(20)),
            runner_type,
            group_id,
            project_id,
            description: as_str(p.get("description")).unwrap_or_default(),
            tag_list,
            run_untagged: as_bool(p.get("run_untagged"), "run_untagged")?.unwrap_or(true),
            locked: as_bool(p.get("locked"), "locked")?.unwrap_or(false),
            paused: as_bool(p.get("paused"), "paused")?.unwrap_or(false),
            access_level,
            contacted_at: None,
            status_override: None,
            system_ids: Vec::new(),
        };
        let body = json!({"id": runner.id, "token": runner.token, "token_expires_at": null});
        state.runners.insert(runner.id, runner);
        Ok(Reply::json(201, &body))
    }
}

impl Handler for Api {
    fn handle(&self, req: &Request) -> Reply {
        self.route(req).unwrap_or_else(|e| e)
    }

    fn auth_present(&self, req: &Request) -> bool {
        req.headers.contains_key("private-token") || req.headers.contains_key("authorization")
    }

    fn unavailable(&self) -> Reply {
        msg(503, "503 Service Unavailable")
    }
}

/// A running GitLab emulator; stops when dropped.
pub struct GitLabEmulator {
    server: Server,
    state: Arc<Mutex<State>>,
}

impl GitLabEmulator {
    /// Plain HTTP on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_inner(false).await
    }

    /// HTTPS with a fresh CA (see [`GitLabEmulator::ca_file`]).
    pub async fn start_tls() -> std::io::Result<Self> {
        Self::start_inner(true).await
    }

    async fn start_inner(tls: bool) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let handler = Arc::new(Api { state: state.clone() });
        let server = Server::start(handler, tls.then_some("gitlab")).await?;
        Ok(Self { server, state })
    }

    /// The GitLab base URL (`api_url`), without `/api/v4`.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    pub fn ca_file(&self) -> Option<&Path> {
        self.server.ca().map(|ca| ca.ca_file())
    }

    /// A new access token with `scopes` (`create_runner`, `read_api`, `manage_runner`, `api`).
    pub fn add_token(&self, scopes: &[&str]) -> String {
        let token = format!("glpat-{}", super::random_hex(20));
        lock(&self.state)
            .tokens
            .insert(token.clone(), scopes.iter().map(|s| (*s).to_owned()).collect());
        token
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// Requests other than GETs and runner verifications without a `system_id`.
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_write() && !r.path.ends_with("/runners/verify"))
            .collect()
    }

    pub fn clear_requests(&self) {
        self.server.clear_requests();
    }

    /// Answer the next `n` requests with 503.
    pub fn fail_next_requests(&self, n: u32) {
        self.server.fail_next_requests(n);
    }

    /// Answer the next `n` requests with 429 and `Retry-After: retry_after_secs`.
    pub fn throttle_next_requests(&self, n: u32, retry_after_secs: u32) {
        self.server.throttle_next_requests(n, retry_after_secs);
    }

    pub fn runners(&self) -> Vec<Runner> {
        lock(&self.state).runners.values().cloned().collect()
    }

    pub fn runner(&self, id: u64) -> Option<Runner> {
        lock(&self.state).runners.get(&id).cloned()
    }

    /// Force a runner's status (`online`, `offline`, `stale`, `never_contacted`); `None` computes it again.
    pub fn set_status(&self, id: u64, status: Option<&str>) {
        if let Some(r) = lock(&self.state).runners.get_mut(&id) {
            r.status_override = status.map(str::to_owned);
        }
    }

    /// A runner with this token checks in (what a running gitlab-runner does); false if unknown.
    pub fn contact(&self, runner_token: &str) -> bool {
        let mut state = lock(&self.state);
        match state.runners.values_mut().find(|r| r.token == runner_token) {
            Some(r) => {
                r.contacted_at = Some(super::now_secs());
                true
            }
            None => false,
        }
    }

    /// Delete a runner behind the client's back (as an admin in the UI would).
    pub fn remove_runner(&self, id: u64) -> Option<Runner> {
        lock(&self.state).runners.remove(&id)
    }
}
