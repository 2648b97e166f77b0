//! HTTP clients for steps that talk to servers (`http`, `wait_for`, and the
//! API steps): one place that decides TLS — rustls with the `ring` provider,
//! the system's root certificates, an optional extra CA file (a self-signed
//! Proxmox) or CA certificates given as PEM that replace the system's (a
//! Kubernetes cluster's own CA), a client certificate for servers that
//! authenticate clients by it, and certificate checks turned off only when a
//! workflow says `insecure`, loudly — plus helpers to read bodies within a
//! limit and to describe errors with their cause.

use flowrun_engine::step::StepError;
use reqwest::{Certificate, Client, ClientBuilder, Identity, Response};
use std::error::Error as _;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

/// The `User-Agent` of every request flowrun makes.
pub const USER_AGENT: &str = concat!("flowrun/", env!("CARGO_PKG_VERSION"));

/// TLS and time settings of a client.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientOptions<'a> {
    /// A PEM file of extra CA certificates, trusted besides the system's.
    pub ca_file: Option<&'a Path>,
    /// Accept any certificate: for labs only; logged as a warning.
    pub insecure: bool,
    /// A limit for each whole request (connect, send, receive). Requests may set their own.
    pub timeout: Option<Duration>,
    /// CA certificates (PEM) that are the only roots trusted: a cluster CA.
    /// `ca_name` says where they came from, for errors.
    pub ca_pem: Option<(&'a [u8], &'a str)>,
    /// A client certificate and its key (PEM, concatenated), presented in the handshake.
    pub identity_pem: Option<&'a [u8]>,
}

/// reqwest is built without a default crypto provider: install `ring` for the process, once.
pub fn ensure_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error means a provider is already installed, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client with `ca_file`, `insecure` and `timeout` (see [`ClientOptions`]).
pub fn client(ca_file: Option<&Path>, insecure: bool, timeout: Option<Duration>) -> Result<Client, StepError> {
    client_with(
        ClientOptions {
            ca_file,
            insecure,
            timeout,
            ..ClientOptions::default()
        },
        |b| b,
    )
}

/// A client with `opts`, after `customize` added its own settings (default
/// headers, redirect policy, ...).
pub fn client_with(
    opts: ClientOptions<'_>,
    customize: impl Fn(ClientBuilder) -> ClientBuilder,
) -> Result<Client, StepError> {
    ensure_crypto_provider();
    let mut certs = match opts.ca_file {
        Some(path) => read_ca_file(path)?,
        None => Vec::new(),
    };
    if let Some((pem, name)) = opts.ca_pem {
        let given = Certificate::from_pem_bundle(pem)
            .map_err(|e| StepError::failed(format!("{name} is not a PEM certificate: {}", describe(&e))))?;
        if given.is_empty() {
            return Err(StepError::failed(format!(
                "{name} holds no PEM certificate (expected `-----BEGIN CERTIFICATE-----`)"
            )));
        }
        certs.extend(given);
    }
    let identity = match opts.identity_pem {
        // The key is a secret: the error never shows the PEM, only that it did not parse.
        Some(pem) => Some(Identity::from_pem(pem).map_err(|e| {
            StepError::failed(format!(
                "the client certificate and key do not form a PEM identity: {}",
                describe(&e)
            ))
        })?),
        None => None,
    };
    if opts.insecure {
        tracing::warn!(
            "TLS CERTIFICATE VERIFICATION IS OFF (`insecure: true`): anyone on the path can read and change this \
             traffic, credentials included; use `ca_file` instead"
        );
    }
    let builder = |only_given_roots: bool| {
        let mut b = Client::builder().user_agent(USER_AGENT);
        if let Some(t) = opts.timeout {
            b = b.timeout(t).connect_timeout(t.min(Duration::from_secs(30)));
        }
        b = if only_given_roots || opts.ca_pem.is_some() {
            b.tls_certs_only(certs.iter().cloned())
        } else {
            b.tls_certs_merge(certs.iter().cloned())
        };
        if let Some(id) = &identity {
            b = b.identity(id.clone());
        }
        customize(b.tls_danger_accept_invalid_certs(opts.insecure))
    };
    match builder(false).build() {
        Ok(c) => Ok(c),
        // Without system roots (no `ca-certificates` package), plain HTTP and a
        // given CA still work; public HTTPS servers then fail to verify.
        Err(e) if describe(&e).contains("No CA certificates") => {
            tracing::warn!(
                "no system CA certificates found (install `ca-certificates`): HTTPS servers verify only against `ca_file`"
            );
            builder(true)
                .build()
                .map_err(|e| StepError::failed(format!("cannot set up the HTTP client: {}", describe(&e))))
        }
        Err(e) => Err(StepError::failed(format!(
            "cannot set up the HTTP client: {}",
            describe(&e)
        ))),
    }
}

fn read_ca_file(path: &Path) -> Result<Vec<Certificate>, StepError> {
    let p = path.display();
    let pem = std::fs::read(path).map_err(|e| StepError::param("ca_file", format!("cannot read `{p}`: {e}")))?;
    let certs = Certificate::from_pem_bundle(&pem).map_err(|e| {
        StepError::param(
            "ca_file",
            format!("`{p}` is not a PEM certificate file: {}", describe(&e)),
        )
    })?;
    if certs.is_empty() {
        return Err(StepError::param(
            "ca_file",
            format!("`{p}` holds no PEM certificate (expected `-----BEGIN CERTIFICATE-----`)"),
        ));
    }
    Ok(certs)
}

/// An error with its chain of causes, the way an operator needs it
/// (`error sending request ...: client error (Connect): tcp connect error: Connection refused`).
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    if e.is_timeout() && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

/// The body of `resp`, at most `limit` bytes (a longer body is an error, not a truncation).
pub async fn read_body(mut resp: Response, limit: usize) -> Result<Vec<u8>, StepError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| StepError::failed(format!("cannot read the response body: {}", describe(&e))))?
    {
        if body.len() + chunk.len() > limit {
            return Err(StepError::failed(format!(
                "the response body is larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_parameter() {
        let dir = tempfile::tempdir().unwrap();
        let e = client(Some(&dir.path().join("none.pem")), false, None).unwrap_err();
        assert!(e.message.starts_with("parameter `ca_file`: cannot read"), "{e}");
        let f = dir.path().join("bad.pem");
        std::fs::write(&f, "not a certificate").unwrap();
        let e = client(Some(&f), false, None).unwrap_err();
        assert!(e.message.contains("holds no PEM certificate"), "{e}");
        assert!(client(None, true, Some(Duration::from_secs(1))).is_ok());
        // The system bundle is a valid CA file, where the system has one.
        let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
        if bundle.exists() {
            assert!(client(Some(bundle), false, None).is_ok());
        }
    }
}
