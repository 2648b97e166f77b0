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
    let mut vars: Map<String, Value> = yaml("workflows/deploy-github-runner-k8s.yml")["vars"].as_object().unwrap().clone();
    for (k, v) in yaml("inventory/k8s-example/hosts.yml")["all"]["vars"].as_object().unwrap() {
        vars.insert(k.clone(), v.clone());
    }
    Value::Object(vars)
}

pub fn render(vars: &Value) -> String {
    let text = std::fs::read_to_string(root().join("workflows/templates/k8s-github-runners.yaml.hbs")).unwrap();
    Templates::new().render_text("k8s-github-runners.yaml.hbs", &text, vars).unwrap()
}

#[test]
fn renders_the_footprint() {
    let out = render(&example_vars());
    println!("{out}");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
    assert_eq!(docs.len(), 3, "{out}");
}
