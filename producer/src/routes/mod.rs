//! The HTTP API, one module per resource. The OpenAPI document is generated from the same
//! registrations (utoipa-axum), then completed in [`document`] with what only the running
//! server knows: its models and their labels.

mod audit;
mod batches;
mod dashboard;
mod docs;
pub mod document;
mod extract;
mod health;
mod images;
mod logs;
pub mod metrics;
mod models;
mod results;
mod retry;
mod session;
mod workers;

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;
use xcam_shared::{
    bundle::Bundle,
    db::{self, batches::BatchRecord, items::ItemRecord},
};

use crate::{auth::Caller, error::ApiError, state::AppState};

pub use metrics::track_http;

/// The API with its document and docs page; the caller adds the outer layers and state.
pub fn router(state: AppState) -> Router {
    let (router, api) = api_router(state.settings.max_upload_bytes).split_for_parts();
    let document = Arc::new(document::to_json(&document::complete(api, &state.models)));
    router
        .merge(docs::router(document))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::guard,
        ))
        .route_layer(axum::middleware::from_fn(metrics::track_http))
        .with_state(state)
}

/// Every documented route.
fn api_router(max_upload: u64) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(health::router())
        .merge(dashboard::router())
        .merge(models::router())
        .merge(batches::router(max_upload))
        .merge(results::router())
        .merge(retry::router())
        .merge(images::router())
        .merge(logs::router())
        .merge(workers::router())
        .merge(metrics::router())
        .merge(session::router())
        .merge(audit::router())
}

/// The OpenAPI document a server with these models serves at `/openapi.json`.
pub fn openapi(models: &BTreeMap<String, Bundle>) -> utoipa::openapi::OpenApi {
    document::complete(api_router(1 << 20).split_for_parts().1, models)
}

/// The keyset position a `cursor` filter names; 422 `invalid_filter` when it is malformed.
fn cursor_position(
    cursor: Option<&str>,
) -> Result<Option<(chrono::DateTime<chrono::Utc>, i64)>, ApiError> {
    cursor
        .map(|c| {
            crate::api::parse_cursor(c)
                .ok_or_else(|| ApiError::InvalidFilter("cursor: malformed".into()))
        })
        .transpose()
}

/// The cursor of the page after a full one: its last row's position.
fn next_cursor<T>(
    rows: &[T],
    limit: i64,
    position: impl Fn(&T) -> (chrono::DateTime<chrono::Utc>, i64),
) -> Option<String> {
    (rows.len() as i64 == limit)
        .then(|| rows.last())
        .flatten()
        .map(|row| {
            let (at, id) = position(row);
            crate::api::cursor_of(at, id)
        })
}

/// The batch a path names; 404 `batch_not_found` when there is none, or when it is in a
/// project the caller does not cover: the two answers are the same, byte for byte.
async fn find_batch(state: &AppState, caller: &Caller, id: Uuid) -> Result<BatchRecord, ApiError> {
    let batch = db::batches::get(&state.db, id)
        .await?
        .filter(|b| caller.covers(b.project_id))
        .ok_or_else(|| ApiError::BatchNotFound(id.to_string()))?;
    caller.note(&batch.project, batch.id);
    Ok(batch)
}

/// The item a `/v1/batches/{id}/items/{item}/…` path names; 404 unless it is in that batch
/// and the caller covers the batch's project.
async fn find_item(
    state: &AppState,
    caller: &Caller,
    batch: Uuid,
    item: Uuid,
) -> Result<ItemRecord, ApiError> {
    find_batch(state, caller, batch).await?;
    db::items::get(&state.db, batch, item)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no item {item} in batch {batch}")))
}
