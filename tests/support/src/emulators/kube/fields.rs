//! Field paths and field sets as the real server's structured merge keeps
//! them: the set of fields a manager owns (rendered as `fieldsV1`), the
//! merge of an applied configuration into a live object (maps field by
//! field, keyed lists item by item, atomic values whole), and the removal of
//! fields a manager stopped sending. Errors read like the server's
//! "failed to create typed patch object" causes.

use super::schema::{self, Ty};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pe {
    /// A field of a struct or a key of a map.
    F(String),
    /// An item of a keyed list: its key fields as sorted JSON.
    K(String),
    /// An item of a set: its value as JSON.
    V(String),
}

pub type Path = Vec<Pe>;
pub type FieldSet = BTreeSet<Path>;

/// The path as the server prints it in conflicts: `.spec.template.spec.containers[name="runner"].image`.
pub fn path_text(path: &[Pe]) -> String {
    let mut out = String::new();
    for pe in path {
        match pe {
            Pe::F(f) => {
                out.push('.');
                out.push_str(f);
            }
            Pe::K(k) => {
                let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Pe::V(v) => out.push_str(&format!("[={v}]")),
        }
    }
    out
}

/// The type of field `k` of a value of type `ty`.
pub fn child_ty(ty: Ty, k: &str) -> Ty {
    match ty {
        Ty::Struct(n) => schema::field(n, k).unwrap_or(Ty::Atomic),
        Ty::StrMap => Ty::Scalar,
        Ty::QuantityMap => Ty::Quantity,
        _ => Ty::Atomic,
    }
}

fn item_ty(ty: Ty) -> Ty {
    match ty {
        Ty::Assoc(_, "Open") => Ty::Open,
        Ty::Assoc(_, item) => Ty::Struct(item),
        _ => Ty::Atomic,
    }
}

/// The key of a keyed-list item, as sorted JSON; key fields with a server
/// default (`protocol: TCP`) take it when absent, as the server does.
pub fn item_key(item: &Value, keys: &[&str]) -> Option<String> {
    let obj = item.as_object()?;
    let mut out = BTreeMap::new();
    for k in keys {
        match obj.get(*k).filter(|v| !v.is_null()) {
            Some(v) => {
                out.insert((*k).to_owned(), v.clone());
            }
            None if *k == "protocol" => {
                out.insert((*k).to_owned(), Value::String("TCP".into()));
            }
            None => return None,
        }
    }
    Some(serde_json::to_string(&out).unwrap_or_default())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "numeric",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Top-level fields no manager owns: identity, server-set metadata, status.
const UNOWNED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "managedFields",
    "selfLink",
];

/// The fields `v` sets, typed by `ty` (the object's top-level struct).
/// `status` is left out: a reset field on the main resource.
pub fn field_set(v: &Value, ty: Ty) -> Result<FieldSet, String> {
    let mut out = FieldSet::new();
    let Value::Object(m) = v else {
        return Err(format!("expected map, got {}", kind(v)));
    };
    let mut path = Path::new();
    for (k, c) in m {
        if c.is_null() || matches!(k.as_str(), "apiVersion" | "kind" | "status") {
            continue;
        }
        if k == "metadata" {
            let Value::Object(meta) = c else {
                return Err(format!(".metadata: expected map, got {}", kind(c)));
            };
            path.push(Pe::F("metadata".into()));
            for (mk, mv) in meta {
                if mv.is_null() || UNOWNED_META.contains(&mk.as_str()) {
                    continue;
                }
                let mty = schema::field("ObjectMeta", mk)
                    .ok_or_else(|| format!(".metadata.{mk}: field not declared in schema"))?;
                child(mk, mv, mty, &mut path, &mut out)?;
            }
            path.pop();
            continue;
        }
        let cty = declared(ty, k, &path)?;
        child(k, c, cty, &mut path, &mut out)?;
    }
    Ok(out)
}

/// The status part of an object, as the controller owns it through `/status`
/// (with the revision annotation it sets on Deployments).
pub fn status_field_set(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let revision = "deployment.kubernetes.io/revision";
    if v["metadata"]["annotations"].get(revision).is_some() {
        let annotations = vec![Pe::F("metadata".into()), Pe::F("annotations".into())];
        out.insert(annotations.clone());
        let mut p = annotations;
        p.push(Pe::F(revision.into()));
        out.insert(p);
    }
    if let Some(Value::Object(status)) = v.get("status") {
        for (k, c) in status {
            let mut path = vec![Pe::F("status".into()), Pe::F(k.clone())];
            if k == "conditions" {
                for item in c.as_array().into_iter().flatten() {
                    if let Some(key) = item_key(item, &["type"]) {
                        path.push(Pe::K(key));
                        out.insert(path.clone());
                        for f in item.as_object().into_iter().flat_map(|m| m.keys()) {
                            path.push(Pe::F(f.clone()));
                            out.insert(path.clone());
                            path.pop();
                        }
                        path.pop();
                    }
                }
            } else {
                out.insert(path);
            }
        }
    }
    out
}

fn declared(ty: Ty, k: &str, path: &Path) -> Result<Ty, String> {
    match ty {
        Ty::Struct(n) => schema::field(n, k).ok_or_else(|| {
            let mut p = path.clone();
            p.push(Pe::F(k.to_owned()));
            format!("{}: field not declared in schema", path_text(&p))
        }),
        other => Ok(child_ty(other, k)),
    }
}

fn child(k: &str, c: &Value, cty: Ty, path: &mut Path, out: &mut FieldSet) -> Result<(), String> {
    path.push(Pe::F(k.to_owned()));
    let r = member(c, cty, path, out);
    path.pop();
    r
}

/// Add `v` (at `path`, of type `ty`) and what it contains.
fn member(v: &Value, ty: Ty, path: &mut Path, out: &mut FieldSet) -> Result<(), String> {
    if matches!(ty, Ty::Scalar | Ty::Quantity) && (v.is_object() || v.is_array()) {
        return Err(format!(
            "{}: expected scalar (string, numeric or bool), got {}",
            path_text(path),
            kind(v)
        ));
    }
    if schema::is_atomic(ty) || is_empty_container(v) {
        out.insert(path.clone());
        return Ok(());
    }
    if schema::is_granular_map(ty) {
        out.insert(path.clone());
    }
    walk(v, ty, path, out)
}

fn walk(v: &Value, ty: Ty, path: &mut Path, out: &mut FieldSet) -> Result<(), String> {
    match ty {
        Ty::Struct(_) | Ty::Open | Ty::StrMap | Ty::QuantityMap => {
            let Value::Object(m) = v else {
                return Err(format!("{}: expected map, got {}", path_text(path), kind(v)));
            };
            for (k, c) in m {
                if c.is_null() {
                    continue;
                }
                let cty = declared(ty, k, path)?;
                child(k, c, cty, path, out)?;
            }
            Ok(())
        }
        Ty::Assoc(keys, _) => {
            let Value::Array(items) = v else {
                return Err(format!("{}: expected list, got {}", path_text(path), kind(v)));
            };
            let mut seen = BTreeSet::new();
            for item in items {
                let key = item_key(item, keys).ok_or_else(|| {
                    format!(
                        "{}: associative list with keys has an element that omits key field {}",
                        path_text(path),
                        keys.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", ")
                    )
                })?;
                if !seen.insert(key.clone()) {
                    return Err(format!(
                        "{}: duplicate entries for key {}",
                        path_text(path),
                        path_text(&[Pe::K(key)])
                    ));
                }
                path.push(Pe::K(key));
                out.insert(path.clone());
                walk(item, item_ty(ty), path, out)?;
                path.pop();
            }
            Ok(())
        }
        Ty::Set => {
            let Value::Array(items) = v else {
                return Err(format!("{}: expected list, got {}", path_text(path), kind(v)));
            };
            let mut seen = BTreeSet::new();
            for item in items {
                let j = item.to_string();
                if !seen.insert(j.clone()) {
                    return Err(format!("{}: duplicate entries for key [={j}]", path_text(path)));
                }
                path.push(Pe::V(j));
                out.insert(path.clone());
                path.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `cfg` merged into `live`: maps field by field, keyed lists by key, sets by
/// value, everything else replaced.
pub fn merge(live: &Value, cfg: &Value, ty: Ty) -> Value {
    match (ty, live, cfg) {
        (Ty::Struct(_) | Ty::Open | Ty::StrMap | Ty::QuantityMap, Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    continue;
                }
                let cty = if k == "metadata" && matches!(ty, Ty::Struct(_)) {
                    Ty::Struct("ObjectMeta")
                } else {
                    child_ty(ty, k)
                };
                let nv = match l.get(k) {
                    Some(lv) => merge(lv, cv, cty),
                    None => strip_nulls(cv),
                };
                out.insert(k.clone(), nv);
            }
            Value::Object(out)
        }
        (Ty::Assoc(keys, _), Value::Array(l), Value::Array(c)) => {
            let mut out = l.clone();
            for ci in c {
                let key = item_key(ci, keys);
                match out.iter().position(|li| item_key(li, keys) == key) {
                    Some(i) => out[i] = merge(&out[i], ci, item_ty(ty)),
                    None => out.push(strip_nulls(ci)),
                }
            }
            Value::Array(out)
        }
        (Ty::Set, Value::Array(l), Value::Array(c)) => {
            let mut out = l.clone();
            for ci in c {
                if !out.contains(ci) {
                    out.push(ci.clone());
                }
            }
            Value::Array(out)
        }
        _ => strip_nulls(cfg),
    }
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

fn top_child_ty(ty: Ty, k: &str) -> Ty {
    if k == "metadata" {
        Ty::Struct("ObjectMeta")
    } else {
        child_ty(ty, k)
    }
}

/// The value at `path`, if present.
pub fn value_at<'a>(v: &'a Value, path: &[Pe], ty: Ty) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(v);
    };
    match first {
        Pe::F(k) => value_at(v.as_object()?.get(k)?, rest, top_child_ty(ty, k)),
        Pe::K(key) => {
            let Ty::Assoc(keys, _) = ty else { return None };
            let item = v
                .as_array()?
                .iter()
                .find(|i| item_key(i, keys).as_deref() == Some(key))?;
            value_at(item, rest, item_ty(ty))
        }
        Pe::V(j) => v.as_array()?.iter().find(|i| i.to_string() == *j),
    }
}

