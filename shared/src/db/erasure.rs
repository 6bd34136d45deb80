//! Deleting a batch, and the pixel planes ingestion writes before its items exist.
//!
//! A delete removes the batch's rows in one transaction and leaves a `pending_erasures` row
//! naming what lives outside Postgres (Redis jobs, planes, drawn overlays); the caller removes
//! those and then the row, and a sweeper retries rows an outage left behind.
//!
//! A plane is shared by every item with the same pixels, across batches, so it is removed only
//! when no item and no ingestion's claim needs it. The check and the removal run under an
//! advisory lock on the plane's key, which a claim takes too: a delete cannot remove a plane
//! between an ingestion claiming it and that ingestion writing it.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

/// What a committed delete still has to remove outside Postgres.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Erasure {
    pub batch_id: Uuid,
    pub model_name: String,
    pub item_ids: Vec<Uuid>,
    pub plane_keys: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// What [`delete_batch`] did.
#[derive(Debug)]
pub enum Deletion {
    Deleted(Erasure),
    /// No such batch (a second delete included).
    NotFound,
    /// Its archive is still being ingested: its items are not all written yet.
    Ingesting,
}

/// Deletes a batch's rows: items and results, the batch, its plane claims; blanks the entry
/// names and item ids of its inference-log rows (their timings and outcomes stay).
///
/// Safe against workers still running the batch: they claim items and record outcomes under a
/// lock on the batch row (see [`crate::db::outcome::record_all`]), and every log row they write
/// locks its item row (see [`crate::db::logs::insert_all`]). Their writes either commit before
/// this takes those rows, and their log rows are blanked here, or wait for it and find the batch
/// or item gone and write nothing. Each takes a batch row before item rows, as this does, so
/// none waits on another in a circle.
pub async fn delete_batch(db: &PgPool, batch: Uuid) -> sqlx::Result<Deletion> {
    let mut tx = db.begin().await?;
    // NO KEY UPDATE: waits for an ingestion committing its items (which updates the batch), but
    // not for the key-share locks a worker's result insert takes on the batch.
    let Some((model_name, project_id, status)): Option<(String, Uuid, String)> = sqlx::query_as(
        "SELECT model_name, project_id, status FROM batches WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(batch)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(Deletion::NotFound);
    };
    if status == "ingesting" {
        return Ok(Deletion::Ingesting);
    }
    // Items go first: deleting them waits for any worker write holding an item row, so the
    // log update below sees that write.
    let items: Vec<(Uuid, Option<String>)> =
        sqlx::query_as("DELETE FROM items WHERE batch_id = $1 RETURNING id, blob_key")
            .bind(batch)
            .fetch_all(&mut *tx)
            .await?;
    let claimed: Vec<(String,)> =
        sqlx::query_as("SELECT blob_key FROM plane_claims WHERE batch_id = $1")
            .bind(batch)
            .fetch_all(&mut *tx)
            .await?;
    sqlx::query("UPDATE inference_log SET filename = '', item_id = NULL WHERE batch_id = $1")
        .bind(batch)
        .execute(&mut *tx)
        .await?;
    let deleted = sqlx::query("DELETE FROM batches WHERE id = $1")
        .bind(batch)
        .execute(&mut *tx)
        .await?;
    if deleted.rows_affected() == 0 {
        // Another delete of the same batch committed first.
        return Ok(Deletion::NotFound);
    }
    sqlx::query("INSERT INTO deleted_batches (id, project_id) VALUES ($1, $2)")
        .bind(batch)
        .bind(project_id)
        .execute(&mut *tx)
        .await?;
    let item_ids: Vec<Uuid> = items.iter().map(|(id, _)| *id).collect();
    let mut plane_keys: Vec<String> = items
        .into_iter()
        .filter_map(|(_, key)| key)
        .chain(claimed.into_iter().map(|(key,)| key))
        .collect();
    plane_keys.sort_unstable();
    plane_keys.dedup();
    let erasure = sqlx::query_as::<_, Erasure>(
        r#"INSERT INTO pending_erasures (batch_id, model_name, item_ids, plane_keys)
           VALUES ($1, $2, $3, $4)
           RETURNING batch_id, model_name, item_ids, plane_keys, created_at"#,
    )
    .bind(batch)
    .bind(&model_name)
    .bind(&item_ids)
    .bind(&plane_keys)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Deletion::Deleted(erasure))
}

