//! The server's validation of the objects the tests use, answered as a 422
//! `Invalid` Status with one cause per field (`pkg/apis/apps/validation`,
//! `pkg/apis/core/validation`): names, the Deployment selector and its match
//! with the template labels (and its immutability), containers, volume mounts
//! that must name a volume and have unique paths, env sources, resource
//! requests within limits, ConfigMap keys. Field paths have no leading dot
//! and use list indexes, as the server's do.

use super::quantity;
use serde_json::Value;

/// One invalid field.
#[derive(Debug, Clone)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, ...
    pub reason: &'static str,
    pub field: String,
    /// The error body: `Invalid value: "x": must be unique`.
    pub message: String,
}

#[derive(Default)]
struct Errs(Vec<Cause>);

impl Errs {
    fn required(&mut self, field: String) {
        self.0.push(Cause {
            reason: "FieldValueRequired",
            field,
            message: "Required value".into(),
        });
    }
    fn invalid(&mut self, field: String, value: &Value, detail: &str) {
        self.0.push(Cause {
            reason: "FieldValueInvalid",
            field,
            message: format!("Invalid value: {}: {detail}", go_value(value)),
        });
    }
    fn not_found(&mut self, field: String, value: &Value) {
        self.0.push(Cause {
            reason: "FieldValueNotFound",
            field,
            message: format!("Not found: {}", go_value(value)),
        });
    }
    fn unsupported(&mut self, field: String, value: &Value, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        self.0.push(Cause {
            reason: "FieldValueNotSupported",
            field,
            message: format!(
                "Unsupported value: {}: supported values: {}",
                go_value(value),
                list.join(", ")
            ),
        });
    }
    fn forbidden(&mut self, field: String, detail: &str) {
        self.0.push(Cause {
            reason: "FieldValueForbidden",
            field,
            message: format!("Forbidden: {detail}"),
        });
    }
}

/// A value as Go's `%#v`-ish rendering in the server's messages.
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(m) if m.values().all(Value::is_string) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or("")))
                .collect();
            format!("map[string]string{{{}}}", parts.join(", "))
        }
        other => other.to_string(),
    }
}

/// The message of a 422: `Deployment.apps "x" is invalid: <causes>`.
pub fn message(kind: &str, group: &str, name: &str, causes: &[Cause]) -> String {
    let gk = if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    };
    let each: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
    let body = if each.len() == 1 {
        each[0].clone()
    } else {
        format!("[{}]", each.join(", "))
    };
    format!("{gk} {name:?} is invalid: {body}")
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

const DNS_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// Validate an object about to be stored; `old` is the stored one on update.
pub fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut e = Errs::default();
    let name = &obj["metadata"]["name"];
    match name.as_str() {
        None | Some("") => e.required("metadata.name".into()),
        Some(n) if !is_dns_subdomain(n) => e.invalid("metadata.name".into(), name, DNS_SUBDOMAIN),
        Some(_) => {}
    }
    match kind {
        "Deployment" => deployment(obj, old, &mut e),
        "ConfigMap" | "Secret" => {
            for part in ["data", "binaryData", "stringData"] {
                for k in obj[part].as_object().into_iter().flat_map(|m| m.keys()) {
                    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
                        e.invalid(format!("{part}[{k}]"), &Value::String(k.clone()), "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')");
                    }
                }
            }
        }
        _ => {}
    }
    e.0
}

fn deployment(d: &Value, old: Option<&Value>, e: &mut Errs) {
    let spec = &d["spec"];
    let selector = &spec["selector"];
    if selector.is_null() {
        e.required("spec.selector".into());
    } else {
        let labels = selector["matchLabels"].as_object().filter(|m| !m.is_empty());
        let exprs = selector["matchExpressions"].as_array().filter(|a| !a.is_empty());
        if labels.is_none() && exprs.is_none() {
            e.invalid(
                "spec.selector".into(),
                selector,
                "empty selector is invalid for deployment",
            );
        }
        let tl = spec["template"]["metadata"]["labels"].as_object();
        if let Some(labels) = labels {
            let matches = labels.iter().all(|(k, v)| tl.and_then(|t| t.get(k)) == Some(v));
            if !matches {
                let shown = spec["template"]["metadata"]["labels"].clone();
                e.invalid(
                    "spec.template.metadata.labels".into(),
                    &shown,
                    "`selector` does not match template `labels`",
                );
            }
        }
        if let Some(old) = old {
            if old["spec"]["selector"] != *selector {
                e.invalid("spec.selector".into(), selector, "field is immutable");
            }
        }
    }
    if let Some(r) = spec["replicas"].as_i64().filter(|r| *r < 0) {
        e.invalid(
            "spec.replicas".into(),
            &Value::from(r),
            "must be greater than or equal to 0",
        );
    }
    let min_ready = spec["minReadySeconds"].as_i64().unwrap_or(0);
    if let Some(p) = spec["progressDeadlineSeconds"].as_i64().filter(|p| *p <= min_ready) {
        e.invalid(
            "spec.progressDeadlineSeconds".into(),
            &Value::from(p),
            "must be greater than minReadySeconds",
        );
    }
    let pod = &spec["template"]["spec"];
    let policy = &pod["restartPolicy"];
    if policy.as_str().is_some_and(|p| p != "Always") {
        e.unsupported("spec.template.spec.restartPolicy".into(), policy, &["Always"]);
    }
    pod_spec(pod, "spec.template.spec", e);
}

