//! `items`: one row per archive entry that was an image, with its status machine:
//! queued → running → succeeded | failed, queued → cancelled, or rejected at ingestion.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{jobs::GradCamJobV1, status::ItemStatus};

/// An item as ingestion writes it.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub id: Uuid,
    pub entry_index: i32,
    pub entry_name: String,
    pub sha256: Option<String>,
    pub blob_key: Option<String>,
    pub byte_size: Option<i64>,
    /// `Queued`, or `Rejected` with a code and message.
    pub status: ItemStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub warnings: serde_json::Value,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ItemRecord {
    pub id: Uuid,
    pub batch_id: Uuid,
    pub entry_index: i32,
    pub entry_name: String,
    pub sha256: Option<String>,
    pub blob_key: Option<String>,
    pub status: ItemStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attempts: i32,
    pub worker_id: Option<String>,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Inserts items in chunks (Postgres caps a statement at 65 535 bound parameters).
pub async fn insert_all(
    conn: &mut sqlx::PgConnection,
    batch_id: Uuid,
    items: &[NewItem],
) -> sqlx::Result<()> {
    for chunk in items.chunks(1000) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO items (id, batch_id, entry_index, entry_name, sha256, blob_key, byte_size, status, \
             error_code, error_message, warnings, finished_at) ",
        );
        q.push_values(chunk, |mut row, it| {
            row.push_bind(it.id)
                .push_bind(batch_id)
                .push_bind(it.entry_index)
                .push_bind(&it.entry_name)
                .push_bind(&it.sha256)
                .push_bind(&it.blob_key)
                .push_bind(it.byte_size)
                .push_bind(it.status)
                .push_bind(&it.error_code)
                .push_bind(&it.error_message)
                .push_bind(&it.warnings)
                .push("CASE WHEN ")
                .push_bind_unseparated(it.status)
                .push_unseparated(" = 'rejected' THEN now() END");
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

pub async fn get(
    db: impl PgExecutor<'_>,
    batch_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<ItemRecord>> {
    sqlx::query_as::<_, ItemRecord>(
        r#"SELECT id, batch_id, entry_index, entry_name, sha256, blob_key, status, error_code, error_message,
                  attempts, worker_id, queued_at, started_at, finished_at
           FROM items WHERE batch_id = $1 AND id = $2"#,
    )
    .bind(batch_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// What a worker learns when it claims an item.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claim {
    pub entry_name: String,
    pub queued_at: DateTime<Utc>,
    pub attempts: i32,
    /// Claims, this one included, that no worker settled (see `0006_faults.sql`).
    pub open_claims: i32,
}

/// Marks an item running. A `fresh` claim is a new delivery of its job and counts as an attempt;
/// a worker taking the item up again after waiting out an outage is not. Returns `None` when the
/// item must not run: it was cancelled, or it already has its final outcome (a duplicate
/// delivery). Locks the item's batch first, as every writer of items does (its counts change).
pub async fn claim(
    db: &PgPool,
    batch: Uuid,
    id: Uuid,
    worker: &str,
    fresh: bool,
) -> sqlx::Result<Option<Claim>> {
    let mut tx = db.begin().await?;
    if super::batches::lock(&mut tx, batch).await?.is_none() {
        return Ok(None);
    }
    let claim = sqlx::query_as::<_, Claim>(
        r#"UPDATE items SET status = 'running', attempts = attempts + $3, open_claims = open_claims + $3,
                  worker_id = $2, started_at = COALESCE(started_at, now())
           WHERE id = $1 AND batch_id = $4 AND status IN ('queued', 'running')
           RETURNING entry_name, queued_at, attempts, open_claims"#,
    )
    .bind(id)
    .bind(worker)
    .bind(i32::from(fresh))
    .bind(batch)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(claim)
}

/// An open item with what its job needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OpenItem {
    pub id: Uuid,
    pub batch_id: Uuid,
    pub blob_key: String,
    pub queued_at: DateTime<Utc>,
    pub model_name: String,
    pub method: String,
    pub labels: String,
    pub faithfulness: String,
}

impl OpenItem {
    /// Where a page of [`open_before`] ending with this item ends.
    pub fn key(&self) -> (DateTime<Utc>, Uuid) {
        (self.queued_at, self.id)
    }

    /// Its job, as ingestion pushed it (less the request's id); `None` if its batch's stored
    /// method or labels do not parse.
    pub fn job(self) -> Option<GradCamJobV1> {
        Some(GradCamJobV1 {
            batch_id: self.batch_id,
            item_id: self.id,
            blob_key: self.blob_key,
            model: self.model_name,
            method: self.method.parse().ok()?,
            labels: self.labels.parse().ok()?,
            faithfulness: self.faithfulness.parse().ok()?,
            request_id: None,
        })
    }
}

/// Items that should have a job in Redis, queued before `older_than` ago, in (queued_at, id)
/// order after `after`: a caller pages through all of them with the last one's [`OpenItem::key`].
pub async fn open_before(
    db: impl PgExecutor<'_>,
    older_than: std::time::Duration,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<OpenItem>> {
    sqlx::query_as(
        r#"SELECT i.id, i.batch_id, i.blob_key, i.queued_at, b.model_name, b.method, b.labels, b.faithfulness
           FROM items i JOIN batches b ON b.id = i.batch_id
           WHERE i.status IN ('queued', 'running') AND i.blob_key IS NOT NULL
             AND i.queued_at < now() - make_interval(secs => $1)
             AND ($2::timestamptz IS NULL OR (i.queued_at, i.id) > ($2, $3))
           ORDER BY i.queued_at, i.id LIMIT $4"#,
    )
    .bind(older_than.as_secs_f64())
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// An item that was refused, failed, or carries warnings.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Problem {
    pub id: Uuid,
    pub entry_index: i32,
    pub entry_name: String,
    pub status: ItemStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub warnings: serde_json::Value,
}

/// Up to `limit` of a batch's refused, failed and flagged items after entry `after`, in entry
/// order.
pub async fn problems(
    db: impl PgExecutor<'_>,
    batch_id: Uuid,
    after: i32,
    limit: i64,
) -> sqlx::Result<Vec<Problem>> {
    sqlx::query_as::<_, Problem>(
        r#"SELECT id, entry_index, entry_name, status, error_code, error_message, warnings
           FROM items
           WHERE batch_id = $1 AND entry_index > $2
             AND (status IN ('rejected', 'failed') OR warnings <> '[]'::jsonb)
           ORDER BY entry_index LIMIT $3"#,
    )
    .bind(batch_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A batch's refused and failed items by error code.
pub async fn errors_by_code(
    db: impl PgExecutor<'_>,
    batch_id: Uuid,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        r#"SELECT error_code, count(*) FROM items
           WHERE batch_id = $1 AND status IN ('rejected', 'failed') AND error_code IS NOT NULL
           GROUP BY error_code"#,
    )
    .bind(batch_id)
    .fetch_all(db)
    .await
}

/// A batch's warnings by code (an item flagged twice for one code counts twice).
pub async fn warnings_by_code(
    db: impl PgExecutor<'_>,
    batch_id: Uuid,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        r#"SELECT w->>'code', count(*) FROM items, jsonb_array_elements(warnings) w
           WHERE batch_id = $1 AND warnings <> '[]'::jsonb
           GROUP BY 1"#,
    )
    .bind(batch_id)
    .fetch_all(db)
    .await
}