/// A deleted batch's project (id and name), if `batch` was deleted.
pub async fn deleted(db: impl PgExecutor<'_>, batch: Uuid) -> sqlx::Result<Option<(Uuid, String)>> {
    sqlx::query_as(
        r#"SELECT p.id, p.name FROM deleted_batches d JOIN projects p ON p.id = d.project_id
           WHERE d.id = $1"#,
    )
    .bind(batch)
    .fetch_optional(db)
    .await
}

/// Erasures not finished `older_than` ago (an outage interrupted them), oldest first.
pub async fn pending(
    db: impl PgExecutor<'_>,
    older_than: std::time::Duration,
    limit: i64,
) -> sqlx::Result<Vec<Erasure>> {
    sqlx::query_as(
        r#"SELECT batch_id, model_name, item_ids, plane_keys, created_at FROM pending_erasures
           WHERE created_at < now() - make_interval(secs => $1)
           ORDER BY created_at LIMIT $2"#,
    )
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Marks an erasure finished.
pub async fn finished(db: impl PgExecutor<'_>, batch: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM pending_erasures WHERE batch_id = $1")
        .bind(batch)
        .execute(db)
        .await?;
    Ok(())
}

/// Records that ingestion of `batch` is about to write the planes `keys`; call before writing
/// them. One statement, so each plane's advisory lock (the one a delete takes before removing
/// it) is held just while the claims commit; taken in key order, so two ingestions claiming
/// overlapping planes never wait on each other in a circle.
pub async fn claim_planes(db: impl PgExecutor<'_>, batch: Uuid, keys: &[&str]) -> sqlx::Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        r#"INSERT INTO plane_claims (batch_id, blob_key)
           SELECT $1, key FROM (
               SELECT key, pg_advisory_xact_lock(hashtextextended(key, 0))
               FROM (SELECT DISTINCT unnest($2::text[]) AS key ORDER BY 1) keys) locked
           ON CONFLICT DO NOTHING"#,
    )
    .bind(batch)
    .bind(keys)
    .execute(db)
    .await?;
    Ok(())
}

/// Drops a batch's claims: its items now reference the planes, or its ingestion failed.
pub async fn release_claims(db: impl PgExecutor<'_>, batch: Uuid) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("DELETE FROM plane_claims WHERE batch_id = $1 RETURNING blob_key")
        .bind(batch)
        .fetch_all(db)
        .await
}

/// Inside a transaction: locks the planes `keys` against new claims until the transaction ends,
/// and returns those nothing references, which the caller may remove before committing.
pub async fn lock_unreferenced(
    tx: &mut PgConnection,
    keys: &[String],
) -> sqlx::Result<Vec<String>> {
    // Locks are taken in key order, so two deletes sharing planes cannot deadlock; a claim
    // takes one lock only. The check is a second statement: a statement's snapshot is taken
    // when it starts, and the check must see claims committed while waiting for the locks.
    sqlx::query(
        r#"SELECT pg_advisory_xact_lock(hashtextextended(k, 0))
           FROM (SELECT DISTINCT k FROM unnest($1::text[]) AS k ORDER BY k) AS keys"#,
    )
    .bind(keys)
    .execute(&mut *tx)
    .await?;
    sqlx::query_scalar(
        r#"SELECT k FROM unnest($1::text[]) AS k
           WHERE NOT EXISTS (SELECT 1 FROM items WHERE blob_key = k)
             AND NOT EXISTS (SELECT 1 FROM plane_claims WHERE blob_key = k)"#,
    )
    .bind(keys)
    .fetch_all(&mut *tx)
    .await
}
