//! The read-only half of `k8s_apply`: resolve each rendered object to the
//! resource serving it, check that what its pods refer to exists (metadata
//! only), read each live object and send the same apply with `dryRun=All`,
//! diff the two; find the Deployments whose rollout is not finished and the
//! objects a prune would delete. Nothing here writes: a dry run persists
//! nothing, and a conflict found by it is reported, then the would-be result
//! is read with `force` (still a dry run) so the preview can show it.

use super::client::{ApiResource, Kube, KubeError};
use super::manifest::Object;
use super::{diff, refs, rollout, summary, K8sApply};
use flowrun_engine::step::{Check, Pending};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

/// How many requests run at once.
pub const PARALLEL: usize = 8;

/// An object resolved to its resource and namespace.
#[derive(Clone)]
pub struct Target {
    pub obj: Object,
    pub res: ApiResource,
    /// The namespace (empty for cluster-scoped objects).
    pub ns: String,
    pub path: String,
}

impl Target {
    pub fn label(&self) -> String {
        if self.ns.is_empty() {
            format!("{}/{}", self.obj.kind, self.obj.name)
        } else {
            format!("{}/{} in `{}`", self.obj.kind, self.obj.name, self.ns)
        }
    }
}

/// What the check found for one object.
pub struct Seen {
    pub target: Target,
    pub live: Option<Value>,
    /// The dry-run answer (present), `None` with `state: absent`.
    pub merged: Option<Value>,
    pub diff: Option<String>,
    /// The conflict a non-forced apply would meet.
    pub conflict: Option<KubeError>,
    /// A Deployment whose rollout the apply must wait for.
    pub rollout_pending: bool,
}

impl Seen {
    pub fn drifted(&self) -> bool {
        self.diff.is_some()
    }
}

/// An object a prune would delete.
#[derive(Clone)]
pub struct Prunable {
    pub res: ApiResource,
    pub kind: String,
    pub ns: String,
    pub name: String,
}

impl Prunable {
    pub fn label(&self) -> String {
        format!("{}/{} in `{}`", self.kind, self.name, self.ns)
    }
}

pub struct Observation {
    pub seen: Vec<Seen>,
    pub prune: Vec<Prunable>,
    pub absent: bool,
}

/// Every rendered object with its resource, path and namespace.
async fn targets(step: &K8sApply, kube: &Kube) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    for obj in &step.objects {
        let res = kube
            .resource(&obj.api_version, &obj.kind)
            .await
            .map_err(|e| format!("{}: {e}", obj.label()))?;
        let mut obj = obj.clone();
        let ns = if res.namespaced {
            let ns = obj.namespace.clone().unwrap_or_else(|| step.default_ns.clone());
            obj.body["metadata"]["namespace"] = json!(ns);
            obj.namespace = Some(ns.clone());
            ns
        } else {
            if let Some(ns) = &obj.namespace {
                return Err(format!(
                    "{}: `{}` is cluster-scoped, but the manifest gives it `metadata.namespace: {ns}`",
                    obj.label(),
                    obj.kind
                ));
            }
            String::new()
        };
        let path = res.object(Some(&ns).filter(|n| !n.is_empty()).map(String::as_str), &obj.name);
        out.push(Target { obj, res, ns, path });
    }
    Ok(out)
}

/// Fail, naming each one, when a referenced object does not exist.
async fn check_references(kube: &Arc<Kube>, targets: &[Target]) -> Result<(), String> {
    let mut wanted = refs::References::new();
    for t in targets {
        refs::collect(
            &t.obj.body,
            &t.ns,
            &format!("{}/{}", t.obj.kind, t.obj.name),
            &mut wanted,
        );
    }
    let rendered: BTreeSet<(String, String, String)> = targets
        .iter()
        .map(|t| (t.obj.kind.clone(), t.ns.clone(), t.obj.name.clone()))
        .collect();
    wanted.retain(|(k, ns, n), _| !rendered.contains(&((*k).to_owned(), ns.clone(), n.clone())));
    let mut lookups = Vec::new();
    for ((kind, ns, name), from) in wanted {
        let res = kube.resource("v1", kind).await?;
        lookups.push((res, kind, ns, name, from));
    }
    let results = super::bounded(lookups, PARALLEL, |(res, kind, ns, name, from)| {
        let kube = kube.clone();
        async move {
            let found = kube.get(&res.object(Some(&ns), &name), true).await;
            (kind, ns, name, from, found)
        }
    })
    .await;
    let mut missing = Vec::new();
    for (kind, ns, name, from, found) in results {
        match found {
            Ok(Some(_)) => {}
            Ok(None) => missing.push(format!(
                "{kind} `{name}` in namespace `{ns}` does not exist (referred to by {})",
                from.join(", ")
            )),
            Err(e) => return Err(kube.explain(&e, &format!("checking that {kind} `{name}` exists"))),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "nothing was applied: {} (flowrun refers to these, it never creates them)",
            missing.join("; ")
        ))
    }
}

