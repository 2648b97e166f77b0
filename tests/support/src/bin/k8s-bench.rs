//! Kubernetes benchmark (figures, not assertions): the `flowrun` binary
//! against the API server stand-in, for the shipped runner footprint (a
//! ConfigMap and two Deployments, `deploy-github-runner-k8s` with the example
//! inventory) and for 100 Deployments of one `k8s_apply` step. For each it
//! prints the wall time and the requests the stand-in received for: the
//! preview (`--check`), the apply (with the rollout wait), the journaled
//! re-run (target: under 50 ms, no request), `--verify`, and the preview of a
//! one-image change. The stand-in's rollouts take no time, so the apply
//! figures are flowrun's own.
//!
//! Run: `tests/bench/k8s.sh` (builds release binaries first).

use flowrun_lab::emulators::kube::{Credential, KubeEmulator, KubeOptions};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const NS: &str = "my-reforge-ai";

fn flowrun_bin() -> PathBuf {
    std::env::var_os("FLOWRUN_BIN").map_or_else(
        || {
            let me = std::env::current_exe().expect("own path");
            me.parent().expect("bin dir").join("flowrun")
        },
        PathBuf::from,
    )
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Bench<'a> {
    kube: &'a KubeEmulator,
    dir: &'a Path,
}

impl Bench<'_> {
    /// Run flowrun; the wall time in ms and the requests it sent.
    fn run(&self, what: &str, args: &[&str]) {
        self.kube.clear_requests();
        let t0 = Instant::now();
        let out = Command::new(flowrun_bin())
            .args(args)
            .current_dir(self.dir)
            .env("FLOWRUN_JOURNAL", self.dir.join("journal.db"))
            .env("XDG_STATE_HOME", self.dir.join("state"))
            .env_remove("KUBECONFIG")
            .output()
            .expect("run flowrun");
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if !out.status.success() {
            eprintln!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            panic!("flowrun {args:?} failed");
        }
        let reqs = self.kube.requests();
        let writes = reqs.iter().filter(|r| r.is_write()).count();
        let dry = reqs.iter().filter(|r| r.dry_run).count();
        println!(
            "  {what:<34} {ms:>9.1} ms   requests {:>4} (writes {writes}, dry runs {dry})",
            reqs.len()
        );
    }
}

fn seed(kube: &KubeEmulator) {
    kube.create_namespace(NS);
    for (name, key) in [
        ("github-runner-config", "github-pat"),
        ("github-mcp-credentials", "github-mcp-token"),
    ] {
        let _ = kube.create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "data": {key: "eA=="}}));
    }
    for claim in ["codex-home", "gemini-home"] {
        let _ = kube.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": NS}, "spec": {}}));
    }
}

fn footprint(kube: &KubeEmulator, dir: &Path, kubeconfig: &Path) {
    let inventory = std::fs::read_to_string(root().join("inventory/k8s-example/hosts.yml")).unwrap();
    std::fs::write(dir.join("hosts.yml"), &inventory).unwrap();
    let wf = root().join("workflows/deploy-github-runner-k8s.yml");
    let kc = format!("kubeconfig={}", kubeconfig.display());
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = ["run", wf.to_str().unwrap(), "-i", "hosts.yml", "-e", &kc, "-q"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let b = Bench { kube, dir };
    println!("footprint (ConfigMap + 2 Deployments, deploy-github-runner-k8s):");
    for (what, extra) in [
        ("preview (--check), nothing live", &["--check"][..]),
        ("apply and wait", &[][..]),
        ("journaled re-run", &[][..]),
        ("--verify (in sync)", &["--verify"][..]),
    ] {
        let a = args(extra);
        b.run(what, &a.iter().map(String::as_str).collect::<Vec<_>>());
    }
    std::fs::write(
        dir.join("hosts.yml"),
        inventory.replace("codex-runner:1.0.0", "codex-runner:1.1.0"),
    )
    .unwrap();
    let a = args(&["--check"]);
    b.run(
        "preview of one image change",
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let a = args(&[]);
    b.run(
        "apply of one image change",
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

fn hundred(kube: &KubeEmulator, dir: &Path, kubeconfig: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("templates/many.yaml.hbs"),
        "{{#each names}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: {{this}}, labels: {app: {{this}}, app.kubernetes.io/part-of: bench}}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: {{this}}}}\n  template:\n    metadata: {labels: {app: {{this}}}}\n    spec:\n      automountServiceAccountToken: false\n      containers:\n      - name: runner\n        image: {{#if (eq this ../changed)}}ghcr.io/acme/runner:2{{else}}ghcr.io/acme/runner:1{{/if}}\n        resources: {requests: {cpu: '0.5', memory: 512Mi}, limits: {cpu: '1', memory: 1Gi}}\n        env: [{name: GITHUB_PAT, valueFrom: {secretKeyRef: {name: github-runner-config, key: github-pat}}}]\n{{/each}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("many.yml"),
        "name: many\nvars: {changed: none}\nsteps:\n  - id: many\n    uses: k8s_apply\n    with:\n      kubeconfig: \"{{kubeconfig}}\"\n      namespace: my-reforge-ai\n      src: templates/many.yaml.hbs\n      wait: true\n      prune: true\n      owner_label: app.kubernetes.io/part-of=bench\n",
    )
    .unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("runner-{i:03}")).collect();
    std::fs::write(
        dir.join("many-hosts.yml"),
        serde_json::to_string(&json!({"all": {"vars": {"names": names}}})).unwrap(),
    )
    .unwrap();
    let kc = format!("kubeconfig={}", kubeconfig.display());
    let base = ["run", "many.yml", "-i", "many-hosts.yml", "-e", kc.as_str(), "-q"];
    let b = Bench { kube, dir };
    println!("{n} Deployments (one k8s_apply step):");
    let with = |extra: &[&'static str]| -> Vec<&str> { base.iter().copied().chain(extra.iter().copied()).collect() };
    b.run("preview (--check), nothing live", &with(&["--check"]));
    b.run("apply and wait", &with(&[]));
    b.run("journaled re-run", &with(&[]));
    b.run("--verify (in sync)", &with(&["--verify"]));
    b.run(
        "preview of one image change",
        &with(&["--check", "-e", "changed=runner-042"]),
    );
    b.run("apply of one image change", &with(&["-e", "changed=runner-042"]));
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let kube = rt
        .block_on(KubeEmulator::start_with(KubeOptions {
            rollout: Duration::ZERO,
            ..KubeOptions::default()
        }))
        .expect("start the stand-in");
    seed(&kube);
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        kube.kubeconfig(&Credential::Token(kube.admin_token().into()), None),
    )
    .unwrap();
    println!("flowrun against the Kubernetes API server stand-in ({})", kube.url());
    footprint(&kube, dir.path(), &kubeconfig);
    let many = tempfile::tempdir().expect("temp dir");
    hundred(&kube, many.path(), &kubeconfig, n);
}
