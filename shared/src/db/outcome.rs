//! Items' outcomes: each one's result (when it succeeded), final status and attempt's log row,
//! with its batch's status and the worker's counters, written in one transaction, so no failure
//! can leave some of them written and the rest not. A worker records the outcomes of a dynamic
//! batch together: one multi-row statement per table, whatever the group's size.
//!
//! The batch rows are locked first, in id order. That orders the writes of one batch's outcomes
//! (each sees every outcome committed before it, so the last one ends the batch), and takes locks
//! in the order a delete takes them (batch, then items), so the two never wait on each other in a
//! circle.

use std::collections::{BTreeMap, HashSet};

use sqlx::{PgPool, Postgres, QueryBuilder, types::Json};
use uuid::Uuid;

use crate::{
    db::{batches, logs, logs::NewLogEntry, results, results::NewResult, workers},
    imaging::Warning,
    status::{ItemStatus, LogStatus},
};

/// What happened to one item, as a worker records it once it is done with it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Present when the item succeeded.
    pub result: Option<NewResult>,
    /// Its log row; `status`, `error_code` and `error_message` say how the attempt ended.
    pub log: NewLogEntry,
    /// Warnings the model adds to those of ingestion (`out_of_distribution`).
    pub warnings: Vec<Warning>,
}

impl Outcome {
    fn item_status(&self) -> ItemStatus {
        match self.log.status {
            LogStatus::Succeeded => ItemStatus::Succeeded,
            _ => ItemStatus::Failed,
        }
    }
}

/// Whether [`record_all`] wrote an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Written,
    /// The item had its outcome already (a duplicate delivery), or is gone (its batch was
    /// deleted or cancelled before it started): nothing was written.
    Nothing,
}

/// Records `outcomes` in one transaction; says, in their order, which were written. An item
/// named twice is written once, by its first outcome.
pub async fn record_all(db: &PgPool, outcomes: &[Outcome]) -> sqlx::Result<Vec<Recorded>> {
    let mut seen = HashSet::new();
    let firsts: Vec<bool> = outcomes
        .iter()
        .map(|o| seen.insert(o.log.item_id))
        .collect();
    let batch_ids: Vec<Uuid> = outcomes.iter().map(|o| o.log.batch_id).collect();
    let mut tx = db.begin().await?;
    let live = batches::lock_all(&mut tx, &batch_ids).await?;
    let open: Vec<&Outcome> = outcomes
        .iter()
        .zip(&firsts)
        .filter(|(o, first)| **first && live.contains(&o.log.batch_id))
        .map(|(o, _)| o)
        .collect();
    if open.is_empty() {
        return Ok(vec![Recorded::Nothing; outcomes.len()]);
    }
    // Only items still open take an outcome: one already finished was a duplicate delivery.
    let mut finish = QueryBuilder::<Postgres>::new(
        "UPDATE items SET status = v.status, error_code = v.error_code, \
         error_message = v.error_message, worker_id = v.worker_id, finished_at = now(), \
         open_claims = 0, warnings = items.warnings || v.warnings FROM (",
    );
    finish.push_values(&open, |mut row, o| {
        row.push_bind(o.log.item_id)
            .push_bind(o.log.batch_id)
            .push_bind(o.item_status())
            .push_bind(o.log.error_code)
            .push_bind(&o.log.error_message)
            .push_bind(&o.log.worker_id)
            .push_bind(Json(&o.warnings));
    });
    // `items.id = ANY(..)` repeats the join so that the planner always has the primary key to
    // reach the items by. Until autovacuum analyses a freshly ingested batch, the statistics say
    // almost no item is open; the planner then put items on the outer side of a nested loop,
    // reached through their open status (every open item of the batch), and scanned the group
    // once per open item: 87 ms a group in an 8 000-image batch, growing with the batch, and the
    // batch's lock held all the while.
    let ids: Vec<Uuid> = open.iter().map(|o| o.log.item_id).collect();
    finish.push(
        ") AS v (id, batch_id, status, error_code, error_message, worker_id, warnings) \
         WHERE items.id = v.id AND items.batch_id = v.batch_id AND items.id = ANY(",
    );
    finish.push_bind(ids).push(
        ") AND items.status IN ('queued', 'running') \
         RETURNING items.id",
    );
    let finished: HashSet<Uuid> = finish
        .build_query_scalar()
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    if finished.is_empty() {
        return Ok(vec![Recorded::Nothing; outcomes.len()]);
    }
    let written: Vec<&Outcome> = open
        .into_iter()
        .filter(|o| finished.contains(&o.log.item_id))
        .collect();
    let new_results: Vec<&NewResult> = written.iter().filter_map(|o| o.result.as_ref()).collect();
    results::upsert_all(&mut tx, &new_results).await?;
    let entries: Vec<&NewLogEntry> = written.iter().map(|o| &o.log).collect();
    logs::insert_all(&mut *tx, &entries).await?;
    batches::refresh_all(&mut *tx, &live).await?;
    // (succeeded, failed) per worker: one worker's in practice.
    let mut counts: BTreeMap<&str, (i32, i32)> = BTreeMap::new();
    for o in &written {
        let count = counts.entry(&o.log.worker_id).or_default();
        match o.item_status() {
            ItemStatus::Succeeded => count.0 += 1,
            _ => count.1 += 1,
        }
    }
    for (worker, (succeeded, failed)) in counts {
        workers::count_jobs(&mut *tx, worker, succeeded, failed).await?;
    }
    tx.commit().await?;
    Ok(outcomes
        .iter()
        .zip(&firsts)
        .map(|(o, first)| {
            if *first && finished.contains(&o.log.item_id) {
                Recorded::Written
            } else {
                Recorded::Nothing
            }
        })
        .collect())
}

/// Logs an attempt that failed for a reason that may pass; the queue tries the item again. The
/// attempt was settled (its worker lived to say so), so it does not count towards a crash loop.
pub async fn retrying(db: &PgPool, log: &NewLogEntry) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    logs::insert_all(&mut *tx, &[log]).await?;
    sqlx::query("UPDATE items SET open_claims = 0 WHERE id = $1 AND status = 'running'")
        .bind(log.item_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
