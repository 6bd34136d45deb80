//! The SQL behind `/metrics`: histograms and counts read from the tables at scrape time.

use sqlx::PgExecutor;

/// Upper bounds (ms) of the latency histogram buckets `/metrics` exposes.
pub(super) const LATENCY_BUCKETS_MS: [f64; 9] = [
    25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];
/// Upper bounds of the dynamic batch size histogram.
pub(super) const BATCH_SIZE_BUCKETS: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// A cumulative histogram of one column of the successful attempts, per model:
/// (model, counts per bucket (cumulative), count, sum).
pub(super) async fn histogram(
    db: impl PgExecutor<'_>,
    column: HistogramColumn,
    bounds: &[f64],
) -> sqlx::Result<Vec<(String, Vec<i64>, i64, f64)>> {
    let rows: Vec<(String, Vec<i64>, i64, f64)> = sqlx::query_as(
        r#"SELECT model_name,
                  array_agg(n ORDER BY bound) AS buckets,
                  max(total) AS total,
                  max(sum) AS sum
           FROM (
               SELECT l.model_name, b.bound,
                      count(*) FILTER (WHERE v <= b.bound) AS n,
                      count(*) AS total,
                      COALESCE(sum(v), 0)::float8 AS sum
               FROM (SELECT model_name,
                            (CASE $1 WHEN 'processing' THEN processing_time_ms
                                     WHEN 'queue_wait' THEN queue_wait_ms
                                     ELSE dynamic_batch_size END)::float8 AS v
                     FROM inference_log WHERE status = 'succeeded') l
               CROSS JOIN unnest($2::float8[]) AS b(bound)
               WHERE l.v IS NOT NULL
               GROUP BY l.model_name, b.bound
           ) per_bucket
           GROUP BY model_name ORDER BY model_name"#,
    )
    .bind(column.as_str())
    .bind(bounds)
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// The log columns `/metrics` turns into histograms.
#[derive(Debug, Clone, Copy)]
pub(super) enum HistogramColumn {
    Processing,
    QueueWait,
    BatchSize,
}

impl HistogramColumn {
    fn as_str(self) -> &'static str {
        match self {
            HistogramColumn::Processing => "processing",
            HistogramColumn::QueueWait => "queue_wait",
            HistogramColumn::BatchSize => "batch_size",
        }
    }
}

/// Items by model and status.
pub(super) async fn item_counts(
    db: impl PgExecutor<'_>,
) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as(
        r#"SELECT b.model_name, i.status, count(*) FROM items i JOIN batches b ON b.id = i.batch_id
           GROUP BY 1, 2 ORDER BY 1, 2"#,
    )
    .fetch_all(db)
    .await
}
