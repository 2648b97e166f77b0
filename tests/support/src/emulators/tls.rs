//! A throw-away certificate authority for the HTTPS emulators: Proxmox VE
//! ships a self-signed CA, so the clients must be tested with a `ca_file`
//! rather than with verification turned off. Each emulator generates a CA and
//! a server certificate for `127.0.0.1`/`localhost` at start and writes the
//! CA's PEM to a private temporary directory.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A generated CA and the server configuration signed by it.
pub struct TestCa {
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    ca_pem: String,
    pub(crate) server_config: Arc<rustls::ServerConfig>,
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

        let chain = vec![leaf.der().clone(), CertificateDer::from(ca_cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let server_config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|e| format!("building the TLS server configuration: {e}"))?;

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
}
