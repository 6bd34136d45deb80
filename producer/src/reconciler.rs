//! Postgres and Redis cannot be written atomically together. Items are committed as `queued`
//! first and pushed second, so a crash in between, or a Redis that lost its data, leaves items
//! with no job; and apalis moves a job it gives up on (a timeout, a panic, its attempts spent)
//! to its dead set, which the sweeper empties. The reconciler finds open items whose job Redis
//! does not hold and pushes them again; since the task id is the item id, an item whose job is
//! still in Redis is never duplicated.
//!
//! Each pass looks at one page of open items and goes on from there the next time, so every
//! open item is looked at within a few passes however many there are.

use std::{collections::HashSet, sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use xcam_shared::{
    db::{self, items::OpenItem},
    jobs::GradCamJobV1,
};

use crate::queue::Queue;

/// Items looked at per pass.
pub const PAGE: i64 = 5_000;

pub struct Reconciler {
    pub db: PgPool,
    pub queue: Queue,
    /// How long a new item may go without a job (it is pushed right after it is committed).
    pub grace: Duration,
    page: i64,
    /// Where the next pass goes on from; `None`: from the oldest open item.
    after: Mutex<Option<(DateTime<Utc>, Uuid)>>,
}

impl Reconciler {
    pub fn new(db: PgPool, queue: Queue, grace: Duration) -> Self {
        Self {
            db,
            queue,
            grace,
            page: PAGE,
            after: Mutex::new(None),
        }
    }

    /// Looks at `page` items a pass.
    pub fn with_page(self, page: i64) -> Self {
        Self { page, ..self }
    }

    /// Runs a pass every `every` until `stop` is cancelled.
    /// Passes every `every`, by one producer at a time (`leases`: see `db::leases`).
    pub async fn run(self, every: Duration, leases: PgPool, stop: CancellationToken) {
        let this = &self;
        crate::periodic::every_exclusively(every, stop, leases, "reconciler", move || async move {
            match this.pass().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(repushed = n, "reconciler re-pushed jobs missing from Redis")
                }
                Err(e) => tracing::warn!(error = %e, "reconciler pass failed"),
            }
        })
        .await;
    }

    /// One pass over the next page: re-pushes every open item older than the grace whose job
    /// Redis does not hold. Returns how many it pushed.
    pub async fn pass(&self) -> anyhow::Result<usize> {
        let after = *self
            .after
            .lock()
            .expect("the cursor's lock is never poisoned");
        let open = db::items::open_before(&self.db, self.grace, after, self.page).await?;
        *self
            .after
            .lock()
            .expect("the cursor's lock is never poisoned") = if (open.len() as i64) < self.page {
            None
        } else {
            open.last().map(|o| o.key())
        };
        self.repush_missing(open).await
    }

    /// Pushes again the jobs of `open` (items read as open) that Redis does not hold.
    ///
    /// An item a worker finishes between the read and Redis's answer has no job any more either
    /// (the worker acknowledges it once its outcome is committed): those are read again, and
    /// only the ones still open are pushed. A job is missing only if its item is open after
    /// Redis said so.
    pub async fn repush_missing(&self, open: Vec<OpenItem>) -> anyhow::Result<usize> {
        if open.is_empty() {
            return Ok(0);
        }
        let keys: Vec<_> = open.iter().map(|o| (o.model_name.clone(), o.id)).collect();
        let present = self.queue.holds(&keys).await?;
        let absent: Vec<OpenItem> = open
            .into_iter()
            .zip(present)
            .filter_map(|(o, present)| (!present).then_some(o))
            .collect();
        if absent.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = absent.iter().map(|o| o.id).collect();
        let open_now: HashSet<Uuid> = db::items::still_open(&self.db, &ids)
            .await?
            .into_iter()
            .collect();
        let missing: Vec<GradCamJobV1> = absent
            .into_iter()
            .filter(|o| open_now.contains(&o.id))
            .filter_map(OpenItem::job)
            .collect();
        if missing.is_empty() {
            return Ok(0);
        }
        self.queue.push(missing).await
    }
}
