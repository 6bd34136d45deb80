//! Keeping no more than must be kept. Every `XCAM_SWEEP_EVERY`, each producer:
//!
//! - forgets finished jobs in Redis (data, metadata, ids), so Redis holds only work in flight;
//!   jobs apalis gave up on leave its dead set the same way, and the reconciler pushes their
//!   still-open items again;
//! - finishes deletes an outage interrupted after their rows were gone;
//! - fails, with `ingestion_interrupted`, batches whose ingesting producer stopped heartbeating
//!   (killed mid-ingestion), and removes the planes their ingestion had stored;
//! - deletes finished batches past their retention (`XCAM_RETENTION`, or the project's own)
//!   through the same path as `DELETE /v1/batches/{id}`, one batch per transaction;
//! - makes the inference log's day partitions a week ahead, and prunes stats rollups older than
//!   `/v1/stats` can ask for;
//! - deletes inference-log rows past `XCAM_LOG_RETENTION`: whole days by dropping their
//!   partitions, the rest of the oldest day a few thousand rows per transaction.
//!
//! One producer sweeps at a time (the sweeper's lease, see `db::leases`); every step is also
//! idempotent, so a pass cut short is finished by the next.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use xcam_shared::{
    access::{Action, Outcome},
    db::{self, audit::NewAuditEntry},
};

use crate::{api::StatsBucket, erase::Eraser};

/// Batches expired per pass; the rest wait for the next.
const BATCHES_PER_PASS: i64 = 100;
/// Days of log partitions kept made ahead of time.
const LOG_PARTITIONS_AHEAD_DAYS: u32 = 7;
/// Log rows deleted per transaction.
const LOG_ROWS_PER_DELETE: i64 = 5_000;
/// An erasure this old was interrupted, not merely in progress.
const INTERRUPTED_AFTER: Duration = Duration::from_secs(60);
/// What the audit trail names as the actor of a retention delete.
const RETENTION_ACTOR: &str = "retention";

/// How long things are kept.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    /// Finished batches, unless their project says otherwise; `None`: until deleted.
    pub batches: Option<Duration>,
    /// Inference-log rows; `None`: for ever.
    pub log: Option<Duration>,
}

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub finished_jobs: u64,
    pub dead_jobs: u64,
    pub resumed_erasures: u64,
    pub interrupted_ingestions: u64,
    pub expired_batches: u64,
    pub log_rows: u64,
}

#[derive(Clone)]
pub struct Sweeper {
    pub eraser: Eraser,
    pub models: Vec<String>,
    pub retention: Retention,
    /// A producer silent this long is presumed dead, and its ingestions with it.
    pub producers_silent_after: Duration,
}

impl Sweeper {
    /// Sweeps every `every` until `stop` is cancelled.
    /// Passes every `every`, by one producer at a time (`leases`: see `db::leases`).
    pub async fn run(self, every: Duration, leases: sqlx::PgPool, stop: CancellationToken) {
        crate::periodic::every_exclusively(every, stop, leases, "sweeper", || async {
            let swept = self.pass().await;
            if swept.expired_batches
                + swept.log_rows
                + swept.resumed_erasures
                + swept.interrupted_ingestions
                > 0
            {
                tracing::info!(?swept, "sweep removed expired data");
            }
        })
        .await;
    }

