//! The runner's side of the emulator. `POST /actions/runner-registration`
//! is GitHub's real endpoint (what `config.sh` calls with `Authorization:
//! RemoteAuth <registration or remove token>` and `{"url", "runner_event"}`);
//! it answers the URL and a credential of an Actions service "tenant". Behind
//! that URL, under `/_services/pipelines/{owner}/{repo}`, is a small stand-in
//! of the Actions service, whose real protocol is not public: the runner adds
//! (or, with `replace`, replaces) itself and gets its own credential, opens a
//! session, polls for messages (each poll is a heartbeat that keeps it
//! `online`), runs a job it is given and reports it complete.

use super::{msg, State, DEFAULT_LABELS, TOKEN_LIFETIME};
use crate::emulators::server::{lock, parse_form, Reply, Request};
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::Instant;

fn bearer<'a>(req: &'a Request, scheme: &str) -> Option<&'a str> {
    req.header("authorization")?.strip_prefix(scheme)?.strip_prefix(' ')
}

fn body(req: &Request) -> Result<Value, Reply> {
    serde_json::from_slice(&req.body).map_err(|_| msg(400, "Problems parsing JSON"))
}

pub(super) fn route(state: &Mutex<State>, req: &Request, segs: &[&str]) -> Result<Reply, Reply> {
    let mut state = lock(state);
    match segs {
        ["actions", "runner-registration"] if req.method == "POST" => registration(&mut state, req),
        ["_services", "pipelines", owner, name, rest @ ..] => {
            let repo = format!("{owner}/{name}");
            match rest {
                ["agents", ..] => agents(&mut state, req, &repo, &rest[1..]),
                _ => runner_api(&mut state, req, &repo, rest),
            }
        }
        _ => Err(msg(404, "Not Found")),
    }
}

/// Redeem a registration (or remove) token for a tenant credential.
fn registration(state: &mut State, req: &Request) -> Result<Reply, Reply> {
    let token = bearer(req, "RemoteAuth").ok_or_else(|| msg(401, "Requires authentication"))?;
    let b = body(req)?;
    let (Some(url), Some(event)) = (
        b.get("url").and_then(Value::as_str),
        b.get("runner_event").and_then(Value::as_str),
    ) else {
        return Err(msg(400, "`url` and `runner_event` are required"));
    };
    let want = match event {
        "register" => "registration",
        "remove" => "remove",
        _ => return Err(msg(400, &format!("unknown runner_event `{event}`"))),
    };
    let Some((repo, kind, expires)) = state.runner_tokens.get(token).cloned() else {
        return Err(msg(404, "Not Found"));
    };
    if kind != want || crate::emulators::now_secs() > expires {
        return Err(msg(404, "Not Found"));
    }
    let suffix = format!("/{repo}");
    if !url
        .trim_end_matches('/')
        .to_ascii_lowercase()
        .ends_with(&suffix.to_ascii_lowercase())
    {
        return Err(msg(404, "Not Found"));
    }
    let tenant = format!("ts_{}", crate::emulators::random_hex(32));
    state.tenant_tokens.insert(
        tenant.clone(),
        (repo.clone(), crate::emulators::now_secs() + TOKEN_LIFETIME),
    );
    let host = req.header("host").unwrap_or("127.0.0.1");
    Ok(Reply::json(
        200,
        &json!({"url": format!("{}://{host}/_services/pipelines/{repo}", state.scheme),
                "token": tenant, "token_schema": "OAuthAccessToken"}),
    ))
}

fn tenant_ok(state: &State, req: &Request, repo: &str) -> Result<(), Reply> {
    let t = bearer(req, "Bearer").ok_or_else(|| msg(401, "Requires authentication"))?;
    match state.tenant_tokens.get(t) {
        Some((r, exp)) if r == repo && crate::emulators::now_secs() <= *exp => Ok(()),
        _ => Err(msg(401, "Bad credentials")),
    }
}

