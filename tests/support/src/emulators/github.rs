//! An emulator of the GitHub REST API's self-hosted runner endpoints for a
//! repository: registration and remove tokens (valid one hour), the runner
//! list with pagination, runner deletion. It insists on what GitHub insists
//! on (a `User-Agent`, credentials, the `X-GitHub-Api-Version` it knows) and,
//! stricter than GitHub, on `Accept: application/vnd.github+json`, so a
//! client that forgets the documented headers fails here. A stand-in
//! `config.sh` registers runners with [`GitHubEmulator::register_runner`].

use super::server::{lock, parse_form, Handler, Recorded, Reply, Request, Server};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

const API_VERSIONS: &[&str] = &["2022-11-28", "2026-03-10"];
const TOKEN_LIFETIME: u64 = 3600;
const DOCS: &str = "https://docs.github.com/rest";

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
            .map(|(i, l)| {
                let builtin = ["self-hosted", "Linux", "X64", "ARM64", "macOS", "Windows"].contains(&l.as_str());
                json!({"id": i + 1, "name": l, "type": if builtin { "read-only" } else { "custom" }})
            })
            .collect();
        json!({"id": self.id, "name": self.name, "os": self.os, "status": self.status,
               "busy": self.busy, "ephemeral": false, "labels": labels})
    }
}

#[derive(Default)]
struct State {
    /// Access token → repositories it may administer (`OWNER/NAME`).
    tokens: BTreeMap<String, Vec<String>>,
    /// Registration token → (repository, expiry).
    registration_tokens: BTreeMap<String, (String, u64)>,
    runners: BTreeMap<u64, GhRunner>,
    next_id: u64,
}

struct Api {
    state: Arc<Mutex<State>>,
}

fn msg(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"message": message, "documentation_url": DOCS, "status": status.to_string()}),
    )
}

impl Api {
    fn check_headers(req: &Request) -> Result<(), Reply> {
        if req.header("user-agent").is_none_or(str::is_empty) {
            return Err(Reply::json(
                403,
                &json!({"message": "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes."}),
            ));
        }
        match req.header("x-github-api-version") {
            None => return Err(msg(400, "A supported 'X-GitHub-Api-Version' header is required")),
            Some(v) if !API_VERSIONS.contains(&v) => {
                return Err(msg(400, &format!("Unsupported 'X-GitHub-Api-Version' header: '{v}'")))
            }
            Some(_) => {}
        }
        let accept = req.header("accept").unwrap_or("");
        if !accept.split(',').any(|a| a.trim() == "application/vnd.github+json") {
            return Err(msg(415, &format!("Unsupported 'Accept' header: '{accept}'")));
        }
        Ok(())
    }

    /// The repositories the caller's token administers.
    fn repos(&self, req: &Request) -> Result<Vec<String>, Reply> {
        let Some(auth) = req.header("authorization") else {
            return Err(msg(401, "Requires authentication"));
        };
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("token "))
            .unwrap_or("");
        lock(&self.state)
            .tokens
            .get(token)
            .cloned()
            .ok_or_else(|| msg(401, "Bad credentials"))
    }

    fn route(&self, req: &Request) -> Result<Reply, Reply> {
        Self::check_headers(req)?;
        let segs = req.segments();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let ["repos", owner, name, "actions", "runners", rest @ ..] = segs.as_slice() else {
            return Err(msg(404, "Not Found"));
        };
        let repo = format!("{owner}/{name}");
        if !self.repos(req)?.contains(&repo) {
            return Err(msg(404, "Not Found"));
        }
        let mut state = lock(&self.state);
        match (req.method.as_str(), rest) {
            ("POST", [kind @ ("registration-token" | "remove-token")]) => {
                let token = format!("A{}", super::random_hex(28).to_ascii_uppercase());
                let expires = super::now_secs() + TOKEN_LIFETIME;
                if *kind == "registration-token" {
                    state.registration_tokens.insert(token.clone(), (repo, expires));
                }
                Ok(Reply::json(
                    201,
                    &json!({"token": token, "expires_at": super::rfc3339(expires)}),
                ))
            }
            ("GET", []) => {
                let q: BTreeMap<String, String> = parse_form(req.query.as_bytes()).into_iter().collect();
                let per_page: usize = q
                    .get("per_page")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(30)
                    .clamp(1, 100);
                let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
                let mine: Vec<&GhRunner> = state.runners.values().filter(|r| r.repo == repo).collect();
                let total = mine.len();
                let items: Vec<Value> = mine
                    .iter()
                    .skip((page - 1) * per_page)
                    .take(per_page)
                    .map(|r| r.json())
                    .collect();
                let mut reply = Reply::json(200, &json!({"total_count": total, "runners": items}));
                if page * per_page < total {
                    let host = req.header("host").unwrap_or("127.0.0.1");
                    reply = reply.header(
                        "link",
                        format!(
                            "<http://{host}/repos/{repo}/actions/runners?per_page={per_page}&page={}>; rel=\"next\"",
                            page + 1
                        ),
                    );
                }
                Ok(reply)
            }
            (m @ ("GET" | "DELETE"), [id]) => {
                let id = id
                    .parse::<u64>()
                    .ok()
                    .filter(|id| state.runners.get(id).is_some_and(|r| r.repo == repo));
                let Some(id) = id else {
                    return Err(msg(404, "Not Found"));
                };
                if m == "GET" {
                    Ok(Reply::json(200, &state.runners[&id].json()))
                } else if state.runners[&id].busy {
                    Err(msg(422, "Bad request - Runner \"busy\" is still running a job"))
                } else {
                    state.runners.remove(&id);
                    Ok(Reply::empty(204))
                }
            }
            _ => Err(msg(404, "Not Found")),
        }
    }
}