/// Remove the value at `path` (a field, a keyed-list item, a set item).
pub fn remove(v: &mut Value, path: &[Pe], ty: Ty) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match first {
        Pe::F(k) => {
            if let Value::Object(m) = v {
                if rest.is_empty() {
                    m.shift_remove(k);
                } else if let Some(c) = m.get_mut(k) {
                    remove(c, rest, top_child_ty(ty, k));
                }
            }
        }
        Pe::K(key) => {
            if let (Value::Array(a), Ty::Assoc(keys, _)) = (v, ty) {
                if let Some(i) = a.iter().position(|i| item_key(i, keys).as_deref() == Some(key)) {
                    if rest.is_empty() {
                        a.remove(i);
                    } else {
                        remove(&mut a[i], rest, item_ty(ty));
                    }
                }
            }
        }
        Pe::V(j) => {
            if let Value::Array(a) = v {
                a.retain(|i| serde_json::to_string(i).ok().as_deref() != Some(j.as_str()));
            }
        }
    }
}

/// A field set as the `fieldsV1` trie of `managedFields`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<String, Node>,
    }
    fn render(n: &Node) -> Value {
        let mut m = Map::new();
        if n.member && !n.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, c) in &n.children {
            m.insert(k.clone(), render(c));
        }
        Value::Object(m)
    }
    let mut root = Node::default();
    for path in set {
        let mut node = &mut root;
        for pe in path {
            let token = match pe {
                Pe::F(f) => format!("f:{f}"),
                Pe::K(k) => format!("k:{k}"),
                Pe::V(v) => format!("v:{v}"),
            };
            node = node.children.entry(token).or_default();
        }
        node.member = true;
    }
    render(&root)
}

