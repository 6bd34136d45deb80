//! `batches`: one row per uploaded archive. Its status follows its items (see [`refresh`]).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{
    status::BatchStatus,
    targets::{Faithfulness, LabelSelection, Method},
};

/// A new batch, as the upload handler knows it before ingestion.
#[derive(Debug, Clone)]
pub struct NewBatch<'a> {
    pub id: Uuid,
    pub project_id: Uuid,
    pub model_name: &'a str,
    pub model_version: &'a str,
    pub method: Method,
    pub labels: &'a LabelSelection,
    pub faithfulness: Faithfulness,
    pub archive_bytes: i64,
    pub pseudonymize_names: bool,
    /// The producer that ingests it.
    pub ingested_by: &'a str,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchRecord {
    pub id: Uuid,
    pub project_id: Uuid,
    /// The project's name (joined).
    pub project: String,
    pub model_name: String,
    pub model_version: String,
    pub method: String,
    pub labels: String,
    pub faithfulness: String,
    pub status: BatchStatus,
    pub archive_bytes: i64,
    pub total_entries: i32,
    pub skipped_entries: i32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub pseudonymize_names: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ingested_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Kept by the database as items change (`0007_counts_and_skips.sql`).
    #[sqlx(flatten)]
    pub counts: ItemCounts,
}

/// Items of a batch by status, plus the figures progress and ETA are computed from.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct ItemCounts {
    #[sqlx(rename = "items_total")]
    pub total: i32,
    #[sqlx(rename = "items_rejected")]
    pub rejected: i32,
    #[sqlx(rename = "items_queued")]
    pub queued: i32,
    #[sqlx(rename = "items_running")]
    pub running: i32,
    #[sqlx(rename = "items_succeeded")]
    pub succeeded: i32,
    #[sqlx(rename = "items_failed")]
    pub failed: i32,
    #[sqlx(rename = "items_cancelled")]
    pub cancelled: i32,
    /// When the first item started and the last finished.
    pub first_started: Option<DateTime<Utc>>,
    pub last_finished: Option<DateTime<Utc>>,
}

/// `SELECT <every column> FROM batches <rest>`, as a literal so sqlx sees static SQL.
macro_rules! select_batches {
    ($rest:literal) => {
        concat!(
            "SELECT b.id, b.project_id, p.name AS project, b.model_name, b.model_version, b.method, b.labels, ",
            "b.faithfulness, b.status, b.archive_bytes, b.total_entries, b.skipped_entries, b.error_code, b.error_message, ",
            "b.pseudonymize_names, b.created_at, b.updated_at, b.ingested_at, b.started_at, b.finished_at, ",
            "b.items_total, b.items_rejected, b.items_queued, b.items_running, b.items_succeeded, ",
            "b.items_failed, b.items_cancelled, b.first_started, b.last_finished ",
            "FROM batches b JOIN projects p ON p.id = b.project_id ",
            $rest
        )
    };
}

