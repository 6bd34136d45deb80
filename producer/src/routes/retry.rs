//! Retrying a batch's failed items by hand.

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use xcam_shared::db::{
    self,
    retry::{Retry, RetryFilter},
};

use super::{extract::BatchPath, find_batch};
use crate::{
    api::{BatchRetried, ErrorBody, RetriedItem, RetryRequest},
    auth::Caller,
    error::{ApiError, ApiResult},
    state::AppState,
};

/// Items an answer lists; `retried` counts them all.
const LISTED: usize = 1_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(retry_batch))
}

/// Retry a batch's failed items.
///
/// Queues the failed items matching the filters again (all of them when there is none), each as
/// a new attempt of the same item; the batch's status follows (`running` until they end). With
/// `dry_run`, says what would be retried and changes nothing.
#[utoipa::path(
    post,
    path = "/v1/batches/{id}/retry",
    tag = "batches",
    operation_id = "retry_batch",
    params(("id" = uuid::Uuid, Path, description = "batch id")),
    request_body = RetryRequest,
    responses(
        (status = 200, body = BatchRetried),
        (status = 400, body = ErrorBody, description = "`invalid_request`: not a JSON retry request, or a filter out of its bounds"),
        (status = 404, body = ErrorBody, description = "`batch_not_found`"),
        (status = 409, body = ErrorBody, description = "`conflict`: the batch is still being ingested, or was cancelled"),
    )
)]
async fn retry_batch(
    State(state): State<AppState>,
    caller: Caller,
    BatchPath(id): BatchPath,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> ApiResult<Json<BatchRetried>> {
    let shape = "a retry takes {\"codes\": […], \"items\": […], \"dry_run\": bool}, each optional";
    let Json(body) =
        body.map_err(|e| ApiError::InvalidRequest(format!("{shape}: {}", e.body_text())))?;
    // An object only: serde would also read a struct from a JSON array of its fields.
    if !body.is_object() {
        return Err(ApiError::InvalidRequest(format!("{shape}: not an object")));
    }
    let request: RetryRequest = serde_json::from_value(body)
        .map_err(|e| ApiError::InvalidRequest(format!("{shape}: {e}")))?;
    request.check().map_err(ApiError::InvalidRequest)?;
    find_batch(&state, &caller, id).await?;
    let filter = RetryFilter {
        codes: request.codes.as_deref(),
        items: request.items.as_deref(),
    };
    let retried = match db::retry::retry(&state.db, id, &filter, request.dry_run).await? {
        Retry::Done(retried) => retried,
        Retry::NotFound => return Err(ApiError::BatchNotFound(id.to_string())),
        Retry::Refused(status) => {
            return Err(ApiError::Conflict(format!(
                "batch {id} is {status}: it has no failed items to retry"
            )));
        }
    };
    if !request.dry_run && !retried.is_empty() {
        let jobs = retried
            .iter()
            .map(|r| r.item.clone().job())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!(
                    "batch {id} stores a method or labels it cannot parse"
                ))
            })?;
        // Their earlier jobs finished long ago and were swept; a job still held (a worker not
        // yet acknowledging) is pushed again by the reconciler once it goes.
        if let Err(e) = state.queue.push(jobs).await {
            tracing::warn!(batch = %id, error = %e, "pushing retried jobs failed; the reconciler will");
        }
    }
    Ok(Json(BatchRetried {
        id,
        dry_run: request.dry_run,
        retried: retried.len() as u64,
        items: retried
            .into_iter()
            .take(LISTED)
            .map(|r| RetriedItem {
                id: r.item.id,
                entry_name: r.entry_name,
                error_code: r.error_code,
            })
            .collect(),
    }))
}