impl Handler for Api {
    fn handle(&self, req: &Request) -> Reply {
        self.route(req).unwrap_or_else(|e| e)
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
        Self::start_inner(false).await
    }

    /// HTTPS with a fresh CA (see [`GitHubEmulator::ca_file`]).
    pub async fn start_tls() -> std::io::Result<Self> {
        Self::start_inner(true).await
    }

    async fn start_inner(tls: bool) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let server = Server::start(Arc::new(Api { state: state.clone() }), tls.then_some("github")).await?;
        Ok(Self { server, state })
    }

    /// The API base URL (`api_url`).
    pub fn url(&self) -> &str {
        self.server.url()
    }

    pub fn ca_file(&self) -> Option<&Path> {
        self.server.ca().map(|ca| ca.ca_file())
    }

    /// A new access token administering `repos` (`OWNER/NAME`).
    pub fn add_token(&self, repos: &[&str]) -> String {
        let token = format!("ghp_{}", super::random_hex(36));
        lock(&self.state)
            .tokens
            .insert(token.clone(), repos.iter().map(|s| (*s).to_owned()).collect());
        token
    }

    /// What `config.sh --unattended --token T --name N --labels L --replace` does:
    /// redeem a registration token; a runner of the same name is replaced. Returns the runner id.
    pub fn register_runner(&self, registration_token: &str, name: &str, labels: &[&str]) -> Result<u64, String> {
        let mut state = lock(&self.state);
        let Some((repo, expires)) = state.registration_tokens.get(registration_token).cloned() else {
            return Err("invalid registration token".into());
        };
        if super::now_secs() > expires {
            return Err("the registration token has expired".into());
        }
        state.runners.retain(|_, r| !(r.repo == repo && r.name == name));
        state.next_id += 1;
        let id = state.next_id;
        let mut all = vec!["self-hosted".to_owned(), "Linux".to_owned(), "X64".to_owned()];
        all.extend(labels.iter().map(|l| (*l).to_owned()));
        state.runners.insert(
            id,
            GhRunner {
                id,
                repo,
                name: name.to_owned(),
                os: "Linux".into(),
                status: "online".into(),
                busy: false,
                labels: all,
            },
        );
        Ok(id)
    }

    pub fn runners(&self) -> Vec<GhRunner> {
        lock(&self.state).runners.values().cloned().collect()
    }

    /// Set a runner's `status` (`online`/`offline`) and `busy`.
    pub fn set_runner_state(&self, id: u64, status: &str, busy: bool) {
        if let Some(r) = lock(&self.state).runners.get_mut(&id) {
            r.status = status.to_owned();
            r.busy = busy;
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    pub fn writes(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(Recorded::is_write).collect()
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
