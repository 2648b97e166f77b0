//! The preview: the live object against what the server says it would be
//! after the apply (the `dryRun=All` answer), compared the way
//! `kubectl diff --server-side` compares them — both sides come from the
//! server, so its defaults and canonical quantities cancel out — after
//! dropping what never counts as drift (managedFields, resourceVersion,
//! generation, uid, creation time, status, the controller's revision
//! annotation). Shown as YAML with sorted keys, one unified diff per object;
//! Secret values are masked as kubectl masks them.

use serde_json::{Map, Value};
use similar::TextDiff;
use std::fmt::Write as _;
use std::time::Duration;

const SERVER_SET: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "generation",
    "uid",
    "creationTimestamp",
    "selfLink",
];
const CONTROLLER_ANNOTATIONS: &[&str] = &["deployment.kubernetes.io/revision"];

/// The object without what is not the user's to manage.
pub fn normalise(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(o) = v.as_object_mut() {
        o.shift_remove("status");
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in SERVER_SET {
            meta.shift_remove(*k);
        }
        if let Some(Value::Object(a)) = meta.get_mut("annotations") {
            for k in CONTROLLER_ANNOTATIONS {
                a.shift_remove(*k);
            }
            if a.is_empty() {
                meta.shift_remove("annotations");
            }
        }
    }
    v
}

/// Secret values replaced, as `kubectl diff` shows them: `***`, or
/// `*** (before)` / `*** (after)` where the value changes.
fn mask_secret(live: &mut Value, merged: &mut Value) {
    if merged["kind"] != "Secret" {
        return;
    }
    for part in ["data", "stringData"] {
        let before = live[part].as_object().cloned().unwrap_or_default();
        let after = merged[part].as_object().cloned().unwrap_or_default();
        let mark = |m: &mut Value, other: &Map<String, Value>, own: &Map<String, Value>, word: &str| {
            if let Some(o) = m.get_mut(part).and_then(Value::as_object_mut) {
                for (k, v) in o.iter_mut() {
                    let same = other.get(k) == own.get(k);
                    *v = Value::String(if same { "***".into() } else { format!("*** ({word})") });
                }
            }
        };
        mark(live, &after, &before, "before");
        mark(merged, &before, &after, "after");
    }
}

/// A unified diff of one object, or `None` when the two sides are the same.
pub fn object_diff(label: &str, live: Option<&Value>, merged: &Value) -> Option<String> {
    let mut after = normalise(merged);
    let mut before = live.map(normalise);
    if before.as_ref() == Some(&after) {
        return None;
    }
    if let Some(b) = before.as_mut() {
        mask_secret(b, &mut after);
    } else {
        mask_secret(&mut Value::Null, &mut after);
    }
    let old = before.as_ref().map(to_yaml).unwrap_or_default();
    let new = to_yaml(&after);
    let old_name = if before.is_some() {
        format!("{label} (live)")
    } else {
        "/dev/null".to_owned()
    };
    Some(
        TextDiff::configure()
            .timeout(Duration::from_secs(2))
            .diff_lines(&old, &new)
            .unified_diff()
            .context_radius(3)
            .header(&old_name, &format!("{label} (after apply)"))
            .to_string(),
    )
}

/// YAML as kubectl prints it: sorted keys, lists not indented under their
/// key, multi-line strings as literal blocks, strings quoted when they would
/// read as something else.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => seq(&mut out, a, 0),
        other => {
            out.push_str(&scalar(other, 0));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn map(out: &mut String, m: &Map<String, Value>, indent: usize) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    for k in keys {
        pad(out, indent);
        out.push_str(&key(k));
        out.push(':');
        entry(out, &m[k], indent, indent + 2);
    }
}

fn seq(out: &mut String, a: &[Value], indent: usize) {
    for item in a {
        pad(out, indent);
        out.push('-');
        match item {
            Value::Object(m) if !m.is_empty() => {
                // The first key goes on the dash's line.
                let mut inner = String::new();
                map(&mut inner, m, indent + 2);
                out.push(' ');
                out.push_str(&inner[indent + 2..]);
            }
            other => entry(out, other, indent, indent + 2),
        }
    }
}

