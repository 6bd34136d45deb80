//! Waiting out an outage at start-up. A producer or worker started while Postgres or Redis is
//! down, restarting or read-only (a failover) waits for it, as it would mid-run, instead of
//! exiting and leaving its restart to a supervisor; anything that is not an outage (a refused
//! password, a missing database) still fails at once.

use std::{fmt::Display, future::Future, time::Duration};

/// The first wait; each next one doubles, up to [`LONGEST_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(200);
const LONGEST_WAIT: Duration = Duration::from_secs(5);

/// Runs `attempt` until it succeeds or fails with an error `is_outage` does not excuse,
/// logging each failed try with the name of what is unavailable.
pub async fn through_outages<T, E, Fut>(
    what: &str,
    is_outage: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, E>
where
    E: Display,
    Fut: Future<Output = Result<T, E>>,
{
    let mut wait = FIRST_WAIT;
    loop {
        match attempt().await {
            Err(e) if is_outage(&e) => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} is unavailable; waiting for it");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(LONGEST_WAIT);
            }
            done => return done,
        }
    }
}

/// Whether anything in an error's chain says Postgres or Redis is unavailable for now (see
/// [`crate::db::is_outage`]), rather than refusing what was asked.
pub fn outage_in(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        if let Some(e) = cause.downcast_ref::<sqlx::Error>() {
            crate::db::is_outage(e)
        } else if let Some(sqlx::migrate::MigrateError::Execute(e)) = cause.downcast_ref() {
            crate::db::is_outage(e)
        } else if let Some(e) = cause.downcast_ref::<redis::RedisError>() {
            // Unreachable, timed out, loading its data set, failing over.
            !matches!(e.retry_method(), redis::RetryMethod::NoRetry)
        } else {
            false
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn outages_are_waited_out_and_other_errors_are_not() {
        let tries = AtomicU32::new(0);
        let up_on_third = through_outages(
            "it",
            |e: &&str| *e == "down",
            || async {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err("down"),
                    _ => Ok(7),
                }
            },
        )
        .await;
        assert_eq!((up_on_third, tries.load(Ordering::SeqCst)), (Ok(7), 3));

        let tries = AtomicU32::new(0);
        let refused: Result<(), _> = through_outages(
            "it",
            |e: &&str| *e == "down",
            || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err("wrong password")
            },
        )
        .await;
        assert_eq!(
            (refused, tries.load(Ordering::SeqCst)),
            (Err("wrong password"), 1)
        );
    }
}
