//! Waiting for a Deployment's rollout the way `kubectl rollout status`
//! decides it (kubectl `DeploymentStatusViewer`): the controller must have
//! observed the current generation; a `Progressing` condition with reason
//! `ProgressDeadlineExceeded` is a failure with the condition's message;
//! otherwise it waits until every replica is updated, old ones are gone and
//! the updated ones are available. Timing out reports where it stood and the
//! conditions' messages.

use super::client::{ApiResource, Kube};
use serde_json::Value;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(200);

/// Where a rollout stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Rollout {
    Done,
    Waiting(String),
    Failed(String),
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// The state of the rollout of Deployment `d` (a live object).
pub fn status(d: &Value) -> Rollout {
    let name = d["metadata"]["name"].as_str().unwrap_or("?");
    let s = &d["status"];
    if int(&d["metadata"]["generation"]) > int(&s["observedGeneration"]) {
        return Rollout::Waiting(format!("Waiting for deployment {name:?} spec update to be observed..."));
    }
    let conditions = s["conditions"].as_array().cloned().unwrap_or_default();
    if let Some(c) = conditions
        .iter()
        .find(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded")
    {
        return Rollout::Failed(format!(
            "deployment {name:?} exceeded its progress deadline: {}",
            c["message"].as_str().unwrap_or("")
        ));
    }
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let (replicas, updated, available) = (
        int(&s["replicas"]),
        int(&s["updatedReplicas"]),
        int(&s["availableReplicas"]),
    );
    if updated < want {
        return Rollout::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {updated} out of {want} new replicas have been updated..."
        ));
    }
    if replicas > updated {
        return Rollout::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        ));
    }
    if available < updated {
        return Rollout::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
        ));
    }
    Rollout::Done
}

/// The conditions' messages, for a timeout report.
fn conditions(d: &Value) -> String {
    let parts: Vec<String> = d["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{}={} {}: {}",
                c["type"].as_str().unwrap_or("?"),
                c["status"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" (conditions: {})", parts.join("; "))
    }
}

/// Wait until Deployment `name` has rolled out, failed, or `timeout` passed.
pub async fn wait(kube: &Kube, res: &ApiResource, ns: &str, name: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let path = res.object(Some(ns), name);
    loop {
        let d = kube
            .get(&path, false)
            .await
            .map_err(|e| kube.explain(&e, &format!("waiting for the rollout of Deployment `{name}`")))?
            .ok_or_else(|| format!("Deployment `{name}` in `{ns}` disappeared while its rollout was awaited"))?;
        match status(&d) {
            Rollout::Done => return Ok(()),
            Rollout::Failed(m) => return Err(m),
            Rollout::Waiting(m) if Instant::now() >= deadline => {
                return Err(format!(
                    "timed out after {} waiting for the rollout: {m}{}",
                    humantime::format_duration(timeout),
                    conditions(&d)
                ))
            }
            Rollout::Waiting(m) => tracing::debug!("{m}"),
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn follows_kubectl_rollout_status() {
        let mut d = json!({"metadata": {"name": "d", "generation": 2}, "spec": {"replicas": 2},
                           "status": {"observedGeneration": 1}});
        assert!(matches!(status(&d), Rollout::Waiting(m) if m.contains("spec update to be observed")));
        d["status"] = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1});
        assert!(matches!(status(&d), Rollout::Waiting(m) if m.contains("1 of 2 updated replicas are available")));
        d["status"]["availableReplicas"] = json!(2);
        assert_eq!(status(&d), Rollout::Done);
        d["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                            "message": "ReplicaSet \"d-x\" has timed out progressing."}]);
        assert_eq!(
            status(&d),
            Rollout::Failed(
                "deployment \"d\" exceeded its progress deadline: ReplicaSet \"d-x\" has timed out progressing.".into()
            )
        );
    }
}