    /// One pass. A step that fails is logged and retried next pass; the others still run.
    pub async fn pass(&self) -> Swept {
        let mut swept = Swept::default();
        for model in &self.models {
            let queue = self.eraser.queue.name(model);
            if let Err(e) = self.eraser.queue.promote(&queue).await {
                tracing::warn!(%model, error = %e, "moving due jobs to the active list failed");
            }
            match self.eraser.queue.sweep(model).await {
                Ok(s) => {
                    swept.finished_jobs += s.done;
                    swept.dead_jobs += s.dead;
                }
                Err(e) => tracing::warn!(%model, error = %e, "forgetting finished jobs failed"),
            }
        }
        metrics::counter!("xcam_redis_jobs_forgotten_total", "set" => "done")
            .increment(swept.finished_jobs);
        metrics::counter!("xcam_redis_jobs_forgotten_total", "set" => "dead")
            .increment(swept.dead_jobs);
        if swept.dead_jobs > 0 {
            tracing::warn!(
                jobs = swept.dead_jobs,
                "jobs the queue gave up on were dropped; their open items will be pushed again"
            );
        }

        match self.eraser.resume(INTERRUPTED_AFTER).await {
            Ok(n) => swept.resumed_erasures = n as u64,
            Err(e) => tracing::warn!(error = %e, "finishing interrupted deletes failed"),
        }

        let silent = db::producers::Interrupted::Silent(self.producers_silent_after);
        match interrupt_ingestions(&self.eraser, silent).await {
            Ok(n) => swept.interrupted_ingestions = n,
            Err(e) => tracing::warn!(error = %e, "ending interrupted ingestions failed"),
        }

        match self.expire_batches().await {
            Ok(n) => swept.expired_batches = n,
            Err(e) => tracing::warn!(error = %e, "applying batch retention failed"),
        }
        metrics::counter!("xcam_retention_batches_deleted_total").increment(swept.expired_batches);

        if let Err(e) = self.keep_log_ready().await {
            tracing::warn!(error = %e, "preparing the inference log's partitions failed");
        }

        if let Some(age) = self.retention.log {
            match self.expire_log(age).await {
                Ok(n) => swept.log_rows = n,
                Err(e) => tracing::warn!(error = %e, "applying log retention failed"),
            }
        }
        metrics::counter!("xcam_retention_log_rows_deleted_total").increment(swept.log_rows);
        swept
    }

    /// Partitions for the days ahead, and rollups only as far back as stats look.
    async fn keep_log_ready(&self) -> anyhow::Result<()> {
        let db = &self.eraser.db;
        db::logs::prepare_partitions(db, LOG_PARTITIONS_AHEAD_DAYS).await?;
        let hour = StatsBucket::Hour.longest_range() + chrono::Duration::days(1);
        let day = StatsBucket::Day.longest_range() + chrono::Duration::days(1);
        db::logs::prune_rollups(db, hour, day).await?;
        Ok(())
    }

    async fn expire_batches(&self) -> anyhow::Result<u64> {
        let db = &self.eraser.db;
        let expired = db::batches::expired(db, self.retention.batches, BATCHES_PER_PASS).await?;
        let mut deleted = 0;
        for (batch, project) in expired {
            let Some(erased) = self.eraser.delete_batch(batch).await? else {
                continue;
            };
            deleted += 1;
            tracing::info!(%batch, %project, items = erased.items, planes = erased.planes, "batch expired and deleted");
            db::audit::append(
                db,
                &NewAuditEntry {
                    token_name: Some(RETENTION_ACTOR),
                    role: None,
                    action: Action::Delete,
                    project: Some(&project),
                    batch_id: Some(batch),
                    item_id: None,
                    client: None,
                    outcome: Outcome::Ok,
                    status: None,
                    detail: Some("past its retention period"),
                },
            )
            .await?;
        }
        Ok(deleted)
    }

    async fn expire_log(&self, age: Duration) -> anyhow::Result<u64> {
        // Whole days go with their partitions; what is left of the oldest day, row by row.
        let mut total = db::logs::drop_partitions_before(&self.eraser.db, age).await?;
        loop {
            let n = db::logs::delete_before(&self.eraser.db, age, LOG_ROWS_PER_DELETE).await?;
            total += n;
            if n < LOG_ROWS_PER_DELETE as u64 {
                return Ok(total);
            }
        }
    }
}

/// Fails the ingestions `whose` names with `ingestion_interrupted` and removes the planes they
/// had stored that nothing else references. Returns how many batches it ended.
pub async fn interrupt_ingestions(
    eraser: &Eraser,
    whose: db::producers::Interrupted<'_>,
) -> anyhow::Result<u64> {
    let batches = db::producers::interrupt(&eraser.db, whose).await?;
    for &batch in &batches {
        let planes = crate::erase::drop_ingestion(&eraser.db, &eraser.blobs, batch).await?;
        tracing::warn!(%batch, planes, "an ingestion was interrupted: its producer stopped before it finished");
    }
    Ok(batches.len() as u64)
}
