//! Background work that runs on a period: the reconciler's and the sweeper's loops.

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

/// Runs `pass` every `period` (a late pass delays the next rather than bunching them) until
/// `stop` is cancelled.
pub async fn every<F, Fut>(period: Duration, stop: CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        pass().await;
    }
}

/// [`every`], with each pass run by one producer at a time: the pass takes `task`'s lease
/// (see `db::leases`) and a producer that cannot take it skips the tick. Counted in
/// `xcam_background_passes_total{task, ran}`.
pub async fn every_exclusively<F, Fut>(
    period: Duration,
    stop: CancellationToken,
    db: sqlx::PgPool,
    task: &'static str,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    every(period, stop, || {
        let db = db.clone();
        let run = pass();
        async move {
            let ran = match xcam_shared::db::leases::try_take(&db, task).await {
                Ok(Some(lease)) => {
                    run.await;
                    lease.release().await;
                    "true"
                }
                Ok(None) => "false",
                Err(e) => {
                    tracing::warn!(task, error = %e, "cannot take the background task's lease");
                    "false"
                }
            };
            metrics::counter!("xcam_background_passes_total", "task" => task, "ran" => ran)
                .increment(1);
        }
    })
    .await;
}
