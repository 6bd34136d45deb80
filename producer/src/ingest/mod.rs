//! From an uploaded archive to queued jobs.
//!
//! 1. [`upload`] streams the request body to a spool file (never into memory).
//! 2. [`archive::scan`] checks the archive's directory against the caps and sniffs every entry,
//!    before the upload is answered: a refused archive leaves nothing behind.
//! 3. [`Ingestor::ingest`] (in the background) stores each image's validated pixel plane (never
//!    the uploaded bytes) in the blob store under its content hash and its item row to a file
//!    beside the upload; then copies the rows into Postgres and opens the batch in one
//!    transaction, and pushes one job per item, read back page by page. Memory holds a group of
//!    entries, whatever the archive's size. The spool files are removed when ingestion ends,
//!    whatever the outcome.

pub mod archive;
pub mod pseudonym;
pub mod spool;
pub mod upload;

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use sqlx::PgPool;
use tokio::{
    io::{AsyncSeekExt, AsyncWriteExt},
    sync::mpsc,
};
use uuid::Uuid;
use xcam_shared::{
    blob::{BlobError, BlobStore, plane_key, sha256_hex},
    db::{self, items::NewItem},
    imaging::{ImageLimits, Warning, fitted::Fit},
    jobs::GradCamJobV1,
    status::{BatchStatus, ItemStatus},
    targets::{Faithfulness, LabelSelection, Method},
};

use crate::queue::Queue;
pub use archive::{ArchiveError, ArchiveLimits, Decoders, ScanResult};
pub use pseudonym::PseudonymKey;

/// What a batch asks for, as given on upload.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    pub batch_id: Uuid,
    pub model: String,
    pub method: Method,
    pub labels: LabelSelection,
    pub faithfulness: Faithfulness,
    /// The key to pseudonymise entry names with, when the batch asks for it.
    pub pseudonyms: Option<PseudonymKey>,
    pub request_id: Option<String>,
    /// The model's input size: each plane is also stored fitted to it, for the workers.
    pub fit: Fit,
}

impl BatchRequest {
    /// An entry's name as it is stored: its pseudonym when the batch asks for them.
    fn entry_name(&self, name: &str) -> String {
        match &self.pseudonyms {
            Some(key) => key.pseudonym(self.batch_id, name),
            None => name.to_owned(),
        }
    }
}

/// How an ingestion ended, short of an error.
enum Ingested {
    Done,
    /// The batch was cancelled or declared interrupted (its status now), or deleted (`None`),
    /// meanwhile.
    Stopped(Option<BatchStatus>),
}

/// Entries stored together, between two looks at the batch's status (a cancel stops ingestion
/// within as many).
const GROUP: usize = 64;
/// Pixel bytes a group holds at most (a group of big images is smaller).
const GROUP_BYTES: usize = 16 << 20;

/// Queued items read back per page when their jobs are pushed.
const JOB_PAGE: i64 = 2_000;

/// The items of an ingestion so far, as `COPY` rows in a file beside the upload.
struct ItemRows {
    file: tokio::io::BufWriter<tokio::fs::File>,
    line: Vec<u8>,
}

impl ItemRows {
    async fn create(path: &std::path::Path) -> std::io::Result<Self> {
        // Read back by the `COPY`, so opened for both.
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .await?;
        Ok(Self {
            file: tokio::io::BufWriter::new(file),
            line: Vec::new(),
        })
    }

    async fn add(&mut self, batch_id: Uuid, items: &[NewItem]) -> std::io::Result<()> {
        self.line.clear();
        for item in items {
            db::items::copy_row(&mut self.line, batch_id, item);
        }
        self.file.write_all(&self.line).await
    }

    /// The rows written, read from their start.
    async fn finish(mut self) -> std::io::Result<tokio::fs::File> {
        self.file.flush().await?;
        let mut file = self.file.into_inner();
        file.seek(std::io::SeekFrom::Start(0)).await?;
        Ok(file)
    }
}

/// What ingestion needs: where items, images and jobs go, and the caps.
#[derive(Clone)]
pub struct Ingestor {
    pub db: PgPool,
    pub blobs: BlobStore,
    pub queue: Queue,
    pub limits: ArchiveLimits,
    pub image_limits: ImageLimits,
    pub decoders: Arc<Decoders>,
}

/// A stored entry: its plane's hash, blob key and size, and warnings; or why it was refused.
type Stored = Result<(String, String, i64, Vec<Warning>), archive::Rejection>;