/// The tenant's agents: find by name, add or replace, remove.
fn agents(state: &mut State, req: &Request, repo: &str, rest: &[&str]) -> Result<Reply, Reply> {
    tenant_ok(state, req, repo)?;
    match (req.method.as_str(), rest) {
        ("GET", []) => {
            let name = parse_form(req.query.as_bytes())
                .into_iter()
                .find(|(k, _)| k == "name")
                .map(|(_, v)| v);
            let list: Vec<Value> = state
                .runners
                .values()
                .filter(|r| r.repo == repo && name.as_ref().is_none_or(|n| r.name.eq_ignore_ascii_case(n)))
                .map(|r| json!({"id": r.id, "name": r.name, "labels": r.labels}))
                .collect();
            Ok(Reply::json(200, &json!({"count": list.len(), "value": list})))
        }
        ("POST", []) => {
            let b = body(req)?;
            let Some(name) = b.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
                return Err(msg(400, "`name` is required"));
            };
            let mut labels: Vec<String> = if b.get("no_default_labels").and_then(Value::as_bool) == Some(true) {
                Vec::new()
            } else {
                DEFAULT_LABELS.iter().map(|s| (*s).to_owned()).collect()
            };
            for l in b.get("labels").and_then(Value::as_array).into_iter().flatten() {
                if let Some(l) = l.as_str().map(str::trim).filter(|l| !l.is_empty()) {
                    if !labels.iter().any(|x| x.eq_ignore_ascii_case(l)) {
                        labels.push(l.to_owned());
                    }
                }
            }
            let replace = b.get("replace").and_then(Value::as_bool) == Some(true);
            let id = state
                .add_runner(repo, name, labels, replace)
                .map_err(|e| msg(409, &e))?;
            let r = &state.runners[&id];
            Ok(Reply::json(
                200,
                &json!({"id": id, "name": r.name, "labels": r.labels, "credential": r.credential}),
            ))
        }
        ("DELETE", [id]) => {
            let id = id
                .parse::<u64>()
                .ok()
                .filter(|id| state.runners.get(id).is_some_and(|r| r.repo == repo))
                .ok_or_else(|| msg(404, "Not Found"))?;
            state.remove_runner(id);
            Ok(Reply::empty(204))
        }
        _ => Err(msg(404, "Not Found")),
    }
}

/// A runner with its own credential: sessions, polls (heartbeats), jobs.
fn runner_api(state: &mut State, req: &Request, repo: &str, rest: &[&str]) -> Result<Reply, Reply> {
    let cred = bearer(req, "Bearer").ok_or_else(|| msg(401, "Requires authentication"))?;
    let id = state
        .runners
        .values()
        .find(|r| r.repo == repo && r.credential == cred)
        .map(|r| r.id)
        .ok_or_else(|| msg(401, "Bad credentials"))?;
    let session = || {
        parse_form(req.query.as_bytes())
            .into_iter()
            .find(|(k, _)| k == "sessionId")
            .map(|(_, v)| v)
    };
    match (req.method.as_str(), rest) {
        ("POST", ["sessions"]) => {
            let s = crate::emulators::random_hex(16);
            let r = state.runners.get_mut(&id).expect("found above");
            r.session = Some(s.clone());
            r.last_contact = Some(Instant::now());
            Ok(Reply::json(
                200,
                &json!({"sessionId": s, "agent": {"id": id, "name": r.name}}),
            ))
        }
        ("DELETE", ["sessions", s]) => {
            let r = state.runners.get_mut(&id).expect("found above");
            if r.session.as_deref() == Some(*s) {
                r.session = None;
            }
            Ok(Reply::empty(204))
        }
        ("GET", ["messages"]) => {
            let r = state.runners.get_mut(&id).expect("found above");
            if r.session.is_none() || r.session != session() {
                return Err(msg(404, "the session has expired or does not exist"));
            }
            r.last_contact = Some(Instant::now());
            Ok(next_job(state, id).map_or_else(|| Reply::empty(204), |job| Reply::json(200, &json!({"job": job}))))
        }
        ("POST", ["jobs", job, "complete"]) => {
            let job: u64 = job.parse().map_err(|_| msg(404, "Not Found"))?;
            let r = state.runners.get_mut(&id).expect("found above");
            if r.job != Some(job) {
                return Err(msg(404, "Not Found"));
            }
            r.job = None;
            r.last_contact = Some(Instant::now());
            if let Some(j) = state.jobs.iter_mut().find(|j| j.id == job) {
                j.status = "completed".into();
            }
            Ok(Reply::json(200, &json!({"id": job, "status": "completed"})))
        }
        _ => Err(msg(404, "Not Found")),
    }
}

/// The oldest queued job of the runner's repository whose labels it all has.
fn next_job(state: &mut State, id: u64) -> Option<Value> {
    let r = &state.runners[&id];
    if r.job.is_some() || r.forced_status.as_deref() == Some("offline") {
        return None;
    }
    let (repo, labels, name) = (r.repo.clone(), r.labels.clone(), r.name.clone());
    let job = state.jobs.iter_mut().find(|j| {
        j.status == "queued"
            && j.repo == repo
            && j.labels
                .iter()
                .all(|l| labels.iter().any(|x| x.eq_ignore_ascii_case(l)))
    })?;
    job.status = "in_progress".into();
    job.runner = Some(name);
    let out = json!({"id": job.id, "seconds": job.seconds, "labels": job.labels});
    let jid = job.id;
    state.runners.get_mut(&id).expect("found above").job = Some(jid);
    Some(out)
}
