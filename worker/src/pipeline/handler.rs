//! One job: claim the item, fetch its pixel plane, explain it, record the outcome, log the
//! attempt.
//!
//! Failures are sorted by whose fault they are:
//! - the image or the request is bad: the item fails at once with its code;
//! - the engine failed in a way that may pass: the queue tries again, and past the retry budget
//!   the item fails with the last error;
//! - Postgres or the blob store is unavailable: not the image's fault, so it costs the item
//!   nothing. The job waits in the worker, trying again with growing pauses, until the outage
//!   ends; a worker whose every slot waits fetches nothing new meanwhile.
//!
//! An item whose processing kills its worker (out of memory, abort) is claimed again by another
//! worker; past `--crash-claims` unsettled claims it fails with `worker_crashed` instead of
//! killing every worker in turn. An inference that hangs fails with `inference_timeout`.
//!
//! Every log line of a job carries exactly its own batch, item and attempt: the handler's work
//! runs inside its span with `.instrument`, which enters the span on each poll and leaves it at
//! each await, so concurrent jobs never see each other's fields.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use apalis::prelude::{BoxDynError, Data};
use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use xcam_shared::{
    blob::{BlobError, BlobStore},
    db::{
        self,
        items::{Claim, ClaimRequest},
        logs::NewLogEntry,
        outcome::{self, Outcome, Recorded},
        results::NewResult,
    },
    imaging::{
        DecodeError, Warning,
        fitted::{self, Fit},
        plane,
    },
    jobs::GradCamJobV1,
    status::LogStatus,
};

use super::{
    cpu::{CpuPool, Unfinished},
    group::{GroupError, Grouped},
};
use crate::{
    engine::{Engine, EngineError, Explanation, Inferred, Target, preprocess::Geometry},
    health::Health,
};

/// What every job of one model's queue shares.
pub struct JobContext {
    pub db: PgPool,
    /// Claims items for the jobs starting together, in one statement.
    pub claims: Grouped<ClaimRequest, Option<Claim>>,
    /// Records the outcomes of the jobs finishing together, in one transaction.
    pub outcomes: Grouped<Outcome, Recorded>,
    pub blobs: BlobStore,
    pub engine: Engine,
    /// Where decoding and finishing maps run, one thread a core.
    pub cpu: Arc<CpuPool>,
    pub worker_id: String,
    pub retry_budget: u32,
    /// Unsettled claims an item may have before it fails with `worker_crashed`.
    pub crash_claims: u32,
    /// Longest an inference may take before the item fails with `inference_timeout`.
    pub job_timeout: Duration,
    /// Cancelled at shutdown: jobs waiting out an outage hand themselves back to the queue.
    pub stopping: CancellationToken,
    /// What `/readyz` reports.
    pub health: Arc<Health>,
}

/// Why an attempt failed, and whether trying again could help.
#[derive(Debug, thiserror::Error)]
enum JobError {
    /// The image or the request is bad.
    #[error("{message}")]
    Permanent { code: &'static str, message: String },
    /// May pass; counts against the item's retry budget.
    #[error("{message}")]
    Transient { code: &'static str, message: String },
    /// A dependency is unavailable; costs the item nothing.
    #[error("{0}")]
    Outage(String),
    /// Postgres refused a statement for a reason that is not an outage: the queue retries.
    #[error("postgres: {0}")]
    Database(String),
}

impl From<&sqlx::Error> for JobError {
    fn from(e: &sqlx::Error) -> Self {
        if db::is_outage(e) {
            JobError::Outage(format!("postgres: {e}"))
        } else {
            JobError::Database(e.to_string())
        }
    }
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::from(&e)
    }
}

impl From<GroupError> for JobError {
    fn from(e: GroupError) -> Self {
        JobError::from(&*e)
    }
}

impl From<BlobError> for JobError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound { .. } => JobError::Permanent {
                code: "image_missing",
                message: "the image is no longer in the blob store".into(),
            },
            other => JobError::Outage(other.to_string()),
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

impl From<Unfinished> for JobError {
    fn from(e: Unfinished) -> Self {
        JobError::Transient {
            code: "internal",
            message: e.to_string(),
        }
    }
}

struct Explained {
    explanation: Explanation,
    inferred: Inferred,
    geometry: Geometry,
}

/// Pauses between tries while a dependency is unavailable.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(15);

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
    until_done(&job, &ctx).instrument(span).await
}

