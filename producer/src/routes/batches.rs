//! Batches: upload, status, listing, cancellation, deletion, the validation report.

use std::sync::Arc;

use axum::{
    Json,
    extract::{DefaultBodyLimit, Multipart, State, multipart::MultipartRejection},
    http::{HeaderMap, StatusCode},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use xcam_shared::{
    db::{self, batches::NewBatch},
    imaging::fitted::Fit,
    status::BatchStatus,
};

use super::{
    extract::{ApiQuery, BatchPath},
    find_batch,
};
use crate::{
    api::{
        Batch, BatchCancelled, BatchCreated, BatchLinks, BatchListQuery, BatchPage, BatchReport,
        ErrorBody, ReportQuery, ReportTallies,
    },
    auth::Caller,
    error::{ApiError, ApiResult},
    ingest::{BatchRequest, archive, upload},
    state::AppState,
};

pub(super) fn router(max_upload: u64) -> OpenApiRouter<AppState> {
    // The multipart extractor's 2 MB default would refuse any real archive. Only the upload
    // reads a body here, so the configured limit (plus room for the form's other fields) can
    // apply to the whole group.
    let body_limit = usize::try_from(max_upload.saturating_add(1 << 20)).unwrap_or(usize::MAX);
    OpenApiRouter::new()
        .routes(routes!(create_batch, list_batches))
        .routes(routes!(get_batch, delete_batch))
        .routes(routes!(cancel_batch))
        .routes(routes!(get_report))
        .layer(DefaultBodyLimit::max(body_limit))
}

/// What a `busy` answer asks the client to wait, in seconds.
const BUSY_RETRY_AFTER_S: u64 = 5;

/// Upload a ZIP of radiographs as a batch.
///
/// Answers once the archive is stored and its directory checked; its images are then ingested
/// in the background (`status: ingesting`, then `queued`).
#[utoipa::path(
    post,
    path = "/v1/batches",
    tag = "batches",
    operation_id = "create_batch",
    request_body(content = upload::UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, body = BatchCreated, description = "Stored and checked; ingesting"),
        (status = 400, body = ErrorBody, description = "`invalid_zip`, `invalid_request`"),
        (status = 404, body = ErrorBody, description = "`project_not_found`: no such project, or one the token does not cover"),
        (status = 408, body = ErrorBody, description = "`body_timeout`: the upload stopped arriving for longer than `XCAM_BODY_IDLE_TIMEOUT`"),
        (status = 413, body = ErrorBody, description = "`upload_too_large`, `too_many_entries`, `archive_too_large`, `entry_too_large`, `zip_bomb`"),
        (status = 422, body = ErrorBody, description = "`no_images`, `duplicate_names`, `unknown_model`, `invalid_method`, `invalid_labels`, `invalid_faithfulness`, `field_too_large`, `unknown_label`, `pseudonym_key_missing`"),
        (status = 503, body = ErrorBody, description = "`busy`: the server is ingesting as many uploads as it may; try again after `Retry-After` seconds",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn create_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<BatchCreated>)> {
    let multipart = multipart.map_err(|e| {
        ApiError::InvalidRequest(format!(
            "the upload must be a multipart/form-data form: {}",
            e.body_text()
        ))
    })?;
    let settings = state.settings.clone();
    // Taken before the body is read and held until ingestion ends: past the bound, an upload
    // costs the server neither disk nor CPU.
    let permit = settings
        .ingestions
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy {
            retry_after: BUSY_RETRY_AFTER_S,
        })?;
    let form = upload::read_form(
        multipart,
        settings.spool.dir(),
        settings.max_upload_bytes,
        settings.body_idle,
    )
    .await?;
    let bundle = match &form.model {
        Some(name) => state.model(name)?,
        None => state.sole_model()?,
    }
    .clone();
    let project = upload_project(&state, &caller, form.project.as_deref()).await?;
    let pseudonymize = form
        .pseudonymize_names
        .unwrap_or(project.pseudonymize_names);
    let pseudonyms = match (pseudonymize, &state.settings.pseudonym_key) {
        (false, _) => None,
        (true, Some(key)) => Some(key.clone()),
        (true, None) => {
            return Err(ApiError::Unprocessable {
                code: "pseudonym_key_missing",
                message: "names cannot be pseudonymised: this server has no XCAM_PSEUDONYM_KEY"
                    .into(),
            });
        }
    };
    let faithfulness = form
        .faithfulness
        .unwrap_or_else(|| project.faithfulness.parse().unwrap_or_default());
    form.labels
        .validate(bundle.labels())
        .map_err(|e| ApiError::Unprocessable {
            code: e.code(),
            message: e.to_string(),
        })?;

    let spool = Arc::new(form.spool);
    let path = spool.to_path_buf();
    let limits = settings.limits;
    let scan = tokio::task::spawn_blocking(move || archive::scan(&path, limits)).await??;

    let batch_id = Uuid::now_v7();
    db::batches::insert(
        &state.pools.uploads,
        &NewBatch {
            id: batch_id,
            project_id: project.id,
            model_name: bundle.name(),
            model_version: &bundle.manifest.model.version,
            method: form.method,
            labels: &form.labels,
            faithfulness,
            archive_bytes: form.bytes as i64,
            pseudonymize_names: pseudonymize,
            ingested_by: &settings.producer_id,
        },
    )
    .await?;
    let request = BatchRequest {
        batch_id,
        fit: Fit::from(&bundle.manifest.input),
        model: bundle.name().to_owned(),
        method: form.method,
        labels: form.labels,
        faithfulness,
        pseudonyms,
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let created = BatchCreated {
        id: batch_id,
        status: BatchStatus::Ingesting,
        images: scan.images() as u64,
        skipped: scan.skipped.len() as u64,
        refused: (scan.entries.len() - scan.images()) as u64,
        links: BatchLinks::of(batch_id),
    };
    caller.note(&project.name, batch_id);
    let ingestor = state.ingestor();
    state.tasks.spawn(async move {
        ingestor.ingest(request, spool, scan).await;
        drop(permit);
    });
    Ok((StatusCode::ACCEPTED, Json(created)))
}

/// The project an upload goes to: the one it names, or the caller's only one. One the caller
/// does not cover is answered exactly as one that does not exist.
async fn upload_project(
    state: &AppState,
    caller: &Caller,
    named: Option<&str>,
) -> ApiResult<db::access::Project> {
    let name = named.or_else(|| caller.sole_project()).ok_or_else(|| {
        ApiError::InvalidRequest(
            "the form has no `project` field, and this token covers more than one project".into(),
        )
    })?;
    db::access::project_by_name(&state.pools.uploads, name)
        .await?
        .filter(|p| caller.covers(p.id))
        .ok_or_else(|| ApiError::ProjectNotFound(name.to_owned()))
}

/// A batch: status, counts per item status, progress, throughput, ETA.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}",
    tag = "batches",
    operation_id = "get_batch",
    params(("id" = Uuid, Path, description = "batch id")),
    responses(
        (status = 200, body = Batch),
        (status = 404, body = ErrorBody, description = "`batch_not_found`"),
    )
)]
async fn get_batch(
    State(state): State<AppState>,
    caller: Caller,
    BatchPath(id): BatchPath,
) -> ApiResult<Json<Batch>> {
    let batch = find_batch(&state, &caller, id).await?;
    Ok(Json(Batch::new(batch)))
}