pub async fn insert(db: impl PgExecutor<'_>, b: &NewBatch<'_>) -> sqlx::Result<()> {
    sqlx::query(
        r#"INSERT INTO batches (id, project_id, model_name, model_version, method, labels, archive_bytes,
                                pseudonymize_names, ingested_by, faithfulness)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
    )
    .bind(b.id)
    .bind(b.project_id)
    .bind(b.model_name)
    .bind(b.model_version)
    .bind(b.method.as_str())
    .bind(b.labels.to_string())
    .bind(b.archive_bytes)
    .bind(b.pseudonymize_names)
    .bind(b.ingested_by)
    .bind(b.faithfulness.as_str())
    .execute(db)
    .await?;
    Ok(())
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<BatchRecord>> {
    sqlx::query_as::<_, BatchRecord>(select_batches!("WHERE b.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Inside a transaction: locks the batch row against every other change of its status (a
/// cancel, a delete, an outcome, an interruption) until the transaction ends, and returns the
/// status; `None` once it is deleted. Writers of a batch's rows take this lock first.
pub async fn lock(conn: &mut sqlx::PgConnection, id: Uuid) -> sqlx::Result<Option<BatchStatus>> {
    sqlx::query_scalar("SELECT status FROM batches WHERE id = $1 FOR NO KEY UPDATE")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// [`lock`] for the batches of `ids` (in any order, repeats allowed), taken in id order so two
/// writers of several batches never wait on each other in a circle; returns the ids of those
/// that still exist, in that order.
pub async fn lock_all(conn: &mut sqlx::PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar("SELECT id FROM batches WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(ids)
        .fetch_all(conn)
        .await
}

/// A batch's status; `None` once it is deleted.
pub async fn status_of(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<BatchStatus>> {
    sqlx::query_scalar("SELECT status FROM batches WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Newest first, of `projects` only (`None`: every project); `before` is the `created_at` of
/// the last batch of the previous page.
pub async fn list(
    db: impl PgExecutor<'_>,
    projects: Option<&[Uuid]>,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> sqlx::Result<Vec<BatchRecord>> {
    sqlx::query_as::<_, BatchRecord>(select_batches!(
        "WHERE ($1::uuid[] IS NULL OR b.project_id = ANY($1)) AND ($2::timestamptz IS NULL OR b.created_at < $2) \
         ORDER BY b.created_at DESC LIMIT $3"
    ))
    .bind(projects)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Ingestion is done: record what the archive held and open the batch for work.
pub async fn mark_ingested(
    db: impl PgExecutor<'_>,
    id: Uuid,
    total_entries: i32,
    skipped_entries: i32,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"UPDATE batches SET status = 'queued', total_entries = $2, skipped_entries = $3,
                  ingested_at = now(), updated_at = now()
           WHERE id = $1 AND status = 'ingesting'"#,
    )
    .bind(id)
    .bind(total_entries)
    .bind(skipped_entries)
    .execute(db)
    .await?;
    Ok(())
}

/// The batch cannot be processed at all (e.g. its archive turned out corrupt during ingestion).
pub async fn mark_failed(
    db: impl PgExecutor<'_>,
    id: Uuid,
    code: &str,
    message: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"UPDATE batches SET status = 'failed', error_code = $2, error_message = $3,
                  finished_at = now(), updated_at = now()
           WHERE id = $1"#,
    )
    .bind(id)
    .bind(code)
    .bind(message)
    .execute(db)
    .await?;
    Ok(())
}

/// Cancels a batch: queued items become `cancelled`; running ones finish. Returns how many
/// items were cancelled, or `None` if the batch had already ended.
pub async fn cancel(db: &sqlx::PgPool, id: Uuid) -> sqlx::Result<Option<u64>> {
    let mut tx = db.begin().await?;
    let updated = sqlx::query(
        r#"UPDATE batches SET status = 'cancelled', updated_at = now()
           WHERE id = $1 AND status <> ALL($2)"#,
    )
    .bind(id)
    .bind(texts(BatchStatus::TERMINAL))
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    let items = sqlx::query(
        r#"UPDATE items SET status = 'cancelled', finished_at = now()
           WHERE batch_id = $1 AND status = 'queued'"#,
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    refresh(db, id).await?;
    Ok(Some(items.rows_affected()))
}

/// Statuses as the text array a `= ANY($n)` binds.
fn texts(statuses: &[BatchStatus]) -> Vec<&'static str> {
    statuses.iter().map(|s| s.as_str()).collect()
}

/// Finished batches older than their retention: the project's own, else `default` (none: kept).
/// Returns (batch, project name), oldest first.
pub async fn expired(
    db: impl PgExecutor<'_>,
    default: Option<std::time::Duration>,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as(
        r#"SELECT b.id, p.name FROM batches b JOIN projects p ON p.id = b.project_id
           WHERE b.finished_at IS NOT NULL
             AND b.status IN ('succeeded', 'completed_with_errors', 'failed', 'cancelled')
             AND b.finished_at < now() - make_interval(secs => COALESCE(p.retention_seconds::float8, $1))
           ORDER BY b.finished_at LIMIT $2"#,
    )
    .bind(default.map(|d| d.as_secs_f64()))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Derives the batch's status from its items' and stamps its start and end.
///
/// ingesting and cancelled are left alone (but a cancelled batch still gets its end time);
/// otherwise: queued until an item starts, running while any is open, then succeeded (all
/// succeeded), failed (none did) or completed_with_errors. Workers call this after every item;
/// it reads the batch's own counts, never its items.
pub async fn refresh(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<()> {
    refresh_all(db, &[id]).await
}

/// [`refresh`] for several batches in one statement.
pub async fn refresh_all(db: impl PgExecutor<'_>, ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query(
        // Every expression reads the row being updated, never a separate scan of it: an
        // update that waits for another writer's lock is evaluated again on the row that
        // writer committed, so it cannot write a status derived from counts that were stale.
        r#"UPDATE batches b SET
               status = CASE
                   WHEN b.status IN ('ingesting', 'cancelled') THEN b.status
                   WHEN b.items_queued + b.items_running > 0 AND b.items_total = b.items_queued THEN 'queued'
                   WHEN b.items_queued + b.items_running > 0 THEN 'running'
                   WHEN b.items_succeeded > 0 AND b.items_total = b.items_succeeded THEN 'succeeded'
                   WHEN b.items_succeeded = 0 THEN 'failed'
                   ELSE 'completed_with_errors' END,
               started_at = COALESCE(b.started_at, CASE WHEN b.items_total > b.items_queued THEN now() END),
               finished_at = CASE WHEN b.items_queued + b.items_running = 0 AND b.status <> 'ingesting'
                                  THEN COALESCE(b.finished_at, now()) END,
               updated_at = now()
           WHERE b.id = ANY($1)"#,
    )
    .bind(ids)
    .execute(db)
    .await?;
    Ok(())
}
