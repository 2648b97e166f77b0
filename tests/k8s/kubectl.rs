//! The stand-in held to the real client: what `kubectl` (v1.32 here) does
//! against it is what it does against a cluster. Skipped, saying so, where
//! kubectl is not installed.

use super::{root, Cluster, NS};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `kubectl` when installed (v1.32 here); tests that need it say when they skip.
pub fn kubectl() -> Option<PathBuf> {
    ["/usr/bin/kubectl", "/usr/local/bin/kubectl"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

pub fn kubectl_run(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
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

/// The stand-in held to the real client: what kubectl does against it is
/// what it does against a cluster.
#[test]
fn kubectl_applies_and_reads_against_the_stand_in() {
    let Some(k) = kubectl() else {
        eprintln!("skipped: kubectl is not installed");
        return;
    };
    let c = Cluster::new();
    let file = root().join("tests/data/k8s/footprint.yaml");
    let f = file.to_str().unwrap();
    let kc = &c.kubeconfig;
    let (code, out, err) = kubectl_run(&k, kc, &["apply", "--server-side", "-f", f]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("deployment.apps/codex-gh-runner serverside-applied"),
        "{out}"
    );
    let (code, out, _) = kubectl_run(&k, kc, &["apply", "--server-side", "-f", f]);
    assert_eq!(code, 0);
    assert!(
        out.contains("deployment.apps/codex-gh-runner serverside-applied"),
        "{out}"
    );
    let (code, yaml, err) = kubectl_run(
        &k,
        kc,
        &["get", "deployment", "codex-gh-runner", "-n", NS, "-o", "yaml"],
    );
    assert_eq!(code, 0, "{err}");
    let live: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(live["metadata"]["generation"], 1, "a no-op re-apply changes nothing");
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "500m"
    );
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "4Gi"
    );
    assert_eq!(live["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(live["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    assert!(
        live["metadata"].get("managedFields").is_none(),
        "kubectl hides managedFields"
    );
}

#[test]
fn kubectl_diffs_and_conflicts_against_the_stand_in() {
    let Some(k) = kubectl() else {
        eprintln!("skipped: kubectl is not installed");
        return;
    };
    let c = Cluster::new();
    let file = root().join("tests/data/k8s/footprint.yaml");
    let f = file.to_str().unwrap();
    let kc = &c.kubeconfig;
    let (code, out, err) = kubectl_run(&k, kc, &["apply", "--server-side", "-f", f]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = kubectl_run(&k, kc, &["diff", "--server-side", "-f", f]);
    assert_eq!(code, 0, "no differences: {out}{err}");
    let changed = c.sb.write(
        "changed.yaml",
        &std::fs::read_to_string(&file)
            .unwrap()
            .replace("codex-runner:1.0.0", "codex-runner:2.0.0"),
    );
    let (code, out, err) = kubectl_run(&k, kc, &["diff", "--server-side", "-f", changed.to_str().unwrap()]);
    assert_eq!(code, 1, "differences: {out}{err}");
    assert!(
        out.contains("-        image: ghcr.io/OWNER/codex-runner:1.0.0")
            && out.contains("+        image: ghcr.io/OWNER/codex-runner:2.0.0"),
        "{out}"
    );
    assert!(
        c.kube
            .writes()
            .iter()
            .all(|w| !w.path.contains("deployments") || w.query.contains("fieldValidation")),
        "diff wrote nothing"
    );
    // Another manager changing an owned field conflicts, as on a cluster.
    let (code, _, err) = kubectl_run(
        &k,
        kc,
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "-f",
            changed.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("conflict with \"kubectl\"")
            && err.contains(".spec.template.spec.containers[name=\"runner\"].image"),
        "{err}"
    );
    let (code, out, err) = kubectl_run(&k, kc, &["get", "deployment", "nope", "-n", NS]);
    assert_eq!(code, 1);
    assert!(err.contains("deployments.apps \"nope\" not found"), "{out}{err}");
}
