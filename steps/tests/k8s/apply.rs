//! Apply, previews, conflicts, references, prune, rollouts, absent.

use super::*;
use flowrun_steps::testing::{assert_idempotent, converge};
use std::time::Duration;

#[tokio::test]
async fn applies_then_is_in_sync_without_writing() {
    let f = Fixture::new().await;
    let step = f.build(json!({"manifest": footprint("ghcr.io/acme/codex-runner:1.0")}));
    let first = assert_idempotent(&*step, &cx()).await;
    let objects = first.outputs["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 3);
    assert!(
        objects.iter().all(|o| o["changed"] == true && o["uid"].is_string()),
        "{objects:?}"
    );
    let d = f.deployment("codex-gh-runner").unwrap();
    assert_eq!(d["metadata"]["generation"], 1);
    // Sent as `0.5`, stored as `500m`: no drift for it.
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "500m"
    );
    assert!(d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["manager"] == "flowrun" && m["operation"] == "Apply"));
    f.kube.clear_requests();
    let fresh = f.build(json!({"manifest": footprint("ghcr.io/acme/codex-runner:1.0")}));
    let out = in_sync(&*fresh).await;
    assert_eq!(out["server"], f.kube.url());
    assert!(f.kube.writes().is_empty(), "a check wrote: {:?}", f.kube.writes());
    assert!(f.kube.requests().iter().all(|r| r.method == "GET" || r.dry_run));
}

#[tokio::test]
async fn preview_of_an_image_change_shows_that_field_only() {
    let f = Fixture::new().await;
    converge(
        &*f.build(json!({"manifest": footprint("ghcr.io/acme/codex-runner:1.0"), "wait": true})),
        &cx(),
    )
    .await
    .unwrap();
    let step =
        f.build(json!({"manifest": footprint("ghcr.io/acme/codex-runner:1.1"), "wait": true, "wait_timeout": "10s"}));
    f.kube.clear_requests();
    let p = drift(&*step).await;
    assert_eq!(p.summary, format!("update Deployment/codex-gh-runner in `{NS}`"));
    let diff = p.diff.clone().unwrap();
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| (l.starts_with('-') || l.starts_with('+')) && !l.starts_with("---") && !l.starts_with("+++"))
        .collect();
    assert_eq!(
        changed,
        [
            "-        image: ghcr.io/acme/codex-runner:1.0",
            "+        image: ghcr.io/acme/codex-runner:1.1"
        ],
        "{diff}"
    );
    assert!(f.kube.writes().is_empty());
    let applied = step.apply(&cx(), p).await.unwrap();
    assert!(applied.changed);
    let d = f.deployment("codex-gh-runner").unwrap();
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(
        d["status"]["observedGeneration"], 2,
        "waited for the rollout: {}",
        d["status"]
    );
    assert_eq!(d["status"]["availableReplicas"], 1);
    let writes: Vec<String> = f.kube.writes().iter().map(|w| w.path.clone()).collect();
    assert_eq!(
        writes,
        [format!("/apis/apps/v1/namespaces/{NS}/deployments/codex-gh-runner")],
        "only the drifted object is applied"
    );
}

#[tokio::test]
async fn another_manager_owns_replicas_conflict_unless_forced() {
    let f = Fixture::new().await;
    let objs = footprint("ghcr.io/acme/codex-runner:1.0");
    converge(&*f.build(json!({"manifest": objs})), &cx()).await.unwrap();
    f.kube
        .merge_patch_as(
            "kubectl-edit",
            "apps/v1",
            "Deployment",
            NS,
            "codex-gh-runner",
            &json!({"spec": {"replicas": 3}}),
        )
        .unwrap();
    let step = f.build(json!({"manifest": objs}));
    let p = drift(&*step).await;
    assert!(p.summary.contains("update Deployment/codex-gh-runner"), "{}", p.summary);
    assert!(
        p.summary.contains("CONFLICT") && p.summary.contains(".spec.replicas") && p.summary.contains("kubectl-edit"),
        "{}",
        p.summary
    );
    assert!(
        p.diff.as_deref().unwrap().contains("-  replicas: 3\n+  replicas: 1\n"),
        "{:?}",
        p.diff
    );
    f.kube.clear_requests();
    let e = step.apply(&cx(), p).await.unwrap_err().message;
    assert!(
        e.contains("`.spec.replicas` is managed by \"kubectl-edit\" using apps/v1"),
        "{e}"
    );
    assert!(e.contains("force_conflicts: true"), "{e}");
    assert!(f.kube.writes().is_empty(), "a conflict fails before any write");
    assert_eq!(f.deployment("codex-gh-runner").unwrap()["spec"]["replicas"], 3);
    let forced = f.build(json!({"manifest": objs, "force_conflicts": true}));
    assert!(converge(&*forced, &cx()).await.unwrap().changed);
    let d = f.deployment("codex-gh-runner").unwrap();
    assert_eq!(d["spec"]["replicas"], 1);
    in_sync(&*f.build(json!({"manifest": objs}))).await;
}