/// Recent batches, newest first.
#[utoipa::path(
    get,
    path = "/v1/batches",
    tag = "batches",
    operation_id = "list_batches",
    params(BatchListQuery),
    responses(
        (status = 200, body = BatchPage),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a parameter out of its bounds"),
    )
)]
async fn list_batches(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<BatchListQuery>,
) -> ApiResult<Json<BatchPage>> {
    let limit = q.limit.unwrap_or(20);
    let records = db::batches::list(&state.db, caller.scope(), q.before, limit).await?;
    let next_before = (records.len() as i64 == limit)
        .then(|| records.last().map(|b| b.created_at))
        .flatten();
    Ok(Json(BatchPage {
        batches: records.into_iter().map(Batch::new).collect(),
        next_before,
    }))
}

/// Cancel a batch: queued items become `cancelled`; running ones finish.
#[utoipa::path(
    post,
    path = "/v1/batches/{id}/cancel",
    tag = "batches",
    operation_id = "cancel_batch",
    params(("id" = Uuid, Path, description = "batch id")),
    responses(
        (status = 200, body = BatchCancelled),
        (status = 404, body = ErrorBody, description = "`batch_not_found`"),
        (status = 409, body = ErrorBody, description = "`conflict`: the batch has already ended"),
    )
)]
async fn cancel_batch(
    State(state): State<AppState>,
    caller: Caller,
    BatchPath(id): BatchPath,
) -> ApiResult<Json<BatchCancelled>> {
    find_batch(&state, &caller, id).await?;
    match db::batches::cancel(&state.db, id).await? {
        Some(cancelled_items) => Ok(Json(BatchCancelled {
            id,
            status: BatchStatus::Cancelled,
            cancelled_items,
        })),
        None => Err(ApiError::Conflict(format!("batch {id} has already ended"))),
    }
}

