//! `inference_log`: one row per attempt, and the operators' queries over it. The filter query is
//! the only dynamic SQL in xcam; it is assembled with `QueryBuilder::push_bind`, so every
//! user-supplied value travels as a bound parameter.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::status::LogStatus;

#[derive(Debug, Clone)]
pub struct NewLogEntry<'a> {
    pub model_name: &'a str,
    pub model_version: &'a str,
    pub prediction: Option<&'a str>,
    pub probability: Option<f32>,
    pub filename: &'a str,
    pub processing_time_ms: f32,
    pub queue_wait_ms: Option<f32>,
    pub batch_id: Uuid,
    pub item_id: Uuid,
    pub attempt: i32,
    pub status: LogStatus,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub worker_id: &'a str,
    pub device: &'a str,
    pub dynamic_batch_size: Option<i32>,
}

/// Logs one attempt of an item. Like [`crate::db::results::upsert`], writes nothing once the
/// item is gone, so a deleted batch's entry names cannot come back through a late worker.
pub async fn insert(db: impl PgExecutor<'_>, e: &NewLogEntry<'_>) -> sqlx::Result<()> {
    sqlx::query(
        r#"INSERT INTO inference_log (model_name, model_version, prediction, probability, filename,
                                      processing_time_ms, queue_wait_ms, batch_id, item_id, attempt, status,
                                      error_code, error_message, worker_id, device, dynamic_batch_size, project_id)
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, b.project_id
           FROM items i JOIN batches b ON b.id = i.batch_id
           WHERE i.id = $9 AND b.id = $8
           FOR KEY SHARE OF i"#,
    )
    .bind(e.model_name)
    .bind(e.model_version)
    .bind(e.prediction)
    .bind(e.probability)
    .bind(e.filename)
    .bind(e.processing_time_ms)
    .bind(e.queue_wait_ms)
    .bind(e.batch_id)
    .bind(e.item_id)
    .bind(e.attempt)
    .bind(e.status)
    .bind(e.error_code)
    .bind(e.error_message)
    .bind(e.worker_id)
    .bind(e.device)
    .bind(e.dynamic_batch_size)
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes up to `limit` log rows older than `age`, oldest first; returns how many.
pub async fn delete_before(
    db: impl PgExecutor<'_>,
    age: std::time::Duration,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        r#"DELETE FROM inference_log WHERE id IN (
               SELECT id FROM inference_log WHERE ts < now() - make_interval(secs => $1)
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
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
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
        q.push(" AND (ts, id) < (")
            .push_bind(ts)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(" ORDER BY ts DESC, id DESC LIMIT ").push_bind(limit);
    q.build_query_as::<LogRecord>().fetch_all(db).await
}

/// One time bucket of the inference log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Bucket {
    pub bucket: DateTime<Utc>,
    pub inferences: i64,
    pub failures: i64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

/// Inferences per hour or day since `since`, of `projects` only (`None`: all), with latency
/// percentiles and failures.
pub async fn buckets(
    db: impl PgExecutor<'_>,
    projects: Option<&[Uuid]>,
    since: DateTime<Utc>,
    day: bool,
) -> sqlx::Result<Vec<Bucket>> {
    sqlx::query_as::<_, Bucket>(
        r#"SELECT date_trunc(CASE WHEN $2 THEN 'day' ELSE 'hour' END, ts) AS bucket,
                  count(*) FILTER (WHERE status <> 'retrying') AS inferences,
                  count(*) FILTER (WHERE status = 'failed') AS failures,
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY processing_time_ms) FILTER (WHERE status = 'succeeded') AS p50_ms,
                  percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms) FILTER (WHERE status = 'succeeded') AS p95_ms
           FROM inference_log WHERE ts >= $1 AND ($3::uuid[] IS NULL OR project_id = ANY($3))
           GROUP BY 1 ORDER BY 1"#,
    )
    .bind(since)
    .bind(day)
    .bind(projects)
    .fetch_all(db)
    .await
}

/// How often each label was the top prediction, per model, since `since`, of `projects` only
/// (`None`: all).
pub async fn prediction_counts(
    db: impl PgExecutor<'_>,
    projects: Option<&[Uuid]>,
    since: DateTime<Utc>,
) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        r#"SELECT model_name, prediction, count(*) FROM inference_log
           WHERE ts >= $1 AND status = 'succeeded' AND prediction IS NOT NULL
             AND ($2::uuid[] IS NULL OR project_id = ANY($2))
           GROUP BY 1, 2 ORDER BY 1, 3 DESC"#,
    )
    .bind(since)
    .bind(projects)
    .fetch_all(db)
    .await
}
