//! `wait_for`: a probe that waits until a TCP port accepts connections (or
//! stops accepting them), or until a URL answers — after a VM boots, before
//! a service is used. It connects from the machine running flowrun, retries
//! with a delay until a deadline, and never counts as a change.

use crate::http_client;
use crate::params::Params;
use flowrun_engine::step::{
    Applied, BuildContext, Check, KindInfo, Outputs, ParamSpec, ParamType, Pending, Step, StepContext, StepError,
    StepKind,
};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct WaitForKind;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_DELAY: Duration = Duration::from_secs(1);
const MIN_DELAY: Duration = Duration::from_millis(50);
/// No single attempt takes longer than this, so a hung server still leaves time to retry.
const MAX_ATTEMPT: Duration = Duration::from_secs(10);

static INFO: KindInfo = KindInfo {
    name: "wait_for",
    version: 1,
    doc: "Wait until a TCP port is open (or closed) or a URL answers, connecting from the machine running flowrun",
    params: &[
        ParamSpec::opt("port", ParamType::Int, "a TCP port to wait for"),
        ParamSpec::opt(
            "host",
            ParamType::Str,
            "with `port`: the address to connect to (default: the target host's address)",
        ),
        ParamSpec::opt(
            "url",
            ParamType::Url,
            "an http(s) URL to GET until it answers a status below 400 (or `status`)",
        ),
        ParamSpec::opt("status", ParamType::Int, "with `url`: the status to wait for"),
        ParamSpec::opt(
            "state",
            ParamType::Enum(&["started", "stopped"]),
            "with `port`: `started` (default) waits until it accepts connections, `stopped` until it refuses them",
        ),
        ParamSpec::opt("timeout", ParamType::Duration, "how long to wait in all (default 60s)"),
        ParamSpec::opt(
            "delay",
            ParamType::Duration,
            "pause between attempts (default 1s, at least 50ms)",
        ),
        ParamSpec::opt(
            "ca_file",
            ParamType::Str,
            "with `url`: a PEM file of extra CA certificates",
        ),
        ParamSpec::opt(
            "insecure",
            ParamType::Bool,
            "with `url`: do not verify the TLS certificate (labs only; logged as a warning)",
        ),
    ],
    one_of: &[&["port", "url"]],
    outputs: &["elapsed_ms", "status"],
    secret_outputs: &[],
    journal: false,
};

impl StepKind for WaitForKind {
    fn info(&self) -> &'static KindInfo {
        &INFO
    }

    fn build(&self, params: &Map<String, Value>, cx: &BuildContext<'_>) -> Result<Box<dyn Step>, StepError> {
        let p = Params(params);
        let started = p.choice("state", &["started", "stopped"], "started")? == "started";
        let only_with = |name: &str, with: &str| {
            if p.has(name) {
                Err(StepError::param(name, format!("applies only with `{with}`")))
            } else {
                Ok(())
            }
        };
        let target =
            match (p.opt_i64("port")?, p.opt_str("url")?) {
                (Some(port), None) => {
                    for name in ["status", "ca_file", "insecure"] {
                        only_with(name, "url")?;
                    }
                    let port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
                        StepError::param("port", format!("expected a port from 1 to 65535, got {port}"))
                    })?;
                    Target::Port {
                        host: p.opt_str("host")?,
                        port,
                        started,
                    }
                }
                (None, Some(url)) => {
                    only_with("host", "port")?;
                    if !started {
                        return Err(StepError::param("state", "`stopped` applies only with `port`"));
                    }
                    let status =
                        p.opt_i64("status")?
                            .map(|s| {
                                u16::try_from(s).ok().filter(|s| (100..600).contains(s)).ok_or_else(|| {
                                    StepError::param("status", format!("expected an HTTP status, got {s}"))
                                })
                            })
                            .transpose()?;
                    let ca_file: Option<PathBuf> = p.opt_str("ca_file")?.map(|f| cx.workflow_path(&f));
                    let client = http_client::client(ca_file.as_deref(), p.bool_or("insecure", false)?, None)?;
                    reqwest::Url::parse(&url).map_err(|e| StepError::param("url", format!("invalid URL: {e}")))?;
                    Target::Url { url, status, client }
                }
                _ => return Err(StepError::failed("give exactly one of `port` and `url`")),
            };
        Ok(Box::new(WaitForStep {
            target,
            timeout: p.opt_duration("timeout")?.unwrap_or(DEFAULT_TIMEOUT),
            delay: p.opt_duration("delay")?.unwrap_or(DEFAULT_DELAY).max(MIN_DELAY),
        }))
    }
}

