//! The writing half of `k8s_apply`, acting only on what the check found:
//! conflicts fail before anything is written; drifted objects are applied in
//! dependency order (namespaces, then what pods refer to, then workloads),
//! each tier in parallel; a no-op answer (same resourceVersion) counts as
//! unchanged; pruned objects are deleted; then Deployments are waited for.
//! `state: absent` deletes what exists, workloads first.

use super::client::Kube;
use super::observe::{Observation, Seen, PARALLEL};
use super::{rollout, summary, K8sApply};
use flowrun_engine::step::Applied;
use serde_json::{json, Value};
use std::sync::Arc;

fn rv(v: Option<&Value>) -> Option<&str> {
    v.and_then(|v| v["metadata"]["resourceVersion"].as_str())
}

async fn delete_all(step: &K8sApply, kube: &Arc<Kube>, obs: Observation) -> Result<Applied, String> {
    let mut existing: Vec<Seen> = obs.seen.into_iter().filter(|s| s.live.is_some()).collect();
    existing.sort_by_key(|s| std::cmp::Reverse(s.target.obj.order()));
    let mut deleted = Vec::new();
    for s in existing {
        if let Some((k, v)) = &step.owner_label {
            let labels = &s.live.as_ref().map_or(Value::Null, |l| l["metadata"]["labels"].clone());
            if labels[k.as_str()].as_str() != Some(v.as_str()) {
                tracing::warn!(
                    "not deleting {}: it does not carry the owner label `{k}={v}`",
                    s.target.label()
                );
                continue;
            }
        }
        let gone = kube
            .delete(&s.target.path, false)
            .await
            .map_err(|e| kube.explain(&e, &format!("deleting {}", s.target.label())))?;
        if gone {
            deleted.push(json!(s.target.label()));
        }
    }
    let mut outputs = step.base_outputs();
    let n = deleted.len();
    outputs.insert("deleted".into(), Value::Array(deleted));
    Ok(Applied {
        changed: n > 0,
        outputs,
        message: Some(format!("deleted {n} object{}", if n == 1 { "" } else { "s" })),
    })
}

/// Make the change the check found.
pub async fn act(step: &K8sApply, kube: &Arc<Kube>, obs: Observation) -> Result<Applied, String> {
    if obs.absent {
        return delete_all(step, kube, obs).await;
    }
    if !step.force {
        if let Some(s) = obs.seen.iter().find(|s| s.conflict.is_some()) {
            let e = s.conflict.as_ref().expect("found");
            return Err(kube.explain(e, &format!("nothing was applied: applying {}", s.target.label())));
        }
    }
    let mut results: Vec<(usize, Value, bool)> = Vec::new();
    let mut tiers: Vec<u8> = obs.seen.iter().map(|s| s.target.obj.order()).collect();
    tiers.sort_unstable();
    tiers.dedup();
    for tier in tiers {
        let work: Vec<(usize, super::observe::Target, Option<String>)> = obs
            .seen
            .iter()
            .enumerate()
            .filter(|(_, s)| s.target.obj.order() == tier && s.drifted())
            .map(|(i, s)| (i, s.target.clone(), rv(s.live.as_ref()).map(str::to_owned)))
            .collect();
        let manager = step.field_manager.clone();
        let force = step.force;
        let done = super::bounded(work, PARALLEL, |(i, t, before)| {
            let (kube, manager) = (kube.clone(), manager.clone());
            async move {
                let v = kube
                    .apply(&t.path, &t.obj.body, &manager, force, false)
                    .await
                    .map_err(|e| kube.explain(&e, &format!("applying {}", t.label())))?;
                let changed = before.as_deref() != rv(Some(&v));
                Ok::<_, String>((i, v, changed))
            }
        })
        .await;
        for r in done {
            results.push(r?);
        }
    }
    let mut pruned = Vec::new();
    for p in &obs.prune {
        if kube
            .delete(&p.res.object(Some(&p.ns), &p.name), false)
            .await
            .map_err(|e| kube.explain(&e, &format!("pruning {}", p.label())))?
        {
            pruned.push(json!(p.label()));
        }
    }
    let changed_any = results.iter().any(|(_, _, c)| *c) || !pruned.is_empty();
    let mut objects: Vec<Value> = Vec::new();
    for (i, s) in obs.seen.iter().enumerate() {
        match results.iter().find(|(j, _, _)| *j == i) {
            Some((_, v, c)) => objects.push(summary(v, *c)),
            None => objects.push(summary(s.live.as_ref().unwrap_or(&Value::Null), false)),
        }
    }
    if step.wait {
        wait_all(step, kube, &obs, &results).await?;
    }
    let n = results.iter().filter(|(_, _, c)| *c).count();
    let mut outputs = step.base_outputs();
    outputs.insert("objects".into(), Value::Array(objects));
    let np = pruned.len();
    outputs.insert("pruned".into(), Value::Array(pruned));
    let mut message = format!("applied {n} changed object{}", if n == 1 { "" } else { "s" });
    if np > 0 {
        message.push_str(&format!(", pruned {np}"));
    }
    Ok(Applied {
        changed: changed_any,
        outputs,
        message: Some(message),
    })
}

/// Wait for each Deployment that changed or had not finished rolling out.
async fn wait_all(
    step: &K8sApply,
    kube: &Arc<Kube>,
    obs: &Observation,
    results: &[(usize, Value, bool)],
) -> Result<(), String> {
    let waits: Vec<(super::client::ApiResource, String, String)> = obs
        .seen
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            s.rollout_pending
                || results
                    .iter()
                    .any(|(j, _, c)| j == i && *c && s.target.obj.kind == "Deployment")
        })
        .filter(|(_, s)| s.target.obj.kind == "Deployment" && s.target.obj.group() == "apps")
        .map(|(_, s)| (s.target.res.clone(), s.target.ns.clone(), s.target.obj.name.clone()))
        .collect();
    let timeout = step.wait_timeout;
    let failures: Vec<String> = super::bounded(waits, PARALLEL, |(res, ns, name)| {
        let kube = kube.clone();
        async move { rollout::wait(&kube, &res, &ns, &name, timeout).await }
    })
    .await
    .into_iter()
    .filter_map(Result::err)
    .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
