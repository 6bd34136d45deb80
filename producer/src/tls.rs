//! TLS for both ends: `xcam serve` terminates it itself when given a certificate, and the
//! client commands speak HTTPS. Both use rustls with the *ring* provider.

use std::path::Path;

use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;

/// The server's TLS set-up from PEM files, read once at start so a bad file stops the start.
pub async fn server_config(cert: &Path, key: &Path) -> anyhow::Result<RustlsConfig> {
    xcam_shared::install_crypto_provider();
    let config = RustlsConfig::from_pem_file(cert, key)
        .await
        .with_context(|| {
            format!(
                "cannot use XCAM_TLS_CERT={} with XCAM_TLS_KEY={}",
                cert.display(),
                key.display()
            )
        })?;
    // The server speaks HTTP/1.1 only (its header and idle timeouts are HTTP/1's): offering h2
    // in ALPN would let an h2 client choose a protocol the server then drops.
    let mut inner = (*config.get_inner()).clone();
    inner.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.reload_from_config(std::sync::Arc::new(inner));
    Ok(config)
}

/// A root certificate for the client, from `XCAM_CA_CERT` (PEM).
pub fn ca_certificate(path: &Path) -> anyhow::Result<reqwest::Certificate> {
    let pem = std::fs::read(path).with_context(|| format!("XCAM_CA_CERT={}", path.display()))?;
    reqwest::Certificate::from_pem(&pem)
        .with_context(|| format!("XCAM_CA_CERT={} is not a PEM certificate", path.display()))
}
