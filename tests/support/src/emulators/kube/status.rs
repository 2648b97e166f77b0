//! `metav1.Status` error bodies as the real server builds them
//! (`apimachinery/pkg/api/errors`): every failure is a JSON Status with a
//! `reason`, a `code` and, where the server gives them, `details` naming
//! the object and one cause per field.

use super::resources::Resource;
use super::validate::Cause;
use serde_json::{json, Value};

/// An error answer: HTTP status and Status body.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: u16,
    pub body: Value,
}

pub fn failure(code: u16, reason: &str, message: &str, details: Option<Value>) -> Failure {
    let mut body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": message, "reason": reason, "code": code});
    if let Some(d) = details {
        body["details"] = d;
    }
    Failure { code, body }
}

pub fn not_found(res: &Resource, name: &str) -> Failure {
    failure(
        404,
        "NotFound",
        &format!("{} {name:?} not found", res.qualified()),
        Some(json!({"name": name, "group": res.group, "kind": res.name})),
    )
}

pub fn namespace_not_found(ns: &str) -> Failure {
    failure(
        404,
        "NotFound",
        &format!("namespaces {ns:?} not found"),
        Some(json!({"name": ns, "kind": "namespaces"})),
    )
}

pub fn no_route() -> Failure {
    failure(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

pub fn already_exists(res: &Resource, name: &str) -> Failure {
    failure(
        409,
        "AlreadyExists",
        &format!("{} {name:?} already exists", res.qualified()),
        Some(json!({"name": name, "group": res.group, "kind": res.name})),
    )
}

pub fn bad_request(message: &str) -> Failure {
    failure(400, "BadRequest", message, None)
}

pub fn invalid(kind: &str, group: &str, name: &str, causes: &[Cause]) -> Failure {
    let list: Vec<Value> = causes
        .iter()
        .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
        .collect();
    let mut details = json!({"name": name, "group": group, "kind": kind, "causes": list});
    if name.is_empty() {
        details.as_object_mut().map(|d| d.remove("name"));
    }
    failure(
        422,
        "Invalid",
        &super::validate::message(kind, group, name, causes),
        Some(details),
    )
}

/// A 422 against the request's options (`PatchOptions`, `DeleteOptions`).
pub fn invalid_options(kind: &str, field: &str, reason: &'static str, detail: &str) -> Failure {
    invalid(
        kind,
        "meta.k8s.io",
        "",
        &[Cause {
            reason,
            field: field.to_owned(),
            message: detail.to_owned(),
        }],
    )
}

pub fn conflicts(list: &[(String, String)]) -> Failure {
    let causes: Vec<Value> = list
        .iter()
        .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": p}))
        .collect();
    failure(
        409,
        "Conflict",
        &super::ssa::conflict_message(list),
        Some(json!({"causes": causes})),
    )
}

pub fn unsupported_media_type(got: &str, accepted: &[&str]) -> Failure {
    let _ = got;
    failure(
        415,
        "UnsupportedMediaType",
        &format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            accepted.join(", ")
        ),
        None,
    )
}

pub fn unauthorized() -> Failure {
    failure(401, "Unauthorized", "Unauthorized", None)
}

pub fn forbidden(user: &str, verb: &str, res: &Resource, name: Option<&str>, ns: Option<&str>) -> Failure {
    let target = match name {
        Some(n) => format!("{} {n:?}", res.qualified()),
        None => res.qualified(),
    };
    let group = if res.group.is_empty() { "\"\"" } else { res.group };
    let scope = ns.map_or_else(
        || " at the cluster scope".to_owned(),
        |n| format!(" in the namespace {n:?}"),
    );
    failure(
        403,
        "Forbidden",
        &format!(
            "{target} is forbidden: User {user:?} cannot {verb} resource {:?} in API group {group}{scope}",
            res.name
        ),
        Some(json!({"name": name.unwrap_or(""), "group": res.group, "kind": res.name})),
    )
}

/// 500 for an apply the server cannot type (duplicate keys, undeclared fields).
pub fn typed_patch(ns: &str, name: &str, res: &Resource, err: &str) -> Failure {
    let id = if ns.is_empty() {
        name.to_owned()
    } else {
        format!("{ns}/{name}")
    };
    failure(
        500,
        "InternalError",
        &format!(
            "failed to create typed patch object ({id}; {}, Kind={}): {err}",
            res.api_version(),
            res.kind
        ),
        Some(
            json!({"causes": [{"message": format!("failed to create typed patch object ({id}; {}, Kind={}): {err}", res.api_version(), res.kind)}]}),
        ),
    )
}

pub fn success(res: &Resource, name: &str, uid: &Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
           "details": {"name": name, "group": res.group, "kind": res.name, "uid": uid}})
}
