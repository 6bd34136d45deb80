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

use sqlx::{PgPool, types::Json};
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

/// Finishes a group's items that are still open and returns their ids: arrays of their ids,
/// batch ids, statuses, error codes, error messages, worker ids and the warnings each adds.
/// Public so that the plan tests run the statement itself.
pub const FINISH_ITEMS: &str = "UPDATE items SET status = v.status, error_code = v.error_code, \
     error_message = v.error_message, worker_id = v.worker_id, finished_at = now(), \
     open_claims = 0, warnings = items.warnings || v.warnings \
     FROM (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
                                $6::text[], $7::jsonb[]) \
               AS u (id, batch_id, status, error_code, error_message, worker_id, warnings) \
           ORDER BY id) AS v \
     WHERE items.id = v.id AND items.batch_id IS NOT DISTINCT FROM v.batch_id AND items.id = ANY($1) \
       AND items.status IN ('queued', 'running') \
     RETURNING items.id";

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
    //
    // The group comes as one array a column, so the statement's text is the same whatever the
    // group's size ([`FINISH_ITEMS`]). Until autovacuum analyses a freshly ingested batch, the
    // statistics say almost no item is open, and the planner reached the items through their open
    // status — every open item of the batch, through `items_open_idx` or the batch's own
    // `(batch_id, status)` index, once for each item of the group: 87 ms a group in an 8 000-image
    // batch, 100 ms for 64 items of a 20 000-item one, the batch's lock held all the while. So the
    // items are reached by key only: `items.id = ANY($1)` repeats the join, and the batch is
    // matched with `IS NOT DISTINCT FROM`, which no index serves. The group is sorted by key, so
    // the planner merges it with the items in the order the key's index returns them: with the
    // items first in a nested loop it was read again for each item (a row of VALUES
    // re-evaluating its seven parameters each time), 2.2 of the 4.1 ms a 62-item group took.
    let ids: Vec<Uuid> = open.iter().map(|o| o.log.item_id).collect();
    let their_batches: Vec<Uuid> = open.iter().map(|o| o.log.batch_id).collect();
    let statuses: Vec<&str> = open.iter().map(|o| o.item_status().as_str()).collect();
    let codes: Vec<Option<&str>> = open.iter().map(|o| o.log.error_code).collect();
    let messages: Vec<Option<&str>> = open
        .iter()
        .map(|o| o.log.error_message.as_deref())
        .collect();
    let workers: Vec<&str> = open.iter().map(|o| o.log.worker_id.as_str()).collect();
    let warnings: Vec<Json<&[Warning]>> = open.iter().map(|o| Json(&o.warnings[..])).collect();
    let finish = sqlx::query_scalar(FINISH_ITEMS)
        .bind(&ids)
        .bind(&their_batches)
        .bind(&statuses)
        .bind(&codes)
        .bind(&messages)
        .bind(&workers)
        .bind(&warnings);
    let finished: HashSet<Uuid> = finish.fetch_all(&mut *tx).await?.into_iter().collect();
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
