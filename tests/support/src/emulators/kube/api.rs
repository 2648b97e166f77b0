//! The stand-in's HTTP surface: authentication (bearer tokens and client
//! certificates issued by its CA), discovery, and the REST paths of the
//! served resources — GET (whole objects, or metadata only when the client
//! asks for `PartialObjectMetadata`), LIST with selectors, PATCH (server-side
//! apply, merge and strategic merge), PUT, POST, DELETE — each answering in
//! the real server's status codes and Status bodies. Every request is logged
//! for the tests (method, path, dry run, metadata only, user, status).

use super::resources::{self, Resource};
use super::status::{self, Failure};
use super::store::{KubeRequest, State, User, Write};
use super::{controller, query};
use crate::emulators::server::{lock, parse_form, Handler, Reply, Request};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub struct Api {
    pub state: Arc<Mutex<State>>,
}

const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

fn reply(code: u16, v: &Value) -> Reply {
    Reply::json(code, v)
}

fn fail(f: Failure) -> Reply {
    Reply::json(f.code, &f.body)
}

/// What a path names.
enum Target {
    Collection {
        res: &'static Resource,
        ns: Option<String>,
    },
    Object {
        res: &'static Resource,
        ns: String,
        name: String,
        sub: Option<String>,
    },
}

fn target(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let find = |r: &str| resources::by_name(group, version, r);
    match rest {
        ["namespaces", ns, r, tail @ ..] if find(r).is_some_and(|r| r.namespaced) => {
            let res = find(r)?;
            match tail {
                [] => Some(Target::Collection {
                    res,
                    ns: Some((*ns).to_owned()),
                }),
                [name] => Some(Target::Object {
                    res,
                    ns: (*ns).to_owned(),
                    name: (*name).to_owned(),
                    sub: None,
                }),
                [name, "status"] if res.status => Some(Target::Object {
                    res,
                    ns: (*ns).to_owned(),
                    name: (*name).to_owned(),
                    sub: Some("status".into()),
                }),
                _ => None,
            }
        }
        [r] => Some(Target::Collection {
            res: find(r)?,
            ns: None,
        }),
        [r, name, tail @ ..] if find(r).is_some_and(|r| !r.namespaced) => {
            let res = find(r)?;
            let sub = match tail {
                [] => None,
                ["status"] if res.status => Some("status".to_owned()),
                _ => return None,
            };
            Some(Target::Object {
                res,
                ns: String::new(),
                name: (*name).to_owned(),
                sub,
            })
        }
        _ => None,
    }
}

/// Discovery and OpenAPI documents: `Some(None)` for a discovery path with nothing there.
fn discovery(req: &Request, segs: &[&str]) -> Option<Option<Value>> {
    Some(match segs {
        ["api"] => Some(resources::core_versions(req.header("host").unwrap_or("127.0.0.1"))),
        ["apis"] => Some(resources::group_list()),
        ["apis", "apps"] => Some(resources::group("apps")),
        ["api", v] => resources::resource_list("", v),
        ["apis", "apps", v] => resources::resource_list("apps", v),
        ["openapi", "v3"] => Some(resources::openapi_root()),
        ["openapi", "v3", "api", v] => resources::openapi_group_version("", v),
        ["openapi", "v3", "apis", g, v] => resources::openapi_group_version(g, v),
        _ => return None,
    })
}

/// `dryRun`, `fieldManager`, `force` and the other query parameters.
struct Query(BTreeMap<String, String>);

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
}

