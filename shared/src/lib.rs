//! What the xcam producer (`xcam`) and workers (`xcam-worker`) share.
//!
//! - [`access`]: roles, audited actions, and the secrets behind tokens and sessions.
//! - [`config`]: the typed, env-backed configuration groups each binary flattens into its CLI.
//! - [`telemetry`]: one tracing set-up for every binary.
//! - [`db`]: the Postgres schema (migrations) and every query, with bound parameters only.
//! - [`jobs`]: the job payload that travels through Redis, and the apalis queue set-up.
//! - [`blob`]: where image bytes and rendered overlays live (Postgres only holds their keys).
//! - [`heatmap`]: from a CAM's grid to the map over the original image, its overlay and `.npy`.
//! - [`bundle`]: model bundle manifests (`model.toml`) and their checksum verification.
//! - [`imaging`]: decoding radiographs into one grayscale plane.
//! - [`patience`]: waiting out an outage of Postgres or Redis at start-up.
//! - [`status`]: the status machines of batches, items and log rows; [`targets`]: methods and labels.

pub mod access;
pub mod blob;
pub mod bundle;
pub mod config;
pub mod db;
pub mod heatmap;
pub mod imaging;
pub mod jobs;
pub mod latency;
pub mod patience;
pub mod status;
pub mod targets;
pub mod telemetry;

/// Resolves on SIGINT or SIGTERM: both binaries stop gracefully on either.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Makes *ring* the process's rustls provider (HTTPS to S3, TLS of the API and its clients);
/// later calls are no-ops.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// This machine's name, as workers and producers report it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A name for this process start, unique across hosts and restarts: `host-pid-random`.
pub fn instance_name() -> String {
    format!(
        "{}-{}-{}",
        hostname(),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Runs `task` every `period` on a thread of its own named `name`, for as long as the process
/// lives: upkeep that must go on whether or not the async runtime is busy or running at all.
pub fn every(
    name: &str,
    period: std::time::Duration,
    mut task: impl FnMut() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                task();
            }
        })
        .map(drop)
}
