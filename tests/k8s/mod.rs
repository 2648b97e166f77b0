//! The shipped `deploy-github-runner-k8s` workflow end to end against the
//! Kubernetes API server stand-in, and the stand-in held to the real client:
//! `kubectl` applies, reads and diffs against it as against a cluster
//! (kubectl.rs).
//! Requests are counted at the stand-in, so "changes nothing" means no write
//! reached it and "from the journal" means no request at all.

mod kubectl;

use crate::harness::{Ran, Sandbox};
use flowrun_lab::emulators::kube::{Credential, KubeEmulator};
use kubectl::{kubectl, kubectl_run};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

const NS: &str = "my-reforge-ai";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A stand-in with the namespace, Secrets and PVCs the footprint refers to,
/// the example inventory, and a kubeconfig.
struct Cluster {
    kube: KubeEmulator,
    sb: Sandbox,
    kubeconfig: PathBuf,
    // Serves the stand-in; dropped last.
    _rt: tokio::runtime::Runtime,
}

impl Cluster {
    fn new() -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let kube = rt.block_on(KubeEmulator::start()).unwrap();
        kube.create_namespace(NS);
        for (name, key) in [
            ("github-runner-config", "github-pat"),
            ("github-mcp-credentials", "github-mcp-token"),
        ] {
            kube.create(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
                               "data": {key: "bm90LWEtcmVhbC10b2tlbg=="}}),
            )
            .unwrap();
        }
        for claim in ["codex-home", "gemini-home"] {
            kube.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": NS},
                               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}))
                .unwrap();
        }
        let sb = Sandbox::new();
        let kubeconfig = sb.path("kubeconfig");
        std::fs::write(
            &kubeconfig,
            kube.kubeconfig(&Credential::Token(kube.admin_token().into()), None),
        )
        .unwrap();
        let c = Self {
            kube,
            sb,
            kubeconfig,
            _rt: rt,
        };
        c.inventory(|text| text);
        c
    }

    /// Write the example inventory, edited by `edit`.
    fn inventory(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(root().join("inventory/k8s-example/hosts.yml")).unwrap();
        std::fs::write(self.sb.path("hosts.yml"), edit(text)).unwrap();
    }

    fn workflow(name: &str) -> String {
        root().join(format!("workflows/{name}.yml")).display().to_string()
    }

    /// `flowrun ARGS -i hosts.yml -e kubeconfig=...`, expecting `code`.
    fn flowrun(&self, args: &[&str], code: i32) -> Ran {
        self.flowrun_checked(args, code, true)
    }

    /// `checked`: the run is checked against `plan` (the harness's default);
    /// off where a test counts what that extra `plan` does too.
    fn flowrun_checked(&self, args: &[&str], code: i32, checked: bool) -> Ran {
        let kc = format!("kubeconfig={}", self.kubeconfig.display());
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-i", "hosts.yml", "-e", &kc]);
        let cmd = self.sb.cmd(&all);
        let r = if checked { cmd } else { cmd.unchecked() }.expect(code);
        let token = self.kube.admin_token();
        assert!(
            !r.stdout.contains(token) && !r.stderr.contains(token),
            "the token leaked"
        );
        r
    }

    fn run(&self, extra: &[&str], code: i32) -> Ran {
        let wf = Self::workflow("deploy-github-runner-k8s");
        let mut args = vec!["run", wf.as_str()];
        args.extend_from_slice(extra);
        self.flowrun(&args, code)
    }

    fn plan(&self, code: i32) -> Ran {
        let wf = Self::workflow("deploy-github-runner-k8s");
        self.flowrun(&["plan", &wf], code)
    }

    fn deployment(&self, name: &str) -> Option<Value> {
        self.kube.get("apps/v1", "Deployment", NS, name)
    }
}

/// Apply the hand-written live footprint as `kubectl` would (with kubectl when installed).
fn apply_footprint_as_kubectl(c: &Cluster) {
    let file = root().join("tests/data/k8s/footprint.yaml");
    if let Some(k) = kubectl() {
        let (code, out, err) = kubectl_run(
            &k,
            &c.kubeconfig,
            &["apply", "--server-side", "-f", file.to_str().unwrap()],
        );
        assert_eq!(code, 0, "kubectl apply: {out}{err}");
        return;
    }
    eprintln!("kubectl not installed: applying the footprint as manager `kubectl` with a raw server-side apply");
    let text = std::fs::read_to_string(file).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    for d in docs {
        c.kube.apply_as("kubectl", d, false).unwrap();
    }
}

/// Wait (bounded) until the stand-in's controller reports the Deployment available.
fn wait_available(c: &Cluster, name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if c.deployment(name)
            .is_some_and(|d| d["status"]["availableReplicas"] == 1)
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{name} did not become available");
}

