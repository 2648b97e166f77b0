//! The HTTP(S) server under every emulator: binds `127.0.0.1:0`, answers each
//! request through a synchronous [`Handler`] (emulator state is a plain
//! struct behind a mutex; time-based behaviour such as task durations is
//! computed from timestamps, never from sleeps), records every request so
//! tests can assert "no API write on re-run", injects bursts of 503s, and
//! stops when dropped.

use super::tls::TestCa;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Request bodies larger than this are refused (413).
const MAX_BODY: usize = 1 << 20;
/// Recorded requests kept at most (the oldest are dropped beyond it).
const MAX_RECORDED: usize = 100_000;
/// A connection idle for longer than this is closed.
const CONN_TIMEOUT: Duration = Duration::from_secs(120);

/// A request as the handlers see it: the body read whole.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path, still percent-encoded.
    pub path: String,
    /// The raw query string (without `?`), empty when absent.
    pub query: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    /// The client's TLS certificate (DER), when it presented one.
    pub peer_certificate: Option<Arc<Vec<u8>>>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The media type of the body, lowercase, without parameters.
    pub fn content_type(&self) -> String {
        self.header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }

    /// Path segments, percent-decoded.
    pub fn segments(&self) -> Vec<String> {
        self.path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect()
    }
}

/// A response: status, optional non-standard reason phrase, headers, body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub reason: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            reason: None,
            headers: vec![("content-type".into(), "application/json;charset=UTF-8".into())],
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    pub fn empty(status: u16) -> Self {
        Self {
            status,
            reason: None,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    #[must_use]
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// What an emulator does with a request.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &Request) -> Reply;
    /// Whether the request carried credentials (recorded, never their value).
    fn auth_present(&self, req: &Request) -> bool;
    /// The answer during an injected outage.
    fn unavailable(&self) -> Reply {
        Reply::empty(503).reason("Service Unavailable")
    }
}

/// One request as recorded for assertions (no header values, no bodies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub auth: bool,
    pub status: u16,
}

impl Recorded {
    /// Anything but GET/HEAD.
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD")
    }
}

/// The state shared between a server and its connections.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) requests: Mutex<Vec<Recorded>>,
    /// Answer this many next requests with 503.
    pub(crate) unavailable: AtomicU32,
    /// Answer this many next requests with 429 and this `Retry-After` (seconds).
    pub(crate) throttled: AtomicU32,
    pub(crate) retry_after: AtomicU32,
}

/// A running server; stops accepting and drops its connections when dropped.
pub struct Server {
    addr: SocketAddr,
    url: String,
    pub(crate) shared: Arc<Shared>,
    ca: Option<TestCa>,
    task: JoinHandle<()>,
}

impl Server {
    /// Start on `127.0.0.1:0`; HTTPS with a fresh CA when `tls_name` is given.
    pub async fn start(handler: Arc<dyn Handler>, tls_name: Option<&str>) -> std::io::Result<Self> {
        Self::start_inner(handler, tls_name, false).await
    }

    /// HTTPS with a fresh CA that also asks clients for certificates it
    /// issued ([`TestCa::issue_client`]); clients without one are served too.
    pub async fn start_with_client_auth(handler: Arc<dyn Handler>, tls_name: &str) -> std::io::Result<Self> {
        Self::start_inner(handler, Some(tls_name), true).await
    }

