//! Deleting batches: their rows in one transaction, then what lives outside Postgres — queued
//! jobs in Redis, drawn overlays, and pixel planes no other batch shares. `DELETE
//! /v1/batches/{id}` and the retention sweep both come here.
//!
//! The rows go first and a `pending_erasures` row records the rest, so an outage of Redis or the
//! blob store after the commit only delays the rest: the sweep finishes it later.

use futures::{StreamExt, TryStreamExt, stream};
use sqlx::PgPool;
use uuid::Uuid;
use xcam_shared::{
    blob::{self, BlobError, BlobStore},
    db::{
        self,
        erasure::{Deletion, Erasure},
    },
    imaging::fitted,
};

use crate::queue::Queue;

/// Planes checked and removed per transaction.
const PLANE_CHUNK: usize = 500;
/// Blob deletes in flight at once.
const BLOB_CONCURRENCY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the batch is still being ingested; delete it once it is queued")]
    Ingesting,
}

/// What a delete removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    pub items: usize,
    /// Planes removed now; 0 when what lives outside Postgres is left to the next sweep.
    pub planes: usize,
}

/// Where deletes reach.
#[derive(Clone)]
pub struct Eraser {
    pub db: PgPool,
    pub blobs: BlobStore,
    pub queue: Queue,
}

impl Eraser {
    /// Deletes a batch. `None` when there is no such batch (a second delete included).
    pub async fn delete_batch(&self, batch: Uuid) -> Result<Option<Erased>, EraseError> {
        let erasure = match db::erasure::delete_batch(&self.db, batch).await? {
            Deletion::Deleted(erasure) => erasure,
            Deletion::NotFound => return Ok(None),
            Deletion::Ingesting => return Err(EraseError::Ingesting),
        };
        let items = erasure.item_ids.len();
        let planes = self.finish(&erasure).await.unwrap_or_else(|e| {
            tracing::warn!(%batch, error = %e, "batch deleted; its jobs and blobs will be removed by the next sweep");
            0
        });
        Ok(Some(Erased { items, planes }))
    }

    /// Removes an erasure's jobs, overlays and unshared planes, then its record. Returns how
    /// many planes went.
    pub async fn finish(&self, erasure: &Erasure) -> Result<usize, EraseError> {
        self.queue
            .forget(&erasure.model_name, &erasure.item_ids)
            .await?;
        self.blobs
            .delete_prefix(&blob::derived_prefix(erasure.batch_id))
            .await?;
        let planes = remove_planes(&self.db, &self.blobs, &erasure.plane_keys).await?;
        db::erasure::finished(&self.db, erasure.batch_id).await?;
        tracing::info!(batch = %erasure.batch_id, items = erasure.item_ids.len(), planes, "batch erased");
        Ok(planes)
    }

    /// Finishes erasures an outage interrupted at least `older_than` ago. Returns how many.
    pub async fn resume(&self, older_than: std::time::Duration) -> Result<usize, EraseError> {
        let pending = db::erasure::pending(&self.db, older_than, 100).await?;
        for erasure in &pending {
            self.finish(erasure).await?;
        }
        Ok(pending.len())
    }
}

/// Ends an ingestion that will not finish: releases its claims on planes and removes those
/// planes nothing else references. Returns how many were removed.
pub async fn drop_ingestion(
    db: &PgPool,
    blobs: &BlobStore,
    batch: Uuid,
) -> Result<usize, EraseError> {
    let claimed = db::erasure::release_claims(db, batch).await?;
    remove_planes(db, blobs, &claimed).await
}

/// Removes the planes among `keys` that no item and no ingestion references any more.
pub async fn remove_planes(
    db: &PgPool,
    blobs: &BlobStore,
    keys: &[String],
) -> Result<usize, EraseError> {
    let mut removed = 0;
    for chunk in keys.chunks(PLANE_CHUNK) {
        let mut tx = db.begin().await?;
        let unreferenced = db::erasure::lock_unreferenced(&mut tx, chunk).await?;
        removed += unreferenced.len();
        // Removed while the locks are held: a claim for one of these waits, then rewrites it.
        stream::iter(unreferenced)
            .map(|key| {
                let blobs = blobs.clone();
                async move {
                    blobs.delete(&key).await?;
                    // Its copies fitted to models' input sizes go with it.
                    blobs.delete_prefix(&fitted::prefix(&key)).await.map(drop)
                }
            })
            .buffer_unordered(BLOB_CONCURRENCY)
            .try_collect::<()>()
            .await?;
        tx.commit().await?;
    }
    Ok(removed)
}
