//! The stand-in's storage and write paths, shared by the HTTP API and the
//! test handle so both behave alike: apply (server-side, with ownership and
//! conflicts), updates (merge patches, creates, replaces), deletes; each
//! write defaulted, validated, given its generation (Deployments: bumped on
//! spec or annotation changes only) and a new resourceVersion — unless it
//! changes nothing, or is a dry run, in which case nothing is stored.

use super::defaults;
use super::resources::Resource;
use super::ssa::{self, ApplyError, ApplyReq, Entry};
use super::status::{self, Failure};
use super::validate;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// An object as stored: its value (without `managedFields`) and its owners.
#[derive(Debug, Clone)]
pub struct Stored {
    pub value: Value,
    pub entries: Vec<Entry>,
    /// When the spec last changed (the controller's clock for rollouts).
    pub spec_changed: Instant,
    /// The controller's revision count and the template it last saw.
    pub revision: u64,
    pub template: Value,
    /// The controller has nothing more to do (for this never-available setting) until the next write.
    pub settled: Option<bool>,
    /// Before this, the controller has nothing to report (the next step of a rollout is later).
    pub next_check: Option<Instant>,
}

/// (resource, namespace, name); the namespace is empty for cluster-scoped objects.
pub type Key = (String, String, String);

/// Who sent a request, once authenticated.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub read_only: bool,
}

/// One request as the stand-in saw it (never header values or bodies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `Accept: ...;as=PartialObjectMetadata` (or a list of them).
    pub metadata_only: bool,
    pub user: Option<String>,
    pub status: u16,
}

impl KubeRequest {
    /// A request that would change stored state (a write that is not a dry run).
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD") && !self.dry_run
    }
}

pub struct State {
    pub objects: BTreeMap<Key, Stored>,
    pub rv: u64,
    pub tokens: BTreeMap<String, User>,
    pub certs: BTreeMap<Vec<u8>, User>,
    pub log: Vec<KubeRequest>,
    /// Deployments (by name, or `*`) whose pods never become available.
    pub never_available: BTreeSet<String>,
    /// How long a rollout takes once the controller observed it.
    pub rollout: Duration,
}

/// The target of one write.
pub struct Write<'a> {
    pub res: &'static Resource,
    pub ns: &'a str,
    pub name: &'a str,
    pub manager: &'a str,
    pub dry_run: bool,
}

impl Write<'_> {
    fn key(&self) -> Key {
        (self.res.qualified(), self.ns.to_owned(), self.name.to_owned())
    }
}

pub fn now_text() -> String {
    super::super::rfc3339(super::super::now_secs())
}

impl State {
    pub fn new(rollout: Duration) -> Self {
        Self {
            objects: BTreeMap::new(),
            rv: 100,
            tokens: BTreeMap::new(),
            certs: BTreeMap::new(),
            log: Vec::new(),
            never_available: BTreeSet::new(),
            rollout,
        }
    }

    /// The object as the API returns it (with `managedFields`).
    pub fn render(value: &Value, entries: &[Entry]) -> Value {
        let mut v = value.clone();
        if !entries.is_empty() {
            let mf: Vec<Value> = entries.iter().map(Entry::to_json).collect();
            v["metadata"]["managedFields"] = Value::Array(mf);
        }
        v
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .contains_key(&("namespaces".to_owned(), String::new(), ns.to_owned()))
    }

    pub fn get(&self, res: &Resource, ns: &str, name: &str) -> Option<&Stored> {
        self.objects.get(&(res.qualified(), ns.to_owned(), name.to_owned()))
    }

    /// Objects of `res` in `ns` (all namespaces when `None`), by name.
    pub fn list(&self, res: &Resource, ns: Option<&str>) -> Vec<&Stored> {
        let q = res.qualified();
        self.objects
            .iter()
            .filter(|((r, n, _), _)| *r == q && ns.is_none_or(|ns| ns == n))
            .map(|(_, s)| s)
            .collect()
    }

