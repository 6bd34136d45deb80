//! `GET /metrics` in the Prometheus text format: the API and the work in flight.
//!
//! HTTP requests are counted in this process (the `metrics` crate's Prometheus recorder); queue
//! depth comes from Redis, open batches and their items from the counts each batch row keeps,
//! and live workers from their heartbeats. Nothing here reads the history (the inference log,
//! finished items), so a scrape costs the same at any table size. What the workers do — images
//! by outcome, processing time, queue wait, dynamic batch sizes — each worker counts as it
//! happens and serves on its own `/metrics` (`xcam-worker run --metrics-bind`); scrape both.

use std::{collections::BTreeMap, fmt::Write, sync::OnceLock, time::Instant};

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

use crate::{error::ApiResult, state::AppState};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_metrics))
}

/// The process-wide recorder (installed once, shared by every app in the process).
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .expect("static buckets are valid");
        // Another recorder may be installed (tests build several apps): ours stays usable anyway.
        xcam_shared::telemetry::install_prometheus(builder)
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

    out.push_str("# HELP xcam_open_batches Batches not finished yet, per model and status.\n# TYPE xcam_open_batches gauge\n");
    let open = queries::open_work(db).await?;
    for (model, status, batches, _, _) in &open {
        let _ = writeln!(
            out,
            "xcam_open_batches{{model=\"{}\",status=\"{status}\"}} {batches}",
            label(model)
        );
    }
    out.push_str("# HELP xcam_open_items Items of unfinished batches waiting (queued) or being processed (running), per model.\n# TYPE xcam_open_items gauge\n");
    let mut items: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (model, _, _, queued, running) in &open {
        let entry = items.entry(model).or_default();
        entry.0 += queued;
        entry.1 += running;
    }
    for (model, (queued, running)) in items {
        let model = label(model);
        let _ = writeln!(
            out,
            "xcam_open_items{{model=\"{model}\",status=\"queued\"}} {queued}\nxcam_open_items{{model=\"{model}\",status=\"running\"}} {running}"
        );
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
