//! The Deployment controller, as far as a client can see it: after a spec
//! change it observes the new generation, reports the new ReplicaSet as
//! progressing, then all replicas updated, ready and available — or, for a
//! Deployment told never to become available, unavailable replicas until
//! `progressDeadlineSeconds` passes and `Progressing` turns
//! `ProgressDeadlineExceeded`. It writes through the status subresource as
//! `kube-controller-manager` (with the `deployment.kubernetes.io/revision`
//! annotation), so status changes bump the resourceVersion but never the
//! generation. It runs before each request, from timestamps, never sleeping.

use super::ssa;
use super::store::{now_text, State};
use serde_json::{json, Value};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

const MANAGER: &str = "kube-controller-manager";
const REVISION: &str = "deployment.kubernetes.io/revision";

/// A ReplicaSet name suffix from the pod template (stable per template).
fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = std::collections::hash_map::DefaultHasher::new();
    template.to_string().hash(&mut h);
    let mut n = h.finish();
    (0..10)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn condition(kind: &str, status: &str, reason: &str, message: &str, since: &str) -> Value {
    json!({"type": kind, "status": status, "lastUpdateTime": since, "lastTransitionTime": since,
           "reason": reason, "message": message})
}

/// Zero counts are omitted, as the API omits them.
fn put(status: &mut Value, k: &str, n: i64) {
    if n != 0 {
        status[k] = json!(n);
    }
}

/// Advance every Deployment's status to what the controller would report by now.
pub fn tick(state: &mut State) {
    let now = Instant::now();
    let keys: Vec<_> = state
        .objects
        .keys()
        .filter(|(r, _, _)| r == "deployments.apps")
        .cloned()
        .collect();
    for key in keys {
        advance(state, &key, now);
    }
}

/// Move one Deployment's status to where its rollout stands at `now`.
fn advance(state: &mut State, key: &super::store::Key, now: Instant) {
    let rollout = state.rollout;
    let never = state.never_available.contains("*") || state.never_available.contains(&key.2);
    let Some(stored) = state.objects.get_mut(key) else {
        return;
    };
    if stored.settled == Some(never) || stored.value["spec"]["paused"] == json!(true) {
        return;
    }
    if stored.settled.is_none() && stored.next_check.is_some_and(|t| now < t) {
        return;
    }
    let elapsed = now.saturating_duration_since(stored.spec_changed);
    // The controller observes a change after a quarter of the rollout time.
    if elapsed < rollout / 4 {
        stored.next_check = Some(stored.spec_changed + rollout / 4);
        return;
    }
    let template = stored.value["spec"]["template"].clone();
    if stored.template != template {
        stored.revision += 1;
        stored.template = template.clone();
    }
    let name = key.2.clone();
    let rs = format!("{name}-{}", template_hash(&template));
    let deadline = Duration::from_secs(stored.value["spec"]["progressDeadlineSeconds"].as_u64().unwrap_or(600));
    let terminal = if never { elapsed >= deadline } else { elapsed >= rollout };
    // The next moment the status can change: the rollout's end, or the deadline.
    stored.next_check = Some(stored.spec_changed + if never { deadline } else { rollout });
    let mut status = desired(&stored.value, &rs, never, elapsed, rollout);
    let old_status = stored.value["status"].clone();
    keep_condition_times(&mut status, &old_status);
    let revision = stored.revision.to_string();
    let annotation = stored.value["metadata"]["annotations"][REVISION].as_str() == Some(revision.as_str());
    if old_status == status && annotation {
        if terminal {
            stored.settled = Some(never);
        }
        return;
    }
    let mut new = stored.value.clone();
    new["status"] = status;
    if !new["metadata"]["annotations"].is_object() {
        new["metadata"]["annotations"] = json!({});
    }
    new["metadata"]["annotations"][REVISION] = json!(revision);
    let Ok(outcome) = ssa::update(
        Some((&stored.value, &stored.entries)),
        new,
        super::schema::Ty::Struct("Deployment"),
        MANAGER,
        "apps/v1",
        Some("status"),
        &now_text(),
    ) else {
        return;
    };
    state.rv += 1;
    let stored = state.objects.get_mut(key).expect("still there");
    stored.value = outcome.object;
    stored.value["metadata"]["resourceVersion"] = json!(state.rv.to_string());
    stored.entries = outcome.entries;
    if terminal {
        stored.settled = Some(never);
    }
}

/// Keep a condition's times when it did not change (type, status, reason).
fn keep_condition_times(status: &mut Value, old: &Value) {
    for c in status["conditions"].as_array_mut().into_iter().flatten() {
        let same = old["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["type"] == c["type"] && o["status"] == c["status"] && o["reason"] == c["reason"]);
        if let Some(o) = same {
            c["lastUpdateTime"] = o["lastUpdateTime"].clone();
            c["lastTransitionTime"] = o["lastTransitionTime"].clone();
        }
    }
}

fn desired(d: &Value, rs: &str, never: bool, elapsed: Duration, rollout: Duration) -> Value {
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let deadline = Duration::from_secs(d["spec"]["progressDeadlineSeconds"].as_u64().unwrap_or(600));
    let since = now_text();
    let mut s = json!({"observedGeneration": d["metadata"]["generation"].clone()});
    put(&mut s, "replicas", replicas);
    put(&mut s, "updatedReplicas", replicas);
    let done = !never && (elapsed >= rollout || replicas == 0);
    let (available, progressing) = if done {
        put(&mut s, "readyReplicas", replicas);
        put(&mut s, "availableReplicas", replicas);
        (
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                &since,
            ),
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &format!("ReplicaSet {rs:?} has successfully progressed."),
                &since,
            ),
        )
    } else {
        put(&mut s, "unavailableReplicas", replicas);
        let progressing = if never && elapsed >= deadline {
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet {rs:?} has timed out progressing."),
                &since,
            )
        } else {
            condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet {rs:?} is progressing."),
                &since,
            )
        };
        (
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                &since,
            ),
            progressing,
        )
    };
    s["conditions"] = json!([available, progressing]);
    s
}
