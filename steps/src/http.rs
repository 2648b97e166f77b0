//! `http`: one HTTP request — to an API that has no step of its own, or to
//! check a service — with the expected status, and the answer (status, body,
//! parsed JSON, headers) as outputs. A `GET` or `HEAD` is read-only, so it
//! runs in `check` too and is never a change; other methods are sent only by
//! `apply`, and count as a change.

use crate::http_client;
use crate::params::Params;
use crate::status::Codes;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, LiteralProblem, Outputs, ParamSpec, ParamType, Pending, Step, StepContext,
    StepError, StepKind,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::Duration;

pub struct HttpKind;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bodies larger than this are an error: outputs are kept in memory and in the journal.
const MAX_BODY: usize = 16 << 20;
/// How much of a body an error message shows.
const SNIPPET: usize = 300;

static INFO: KindInfo = KindInfo {
    name: "http",
    version: 1,
    doc: "Send an HTTP request and check its status; GET and HEAD run in --check too and never count as changes. \
          Not journaled by default, so a health check is fresh on every run: set `journal: true` on a step whose \
          request must be sent only once",
    params: &[
        ParamSpec::req("url", ParamType::Url, "the http(s) URL"),
        ParamSpec::opt("method", ParamType::Str, "the request method (default GET)"),
        ParamSpec::opt("headers", ParamType::Map, "request headers, Name: value"),
        ParamSpec::opt("body", ParamType::Str, "the request body, as text"),
        ParamSpec::opt(
            "json",
            ParamType::Any,
            "a value sent as a JSON body (sets `Content-Type: application/json`); a string holding a JSON \
             object or list is sent as that JSON",
        ),
        ParamSpec::opt(
            "expect_status",
            ParamType::Any,
            "accepted statuses: an integer, a list, or ranges like \"200-299\" (default 200-299)",
        ),
        ParamSpec::opt(
            "timeout",
            ParamType::Duration,
            "limit for the whole request (default 30s)",
        ),
        ParamSpec::opt(
            "ca_file",
            ParamType::Str,
            "a PEM file of extra CA certificates to trust (e.g. a self-signed server's), relative to the workflow",
        ),
        ParamSpec::opt(
            "insecure",
            ParamType::Bool,
            "do not verify the TLS certificate (labs only; logged as a warning)",
        ),
    ],
    one_of: &[],
    outputs: &["status", "body", "json", "headers"],
    secret_outputs: &[],
    // A journaled GET would hand later steps (an `assert` in a validation
    // workflow) the status of an earlier run: probes must be fresh.
    journal: false,
};

impl StepKind for HttpKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    /// A literal `expect_status` must give codes: known when the workflow loads.
    fn check_literals(&self, literals: &Map<String, Value>) -> Vec<LiteralProblem> {
        Codes::check_literal(literals, "expect_status").into_iter().collect()
    }

    fn build(&self, params: &Map<String, Value>, cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        let url = p.str("url")?;
        let parsed = reqwest::Url::parse(&url).map_err(|e| StepError::param("url", format!("invalid URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(StepError::param(
                "url",
                format!("expected an http or https URL, got `{}:`", parsed.scheme()),
            ));
        }
        let method_text = p.str_or("method", "GET")?.trim().to_ascii_uppercase();
        let method = Method::from_bytes(method_text.as_bytes())
            .map_err(|_| StepError::param("method", format!("`{method_text}` is not an HTTP method")))?;
        let body = match (p.opt_str("body")?, p.get("json")) {
            (Some(_), Some(_)) => return Err(StepError::failed("give at most one of `body` and `json`")),
            (Some(text), None) => Body::Text(text),
            (None, Some(v)) => Body::Json(json_value(v)),
            (None, None) => Body::None,
        };
        let ca_file: Option<PathBuf> = p.opt_str("ca_file")?.map(|f| cx.workflow_path(&f));
        let timeout = p.opt_duration("timeout")?.unwrap_or(DEFAULT_TIMEOUT);
        Ok(Box::new(HttpStep {
            client: http_client::client(ca_file.as_deref(), p.bool_or("insecure", false)?, Some(timeout))?,
            headers: headers(&p)?,
            expect: Codes::from_param(&p, "expect_status")?.unwrap_or_else(|| Codes::range(200, 299)),
            url,
            method,
            body,
        }))
    }
}

/// `json` as given; a string that holds a JSON object or list (from `{{json x}}`) is that JSON.
fn json_value(v: &Value) -> Value {
    if let Value::String(s) = v {
        if let Ok(parsed @ (Value::Object(_) | Value::Array(_))) = serde_json::from_str::<Value>(s) {
            return parsed;
        }
    }
    v.clone()
}