fn pod_spec(spec: &Value, at: &str, e: &mut Errs) {
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        volume(v, &format!("{at}.volumes[{i}]"), e);
    }
    match spec["containers"].as_array() {
        Some(cs) if !cs.is_empty() => {
            for (i, c) in cs.iter().enumerate() {
                container(c, &format!("{at}.containers[{i}]"), &volumes, e);
            }
        }
        _ => e.required(format!("{at}.containers")),
    }
    for (i, c) in spec["initContainers"].as_array().into_iter().flatten().enumerate() {
        container(c, &format!("{at}.initContainers[{i}]"), &volumes, e);
    }
    if let Some(u) = spec["securityContext"]["runAsUser"].as_i64().filter(|u| *u < 0) {
        e.invalid(
            format!("{at}.securityContext.runAsUser"),
            &Value::from(u),
            "must be between 0 and 2147483647, inclusive",
        );
    }
    seccomp(
        &spec["securityContext"]["seccompProfile"],
        &format!("{at}.securityContext.seccompProfile"),
        e,
    );
}

fn seccomp(p: &Value, at: &str, e: &mut Errs) {
    let t = &p["type"];
    if t.as_str()
        .is_some_and(|t| !["Localhost", "RuntimeDefault", "Unconfined"].contains(&t))
    {
        e.unsupported(format!("{at}.type"), t, &["Localhost", "RuntimeDefault", "Unconfined"]);
    }
}

fn volume(v: &Value, at: &str, e: &mut Errs) {
    match v["name"].as_str() {
        None | Some("") => e.required(format!("{at}.name")),
        Some(n) if !is_dns_label(n) => e.invalid(format!("{at}.name"), &v["name"], DNS_LABEL),
        Some(_) => {}
    }
    let sources: Vec<&String> = v
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .filter(|k| *k != "name")
        .collect();
    if sources.len() > 1 {
        e.forbidden(
            format!("{at}.{}", sources[1]),
            "may not specify more than 1 volume type",
        );
    }
    let required = [
        ("persistentVolumeClaim", "claimName"),
        ("configMap", "name"),
        ("secret", "secretName"),
    ];
    for (source, key) in required {
        if v[source].is_object() && v[source][key].as_str().is_none_or(str::is_empty) {
            e.required(format!("{at}.{source}.{key}"));
        }
    }
}