fn writes(c: &Cluster) -> Vec<String> {
    c.kube
        .writes()
        .iter()
        .map(|w| format!("{} {}?{}", w.method, w.path, w.query))
        .collect()
}

/// The JSON report's single step.
fn step(r: &Ran) -> Value {
    r.json()["steps"][0].clone()
}

#[test]
fn existing_footprint_from_another_manager_shows_no_drift_and_run_writes_nothing() {
    let c = Cluster::new();
    apply_footprint_as_kubectl(&c);
    wait_available(&c, "codex-gh-runner");
    wait_available(&c, "gemini-gh-runner");
    let before = c.deployment("codex-gh-runner").unwrap();
    c.kube.clear_requests();
    let r = c.plan(0);
    assert!(
        r.stdout.contains("runners on localhost: in sync, nothing to change"),
        "{}",
        r.stdout
    );
    let r = c.run(&["--check", "--diff"], 0);
    assert_eq!(
        r.recap("localhost"),
        "ok=1 changed=0 failed=0 skipped=0 unreachable=0",
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("@@"), "no diff expected:\n{}", r.stdout);
    let r = c.run(&["--output", "json"], 0);
    assert_eq!(step(&r)["status"], "ok", "{}", r.stdout);
    assert!(writes(&c).is_empty(), "no write may reach the server: {:?}", writes(&c));
    let after = c.deployment("codex-gh-runner").unwrap();
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
}

#[test]
fn an_image_change_previews_that_field_then_applies_and_waits() {
    let c = Cluster::new();
    c.run(&[], 0);
    c.inventory(|t| t.replace("codex-runner:1.0.0", "codex-runner:1.1.0"));
    c.kube.clear_requests();
    let r = c.plan(0);
    assert!(
        r.stdout
            .contains("runners on localhost: would update Deployment/codex-gh-runner in `my-reforge-ai`"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("-        image: ghcr.io/OWNER/codex-runner:1.0.0")
            && r.stdout.contains("+        image: ghcr.io/OWNER/codex-runner:1.1.0"),
        "{}",
        r.stdout
    );
    assert!(writes(&c).is_empty(), "plan writes nothing: {:?}", writes(&c));
    let r = c.run(&["--check", "--diff"], 0);
    assert_eq!(
        r.recap("localhost"),
        "ok=0 changed=1 failed=0 skipped=0 unreachable=0",
        "{}",
        r.stdout
    );
    let changed: Vec<&str> = r
        .stdout
        .lines()
        .map(str::trim_start)
        .filter(|l| {
            (l.starts_with("- ") || l.starts_with("+ ") || l.starts_with("-  ") || l.starts_with("+  "))
                && l.contains("image")
        })
        .collect();
    assert_eq!(changed.len(), 2, "exactly the image line changes:\n{}", r.stdout);
    assert!(
        r.stdout.contains("-        image: ghcr.io/OWNER/codex-runner:1.0.0"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("+        image: ghcr.io/OWNER/codex-runner:1.1.0"),
        "{}",
        r.stdout
    );
    let hunks = r.stdout.lines().filter(|l| l.trim_start().starts_with("@@")).count();
    assert_eq!(hunks, 1, "one hunk, in one object:\n{}", r.stdout);
    c.kube.clear_requests();
    let r = c.run(&["--output", "json"], 0);
    assert_eq!(step(&r)["status"], "changed", "{}", r.stdout);
    let d = c.deployment("codex-gh-runner").unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/OWNER/codex-runner:1.1.0"
    );
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(d["status"]["observedGeneration"], 2, "the run waited for the rollout");
    assert_eq!(d["status"]["updatedReplicas"], 1);
    assert_eq!(d["status"]["availableReplicas"], 1);
    assert_eq!(
        writes(&c).iter().filter(|w| w.starts_with("PATCH")).count(),
        1,
        "only the changed Deployment is applied: {:?}",
        writes(&c)
    );
}

#[test]
fn a_re_run_comes_from_the_journal_without_a_request_and_verify_only_reads() {
    let c = Cluster::new();
    c.run(&[], 0);
    c.kube.clear_requests();
    let r = c.run(&["--output", "json"], 0);
    assert_eq!(step(&r)["status"], "ok");
    assert_eq!(step(&r)["from_journal"], true);
    let r = c.plan(0);
    assert!(
        r.stdout.contains("journal: skip") && !r.stdout.contains("preview"),
        "{}",
        r.stdout
    );
    assert!(
        c.kube.requests().is_empty(),
        "a journaled re-run sends no request: {:?}",
        c.kube.requests()
    );
    let r = c.run(&["--verify", "--output", "json"], 0);
    assert_eq!(step(&r)["status"], "ok", "{}", r.stdout);
    let reqs = c.kube.requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter().all(|q| q.method == "GET" || q.dry_run),
        "--verify only reads and dry-runs: {reqs:?}"
    );
}

