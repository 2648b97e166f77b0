//! The resources the stand-in serves and their discovery documents
//! (`/api`, `/api/v1`, `/apis`, `/apis/apps/v1`), in the legacy discovery
//! shapes (`APIVersions`, `APIGroupList`, `APIResourceList`) that clients
//! fall back to when the server does not offer aggregated discovery.

use super::schema::Ty;
use serde_json::{json, Value};

/// One served resource.
#[derive(Debug, Clone, Copy)]
pub struct Resource {
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// The plural name in URLs (`deployments`).
    pub name: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short: &'static [&'static str],
    pub ty: Ty,
    pub status: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, `configmaps` (as NotFound messages name them).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.name.to_owned()
        } else {
            format!("{}.{}", self.name, self.group)
        }
    }
}

/// (plural, singular, kind) of a resource.
type Names = (&'static str, &'static str, &'static str);

const fn r(
    group: &'static str,
    (name, singular, kind): Names,
    namespaced: bool,
    short: &'static [&'static str],
    ty: Ty,
    status: bool,
) -> Resource {
    Resource {
        group,
        version: "v1",
        name,
        singular,
        kind,
        namespaced,
        short,
        ty,
        status,
    }
}

pub const RESOURCES: &[Resource] = &[
    r(
        "",
        ("namespaces", "namespace", "Namespace"),
        false,
        &["ns"],
        Ty::Struct("WithSpec"),
        true,
    ),
    r(
        "",
        ("configmaps", "configmap", "ConfigMap"),
        true,
        &["cm"],
        Ty::Struct("ConfigMap"),
        false,
    ),
    r(
        "",
        ("secrets", "secret", "Secret"),
        true,
        &[],
        Ty::Struct("Secret"),
        false,
    ),
    r(
        "",
        (
            "persistentvolumeclaims",
            "persistentvolumeclaim",
            "PersistentVolumeClaim",
        ),
        true,
        &["pvc"],
        Ty::Struct("WithSpec"),
        true,
    ),
    r(
        "",
        ("serviceaccounts", "serviceaccount", "ServiceAccount"),
        true,
        &["sa"],
        Ty::Struct("ServiceAccount"),
        false,
    ),
    r(
        "",
        ("services", "service", "Service"),
        true,
        &["svc"],
        Ty::Struct("WithSpec"),
        true,
    ),
    r(
        "apps",
        ("deployments", "deployment", "Deployment"),
        true,
        &["deploy"],
        Ty::Struct("Deployment"),
        true,
    ),
];

/// The resource at `group`/`version` named `name` in URLs.
pub fn by_name(group: &str, version: &str, name: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.name == name)
}

pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

const VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update"];

/// `APIResourceList` for one group version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let rs: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if rs.is_empty() {
        return None;
    }
    let mut items = Vec::new();
    for r in &rs {
        items.push(json!({
            "name": r.name, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": VERBS, "shortNames": r.short,
        }));
        if r.status {
            items.push(
                json!({"name": format!("{}/status", r.name), "singularName": "", "namespaced": r.namespaced,
                              "kind": r.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": items}))
}

/// `APIGroupList` of the named groups.
pub fn group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group("apps")]})
}

pub fn group(name: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `APIVersions` of the core group.
pub fn core_versions(server: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}]})
}

/// `/openapi/v3`: where each group version's document is.
pub fn openapi_root() -> Value {
    let mut paths = serde_json::Map::new();
    for gv in ["api/v1", "apis/apps/v1"] {
        paths.insert(
            gv.into(),
            json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash=0")}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`: the PATCH operations
/// and their query parameters (clients look for `fieldValidation` there to
/// know the server validates fields itself); no schemas.
pub fn openapi_group_version(group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force", "pretty"]
        .iter()
        .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let path = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.name)
        } else {
            format!("{prefix}/{}/{{name}}", r.name)
        };
        paths.insert(
            path,
            json!({"patch": {"operationId": format!("patch{}", r.kind),
                             "x-kubernetes-action": "patch",
                             "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": r.kind},
                             "parameters": params,
                             "responses": {"200": {"description": "OK"}}}}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.4"}, "paths": paths}))
}