/// The live object and the dry-run answer for one target.
async fn look(kube: Arc<Kube>, t: Target, manager: String, force: bool, wait: bool) -> Result<Seen, String> {
    let label = t.label();
    let live = kube
        .get(&t.path, false)
        .await
        .map_err(|e| kube.explain(&e, &format!("reading {label}")))?;
    let (merged, conflict) = match kube.apply(&t.path, &t.obj.body, &manager, force, true).await {
        Ok(m) => (m, None),
        Err(e) if !e.conflicts().is_empty() && !force => {
            let m = kube
                .apply(&t.path, &t.obj.body, &manager, true, true)
                .await
                .map_err(|e| kube.explain(&e, &format!("previewing {label}")))?;
            (m, Some(e))
        }
        Err(e) => return Err(kube.explain(&e, &format!("previewing {label}"))),
    };
    let shown = format!(
        "{}/{}/{}",
        t.obj.api_version,
        t.obj.kind,
        if t.ns.is_empty() {
            t.obj.name.clone()
        } else {
            format!("{}/{}", t.ns, t.obj.name)
        }
    );
    let diff = diff::object_diff(&shown, live.as_ref(), &merged);
    let rollout_pending = wait
        && t.obj.kind == "Deployment"
        && t.obj.group() == "apps"
        && (diff.is_some()
            || live
                .as_ref()
                .is_none_or(|l| rollout::status(l) != rollout::Rollout::Done));
    Ok(Seen {
        target: t,
        live,
        merged: Some(merged),
        diff,
        conflict,
        rollout_pending,
    })
}

/// Objects carrying the owner label, applied by this field manager, no longer rendered.
async fn prunable(
    step: &K8sApply,
    kube: &Kube,
    targets: &[Target],
    previous: &[Value],
) -> Result<Vec<Prunable>, String> {
    let Some((k, v)) = &step.owner_label else {
        return Ok(Vec::new());
    };
    let selector = format!("{k}={v}");
    let mut kinds: BTreeSet<(String, String)> = targets
        .iter()
        .map(|t| (t.obj.api_version.clone(), t.obj.kind.clone()))
        .collect();
    let mut namespaces: BTreeSet<String> = targets.iter().map(|t| t.ns.clone()).filter(|n| !n.is_empty()).collect();
    namespaces.insert(step.default_ns.clone());
    for p in previous {
        if let (Some(av), Some(kind)) = (p["apiVersion"].as_str(), p["kind"].as_str()) {
            kinds.insert((av.to_owned(), kind.to_owned()));
        }
        if let Some(ns) = p["namespace"].as_str() {
            namespaces.insert(ns.to_owned());
        }
    }
    let rendered: BTreeSet<(String, String, String)> = targets
        .iter()
        .map(|t| (t.obj.kind.clone(), t.ns.clone(), t.obj.name.clone()))
        .collect();
    let mut out = Vec::new();
    for (av, kind) in kinds {
        let Ok(res) = kube.resource(&av, &kind).await else {
            continue;
        };
        let scopes: Vec<Option<&str>> = if res.namespaced {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        } else {
            vec![None]
        };
        for ns in scopes {
            let items = kube
                .list_metadata(&res.collection(ns), &selector)
                .await
                .map_err(|e| kube.explain(&e, &format!("listing {kind} objects labelled `{selector}`")))?;
            for item in items {
                let m = &item["metadata"];
                let name = m["name"].as_str().unwrap_or("").to_owned();
                let ns = m["namespace"].as_str().unwrap_or("").to_owned();
                if rendered.contains(&(kind.clone(), ns.clone(), name.clone())) {
                    continue;
                }
                let applied_by_us =
                    m["managedFields"].as_array().into_iter().flatten().any(|e| {
                        e["manager"].as_str() == Some(step.field_manager.as_str()) && e["operation"] == "Apply"
                    });
                if !applied_by_us {
                    tracing::warn!(
                        "not pruning {kind}/{name} in `{ns}`: it carries `{selector}` but `{}` never applied it",
                        step.field_manager
                    );
                    continue;
                }
                out.push(Prunable {
                    res: res.clone(),
                    kind: kind.clone(),
                    ns,
                    name,
                });
            }
        }
    }
    Ok(out)
}