#[test]
fn a_live_edit_is_drift_to_verify_and_a_conflict_unless_forced() {
    let c = Cluster::new();
    c.run(&[], 0);
    c.kube
        .merge_patch_as(
            "kubectl-edit",
            "apps/v1",
            "Deployment",
            NS,
            "gemini-gh-runner",
            &json!({"spec": {"replicas": 3}}),
        )
        .unwrap();
    let r = c.run(&["--verify", "--check", "--diff"], 0);
    assert!(
        r.stdout.contains("-  replicas: 3") && r.stdout.contains("+  replicas: 1"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("CONFLICT"), "{}", r.stdout);
    c.kube.clear_requests();
    let r = c.run(&["--verify"], 1);
    for want in [
        "`.spec.replicas` is managed by \"kubectl-edit\" using apps/v1",
        "force_conflicts: true",
    ] {
        assert!(r.stdout.contains(want), "{want:?} missing:\n{}", r.stdout);
    }
    assert!(writes(&c).is_empty(), "a conflict fails before any write");
    assert_eq!(c.deployment("gemini-gh-runner").unwrap()["spec"]["replicas"], 3);
    c.run(&["--verify", "-e", "force_conflicts=true"], 0);
    assert_eq!(c.deployment("gemini-gh-runner").unwrap()["spec"]["replicas"], 1);
}

#[test]
fn a_missing_secret_or_claim_fails_before_any_write() {
    let c = Cluster::new();
    c.kube.delete("v1", "Secret", NS, "github-mcp-credentials").unwrap();
    c.kube.delete("v1", "PersistentVolumeClaim", NS, "gemini-home").unwrap();
    c.kube.clear_requests();
    let r = c.plan(1);
    assert!(
        r.stdout
            .contains("runners on localhost: cannot preview: nothing was applied: "),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("Secret `github-mcp-credentials`"), "{}", r.stdout);
    let r = c.run(&[], 1);
    assert!(
        r.stdout
            .contains("Secret `github-mcp-credentials` in namespace `my-reforge-ai` does not exist"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("PersistentVolumeClaim `gemini-home` in namespace `my-reforge-ai` does not exist"),
        "{}",
        r.stdout
    );
    assert!(writes(&c).is_empty(), "{:?}", writes(&c));
    assert!(c.kube.names("apps/v1", "Deployment", NS).is_empty());
    let secret_reads: Vec<_> = c
        .kube
        .requests()
        .into_iter()
        .filter(|q| q.path.contains("/secrets/"))
        .collect();
    assert!(
        secret_reads.iter().all(|q| q.metadata_only),
        "Secrets are read as metadata only: {secret_reads:?}"
    );
}

#[test]
fn a_runner_removed_from_the_list_is_pruned_and_nothing_else() {
    let c = Cluster::new();
    c.run(&[], 0);
    // Someone else's Deployment in the same namespace, without the owner label.
    c.kube
        .apply_as(
            "kubectl",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "unrelated", "namespace": NS},
            "spec": {"selector": {"matchLabels": {"app": "u"}}, "template": {"metadata": {"labels": {"app": "u"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}}),
            false,
        )
        .unwrap();
    c.inventory(|t| {
        let start = t.find("      - name: gemini").unwrap();
        t[..start].to_owned()
    });
    let r = c.run(&["--check", "--diff"], 0);
    assert!(
        r.stdout
            .contains("delete Deployment/gemini-gh-runner in `my-reforge-ai` (prune: no longer rendered)"),
        "{}",
        r.stdout
    );
    c.run(&[], 0);
    let mut names = c.kube.names("apps/v1", "Deployment", NS);
    names.sort();
    assert_eq!(names, ["codex-gh-runner", "unrelated"]);
    assert!(c.kube.get("v1", "ConfigMap", NS, "codex-config-gh-runner").is_some());
    assert!(c.kube.get("v1", "PersistentVolumeClaim", NS, "gemini-home").is_some());
    assert!(c.kube.get("v1", "Secret", NS, "github-runner-config").is_some());
    // Destroy removes the rest of what it created, and nothing else.
    let wf = Cluster::workflow("destroy-github-runner-k8s");
    c.flowrun(&["run", &wf], 0);
    assert_eq!(c.kube.names("apps/v1", "Deployment", NS), ["unrelated"]);
    assert!(c.kube.get("v1", "ConfigMap", NS, "codex-config-gh-runner").is_none());
    assert!(c.kube.get("v1", "PersistentVolumeClaim", NS, "codex-home").is_some());
    assert_eq!(c.kube.names("v1", "Secret", NS).len(), 2);
}

#[test]
fn a_rollout_that_never_becomes_available_fails_at_the_timeout() {
    let c = Cluster::new();
    c.kube.set_never_available("codex-gh-runner");
    let r = c.run(&["-e", "rollout_timeout=2s"], 1);
    assert!(
        r.stdout.contains("timed out after 2s waiting for the rollout"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("0 of 1 updated replicas are available"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("Available=False MinimumReplicasUnavailable: Deployment does not have minimum availability."),
        "{}",
        r.stdout
    );
    assert_eq!(r.recap("localhost"), "ok=0 changed=0 failed=1 skipped=0 unreachable=0");
}

#[test]
fn exec_plugin_and_client_certificate_credentials_never_leak() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::new();
    let token = c.kube.add_token("gke-user", false);
    let plugin = c.sb.path("gke-auth-plugin");
    std::fs::write(
        &plugin,
        format!("#!/bin/sh\necho run >> '{}'\nprintf '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{token}\",\"expirationTimestamp\":\"2099-01-01T00:00:00Z\"}}}}'\n", c.sb.path("plugin-runs").display()),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exec = Credential::Exec {
        command: plugin.display().to_string(),
        args: vec![],
        env: vec![],
    };
    std::fs::write(&c.kubeconfig, c.kube.kubeconfig(&exec, None)).unwrap();
    // Unchecked against plan: plan's preview would run the plugin once more.
    let wf = Cluster::workflow("deploy-github-runner-k8s");
    let r = c.flowrun_checked(&["run", &wf, "--junit", "junit.xml", "-v"], 0, false);
    let users: Vec<_> = c.kube.writes().into_iter().filter_map(|w| w.user).collect();
    assert!(!users.is_empty() && users.iter().all(|u| u == "gke-user"), "{users:?}");
    assert_eq!(
        c.sb.read("plugin-runs").lines().count(),
        1,
        "one plugin run per process"
    );
    let journal = std::fs::read(c.sb.path("journal.db")).unwrap();
    for (what, text) in [
        ("stdout", r.stdout.clone()),
        ("stderr", r.stderr.clone()),
        ("junit", c.sb.read("junit.xml")),
    ] {
        assert!(!text.contains(&token), "the token leaked in {what}");
    }
    assert!(
        !journal.windows(token.len()).any(|w| w == token.as_bytes()),
        "the token is in the journal"
    );
    // A client certificate works too; its key never shows either.
    let cert = c.kube.issue_client_cert("cert-admin", &["system:masters"]);
    std::fs::write(
        &c.kubeconfig,
        c.kube.kubeconfig(&Credential::ClientCertData(cert.clone()), None),
    )
    .unwrap();
    let r = c.run(&["--verify"], 0);
    let key_line = cert.key_pem.lines().nth(1).unwrap();
    assert!(!r.stdout.contains(key_line) && !r.stderr.contains(key_line));
    assert!(c
        .kube
        .requests()
        .iter()
        .any(|q| q.user.as_deref() == Some("cert-admin")));
}

#[test]
fn bad_input_is_named() {
    let c = Cluster::new();
    let r = c.run(&["-e", "kube_context=prod"], 1);
    assert!(
        r.stdout.contains("has no context `prod` (contexts: `stand-in`)"),
        "{}",
        r.stdout
    );
    c.sb.write(
        "kinds.yml",
        r#"
        steps:
          - id: foo
            uses: k8s_apply
            with:
              kubeconfig: "{{kubeconfig}}"
              manifest: {apiVersion: example.com/v1, kind: Foo, metadata: {name: x}}
        "#,
    );
    let r = c.flowrun(&["run", "kinds.yml"], 1);
    assert!(
        r.stdout.contains("does not serve the API version `example.com/v1`"),
        "{}",
        r.stdout
    );
    // A literal manifest that holds no object is known when the workflow
    // loads: exit 2 at the item, nothing run (it was a run-time failure).
    c.sb.write(
        "literal.yml",
        r#"
        steps:
          - id: not-an-object
            uses: k8s_apply
            with:
              kubeconfig: "{{kubeconfig}}"
              manifest: [42]
        "#,
    );
    let r = c.flowrun(&["run", "literal.yml"], 2);
    assert!(r.stderr.contains("literal.yml:6:18"), "{}", r.stderr);
    assert!(r.stderr.contains("item 1 is a number, not an object"), "{}", r.stderr);
}

#[test]
fn the_k8s_workflows_validate_against_the_example_inventory() {
    for w in ["deploy-github-runner-k8s", "destroy-github-runner-k8s"] {
        let out = Command::new(env!("CARGO_BIN_EXE_flowrun"))
            .current_dir(root())
            .args(["validate", &format!("workflows/{w}.yml"), "-i", "inventory/k8s-example"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{w}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
