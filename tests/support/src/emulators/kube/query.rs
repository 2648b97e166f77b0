//! Label and field selectors on lists (`?labelSelector=app=x,tier!=web`,
//! `?fieldSelector=metadata.name=x`), in the syntax the real server parses:
//! `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a)`, `k`, `!k`.

use serde_json::{Map, Value};

enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Split on commas outside parentheses.
fn terms(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

fn set_of(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: expected a set in parentheses, found {s:?}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

fn parse(selector: &str) -> Result<Vec<Req>, String> {
    let mut out = Vec::new();
    for t in terms(selector) {
        if let Some((k, v)) = t.split_once("!=") {
            out.push(Req::Ne(k.trim().into(), v.trim().into()));
        } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            out.push(Req::Eq(k.trim().into(), v.trim().into()));
        } else if let Some((k, v)) = t.split_once(" notin ") {
            out.push(Req::NotIn(k.trim().into(), set_of(v)?));
        } else if let Some((k, v)) = t.split_once(" in ") {
            out.push(Req::In(k.trim().into(), set_of(v)?));
        } else if let Some(k) = t.strip_prefix('!') {
            out.push(Req::NotExists(k.trim().into()));
        } else if t.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
            out.push(Req::Exists(t));
        } else {
            return Err(format!("unable to parse requirement: {t:?}"));
        }
    }
    Ok(out)
}

/// Whether `labels` satisfy `selector` (empty: everything).
pub fn labels_match(selector: &str, labels: Option<&Map<String, Value>>) -> Result<bool, String> {
    let empty = Map::new();
    let labels = labels.unwrap_or(&empty);
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    Ok(parse(selector)?.iter().all(|r| match r {
        Req::Eq(k, v) => get(k) == Some(v.as_str()),
        Req::Ne(k, v) => get(k) != Some(v.as_str()),
        Req::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
        Req::NotIn(k, vs) => get(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
        Req::Exists(k) => get(k).is_some(),
        Req::NotExists(k) => get(k).is_none(),
    }))
}

/// Whether an object satisfies a field selector (`metadata.name`, `metadata.namespace`).
pub fn fields_match(selector: &str, obj: &Value) -> Result<bool, String> {
    let mut ok = true;
    for t in terms(selector) {
        let (k, v, eq) = if let Some((k, v)) = t.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            (k, v, true)
        } else {
            return Err(format!("invalid selector: {t:?}; can't understand {t:?}"));
        };
        let actual = match k.trim() {
            "metadata.name" => obj["metadata"]["name"].as_str(),
            "metadata.namespace" => obj["metadata"]["namespace"].as_str(),
            other => return Err(format!("field label not supported: {other}")),
        };
        ok &= (actual == Some(v.trim())) == eq;
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors() {
        let l = json!({"app": "codex", "app.kubernetes.io/part-of": "runners"});
        let l = l.as_object();
        assert!(labels_match("app.kubernetes.io/part-of=runners", l).unwrap());
        assert!(labels_match("app in (codex,gemini),!tier", l).unwrap());
        assert!(!labels_match("app notin (codex)", l).unwrap());
        assert!(!labels_match("app!=codex", l).unwrap());
        assert!(labels_match("", l).unwrap());
    }
}