/// Everything the check needs to know, read-only.
pub async fn observe(step: &K8sApply, kube: &Arc<Kube>, previous: &[Value]) -> Result<Observation, String> {
    let targets = targets(step, kube).await?;
    if step.absent {
        let seen = super::bounded(targets, PARALLEL, |t| {
            let kube = kube.clone();
            async move {
                let live = kube
                    .get(&t.path, true)
                    .await
                    .map_err(|e| kube.explain(&e, &format!("reading {}", t.label())))?;
                Ok::<_, String>(Seen {
                    diff: live.as_ref().map(|_| format!("delete {}\n", t.label())),
                    target: t,
                    live,
                    merged: None,
                    conflict: None,
                    rollout_pending: false,
                })
            }
        })
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        return Ok(Observation {
            seen,
            prune: Vec::new(),
            absent: true,
        });
    }
    if step.check_refs {
        check_references(kube, &targets).await?;
    }
    let prune = if step.prune {
        prunable(step, kube, &targets, previous).await?
    } else {
        Vec::new()
    };
    let (manager, force, wait) = (step.field_manager.clone(), step.force, step.wait);
    let seen = super::bounded(targets, PARALLEL, |t| {
        look(kube.clone(), t, manager.clone(), force, wait)
    })
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    Ok(Observation {
        seen,
        prune,
        absent: false,
    })
}

impl Observation {
    /// The check's verdict: in sync, or the change an apply would make.
    pub fn to_check(&self, step: &K8sApply) -> Check {
        let mut words = Vec::new();
        let mut diffs = String::new();
        for s in &self.seen {
            if self.absent {
                if s.live.is_some() {
                    words.push(format!("delete {}", s.target.label()));
                }
                continue;
            }
            if let Some(d) = &s.diff {
                let verb = if s.live.is_some() { "update" } else { "create" };
                words.push(format!("{verb} {}", s.target.label()));
                diffs.push_str(d);
            } else if s.rollout_pending {
                words.push(format!("wait for the rollout of {}", s.target.label()));
            }
            if let Some(c) = &s.conflict {
                let fields: Vec<String> = c
                    .conflicts()
                    .iter()
                    .map(|(f, m)| format!("`{f}` managed by {m}"))
                    .collect();
                words.push(format!(
                    "CONFLICT on {}: {} (the apply fails unless `force_conflicts: true`)",
                    s.target.label(),
                    fields.join(", ")
                ));
            }
        }
        for p in &self.prune {
            words.push(format!("delete {} (prune: no longer rendered)", p.label()));
            diffs.push_str(&format!("prune: delete {}\n", p.label()));
        }
        let mut outputs = step.base_outputs();
        let objects: Vec<Value> = self
            .seen
            .iter()
            .filter_map(|s| {
                let v = if self.absent {
                    s.live.as_ref()
                } else {
                    s.merged.as_ref().or(s.live.as_ref())
                };
                v.map(|v| summary(v, s.drifted()))
            })
            .collect();
        outputs.insert("objects".into(), Value::Array(objects));
        if words.is_empty() {
            if self.absent {
                outputs.insert("objects".into(), json!([]));
            }
            return Check::InSync(outputs);
        }
        let summary_text = if words.len() > 6 {
            format!("{} (and {} more)", words[..6].join("; "), words.len() - 6)
        } else {
            words.join("; ")
        };
        let mut pending = Pending::new(summary_text);
        if !diffs.is_empty() {
            pending = pending.with_diff(diffs);
        }
        pending.outputs = outputs;
        Check::Drift(pending)
    }
}
