//! The shared API client: what it retries, for how long, and what it does not.

use flowrun_lab::emulators::github::GitHubEmulator;
use flowrun_lab::emulators::proxmox::ProxmoxEmulator;
use flowrun_steps::api::{ApiClient, ClientOptions, Req, RetryPolicy};
use std::time::Duration;

fn github(gh: &GitHubEmulator, token: &str, retry: RetryPolicy) -> ApiClient {
    let mut opts = ClientOptions::new("github", gh.url());
    opts.retry = retry;
    opts.headers = vec![
        ("accept", "application/vnd.github+json".into()),
        ("x-github-api-version", "2022-11-28".into()),
    ];
    opts.auth = Some(("authorization", format!("Bearer {token}")));
    ApiClient::new(opts).unwrap()
}

const LIST: &str = "/repos/acme/app/actions/runners";

#[tokio::test]
async fn honours_retry_after() {
    let gh = GitHubEmulator::start().await.unwrap();
    let token = gh.add_token(&["acme/app"]);
    let api = github(&gh, &token, RetryPolicy::default());
    gh.throttle_next_requests(1, 1);
    api.send(Req::get(LIST)).await.unwrap();
    assert_eq!(gh.requests().iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);

    // A wait longer than the whole retry budget: give up at once, with the API's answer.
    gh.clear_requests();
    gh.throttle_next_requests(1, 3600);
    let e = api.send(Req::get(LIST)).await.unwrap_err();
    assert!(e.is(429), "{e}");
    assert!(
        e.message.contains("429 Too Many Requests (gave up after 1 attempt"),
        "{e}"
    );
    assert_eq!(gh.requests().len(), 1);
}

#[tokio::test]
async fn retries_are_bounded_in_time_and_count() {
    let gh = GitHubEmulator::start().await.unwrap();
    let token = gh.add_token(&["acme/app"]);
    gh.fail_next_requests(1000);
    let by_count = RetryPolicy {
        attempts: 3,
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        total: Duration::from_secs(60),
    };
    let e = github(&gh, &token, by_count).send(Req::get(LIST)).await.unwrap_err();
    assert!(
        e.message.contains("503 Service Unavailable (gave up after 3 attempts"),
        "{e}"
    );
    assert_eq!(gh.requests().len(), 3);

    gh.clear_requests();
    let by_time = RetryPolicy {
        attempts: 1000,
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(50),
        total: Duration::from_millis(400),
    };
    let e = github(&gh, &token, by_time).send(Req::get(LIST)).await.unwrap_err();
    assert!(e.message.contains("gave up after"), "{e}");
    let n = gh.requests().len();
    assert!((2..=10).contains(&n), "{n} attempts in a 400 ms budget of 50 ms pauses");
}

#[tokio::test]
async fn a_refused_connection_is_retried_but_a_bad_certificate_is_not() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut opts = ClientOptions::new("gitlab", format!("http://127.0.0.1:{port}"));
    opts.retry = RetryPolicy {
        attempts: 3,
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
        total: Duration::from_secs(10),
    };
    let e = ApiClient::new(opts).unwrap().send(Req::post("/x")).await.unwrap_err();
    assert_eq!(e.status, None);
    assert!(
        e.message.contains("cannot reach") && e.message.contains("gave up after 3 attempts"),
        "{e}"
    );

    let pve = ProxmoxEmulator::start().await.unwrap();
    let e = ApiClient::new(ClientOptions::new("proxmox", pve.url()))
        .unwrap()
        .send(Req::get("/api2/json/version"))
        .await
        .unwrap_err();
    assert!(e.message.to_lowercase().contains("certificate"), "{e}");
    assert!(
        !e.message.contains("gave up"),
        "a certificate error is not retried: {e}"
    );
}

#[tokio::test]
async fn a_bad_ca_file_is_a_parameter_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.pem");
    std::fs::write(&file, "not a certificate").unwrap();
    let mut opts = ClientOptions::new("proxmox", "https://127.0.0.1:8006");
    opts.ca_file = Some(file);
    let e = ApiClient::new(opts).unwrap_err();
    assert!(
        e.message.starts_with("parameter `ca_file`: ") && e.message.contains("holds no PEM certificate"),
        "{e}"
    );
}
