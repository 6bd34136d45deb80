//! `inference_log`: one row per attempt, and the operators' queries over it. The filter query is
//! the only dynamic SQL in xcam; it is assembled with `QueryBuilder::push_bind`, so every
//! user-supplied value travels as a bound parameter.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::status::LogStatus;

#[derive(Debug, Clone)]
pub struct NewLogEntry {
    pub model_name: String,
    pub model_version: String,
    pub prediction: Option<String>,
    pub probability: Option<f32>,
    pub filename: String,
    pub processing_time_ms: f32,
    pub queue_wait_ms: Option<f32>,
    pub batch_id: Uuid,
    pub item_id: Uuid,
    pub attempt: i32,
    pub status: LogStatus,
    pub error_code: Option<&'static str>,
    pub error_message: Option<String>,
    pub worker_id: String,
    pub device: String,
    pub dynamic_batch_size: Option<i32>,
}

/// Logs attempts, in one statement. Like [`crate::db::results::upsert_all`], writes nothing for
/// an item that is gone, so a deleted batch's entry names cannot come back through a late worker.
pub async fn insert_all(db: impl PgExecutor<'_>, entries: &[&NewLogEntry]) -> sqlx::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut insert = QueryBuilder::<Postgres>::new(
        "INSERT INTO inference_log (model_name, model_version, prediction, probability, filename, \
         processing_time_ms, queue_wait_ms, batch_id, item_id, attempt, status, error_code, \
         error_message, worker_id, device, dynamic_batch_size, project_id) \
         SELECT v.*, b.project_id FROM (",
    );
    insert.push_values(entries, |mut row, e| {
        row.push_bind(&e.model_name)
            .push_bind(&e.model_version)
            .push_bind(&e.prediction)
            .push_bind(e.probability)
            .push_bind(&e.filename)
            .push_bind(e.processing_time_ms)
            .push_bind(e.queue_wait_ms)
            .push_bind(e.batch_id)
            .push_bind(e.item_id)
            .push_bind(e.attempt)
            .push_bind(e.status)
            .push_bind(e.error_code)
            .push_bind(&e.error_message)
            .push_bind(&e.worker_id)
            .push_bind(&e.device)
            .push_bind(e.dynamic_batch_size);
    });
    insert.push(
        ") AS v (model_name, model_version, prediction, probability, filename, processing_time_ms, \
         queue_wait_ms, batch_id, item_id, attempt, status, error_code, error_message, worker_id, \
         device, dynamic_batch_size) \
         JOIN items i ON i.id = v.item_id AND i.batch_id = v.batch_id \
         JOIN batches b ON b.id = v.batch_id \
         FOR KEY SHARE OF i",
    );
    insert.build().execute(db).await?;
    Ok(())
}

/// Deletes up to `limit` log rows older than `age`, oldest first; returns how many. (Whole days
/// go faster with [`drop_partitions_before`]; this takes what is left of the oldest day.)
pub async fn delete_before(
    db: impl PgExecutor<'_>,
    age: std::time::Duration,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        r#"DELETE FROM inference_log WHERE (ts, id) IN (
               SELECT ts, id FROM inference_log WHERE ts < now() - make_interval(secs => $1)
               ORDER BY ts LIMIT $2)"#,
    )
    .bind(age.as_secs_f64())
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogRecord {
    pub id: i64,
    pub ts: DateTime<Utc>,
    pub model_name: String,
    pub model_version: Option<String>,
    pub prediction: Option<String>,
    pub probability: Option<f32>,
    pub filename: String,
    pub processing_time_ms: f32,
    pub queue_wait_ms: Option<f32>,
    pub batch_id: Option<Uuid>,
    pub item_id: Option<Uuid>,
    pub attempt: i32,
    pub status: LogStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub worker_id: String,
    pub device: String,
    pub dynamic_batch_size: Option<i32>,
}

/// Filters of a log query; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Rows of these projects only (a scoped caller's).
    pub projects: Option<Vec<Uuid>>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub model: Option<String>,
    pub status: Option<LogStatus>,
    pub batch: Option<Uuid>,
    pub worker: Option<String>,
    pub label: Option<String>,
    pub min_ms: Option<f32>,
    /// Keyset cursor: rows strictly older than this (ts, id).
    pub before: Option<(DateTime<Utc>, i64)>,
}

/// Newest first, at most `limit` rows.
pub async fn query(
    db: impl PgExecutor<'_>,
    f: &LogFilter,
    limit: i64,
) -> sqlx::Result<Vec<LogRecord>> {
    select("", f, limit)
        .build_query_as::<LogRecord>()
        .fetch_all(db)
        .await
}

/// The plan Postgres picks for [`query`] with these filters, a line per node: what the index
/// test checks and what an operator reads when a query form is slow.
pub async fn explain(
    db: impl PgExecutor<'_>,
    f: &LogFilter,
    limit: i64,
) -> sqlx::Result<Vec<String>> {
    select("EXPLAIN ", f, limit)
        .build_query_scalar::<String>()
        .fetch_all(db)
        .await
}

