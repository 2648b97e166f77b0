//! `gitlab_runner` against the GitLab emulator.

use super::{build, context_with_hosts, drift, in_sync, logs};
use flowrun_engine::secrets::Masker;
use flowrun_lab::emulators::gitlab::GitLabEmulator;
use flowrun_steps::gitlab_runner::GitlabRunnerKind;
use flowrun_steps::testing::converge;
use serde_json::{json, Value};

fn params(gl: &GitLabEmulator, token: &str, extra: Value) -> Value {
    let mut p = json!({
        "api_url": gl.url(),
        "token": token,
        "runner_type": "project_type",
        "project_id": 42,
        "description": "gitlab-runner-01",
        "tags": ["proxmox-local", "docker"],
        "run_untagged": false,
        "locked": true,
        "access_level": "ref_protected",
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

#[tokio::test]
async fn creates_a_runner_and_a_rerun_with_its_token_is_in_sync() {
    let gl = GitLabEmulator::start().await.unwrap();
    let token = gl.add_token(&["create_runner", "read_api"]);
    let cx = context_with_hosts(&[]);
    let step = build(&GitlabRunnerKind, params(&gl, &token, json!({})));
    assert_eq!(
        drift(&*step, &cx).await,
        "create project_type runner `gitlab-runner-01`"
    );
    let out = converge(&*step, &cx).await.unwrap();
    assert!(out.changed);
    let id = out.outputs["id"].as_i64().unwrap();
    let runner_token = out.outputs["token"].as_str().unwrap().to_owned();
    assert!(runner_token.starts_with("glrt-"));
    assert!(
        Masker::global().contains_secret(&runner_token),
        "the runner token is a secret from now on"
    );
    assert_eq!(out.outputs["status"], json!("never_contacted"));

    let r = gl.runner(id as u64).unwrap();
    assert_eq!(r.tag_list, ["proxmox-local", "docker"]);
    assert_eq!((r.project_id, r.run_untagged, r.locked), (Some(42), false, true));
    assert_eq!(r.access_level, "ref_protected");

    // The re-run knows the runner by its token (from the journal or the machine): nothing written.
    gl.clear_requests();
    let again = build(
        &GitlabRunnerKind,
        params(&gl, &token, json!({"runner_id": id, "runner_token": runner_token})),
    );
    let outputs = in_sync(&*again, &cx).await;
    assert_eq!(outputs["id"], json!(id));
    assert_eq!(outputs["token"], json!(runner_token));
    assert_eq!(outputs["status"], json!("never_contacted"));
    assert!(gl.writes().is_empty(), "{:?}", gl.writes());
    assert!(
        gl.runner(id as u64).unwrap().contacted_at.is_none(),
        "the check must not look like a runner"
    );

    // A stand-in gitlab-runner checks in: online.
    assert!(gl.contact(&runner_token));
    assert_eq!(in_sync(&*again, &cx).await["status"], json!("online"));
    gl.set_status(id as u64, Some("stale"));
    assert_eq!(in_sync(&*again, &cx).await["status"], json!("stale"));
}

#[tokio::test]
async fn a_deleted_runner_is_created_again() {
    let gl = GitLabEmulator::start().await.unwrap();
    let token = gl.add_token(&["create_runner"]);
    let cx = context_with_hosts(&[]);
    let first = converge(&*build(&GitlabRunnerKind, params(&gl, &token, json!({}))), &cx)
        .await
        .unwrap();
    let (id, runner_token) = (first.outputs["id"].as_i64().unwrap(), first.outputs["token"].clone());
    gl.remove_runner(id as u64);
    let step = build(
        &GitlabRunnerKind,
        params(&gl, &token, json!({"runner_id": id, "runner_token": runner_token})),
    );
    assert!(drift(&*step, &cx).await.contains("no longer verifies"));
    let out = converge(&*step, &cx).await.unwrap();
    assert_ne!(out.outputs["id"], json!(id));
    assert_eq!(gl.runners().len(), 1);
}

#[tokio::test]
async fn status_is_unknown_for_a_create_only_token() {
    logs::capture();
    let gl = GitLabEmulator::start().await.unwrap();
    let token = gl.add_token(&["create_runner"]);
    let cx = context_with_hosts(&[]);
    let first = converge(&*build(&GitlabRunnerKind, params(&gl, &token, json!({}))), &cx)
        .await
        .unwrap();
    let step = build(
        &GitlabRunnerKind,
        params(
            &gl,
            &token,
            json!({"runner_id": first.outputs["id"], "runner_token": first.outputs["token"]}),
        ),
    );
    assert_eq!(in_sync(&*step, &cx).await["status"], json!("unknown"));
    assert!(logs::text().contains("needs a token with the `read_api`, `manage_runner` or `api` scope"));
}

#[tokio::test]
async fn absent_by_id_needs_the_manage_runner_scope() {
    let gl = GitLabEmulator::start().await.unwrap();
    let create_only = gl.add_token(&["create_runner", "read_api"]);
    let cx = context_with_hosts(&[]);
    let first = converge(&*build(&GitlabRunnerKind, params(&gl, &create_only, json!({}))), &cx)
        .await
        .unwrap();
    let id = first.outputs["id"].as_i64().unwrap();

    let absent = build(
        &GitlabRunnerKind,
        params(&gl, &create_only, json!({"state": "absent", "runner_id": id})),
    );
    assert_eq!(drift(&*absent, &cx).await, format!("delete runner {id}"));
    let err = converge(&*absent, &cx).await.unwrap_err();
    assert!(
        err.message.contains(&format!(
            "deleting runner {id} needs a token with the `manage_runner` or `api` scope"
        )),
        "{err}"
    );
    assert_eq!(gl.runners().len(), 1);

    let manager = gl.add_token(&["manage_runner"]);
    let absent = build(
        &GitlabRunnerKind,
        params(&gl, &manager, json!({"state": "absent", "runner_id": id})),
    );
    assert!(converge(&*absent, &cx).await.unwrap().changed);
    assert!(gl.runners().is_empty());
    gl.clear_requests();
    assert_eq!(in_sync(&*absent, &cx).await["status"], json!("absent"));
    assert!(gl.writes().is_empty());
}

#[tokio::test]
async fn absent_by_runner_token_needs_no_scope() {
    let gl = GitLabEmulator::start().await.unwrap();
    let token = gl.add_token(&["create_runner"]);
    let cx = context_with_hosts(&[]);
    let first = converge(&*build(&GitlabRunnerKind, params(&gl, &token, json!({}))), &cx)
        .await
        .unwrap();
    let absent = build(
        &GitlabRunnerKind,
        params(
            &gl,
            &token,
            json!({"state": "absent", "runner_token": first.outputs["token"]}),
        ),
    );
    assert!(converge(&*absent, &cx).await.unwrap().changed);
    assert!(gl.runners().is_empty());
    in_sync(&*absent, &cx).await;
}

#[tokio::test]
async fn wrong_token_and_outage() {
    logs::capture();
    let gl = GitLabEmulator::start().await.unwrap();
    let cx = context_with_hosts(&[]);
    let canary = "glpat-CANARYgitlab0123456789";
    let err = converge(&*build(&GitlabRunnerKind, params(&gl, canary, json!({}))), &cx)
        .await
        .unwrap_err();
    assert!(err.message.contains("401 Unauthorized"), "{err}");
    assert!(!err.message.contains(canary) && !logs::text().contains(canary));

    let token = gl.add_token(&["api"]);
    gl.fail_next_requests(2);
    let out = converge(&*build(&GitlabRunnerKind, params(&gl, &token, json!({}))), &cx)
        .await
        .unwrap();
    assert!(out.changed);
    assert_eq!(gl.requests().iter().filter(|r| r.status == 503).count(), 2);
    assert_eq!(gl.runners().len(), 1, "a retried create makes one runner");
}

#[tokio::test]
async fn legacy_registration_is_gone() {
    let gl = GitLabEmulator::start().await.unwrap();
    let api = flowrun_steps::api::ApiClient::new(flowrun_steps::api::ClientOptions::new(
        "gitlab",
        format!("{}/api/v4", gl.url()),
    ))
    .unwrap();
    let e = api
        .send(flowrun_steps::api::Req::post("/runners").json(json!({"token": "GR1348941abc"})))
        .await
        .unwrap_err();
    assert!(e.is(410), "{e}");
}
