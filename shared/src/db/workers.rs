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
    pub clock_skew_ms: Option<f64>,
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

/// Marks the worker alive now, with how far its clock is off Postgres's.
pub async fn heartbeat(db: impl PgExecutor<'_>, id: &str, skew: ClockSkew) -> sqlx::Result<()> {
    sqlx::query("UPDATE workers SET last_seen = now(), clock_skew_ms = $2 WHERE id = $1")
        .bind(id)
        .bind(skew.millis())
        .execute(db)
        .await?;
    Ok(())
}

/// A local clock minus Postgres's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockSkew(pub chrono::Duration);

impl ClockSkew {
    /// Asks Postgres for its clock and sets it against the local clock at the middle of the
    /// round trip (off by at most half of it).
    pub async fn measure(db: impl PgExecutor<'_>) -> sqlx::Result<Self> {
        let before = Utc::now();
        let theirs: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(db)
            .await?;
        let after = Utc::now();
        Ok(Self::between(before, theirs, after))
    }

    fn between(before: DateTime<Utc>, theirs: DateTime<Utc>, after: DateTime<Utc>) -> Self {
        Self(before + (after - before) / 2 - theirs)
    }

    pub fn millis(self) -> f64 {
        self.0.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
    }

    /// Whether it is past `limit` either way.
    pub fn beyond(self, limit: std::time::Duration) -> bool {
        self.0.abs().to_std().is_ok_and(|skew| skew > limit)
    }
}

/// Counts finished jobs against the worker.
pub async fn count_jobs(
    db: impl PgExecutor<'_>,
    id: &str,
    succeeded: i32,
    failed: i32,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"UPDATE workers
           SET jobs_done = jobs_done + $2, jobs_failed = jobs_failed + $3, last_seen = now()
           WHERE id = $1"#,
    )
    .bind(id)
    .bind(succeeded)
    .bind(failed)
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
        r#"SELECT id, host, pid, device, models, started_at, last_seen, stopped_at, jobs_done, jobs_failed,
                  clock_skew_ms
           FROM workers
           WHERE stopped_at IS NULL AND last_seen > now() - make_interval(secs => $1)
           ORDER BY last_seen DESC"#,
    )
    .bind(within.as_secs_f64())
    .fetch_all(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_read_at_the_middle_of_the_round_trip() {
        let t = |ms: i64| DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000 + ms).unwrap();
        // Asked at 0, answered at 100: Postgres said 20 s later than our 50.
        let skew = ClockSkew::between(t(0), t(20_050), t(100));
        assert_eq!(skew.millis(), -20_000.0);
        assert!(skew.beyond(std::time::Duration::from_secs(5)));
        assert!(
            !ClockSkew::between(t(0), t(1_050), t(100)).beyond(std::time::Duration::from_secs(5))
        );
    }
}