fn select(prefix: &str, f: &LogFilter, limit: i64) -> QueryBuilder<Postgres> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(prefix);
    q.push(
        "SELECT id, ts, model_name, model_version, prediction, probability, filename, processing_time_ms, \
         queue_wait_ms, batch_id, item_id, attempt, status, error_code, error_message, worker_id, device, \
         dynamic_batch_size FROM inference_log WHERE true",
    );
    if let Some(v) = &f.projects {
        q.push(" AND project_id = ANY(")
            .push_bind(v.clone())
            .push(")");
    }
    if let Some(v) = f.since {
        q.push(" AND ts >= ").push_bind(v);
    }
    if let Some(v) = f.until {
        q.push(" AND ts < ").push_bind(v);
    }
    if let Some(v) = &f.model {
        q.push(" AND model_name = ").push_bind(v.clone());
    }
    if let Some(v) = &f.status {
        q.push(" AND status = ").push_bind(*v);
    }
    if let Some(v) = f.batch {
        q.push(" AND batch_id = ").push_bind(v);
    }
    if let Some(v) = &f.worker {
        q.push(" AND worker_id = ").push_bind(v.clone());
    }
    if let Some(v) = &f.label {
        q.push(" AND prediction = ").push_bind(v.clone());
    }
    if let Some(v) = f.min_ms {
        q.push(" AND processing_time_ms >= ").push_bind(v);
    }
    if let Some((ts, id)) = f.before {
        // `ts <=` alone lets the planner skip the later days' partitions.
        q.push(" AND ts <= ").push_bind(ts);
        q.push(" AND (ts, id) < (")
            .push_bind(ts)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(" ORDER BY ts DESC, id DESC LIMIT ").push_bind(limit);
    q
}

/// One rollup row (migration 0008): the attempts of one model and status in one hour or day,
/// counted per latency bucket (see [`crate::latency`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Rollup {
    pub start: DateTime<Utc>,
    pub model_name: String,
    pub status: LogStatus,
    pub latency_bucket: i16,
    pub n: i64,
}

/// [`rollups`]' SQL ($1 grain, $2 since, $3 projects or NULL), public for the index test.
pub const ROLLUPS: &str = r#"SELECT start, model_name, status, latency_bucket, sum(n)::int8 AS n
    FROM log_rollups
    WHERE grain = $1 AND start >= date_trunc($1, $2, 'UTC')
      AND ($3::uuid[] IS NULL OR project_id = ANY($3))
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2"#;

/// [`prediction_counts`]' SQL, with the same parameters as [`ROLLUPS`].
pub const PREDICTION_COUNTS: &str = r#"SELECT model_name, prediction, sum(n)::int8
    FROM log_prediction_rollups
    WHERE grain = $1 AND start >= date_trunc($1, $2, 'UTC')
      AND ($3::uuid[] IS NULL OR project_id = ANY($3))
    GROUP BY 1, 2 ORDER BY 1, 3 DESC"#;

/// The rollups of hours (`day` false) or days from the one holding `since`, of `projects` only
/// (`None`: all), summed over projects.
pub async fn rollups(
    db: impl PgExecutor<'_>,
    projects: Option<&[Uuid]>,
    since: DateTime<Utc>,
    day: bool,
) -> sqlx::Result<Vec<Rollup>> {
    sqlx::query_as::<_, Rollup>(ROLLUPS)
        .bind(grain(day))
        .bind(since)
        .bind(projects)
        .fetch_all(db)
        .await
}

/// How often each label was the top prediction, per model, in the hours (`day` false) or days
/// from the one holding `since`, of `projects` only (`None`: all).
pub async fn prediction_counts(
    db: impl PgExecutor<'_>,
    projects: Option<&[Uuid]>,
    since: DateTime<Utc>,
    day: bool,
) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as(PREDICTION_COUNTS)
        .bind(grain(day))
        .bind(since)
        .bind(projects)
        .fetch_all(db)
        .await
}

fn grain(day: bool) -> &'static str {
    if day { "day" } else { "hour" }
}

/// Makes sure the log has its day partitions from today to `days_ahead` days on (rows that
/// landed in the default partition meanwhile move into theirs).
pub async fn prepare_partitions(db: impl PgExecutor<'_>, days_ahead: u32) -> sqlx::Result<()> {
    sqlx::query(
        r#"SELECT xcam_log_partitions((now() AT TIME ZONE 'UTC')::date,
                                      (now() AT TIME ZONE 'UTC')::date + $1)"#,
    )
    .bind(days_ahead as i32)
    .execute(db)
    .await?;
    Ok(())
}

/// Drops the log's day partitions wholly older than `age`; returns the rows they held.
pub async fn drop_partitions_before(
    db: impl PgExecutor<'_>,
    age: std::time::Duration,
) -> sqlx::Result<u64> {
    let rows: i64 =
        sqlx::query_scalar("SELECT xcam_drop_log_partitions(now() - make_interval(secs => $1))")
            .bind(age.as_secs_f64())
            .fetch_one(db)
            .await?;
    Ok(rows as u64)
}

/// Deletes hour rollups older than `hours` and day rollups older than `days`: the furthest back
/// `/v1/stats` looks with each. They hold counts only, no name, so they may outlive the log.
pub async fn prune_rollups(
    db: impl PgExecutor<'_>,
    hours: chrono::Duration,
    days: chrono::Duration,
) -> sqlx::Result<u64> {
    let pruned: i64 = sqlx::query_scalar(
        r#"WITH r AS (DELETE FROM log_rollups
                      WHERE (grain = 'hour' AND start < now() - $1) OR (grain = 'day' AND start < now() - $2)
                      RETURNING 1),
                p AS (DELETE FROM log_prediction_rollups
                      WHERE (grain = 'hour' AND start < now() - $1) OR (grain = 'day' AND start < now() - $2)
                      RETURNING 1)
           SELECT (SELECT count(*) FROM r) + (SELECT count(*) FROM p)"#,
    )
    .bind(hours)
    .bind(days)
    .fetch_one(db)
    .await?;
    Ok(pruned as u64)
}