/// Delete a batch and everything xcam holds of it.
///
/// Cancels its queued jobs; removes its items, results, drawn overlays and stored images (an
/// image another batch shares stays until that batch goes too); blanks the entry names of its
/// inference-log rows, whose timings and outcomes stay. Safe while workers still run it: what
/// they finish afterwards is not recorded. Deleting a deleted batch answers the same.
#[utoipa::path(
    delete,
    path = "/v1/batches/{id}",
    tag = "batches",
    operation_id = "delete_batch",
    params(("id" = Uuid, Path, description = "batch id")),
    responses(
        (status = 204, description = "Deleted (now or before)"),
        (status = 404, body = ErrorBody, description = "`batch_not_found`"),
        (status = 409, body = ErrorBody, description = "`conflict`: its archive is still being ingested"),
    )
)]
async fn delete_batch(
    State(state): State<AppState>,
    caller: Caller,
    BatchPath(id): BatchPath,
) -> ApiResult<StatusCode> {
    match find_batch(&state, &caller, id).await {
        Ok(_) => {
            // Gone already if another request deleted it meanwhile: the same answer.
            state.eraser().delete_batch(id).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        Err(ApiError::BatchNotFound(_)) => match db::erasure::deleted(&state.db, id).await? {
            Some((project_id, project)) if caller.covers(project_id) => {
                caller.note(&project, id);
                Ok(StatusCode::NO_CONTENT)
            }
            _ => Err(ApiError::BatchNotFound(id.to_string())),
        },
        Err(e) => Err(e),
    }
}

/// The validation report, a page at a time: every entry refused, failed, flagged or skipped
///
/// Entries come in archive order; the tallies by code and reason cover the whole batch.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}/report",
    tag = "batches",
    operation_id = "get_report",
    params(("id" = Uuid, Path, description = "batch id"), ReportQuery),
    responses(
        (status = 200, body = BatchReport),
        (status = 400, body = ErrorBody, description = "`invalid_request`: `limit` or `after` out of bounds"),
        (status = 404, body = ErrorBody, description = "`batch_not_found`"),
    )
)]
async fn get_report(
    State(state): State<AppState>,
    caller: Caller,
    BatchPath(id): BatchPath,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> ApiResult<Json<BatchReport>> {
    let batch = find_batch(&state, &caller, id).await?;
    let limit = q.limit.unwrap_or(1000);
    let after = q.after.unwrap_or(-1);
    let tallies = ReportTallies {
        errors_by_code: db::items::errors_by_code(&state.db, id)
            .await?
            .into_iter()
            .collect(),
        warnings_by_code: db::items::warnings_by_code(&state.db, id)
            .await?
            .into_iter()
            .collect(),
        skipped_by_reason: db::skipped::by_reason(&state.db, id)
            .await?
            .into_iter()
            .collect(),
    };
    // One past the page from each source tells whether another page follows.
    let problems = db::items::problems(&state.db, id, after, limit + 1).await?;
    let skipped = db::skipped::page(&state.db, id, after, limit + 1).await?;
    Ok(Json(BatchReport::build(
        &batch,
        tallies,
        problems,
        skipped,
        limit as usize,
    )))
}