enum Target {
    Port {
        host: Option<String>,
        port: u16,
        started: bool,
    },
    Url {
        url: String,
        status: Option<u16>,
        client: reqwest::Client,
    },
}

struct WaitForStep {
    target: Target,
    timeout: Duration,
    delay: Duration,
}

/// The result of one attempt: ready (with the HTTP status, if any), or why not.
type Attempt = Result<Option<u16>, String>;

impl WaitForStep {
    /// What is waited for, for messages.
    fn what(&self, cx: &StepContext) -> String {
        match &self.target {
            Target::Port { host, port, started } => {
                let host = host.clone().unwrap_or_else(|| cx.host.address());
                let addr = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                let state = if *started { "accept" } else { "refuse" };
                format!("{addr} to {state} connections")
            }
            Target::Url { url, status, .. } => match status {
                Some(s) => format!("{} to answer {s}", cx.masker.mask(url)),
                None => format!("{} to answer", cx.masker.mask(url)),
            },
        }
    }

    async fn attempt(&self, cx: &StepContext, limit: Duration) -> Attempt {
        match &self.target {
            Target::Port { host, port, started } => {
                let host = host.clone().unwrap_or_else(|| cx.host.address());
                let open =
                    match tokio::time::timeout(limit, tokio::net::TcpStream::connect((host.as_str(), *port))).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("connecting timed out".to_owned()),
                    };
                match (open, started) {
                    (Ok(()), true) | (Err(_), false) => Ok(None),
                    (Ok(()), false) => Err("the port is open".to_owned()),
                    (Err(e), true) => Err(e),
                }
            }
            Target::Url { url, status, client } => match client.get(url).timeout(limit).send().await {
                Ok(resp) => {
                    let got = resp.status().as_u16();
                    let ready = status.map_or(got < 400, |want| got == want);
                    if ready {
                        Ok(Some(got))
                    } else {
                        Err(format!("status {got}"))
                    }
                }
                Err(e) => Err(cx.masker.mask(&http_client::describe(&e)).into_owned()),
            },
        }
    }
}

#[async_trait::async_trait]
impl Step for WaitForStep {
    async fn check(&self, cx: &StepContext) -> Result<Check, StepError> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        // Bounded: every attempt ends by the deadline, and attempts are `delay` apart.
        let last = loop {
            let limit = deadline
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(100), MAX_ATTEMPT);
            let why = match self.attempt(cx, limit).await {
                Ok(status) => {
                    let mut outputs = Outputs::new();
                    let elapsed = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                    outputs.insert("elapsed_ms".into(), Value::from(elapsed));
                    outputs.insert("status".into(), status.map_or(Value::Null, Value::from));
                    return Ok(Check::InSync(outputs));
                }
                Err(why) => why,
            };
            if Instant::now() + self.delay >= deadline {
                break why;
            }
            tokio::time::sleep(self.delay).await;
        };
        Err(StepError::failed(format!(
            "timed out after {} waiting for {} (last attempt: {last})",
            humantime_short(self.timeout),
            self.what(cx)
        )))
    }

    async fn apply(&self, _cx: &StepContext, _pending: Pending) -> Result<Applied, StepError> {
        // A probe: `check` never reports drift.
        Ok(Applied::default())
    }
}

