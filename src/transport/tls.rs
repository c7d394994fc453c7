//! TLS for `wss://` connections: rustls on ring (no OpenSSL, no C build beyond ring's own).
//!
//! Trust: the system's root certificates by default (rustls-native-certs, which honours `SSL_CERT_FILE`
//! and `SSL_CERT_DIR` as OpenSSL and Python's `ssl` do), or only the CAs of a PEM file. Verification can
//! be switched off for development; that switch says so in its name and logs a warning.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::TransportError;

/// How `wss://` connections check the broker's certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsOptions {
    /// Trust only the CA certificates in this PEM file (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. For development only: anyone on the path can read and change the traffic.
    pub insecure_no_verify: bool,
}

/// The crypto provider of every TLS endpoint here (client and broker).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Read every certificate of a PEM file, with errors that name the file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {}", path.display(), pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read certificates from {}: {}", path.display(), pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// Say what went wrong with a PEM file (its `Debug` output is the only text some variants have).
pub fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not a valid PEM file ({other:?})"),
    }
}

/// The client configuration for `opts`, built once per distinct options (loading the system's roots
/// reads a file of a few hundred certificates).
pub fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, TransportError> {
    static CACHE: Mutex<Vec<(TlsOptions, Arc<ClientConfig>)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().expect("tls cache");
    if let Some((_, cfg)) = cache.iter().find(|(o, _)| o == opts) {
        return Ok(cfg.clone());
    }
    let cfg = Arc::new(build(opts).map_err(TransportError::Tls)?);
    cache.push((opts.clone(), cfg.clone()));
    Ok(cfg)
}

fn build(opts: &TlsOptions) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if opts.insecure_no_verify {
        tracing::warn!(
            target: "demessaging_rs.transport",
            "TLS certificate verification is OFF (insecure, for development only)"
        );
        let verifier = Arc::new(AcceptAnyCertificate(provider()));
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    if let Some(path) = &opts.ca_file {
        for cert in load_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
        }
    } else {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(target: "demessaging_rs.transport", "system certificates: {e}");
        }
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(
                "no trusted root certificates found on this system; set SSL_CERT_FILE or pass a CA file".into(),
            );
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Accepts every server certificate (signatures are still checked, so the handshake itself is sound).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_non_pem_ca_files_are_clear_errors() {
        let missing = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            insecure_no_verify: false,
        };
        let e = client_config(&missing).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem") && e.contains("No such file"), "{e}");

        let dir = std::env::temp_dir().join(format!("dasf-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "this is not a certificate\n").unwrap();
        let e = client_config(&TlsOptions {
            ca_file: Some(junk.clone()),
            insecure_no_verify: false,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn configs_are_built_once_per_options() {
        let opts = TlsOptions {
            ca_file: None,
            insecure_no_verify: true,
        };
        let a = client_config(&opts).unwrap();
        let b = client_config(&opts).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
