//! From an uploaded archive to queued jobs.
//!
//! 1. [`upload`] streams the request body to a spool file (never into memory).
//! 2. [`archive::scan`] checks the archive's directory against the caps and sniffs every entry,
//!    before the upload is answered: a refused archive leaves nothing behind.
//! 3. [`ingest`] (in the background) stores each image in the blob store under its content hash,
//!    writes the item rows and opens the batch in one transaction, then pushes one job per item.

pub mod archive;
pub mod upload;

use std::sync::Arc;

use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use futures::stream;
use tokio::sync::mpsc;
use uuid::Uuid;
use xcam_shared::{
    blob::{image_key, sha256_hex},
    db::{self, items::NewItem},
    jobs::{self, GradCamJobV1},
};

use crate::state::AppState;
pub use archive::{ArchiveLimits, ScanResult};

/// What a batch asks for, as given on upload.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    pub batch_id: Uuid,
    pub model: String,
    pub method: String,
    pub labels: String,
    pub pseudonymize_names: bool,
    pub request_id: Option<String>,
}

/// Jobs per Redis call: one bulk push is one Lua script, and a huge one would stall Redis.
const PUSH_CHUNK: usize = 500;

/// Runs the background half of an upload; on failure the batch is marked failed, never left half-written.
pub async fn ingest(
    state: AppState,
    request: BatchRequest,
    spool: Arc<tempfile::TempPath>,
    scan: ScanResult,
) {
    let batch_id = request.batch_id;
    if let Err(e) = ingest_inner(&state, &request, spool, scan).await {
        tracing::error!(%batch_id, error.cause_chain = %format!("{e:#}"), "ingestion failed");
        if let Err(e) = db::batches::mark_failed(
            &state.db,
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
    state: &AppState,
    request: &BatchRequest,
    spool: Arc<tempfile::TempPath>,
    scan: ScanResult,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel(4);
    let (limits, image_limits) = (state.settings.limits, state.settings.image_limits);
    let entries = scan.entries.clone();
    // Inflation and decoding are CPU work: they run on a blocking thread and hand entries over
    // one by one, so memory holds a few entries at a time, whatever the archive's size.
    let reader = tokio::task::spawn_blocking(move || {
        archive::read_entries(&spool, &entries, limits, image_limits, &tx)
    });

    let mut items = Vec::with_capacity(scan.entries.len());
    // Entries refused by the scan (symlinks, nested archives, …) are items too, so the report
    // and the CSV say what happened to every entry.
    for entry in scan.entries.iter().filter(|e| e.rejection.is_some()) {
        items.push(new_item(
            request,
            entry,
            Err(entry.rejection.clone().expect("filtered")),
        ));
    }
    while let Some((entry, read)) = rx.recv().await {
        let read = match read {
            Ok((bytes, warnings)) => {
                let (sha, size) = (sha256_hex(&bytes), bytes.len() as i64);
                let key = image_key(&sha);
                if !state.blobs.exists(&key).await? {
                    state.blobs.put(&key, bytes.into()).await?;
                }
                Ok((sha, key, size, warnings))
            }
            Err(rejection) => Err(rejection),
        };
        items.push(new_item(request, &entry, read));
    }
    reader.await??;
    items.sort_by_key(|i| i.entry_index);

    let mut tx = state.db.begin().await?;
    db::items::insert_all(&mut tx, request.batch_id, &items).await?;
    db::batches::mark_ingested(
        &mut *tx,
        request.batch_id,
        scan.total_entries as i32,
        scan.skipped as i32,
    )
    .await?;
    tx.commit().await?;
    db::batches::refresh(&state.db, request.batch_id).await?;

    let jobs: Vec<GradCamJobV1> = items
        .iter()
        .filter(|i| i.status == "queued")
        .filter_map(|i| {
            Some(GradCamJobV1 {
                batch_id: request.batch_id,
                item_id: i.id,
                blob_key: i.blob_key.clone()?,
                model: request.model.clone(),
                method: request.method.clone(),
                labels: request.labels.clone(),
                request_id: request.request_id.clone(),
            })
        })
        .collect();
    // A failure here leaves the items queued in Postgres; the reconciler pushes them later.
    if let Err(e) = enqueue(state, jobs).await {
        tracing::warn!(batch_id = %request.batch_id, error = %e, "pushing jobs failed; the reconciler will retry");
    }
    tracing::info!(batch_id = %request.batch_id, items = items.len(), skipped = scan.skipped, "batch ingested");
    Ok(())
}

fn new_item(
    request: &BatchRequest,
    entry: &archive::Entry,
    read: Result<(String, String, i64, Vec<xcam_shared::imaging::Warning>), archive::Rejection>,
) -> NewItem {
    let entry_name = if request.pseudonymize_names {
        pseudonym(request.batch_id, &entry.name)
    } else {
        entry.name.clone()
    };
    let mut item = NewItem {
        id: Uuid::now_v7(),
        entry_index: entry.index as i32,
        entry_name,
        sha256: None,
        blob_key: None,
        byte_size: None,
        status: "queued",
        error_code: None,
        error_message: None,
        warnings: serde_json::json!([]),
    };
    match read {
        Ok((sha, key, size, warnings)) => {
            item.sha256 = Some(sha);
            item.blob_key = Some(key);
            item.byte_size = Some(size);
            item.warnings =
                serde_json::to_value(warnings).unwrap_or_else(|_| serde_json::json!([]));
        }
        Err(rejection) => {
            item.status = "rejected";
            item.error_code = Some(rejection.code.to_owned());
            item.error_message = Some(rejection.message);
        }
    }
    item
}

/// Pushes jobs to their model's queue in chunks. The task id is the item id, so pushing a job
/// that is already in Redis does nothing.
pub async fn enqueue(state: &AppState, jobs: Vec<GradCamJobV1>) -> anyhow::Result<usize> {
    let mut by_queue: std::collections::BTreeMap<String, Vec<GradCamJobV1>> = Default::default();
    for job in jobs {
        by_queue
            .entry(jobs::queue_name(&state.settings.queue_prefix, &job.model))
            .or_default()
            .push(job);
    }
    let mut pushed = 0;
    for (queue, jobs) in by_queue {
        let mut storage = jobs::storage(state.redis.clone(), &queue, state.settings.queue_tuning);
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

/// A salted hash standing in for an entry name, stable within the batch.
fn pseudonym(batch: Uuid, name: &str) -> String {
    let ext = std::path::Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("img");
    let digest = sha256_hex(format!("{batch}\0{name}").as_bytes());
    format!("entry-{}.{}", &digest[..16], ext.to_ascii_lowercase())
}
