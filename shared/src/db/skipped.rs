//! `skipped_entries`: the entries of an archive that were passed over, so that the report
//! accounts for every entry by name.

use sqlx::{PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

/// Why an entry was passed over.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    sqlx::Type,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Clutter an archiver adds: `__MACOSX/`, `.DS_Store`, `Thumbs.db`, dot-files.
    SystemFile,
    /// Bytes that are no image format xcam reads (text, PDFs, …).
    NotAnImage,
}

#[derive(Debug, Clone)]
pub struct NewSkipped {
    pub entry_index: i32,
    /// As stored: pseudonymised when the batch's names are.
    pub entry_name: String,
    pub reason: SkipReason,
}

pub async fn insert_all(
    conn: &mut sqlx::PgConnection,
    batch_id: Uuid,
    skipped: &[NewSkipped],
) -> sqlx::Result<()> {
    for chunk in skipped.chunks(1000) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO skipped_entries (batch_id, entry_index, entry_name, reason) ",
        );
        q.push_values(chunk, |mut row, s| {
            row.push_bind(batch_id)
                .push_bind(s.entry_index)
                .push_bind(&s.entry_name)
                .push_bind(s.reason);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SkippedRecord {
    pub entry_index: i32,
    pub entry_name: String,
    pub reason: SkipReason,
}

/// Up to `limit` skipped entries after entry `after`, in entry order.
pub async fn page(
    db: impl PgExecutor<'_>,
    batch_id: Uuid,
    after: i32,
    limit: i64,
) -> sqlx::Result<Vec<SkippedRecord>> {
    sqlx::query_as(
        r#"SELECT entry_index, entry_name, reason FROM skipped_entries
           WHERE batch_id = $1 AND entry_index > $2 ORDER BY entry_index LIMIT $3"#,
    )
    .bind(batch_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// How many entries were skipped for each reason.
pub async fn by_reason(
    db: impl PgExecutor<'_>,
    batch_id: Uuid,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT reason, count(*) FROM skipped_entries WHERE batch_id = $1 GROUP BY reason ORDER BY reason",
    )
    .bind(batch_id)
    .fetch_all(db)
    .await
}
