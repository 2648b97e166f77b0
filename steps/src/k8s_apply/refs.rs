//! What the pods of the applied workloads refer to by name and expect to
//! exist — Secrets (`secretKeyRef`, `envFrom`, secret volumes, image pull
//! secrets), ConfigMaps, PersistentVolumeClaims, the ServiceAccount — so the
//! step can check, before it writes anything, that each exists. References
//! marked `optional`, and objects the same step applies, need no check.
//! Existence is read as metadata only: a Secret's data is never fetched.

use serde_json::Value;
use std::collections::BTreeMap;

/// A referenced object: (kind, namespace, name).
pub type Target = (&'static str, String, String);

/// Where each target is referred to from (`Deployment/x env GITHUB_PAT`).
pub type References = BTreeMap<Target, Vec<String>>;

fn optional(v: &Value) -> bool {
    v["optional"].as_bool().unwrap_or(false)
}

/// The pod spec of a workload object, if it has one.
fn pod_spec(obj: &Value) -> Option<&Value> {
    match obj["kind"].as_str()? {
        "Pod" => Some(&obj["spec"]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some(&obj["spec"]["template"]["spec"]),
        "CronJob" => Some(&obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        _ => None,
    }
    .filter(|s| s.is_object())
}

/// Add the references of `obj` (in namespace `ns`), labelled `who`.
pub fn collect(obj: &Value, ns: &str, who: &str, out: &mut References) {
    let Some(spec) = pod_spec(obj) else { return };
    let mut add = |kind: &'static str, name: Option<&str>, from: String| {
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            out.entry((kind, ns.to_owned(), name.to_owned()))
                .or_default()
                .push(format!("{who} {from}"));
        }
    };
    let containers = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().cloned().unwrap_or_default());
    for c in containers {
        let cname = c["name"].as_str().unwrap_or("?").to_owned();
        for e in c["env"].as_array().into_iter().flatten() {
            let var = e["name"].as_str().unwrap_or("?");
            let from = &e["valueFrom"];
            for (key, kind) in [("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")] {
                let r = &from[key];
                if r.is_object() && !optional(r) {
                    add(kind, r["name"].as_str(), format!("container `{cname}` env `{var}`"));
                }
            }
        }
        for e in c["envFrom"].as_array().into_iter().flatten() {
            for (key, kind) in [("secretRef", "Secret"), ("configMapRef", "ConfigMap")] {
                let r = &e[key];
                if r.is_object() && !optional(r) {
                    add(kind, r["name"].as_str(), format!("container `{cname}` envFrom"));
                }
            }
        }
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let vname = v["name"].as_str().unwrap_or("?");
        let from = format!("volume `{vname}`");
        if !optional(&v["secret"]) {
            add("Secret", v["secret"]["secretName"].as_str(), from.clone());
        }
        if !optional(&v["configMap"]) {
            add("ConfigMap", v["configMap"]["name"].as_str(), from.clone());
        }
        add(
            "PersistentVolumeClaim",
            v["persistentVolumeClaim"]["claimName"].as_str(),
            from.clone(),
        );
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            if !optional(&s["secret"]) {
                add("Secret", s["secret"]["name"].as_str(), from.clone());
            }
            if !optional(&s["configMap"]) {
                add("ConfigMap", s["configMap"]["name"].as_str(), from.clone());
            }
        }
    }
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        add("Secret", s["name"].as_str(), "imagePullSecrets".into());
    }
    let sa = spec["serviceAccountName"].as_str().or(spec["serviceAccount"].as_str());
    if sa != Some("default") {
        add("ServiceAccount", sa, "serviceAccountName".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_secrets_claims_and_config_maps() {
        let d = json!({"kind": "Deployment", "spec": {"template": {"spec": {
            "containers": [{"name": "runner",
                "env": [{"name": "GITHUB_PAT", "valueFrom": {"secretKeyRef": {"name": "github-runner-config", "key": "github-pat"}}},
                        {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "maybe", "key": "k", "optional": true}}}],
                "envFrom": [{"configMapRef": {"name": "settings"}}]}],
            "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "codex-home"}},
                        {"name": "cfg", "configMap": {"name": "codex-config-gh-runner"}}]}}}});
        let mut refs = References::new();
        collect(&d, "ns", "Deployment/codex", &mut refs);
        let keys: Vec<String> = refs.keys().map(|(k, _, n)| format!("{k}/{n}")).collect();
        assert_eq!(
            keys,
            [
                "ConfigMap/codex-config-gh-runner",
                "ConfigMap/settings",
                "PersistentVolumeClaim/codex-home",
                "Secret/github-runner-config"
            ]
        );
        assert_eq!(
            refs[&("Secret", "ns".into(), "github-runner-config".into())],
            ["Deployment/codex container `runner` env `GITHUB_PAT`"]
        );
    }
}
