//! The HTTP client under the API steps. It verifies certificates (with an
//! extra CA from `ca_file` for a self-signed Proxmox; turning verification
//! off is an explicit `insecure` that warns on every run), retries what is
//! worth retrying — connection failures, 429 and 502/503/504 always, 500 only
//! for reads, since Proxmox answers 500 to logical errors such as "VM is
//! running" — with exponential backoff bounded in attempts and total time,
//! honouring `Retry-After`. An error carries the API's own message. The
//! credential header is marked sensitive, never formatted, and every message
//! goes through the secret masker.

use super::errors::api_message;
use flowrun_engine::secrets::Masker;
use flowrun_engine::step::StepError;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::Method;
use serde_json::Value;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often and how long to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts after this much time since the first attempt.
    pub total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            total: Duration::from_secs(60),
        }
    }
}

/// How to build a client for one API.
#[derive(Clone)]
pub struct ClientOptions {
    /// The API's name in messages (`proxmox`, `gitlab`, `github`).
    pub api: &'static str,
    /// Scheme, host and port, plus any path prefix (`https://pve:8006/api2/json`).
    pub base_url: String,
    /// A PEM file of CA certificates added to the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (loudly).
    pub insecure: bool,
    /// Per request.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Non-secret headers sent with every request.
    pub headers: Vec<(&'static str, String)>,
    /// The credential header; its value is a secret.
    pub auth: Option<(&'static str, String)>,
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The credential's value never: only which header carries it.
        f.debug_struct("ClientOptions")
            .field("api", &self.api)
            .field("base_url", &self.base_url)
            .field("ca_file", &self.ca_file)
            .field("insecure", &self.insecure)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("headers", &self.headers)
            .field("auth", &self.auth.as_ref().map(|(name, _)| format!("{name}: ****")))
            .finish()
    }
}

impl ClientOptions {
    pub fn new(api: &'static str, base_url: impl Into<String>) -> Self {
        Self {
            api,
            base_url: base_url.into(),
            ca_file: None,
            insecure: false,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            headers: Vec::new(),
            auth: None,
        }
    }
}

/// A request body.
#[derive(Debug, Clone, Default)]
pub enum Body {
    #[default]
    Empty,
    /// `application/x-www-form-urlencoded` pairs.
    Form(Vec<(String, String)>),
    Json(Value),
}

/// One request, relative to the client's base URL.
#[derive(Debug, Clone)]
#[must_use]
pub struct Req {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    body: Body,
    retry: bool,
}

impl Req {
    fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            body: Body::Empty,
            retry: true,
        }
    }
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }
    pub fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }
    pub fn put(path: impl Into<String>) -> Self {
        Self::new(Method::PUT, path)
    }
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }
    pub fn query(mut self, key: &str, value: impl ToString) -> Self {
        self.query.push((key.to_owned(), value.to_string()));
        self
    }
    pub fn form(mut self, pairs: Vec<(String, String)>) -> Self {
        self.body = Body::Form(pairs);
        self
    }
    pub fn json(mut self, value: Value) -> Self {
        self.body = Body::Json(value);
        self
    }
    /// Answer errors at once (the caller polls on its own).
    pub fn no_retry(mut self) -> Self {
        self.retry = false;
        self
    }
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// A successful answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The body as JSON; `Null` when empty or not JSON.
    pub json: Value,
    pub headers: HeaderMap,
}

/// A failed request: the API's status and message (masked), or why it was not reached.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// `None` when no answer came (connection, TLS, timeout).
    pub status: Option<u16>,
    pub message: String,
    /// The error body as JSON (`Null` when none).
    pub body: Value,
}

impl ApiError {
    pub fn is(&self, status: u16) -> bool {
        self.status == Some(status)
    }

