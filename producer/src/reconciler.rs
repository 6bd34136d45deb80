//! Postgres and Redis cannot be written atomically together. Items are committed as `queued`
//! first and pushed second, so a crash in between, or a Redis that lost its data, leaves items
//! with no job. The reconciler finds them and pushes them again; since the task id is the item
//! id, an item whose job is still in Redis is never duplicated.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use xcam_shared::{db, jobs::GradCamJobV1};

use crate::queue::Queue;

/// Most items looked at per pass.
const SCAN_LIMIT: i64 = 5_000;

/// Runs a pass every `every` until `stop` is cancelled.
pub async fn run(db: PgPool, queue: Queue, every: Duration, stop: CancellationToken) {
    crate::periodic::every(every, stop, || async {
        match pass(&db, &queue, every).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(repushed = n, "reconciler re-pushed jobs missing from Redis"),
            Err(e) => tracing::warn!(error = %e, "reconciler pass failed"),
        }
    })
    .await;
}

/// One pass: re-pushes every open item older than `grace` whose job Redis does not hold.
pub async fn pass(db: &PgPool, queue: &Queue, grace: Duration) -> anyhow::Result<usize> {
    let open = db::items::open_before(db, grace, SCAN_LIMIT).await?;
    if open.is_empty() {
        return Ok(0);
    }
    let keys: Vec<_> = open.iter().map(|o| (o.model_name.clone(), o.id)).collect();
    let present = queue.holds(&keys).await?;
    let missing: Vec<GradCamJobV1> = open
        .into_iter()
        .zip(present)
        .filter(|(_, present)| !present)
        .filter_map(|(o, _)| {
            Some(GradCamJobV1 {
                batch_id: o.batch_id,
                item_id: o.id,
                blob_key: o.blob_key,
                model: o.model_name,
                method: o.method.parse().ok()?,
                labels: o.labels.parse().ok()?,
                request_id: None,
            })
        })
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    queue.push(missing).await
}