impl Ingestor {
    /// Runs the background half of an upload; on failure the batch is marked failed, never
    /// left half-written. A batch cancelled (or declared interrupted) meanwhile stops it.
    pub async fn ingest(
        self,
        request: BatchRequest,
        spool: Arc<tempfile::TempPath>,
        scan: ScanResult,
    ) {
        let batch_id = request.batch_id;
        let outcome = self.ingest_inner(&request, spool, scan).await;
        if !matches!(outcome, Ok(Ingested::Done))
            && let Err(e) = crate::erase::drop_ingestion(&self.db, &self.blobs, batch_id).await
        {
            tracing::warn!(%batch_id, error = %e, "could not remove the planes of an ingestion that did not finish");
        }
        if let Ok(Ingested::Stopped(status)) = &outcome {
            tracing::info!(%batch_id, ?status, "ingestion stopped: the batch was ended meanwhile");
        }
        if let Err(e) = outcome {
            tracing::error!(%batch_id, error.cause_chain = %format!("{e:#}"), "ingestion failed");
            if let Err(e) = db::batches::mark_failed(
                &self.db,
                batch_id,
                "ingestion_failed",
                "the archive could not be ingested; see the server log",
            )
            .await
            {
                tracing::error!(%batch_id, error = %e, "could not mark the batch failed");
            }
        }
    }

    async fn ingest_inner(
        &self,
        request: &BatchRequest,
        spool: Arc<tempfile::TempPath>,
        scan: ScanResult,
    ) -> anyhow::Result<Ingested> {
        let ScanResult {
            entries,
            skipped,
            total_entries,
        } = scan;
        // Items go to a file beside the upload as they are stored and into Postgres in one
        // `COPY` at the end, so memory holds a group of them, whatever the archive's size.
        let rows_path = tempfile::TempPath::try_from_path(spool.with_extension("items"))?;
        let mut rows = ItemRows::create(&rows_path).await?;
        // Entries refused by the scan (symlinks, nested archives, …) are items too, so the
        // report and the CSV say what happened to every entry.
        let refused: Vec<NewItem> = entries
            .iter()
            .filter_map(|e| Some(new_item(request, e, Err(e.rejection.clone()?))))
            .collect();
        rows.add(request.batch_id, &refused).await?;
        let (tx, mut rx) = mpsc::channel(4);
        let (limits, image_limits, fit) = (self.limits, self.image_limits, request.fit);
        let decoders = self.decoders.clone();
        // Inflation and decoding are CPU work: they run on blocking threads and hand entries
        // over one by one, so memory holds a few entries at a time, whatever the archive's size.
        let reader = tokio::task::spawn_blocking(move || {
            let read = archive::Reading {
                limits,
                image_limits,
                fit,
                decoders: &decoders,
            };
            archive::read_entries(&spool, &entries, read, &tx)
        });
        // Entries go on in groups: one status look and one claim statement per group, so
        // Postgres costs a round trip per group, not per entry.
        loop {
            let (mut group, mut bytes) = (Vec::with_capacity(GROUP), 0);
            while group.len() < GROUP && bytes < GROUP_BYTES {
                let Some((entry, read)) = rx.recv().await else {
                    break;
                };
                bytes += read.as_ref().map_or(0, archive::Planes::bytes);
                group.push((entry, read));
            }
            if group.is_empty() {
                break;
            }
            let status = db::batches::status_of(&self.db, request.batch_id).await?;
            if status != Some(BatchStatus::Ingesting) {
                // Dropping the receiver stops the reader at its next entry.
                drop(rx);
                reader.await.ok();
                return Ok(Ingested::Stopped(status));
            }
            let items = self.store_group(request, group).await?;
            rows.add(request.batch_id, &items).await?;
        }
        reader.await??;

        let mut tx = self.db.begin().await?;
        // Locked first: a cancel or an interruption either waits for this commit, or has
        // already ended the batch, and then nothing is written.
        let status = db::batches::lock(&mut tx, request.batch_id).await?;
        if status != Some(BatchStatus::Ingesting) {
            return Ok(Ingested::Stopped(status));
        }
        let items = db::items::copy_in(&mut tx, request.batch_id, rows.finish().await?).await?;
        let skipped: Vec<db::skipped::NewSkipped> = skipped
            .iter()
            .map(|s| db::skipped::NewSkipped {
                entry_index: s.index as i32,
                entry_name: request.entry_name(&s.name),
                reason: s.reason,
            })
            .collect();
        db::skipped::insert_all(&mut tx, request.batch_id, &skipped).await?;
        db::batches::mark_ingested(
            &mut *tx,
            request.batch_id,
            total_entries as i32,
            skipped.len() as i32,
        )
        .await?;
        db::erasure::release_claims(&mut *tx, request.batch_id).await?;
        tx.commit().await?;
        db::batches::refresh(&self.db, request.batch_id).await?;

        // A failure here leaves the items queued in Postgres; the reconciler pushes them later.
        if let Err(e) = self.push_jobs(request).await {
            tracing::warn!(batch_id = %request.batch_id, error = %e, "pushing jobs failed; the reconciler will retry");
        }
        tracing::info!(batch_id = %request.batch_id, items, skipped = skipped.len(), "batch ingested");
        Ok(Ingested::Done)
    }

