//! Every kubeconfig credential form, and credentials that never show.

use super::*;
use flowrun_steps::testing::converge;
use std::os::unix::fs::PermissionsExt;

fn write_config(f: &Fixture, name: &str, cred: &Credential) -> PathBuf {
    let p = f.dir.path().join(name);
    std::fs::write(&p, f.kube.kubeconfig(cred, Some(NS))).unwrap();
    p
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

async fn apply_with(config: &std::path::Path, name: &str) -> Result<bool, String> {
    let step = build(json!({"kubeconfig": config, "manifest": cm(name)}));
    converge(&*step, &cx()).await.map(|a| a.changed).map_err(|e| e.message)
}

#[tokio::test]
async fn token_file_and_client_certificates() {
    let f = Fixture::new().await;
    let token = f.kube.add_token("deployer", false);
    let tf = f.dir.path().join("token");
    std::fs::write(&tf, format!("{token}\n")).unwrap();
    assert!(apply_with(&write_config(&f, "tf", &Credential::TokenFile(tf)), "a")
        .await
        .unwrap());
    let cert = f.kube.issue_client_cert("cert-user", &["system:masters"]);
    assert!(
        apply_with(&write_config(&f, "cd", &Credential::ClientCertData(cert.clone())), "b")
            .await
            .unwrap()
    );
    let (c, k) = (f.dir.path().join("c.pem"), f.dir.path().join("k.pem"));
    std::fs::write(&c, &cert.cert_pem).unwrap();
    std::fs::write(&k, &cert.key_pem).unwrap();
    assert!(
        apply_with(&write_config(&f, "cf", &Credential::ClientCertFiles(c, k)), "c")
            .await
            .unwrap()
    );
    let users: Vec<Option<String>> = f.kube.writes().iter().map(|w| w.user.clone()).collect();
    assert_eq!(
        users,
        [
            Some("deployer".into()),
            Some("cert-user".into()),
            Some("cert-user".into())
        ]
    );
}

#[tokio::test]
async fn refused_credentials_are_named_never_shown() {
    let f = Fixture::new().await;
    let token = f.kube.add_token("gone", false);
    f.kube.revoke_token(&token);
    let e = apply_with(&write_config(&f, "revoked", &Credential::Token(token.clone())), "a")
        .await
        .unwrap_err();
    assert!(
        e.contains("refused the credentials (401 Unauthorized): the bearer token in `token` of user `stand-in-user`"),
        "{e}"
    );
    assert!(!e.contains(&token), "the token leaked: {e}");
    let viewer = f.kube.add_token("viewer", true);
    let e = apply_with(&write_config(&f, "viewer", &Credential::Token(viewer.clone())), "a")
        .await
        .unwrap_err();
    assert!(
        e.contains("is forbidden: User \"viewer\" cannot patch resource \"configmaps\""),
        "{e}"
    );
    assert!(
        e.contains("403 Forbidden, authenticated with the bearer token in `token`"),
        "{e}"
    );
    assert!(!e.contains(&viewer), "{e}");
}

fn plugin(f: &Fixture, expiry: &str) -> (PathBuf, PathBuf, PathBuf) {
    let script = f.dir.path().join(format!("auth-plugin-{expiry}"));
    let count = f.dir.path().join(format!("count-{expiry}"));
    let token_file = f.dir.path().join(format!("plugin-token-{expiry}"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$KUBERNETES_EXEC_INFO\" >> '{count}'\nprintf '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"%s\",\"expirationTimestamp\":\"{expiry}\"}}}}' \"$(cat '{tf}')\"\n",
            count = count.display(),
            tf = token_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, count, token_file)
}

fn runs(count: &std::path::Path) -> usize {
    std::fs::read_to_string(count).unwrap_or_default().lines().count()
}

#[tokio::test]
async fn exec_plugin_is_cached_until_expiry_and_refreshed_after_a_401() {
    let f = Fixture::new().await;
    let (script, count, token_file) = plugin(&f, "2099-01-01T00:00:00Z");
    let first = f.kube.add_token("gke-user", false);
    std::fs::write(&token_file, &first).unwrap();
    let exec = Credential::Exec {
        command: script.display().to_string(),
        args: vec![],
        env: vec![],
    };
    let config = write_config(&f, "exec", &exec);
    assert!(apply_with(&config, "a").await.unwrap());
    assert!(apply_with(&config, "b").await.unwrap());
    assert_eq!(runs(&count), 1, "the credential is reused until it expires");
    let info: Value = serde_json::from_str(std::fs::read_to_string(&count).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(info["kind"], "ExecCredential");
    assert_eq!(info["spec"]["cluster"]["server"], f.kube.url(), "provideClusterInfo");
    // The token is revoked and the plugin now gives a new one: a 401 fetches it again.
    f.kube.revoke_token(&first);
    let second = f.kube.add_token("gke-user", false);
    std::fs::write(&token_file, &second).unwrap();
    assert!(apply_with(&config, "c").await.unwrap());
    assert_eq!(runs(&count), 2);
    // An expired credential is fetched for each use.
    let (script, count, token_file) = plugin(&f, "2000-01-01T00:00:00Z");
    std::fs::write(&token_file, &second).unwrap();
    let config = write_config(
        &f,
        "expired",
        &Credential::Exec {
            command: script.display().to_string(),
            args: vec![],
            env: vec![],
        },
    );
    apply_with(&config, "d").await.unwrap();
    apply_with(&config, "e").await.unwrap();
    assert_eq!(runs(&count), 2);
}

#[tokio::test]
async fn exec_plugin_failures_say_what_to_do() {
    let f = Fixture::new().await;
    let missing = Credential::Exec {
        command: "no-such-auth-plugin".into(),
        args: vec![],
        env: vec![],
    };
    let e = apply_with(&write_config(&f, "missing", &missing), "a")
        .await
        .unwrap_err();
    assert!(
        e.contains("the `exec` plugin `no-such-auth-plugin` is not installed"),
        "{e}"
    );
    let script = f.dir.path().join("failing-plugin");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'ERROR: gcloud auth login required' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let failing = Credential::Exec {
        command: script.display().to_string(),
        args: vec![],
        env: vec![],
    };
    let e = apply_with(&write_config(&f, "failing", &failing), "a")
        .await
        .unwrap_err();
    assert!(
        e.contains("failed (exit status: 1): ERROR: gcloud auth login required"),
        "{e}"
    );
}

#[tokio::test]
async fn certificates_are_verified_unless_the_kubeconfig_says_insecure() {
    let f = Fixture::new().await;
    let base = f
        .kube
        .kubeconfig(&Credential::Token(f.kube.admin_token().into()), Some(NS));
    let mut doc: Value = serde_json::from_str(&base).unwrap();
    doc["clusters"][0]["cluster"]
        .as_object_mut()
        .unwrap()
        .remove("certificate-authority-data");
    let p = f.dir.path().join("no-ca");
    std::fs::write(&p, doc.to_string()).unwrap();
    f.kube.clear_requests();
    let e = apply_with(&p, "a").await.unwrap_err();
    assert!(e.contains("certificate"), "{e}");
    assert!(!e.contains("gave up after"), "a certificate error is not retried: {e}");
    doc["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = json!(true);
    let p = f.dir.path().join("insecure");
    std::fs::write(&p, doc.to_string()).unwrap();
    assert!(apply_with(&p, "b").await.unwrap());
}
