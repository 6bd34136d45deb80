//! TLS for both ends: `xcam serve` terminates it itself when given a certificate, and the
//! client commands speak HTTPS. Both use rustls with the *ring* provider.

use std::path::Path;

use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;

/// The server's TLS set-up from PEM files, read once at start so a bad file stops the start.
pub async fn server_config(cert: &Path, key: &Path) -> anyhow::Result<RustlsConfig> {
    xcam_shared::install_crypto_provider();
    RustlsConfig::from_pem_file(cert, key)
        .await
        .with_context(|| {
            format!(
                "cannot use XCAM_TLS_CERT={} with XCAM_TLS_KEY={}",
                cert.display(),
                key.display()
            )
        })
}

/// A root certificate for the client, from `XCAM_CA_CERT` (PEM).
pub fn ca_certificate(path: &Path) -> anyhow::Result<reqwest::Certificate> {
    let pem = std::fs::read(path).with_context(|| format!("XCAM_CA_CERT={}", path.display()))?;
    reqwest::Certificate::from_pem(&pem)
        .with_context(|| format!("XCAM_CA_CERT={} is not a PEM certificate", path.display()))
}
