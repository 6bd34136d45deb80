//! `GET /v1/logs` and `/v1/stats`: operators' queries over the inference log.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::State,
    http::HeaderValue,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, DurationRound, Utc};
use utoipa_axum::{router::OpenApiRouter, routes};
use xcam_shared::{
    db::logs::{self, LogFilter, Rollup},
    latency::Histogram,
    status::LogStatus,
};

use super::{cursor_position, extract::ApiQuery, next_cursor};
use crate::{
    api::{
        ErrorBody, LogEntry, LogFormat, LogPage, LogQuery, ModelStats, Stats, StatsBucket,
        StatsQuery, StatsRow, When,
    },
    auth::Caller,
    csv_export,
    error::ApiResult,
    state::AppState,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(query_logs))
        .routes(routes!(get_stats))
}

/// The inference log, newest first, filtered; JSON or CSV.
#[utoipa::path(
    get,
    path = "/v1/logs",
    tag = "logs",
    operation_id = "query_logs",
    params(LogQuery),
    responses(
        (status = 200, description = "A page of entries; `format=csv` answers CSV with the next cursor in `x-next-cursor`",
            content((LogPage = "application/json"), (String = "text/csv"))),
        (status = 422, body = ErrorBody, description = "`invalid_filter`: a filter out of its documented form"),
    )
)]
async fn query_logs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Response> {
    let now = Utc::now();
    let filter = LogFilter {
        projects: caller.scope().map(<[_]>::to_vec),
        since: q.since.map(|w| w.resolve(now)),
        until: q.until.map(|w| w.resolve(now)),
        model: q.model.filter(|s| !s.is_empty()),
        status: q.status,
        batch: q.batch,
        worker: q.worker.filter(|s| !s.is_empty()),
        label: q.label.filter(|s| !s.is_empty()),
        min_ms: q.min_ms,
        before: cursor_position(q.cursor.as_deref())?,
    };
    let limit = q.limit.unwrap_or(100);
    let entries: Vec<LogEntry> = logs::query(&state.db, &filter, limit)
        .await?
        .into_iter()
        .map(LogEntry::from)
        .collect();
    let next_cursor = next_cursor(&entries, limit, |e| (e.ts, e.id));
    match q.format.unwrap_or_default() {
        LogFormat::Json => Ok(Json(LogPage {
            entries,
            next_cursor,
        })
        .into_response()),
        LogFormat::Csv => {
            let rows = entries.iter().map(csv_export::log_row);
            let mut response = csv_export::table(&csv_export::LOG_COLUMNS, rows);
            if let Some(next) = next_cursor.and_then(|n| HeaderValue::from_str(&n).ok()) {
                response.headers_mut().insert("x-next-cursor", next);
            }
            Ok(response)
        }
    }
}

/// Inference counts, latency and errors per hour or day, and the predictions per model.
///
/// What the operations page charts.
#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "logs",
    operation_id = "get_stats",
    params(StatsQuery),
    responses(
        (status = 200, body = Stats),
        (status = 422, body = ErrorBody, description = "`invalid_filter`: a filter out of its documented form"),
    )
)]
async fn get_stats(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<Stats>> {
    let bucket = q.bucket.unwrap_or_default();
    let now = Utc::now();
    // However far back it is asked, one answer covers a bounded number of buckets.
    let since = q
        .since
        .unwrap_or(When::Ago(chrono::Duration::days(7)))
        .resolve(now)
        .max(now - bucket.longest_range());
    // Stats count whole buckets: from the start of the one `since` falls in, or of the next
    // when that one would reach past the longest range.
    let since = match since.duration_trunc(bucket.width()) {
        Ok(start) if now - start > bucket.longest_range() => start + bucket.width(),
        Ok(start) => start,
        Err(_) => since,
    };
    let day = bucket == StatsBucket::Day;
    let rollups = logs::rollups(&state.db, caller.scope(), since, day).await?;
    let (buckets, models) = tally(&rollups);
    let mut predictions: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (model, label, n) in logs::prediction_counts(&state.db, caller.scope(), since, day).await? {
        predictions.entry(model).or_default().insert(label, n);
    }
    let inferences: i64 = buckets.iter().map(|b| b.inferences).sum();
    let failures: i64 = buckets.iter().map(|b| b.failures).sum();
    Ok(Json(Stats {
        since,
        bucket,
        inferences,
        failures,
        error_rate: if inferences > 0 {
            failures as f64 / inferences as f64
        } else {
            0.0
        },
        buckets,
        models,
        predictions,
    }))
}

/// Counts and latency percentiles per bucket, for all models together and for each on its own.
fn tally(rollups: &[Rollup]) -> (Vec<StatsRow>, Vec<ModelStats>) {
    #[derive(Default)]
    struct Tally {
        inferences: i64,
        failures: i64,
        latency: Histogram,
    }
    impl Tally {
        fn add(&mut self, r: &Rollup) {
            match r.status {
                LogStatus::Succeeded => {
                    self.inferences += r.n;
                    self.latency.add(r.latency_bucket, r.n);
                }
                LogStatus::Failed => {
                    self.inferences += r.n;
                    self.failures += r.n;
                }
                LogStatus::Retrying => {}
            }
        }
    }
    let row = |start: DateTime<Utc>, t: &Tally| StatsRow {
        bucket: start,
        inferences: t.inferences,
        failures: t.failures,
        p50_ms: t.latency.quantile(0.5),
        p95_ms: t.latency.quantile(0.95),
    };
    let mut all: BTreeMap<DateTime<Utc>, Tally> = BTreeMap::new();
    let mut per_model: BTreeMap<&str, (Tally, BTreeMap<DateTime<Utc>, Tally>)> = BTreeMap::new();
    for r in rollups {
        all.entry(r.start).or_default().add(r);
        let (whole, buckets) = per_model.entry(&r.model_name).or_default();
        whole.add(r);
        buckets.entry(r.start).or_default().add(r);
    }
    let buckets = all.iter().map(|(&start, t)| row(start, t)).collect();
    let models = per_model
        .into_iter()
        .map(|(model, (whole, buckets))| ModelStats {
            model: model.to_owned(),
            inferences: whole.inferences,
            failures: whole.failures,
            p50_ms: whole.latency.quantile(0.5),
            p95_ms: whole.latency.quantile(0.95),
            buckets: buckets.iter().map(|(&start, t)| row(start, t)).collect(),
        })
        .collect();
    (buckets, models)
}
