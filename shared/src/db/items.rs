//! `items`: one row per archive entry that was an image, with its status machine:
//! queued → running → succeeded | failed, queued → cancelled, or rejected at ingestion.

use chrono::{DateTime, Utc};
use std::borrow::Cow;

use sqlx::{PgConnection, PgExecutor};
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

/// `items`' columns as ingestion writes them, in [`copy_row`]'s order.
const COPY_ITEMS: &str = "COPY items (id, batch_id, entry_index, entry_name, sha256, blob_key, byte_size, \
     status, error_code, error_message, warnings) FROM STDIN";

/// Appends `item` to `out` as one line of `COPY`'s text format, the form [`copy_in`] reads.
/// Ingestion spools its items this way, so memory holds a group of them whatever the batch's size.
pub fn copy_row(out: &mut Vec<u8>, batch_id: Uuid, item: &NewItem) {
    let fields: [Option<Cow<'_, str>>; 11] = [
        Some(item.id.to_string().into()),
        Some(batch_id.to_string().into()),
        Some(item.entry_index.to_string().into()),
        Some(item.entry_name.as_str().into()),
        item.sha256.as_deref().map(Cow::from),
        item.blob_key.as_deref().map(Cow::from),
        item.byte_size.map(|b| b.to_string().into()),
        Some(item.status.as_str().into()),
        item.error_code.as_deref().map(Cow::from),
        item.error_message.as_deref().map(Cow::from),
        Some(item.warnings.to_string().into()),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match field {
            None => out.extend_from_slice(b"\\N"),
            Some(text) => {
                for b in text.bytes() {
                    match b {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        _ => out.push(b),
                    }
                }
            }
        }
    }
    out.push(b'\n');
}

/// Copies the rows [`copy_row`] wrote to `rows` into `items` in one statement, however many
/// there are, and stamps the rejected ones finished. Returns how many were copied.
pub async fn copy_in(
    conn: &mut PgConnection,
    batch_id: Uuid,
    rows: impl tokio::io::AsyncRead + Unpin,
) -> sqlx::Result<u64> {
    let mut copy = conn.copy_in_raw(COPY_ITEMS).await?;
    // On an error the copy is dropped, which fails it on the server.
    copy.read_from(rows).await?;
    let copied = copy.finish().await?;
    sqlx::query(
        "UPDATE items SET finished_at = now() WHERE batch_id = $1 AND status = 'rejected' AND finished_at IS NULL",
    )
    .bind(batch_id)
    .execute(&mut *conn)
    .await?;
    Ok(copied)
}

/// A page of a batch's queued items after `after` in archive order: (entry index, id, plane).
/// Ingestion pushes their jobs page by page once the batch is open.
pub async fn queued_page(
    db: impl PgExecutor<'_>,
    batch_id: Uuid,
    after: i32,
    limit: i64,
) -> sqlx::Result<Vec<(i32, Uuid, String)>> {
    entry_page(
        db,
        r#"SELECT entry_index, id, blob_key FROM items
           WHERE batch_id = $1 AND entry_index > $2 AND status = 'queued' AND blob_key IS NOT NULL
           ORDER BY entry_index LIMIT $3"#,
        (batch_id, after, limit),
    )
    .await
}

/// Runs a query for a page of one batch's items in entry order, bound to (`$1` the batch,
/// `$2` the entry the page starts after, `$3` its length).
async fn entry_page<T>(
    db: impl PgExecutor<'_>,
    sql: &'static str,
    (batch_id, after, limit): (Uuid, i32, i64),
) -> sqlx::Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sql)
        .bind(batch_id)
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await
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

/// One item a worker is about to run. A `fresh` claim is a new delivery of its job and counts
/// as an attempt; a worker taking the item up again after waiting out an outage is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimRequest {
    pub batch_id: Uuid,
    pub item_id: Uuid,
    pub fresh: bool,
}