    /// GitLab's 403 for a token that lacks a scope.
    pub fn is_insufficient_scope(&self) -> bool {
        self.is(403) && self.body.get("error").and_then(Value::as_str) == Some("insufficient_scope")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for StepError {
    fn from(e: ApiError) -> Self {
        StepError::failed(e.message)
    }
}

/// A client for one API.
pub struct ApiClient {
    http: reqwest::Client,
    api: &'static str,
    base: String,
    headers: HeaderMap,
    retry: RetryPolicy,
    timeout: Duration,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the headers: one of them is a credential.
        f.debug_struct("ApiClient")
            .field("api", &self.api)
            .field("base", &self.base)
            .finish()
    }
}

impl ApiClient {
    pub fn new(opts: ClientOptions) -> Result<Self, StepError> {
        let base = opts.base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(StepError::param(
                "api_url",
                format!("expected an http(s) URL such as `https://host:8006`, got `{base}`"),
            ));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &opts.headers {
            let value = HeaderValue::from_str(value)
                .map_err(|_| StepError::failed(format!("header `{name}` has characters not allowed in HTTP")))?;
            headers.insert(HeaderName::from_static(name), value);
        }
        if let Some((name, secret)) = &opts.auth {
            // The value is never shown: only which parameter is wrong.
            let mut value = HeaderValue::from_str(secret).map_err(|_| {
                StepError::failed(format!(
                    "the {} credential has characters not allowed in an HTTP header (a newline?)",
                    opts.api
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static(name), value);
        }
        // TLS (ring, `ca_file`, the loud `insecure` warning) is decided in one place for all steps.
        let http = crate::http_client::client_with(
            crate::http_client::ClientOptions {
                ca_file: opts.ca_file.as_deref(),
                insecure: opts.insecure,
                timeout: None,
                ..crate::http_client::ClientOptions::default()
            },
            |b| {
                b.user_agent(concat!("flowrun/", env!("CARGO_PKG_VERSION")))
                    .connect_timeout(Duration::from_secs(10))
                    .redirect(reqwest::redirect::Policy::none())
            },
        )?;
        Ok(Self {
            http,
            api: opts.api,
            base,
            headers,
            retry: opts.retry,
            timeout: opts.timeout,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Send `req`, retrying per the policy; `Ok` only for a 2xx answer.
    pub async fn send(&self, req: Req) -> Result<Response, ApiError> {
        let started = Instant::now();
        let mut delay = self.retry.initial_delay;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = self.once(&req).await;
            let (err, wait) = match outcome {
                Outcome::Done(resp) => return Ok(resp),
                Outcome::Fatal(err) => return Err(err),
                Outcome::Retry(err, retry_after) => (err, retry_after.unwrap_or(delay)),
            };
            if !req.retry {
                return Err(err);
            }
            let elapsed = started.elapsed();
            if attempt >= self.retry.attempts || elapsed + wait > self.retry.total {
                return Err(ApiError {
                    message: format!(
                        "{} (gave up after {attempt} attempt{} in {:.1}s)",
                        err.message,
                        if attempt == 1 { "" } else { "s" },
                        elapsed.as_secs_f64()
                    ),
                    ..err
                });
            }
            tracing::warn!(
                api = self.api,
                attempt,
                retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "{}; retrying",
                err.message
            );
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(self.retry.max_delay);
        }
    }

    async fn once(&self, req: &Req) -> Outcome {
        let url = format!("{}{}", self.base, req.path);
        let what = format!("{} {} {}", self.api, req.method, req.path);
        let mut builder = self
            .http
            .request(req.method.clone(), &url)
            .headers(self.headers.clone())
            .timeout(self.timeout);
        if !req.query.is_empty() {
            builder = builder.query(&req.query);
        }
        builder = match &req.body {
            Body::Empty => builder,
            Body::Form(pairs) => builder.form(pairs),
            Body::Json(v) => builder.json(v),
        };
        let idempotent = matches!(req.method, Method::GET | Method::PUT | Method::DELETE | Method::HEAD);
        let started = Instant::now();
        let resp = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                let err = ApiError {
                    status: None,
                    message: mask(&format!(
                        "{what}: cannot reach {}: {}",
                        self.base,
                        crate::http_client::describe(&e)
                    )),
                    body: Value::Null,
                };
                // A refused connection never reached the server: safe to retry for any method.
                // A certificate that does not verify will not verify on the next attempt either.
                return if !is_tls_error(&e) && (e.is_connect() || idempotent) {
                    Outcome::Retry(err, None)
                } else {
                    Outcome::Fatal(err)
                };
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
        let text = resp.text().await.unwrap_or_default();
        tracing::debug!(
            api = self.api,
            method = %req.method,
            path = %req.path,
            status,
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "api request"
        );
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Outcome::Done(Response { status, json, headers });
        }
        let message = api_message(&json, &text, reason.as_deref()).unwrap_or_else(|| {
            reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_owned()
        });
        let err = ApiError {
            status: Some(status),
            message: mask(&format!("{what}: {status} {message}")),
            body: json,
        };
        let retryable = matches!(status, 429 | 502 | 503 | 504) || (status == 500 && req.method == Method::GET);
        if retryable {
            Outcome::Retry(err, retry_after(&headers))
        } else {
            Outcome::Fatal(err)
        }
    }
}

enum Outcome {
    Done(Response),
    Retry(ApiError, Option<Duration>),
    Fatal(ApiError),
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    v.parse::<u64>().ok().map(Duration::from_secs)
}

fn mask(text: &str) -> String {
    Masker::global().mask(text).into_owned()
}

/// Whether a TLS handshake failed (a certificate not trusted, a protocol mismatch).
fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        // `io::Error::source` skips the error it wraps: look inside.
        if let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if inner.is::<rustls::Error>() {
                return true;
            }
        }
        // Wrappers on the way (boxed errors) can hide the type: rustls's own wording then tells.
        let text = err.to_string();
        if [
            "invalid peer certificate",
            "received fatal alert",
            "peer is incompatible",
            "peer misbehaved",
        ]
        .iter()
        .any(|m| text.contains(m))
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A path segment made safe for a URL (node names, UPIDs, runner names).
pub fn segment(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b':')
        .remove(b'@')
        .remove(b'!');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_never_show_the_credential() {
        let mut o = ClientOptions::new("gitlab", "https://gitlab.example.com");
        o.auth = Some(("private-token", "glpat-do-not-show".into()));
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("glpat-do-not-show") && shown.contains("private-token: ****"),
            "{shown}"
        );
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn segments_keep_upids_readable() {
        assert_eq!(
            segment("UPID:pve:0000A:1:2:qmclone:9000:root@pam!flowrun:"),
            "UPID:pve:0000A:1:2:qmclone:9000:root@pam!flowrun:"
        );
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
