//! `github_runner` against the GitHub emulator.

use super::{build, context_with_hosts, drift, in_sync, logs};
use flowrun_lab::emulators::github::GitHubEmulator;
use flowrun_steps::github_runner::GithubRunnerKind;
use flowrun_steps::testing::converge;
use serde_json::{json, Value};

fn params(gh: &GitHubEmulator, token: &str, extra: Value) -> Value {
    let mut p = json!({"api_url": gh.url(), "token": token, "repo": "acme/app", "name": "runner-a"});
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

#[tokio::test]
async fn token_register_list_and_delete() {
    let gh = GitHubEmulator::start().await.unwrap();
    let token = gh.add_token(&["acme/app"]);
    let cx = context_with_hosts(&[]);

    let step = build(&GithubRunnerKind, params(&gh, &token, json!({"state": "token"})));
    assert_eq!(
        drift(&*step, &cx).await,
        "create a runner registration token for `acme/app`"
    );
    let out = converge(&*step, &cx).await.unwrap();
    let reg = out.outputs["registration_token"].as_str().unwrap().to_owned();
    assert!(out.outputs["expires_at"].as_str().unwrap().ends_with('Z'));
    // What config.sh does with it on the runner's machine.
    let id = gh.register_runner(&reg, "runner-a", &["proxmox"]).unwrap();

    let present = build(&GithubRunnerKind, params(&gh, &token, json!({})));
    let o = in_sync(&*present, &cx).await;
    assert_eq!(o["online"], json!(true));
    assert_eq!(o["runner"]["id"], json!(id));
    assert_eq!(o["runner"]["labels"], json!(["self-hosted", "Linux", "X64", "proxmox"]));
    assert_eq!(o["runners"].as_array().unwrap().len(), 1);
    gh.set_runner_state(id, "offline", false);
    assert_eq!(in_sync(&*present, &cx).await["online"], json!(false));

    let absent = build(&GithubRunnerKind, params(&gh, &token, json!({"state": "absent"})));
    assert_eq!(
        drift(&*absent, &cx).await,
        format!("delete runner `runner-a` (id {id}) from `acme/app`")
    );
    assert!(converge(&*absent, &cx).await.unwrap().changed);
    assert!(gh.runners().is_empty());
    gh.clear_requests();
    in_sync(&*absent, &cx).await;
    assert!(gh.writes().is_empty());
}

#[tokio::test]
async fn lists_every_page() {
    let gh = GitHubEmulator::start().await.unwrap();
    let token = gh.add_token(&["acme/app"]);
    let cx = context_with_hosts(&[]);
    let out = converge(
        &*build(&GithubRunnerKind, params(&gh, &token, json!({"state": "token"}))),
        &cx,
    )
    .await
    .unwrap();
    let reg = out.outputs["registration_token"].as_str().unwrap();
    for i in 0..150 {
        gh.register_runner(reg, &format!("r{i:03}"), &[]).unwrap();
    }
    let o = in_sync(
        &*build(&GithubRunnerKind, params(&gh, &token, json!({"name": "r149"}))),
        &cx,
    )
    .await;
    assert_eq!(o["runners"].as_array().unwrap().len(), 150);
    assert_eq!(o["runner"]["name"], json!("r149"));
    assert_eq!(gh.requests().iter().filter(|r| r.method == "GET").count(), 2);
}

#[tokio::test]
async fn bad_credentials_and_unknown_repo() {
    logs::capture();
    let gh = GitHubEmulator::start().await.unwrap();
    let cx = context_with_hosts(&[]);
    let canary = "ghp_CANARYgithub0123456789abcdef";
    let err = build(&GithubRunnerKind, params(&gh, canary, json!({})))
        .check(&cx)
        .await
        .unwrap_err();
    assert!(err.message.contains("401 Bad credentials"), "{err}");
    assert!(!err.message.contains(canary) && !logs::text().contains(canary));

    let token = gh.add_token(&["acme/other"]);
    let err = build(&GithubRunnerKind, params(&gh, &token, json!({})))
        .check(&cx)
        .await
        .unwrap_err();
    assert!(err.message.contains("404 Not Found"), "{err}");
}