/// `1m 30s`, `500ms`.
fn humantime_short(d: Duration) -> String {
    if d.subsec_millis() == 0 || d.as_secs() >= 60 {
        let secs = d.as_secs();
        match (secs / 60, secs % 60) {
            (0, s) => format!("{s}s"),
            (m, 0) => format!("{m}m"),
            (m, s) => format!("{m}m {s}s"),
        }
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_http::Server;
    use crate::testing::{build, converge, local_context};
    use serde_json::json;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn step(params: Value) -> Result<Box<dyn Step>, StepError> {
        build(&WaitForKind, params, json!({}), Path::new("/"))
    }

    /// A port nothing listens on (bound, then released).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn open_port_is_in_sync_and_never_changed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // `host` defaults to the target's address (127.0.0.1 for localhost).
        let s = step(json!({"port": port, "timeout": "5s"})).unwrap();
        let cx = local_context();
        let Check::InSync(out) = s.check(&cx).await.unwrap() else {
            panic!("expected in sync")
        };
        assert_eq!(out["status"], Value::Null);
        assert!(!converge(s.as_ref(), &cx).await.unwrap().changed);
    }

    #[tokio::test]
    async fn closed_port_times_out_naming_it() {
        let port = free_port();
        let s = step(json!({"port": port, "host": "127.0.0.1", "timeout": "300ms", "delay": "100ms"})).unwrap();
        let e = s.check(&local_context()).await.unwrap_err();
        assert!(
            e.message.starts_with(&format!(
                "timed out after 300ms waiting for 127.0.0.1:{port} to accept connections (last attempt: "
            )),
            "{e}"
        );
        let s = step(json!({"port": port, "state": "stopped", "timeout": "1s"})).unwrap();
        assert!(matches!(s.check(&local_context()).await.unwrap(), Check::InSync(_)));
    }

    #[tokio::test]
    async fn url_waits_for_success() {
        let hits = AtomicUsize::new(0);
        let server = Server::start(move |_| {
            if hits.fetch_add(1, Ordering::SeqCst) < 2 {
                (503, "text/plain", "starting".into())
            } else {
                (200, "text/plain", "ok".into())
            }
        });
        let s = step(json!({"url": server.url("/health"), "delay": "50ms", "timeout": "20s"})).unwrap();
        let Check::InSync(out) = s.check(&local_context()).await.unwrap() else {
            panic!("expected in sync")
        };
        assert_eq!(out["status"], json!(200));
        assert_eq!(server.requests().len(), 3);
    }

    #[tokio::test]
    async fn url_timeout_reports_last_status() {
        let server = Server::start(|_| (503, "text/plain", "down".into()));
        let s = step(json!({"url": server.url("/"), "status": 204, "timeout": "200ms", "delay": "50ms"})).unwrap();
        let e = s.check(&local_context()).await.unwrap_err();
        assert!(e.message.contains("to answer 204 (last attempt: status 503)"), "{e}");
    }

    #[test]
    fn invalid_parameters() {
        let e = |v| step(v).err().unwrap().message;
        assert!(e(json!({"port": 70000})).starts_with("parameter `port`: expected a port"));
        assert!(e(json!({"url": "http://x/", "host": "y"})).starts_with("parameter `host`: applies only with `port`"));
        assert!(e(json!({"url": "http://x/", "state": "stopped"})).starts_with("parameter `state`"));
        assert!(e(json!({"port": 80, "status": 200})).starts_with("parameter `status`"));
        assert!(e(json!({"url": "not a url"})).starts_with("parameter `url`: invalid URL"));
        assert!(e(json!({"port": 80, "timeout": "soon"})).starts_with("parameter `timeout`"));
        assert_eq!(humantime_short(Duration::from_secs(90)), "1m 30s");
    }
}
