//! Batches: upload, status, listing, cancellation.

use std::sync::Arc;

use axum::{
    Json,
    extract::{DefaultBodyLimit, Multipart, Path, Query, State, multipart::MultipartRejection},
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use xcam_shared::{
    db::{
        self,
        batches::{BatchRecord, ItemCounts, NewBatch},
    },
    targets::{LabelSelection, Method},
};

use super::parse_batch_id;
use crate::{
    error::{ApiError, ApiResult, ErrorBody},
    ingest::{self, BatchRequest, archive, upload},
    state::AppState,
};

pub(super) fn router(max_upload: u64) -> OpenApiRouter<AppState> {
    // The multipart extractor's 2 MB default would refuse any real archive. Only the upload
    // reads a body here, so the configured limit (plus room for the form's other fields) can
    // apply to the whole group.
    let body_limit = usize::try_from(max_upload.saturating_add(1 << 20)).unwrap_or(usize::MAX);
    OpenApiRouter::new()
        .routes(routes!(create_batch, list_batches))
        .routes(routes!(get_batch))
        .routes(routes!(cancel_batch))
        .routes(routes!(get_report))
        .layer(DefaultBodyLimit::max(body_limit))
}

/// `POST /v1/batches`: multipart `file` (ZIP), `model`, optional `method`, `labels`,
/// `pseudonymize_names`. Answers 202 once the archive is stored and checked.
#[utoipa::path(
    post,
    path = "/v1/batches",
    tag = "batches",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, body = serde_json::Value, description = "{id, status: ingesting, images, skipped, refused, links}"),
        (status = 400, body = ErrorBody, description = "invalid_zip, invalid_request"),
        (status = 413, body = ErrorBody, description = "upload_too_large, too_many_entries, archive_too_large, entry_too_large, zip_bomb"),
        (status = 422, body = ErrorBody, description = "no_images, duplicate_names, unknown_model, invalid_method, unknown_label"),
    )
)]
async fn create_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let multipart = multipart.map_err(|e| {
        ApiError::InvalidRequest(format!(
            "the upload must be a multipart/form-data form: {}",
            e.body_text()
        ))
    })?;
    let settings = state.settings.clone();
    let form =
        upload::read_form(multipart, &settings.upload_dir, settings.max_upload_bytes).await?;
    let spool = form
        .spool
        .ok_or_else(|| ApiError::InvalidRequest("the form has no `file` field".into()))?;
    let model_name = form
        .model
        .ok_or_else(|| ApiError::InvalidRequest("the form has no `model` field".into()))?;
    let bundle = state.model(&model_name)?.clone();
    let method: Method = form
        .method
        .as_deref()
        .unwrap_or("gradcam")
        .parse()
        .map_err(|message| ApiError::Unprocessable {
            code: "invalid_method",
            message,
        })?;
    let labels: LabelSelection =
        form.labels
            .as_deref()
            .unwrap_or("top1")
            .parse()
            .map_err(|message| ApiError::Unprocessable {
                code: "invalid_labels",
                message,
            })?;
    labels
        .validate(bundle.labels())
        .map_err(|message| ApiError::Unprocessable {
            code: "unknown_label",
            message,
        })?;

    let spool = Arc::new(spool);
    let path = spool.to_path_buf();
    let limits = settings.limits;
    let scan = tokio::task::spawn_blocking(move || archive::scan(&path, limits))
        .await
        .map_err(|e| ApiError::Internal(e.into()))??;

    let batch_id = Uuid::now_v7();
    let (method, labels) = (method.to_string(), labels.to_string());
    db::batches::insert(
        &state.db,
        &NewBatch {
            id: batch_id,
            model_name: bundle.name(),
            model_version: &bundle.manifest.model.version,
            method: &method,
            labels: &labels,
            archive_bytes: form.bytes as i64,
            pseudonymize_names: form.pseudonymize_names,
        },
    )
    .await?;
    let request = BatchRequest {
        batch_id,
        model: bundle.name().to_owned(),
        method,
        labels,
        pseudonymize_names: form.pseudonymize_names,
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let images = scan.images();
    let refused = scan.entries.len() - images;
    let skipped = scan.skipped;
    tokio::spawn(ingest::ingest(state.clone(), request, spool, scan));
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "id": batch_id,
            "status": "ingesting",
            "images": images,
            "skipped": skipped,
            "refused": refused,
            "links": links(batch_id),
        })),
    ))
}

fn links(id: Uuid) -> Value {
    json!({
        "self": format!("/v1/batches/{id}"),
        "results": format!("/v1/batches/{id}/results"),
        "csv": format!("/v1/batches/{id}/results.csv"),
        "cancel": format!("/v1/batches/{id}/cancel"),
        "report": format!("/v1/batches/{id}/report"),
    })
}

/// A batch as the API shows it.
#[derive(Debug, Serialize)]
pub struct BatchView {
    #[serde(flatten)]
    pub batch: BatchRecord,
    pub counts: ItemCounts,
    /// Share of items that reached an outcome, in [0, 1].
    pub progress: f64,
    /// Items finished per second since the first one started.
    pub throughput_per_s: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub links: Value,
}