fn metadata_only(req: &Request) -> bool {
    req.header("accept")
        .unwrap_or("")
        .split(',')
        .next()
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// The manager of a non-apply write: `fieldManager`, else the User-Agent's product.
fn updater(req: &Request, q: &Query) -> String {
    q.get("fieldManager").map_or_else(
        || {
            req.header("user-agent")
                .unwrap_or("unknown")
                .split('/')
                .next()
                .unwrap_or("unknown")
                .to_owned()
        },
        str::to_owned,
    )
}

impl Api {
    fn user(&self, req: &Request) -> Option<User> {
        let state = lock(&self.state);
        if let Some(token) = req.header("authorization").and_then(|a| a.strip_prefix("Bearer ")) {
            return state.tokens.get(token.trim()).cloned();
        }
        req.peer_certificate
            .as_ref()
            .and_then(|der| state.certs.get(der.as_slice()).cloned())
    }

    fn route(&self, req: &Request, user: &User, q: &Query) -> Result<(u16, Value), Failure> {
        let segs = req.segments();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        if let Some(doc) = discovery(req, &segs) {
            return doc.map(|d| (200, d)).ok_or_else(status::no_route);
        }
        let (group, version, rest) = match segs.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return Err(status::no_route()),
        };
        let t = target(group, version, rest).ok_or_else(status::no_route)?;
        let (res, ns, name) = match &t {
            Target::Collection { res, ns } => (*res, ns.clone(), None),
            Target::Object { res, ns, name, .. } => {
                (*res, Some(ns.clone()).filter(|n| !n.is_empty()), Some(name.clone()))
            }
        };
        let verb = match (req.method.as_str(), &t) {
            ("GET", Target::Collection { .. }) => "list",
            ("GET", _) => "get",
            ("PATCH", _) => "patch",
            ("PUT", _) => "update",
            ("POST", _) => "create",
            ("DELETE", _) => "delete",
            _ => "unknown",
        };
        if user.read_only && !matches!(verb, "get" | "list") {
            return Err(status::forbidden(&user.name, verb, res, name.as_deref(), ns.as_deref()));
        }
        if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
            return Err(status::bad_request("the stand-in does not serve watches"));
        }
        match (req.method.as_str(), t) {
            ("GET", Target::Collection { res, ns }) => self.list(req, res, ns.as_deref(), q),
            ("GET", Target::Object { res, ns, name, .. }) => {
                let state = lock(&self.state);
                let s = state
                    .get(res, &ns, &name)
                    .ok_or_else(|| status::not_found(res, &name))?;
                let full = State::render(&s.value, &s.entries);
                Ok((200, if metadata_only(req) { partial(&full) } else { full }))
            }
            ("PATCH", Target::Object { res, ns, name, sub }) => self.patch(req, q, res, &ns, &name, sub.as_deref()),
            (
                "PUT",
                Target::Object {
                    res,
                    ns,
                    name,
                    sub: None,
                },
            ) => {
                let body = decode(req)?;
                let w = self.write(req, q, res, &ns, &name)?;
                lock(&self.state).update(&w, body, false)
            }
            ("POST", Target::Collection { res, ns }) => {
                let body = decode(req)?;
                let name = body["metadata"]["name"].as_str().unwrap_or("").to_owned();
                let ns = ns.unwrap_or_default();
                let w = self.write(req, q, res, &ns, &name)?;
                lock(&self.state).update(&w, body, true)
            }
            (
                "DELETE",
                Target::Object {
                    res,
                    ns,
                    name,
                    sub: None,
                },
            ) => {
                let w = self.write(req, q, res, &ns, &name)?;
                lock(&self.state).delete(&w).map(|v| (200, v))
            }
            _ => Err(status::failure(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                Some(json!({})),
            )),
        }
    }

    fn write<'a>(
        &self,
        req: &Request,
        q: &'a Query,
        res: &'static Resource,
        ns: &'a str,
        name: &'a str,
    ) -> Result<Write<'a>, Failure> {
        let dry_run = match q.get("dryRun") {
            None => false,
            Some("All") => true,
            Some(other) => {
                return Err(status::invalid_options(
                    "PatchOptions",
                    "dryRun",
                    "FieldValueNotSupported",
                    &format!("Unsupported value: {other:?}: supported values: \"All\""),
                ))
            }
        };
        let _ = req;
        Ok(Write {
            res,
            ns,
            name,
            manager: q.get("fieldManager").unwrap_or(""),
            dry_run,
        })
    }

    fn list(
        &self,
        req: &Request,
        res: &'static Resource,
        ns: Option<&str>,
        q: &Query,
    ) -> Result<(u16, Value), Failure> {
        let state = lock(&self.state);
        let labels = q.get("labelSelector").unwrap_or("");
        let fields = q.get("fieldSelector").unwrap_or("");
        let mut items = Vec::new();
        for s in state.list(res, ns) {
            let ok = query::labels_match(labels, s.value["metadata"]["labels"].as_object())
                .and_then(|l| Ok(l && query::fields_match(fields, &s.value)?))
                .map_err(|e| status::bad_request(&e))?;
            if ok {
                let mut item = State::render(&s.value, &s.entries);
                if let Some(o) = item.as_object_mut() {
                    o.shift_remove("apiVersion");
                    o.shift_remove("kind");
                }
                items.push(if metadata_only(req) { partial(&item) } else { item });
            }
        }
        let (kind, api_version) = if metadata_only(req) {
            ("PartialObjectMetadataList".to_owned(), "meta.k8s.io/v1".to_owned())
        } else {
            (format!("{}List", res.kind), res.api_version())
        };
        Ok((
            200,
            json!({"kind": kind, "apiVersion": api_version,
                   "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
        ))
    }

    fn patch(
        &self,
        req: &Request,
        q: &Query,
        res: &'static Resource,
        ns: &str,
        name: &str,
        sub: Option<&str>,
    ) -> Result<(u16, Value), Failure> {
        let ct = req.content_type();
        if !PATCH_TYPES.contains(&ct.as_str()) {
            return Err(status::unsupported_media_type(&ct, PATCH_TYPES));
        }
        let apply = ct == "application/apply-patch+yaml";
        let force = match q.get("force") {
            None => false,
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(status::bad_request(&format!(
                    "invalid boolean value for force: {other:?}"
                )))
            }
        };
        if !apply && q.get("force").is_some() {
            return Err(status::invalid_options(
                "PatchOptions",
                "force",
                "FieldValueForbidden",
                "Forbidden: may not be specified for non-apply patch",
            ));
        }
        if apply && q.get("fieldManager").is_none_or(str::is_empty) {
            return Err(status::invalid_options(
                "PatchOptions",
                "fieldManager",
                "FieldValueRequired",
                "Required value: is required for apply patch",
            ));
        }
        if ct == "application/json-patch+json" {
            return Err(status::unsupported_media_type(&ct, &PATCH_TYPES[1..]));
        }
        let body = decode(req)?;
        let mut w = self.write(req, q, res, ns, name)?;
        let manager = updater(req, q);
        let mut state = lock(&self.state);
        if apply {
            if sub.is_some() {
                return Err(status::bad_request("the stand-in applies to the main resource only"));
            }
            return state.apply(&w, body, force);
        }
        w.manager = &manager;
        let live = state.get(res, ns, name).ok_or_else(|| status::not_found(res, name))?;
        let strategic = (ct == "application/strategic-merge-patch+json").then_some(res.ty);
        let mut patched = super::store::merge_patch(&live.value, &body, strategic);
        if sub == Some("status") {
            let mut new = live.value.clone();
            new["status"] = patched["status"].take();
            patched = new;
            return status_update(&mut state, &w, patched);
        }
        state.update(&w, patched, false)
    }
}

