//! The job that travels through Redis (one per image), and the apalis queue set-up both sides use.
//!
//! Each model has its own queue, so a worker only takes work for models it has loaded.
//! Task ids are the item ids: pushing the same item twice is a no-op in apalis-redis
//! (`HSETNX` on the queue's data hash), which is what makes the reconciler's re-push safe.

use std::time::Duration;

use apalis_redis::{Config, ConnectionManager, RedisStorage};
use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManagerConfig},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    config::{RedisArgs, SERVICES_HINT, redact, required},
    targets::{Faithfulness, LabelSelection, Method},
};

/// One image to explain. New fields must carry `#[serde(default)]`: a payload that no longer
/// decodes would stop the worker that fetched it (apalis treats it as a backend error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradCamJobV1 {
    pub batch_id: Uuid,
    pub item_id: Uuid,
    /// Key of the image bytes in the blob store.
    pub blob_key: String,
    /// Model bundle name; also selects the queue.
    pub model: String,
    pub method: Method,
    pub labels: LabelSelection,
    /// Which faithfulness measures each map gets.
    #[serde(default)]
    pub faithfulness: Faithfulness,
    /// The upload request's id, so one id traces an image from upload to result.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// The queue for one model's jobs. No `:` in it: apalis-redis' pub/sub channel parser splits on it.
pub fn queue_name(prefix: &str, model: &str) -> String {
    format!("{prefix}.gradcam.{model}")
}

/// How quickly a dead worker's jobs go back to the queue, and how workers poll.
#[derive(Debug, Clone, Copy)]
pub struct QueueTuning {
    /// A worker that has not heartbeated for this long is presumed dead; its jobs are re-queued.
    pub orphan_after: Duration,
    /// How many job ids one fetch moves into a worker's in-flight set. Keep it close to the
    /// worker's concurrency: more would hoard jobs that idle peers could run.
    pub fetch_batch: usize,
}

impl Default for QueueTuning {
    fn default() -> Self {
        Self {
            orphan_after: Duration::from_secs(15),
            fetch_batch: 8,
        }
    }
}

/// apalis-redis' config for a queue, with the defaults that bite (300 s orphan window,
/// type-name queue names, leases) replaced.
///
/// No leases: apalis-redis 1.0 takes one for every job it starts with a script that runs
/// `LREM` over the whole waiting list (the job left it when it was fetched), so each start cost
/// Redis time in proportion to the backlog (0.8 ms a job behind 100 000, Redis busy 60 % of a
/// core), and the lease itself (a status and a time in the job's metadata) is read by nothing:
/// a dead worker's jobs are recovered from its in-flight set and its heartbeats.
pub fn queue_config(queue: &str, tuning: QueueTuning) -> Config {
    let heartbeat = (tuning.orphan_after / 3).max(Duration::from_secs(1));
    Config::default()
        .queue(queue)
        .batch_size(tuning.fetch_batch.max(1))
        .heartbeat_interval(heartbeat)
        .missed_heartbeats(3)
        .lock_tasks(false)
}

/// A Redis connection that counts its round trips (`xcam_redis_round_trips_total` in the
/// process's `/metrics`): a command, a script or a whole pipeline is one. The pipeline benchmark
/// divides a worker's count by the images it finished.
#[derive(Clone)]
pub struct Redis(ConnectionManager);

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        metrics::counter!("xcam_redis_round_trips_total").increment(1);
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        metrics::counter!("xcam_redis_round_trips_total").increment(1);
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// Connects to Redis with a 5 s response timeout. redis-rs' default of 500 ms turns one slow
/// reply into a fatal worker error (apalis-redis #76).
pub async fn connect(args: &RedisArgs) -> anyhow::Result<Redis> {
    let url = required(&args.redis_url, "REDIS_URL", SERVICES_HINT)?;
    let client = redis::Client::open(url)
        .map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {e}"))?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, config)
        .await
        .map(Redis)
        .map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "cannot reach Redis at REDIS_URL ({}); {SERVICES_HINT}",
                redact(url)
            ))
        })
}

/// How an idle worker looks for new jobs: once every interval. apalis-core 1.0's own
/// `IntervalStrategy` arms no timer after a tick, so a worker whose next fetch came back empty
/// slept until its heartbeat (a third of `XCAM_ORPHAN_AFTER`): a worker started beside a busy
/// one could take none of a batch. This one arms the next tick every time.
pub struct EveryInterval(tokio::time::Interval);

impl EveryInterval {
    pub fn new(interval: Duration) -> Self {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self(ticks)
    }
}

impl apalis::prelude::PollStrategy for EveryInterval {
    fn poll_drive(
        &mut self,
        cx: &mut std::task::Context<'_>,
        _: &apalis::prelude::PollSnapshot,
    ) -> std::task::Poll<Option<()>> {
        let mut ticked = false;
        // Polled until pending, so the waker is registered for the next tick.
        while self.0.poll_tick(cx).is_ready() {
            ticked = true;
        }
        if ticked {
            std::task::Poll::Ready(Some(()))
        } else {
            std::task::Poll::Pending
        }
    }
}

/// The storage handle for one model's queue.
pub fn storage(conn: Redis, queue: &str, tuning: QueueTuning) -> RedisStorage<GradCamJobV1, Redis> {
    RedisStorage::new(conn).with_config(queue_config(queue, tuning))
}

/// Jobs waiting in a queue (pending plus scheduled retries), read straight from the keys
/// because apalis-redis 1.0's own counters are broken.
pub async fn queue_depth(conn: &mut Redis, queue: &str) -> redis::RedisResult<u64> {
    let config = queue_config(queue, QueueTuning::default());
    let (active, scheduled): (u64, u64) = redis::pipe()
        .llen(config.active_jobs_list())
        .zcard(config.scheduled_jobs_set())
        .query_async(conn)
        .await?;
    Ok(active + scheduled)
}
