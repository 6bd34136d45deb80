//! `producers`: the API processes alive, by heartbeat, and the ingestions they leave behind when
//! they die.

use std::time::Duration;

use sqlx::PgExecutor;
use uuid::Uuid;

pub async fn register(db: impl PgExecutor<'_>, id: &str, host: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO producers (id, host) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET last_seen = now()")
        .bind(id)
        .bind(host)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn heartbeat(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE producers SET last_seen = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// A clean stop.
pub async fn stopped(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM producers WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Whose ingestions [`interrupt`] ends.
#[derive(Debug, Clone, Copy)]
pub enum Interrupted<'a> {
    /// Those of producers not heard from for this long (or gone).
    Silent(Duration),
    /// This producer's own, when it stops before they finish.
    Own(&'a str),
}

/// Marks the matching batches still being ingested failed with `ingestion_interrupted`;
/// returns their ids. Their ingestion's final transaction checks the batch's status, so a
/// producer that was only slow writes nothing afterwards.
pub async fn interrupt(db: impl PgExecutor<'_>, whose: Interrupted<'_>) -> sqlx::Result<Vec<Uuid>> {
    let (own, silent) = match whose {
        Interrupted::Own(id) => (Some(id), None),
        Interrupted::Silent(after) => (None, Some(after.as_secs_f64())),
    };
    sqlx::query_scalar(
        r#"UPDATE batches b SET status = 'failed', error_code = 'ingestion_interrupted',
                  error_message = 'the server ingesting this archive stopped before it finished; upload it again',
                  finished_at = now(), updated_at = now()
           WHERE b.status = 'ingesting'
             AND CASE WHEN $1::text IS NOT NULL THEN b.ingested_by = $1
                      ELSE NOT EXISTS (SELECT 1 FROM producers p WHERE p.id = b.ingested_by
                                       AND p.last_seen > now() - make_interval(secs => $2)) END
           RETURNING b.id"#,
    )
    .bind(own)
    .bind(silent)
    .fetch_all(db)
    .await
}