fn headers(p: &Params<'_>) -> Result<HeaderMap, StepError> {
    let mut map = HeaderMap::new();
    for (k, v) in p.opt_map("headers")?.into_iter().flatten() {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| StepError::param("headers", format!("`{k}` is not a valid header name")))?;
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => v.to_string(),
            _ => return Err(StepError::param("headers", format!("`{k}`: expected a string"))),
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| {
            StepError::param(
                "headers",
                format!("`{k}`: the value has characters a header cannot hold"),
            )
        })?;
        value.set_sensitive(true);
        map.append(name, value);
    }
    Ok(map)
}

enum Body {
    None,
    Text(String),
    Json(Value),
}

struct HttpStep {
    client: reqwest::Client,
    url: String,
    method: Method,
    headers: HeaderMap,
    body: Body,
    expect: Codes,
}

impl HttpStep {
    fn read_only(&self) -> bool {
        matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS)
    }

    /// `POST https://...`, masked, for messages.
    fn what(&self, cx: &StepContext) -> String {
        format!("{} {}", self.method, cx.masker.mask(&self.url))
    }

    async fn send(&self, cx: &StepContext) -> Result<Outputs, StepError> {
        let mut req = self
            .client
            .request(self.method.clone(), &self.url)
            .headers(self.headers.clone());
        req = match &self.body {
            Body::None => req,
            Body::Text(t) => req.body(t.clone()),
            Body::Json(v) => req.json(v),
        };
        let fail = |m: String| StepError::failed(format!("`{}`: {}", self.what(cx), cx.masker.mask(&m)));
        let resp = req.send().await.map_err(|e| fail(http_client::describe(&e)))?;
        let status = resp.status().as_u16();
        let mut headers = Map::new();
        for (k, v) in resp.headers() {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            match headers.get_mut(k.as_str()) {
                Some(Value::String(old)) => {
                    old.push_str(", ");
                    old.push_str(&v);
                }
                _ => {
                    headers.insert(k.as_str().to_owned(), Value::from(v));
                }
            }
        }
        let is_json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("json"));
        let body = http_client::read_body(resp, MAX_BODY)
            .await
            .map_err(|e| fail(e.message))?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if !self.expect.contains(i64::from(status)) {
            return Err(fail(format!(
                "answered {status} (expected {}){}",
                self.expect,
                snippet(&text)
            )));
        }
        let looks_json = matches!(text.trim_start().chars().next(), Some('{' | '['));
        let json = if is_json || looks_json {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        let mut outputs = Outputs::new();
        outputs.insert("status".into(), Value::from(status));
        outputs.insert("body".into(), Value::from(text));
        outputs.insert("json".into(), json);
        outputs.insert("headers".into(), Value::Object(headers));
        Ok(outputs)
    }
}

/// `: <the start of the body>` for an error message, or nothing for an empty body.
fn snippet(body: &str) -> String {
    let flat = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        return String::new();
    }
    if flat.chars().count() > SNIPPET {
        format!(": {}...", flat.chars().take(SNIPPET).collect::<String>())
    } else {
        format!(": {flat}")
    }
}

