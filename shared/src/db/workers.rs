//! The `workers` table: one row per worker process start, kept fresh by heartbeats.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// A worker as the fleet view shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRecord {
    pub id: String,
    pub host: String,
    pub pid: i32,
    pub device: String,
    pub models: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub jobs_done: i64,
    pub jobs_failed: i64,
}

/// Records a worker's start (or refreshes it, should the same id register again).
pub async fn register(
    db: impl PgExecutor<'_>,
    id: &str,
    host: &str,
    pid: i32,
    device: &str,
    models: &[String],
) -> sqlx::Result<()> {
    sqlx::query(
        r#"INSERT INTO workers (id, host, pid, device, models)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (id) DO UPDATE
             SET host = EXCLUDED.host, pid = EXCLUDED.pid, device = EXCLUDED.device,
                 models = EXCLUDED.models, last_seen = now(), stopped_at = NULL"#,
    )
    .bind(id)
    .bind(host)
    .bind(pid)
    .bind(device)
    .bind(models)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks the worker alive now.
pub async fn heartbeat(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE workers SET last_seen = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Counts one finished job against the worker.
pub async fn count_job(db: impl PgExecutor<'_>, id: &str, succeeded: bool) -> sqlx::Result<()> {
    sqlx::query(
        r#"UPDATE workers
           SET jobs_done = jobs_done + $2::int, jobs_failed = jobs_failed + (1 - $2::int), last_seen = now()
           WHERE id = $1"#,
    )
    .bind(id)
    .bind(i32::from(succeeded))
    .execute(db)
    .await?;
    Ok(())
}

/// Marks a clean shutdown.
pub async fn stopped(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE workers SET stopped_at = now(), last_seen = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Workers seen within `within`, newest first.
pub async fn live(
    db: impl PgExecutor<'_>,
    within: std::time::Duration,
) -> sqlx::Result<Vec<WorkerRecord>> {
    sqlx::query_as::<_, WorkerRecord>(
        r#"SELECT id, host, pid, device, models, started_at, last_seen, stopped_at, jobs_done, jobs_failed
           FROM workers
           WHERE stopped_at IS NULL AND last_seen > now() - make_interval(secs => $1)
           ORDER BY last_seen DESC"#,
    )
    .bind(within.as_secs_f64())
    .fetch_all(db)
    .await
}
