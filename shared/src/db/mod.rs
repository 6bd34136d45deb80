//! Postgres: the schema's migrations and every query xcam runs, as free functions per table.
//! All SQL binds its parameters; nothing user-supplied is ever formatted into a statement.

pub mod access;
pub mod audit;
pub mod batches;
pub mod erasure;
pub mod items;
pub mod leases;
pub mod logs;
pub mod outcome;
pub mod producers;
pub mod results;
pub mod retry;
pub mod skipped;
pub mod workers;

use anyhow::Context;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::{DatabaseArgs, SERVICES_HINT, redact, required};

/// The schema, embedded in the binary. `xcam migrate` and `xcam serve` apply it; workers never do.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a session may sit idle inside a transaction before Postgres ends it.
pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "15s";

/// Opens the pool, failing with one line that names DATABASE_URL and how to start Postgres.
pub async fn connect(args: &DatabaseArgs) -> anyhow::Result<PgPool> {
    connect_sized(args, args.max_connections).await
}

/// [`connect`] with `max_connections` of this process's total.
pub async fn connect_sized(args: &DatabaseArgs, max_connections: u32) -> anyhow::Result<PgPool> {
    let url = required(&args.database_url, "DATABASE_URL", SERVICES_HINT)?;
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| anyhow::anyhow!("DATABASE_URL ({}) is not a Postgres URL: {e}", redact(url)))?
        // A host that vanishes mid-transaction (cut off, frozen) leaves its session idle in
        // that transaction, holding its row locks, until TCP gives up hours later; Postgres
        // ends such a session after this instead. xcam's transactions never wait on anything
        // but Postgres, so none is idle for long.
        .options([(
            "idle_in_transaction_session_timeout",
            IDLE_IN_TRANSACTION_TIMEOUT,
        )]);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(args.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(|e| {
            // The cause stays in the chain: a service waits out an outage (see `patience`).
            anyhow::Error::new(e).context(format!(
                "cannot reach Postgres at DATABASE_URL ({}); {SERVICES_HINT}",
                redact(url)
            ))
        })?;
    Ok(pool)
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying migrations failed")
}

/// Whether an error says Postgres is unavailable or refusing writes for now (down, restarting,
/// failing over, read-only, out of connections), rather than anything about the statement: the
/// caller should wait and try again, and must not hold it against the work it was doing.
pub fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exceptions; 53: out of resources; 57: operator intervention
            // (shutdown, crash recovery); 58: system errors; 25006: a read-only transaction (a
            // standby, a failover in progress); 40001/40P01: serialization failure and deadlock.
            let class = code.get(..2).unwrap_or_default();
            matches!(class, "08" | "53" | "57" | "58")
                || matches!(&*code, "25006" | "40001" | "40P01")
        }),
        _ => false,
    }
}