fn container(c: &Value, at: &str, volumes: &[&str], e: &mut Errs) {
    match c["name"].as_str() {
        None | Some("") => e.required(format!("{at}.name")),
        Some(n) if !is_dns_label(n) => e.invalid(format!("{at}.name"), &c["name"], DNS_LABEL),
        Some(_) => {}
    }
    if c["image"].as_str().is_none_or(|i| i.trim().is_empty()) {
        e.required(format!("{at}.image"));
    }
    let policy = &c["imagePullPolicy"];
    if policy
        .as_str()
        .is_some_and(|p| !["Always", "IfNotPresent", "Never"].contains(&p))
    {
        e.unsupported(
            format!("{at}.imagePullPolicy"),
            policy,
            &["Always", "IfNotPresent", "Never"],
        );
    }
    let mut paths = Vec::new();
    for (i, m) in c["volumeMounts"].as_array().into_iter().flatten().enumerate() {
        let mat = format!("{at}.volumeMounts[{i}]");
        let name = m["name"].as_str().unwrap_or("");
        if name.is_empty() {
            e.required(format!("{mat}.name"));
        } else if !volumes.contains(&name) {
            e.not_found(format!("{mat}.name"), &m["name"]);
        }
        match m["mountPath"].as_str() {
            None | Some("") => e.required(format!("{mat}.mountPath")),
            Some(p) if paths.contains(&p) => e.invalid(format!("{mat}.mountPath"), &m["mountPath"], "must be unique"),
            Some(p) => paths.push(p),
        }
        if let Some(sp) = m["subPath"].as_str() {
            if sp.starts_with('/') {
                e.invalid(format!("{mat}.subPath"), &m["subPath"], "must be a relative path");
            } else if sp.split('/').any(|part| part == "..") {
                e.invalid(format!("{mat}.subPath"), &m["subPath"], "must not contain '..'");
            }
        }
    }
    for (i, v) in c["env"].as_array().into_iter().flatten().enumerate() {
        env(v, &format!("{at}.env[{i}]"), e);
    }
    resources(&c["resources"], &format!("{at}.resources"), e);
    let sc = &c["securityContext"];
    if let Some(u) = sc["runAsUser"].as_i64().filter(|u| *u < 0) {
        e.invalid(
            format!("{at}.securityContext.runAsUser"),
            &Value::from(u),
            "must be between 0 and 2147483647, inclusive",
        );
    }
    seccomp(
        &sc["seccompProfile"],
        &format!("{at}.securityContext.seccompProfile"),
        e,
    );
}

fn env(v: &Value, at: &str, e: &mut Errs) {
    match v["name"].as_str() {
        None | Some("") => e.required(format!("{at}.name")),
        Some(n)
            if n.starts_with(|c: char| c.is_ascii_digit())
                || !n.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) =>
        {
            e.invalid(format!("{at}.name"), &v["name"], "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')");
        }
        Some(_) => {}
    }
    let Some(from) = v["valueFrom"].as_object() else { return };
    if v["value"].as_str().is_some_and(|s| !s.is_empty()) {
        e.invalid(
            format!("{at}.valueFrom"),
            &Value::from(""),
            "may not be specified when `value` is not empty",
        );
    }
    if from.len() > 1 {
        e.invalid(
            format!("{at}.valueFrom"),
            &Value::from(""),
            "may not have more than one field specified at a time",
        );
    }
    for r in ["secretKeyRef", "configMapKeyRef"] {
        if let Some(sel) = from.get(r) {
            for key in ["name", "key"] {
                if sel[key].as_str().is_none_or(str::is_empty) {
                    e.required(format!("{at}.valueFrom.{r}.{key}"));
                }
            }
        }
    }
}

fn resources(r: &Value, at: &str, e: &mut Errs) {
    let (Some(req), Some(lim)) = (r["requests"].as_object(), r["limits"].as_object()) else {
        return;
    };
    for (k, rv) in req {
        let (Some(rt), Some(lt)) = (rv.as_str(), lim.get(k).and_then(Value::as_str)) else {
            continue;
        };
        if let (Some(a), Some(b)) = (quantity::nanos(rt), quantity::nanos(lt)) {
            if a > b {
                e.invalid(
                    format!("{at}.requests"),
                    rv,
                    &format!("must be less than or equal to {k} limit of {lt}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicate_mount_paths_and_unknown_volumes() {
        let d = json!({"metadata": {"name": "gemini-gh-runner"}, "spec": {
            "selector": {"matchLabels": {"app": "g"}},
            "template": {"metadata": {"labels": {"app": "g"}}, "spec": {"containers": [{
                "name": "runner", "image": "r:1",
                "volumeMounts": [{"name": "home", "mountPath": "/home/runner/.gemini"},
                                 {"name": "home", "mountPath": "/home/runner/.gemini"},
                                 {"name": "nope", "mountPath": "/x"}]}],
                "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "gemini-home"}}]}}}});
        let causes = validate("Deployment", &d, None);
        let text = message("Deployment", "apps", "gemini-gh-runner", &causes);
        assert!(text.contains("spec.template.spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/home/runner/.gemini\": must be unique"), "{text}");
        assert!(text.contains("volumeMounts[2].name: Not found: \"nope\""), "{text}");
    }

    #[test]
    fn selector_must_match_and_stay() {
        let d = json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let causes = validate("Deployment", &d, None);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
        let mut old = d.clone();
        old["spec"]["selector"]["matchLabels"]["app"] = json!("b");
        let mut new = d;
        new["spec"]["template"]["metadata"]["labels"]["app"] = json!("a");
        let causes = validate("Deployment", &new, Some(&old));
        assert_eq!(causes.len(), 1);
        assert!(causes[0].message.ends_with("field is immutable"));
    }
}
