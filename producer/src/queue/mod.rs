//! The producer's side of the job queues: pushing jobs, asking which are still there, and
//! forgetting them: finished jobs in sweeps (so Redis holds only work in flight) and a deleted
//! batch's jobs at once.

use std::{collections::BTreeMap, sync::LazyLock};

use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use futures::stream;
use uuid::Uuid;
use xcam_shared::jobs::{self, GradCamJobV1, QueueTuning};

/// Jobs per Redis call: one bulk push is one Lua script, and a huge one would stall Redis.
const PUSH_CHUNK: usize = 500;
/// Jobs forgotten per Lua call, for the same reason.
const FORGET_CHUNK: usize = 1000;
/// Due jobs moved to the active list per Lua call, for the same reason.
const PROMOTE_CHUNK: usize = 1000;

static FORGET: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("forget.lua")));
static SWEEP: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("sweep.lua")));
static PROMOTE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("promote.lua")));

/// How many finished jobs one sweep of a queue forgot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Jobs that finished (whatever their item's outcome).
    pub done: u64,
    /// Jobs apalis gave up on (timeouts, panics, 25 failed attempts): their items, if still
    /// open, are pushed again by the reconciler, whose claim counts every attempt.
    pub dead: u64,
}

/// A handle on every model's queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pub redis: xcam_shared::jobs::Redis,
    pub prefix: String,
    pub tuning: QueueTuning,
}

impl Queue {
    pub fn name(&self, model: &str) -> String {
        jobs::queue_name(&self.prefix, model)
    }

    /// Pushes jobs to their model's queue in chunks. The task id is the item id, so pushing a
    /// job that is already in Redis does nothing.
    pub async fn push(&self, jobs: Vec<GradCamJobV1>) -> anyhow::Result<usize> {
        let mut by_queue: BTreeMap<String, Vec<GradCamJobV1>> = BTreeMap::new();
        for job in jobs {
            by_queue.entry(self.name(&job.model)).or_default().push(job);
        }
        let mut pushed = 0;
        for (queue, jobs) in by_queue {
            let mut storage = jobs::storage(self.redis.clone(), &queue, self.tuning);
            for chunk in jobs.chunks(PUSH_CHUNK) {
                let tasks: Vec<_> = chunk
                    .iter()
                    .map(|job| {
                        TaskBuilder::new(job.clone())
                            .task_id(TaskId::from_string(job.item_id.to_string()))
                            .build()
                    })
                    .collect();
                storage
                    .push_all(stream::iter(tasks))
                    .await
                    .map_err(|e| anyhow::anyhow!("pushing to {queue}: {e}"))?;
                pushed += chunk.len();
                self.promote(&queue).await?;
            }
        }
        Ok(pushed)
    }

    /// Moves the due jobs of a queue from its scheduled set to its active list, a chunk per
    /// call (see `promote.lua`: apalis' own fetch fails past about 8 000 due jobs). After each
    /// push, and in every sweep for the retries apalis schedules.
    pub async fn promote(&self, queue: &str) -> redis::RedisResult<u64> {
        let config = jobs::queue_config(queue, self.tuning);
        let now = chrono::Utc::now().timestamp();
        let mut moved = 0;
        loop {
            let n: u64 = PROMOTE
                .key(config.scheduled_jobs_set())
                .key(config.active_jobs_list())
                .key(config.signal_list())
                .arg(now)
                .arg(PROMOTE_CHUNK)
                .invoke_async(&mut self.redis.clone())
                .await?;
            moved += n;
            if n < PROMOTE_CHUNK as u64 {
                return Ok(moved);
            }
        }
    }

    /// Removes the jobs of these items from a model's queue, except those a worker is running
    /// (the sweep forgets them once they finish). Returns how many were removed.
    pub async fn forget(&self, model: &str, items: &[Uuid]) -> redis::RedisResult<u64> {
        let config = jobs::queue_config(&self.name(model), self.tuning);
        let mut removed = 0;
        for chunk in items.chunks(FORGET_CHUNK) {
            let mut call = FORGET.prepare_invoke();
            call.key(config.active_jobs_list())
                .key(config.scheduled_jobs_set())
                .key(config.done_jobs_set())
                .key(config.dead_jobs_set())
                .key(config.job_data_hash())
                .key(config.workers_set())
                .arg(config.job_meta_hash())
                .arg(config.inflight_jobs_set());
            for id in chunk {
                call.arg(id.to_string());
            }
            removed += call.invoke_async::<u64>(&mut self.redis.clone()).await?;
        }
        Ok(removed)
    }

    /// Forgets every finished job of a model's queue: its data, its metadata, its id.
    pub async fn sweep(&self, model: &str) -> redis::RedisResult<Forgotten> {
        let config = jobs::queue_config(&self.name(model), self.tuning);
        let mut forgotten = Forgotten::default();
        for (set, count) in [
            (config.done_jobs_set(), &mut forgotten.done),
            (config.dead_jobs_set(), &mut forgotten.dead),
        ] {
            loop {
                let n: u64 = SWEEP
                    .key(&set)
                    .key(config.job_data_hash())
                    .arg(config.job_meta_hash())
                    .arg(FORGET_CHUNK)
                    .invoke_async(&mut self.redis.clone())
                    .await?;
                *count += n;
                if n < FORGET_CHUNK as u64 {
                    break;
                }
            }
        }
        Ok(forgotten)
    }

    /// For each (model, item), whether its job's data is in Redis.
    pub async fn holds(&self, jobs: &[(String, Uuid)]) -> redis::RedisResult<Vec<bool>> {
        let mut pipe = redis::pipe();
        for (model, item) in jobs {
            let config = jobs::queue_config(&self.name(model), self.tuning);
            pipe.hexists(config.job_data_hash(), item.to_string());
        }
        pipe.query_async(&mut self.redis.clone()).await
    }
}