/// The value after `key:` (or `-`): inline scalars, or a nested block.
fn entry(out: &mut String, v: &Value, indent: usize, nested: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            map(out, m, nested);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            seq(out, a, indent);
        }
        Value::String(s) if s.contains('\n') && !s.contains('\r') => {
            let chomp = if s.ends_with("\n\n") {
                "+"
            } else if s.ends_with('\n') {
                ""
            } else {
                "-"
            };
            let lead = if s.starts_with(' ') { "2" } else { "" };
            let _ = writeln!(out, " |{lead}{chomp}");
            for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
                if !line.is_empty() {
                    pad(out, nested);
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other, nested));
            out.push('\n');
        }
    }
}

fn key(k: &str) -> String {
    if needs_quotes(k) {
        quoted(k)
    } else {
        k.to_owned()
    }
}

fn scalar(v: &Value, _indent: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if needs_quotes(s) => quoted(s),
        Value::String(s) => s.clone(),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Whether a plain scalar would not read back as this string.
fn needs_quotes(s: &str) -> bool {
    if s.is_empty() || s != s.trim() {
        return true;
    }
    let lower = s.to_ascii_lowercase();
    let reserved = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", ".inf", "-.inf", ".nan",
    ];
    if reserved.contains(&lower.as_str()) {
        return true;
    }
    let first = s.chars().next().unwrap_or(' ');
    // A leading `-` is plain when it starts a word (`--flag`), not a list item or a number.
    let dash_word = first == '-' && s.len() > 1 && !s[1..].starts_with(' ') && !looks_numeric(s);
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) && !dash_word {
        return true;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') || s.chars().any(char::is_control) {
        return true;
    }
    looks_numeric(s) || looks_like_time(s)
}

fn looks_numeric(s: &str) -> bool {
    let t = s.trim_start_matches(['-', '+']);
    !t.is_empty()
        && (t.parse::<f64>().is_ok()
            || t.starts_with("0x")
            || t.starts_with("0o")
            || t.chars().all(|c| c.is_ascii_digit() || c == '_' || c == ':'))
}

fn looks_like_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10 && b[4] == b'-' && b[7] == b'-' && b[..4].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_like_kubectl() {
        let v = json!({"metadata": {"name": "x", "labels": {"app": "x"}, "annotations": {"a": "1"}},
                       "data": {"config.toml": "a = 1\nb = 2\n"},
                       "spec": {"containers": [{"name": "c", "image": "i:1", "args": ["--x", "true"]}], "empty": {}},
                       "t": "2026-01-01T00:00:00Z", "p": "25%", "count": 3});
        let y = to_yaml(&v);
        let want = "count: 3\ndata:\n  config.toml: |\n    a = 1\n    b = 2\nmetadata:\n  annotations:\n    a: \"1\"\n  labels:\n    app: x\n  name: x\np: 25%\nspec:\n  containers:\n  - args:\n    - --x\n    - \"true\"\n    image: i:1\n    name: c\n  empty: {}\nt: \"2026-01-01T00:00:00Z\"\n";
        assert_eq!(y, want);
    }

    #[test]
    fn server_set_fields_never_count() {
        let live = json!({"kind": "Deployment", "metadata": {"name": "d", "resourceVersion": "5", "generation": 1,
                          "annotations": {"deployment.kubernetes.io/revision": "1"}, "managedFields": [{}]},
                          "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut merged = live.clone();
        merged["metadata"]["managedFields"] = json!([{}, {}]);
        assert!(object_diff("Deployment/d", Some(&live), &merged).is_none());
        merged["spec"]["replicas"] = json!(2);
        let d = object_diff("Deployment/d", Some(&live), &merged).unwrap();
        assert!(d.contains("-  replicas: 1\n+  replicas: 2\n"), "{d}");
        assert!(!d.contains("resourceVersion"), "{d}");
    }

    #[test]
    fn secret_values_are_masked() {
        let live = json!({"kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "b2xk", "k": "c2FtZQ=="}});
        let merged = json!({"kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "bmV3", "k": "c2FtZQ=="}});
        let d = object_diff("Secret/s", Some(&live), &merged).unwrap();
        assert!(
            d.contains("*** (before)") && d.contains("*** (after)") && !d.contains("bmV3"),
            "{d}"
        );
    }
}