    fn check_target(&self, w: &Write<'_>, body: &mut Value) -> Result<(), Failure> {
        let Some(obj) = body.as_object_mut() else {
            return Err(status::bad_request("the body of the request is not an object"));
        };
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        if api_version != w.res.api_version() || kind != w.res.kind {
            return Err(status::bad_request(&format!(
                "the API version in the data ({api_version}) does not match the expected API version ({}) or the kind ({kind}) does not match {}",
                w.res.api_version(),
                w.res.kind
            )));
        }
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| status::bad_request("metadata: expected an object"))?;
        let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
        if name != w.name {
            return Err(status::bad_request(&format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                w.name
            )));
        }
        if w.res.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                None | Some("") => {
                    meta.insert("namespace".into(), json!(w.ns));
                }
                Some(n) if n != w.ns => {
                    return Err(status::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                Some(_) => {}
            }
            if !self.namespace_exists(w.ns) {
                return Err(status::namespace_not_found(w.ns));
            }
        }
        Ok(())
    }

    /// Server-side apply of `cfg` (the request body) by `w.manager`.
    pub fn apply(&mut self, w: &Write<'_>, mut cfg: Value, force: bool) -> Result<(u16, Value), Failure> {
        self.check_target(w, &mut cfg)?;
        if !cfg["metadata"]["managedFields"].is_null() {
            return Err(status::bad_request("metadata.managedFields must be nil"));
        }
        if w.res.status {
            cfg.as_object_mut().map(|o| o.remove("status"));
        }
        let live = self.objects.get(&w.key()).cloned();
        if let (Some(rv), Some(l)) = (cfg["metadata"]["resourceVersion"].as_str(), &live) {
            if l.value["metadata"]["resourceVersion"].as_str() != Some(rv) {
                return Err(modified(w));
            }
        }
        let now = now_text();
        let api_version = w.res.api_version();
        let req = ApplyReq {
            cfg: &cfg,
            ty: w.res.ty,
            manager: w.manager,
            api_version: &api_version,
            force,
            now: &now,
        };
        let kind = w.res.kind;
        let outcome = ssa::apply(live.as_ref().map(|l| (&l.value, &l.entries[..])), &req, &|v| {
            defaults::apply(kind, v)
        })
        .map_err(|e| match e {
            ApplyError::Conflicts(c) => status::conflicts(&c),
            ApplyError::Typed(t) => status::typed_patch(w.ns, w.name, w.res, &t),
            ApplyError::BadRequest(m) => status::bad_request(&m),
        })?;
        if !outcome.changed {
            let l = live
                .as_ref()
                .map_or(Value::Null, |l| Self::render(&l.value, &l.entries));
            return Ok((200, l));
        }
        self.commit(w, live, outcome.object, outcome.entries)
    }

    /// A non-apply write of the whole object `new` (merge patch, create, replace).
    pub fn update(&mut self, w: &Write<'_>, mut new: Value, create: bool) -> Result<(u16, Value), Failure> {
        self.check_target(w, &mut new)?;
        let live = self.objects.get(&w.key()).cloned();
        match (&live, create) {
            (Some(_), true) => return Err(status::already_exists(w.res, w.name)),
            (None, false) => return Err(status::not_found(w.res, w.name)),
            _ => {}
        }
        if let (Some(rv), Some(l)) = (new["metadata"]["resourceVersion"].as_str(), &live) {
            if l.value["metadata"]["resourceVersion"].as_str() != Some(rv) {
                return Err(modified(w));
            }
        }
        if let Some(meta) = new["metadata"].as_object_mut() {
            meta.remove("managedFields");
        }
        defaults::apply(w.res.kind, &mut new).map_err(|m| status::bad_request(&m))?;
        if w.res.status {
            match live
                .as_ref()
                .map(|l| l.value["status"].clone())
                .filter(|s| !s.is_null())
            {
                Some(s) => new["status"] = s,
                None => {
                    new.as_object_mut().map(|o| o.remove("status"));
                }
            }
        }
        let outcome = ssa::update(
            live.as_ref().map(|l| (&l.value, &l.entries[..])),
            new,
            w.res.ty,
            w.manager,
            &w.res.api_version(),
            None,
            &now_text(),
        )
        .map_err(|e| status::bad_request(&format!("strict decoding error: {e}")))?;
        if !outcome.changed {
            let l = live
                .as_ref()
                .map_or(Value::Null, |l| Self::render(&l.value, &l.entries));
            return Ok((200, l));
        }
        self.commit(w, live, outcome.object, outcome.entries)
    }

    /// Server-set metadata, validation, generation, resourceVersion, storage.
    fn commit(
        &mut self,
        w: &Write<'_>,
        live: Option<Stored>,
        mut obj: Value,
        entries: Vec<Entry>,
    ) -> Result<(u16, Value), Failure> {
        let old = live.as_ref().map(|l| &l.value);
        server_set(w, old, &mut obj)?;
        let causes = validate::validate(w.res.kind, &obj, old);
        if !causes.is_empty() {
            return Err(status::invalid(w.res.kind, w.res.group, w.name, &causes));
        }
        let mut spec_changed = false;
        if w.res.kind == "Deployment" {
            let generation = match old {
                None => 1,
                Some(o) => {
                    let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                    let changed =
                        o["spec"] != obj["spec"] || o["metadata"]["annotations"] != obj["metadata"]["annotations"];
                    spec_changed = changed;
                    if changed {
                        g + 1
                    } else {
                        g
                    }
                }
            };
            obj["metadata"]["generation"] = json!(generation);
        }
        let code = if live.is_some() { 200 } else { 201 };
        if w.dry_run {
            return Ok((code, Self::render(&obj, &entries)));
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let rendered = Self::render(&obj, &entries);
        let stored = match live {
            Some(l) => Stored {
                value: obj,
                entries,
                spec_changed: if spec_changed { Instant::now() } else { l.spec_changed },
                revision: l.revision,
                template: l.template,
                settled: None,
                next_check: None,
            },
            None => Stored {
                value: obj,
                entries,
                spec_changed: Instant::now(),
                revision: 0,
                template: Value::Null,
                settled: None,
                next_check: None,
            },
        };
        self.objects.insert(w.key(), stored);
        Ok((code, rendered))
    }

    pub fn delete(&mut self, w: &Write<'_>) -> Result<Value, Failure> {
        let Some(live) = self.objects.get(&w.key()) else {
            return Err(status::not_found(w.res, w.name));
        };
        let uid = live.value["metadata"]["uid"].clone();
        if !w.dry_run {
            self.objects.remove(&w.key());
            self.rv += 1;
            if w.res.kind == "Namespace" {
                self.objects.retain(|(_, ns, _), _| ns != w.name);
            }
        }
        Ok(status::success(w.res, w.name, &uid))
    }
}

