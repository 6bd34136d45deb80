//! One job: claim the item, fetch its pixel plane, explain it, record the result, log the
//! attempt.
//!
//! Failures are sorted into permanent ones (the image or the request is bad: the item fails at
//! once with its code) and transient ones (Postgres, the blob store or the engine is unwell: the
//! job is retried by the queue with growing delays, and past the retry budget the item fails
//! with the last error).
//!
//! Every log line of a job carries exactly its own batch, item and attempt: the handler's work
//! runs inside its span with `.instrument`, which enters the span on each poll and leaves it at
//! each await, so concurrent jobs never see each other's fields.

use std::{sync::Arc, time::Instant};

use apalis::prelude::{BoxDynError, Data};
use chrono::Utc;
use sqlx::PgPool;
use tracing::Instrument;
use xcam_shared::{
    blob::{BlobError, BlobStore},
    db::{self, items::Claim, logs::NewLogEntry, results::NewResult},
    imaging::plane,
    jobs::GradCamJobV1,
    status::{ItemStatus, LogStatus},
};

use crate::engine::{Engine, EngineError, Explanation, Inferred, Target, preprocess::Geometry};

/// What every job of one model's queue shares.
pub struct JobContext {
    pub db: PgPool,
    pub blobs: BlobStore,
    pub engine: Engine,
    pub worker_id: String,
    pub retry_budget: u32,
}

/// Why an attempt failed, and whether trying again could help.
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error("{message}")]
    Permanent { code: &'static str, message: String },
    #[error("{message}")]
    Transient { code: &'static str, message: String },
    /// Postgres itself is unreachable: nothing can be recorded, the queue must retry.
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<BlobError> for JobError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound { .. } => JobError::Permanent {
                code: "image_missing",
                message: "the image is no longer in the blob store".into(),
            },
            other => JobError::Transient {
                code: "blob_store_unavailable",
                message: other.to_string(),
            },
        }
    }
}

impl From<EngineError> for JobError {
    fn from(e: EngineError) -> Self {
        let (code, message) = (e.code(), e.to_string());
        if e.is_permanent() {
            JobError::Permanent { code, message }
        } else {
            JobError::Transient { code, message }
        }
    }
}

impl From<tokio::task::JoinError> for JobError {
    fn from(e: tokio::task::JoinError) -> Self {
        JobError::Transient {
            code: "internal",
            message: e.to_string(),
        }
    }
}

struct Outcome {
    explanation: Explanation,
    inferred: Inferred,
    geometry: Geometry,
}

/// The apalis handler. `Ok` means the queue is done with the job (whatever the item's outcome,
/// which lives in Postgres); `Err` asks the queue to retry.
pub async fn handle(job: GradCamJobV1, ctx: Data<Arc<JobContext>>) -> Result<(), BoxDynError> {
    let span = tracing::info_span!(
        "job",
        batch = %job.batch_id,
        item = %job.item_id,
        attempt = tracing::field::Empty,
        request_id = job.request_id.as_deref().unwrap_or(""),
    );
    run(job, &ctx).instrument(span).await
}

