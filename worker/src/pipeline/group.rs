//! Group commit: the jobs of a dynamic batch claim their items and record their outcomes
//! together, one Postgres statement per table for the whole group instead of several per image.
//!
//! Each job sends its request and waits for its own answer, so a job is still acknowledged only
//! once its outcome is committed. A writer takes the first request, then every other that
//! arrives within [`LINGER`] of the last (the rest of a batch finishing), up to [`MOST`]; while
//! it writes, the next group gathers.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};

/// How long a group waits for one more request.
const LINGER: Duration = Duration::from_millis(2);
/// The most requests one statement carries (Postgres binds at most 65 535 parameters).
const MOST: usize = 256;

/// An error of a whole group, shared by each of its requests.
pub type GroupError = Arc<sqlx::Error>;

type Reply<T> = oneshot::Sender<Result<T, GroupError>>;

/// The sending side of one writer; cheap to clone.
pub struct Grouped<Req, Resp> {
    requests: mpsc::UnboundedSender<(Req, Reply<Resp>)>,
}

impl<Req, Resp> Clone for Grouped<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
        }
    }
}

impl<Req: Send + Sync + Clone + 'static, Resp: Send + 'static> Grouped<Req, Resp> {
    /// Starts a writer that answers groups of requests with `write`, which must answer each
    /// request of its slice in order. It stops once every sender is dropped.
    pub fn spawn<F, Fut>(write: F) -> Self
    where
        F: Fn(Arc<[Req]>) -> Fut + Send + 'static,
        Fut: Future<Output = sqlx::Result<Vec<Resp>>> + Send,
    {
        let (requests, mut queue) = mpsc::unbounded_channel::<(Req, Reply<Resp>)>();
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut group = vec![first];
                while group.len() < MOST {
                    match tokio::time::timeout(LINGER, queue.recv()).await {
                        Ok(Some(next)) => group.push(next),
                        _ => break,
                    }
                }
                metrics::histogram!("xcam_worker_write_group_size").record(group.len() as f64);
                let (reqs, replies): (Vec<Req>, Vec<Reply<Resp>>) = group.into_iter().unzip();
                let reqs: Arc<[Req]> = reqs.into();
                match write(reqs.clone()).await {
                    Ok(answers) => answer(replies, answers.into_iter().map(Ok)),
                    // One request Postgres refuses (not an outage) must not fail its neighbours:
                    // each is tried on its own.
                    Err(e) if reqs.len() > 1 && !xcam_shared::db::is_outage(&e) => {
                        tracing::warn!(error = %e, size = reqs.len(), "a group write was refused; writing its requests one by one");
                        for (req, reply) in reqs.iter().zip(replies) {
                            let answer = write(Arc::new([req.clone()]))
                                .await
                                .map(|mut a| a.remove(0));
                            reply.send(answer.map_err(Arc::new)).ok();
                        }
                    }
                    Err(e) => {
                        let e = Arc::new(e);
                        answer(replies, std::iter::repeat_with(|| Err(e.clone())));
                    }
                }
            }
        });
        Self { requests }
    }

    /// Sends `request` with the next group and waits for its answer.
    pub async fn send(&self, request: Req) -> Result<Resp, GroupError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || Arc::new(sqlx::Error::PoolClosed);
        self.requests
            .send((request, reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn answer<T>(replies: Vec<Reply<T>>, answers: impl Iterator<Item = Result<T, GroupError>>) {
    for (reply, answer) in replies.into_iter().zip(answers) {
        // A job that gave up waiting (its worker is stopping) no longer listens.
        reply.send(answer).ok();
    }
}