    async fn start_inner(
        handler: Arc<dyn Handler>,
        tls_name: Option<&str>,
        client_auth: bool,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let ca = match tls_name {
            Some(name) => Some(TestCa::generate(name).map_err(std::io::Error::other)?),
            None => None,
        };
        let scheme = if ca.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        let shared = Arc::new(Shared::default());
        let acceptor = match &ca {
            Some(ca) if client_auth => Some(tokio_rustls::TlsAcceptor::from(
                ca.server_config_with_client_auth().map_err(std::io::Error::other)?,
            )),
            Some(ca) => Some(tokio_rustls::TlsAcceptor::from(ca.server_config.clone())),
            None => None,
        };
        let task = tokio::spawn(accept_loop(listener, acceptor, handler, shared.clone()));
        Ok(Self {
            addr,
            url,
            shared,
            ca,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn ca(&self) -> Option<&TestCa> {
        self.ca.as_ref()
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Answer the next `n` requests with 503 Service Unavailable.
    pub fn fail_next_requests(&self, n: u32) {
        self.shared.unavailable.store(n, Ordering::SeqCst);
    }

    /// Answer the next `n` requests with 429 Too Many Requests and `Retry-After: retry_after_secs`.
    pub fn throttle_next_requests(&self, n: u32, retry_after_secs: u32) {
        self.shared.retry_after.store(retry_after_secs, Ordering::SeqCst);
        self.shared.throttled.store(n, Ordering::SeqCst);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    handler: Arc<dyn Handler>,
    shared: Arc<Shared>,
) {
    // Connections live in this set: aborting the loop's task drops them all.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (handler, shared, acceptor) = (handler.clone(), shared.clone(), acceptor.clone());
                conns.spawn(async move {
                    let _ = tokio::time::timeout(CONN_TIMEOUT, async move {
                        match acceptor {
                            Some(acceptor) => {
                                if let Ok(tls) = acceptor.accept(stream).await {
                                    let peer = tls
                                        .get_ref()
                                        .1
                                        .peer_certificates()
                                        .and_then(|c| c.first())
                                        .map(|c| Arc::new(c.as_ref().to_vec()));
                                    serve(TokioIo::new(tls), handler, shared, peer).await;
                                }
                            }
                            None => serve(TokioIo::new(stream), handler, shared, None).await,
                        }
                    })
                    .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve<I>(io: I, handler: Arc<dyn Handler>, shared: Arc<Shared>, peer: Option<Arc<Vec<u8>>>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let (handler, shared, peer) = (handler.clone(), shared.clone(), peer.clone());
        async move { Ok::<_, std::convert::Infallible>(answer(req, &*handler, &shared, peer).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service)
        .await;
}

async fn answer(
    req: hyper::Request<Incoming>,
    handler: &dyn Handler,
    shared: &Shared,
    peer_certificate: Option<Arc<Vec<u8>>>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return to_hyper(Reply::empty(413).reason("Request Entity Too Large")),
    };
    let request = Request {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts.headers,
        body,
        peer_certificate,
    };
    let outage = shared
        .unavailable
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let throttled = !outage
        && shared
            .throttled
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let reply = if outage {
        handler.unavailable()
    } else if throttled {
        Reply::json(429, &serde_json::json!({"message": "429 Too Many Requests"}))
            .header("retry-after", shared.retry_after.load(Ordering::SeqCst).to_string())
    } else {
        handler.handle(&request)
    };
    let mut requests = lock(&shared.requests);
    if requests.len() >= MAX_RECORDED {
        requests.remove(0);
    }
    requests.push(Recorded {
        method: request.method.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        auth: handler.auth_present(&request),
        status: reply.status,
    });
    drop(requests);
    to_hyper(reply)
}

fn to_hyper(reply: Reply) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(reply.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    if let Some(reason) = reply.reason {
        // A reason phrase is one line of visible text.
        let clean: String = reason.chars().filter(|c| !c.is_control()).collect();
        if let Ok(r) = hyper::ext::ReasonPhrase::try_from(clean.into_bytes()) {
            resp.extensions_mut().insert(r);
        }
    }
    resp
}

/// Parse `application/x-www-form-urlencoded` text into pairs.
pub fn parse_form(text: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(text).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl Handler for Echo {
        fn handle(&self, req: &Request) -> Reply {
            Reply::json(200, &serde_json::json!({"path": req.path}))
        }
        fn auth_present(&self, _req: &Request) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn stops_listening_when_dropped() {
        let server = Server::start(Arc::new(Echo), None).await.unwrap();
        let addr = server.addr();
        tokio::net::TcpStream::connect(addr).await.unwrap();
        drop(server);
        let mut refused = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused, "the port still accepts connections after drop");
    }
}