async fn until_done(job: &GradCamJobV1, ctx: &JobContext) -> Result<(), BoxDynError> {
    let (mut claimed, mut pause) = (false, FIRST_PAUSE);
    let mut _waiting = None;
    loop {
        let outage = match attempt(job, ctx, &mut claimed).await {
            Ok(()) => return Ok(()),
            Err(JobError::Outage(outage)) => outage,
            Err(other) => return Err(other.into()),
        };
        if ctx.stopping.is_cancelled() {
            return Err(outage.into());
        }
        if pause == FIRST_PAUSE {
            _waiting = Some(ctx.health.waiting());
            tracing::warn!(error = %outage, "a dependency is unavailable; the job waits for it");
        } else {
            tracing::debug!(error = %outage, pause = ?pause, "still unavailable");
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = ctx.stopping.cancelled() => return Err(outage.into()),
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// One try at the job. Outcomes that belong to the item are recorded here; outages and
/// database refusals are returned.
async fn attempt(job: &GradCamJobV1, ctx: &JobContext, claimed: &mut bool) -> Result<(), JobError> {
    let started = Instant::now();
    let request = ClaimRequest {
        batch_id: job.batch_id,
        item_id: job.item_id,
        fresh: !*claimed,
    };
    let Some(claim) = ctx.claims.send(request).await? else {
        tracing::debug!("item is cancelled or already finished; skipping");
        return Ok(());
    };
    *claimed = true;
    tracing::Span::current().record("attempt", claim.attempts);
    let queue_wait_ms = (Utc::now() - claim.queued_at).num_milliseconds().max(0) as f32;

    let result = if claim.open_claims > ctx.crash_claims as i32 {
        Err(JobError::Permanent {
            code: "worker_crashed",
            message: format!(
                "the worker processing this image stopped without an outcome {} times",
                claim.open_claims - 1
            ),
        })
    } else {
        explain(ctx, job).await
    };
    let processing_ms = started.elapsed().as_secs_f64() as f32 * 1e3;
    let manifest = &ctx.engine.bundle().manifest.model;
    let log = NewLogEntry {
        model_name: manifest.name.clone(),
        model_version: manifest.version.clone(),
        prediction: None,
        probability: None,
        filename: claim.entry_name.clone(),
        processing_time_ms: processing_ms,
        queue_wait_ms: Some(queue_wait_ms),
        batch_id: job.batch_id,
        item_id: job.item_id,
        attempt: claim.attempts,
        status: LogStatus::Succeeded,
        error_code: None,
        error_message: None,
        worker_id: ctx.worker_id.clone(),
        device: ctx.engine.device().to_owned(),
        dynamic_batch_size: None,
    };
    let (code, message) = match result {
        Ok(Explained {
            explanation: e,
            inferred,
            geometry,
        }) => {
            let warnings = ood_warning(&e).into_iter().collect();
            let outcome = Outcome {
                log: NewLogEntry {
                    prediction: Some(e.top_label.clone()),
                    probability: Some(e.top_probability),
                    dynamic_batch_size: Some(inferred.batch_size as i32),
                    device: inferred.device.to_string(),
                    ..log
                },
                result: Some(NewResult {
                    item_id: job.item_id,
                    batch_id: job.batch_id,
                    model_name: manifest.name.clone(),
                    model_version: manifest.version.clone(),
                    predictions: serde_json::to_value(&e.predictions)
                        .expect("label → probability maps serialise"),
                    method: e.cams.first().map_or(job.method, |c| c.method),
                    top_label: e.top_label,
                    top_probability: e.top_probability,
                    cams: e.cams,
                    positive_labels: e.positive_labels,
                    ood_score: e.ood_score,
                    ood_threshold: e.ood_threshold,
                    geometry,
                    device: inferred.device.to_string(),
                    worker_id: ctx.worker_id.clone(),
                    attempt: claim.attempts,
                    processing_ms,
                    queue_wait_ms,
                }),
                warnings,
            };
            let recorded = ctx.outcomes.send(outcome).await?;
            count(&manifest.name, "succeeded", processing_ms);
            let model = manifest.name.clone();
            metrics::histogram!("xcam_worker_queue_wait_seconds", "model" => model.clone())
                .record(f64::from(queue_wait_ms) / 1e3);
            metrics::histogram!("xcam_worker_dynamic_batch_size", "model" => model)
                .record(inferred.batch_size as f64);
            if recorded == Recorded::Written {
                tracing::debug!(
                    batch_size = inferred.batch_size,
                    ms = processing_ms,
                    "explained"
                );
            }
            return Ok(());
        }
        Err(e @ (JobError::Outage(_) | JobError::Database(_))) => return Err(e),
        Err(JobError::Permanent { code, message }) => {
            tracing::warn!(code, %message, "item failed");
            (code, message)
        }
        Err(JobError::Transient { code, message }) if over_budget(&claim, ctx) => {
            tracing::warn!(code, %message, "item failed after its retry budget");
            (code, message)
        }
        Err(JobError::Transient { code, message }) => {
            tracing::warn!(code, %message, "attempt failed; the queue will retry");
            let log = NewLogEntry {
                status: LogStatus::Retrying,
                error_code: Some(code),
                error_message: Some(message.clone()),
                ..log
            };
            outcome::retrying(&ctx.db, &log).await?;
            count(&manifest.name, "retrying", processing_ms);
            return Err(JobError::Transient { code, message });
        }
    };
    let outcome = Outcome {
        result: None,
        log: NewLogEntry {
            status: LogStatus::Failed,
            error_code: Some(code),
            error_message: Some(message),
            ..log
        },
        warnings: Vec::new(),
    };
    ctx.outcomes.send(outcome).await?;
    count(&manifest.name, "failed", processing_ms);
    Ok(())
}

/// `out_of_distribution` when the image lies beyond the bundle reference's threshold.
fn ood_warning(e: &Explanation) -> Option<Warning> {
    let (score, threshold) = e.ood_score.zip(e.ood_threshold)?;
    (e.out_of_distribution == Some(true)).then(|| {
        Warning::new(
            "out_of_distribution",
            format!(
                "the image is unlike the model's training images (score {score:.1}, threshold \
                 {threshold:.1}): its prediction and map may not hold"
            ),
        )
    })
}

/// This worker's own counts, for its `/metrics`.
fn count(model: &str, outcome: &'static str, processing_ms: f32) {
    let model = model.to_owned();
    metrics::counter!("xcam_worker_images_total", "model" => model.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("xcam_worker_processing_seconds", "model" => model)
        .record(f64::from(processing_ms) / 1e3);
}

fn over_budget(claim: &Claim, ctx: &JobContext) -> bool {
    claim.attempts >= ctx.retry_budget as i32
}

async fn explain(ctx: &JobContext, job: &GradCamJobV1) -> Result<Explained, JobError> {
    let target = Target {
        method: job.method,
        labels: job.labels.clone(),
        faithfulness: job.faithfulness,
    };
    ctx.engine.check_target(&target)?;

    // The copy fitted to this model at ingestion: a worker never decodes a full-size
    // radiograph. Planes stored before xcam fitted them have none; their full plane serves.
    let fitted_key = Fit::from(&ctx.engine.bundle().manifest.input).key(&job.blob_key);
    let (bytes, fitted) = match ctx.blobs.get(&fitted_key).await {
        Ok(bytes) => (bytes, true),
        Err(BlobError::NotFound { .. }) => (ctx.blobs.get(&job.blob_key).await?, false),
        Err(e) => return Err(e.into()),
    };
    let unreadable = |e: DecodeError| JobError::Permanent {
        code: "image_missing",
        message: format!("the stored pixel plane is unreadable: {e}"),
    };
    let pending = if fitted {
        // A fitted plane is handed over as stored (a header check and one copy of its levels,
        // no per-pixel work): no hand-off to a blocking thread.
        let stored = fitted::read(&bytes).map_err(unreadable)?;
        ctx.engine.enqueue_stored(&stored, target)?
    } else {
        // An old plane is a PNG to inflate and resize: CPU work, never on the executor.
        let engine = ctx.engine.clone();
        ctx.cpu
            .run(move || {
                Ok::<_, JobError>(
                    engine.enqueue(&plane::decode(&bytes).map_err(unreadable)?, target)?,
                )
            })
            .await??
    };
    let ran = tokio::time::timeout(ctx.job_timeout, pending.ran())
        .await
        .map_err(|_| JobError::Permanent {
            code: "inference_timeout",
            message: format!(
                "the model gave no answer within {}",
                humantime::format_duration(ctx.job_timeout)
            ),
        })??;
    let geometry = ran.geometry;
    // Upsampling and summarising are CPU work too. The overlay and the full-size map are not
    // drawn here: the producer draws them from the grid when someone first asks.
    let (explanation, inferred) = ctx.cpu.run(move || ran.finish()).await?;
    Ok(Explained {
        explanation,
        inferred,
        geometry,
    })
}
