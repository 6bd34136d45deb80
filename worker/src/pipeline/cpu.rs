//! The jobs' CPU work, off the executor, on a fixed set of threads: finishing each image's maps
//! and summaries, and decoding planes stored before they were fitted.
//!
//! Tokio's blocking pool adds a thread whenever none is idle, and a dynamic batch hands all its
//! images over at once. A worker that ran this work there, beside its blob reads, grew to 200
//! threads over 300 000 images (demo bundle, 2 cores), each with its stack and its share of the
//! allocator's arenas: its resident set crept up by 1.7 MiB per 10 000 images while what its
//! heaps held stayed level. The work is CPU-bound, so one thread a core keeps every core busy,
//! and what waits queues here instead of growing the process.

use std::panic::{AssertUnwindSafe, catch_unwind};

use anyhow::Context;

/// Work handed to the pool that did not finish: it panicked, or the pool is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unfinished(String);

pub struct CpuPool {
    threads: rayon::ThreadPool,
}

impl CpuPool {
    /// One thread a core.
    pub fn new() -> anyhow::Result<Self> {
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(crate::device::host_cores())
            .thread_name(|i| format!("xcam-cpu-{i}"))
            .build()
            .context("starting the worker's CPU threads")?;
        Ok(Self { threads })
    }

    /// Runs `work` on one of the pool's threads; the caller's task waits without holding its
    /// executor thread.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Unfinished> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.threads.spawn(move || {
            // Caught here: a panic reaching rayon would abort the process.
            let _ = done.send(catch_unwind(AssertUnwindSafe(work)));
        });
        match result.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(Unfinished(format!("the work panicked: {message}")))
            }
            // The pool dropped the work unrun: only when it is shutting down.
            Err(_) => Err(Unfinished("the CPU threads are shutting down".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_and_reports_a_panic_without_losing_a_thread() {
        let pool = CpuPool::new().unwrap();
        assert_eq!(pool.run(|| 6 * 7).await.unwrap(), 42);
        let panicked = pool
            .run(|| -> u32 { panic!("a map of no pixels") })
            .await
            .unwrap_err();
        assert_eq!(
            panicked.to_string(),
            "the work panicked: a map of no pixels"
        );
        // The pool still serves every thread's worth of work after it.
        let many = (0..64).map(|i| pool.run(move || i * 2));
        let sums: Vec<_> = futures::future::join_all(many).await;
        assert_eq!(
            sums.into_iter().map(Result::unwrap).sum::<i32>(),
            (0..64).map(|i| i * 2).sum::<i32>()
        );
    }
}