/// A write through `/status`: only the status changes; no generation bump.
fn status_update(state: &mut State, w: &Write<'_>, new: Value) -> Result<(u16, Value), Failure> {
    let live = state
        .get(w.res, w.ns, w.name)
        .cloned()
        .ok_or_else(|| status::not_found(w.res, w.name))?;
    let outcome = super::ssa::update(
        Some((&live.value, &live.entries)),
        new,
        w.res.ty,
        w.manager,
        &w.res.api_version(),
        Some("status"),
        &super::store::now_text(),
    )
    .map_err(|e| status::bad_request(&e))?;
    if !outcome.changed || w.dry_run {
        return Ok((200, State::render(&outcome.object, &outcome.entries)));
    }
    state.rv += 1;
    let mut obj = outcome.object;
    obj["metadata"]["resourceVersion"] = json!(state.rv.to_string());
    let rendered = State::render(&obj, &outcome.entries);
    let key = (w.res.qualified(), w.ns.to_owned(), w.name.to_owned());
    if let Some(s) = state.objects.get_mut(&key) {
        s.value = obj;
        s.entries = outcome.entries;
        s.settled = None;
        s.next_check = None;
    }
    Ok((200, rendered))
}

/// The request body as JSON (YAML is accepted; JSON is YAML).
fn decode(req: &Request) -> Result<Value, Failure> {
    let text = std::str::from_utf8(&req.body).map_err(|_| status::bad_request("the request body is not UTF-8"))?;
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    serde_saphyr::from_str::<Value>(text).map_err(|e| {
        let first = e.to_string();
        status::bad_request(&format!("error decoding YAML: {}", first.lines().next().unwrap_or("")))
    })
}

impl Handler for Api {
    fn handle(&self, req: &Request) -> Reply {
        let segs = req.segments();
        let public: Option<Reply> = match segs.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["version"] => Some(reply(
                200,
                &json!({"major": "1", "minor": "32", "gitVersion": "v1.32.4-flowrun-stand-in",
                        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23", "compiler": "gc",
                        "platform": "linux/amd64"}),
            )),
            ["healthz" | "livez" | "readyz"] => Some(Reply {
                status: 200,
                reason: None,
                headers: vec![("content-type".into(), "text/plain".into())],
                body: b"ok".to_vec(),
            }),
            _ => None,
        };
        let user = self.user(req);
        let q = Query(parse_form(req.query.as_bytes()).into_iter().collect());
        let (code, out) = match (public, &user) {
            (Some(r), _) => (r.status, Ok(r)),
            (None, None) => (401, Err(status::unauthorized())),
            (None, Some(u)) => {
                controller::tick(&mut lock(&self.state));
                match self.route(req, u, &q) {
                    Ok((c, v)) => (c, Ok(reply(c, &v))),
                    Err(f) => (f.code, Err(f)),
                }
            }
        };
        let entry = KubeRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            dry_run: q.get("dryRun") == Some("All"),
            metadata_only: metadata_only(req),
            user: user.map(|u| u.name),
            status: code,
        };
        let mut state = lock(&self.state);
        if state.log.len() < 1_000_000 {
            state.log.push(entry);
        }
        drop(state);
        out.unwrap_or_else(fail)
    }

    fn auth_present(&self, req: &Request) -> bool {
        req.headers.contains_key("authorization") || req.peer_certificate.is_some()
    }

    fn unavailable(&self) -> Reply {
        fail(status::failure(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            None,
        ))
    }
}
