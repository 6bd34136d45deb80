//! Retrying a batch's failed items by hand: they are queued again, as new attempts of the same
//! items (their earlier attempts stay in the inference log), and the batch's status follows.

use sqlx::PgPool;
use uuid::Uuid;

use crate::{db::batches, status::BatchStatus};

/// Which failed items to retry; `None` for either: no restriction.
#[derive(Debug, Clone, Default)]
pub struct RetryFilter<'a> {
    pub codes: Option<&'a [String]>,
    pub items: Option<&'a [Uuid]>,
}

/// A failed item that is (or, in a dry run, would be) queued again.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Retried {
    pub id: Uuid,
    pub entry_name: String,
    pub blob_key: String,
    /// Why it had failed.
    pub error_code: Option<String>,
}

#[derive(Debug)]
pub enum Retry {
    Done(Vec<Retried>),
    NotFound,
    /// Its status (`ingesting`, `cancelled`) leaves nothing to retry.
    Refused(BatchStatus),
}

/// Finds the batch's failed items matching `filter`, in entry order, and unless `dry_run`
/// queues them again in the same transaction, which locks the batch first as an outcome does.
pub async fn retry(
    db: &PgPool,
    batch: Uuid,
    filter: &RetryFilter<'_>,
    dry_run: bool,
) -> sqlx::Result<Retry> {
    let mut tx = db.begin().await?;
    let status: Option<BatchStatus> =
        sqlx::query_scalar("SELECT status FROM batches WHERE id = $1 FOR NO KEY UPDATE")
            .bind(batch)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(status) = status else {
        return Ok(Retry::NotFound);
    };
    if matches!(status, BatchStatus::Ingesting | BatchStatus::Cancelled) {
        return Ok(Retry::Refused(status));
    }
    let found: Vec<Retried> = sqlx::query_as(
        r#"SELECT id, entry_name, blob_key, error_code FROM items
           WHERE batch_id = $1 AND status = 'failed' AND blob_key IS NOT NULL
             AND ($2::text[] IS NULL OR error_code = ANY($2))
             AND ($3::uuid[] IS NULL OR id = ANY($3))
           ORDER BY entry_index
           FOR UPDATE"#,
    )
    .bind(batch)
    .bind(filter.codes)
    .bind(filter.items)
    .fetch_all(&mut *tx)
    .await?;
    if dry_run || found.is_empty() {
        return Ok(Retry::Done(found));
    }
    let ids: Vec<Uuid> = found.iter().map(|r| r.id).collect();
    sqlx::query(
        r#"UPDATE items SET status = 'queued', error_code = NULL, error_message = NULL,
                  finished_at = NULL, open_claims = 0, queued_at = now()
           WHERE id = ANY($1)"#,
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    batches::refresh(&mut *tx, batch).await?;
    tx.commit().await?;
    Ok(Retry::Done(found))
}
