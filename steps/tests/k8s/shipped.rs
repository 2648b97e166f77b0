//! The shipped footprint template, rendered with the example inventory's
//! variables over the workflow's defaults, as the engine renders `src`.

use flowrun_engine::template::Templates;
use serde_json::{Map, Value};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

/// The workflow's `vars` with the example inventory's `all.vars` over them.
pub fn example_vars() -> Value {
    let mut vars: Map<String, Value> = yaml("workflows/deploy-github-runner-k8s.yml")["vars"]
        .as_object()
        .unwrap()
        .clone();
    for (k, v) in yaml("inventory/k8s-example/hosts.yml")["all"]["vars"]
        .as_object()
        .unwrap()
    {
        vars.insert(k.clone(), v.clone());
    }
    Value::Object(vars)
}

pub fn render(vars: &Value) -> String {
    let text = std::fs::read_to_string(root().join("workflows/templates/k8s-github-runners.yaml.hbs")).unwrap();
    Templates::new()
        .render_text("k8s-github-runners.yaml.hbs", &text, vars)
        .unwrap()
}

#[test]
fn renders_the_footprint_hardened_and_by_reference() {
    let out = render(&example_vars());
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
    let names: Vec<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            "ConfigMap/codex-config-gh-runner",
            "Deployment/codex-gh-runner",
            "Deployment/gemini-gh-runner"
        ]
    );
    assert!(
        docs[0]["data"]["config.toml"]
            .as_str()
            .unwrap()
            .contains("[sandbox]\nmode = \"workspace-write\"\n"),
        "verbatim TOML"
    );
    for d in &docs {
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/part-of"], "github-runners",
            "the owner label"
        );
    }
    for d in &docs[1..] {
        let name = d["metadata"]["name"].as_str().unwrap();
        assert_eq!(d["metadata"]["labels"]["app"], name);
        assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], name);
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 1000);
        assert_eq!(pod["securityContext"]["fsGroup"], 1000);
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        let c = &pod["containers"][0];
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(c["resources"]["limits"]["memory"].is_string());
        let env: Vec<&Value> = c["env"].as_array().unwrap().iter().collect();
        let secret_refs: Vec<&str> = env
            .iter()
            .filter_map(|e| e["valueFrom"]["secretKeyRef"]["name"].as_str())
            .collect();
        assert_eq!(secret_refs, ["github-runner-config", "github-mcp-credentials"]);
        assert!(env
            .iter()
            .any(|e| e["name"] == "RUNNER_LABELS" && e["value"].as_str().unwrap().starts_with("self-hosted,linux,")));
        assert!(pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"].is_string()));
    }
    let codex = &docs[1]["spec"]["template"]["spec"];
    let mount = &codex["containers"][0]["volumeMounts"][1];
    assert_eq!(mount["subPath"], "config.toml");
    assert_eq!(mount["readOnly"], true);
    assert_eq!(codex["volumes"][1]["configMap"]["name"], "codex-config-gh-runner");
}

#[test]
fn optional_keys_may_be_left_out() {
    let mut vars = example_vars();
    vars["codexConfig"]["enabled"] = Value::Bool(false);
    vars["runners"] = serde_json::json!([{"name": "plain", "image": "r:1", "labels": ["a"], "replicas": 0}]);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&render(&vars)).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["spec"]["replicas"], 0, "zero replicas are kept");
    let c = &docs[0]["spec"]["template"]["spec"]["containers"][0];
    assert!(c.get("imagePullPolicy").is_none());
    assert_eq!(c["resources"]["requests"]["cpu"], "500m", "runnerResources");
}
