//! A throw-away certificate authority for the HTTPS emulators: Proxmox VE
//! ships a self-signed CA, so the clients must be tested with a `ca_file`
//! rather than with verification turned off. Each emulator generates a CA and
//! a server certificate for `127.0.0.1`/`localhost` at start and writes the
//! CA's PEM to a private temporary directory. The same CA can issue client
//! certificates, for servers that authenticate clients by certificate (the
//! Kubernetes API server stand-in).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A generated CA and the server configuration signed by it.
pub struct TestCa {
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    pub(crate) server_config: Arc<rustls::ServerConfig>,
}

/// A client certificate issued by a [`TestCa`].
#[derive(Clone)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate as the server sees it in the handshake.
    pub der: Vec<u8>,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClientCert")
            .field("der_len", &self.der.len())
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TestCa {
    pub fn generate(common_name: &str) -> Result<Self, String> {
        let err = |e: rcgen::Error| format!("generating the test certificate: {e}");
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{common_name} test CA"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().map_err(err)?;
        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).map_err(err)?;
        leaf_params.distinguished_name.push(DnType::CommonName, common_name);
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(err)?;

        let ca_der = CertificateDer::from(ca_cert.der().to_vec());
        let chain = vec![leaf.der().clone(), ca_der.clone()];
        let key_der = leaf_key.serialize_der();
        let server_config = server_config(&chain, &key_der, None)?;

        let dir = tempfile::Builder::new()
            .prefix("flowrun-ca-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let ca_file = dir.path().join("ca.pem");
        let ca_pem = ca_cert.pem();
        std::fs::write(&ca_file, &ca_pem).map_err(|e| e.to_string())?;
        Ok(Self {
            dir,
            ca_file,
            ca_pem,
            ca_der,
            issuer,
            chain,
            key_der,
            server_config: Arc::new(server_config),
        })
    }

    /// The CA certificate (PEM) that clients add to their roots.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client certificate with common name `cn` and organizations `orgs`
    /// (Kubernetes reads them as the user name and groups).
    pub fn issue_client(&self, cn: &str, orgs: &[&str]) -> Result<ClientCert, String> {
        let err = |e: rcgen::Error| format!("issuing the client certificate: {e}");
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        Ok(ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        })
    }

    /// The server configuration, asking clients for a certificate signed by
    /// this CA but accepting clients without one (they may use a token).
    pub(crate) fn server_config_with_client_auth(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).map_err(|e| e.to_string())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("building the client certificate verifier: {e}"))?;
        Ok(Arc::new(server_config(&self.chain, &self.key_der, Some(verifier))?))
    }
}

fn server_config(
    chain: &[CertificateDer<'static>],
    key_der: &[u8],
    clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<rustls::ServerConfig, String> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec()));
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match clients {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(chain.to_vec(), key)
        .map_err(|e| format!("building the TLS server configuration: {e}"))
}
