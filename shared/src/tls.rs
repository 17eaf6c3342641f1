//! TLS for the broker (`amqps://`) and Postgres (`sslmode=require` and stricter), with rustls.
//!
//! Certificates are always verified, hostname included: the system's roots, plus the CA
//! certificates of `--ca-file` for a private CA. There is no switch to turn verification off.
//! Postgres TLS is used only when the URL asks for it (`sslmode=require`, `verify-ca` or
//! `verify-full`, which all mean full verification here); without `sslmode` pokeq connects in
//! plain text rather than trying TLS against a server whose certificate it may not trust.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Reads and checks a PEM file of CA certificates; the text is what the clients load.
pub fn load_ca_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let certificates = parse_certificates(&text)?;
    if certificates.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(text)
}

fn parse_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))
}

/// A rustls client configuration trusting the system's roots and `extra_ca` (PEM).
pub fn client_config(extra_ca: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        tracing::debug!(%error, "a system certificate could not be loaded");
    }
    roots.add_parsable_certificates(system.certs);
    if let Some(pem) = extra_ca {
        for certificate in parse_certificates(pem)? {
            roots
                .add(certificate)
                .map_err(|e| format!("unusable CA certificate: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The TLS connector for Postgres connections.
pub fn postgres_connector(extra_ca: Option<&str>) -> Result<MakeRustlsConnect, String> {
    Ok(MakeRustlsConnect::new(client_config(extra_ca)?))
}

/// Parses a Postgres URL: `sslmode=verify-ca|verify-full` become `require` (rustls verifies
/// the full chain and the hostname in any case), and a URL without `sslmode` means plain text.
pub fn postgres_config(url: &str) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    let lower = url.to_ascii_lowercase();
    let normalised = url
        .replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require");
    let mut config: tokio_postgres::Config = normalised.parse()?;
    if !lower.contains("sslmode=") {
        config.ssl_mode(SslMode::Disable);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_tls_only_when_asked() {
        let plain = postgres_config("postgres://u:p@h/db").unwrap();
        assert_eq!(plain.get_ssl_mode(), SslMode::Disable);
        for mode in ["require", "verify-ca", "verify-full"] {
            let config = postgres_config(&format!("postgres://u:p@h/db?sslmode={mode}")).unwrap();
            assert_eq!(config.get_ssl_mode(), SslMode::Require, "{mode}");
        }
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("pokeq-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        assert!(load_ca_file(&empty).is_err());
        assert!(load_ca_file(&dir.join("missing.pem")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
