//! Bad input and refused requests, in the API's words.

use super::*;
use flowrun_steps::testing::converge;

#[tokio::test]
async fn bad_manifests_and_contexts_fail_at_build() {
    let f = Fixture::new().await;
    let e = try_build(f.params(json!({"manifest": ["just text"]}))).err().unwrap();
    assert!(
        e.contains("parameter `manifest`: manifest, item 1: document 1 (line 1) is a string, not an object"),
        "{e}"
    );
    let e = try_build(f.params(json!({"manifest": config_map(), "context": "prod"})))
        .err()
        .unwrap();
    assert!(e.contains("has no context `prod` (contexts: `stand-in`)"), "{e}");
    let e = try_build(f.params(json!({"manifest": {"kind": "ConfigMap", "metadata": {"name": "x"}}})))
        .err()
        .unwrap();
    assert!(e.contains("has no `apiVersion`"), "{e}");
}

#[tokio::test]
async fn kinds_namespaces_and_validation() {
    let f = Fixture::new().await;
    let typo = json!({"apiVersion": "apps/v1", "kind": "Deploymnt", "metadata": {"name": "x"}});
    let e = check(&*f.build(json!({"manifest": typo}))).await.err().unwrap();
    assert!(
        e.contains("the server does not serve kind `Deploymnt` in `apps/v1` (did you mean `Deployment`?)"),
        "{e}"
    );
    let e = check(
        &*f.build(json!({"manifest": {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x"}}})),
    )
    .await
    .err()
    .unwrap();
    assert!(e.contains("does not serve the API version `example.com/v1`"), "{e}");
    let e = check(&*f.build(json!({"manifest": config_map(), "namespace": "nope"})))
        .await
        .err()
        .unwrap();
    assert!(e.contains("namespace `nope` does not exist"), "{e}");
    let mut d = runner("gemini", "ghcr.io/acme/gemini-runner:1.0");
    let mounts = &mut d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
    mounts
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "cache", "mountPath": "/cache"}));
    let e = check(&*f.build(json!({"manifest": [d.clone()]}))).await.err().unwrap();
    assert!(e.contains("Deployment.apps \"gemini-gh-runner\" is invalid (422): `spec.template.spec.containers[0].volumeMounts[1].name`: Not found: \"cache\""), "{e}");
    // Two mounts on one path: the keyed list cannot hold them (the server's typed-patch 500).
    d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][1] =
        json!({"name": "home", "mountPath": "/home/runner/.gemini"});
    let e = check(&*f.build(json!({"manifest": [d]}))).await.err().unwrap();
    assert!(
        e.contains("volumeMounts: duplicate entries for key [mountPath=\"/home/runner/.gemini\"]"),
        "{e}"
    );
}

#[tokio::test]
async fn typed_patch_errors_are_not_retried() {
    let f = Fixture::new().await;
    let mut d = runner("codex", "ghcr.io/acme/codex-runner:1.0");
    let vols = d["spec"]["template"]["spec"]["volumes"].as_array_mut().unwrap();
    vols.push(vols[0].clone());
    f.kube.clear_requests();
    let e = converge(&*f.build(json!({"manifest": [d], "check_references": false})), &cx())
        .await
        .unwrap_err()
        .message;
    assert!(e.contains("failed to create typed patch object (my-reforge-ai/codex-gh-runner; apps/v1, Kind=Deployment): .spec.template.spec.volumes: duplicate entries for key [name=\"home\"]"), "{e}");
    assert!(e.contains("not retried"), "{e}");
    let patches = f.kube.requests().iter().filter(|r| r.method == "PATCH").count();
    assert_eq!(patches, 1, "a typed-patch 500 is sent once");
    let mut d = runner("codex", "ghcr.io/acme/codex-runner:1.0");
    d["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = json!("Always");
    let e = check(&*f.build(json!({"manifest": [d]}))).await.err().unwrap();
    assert!(e.contains(".imagePullPolcy: field not declared in schema"), "{e}");
}