    /// Pushes the jobs of an opened batch's queued items, read back page by page in archive
    /// order, so a batch of any size costs a page of jobs in memory.
    async fn push_jobs(&self, request: &BatchRequest) -> anyhow::Result<()> {
        let mut after = -1;
        loop {
            let page = db::items::queued_page(&self.db, request.batch_id, after, JOB_PAGE).await?;
            let Some(&(last, _, _)) = page.last() else {
                return Ok(());
            };
            after = last;
            let jobs = page
                .into_iter()
                .map(|(_, item_id, blob_key)| GradCamJobV1 {
                    batch_id: request.batch_id,
                    item_id,
                    blob_key,
                    model: request.model.clone(),
                    method: request.method,
                    labels: request.labels.clone(),
                    faithfulness: request.faithfulness,
                    request_id: request.request_id.clone(),
                })
                .collect();
            self.queue.push(jobs).await?;
        }
    }

    /// Stores a group of read entries' planes; returns their items.
    async fn store_group(
        &self,
        request: &BatchRequest,
        group: Vec<(archive::Entry, archive::EntryRead)>,
    ) -> anyhow::Result<Vec<NewItem>> {
        // Hashing is CPU work: off the executor, a group at a time.
        let hashed = tokio::task::spawn_blocking(move || {
            group
                .into_iter()
                .map(|(entry, read)| {
                    let read = read.map(|planes| {
                        let sha = sha256_hex(&planes.full);
                        let key = plane_key(&sha);
                        (planes, sha, key)
                    });
                    (entry, read)
                })
                .collect::<Vec<_>>()
        })
        .await?;
        let keys: Vec<&str> = hashed
            .iter()
            .filter_map(|(_, read)| read.as_ref().ok().map(|r| r.2.as_str()))
            .collect();
        // Claimed before they are written, so a delete of another batch with the same pixels
        // cannot remove them before this batch's items reference them.
        db::erasure::claim_planes(&self.db, request.batch_id, &keys).await?;
        // As many planes at once as the store takes (see `BlobStore::puts_in_flight`): one on
        // a local directory, where a producer killed during a put leaves its staging file behind
        // (the kill-mid-ingestion test found it), several on S3, where a put is a round trip.
        let puts: Vec<_> = hashed
            .iter()
            .filter_map(|(_, read)| read.as_ref().ok())
            .map(|(planes, _, key)| self.store_planes(request, key, planes))
            .collect();
        futures::stream::iter(puts)
            .buffer_unordered(self.blobs.puts_in_flight())
            .try_for_each(|_| async { Ok(()) })
            .await?;
        Ok(hashed
            .into_iter()
            .map(|(entry, read)| {
                let stored = read.map(|(planes, sha, key)| {
                    (sha, key, planes.full.len() as i64, planes.warnings)
                });
                new_item(request, &entry, stored)
            })
            .collect())
    }

    /// Stores one entry's planes: the full one, then the copy fitted to the model (a plane is
    /// never without its copy for long, and a worker that finds no copy reads the plane itself).
    async fn store_planes(
        &self,
        request: &BatchRequest,
        key: &str,
        planes: &archive::Planes,
    ) -> Result<(), BlobError> {
        self.blobs.put_if_absent(key, planes.full.clone()).await?;
        self.blobs
            .put_if_absent(&request.fit.key(key), planes.fitted.clone())
            .await?;
        Ok(())
    }
}

fn new_item(request: &BatchRequest, entry: &archive::Entry, stored: Stored) -> NewItem {
    let mut item = NewItem {
        id: Uuid::now_v7(),
        entry_index: entry.index as i32,
        entry_name: request.entry_name(&entry.name),
        sha256: None,
        blob_key: None,
        byte_size: None,
        status: ItemStatus::Queued,
        error_code: None,
        error_message: None,
        warnings: serde_json::json!([]),
    };
    match stored {
        Ok((sha, key, size, warnings)) => {
            item.sha256 = Some(sha);
            item.blob_key = Some(key);
            item.byte_size = Some(size);
            item.warnings =
                serde_json::to_value(warnings).unwrap_or_else(|_| serde_json::json!([]));
        }
        Err(rejection) => {
            item.status = ItemStatus::Rejected;
            item.error_code = Some(rejection.code.to_owned());
            item.error_message = Some(rejection.message);
        }
    }
    item
}
