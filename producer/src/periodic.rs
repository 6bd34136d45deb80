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
