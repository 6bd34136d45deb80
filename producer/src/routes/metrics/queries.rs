//! The SQL behind `/metrics`. Each query reads only work in flight (open batches, live workers),
//! never the history, so a scrape costs the same with ten rows or ten million behind it.

use sqlx::PgExecutor;

/// Open batches (ingesting, queued, running) per model and status, with the items they hold
/// queued and running, from the counts each batch row keeps.
pub(super) async fn open_work(
    db: impl PgExecutor<'_>,
) -> sqlx::Result<Vec<(String, String, i64, i64, i64)>> {
    sqlx::query_as(
        r#"SELECT model_name, status, count(*), COALESCE(sum(items_queued), 0)::int8,
                  COALESCE(sum(items_running), 0)::int8
           FROM batches WHERE status IN ('ingesting', 'queued', 'running')
           GROUP BY 1, 2 ORDER BY 1, 2"#,
    )
    .fetch_all(db)
    .await
}