#[async_trait::async_trait]
impl Step for HttpStep {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        if self.read_only() {
            return Ok(Check::InSync(self.send(cx).await?));
        }
        let mut pending = Pending::new(format!("send {}", self.what(cx)));
        if cx.mode.diff {
            let text = match &self.body {
                Body::None => None,
                Body::Text(t) => Some(t.clone()),
                Body::Json(v) => serde_json::to_string_pretty(v).ok(),
            };
            if let Some(text) = text {
                let shown = if cx.masker.contains_secret(&text) {
                    crate::diff::HIDDEN.to_owned()
                } else {
                    text
                };
                pending = pending.with_diff(shown);
            }
        }
        Ok(Check::Drift(pending))
    }

    async fn apply(&self, cx: &StepContext, _pending: Pending) -> Result<Applied, StepError> {
        Ok(Applied::changed(self.send(cx).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_http::Server;
    use crate::testing::{build, converge, local_context};
    use serde_json::json;
    use std::path::Path;

    fn step(params: Value) -> Result<Box<dyn Step>, StepError> {
        build(&HttpKind, params, json!({}), Path::new("/"))
    }

    fn api() -> Server {
        Server::start(|req| match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/runners/7") => (200, "application/json", r#"{"id": 7, "status": "online"}"#.into()),
            ("GET", "/text") => (200, "text/plain", "plain\n".into()),
            ("GET", "/leak") => (403, "text/plain", "bad token glrt-http-secret-42".into()),
            ("POST", "/runners") => (201, "application/json", format!(r#"{{"echo": {}}}"#, req.body)),
            (_, _) => (500, "text/plain", "internal\n  error ".repeat(100)),
        })
    }

    #[tokio::test]
    async fn get_runs_in_check_and_is_never_a_change() {
        let server = api();
        let s = step(json!({"url": server.url("/runners/7"), "headers": {"PRIVATE-TOKEN": "abc"}})).unwrap();
        let mut cx = local_context();
        cx.mode.check = true;
        let Check::InSync(out) = s.check(&cx).await.unwrap() else {
            panic!("a GET is read-only")
        };
        assert_eq!(out["status"], json!(200));
        assert_eq!(out["json"]["status"], json!("online"));
        assert_eq!(out["headers"]["x-test"], json!("yes"));
        assert!(!converge(s.as_ref(), &local_context()).await.unwrap().changed);
        let reqs = server.requests();
        assert_eq!(reqs[0].header("private-token"), Some("abc"));
        assert!(reqs[0].header("user-agent").unwrap().starts_with("flowrun/"));

        let s = step(json!({"url": server.url("/text")})).unwrap();
        let Check::InSync(out) = s.check(&cx).await.unwrap() else {
            panic!("a GET is read-only")
        };
        assert_eq!((&out["body"], &out["json"]), (&json!("plain\n"), &Value::Null));
    }

    #[tokio::test]
    async fn post_drifts_in_check_and_sends_in_apply() {
        let server = api();
        let s = step(json!({"url": server.url("/runners"), "method": "post",
                            "json": "{\"tags\": [\"a\"]}", "expect_status": 201}))
        .unwrap();
        let mut cx = local_context();
        cx.mode = flowrun_engine::step::Mode {
            check: true,
            diff: true,
        };
        let Check::Drift(p) = s.check(&cx).await.unwrap() else {
            panic!("a POST is a change")
        };
        assert_eq!(p.summary, format!("send POST {}", server.url("/runners")));
        assert!(p.diff.unwrap().contains("\"tags\""));
        assert!(server.requests().is_empty(), "check sent a POST");
        let a = converge(s.as_ref(), &local_context()).await.unwrap();
        assert!(a.changed);
        assert_eq!(a.outputs["json"]["echo"]["tags"], json!(["a"]));
        let reqs = server.requests();
        assert_eq!(reqs[0].header("content-type"), Some("application/json"));
    }

    #[tokio::test]
    async fn unexpected_status_fails_with_a_short_body() {
        let server = api();
        let s = step(json!({"url": server.url("/missing")})).unwrap();
        let e = s.check(&local_context()).await.unwrap_err();
        let url = server.url("/missing");
        assert!(
            e.message.starts_with(&format!(
                "`GET {url}`: answered 500 (expected 200-299): internal error internal"
            )),
            "{e}"
        );
        assert!(e.message.ends_with("..."), "{e}");
        assert!(e.message.len() < 500, "{e}");
        // Secrets in the body never reach the message.
        let cx = local_context();
        cx.add_secret("glrt-http-secret-42");
        let s = step(json!({"url": server.url("/leak")})).unwrap();
        let e = s.check(&cx).await.unwrap_err();
        assert!(
            e.message.ends_with("answered 403 (expected 200-299): bad token ****"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn connection_refused_is_described() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = step(json!({"url": format!("http://127.0.0.1:{port}/"), "timeout": "5s"})).unwrap();
        let e = s.check(&local_context()).await.unwrap_err();
        assert!(e.message.contains("onnect"), "{e}");
    }

    #[test]
    fn invalid_parameters() {
        let e = |v| step(v).err().unwrap().message;
        assert!(e(json!({"url": "ftp://x/"})).starts_with("parameter `url`: expected an http"));
        assert!(e(json!({"url": "http://x/", "method": "GE T"})).starts_with("parameter `method`"));
        assert!(e(json!({"url": "http://x/", "body": "a", "json": {}})).contains("at most one of `body` and `json`"));
        assert!(e(json!({"url": "http://x/", "headers": {"a b": "c"}})).starts_with("parameter `headers`: `a b`"));
        assert!(e(json!({"url": "http://x/", "expect_status": "ok"})).starts_with("parameter `expect_status`"));
    }
}
