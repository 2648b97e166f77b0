//! What the real server fills in when an object is decoded
//! (`pkg/apis/apps/v1/defaults.go`, `pkg/apis/core/v1/defaults.go`): the
//! Deployment's replicas, strategy, history limit and progress deadline; the
//! pod template's DNS and restart policies, scheduler, grace period and
//! security context; each container's pull policy (from the image tag),
//! termination message settings and port protocols; volume modes; canonical
//! quantities. A client that compares what it sent with what is stored sees
//! all of these, which is why previews must diff server against server.

use super::quantity;
use serde_json::{json, Map, Value};

/// Fill in defaults for an object of `kind`; a bad quantity is an error
/// naming its field.
pub fn apply(kind: &str, obj: &mut Value) -> Result<(), String> {
    match kind {
        "Deployment" => deployment(obj),
        "Pod" => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec, "spec")?;
                set(spec, "enableServiceLinks", json!(true));
            }
            Ok(())
        }
        "Secret" => {
            set(obj, "type", json!("Opaque"));
            Ok(())
        }
        "Namespace" => {
            let name = obj["metadata"]["name"].clone();
            let meta = obj["metadata"].as_object_mut().ok_or("metadata is not a map")?;
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Value::Object(l) = labels {
                l.insert("kubernetes.io/metadata.name".into(), name);
            }
            Ok(())
        }
        "PersistentVolumeClaim" => {
            if let Some(spec) = obj.get_mut("spec") {
                set(spec, "volumeMode", json!("Filesystem"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Insert `k: v` into the object `o` when absent (or null).
fn set(o: &mut Value, k: &str, v: Value) {
    if let Value::Object(m) = o {
        if m.get(k).is_none_or(Value::is_null) {
            m.insert(k.to_owned(), v);
        }
    }
}

fn obj<'a>(o: &'a mut Value, k: &str) -> &'a mut Value {
    set(o, k, Value::Object(Map::new()));
    &mut o[k]
}

fn deployment(d: &mut Value) -> Result<(), String> {
    let Some(spec) = d.get_mut("spec").filter(|s| s.is_object()) else {
        return Ok(());
    };
    set(spec, "replicas", json!(1));
    let strategy = obj(spec, "strategy");
    set(strategy, "type", json!("RollingUpdate"));
    if strategy["type"] == "RollingUpdate" {
        let ru = obj(strategy, "rollingUpdate");
        set(ru, "maxUnavailable", json!("25%"));
        set(ru, "maxSurge", json!("25%"));
    }
    set(spec, "revisionHistoryLimit", json!(10));
    set(spec, "progressDeadlineSeconds", json!(600));
    if let Some(pod) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        pod_spec(pod, "spec.template.spec")?;
    }
    Ok(())
}

fn pod_spec(spec: &mut Value, at: &str) -> Result<(), String> {
    if !spec.is_object() {
        return Ok(());
    }
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "schedulerName", json!("default-scheduler"));
    set(spec, "securityContext", json!({}));
    // The deprecated `serviceAccount` mirrors `serviceAccountName`.
    if let Some(sa) = spec.get("serviceAccountName").cloned().filter(|v| !v.is_null()) {
        set(spec, "serviceAccount", sa);
    }
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for (i, c) in cs.iter_mut().enumerate() {
                container(c, &format!("{at}.{list}[{i}]"))?;
            }
        }
    }
    if let Some(Value::Array(vols)) = spec.get_mut("volumes") {
        for v in vols {
            volume(v);
        }
    }
    if let Some(o) = spec.get_mut("overhead") {
        quantities(o, &format!("{at}.overhead"))?;
    }
    Ok(())
}

/// `Always` for `:latest` or no tag, else `IfNotPresent` (a digest pins the image).
pub fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn container(c: &mut Value, at: &str) -> Result<(), String> {
    if !c.is_object() {
        return Ok(());
    }
    let policy = pull_policy(c.get("image").and_then(Value::as_str).unwrap_or(""));
    set(c, "imagePullPolicy", json!(policy));
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    set(c, "terminationMessagePolicy", json!("File"));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports {
            set(p, "protocol", json!("TCP"));
        }
    }
    if let Some(Value::Array(env)) = c.get_mut("env") {
        for e in env {
            if let Some(fr) = e.get_mut("valueFrom").and_then(|v| v.get_mut("fieldRef")) {
                set(fr, "apiVersion", json!("v1"));
            }
        }
    }
    if let Some(r) = c.get_mut("resources") {
        for part in ["limits", "requests"] {
            if let Some(q) = r.get_mut(part) {
                quantities(q, &format!("{at}.resources.{part}"))?;
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).filter(|p| p.is_object()) {
            set(p, "timeoutSeconds", json!(1));
            set(p, "periodSeconds", json!(10));
            set(p, "successThreshold", json!(1));
            set(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet") {
                set(h, "path", json!("/"));
                set(h, "scheme", json!("HTTP"));
            }
        }
    }
    Ok(())
}

fn volume(v: &mut Value) {
    let Some(m) = v.as_object_mut() else { return };
    let has_source = m.keys().any(|k| k != "name");
    if !has_source {
        m.insert("emptyDir".into(), json!({}));
    }
    for source in ["configMap", "secret", "projected", "downwardAPI"] {
        if let Some(s) = m.get_mut(source) {
            set(s, "defaultMode", json!(420));
        }
    }
    if let Some(h) = m.get_mut("hostPath") {
        set(h, "type", json!(""));
    }
}

/// Canonicalise every quantity of a resource list in place.
fn quantities(list: &mut Value, at: &str) -> Result<(), String> {
    let Value::Object(m) = list else { return Ok(()) };
    for (k, v) in m.iter_mut() {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(format!("{at}.{k}: quantities must be strings or numbers")),
        };
        let c = quantity::canonical(&text).ok_or_else(|| {
            format!(
                "{at}.{k}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
            )
        })?;
        *v = Value::String(c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults_as_documented() {
        let mut d = json!({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": {
                "containers": [{"name": "c", "image": "ghcr.io/x/runner:2.1", "resources": {"limits": {"cpu": "0.5", "memory": "1024Mi"}}}],
                "volumes": [{"name": "cfg", "configMap": {"name": "x"}}]}}}});
        apply("Deployment", &mut d).unwrap();
        let s = &d["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(
            s["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(s["progressDeadlineSeconds"], 600);
        let p = &s["template"]["spec"];
        assert_eq!(p["dnsPolicy"], "ClusterFirst");
        assert_eq!(p["schedulerName"], "default-scheduler");
        assert_eq!(p["securityContext"], json!({}));
        let c = &p["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["resources"]["limits"], json!({"cpu": "500m", "memory": "1Gi"}));
        assert_eq!(p["volumes"][0]["configMap"]["defaultMode"], 420);
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(pull_policy("nginx"), "Always");
        assert_eq!(pull_policy("nginx:latest"), "Always");
        assert_eq!(pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(pull_policy("localhost:5000/nginx:1.2"), "IfNotPresent");
        assert_eq!(pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }
}
