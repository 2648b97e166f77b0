//! A failed Kubernetes request as one message an operator can act on, in the
//! API's own words: the fields and managers of a 409 conflict and how to
//! take them (`force_conflicts`), each invalid field of a 422, the missing
//! namespace of a 404, which credential a 401 or 403 refused (never its
//! value), and why a typed-patch 500 is not retried.

use super::client::KubeError;
use super::kubeconfig::Resolved;

pub fn explain(e: &KubeError, doing: &str, r: &Resolved) -> String {
    let api = e.status["message"].as_str().unwrap_or(&e.message);
    let text = match e.code {
        None => e.message.clone(),
        Some(401) => format!(
            "the server at {} refused the credentials (401 Unauthorized): {}; check that they are current",
            r.server,
            r.credential()
        ),
        Some(403) => format!("{api} (403 Forbidden, authenticated with {})", r.credential()),
        Some(404) if e.missing_namespace().is_some() => format!(
            "namespace `{}` does not exist (create it first; flowrun does not create namespaces it is not given)",
            e.missing_namespace().unwrap_or_default()
        ),
        Some(409) if !e.conflicts().is_empty() => {
            let conflicts = e.conflicts();
            let list: Vec<String> = conflicts
                .iter()
                .map(|(field, manager)| format!("`{field}` is managed by {manager}"))
                .collect();
            format!(
                "conflict: {} (409: {}); set `force_conflicts: true` to take ownership of {}, or stop setting {}",
                list.join("; "),
                api.lines().next().unwrap_or(api),
                if conflicts.len() == 1 { "it" } else { "them" },
                if conflicts.len() == 1 { "that field" } else { "those fields" },
            )
        }
        Some(422) => {
            let causes: Vec<String> = e.status["details"]["causes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "`{}`: {}",
                        c["field"].as_str().unwrap_or("?"),
                        c["message"].as_str().unwrap_or("")
                    )
                })
                .collect();
            let head = api.split(" is invalid").next().unwrap_or(api);
            if causes.is_empty() {
                format!("{api} (422)")
            } else {
                format!("{head} is invalid (422): {}", causes.join("; "))
            }
        }
        Some(500) if api.contains("failed to create typed patch object") => format!(
            "{api} (500; not retried: the server cannot merge this object — a list holds two items with the same key, or a field the server does not know)"
        ),
        Some(code) => format!("{api} ({code})"),
    };
    format!("{doing}: {text}")
}
