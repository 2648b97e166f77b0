//! The emulators reject what the real servers reject, so a wrong client
//! fails in these tests rather than in production.

use flowrun_lab::emulators::github::GitHubEmulator;
use flowrun_lab::emulators::proxmox::{ProxmoxEmulator, TEMPLATE_ID};
use flowrun_steps::api::{ApiClient, ApiError, ClientOptions, Req, RetryPolicy};
use serde_json::{json, Value};
use std::time::Duration;

fn pve_client(pve: &ProxmoxEmulator, auth: Option<String>) -> ApiClient {
    let mut opts = ClientOptions::new("proxmox", format!("{}/api2/json", pve.url()));
    opts.ca_file = Some(pve.ca_file().to_owned());
    opts.retry = RetryPolicy {
        attempts: 1,
        ..RetryPolicy::default()
    };
    opts.auth = auth.map(|a| ("authorization", a));
    ApiClient::new(opts).unwrap()
}

fn token(pve: &ProxmoxEmulator) -> Option<String> {
    Some(format!("PVEAPIToken={}={}", pve.token_id(), pve.token_secret()))
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

async fn err(api: &ApiClient, req: Req) -> ApiError {
    api.send(req).await.expect_err("the emulator should refuse this")
}

async fn wait_task(api: &ApiClient, upid: &str) {
    for _ in 0..100 {
        let s = api
            .send(Req::get(format!("/nodes/pve/tasks/{upid}/status")))
            .await
            .unwrap();
        if s.json["data"]["status"] == "stopped" {
            assert_eq!(s.json["data"]["exitstatus"], "OK");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("task {upid} did not stop");
}

#[tokio::test]
async fn proxmox_refuses_missing_or_wrong_auth() {
    let pve = ProxmoxEmulator::start().await.unwrap();
    let e = err(&pve_client(&pve, None), Req::get("/version")).await;
    assert_eq!(
        (e.status, e.message.as_str()),
        (Some(401), "proxmox GET /version: 401 No ticket")
    );
    // The older `USER@REALM!TOKEN:SECRET` spelling and a Bearer header are not what the server takes.
    for wrong in [
        format!("PVEAPIToken={}:{}", pve.token_id(), pve.token_secret()),
        format!("Bearer {}", pve.token_secret()),
    ] {
        let e = err(&pve_client(&pve, Some(wrong)), Req::get("/version")).await;
        assert!(e.is(401), "{e}");
    }
    let ok = pve_client(&pve, token(&pve)).send(Req::get("/version")).await.unwrap();
    assert_eq!(ok.json["data"]["release"], "8.2");
}

#[tokio::test]
async fn proxmox_form_booleans_are_0_or_1_but_json_is_accepted() {
    let pve = ProxmoxEmulator::start().await.unwrap();
    let api = pve_client(&pve, token(&pve));
    let clone = format!("/nodes/pve/qemu/{TEMPLATE_ID}/clone");
    let e = err(
        &api,
        Req::post(&clone).form(pairs(&[("newid", "101"), ("full", "true")])),
    )
    .await;
    assert!(e.is(400));
    assert_eq!(e.body["errors"]["full"], "type check ('boolean') failed - got 'true'");
    assert!(e
        .message
        .contains("Parameter verification failed.: full: type check ('boolean') failed - got 'true'"));

    let ok = api
        .send(Req::post(&clone).json(json!({"newid": 101, "name": "a", "full": true})))
        .await
        .unwrap();
    let upid = ok.json["data"].as_str().unwrap().to_owned();
    assert!(upid.starts_with("UPID:pve:"), "{upid}");
    // A locked VM (clone running) refuses changes until the task ends.
    wait_task(&api, &upid).await;
    let ok = api
        .send(Req::put("/nodes/pve/qemu/101/config").json(json!({"onboot": true, "cores": 2})))
        .await
        .unwrap();
    assert_eq!(ok.json, json!({"data": null}));
    assert_eq!(pve.vm(101).unwrap().config["onboot"], json!(1));
}

#[tokio::test]
async fn proxmox_sshkeys_must_be_percent_encoded() {
    let pve = ProxmoxEmulator::start().await.unwrap();
    let api = pve_client(&pve, token(&pve));
    pve.add_vm(150, "plain", false);
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host";
    let e = err(
        &api,
        Req::put("/nodes/pve/qemu/150/config").form(pairs(&[("sshkeys", key)])),
    )
    .await;
    assert!(e.is(400));
    assert_eq!(
        e.body["errors"]["sshkeys"],
        format!("invalid format - invalid urlencoded string: {key}")
    );
    // `+` for spaces (form-style encoding applied once) is not the urlencoded format either.
    let plus = key.replace(' ', "+");
    assert!(err(
        &api,
        Req::put("/nodes/pve/qemu/150/config").form(pairs(&[("sshkeys", &plus)]))
    )
    .await
    .is(400));
    // Encoded, but not a key.
    let e = err(
        &api,
        Req::put("/nodes/pve/qemu/150/config").form(pairs(&[("sshkeys", "hello%20world")])),
    )
    .await;
    assert_eq!(
        (e.status, e.message.contains("SSH public key validation error")),
        (Some(500), true)
    );
    let encoded: String = percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC).to_string();
    api.send(Req::put("/nodes/pve/qemu/150/config").form(pairs(&[("sshkeys", &encoded)])))
        .await
        .unwrap();
}

#[tokio::test]
async fn proxmox_unknown_parameters_endpoints_and_conflicts() {
    let pve = ProxmoxEmulator::start().await.unwrap();
    let api = pve_client(&pve, token(&pve));
    let e = err(
        &api,
        Req::put("/nodes/pve/qemu/9000/config").form(pairs(&[("corez", "2")])),
    )
    .await;
    assert!(e.is(400));
    assert!(e.body["errors"]["corez"]
        .as_str()
        .unwrap()
        .contains("not defined in schema"));
    let e = err(&api, Req::get("/nodes/pve/lxc")).await;
    assert!(e.is(501), "{e}");
    let next = api.send(Req::get("/cluster/nextid")).await.unwrap();
    assert_eq!(next.json["data"], json!("100"), "nextid answers a string");
    let e = err(
        &api,
        Req::get("/nodes/pve/tasks/UPID:pve:0:0:0:qmstart:1:root@pam:/status"),
    )
    .await;
    assert!(e.is(400), "{e}");

    pve.add_vm(101, "busy", false);
    let e = err(
        &api,
        Req::post(format!("/nodes/pve/qemu/{TEMPLATE_ID}/clone")).form(pairs(&[("newid", "101")])),
    )
    .await;
    assert_eq!(
        (e.status, e.message.as_str()),
        (
            Some(500),
            "proxmox POST /nodes/pve/qemu/9000/clone: 500 unable to create VM 101: config file already exists"
        )
    );
    let start = api.send(Req::post("/nodes/pve/qemu/101/status/start")).await.unwrap();
    wait_task(&api, start.json["data"].as_str().unwrap()).await;
    let e = err(&api, Req::delete("/nodes/pve/qemu/101").query("purge", 1)).await;
    assert!(e.message.ends_with("500 VM 101 is running - destroy failed"), "{e}");
    // The template has no agent, and a stopped VM's agent does not answer.
    let e = err(&api, Req::get("/nodes/pve/qemu/101/agent/network-get-interfaces")).await;
    assert!(e.message.contains("No QEMU guest agent configured"), "{e}");
}

#[tokio::test]
async fn github_insists_on_its_headers() {
    let gh = GitHubEmulator::start().await.unwrap();
    let token = gh.add_token(&["acme/app"]);
    let client = |headers: Vec<(&'static str, String)>| {
        let mut opts = ClientOptions::new("github", gh.url());
        opts.headers = headers;
        opts.auth = Some(("authorization", format!("Bearer {token}")));
        ApiClient::new(opts).unwrap()
    };
    let path = "/repos/acme/app/actions/runners";
    let e = err(
        &client(vec![("accept", "application/vnd.github+json".into())]),
        Req::get(path),
    )
    .await;
    assert!(e.is(400) && e.message.contains("X-GitHub-Api-Version"), "{e}");
    let e = err(
        &client(vec![("x-github-api-version", "2022-11-28".into())]),
        Req::get(path),
    )
    .await;
    assert!(e.is(415), "{e}");
    let ok = client(vec![
        ("accept", "application/vnd.github+json".into()),
        ("x-github-api-version", "2022-11-28".into()),
    ])
    .send(Req::get(path))
    .await
    .unwrap();
    assert_eq!(ok.json, json!({"total_count": 0, "runners": Value::Array(vec![])}));
}