/// Claims a group's items that are still open: arrays of their ids, batch ids and whether each
/// claim is a fresh attempt (1) or the same attempt again (0), and the worker's id. Public so
/// that the plan tests run the statement itself.
pub const CLAIM_ITEMS: &str = r#"WITH locked AS MATERIALIZED (
        SELECT id FROM batches WHERE id = ANY($2) ORDER BY id FOR NO KEY UPDATE
    ), wanted AS (
        SELECT DISTINCT ON (id) id, batch_id, fresh
        FROM unnest($1::uuid[], $2::uuid[], $3::int4[]) WITH ORDINALITY AS w(id, batch_id, fresh, n)
        ORDER BY id, n
    )
    UPDATE items SET status = 'running', attempts = items.attempts + w.fresh,
           open_claims = items.open_claims + w.fresh, worker_id = $4,
           started_at = COALESCE(items.started_at, now())
    FROM wanted w JOIN locked ON locked.id = w.batch_id
    WHERE items.id = w.id AND items.batch_id IS NOT DISTINCT FROM w.batch_id AND items.id = ANY($1)
      AND items.status IN ('queued', 'running')
    RETURNING items.id, items.entry_name, items.queued_at, items.attempts, items.open_claims"#;

/// Marks items running, in one statement; answers, in their order, `None` for an item that must
/// not run: it was cancelled, it already has its final outcome (a duplicate delivery), or it is
/// named twice (only the first runs). Locks the items' batches first, in id order, as every
/// writer of items does (their counts change).
pub async fn claim_all(
    db: impl PgExecutor<'_>,
    requests: &[ClaimRequest],
    worker: &str,
) -> sqlx::Result<Vec<Option<Claim>>> {
    let (items, fresh): (Vec<Uuid>, Vec<i32>) = requests
        .iter()
        .map(|r| (r.item_id, i32::from(r.fresh)))
        .unzip();
    let batches: Vec<Uuid> = requests.iter().map(|r| r.batch_id).collect();
    // The CTE is materialised, so each batch is locked before any of its items. The items are
    // reached by key only (`items.id = ANY($1)` repeats the join; the batch is matched with
    // `IS NOT DISTINCT FROM`, which no index serves): see `outcome::record_all`.
    let claimed: Vec<ClaimRow> = sqlx::query_as(CLAIM_ITEMS)
        .bind(&items)
        .bind(&batches)
        .bind(&fresh)
        .bind(worker)
        .fetch_all(db)
        .await?;
    let mut claimed: std::collections::HashMap<Uuid, Claim> =
        claimed.into_iter().map(|r| (r.id, r.claim)).collect();
    Ok(items.iter().map(|id| claimed.remove(id)).collect())
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    id: Uuid,
    #[sqlx(flatten)]
    claim: Claim,
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
/// Its status test is written as `items_open_idx`'s predicate (see `0011_open_items_index.sql`).
pub async fn open_before(
    db: impl PgExecutor<'_>,
    older_than: std::time::Duration,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<OpenItem>> {
    sqlx::query_as(
        r#"SELECT i.id, i.batch_id, i.blob_key, i.queued_at, b.model_name, b.method, b.labels, b.faithfulness
           FROM items i JOIN batches b ON b.id = i.batch_id
           WHERE (i.status IN ('queued', 'running')) IS TRUE AND i.blob_key IS NOT NULL
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

/// Of `ids`, those still open (queued or running).
pub async fn still_open(db: impl PgExecutor<'_>, ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM items WHERE id = ANY($1) AND (status IN ('queued', 'running')) IS TRUE",
    )
    .bind(ids)
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
    entry_page(
        db,
        r#"SELECT id, entry_index, entry_name, status, error_code, error_message, warnings
           FROM items
           WHERE batch_id = $1 AND entry_index > $2
             AND (status IN ('rejected', 'failed') OR warnings <> '[]'::jsonb)
           ORDER BY entry_index LIMIT $3"#,
        (batch_id, after, limit),
    )
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
