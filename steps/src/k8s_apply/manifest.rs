//! The objects a `k8s_apply` step manages, from its `manifest` parameter (one
//! object, a list, or YAML text with `---` between documents) or its `src`
//! template: each must be an object with `apiVersion`, `kind` and
//! `metadata.name` (no `generateName`: a preview needs exact names), and no
//! two may name the same object. Errors say which item or document, and on
//! which line of the text, is wrong.

use serde_json::{Map, Value};

/// One object to apply, as rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// As written; `None` until the step fills in its default namespace.
    pub namespace: Option<String>,
    pub body: Value,
}

impl Object {
    /// `Deployment/codex-gh-runner` (with the namespace when known).
    pub fn label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{} in `{ns}`", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }

    /// The API group (`""` for the core group).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// Objects applied first come first: namespaces, then what pods refer to, then workloads.
    pub fn order(&self) -> u8 {
        match self.kind.as_str() {
            "Namespace" | "CustomResourceDefinition" => 0,
            "ServiceAccount" | "Secret" | "ConfigMap" | "PersistentVolumeClaim" | "Role" | "ClusterRole" => 1,
            "RoleBinding" | "ClusterRoleBinding" | "Service" => 2,
            _ => 3,
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Check one value and make it an [`Object`]; `what` names it in errors.
fn object(v: Value, what: &str) -> Result<Object, String> {
    let Value::Object(m) = &v else {
        return Err(format!(
            "{what} is {}, not an object (a Kubernetes object needs `apiVersion`, `kind` and `metadata.name`)",
            kind_of(&v)
        ));
    };
    let field = |k: &str| m.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let api_version = field("apiVersion").ok_or_else(|| format!("{what} has no `apiVersion`"))?;
    let kind = field("kind").ok_or_else(|| format!("{what} has no `kind`"))?;
    let meta = m.get("metadata").and_then(Value::as_object);
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let Some(name) = name else {
        let hint = if meta.is_some_and(|m| m.contains_key("generateName")) {
            " (`generateName` is not supported: a preview needs the exact name)"
        } else {
            ""
        };
        return Err(format!("{what} (`{kind}`) has no `metadata.name`{hint}"));
    };
    let namespace = match meta.and_then(|m| m.get("namespace")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(format!(
                "{what}: `metadata.namespace` is {}, not a string",
                kind_of(other)
            ))
        }
    };
    Ok(Object {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        namespace,
        body: v.clone(),
    })
}

/// A `kind: List` (as `kubectl get -o yaml` writes) stands for its items.
fn flatten(v: Value, what: &str, out: &mut Vec<(Value, String)>) {
    let is_list = v
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && v.get("items").is_some_and(Value::is_array);
    if is_list {
        if let Some(Value::Array(items)) = v.get("items") {
            for (i, item) in items.iter().enumerate() {
                out.push((item.clone(), format!("{what}, item {}", i + 1)));
            }
        }
        return;
    }
    out.push((v, what.to_owned()));
}

/// The documents of a YAML text, each with a description (`document 2 (line 14)`).
fn documents(text: &str, source: &str) -> Result<Vec<(Value, String)>, String> {
    let mut chunks: Vec<(usize, String)> = vec![(1, String::new())];
    for (i, line) in text.lines().enumerate() {
        let is_separator = line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_separator {
            chunks.push((i + 2, String::new()));
        } else if let Some((_, c)) = chunks.last_mut() {
            c.push_str(line);
            c.push('\n');
        }
    }
    let mut out = Vec::new();
    let mut n = 0;
    for (start, chunk) in chunks {
        if chunk
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        n += 1;
        let value: Value = serde_saphyr::from_str(&chunk).map_err(|e| {
            let line = e
                .location()
                .map_or(start as u64, |l| start as u64 + l.line().saturating_sub(1));
            let col = e.location().map_or(1, |l| l.column());
            let first = e.to_string();
            let msg = first.lines().next().unwrap_or("invalid YAML");
            let msg = msg
                .trim_start_matches("error: ")
                .split_once(": ")
                .filter(|(head, _)| head.starts_with("line "))
                .map_or(msg, |(_, m)| m);
            format!("{source}:{line}:{col}: invalid YAML: {msg}")
        })?;
        if value.is_null() {
            continue;
        }
        flatten(value, &format!("{source}: document {n} (line {start})"), &mut out);
    }
    Ok(out)
}

/// The objects of a `manifest` value or of a rendered `src` text.
pub fn parse(manifest: &Value, source: &str) -> Result<Vec<Object>, String> {
    let mut values = Vec::new();
    match manifest {
        Value::String(text) => values = documents(text, source)?,
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                match v {
                    // A list item may itself be YAML text (a rendered template).
                    Value::String(text) => values.extend(documents(text, &format!("{source}, item {}", i + 1))?),
                    other => flatten(other.clone(), &format!("{source}, item {}", i + 1), &mut values),
                }
            }
        }
        other => flatten(other.clone(), source, &mut values),
    }
    if values.is_empty() {
        return Err(format!("{source} holds no object"));
    }
    let mut objects: Vec<Object> = Vec::new();
    for (v, what) in values {
        let o = object(v, &what)?;
        if let Some(dup) = objects
            .iter()
            .find(|p| p.group() == o.group() && p.kind == o.kind && p.name == o.name && p.namespace == o.namespace)
        {
            return Err(format!("{what} repeats {} (each object may appear once)", dup.label()));
        }
        objects.push(o);
    }
    Ok(objects)
}

/// The objects as canonical JSON (for the journal fingerprint).
pub fn canonical(objects: &[Object]) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sort(&m[k])))
                        .collect::<Map<_, _>>(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    Value::Array(objects.iter().map(|o| sort(&o.body)).collect()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_text_object_and_list() {
        let text = "# header\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b, namespace: x}\n";
        let objs = parse(&json!(text), "manifest").unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1].namespace.as_deref(), Some("x"));
        assert_eq!(objs[1].group(), "apps");
        let one = parse(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}),
            "manifest",
        )
        .unwrap();
        assert_eq!(one[0].name, "a");
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}]});
        assert_eq!(parse(&list, "manifest").unwrap()[0].kind, "Secret");
    }

    #[test]
    fn errors_name_the_document_and_line() {
        let e = parse(
            &json!("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n- 1\n"),
            "manifest",
        )
        .unwrap_err();
        assert_eq!(e, "manifest: document 2 (line 5) is a list, not an object (a Kubernetes object needs `apiVersion`, `kind` and `metadata.name`)");
        let e = parse(&json!("a: 1\n---\nb: [\n"), "templates/x.yaml").unwrap_err();
        assert!(e.starts_with("templates/x.yaml:"), "{e}");
        assert!(e.contains("invalid YAML"), "{e}");
        let e = parse(
            &json!([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "x-"}}]),
            "manifest",
        )
        .unwrap_err();
        assert!(e.contains("`generateName` is not supported"), "{e}");
        let e = parse(&json!(42), "manifest").unwrap_err();
        assert!(e.contains("is a number, not an object"), "{e}");
        let dup = json!([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
                         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}]);
        assert!(parse(&dup, "manifest").unwrap_err().contains("repeats ConfigMap/a"));
    }
}
