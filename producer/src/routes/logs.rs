//! `GET /v1/logs`: operators' queries over the inference log.

use axum::{
    Json,
    extract::{Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};
use xcam_shared::db::logs::{self, LogFilter, LogRecord};

use super::results::csv_line;
use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(query_logs))
        .routes(routes!(get_stats))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub(crate) struct LogQuery {
    /// RFC 3339 time, or a duration back from now (`24h`, `7d`).
    since: Option<String>,
    until: Option<String>,
    model: Option<String>,
    status: Option<String>,
    batch: Option<String>,
    worker: Option<String>,
    label: Option<String>,
    min_ms: Option<f32>,
    limit: Option<i64>,
    cursor: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// A point in time given as RFC 3339 or as "that long ago".
pub(crate) fn parse_when(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(raw).map_err(|_| {
        format!("{raw:?} is neither an RFC 3339 time nor a duration like 24h or 7d")
    })?;
    chrono::Duration::from_std(ago)
        .map(|d| now - d)
        .map_err(|_| format!("{raw:?} is too far back"))
}

fn parse_cursor(raw: &str) -> Option<(DateTime<Utc>, i64)> {
    let (micros, id) = raw.split_once('.')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

fn cursor_of(r: &LogRecord) -> String {
    format!("{}.{}", r.ts.timestamp_micros(), r.id)
}

/// The inference log, newest first, filtered; JSON or CSV.
#[utoipa::path(get, path = "/v1/logs", tag = "logs", params(LogQuery), responses((status = 200, body = serde_json::Value, description = "{entries, next_cursor}; text/csv with format=csv"), (status = 422, body = crate::error::ErrorBody)))]
async fn query_logs(
    State(state): State<AppState>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let bad = |field: &str, msg: String| ApiError::Unprocessable {
        code: "invalid_filter",
        message: format!("{field}: {msg}"),
    };
    let now = Utc::now();
    let filter = LogFilter {
        since: q
            .since
            .as_deref()
            .map(|s| parse_when(s, now))
            .transpose()
            .map_err(|e| bad("since", e))?,
        until: q
            .until
            .as_deref()
            .map(|s| parse_when(s, now))
            .transpose()
            .map_err(|e| bad("until", e))?,
        model: q.model.filter(|s| !s.is_empty()),
        status: q.status.filter(|s| !s.is_empty()),
        batch: q
            .batch
            .filter(|s| !s.is_empty())
            .map(|b| b.parse())
            .transpose()
            .map_err(|_| bad("batch", "not a batch id".into()))?,
        worker: q.worker.filter(|s| !s.is_empty()),
        label: q.label.filter(|s| !s.is_empty()),
        min_ms: q.min_ms,
        before: q
            .cursor
            .as_deref()
            .map(|c| parse_cursor(c).ok_or_else(|| bad("cursor", "malformed cursor".into())))
            .transpose()?,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = logs::query(&state.db, &filter, limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(cursor_of))
        .flatten();
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(Json(json!({ "entries": rows, "next_cursor": next })).into_response()),
        "csv" => {
            let mut out = csv_line(&LOG_COLUMNS.map(str::to_owned)).to_vec();
            for r in &rows {
                out.extend_from_slice(&csv_line(&log_cells(r)));
            }
            let mut response =
                ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response();
            if let Some(next) = next.and_then(|n| n.parse().ok()) {
                response.headers_mut().insert("x-next-cursor", next);
            }
            Ok(response)
        }
        other => Err(bad("format", format!("{other:?}: use json or csv"))),
    }
}

const LOG_COLUMNS: [&str; 18] = [
    "id",
    "timestamp",
    "model_name",
    "model_version",
    "prediction",
    "probability",
    "filename",
    "processing_time_ms",
    "queue_wait_ms",
    "batch_id",
    "item_id",
    "attempt",
    "status",
    "error_code",
    "error_message",
    "worker_id",
    "device",
    "dynamic_batch_size",
];

fn log_cells(r: &LogRecord) -> Vec<String> {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let n = |v: Option<f32>| v.map(|x| x.to_string()).unwrap_or_default();
    vec![
        r.id.to_string(),
        r.ts.to_rfc3339(),
        r.model_name.clone(),
        s(&r.model_version),
        s(&r.prediction),
        n(r.probability),
        r.filename.clone(),
        r.processing_time_ms.to_string(),
        n(r.queue_wait_ms),
        r.batch_id.map(|b| b.to_string()).unwrap_or_default(),
        r.item_id.map(|b| b.to_string()).unwrap_or_default(),
        r.attempt.to_string(),
        r.status.clone(),
        s(&r.error_code),
        s(&r.error_message),
        r.worker_id.clone(),
        r.device.clone(),
        r.dynamic_batch_size
            .map(|b| b.to_string())
            .unwrap_or_default(),
    ]
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub(crate) struct StatsQuery {
    since: Option<String>,
    /// `hour` or `day`.
    bucket: Option<String>,
}

/// `GET /v1/stats`: inference counts, latency and errors per hour or day, and the predictions
/// per model — what the operations page charts.
#[utoipa::path(get, path = "/v1/stats", tag = "logs", params(StatsQuery), responses((status = 200, body = serde_json::Value), (status = 422, body = crate::error::ErrorBody)))]
pub(super) async fn get_stats(
    State(state): State<AppState>,
    Query(q): Query<StatsQuery>,
) -> ApiResult<Response> {
    let bad = |field: &str, msg: String| ApiError::Unprocessable {
        code: "invalid_filter",
        message: format!("{field}: {msg}"),
    };
    let since =
        parse_when(q.since.as_deref().unwrap_or("7d"), Utc::now()).map_err(|e| bad("since", e))?;
    let day = match q.bucket.as_deref().unwrap_or("day") {
        "day" => true,
        "hour" => false,
        other => return Err(bad("bucket", format!("{other:?}: use hour or day"))),
    };
    let buckets = logs::buckets(&state.db, since, day).await?;
    let mut predictions: std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<String, i64>,
    > = Default::default();
    for (model, label, n) in logs::prediction_counts(&state.db, since).await? {
        predictions.entry(model).or_default().insert(label, n);
    }
    let total: i64 = buckets.iter().map(|b| b.inferences).sum();
    let failures: i64 = buckets.iter().map(|b| b.failures).sum();
    Ok(Json(json!({
        "since": since,
        "bucket": if day { "day" } else { "hour" },
        "inferences": total,
        "failures": failures,
        "error_rate": if total > 0 { failures as f64 / total as f64 } else { 0.0 },
        "buckets": buckets,
        "predictions": predictions,
    }))
    .into_response())
}
