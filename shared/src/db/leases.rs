//! Leases on the producers' background tasks. Every producer runs the reconciler and the sweeper;
//! a pass first takes its task's Postgres advisory lock, so at most one producer runs each task
//! at a time, and the others skip that tick. The lock is a session lock on a connection of its
//! own: a producer that dies mid-pass loses its connection, and with it the lock.

use sqlx::{PgPool, Postgres, pool::PoolConnection};

/// A held lease; [`Lease::release`] it when the pass is done.
pub struct Lease {
    conn: PoolConnection<Postgres>,
    released: bool,
}

/// Takes the lease on `task` if no other session holds it.
pub async fn try_take(pool: &PgPool, task: &str) -> sqlx::Result<Option<Lease>> {
    let mut conn = pool.acquire().await?;
    let held: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended('xcam:' || $1, 0))")
            .bind(task)
            .fetch_one(&mut *conn)
            .await?;
    Ok(held.then_some(Lease {
        conn,
        released: false,
    }))
}

impl Lease {
    pub async fn release(mut self) {
        let unlocked = sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut *self.conn)
            .await;
        self.released = unlocked.is_ok();
    }
}

impl Drop for Lease {
    /// A lease not released (a pass that failed to unlock, or was cancelled) closes its
    /// connection rather than return a lock-holding session to the pool.
    fn drop(&mut self) {
        if !self.released {
            self.conn.close_on_drop();
        }
    }
}
