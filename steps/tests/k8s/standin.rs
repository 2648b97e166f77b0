//! The stand-in answers raw requests as the API server documents it: the
//! Status bodies of 401, 404, 415 and 422, dry runs that store nothing, and
//! generation/resourceVersion rules. (kubectl holds it to the real client in
//! the end-to-end tests.)

use super::*;
use serde_json::json;

fn client(f: &Fixture) -> reqwest::Client {
    flowrun_steps::http_client::ensure_crypto_provider();
    let ca = reqwest::Certificate::from_pem(f.kube.ca_pem().as_bytes()).unwrap();
    reqwest::Client::builder().tls_certs_only([ca]).build().unwrap()
}

async fn send(f: &Fixture, method: reqwest::Method, path: &str, ct: Option<&str>, body: &Value) -> (u16, Value) {
    let mut b = client(f)
        .request(method, format!("{}{path}", f.kube.url()))
        .bearer_auth(f.kube.admin_token());
    if let Some(ct) = ct {
        b = b.header("content-type", ct).body(serde_json::to_vec(body).unwrap());
    }
    let r = b.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

const CM: &str = "/api/v1/namespaces/my-reforge-ai/configmaps/c";

fn cm(v: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": v}})
}

#[tokio::test]
async fn status_bodies_as_documented() {
    let f = Fixture::new().await;
    let r = client(&f)
        .get(format!("{}/api/v1/namespaces", f.kube.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "Unauthorized");
    let (code, body) = send(&f, reqwest::Method::PATCH, CM, Some("text/plain"), &cm("1")).await;
    assert_eq!((code, body["reason"].as_str()), (415, Some("UnsupportedMediaType")));
    let (code, body) = send(
        &f,
        reqwest::Method::PATCH,
        CM,
        Some("application/apply-patch+yaml"),
        &cm("1"),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        body["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let (code, body) = send(&f, reqwest::Method::GET, "/apis/apps/v1/nothing", None, &Value::Null).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (404, Some("the server could not find the requested resource"))
    );
    let (code, body) = send(&f, reqwest::Method::GET, CM, None, &Value::Null).await;
    assert_eq!((code, body["details"]["kind"].as_str()), (404, Some("configmaps")));
}

#[tokio::test]
async fn dry_runs_store_nothing_and_no_ops_keep_the_resource_version() {
    let f = Fixture::new().await;
    let apply = |q: &'static str, v: &'static str| {
        let f = &f;
        async move {
            send(
                f,
                reqwest::Method::PATCH,
                &format!("{CM}?fieldManager=t{q}"),
                Some("application/apply-patch+yaml"),
                &cm(v),
            )
            .await
        }
    };
    let (code, body) = apply("&dryRun=All", "1").await;
    assert_eq!(code, 201);
    assert_eq!(body["data"]["k"], "1");
    assert!(
        f.kube.get("v1", "ConfigMap", NS, "c").is_none(),
        "a dry run stores nothing"
    );
    let (code, first) = apply("", "1").await;
    assert_eq!(code, 201);
    let (code, again) = apply("", "1").await;
    assert_eq!(code, 200);
    assert_eq!(
        again["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"],
        "a no-op apply"
    );
    let (_, preview) = apply("&dryRun=All", "2").await;
    assert_eq!(preview["data"]["k"], "2");
    assert_eq!(f.kube.get("v1", "ConfigMap", NS, "c").unwrap()["data"]["k"], "1");
    let (code, body) = apply("&dryRun=Some", "2").await;
    assert_eq!(code, 422, "{body}");
}

#[tokio::test]
async fn generation_moves_with_the_spec_only() {
    let f = Fixture::new().await;
    let mut d = runner("codex", "ghcr.io/acme/codex-runner:1.0");
    d["metadata"]["namespace"] = json!(NS);
    let first = f.kube.apply_as("t", d.clone(), false).unwrap();
    assert_eq!(first["metadata"]["generation"], 1);
    d["metadata"]["labels"]["extra"] = json!("yes");
    assert_eq!(
        f.kube.apply_as("t", d.clone(), false).unwrap()["metadata"]["generation"],
        1,
        "labels do not bump it"
    );
    d["spec"]["replicas"] = json!(2);
    assert_eq!(f.kube.apply_as("t", d, false).unwrap()["metadata"]["generation"], 2);
}