async fn run(job: GradCamJobV1, ctx: &JobContext) -> Result<(), BoxDynError> {
    let started = Instant::now();
    let Some(claim) = db::items::claim(&ctx.db, job.item_id, &ctx.worker_id).await? else {
        tracing::debug!("item is cancelled or already finished; skipping");
        return Ok(());
    };
    tracing::Span::current().record("attempt", claim.attempts);
    let queue_wait_ms = (Utc::now() - claim.queued_at).num_milliseconds().max(0) as f32;

    let result = explain(ctx, &job).await;
    let processing_ms = started.elapsed().as_secs_f64() as f32 * 1e3;
    let manifest = &ctx.engine.bundle().manifest.model;
    let mut log = NewLogEntry {
        model_name: &manifest.name,
        model_version: &manifest.version,
        prediction: None,
        probability: None,
        filename: &claim.entry_name,
        processing_time_ms: processing_ms,
        queue_wait_ms: Some(queue_wait_ms),
        batch_id: job.batch_id,
        item_id: job.item_id,
        attempt: claim.attempts,
        status: LogStatus::Succeeded,
        error_code: None,
        error_message: None,
        worker_id: &ctx.worker_id,
        device: ctx.engine.device(),
        dynamic_batch_size: None,
    };
    match result {
        Ok(outcome) => {
            let e = &outcome.explanation;
            log.prediction = Some(&e.top_label);
            log.probability = Some(e.top_probability);
            log.dynamic_batch_size = Some(outcome.inferred.batch_size as i32);
            db::results::upsert(
                &ctx.db,
                &NewResult {
                    item_id: job.item_id,
                    batch_id: job.batch_id,
                    model_name: &manifest.name,
                    model_version: &manifest.version,
                    predictions: serde_json::to_value(&e.predictions)?,
                    top_label: &e.top_label,
                    top_probability: e.top_probability,
                    method: e.cams.first().map_or(job.method, |c| c.method),
                    cams: &e.cams,
                    geometry: outcome.geometry,
                    device: ctx.engine.device(),
                    worker_id: &ctx.worker_id,
                    attempt: claim.attempts,
                    processing_ms,
                    queue_wait_ms,
                },
            )
            .await?;
            db::items::finish(
                &ctx.db,
                job.item_id,
                ItemStatus::Succeeded,
                None,
                &ctx.worker_id,
            )
            .await?;
            record(ctx, &log, &job, true).await?;
            tracing::debug!(
                label = %e.top_label,
                batch_size = outcome.inferred.batch_size,
                ms = processing_ms,
                "explained"
            );
            Ok(())
        }
        Err(JobError::Database(e)) => Err(e.into()),
        Err(JobError::Permanent { code, message }) => {
            tracing::warn!(code, %message, "item failed");
            fail(ctx, &mut log, &job, code, &message).await
        }
        Err(JobError::Transient { code, message }) if over_budget(&claim, ctx) => {
            tracing::warn!(code, %message, "item failed after its retry budget");
            fail(ctx, &mut log, &job, code, &message).await
        }
        Err(JobError::Transient { code, message }) => {
            tracing::warn!(code, %message, "attempt failed; the queue will retry");
            log.status = LogStatus::Retrying;
            log.error_code = Some(code);
            log.error_message = Some(&message);
            db::logs::insert(&ctx.db, &log).await?;
            Err(message.into())
        }
    }
}

fn over_budget(claim: &Claim, ctx: &JobContext) -> bool {
    claim.attempts >= ctx.retry_budget as i32
}

async fn fail<'a>(
    ctx: &JobContext,
    log: &mut NewLogEntry<'a>,
    job: &GradCamJobV1,
    code: &'a str,
    message: &'a str,
) -> Result<(), BoxDynError> {
    db::items::finish(
        &ctx.db,
        job.item_id,
        ItemStatus::Failed,
        Some((code, message)),
        &ctx.worker_id,
    )
    .await?;
    log.status = LogStatus::Failed;
    log.error_code = Some(code);
    log.error_message = Some(message);
    record(ctx, log, job, false).await?;
    Ok(())
}

async fn record(
    ctx: &JobContext,
    log: &NewLogEntry<'_>,
    job: &GradCamJobV1,
    succeeded: bool,
) -> sqlx::Result<()> {
    db::logs::insert(&ctx.db, log).await?;
    db::batches::refresh(&ctx.db, job.batch_id).await?;
    db::workers::count_job(&ctx.db, &ctx.worker_id, succeeded).await
}

async fn explain(ctx: &JobContext, job: &GradCamJobV1) -> Result<Outcome, JobError> {
    let target = Target {
        method: job.method,
        labels: job.labels.clone(),
    };
    ctx.engine.check_target(&target)?;

    let bytes = ctx.blobs.get(&job.blob_key).await?;
    let engine = ctx.engine.clone();
    // The plane was validated at upload; reading it back is a PNG inflate. That and resizing
    // are CPU work: a blocking thread, never the executor.
    let pending = tokio::task::spawn_blocking(move || {
        let image = plane::decode(&bytes).map_err(|e| JobError::Permanent {
            code: "image_missing",
            message: format!("the stored pixel plane is unreadable: {e}"),
        })?;
        Ok::<_, JobError>(engine.enqueue(&image, target)?)
    })
    .await??;
    let ran = pending.ran().await?;
    let geometry = ran.geometry;
    // Upsampling and summarising are CPU work too. The overlay and the full-size map are not
    // drawn here: the producer draws them from the grid when someone first asks.
    let (explanation, inferred) = tokio::task::spawn_blocking(move || ran.finish()).await?;
    Ok(Outcome {
        explanation,
        inferred,
        geometry,
    })
}
