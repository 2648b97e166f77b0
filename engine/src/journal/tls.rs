//! TLS to a PostgreSQL journal, with rustls: the `sslmode` levels libpq users
//! know (`verify-full` checks the CA and the host name, `verify-ca` the CA
//! only, `require` nothing, and says so loudly). The CA comes from
//! `sslrootcert=FILE`, else libpq's `~/.postgresql/root.crt`, else the
//! system's trust store.

use super::pgurl::{PgTarget, SslMode};
use super::JournalError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// The TLS client configuration for a target (`None` for `sslmode=disable`).
pub(crate) fn client_config(t: &PgTarget) -> Result<Option<ClientConfig>, JournalError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| JournalError::Config(format!("TLS: {e}")))?;
    let config = match t.sslmode {
        SslMode::Disable => return Ok(None),
        SslMode::Require => {
            tracing::warn!(
                "journal `{t}`: `sslmode=require` encrypts but does not check who the server is; use `verify-full`"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        }
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(roots(t)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| JournalError::Config(format!("TLS: {e}")))?;
            if t.sslmode == SslMode::VerifyFull {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyName(webpki)))
                    .with_no_client_auth()
            }
        }
    };
    Ok(Some(config))
}

fn roots(t: &PgTarget) -> Result<RootCertStore, JournalError> {
    let mut store = RootCertStore::empty();
    let default = crate::paths::home().join(".postgresql/root.crt");
    let file = t.sslrootcert.clone().or_else(|| default.exists().then_some(default));
    match file {
        Some(f) if f.as_os_str() != "system" => {
            let certs = CertificateDer::pem_file_iter(&f)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| JournalError::Config(format!("cannot read the CA file `{}`: {e}", f.display())))?;
            if certs.is_empty() {
                return Err(JournalError::Config(format!(
                    "the CA file `{}` holds no certificate",
                    f.display()
                )));
            }
            for c in certs {
                store
                    .add(c)
                    .map_err(|e| JournalError::Config(format!("the CA file `{}`: {e}", f.display())))?;
            }
        }
        _ => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(JournalError::Config(
                    "no CA to check the journal server with: give `sslrootcert=CA_FILE` in the journal URL".into(),
                ));
            }
        }
    }
    Ok(store)
}

/// `verify-ca`: the chain must lead to the CA; the name need not match.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // The chain was verified before the name was looked at.
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require`: encryption without authentication of the server.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
