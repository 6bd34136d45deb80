//! An item's outcome: its result (when it succeeded), its final status, the attempt's log row,
//! the batch's status and the worker's counters, written in one transaction, so no failure can
//! leave some of them written and the rest not.
//!
//! The batch row is locked first. That orders the writes of one batch's outcomes (each sees every
//! outcome committed before it, so the last one ends the batch), and takes locks in the order a
//! delete takes them (batch, then items), so the two never wait on each other in a circle.

use sqlx::{PgPool, types::Json};

use crate::{
    db::{batches, logs, logs::NewLogEntry, results, results::NewResult, workers},
    imaging::Warning,
    status::{ItemStatus, LogStatus},
};

/// What happened to one item, as a worker records it once it is done with it.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// Present when the item succeeded.
    pub result: Option<NewResult<'a>>,
    /// Its log row; `status`, `error_code` and `error_message` say how the attempt ended.
    pub log: NewLogEntry<'a>,
    /// Warnings the model adds to those of ingestion (`out_of_distribution`).
    pub warnings: Vec<Warning>,
}

/// Whether [`record`] wrote anything.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    Written,
    /// The item had its outcome already (a duplicate delivery), or is gone (its batch was
    /// deleted or cancelled before it started): nothing was written.
    Nothing,
}

pub async fn record(db: &PgPool, outcome: &Outcome<'_>) -> sqlx::Result<Recorded> {
    let log = &outcome.log;
    let status = match log.status {
        LogStatus::Succeeded => ItemStatus::Succeeded,
        _ => ItemStatus::Failed,
    };
    let mut tx = db.begin().await?;
    if batches::lock(&mut tx, log.batch_id).await?.is_none() {
        return Ok(Recorded::Nothing);
    }
    let error = log.error_code.zip(log.error_message);
    let finished = sqlx::query(
        r#"UPDATE items SET status = $2, error_code = $3, error_message = $4, worker_id = $5,
                  finished_at = now(), open_claims = 0, warnings = warnings || $6
           WHERE id = $1 AND status IN ('queued', 'running')"#,
    )
    .bind(log.item_id)
    .bind(status)
    .bind(error.map(|e| e.0))
    .bind(error.map(|e| e.1))
    .bind(log.worker_id)
    .bind(Json(&outcome.warnings))
    .execute(&mut *tx)
    .await?;
    if finished.rows_affected() == 0 {
        return Ok(Recorded::Nothing);
    }
    if let Some(result) = &outcome.result {
        results::upsert(&mut *tx, result).await?;
    }
    logs::insert(&mut *tx, log).await?;
    batches::refresh(&mut *tx, log.batch_id).await?;
    workers::count_job(&mut *tx, log.worker_id, status == ItemStatus::Succeeded).await?;
    tx.commit().await?;
    Ok(Recorded::Written)
}

/// Logs an attempt that failed for a reason that may pass; the queue tries the item again. The
/// attempt was settled (its worker lived to say so), so it does not count towards a crash loop.
pub async fn retrying(db: &PgPool, log: &NewLogEntry<'_>) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    logs::insert(&mut *tx, log).await?;
    sqlx::query("UPDATE items SET open_claims = 0 WHERE id = $1 AND status = 'running'")
        .bind(log.item_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
