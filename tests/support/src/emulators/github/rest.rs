//! The REST API of the emulator: `/repos/{owner}/{repo}/actions/runners...`
//! with GitHub's headers, credentials, permissions, pagination and error
//! bodies (`{"message", "documentation_url", "status"}`).

use super::{label_type, msg, State, API_VERSIONS, TOKEN_LIFETIME};
use crate::emulators::server::{lock, parse_form, Reply, Request};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;

const MAX_PER_PAGE: usize = 100;
const MAX_LABELS: usize = 100;

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

/// The caller's access: `Authorization: Bearer T` (or the older `token T`).
fn access(state: &State, req: &Request) -> Result<super::Access, Reply> {
    let Some(auth) = req.header("authorization") else {
        return Err(msg(401, "Requires authentication"));
    };
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("token "))
        .unwrap_or("");
    state
        .tokens
        .get(token)
        .cloned()
        .ok_or_else(|| msg(401, "Bad credentials"))
}

pub(super) fn route(state: &Mutex<State>, req: &Request, segs: &[&str]) -> Result<Reply, Reply> {
    check_headers(req)?;
    let ["repos", owner, name, "actions", "runners", rest @ ..] = segs else {
        return Err(msg(404, "Not Found"));
    };
    let repo = format!("{owner}/{name}");
    let mut state = lock(state);
    let access = access(&state, req)?;
    // GitHub answers 404, not 403, for a repository the token cannot see.
    if !access.repos.iter().any(|r| r.eq_ignore_ascii_case(&repo)) {
        return Err(msg(404, "Not Found"));
    }
    let write = req.method != "GET";
    if write && !access.write {
        return Err(msg(403, "Resource not accessible by personal access token"));
    }
    match (req.method.as_str(), rest) {
        ("POST", [kind @ ("registration-token" | "remove-token")]) => {
            let token = format!("A{}", crate::emulators::random_hex(28).to_ascii_uppercase());
            let expires = crate::emulators::now_secs() + TOKEN_LIFETIME;
            let kind = if *kind == "registration-token" {
                "registration"
            } else {
                "remove"
            };
            state.runner_tokens.insert(token.clone(), (repo, kind, expires));
            Ok(Reply::json(
                201,
                &json!({"token": token, "expires_at": crate::emulators::rfc3339(expires)}),
            ))
        }
        ("GET", []) => Ok(list(&state, req, &repo)),
        (m, [id, tail @ ..]) => {
            let id = id
                .parse::<u64>()
                .ok()
                .filter(|id| state.runners.get(id).is_some_and(|r| r.repo == repo))
                .ok_or_else(|| msg(404, "Not Found"))?;
            match (m, tail) {
                ("GET", []) => Ok(Reply::json(200, &state.view(&state.runners[&id]).json())),
                ("DELETE", []) => {
                    if state.view(&state.runners[&id]).busy {
                        let name = &state.runners[&id].name;
                        return Err(msg(
                            422,
                            &format!("Bad request - Runner \"{name}\" is still running a job"),
                        ));
                    }
                    state.remove_runner(id);
                    Ok(Reply::empty(204))
                }
                (_, ["labels", rest @ ..]) => labels(&mut state, req, id, rest),
                _ => Err(msg(404, "Not Found")),
            }
        }
        _ => Err(msg(404, "Not Found")),
    }
}

/// `GET .../runners?name=&per_page=&page=`, with `Link` to the other pages.
fn list(state: &State, req: &Request, repo: &str) -> Reply {
    let q: BTreeMap<String, String> = parse_form(req.query.as_bytes()).into_iter().collect();
    // Out-of-range or malformed values fall back to GitHub's defaults; above 100 is 100.
    let per_page = q
        .get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(30)
        .min(MAX_PER_PAGE);
    let page = q
        .get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1);
    let name = q.get("name").filter(|n| !n.is_empty());
    let mine: Vec<&super::Runner> = state
        .runners
        .values()
        .filter(|r| r.repo == repo && name.is_none_or(|n| r.name.eq_ignore_ascii_case(n)))
        .collect();
    let total = mine.len();
    let items: Vec<Value> = mine
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|r| state.view(r).json())
        .collect();
    let mut reply = Reply::json(200, &json!({"total_count": total, "runners": items}));
    let last = total.div_ceil(per_page).max(1);
    if last > 1 {
        let host = req.header("host").unwrap_or("127.0.0.1");
        let prefix = req.path.find("/repos/").map_or("", |i| &req.path[..i]);
        let scheme = state.scheme;
        let link = |p: usize, rel: &str| {
            let mut url =
                format!("{scheme}://{host}{prefix}/repos/{repo}/actions/runners?per_page={per_page}&page={p}");
            if let Some(n) = name {
                url.push_str(&format!(
                    "&name={}",
                    form_urlencoded::byte_serialize(n.as_bytes()).collect::<String>()
                ));
            }
            format!("<{url}>; rel=\"{rel}\"")
        };
        let mut links = Vec::new();
        if page > 1 {
            links.push(link(page - 1, "prev"));
        }
        if page < last {
            links.push(link(page + 1, "next"));
            links.push(link(last, "last"));
        }
        if page > 1 {
            links.push(link(1, "first"));
        }
        reply = reply.header("link", links.join(", "));
    }
    reply
}

fn labels_json(labels: &[String]) -> Value {
    let list: Vec<Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| json!({"id": i + 1, "name": l, "type": label_type(l)}))
        .collect();
    json!({"total_count": list.len(), "labels": list})
}

/// `.../runners/{id}/labels[/{name}]`: list, set, add, remove custom labels.
fn labels(state: &mut State, req: &Request, id: u64, rest: &[&str]) -> Result<Reply, Reply> {
    let runner = state.runners.get_mut(&id).expect("checked by the caller");
    let builtin: Vec<String> = runner
        .labels
        .iter()
        .filter(|l| label_type(l) == "read-only")
        .cloned()
        .collect();
    let body_labels = || -> Result<Vec<String>, Reply> {
        let v: Value = serde_json::from_slice(&req.body).map_err(|_| msg(400, "Problems parsing JSON"))?;
        let list = v
            .get("labels")
            .and_then(Value::as_array)
            .ok_or_else(|| msg(422, "Invalid request.\n\n\"labels\" wasn't supplied."))?;
        let names: Option<Vec<String>> = list
            .iter()
            .map(|l| l.as_str().filter(|s| !s.trim().is_empty()).map(str::to_owned))
            .collect();
        match names {
            Some(n) if n.len() <= MAX_LABELS => Ok(n),
            _ => Err(msg(422, "Validation Failed")),
        }
    };
    match (req.method.as_str(), rest) {
        ("GET", []) => {}
        ("PUT", []) => {
            let mut all = builtin;
            for l in body_labels()? {
                if !all.iter().any(|x| x.eq_ignore_ascii_case(&l)) {
                    all.push(l);
                }
            }
            runner.labels = all;
        }
        ("POST", []) => {
            for l in body_labels()? {
                if !runner.labels.iter().any(|x| x.eq_ignore_ascii_case(&l)) {
                    runner.labels.push(l);
                }
            }
        }
        ("DELETE", []) => runner.labels = builtin,
        ("DELETE", [name]) => {
            let before = runner.labels.len();
            runner
                .labels
                .retain(|l| !(l.eq_ignore_ascii_case(name) && label_type(l) == "custom"));
            if runner.labels.len() == before {
                return Err(msg(404, "Not Found"));
            }
        }
        _ => return Err(msg(404, "Not Found")),
    }
    Ok(Reply::json(200, &labels_json(&runner.labels)))
}
