//! A small Kubernetes API client for `k8s_apply`, on the steps' shared HTTP
//! client (rustls; the cluster's CA as the only root; a client certificate
//! when the kubeconfig gives one; `insecure-skip-tls-verify` loudly):
//! discovery of what the server serves, reads (whole objects, or metadata
//! only — how Secrets are checked without reading their data), server-side
//! apply (with `dryRun=All` for previews), deletes. Connection failures,
//! 429 and 502–504 are retried with backoff, a 500 only for reads (never a
//! typed-patch 500, which will not get better); a 401 with `exec`
//! credentials fetches them again once. Errors keep the API's words.

use super::credentials::{self, Credentials};
use super::kubeconfig::{Pem, Resolved};
use crate::http_client;
use flowrun_engine::secrets::Masker;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const ATTEMPTS: u32 = 5;
const RETRY_TOTAL: Duration = Duration::from_secs(60);
pub const METADATA_ONLY: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";
const METADATA_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
pub const APPLY: &str = "application/apply-patch+yaml";

/// A resource the server serves.
#[derive(Debug, Clone)]
pub struct ApiResource {
    /// The plural name in URLs.
    pub name: String,
    pub kind: String,
    pub namespaced: bool,
    /// `/api/v1` or `/apis/GROUP/VERSION`.
    pub prefix: String,
}

impl ApiResource {
    pub fn collection(&self, ns: Option<&str>) -> String {
        match ns.filter(|_| self.namespaced) {
            Some(ns) => format!("{}/namespaces/{}/{}", self.prefix, crate::api::segment(ns), self.name),
            None => format!("{}/{}", self.prefix, self.name),
        }
    }

    pub fn object(&self, ns: Option<&str>, name: &str) -> String {
        format!("{}/{}", self.collection(ns), crate::api::segment(name))
    }
}

/// A failed request: the HTTP status and the Status body, when the server answered.
#[derive(Debug, Clone)]
pub struct KubeError {
    pub code: Option<u16>,
    pub status: Value,
    pub message: String,
}

impl KubeError {
    pub fn is(&self, code: u16) -> bool {
        self.code == Some(code)
    }

    fn reason(&self) -> &str {
        self.status["reason"].as_str().unwrap_or("")
    }

    /// A 404 that is about the namespace, not the object (NamespaceLifecycle).
    pub fn missing_namespace(&self) -> Option<&str> {
        (self.is(404) && self.status["details"]["kind"] == "namespaces")
            .then(|| self.status["details"]["name"].as_str())
            .flatten()
    }

    /// (field, manager) of each conflict of a 409 from an apply.
    pub fn conflicts(&self) -> Vec<(String, String)> {
        if !self.is(409) || self.reason() != "Conflict" {
            return Vec::new();
        }
        self.status["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["reason"] == "FieldManagerConflict")
            .map(|c| {
                let manager = c["message"]
                    .as_str()
                    .unwrap_or("")
                    .trim_start_matches("conflict with ")
                    .to_owned();
                (c["field"].as_str().unwrap_or("").to_owned(), manager)
            })
            .collect()
    }
}

impl std::fmt::Display for KubeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

struct Conn {
    http: reqwest::Client,
    creds: Credentials,
}

/// A client for one cluster and user.
pub struct Kube {
    resolved: Arc<Resolved>,
    conn: Mutex<Arc<Conn>>,
}

fn discovery_cache() -> &'static Mutex<HashMap<String, Arc<Vec<ApiResource>>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Vec<ApiResource>>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn build_http(r: &Resolved, creds: &Credentials) -> Result<reqwest::Client, String> {
    let ca = match &r.ca {
        Some(pem) => Some(pem.read("certificate authority")?),
        None => None,
    };
    let ca_name = match &r.ca {
        Some(Pem::File(p)) => format!("the `certificate-authority` `{}`", p.display()),
        _ => format!("the `certificate-authority-data` of cluster `{}`", r.cluster),
    };
    if r.insecure {
        tracing::warn!(
            "cluster `{}` sets `insecure-skip-tls-verify`: the server's certificate is NOT verified",
            r.cluster
        );
    }
    if let Some(sni) = &r.tls_server_name {
        tracing::warn!("cluster `{}` sets `tls-server-name: {sni}`, which flowrun ignores: the certificate must name the server's host", r.cluster);
    }
    http_client::client_with(
        http_client::ClientOptions {
            insecure: r.insecure,
            timeout: Some(REQUEST_TIMEOUT),
            ca_pem: ca.as_deref().map(|c| (c, ca_name.as_str())),
            identity_pem: creds.identity.as_deref(),
            ..http_client::ClientOptions::default()
        },
        |b| b.redirect(reqwest::redirect::Policy::none()),
    )
    .map_err(|e| e.message)
}

