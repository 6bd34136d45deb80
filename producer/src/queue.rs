//! The producer's side of the job queues: pushing jobs, and asking which are still there.

use std::collections::BTreeMap;

use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::ConnectionManager;
use futures::stream;
use uuid::Uuid;
use xcam_shared::jobs::{self, GradCamJobV1, QueueTuning};

/// Jobs per Redis call: one bulk push is one Lua script, and a huge one would stall Redis.
const PUSH_CHUNK: usize = 500;

/// A handle on every model's queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pub redis: ConnectionManager,
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
            }
        }
        Ok(pushed)
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
