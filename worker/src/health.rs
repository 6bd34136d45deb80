//! The worker's own small HTTP endpoint (`--health-bind`), for orchestrators and Prometheus:
//!
//! - `GET /healthz`: the process answers (liveness);
//! - `GET /readyz`: 200 once its models are loaded and it is registered and taking jobs; 503
//!   while it starts, while a job waits out an outage of Postgres or the blob store, and once
//!   it is shutting down;
//! - `GET /metrics`: this worker's counters in the Prometheus text format (images by outcome,
//!   processing time, queue wait, dynamic batch sizes, jobs waiting out an outage), counted as
//!   they happen: the fleet's work is the sum of its workers' (`--metrics-bind` is the same flag),
//!   and its resident and peak memory, what its heaps hold and keep free (see
//!   [`crate::host_allocator`]) and each GPU's (see [`crate::gpu_memory`]), read at each scrape.
//!
//! It carries no data and takes no input, so it needs no token; bind it where only the
//! cluster can reach it.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use anyhow::Context;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// What the endpoint reports; shared with the job handler.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    waiting: AtomicUsize,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Counts a job waiting out an outage until the guard is dropped.
    pub fn waiting(self: &Arc<Self>) -> WaitingGuard {
        let now = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!("xcam_worker_jobs_waiting_for_a_dependency").set(now as f64);
        WaitingGuard(self.clone())
    }

    fn status(&self) -> (StatusCode, &'static str) {
        match (
            self.ready.load(Ordering::SeqCst),
            self.waiting.load(Ordering::SeqCst),
        ) {
            (false, _) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: starting or stopping\n",
            ),
            (true, 0) => (StatusCode::OK, "ready\n"),
            (true, _) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: waiting for Postgres or the blob store\n",
            ),
        }
    }
}

pub struct WaitingGuard(Arc<Health>);

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        let now = self.0.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!("xcam_worker_jobs_waiting_for_a_dependency").set(now as f64);
    }
}

/// Installs this process's Prometheus recorder (once); counts made before are lost.
pub fn recorder() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("xcam_worker_dynamic_batch_size".into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("xcam_worker_queue_wait_seconds".into()),
                        &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0],
                    )
                })
                .expect("static buckets are valid");
            xcam_shared::telemetry::install_prometheus(builder)
        })
        .clone()
}

/// The process's resident and peak resident memory (Linux `/proc`), read as each scrape comes,
/// so a worker that grows over a long batch shows it.
fn record_memory() {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return;
    };
    for (field, gauge) in [
        ("VmRSS:", "xcam_worker_resident_memory_bytes"),
        ("VmHWM:", "xcam_worker_peak_resident_memory_bytes"),
    ] {
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
        if let Some(kib) = kib {
            metrics::gauge!(gauge).set(kib * 1024.0);
        }
    }
}

/// Binds `addr` (so a taken port stops the start) and serves until `stop`.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let metrics = recorder();
    let app =
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get(|State(h): State<Arc<Health>>| async move { h.status() }),
            )
            .route(
                "/metrics",
                get(move || {
                    record_memory();
                    crate::host_allocator::record_heap();
                    crate::gpu_memory::record();
                    let text = metrics.render();
                    async move {
                        ([("content-type", "text/plain; version=0.0.4")], text).into_response()
                    }
                }),
            )
            .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on XCAM_HEALTH_BIND={addr}"))?;
    tracing::info!(%addr, "health endpoint listening");
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the health endpoint stopped");
        }
    }))
}