fn retry_after(resp: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = resp.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

enum Outcome {
    Done(Value),
    Retry(KubeError, Option<Duration>),
    Fatal(KubeError),
}

impl Kube {
    /// Credentials are obtained here (an exec plugin runs now), not at build.
    pub async fn connect(resolved: Arc<Resolved>) -> Result<Self, String> {
        let creds = credentials::obtain(&resolved, false).await?;
        let http = build_http(&resolved, &creds)?;
        Ok(Self {
            resolved,
            conn: Mutex::new(Arc::new(Conn { http, creds })),
        })
    }

    fn conn(&self) -> Arc<Conn> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn refresh(&self) -> Result<(), String> {
        let creds = credentials::obtain(&self.resolved, true).await?;
        let http = build_http(&self.resolved, &creds)?;
        *self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Conn { http, creds });
        Ok(())
    }

    /// One request, retried per the policy; the body of a 2xx answer.
    async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<(&'static str, Vec<u8>)>,
        accept: &str,
    ) -> Result<Value, KubeError> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(250);
        let mut refreshed = false;
        for attempt in 1..=ATTEMPTS {
            let (err, wait) = match self.once(&method, path, query, body.as_ref(), accept).await {
                Outcome::Done(v) => return Ok(v),
                Outcome::Fatal(e) if e.is(401) && self.resolved.auth.exec.is_some() && !refreshed => {
                    refreshed = true;
                    self.refresh().await.map_err(|m| KubeError {
                        code: None,
                        status: Value::Null,
                        message: m,
                    })?;
                    (e, Some(Duration::ZERO))
                }
                Outcome::Fatal(e) => return Err(e),
                Outcome::Retry(e, after) => (e, after),
            };
            let wait = wait.unwrap_or(delay);
            if attempt == ATTEMPTS || started.elapsed() + wait > RETRY_TOTAL {
                return Err(KubeError {
                    message: format!("{} (gave up after {attempt} attempts)", err.message),
                    ..err
                });
            }
            if !wait.is_zero() {
                tracing::warn!("{}; retrying in {} ms", err.message, wait.as_millis());
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(Duration::from_secs(4));
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn once(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&(&'static str, Vec<u8>)>,
        accept: &str,
    ) -> Outcome {
        let conn = self.conn();
        let what = format!("{method} {path}");
        let mut b = conn
            .http
            .request(method.clone(), format!("{}{path}", self.resolved.server))
            .header(ACCEPT, accept);
        if !query.is_empty() {
            b = b.query(query);
        }
        if let Some(t) = &conn.creds.token {
            match HeaderValue::from_str(&format!("Bearer {t}")) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    b = b.header(AUTHORIZATION, v);
                }
                Err(_) => {
                    return Outcome::Fatal(KubeError {
                        code: None,
                        status: Value::Null,
                        message: format!(
                            "{} holds characters not allowed in an HTTP header",
                            self.resolved.credential()
                        ),
                    })
                }
            }
        }
        if let Some((ct, bytes)) = body {
            b = b.header(CONTENT_TYPE, *ct).body(bytes.clone());
        }
        let resp = match b.send().await {
            Ok(r) => r,
            Err(e) => {
                let text = http_client::describe(&e);
                let tls = ["certificate", "tls", "handshake", "alert"]
                    .iter()
                    .any(|m| text.to_ascii_lowercase().contains(m));
                let err = KubeError {
                    code: None,
                    status: Value::Null,
                    message: mask(&format!("{what}: cannot reach {}: {text}", self.resolved.server)),
                };
                return if tls {
                    Outcome::Fatal(err)
                } else {
                    Outcome::Retry(err, None)
                };
            }
        };
        let code = resp.status().as_u16();
        let after = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        tracing::debug!(method = %method, path, code, "kubernetes request");
        if (200..300).contains(&code) {
            return Outcome::Done(json);
        }
        let api = json["message"]
            .as_str()
            .map_or_else(|| text.trim().chars().take(300).collect(), str::to_owned);
        let err = KubeError {
            code: Some(code),
            message: mask(&format!("{what}: {code} {api}")),
            status: json,
        };
        let typed = api.contains("failed to create typed patch object");
        match code {
            429 | 502..=504 => Outcome::Retry(err, after),
            500 if *method == Method::GET && !typed => Outcome::Retry(err, after),
            _ => Outcome::Fatal(err),
        }
    }

    /// The resource serving `kind` in `api_version`, from discovery (cached per server).
    pub async fn resource(&self, api_version: &str, kind: &str) -> Result<ApiResource, String> {
        let prefix = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        let key = format!("{}{prefix}", self.resolved.server);
        let cached = discovery_cache()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned();
        let list = match cached {
            Some(l) => l,
            None => {
                let doc = match self.request(Method::GET, &prefix, &[], None, "application/json").await {
                    Ok(d) => d,
                    Err(e) if e.is(404) => {
                        return Err(format!(
                            "the server at {} does not serve the API version `{api_version}`",
                            self.resolved.server
                        ))
                    }
                    Err(e) => return Err(self.explain(&e, "reading what the server serves")),
                };
                let list: Vec<ApiResource> = doc["resources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| r["name"].as_str().is_some_and(|n| !n.contains('/')))
                    .map(|r| ApiResource {
                        name: r["name"].as_str().unwrap_or("").to_owned(),
                        kind: r["kind"].as_str().unwrap_or("").to_owned(),
                        namespaced: r["namespaced"].as_bool().unwrap_or(true),
                        prefix: prefix.clone(),
                    })
                    .collect();
                let list = Arc::new(list);
                discovery_cache()
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(key, list.clone());
                list
            }
        };
        list.iter().find(|r| r.kind == kind).cloned().ok_or_else(|| {
            let kinds: Vec<String> = list.iter().map(|r| format!("`{}`", r.kind)).collect();
            let near = flowrun_engine::diag::did_you_mean(kind, list.iter().map(|r| r.kind.as_str()))
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            format!(
                "the server does not serve kind `{kind}` in `{api_version}`{near}; it serves {}",
                kinds.join(", ")
            )
        })
    }

    /// The object at `path`, or `None` when it does not exist.
    pub async fn get(&self, path: &str, metadata_only: bool) -> Result<Option<Value>, KubeError> {
        let accept = if metadata_only {
            METADATA_ONLY
        } else {
            "application/json"
        };
        match self.request(Method::GET, path, &[], None, accept).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is(404) && e.missing_namespace().is_none() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Metadata of the objects in a collection that match `selector`.
    pub async fn list_metadata(&self, path: &str, selector: &str) -> Result<Vec<Value>, KubeError> {
        let q = [("labelSelector", selector.to_owned())];
        match self.request(Method::GET, path, &q, None, METADATA_LIST).await {
            Ok(v) => Ok(v["items"].as_array().cloned().unwrap_or_default()),
            Err(e) if e.is(404) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Server-side apply of `body` as `manager`.
    pub async fn apply(
        &self,
        path: &str,
        body: &Value,
        manager: &str,
        force: bool,
        dry_run: bool,
    ) -> Result<Value, KubeError> {
        let mut q = vec![
            ("fieldManager", manager.to_owned()),
            ("fieldValidation", "Strict".to_owned()),
        ];
        if force {
            q.push(("force", "true".to_owned()));
        }
        if dry_run {
            q.push(("dryRun", "All".to_owned()));
        }
        // JSON is YAML: the apply body needs no YAML serialiser.
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.request(Method::PATCH, path, &q, Some((APPLY, bytes)), "application/json")
            .await
    }

    /// Delete the object at `path` (its dependents in the background); a missing object is no error.
    pub async fn delete(&self, path: &str, dry_run: bool) -> Result<bool, KubeError> {
        let mut q = vec![("propagationPolicy", "Background".to_owned())];
        if dry_run {
            q.push(("dryRun", "All".to_owned()));
        }
        match self.request(Method::DELETE, path, &q, None, "application/json").await {
            Ok(_) => Ok(true),
            Err(e) if e.is(404) && e.missing_namespace().is_none() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A failed request in words an operator can act on; `doing` says what flowrun was doing.
    pub fn explain(&self, e: &KubeError, doing: &str) -> String {
        super::errors::explain(e, doing, &self.resolved)
    }
}

fn mask(text: &str) -> String {
    Masker::global().mask(text).into_owned()
}
