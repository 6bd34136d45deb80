//! Postgres and Redis cannot be written atomically together. Items are committed as `queued`
//! first and pushed second, so a crash in between, or a Redis that lost its data, leaves items
//! with no job. The reconciler finds them and pushes them again; since the task id is the item
//! id, an item whose job is still in Redis is never duplicated.

use std::time::Duration;

use xcam_shared::{
    db,
    jobs::{self, GradCamJobV1},
};

use crate::{ingest, state::AppState};

/// Most items looked at per pass.
const SCAN_LIMIT: i64 = 5_000;

/// Runs passes forever, every `every`.
pub async fn run(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pass(&state, every).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(repushed = n, "reconciler re-pushed jobs missing from Redis"),
            Err(e) => tracing::warn!(error = %e, "reconciler pass failed"),
        }
    }
}

/// One pass: re-pushes every open item older than `grace` whose job Redis does not hold.
pub async fn pass(state: &AppState, grace: Duration) -> anyhow::Result<usize> {
    let open = db::items::open_before(&state.db, grace, SCAN_LIMIT).await?;
    if open.is_empty() {
        return Ok(0);
    }
    let mut redis = state.redis.clone();
    let mut pipe = redis::pipe();
    for (item, _, _, model, ..) in &open {
        let queue = jobs::queue_name(&state.settings.queue_prefix, model);
        pipe.hexists(
            jobs::queue_config(&queue, state.settings.queue_tuning).job_data_hash(),
            item.to_string(),
        );
    }
    let present: Vec<bool> = pipe.query_async(&mut redis).await?;
    let missing: Vec<GradCamJobV1> = open
        .into_iter()
        .zip(present)
        .filter(|(_, present)| !present)
        .map(
            |((item_id, batch_id, blob_key, model, method, labels, _), _)| GradCamJobV1 {
                batch_id,
                item_id,
                blob_key,
                model,
                method,
                labels,
                request_id: None,
            },
        )
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    ingest::enqueue(state, missing).await
}
