//! Retrying a batch's failed items by hand: they are queued again, as new attempts of the same
//! items (their earlier attempts stay in the inference log), and the batch's status follows.

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    db::{batches, items::OpenItem},
    status::BatchStatus,
};

/// Which failed items to retry; `None` for either: no restriction.
#[derive(Debug, Clone, Default)]
pub struct RetryFilter<'a> {
    pub codes: Option<&'a [String]>,
    pub items: Option<&'a [Uuid]>,
}

/// A failed item that is (or, in a dry run, would be) queued again.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Retried {
    /// What its job needs.
    #[sqlx(flatten)]
    pub item: OpenItem,
    pub entry_name: String,
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
    let Some(status) = batches::lock(&mut tx, batch).await? else {
        return Ok(Retry::NotFound);
    };
    if matches!(status, BatchStatus::Ingesting | BatchStatus::Cancelled) {
        return Ok(Retry::Refused(status));
    }
    let found: Vec<Retried> = sqlx::query_as(
        r#"SELECT i.id, i.batch_id, i.blob_key, i.queued_at, b.model_name, b.method, b.labels, b.faithfulness,
                  i.entry_name, i.error_code
           FROM items i JOIN batches b ON b.id = i.batch_id
           WHERE i.batch_id = $1 AND i.status = 'failed' AND i.blob_key IS NOT NULL
             AND ($2::text[] IS NULL OR i.error_code = ANY($2))
             AND ($3::uuid[] IS NULL OR i.id = ANY($3))
           ORDER BY i.entry_index
           FOR UPDATE OF i"#,
    )
    .bind(batch)
    .bind(filter.codes)
    .bind(filter.items)
    .fetch_all(&mut *tx)
    .await?;
    if dry_run || found.is_empty() {
        return Ok(Retry::Done(found));
    }
    let ids: Vec<Uuid> = found.iter().map(|r| r.item.id).collect();
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
