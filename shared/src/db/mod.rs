//! Postgres: the schema's migrations and every query xcam runs, as free functions per table.
//! All SQL binds its parameters; nothing user-supplied is ever formatted into a statement.

pub mod access;
pub mod audit;
pub mod batches;
pub mod erasure;
pub mod items;
pub mod logs;
pub mod results;
pub mod workers;

use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::config::{DatabaseArgs, SERVICES_HINT, redact, required};

/// The schema, embedded in the binary. `xcam migrate` and `xcam serve` apply it; workers never do.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens the pool, failing with one line that names DATABASE_URL and how to start Postgres.
pub async fn connect(args: &DatabaseArgs) -> anyhow::Result<PgPool> {
    let url = required(&args.database_url, "DATABASE_URL", SERVICES_HINT)?;
    let pool = PgPoolOptions::new()
        .max_connections(args.max_connections)
        .acquire_timeout(args.acquire_timeout)
        .connect(url)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach Postgres at DATABASE_URL ({}): {e}; {SERVICES_HINT}",
                redact(url)
            )
        })?;
    Ok(pool)
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| anyhow::anyhow!("applying migrations failed: {e}"))
}
