//! The shipped `deploy-github-runner-k8s` workflow end to end against the
//! Kubernetes API server stand-in, and the stand-in held to the real client:
//! `kubectl` applies, reads and diffs against it as against a cluster.
//! Requests are counted at the stand-in, so "changes nothing" means no write
//! reached it and "from the journal" means no request at all.

use crate::harness::{Ran, Sandbox};
use flowrun_lab::emulators::kube::{Credential, KubeEmulator};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const NS: &str = "my-reforge-ai";
const CODEX_IMAGE: &str = "ghcr.io/OWNER/codex-runner:1.0.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A stand-in with the namespace, Secrets and PVCs the footprint refers to,
/// the example inventory, and a kubeconfig.
struct Cluster {
    rt: tokio::runtime::Runtime,
    kube: KubeEmulator,
    sb: Sandbox,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn new() -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let kube = rt.block_on(KubeEmulator::start()).unwrap();
        kube.create_namespace(NS);
        for (name, key) in [("github-runner-config", "github-pat"), ("github-mcp-credentials", "github-mcp-token")] {
            kube.create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
                               "data": {key: "bm90LWEtcmVhbC10b2tlbg=="}}))
                .unwrap();
        }
        for claim in ["codex-home", "gemini-home"] {
            kube.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": NS},
                               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}))
                .unwrap();
        }
        let sb = Sandbox::new();
        let kubeconfig = sb.path("kubeconfig");
        std::fs::write(&kubeconfig, kube.kubeconfig(&Credential::Token(kube.admin_token().into()), None)).unwrap();
        let c = Self { rt, kube, sb, kubeconfig };
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
        let kc = format!("kubeconfig={}", self.kubeconfig.display());
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-i", "hosts.yml", "-e", &kc]);
        let r = self.sb.cmd(&all).expect(code);
        let token = self.kube.admin_token();
        assert!(!r.stdout.contains(token) && !r.stderr.contains(token), "the token leaked");
        r
    }

    fn run(&self, extra: &[&str], code: i32) -> Ran {
        let wf = Self::workflow("deploy-github-runner-k8s");
        let mut args = vec!["run", wf.as_str()];
        args.extend_from_slice(extra);
        self.flowrun(&args, code)
    }

    fn deployment(&self, name: &str) -> Option<Value> {
        self.kube.get("apps/v1", "Deployment", NS, name)
    }
}

/// `kubectl` when installed (v1.32 here); tests that need it say when they skip.
fn kubectl() -> Option<PathBuf> {
    ["/usr/bin/kubectl", "/usr/local/bin/kubectl"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn kubectl_run(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn scratch_preview() {
    let c = Cluster::new();
    let r = c.run(&["--check", "--diff"], 0);
    println!("{}\n{}", r.stdout, r.stderr);
    let r = c.run(&[], 0);
    println!("{}\n{}", r.stdout, r.stderr);
    println!("{}", serde_json::to_string_pretty(&c.deployment("codex-gh-runner").unwrap()).unwrap());
    let _ = (&c.rt, kubectl());
}
