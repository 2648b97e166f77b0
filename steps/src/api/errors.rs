//! Turning an API's error answer into one line a person can act on: each API
//! words its errors differently (Proxmox: `{"errors": {param: msg}}` or the
//! HTTP reason phrase; GitLab: `{"message": ...}` or `{"error": ...}`;
//! GitHub: `{"message": ...}`), and bodies may be huge or HTML.

use serde_json::Value;

/// Longest message kept from a body that is not JSON.
const MAX_TEXT: usize = 300;

/// The API's own message from an error answer, or `None` when it said nothing useful.
pub fn api_message(body: &Value, raw: &str, reason: Option<&str>) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    if let Some(obj) = body.as_object() {
        // Proxmox parameter errors: one message per parameter.
        if let Some(Value::Object(errors)) = obj.get("errors") {
            let list: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {}", text(v).trim())).collect();
            if !list.is_empty() {
                parts.push(list.join("; "));
            }
        }
        for key in ["message", "error"] {
            if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
                let t = text(v);
                let t = t.trim();
                if !t.is_empty() && !parts.iter().any(|p| p.contains(t)) {
                    parts.push(t.to_owned());
                }
            }
        }
        if let Some(d) = obj.get("error_description").and_then(Value::as_str) {
            parts.push(d.to_owned());
        }
    }
    if let Some(r) = reason.map(str::trim).filter(|r| !r.is_empty()) {
        if !parts.iter().any(|p| p.contains(r)) {
            parts.insert(0, r.to_owned());
        }
    }
    if parts.is_empty() && body.is_null() {
        let t = raw.trim();
        if !t.is_empty() && !t.starts_with('<') {
            let mut t: String = t.chars().take(MAX_TEXT).collect();
            if raw.trim().chars().count() > MAX_TEXT {
                t.push('…');
            }
            parts.push(t);
        }
    }
    (!parts.is_empty()).then(|| parts.join(": "))
}

/// A JSON value as text: strings bare, lists joined, objects as `k: v` pairs.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k} {}", text(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn proxmox_parameter_errors_and_reason() {
        let body = json!({"data": null, "errors": {"sshkeys": "invalid format - invalid urlencoded string: ssh-ed25519 AAAA\n"}});
        assert_eq!(
            api_message(&body, "", Some("Parameter verification failed.")).unwrap(),
            "Parameter verification failed.: sshkeys: invalid format - invalid urlencoded string: ssh-ed25519 AAAA"
        );
        let body = json!({"data": null});
        assert_eq!(
            api_message(&body, "", Some("VM 101 is running - destroy failed")).unwrap(),
            "VM 101 is running - destroy failed"
        );
    }

    #[test]
    fn gitlab_and_github_shapes() {
        assert_eq!(
            api_message(&json!({"message": "401 Unauthorized"}), "", None).unwrap(),
            "401 Unauthorized"
        );
        let scope = json!({"error": "insufficient_scope", "error_description": "The request requires higher privileges than provided by the access token.", "scope": "api"});
        assert!(api_message(&scope, "", None)
            .unwrap()
            .starts_with("insufficient_scope: The request"));
        assert_eq!(
            api_message(&json!({"message": {"tag_list": ["is invalid"]}}), "", None).unwrap(),
            "tag_list is invalid"
        );
        assert_eq!(api_message(&Value::Null, "<html>oops</html>", None), None);
        assert_eq!(
            api_message(&Value::Null, "plain failure", None).unwrap(),
            "plain failure"
        );
    }
}
