//! `k8s_apply` against the Kubernetes API server stand-in: apply and
//! re-check in sync with no write, previews that show exactly what changes,
//! conflicts, references checked before any write, prune, rollouts,
//! credentials of every kubeconfig form, and errors in the API's words.

mod apply;
mod credentials;
mod errors;
mod shipped;
mod standin;

use flowrun_engine::step::{Check, Step, StepContext};
use flowrun_lab::emulators::kube::{Credential, KubeEmulator};
use flowrun_steps::k8s_apply::K8sApplyKind;
use serde_json::{json, Map, Value};
use std::path::PathBuf;

pub const NS: &str = "my-reforge-ai";

/// A stand-in with the runners' namespace, Secrets and PVCs, and a kubeconfig for it.
pub struct Fixture {
    pub kube: KubeEmulator,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl Fixture {
    pub async fn new() -> Self {
        let kube = KubeEmulator::start().await.expect("start the stand-in");
        kube.create_namespace(NS);
        for name in ["github-runner-config", "github-mcp-credentials"] {
            kube.create(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
                               "data": {"github-pat": "c2VjcmV0LXZhbHVl"}}),
            )
            .expect("seed a secret");
        }
        for name in ["codex-home", "gemini-home"] {
            kube.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": NS},
                               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
                .expect("seed a claim");
        }
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            kube.kubeconfig(&Credential::Token(kube.admin_token().into()), Some(NS)),
        )
        .unwrap();
        Self { kube, dir, kubeconfig }
    }

    /// Step parameters: the kubeconfig plus `extra`.
    pub fn params(&self, extra: Value) -> Value {
        let mut p = json!({"kubeconfig": self.kubeconfig});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    }

    pub fn build(&self, extra: Value) -> Box<dyn Step> {
        build(self.params(extra))
    }

    pub fn deployment(&self, name: &str) -> Option<Value> {
        self.kube.get("apps/v1", "Deployment", NS, name)
    }
}

pub fn build(params: Value) -> Box<dyn Step> {
    try_build(params).expect("build the step")
}

pub fn try_build(params: Value) -> Result<Box<dyn Step>, String> {
    let dir = std::env::temp_dir();
    flowrun_steps::testing::build(&K8sApplyKind, params, Value::Object(Map::new()), &dir).map_err(|e| e.message)
}

pub fn cx() -> StepContext {
    flowrun_steps::testing::local_context()
}

/// A runner Deployment as the shipped workflow renders it.
pub fn runner(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("{name}-gh-runner"), "labels": {"app": format!("{name}-gh-runner"), "app.kubernetes.io/part-of": "github-runners"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": format!("{name}-gh-runner")}},
            "template": {
                "metadata": {"labels": {"app": format!("{name}-gh-runner")}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "runner", "image": image, "imagePullPolicy": "Always",
                        "env": [{"name": "GITHUB_PAT", "valueFrom": {"secretKeyRef": {"name": "github-runner-config", "key": "github-pat"}}},
                                {"name": "RUNNER_LABELS", "value": format!("self-hosted,{name}")}],
                        "resources": {"requests": {"cpu": "0.5", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
                        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "home", "mountPath": format!("/home/runner/.{name}")}]
                    }],
                    "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": format!("{name}-home")}}]
                }
            }
        }
    })
}

pub fn config_map() -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "codex-config-gh-runner", "labels": {"app.kubernetes.io/part-of": "github-runners"}},
           "data": {"config.toml": "model = \"o3\"\n[sandbox]\nmode = \"workspace-write\"\n"}})
}

/// The footprint: the ConfigMap and two runner Deployments.
pub fn footprint(codex_image: &str) -> Value {
    json!([
        config_map(),
        runner("codex", codex_image),
        runner("gemini", "ghcr.io/acme/gemini-runner:1.0")
    ])
}

pub async fn check(step: &dyn Step) -> Result<Check, String> {
    step.check(&cx()).await.map_err(|e| e.message)
}

/// The check's pending change, failing the test when in sync.
pub async fn drift(step: &dyn Step) -> flowrun_engine::step::Pending {
    match check(step).await.expect("check") {
        Check::Drift(p) => p,
        Check::InSync(o) => panic!("expected drift, in sync with {o:?}"),
    }
}

pub async fn in_sync(step: &dyn Step) -> Map<String, Value> {
    match check(step).await.expect("check") {
        Check::InSync(o) => o,
        Check::Drift(p) => panic!("expected in sync, drift: {}\n{}", p.summary, p.diff.unwrap_or_default()),
    }
}