async fn view(state: &AppState, batch: BatchRecord) -> ApiResult<BatchView> {
    let counts = db::batches::counts(&state.db, batch.id).await?;
    let done = counts.succeeded + counts.failed + counts.rejected + counts.cancelled;
    let progress = if counts.total > 0 {
        done as f64 / counts.total as f64
    } else {
        0.0
    };
    let processed = (counts.succeeded + counts.failed) as f64;
    let open = (counts.queued + counts.running) as f64;
    let throughput = counts.first_started.map(|start| {
        let end = if open > 0.0 {
            Utc::now()
        } else {
            counts.last_finished.unwrap_or_else(Utc::now)
        };
        processed / ((end - start).num_milliseconds().max(1) as f64 / 1e3)
    });
    let eta = throughput.filter(|t| *t > 0.0).map(|t| open / t);
    let id = batch.id;
    Ok(BatchView {
        batch,
        counts,
        progress,
        throughput_per_s: throughput,
        eta_seconds: eta,
        links: links(id),
    })
}

/// A batch: status, counts per item status, progress, throughput, ETA.
#[utoipa::path(get, path = "/v1/batches/{id}", tag = "batches", params(("id" = String, Path, description = "batch id")), responses((status = 200, body = serde_json::Value), (status = 404, body = ErrorBody)))]
async fn get_batch(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<BatchView>> {
    let id = parse_batch_id(&id)?;
    let batch = db::batches::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::BatchNotFound(id.to_string()))?;
    Ok(Json(view(&state, batch).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct ListQuery {
    limit: Option<i64>,
    /// `created_at` of the last batch of the previous page.
    before: Option<DateTime<Utc>>,
}

/// Recent batches, newest first.
#[utoipa::path(get, path = "/v1/batches", tag = "batches", params(ListQuery), responses((status = 200, body = serde_json::Value)))]
async fn list_batches(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(20).clamp(1, 200);
    let batches = db::batches::list(&state.db, q.before, limit).await?;
    let next = (batches.len() as i64 == limit)
        .then(|| batches.last().map(|b| b.created_at))
        .flatten();
    let mut views = Vec::with_capacity(batches.len());
    for b in batches {
        views.push(view(&state, b).await?);
    }
    Ok(Json(json!({ "batches": views, "next_before": next })))
}

/// Queued items become cancelled; running ones finish.
#[utoipa::path(post, path = "/v1/batches/{id}/cancel", tag = "batches", params(("id" = String, Path, description = "batch id")), responses((status = 200, body = serde_json::Value), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_batch(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_batch_id(&id)?;
    db::batches::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::BatchNotFound(id.to_string()))?;
    match db::batches::cancel(&state.db, id).await? {
        Some(cancelled) => Ok(Json(
            json!({ "id": id, "status": "cancelled", "cancelled_items": cancelled }),
        )),
        None => Err(ApiError::Conflict(format!("batch {id} has already ended"))),
    }
}

/// Why entries were refused or failed, and what was flagged, by code.
#[utoipa::path(get, path = "/v1/batches/{id}/report", tag = "batches", params(("id" = String, Path, description = "batch id")), responses((status = 200, body = serde_json::Value), (status = 404, body = ErrorBody)))]
async fn get_report(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_batch_id(&id)?;
    let batch = db::batches::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::BatchNotFound(id.to_string()))?;
    let counts = db::batches::counts(&state.db, id).await?;
    let problems = db::items::problems(&state.db, id).await?;
    let mut by_code: std::collections::BTreeMap<String, i64> = Default::default();
    let mut warnings_by_code: std::collections::BTreeMap<String, i64> = Default::default();
    let mut refused = Vec::new();
    let mut flagged = Vec::new();
    for p in &problems {
        if let Some(code) = &p.error_code {
            *by_code.entry(code.clone()).or_default() += 1;
            refused.push(json!({
                "item_id": p.id, "entry_index": p.entry_index, "entry_name": p.entry_name,
                "status": p.status, "code": code, "message": p.error_message,
            }));
        }
        if let Some(list) = p.warnings.as_array().filter(|l| !l.is_empty()) {
            for w in list {
                if let Some(code) = w["code"].as_str() {
                    *warnings_by_code.entry(code.to_owned()).or_default() += 1;
                }
            }
            flagged.push(json!({ "item_id": p.id, "entry_index": p.entry_index, "entry_name": p.entry_name, "warnings": list }));
        }
    }
    Ok(Json(json!({
        "batch_id": id,
        "status": batch.status,
        "entries": batch.total_entries,
        "skipped_entries": batch.skipped_entries,
        "counts": counts,
        "errors_by_code": by_code,
        "warnings_by_code": warnings_by_code,
        "errors": refused,
        "warnings": flagged,
    })))
}

/// The upload form, for the API document.
#[allow(
    dead_code,
    reason = "describes the multipart form; the handler reads it field by field"
)]
#[derive(utoipa::ToSchema)]
struct UploadForm {
    /// The ZIP archive of radiographs.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Model bundle name.
    model: String,
    /// gradcam (default), gradcam++ or hirescam.
    method: Option<String>,
    /// top1 (default), positive, all, or label names separated by commas.
    labels: Option<String>,
    /// true to replace entry names with salted hashes everywhere.
    pseudonymize_names: Option<bool>,
}