/// Name, namespace and the fields only the server sets (kept from the stored object, or new), and status (a reset field).
fn server_set(w: &Write<'_>, old: Option<&Value>, obj: &mut Value) -> Result<(), Failure> {
    {
        let meta = obj["metadata"]
            .as_object_mut()
            .ok_or_else(|| status::bad_request("metadata: expected an object"))?;
        meta.insert("name".into(), json!(w.name));
        if w.res.namespaced {
            meta.insert("namespace".into(), json!(w.ns));
        }
        for k in ["uid", "creationTimestamp", "resourceVersion", "generation"] {
            match old.map(|o| &o["metadata"][k]).filter(|v| !v.is_null()) {
                Some(v) => {
                    meta.insert(k.into(), v.clone());
                }
                None => {
                    meta.remove(k);
                }
            }
        }
        if old.is_none() {
            meta.insert("uid".into(), json!(super::super::random_uuid()));
            meta.insert("creationTimestamp".into(), json!(now_text()));
        }
    }
    if w.res.status {
        match old.map(|o| o["status"].clone()).filter(|s| !s.is_null()) {
            Some(s) => obj["status"] = s,
            None => {
                obj.as_object_mut().map(|o| o.remove("status"));
            }
        }
    }
    Ok(())
}

fn modified(w: &Write<'_>) -> Failure {
    status::failure(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} {:?}: the object has been modified; please apply your changes to the latest version and try again",
            w.res.qualified(),
            w.name
        ),
        Some(json!({"name": w.name, "group": w.res.group, "kind": w.res.name})),
    )
}

/// RFC 7386 merge patch; with `keys` (strategic merge) keyed lists merge by key.
pub fn merge_patch(target: &Value, patch: &Value, ty: Option<super::schema::Ty>) -> Value {
    use super::fields::{child_ty, item_key};
    use super::schema::Ty;
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            let mut out: Map<String, Value> = t.clone();
            for (k, pv) in p {
                if pv.is_null() {
                    out.shift_remove(k);
                    continue;
                }
                let cty = ty.map(|ty| {
                    if k == "metadata" {
                        Ty::Struct("ObjectMeta")
                    } else {
                        child_ty(ty, k)
                    }
                });
                let nv = match t.get(k) {
                    Some(tv) => merge_patch(tv, pv, cty),
                    None => merge_patch(&Value::Null, pv, cty),
                };
                out.insert(k.clone(), nv);
            }
            Value::Object(out)
        }
        (Value::Array(t), Value::Array(p)) => match ty {
            Some(Ty::Assoc(keys, item)) => {
                let mut out = t.clone();
                for pi in p {
                    let key = item_key(pi, keys);
                    let delete = pi.get("$patch").and_then(Value::as_str) == Some("delete");
                    match out.iter().position(|ti| item_key(ti, keys) == key) {
                        Some(i) if delete => {
                            out.remove(i);
                        }
                        Some(i) => out[i] = merge_patch(&out[i], pi, Some(Ty::Struct(item))),
                        None if delete => {}
                        None => out.push(pi.clone()),
                    }
                }
                Value::Array(out)
            }
            _ => patch.clone(),
        },
        (_, Value::Object(p)) => merge_patch(&Value::Object(Map::new()), &Value::Object(p.clone()), ty),
        _ => patch.clone(),
    }
}