#[tokio::test]
async fn missing_secret_or_claim_fails_before_any_write() {
    let f = Fixture::new().await;
    let mut d = runner("codex", "ghcr.io/acme/codex-runner:1.0");
    d["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = json!("no-such-claim");
    d["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] =
        json!("no-such-secret");
    let step = f.build(json!({"manifest": [config_map(), d]}));
    let e = match check(&*step).await {
        Err(e) => e,
        Ok(_) => panic!("a missing reference must fail the check"),
    };
    assert!(
        e.contains("PersistentVolumeClaim `no-such-claim` in namespace `my-reforge-ai` does not exist"),
        "{e}"
    );
    assert!(e.contains("Secret `no-such-secret` in namespace `my-reforge-ai` does not exist (referred to by Deployment/codex-gh-runner container `runner` env `GITHUB_PAT`)"), "{e}");
    assert!(f.kube.writes().is_empty());
    assert!(f.kube.names("v1", "ConfigMap", NS).is_empty(), "nothing applied");
    // Existing secrets were checked by metadata only, never read for data.
    let good = f.build(json!({"manifest": [runner("codex", "ghcr.io/acme/codex-runner:1.0")]}));
    converge(&*good, &cx()).await.unwrap();
    let secret_reads: Vec<_> = f
        .kube
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/secrets/"))
        .collect();
    assert!(
        !secret_reads.is_empty() && secret_reads.iter().all(|r| r.metadata_only),
        "{secret_reads:?}"
    );
}

#[tokio::test]
async fn prune_deletes_what_it_applied_and_nothing_else() {
    let f = Fixture::new().await;
    let label = json!({"prune": true, "owner_label": "app.kubernetes.io/part-of=github-runners"});
    let mut p = label.clone();
    p["manifest"] = footprint("ghcr.io/acme/codex-runner:1.0");
    converge(&*f.build(p), &cx()).await.unwrap();
    // Same label, applied by someone else: not ours to prune.
    f.kube.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "other-home", "namespace": NS}})).ok();
    let mut other = runner("other", "ghcr.io/acme/other:1");
    other["metadata"]["namespace"] = json!(NS);
    f.kube.apply_as("kubectl", other, false).unwrap();
    let mut p = label.clone();
    p["manifest"] = json!([config_map(), runner("codex", "ghcr.io/acme/codex-runner:1.0")]);
    let step = f.build(p);
    let pending = drift(&*step).await;
    assert_eq!(
        pending.summary,
        format!("delete Deployment/gemini-gh-runner in `{NS}` (prune: no longer rendered)")
    );
    let applied = step.apply(&cx(), pending).await.unwrap();
    assert!(applied.changed);
    assert_eq!(
        applied.outputs["pruned"],
        json!([format!("Deployment/gemini-gh-runner in `{NS}`")])
    );
    let mut names = f.kube.names("apps/v1", "Deployment", NS);
    names.sort();
    assert_eq!(names, ["codex-gh-runner", "other-gh-runner"]);
    assert!(
        f.kube.get("v1", "PersistentVolumeClaim", NS, "gemini-home").is_some(),
        "claims are never deleted"
    );
    let e = try_build(f.params(json!({"manifest": [runner("codex", "i:1")], "prune": true})))
        .err()
        .unwrap();
    assert!(e.contains("needs `owner_label`"), "{e}");
}

#[tokio::test]
async fn a_rollout_that_never_becomes_available_fails_at_the_timeout() {
    let f = Fixture::new().await;
    f.kube.set_never_available("codex-gh-runner");
    let step = f.build(
        json!({"manifest": [runner("codex", "ghcr.io/acme/codex-runner:1.0")], "wait": true, "wait_timeout": "1500ms"}),
    );
    let started = std::time::Instant::now();
    let e = converge(&*step, &cx()).await.unwrap_err().message;
    assert!(started.elapsed() >= Duration::from_millis(1500), "gave up early");
    assert!(e.contains("timed out after 1s 500ms waiting for the rollout"), "{e}");
    assert!(e.contains("0 of 1 updated replicas are available"), "{e}");
    assert!(e.contains("Deployment does not have minimum availability."), "{e}");
    // The next check is not in sync while the rollout is unfinished.
    assert!(
        drift(&*f.build(json!({"manifest": [runner("codex", "ghcr.io/acme/codex-runner:1.0")], "wait": true})))
            .await
            .summary
            .contains("wait for the rollout")
    );
    // A progress deadline shorter than the wait: the condition's own words.
    let mut d = runner("gemini", "ghcr.io/acme/gemini-runner:1.0");
    d["spec"]["progressDeadlineSeconds"] = json!(1);
    f.kube.set_never_available("gemini-gh-runner");
    let e = converge(
        &*f.build(json!({"manifest": [d], "wait": true, "wait_timeout": "20s"})),
        &cx(),
    )
    .await
    .unwrap_err()
    .message;
    assert!(
        e.starts_with("deployment \"gemini-gh-runner\" exceeded its progress deadline: ReplicaSet \"gemini-gh-runner-"),
        "{e}"
    );
    assert!(e.ends_with("has timed out progressing."), "{e}");
}

#[tokio::test]
async fn absent_deletes_what_it_renders_only() {
    let f = Fixture::new().await;
    let objs = footprint("ghcr.io/acme/codex-runner:1.0");
    converge(&*f.build(json!({"manifest": objs})), &cx()).await.unwrap();
    let step = f.build(json!({"manifest": objs, "state": "absent"}));
    let p = drift(&*step).await;
    assert!(
        p.summary.starts_with("delete ConfigMap/codex-config-gh-runner"),
        "{}",
        p.summary
    );
    let applied = step.apply(&cx(), p).await.unwrap();
    assert_eq!(applied.outputs["deleted"].as_array().unwrap().len(), 3);
    assert!(f.kube.names("apps/v1", "Deployment", NS).is_empty());
    assert!(f.kube.get("v1", "Secret", NS, "github-runner-config").is_some());
    assert!(f.kube.get("v1", "PersistentVolumeClaim", NS, "codex-home").is_some());
    in_sync(&*f.build(json!({"manifest": objs, "state": "absent"}))).await;
}