/// Whether `path` is `prefix` or lies under it.
pub fn under(path: &[Pe], prefix: &[Pe]) -> bool {
    path.len() >= prefix.len() && path[..prefix.len()] == *prefix
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "d", "labels": {"app": "d"}},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                        "template": {"spec": {"containers": [{"name": "c", "image": "i:1",
                            "ports": [{"containerPort": 80}]}]}}}})
    }

    #[test]
    fn field_sets_render_like_the_server() {
        let set = field_set(&deployment(), Ty::Struct("Deployment")).unwrap();
        let v1 = to_fields_v1(&set);
        assert_eq!(v1["f:metadata"]["f:labels"], json!({".": {}, "f:app": {}}));
        assert_eq!(v1["f:spec"]["f:selector"], json!({}));
        let c = &v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"];
        assert_eq!(c["."], json!({}));
        assert!(c["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"].is_object());
    }

    #[test]
    fn typed_errors_name_the_path() {
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = json!("Always");
        let e = field_set(&d, Ty::Struct("Deployment")).unwrap_err();
        assert_eq!(
            e,
            ".spec.template.spec.containers[name=\"c\"].imagePullPolcy: field not declared in schema"
        );
        let mut d = deployment();
        d["spec"]["template"]["spec"]["volumes"] = json!([{"name": "x"}, {"name": "x"}]);
        let e = field_set(&d, Ty::Struct("Deployment")).unwrap_err();
        assert_eq!(e, ".spec.template.spec.volumes: duplicate entries for key [name=\"x\"]");
    }

    #[test]
    fn merge_and_remove_by_key() {
        let live = deployment();
        let cfg = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i:2"}, {"name": "s", "image": "j"}]}}}});
        let mut m = merge(&live, &cfg, Ty::Struct("Deployment"));
        let cs = &m["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["image"], "i:2");
        assert_eq!(cs[0]["ports"][0]["containerPort"], 80);
        assert_eq!(cs[1]["name"], "s");
        let path = vec![
            Pe::F("spec".into()),
            Pe::F("template".into()),
            Pe::F("spec".into()),
            Pe::F("containers".into()),
            Pe::K("{\"name\":\"s\"}".into()),
        ];
        assert_eq!(value_at(&m, &path, Ty::Struct("Deployment")).unwrap()["image"], "j");
        remove(&mut m, &path, Ty::Struct("Deployment"));
        assert_eq!(m["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(path_text(&path), ".spec.template.spec.containers[name=\"s\"]");
    }
}
