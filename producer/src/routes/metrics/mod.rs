//! `GET /metrics` in the Prometheus text format: one scrape target for the whole fleet.
//!
//! HTTP requests are counted in this process (the `metrics` crate's Prometheus recorder).
//! Everything about the work — queue depth, items by outcome, inference and queue-wait
//! latency, dynamic batch sizes, worker heartbeats — is read at scrape time from Redis and
//! Postgres, which every worker writes to, so no worker needs scraping of its own.

use std::{fmt::Write, sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use utoipa_axum::{router::OpenApiRouter, routes};

mod queries;
use xcam_shared::{db, jobs};

use self::queries::{BATCH_SIZE_BUCKETS, HistogramColumn, LATENCY_BUCKETS_MS};

use crate::{error::ApiResult, state::AppState};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_metrics))
}

/// The process-wide recorder (installed once, shared by every app in the process).
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed (tests build several apps): keep ours usable anyway.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Installs the recorder, so counts made before the first request (the sweeper's) are kept.
pub fn install() {
    let _ = recorder();
}

/// Middleware: counts requests by matched route, method and status, and times them.
pub async fn track_http(request: Request, next: Next) -> Response {
    let _ = recorder();
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("xcam_http_requests_total", &labels).increment(1);
    metrics::histogram!("xcam_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Prometheus metrics of the API and of the whole fleet.
#[utoipa::path(get, path = "/metrics", tag = "fleet", operation_id = "get_metrics", responses((status = 200, content_type = "text/plain", body = String)))]
async fn get_metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let mut out = recorder().render();
    let db = &state.pools.metrics;

    out.push_str("# HELP xcam_queue_depth Jobs waiting in Redis (pending and scheduled retries), per model.\n# TYPE xcam_queue_depth gauge\n");
    let mut redis = state.queue.redis.clone();
    for model in state.models.keys() {
        let queue = state.queue.name(model);
        if let Ok(depth) = jobs::queue_depth(&mut redis, &queue).await {
            let _ = writeln!(
                out,
                "xcam_queue_depth{{model=\"{}\"}} {depth}",
                label(model)
            );
        }
    }

    out.push_str("# HELP xcam_items Items by model and status.\n# TYPE xcam_items gauge\n");
    for (model, status, n) in queries::item_counts(db).await? {
        let _ = writeln!(
            out,
            "xcam_items{{model=\"{}\",status=\"{status}\"}} {n}",
            label(&model)
        );
    }

    for (name, help, column, bounds, scale) in [
        (
            "xcam_inference_duration_seconds",
            "Time per successful attempt, claim to result.",
            HistogramColumn::Processing,
            &LATENCY_BUCKETS_MS[..],
            1e-3,
        ),
        (
            "xcam_queue_wait_seconds",
            "Time from queueing to the attempt's start.",
            HistogramColumn::QueueWait,
            &LATENCY_BUCKETS_MS[..],
            1e-3,
        ),
        (
            "xcam_dynamic_batch_size",
            "Images run together in one model batch.",
            HistogramColumn::BatchSize,
            &BATCH_SIZE_BUCKETS[..],
            1.0,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (model, counts, total, sum) in queries::histogram(db, column, bounds).await? {
            let model = label(&model);
            for (bound, n) in bounds.iter().zip(&counts) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{model=\"{model}\",le=\"{}\"}} {n}",
                    bound * scale
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{model=\"{model}\",le=\"+Inf\"}} {total}\n{name}_sum{{model=\"{model}\"}} {}\n{name}_count{{model=\"{model}\"}} {total}",
                sum * scale
            );
        }
    }

    out.push_str("# HELP xcam_worker_last_heartbeat_seconds Unix time of each live worker's last heartbeat.\n# TYPE xcam_worker_last_heartbeat_seconds gauge\n");
    out.push_str("# HELP xcam_worker_jobs_total Jobs each live worker finished, by outcome.\n# TYPE xcam_worker_jobs_total counter\n");
    for w in db::workers::live(db, std::time::Duration::from_secs(3600)).await? {
        let (id, device) = (label(&w.id), label(&w.device));
        let _ = writeln!(
            out,
            "xcam_worker_last_heartbeat_seconds{{worker=\"{id}\",device=\"{device}\"}} {}",
            w.last_seen.timestamp()
        );
        let _ = writeln!(
            out,
            "xcam_worker_jobs_total{{worker=\"{id}\",outcome=\"succeeded\"}} {}",
            w.jobs_done
        );
        let _ = writeln!(
            out,
            "xcam_worker_jobs_total{{worker=\"{id}\",outcome=\"failed\"}} {}",
            w.jobs_failed
        );
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// Escapes a label value as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
